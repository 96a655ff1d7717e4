"""Your own tasks and data from Python: `register_task` and `ArrayData`.

A few lines run the whole analysis on arrays you already hold
(notebooks/own_data.ipynb does it on synthetic arrays)::

    from tasks.custom import ArrayData, register_task
    from grouping.find_groups import Options, find_groups

    register_task("smiling", label="attrs", channels=1, kind="image", loss="bce",
                  decode=lambda a: a[..., 0])
    register_task("outline", label="edges", channels=1)          # dense, L1
    data = ArrayData(train={"rgb": x_train, "attrs": a_train, "edges": e_train},
                     validation={...}, test={...})
    report = find_groups(Options(tasks="smiling,outline", budgets=[1, 2], data=data))

A split is a mapping of label key -> array with a leading sample axis, or
any random-access source (``len(source)`` and ``source[i]`` returning such a
mapping for one sample, as a grain data source does); a source is read
once into arrays. Every split needs the input image under 'rgb': uint8
(N,R,R,3), or float in [0, 1] (stored as round(255 x)); R a resolution the
network takes (a multiple of 8, 32 to 256).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from tasks.registry import (
    DEFAULT,
    Task,
    _accuracy_finalize,
    _binary_stats,
    _channels_last,
    _class_stats,
    _l1_finalize,
    _l1_stats,
    _labels,
    _seg_finalize,
    _seg_stats,
    binary_cross_entropy_loss,
    cross_entropy_loss,
    l1_loss,
    modalities_for,
    softmax_cross_entropy_loss,
)

SPLITS = ("train", "validation", "test")

#: loss name -> (kind, loss, stats, finalize, headline metric, higher is better, default target decoding).
LOSSES: dict[str, tuple] = {
    "l1": ("dense", l1_loss, _l1_stats, _l1_finalize, "l1", False, lambda x: _channels_last(x.astype(jnp.float32))),
    "cross_entropy": ("dense", cross_entropy_loss, _seg_stats, _seg_finalize, "miou", True, _labels),
    "bce": ("image", binary_cross_entropy_loss, _binary_stats, _accuracy_finalize, "error_rate", False,
            lambda x: x.astype(jnp.float32)),
    "softmax": ("image", softmax_cross_entropy_loss, _class_stats, _accuracy_finalize, "error_rate", False, _labels),
}


def register_task(
    name: str,
    *,
    label: str,
    channels: int,
    kind: str = "dense",
    loss: str | Callable | None = None,
    decode: Callable | None = None,
    metrics: tuple[Callable, Callable] | None = None,
    metric: str | None = None,
    higher_is_better: bool | None = None,
    aliases: Sequence[str] = (),
    description: str = "",
    replace: bool = False,
) -> Task:
    """Defines a task and adds it to the default task set (`tasks.registry.DEFAULT`).

    Args:
      name: what --tasks and `Options.tasks` call it.
      label: the key of its label in the data (a split's mapping).
      channels: output channels of a dense task, logits of an image-level
        one (1 for a binary label, K for K classes).
      kind: 'dense' (a decoder, (B,R,R,channels)) or 'image' (pooled linear
        head, (B,channels)).
      loss: 'l1' (dense), 'cross_entropy' (dense class ids, 0 ignored as
        void), 'bce' (image, one logit, targets 0/1), 'softmax' (image,
        class ids 0..K-1); or a function (prediction, target, None) ->
        scalar. Default: 'l1' for dense, 'bce' for an image-level task with
        one channel, else 'softmax'.
      decode: stored label batch -> target (jit-traceable); default the
        loss's (float, with a channel axis for 'l1'; int32 class ids).
      metrics: (stats, finalize) as in `tasks.registry` (stats sums per
        batch, finalize turns the sums into numbers); default the loss's
        (L1; mIoU and pixel accuracy; accuracy and error rate). A custom
        loss without metrics reports the loss alone.
      metric, higher_is_better: the headline metric (default the loss's).
      replace: redefine a task registered before under the same name.
    """
    if isinstance(loss, str) or loss is None:
        loss = loss or ("l1" if kind == "dense" else "bce" if channels == 1 else "softmax")
        if loss not in LOSSES:
            raise ValueError(f"task {name!r}: unknown loss {loss!r}; expected one of {', '.join(LOSSES)} or a function")
        want_kind, fn, stats, finalize, head, higher, default_decode = LOSSES[loss]
        if want_kind != kind:
            raise ValueError(f"task {name!r}: loss {loss!r} is for {want_kind} tasks, the task is {kind}")
        if loss == "bce" and channels != 1:
            raise ValueError(f"task {name!r}: loss 'bce' needs channels=1 (one logit), got {channels}")
    elif callable(loss):
        fn, default_decode = loss, (lambda x: x)
        stats, finalize, head, higher = (lambda p, t, m: {}), (lambda s: {}), "loss", False
    else:
        raise ValueError(f"task {name!r}: loss must be a name ({', '.join(LOSSES)}) or a function, got {loss!r}")
    if metrics is not None:
        stats, finalize = metrics
        if metric is None:
            raise ValueError(f"task {name!r}: give metric= (the headline metric's name) with metrics=")
    task = Task(name=name, aliases=tuple(aliases), label=label, channels=channels, decode=decode or default_decode,
                loss=fn, masked=False, stats=stats, finalize=finalize, metric=metric or head,
                higher_is_better=higher if higher_is_better is None else higher_is_better,
                description=description or f"{name} ({kind}, label {label!r})", kind=kind)
    return DEFAULT.add(task, replace=replace)


class ArrayData:
    """In-memory data with the interface of `grouping.dataspec.DataSpec` (check, settings, load).

    `train`, `validation`, `test`: each a mapping label key -> array (leading
    sample axis) or a random-access source of per-sample mappings. The
    store keys name the data by a hash of every array's bytes, so the same
    arrays reuse stored networks and changed ones never do.
    """

    seed = 0
    counts = None
    data_dir = None
    labels = None  # label plans (tasks.label_plan) apply to the embedded scenes only
    is_scenes = False
    kind = "arrays"

    def __init__(self, train: Any, validation: Any, test: Any):
        self.splits = {s: _arrays(s, v) for s, v in zip(SPLITS, (train, validation, test))}
        shapes = {s: a["rgb"].shape[1] for s, a in self.splits.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"'rgb' has resolution {shapes}: expected one resolution in every split")
        self.resolution = shapes["train"]
        h = hashlib.sha256()
        for s, arrays in self.splits.items():
            for k in sorted(arrays):
                a = np.ascontiguousarray(arrays[k])
                h.update(f"{s}/{k}:{a.dtype.str}:{a.shape}".encode())
                h.update(a.tobytes())
        self.fingerprint = h.hexdigest()[:12]
        self.source = f"arrays:{self.fingerprint}"

    def resolve_tasks(self, names, *, min_tasks: int = 1) -> tuple[Task, ...]:
        return DEFAULT.resolve(names, min_tasks=min_tasks)

    def check(self, tasks: Sequence[Task]) -> dict[str, Any]:
        """Every split holds every label the tasks need, with one sample per image (ValueError otherwise)."""
        from mtl.model import check_resolution

        check_resolution(self.resolution)
        for s, arrays in self.splits.items():
            missing = [m for m in modalities_for(tasks) if m not in arrays]
            if missing:
                raise ValueError(f"the {s} split has no {missing[0]!r} array, needed by the tasks "
                                 f"{', '.join(t.name for t in tasks)}; it has {', '.join(arrays)}")
        return self.settings()

    def settings(self, builder=None) -> dict[str, Any]:
        return {"source": "arrays", "resolution": self.resolution, "dataset": f"arrays/{self.fingerprint}"}

    def load(self, tasks: Sequence[Task], progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        return {s: {m: arrays[m] for m in modalities_for(tasks)} for s, arrays in self.splits.items()}


def _arrays(split: str, data: Any) -> dict[str, np.ndarray]:
    """One split as label key -> stacked array, after checking it."""
    if data is None:
        raise ValueError(f"no {split} split given; expected a mapping of arrays or a random-access source")
    if not isinstance(data, Mapping):
        if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            raise ValueError(f"the {split} split is a {type(data).__name__}; expected a mapping of arrays or a "
                             "random-access source (len() and [i])")
        n = len(data)
        if n == 0:
            raise ValueError(f"the {split} split is empty; expected at least one sample")
        samples = [data[i] for i in range(n)]
        bad = next((i for i, x in enumerate(samples) if not isinstance(x, Mapping)), None)
        if bad is not None:
            raise ValueError(f"sample {bad} of the {split} split is a {type(samples[bad]).__name__}; expected a "
                             "mapping of label key -> array")
        keys = set(samples[0])
        odd = next((i for i, x in enumerate(samples) if set(x) != keys), None)
        if odd is not None:
            raise ValueError(f"sample {odd} of the {split} split has the keys {sorted(samples[odd])}, sample 0 "
                             f"{sorted(keys)}; expected the same keys in every sample")
        data = {k: np.stack([np.asarray(x[k]) for x in samples]) for k in samples[0]}
    out = {str(k): np.asarray(v) for k, v in data.items()}
    if "rgb" not in out:
        raise ValueError(f"the {split} split has no 'rgb' (the input image); it has {', '.join(out) or 'nothing'}")
    lengths = {k: len(v) if v.ndim else None for k, v in out.items()}
    if lengths["rgb"] == 0:
        raise ValueError(f"the {split} split is empty; expected at least one sample")
    for k, n in lengths.items():
        if n != lengths["rgb"]:
            raise ValueError(f"the {split} split's {k!r} holds {n} samples and 'rgb' {lengths['rgb']}; expected one "
                             "per image")
    rgb = out["rgb"]
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.shape[1] != rgb.shape[2]:
        raise ValueError(f"the {split} split's 'rgb' has shape {rgb.shape}; expected (N, R, R, 3) square images")
    if np.issubdtype(rgb.dtype, np.floating):
        if rgb.size and (np.nanmin(rgb) < 0 or np.nanmax(rgb) > 1 or np.isnan(rgb).any()):
            raise ValueError(f"the {split} split's float 'rgb' has values outside [0, 1]; expected [0, 1] or uint8")
        out["rgb"] = np.rint(rgb * 255.0).astype(np.uint8)
    elif rgb.dtype != np.uint8:
        raise ValueError(f"the {split} split's 'rgb' has dtype {rgb.dtype}; expected uint8 or float in [0, 1]")
    return out

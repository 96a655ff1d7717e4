"""The task registry: every dense-prediction task the analyzer knows.

A task names the modality its label is stored in, how the stored label
becomes a training target, the loss the network minimises and the metrics an
evaluation reports. Labels are kept in their compact on-disk encodings
(Taskonomy's: uint8/uint16 images) all the way to the jitted step, and
`Task.target` decodes them there, so data in memory stays small.

Stored encodings (one array per modality, resolution R):

=====================  ================  ======================================
modality               dtype, shape      meaning
=====================  ================  ======================================
rgb                    uint8 (R,R,3)     the image
depth_zbuffer          uint16 (R,R)      z-buffer depth in 1/512 m;
                                         65535 = no surface (invalid)
normal                 uint8 (R,R,3)     camera-frame unit normal n as
                                         (n + 1) / 2 * 255
segment_semantic       uint8 (R,R)       class id (SEG_CLASSES); 0 = void
edge_texture           uint16 (R,R)      Canny-style edges of the RGB image
edge_occlusion         uint16 (R,R)      depth-discontinuity edges
keypoints2d            uint16 (R,R)      corner (keypoint) response of RGB
reshading              uint8 (R,R)       shading under one canonical light,
                                         no texture
principal_curvature    uint8 (R,R,2)     principal curvatures (k1, k2) as
                                         (c + 1) / 2 * 255, c in [-1, 1]
=====================  ================  ======================================

Losses follow Standley et al. (2020): segmentation is cross-entropy with class
0 ignored; depth, normals, occlusion edges, reshading and curvature are L1
under the validity mask (pixels that hit a surface); keypoints, texture edges
and the autoencoder are plain L1. Depth targets are normalised as
(x - 1500) / 1000 in Taskonomy's 1/512 m units, normals as 2x - 1.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks.label_plan import LABELLED

Array = jnp.ndarray

# Semantic classes of the embedded scenes; index = label id, 0 is ignored.
SEG_CLASSES: tuple[str, ...] = (
    "void",
    "floor",
    "wall",
    "ceiling",
    "box",
    "sphere",
    "cylinder",
    "cone",
)

# Modality -> (numpy dtype name, channels; 0 = a single-channel (R,R) image).
MODALITIES: dict[str, tuple[str, int]] = {
    "rgb": ("uint8", 3),
    "depth_zbuffer": ("uint16", 0),
    "normal": ("uint8", 3),
    "segment_semantic": ("uint8", 0),
    "edge_texture": ("uint16", 0),
    "edge_occlusion": ("uint16", 0),
    "keypoints2d": ("uint16", 0),
    "reshading": ("uint8", 0),
    "principal_curvature": ("uint8", 2),
}

# The labels of the NYUv2, Cityscapes and CelebA readers (`tasks.mtan`,
# `tasks.celeba`): modality -> (numpy dtype name, shape of one image's label,
# "R" standing for the resolution). Class ids are stored plus one, 0 = void;
# depth 0 and an all-zero normal mark pixels without a measurement.
LAYOUT_MODALITIES: dict[str, tuple[str, tuple]] = {
    "semantic": ("uint8", ("R", "R")),
    "semantic19": ("uint8", ("R", "R")),
    "depth": ("float32", ("R", "R")),
    "surface_normal": ("float32", ("R", "R", 3)),
    "attributes": ("uint8", (40,)),
}


def stored_spec(modality: str, resolution: int) -> tuple[str, tuple[int, ...]]:
    """(dtype name, shape of one image's array) of a stored modality at `resolution`."""
    if modality in MODALITIES:
        dtype, channels = MODALITIES[modality]
        return dtype, (resolution, resolution) + ((channels,) if channels else ())
    if modality in LAYOUT_MODALITIES:
        dtype, shape = LAYOUT_MODALITIES[modality]
        return dtype, tuple(resolution if d == "R" else d for d in shape)
    raise ValueError(f"unknown modality {modality!r}; valid modalities: {', '.join([*MODALITIES, *LAYOUT_MODALITIES])}")


DEPTH_INVALID = 65535
DEPTH_UNITS_PER_METRE = 512.0


#: What a task predicts: a map per pixel, or one vector per image.
KINDS = ("dense", "image")


class UnknownTaskError(ValueError):
    """A task name that is neither a registered name nor an alias."""


# ---------------------------------------------------------------------------
# Decoding stored labels (jit-friendly: pure jnp).


def decode_image(x: Array) -> Array:
    """uint8 RGB -> float in [-1, 1] (the network's input and the autoencoder target)."""
    return x.astype(jnp.float32) / 127.5 - 1.0


def _channels_last(x: Array) -> Array:
    return x if x.ndim == 4 else x[..., None]


def _unit(scale: float) -> Callable[[Array], Array]:
    def decode(x: Array) -> Array:
        return _channels_last(x.astype(jnp.float32) / scale)

    return decode


def _signed(x: Array) -> Array:
    return _channels_last(x.astype(jnp.float32) / 127.5 - 1.0)


def _depth(x: Array) -> Array:
    return _channels_last((x.astype(jnp.float32) - 1500.0) / 1000.0)


def _labels(x: Array) -> Array:
    return x.astype(jnp.int32)


def valid_mask(batch: Mapping[str, Array]) -> Array:
    """(B,R,R) bool: pixels whose ray hit a surface (depth is valid)."""
    return batch["depth_zbuffer"] != DEPTH_INVALID


# ---------------------------------------------------------------------------
# Losses: mean over the pixels that count.


def l1_loss(pred: Array, target: Array, mask: Array | None) -> Array:
    err = jnp.abs(pred - target).mean(axis=-1)
    if mask is None:
        return err.mean()
    m = mask.astype(err.dtype)
    return (err * m).sum() / jnp.maximum(m.sum(), 1.0)


def cross_entropy_loss(logits: Array, labels: Array, mask: Array | None) -> Array:
    """Softmax cross-entropy; pixels with label 0 (void) are ignored."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    m = labels != 0
    if mask is not None:
        m = m & mask
    m = m.astype(nll.dtype)
    return (nll * m).sum() / jnp.maximum(m.sum(), 1.0)


# ---------------------------------------------------------------------------
# Metrics: each task accumulates sums per batch (`stats`) and turns the summed
# statistics into numbers once (`finalize`), so a metric over a split does not
# depend on how the split was batched.


def _l1_stats(pred: Array, target: Array, mask: Array | None) -> dict[str, Array]:
    err = jnp.abs(pred - target).mean(axis=-1)
    m = jnp.ones_like(err) if mask is None else mask.astype(err.dtype)
    return {"abs_sum": (err * m).sum(), "count": m.sum()}


def _l1_finalize(s: Mapping[str, float]) -> dict[str, float]:
    return {"l1": float(s["abs_sum"] / max(s["count"], 1.0))}


def _seg_stats(logits: Array, labels: Array, mask: Array | None) -> dict[str, Array]:
    n = logits.shape[-1]
    pred = logits.argmax(-1)
    valid = labels != 0
    if mask is not None:
        valid = valid & mask
    idx = jnp.where(valid, labels * n + pred, n * n)  # n*n = a bin that is dropped
    conf = jnp.bincount(idx.reshape(-1), length=n * n + 1)[: n * n].reshape(n, n)
    return {"confusion": conf.astype(jnp.float32)}


def _seg_finalize(s: Mapping[str, object]) -> dict[str, float]:
    conf = np.asarray(s["confusion"], dtype=np.float64)[1:, 1:]  # drop void
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0
    iou = np.where(union > 0, tp / np.maximum(union, 1.0), 0.0)
    miou = float(iou[present].mean()) if present.any() else float("nan")
    acc = float(tp.sum() / max(conf.sum(), 1.0))
    return {"miou": miou, "pixel_accuracy": acc}


def _depth_stats(pred: Array, target: Array, mask: Array | None) -> dict[str, Array]:
    # Normalised units -> metres: x_units = 1000 * t + 1500.
    scale = 1000.0 / DEPTH_UNITS_PER_METRE
    err = (pred - target)[..., 0] * scale
    m = mask.astype(err.dtype)
    return {"abs_sum": (jnp.abs(err) * m).sum(), "sq_sum": (err**2 * m).sum(), "count": m.sum()}


def _depth_finalize(s: Mapping[str, float]) -> dict[str, float]:
    c = max(float(s["count"]), 1.0)
    return {"l1_m": float(s["abs_sum"]) / c, "rmse_m": (float(s["sq_sum"]) / c) ** 0.5}


def _normal_stats(pred: Array, target: Array, mask: Array | None) -> dict[str, Array]:
    p = pred / jnp.maximum(jnp.linalg.norm(pred, axis=-1, keepdims=True), 1e-6)
    t = target / jnp.maximum(jnp.linalg.norm(target, axis=-1, keepdims=True), 1e-6)
    cos = jnp.clip((p * t).sum(-1), -1.0, 1.0)
    ang = jnp.degrees(jnp.arccos(cos))
    m = mask.astype(ang.dtype)
    l1 = jnp.abs(pred - target).mean(-1)
    return {"angle_sum": (ang * m).sum(), "abs_sum": (l1 * m).sum(), "count": m.sum()}


def _normal_finalize(s: Mapping[str, float]) -> dict[str, float]:
    c = max(float(s["count"]), 1.0)
    return {"mean_angle_deg": float(s["angle_sum"]) / c, "l1": float(s["abs_sum"]) / c}


# ---------------------------------------------------------------------------
# Image-level tasks: logits (B,C) from the pooled head, one label per image.


def binary_cross_entropy_loss(logits: Array, target: Array, mask: Array | None) -> Array:
    """Mean sigmoid cross-entropy of (B,1) logits against (B,) targets in {0, 1}:
    softplus(z) - y z, computed stably."""
    z = logits.astype(jnp.float32).reshape(target.shape)
    y = target.astype(jnp.float32)
    return (jax.nn.softplus(z) - y * z).mean()


def softmax_cross_entropy_loss(logits: Array, labels: Array, mask: Array | None) -> Array:
    """Mean softmax cross-entropy of (B,K) logits against (B,) class ids 0..K-1."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1).mean()


def _binary_stats(logits: Array, target: Array, mask: Array | None) -> dict[str, Array]:
    pred = logits.reshape(target.shape) > 0
    correct = (pred == (target > 0.5)).astype(jnp.float32)
    return {"correct": correct.sum(), "count": jnp.asarray(correct.size, jnp.float32)}


def _class_stats(logits: Array, labels: Array, mask: Array | None) -> dict[str, Array]:
    correct = (logits.argmax(-1) == labels.astype(jnp.int32)).astype(jnp.float32)
    return {"correct": correct.sum(), "count": jnp.asarray(correct.size, jnp.float32)}


def _accuracy_finalize(s: Mapping[str, float]) -> dict[str, float]:
    acc = float(s["correct"]) / max(float(s["count"]), 1.0)
    return {"accuracy": acc, "error_rate": 1.0 - acc}


# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
    """One dense-prediction task.

    Attributes:
      name: canonical name (``seg``).
      aliases: other accepted names, Standley's letter and Taskonomy's
        modality name among them.
      label: the modality the target is decoded from.
      channels: output channels of the task's decoder.
      decode: stored label batch -> target (float (B,R,R,C), or int labels).
      loss: (prediction, target, mask or None) -> scalar.
      masked: whether the loss counts only valid-geometry pixels.
      stats / finalize: metric accumulation (see above).
      metric: the headline metric name, and whether higher is better.
      kind: 'dense' (a decoder predicts (B,R,R,channels)) or 'image' (a
        pooled linear head predicts (B,channels): one logit for a binary
        attribute, or one per class).
    """

    name: str
    aliases: tuple[str, ...]
    label: str
    channels: int
    decode: Callable[[Array], Array]
    loss: Callable[[Array, Array, Array | None], Array]
    masked: bool
    stats: Callable[[Array, Array, Array | None], dict[str, Array]]
    finalize: Callable[[Mapping[str, object]], dict[str, float]]
    metric: str
    higher_is_better: bool
    description: str
    kind: str = "dense"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"task {self.name!r}: channels must be a positive integer, got {self.channels!r}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Stored modalities this task reads (its label, and depth for the mask)."""
        return (self.label, "depth_zbuffer") if self.masked and self.label != "depth_zbuffer" else (self.label,)

    def mask(self, batch: Mapping[str, Array]) -> Array | None:
        """The pixels the loss counts: the validity mask if `masked`, and, where the batch carries
        per-image flags for the label (``labelled:<label>``, a label plan: `tasks.label_plan`), only
        the flagged images (dense tasks; an image-level task has no such flags)."""
        m = valid_mask(batch) if self.masked else None
        flags = batch.get(LABELLED + self.label) if self.kind == "dense" else None
        if flags is None:
            return m
        per_image = jnp.broadcast_to(flags.astype(bool)[:, None, None], batch[self.label].shape[:3])
        return per_image if m is None else m & per_image

    def compute_loss(self, pred: Array, batch: Mapping[str, Array]) -> Array:
        return self.loss(pred, self.decode(batch[self.label]), self.mask(batch))

    def compute_stats(self, pred: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
        return self.stats(pred, self.decode(batch[self.label]), self.mask(batch))


def _l1_task(name, aliases, label, channels, decode, masked, description) -> Task:
    return Task(
        name=name,
        aliases=aliases,
        label=label,
        channels=channels,
        decode=decode,
        loss=l1_loss,
        masked=masked,
        stats=_l1_stats,
        finalize=_l1_finalize,
        metric="l1",
        higher_is_better=False,
        description=description,
    )


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            name="seg",
            aliases=("s", "segment_semantic", "segmentation", "semantic"),
            label="segment_semantic",
            channels=len(SEG_CLASSES),
            decode=_labels,
            loss=cross_entropy_loss,
            masked=False,
            stats=_seg_stats,
            finalize=_seg_finalize,
            metric="miou",
            higher_is_better=True,
            description="semantic segmentation (cross-entropy, class 0 ignored; mIoU)",
        ),
        Task(
            name="depth",
            aliases=("d", "depth_zbuffer", "z"),
            label="depth_zbuffer",
            channels=1,
            decode=_depth,
            loss=l1_loss,
            masked=True,
            stats=_depth_stats,
            finalize=_depth_finalize,
            metric="rmse_m",
            higher_is_better=False,
            description="z-buffer depth (masked L1 on (x-1500)/1000; RMSE in metres)",
        ),
        Task(
            name="normals",
            aliases=("n", "normal", "surface_normals"),
            label="normal",
            channels=3,
            decode=_signed,
            loss=l1_loss,
            masked=True,
            stats=_normal_stats,
            finalize=_normal_finalize,
            metric="mean_angle_deg",
            higher_is_better=False,
            description="surface normals (masked L1 on 2x-1; mean angular error)",
        ),
        _l1_task("edges", ("t", "edge_texture", "edge2d"), "edge_texture", 1, _unit(65535.0), False,
                 "texture edges of the RGB image (L1)"),
        _l1_task("occlusion", ("e", "edge_occlusion", "edge3d"), "edge_occlusion", 1, _unit(65535.0), True,
                 "occlusion edges, depth discontinuities (masked L1)"),
        _l1_task("keypoints", ("k", "keypoints2d", "keypoint2d"), "keypoints2d", 1, _unit(65535.0), False,
                 "2D keypoint (corner) response of the RGB image (L1)"),
        _l1_task("reshading", ("r", "reshade"), "reshading", 1, _unit(255.0), True,
                 "shading under one canonical light, without texture (masked L1)"),
        _l1_task("curvature", ("c", "principal_curvature"), "principal_curvature", 2, _signed, True,
                 "principal curvatures (masked L1)"),
        _l1_task("autoencoder", ("a", "rgb", "autoencoding"), "rgb", 3, decode_image, False,
                 "the RGB image itself (L1)"),
    )
}

class TaskSet:
    """The tasks one kind of data offers, found by canonical name or alias (any case).

    `tasks.registry.DEFAULT` holds the Taskonomy vocabulary (the embedded
    scenes and Taskonomy folders) and every task `register_task` adds; the
    NYUv2, Cityscapes and CelebA readers (`tasks.sources`) have their own.
    """

    def __init__(self, tasks: Sequence[Task] = (), what: str = "tasks"):
        self.what = what
        self.tasks: dict[str, Task] = {}
        self._by_alias: dict[str, str] = {}
        for t in tasks:
            self.add(t)

    def add(self, task: Task, *, replace: bool = False) -> Task:
        """Adds `task`; ValueError if its name or an alias already names another task (unless `replace`)."""
        keys = [k.strip().lower() for k in (task.name, *task.aliases)]
        clash = [k for k in keys if k in self._by_alias and self._by_alias[k] != task.name]
        if clash:
            raise ValueError(f"task {task.name!r}: the name {clash[0]!r} already names the task "
                             f"{self._by_alias[clash[0]]!r}; choose another name or alias")
        if task.name in self.tasks and not replace:
            raise ValueError(f"task {task.name!r} is already registered; pass replace=True to redefine it")
        if task.name in self.tasks:
            old = self.tasks[task.name]
            for k in (old.name, *old.aliases):
                self._by_alias.pop(k.strip().lower(), None)
        self.tasks[task.name] = task
        for k in keys:
            self._by_alias[k] = task.name
        return task

    def __contains__(self, name: str) -> bool:
        return name.strip().lower() in self._by_alias

    def valid_names(self) -> str:
        """'seg (s, segment_semantic, ...), depth (d, ...)': for error messages."""
        return ", ".join(f"{t.name} ({', '.join(t.aliases)})" if t.aliases else t.name for t in self.tasks.values())

    def get(self, name: str) -> Task:
        """The task called `name` (a canonical name or an alias, any case)."""
        key = str(name).strip().lower()
        if key not in self._by_alias:
            raise UnknownTaskError(f"unknown task {name!r}; valid {self.what} (aliases in brackets): {self.valid_names()}")
        return self.tasks[self._by_alias[key]]

    def resolve(self, names: str | Sequence[str], *, min_tasks: int = 1) -> tuple[Task, ...]:
        """Tasks from 'seg,depth' or ['s', 'd'], in the order given.

        Raises UnknownTaskError for an unknown name, ValueError for a repeated
        task (also through two aliases) or fewer than `min_tasks` tasks.
        """
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        tasks = tuple(self.get(n) for n in names)
        seen: dict[str, str] = {}
        for given, task in zip(names, tasks):
            if task.name in seen:
                raise ValueError(f"task {task.name!r} is given twice ({seen[task.name]!r} and {given!r})")
            seen[task.name] = given
        if len(tasks) < min_tasks:
            raise ValueError(f"need at least {min_tasks} task(s), got {len(tasks)}: {', '.join(names) or '(none)'}")
        return tasks


#: The Taskonomy vocabulary, and the tasks a user registers (`register_task`).
DEFAULT = TaskSet(TASKS.values(), "tasks")


def valid_names() -> str:
    """'seg (s, segment_semantic, ...), depth (d, ...)': for error messages."""
    return DEFAULT.valid_names()


def get_task(name: str) -> Task:
    """The task called `name` (a canonical name or an alias, any case)."""
    return DEFAULT.get(name)


def resolve_tasks(names: str | Sequence[str], *, min_tasks: int = 1, catalogue: TaskSet | None = None
                  ) -> tuple[Task, ...]:
    """Tasks from 'seg,depth' or ['s', 'd'] (of `catalogue`, default `DEFAULT`), in the order given.

    Raises UnknownTaskError for an unknown name, ValueError for a repeated
    task (also through two aliases) or fewer than `min_tasks` tasks.
    """
    return (catalogue or DEFAULT).resolve(names, min_tasks=min_tasks)


def flags_for(tasks: Sequence[Task], split: Mapping[str, object]) -> tuple[str, ...]:
    """The per-image label flags of `split` (a label plan's, `tasks.label_plan`) that `tasks` read."""
    keys = dict.fromkeys(LABELLED + t.label for t in tasks if t.kind == "dense")
    return tuple(k for k in keys if k in split)


def modalities_for(tasks: Sequence[Task]) -> tuple[str, ...]:
    """Stored modalities needed to train `tasks` (the input image 'rgb' included):
    those of MODALITIES in its order, then any other label key in task order."""
    needed = ["rgb"]
    for t in tasks:
        needed += [m for m in t.modalities if m not in needed]
    known = [m for m in MODALITIES if m in needed]
    return tuple(known + [m for m in needed if m not in MODALITIES])

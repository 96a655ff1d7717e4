"""Training and evaluation of one multi-task network.

The step is functional: the model is split once into its graph definition
and a pytree of parameters (`nnx.split`), and `jax.jit` runs over the
parameters and optimizer state. That avoids nnx.jit's per-call walk of the
object graph, which costs 2-4x per step on small models on a CPU
(../shared/REFERENCES.md). The step and the loop are `mtl.step`'s, shared
with ensembles (`mtl.ensemble`) and the affinity probes; this module gives
them one network (`network_model`). Steps are dispatched asynchronously; the
host reads the losses back once per chunk of `steps_per_call` steps (to
check them for NaN and show progress), not after every step.

Every step's minibatch is drawn from `fold_in(key(seed), step)`, so a run
is the same whether it was chunked, interrupted and resumed, or run in one go.

The training loss of a network is the sum of its tasks' losses (Standley et
al., 2020), unless `TrainConfig.balance` names another method of
`mtl.balancing`. A `Probe` (the TAG affinity in grouping.affinity) replaces
every k-th step with one that trains the same way and also measures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mtl import balancing, runtime
from mtl.model import MultiTaskNet, check_resolution
from mtl.pertask import SplitLoss
from mtl.step import TaskModel, check_finite, make_step, sample_batch, train_loop  # noqa: F401 (sample_batch: re-exported)
from mtl.step import initial_state as step_state
from tasks.registry import Task, decode_image, flags_for, modalities_for

Batch = Mapping[str, jax.Array]


class TrainingDiverged(FloatingPointError):
    """A task's loss became NaN or infinite."""

    def __init__(self, task: str, step: int, value: float, network: str | None = None):
        super().__init__(
            (f"network {network}: " if network else "")
            + f"training diverged: the loss of task {task!r} became {value} at step {step}; "
            "lower the learning rate or check the task's labels"
        )
        self.task, self.step, self.value, self.network = task, step, value, network


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one network is trained. The defaults are the standard schedule."""

    steps: int = 1500
    batch_size: int = 32
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    size: float = 1.0  # encoder multiply-add fraction: 1 full, 0.5 half
    dtype: str = "float32"  # compute dtype; "bfloat16" is for GPUs
    seed: int = 0
    steps_per_call: int = 25  # steps between reads of the losses
    checkpoint_every: int = 500
    checkpoint_min_seconds: float = 0.0  # a due checkpoint is skipped until this long after the last save (or the start)
    balance: str = "equal"  # how the task losses are combined: a method of mtl.balancing
    # Training loss weights, ((task, weight), ...): the step trains on sum_t w_t L_t (unnamed tasks 1);
    # the losses it reports, and every evaluation, stay in the tasks' own units.
    task_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        balancing.get_method(self.balance)
        # a record's JSON gives [[name, weight], ...]: the same weights, hashable
        object.__setattr__(self, "task_weights", tuple((str(n), w) for n, w in self.task_weights))
        names = [n for n, _ in self.task_weights]
        if len(set(names)) != len(names) or any(not (isinstance(w, (int, float)) and w > 0)
                                                for _, w in self.task_weights):
            raise ValueError(f"task_weights must name each task once with a positive weight, got {self.task_weights!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        for name in ("steps", "batch_size", "steps_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warm-up, then cosine decay to 1% of the peak rate."""
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, max(cfg.steps, warmup + 1), end_value=cfg.learning_rate * 0.01
    )


def learning_rate_sum(cfg: TrainConfig) -> float:
    """The sum of `learning_rate_schedule`'s rates over the schedule's steps: how far plain SGD would
    move along a unit gradient in the whole training (tag's first-order reading of its affinity)."""
    schedule = learning_rate_schedule(cfg)
    return float(np.sum(np.asarray(jax.vmap(schedule)(jnp.arange(cfg.steps)), dtype=np.float64)))


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW (or SGD with momentum) on `learning_rate_schedule`."""
    schedule = learning_rate_schedule(cfg)
    if cfg.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=cfg.weight_decay)
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.sgd(schedule, momentum=cfg.momentum))


def initial_state(params: Any, tx: optax.GradientTransformation, cfg: TrainConfig | None = None,
                  n_tasks: int | None = None) -> dict[str, Any]:
    """The training state a step of one network takes: parameters, optimizer state, step 0 (and the
    balancing method's state, for `cfg.balance` methods that keep one: give `n_tasks`)."""
    balance = cfg.balance if cfg is not None else "equal"
    return step_state(params, tx, balance, None if n_tasks is None else (n_tasks,))


def build_model(tasks: Sequence[Task], cfg: TrainConfig) -> MultiTaskNet:
    dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
    return MultiTaskNet(tasks, size=cfg.size, dtype=dtype, rngs=nnx.Rngs(cfg.seed))


# ---------------------------------------------------------------------------
# Pure functions of arrays.


def task_losses(graphdef: nnx.GraphDef, params: Any, batch: Batch, tasks: Sequence[Task]) -> jax.Array:
    """(n_tasks,) loss of each task on one batch."""
    preds = nnx.merge(graphdef, params)(decode_image(batch["rgb"]))
    return jnp.stack([t.compute_loss(preds[t.name], batch) for t in tasks])


def network_split(graphdef: nnx.GraphDef, tasks: Sequence[Task], batch: Batch) -> SplitLoss:
    """`task_losses` as a trunk (the encoder) and heads (decoders + `Task.compute_loss`): the form
    per-task gradients take (`mtl.pertask`). Shared = the 'encoder' subtree of the parameters."""
    tasks = tuple(tasks)
    x = decode_image(batch["rgb"])

    def features(params):
        return nnx.merge(graphdef, params).encoder(x)

    def heads(params, zs):
        decoders = nnx.merge(graphdef, params).decoders
        return jnp.stack([t.compute_loss(decoders[t.name](zs[j]), batch) for j, t in enumerate(tasks)])

    return SplitLoss(features, heads, len(tasks))


def network_model(graphdef: nnx.GraphDef, tasks: Sequence[Task]) -> TaskModel:
    """The `mtl.step.TaskModel` of one network: (T,) losses, every task present."""
    tasks = tuple(tasks)
    return TaskModel(losses=lambda params, batch: task_losses(graphdef, params, batch, tasks),
                     split=lambda batch: network_split(graphdef, tasks, batch),
                     mask=np.ones(len(tasks), np.float32), names=tuple(t.name for t in tasks))


def make_train_fn(
    graphdef: nnx.GraphDef, tasks: Sequence[Task], tx: optax.GradientTransformation, cfg: TrainConfig
) -> Callable:
    """The jitted step `(state, data) -> (state, losses (n_tasks,))` of one network (`mtl.step.make_step`),
    balanced by `cfg.balance`. The state (`initial_state`) is donated: use the returned one."""
    return make_step(network_model(graphdef, tasks), tx, cfg, balance=cfg.balance)


def make_eval_fn(graphdef: nnx.GraphDef, tasks: Sequence[Task]) -> Callable:
    """A jitted `(params, batch) -> {task: {"loss_sum", **stats}}`.

    Losses are per image (each image's own mean over its counted pixels) and
    summed, so a split's loss is the mean over its images whatever the batching.
    """

    def per_image_losses(params, batch):
        preds = nnx.merge(graphdef, params)(decode_image(batch["rgb"]))

        def one(pred_i, batch_i):
            b = {k: v[None] for k, v in batch_i.items()}
            return jnp.stack([t.compute_loss(pred_i[t.name][None], b) for t in tasks])

        losses = jax.vmap(one)(preds, dict(batch))
        out = {}
        for i, t in enumerate(tasks):
            out[t.name] = {"loss_sum": losses[:, i].sum(), **t.compute_stats(preds[t.name], batch)}
        return out

    return runtime.jit(per_image_losses)


# ---------------------------------------------------------------------------
# Stateful edges: data on device, checkpoints, progress.


def to_device(split: Mapping[str, np.ndarray], tasks: Sequence[Task]) -> dict[str, jax.Array]:
    """The modalities `tasks` need, as device arrays in their stored dtypes."""
    missing = [m for m in modalities_for(tasks) if m not in split]
    if missing:
        raise ValueError(f"the data has no {', '.join(missing)} labels, needed by tasks "
                         f"{', '.join(t.name for t in tasks)}; it has: {', '.join(sorted(split))}")
    n = len(split["rgb"])
    if n == 0:
        raise ValueError("the data split is empty")
    check_resolution(split["rgb"].shape[1])
    return {m: runtime.put(split[m]) for m in modalities_for(tasks) + flags_for(tasks, split)}


def even_batch(n: int, batch: int = 64) -> int:
    """The evaluation batch for n images: all n if they fit one batch, else the largest batch of at most `batch` images that splits them
    into equal batches, if one of at least batch/2 exists, else `batch`. Equal batches make one
    evaluation program instead of two (a short last batch is a new shape, so a second compilation)."""
    if n <= batch:
        return max(n, 1)  # one batch of the whole split
    return next((b for b in range(batch, max(batch // 2, 1) - 1, -1) if n % b == 0), batch)


@functools.partial(jax.jit, static_argnums=2)
def _slice_batch(split: Mapping[str, jax.Array], lo: jax.Array, size: int) -> dict[str, jax.Array]:
    return {k: jax.lax.dynamic_slice_in_dim(v, lo, size) for k, v in split.items()}


def batches(split: Mapping[str, Any], batch_size: int) -> Iterator[dict[str, Any]]:
    """The split's consecutive batches of `batch_size` images (the last may be shorter): what
    `evaluate` and `mtl.ensemble.evaluate_ensemble` step through. Device arrays are sliced by one
    program for all modalities (eager slicing compiles one per modality's shape); host arrays in
    numpy."""
    n = next(iter(split.values())).shape[0]
    on_device = all(isinstance(v, jax.Array) for v in split.values())
    for lo in range(0, n, batch_size):
        size = min(batch_size, n - lo)
        if on_device:
            yield _slice_batch(dict(split), np.int32(lo), size)
        else:
            yield {k: v[lo : lo + size] for k, v in split.items()}


def evaluate(
    graphdef: nnx.GraphDef, params: Any, split: Mapping[str, jax.Array], tasks: Sequence[Task],
    *, batch_size: int | None = None, eval_fn: Callable | None = None,
) -> dict[str, dict[str, float]]:
    """Per-task loss (mean over images) and metrics on a whole split (batches of `even_batch` images
    unless `batch_size` is given)."""
    eval_fn = eval_fn or make_eval_fn(graphdef, tasks)
    n = next(iter(split.values())).shape[0]
    batch_size = batch_size or even_batch(n)
    totals: dict[str, dict[str, Any]] = {}
    for batch in batches(split, batch_size):
        out = eval_fn(params, batch)
        for task, stats in jax.device_get(out).items():
            acc = totals.setdefault(task, {})
            for k, v in stats.items():
                acc[k] = acc.get(k, 0) + np.asarray(v, dtype=np.float64)
    result = {}
    for t in tasks:
        stats = totals[t.name]
        result[t.name] = {"loss": float(stats.pop("loss_sum") / n), **t.finalize(stats)}
    return result


class Checkpoints:
    """Orbax checkpoints of a training state in `directory` (keeps the newest 2).

    Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it when
    complete, so a save cut short (kill, full disk) never looks like a
    checkpoint; leftovers are removed when the directory is opened again. A
    full disk raises `mtl.cli.DiskFullError` naming the directory and the
    checkpoint's size, instead of the tracebacks orbax's writer threads log
    (those are filtered out: `_quiet_disk_full`).

    Orbax's manager is opened on first use (about 0.1 s): a run that finds no
    directory and writes no checkpoint never opens one.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).absolute()
        self._manager = None

    @property
    def manager(self):
        if self._manager is None:
            import orbax.checkpoint as ocp

            _quiet_disk_full()
            self._ocp = ocp
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False,
                                                     cleanup_tmp_directories=True),
            )
        return self._manager

    def latest_step(self) -> int | None:
        if self._manager is None and not self.directory.exists():
            return None
        return self.manager.latest_step()

    def save(self, state: dict) -> None:
        from mtl.cli import DiskFullError, is_disk_full

        step = int(state["step"])
        try:
            with _orbax_unraisables():
                self.manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
                self.manager.wait_until_finished()
        except Exception as e:
            if not is_disk_full(e):
                raise
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)  # give the space back now
            size = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
            raise DiskFullError(self.directory, f"the checkpoint of step {step}", needed=size) from e

    def restore(self, like: dict) -> dict:
        # Keep the shardings of `like` (an ensemble sharded over devices restores onto them).
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
                                like)
        return self.manager.restore(self.manager.latest_step(), args=self._ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


_QUIET = {"log": False}


def _quiet_disk_full() -> None:
    """Keeps orbax's report of a full disk to the one error `Checkpoints.save` raises.

    Orbax's writer threads log the failure through absl with a traceback
    (logging.exception) before the save raises it, and asyncio logs the other
    writes' failures at exit: a filter on the absl and asyncio loggers drops
    those records, and only those that say the disk is full."""
    import logging

    from mtl.cli import is_disk_full

    if not _QUIET["log"]:
        class DropDiskFull(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                exc = record.exc_info[1] if record.exc_info else None
                return not (is_disk_full(exc) or is_disk_full(Exception(record.getMessage())))

        for name in ("absl", "asyncio"):  # asyncio: "Task exception was never retrieved" for the other writes
            logging.getLogger(name).addFilter(DropDiskFull())
        _QUIET["log"] = True


@contextlib.contextmanager
def _orbax_unraisables() -> Iterator[None]:
    """While orbax saves, and after a failed save, drops what its orphaned writes leave behind.

    When one array's write fails, tensorstore's other writes finish later
    against the event loop orbax has closed, and Python prints a bare
    "RuntimeError: Event loop is closed" traceback for each (as unraisable
    exceptions), and at exit "Exception ignored in <coroutine ...>" for orbax's
    coroutines. After a successful save the previous hook is put back; after a
    failure the filter stays, as such writes can end at any later time."""
    import sys

    previous = sys.unraisablehook

    def hook(unraisable):
        exc, obj = unraisable.exc_value, unraisable.object
        code = getattr(obj, "cr_code", None)
        if (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed") or \
                "orbax" in getattr(code, "co_filename", ""):
            return
        previous(unraisable)

    sys.unraisablehook = hook
    yield
    if sys.unraisablehook is hook:  # only reached without an exception
        sys.unraisablehook = previous


@dataclasses.dataclass(frozen=True)
class Probe:
    """A measurement taken during training, every `every` steps.

    On those steps the one training step (`mtl.step.make_step`) runs with the
    measurement `make_measure(graphdef, tasks, tx, cfg)`:
    ``(probe_state, per_task, params, flags, updates, opt_state) -> probe_state``,
    given the step's per-task gradients (which the step's own gradient is
    built from) and the optimizer's update, so a measured step trains exactly
    like a plain one. `state["probe"]` starts as `init()` and is checkpointed
    with the run. grouping.affinity and grouping.lookahead build their probes
    on this.
    """

    every: int
    init: Callable[[], Any]
    make_measure: Callable[..., Callable]


@dataclasses.dataclass
class TrainResult:
    tasks: tuple[str, ...]
    graphdef: nnx.GraphDef
    params: Any
    losses: np.ndarray  # (steps, n_tasks) training loss of every step
    seconds: float
    resumed_from: int | None
    probe: Any = None  # the probe's final state, if one ran

    def model(self) -> MultiTaskNet:
        return nnx.merge(self.graphdef, self.params)


def train_network(
    tasks: Sequence[Task],
    train_split: Mapping[str, np.ndarray | jax.Array],
    cfg: TrainConfig = TrainConfig(),
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    probe: Probe | None = None,
) -> TrainResult:
    """Trains a network for `tasks` on `train_split` (modality -> array).

    With `checkpoint_dir`, the state is saved every `cfg.checkpoint_every`
    steps and at the end (skipping saves due within `cfg.checkpoint_min_seconds`
    of the last one: `mtl.step.train_loop`), and a run finding a checkpoint
    there resumes from it. `stop_after` ends the run after that many steps without a final
    checkpoint, as if it had been killed then (for tests of resumption).

    Raises TrainingDiverged when a task's loss becomes NaN or infinite.
    """
    tasks = tuple(tasks)
    data = to_device(train_split, tasks)
    model = build_model(tasks, cfg)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(cfg)
    state = initial_state(params, tx, cfg, len(tasks))
    if probe is not None:
        state["probe"] = probe.init()
    run = make_train_fn(graphdef, tasks, tx, cfg)
    measured = None
    if probe is not None:
        measured = make_step(network_model(graphdef, tasks), tx, cfg, balance=cfg.balance,
                             measure=probe.make_measure(graphdef, tasks, tx, cfg))
    names = [t.name for t in tasks]
    loop = train_loop(state, data, run, cfg, measured=measured, every=probe.every if probe else None,
                      checkpoint_dir=checkpoint_dir, stop_after=stop_after, progress=progress,
                      desc="+".join(names) + (f" @{cfg.size:g}" if cfg.size != 1 else ""),
                      check=lambda losses, step0: check_finite(losses, names, step0),
                      postfix=lambda last: {t: f"{v:.3f}" for t, v in zip(names, last)})
    state = loop.state
    return TrainResult(
        tasks=tuple(t.name for t in tasks),
        graphdef=graphdef,
        params=state["params"],
        losses=loop.losses.reshape(-1, len(tasks)),
        seconds=loop.seconds,
        resumed_from=loop.resumed_from,
        probe=jax.device_get(state["probe"]) if probe is not None else None,
    )


def mean_training_loss(losses: np.ndarray, last: int = 50) -> np.ndarray:
    """Mean per-task loss over the last `last` steps (a cheap progress figure)."""
    return losses[-min(last, len(losses)) :].mean(0) if len(losses) else np.full(losses.shape[1:], math.nan)


def training_report(result: Any, steps: int) -> dict[str, Any]:
    """The training part of a network's report, from a TrainResult (or an ensemble's MemberResult)."""
    return {
        "probe": getattr(result, "probe", None),
        "train_seconds": result.seconds,
        "steps": steps,
        "resumed_from": result.resumed_from,
        "final_train_loss": dict(zip(result.tasks, map(float, mean_training_loss(result.losses)))),
    }


def train_and_evaluate(
    tasks: Sequence[Task],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    cfg: TrainConfig = TrainConfig(),
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    probe: Probe | None = None,
) -> dict[str, Any]:
    """Trains on splits['train'] and evaluates on every other split given.

    Returns {"probe" (its final state, or None), "train_seconds", "steps", "resumed_from", "final_train_loss":
    {task: mean of the last 50 steps}, <split>: {task: {"loss", metrics}}}.
    """
    result = train_network(tasks, splits["train"], cfg, checkpoint_dir=checkpoint_dir, progress=progress,
                           probe=probe)
    report = training_report(result, cfg.steps)
    eval_fn = make_eval_fn(result.graphdef, tasks)
    for name, split in splits.items():
        if name != "train":
            report[name] = evaluate(result.graphdef, result.params, to_device(split, tasks), tasks, eval_fn=eval_fn)
    return report

"""Training many networks of one width at once: ensembles.

Exhaustive, ESA and HOA estimation train many small networks of the same
architecture. One at a time, each pays its own compilation, dispatch and
evaluation, and a small network leaves the machine's cores (or a GPU) mostly
idle. An ensemble trains K networks in one compiled program.

The networks' stacked form and the program that steps them all are
`mtl.stacked` (layout, execution strategies); this module trains and
evaluates them, plans chunks that fit the device, and shards them.

Sharding. With several devices (``devices``, default all local ones), every
stack is sharded along its member axis over a one-axis `jax.sharding.Mesh`
(``members``); stacks are padded to a multiple of the device count with
copies whose losses are weighted 0 and which are dropped at the end. On a
cluster, call `jax.distributed.initialize()` first (see the README).

Memory. `plan_ensemble` bounds the memory of the ensemble's step from its
trace (on one device, the ensemble's own step, which training reuses), or
else of one member's step, measuring it with XLA's memory analysis only
where the bound could limit the chunks; an ensemble too large for the
device is split into chunks run one after another (`plan_chunks`), and a
device that cannot hold even one member is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from mtl.model import MultiTaskNet
from mtl.stacked import Ensemble, Layout, make_ensemble_eval_fn, make_ensemble_train_fn, resolve_strategy
from mtl.step import check_finite, initial_state, train_loop
from mtl.train import TrainConfig, batches, even_batch, make_optimizer, to_device, training_report
from tasks.registry import Task, flags_for, modalities_for

#: Share of a device's free memory an ensemble chunk may plan to use.
MEMORY_FRACTION = 0.7
#: Most members per chunk on a CPU when unrolled: the program (and its compile
#: time, about 0.6 s per member here) grows with every member.
CPU_MAX_MEMBERS = 40


class EnsembleMemoryError(MemoryError):
    """Not even one member fits in the device's memory."""


# ---------------------------------------------------------------------------
# Devices and memory.


def ensemble_devices(devices: int | Sequence | None = None) -> list:
    """The devices an ensemble is sharded over: all of them by default, or the first n.

    Across several processes (after `jax.distributed.initialize()`), "all"
    means every process's devices, and an ensemble always uses all of them."""
    everything = jax.devices()
    processes = jax.process_count()
    if devices is None:
        return list(everything)
    if isinstance(devices, int):
        if devices < 1:
            raise ValueError(f"the number of devices must be at least 1, got {devices}")
        if devices > len(everything):
            where = f" across {processes} processes" if processes > 1 else ""
            raise ValueError(
                f"{devices} devices asked for, but there are {len(everything)}{where} "
                f"({', '.join(sorted({d.platform for d in everything}))}); use at most {len(everything)}"
                + (" (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N host devices)"
                   if everything[0].platform == "cpu" else "")
            )
        if processes > 1 and devices != len(everything):
            raise ValueError(f"with {processes} processes an ensemble shards over all {len(everything)} devices; "
                             f"got devices={devices} (leave it unset)")
        return list(everything[:devices])
    return list(devices)


def fetch(tree: Any) -> Any:
    """Device arrays -> numpy on this host, gathering the shards of other processes if there are any."""
    from jax.experimental import multihost_utils

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:  # sharded over processes
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return jax.device_get(a)

    return jax.tree.map(one, tree)


def free_memory_bytes(device) -> int:
    """Memory an ensemble may use on `device`: the accelerator's free memory, or the host's available RAM."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends do not report
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _one_member_step(members: Sequence[Sequence[Task]], cfg: TrainConfig, data: Mapping[str, Any],
                     strategy: str) -> tuple[Callable, Any, dict[str, jax.ShapeDtypeStruct]]:
    """The largest member's training step as a one-member ensemble, with its abstract state and data:
    shapes only (`jax.eval_shape`), so nothing is initialised or compiled."""
    largest = max(members, key=len)
    built: dict[str, Ensemble] = {}

    def create():
        built["ens"] = Ensemble.create([largest], cfg)
        return built["ens"].params

    params = jax.eval_shape(create)
    ens = built["ens"]
    tx = make_optimizer(cfg)
    state = jax.eval_shape(lambda p: initial_state(p, tx, cfg.balance, ens.mask.shape), params)
    shapes = {m: jax.ShapeDtypeStruct(data[m].shape, data[m].dtype)
              for m in modalities_for(largest) + flags_for(largest, data)}
    return make_ensemble_train_fn(ens, tx, cfg, strategy), state, shapes


def _nbytes(aval: Any) -> int:
    if not hasattr(aval, "shape"):
        return 0
    try:
        itemsize = np.dtype(aval.dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys): at most two 32-bit words per element here
        itemsize = 8
    return math.prod(aval.shape) * itemsize


def _values_bytes(jaxpr: Any) -> int:
    """Bytes of every value a jaxpr computes, its sub-jaxprs' (jit, scan, custom VJP, cond) included."""
    from jax.extend import core as jcore

    total = 0
    for eqn in jaxpr.eqns:
        total += sum(_nbytes(v.aval) for v in eqn.outvars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, jcore.ClosedJaxpr):
                    total += _values_bytes(sub.jaxpr)
                elif isinstance(sub, jcore.Jaxpr):
                    total += _values_bytes(sub)
    return total


def _step_memory_bound(step: Callable, state: Any, data: Any) -> int:
    """Every value the step's trace computes, summed as if none were freed or fused away, plus the
    state, all doubled (for copies XLA may add, such as layout changes and scratch), the data excluded."""
    values = _values_bytes(step.trace(state, data).jaxpr.jaxpr)
    return 2 * (sum(_nbytes(a) for a in jax.tree.leaves(state)) + values)


def traced_memory_bound(run: Prepared) -> int:
    """`member_memory_bound` of the whole ensemble, from its own step traced on its own state and data:
    jit keeps that trace, so the first training step does not trace again."""
    return _step_memory_bound(run.step, run.state, run.data)


def member_memory_bound(members: Sequence[Sequence[Task]], cfg: TrainConfig, data: Mapping[str, Any],
                        strategy: str) -> int:
    """An upper bound on one training step's memory of the largest member, from its trace alone (about
    0.5 s on a CPU, against seconds for `member_memory_bytes`' compilation).

    Every value the step computes, summed as if none were freed or fused away, plus the state, all
    doubled (for copies XLA may add, such as layout changes and scratch), the training data excluded.
    XLA's measured peak is several times lower (tests/test_ensemble.py checks bound >= measured)."""
    return _step_memory_bound(*_one_member_step(members, cfg, data, strategy))


def member_memory_bytes(members: Sequence[Sequence[Task]], cfg: TrainConfig, data: Mapping[str, Any],
                        strategy: str) -> int:
    """Peak memory of one training step of the largest member, from XLA's memory analysis of the
    compiled step (arguments + outputs + temporaries, the training data excluded), without running it."""
    fn, state, shapes = _one_member_step(members, cfg, data, strategy)
    mem = fn.lower(state, shapes).compile().memory_analysis()
    if mem is None:  # a backend without the analysis: params, grads and two moments, 4x over
        return int(sum(_nbytes(a) * 4 * 4 for a in jax.tree.leaves(state["params"])))
    data_bytes = sum(_nbytes(s) for s in shapes.values())
    return int(max(mem.argument_size_in_bytes - data_bytes, 0) + mem.temp_size_in_bytes + mem.output_size_in_bytes)


def plan_ensemble(members: Sequence[Sequence[Task]], cfg: TrainConfig, data: Mapping[str, Any], strategy: str,
                  devices: Sequence, max_members: int | None = None) -> tuple[list[range], str, Prepared | None]:
    """The chunks an ensemble of `members` trains in (`plan_chunks`), how its memory was found, and
    the prepared ensemble where one was built to find it:

    "whole"     one device and one chunk unless memory limits it (the usual case): the ensemble is
                prepared (`prepare_ensemble`, built anyway to train) and `traced_memory_bound` of
                its own step shows it fits; training reuses it and its trace;
    "bound"     else `member_memory_bound` of the largest member shows that memory does not limit
                the chunks (a trace, no compilation);
    "measured"  else `member_memory_bytes` (one compilation)."""
    strategy = resolve_strategy(strategy)
    if strategy == "unroll" and devices[0].platform == "cpu":
        max_members = min(max_members or CPU_MAX_MEMBERS, CPU_MAX_MEMBERS)
    free = free_memory_bytes(devices[0])
    unlimited = plan_chunks(len(members), 1, free, len(devices), max_members)
    if len(unlimited) == 1 and len(devices) == 1:
        run = prepare_ensemble(members, data, cfg, strategy, devices)
        if traced_memory_bound(run) <= MEMORY_FRACTION * free:
            return unlimited, "whole", run
        del run  # too large to be sure of: free it before planning chunks
    try:
        bounded = plan_chunks(len(members), member_memory_bound(members, cfg, data, strategy), free, len(devices),
                              max_members)
    except EnsembleMemoryError:  # the bound is loose: measure before giving up
        bounded = None
    if bounded is not None and len(bounded) == len(unlimited):
        return bounded, "bound", None
    per_member = member_memory_bytes(members, cfg, data, strategy)
    return plan_chunks(len(members), per_member, free, len(devices), max_members), "measured", None


def plan_chunks(n_members: int, per_member_bytes: int, free_bytes: int, n_devices: int = 1,
                max_members: int | None = None) -> list[range]:
    """Splits `n_members` into consecutive chunks that fit: each device holds at most
    ``MEMORY_FRACTION * free_bytes // per_member_bytes`` members (and `max_members` per chunk)."""
    if n_members < 1:
        raise ValueError("an ensemble needs at least one member network")
    per_device = int(MEMORY_FRACTION * free_bytes // max(per_member_bytes, 1))
    if per_device < 1:
        raise EnsembleMemoryError(
            f"one network's training step needs {per_member_bytes / 2**30:.2f} GiB but the device has "
            f"{free_bytes / 2**30:.2f} GiB free (an ensemble plans to use {MEMORY_FRACTION:.0%} of it); "
            "lower the batch size or the resolution, or free memory on the device"
        )
    cap = per_device * n_devices
    if max_members is not None:
        if max_members < 1:
            raise ValueError(f"max_members must be at least 1, got {max_members}")
        cap = min(cap, max_members)
    n_chunks = -(-n_members // cap)
    size = -(-n_members // n_chunks)  # balanced chunks
    return [range(lo, min(lo + size, n_members)) for lo in range(0, n_members, size)]


# ---------------------------------------------------------------------------
# Training.


@dataclasses.dataclass
class MemberResult:
    """One member of a finished ensemble, as `mtl.train.TrainResult` has it. Its stand-alone
    `graphdef` and `params` are sliced from the ensemble's (host) stacks when first asked for:
    building a member's graph costs about 0.08 s (README, quick's cost), and the estimators need only
    the losses."""

    tasks: tuple[str, ...]
    losses: np.ndarray  # (steps, n_tasks)
    seconds: float  # the ensemble's wall time divided by its members
    resumed_from: int | None
    ensemble: "Ensemble" = dataclasses.field(repr=False)
    stacked: Any = dataclasses.field(repr=False)  # the ensemble's final stacked parameters, on the host
    index: int  # this member's position in the ensemble

    @functools.cached_property
    def _split(self) -> tuple[nnx.GraphDef, Any]:
        return self.ensemble.member_params(self.stacked, self.index)

    @property
    def graphdef(self) -> nnx.GraphDef:
        return self._split[0]

    @property
    def params(self) -> Any:
        return self._split[1]

    def model(self) -> MultiTaskNet:
        return nnx.merge(self.graphdef, self.params)


def _shard(tree: Any, mesh) -> Any:
    from jax.sharding import NamedSharding, PartitionSpec as P

    n = mesh.devices.size

    def put(a):
        spec = P("members") if a.ndim >= 1 and a.shape[0] % n == 0 else P()
        return jax.device_put(a, NamedSharding(mesh, spec))

    return jax.tree.map(put, tree)


@dataclasses.dataclass
class Prepared:
    """An ensemble ready to train: its networks, initial state and training data on the device(s),
    and its jitted step (which keeps its trace once traced: `traced_memory_bound`)."""

    ens: Ensemble
    state: Any
    data: Any
    step: Callable
    mesh: Any  # a one-axis Mesh over several devices, or None


def prepare_ensemble(members: Sequence[Sequence[Task]], train_split: Mapping[str, Any], cfg: TrainConfig,
                     strategy: str, devices: Sequence) -> Prepared:
    """Builds the ensemble of `members` (initial parameters as `train_network`'s), its optimizer state
    and step, and puts the training data on the device(s), sharding the stacks over several."""
    strategy = resolve_strategy(strategy)
    members = [tuple(m) for m in members]
    if not members or not all(members):
        raise ValueError("an ensemble needs at least one member network, each with at least one task")
    data = to_device(train_split, tuple({t.name: t for m in members for t in m}.values()))
    ens = Ensemble.create(members, cfg, pad_to=len(devices))
    tx = make_optimizer(cfg)
    state = initial_state(ens.params, tx, cfg.balance, ens.mask.shape)
    mesh = None
    if len(devices) > 1:
        from jax.sharding import Mesh

        mesh = Mesh(np.asarray(devices), ("members",))
        state = _shard(state, mesh)
        data = jax.device_put(data, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    return Prepared(ens, state, data, make_ensemble_train_fn(ens, tx, cfg, strategy), mesh)


def train_ensemble(
    members: Sequence[Sequence[Task]],
    train_split: Mapping[str, np.ndarray | jax.Array],
    cfg: TrainConfig = TrainConfig(),
    *,
    strategy: str = "auto",
    devices: int | Sequence | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    desc: str | None = None,
    prepared: "Prepared | None" = None,
) -> tuple[list[MemberResult], Ensemble, Any]:
    """Trains every member network (a task list each) at `cfg.size` in ONE program.

    Returns (results, ensemble, final stacked params). A member equals
    `mtl.train.train_network(member, train_split, cfg)`. With `checkpoint_dir`
    the ensemble state is saved every `cfg.checkpoint_every` steps and a rerun
    resumes from it; `stop_after` ends the run early, as if killed. No
    chunking here: see `train_ensemble_and_evaluate`. `prepared`: these members'
    `prepare_ensemble` (as `plan_ensemble` returns it), whose traced step is reused.
    Raises TrainingDiverged naming the member network whose loss became NaN.
    """
    strategy = resolve_strategy(strategy)
    members = [tuple(m) for m in members]
    run = prepared or prepare_ensemble(members, train_split, cfg, strategy, ensemble_devices(devices))
    if [tuple(m) for m in run.ens.layout.members] != [tuple(t.name for t in m) for m in members]:
        raise ValueError("the prepared ensemble is of other member networks")
    ens, state, data, mesh = run.ens, run.state, run.data, run.mesh

    def check(losses: np.ndarray, step0: int) -> None:
        for k, names in enumerate(ens.layout.members):
            check_finite(_member_losses(losses, ens.layout, k), names, step0, network="+".join(names))

    loop = train_loop(state, data, run.step, cfg,
                      checkpoint_dir=checkpoint_dir, stop_after=stop_after, progress=progress,
                      desc=desc or f"ensemble of {len(members)}" + (f" @{cfg.size:g}" if cfg.size != 1 else ""),
                      check=check, read=lambda chunk: np.stack(fetch(chunk)))
    # Members are sliced on the host: slicing device arrays compiles a program per leaf shape.
    host = fetch(loop.state["params"])
    params = host if mesh is not None else loop.state["params"]
    all_losses = loop.losses.reshape(-1, *ens.mask.shape)
    results = []
    for k, names in enumerate(ens.layout.members):
        results.append(MemberResult(names, _member_losses(all_losses, ens.layout, k), loop.seconds / len(members),
                                    loop.resumed_from, ens, host, k))
    return results, ens, params


def _member_losses(losses: np.ndarray, layout: Layout, k: int) -> np.ndarray:
    """(steps, K, T) -> member k's (steps, its tasks) losses."""
    return np.stack([losses[:, k, layout.tasks.index(t)] for t in layout.members[k]], axis=1)


def evaluate_ensemble(ens: Ensemble, params: Any, split: Mapping[str, jax.Array], *, strategy: str = "auto",
                      batch_size: int | None = None, eval_fn: Callable | None = None,
                      ) -> list[dict[str, dict[str, float]]]:
    """Per member, per task: loss (mean over images) and metrics, as `mtl.train.evaluate` gives them
    (batches as `mtl.train.even_batch` splits the split; `eval_fn`: a `make_ensemble_eval_fn` to reuse,
    so that splits of the same shapes share one compilation)."""
    strategy = resolve_strategy(strategy)
    fn = eval_fn or make_ensemble_eval_fn(ens, strategy)
    n = next(iter(split.values())).shape[0]
    batch_size = batch_size or even_batch(n)
    totals: dict[str, dict[str, np.ndarray]] = {}
    for batch in batches(split, batch_size):
        out = fetch(fn(params, batch))
        for t, stats in out.items():
            acc = totals.setdefault(t, {})
            for k, v in stats.items():
                acc[k] = acc.get(k, 0) + np.asarray(v, dtype=np.float64)
    results = []
    for k, names in enumerate(ens.layout.members):
        member = {}
        for t in names:
            pos = ens.layout.position(k, t)
            stats = {key: v[pos] for key, v in totals[t].items()}
            member[t] = {"loss": float(stats.pop("loss_sum") / n), **ens.tasks[t].finalize(stats)}
        results.append(member)
    return results


def train_ensemble_and_evaluate(
    members: Sequence[Sequence[Task]],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    cfg: TrainConfig = TrainConfig(),
    *,
    strategy: str = "auto",
    devices: int | Sequence | None = None,
    max_members: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_member: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """`mtl.train.train_and_evaluate` for many networks of one width, as ensembles.

    The members are split into chunks that fit the device (`plan_chunks`);
    each chunk trains as one ensemble (checkpointed under
    ``checkpoint_dir/chunk-<i>``) and is evaluated on every split but
    "train". `on_member(index, report)` is called as each member's report is
    ready (the results store saves it then). Returns one report per member,
    in order, shaped like train_and_evaluate's.
    """
    strategy = resolve_strategy(strategy)
    members = [tuple(m) for m in members]
    devs = ensemble_devices(devices)
    chunks, _, prepared = plan_ensemble(members, cfg, splits["train"], strategy, devs, max_members)
    reports: list[dict[str, Any]] = [None] * len(members)  # type: ignore[list-item]
    for i, chunk in enumerate(chunks):
        part = [members[j] for j in chunk]
        union = tuple({t.name: t for m in part for t in m}.values())
        ckpt = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), f"chunk-{i}")
        desc = f"ensemble {i + 1}/{len(chunks)}: {len(part)} networks" + (f" @{cfg.size:g}" if cfg.size != 1 else "")
        results, ens, params = train_ensemble(part, splits["train"], cfg, strategy=strategy, devices=devs,
                                              checkpoint_dir=ckpt, progress=progress, desc=desc, prepared=prepared)
        prepared = None  # "whole": the one chunk
        fn = make_ensemble_eval_fn(ens, strategy)
        evals = {name: evaluate_ensemble(ens, params, to_device(split, union), strategy=strategy, eval_fn=fn)
                 for name, split in splits.items() if name != "train"}
        for j, res in zip(chunk, results):
            report = {**training_report(res, cfg.steps), **{name: ev[j - chunk.start] for name, ev in evals.items()}}
            reports[j] = report
            if on_member is not None:
                on_member(j, report)
    return reports

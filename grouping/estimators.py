"""Estimators of which tasks to learn together, and the networks they choose.

Every estimator yields, for the tasks ``T``, a prediction the solver
(`grouping.selection`) turns into a choice of networks for each budget:

``exhaustive``  Train every candidate network to the end of the schedule:
                all 2^n - 1 subsets of ``T`` at full size (cost 1) and the n
                half-size single-task networks (cost 0.5). Predicted loss of
                task t in network N = its validation loss. The ground truth,
                at 2^n - 1 + n trainings.
``esa``         Early-stopping approximation (Standley et al.): the same
                networks, each trained for ``round(fraction * steps)`` steps
                (default fraction 0.2). What we do: a *shorter schedule of
                the same shape* (warm-up fraction, cosine decay to 1% of the
                peak rate over the shortened run), not the first 20% of the
                full schedule; the public training function has no "stop
                early" switch, and a complete short schedule is the closer
                stand-in for "trained to convergence" at equal cost.
                Selection uses those early validation losses.
``hoa``         Higher-order approximation (Standley et al.): train the full
                and half singles and all pairs (n + n + n(n-1)/2 trainings);
                a network S of 3+ tasks is predicted to reach
                ``L(t|S) = mean_{u in S\\{t}} L(t|{t,u})``
                (`grouping.selection.hoa_candidates`).
``tag``         Lookahead inter-task affinity (Fifty et al.) measured during
                ONE training run of all tasks (`measure_affinity`), averaged
                over training; groups by TAG's rule (`select_groups_tag`).
``cs``          The same run's averaged gradient cosine similarity, grouped
                by the same rule.

tag and cs: a budget b buys ``k = floor(b)`` full-size networks (cost 1
each); half-size singles are not used. The chosen groups are mapped onto
candidate networks (each group = one full-size network of its tasks, a task
served by the group where its TAG score is best). These methods predict no
losses, so the report gives the TAG score (mean affinity onto each task
from the other members of its group; higher = better) instead, and
``predicted`` losses are null: measured losses come only from ``--verify``.
We do not invent loss numbers from affinities.

Pairwise affinity of the loss methods, for the report's matrix:
``A[u, t] = 1 - L(t|{t,u}) / L(t|{t})`` (row u = the partner, "source";
column t = the task whose loss changes, "target"; L(t|{t}) the full-size
single), i.e. the relative drop of t's loss when it shares a network with u.
Same orientation as `grouping.affinity` (``Z[source, target]``); positive =
u helps t. Diagonal 0.

Every network goes through the results store (`grouping.store`), keyed by
its settings, so reruns reuse finished networks, and trains with
`mtl.train.train_and_evaluate` with an orbax checkpoint folder under the run
directory (``checkpoints/<label>-<key hash>``), removed once the network is
stored.

Baselines (for every budget b, scored on the same predicted table):

* all tasks in one full-size network (cost 1);
* one network per task: full size if ``n <= b``, else half size if
  ``n / 2 <= b``, else not available (null);
* random groupings: every set partition of T into at most ``floor(b)``
  blocks, each block one full-size network (cost 1), equally likely; the
  baseline is the exact mean of their predicted totals (at most Bell(9) =
  21,147 partitions for the registry's 9 tasks, so it is enumerated, not
  sampled). ``--verify`` trains `VERIFY_RANDOM_SAMPLES` of them per budget,
  drawn uniformly with ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grouping.selection import (
    InfeasibleBudgetError,
    Network,
    Selection,
    hoa_candidates,
    minimum_budget,
    network_label,
    select_groups_tag,
    select_networks,
    subsets_by_size,
)
from grouping.store import SCHEMA_VERSION, ResultsStore, code_version, key_hash

__all__ = [
    "AFFINITY_EVERY",
    "DEFAULT_METHOD",
    "ESA_FRACTION",
    "LOSS_METHODS",
    "METHODS",
    "Choice",
    "DataSpec",
    "Estimate",
    "NetSpec",
    "Runner",
    "Trained",
    "baselines",
    "choose",
    "estimate",
    "measure_affinity",
    "minimum_feasible_budget",
    "pairwise_affinity",
    "partitions",
    "planned_specs",
    "predicted_candidates",
    "verify",
]

METHODS = ("exhaustive", "esa", "hoa", "tag", "cs")
LOSS_METHODS = ("exhaustive", "esa", "hoa")
#: The method find_groups runs when none is given (the lead measures and may change it).
DEFAULT_METHOD = "tag"
#: ESA: fraction of the schedule's steps.
ESA_FRACTION = 0.2
#: tag/cs: measure the affinity every this many steps.
AFFINITY_EVERY = 10
FULL_SIZE, HALF_SIZE = 1.0, 0.5
FULL_COST, HALF_COST = 1.0, 0.5
#: --verify: random groupings trained per budget.
VERIFY_RANDOM_SAMPLES = 2


# ---------------------------------------------------------------------------
# What is trained, on what.


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """One network: its tasks (in the run's task order) and encoder size."""

    tasks: tuple[str, ...]
    size: float = FULL_SIZE

    @property
    def half(self) -> bool:
        return self.size != FULL_SIZE

    @property
    def label(self) -> str:
        return network_label(self.tasks, self.half)

    @property
    def cost(self) -> float:
        return HALF_COST if self.half else FULL_COST


@dataclasses.dataclass
class Trained:
    """A finished network: per-task validation and test losses and metrics."""

    spec: NetSpec
    steps: int
    validation: dict[str, dict[str, Any]]
    test: dict[str, dict[str, Any]]
    train_seconds: float
    reused: bool = False
    resumed_from: int | None = None

    def loss(self, task: str, split: str = "validation") -> float:
        return float(getattr(self, split)[task]["loss"])


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The data: 'scenes' (with resolution, seed, counts) or a Taskonomy-layout folder."""

    source: str = "scenes"
    resolution: int = 64
    seed: int = 0
    counts: tuple[int, int, int] | None = None
    data_dir: str | None = None

    @property
    def is_scenes(self) -> bool:
        return self.source == "scenes"

    def builder(self):
        from tasks.datasets import get_builder

        return get_builder(self.source, resolution=self.resolution, seed=self.seed,
                           counts=self.counts if self.is_scenes else None, data_dir=self.data_dir)

    def check(self, tasks: Sequence) -> dict[str, Any]:
        """Validates the source for `tasks` without loading it; returns `settings()`.

        A Taskonomy folder must hold every label the tasks need (ValueError
        naming the missing ones otherwise)."""
        from tasks.registry import modalities_for

        if not self.is_scenes:
            path = Path(self.source).expanduser()
            if not path.is_dir():
                raise ValueError(f"data directory {path} does not exist (use --data scenes or a Taskonomy-layout folder)")
            if self.counts is not None:
                raise ValueError("--counts applies to the embedded scenes only; a data directory has the images it has")
        builder = self.builder()
        if not self.is_scenes:
            have = tuple(builder.builder_config.modalities)
            missing = [m for m in modalities_for(tasks) if m not in have]
            if missing:
                names = ", ".join(t.name for t in tasks)
                raise ValueError(
                    f"data directory {self.source} has no {', '.join(missing)} labels, needed by the tasks {names}; "
                    f"it has: {', '.join(have) or 'no modality folder'}"
                )
        return self.settings(builder)

    def settings(self, builder=None) -> dict[str, Any]:
        """What identifies the data in the store keys: the dataset's name ends with
        the renderer's fingerprint (scenes) or a fingerprint of the folder's files."""
        from tasks.datasets import normalize_counts, renderer_fingerprint

        builder = builder or self.builder()
        out: dict[str, Any] = {
            "source": "scenes" if self.is_scenes else str(Path(self.source).expanduser().resolve()),
            "resolution": self.resolution,
            "dataset": f"{builder.name}/{builder.builder_config.name}/{builder.version}",
        }
        if self.is_scenes:
            out.update(seed=self.seed, counts=list(normalize_counts(self.counts)), renderer=renderer_fingerprint())
        return out

    def load(self, tasks: Sequence) -> dict[str, dict[str, np.ndarray]]:
        from tasks.datasets import load_for_tasks

        return load_for_tasks(self.source, tasks, resolution=self.resolution, seed=self.seed,
                              counts=self.counts if self.is_scenes else None, data_dir=self.data_dir)


def train_settings(cfg) -> dict[str, Any]:
    """The training configuration as it enters the store key: every field that
    can change the numbers (not how often losses are read or checkpoints written)."""
    d = dataclasses.asdict(cfg)
    for k in ("steps_per_call", "checkpoint_every"):
        d.pop(k, None)
    return d


def default_checkpoint_every(steps: int) -> int:
    """A checkpoint every quarter of the run, at least every 50 steps."""
    return max(50, steps // 4)


class Runner:
    """Trains networks (and the affinity run) through the store, with timings.

    ``tasks``: Task objects in the run's order; ``cfg``: the full schedule
    (`mtl.train.TrainConfig`); the data are loaded on first need, so a rerun
    whose networks are all stored loads nothing.
    """

    def __init__(self, tasks: Sequence, data: DataSpec, cfg, run_dir: str | os.PathLike, store: ResultsStore, *,
                 progress: bool = True, checkpoint_every: int | None = None, data_settings: Mapping | None = None,
                 ensemble: bool = True, devices: int | None = None, max_members: int | None = None,
                 splits: Mapping | None = None):
        self.tasks = tuple(tasks)
        self.ensemble = ensemble  # train the missing networks of one width as ensembles (mtl.ensemble)
        self.devices = devices
        self.max_members = max_members
        self.by_name = {t.name: t for t in self.tasks}
        self.names = tuple(self.by_name)
        self.data = data
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.store = store
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.data_settings = dict(data_settings) if data_settings is not None else data.settings()
        self.code_version = code_version()
        self._splits = splits  # already loaded data, if the caller has them
        self.data_seconds = 0.0
        self.log: list[dict[str, Any]] = []  # one entry per network handled
        self.keys: set[str] = set()  # store keys this run used

    @property
    def splits(self):
        if self._splits is None:
            t0 = time.perf_counter()
            self._splits = self.data.load(self.tasks)
            self.data_seconds += time.perf_counter() - t0
        return self._splits

    def _cfg(self, size: float, steps: int | None):
        steps = self.cfg.steps if steps is None else steps
        every = self.checkpoint_every or default_checkpoint_every(steps)
        return dataclasses.replace(self.cfg, size=size, steps=steps, checkpoint_every=every)

    def settings(self, spec: NetSpec, cfg) -> dict[str, Any]:
        return {"kind": "network", "tasks": list(spec.tasks), "train": train_settings(cfg),
                "data": self.data_settings, "code_version": self.code_version, "schema": SCHEMA_VERSION}

    def settings_for(self, spec: NetSpec, steps: int | None = None) -> dict[str, Any]:
        """The store key of `spec` trained for `steps` (default: the full schedule)."""
        return self.settings(spec, self._cfg(spec.size, steps))

    def affinity_settings(self, every: int = AFFINITY_EVERY) -> dict[str, Any]:
        """The store key of the tag/cs affinity run."""
        return {"kind": "affinity", "tasks": list(self.names), "every": every,
                "train": train_settings(self._cfg(FULL_SIZE, None)), "data": self.data_settings,
                "code_version": self.code_version, "schema": SCHEMA_VERSION}

    def checkpoint_dir(self, label: str, settings: Mapping) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)[:60]
        return self.run_dir / "checkpoints" / f"{safe}-{key_hash(settings)}"

    def train(self, specs: Iterable[NetSpec], *, steps: int | None = None, phase: str = "estimate") -> dict[NetSpec, Trained]:
        """Each network once; stored ones are read back. The missing networks of
        one width train together as an ensemble (unless ``ensemble=False``)."""
        from grouping.store import canonical_json

        specs = list(dict.fromkeys(specs))
        cfgs = {spec: self._cfg(spec.size, steps) for spec in specs}
        settings = {spec: self.settings(spec, cfgs[spec]) for spec in specs}
        self.keys.update(canonical_json(settings[spec]) for spec in specs)
        hits = {spec: self.store.get(settings[spec]) for spec in specs}
        missing = [spec for spec in specs if hits[spec] is None]
        seconds: dict[NetSpec, float] = {}
        if missing:
            _ = self.splits  # load the data first, so it is timed apart
        by_size: dict[float, list[NetSpec]] = {}
        for spec in missing:
            by_size.setdefault(spec.size, []).append(spec)
        bar = _bar(len(missing), f"{phase}: networks", self.progress and len(missing) > 1)
        try:
            for size, group in by_size.items():
                t0 = time.perf_counter()
                if self.ensemble and len(group) > 1:
                    for spec, result in zip(group, self._train_many(group, cfgs[group[0]], settings)):
                        hits[spec] = result
                    for spec in group:
                        seconds[spec] = (time.perf_counter() - t0) / len(group)
                    bar.update(len(group))
                else:
                    for spec in group:
                        t0 = time.perf_counter()
                        hits[spec] = self._train_one(spec, cfgs[spec], settings[spec])
                        seconds[spec] = time.perf_counter() - t0
                        bar.update(1)
        finally:
            bar.close()
        out: dict[NetSpec, Trained] = {}
        for spec in specs:
            hit, reused = hits[spec], spec not in seconds
            out[spec] = Trained(spec, cfgs[spec].steps, hit["validation"], hit["test"], hit["train_seconds"], reused,
                                hit.get("resumed_from") if not reused else None)
            self.log.append({"phase": phase, "network": spec.label, "size": spec.size, "steps": cfgs[spec].steps,
                             "reused": reused, "seconds": seconds.get(spec, 0.0),
                             "train_seconds": hit["train_seconds"],
                             "resumed_from": None if reused else hit.get("resumed_from")})
        return out

    def _result(self, spec: NetSpec, cfg, settings: Mapping, report: Mapping[str, Any]) -> dict[str, Any]:
        """Checks a trained network's report, stores it, returns the stored result."""
        from mtl.train import TrainingDiverged

        for split in ("validation", "test"):
            for t in spec.tasks:
                value = float(report[split][t]["loss"])
                if not math.isfinite(value):
                    self.store.put_failed(settings, f"{spec.label}: {TrainingDiverged(t, cfg.steps, value)}")
                    raise TrainingDiverged(t, cfg.steps, value)
        result = {"validation": report["validation"], "test": report["test"],
                  "train_seconds": float(report["train_seconds"]), "steps": cfg.steps,
                  "resumed_from": report.get("resumed_from"),
                  "final_train_loss": report.get("final_train_loss")}
        self.store.put(settings, result)
        return result

    def _train_many(self, specs: Sequence[NetSpec], cfg, settings: Mapping[NetSpec, Mapping]) -> list[dict[str, Any]]:
        """Networks of one width as ensembles (`mtl.ensemble`); each is stored as soon as its chunk is done."""
        import mtl.ensemble
        from grouping.store import canonical_json
        from mtl.train import TrainingDiverged

        members = [[self.by_name[t] for t in spec.tasks] for spec in specs]
        ckpt = self.checkpoint_dir(f"ensemble-{len(specs)}-size{cfg.size:g}",
                                   {"members": sorted(canonical_json(settings[s]) for s in specs)})
        results: list[dict[str, Any] | None] = [None] * len(specs)

        def store(i: int, report: dict[str, Any]) -> None:
            results[i] = self._result(specs[i], cfg, settings[specs[i]], report)

        try:
            mtl.ensemble.train_ensemble_and_evaluate(
                members, self.splits, cfg, devices=self.devices, max_members=self.max_members,
                checkpoint_dir=ckpt, progress=self.progress, on_member=store)
        except TrainingDiverged as e:
            for spec in specs:  # one width per ensemble: the task list names the network
                if "+".join(spec.tasks) == e.network:
                    self.store.put_failed(settings[spec], f"{spec.label}: {e}")
            raise
        shutil.rmtree(ckpt, ignore_errors=True)  # stored: the checkpoints are no longer needed
        return results  # type: ignore[return-value]

    def _train_one(self, spec: NetSpec, cfg, settings) -> dict[str, Any]:
        from mtl.train import TrainingDiverged, train_and_evaluate

        tasks = [self.by_name[t] for t in spec.tasks]
        ckpt = self.checkpoint_dir(spec.label, settings)
        try:
            report = train_and_evaluate(tasks, self.splits, cfg, checkpoint_dir=ckpt, progress=self.progress)
        except TrainingDiverged as e:
            self.store.put_failed(settings, f"{spec.label}: {e}")
            raise TrainingDiverged(e.task, e.step, e.value) from None
        result = self._result(spec, cfg, settings, report)
        shutil.rmtree(ckpt, ignore_errors=True)  # stored: the checkpoints are no longer needed
        return result

    def affinity(self, every: int = AFFINITY_EVERY) -> dict[str, Any]:
        """The tag/cs measurement of one all-task run, through the store."""
        from grouping.store import canonical_json
        from mtl.train import TrainingDiverged

        cfg = self._cfg(FULL_SIZE, None)
        settings = self.affinity_settings(every)
        self.keys.add(canonical_json(settings))
        hit = self.store.get(settings)
        reused = hit is not None
        if hit is None:
            _ = self.splits  # load the data first, so it is timed apart
        t0 = time.perf_counter()
        if hit is None:
            ckpt = self.checkpoint_dir("affinity-" + "+".join(self.names), settings)
            try:
                hit = measure_affinity(self.tasks, self.splits, cfg, every=every, checkpoint_dir=ckpt,
                                       progress=self.progress)
            except TrainingDiverged as e:
                self.store.put_failed(settings, f"affinity run: {e}")
                raise TrainingDiverged(e.task, e.step, e.value) from None
            hit = {k: (np.asarray(v).tolist() if k in ("tag", "cs") else v) for k, v in hit.items()}
            self.store.put(settings, hit)
            shutil.rmtree(ckpt, ignore_errors=True)
        self.log.append({"phase": "estimate", "network": "affinity run: " + "+".join(self.names), "size": FULL_SIZE,
                         "steps": cfg.steps, "reused": reused, "seconds": 0.0 if reused else time.perf_counter() - t0,
                         "train_seconds": float(hit.get("train_seconds", 0.0)), "resumed_from": None})
        return hit


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="net", disable=not enabled, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------
# tag / cs: the affinity run.


def measure_affinity(tasks: Sequence, splits: Mapping, cfg, *, every: int = AFFINITY_EVERY,
                     checkpoint_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """TAG lookahead affinity and gradient cosine from ONE training run of all `tasks`.

    Returns ``{"tag": (n, n) array, Z[i, j] = mean over the measurements of
    1 - L_j(after a step on task i's loss, shared parameters only) / L_j
    (row i = source, column j = target), "cs": (n, n) mean cosine of the
    per-task shared-parameter gradients, "names": [task names, the order of
    rows and columns], "train_seconds": float}`` and the "validation"/"test"
    evaluations of the all-task network.
    The run is `grouping.affinity.train_with_affinity`.
    """
    from grouping import affinity

    out = dict(affinity.train_with_affinity(tuple(tasks), splits, cfg, every=every,
                                            checkpoint_dir=checkpoint_dir, progress=progress))
    names = [t.name for t in tasks]
    out.setdefault("names", names)
    for key in ("tag", "cs"):
        out[key] = np.asarray(out[key], dtype=np.float64)
        if not np.all(np.isfinite(out[key][~np.eye(len(names), dtype=bool)])):
            raise ValueError(f"the averaged {key} matrix has non-finite entries although no loss diverged; "
                             "lower --lr or measure less often (--every)")
    out["train_seconds"] = float(out.get("train_seconds", 0.0))
    return out


# ---------------------------------------------------------------------------
# Estimates.


@dataclasses.dataclass
class Estimate:
    """What a method produced.

    ``candidates``: Networks with the predicted per-task losses (loss methods;
    None for tag/cs). ``affinity``: (n, n), row = source, column = target
    (module docstring); ``affinity_kind`` says which quantity it is.
    ``trained``: the networks this method trained (or found in the store).
    """

    method: str
    tasks: tuple[str, ...]
    candidates: list[Network] | None
    affinity: np.ndarray
    affinity_kind: str
    trained: list[Trained]
    specs: dict[str, NetSpec]  # label -> spec, for every candidate and group
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def predicted(self, spec: NetSpec) -> dict[str, float] | None:
        if self.candidates is None:
            # tag/cs predict no losses, but their run trained the all-task
            # network: its validation losses serve the all-in-one baseline.
            run = (self.extra or {}).get("affinity_run", {})
            if spec == NetSpec(tuple(self.tasks), FULL_SIZE) and "validation" in run:
                return {t: float(run["validation"][t]["loss"]) for t in self.tasks}
            return None
        for nw in self.candidates:
            if nw.label == spec.label:
                return dict(nw.losses)
        return None


def candidate_specs(names: Sequence[str], *, half_size: bool = True, max_size: int | None = None) -> list[NetSpec]:
    """Half-size singles, then every subset (of at most `max_size` tasks) at full size."""
    out = [NetSpec((t,), HALF_SIZE) for t in names] if half_size else []
    out += [NetSpec(s, FULL_SIZE) for s in subsets_by_size(names) if max_size is None or len(s) <= max_size]
    return out


def planned_specs(method: str, names: Sequence[str]) -> list[NetSpec]:
    """The networks a loss method trains (before --verify)."""
    if method in ("exhaustive", "esa"):
        return candidate_specs(names)
    if method == "hoa":
        return candidate_specs(names, max_size=2)
    return []


def predicted_candidates(names: Sequence[str], trained: Mapping[NetSpec, Trained], method: str) -> list[Network]:
    """The candidate table of a loss method from its trained networks (validation losses).

    exhaustive/esa: every candidate was trained. hoa: singles and pairs were,
    and every subset of 3+ tasks is added at cost 1 with HOA's prediction.
    """
    table = [Network(s.tasks, s.cost, {t: tr.loss(t) for t in s.tasks}, s.label) for s, tr in trained.items()]
    if method == "hoa":
        return hoa_candidates(table, higher_order_cost=FULL_COST)
    return table


def pairwise_affinity(names: Sequence[str], candidates: Sequence[Network]) -> np.ndarray:
    """A[u, t] = 1 - L(t|{t,u}) / L(t|{t}) from a candidate table (0 where L(t|{t}) = 0; diagonal 0)."""
    by_label = {nw.label: nw for nw in candidates}
    n = len(names)
    a = np.zeros((n, n))
    for j, t in enumerate(names):
        single = by_label[network_label((t,))].losses[t]
        for i, u in enumerate(names):
            if i != j and single > 0:
                pair = by_label.get(network_label(tuple(x for x in names if x in (t, u))))
                a[i, j] = 1.0 - pair.losses[t] / single
    return a


def estimate(method: str, runner: Runner, *, esa_fraction: float = ESA_FRACTION,
             every: int = AFFINITY_EVERY) -> Estimate:
    """Runs `method` (training what it needs through `runner`)."""
    names = runner.names
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method in ("exhaustive", "esa"):
        specs = planned_specs(method, names)
        steps = None
        if method == "esa":
            if not 0 < esa_fraction <= 1:
                raise ValueError(f"the ESA fraction must be in (0, 1], got {esa_fraction}")
            steps = max(1, round(esa_fraction * runner.cfg.steps))
        trained = runner.train(specs, steps=steps)
    elif method == "hoa":
        trained = runner.train(planned_specs(method, names))
    else:
        result = runner.affinity(every)
        matrix = np.asarray(result["tag" if method == "tag" else "cs"], dtype=np.float64)
        specs = {NetSpec(s).label: NetSpec(s) for s in subsets_by_size(names)}
        extra = {"affinity_run": {k: v for k, v in result.items() if k not in ("tag", "cs")},
                 "tag_matrix": np.asarray(result["tag"]).tolist(), "cs_matrix": np.asarray(result["cs"]).tolist()}
        kind = "lookahead" if method == "tag" else "cosine"
        return Estimate(method, names, None, matrix, kind, [], specs, extra)
    candidates = predicted_candidates(names, trained, method)
    specs = {s.label: s for s in candidate_specs(names)}
    return Estimate(method, names, candidates, pairwise_affinity(names, candidates), "pair-loss-ratio",
                    list(trained.values()), specs)


# ---------------------------------------------------------------------------
# Choosing networks.


@dataclasses.dataclass
class Choice:
    """The networks chosen for one budget.

    ``predicted``: per network, its predicted per-task losses (None for
    tag/cs). ``scores``: per network, TAG scores (tag/cs only).
    ``assignment``: task -> label of the network whose output it uses.
    """

    budget: float
    specs: list[NetSpec]
    predicted: dict[str, dict[str, float] | None]
    scores: dict[str, dict[str, float]] | None
    assignment: dict[str, str]
    predicted_total: float | None
    tag_score: float | None
    optimal: bool
    gap: float

    @property
    def cost(self) -> float:
        return math.fsum(s.cost for s in self.specs)


def minimum_feasible_budget(method: str, names: Sequence[str]) -> float:
    """The cheapest budget that covers every task with the method's candidates:
    min(1, n/2) for the loss methods, 1 (one group) for tag/cs."""
    if method in ("tag", "cs"):
        return FULL_COST
    dummy = [Network(s.tasks, s.cost, {t: 1.0 for t in s.tasks}, s.label) for s in candidate_specs(names)]
    return minimum_budget(dummy, tasks=names)


def check_budgets(method: str, names: Sequence[str], budgets: Sequence[float]) -> None:
    """Raises InfeasibleBudgetError (naming the minimum) for a budget below the cheapest cover."""
    low = minimum_feasible_budget(method, names)
    for b in budgets:
        if not b >= low - 1e-9 * max(1.0, abs(low)):
            raise InfeasibleBudgetError(b, low)


def choose(est: Estimate, budgets: Sequence[float]) -> list[Choice]:
    """The method's networks for every budget (one solve for the whole curve)."""
    budgets = list(budgets)
    check_budgets(est.method, est.tasks, budgets)
    if est.candidates is not None:
        out = []
        for sel in select_networks(est.candidates, budgets, tasks=est.tasks):
            specs = [est.specs[nw.label] for nw in sel.networks]
            out.append(Choice(sel.budget, specs, {nw.label: dict(nw.losses) for nw in sel.networks}, None,
                              dict(sel.assignment), sel.total, None, sel.optimal, sel.gap))
        return out
    ks = sorted({int(math.floor(b + 1e-9)) for b in budgets})
    tag_layout = est.affinity.T  # selection's layout: M[a][b] = affinity of b onto a
    by_k: dict[int, Selection] = dict(zip(ks, select_groups_tag((est.tasks, tag_layout), ks)))
    out = []
    for b in budgets:
        sel = by_k[int(math.floor(b + 1e-9))]
        specs = [est.specs[network_label(nw.tasks)] for nw in sel.networks]
        out.append(Choice(b, specs, {s.label: None for s in specs},
                          {nw.label: dict(nw.losses) for nw in sel.networks}, dict(sel.assignment), None,
                          sel.total, sel.optimal, sel.gap))
    return out


# ---------------------------------------------------------------------------
# Baselines.


def partitions(items: Sequence[str], max_blocks: int | None = None) -> list[tuple[tuple[str, ...], ...]]:
    """Every set partition of `items` into at most `max_blocks` blocks (blocks keep the
    items' order; deterministic order)."""
    items = tuple(items)
    limit = len(items) if max_blocks is None else max_blocks
    out: list[tuple[tuple[str, ...], ...]] = []

    def rec(i: int, blocks: list[list[str]]) -> None:
        if i == len(items):
            out.append(tuple(tuple(b) for b in blocks))
            return
        for b in blocks:
            b.append(items[i])
            rec(i + 1, blocks)
            b.pop()
        if len(blocks) < limit:
            blocks.append([items[i]])
            rec(i + 1, blocks)
            blocks.pop()

    if limit >= 1:
        rec(0, [])
    return out


def _total(specs: Sequence[NetSpec], predict) -> float | None:
    """Sum over tasks of the best predicted loss among `specs` (None without predictions)."""
    best: dict[str, float] = {}
    for s in specs:
        losses = predict(s)
        if losses is None:
            return None
        for t, v in losses.items():
            best[t] = min(v, best.get(t, math.inf))
    return math.fsum(best.values())


def baselines(est: Estimate, budget: float) -> dict[str, Any]:
    """The three baselines for one budget (see the module docstring)."""
    names = est.tasks
    n = len(names)
    out: dict[str, Any] = {}
    together = [NetSpec(tuple(names), FULL_SIZE)]
    out["all_in_one"] = {"specs": together, "predicted_total": _total(together, est.predicted)} if budget >= 1 - 1e-9 else None
    if n * FULL_COST <= budget + 1e-9:
        singles = [NetSpec((t,), FULL_SIZE) for t in names]
    elif n * HALF_COST <= budget + 1e-9:
        singles = [NetSpec((t,), HALF_SIZE) for t in names]
    else:
        singles = None
    out["one_per_task"] = None if singles is None else {"specs": singles, "predicted_total": _total(singles, est.predicted)}
    parts = partitions(names, int(math.floor(budget + 1e-9)))
    if parts:
        totals = [_total([NetSpec(b) for b in p], est.predicted) for p in parts]
        mean = None if any(t is None for t in totals) else math.fsum(totals) / len(totals)
        out["random"] = {"partitions": parts, "count": len(parts), "predicted_total": mean}
    else:
        out["random"] = None
    return out


# ---------------------------------------------------------------------------
# --verify: full-schedule networks, test losses.


def measured_total(specs: Sequence[NetSpec], assignment: Mapping[str, str] | None, trained: Mapping[NetSpec, Trained],
                   names: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Test total: each task counts the test loss of its assigned network (the one
    chosen on predictions), or with no assignment its first network doing it."""
    by_label = {s.label: s for s in specs}
    per_task = {}
    for t in names:
        label = assignment.get(t) if assignment else None
        spec = by_label[label] if label in by_label else next(s for s in specs if t in s.tasks)
        per_task[t] = trained[spec].loss(t, "test")
    return math.fsum(per_task.values()), per_task


def verify(runner: Runner, est: Estimate, choices: Sequence[Choice], bases: Sequence[Mapping[str, Any]],
           seed: int) -> dict[str, Any]:
    """Trains the chosen networks and the baselines with the full schedule; test losses."""
    rng = np.random.default_rng(seed)
    samples: list[list[tuple[tuple[str, ...], ...]]] = []
    specs: list[NetSpec] = []
    for choice, base in zip(choices, bases):
        specs += choice.specs
        for key in ("all_in_one", "one_per_task"):
            if base[key] is not None:
                specs += base[key]["specs"]
        picked = []
        if base["random"] is not None:
            parts = base["random"]["partitions"]
            idx = rng.choice(len(parts), size=min(VERIFY_RANDOM_SAMPLES, len(parts)), replace=False)
            picked = [parts[i] for i in sorted(idx)]
            specs += [NetSpec(b) for p in picked for b in p]
        samples.append(picked)
    trained = runner.train(specs, phase="verify")
    names = est.tasks
    out = []
    for choice, base, picked in zip(choices, bases, samples):
        total, per_task = measured_total(choice.specs, choice.assignment, trained, names)
        entry: dict[str, Any] = {"budget": choice.budget, "chosen": {"test_total": total, "test": per_task}}
        for key in ("all_in_one", "one_per_task"):
            entry[key] = None if base[key] is None else dict(
                zip(("test_total", "test"), measured_total(base[key]["specs"], None, trained, names)))
        if picked:
            totals = [measured_total([NetSpec(b) for b in p], None, trained, names)[0] for p in picked]
            entry["random"] = {"test_total": math.fsum(totals) / len(totals), "samples": [list(map(list, p)) for p in picked],
                               "sample_totals": totals}
        else:
            entry["random"] = None
        out.append(entry)
    return {"per_budget": out, "networks": {s.label: {"test": {t: tr.loss(t, "test") for t in s.tasks},
                                                      "validation": {t: tr.loss(t) for t in s.tasks},
                                                      "steps": tr.steps} for s, tr in trained.items()}}

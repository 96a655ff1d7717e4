"""Running networks through the results store: what is trained, on what data, and the affinity run.

`NetSpec` names one network (its tasks and encoder size), `Runner`, given
the data (`grouping.dataspec.DataSpec`), trains networks, as ensembles of one width by default
(`mtl.ensemble`), and the tag/cs affinity run (`measure_affinity`) through
the results store (`grouping.store`): every finished network is stored,
keyed by its settings (tasks, size, training configuration, data, code
version), so reruns reuse finished networks and an interrupted one resumes
from its orbax checkpoint (``<run dir>/checkpoints/<label>-<key hash>``,
removed once the network is stored). `Trained` is what comes back: the
per-task validation and test losses and metrics.

The estimators (`grouping.methods`) say which networks to train; this
module only trains them.
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

from grouping.dataspec import DataSpec
from grouping.selection import network_label, subsets_by_size
from grouping.store import SCHEMA_VERSION, ResultsStore, code_version, key_hash

__all__ = [
    "AFFINITY_EVERY",
    "NetSpec",
    "Runner",
    "Trained",
    "candidate_specs",
    "measure_affinity",
    "measure_lookahead",
    "train_settings",
]

#: tag/cs/lookahead: measure the affinity every this many steps (TAG's released Taskonomy code).
AFFINITY_EVERY = 10
#: The matrices of the lookahead run (`measure_lookahead`).
LOOKAHEAD_MATRICES = ("lookahead", "normalised", "inner", "gram")
FULL_SIZE, HALF_SIZE = 1.0, 0.5
FULL_COST, HALF_COST = 1.0, 0.5


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """One network: its tasks (in the run's task order), encoder size and how its task losses are
    balanced (`mtl.balancing`; "equal" = their sum, as every candidate network is trained)."""

    tasks: tuple[str, ...]
    size: float = FULL_SIZE
    balance: str = "equal"

    @property
    def half(self) -> bool:
        return self.size != FULL_SIZE

    @property
    def label(self) -> str:
        """'seg+depth', 'half:seg', and for a balanced network 'seg+depth@mgda'."""
        return network_label(self.tasks, self.half) + ("" if self.balance == "equal" else f"@{self.balance}")

    @property
    def cost(self) -> float:
        return HALF_COST if self.half else FULL_COST


def candidate_specs(names: Sequence[str], *, half_size: bool = True, max_size: int | None = None) -> list[NetSpec]:
    """Standley's candidates: the half-size singles, then every subset (of at most
    `max_size` tasks) at full size, in `subsets_by_size` order."""
    out = [NetSpec((t,), HALF_SIZE) for t in names] if half_size else []
    out += [NetSpec(s, FULL_SIZE) for s in subsets_by_size(names) if max_size is None or len(s) <= max_size]
    return out


@dataclasses.dataclass
class Trained:
    """A finished network: per-task validation and test losses and metrics (test: None for a network
    trained with a shortened schedule, which is estimator evidence only: `Runner.train`)."""

    spec: NetSpec
    steps: int
    validation: dict[str, dict[str, Any]]
    test: dict[str, dict[str, Any]] | None
    train_seconds: float
    reused: bool = False
    resumed_from: int | None = None

    def loss(self, task: str, split: str = "validation") -> float:
        values = getattr(self, split)
        if values is None:
            raise ValueError(f"network {self.spec.label} ({self.steps} steps, a shortened schedule) was evaluated "
                             f"on the validation split only, not on {split!r}")
        return float(values[task]["loss"])


#: The splits a network of the full schedule is evaluated on.
EVALUATED = ("validation", "test")


def train_settings(cfg) -> dict[str, Any]:
    """The training configuration as it enters the store key: every field that
    can change the numbers (not how often losses are read or checkpoints written)."""
    d = dataclasses.asdict(cfg)
    for k in ("steps_per_call", "checkpoint_every", "checkpoint_min_seconds"):
        d.pop(k, None)
    if d.get("balance") == "equal":  # equal weights: the keys of every network trained before balancing existed
        d.pop("balance")
    if not d.get("task_weights"):  # likewise before training loss weights existed
        d.pop("task_weights", None)
    else:
        d["task_weights"] = [list(kv) for kv in d["task_weights"]]
    return d


def default_checkpoint_every(steps: int) -> int:
    """A checkpoint every quarter of the run, at least every 50 steps."""
    return max(50, steps // 4)


# With the default interval, a save due sooner than this after the previous one is skipped. Orbax
# takes about 0.3 s a save on a CPU (quick's 8 saves took 2.2 s of its run: README, quick's cost),
# and no checkpoint is worth that in a run where a kill can cost only seconds. An explicit
# `checkpoint_every` saves exactly every that many steps.
DEFAULT_CHECKPOINT_MIN_SECONDS = 30.0


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
            self._splits = self.data.load(self.tasks, progress=self.progress)
            self.data_seconds += time.perf_counter() - t0
        return self._splits

    def _cfg(self, size: float, steps: int | None, balance: str = "equal"):
        steps = self.cfg.steps if steps is None else steps
        every = self.checkpoint_every or default_checkpoint_every(steps)
        floor = 0.0 if self.checkpoint_every else DEFAULT_CHECKPOINT_MIN_SECONDS
        return dataclasses.replace(self.cfg, size=size, steps=steps, checkpoint_every=every,
                                   checkpoint_min_seconds=floor, balance=balance)

    def settings(self, spec: NetSpec, cfg) -> dict[str, Any]:
        return {"kind": "network", "tasks": list(spec.tasks), "train": train_settings(cfg),
                "data": self.data_settings, "code_version": self.code_version, "schema": SCHEMA_VERSION}

    def settings_for(self, spec: NetSpec, steps: int | None = None) -> dict[str, Any]:
        """The store key of `spec` trained for `steps` (default: the full schedule)."""
        return self.settings(spec, self._cfg(spec.size, steps, spec.balance))

    def affinity_settings(self, every: int = AFFINITY_EVERY, kind: str = "affinity") -> dict[str, Any]:
        """The store key of the tag/cs affinity run (``kind="affinity"``) or of the corrected lookahead run."""
        return {"kind": kind, "tasks": list(self.names), "every": every,
                "train": train_settings(self._cfg(FULL_SIZE, None)), "data": self.data_settings,
                "code_version": self.code_version, "schema": SCHEMA_VERSION}

    def checkpoint_dir(self, label: str, settings: Mapping) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)[:60]
        return self.run_dir / "checkpoints" / f"{safe}-{key_hash(settings)}"

    def train(self, specs: Iterable[NetSpec], *, steps: int | None = None, phase: str = "estimate") -> dict[NetSpec, Trained]:
        """Each network once; stored ones are read back. The missing networks of
        one width train together as an ensemble (unless ``ensemble=False``).

        Networks of the full schedule are evaluated on the validation and test
        splits. Networks of a shortened schedule (``steps`` below the full
        one: esa's and quick's) are evaluated on the validation split only:
        they are evidence for an estimate, never a network anyone is served
        or scored by, and their test pass was 3% of quick's wall time."""
        from grouping.store import canonical_json

        specs = list(dict.fromkeys(specs))
        cfgs = {spec: self._cfg(spec.size, steps, spec.balance) for spec in specs}
        settings = {spec: self.settings(spec, cfgs[spec]) for spec in specs}
        self.keys.update(canonical_json(settings[spec]) for spec in specs)
        splits = EVALUATED if steps is None or steps >= self.cfg.steps else ("validation",)
        hits = {spec: self.store.get(settings[spec]) for spec in specs}
        hits = {spec: hit if hit is not None and all(hit.get(s) is not None for s in splits) else None
                for spec, hit in hits.items()}  # a validation-only row does not serve a full request
        missing = [spec for spec in specs if hits[spec] is None]
        seconds: dict[NetSpec, float] = {}
        if missing:
            _ = self.splits  # load the data first, so it is timed apart
        by_size: dict[tuple[float, str], list[NetSpec]] = {}  # one width and balancing per ensemble
        for spec in missing:
            by_size.setdefault((spec.size, spec.balance), []).append(spec)
        bar = _bar(len(missing), f"{phase}: networks", self.progress and len(missing) > 1)
        try:
            for size, group in by_size.items():
                t0 = time.perf_counter()
                if self.ensemble and len(group) > 1:
                    for spec, result in zip(group, self._train_many(group, cfgs[group[0]], settings, splits)):
                        hits[spec] = result
                    for spec in group:
                        seconds[spec] = (time.perf_counter() - t0) / len(group)
                    bar.update(len(group))
                else:
                    for spec in group:
                        t0 = time.perf_counter()
                        hits[spec] = self._train_one(spec, cfgs[spec], settings[spec], splits)
                        seconds[spec] = time.perf_counter() - t0
                        bar.update(1)
        finally:
            bar.close()
        out: dict[NetSpec, Trained] = {}
        for spec in specs:
            hit, reused = hits[spec], spec not in seconds
            out[spec] = Trained(spec, cfgs[spec].steps, hit["validation"], hit.get("test"), hit["train_seconds"], reused,
                                hit.get("resumed_from") if not reused else None)
            self.log.append({"phase": phase, "network": spec.label, "size": spec.size, "steps": cfgs[spec].steps,
                             "reused": reused, "seconds": seconds.get(spec, 0.0),
                             "train_seconds": hit["train_seconds"],
                             "resumed_from": None if reused else hit.get("resumed_from")})
        return out

    def _result(self, spec: NetSpec, cfg, settings: Mapping, report: Mapping[str, Any]) -> dict[str, Any]:
        """Checks a trained network's report, stores it, returns the stored result."""
        from mtl.train import TrainingDiverged

        for split in EVALUATED:
            for t in spec.tasks if split in report else ():
                value = float(report[split][t]["loss"])
                if not math.isfinite(value):
                    self.store.put_failed(settings, f"{spec.label}: {TrainingDiverged(t, cfg.steps, value)}")
                    raise TrainingDiverged(t, cfg.steps, value)
        result = {"validation": report["validation"], "test": report.get("test"),
                  "train_seconds": float(report["train_seconds"]), "steps": cfg.steps,
                  "resumed_from": report.get("resumed_from"),
                  "final_train_loss": report.get("final_train_loss")}
        self.store.put(settings, result)
        return result

    def _evaluation_splits(self, splits: Sequence[str]) -> dict[str, Any]:
        """The data's splits but those not to evaluate on (the training split is kept)."""
        return {name: split for name, split in self.splits.items() if name == "train" or name in splits}

    def _train_many(self, specs: Sequence[NetSpec], cfg, settings: Mapping[NetSpec, Mapping],
                    splits: Sequence[str] = EVALUATED) -> list[dict[str, Any]]:
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
                members, self._evaluation_splits(splits), cfg, devices=self.devices, max_members=self.max_members,
                checkpoint_dir=ckpt, progress=self.progress, on_member=store)
        except TrainingDiverged as e:
            for spec in specs:  # one width per ensemble: the task list names the network
                if "+".join(spec.tasks) == e.network:
                    self.store.put_failed(settings[spec], f"{spec.label}: {e}")
            raise
        shutil.rmtree(ckpt, ignore_errors=True)  # stored: the checkpoints are no longer needed
        return results  # type: ignore[return-value]

    def _train_one(self, spec: NetSpec, cfg, settings, splits: Sequence[str] = EVALUATED) -> dict[str, Any]:
        from mtl.train import TrainingDiverged, train_and_evaluate

        tasks = [self.by_name[t] for t in spec.tasks]
        ckpt = self.checkpoint_dir(spec.label, settings)
        try:
            report = train_and_evaluate(tasks, self._evaluation_splits(splits), cfg, checkpoint_dir=ckpt,
                                        progress=self.progress)
        except TrainingDiverged as e:
            self.store.put_failed(settings, f"{spec.label}: {e}")
            raise TrainingDiverged(e.task, e.step, e.value) from None
        result = self._result(spec, cfg, settings, report)
        shutil.rmtree(ckpt, ignore_errors=True)  # stored: the checkpoints are no longer needed
        return result

    def affinity(self, every: int = AFFINITY_EVERY) -> dict[str, Any]:
        """The tag/cs measurement of one all-task run, through the store."""
        return self._probe_run("affinity", every, measure_affinity, ("tag", "cs"))

    def lookahead(self, every: int = AFFINITY_EVERY) -> dict[str, Any]:
        """The corrected lookahead of one all-task run (`grouping.lookahead`), through the store."""
        return self._probe_run("lookahead", every, measure_lookahead, LOOKAHEAD_MATRICES)

    def _probe_run(self, kind: str, every: int, measure, matrices: Sequence[str]) -> dict[str, Any]:
        from grouping.store import canonical_json
        from mtl.train import TrainingDiverged

        cfg = self._cfg(FULL_SIZE, None)
        settings = self.affinity_settings(every, kind)
        self.keys.add(canonical_json(settings))
        hit = self.store.get(settings)
        reused = hit is not None
        if hit is None:
            _ = self.splits  # load the data first, so it is timed apart
        t0 = time.perf_counter()
        if hit is None:
            ckpt = self.checkpoint_dir(f"{kind}-" + "+".join(self.names), settings)
            try:
                hit = measure(self.tasks, self.splits, cfg, every=every, checkpoint_dir=ckpt, progress=self.progress)
            except TrainingDiverged as e:
                self.store.put_failed(settings, f"{kind} run: {e}")
                raise TrainingDiverged(e.task, e.step, e.value) from None
            hit = {k: (np.asarray(v).tolist() if k in matrices else v) for k, v in hit.items()}
            self.store.put(settings, hit)
            shutil.rmtree(ckpt, ignore_errors=True)
        self.log.append({"phase": "estimate", "network": f"{kind} run: " + "+".join(self.names), "size": FULL_SIZE,
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

    Returns ``{"tag": (n, n) array, the mean over the measurements of
    Z[i, j] / lr, Z[i, j] = 1 - L_j(after an SGD step of size lr on task i's
    loss, shared parameters only) / L_j, lr the peak learning rate (TAG's
    scale; row i = source, column j = target), "cs": (n, n) mean cosine of the
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


def measure_lookahead(tasks: Sequence, splits: Mapping, cfg, *, every: int = AFFINITY_EVERY,
                      checkpoint_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """The corrected lookahead (`grouping.lookahead`) from ONE training run of all `tasks`.

    Returns ``{"lookahead": (n, n) mean Z[source, target] of the normalised,
    preconditioned step, "normalised": Zn, its columns divided by their
    diagonal, "inner", "gram": the first-order Gram matrices, "names",
    "measurements", "train_seconds"}`` and the "validation"/"test"
    evaluations of the all-task network. The run is
    `grouping.lookahead.train_with_lookahead`."""
    from grouping import lookahead

    out = dict(lookahead.train_with_lookahead(tuple(tasks), splits, cfg, every=every,
                                              checkpoint_dir=checkpoint_dir, progress=progress))
    for key in LOOKAHEAD_MATRICES:
        out[key] = np.asarray(out[key], dtype=np.float64)
        if not np.all(np.isfinite(out[key])):
            raise ValueError(f"the averaged {key} matrix has non-finite entries although no loss diverged; "
                             "lower --lr or measure less often (--every)")
    out["train_seconds"] = float(out.get("train_seconds", 0.0))
    return out

"""tag and cs: task groups from ONE training run of all tasks (Fifty et al., NeurIPS 2021).

``tag``  the lookahead inter-task affinity measured every ``every`` steps of
         the run and averaged over training (`grouping.runner.measure_affinity`);
``cs``   the same run's averaged cosine similarity of the per-task encoder
         gradients (TAG's baseline).

Both group by TAG's rule (`grouping.selection_tag.select_groups_tag`): a budget
b buys ``k = floor(b)`` full-size networks (cost 1 each); half-size singles
are not used. The chosen groups map onto candidate networks (each group =
one full-size network of its tasks, a task served by the group where its
TAG score is best). These methods predict no losses: the report gives the
TAG score (mean affinity onto each task from the other members of its
group; higher = better) instead, and measured losses come only from
``--verify``. We do not invent loss numbers from affinities. The run also
trains the all-task network, whose validation losses are "known"
(`Estimate.known`): the all-in-one baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grouping.methods.base import Cost, Estimate, Method, MethodSettings, register
from grouping.runner import FULL_COST, NetSpec, Runner, Trained
from grouping.selection import network_label, subsets_by_size

#: The matrices of the affinity run (`grouping.runner.measure_affinity`), by the key it stores them under.
MATRICES = ("tag", "cs")


class AffinityMethod(Method):
    """Groups by TAG's rule on one matrix of the affinity run (``key``)."""

    predicts_losses = False

    def __init__(self, key: str, affinity_kind: str, affinity_definition: str):
        self.name = key
        self.key = key
        self.affinity_kind = affinity_kind
        self.affinity_definition = affinity_definition

    def validate(self, settings: MethodSettings) -> None:
        if settings.every < 1:
            raise ValueError(f"--every must be at least 1, got {settings.every}")

    def minimum_budget(self, names: Sequence[str]) -> float:
        return FULL_COST  # one group

    def cost(self, names: Sequence[str], steps: int, settings: MethodSettings) -> Cost:
        return Cost(1, steps, f"one training run of all {len(names)} tasks, measuring every {settings.every} steps")

    def store_keys(self, runner: Runner, settings: MethodSettings) -> list[dict[str, Any]]:
        return [runner.affinity_settings(settings.every)]

    def estimate(self, runner: Runner, settings: MethodSettings) -> Estimate:
        self.validate(settings)
        run = runner.affinity(settings.every)
        trained = []
        if "validation" in run and "test" in run:  # the all-task network the run trained
            trained.append(Trained(NetSpec(runner.names), runner.cfg.steps, run["validation"], run["test"],
                                   float(run.get("train_seconds", 0.0))))
        validation = {t: trained[0].loss(t) for t in runner.names} if trained else None
        return self._estimate(runner.names, {k: run[k] for k in MATRICES}, validation, trained)

    def _estimate(self, names: Sequence[str], matrices: Mapping[str, Any], validation: Mapping[str, float] | None,
                  trained: list[Trained]) -> Estimate:
        names = tuple(names)
        matrices = {k: np.asarray(v, dtype=np.float64) for k, v in matrices.items()}
        specs = {network_label(s): NetSpec(s) for s in subsets_by_size(names)}
        known = {network_label(names): dict(validation)} if validation is not None else {}
        return Estimate(self.name, names, None, matrices[self.key], self.affinity_kind, trained, specs, known,
                        {f"{k}_matrix": m.tolist() for k, m in matrices.items()})

    def describe(self, steps: int, settings: MethodSettings) -> str:
        return f"none: {self.name} predicts no losses; tag_score = TAG group score (higher = better)"

    def settings_used(self, settings: MethodSettings) -> dict[str, Any]:
        return {"affinity_every": settings.every}

    def record(self, est: Estimate) -> dict[str, Any]:
        return {self.key: np.asarray(est.affinity).tolist(),
                "affinity_run": {split: {t: tr.loss(t, split) for t in est.tasks}
                                 for tr in est.trained for split in ("validation", "test")}}

    def in_record(self, record: Mapping[str, Any]) -> bool:
        return self.key in record

    def from_record(self, record: Mapping[str, Any], names: Sequence[str]) -> Estimate:
        matrices = {k: record[k] for k in MATRICES if k in record}
        return self._estimate(names, matrices, record.get("affinity_run", {}).get("validation"), [])


TAG = register(AffinityMethod(
    "tag", "lookahead",
    "TAG lookahead affinity `Z[i,j] / η`, where `Z[i,j] = 1 - L_j(θ_s - η ∇L_i, θ_j) / L_j(θ_s, θ_j)`: task j's loss "
    "after one SGD step of size η along task i's gradient on the shared (encoder) parameters θ_s, heads θ fixed, "
    "over its loss before, on the same minibatch; η = the peak learning rate; measured every --every steps and "
    "averaged over the all-task training run (TAG's scale)"))
CS = register(AffinityMethod(
    "cs", "cosine",
    "cosine similarity of the per-task gradients on the shared (encoder) parameters, averaged over the all-task "
    "training run (symmetric)"))

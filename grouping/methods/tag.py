r"""tag and cs: task groups from ONE training run of all tasks (Fifty et al., NeurIPS 2021).

``tag``  the lookahead inter-task affinity measured every ``every`` steps of
         the run and averaged over training (`grouping.runner.measure_affinity`);
``cs``   the same run's averaged cosine similarity of the per-task encoder
         gradients (TAG's baseline).

Both group by TAG's rule (`grouping.selection_tag.select_groups_tag`): a budget
b buys ``k = floor(b)`` full-size networks (cost 1 each); half-size singles
are not used. The chosen groups map onto candidate networks (each group =
one full-size network of its tasks, a task served by the group where its
TAG score is best). The run also trains the all-task network, whose
validation losses are measured (`Estimate.known`): the all-in-one baseline.

Predicted losses: TAG's first-order reading of its own affinity
(`first_order_losses`). TAG's ``Z[u, t] / eta`` is the relative drop of t's
loss per unit step along u's gradient; over the schedule (summed learning
rate ``kappa``, `mtl.train.learning_rate_sum`) a network without the tasks
outside S misses their pull on t, so

.. math::

    \hat L_t(S) = L_t(all) \exp\Bigl(\kappa \sum_{u \notin S} D[u, t]\Bigr),
    \qquad \hat r_t(S) = \frac{\hat L_t(S)}{\hat L_t(\{t\})}
    = \exp\Bigl(-\kappa \sum_{u \in S \setminus \{t\}} D[u, t]\Bigr)

with ``L_t(all)`` the all-task network's measured validation loss and ``D``
the rate matrix: tag's own matrix; for cs (cosines carry no magnitude) the
same first-order quantity rebuilt from the cosines and the run's TAG
diagonal, ``D[u, t] = cs[u, t] sqrt(Z[u, u] Z[t, t] L_u / L_t)`` (since
``Z[t, t] / eta ~ |g_t|^2 / L_t``). A half-size single is predicted as the
full-size one: the run says nothing about width. These are readings, not
measurements, and on the ground truth they are poor: the evaluation reports
each method's error on the relative losses it predicts
(`grouping.groundtruth.prediction_errors`), and so does the report's trust
line. The choice stays TAG's rule: the predicted losses are shown, not
chosen on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grouping.methods.base import Cost, Estimate, Method, MethodSettings, register
from grouping.runner import FULL_COST, HALF_SIZE, NetSpec, Runner, Trained
from grouping.selection import network_label, subsets_by_size
from mtl.train import TrainConfig, learning_rate_sum

#: The most a loss read off the affinity moves from the all-task network's, in log units (e^20 ~ 5e8).
MAX_LOG_CHANGE = 20.0
#: The matrices of the affinity run (`grouping.runner.measure_affinity`), by the key it stores them under.
MATRICES = ("tag", "cs")


def recorded_learning_rate_sum(train: Mapping[str, Any]) -> float:
    """``kappa`` of a ground-truth record's training settings (its ``settings["train"]``): what
    `AffinityMethod.record` stores for a run with those settings."""
    return learning_rate_sum(TrainConfig(**{k: train[k] for k in ("steps", "learning_rate", "warmup_fraction")}))


def rate_matrix(key: str, matrices: Mapping[str, Any], together: Mapping[str, float],
                names: Sequence[str]) -> np.ndarray:
    """``D`` of the module docstring (source, target) for the matrix `key` of the affinity run."""
    tag = np.asarray(matrices["tag"], dtype=np.float64)
    if key == "tag":
        return tag
    cs = np.asarray(matrices["cs"], dtype=np.float64)
    loss = np.asarray([float(together[t]) for t in names])
    diag = np.clip(np.diag(tag), 0.0, None)
    return cs * np.sqrt(np.outer(diag * loss, diag) / loss[None, :])


def first_order_losses(names: Sequence[str], rates: np.ndarray, kappa: float,
                       together: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """label -> predicted per-task losses of every full-size subset network and every half-size single
    (the module docstring's ``\\hat L``), from the rate matrix `rates` (source, target), the schedule's
    summed learning rate `kappa` and the all-task network's losses `together`. The log change is kept within
    ``±MAX_LOG_CHANGE`` (a long schedule at a large rate would otherwise overflow)."""
    names = tuple(names)
    rates = np.asarray(rates, dtype=np.float64)
    out = {}
    for subset in subsets_by_size(names):
        left_out = [i for i, u in enumerate(names) if u not in subset]
        out[network_label(subset)] = {
            t: float(together[t]) * math.exp(float(np.clip(
                kappa * math.fsum(rates[i, names.index(t)] for i in left_out), -MAX_LOG_CHANGE, MAX_LOG_CHANGE)))
            for t in subset}
    for t in names:
        out[NetSpec((t,), HALF_SIZE).label] = dict(out[network_label((t,))])
    return out


class AffinityMethod(Method):
    """Groups by TAG's rule on one matrix of the affinity run (``key``)."""

    groups_by_tag_rule = True

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
        return self._estimate(runner.names, {k: run[k] for k in MATRICES}, validation, trained,
                              learning_rate_sum(runner.cfg))

    def _estimate(self, names: Sequence[str], matrices: Mapping[str, Any], validation: Mapping[str, float] | None,
                  trained: list[Trained], kappa: float | None) -> Estimate:
        names = tuple(names)
        matrices = {k: np.asarray(v, dtype=np.float64) for k, v in matrices.items()}
        specs = {network_label(s): NetSpec(s) for s in subsets_by_size(names)}
        known = {network_label(names): dict(validation)} if validation is not None else {}
        readings, how = {}, {}
        if validation is not None and kappa is not None:
            readings = first_order_losses(names, rate_matrix(self.key, matrices, validation, names), kappa,
                                          validation)
            how = {"learning_rate_sum": float(kappa)}
        return Estimate(self.name, names, None, matrices[self.key], self.affinity_kind, trained, specs, known,
                        {f"{k}_matrix": m.tolist() for k, m in matrices.items()}, readings, how)

    def describe(self, steps: int, settings: MethodSettings) -> str:
        return (f"validation losses read from the {self.name} matrix to first order, anchored at the measured "
                f"all-task network (L_t(S) = L_t(all) exp(learning-rate sum x affinity onto t from the tasks "
                f"S leaves out)); chosen by TAG's rule, not on these losses; tag_score = TAG group score "
                f"(higher = better)")

    def settings_used(self, settings: MethodSettings) -> dict[str, Any]:
        return {"affinity_every": settings.every}

    def record(self, est: Estimate) -> dict[str, Any]:
        run: dict[str, Any] = {split: {t: tr.loss(t, split) for t in est.tasks}
                               for tr in est.trained for split in ("validation", "test")}
        run.update(est.reading_settings)
        return {self.key: np.asarray(est.affinity).tolist(), "affinity_run": run}

    def in_record(self, record: Mapping[str, Any]) -> bool:
        return self.key in record

    def from_record(self, record: Mapping[str, Any], names: Sequence[str]) -> Estimate:
        matrices = {k: record[k] for k in MATRICES if k in record}
        run = record.get("affinity_run", {})
        return self._estimate(names, matrices, run.get("validation"), [], run.get("learning_rate_sum"))


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

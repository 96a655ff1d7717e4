"""exhaustive: train every candidate network to the end of the schedule; the loss-table estimator.

All ``2^n - 1`` subsets of the tasks at full size (cost 1) and the n
half-size single-task networks (cost 0.5), ``2^n - 1 + n`` trainings.
Predicted loss of task t in network N = its validation loss: the ground
truth's own choice ("optimal"). `Exhaustive` is also the base of the other
estimators that predict a candidate table (esa, hoa): they change which
networks are trained, for how long, and how the table is predicted from them.

Pairwise affinity, for the report's matrix: ``A[u, t] = 1 - L(t|{t,u}) /
L(t|{t})`` (row u = the partner, "source"; column t = the task whose loss
changes, "target"; L(t|{t}) the full-size single), the relative drop of t's
loss when it shares a network with u. Same orientation as
`grouping.affinity` (``Z[source, target]``); positive = u helps t.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grouping.methods.base import Cost, Estimate, Method, MethodSettings, register
from grouping.runner import NetSpec, Runner, candidate_specs
from grouping.selection import Network, minimum_budget, network_label


class Exhaustive(Method):
    name = "exhaustive"
    groups_by_tag_rule = False
    affinity_kind = "pair-loss-ratio"
    affinity_definition = ("`1 - L(j|{i,j}) / L(j|{j})`: relative drop of j's validation loss when it shares a full-size "
                           "network with i (from the pair and single-task networks); diagonal 0")
    #: the record's key of the losses this method predicts from (`record`, `from_record`)
    record_key = "validation"

    def specs(self, names: Sequence[str]) -> list[NetSpec]:
        """The networks it trains."""
        return candidate_specs(names)

    def steps(self, steps: int, settings: MethodSettings) -> int:
        """Steps of each training, given the full schedule's."""
        return steps

    def predict(self, names: Sequence[str], losses: Mapping[str, Mapping[str, float]]) -> list[Network]:
        """The candidate table from the trained networks' losses (label -> {task: loss})."""
        return [Network(s.tasks, s.cost, {t: float(losses[s.label][t]) for t in s.tasks}, s.label)
                for s in self.specs(names)]

    def minimum_budget(self, names: Sequence[str]) -> float:
        dummy = [Network(s.tasks, s.cost, {t: 1.0 for t in s.tasks}, s.label) for s in candidate_specs(names)]
        return minimum_budget(dummy, tasks=names)

    def cost(self, names: Sequence[str], steps: int, settings: MethodSettings) -> Cost:
        n = len(self.specs(names))
        return Cost(n, self.steps(steps, settings), f"{n} networks")

    def store_keys(self, runner: Runner, settings: MethodSettings) -> list[dict[str, Any]]:
        steps = self.steps(runner.cfg.steps, settings)
        return [runner.settings_for(spec, steps) for spec in self.specs(runner.names)]

    def estimate(self, runner: Runner, settings: MethodSettings) -> Estimate:
        self.validate(settings)
        trained = runner.train(self.specs(runner.names), steps=self.steps(runner.cfg.steps, settings))
        losses = {s.label: {t: tr.loss(t) for t in s.tasks} for s, tr in trained.items()}
        return self._estimate(runner.names, losses, list(trained.values()))

    def _estimate(self, names: Sequence[str], losses: Mapping[str, Mapping[str, float]], trained: list) -> Estimate:
        names = tuple(names)
        candidates = self.predict(names, losses)
        specs = {s.label: s for s in candidate_specs(names)}
        return Estimate(self.name, names, candidates, pairwise_affinity(names, candidates), self.affinity_kind,
                        trained, specs)

    def describe(self, steps: int, settings: MethodSettings) -> str:
        return "validation loss of each network at the end of training"

    def record(self, est: Estimate) -> dict[str, Any]:
        return {split: {tr.spec.label: {t: tr.loss(t, split) for t in tr.spec.tasks} for tr in est.trained}
                for split in ("validation", "test")}

    def from_record(self, record: Mapping[str, Any], names: Sequence[str]) -> Estimate:
        return self._estimate(names, record[self.record_key], [])

    def in_record(self, record: Mapping[str, Any]) -> bool:
        return self.record_key in record


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


EXHAUSTIVE = register(Exhaustive())

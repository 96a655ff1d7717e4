r"""surrogate: a linear model of each task's relative loss on its network's members, fitted to a random sample.

Li, Nguyen & Zhang (TMLR 2023, "Identification of negative transfers in
multitask learning using surrogate models") train random task subsets and
fit, per task, a linear model of its loss on subset membership. Here the
model is of the relative loss ``r_t(S) = L_t(S) / L_t({t})``:

.. math::

    r_t(S) = 1 + \sum_{u \in S \setminus \{t\}} w_{tu}

(the intercept is fixed by the single-task network, ``r_t({t}) = 1``). The
weights are fitted per task by ridge regression toward the pooled fit, over
every trained full-size network S that contains t and another task, with
targets ``y_S = r_t(S) - 1`` and rows ``x_S[u] = [u in S]``:

.. math::

    w_t = \arg\min_w \sum_S (x_S \cdot w - y_S)^2 + λ \lVert w - c_t \mathbf{1} \rVert^2,
    \qquad c_t = \frac{\sum_S |S \setminus t|\, y_S}{\sum_S |S \setminus t|^2}

``c_t`` is the least-squares fit of the one-number model "every partner
weighs the same" (with the all-task network alone, ``c_t = (r_t(all) - 1) /
(n - 1)``), and λ = `RIDGE` = 1 weighs that prior like one more network per
weight. A few random subsets leave ``w_t`` underdetermined (each task is in
about half of them, and n - 1 weights are unknown): plain least squares then
takes the minimum-norm solution and attributes each network's effect (and
its seed noise) to arbitrary partners. On the first ground truth (32x32, 5
tasks, 3 seeds, relative objective, the sample drawn from its table) the
mean regret over budgets 1..5 was, for 3, 5, 8 and 15 sampled subsets,
+1.62, +1.61, +1.22, +0.39% with λ = 0 and +0.39, +0.10, +0.15, +0.10% with
λ = 1 (λ = 4: +0.39, +0.15, +0.05, +0.04%; no samples: +0.39%; HOA
+0.26%): λ = 1 and 5 samples were chosen there, not on the held-out tasks.
``λ = 0`` is Li et al.'s plain least squares, and reproduces exactly any
table of the model family that its networks determine (tests). ``-w_tu``
is how much u lowers t's loss in any network; the report's pairwise matrix
shows the predicted pairs, ``A[u, t] = 1 - r_t({t,u}) = -w_tu``.

Trains (``2n + 1 + m`` networks, the full schedule, one ensemble per width):
the n full-size singles (the references and the intercepts), the n half-size
singles (measured candidates, as in HOA), the all-task network, and ``m =
--surrogate-samples`` (default 5) subsets of 2 to n-1 tasks drawn uniformly
without replacement with ``numpy.random.default_rng(seed)``, seed = the
training seed (all of them when m is larger). Predicted losses: trained
networks as measured, every other ``max(MIN_RELATIVE, r_t(S)) L_t({t})``.

Cost model (forward FLOPs, `mtl.cost`): a full-size network of k tasks
costs ``(E + kD) / (E + nD)`` all-task runs (64x64: E = 35.6, D = 12.0
MFLOPs); with 5 tasks the singles, half singles and all-task network cost
2.5 + 1.6 + 1 = 5.1 runs and each sampled subset 0.6-0.9, so m = 5 costs
about 8.8 runs (HOA 10.3, exhaustive 23).

Ground truth: every sampled network is one of the exhaustive table's (same
settings, hence the same store entries), so `collect` trains nothing: it
draws the sample with the seed and keeps its labels, and `from_record`
reads those networks' validation losses from the record, which is exactly
what training that sample would have given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grouping.methods.base import Cost, Estimate, MethodSettings, register
from grouping.methods.exhaustive import Exhaustive
from grouping.runner import HALF_SIZE, NetSpec, Runner, candidate_specs
from grouping.selection import Network, network_label, subsets_by_size

#: Predicted relative losses are kept at or above this (a fitted line can extrapolate below 0).
MIN_RELATIVE = 0.05
#: λ of the ridge toward the pooled fit (module docstring); 0 = plain least squares.
RIDGE = 1.0


def draw_sample(names: Sequence[str], samples: int, seed: int) -> list[tuple[str, ...]]:
    """`samples` distinct subsets of 2 to n-1 of `names`, uniformly without replacement (all when fewer
    exist), in `subsets_by_size` order; deterministic in `seed`."""
    pool = [s for s in subsets_by_size(names) if 2 <= len(s) < len(names)]
    if samples >= len(pool):
        return pool
    idx = np.random.default_rng(seed).choice(len(pool), size=samples, replace=False)
    return [pool[i] for i in sorted(idx)]


def fit_weights(names: Sequence[str], losses: Mapping[str, Mapping[str, float]],
                ridge: float = RIDGE) -> dict[str, dict[str, float]]:
    """``w[t][u]`` for every task t and partner u (module docstring), from the full-size networks in
    `losses` (label -> {task: loss}; each task's single-task network must be there). ``ridge=0``:
    least squares (the minimum-norm solution when underdetermined)."""
    names = tuple(names)
    out = {}
    for t in names:
        single = float(losses[network_label((t,))][t])
        others = [u for u in names if u != t]
        rows, y = [], []
        for s in subsets_by_size(names):
            label = network_label(s)
            if t in s and len(s) >= 2 and label in losses:
                rows.append([1.0 if u in s else 0.0 for u in others])
                y.append(float(losses[label][t]) / single - 1.0)
        x, y = np.asarray(rows).reshape(len(rows), len(others)), np.asarray(y)
        if not rows:
            w = np.zeros(len(others))
        elif ridge > 0:
            k = x.sum(1)
            prior = np.full(len(others), float(k @ y) / float(k @ k))
            w = np.linalg.solve(x.T @ x + ridge * np.eye(len(others)), x.T @ y + ridge * prior)
        else:
            w = np.linalg.lstsq(x, y, rcond=None)[0]
        out[t] = {u: float(v) for u, v in zip(others, w)}
    return out


def surrogate_relative(weights: Mapping[str, Mapping[str, float]], task: str, network: Sequence[str]) -> float:
    """The model's ``r_t(S)`` (not floored)."""
    return 1.0 + sum(weights[task][u] for u in network if u != task)


class Surrogate(Exhaustive):
    name = "surrogate"
    affinity_kind = "surrogate-pair"
    affinity_definition = ("`-w[j][i]`, the surrogate's coefficient: the predicted relative drop of j's loss in a "
                           "full-size network with i, `1 - r_j({i,j})`; diagonal 0")

    def validate(self, settings: MethodSettings) -> None:
        if settings.samples < 0:
            raise ValueError(f"--surrogate-samples must be at least 0, got {settings.samples}")

    def trained_specs(self, names: Sequence[str], samples: int, seed: int) -> list[NetSpec]:
        """Half-size and full-size singles, the all-task network and the sample."""
        names = tuple(names)
        return ([NetSpec((t,), HALF_SIZE) for t in names] + [NetSpec((t,)) for t in names] + [NetSpec(names)]
                + [NetSpec(s) for s in draw_sample(names, samples, seed)])

    def cost(self, names: Sequence[str], steps: int, settings: MethodSettings) -> Cost:
        n = len(names)
        m = len(draw_sample(names, settings.samples, 0))
        return Cost(2 * n + 1 + m, steps, f"{2 * n + 1 + m} networks: the {n} full-size and {n} half-size "
                                          f"single-task networks, the all-task network and {m} random subsets")

    def store_keys(self, runner: Runner, settings: MethodSettings) -> list[dict[str, Any]]:
        return [runner.settings_for(s) for s in self.trained_specs(runner.names, settings.samples, runner.cfg.seed)]

    def estimate(self, runner: Runner, settings: MethodSettings) -> Estimate:
        self.validate(settings)
        trained = runner.train(self.trained_specs(runner.names, settings.samples, runner.cfg.seed))
        losses = {s.label: {t: tr.loss(t) for t in s.tasks} for s, tr in trained.items()}
        est = self._estimate(runner.names, losses, list(trained.values()))
        est.matrices["surrogate"] = self._entry(runner.names, settings.samples, runner.cfg.seed)
        return est

    def predict(self, names: Sequence[str], losses: Mapping[str, Mapping[str, float]]) -> list[Network]:
        """Every candidate: the networks in `losses` as measured, the others from the fitted model."""
        weights = fit_weights(names, losses)
        out = []
        for s in candidate_specs(names):
            if s.label in losses:
                values = {t: float(losses[s.label][t]) for t in s.tasks}
            else:
                values = {t: max(MIN_RELATIVE, surrogate_relative(weights, t, s.tasks))
                          * float(losses[network_label((t,))][t]) for t in s.tasks}
            out.append(Network(s.tasks, s.cost, values, s.label))
        return out

    def _entry(self, names: Sequence[str], samples: int, seed: int) -> dict[str, Any]:
        return {"samples": samples, "seed": seed,
                "sample": [network_label(s) for s in draw_sample(names, samples, seed)]}

    def describe(self, steps: int, settings: MethodSettings) -> str:
        return ("singles, half-size singles, the all-task network and a random sample of subsets measured; every "
                "other network (1 + sum_{u in S\\t} w_tu) L_t({t}), w fitted by least squares on the sample")

    def settings_used(self, settings: MethodSettings) -> dict[str, Any]:
        return {"surrogate_samples": settings.samples}

    def collect(self, runner: Runner, settings: MethodSettings) -> dict[str, Any]:
        """No training: the sample's networks are the exhaustive table's, in the record already."""
        self.validate(settings)
        return {self.name: self._entry(runner.names, settings.samples, runner.cfg.seed)}

    def record(self, est: Estimate) -> dict[str, Any]:
        return {self.name: est.matrices["surrogate"]}

    def in_record(self, record: Mapping[str, Any]) -> bool:
        return self.name in record

    def from_record(self, record: Mapping[str, Any], names: Sequence[str]) -> Estimate:
        """The sampled networks' validation losses, read from the record's table."""
        names = tuple(names)
        entry = record[self.name]
        labels = ([network_label((t,), True) for t in names] + [network_label((t,)) for t in names]
                  + [network_label(names)] + list(entry["sample"]))
        est = self._estimate(names, {label: record["validation"][label] for label in labels}, [])
        est.matrices["surrogate"] = dict(entry)
        return est


SURROGATE = register(Surrogate())

"""Choosing networks from an estimate, the baselines, and scoring any set of networks on a table of losses.

find_groups (`grouping.find_groups`) and the ground-truth evaluation
(`grouping.groundtruth`) both call these functions: `choose` turns an
estimate into networks for every budget, `baselines` lists what a choice is
compared with, and `score` values a set of networks on a table of losses
(predicted, validation or test) under an objective (`grouping.objective`).

Costs: every function takes ``costs``, a `grouping.costs.CostTable` (budgets
in multiples of the mean full-size single-task network in its kind: FLOPs,
latency or Standley's nominal units); None = nominal (a full-size network 1,
a half-size one 0.5).

Choosing: an estimate with a candidate table is solved exactly for the
objective (`grouping.selection.select_networks` on `Objective.table`, each
candidate at its cost). One with an affinity matrix is grouped by TAG's rule
(`grouping.selection.select_groups`): every group of tasks is one full-size
network at its cost, each task alone is also a candidate at every single-task
width (half size too), scored as TAG scores a group of one; the groups of
highest mean TAG score that fit the budget are chosen (ties: the cheapest),
then each half-size single is made full-size while the budget left allows
(TAG's scores cannot tell the widths apart; the full-size one is the
network the task would have alone). The objective does not enter: affinities
are not losses. Under nominal costs this is TAG's "at most floor(b) groups".

Baselines, for every budget b:

* all tasks in one full-size network (when it fits);
* one network per task: all full size if they fit, else all half size if
  they fit, else not available (None);
* random groupings: every set partition of the tasks whose networks (each
  block one full-size network) fit the budget, equally likely; their exact
  mean (and worst) total, by enumeration (at most Bell(9) = 21,147
  partitions for the registry's 9 tasks). Under nominal costs: the
  partitions into at most floor(b) blocks.

Scoring (`score`, `per_task_losses`): each task counts the loss of the
network assigned to it when an assignment is given (find_groups --verify:
the network chosen for it on the predictions), else the lowest loss among
the networks that do it (Standley et al.'s scoring, the ground truth's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from grouping.costs import CostTable
from grouping.methods import Estimate
from grouping.objective import DEFAULT_OBJECTIVE, Losses, Objective, change_percent, get_objective
from grouping.runner import FULL_COST, FULL_SIZE, HALF_SIZE, NetSpec
from grouping.selection import Network, network_label, select_groups, select_networks
from grouping.selection_tag import SINGLETON_SCORE, tag_candidates

__all__ = [
    "Baselines",
    "Choice",
    "baseline_totals",
    "baselines",
    "choose",
    "groups_within",
    "network_cost",
    "partitions",
    "per_task_losses",
    "score",
    "task_changes",
]


@dataclasses.dataclass
class Choice:
    """The networks chosen for one budget.

    ``predicted``: per network, its predicted per-task losses (None where
    the method has none; tag/cs: read off the affinity, not chosen on).
    ``scores``: per network, TAG scores (affinity methods only).
    ``assignment``: task -> label of the network whose output it uses
    (tag/cs: the group of best TAG score). ``predicted_total``: the
    objective of the predictions (None without them); ``tag_score``: the
    mean TAG score.
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
    costs: CostTable | None = None  # None: nominal

    @property
    def cost(self) -> float:
        """The chosen networks' cost in budget units."""
        return math.fsum(network_cost(s, self.costs) for s in self.specs)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.specs]


def groups_within(budget: float) -> int:
    """How many full-size networks a nominal budget buys (TAG's groups, random groupings' blocks)."""
    return int(math.floor(budget / FULL_COST + 1e-9))


def network_cost(spec: NetSpec, costs: CostTable | None) -> float:
    """A network's cost in budget units: from `costs`, or nominal (full 1, half 0.5) when None."""
    return spec.cost if costs is None else costs.cost(spec)


def _fits(cost: float, budget: float) -> bool:
    return cost <= budget + 1e-9 * max(1.0, abs(budget))


def choose(est: Estimate, budgets: Sequence[float], objective: str | Objective = DEFAULT_OBJECTIVE,
           costs: CostTable | None = None) -> list[Choice]:
    """The method's networks for every budget (one solve for the whole curve), at `costs` (None: nominal).

    Every budget must be feasible (`grouping.selection.split_budgets` sorts a list first)."""
    budgets = list(budgets)
    obj = get_objective(objective)
    if est.candidates is not None:
        priced = [nw if costs is None else dataclasses.replace(nw, cost=costs.cost(nw.label)) for nw in est.candidates]
        table = obj.table(priced, obj.reference(est.losses(), est.tasks))
        raw = {nw.label: dict(nw.losses) for nw in est.candidates}
        return [Choice(sel.budget, [est.specs[nw.label] for nw in sel.networks],
                       {nw.label: raw[nw.label] for nw in sel.networks}, None, dict(sel.assignment), sel.total, None,
                       sel.optimal, sel.gap, costs)
                for sel in select_networks(table, budgets, tasks=est.tasks)]
    names = tuple(est.tasks)
    groups = tag_candidates((names, est.affinity.T))  # selection's layout: M[a][b] = affinity of b onto a
    specs = {network_label(nw.tasks): NetSpec(nw.tasks, FULL_SIZE) for nw in groups}
    specs.update({NetSpec((t,), HALF_SIZE).label: NetSpec((t,), HALF_SIZE) for t in names})
    table = [Network(nw.tasks, network_cost(specs[nw.label], costs), nw.losses, nw.label) for nw in groups]
    table += [Network((t,), network_cost(specs[label], costs), {t: SINGLETON_SCORE}, label)
              for t in names for label in [NetSpec((t,), HALF_SIZE).label]]
    losses = est.losses()  # the all-task network's and the losses read off the affinity, if any
    reference = obj.reference(losses, names, required=False)
    out = []
    for sel in select_groups(table, budgets, tasks=names):
        chosen = _widen([specs[nw.label] for nw in sel.networks], sel.budget, costs)
        scores = {s.label: dict(nw.losses) for s, nw in zip(chosen, sel.networks)}
        assignment = {t: next(s.label for s, nw in zip(chosen, sel.networks) if nw.label == label)
                      for t, label in sel.assignment.items()}
        predicted = {s.label: losses.get(s.label) for s in chosen}
        total = score(chosen, losses, names, obj, reference, assignment)
        out.append(Choice(sel.budget, chosen, predicted, scores, assignment, total, sel.total,
                          sel.optimal, sel.gap, costs))
    return out


def _widen(specs: Sequence[NetSpec], budget: float, costs: CostTable | None) -> list[NetSpec]:
    """Each half-size single made full-size, in order, while the budget left allows it."""
    out = list(specs)
    for i, spec in enumerate(out):
        if spec.half:
            wider = NetSpec(spec.tasks, FULL_SIZE)
            total = math.fsum(network_cost(s, costs) for s in out) - network_cost(spec, costs) + network_cost(wider, costs)
            if _fits(total, budget):
                out[i] = wider
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


@dataclasses.dataclass(frozen=True)
class Baselines:
    """What a choice at ``budget`` is compared with (module docstring); None = does not fit the budget."""

    budget: float
    all_in_one: list[NetSpec] | None
    one_per_task: list[NetSpec] | None
    random: list[tuple[tuple[str, ...], ...]]  # the partitions that fit, each block one full-size network

    def groupings(self) -> list[list[NetSpec]]:
        return [[NetSpec(block) for block in p] for p in self.random]


def baselines(names: Sequence[str], budget: float, costs: CostTable | None = None) -> Baselines:
    """The baselines for one budget, at `costs` (None: nominal)."""
    names = tuple(names)

    def fits(specs: Sequence[NetSpec]) -> bool:
        return _fits(math.fsum(network_cost(s, costs) for s in specs), budget)

    together = [NetSpec(names, FULL_SIZE)]
    full, half = [NetSpec((t,), FULL_SIZE) for t in names], [NetSpec((t,), HALF_SIZE) for t in names]
    singles = full if fits(full) else half if fits(half) else None
    if costs is None:  # every block costs 1: the partitions into at most floor(b) blocks
        random = partitions(names, groups_within(budget))
    else:
        random = [p for p in partitions(names) if fits([NetSpec(block) for block in p])]
    return Baselines(budget, together if fits(together) else None, singles, random)


def baseline_totals(base: Baselines, losses: Losses, names: Sequence[str], objective: Objective,
                    reference: Mapping[str, float] | None) -> dict[str, float | None]:
    """The baselines' totals on a table: all_in_one, one_per_task, random_mean and random_worst
    (None where a baseline does not fit or the table lacks a network)."""
    def total(specs):
        return None if specs is None else score(specs, losses, names, objective, reference)

    randoms = [total(p) for p in base.groupings()]
    known = bool(randoms) and all(v is not None for v in randoms)
    return {"all_in_one": total(base.all_in_one), "one_per_task": total(base.one_per_task),
            "random_mean": math.fsum(randoms) / len(randoms) if known else None,
            "random_worst": max(randoms) if known else None}


# ---------------------------------------------------------------------------
# Scoring.


def _label(network: NetSpec | str) -> str:
    return network if isinstance(network, str) else network.label


def per_task_losses(networks: Sequence[NetSpec | str], losses: Losses, names: Sequence[str],
                    assignment: Mapping[str, str] | None = None) -> dict[str, float] | None:
    """Each task's loss among `networks` (specs or labels): its assigned network's, else the
    lowest among those doing it. None when `losses` lacks one of the networks."""
    labels = [_label(nw) for nw in networks]
    if any(label not in losses for label in labels):
        return None
    out = {}
    for t in names:
        label = assignment.get(t) if assignment else None
        values = [losses[label][t]] if label in labels else [losses[x][t] for x in labels if t in losses[x]]
        if not values:
            raise ValueError(f"no network of {labels} does task {t!r}")
        out[t] = float(min(values))
    return out


def score(networks: Sequence[NetSpec | str], losses: Losses, names: Sequence[str], objective: Objective,
          reference: Mapping[str, float] | None, assignment: Mapping[str, str] | None = None) -> float | None:
    """The objective of `networks` on a table of losses (`per_task_losses`); None without the numbers."""
    per_task = per_task_losses(networks, losses, names, assignment)
    return None if per_task is None else objective.total(per_task, reference)


def task_changes(per_task: Mapping[str, float] | None, losses: Losses,
                 names: Sequence[str]) -> dict[str, dict[str, float] | None]:
    """Each task's change in % against one all-task network and against its independent
    full-size single-task network, on the same table (None where the table lacks them)."""
    together = losses.get(network_label(tuple(names)))
    alone = {t: losses[network_label((t,))][t] for t in names if network_label((t,)) in losses}
    known = per_task is not None
    return {"vs_all_in_one": change_percent(per_task, together) if known and together else None,
            "vs_independent": change_percent(per_task, alone) if known and len(alone) == len(names) else None}

"""Choosing networks from an estimate, the baselines, and scoring any set of networks on a table of losses.

find_groups (`grouping.find_groups`) and the ground-truth evaluation
(`grouping.groundtruth`) both call these functions: `choose` turns an
estimate into networks for every budget, `baselines` lists what a choice is
compared with, and `score` values a set of networks on a table of losses
(predicted, validation or test) under an objective (`grouping.objective`).

Choosing: an estimate with a candidate table is solved exactly for the
objective (`grouping.selection.select_networks` on `Objective.table`); one
with an affinity matrix is grouped by TAG's rule, a budget b buying
``groups_within(b) = floor(b)`` full-size networks (the objective does not
enter: affinities are not losses).

Baselines, for every budget b:

* all tasks in one full-size network (cost 1);
* one network per task: full size if ``n <= b``, else half size if
  ``n / 2 <= b``, else not available (None);
* random groupings: every set partition of the tasks into at most
  ``floor(b)`` blocks, each block one full-size network (cost 1), equally
  likely; their exact mean (and worst) total, by enumeration (at most
  Bell(9) = 21,147 partitions for the registry's 9 tasks).

Scoring (`score`, `per_task_losses`): each task counts the loss of the
network assigned to it when an assignment is given (find_groups --verify:
the network chosen for it on the predictions), else the lowest loss among
the networks that do it (Standley et al.'s scoring, the ground truth's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from grouping.methods import Estimate, get_method
from grouping.objective import DEFAULT_OBJECTIVE, Losses, Objective, change_percent, get_objective
from grouping.runner import FULL_COST, FULL_SIZE, HALF_COST, HALF_SIZE, NetSpec
from grouping.selection import Selection, network_label, select_groups_tag, select_networks

__all__ = [
    "Baselines",
    "Choice",
    "baseline_totals",
    "baselines",
    "choose",
    "groups_within",
    "partitions",
    "per_task_losses",
    "score",
    "task_changes",
]


@dataclasses.dataclass
class Choice:
    """The networks chosen for one budget.

    ``predicted``: per network, its predicted per-task losses (None when the
    method predicts no losses). ``scores``: per network, TAG scores (affinity
    methods only). ``assignment``: task -> label of the network whose output
    it uses. ``predicted_total``: the objective of the predictions (None
    without predictions); ``tag_score``: the mean TAG score.
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

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.specs]


def groups_within(budget: float) -> int:
    """How many full-size networks a budget buys (TAG's groups, random groupings' blocks)."""
    return int(math.floor(budget / FULL_COST + 1e-9))


def choose(est: Estimate, budgets: Sequence[float], objective: str | Objective = DEFAULT_OBJECTIVE) -> list[Choice]:
    """The method's networks for every budget (one solve for the whole curve)."""
    budgets = list(budgets)
    get_method(est.method).check_budgets(est.tasks, budgets)
    if est.candidates is not None:
        obj = get_objective(objective)
        table = obj.table(est.candidates, obj.reference(est.losses(), est.tasks))
        raw = {nw.label: dict(nw.losses) for nw in est.candidates}
        return [Choice(sel.budget, [est.specs[nw.label] for nw in sel.networks],
                       {nw.label: raw[nw.label] for nw in sel.networks}, None, dict(sel.assignment), sel.total, None,
                       sel.optimal, sel.gap)
                for sel in select_networks(table, budgets, tasks=est.tasks)]
    ks = sorted({groups_within(b) for b in budgets})
    tag_layout = est.affinity.T  # selection's layout: M[a][b] = affinity of b onto a
    by_k: dict[int, Selection] = dict(zip(ks, select_groups_tag((est.tasks, tag_layout), ks)))
    out = []
    for b in budgets:
        sel = by_k[groups_within(b)]
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


@dataclasses.dataclass(frozen=True)
class Baselines:
    """What a choice at ``budget`` is compared with (module docstring); None = does not fit the budget."""

    budget: float
    all_in_one: list[NetSpec] | None
    one_per_task: list[NetSpec] | None
    random: list[tuple[tuple[str, ...], ...]]  # the partitions, each block one full-size network

    def groupings(self) -> list[list[NetSpec]]:
        return [[NetSpec(block) for block in p] for p in self.random]


def baselines(names: Sequence[str], budget: float) -> Baselines:
    """The baselines for one budget."""
    names = tuple(names)
    n = len(names)
    together = [NetSpec(names, FULL_SIZE)] if budget >= FULL_COST - 1e-9 else None
    if n * FULL_COST <= budget + 1e-9:
        singles = [NetSpec((t,), FULL_SIZE) for t in names]
    elif n * HALF_COST <= budget + 1e-9:
        singles = [NetSpec((t,), HALF_SIZE) for t in names]
    else:
        singles = None
    return Baselines(budget, together, singles, partitions(names, groups_within(budget)))


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

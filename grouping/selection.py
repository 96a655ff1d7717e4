r"""Exact network selection for multi-task learning.

The problem (Standley et al., ICML 2020)
----------------------------------------
There are tasks ``T = {t_1, ..., t_n}`` and candidate networks.  A candidate
``N`` does the tasks ``S(N) ⊆ T``, costs ``c(N) > 0`` (inference cost; one
full-size network = 1, a half-size single-task network = 0.5, or measured
FLOPs) and reaches the loss ``L(t, N) >= 0`` on each task ``t ∈ S(N)``.  For
a budget ``B`` choose a set ``C`` of candidates (overlap allowed) with

    ∪_{N∈C} S(N) = T        and        Σ_{N∈C} c(N) <= B

that minimises     f(C) = Σ_{t∈T} min_{N∈C, t∈S(N)} L(t, N).

Structure used by both exact solvers: every selection is worth the same as
an *assignment* of each task to one chosen network containing it, i.e. a
partition of ``T`` into blocks ``T_1..T_m`` served by distinct networks
``N_i ⊇ T_i``: ``f = Σ_i Σ_{t∈T_i} L(t, N_i)``, cost ``Σ_i c(N_i)``.  (Two
blocks on the same network are never better than their union: same value,
lower cost.)

Solvers
-------
``"dp"``   Dynamic programme over subsets of tasks (`grouping.selection_dp`):
           the whole cost/loss curve in one pass when the totals of costs
           take few values (unit/half costs: 12 tasks in ~0.5 s, 15 in
           ~25 s); with many distinct costs (measured FLOPs, latencies) one
           pass per budget, pruned by Lagrangian bounds.
``"mip"``  Mixed-integer programme solved by HiGHS (`grouping.selection_mip`):
           binary ``x_N`` (network chosen), continuous ``y_{t,N}`` (task t
           served by N).  Under a ``time_limit`` (seconds for the whole call,
           shared out over the budgets) the best selection found is returned
           with ``optimal=False`` and its proven gap.  Dominated candidates
           are dropped first (`grouping.selection_instance.prune`): ``N`` is
           dominated by ``M`` when ``S(N) ⊆ S(M)``, ``c(M) <= c(N)``,
           ``L(t,M) <= L(t,N)`` on ``S(N)`` and one of these is strict (exact
           duplicates: the later goes).  Good for sparse candidate sets, many
           distinct costs and many tasks (``benchmarks/selection.py --parts e``).
``"auto"`` ``"dp"`` up to ``DP_ALWAYS_TASKS`` tasks; up to ``DP_MAX_TASKS``
           when the candidates are dense, the rough DP time estimate
           (``DP_SECONDS_PER_SPLIT`` × 3^n, per budget when the cost totals
           within the largest budget take more than ``DP_MAX_COST_LEVELS``
           values) fits ``time_limit`` and its memory bound (``DP_MAX_BLOCKS``)
           holds; else ``"mip"``.  The rule comes from measuring both
           (``benchmarks/selection.py``: 12 tasks with measured FLOPs as
           costs, DP about 0.5 s, MIP not proven in 10 s).

Ties and tolerances
-------------------
A selection fits budget ``B`` when its cost is ``<= B + 1e-9·max(1,|B|)``
(float sums of costs such as 0.1+0.2 must fit 0.3).  Totals within
``TIE_RTOL`` (1e-12, relative) of each other are ties.  Among tied
selections the DP returns the one of lowest cost, then fewest networks, then
fewest task heads ``Σ|S(N)|`` (smaller networks), then smallest sum of
candidate positions (earlier candidates) -- this reproduces the published
HOA curve, whose budgets 4.5 and 5 have such ties.  The MIP guarantees the
optimal total only; among ties it returns HiGHS's choice (deterministic for
a given input).  Networks that serve no task are dropped; a task counts its
lowest-loss chosen network (ties: the cheaper, then the earlier one).
Reported totals are recomputed from the chosen networks (``math.fsum``).

TAG variant (Fifty et al., NeurIPS 2021)
----------------------------------------
Choosing at most ``k`` groups by affinity scores is this problem with
scores for losses (`select_groups`); building its candidates from an
affinity matrix and scoring groups is `grouping.selection_tag`.

HOA (Standley et al.)
---------------------
Higher-order approximation: from singles and pairs only, a network ``S`` of
``|S| >= 3`` tasks is predicted to reach ``L(t|S) ≈ mean_{u∈S\{t}} L(t|{t,u})``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from grouping.selection_dp import (
    DP_ALWAYS_TASKS,
    DP_MAX_BLOCKS,
    DP_MAX_COST_LEVELS,
    DP_MAX_TASKS,
    DP_SECONDS_PER_SPLIT,
    cost_levels,
    dp_fits_memory,
    solve_dp,
)
from grouping.selection_instance import (
    BUDGET_RTOL,
    HALF_PREFIX,
    CoverNotProvenError,
    InfeasibleBudgetError,
    Instance,
    Network,
    Selection,
    SelectionError,
    best_per_task,
    budget_list,
    covers,
    finish,
    fits,
    network_label,
    prune,
    task_universe,
)
from grouping.selection_mip import MIP_REL_GAP, min_cover, solve_mip

__all__ = [
    "BUDGET_RTOL",
    "COVER_TIME_LIMIT",
    "CoverNotProvenError",
    "DP_MAX_TASKS",
    "HALF_PREFIX",
    "MIP_REL_GAP",
    "InfeasibleBudgetError",
    "Network",
    "Selection",
    "SelectionError",
    "hoa_candidates",
    "minimum_budget",
    "network_label",
    "score",
    "select_groups",
    "select_networks",
    "split_budgets",
    "standley_candidates",
    "subsets_by_size",
]

#: Default seconds `minimum_budget` gives the set-cover MIP (the 27-task table of the tests: about 20 s).
COVER_TIME_LIMIT = 60.0


# --------------------------------------------------------------------------
# Building candidate tables
# --------------------------------------------------------------------------


def subsets_by_size(tasks: Sequence[str]) -> list[tuple[str, ...]]:
    """All non-empty subsets, by size, each size in itertools.combinations order.

    For 5 tasks this is the row order of Standley's tables (5 singles, 10
    pairs, 10 triples, 5 quadruples, the all-task network).
    """
    return [c for k in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, k)]


def standley_candidates(
    tasks: Sequence[str],
    loss: Callable[[str, tuple[str, ...], bool], float],
    *,
    half_size: bool = True,
    full_cost: float = 1.0,
    half_cost: float = 0.5,
) -> list[Network]:
    """Standley's default candidates: half-size singles, then every subset at full size.

    ``loss(task, network_tasks, is_half)`` gives each loss.  Labels are
    ``'half:t'`` and ``'a+b'``.
    """
    out = []
    if half_size:
        out += [Network((t,), half_cost, {t: loss(t, (t,), True)}, network_label((t,), True)) for t in tasks]
    for subset in subsets_by_size(tasks):
        out.append(Network(subset, full_cost, {t: loss(t, subset, False) for t in subset}))
    return out


def hoa_candidates(
    candidates: Iterable[Network],
    *,
    higher_order_cost: float | Callable[[tuple[str, ...]], float] | None = None,
) -> list[Network]:
    """Higher-order approximation of a candidate table from its singles and pairs.

    Networks of 1 or 2 tasks are kept as they are.  Every network ``S`` of 3+
    tasks keeps its cost and label but gets the predicted losses
    ``L(t|S) = mean_{u ∈ S\\{t}} L(t|{t,u})`` from the pair networks.  With
    ``higher_order_cost`` (a cost or a function of the task tuple), all
    missing subsets of 3+ tasks are added too, so a table of singles and pairs
    alone suffices.
    """
    candidates = list(candidates)
    pairs: dict[frozenset[str], Network] = {}
    for nw in candidates:
        if len(nw.tasks) == 2:
            key = frozenset(nw.tasks)
            if key in pairs:
                raise SelectionError(f"two pair networks do {sorted(key)}: {pairs[key].label!r} and {nw.label!r}")
            pairs[key] = nw

    def predicted(tasks: tuple[str, ...]) -> dict[str, float]:
        losses = {}
        for t in tasks:
            terms = []
            for u in tasks:
                if u != t:
                    pair = pairs.get(frozenset((t, u)))
                    if pair is None:
                        raise SelectionError(f"HOA needs the pair network {network_label((t, u))!r}, which is missing")
                    terms.append(pair.losses[t])
            losses[t] = math.fsum(terms) / len(terms)
        return losses

    out = [nw if len(nw.tasks) <= 2 else Network(nw.tasks, nw.cost, predicted(nw.tasks), nw.label) for nw in candidates]
    if higher_order_cost is not None:
        present = {frozenset(nw.tasks) for nw in out}
        universe = task_universe(candidates)
        for subset in subsets_by_size(universe):
            if len(subset) >= 3 and frozenset(subset) not in present:
                cost = higher_order_cost(subset) if callable(higher_order_cost) else higher_order_cost
                out.append(Network(subset, cost, predicted(subset)))
    return out


# --------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------


def score(networks: Iterable[Network], table: Iterable[Network] | None = None, *, tasks: Sequence[str] | None = None) -> float:
    """Sum over tasks of the lowest loss the networks reach.

    With ``table``, the networks' own losses are replaced by those of the
    networks with the same labels in ``table`` (e.g. the test table).
    ``tasks`` defaults to every task the networks do.
    """
    networks = list(networks)
    if table is not None:
        by_label = {nw.label: nw for nw in table}
        missing = [nw.label for nw in networks if nw.label not in by_label]
        if missing:
            raise SelectionError(f"network(s) {missing} not in the scoring table")
        networks = [by_label[nw.label] for nw in networks]
    tasks = task_universe(networks) if tasks is None else tasks
    return math.fsum(best_per_task(networks, tasks, min))


def split_budgets(budgets: Sequence[float], minimum: float) -> tuple[list[float], list[float]]:
    """(the feasible budgets, the infeasible ones: below `minimum`), each in the given order.

    Raises InfeasibleBudgetError (naming the minimum) when none is feasible."""
    slack = BUDGET_RTOL * max(1.0, abs(minimum))
    feasible = [b for b in budgets if b >= minimum - slack]
    infeasible = [b for b in budgets if not b >= minimum - slack]
    if budgets and not feasible:
        raise InfeasibleBudgetError(max(budgets), minimum)
    return feasible, infeasible


def minimum_budget(candidates: Iterable[Network], *, tasks: Sequence[str] | None = None,
                   time_limit: float | None = COVER_TIME_LIMIT) -> float:
    """Cost of the cheapest selection that covers every task (weighted set cover).

    ``time_limit``: seconds the set-cover MIP may take (None: no limit).  Past it, raises
    ``CoverNotProvenError`` with the best cover found (``.best``) and a lower bound (``.lower_bound``)."""
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise SelectionError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    inst = Instance.build(list(candidates), tasks, sense=1.0)
    cover = min_cover(inst, None if time_limit is None else time.monotonic() + time_limit)
    if not cover.optimal:
        raise CoverNotProvenError(cover.cost, cover.lower_bound, time_limit)
    return cover.cost


# --------------------------------------------------------------------------
# Public solvers
# --------------------------------------------------------------------------


def select_networks(
    candidates: Iterable[Network],
    budgets: float | Iterable[float],
    *,
    tasks: Sequence[str] | None = None,
    time_limit: float | None = None,
    solver: str = "auto",
) -> list[Selection]:
    """Best networks for each budget (Standley's problem), one Selection per budget.

    ``tasks``: the tasks to cover (default: every task of the candidates;
    tasks outside it are ignored).  ``time_limit``: seconds for the whole
    call, shared out over the budgets (MIP only).  ``solver``: ``"auto"``,
    ``"dp"`` or ``"mip"``.  Raises ``SelectionError`` for invalid input and
    ``InfeasibleBudgetError`` (with ``.min_budget``) for a budget below the
    cheapest cover.
    """
    candidates = list(candidates)
    for nw in candidates:
        for t in nw.tasks:
            if nw.losses[t] < 0:
                raise SelectionError(f"network {nw.label!r} has negative loss {nw.losses[t]} for task {t!r}")
    inst = Instance.build(candidates, tasks, sense=1.0)
    budget_values = budget_list(budgets)
    results = []
    for budget, (chosen, optimal, gap) in zip(budget_values, _solve(inst, budget_values, time_limit, solver)):
        networks, assignment = finish(inst, chosen)
        total = math.fsum(best_per_task(networks, inst.tasks, min))
        results.append(Selection(budget, networks, total, optimal, gap, assignment))
    return results


def select_groups(
    candidates: Iterable[Network],
    budgets: float | Iterable[float],
    *,
    tasks: Sequence[str] | None = None,
    time_limit: float | None = None,
    solver: str = "auto",
) -> list[Selection]:
    """TAG's problem with any costs: candidates whose ``losses`` are scores (higher = better); per budget,
    the networks of total cost <= budget covering every task that maximise the mean over tasks of each
    task's best score (``total``). Ties: as `select_networks` (lowest cost first)."""
    inst = Instance.build(list(candidates), tasks, sense=-1.0)
    budget_values = budget_list(budgets)
    results = []
    for budget, (chosen, optimal, gap) in zip(budget_values, _solve(inst, budget_values, time_limit, solver)):
        networks, assignment = finish(inst, chosen)
        total = math.fsum(best_per_task(networks, inst.tasks, max)) / len(inst.tasks)
        results.append(Selection(budget, networks, total, optimal, gap, assignment))
    return results


# --------------------------------------------------------------------------
# The one solver entry point: pruning, choosing the solver, infeasible budgets
# --------------------------------------------------------------------------


def _solve(inst: Instance, budgets: list[float], time_limit: float | None, solver: str):
    """(chosen candidate indices of ``inst``, optimal, gap) per budget; raises if infeasible."""
    if solver not in ("auto", "dp", "mip"):
        raise SelectionError(f"unknown solver {solver!r} (use 'auto', 'dp' or 'mip')")
    if not budgets:
        return []
    deadline = None if time_limit is None else time.monotonic() + time_limit
    cap = min(max(budgets), float(inst.costs.sum()))
    if solver == "auto":
        solver = _choose_solver(inst, cap, time_limit, len(budgets))
    elif solver == "dp" and not dp_fits_memory(inst):
        raise SelectionError(
            f"the subset DP cannot hold a table of {inst.n} tasks and {len(inst.networks)} networks in memory "
            f"(it needs 2^tasks = {1 << inst.n} blocks and 2^|S| blocks per network, at most "
            f"{DP_MAX_BLOCKS} each); use solver='mip'")
    capped = [min(b, cap) for b in budgets]
    # The DP skips dominance pruning: its tie-break may prefer a dominated network.
    keep = np.flatnonzero(fits(inst.costs, cap)) if solver == "dp" else prune(inst, cap)
    small = inst.subset(keep)
    if not covers(small, range(len(keep))):
        raw = [None] * len(budgets)  # some task has no network within the largest budget
    elif solver == "dp":
        raw = solve_dp(small, capped, cap)
    else:
        raw = solve_mip(small, capped, deadline)
    for budget, result in zip(budgets, raw):
        if result is None:
            left = COVER_TIME_LIMIT if deadline is None else max(deadline - time.monotonic(), 1.0)
            cover = min_cover(inst, time.monotonic() + left)
            raise InfeasibleBudgetError(budget, cover.cost, cover.optimal)
    return [(tuple(int(keep[i]) for i in chosen), optimal, gap) for chosen, optimal, gap in raw]


def _choose_solver(inst: Instance, cap: float, time_limit: float | None, budgets: int) -> str:
    """The measured rule behind ``solver="auto"`` (see the module docstring)."""
    n = inst.n
    if n <= DP_ALWAYS_TASKS:
        return "dp"
    if n > DP_MAX_TASKS or len(inst.networks) < (1 << n) // 8 or not dp_fits_memory(inst):
        return "mip"
    passes = 1 if cost_levels(inst.costs, cap, n) <= DP_MAX_COST_LEVELS else budgets  # one pass per budget
    if time_limit is not None and DP_SECONDS_PER_SPLIT * 3**n * passes > time_limit:
        return "mip"
    return "dp"

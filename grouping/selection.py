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
``"dp"``   Dynamic programme over subsets of tasks.  For every block ``U ⊆ T``
           keep the Pareto front of (cost, value) of serving ``U`` with one
           network, ``g(U) = {(c(N), Σ_{t∈U} L(t,N)) : S(N) ⊇ U}``; then
           ``F(U) = Pareto( ∪_{T'⊆U, min(U)∈T'} g(T') ⊕ F(U \ T') )``, with
           ``F(∅) = {(0, 0)}`` and ``⊕`` the pairwise sums.  ``F(T)`` holds
           the whole cost/loss curve: the answer for ``B`` is its point of
           lowest value with cost <= B.  Points of U whose cost plus the
           cheapest cover of the other tasks exceeds the largest budget are
           dropped.  Work ≈ 3^n/2 splits × front sizes, vectorised with numpy
           one subset size at a time; exact in floating point.  Fast when
           the totals of costs take few values (unit/half costs: 12 tasks in
           ~0.5 s, 15 in ~25 s); slow when many distinct costs make long
           fronts.
``"mip"``  Mixed-integer programme solved by HiGHS: binary ``x_N`` (network
           chosen), continuous ``y_{t,N} ∈ [0,1]`` (task t served by N)::

               min Σ L(t,N) y_{t,N}   s.t.  Σ_N y_{t,N} = 1  (∀t),
                                            y_{t,N} <= x_N  (∀t∈S(N)),
                                            Σ_N c(N) x_N <= B.

           For fixed ``x`` the assignment is a trivially integral LP, so
           ``y`` need not be declared integer.  Solved to a relative gap of
           ``MIP_REL_GAP``; under a ``time_limit`` (seconds for the whole
           call, shared out over the budgets) the best selection found is
           returned with ``optimal=False`` and its proven gap.  Dominated
           candidates are dropped first: ``N`` is dominated by ``M`` when
           ``S(N) ⊆ S(M)``, ``c(M) <= c(N)``, ``L(t,M) <= L(t,N)`` on
           ``S(N)`` and one of these is strict (exact duplicates: the later
           goes).  Infeasible budgets are found by the MIP itself (the
           exact cheapest cover, a set-cover MIP, can take far longer than
           the selections with many tasks and real costs, so it is computed
           only when needed); a stopped run falls back on the previous
           budget's selection, a greedy cover, or the exact cheapest cover.  Good for sparse
           candidate sets, many distinct costs and many tasks
           (``benchmarks/selection.py --parts e``).
``"auto"`` ``"dp"`` up to ``DP_ALWAYS_TASKS`` tasks; up to ``DP_MAX_TASKS``
           when the candidates are dense, their cost totals within the
           largest budget take at most ``DP_MAX_COST_LEVELS`` values and the
           rough DP time estimate fits ``time_limit`` and its memory bound
           (``DP_MAX_BLOCKS``) holds; else ``"mip"``.  The
           rule comes from measuring both (``benchmarks/selection.py``).

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
Given affinities ``M[a][b]`` (score of task ``a`` when trained with ``b``),
the score of task ``t`` in group ``G`` is ``mean_{u∈G\{t}} M[t][u]`` if
``|G| >= 2`` and ``SINGLETON_SCORE`` (-1e6) if ``G = {t}``.  Choose at most
``k`` groups covering every task, each task taking its best score over the
chosen groups containing it, maximising the mean over tasks.  This is the
problem above with every subset as a candidate of cost 1, loss = -score and
budget ``k``.

HOA (Standley et al.)
---------------------
Higher-order approximation: from singles and pairs only, a network ``S`` of
``|S| >= 3`` tasks is predicted to reach ``L(t|S) ≈ mean_{u∈S\{t}} L(t|{t,u})``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "DP_MAX_TASKS",
    "MIP_REL_GAP",
    "SINGLETON_SCORE",
    "InfeasibleBudgetError",
    "affinity_matrix",
    "Network",
    "Selection",
    "SelectionError",
    "hoa_candidates",
    "minimum_budget",
    "network_label",
    "score",
    "score_tag",
    "select_groups",
    "select_groups_tag",
    "select_networks",
    "split_budgets",
    "standley_candidates",
    "subsets_by_size",
    "tag_candidates",
]

#: ``solver="auto"``: the subset DP always up to this many tasks ...
DP_ALWAYS_TASKS = 10
#: ... and up to this many when the candidates are dense (>= 2^n/8 of them), their
#: totals within the budget take few values and the DP fits the time limit.
DP_MAX_TASKS = 15
DP_MAX_COST_LEVELS = 64
DP_SECONDS_PER_SPLIT = 2e-6  # rough DP time per (block, split) pair, × 3^n
#: The subset DP's memory bound: at most this many subsets of the tasks (2^n), and of serving blocks
#: (Σ over candidates of 2^|S(N)|); beyond it, ``solver="dp"`` is refused before allocating anything.
DP_MAX_BLOCKS = 1 << 24
#: Relative optimality gap at which the MIP solver stops.
MIP_REL_GAP = 1e-9
#: Most tasks `tag_candidates` enumerates every group of (2^20 networks: about a gigabyte of Python objects).
TAG_MAX_TASKS = 20
#: Score of a task trained alone in the TAG variant (as in the TAG notebooks).
SINGLETON_SCORE = -1e6
#: Relative slack allowed when comparing a cost sum with a budget.
BUDGET_RTOL = 1e-9
#: Relative difference below which two totals count as equal (then tie-break).
TIE_RTOL = 1e-12
HALF_PREFIX = "half:"


# --------------------------------------------------------------------------
# Errors and data types
# --------------------------------------------------------------------------


class SelectionError(ValueError):
    """Invalid selection input (bad network, uncovered task, bad budget...)."""


class InfeasibleBudgetError(SelectionError):
    """The budget is below the cost of the cheapest selection covering all tasks."""

    def __init__(self, budget: float, min_budget: float):
        self.budget = budget
        self.min_budget = min_budget
        super().__init__(
            f"budget {budget:g} is below the cheapest selection that covers every "
            f"task; the minimum feasible budget is {min_budget:g}"
        )


def network_label(tasks: Sequence[str], half: bool = False) -> str:
    """Default label: task names joined by '+', prefixed by 'half:' for half-size."""
    return (HALF_PREFIX if half else "") + "+".join(tasks)


@dataclass(frozen=True)
class Network:
    """A candidate network: the tasks it does, its cost and its loss per task.

    ``losses`` maps every task in ``tasks`` to a finite number (for TAG
    selections it holds the per-task scores, higher = better).  ``label``
    identifies the network across tables (default ``network_label(tasks)``).
    """

    tasks: tuple[str, ...]
    cost: float
    losses: Mapping[str, float] = field(hash=False)
    label: str = ""

    def __post_init__(self) -> None:
        tasks = tuple(self.tasks)
        label = self.label or network_label(tasks)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "label", label)
        if not tasks:
            raise SelectionError(f"network {label!r} does no task")
        if len(set(tasks)) != len(tasks):
            raise SelectionError(f"network {label!r} lists a task twice: {tasks}")
        cost = float(self.cost)
        if not (math.isfinite(cost) and cost > 0):
            raise SelectionError(f"network {label!r} has cost {self.cost!r}; costs must be finite and > 0")
        object.__setattr__(self, "cost", cost)
        if set(self.losses) != set(tasks):
            missing = [t for t in tasks if t not in self.losses]
            extra = [t for t in self.losses if t not in tasks]
            raise SelectionError(
                f"network {label!r}: losses must be given for exactly its tasks "
                f"(missing {missing}, extra {extra})"
            )
        losses = {}
        for t in tasks:
            value = float(self.losses[t])
            if not math.isfinite(value):
                raise SelectionError(f"network {label!r} has loss {value} for task {t!r}")
            losses[t] = value
        object.__setattr__(self, "losses", losses)


@dataclass(frozen=True)
class Selection:
    """The networks chosen for one budget.

    ``total``: sum over tasks of the best loss (TAG: mean best score).
    ``optimal``: proven optimal; otherwise ``gap`` is HiGHS's proven relative
    gap.  ``assignment`` maps each task to the label of the chosen network
    whose loss counts for it.
    """

    budget: float
    networks: tuple[Network, ...]
    total: float
    optimal: bool
    gap: float
    assignment: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def cost(self) -> float:
        return math.fsum(nw.cost for nw in self.networks)


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
        universe = _task_universe(candidates)
        for subset in subsets_by_size(universe):
            if len(subset) >= 3 and frozenset(subset) not in present:
                cost = higher_order_cost(subset) if callable(higher_order_cost) else higher_order_cost
                out.append(Network(subset, cost, predicted(subset)))
    return out


def _task_universe(networks: Iterable[Network]) -> tuple[str, ...]:
    """Tasks in order of first appearance."""
    return tuple(dict.fromkeys(t for nw in networks for t in nw.tasks))


# --------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------


def _best_per_task(networks: Sequence[Network], tasks: Sequence[str], better: Callable) -> list[float]:
    best = []
    for t in tasks:
        values = [nw.losses[t] for nw in networks if t in nw.losses]
        if not values:
            raise SelectionError(f"no chosen network does task {t!r}")
        best.append(better(values))
    return best


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
    tasks = _task_universe(networks) if tasks is None else tasks
    return math.fsum(_best_per_task(networks, tasks, min))


def split_budgets(budgets: Sequence[float], minimum: float) -> tuple[list[float], list[float]]:
    """(the feasible budgets, the infeasible ones: below `minimum`), each in the given order.

    Raises InfeasibleBudgetError (naming the minimum) when none is feasible."""
    slack = BUDGET_RTOL * max(1.0, abs(minimum))
    feasible = [b for b in budgets if b >= minimum - slack]
    infeasible = [b for b in budgets if not b >= minimum - slack]
    if budgets and not feasible:
        raise InfeasibleBudgetError(max(budgets), minimum)
    return feasible, infeasible


def minimum_budget(candidates: Iterable[Network], *, tasks: Sequence[str] | None = None) -> float:
    """Cost of the cheapest selection that covers every task (weighted set cover)."""
    inst = _Instance.build(list(candidates), tasks, sense=1.0)
    return _min_cover_cost(inst)


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
    inst = _Instance.build(candidates, tasks, sense=1.0)
    budget_list = _budget_list(budgets)
    results = []
    for budget, (chosen, optimal, gap) in zip(budget_list, _solve(inst, budget_list, time_limit, solver)):
        networks, assignment = _finish(inst, chosen)
        total = math.fsum(_best_per_task(networks, inst.tasks, min))
        results.append(Selection(budget, networks, total, optimal, gap, assignment))
    return results


def tag_candidates(
    affinity: Mapping[str, Mapping[str, float]] | tuple[Sequence[str], object],
    *,
    tasks: Sequence[str] | None = None,
    singleton_score: float = SINGLETON_SCORE,
) -> list[Network]:
    """Every non-empty group of tasks as a cost-1 Network whose ``losses`` are TAG scores."""
    names, matrix = affinity_matrix(affinity, tasks)
    if len(names) > TAG_MAX_TASKS:
        raise SelectionError(f"the TAG variant enumerates every group of the tasks (2^n - 1 of them); it takes at most "
                             f"{TAG_MAX_TASKS} tasks, got {len(names)}")
    index = {t: i for i, t in enumerate(names)}
    out = []
    for group in subsets_by_size(names):
        out.append(Network(group, 1.0, _group_scores(group, matrix, index, singleton_score)))
    return out


def select_groups_tag(
    affinity: Mapping[str, Mapping[str, float]] | tuple[Sequence[str], object],
    ks: int | Iterable[int],
    *,
    tasks: Sequence[str] | None = None,
    singleton_score: float = SINGLETON_SCORE,
    time_limit: float | None = None,
    solver: str = "auto",
) -> list[Selection]:
    """TAG's grouping: at most k groups maximising the mean best score, per k.

    ``affinity``: ``{task: {other: M[task][other]}}`` or ``(tasks, matrix)``
    with ``matrix[a][b]`` = score of task a when grouped with b (diagonal
    unused).  Returns one Selection per k with ``budget = k``, the groups as
    Networks (``losses`` = scores) and ``total`` = mean score over tasks.
    """
    groups = tag_candidates(affinity, tasks=tasks, singleton_score=singleton_score)
    k_list = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    for k in k_list:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise SelectionError(f"number of groups must be a positive integer, got {k!r}")
    return [dataclasses.replace(sel, budget=k)
            for k, sel in zip(k_list, select_groups(groups, [float(k) for k in k_list], time_limit=time_limit,
                                                    solver=solver))]


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
    inst = _Instance.build(list(candidates), tasks, sense=-1.0)
    budget_list = _budget_list(budgets)
    results = []
    for budget, (chosen, optimal, gap) in zip(budget_list, _solve(inst, budget_list, time_limit, solver)):
        networks, assignment = _finish(inst, chosen)
        total = math.fsum(_best_per_task(networks, inst.tasks, max)) / len(inst.tasks)
        results.append(Selection(budget, networks, total, optimal, gap, assignment))
    return results


def score_tag(
    groups: Iterable[Sequence[str] | Network],
    affinity: Mapping[str, Mapping[str, float]] | tuple[Sequence[str], object],
    *,
    singleton_score: float = SINGLETON_SCORE,
) -> float:
    """Mean over the grouped tasks of their best TAG score under ``affinity``."""
    group_list = [tuple(g.tasks) if isinstance(g, Network) else tuple(g) for g in groups]
    names, matrix = affinity_matrix(affinity, None)
    index = {t: i for i, t in enumerate(names)}
    for g in group_list:
        for t in g:
            if t not in index:
                raise SelectionError(f"task {t!r} is not in the affinity matrix")
    networks = [Network(g, 1.0, _group_scores(g, matrix, index, singleton_score)) for g in group_list]
    tasks = _task_universe(networks)
    return math.fsum(_best_per_task(networks, tasks, max)) / len(tasks)


def _group_scores(group: Sequence[str], matrix: np.ndarray, index: Mapping[str, int], singleton_score: float) -> dict[str, float]:
    if len(group) == 1:
        return {group[0]: float(singleton_score)}
    rows = [index[t] for t in group]
    return {t: math.fsum(matrix[index[t], u] for u in rows if u != index[t]) / (len(group) - 1) for t in group}


def affinity_matrix(affinity, tasks: Sequence[str] | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """Validated (task names, n×n float matrix) from ``{a: {b: M[a][b]}}`` or ``(tasks, matrix)``.

    Off-diagonal entries must be finite numbers; the diagonal is ignored.
    ``tasks`` restricts (and orders) the tasks.
    """
    if isinstance(affinity, Mapping):
        names = tuple(affinity)
        matrix = np.full((len(names), len(names)), np.nan)
        for i, a in enumerate(names):
            row = affinity[a]
            if not isinstance(row, Mapping):
                raise SelectionError(f"affinity row {a!r} is not a mapping")
            for j, b in enumerate(names):
                if i == j:
                    continue
                if b not in row:
                    raise SelectionError(f"affinity of {a!r} with {b!r} is missing")
                matrix[i, j] = _finite_entry(row[b], a, b)
    else:
        names, raw = affinity
        names = tuple(names)
        matrix = np.array(raw, dtype=float)
        if matrix.shape != (len(names), len(names)):
            raise SelectionError(f"affinity matrix has shape {matrix.shape}, expected {(len(names),) * 2}")
        for i, j in zip(*np.nonzero(~np.isfinite(matrix))):
            if i != j:
                _finite_entry(matrix[i, j], names[i], names[j])
    if len(set(names)) != len(names):
        raise SelectionError(f"affinity matrix names a task twice: {names}")
    if tasks is not None:
        unknown = [t for t in tasks if t not in names]
        if unknown:
            raise SelectionError(f"task {unknown[0]!r} is not in the affinity matrix")
        keep = [names.index(t) for t in tasks]
        names, matrix = tuple(tasks), matrix[np.ix_(keep, keep)]
    if not names:
        raise SelectionError("no tasks to group")
    return names, matrix


def _finite_entry(value, a: str, b: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SelectionError(f"affinity of {a!r} with {b!r} is not a number: {value!r}") from None
    if not math.isfinite(value):
        raise SelectionError(f"affinity of {a!r} with {b!r} is {value}")
    return value


# --------------------------------------------------------------------------
# Problem instance and shared steps
# --------------------------------------------------------------------------


def _budget_list(budgets) -> list[float]:
    values = [budgets] if isinstance(budgets, (int, float, np.number)) else list(budgets)
    out = []
    for b in values:
        try:
            b = float(b)
        except (TypeError, ValueError):
            raise SelectionError(f"budget {b!r} is not a number") from None
        if math.isnan(b):
            raise SelectionError("budget is NaN")
        out.append(b)
    return out


def _fits(cost, budget: float):
    """cost <= budget up to the documented float slack (works on arrays)."""
    return cost <= budget + BUDGET_RTOL * max(1.0, abs(budget))


@dataclass(frozen=True)
class _Instance:
    """Arrays for the solvers: task bitmasks, costs and (sense × loss) values."""

    tasks: tuple[str, ...]
    networks: tuple[Network, ...]
    masks: np.ndarray  # (N,) int64 bitmask of tasks
    costs: np.ndarray  # (N,) float
    values: np.ndarray  # (N, n) float; sense × loss, 0 where the network lacks the task
    ids: np.ndarray  # (N,) position of each network in the caller's candidate list

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def bits(self) -> np.ndarray:
        return _mask_bits(self.masks, self.n)

    @classmethod
    def build(cls, networks: list[Network], tasks: Sequence[str] | None, sense: float) -> _Instance:
        if not networks:
            raise SelectionError("no candidate networks")
        labels: set[str] = set()
        for nw in networks:
            if nw.label in labels:
                raise SelectionError(f"two candidate networks share the label {nw.label!r}")
            labels.add(nw.label)
        tasks = _task_universe(networks) if tasks is None else tuple(tasks)
        if not tasks:
            raise SelectionError("no tasks to cover")
        if len(set(tasks)) != len(tasks):
            raise SelectionError(f"a task is named twice: {tasks}")
        if len(tasks) > 62:
            raise SelectionError("at most 62 tasks are supported")
        index = {t: i for i, t in enumerate(tasks)}
        kept, masks, values, ids = [], [], [], []
        for position, nw in enumerate(networks):
            row = np.zeros(len(tasks))
            mask = 0
            for t in nw.tasks:
                if t in index:
                    mask |= 1 << index[t]
                    row[index[t]] = sense * nw.losses[t]
            if mask:
                kept.append(nw)
                masks.append(mask)
                values.append(row)
                ids.append(position)
        covered = np.bitwise_or.reduce(np.array(masks, dtype=np.int64)) if masks else 0
        for i, t in enumerate(tasks):
            if not (covered >> i) & 1:
                raise SelectionError(f"task {t!r} is not done by any candidate network")
        return cls(tasks, tuple(kept), np.array(masks, dtype=np.int64),
                   np.array([nw.cost for nw in kept]), np.array(values).reshape(len(kept), len(tasks)),
                   np.array(ids, dtype=np.int64))

    def subset(self, keep: np.ndarray) -> _Instance:
        return _Instance(self.tasks, tuple(self.networks[i] for i in keep), self.masks[keep], self.costs[keep],
                         self.values[keep], self.ids[keep])


def _mask_bits(masks: np.ndarray, n: int) -> np.ndarray:
    """(len(masks), n) boolean matrix of the bits of each mask."""
    return ((masks[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def _popcount(masks: np.ndarray) -> np.ndarray:
    """Number of set bits of each mask (np.bitwise_count needs numpy >= 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(masks).astype(np.int64)
    count = np.zeros(masks.shape, np.int64)
    for shift in range(int(masks.max(initial=0)).bit_length()):
        count += (masks >> shift) & 1
    return count


@lru_cache(maxsize=None)
def _subset_matrix(k: int) -> np.ndarray:
    """(2^k, k) 0/1 int64 matrix; row r = the bits of r (row 0 = empty set)."""
    r = np.arange(1 << k, dtype=np.int64)
    return (r[:, None] >> np.arange(k, dtype=np.int64)) & 1


#: Most (candidate, candidate) pairs `_prune` holds at once (with their loss rows: about 2 MiB per task).
PRUNE_CHUNK_PAIRS = 1 << 18


def _superset_pairs(masks: np.ndarray, bits: np.ndarray, n: int):
    """Yields (i, j) index arrays of candidate pairs with S(i) ⊆ S(j), i != j, in chunks of bounded size.

    Candidates with few tasks outside their set enumerate their supermasks (2^k each, k = tasks outside)
    and look them up; the others, whose supermasks outnumber the candidates, are compared with every
    candidate directly. Either way at most about `PRUNE_CHUNK_PAIRS` pairs are held at a time."""
    N = len(masks)
    order = np.argsort(masks, kind="stable")
    sorted_masks = masks[order]
    free = n - _popcount(masks)
    for k in np.unique(free):
        rows = np.flatnonzero(free == k)
        if (1 << int(k)) <= N:  # enumerate the supermasks of each row: 2^k per row
            step = max(1, PRUNE_CHUNK_PAIRS >> int(k))
            sub = _subset_matrix(int(k)).T
            for lo in range(0, len(rows), step):
                chunk = rows[lo:lo + step]
                comp = np.nonzero(~bits[chunk])[1].reshape(len(chunk), int(k))
                supers = (masks[chunk, None] | ((np.int64(1) << comp) @ sub)).ravel()
                first = np.searchsorted(sorted_masks, supers, "left")
                count = np.searchsorted(sorted_masks, supers, "right") - first
                i = np.repeat(np.repeat(chunk, 1 << int(k)), count)
                j = order[np.repeat(first, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)]
                keep = i != j
                yield i[keep], j[keep]
        else:  # compare with every candidate: N per row
            step = max(1, PRUNE_CHUNK_PAIRS // N)
            for lo in range(0, len(rows), step):
                chunk = rows[lo:lo + step]
                inside = (masks[None, :] & masks[chunk, None]) == masks[chunk, None]
                r, j = np.nonzero(inside)
                i = chunk[r]
                keep = i != j
                yield i[keep], j[keep]


def _prune(inst: _Instance, max_budget: float) -> np.ndarray:
    """Indices of the candidates that fit the largest budget and are not dominated."""
    n = inst.n
    alive = np.flatnonzero(_fits(inst.costs, max_budget))
    if len(alive) == 0:
        return alive
    masks, costs, values = inst.masks[alive], inst.costs[alive], inst.values[alive]
    bits = _mask_bits(masks, n)
    dominated = np.zeros(len(alive), bool)
    for i, j in _superset_pairs(masks, bits, n):
        keep = costs[j] <= costs[i]
        i, j = i[keep], j[keep]
        on_i = bits[i]
        vi, vj = values[i], values[j]
        keep = np.where(on_i, vj <= vi, True).all(axis=1)
        i, j, on_i, vi, vj = i[keep], j[keep], on_i[keep], vi[keep], vj[keep]
        strictly = (masks[j] != masks[i]) | (costs[j] < costs[i]) | np.where(on_i, vj < vi, False).any(axis=1)
        dominated[i[strictly | (j < i)]] = True
    return alive[~dominated]


def _solve(inst: _Instance, budgets: list[float], time_limit: float | None, solver: str):
    """(chosen candidate indices of ``inst``, optimal, gap) per budget; raises if infeasible."""
    if solver not in ("auto", "dp", "mip"):
        raise SelectionError(f"unknown solver {solver!r} (use 'auto', 'dp' or 'mip')")
    if not budgets:
        return []
    deadline = None if time_limit is None else time.monotonic() + time_limit
    cap = min(max(budgets), float(inst.costs.sum()))
    if solver == "auto":
        solver = _choose_solver(inst, cap, time_limit)
    elif solver == "dp" and not _dp_fits_memory(inst):
        raise SelectionError(
            f"the subset DP cannot hold a table of {inst.n} tasks and {len(inst.networks)} networks in memory "
            f"(it needs 2^tasks = {1 << inst.n} blocks and 2^|S| blocks per network, at most "
            f"{DP_MAX_BLOCKS} each); use solver='mip'")
    capped = [min(b, cap) for b in budgets]
    # The DP skips dominance pruning: its tie-break may prefer a dominated network.
    keep = np.flatnonzero(_fits(inst.costs, cap)) if solver == "dp" else _prune(inst, cap)
    small = inst.subset(keep)
    if not _covers(small, range(len(keep))):
        raw = [None] * len(budgets)  # some task has no network within the largest budget
    elif solver == "dp":
        raw = _solve_dp(small, capped, cap)
    else:
        raw = _solve_mip(small, capped, deadline)
    for budget, result in zip(budgets, raw):
        if result is None:
            raise InfeasibleBudgetError(budget, _min_cover_cost(inst))
    return [(tuple(int(keep[i]) for i in chosen), optimal, gap) for chosen, optimal, gap in raw]


def _choose_solver(inst: _Instance, cap: float, time_limit: float | None) -> str:
    """The measured rule behind ``solver="auto"`` (see the module docstring)."""
    n = inst.n
    if n <= DP_ALWAYS_TASKS:
        return "dp"
    if n > DP_MAX_TASKS or len(inst.networks) < (1 << n) // 8 or not _dp_fits_memory(inst):
        return "mip"
    if _cost_levels(inst.costs, cap, n) > DP_MAX_COST_LEVELS:
        return "mip"
    if time_limit is not None and DP_SECONDS_PER_SPLIT * 3**n > time_limit:
        return "mip"
    return "dp"


def _dp_fits_memory(inst: _Instance) -> bool:
    """Whether the subset DP's arrays stay bounded: 2^n entries per block table and Σ_N 2^|S(N)| serving
    blocks, each at most ``DP_MAX_BLOCKS`` (checked before anything of that size is allocated)."""
    if inst.n > DP_MAX_BLOCKS.bit_length() - 1:
        return False
    return int(np.sum(np.exp2(_popcount(inst.masks)))) <= DP_MAX_BLOCKS


def _cost_levels(costs: np.ndarray, cap: float, max_networks: int) -> int:
    """Number of distinct totals <= cap of up to ``max_networks`` costs (stops past DP_MAX_COST_LEVELS)."""
    levels = np.unique(costs[_fits(costs, cap)])
    sums = np.zeros(1)
    for _ in range(max_networks):
        if len(sums) > DP_MAX_COST_LEVELS or len(levels) > DP_MAX_COST_LEVELS:
            break
        more = (sums[:, None] + levels[None, :]).ravel()
        sums = np.unique(np.concatenate([sums, more[_fits(more, cap)]]).round(9))
    return max(len(sums), len(levels))


def _finish(inst: _Instance, chosen: Sequence[int]) -> tuple[tuple[Network, ...], dict[str, str]]:
    """Assign each task to its best chosen network; drop networks that serve no task."""
    chosen = sorted(chosen)
    assignment, used = {}, set()
    for t_index, t in enumerate(inst.tasks):
        doing = [i for i in chosen if (inst.masks[i] >> t_index) & 1]
        best = min(doing, key=lambda i: (inst.values[i, t_index], inst.costs[i], i))
        assignment[t] = inst.networks[best].label
        used.add(best)
    return tuple(inst.networks[i] for i in chosen if i in used), assignment


# --------------------------------------------------------------------------
# Exact subset dynamic programme
# --------------------------------------------------------------------------


def _value_ranks(value: np.ndarray, scale: float) -> np.ndarray:
    """Dense ranks of ``value``; values within 1e-12·(|v| + scale) of the next smaller one share its rank.

    Float sums of the same losses in different orders differ in the last
    bits; sharing ranks makes such sums ties, which the tie-break keys then
    resolve deterministically.
    """
    unique, inverse = np.unique(value, return_inverse=True)
    distinct = np.diff(unique) > TIE_RTOL * (np.abs(unique[1:]) + scale)
    return np.concatenate([[0], np.cumsum(distinct)])[inverse].astype(np.int64)


def _pareto(group: np.ndarray, cost: np.ndarray, value: np.ndarray, tie_keys: Sequence[np.ndarray], scale: float) -> np.ndarray:
    """Indices of each group's (cost, value) Pareto front, sorted by (group, cost).

    Within a group, points are ordered by cost, value rank, then ``tie_keys``
    (in priority order, then input order) and a point is kept iff its value
    rank is strictly below every earlier point's.
    """
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    rank = _value_ranks(value, scale)
    order = np.lexsort((*reversed(tie_keys), rank, cost, group))
    g, r = group[order], rank[order]
    starts = np.empty(len(g), bool)
    starts[0] = True
    starts[1:] = g[1:] != g[:-1]
    seg = np.cumsum(starts) - 1
    # Later groups get smaller keys, so a running minimum restarts at each group.
    key = (seg[-1] - seg) * (int(r.max()) + 1) + r
    running = np.minimum.accumulate(key)
    keep = np.empty(len(g), bool)
    keep[0] = True
    keep[1:] = key[1:] < running[:-1]
    return order[keep]


def _csr(group: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """start and length per group id for an array sorted by group."""
    length = np.bincount(group, minlength=size).astype(np.int64)
    start = np.cumsum(length) - length
    return start, length


def _tie_scale(inst: _Instance) -> float:
    """Typical magnitude of a loss, the absolute floor of the tie tolerance."""
    entries = np.abs(inst.values[inst.bits])
    return float(np.median(entries)) if len(entries) else 1.0


def _serving_fronts(inst: _Instance, scale: float):
    """Per block U: Pareto front of (cost, Σ_{t∈U} value) over the candidates doing U.

    Ties go to the smaller network, then the earlier candidate.
    """
    bits, sizes = inst.bits, _popcount(inst.masks)
    blocks, values, cands = [], [], []
    for k in np.unique(sizes):
        rows = np.flatnonzero(sizes == k)
        idx = np.nonzero(bits[rows])[1].reshape(len(rows), k)
        sub = _subset_matrix(int(k))[1:]
        blocks.append(((np.int64(1) << idx) @ sub.T).ravel())
        values.append((inst.values[rows[:, None], idx] @ sub.T.astype(float)).ravel())
        cands.append(np.repeat(rows, len(sub)))
    block, value, cand = (np.concatenate(a) for a in (blocks, values, cands))
    cost, size = inst.costs[cand], sizes[cand]
    keep = _pareto(block, cost, value, (size, inst.ids[cand]), scale)
    start, length = _csr(block[keep], 1 << inst.n)
    return start, length, cost[keep], value[keep], cand[keep], size[keep]


#: Upper bound on (block, split) pairs handled in one vectorised step of the DP.
DP_CHUNK_PAIRS = 1 << 18


def _layer_splits(n: int):
    """Blocks U of each size p, in chunks, with their splits U = first ∪ rest.

    ``first`` ranges over the subsets of U that hold U's lowest task, ``rest``
    is U minus ``first``; both are (len(chunk), 2^(p-1)) arrays.  Yields
    (blocks, first, rest) for p = 1..n, so every ``rest`` comes earlier.
    """
    all_masks = np.arange(1 << n, dtype=np.int64)
    popcount = _popcount(all_masks)
    for p in range(1, n + 1):
        layer = all_masks[popcount == p]
        step = max(1, DP_CHUNK_PAIRS >> (p - 1))
        for lo in range(0, len(layer), step):
            blocks = layer[lo:lo + step]
            pos = np.nonzero(_mask_bits(blocks, n))[1].reshape(len(blocks), p)
            low = np.int64(1) << pos[:, 0]
            sub = (np.int64(1) << pos[:, 1:]) @ _subset_matrix(p - 1).T
            yield blocks, low[:, None] | sub, (blocks - low)[:, None] - sub


def _cover_costs(n: int, g_start: np.ndarray, g_len: np.ndarray, g_cost: np.ndarray) -> np.ndarray:
    """cover[U] = cheapest cost of serving every task of U (a partition DP on minimum costs)."""
    single = np.where(g_len > 0, g_cost[np.minimum(g_start, len(g_cost) - 1)], np.inf)
    cover = np.zeros(1 << n)
    for blocks, first, rest in _layer_splits(n):
        cover[blocks] = (single[first] + cover[rest]).min(axis=1)
    return cover


class _Columns:
    """Growable named numpy columns (the DP's front points), concatenated lazily."""

    def __init__(self, **columns: np.ndarray):
        self._parts = {name: [col] for name, col in columns.items()}

    def __len__(self) -> int:
        return sum(len(part) for part in next(iter(self._parts.values())))

    def __getitem__(self, name: str) -> np.ndarray:
        parts = self._parts[name]
        if len(parts) > 1:
            parts[:] = [np.concatenate(parts)]
        return parts[0]

    def append(self, **columns: np.ndarray) -> None:
        for name, col in columns.items():
            self._parts[name].append(col)


def _solve_dp(inst: _Instance, budgets: list[float], cap: float):
    """Subset DP (see module docstring); (chosen, True, 0.0) or None per budget.

    Front points carry, besides cost and value, the tie-break sums: number
    of networks, number of task heads Σ|S(N)|, and Σ candidate index.  A
    point of block U is dropped when its cost plus the cheapest cover of the
    other tasks exceeds the largest budget.
    """
    n, size = inst.n, 1 << inst.n
    full = size - 1
    scale = _tie_scale(inst)
    g_start, g_len, g_cost, g_value, g_cand, g_size = _serving_fronts(inst, scale)
    cover = _cover_costs(n, g_start, g_len, g_cost)
    # All front points; point 0 is F(∅).  F(U) = points f_start[U] .. + f_len[U].
    f_start, f_len = np.zeros(size, np.int64), np.zeros(size, np.int64)
    f_len[0] = 1
    zero = np.zeros(1, np.int64)
    pts = _Columns(cost=np.zeros(1), value=np.zeros(1), count=zero, heads=zero, index=zero, cand=zero - 1, prev=zero - 1)
    for blocks, first, rest in _layer_splits(n):
        owner = np.repeat(blocks, first.shape[1])
        first, rest = first.ravel(), rest.ravel()
        m = g_len[first] * f_len[rest]  # number of (g point, F point) combinations per split
        nz = np.flatnonzero(m)
        if len(nz) == 0:
            continue
        first, rest, owner, m = first[nz], rest[nz], owner[nz], m[nz]
        b = f_len[rest]
        split = np.repeat(np.arange(len(m)), m)
        offset = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
        gi = g_start[first][split] + offset // b[split]
        fj = f_start[rest][split] + offset % b[split]
        owner = owner[split]
        cost = g_cost[gi] + pts["cost"][fj]
        ok = np.flatnonzero(_fits(cost + cover[full ^ owner], cap))
        gi, fj, cost, owner = gi[ok], fj[ok], cost[ok], owner[ok]
        value = g_value[gi] + pts["value"][fj]
        count = pts["count"][fj] + 1
        heads = pts["heads"][fj] + g_size[gi]
        index = pts["index"][fj] + inst.ids[g_cand[gi]]
        keep = _pareto(owner, cost, value, (count, heads, index), scale)
        start, length = _csr(owner[keep], size)
        f_start[blocks] = len(pts) + start[blocks]
        f_len[blocks] = length[blocks]
        pts.append(cost=cost[keep], value=value[keep], count=count[keep], heads=heads[keep],
                   index=index[keep], cand=g_cand[gi[keep]], prev=fj[keep])
    front = np.arange(f_start[full], f_start[full] + f_len[full])
    out = []
    for budget in budgets:
        fitting = front[_fits(pts["cost"][front], budget)]
        if len(fitting) == 0:
            out.append(None)
            continue
        point, chosen = fitting[-1], []  # the front's values fall as cost rises
        while point != 0:
            chosen.append(int(pts["cand"][point]))
            point = pts["prev"][point]
        out.append((tuple(sorted(chosen)), True, 0.0))
    return out


# --------------------------------------------------------------------------
# Mixed-integer programme (HiGHS)
# --------------------------------------------------------------------------


def _new_highs():
    """A silent HiGHS instance.

    ``highspy.Highs()`` prints a banner on stdout the first time it is made
    (from its callback setup), which would corrupt JSON output; the core
    class has no banner and no Python callback overhead.
    """
    import highspy

    core = getattr(getattr(highspy, "_core", None), "_Highs", None)
    if core is not None:
        h = core()
    else:  # pragma: no cover - other highspy layouts
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 1)
                h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


def _run_mip(col_cost, col_lower, col_upper, row_lower, row_upper, start, index, value, integer, options):
    """Pass a column-wise model to a new HiGHS instance; returns it (not yet run)."""
    import highspy

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(col_cost), len(row_lower)
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = col_cost, col_lower, col_upper
    lp.row_lower_, lp.row_upper_ = row_lower, row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = start, index, value
    lp.integrality_ = [highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in integer]
    h = _new_highs()
    for name, option in options.items():
        h.setOptionValue(name, option)
    h.passModel(lp)
    return h


def _min_cover_cost(inst: _Instance) -> float:
    """Cheapest cost of a set of candidates covering every task (exact: no time limit)."""
    return _min_cover(inst)[0]


def _greedy_cover(inst: _Instance) -> tuple[int, ...]:
    """A cover by the greedy rule (cheapest cost per newly covered task), the fallback of a stopped set-cover MIP."""
    full, done, chosen = (1 << inst.n) - 1, 0, []
    while done != full:
        new = _popcount(inst.masks & ~np.int64(done))
        i = int(np.argmin(np.where(new > 0, inst.costs / np.maximum(new, 1), np.inf)))
        chosen.append(i)
        done |= int(inst.masks[i])
    return tuple(sorted(chosen))


def _min_cover(inst: _Instance) -> tuple[float, tuple[int, ...]]:
    """Cheapest set of candidates covering every task (weighted set-cover MIP, HiGHS): (cost, indices).

    Only masks and costs matter, so candidates with a superset (or the same set) at no higher cost are
    dropped first (`_prune` on zero losses).  Exact and without a time limit: with many tasks and real
    costs it can take a while (27 tasks, 3,378 random networks: about 20 s), so the selection itself
    never waits for it."""
    import highspy

    keep = _prune(dataclasses.replace(inst, values=np.zeros_like(inst.values)), math.inf)
    n, N = inst.n, len(keep)
    bits = inst.bits[keep]
    start = np.concatenate([[0], np.cumsum(bits.sum(axis=1))])
    h = _run_mip(inst.costs[keep].astype(float), np.zeros(N), np.ones(N), np.ones(n), np.full(n, highspy.kHighsInf),
                 start, np.nonzero(bits)[1], np.ones(int(start[-1])), [True] * N,
                 {"mip_rel_gap": 0.0, "mip_abs_gap": 1e-12})
    h.run()
    chosen = tuple(int(keep[i]) for i in np.flatnonzero(np.array(h.getSolution().col_value) > 0.5))
    return math.fsum(inst.costs[list(chosen)]), chosen


def _solve_mip(inst: _Instance, budgets: list[float], deadline: float | None):
    """The assignment MIP per budget (module docstring), smallest budget first; (chosen, optimal, gap) or None
    (infeasible) per budget.  ``deadline`` (time.monotonic()) is shared out over the cover and the budgets."""
    import highspy

    n, N = inst.n, len(inst.networks)
    y_cand, y_task = np.nonzero(inst.bits)  # one y per (network, task), grouped by network
    P = len(y_cand)
    y_first = np.searchsorted(y_cand, np.arange(N + 1))
    # Columns: x_0..x_{N-1}, then y_0..y_{P-1}.  Rows: n cover rows, P links, 1 budget row.
    budget_row = n + P
    x_len = np.diff(y_first) + 1
    x_start = np.concatenate([[0], np.cumsum(x_len)])
    x_index = np.empty(int(x_start[-1]), np.int64)
    x_value = np.empty(int(x_start[-1]))
    link_pos = np.repeat(x_start[:-1], x_len - 1) + (np.arange(P) - np.repeat(y_first[:-1], x_len - 1))
    x_index[link_pos], x_value[link_pos] = n + np.arange(P), -1.0
    x_index[x_start[1:] - 1], x_value[x_start[1:] - 1] = budget_row, inst.costs
    y_index = np.stack([y_task, n + np.arange(P)], axis=1).ravel()
    start = np.concatenate([x_start, x_start[-1] + 2 * np.arange(1, P + 1)])
    inf = highspy.kHighsInf

    def model(budget_bound: float):
        # A fresh HiGHS instance per budget: re-running one instance after
        # changeRowBounds returned the previous (smaller) budget's optimum as
        # "optimal" for a larger budget (HiGHS 1.x; a hypothesis test found a
        # 4-task case, total 0.1 where 0.0 was feasible).
        return _run_mip(
            col_cost=np.concatenate([np.zeros(N), inst.values[y_cand, y_task]]),
            col_lower=np.zeros(N + P), col_upper=np.ones(N + P),
            row_lower=np.concatenate([np.ones(n), np.full(P, -inf), [-inf]]),
            row_upper=np.concatenate([np.ones(n), np.zeros(P), [budget_bound]]),
            start=start, index=np.concatenate([x_index, y_index]),
            value=np.concatenate([x_value, np.ones(2 * P)]),
            integer=[True] * N + [False] * P,
            options={"mip_rel_gap": MIP_REL_GAP, "mip_abs_gap": 1e-12,
                     "mip_feasibility_tolerance": 1e-10, "primal_feasibility_tolerance": 1e-10},
        )

    order = sorted(range(len(budgets)), key=lambda i: budgets[i])
    out: list = [None] * len(budgets)

    # No exact cheapest cover first: with many tasks and real costs that set-cover MIP can take far longer than
    # the selections (27 tasks, 3,378 networks: 20 s against ~1 s).  Each budget's MIP proves infeasibility
    # itself; the fallback for a stopped run is the previous budget's selection or a greedy cover.
    previous = _greedy_cover(inst)
    for rank, i in enumerate(order):
        budget = budgets[i]
        # Half the documented slack, so HiGHS's own tolerance (1e-10) cannot push a cost past it.
        h = model(budget + 0.5 * BUDGET_RTOL * max(1.0, abs(budget)))
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.0)
            h.setOptionValue("time_limit", max(left / (len(order) - rank), 1e-3))
        # No setSolution warm start: with HiGHS 1.16 a given start solution can come
        # back as the "optimal" answer when presolve settles the model.
        h.run()
        status = h.getModelStatus()
        solution = h.getSolution()
        if status == highspy.HighsModelStatus.kOptimal:
            chosen = tuple(int(j) for j in np.flatnonzero(np.array(solution.col_value[:N]) > 0.5))
            if not (_covers(inst, chosen) and _fits(math.fsum(inst.costs[list(chosen)]), budget)):
                raise RuntimeError(f"HiGHS returned an infeasible selection for budget {budget:g}")
            out[i] = (chosen, True, 0.0)
        elif status == highspy.HighsModelStatus.kInfeasible:
            continue  # no cover fits this budget
        else:  # stopped early: the better of HiGHS's incumbent and the fallback selection
            fallback = previous if _fits(math.fsum(inst.costs[list(previous)]), budget) else None
            options = [] if fallback is None else [fallback]
            if solution.value_valid:
                found = tuple(int(j) for j in np.flatnonzero(np.array(solution.col_value[:N]) > 0.5))
                if _fits(math.fsum(inst.costs[list(found)]), budget) and _covers(inst, found):
                    options.append(found)
            if not options:  # nothing found that fits: the exact cheapest cover (without a time limit)
                cover_cost, cover = _min_cover(inst)
                if not _fits(cover_cost, budget):
                    continue  # infeasible
                options.append(cover)
            chosen = min(options, key=lambda c: _selection_value(inst, c))
            value, bound = _selection_value(inst, chosen), h.getInfo().mip_dual_bound
            gap = max(0.0, value - bound) / max(abs(value), 1e-12) if math.isfinite(bound) else math.inf
            out[i] = (chosen, False, gap)
        previous = out[i][0]
    return out


def _covers(inst: _Instance, chosen: Sequence[int]) -> bool:
    return np.bitwise_or.reduce(inst.masks[list(chosen)], initial=0) == (1 << inst.n) - 1


def _selection_value(inst: _Instance, chosen: Sequence[int]) -> float:
    """Σ over tasks of the best (sense × loss) among the chosen networks."""
    values = np.where(inst.bits[list(chosen)], inst.values[list(chosen)], np.inf)
    return math.fsum(values.min(axis=0))

r"""Mixed-integer programme for network selection, solved by HiGHS (``solver="mip"``; problem: `grouping.selection`).

Binary ``x_N`` (network chosen), continuous ``y_{t,N} ∈ [0,1]`` (task t served by N)::

    min Σ L(t,N) y_{t,N}   s.t.  Σ_N y_{t,N} = 1  (∀t),
                                 y_{t,N} <= x_N  (∀t∈S(N)),
                                 Σ_N c(N) x_N <= B.

For fixed ``x`` the assignment is a trivially integral LP, so ``y`` need not be declared integer.
Solved to a relative gap of ``MIP_REL_GAP``; under a deadline (shared out over the budgets) the best
selection found is returned with ``optimal=False`` and its proven gap.  Infeasible budgets are found
by the MIP itself (the exact cheapest cover, a set-cover MIP, can take far longer than the selections
with many tasks and real costs, so it is computed only when needed); a stopped run falls back on the
previous budget's selection, a greedy cover, or the exact cheapest cover.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import numpy as np

from grouping.selection_instance import BUDGET_RTOL, Instance, covers, fits, popcount, prune, selection_value

#: Relative optimality gap at which the MIP solver stops.
MIP_REL_GAP = 1e-9


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


def min_cover_cost(inst: Instance) -> float:
    """Cheapest cost of a set of candidates covering every task (exact: no time limit)."""
    return min_cover(inst)[0]


def greedy_cover(inst: Instance) -> tuple[int, ...]:
    """A cover by the greedy rule (cheapest cost per newly covered task), the fallback of a stopped set-cover MIP."""
    full, done, chosen = (1 << inst.n) - 1, 0, []
    while done != full:
        new = popcount(inst.masks & ~np.int64(done))
        i = int(np.argmin(np.where(new > 0, inst.costs / np.maximum(new, 1), np.inf)))
        chosen.append(i)
        done |= int(inst.masks[i])
    return tuple(sorted(chosen))


def min_cover(inst: Instance) -> tuple[float, tuple[int, ...]]:
    """Cheapest set of candidates covering every task (weighted set-cover MIP, HiGHS): (cost, indices).

    Only masks and costs matter, so candidates with a superset (or the same set) at no higher cost are
    dropped first (`prune` on zero losses).  Exact and without a time limit: with many tasks and real
    costs it can take a while (27 tasks, 3,378 random networks: about 20 s), so the selection itself
    never waits for it."""
    import highspy

    keep = prune(dataclasses.replace(inst, values=np.zeros_like(inst.values)), math.inf)
    n, N = inst.n, len(keep)
    bits = inst.bits[keep]
    start = np.concatenate([[0], np.cumsum(bits.sum(axis=1))])
    h = _run_mip(inst.costs[keep].astype(float), np.zeros(N), np.ones(N), np.ones(n), np.full(n, highspy.kHighsInf),
                 start, np.nonzero(bits)[1], np.ones(int(start[-1])), [True] * N,
                 {"mip_rel_gap": 0.0, "mip_abs_gap": 1e-12})
    h.run()
    chosen = tuple(int(keep[i]) for i in np.flatnonzero(np.array(h.getSolution().col_value) > 0.5))
    return math.fsum(inst.costs[list(chosen)]), chosen


def solve_mip(inst: Instance, budgets: list[float], deadline: float | None):
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
    previous = greedy_cover(inst)
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
            if not (covers(inst, chosen) and fits(math.fsum(inst.costs[list(chosen)]), budget)):
                raise RuntimeError(f"HiGHS returned an infeasible selection for budget {budget:g}")
            out[i] = (chosen, True, 0.0)
        elif status == highspy.HighsModelStatus.kInfeasible:
            continue  # no cover fits this budget
        else:  # stopped early: the better of HiGHS's incumbent and the fallback selection
            fallback = previous if fits(math.fsum(inst.costs[list(previous)]), budget) else None
            options = [] if fallback is None else [fallback]
            if solution.value_valid:
                found = tuple(int(j) for j in np.flatnonzero(np.array(solution.col_value[:N]) > 0.5))
                if fits(math.fsum(inst.costs[list(found)]), budget) and covers(inst, found):
                    options.append(found)
            if not options:  # nothing found that fits: the exact cheapest cover (without a time limit)
                cover_cost, cover = min_cover(inst)
                if not fits(cover_cost, budget):
                    continue  # infeasible
                options.append(cover)
            chosen = min(options, key=lambda c: selection_value(inst, c))
            value, bound = selection_value(inst, chosen), h.getInfo().mip_dual_bound
            gap = max(0.0, value - bound) / max(abs(value), 1e-12) if math.isfinite(bound) else math.inf
            out[i] = (chosen, False, gap)
        previous = out[i][0]
    return out

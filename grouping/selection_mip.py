r"""Mixed-integer programme for network selection, solved by HiGHS (``solver="mip"``; problem: `grouping.selection`).

Binary ``x_N`` (network chosen), continuous ``y_{t,N} ∈ [0,1]`` (task t served by N)::

    min Σ L(t,N) y_{t,N}   s.t.  Σ_N y_{t,N} = 1  (∀t),
                                 y_{t,N} <= x_N  (∀t∈S(N)),
                                 Σ_N c(N) x_N <= B.

For fixed ``x`` the assignment is a trivially integral LP, so ``y`` need not be declared integer.
Solved to a relative gap of ``MIP_REL_GAP``; under a deadline (shared out over the budgets) the best
selection found is returned with ``optimal=False`` and its proven gap.  Infeasible budgets are found
by the MIP itself (the exact cheapest cover, a set-cover MIP, can take far longer than the selections
with many tasks and real costs, so it is computed only when needed).  Each budget's MIP is given a start
that fits (the previous budget's selection, a greedy cover or, under a deadline, the cheapest cover
found), which is also the answer of a run stopped before HiGHS finds better.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import numpy as np

from grouping.selection_instance import BUDGET_RTOL, Instance, SelectionError, covers, fits, popcount, prune, selection_value

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


@dataclasses.dataclass(frozen=True)
class Cover:
    """A set of candidates covering every task: its cost, indices, whether it is proven cheapest, and a
    lower bound on the cheapest cover's cost (equal to ``cost`` when proven)."""

    cost: float
    chosen: tuple[int, ...]
    optimal: bool
    lower_bound: float


def greedy_cover(inst: Instance) -> tuple[int, ...]:
    """A cover by the greedy rule (cheapest cost per newly covered task), the fallback of a stopped set-cover MIP."""
    full, done, chosen = (1 << inst.n) - 1, 0, []
    while done != full:
        new = popcount(inst.masks & ~np.int64(done))
        i = int(np.argmin(np.where(new > 0, inst.costs / np.maximum(new, 1), np.inf)))
        chosen.append(i)
        done |= int(inst.masks[i])
    return tuple(sorted(chosen))


def min_cover(inst: Instance, deadline: float | None = None) -> Cover:
    """Cheapest set of candidates covering every task (weighted set-cover MIP, HiGHS).

    Only masks and costs matter, so candidates with a superset (or the same set) at no higher cost are
    dropped first (`prune` on zero losses).  Exact when it finishes; with many tasks and real costs it can
    take a while (27 tasks, 3,378 random networks: about 20 s).  Stopped by ``deadline``
    (time.monotonic()), it returns the cheaper of HiGHS's best cover and the greedy cover, not proven, with
    the larger of HiGHS's bound and the costliest cheapest network of a single task as the lower bound."""
    import highspy

    keep = prune(dataclasses.replace(inst, values=np.zeros_like(inst.values)), math.inf)
    n, N = inst.n, len(keep)
    bits = inst.bits[keep]
    start = np.concatenate([[0], np.cumsum(bits.sum(axis=1))])
    h = _run_mip(inst.costs[keep].astype(float), np.zeros(N), np.ones(N), np.ones(n), np.full(n, highspy.kHighsInf),
                 start, np.nonzero(bits)[1], np.ones(int(start[-1])), [True] * N,
                 {"mip_rel_gap": 0.0, "mip_abs_gap": 1e-12})
    if deadline is not None:
        h.setOptionValue("time_limit", max(deadline - time.monotonic(), 1e-3))
    h.run()
    solution = h.getSolution()
    if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        chosen = tuple(int(keep[i]) for i in np.flatnonzero(np.array(solution.col_value) > 0.5))
        cost = math.fsum(inst.costs[list(chosen)])
        return Cover(cost, chosen, True, cost)
    options = [greedy_cover(inst)]
    if solution.value_valid:
        found = tuple(int(keep[i]) for i in np.flatnonzero(np.array(solution.col_value) > 0.5))
        if covers(inst, found):
            options.append(found)
    chosen = min(options, key=lambda c: math.fsum(inst.costs[list(c)]))
    single = float(np.where(inst.bits, inst.costs[:, None], np.inf).min(axis=0).max())
    bound = h.getInfo().mip_dual_bound
    return Cover(math.fsum(inst.costs[list(chosen)]), chosen, False, max(single, bound if math.isfinite(bound) else 0.0))


def per_task_bound(inst: Instance, budget: float) -> float:
    """A lower bound on any selection's value within ``budget``: each task at its best value among the
    networks that fit the budget on their own (-inf when some task has none)."""
    alone = inst.bits & fits(inst.costs, budget)[:, None]
    return math.fsum(np.where(alone, inst.values, np.inf).min(axis=0)) if alone.any(axis=0).all() else -math.inf


def solve_mip(inst: Instance, budgets: list[float], deadline: float | None):
    """The assignment MIP per budget (module docstring), smallest budget first; (chosen, optimal, gap) or None
    (infeasible) per budget.  ``deadline`` (time.monotonic()) is shared out over the budgets.

    Under a deadline, each budget's MIP starts from a selection that fits it (the previous budget's, the greedy
    cover or, when neither fits, the cheapest cover, which may prove the budget infeasible first), so that a
    stopped run always answers a real selection.  Its gap counts the larger of HiGHS's bound and `per_task_bound`."""
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

    def cost_of(chosen) -> float:
        return math.fsum(inst.costs[list(chosen)])

    order = sorted(range(len(budgets)), key=lambda i: budgets[i])
    out: list = [None] * len(budgets)
    # No exact cheapest cover first: with many tasks and real costs that set-cover MIP can take far longer than
    # the selections (27 tasks, 3,378 networks: 20 s against ~1 s); it runs only when no cheaper start fits.
    previous, cover = greedy_cover(inst), None
    for rank, i in enumerate(order):
        budget = budgets[i]
        share = None if deadline is None else time.monotonic() + max(deadline - time.monotonic(), 0.0) / (len(order) - rank)
        if not fits(cost_of(previous), budget) and share is not None:  # without a limit the MIP needs no start
            if cover is None:
                cover = min_cover(inst, None if share is None else time.monotonic() + 0.5 * (share - time.monotonic()))
            if not fits(cover.lower_bound, budget):
                continue  # proven infeasible: no cover fits this budget
            if fits(cover.cost, budget):
                previous = cover.chosen
        begin = previous if fits(cost_of(previous), budget) else None

        def run(start):
            # Half the documented slack, so HiGHS's own tolerance (1e-10) cannot push a cost past it.
            h = model(budget + 0.5 * BUDGET_RTOL * max(1.0, abs(budget)))
            if share is not None:
                h.setOptionValue("time_limit", max(share - time.monotonic(), 1e-3))
            if start is not None:
                _set_start(h, inst, start, y_cand, y_task)
            h.run()
            status, solution = h.getModelStatus(), h.getSolution()
            found = None
            if solution.value_valid:
                found = tuple(int(j) for j in np.flatnonzero(np.array(solution.col_value[:N]) > 0.5))
                if not (covers(inst, found) and fits(cost_of(found), budget)):
                    if status == highspy.HighsModelStatus.kOptimal:
                        raise RuntimeError(f"HiGHS returned an infeasible selection for budget {budget:g}")
                    found = None
            return h, status, found

        h, status, found = run(begin)
        if begin is not None and status == highspy.HighsModelStatus.kOptimal and found is not None:
            # HiGHS 1.16 can answer a start solution as "optimal" when presolve settles the model, with the
            # reduced model's optimum as its objective (a 4-task case: 0.1 returned, 0 reported and
            # reachable); a returned selection not worth the reported objective is solved again without it.
            objective = h.getInfo().objective_function_value
            if abs(selection_value(inst, found) - objective) > 1e-7 * max(1.0, abs(objective)):
                h, status, found = run(None)
        if status == highspy.HighsModelStatus.kOptimal and found is not None:
            out[i] = (found, True, 0.0)
        elif status == highspy.HighsModelStatus.kInfeasible and begin is None:
            continue  # no cover fits this budget
        else:  # stopped early: the better of HiGHS's incumbent and the start
            options = [c for c in (found, begin) if c is not None]
            if not options:
                known = "" if cover is None else (f": the cheapest cover found costs {cover.cost:g} and none costs "
                                                  f"less than {cover.lower_bound:g}")
                raise SelectionError(f"no selection within budget {budget:g} was found in the time limit, nor proven "
                                     f"not to exist{known}; give more time")
            chosen = min(options, key=lambda c: selection_value(inst, c))
            value = selection_value(inst, chosen)
            bound = max(h.getInfo().mip_dual_bound, per_task_bound(inst, budget))
            gap = max(0.0, value - bound) / max(abs(value), 1e-12) if math.isfinite(bound) else math.inf
            out[i] = (chosen, gap <= MIP_REL_GAP, 0.0 if gap <= MIP_REL_GAP else gap)
        previous = out[i][0]
    return out


def _set_start(h, inst: Instance, chosen, y_cand: np.ndarray, y_task: np.ndarray) -> None:
    """Give HiGHS a feasible start: x = the chosen networks, each task's y on its best chosen network."""
    import highspy

    x = np.zeros(len(inst.networks))
    x[list(chosen)] = 1.0
    values = np.where(inst.bits & (x[:, None] > 0), inst.values, np.inf)
    best = values.argmin(axis=0)  # per task, the chosen network serving it
    y = (y_cand == best[y_task]).astype(float)
    solution = highspy.HighsSolution()
    solution.col_value = np.concatenate([x, y]).tolist()
    h.setSolution(solution)

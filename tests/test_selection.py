"""Tests of grouping.selection: exact solvers against brute force, HOA, TAG, errors, published curves."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grouping import selection_dp
from grouping.selection import (
    BUDGET_RTOL,
    CoverNotProvenError,
    InfeasibleBudgetError,
    Network,
    SelectionError,
    hoa_candidates,
    minimum_budget,
    score,
    select_networks,
    standley_candidates,
    subsets_by_size,
)
from grouping.selection_tag import score_tag, select_groups_tag, tag_candidates

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # the papers' released tables
SOLVERS = ("dp", "mip")


# --------------------------------------------------------------------------
# Brute force: every subset of the candidates
# --------------------------------------------------------------------------


def fits(cost: float, budget: float) -> bool:
    return cost <= budget + BUDGET_RTOL * max(1.0, abs(budget))


def objective(networks, tasks) -> float:
    return math.fsum(min(nw.losses[t] for nw in networks if t in nw.losses) for t in tasks)


def covers(networks, tasks) -> bool:
    done = {t for nw in networks for t in nw.tasks}
    return all(t in done for t in tasks)


def brute_force(candidates, tasks, budget):
    """(best value or None, min cover cost, [(value, cost, count, heads, index sum, combo)] feasible)."""
    feasible, min_cover = [], math.inf
    for r in range(1, len(candidates) + 1):
        for combo in itertools.combinations(range(len(candidates)), r):
            nets = [candidates[i] for i in combo]
            if not covers(nets, tasks):
                continue
            cost = math.fsum(nw.cost for nw in nets)
            min_cover = min(min_cover, cost)
            if fits(cost, budget):
                heads = sum(len(nw.tasks) for nw in nets)
                feasible.append((objective(nets, tasks), cost, r, heads, sum(combo), combo))
    best = min((f[0] for f in feasible), default=None)
    return best, min_cover, feasible


def assert_valid(selection, candidates, tasks, budget):
    assert covers(selection.networks, tasks)
    assert fits(selection.cost, budget)
    assert all(any(nw is c for c in candidates) for nw in selection.networks)
    assert selection.total == pytest.approx(objective(selection.networks, tasks), rel=1e-12, abs=1e-12)
    for t, label in selection.assignment.items():
        best = min(nw.losses[t] for nw in selection.networks if t in nw.losses)
        assert next(nw for nw in selection.networks if nw.label == label).losses[t] == best


# --------------------------------------------------------------------------
# Random small instances
# --------------------------------------------------------------------------

TIED_LOSSES = st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 1.0])
LOSSES = TIED_LOSSES | st.floats(0, 2, allow_nan=False, allow_infinity=False)
GRID_COSTS = st.sampled_from([0.5, 1.0, 1.5, 2.0])
COSTS = GRID_COSTS | st.floats(0.05, 3, allow_nan=False, allow_infinity=False)


@st.composite
def instances(draw, losses=LOSSES, costs=COSTS, max_candidates=8):
    n = draw(st.integers(2, 4))
    tasks = [f"t{i}" for i in range(n)]
    subsets = subsets_by_size(tasks)
    picks = draw(st.lists(st.integers(0, len(subsets) - 1), min_size=1, max_size=max_candidates))
    task_sets = [subsets[p] for p in picks]
    if draw(st.booleans()):  # usually make sure every task is done
        done = {t for s in task_sets for t in s}
        task_sets += [(t,) for t in tasks if t not in done]
    candidates = [Network(s, draw(costs), {t: draw(losses) for t in s}, f"c{j}") for j, s in enumerate(task_sets)]
    budgets = draw(st.lists(
        st.floats(0, 7, allow_nan=False)
        | st.lists(st.sampled_from(range(len(candidates))), min_size=1, unique=True).map(
            lambda idx: math.fsum(candidates[i].cost for i in idx)),
        min_size=1, max_size=3))
    return tasks, candidates, budgets


@pytest.mark.parametrize("solver", SOLVERS)
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=instances())
def test_matches_brute_force(solver, instance):
    check_against_brute_force(solver, instance)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=instances())
@example(instance=(["t0", "t1", "t2", "t3"],  # all losses 0 but one: the bound's terms cancel only up to rounding
                   [Network(("t0", "t1"), 0.5, {"t0": 0.0, "t1": 0.0}, "c0"),
                    Network(("t0", "t2"), 1.0, {"t0": 0.0, "t2": 0.0}, "c1"),
                    Network(("t0", "t3"), 1.5, {"t0": 0.0, "t3": 0.0}, "c2"),
                    Network(("t0", "t1", "t2"), 0.5, {"t0": 0.0, "t1": 0.0, "t2": 0.1}, "c3")],
                   [3.0]))
def test_bounded_dp_matches_brute_force(instance):
    """The DP's per-budget passes pruned by Lagrangian bounds (what many distinct costs get), forced here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection_dp, "DP_MAX_COST_LEVELS", 0)
        check_against_brute_force("dp", instance)


def check_against_brute_force(solver, instance):
    tasks, candidates, budgets = instance
    uncovered = [t for t in tasks if not any(t in c.tasks for c in candidates)]
    if uncovered:
        with pytest.raises(SelectionError, match=repr(uncovered[0])):
            select_networks(candidates, budgets, tasks=tasks, solver=solver)
        return
    outcomes = [brute_force(candidates, tasks, b) for b in budgets]
    infeasible = [b for b, (best, _, _) in zip(budgets, outcomes) if best is None]
    if infeasible:
        with pytest.raises(InfeasibleBudgetError) as err:
            select_networks(candidates, budgets, tasks=tasks, solver=solver)
        assert err.value.min_budget == pytest.approx(outcomes[0][1], rel=1e-9)
        assert f"{err.value.min_budget:g}" in str(err.value)
        return
    selections = select_networks(candidates, budgets, tasks=tasks, solver=solver)
    assert [s.budget for s in selections] == budgets
    for sel, budget, (best, _, _) in zip(selections, budgets, outcomes):
        assert_valid(sel, candidates, tasks, budget)
        assert sel.optimal and sel.gap == 0.0
        assert sel.total == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_larger_budget_is_solved_afresh(solver):
    """Found by test_matches_brute_force: at budget 2 the optimum (total 0) needs
    c1 + c2 + c3 (cost exactly 2); a MIP re-run after budget 1 (optimum 0.1:
    c1 + c3) once returned 0.1 again."""
    cands = [Network(("t0", "t1", "t3"), 1.5, {"t0": 0.0, "t1": 0.0, "t3": 0.0}, "c0"),
             Network(("t1", "t2", "t3"), 0.5, {"t1": 0.0, "t2": 0.1, "t3": 1.0}, "c1"),
             Network(("t0", "t2"), 1.0, {"t0": 0.0, "t2": 0.0}, "c2"),
             Network(("t0", "t3"), 0.5, {"t0": 0.0, "t3": 0.0}, "c3")]
    one, two = select_networks(cands, [1.0, 2.0], tasks=["t0", "t1", "t2", "t3"], solver=solver)
    assert one.total == pytest.approx(0.1) and two.total == 0.0


@pytest.mark.parametrize("bounded", [False, True])
@settings(max_examples=150, deadline=None, database=None)
@given(instance=instances(losses=TIED_LOSSES, costs=GRID_COSTS))
def test_dp_tie_break(bounded, instance):
    """The DP returns the documented tie-break: value, then cost, networks, task heads, Σ candidate position;
    so do its per-budget passes pruned by Lagrangian bounds (forced with ``bounded``)."""
    with pytest.MonkeyPatch.context() as patch:
        if bounded:
            patch.setattr(selection_dp, "DP_MAX_COST_LEVELS", 0)
        check_tie_break(instance)


def check_tie_break(instance):
    tasks, candidates, budgets = instance
    if not covers(candidates, tasks):
        return
    for budget in budgets:
        best, _, feasible = brute_force(candidates, tasks, budget)
        if best is None:
            continue
        ties = [f for f in feasible if round(f[0], 9) == round(best, 9)]
        expected = min(ties, key=lambda f: f[1:5])
        sel = select_networks(candidates, budget, tasks=tasks, solver="dp")[0]
        got = tuple(sorted(candidates.index(nw) for nw in sel.networks))
        assert got == expected[5]


def test_minimum_budget_and_infeasible_message():
    cands = [Network(("a",), 0.75, {"a": 1.0}), Network(("b",), 0.5, {"b": 1.0}), Network(("a", "b"), 2.0, {"a": 0, "b": 0})]
    assert minimum_budget(cands) == 1.25
    with pytest.raises(InfeasibleBudgetError, match="minimum feasible budget is 1.25") as err:
        select_networks(cands, [3, 1.2])
    assert err.value.budget == 1.2 and isinstance(err.value, ValueError)


def test_float_cost_sums_fit_their_budget():
    cands = [Network(("a",), 0.1, {"a": 1.0}), Network(("b",), 0.2, {"b": 1.0})]
    for solver in SOLVERS:
        assert select_networks(cands, 0.3, solver=solver)[0].total == 2.0  # 0.1 + 0.2 > 0.3 in floats


def test_input_errors():
    with pytest.raises(SelectionError, match="'c'.*not done by any"):
        select_networks([Network(("a", "b"), 1, {"a": 1, "b": 1})], 1, tasks=["a", "b", "c"])
    with pytest.raises(SelectionError, match="'a\\+b'.*negative.*'b'"):
        select_networks([Network(("a", "b"), 1, {"a": 1, "b": -0.5})], 1)
    with pytest.raises(SelectionError, match="'a\\+b'.*nan.*'a'"):
        Network(("a", "b"), 1, {"a": float("nan"), "b": 1})
    with pytest.raises(SelectionError, match="cost"):
        Network(("a",), 0, {"a": 1})
    with pytest.raises(SelectionError, match="exactly its tasks"):
        Network(("a",), 1, {"a": 1, "b": 2})
    with pytest.raises(SelectionError, match="share the label"):
        select_networks([Network(("a",), 1, {"a": 1}), Network(("a",), 1, {"a": 2})], 1)
    with pytest.raises(SelectionError, match="unknown solver"):
        select_networks([Network(("a",), 1, {"a": 1})], 1, solver="magic")
    with pytest.raises(SelectionError, match="budget"):
        select_networks([Network(("a",), 1, {"a": 1})], [float("nan")])


def test_default_candidates_and_all_budgets_at_once():
    rng = np.random.default_rng(3)
    tasks = ["a", "b", "c", "d"]
    cands = standley_candidates(tasks, lambda t, s, half: float(rng.uniform(0.1, 1)))
    assert [nw.label for nw in cands[:5]] == ["half:a", "half:b", "half:c", "half:d", "a"]
    assert len(cands) == 4 + 15 and cands[-1].tasks == tuple(tasks)
    budgets = [1, 1.5, 2, 2.5, 3, 3.5, 4]
    curves = {solver: [s.total for s in select_networks(cands, budgets, solver=solver)] for solver in SOLVERS}
    assert curves["dp"] == pytest.approx(curves["mip"], rel=1e-9)
    assert all(a >= b for a, b in zip(curves["dp"], curves["dp"][1:]))  # more budget never hurts


def test_time_limit_returns_best_found_with_gap():
    rng = np.random.default_rng(0)
    tasks = [f"t{i}" for i in range(10)]
    cands = standley_candidates(tasks, lambda t, s, half: float(rng.uniform(0.1, 1)))
    cands = [Network(nw.tasks, nw.cost * rng.uniform(0.8, 1.2), nw.losses, nw.label) for nw in cands]
    sel = select_networks(cands, 5, solver="mip", time_limit=0.5)[0]
    assert_valid(sel, cands, tasks, 5)
    assert sel.optimal or 0 < sel.gap < 1  # a real selection and a real bound: every loss is positive


# --------------------------------------------------------------------------
# HOA, scoring
# --------------------------------------------------------------------------


def test_hoa_by_hand():
    cands = [
        Network(("a",), 0.5, {"a": 9.0}, "half:a"),
        Network(("a",), 1, {"a": 8.0}),
        Network(("a", "b"), 1, {"a": 1.0, "b": 2.0}),
        Network(("a", "c"), 1, {"a": 3.0, "c": 4.0}),
        Network(("b", "c"), 1, {"b": 5.0, "c": 6.0}),
        Network(("a", "b", "c"), 1.25, {"a": 0.0, "b": 0.0, "c": 0.0}),
    ]
    hoa = hoa_candidates(cands)
    assert hoa[:5] == cands[:5]
    triple = hoa[5]
    assert (triple.tasks, triple.cost, triple.label) == (("a", "b", "c"), 1.25, "a+b+c")
    assert triple.losses == {"a": 2.0, "b": 3.5, "c": 5.0}
    generated = hoa_candidates(cands[:5], higher_order_cost=1.0)
    assert generated[5].losses == triple.losses and generated[5].cost == 1.0
    with pytest.raises(SelectionError, match="pair network 'b\\+c'"):
        hoa_candidates(cands[:4] + cands[5:])


def test_score_on_another_table():
    val = [Network(("a",), 1, {"a": 1.0}), Network(("b",), 1, {"b": 2.0}), Network(("a", "b"), 1, {"a": 3, "b": 3})]
    test = [Network(("a",), 1, {"a": 1.5}), Network(("b",), 1, {"b": 2.5}), Network(("a", "b"), 1, {"a": 0.5, "b": 9})]
    sel = select_networks(val, 2)[0]
    assert [nw.label for nw in sel.networks] == ["a", "b"] and sel.total == 3.0
    assert score(sel.networks, test) == 4.0
    assert score(val, test) == 0.5 + 2.5
    with pytest.raises(SelectionError, match="not in the scoring table"):
        score(val, test[:2])


# --------------------------------------------------------------------------
# TAG variant
# --------------------------------------------------------------------------


def tag_brute_force(names, matrix, k):
    groups = tag_candidates((names, matrix))
    best = -math.inf
    for r in range(1, k + 1):
        for combo in itertools.combinations(groups, r):
            if covers(combo, names):
                best = max(best, math.fsum(max(g.losses[t] for g in combo if t in g.losses) for t in names) / len(names))
    return best


@settings(max_examples=60, deadline=None, database=None)
@given(n=st.integers(1, 4), data=st.data())
def test_tag_matches_brute_force(n, data):
    names = [f"x{i}" for i in range(n)]
    values = st.sampled_from([-1.0, 0.0, 0.5, 1.0]) | st.floats(-2, 2, allow_nan=False)
    matrix = np.array([[data.draw(values) for _ in names] for _ in names])
    ks = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    for solver in SOLVERS:
        for k, sel in zip(ks, select_groups_tag((names, matrix), ks, solver=solver)):
            assert sel.budget == k and len(sel.networks) <= k and covers(sel.networks, names)
            assert sel.total == pytest.approx(tag_brute_force(names, matrix, k), rel=1e-9, abs=1e-9)
            assert sel.total == pytest.approx(score_tag(sel.networks, (names, matrix)), rel=1e-12, abs=1e-12)


def test_tag_scores_and_errors():
    aff = {"a": {"b": 1.0, "c": 3.0}, "b": {"a": 2.0, "c": 0.0}, "c": {"a": -1.0, "b": 5.0}}
    groups = {nw.label: nw.losses for nw in tag_candidates(aff)}
    assert groups["a+b+c"] == {"a": 2.0, "b": 1.0, "c": 2.0}
    assert groups["a"] == {"a": -1e6}
    two, three = select_groups_tag(aff, [2, 3])
    assert two.total == pytest.approx(8 / 3)  # e.g. {a,c} and {b,c}: a 3, b 0, c 5
    assert three.total == pytest.approx(10 / 3)  # {a,c}, {a,b}, {b,c}: a 3, b 2, c 5
    assert {nw.label for nw in three.networks} == {"a+b", "a+c", "b+c"}
    assert score_tag([("a", "b", "c")], aff) == pytest.approx(5 / 3)
    with pytest.raises(SelectionError, match="'a' with 'c' is missing"):
        select_groups_tag({"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1, "b": 1}}, 2)
    with pytest.raises(SelectionError, match="positive integer"):
        select_groups_tag(aff, 0)


# --------------------------------------------------------------------------
# Published results
# --------------------------------------------------------------------------


def fixture(*parts: str) -> Path:
    path = FIXTURES.joinpath(*parts)
    assert path.exists(), f"{path} is missing: the papers' tables ship in the repository (fixtures/)"
    return path


@pytest.mark.parametrize("setting", ["setting1", "setting2"])
def test_standley_published_curves(setting):
    from grouping.tables import read_standley_table

    folder = fixture("standley2020")
    spec = json.loads((folder / "expected_curves.json").read_text())
    budgets, expected = spec["budgets"], spec["settings"][setting]
    val = read_standley_table(folder / expected["selection_table"]).networks
    test = read_standley_table(folder / expected["test_table"]).networks
    esa = read_standley_table(folder / expected["esa_table"]).networks
    for method, table in (("optimal", val), ("hoa", hoa_candidates(val)), ("esa", esa)):
        curve = [score(s.networks, test) for s in select_networks(table, budgets)]
        assert curve == pytest.approx(expected[method], abs=1e-5), method
    # The MIP reaches the same selection totals (ties may pick other networks).
    for table in (val, hoa_candidates(val), esa):
        dp = [s.total for s in select_networks(table, budgets, solver="dp")]
        assert [s.total for s in select_networks(table, budgets, solver="mip")] == pytest.approx(dp, rel=1e-9)


def test_tag_published_groupings():
    from grouping.tables import read_affinity

    path = fixture("tag2021", "affinities.json")
    expected = json.loads(path.read_text())["tag_selection"]["expected"]
    for name, spec in expected.items():
        dataset, _, k = name.split("_")
        sel = select_groups_tag(read_affinity(f"{path}#{dataset}/tag"), int(k[1:]))[0]
        assert sel.total == pytest.approx(spec["value"], abs=1e-6)
        assert {frozenset(nw.tasks) for nw in sel.networks} == {frozenset(g) for g in spec["groups"]}



def test_dominance_pruning_bounds_its_memory(monkeypatch):
    """A pair network among 27 tasks has 2^25 supersets: pruning compares it with the candidates directly
    instead of enumerating them, and holds a bounded number of pairs at a time (tiny chunks here)."""
    from grouping import selection_instance as S

    tasks = [f"t{i}" for i in range(27)]
    rng = np.random.default_rng(1)
    candidates = [Network((t,), 1.0, {t: 1.0}) for t in tasks]
    candidates += [Network(tuple(p), 1.2, {t: float(rng.uniform(0.5, 1.5)) for t in p})
                   for p in itertools.combinations(tasks[:8], 2)]
    candidates += [Network(tuple(tasks), 3.0, {t: 0.9 for t in tasks}),
                   Network(tuple(tasks[:3]), 1.5, {t: 2.0 for t in tasks[:3]})]  # dominated by nothing cheaper
    inst = S.Instance.build(candidates, tasks, sense=1.0)
    monkeypatch.setattr(S, "PRUNE_CHUNK_PAIRS", 64)
    kept = set(S.prune(inst, 40.0).tolist())
    # By hand: N is dominated by M when S(N) ⊆ S(M), c(M) <= c(N), no loss of M above N's and one strictly better.
    expected = set()
    for a, n in enumerate(candidates):
        if not any(set(n.tasks) <= set(m.tasks) and m.cost <= n.cost and all(m.losses[t] <= n.losses[t] for t in n.tasks)
                   and (set(m.tasks) != set(n.tasks) or m.cost < n.cost or any(m.losses[t] < n.losses[t] for t in n.tasks)
                        or b < a)
                   for b, m in enumerate(candidates) if b != a):
            expected.add(a)
    assert kept == expected


# --------------------------------------------------------------------------
# Many tasks: a released-style table (27 tasks, ~3,000 measured networks)
# --------------------------------------------------------------------------


def many_task_instance(seed: int = 0, n: int = 27, sampled: int = 3000):
    """27 tasks: every single and pair, plus `sampled` random networks of 2-20 tasks; random losses and costs
    (a network of k tasks costs about 1 + 0.3 (k - 1), losses vary ±20 % around each task's own level)."""
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n)]
    level = rng.uniform(0.2, 1.0, n)
    sets = {frozenset([t]) for t in tasks} | {frozenset(p) for p in itertools.combinations(tasks, 2)}
    while len(sets) < n + n * (n - 1) // 2 + sampled:
        k = int(rng.integers(2, 21))
        sets.add(frozenset(rng.choice(tasks, k, replace=False).tolist()))
    candidates = []
    for s in sorted(sets, key=lambda s: (len(s), sorted(s))):
        members = tuple(sorted(s, key=tasks.index))
        cost = float((1 + 0.3 * (len(s) - 1)) * rng.uniform(0.8, 1.25))
        candidates.append(Network(members, cost, {t: float(level[tasks.index(t)] * rng.uniform(0.8, 1.2))
                                                  for t in members}))
    return tasks, candidates


def assignment_milp(candidates, tasks, budget=None):
    """The plain assignment MIP, with scipy's HiGHS interface: binary x_n (network chosen), y_{t,n} (task t
    served by n) with Σ_n y_{t,n} = 1, y_{t,n} <= x_n, Σ c_n x_n <= budget, minimising Σ L(t,n) y_{t,n}.
    Without a budget: the cheapest cover (minimise Σ c_n x_n subject to the same rows).
    Returns (objective, chosen network indices)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    pairs = [(j, tasks.index(t)) for j, nw in enumerate(candidates) for t in nw.tasks]
    N, P, n = len(candidates), len(pairs), len(tasks)
    y = np.arange(P)
    serve = coo_matrix((np.ones(P), ([t for _, t in pairs], N + y)), shape=(n, N + P))
    link = coo_matrix((np.r_[np.ones(P), -np.ones(P)], (np.r_[y, y], np.r_[N + y, [j for j, _ in pairs]])),
                      shape=(P, N + P))
    costs = np.array([nw.cost for nw in candidates])
    rows = [LinearConstraint(serve, 1, 1), LinearConstraint(link, -np.inf, 0)]
    if budget is None:
        objective = np.r_[costs, np.zeros(P)]
    else:
        objective = np.r_[np.zeros(N), [candidates[j].losses[tasks[t]] for j, t in pairs]]
        rows.append(LinearConstraint(coo_matrix(np.r_[costs, np.zeros(P)][None, :]), -np.inf,
                                     budget + 0.5 * BUDGET_RTOL * max(1.0, budget)))
    result = milp(objective, constraints=rows, integrality=np.r_[np.ones(N), np.zeros(P)], bounds=Bounds(0, 1),
                  options={"mip_rel_gap": 1e-9})
    assert result.status == 0, result.message
    return result.fun, [j for j in range(N) if result.x[j] > 0.5]


def test_many_tasks_against_an_independent_mip():
    """27 tasks and 3,378 networks (the size of released clinical tables), budget 25 (the cheapest cover of
    this instance costs about 8.6): exact, with the same optimum as the assignment MIP written above (scipy)."""
    tasks, candidates = many_task_instance()
    assert len(candidates) == 27 + 351 + 3000
    (sel,) = select_networks(candidates, 25.0, tasks=tasks, time_limit=120)
    best, _ = assignment_milp(candidates, tasks, 25.0)
    assert_valid(sel, candidates, tasks, 25.0)
    assert sel.optimal and sel.gap == 0.0
    assert sel.total == pytest.approx(best, rel=1e-7)


def test_many_tasks_under_a_time_limit():
    """A tight budget (12, about 1.4 times the cheapest cover) is far harder: stopped by the time limit, the
    answer is still a valid selection within the budget, with an honest gap."""
    tasks, candidates = many_task_instance()
    start = time.monotonic()
    (sel,) = select_networks(candidates, 12.0, tasks=tasks, time_limit=1.0)
    assert time.monotonic() - start < 10  # the limit plus building and pruning the table
    assert_valid(sel, candidates, tasks, 12.0)
    assert sel.optimal or 0 < sel.gap < 1  # the MIP starts from a selection that fits: never "nothing found"


def test_minimum_budget_under_a_time_limit():
    """The cheapest cover of the 27-task table takes HiGHS about 20 s: stopped after 0.05 s it says so, with a
    real cover and a bound around it; a small table is proven well within the same limit."""
    tasks, candidates = many_task_instance()
    with pytest.raises(CoverNotProvenError, match="not proven within 0.05 s") as err:
        minimum_budget(candidates, tasks=tasks, time_limit=0.05)
    assert 0 < err.value.lower_bound <= err.value.best
    assert err.value.lower_bound >= max(min(nw.cost for nw in candidates if t in nw.tasks) for t in tasks) - 1e-12
    cands = [Network(("a",), 0.75, {"a": 1.0}), Network(("b",), 0.5, {"b": 1.0}), Network(("a", "b"), 2.0, {"a": 0, "b": 0})]
    assert minimum_budget(cands, time_limit=5.0) == 1.25
    with pytest.raises(SelectionError, match="time_limit must be a positive number"):
        minimum_budget(cands, time_limit=0)


def measured_cost_instance(n: int = 7, seed: int = 0):
    """Every subset of n tasks as a network costing an encoder (1) plus one decoder per task (0.2-0.4, as
    measured FLOPs are), and half-size singles (0.5-0.7): many distinct costs."""
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n)]
    decoder, half = rng.uniform(0.2, 0.4, n), rng.uniform(0.5, 0.7, n)
    level = rng.uniform(0.2, 1.0, n)
    candidates = [Network((t,), half[i], {t: level[i] * rng.uniform(1.0, 1.3)}, f"half:{t}") for i, t in enumerate(tasks)]
    for subset in subsets_by_size(tasks):
        idx = [tasks.index(t) for t in subset]
        candidates.append(Network(subset, 1.0 + decoder[idx].sum(), {t: level[i] * rng.uniform(0.8, 1.2)
                                                                      for t, i in zip(subset, idx)}))
    return tasks, candidates


def test_measured_costs_solved_exactly_against_an_independent_mip():
    """Many distinct costs send the DP to its per-budget passes with Lagrangian bounds; each answer equals
    the assignment MIP written above (scipy), at a tight, a middling and a loose budget."""
    from grouping.selection_dp import DP_MAX_COST_LEVELS, cost_levels

    tasks, candidates = measured_cost_instance()
    assert cost_levels(np.array([nw.cost for nw in candidates]), 6.0, len(tasks)) > DP_MAX_COST_LEVELS
    low = minimum_budget(candidates, tasks=tasks)
    budgets = [low * 1.02, 4.0, 6.0]
    for solver in SOLVERS:
        for sel, budget in zip(select_networks(candidates, budgets, tasks=tasks, solver=solver), budgets):
            best, _ = assignment_milp(candidates, tasks, budget)
            assert_valid(sel, candidates, tasks, budget)
            assert sel.optimal and sel.total == pytest.approx(best, rel=1e-9)


def test_enumerating_steps_refuse_too_many_tasks_before_allocating():
    """The subset DP (2^27 blocks) and TAG's every-group candidates (2^21 groups) say so instead of running out
    of memory."""
    tasks, candidates = many_task_instance(sampled=20)
    with pytest.raises(SelectionError, match="solver='mip'"):
        select_networks(candidates, 5.0, tasks=tasks, solver="dp")
    names = [f"t{i}" for i in range(21)]
    with pytest.raises(SelectionError, match="at most 20 tasks, got 21"):
        select_groups_tag((names, np.zeros((21, 21))), 2)

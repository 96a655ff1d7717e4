r"""Exact subset dynamic programme for network selection (``solver="dp"``; problem: `grouping.selection`).

For every block ``U ⊆ T`` keep the Pareto front of (cost, value) of serving ``U`` with one network,
``g(U) = {(c(N), Σ_{t∈U} L(t,N)) : S(N) ⊇ U}``; then
``F(U) = Pareto( ∪_{T'⊆U, min(U)∈T'} g(T') ⊕ F(U \ T') )``, with ``F(∅) = {(0, 0)}`` and ``⊕`` the
pairwise sums.  ``F(T)`` holds the whole cost/loss curve: the answer for ``B`` is its point of lowest
value with cost <= B.  Points of U whose cost plus the cheapest cover of the other tasks exceeds the
largest budget are dropped.  Work ≈ 3^n/2 splits × front sizes, vectorised with numpy one subset size
at a time; exact in floating point.  Fast when the totals of costs take few values (unit/half costs:
12 tasks in ~0.5 s, 15 in ~25 s).

Many distinct costs (measured FLOPs or latencies) make long fronts: then each budget B gets its own
pass, which drops every partial selection that a Lagrangian bound proves worse than a known selection
within B.  For λ >= 0 the scalar DP ``D_λ(U)`` = least ``value + λ·cost`` of serving U (3^n/2 splits,
no fronts) bounds any completion: a partial selection of U at (c, v) can only lead to a value of at
least ``v + λ·c + D_λ(T \ U) - λ·B``.  λ is the multiplier of the Lagrangian dual of the budget
constraint, found by intersecting the lines of the best partitions above and within B (each step one
scalar DP); the known selections are the partitions it meets within B.

Ties: totals within ``TIE_RTOL`` (1e-12, relative) of each other are ties, broken by lowest cost, then
fewest networks, then fewest task heads ``Σ|S(N)|``, then smallest sum of candidate positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from grouping.selection_instance import Instance, fits, mask_bits, popcount, subset_matrix

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
#: Relative difference below which two totals count as equal (then tie-break).
TIE_RTOL = 1e-12


def dp_fits_memory(inst: Instance) -> bool:
    """Whether the subset DP's arrays stay bounded: 2^n entries per block table and Σ_N 2^|S(N)| serving
    blocks, each at most ``DP_MAX_BLOCKS`` (checked before anything of that size is allocated)."""
    if inst.n > DP_MAX_BLOCKS.bit_length() - 1:
        return False
    return int(np.sum(np.exp2(popcount(inst.masks)))) <= DP_MAX_BLOCKS


def cost_levels(costs: np.ndarray, cap: float, max_networks: int) -> int:
    """Number of distinct totals <= cap of up to ``max_networks`` costs (stops past DP_MAX_COST_LEVELS)."""
    levels = np.unique(costs[fits(costs, cap)])
    sums = np.zeros(1)
    for _ in range(max_networks):
        if len(sums) > DP_MAX_COST_LEVELS or len(levels) > DP_MAX_COST_LEVELS:
            break
        more = (sums[:, None] + levels[None, :]).ravel()
        sums = np.unique(np.concatenate([sums, more[fits(more, cap)]]).round(9))
    return max(len(sums), len(levels))



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


def _tie_scale(inst: Instance) -> float:
    """Typical magnitude of a loss, the absolute floor of the tie tolerance."""
    entries = np.abs(inst.values[inst.bits])
    return float(np.median(entries)) if len(entries) else 1.0


def _serving_fronts(inst: Instance, scale: float):
    """Per block U: Pareto front of (cost, Σ_{t∈U} value) over the candidates doing U.

    Ties go to the smaller network, then the earlier candidate.
    """
    bits, sizes = inst.bits, popcount(inst.masks)
    blocks, values, cands = [], [], []
    for k in np.unique(sizes):
        rows = np.flatnonzero(sizes == k)
        idx = np.nonzero(bits[rows])[1].reshape(len(rows), k)
        sub = subset_matrix(int(k))[1:]
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
    sizes = popcount(all_masks)
    for p in range(1, n + 1):
        layer = all_masks[sizes == p]
        step = max(1, DP_CHUNK_PAIRS >> (p - 1))
        for lo in range(0, len(layer), step):
            blocks = layer[lo:lo + step]
            pos = np.nonzero(mask_bits(blocks, n))[1].reshape(len(blocks), p)
            low = np.int64(1) << pos[:, 0]
            sub = (np.int64(1) << pos[:, 1:]) @ subset_matrix(p - 1).T
            yield blocks, low[:, None] | sub, (blocks - low)[:, None] - sub


#: Most tasks whose splits `_splits` keeps in memory between passes (3^13/2 pairs: about 26 MB).
DP_CACHED_SPLIT_TASKS = 13


def _splits(n: int):
    """`_layer_splits(n)`, kept in memory for small n (the bounded passes walk them many times)."""
    return _cached_splits(n) if n <= DP_CACHED_SPLIT_TASKS else _layer_splits(n)


@lru_cache(maxsize=2)
def _cached_splits(n: int) -> tuple:
    return tuple(_layer_splits(n))


def _cover_costs(n: int, g_start: np.ndarray, g_len: np.ndarray, g_cost: np.ndarray) -> np.ndarray:
    """cover[U] = cheapest cost of serving every task of U (a partition DP on minimum costs)."""
    single = np.where(g_len > 0, g_cost[np.minimum(g_start, len(g_cost) - 1)], np.inf)
    cover = np.zeros(1 << n)
    for blocks, first, rest in _splits(n):
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


def solve_dp(inst: Instance, budgets: list[float], cap: float):
    """Subset DP (see module docstring); (chosen, True, 0.0) or None per budget.

    Front points carry, besides cost and value, the tie-break sums: number
    of networks, number of task heads Σ|S(N)|, and Σ candidate index.  A
    point of block U is dropped when its cost plus the cheapest cover of the
    other tasks exceeds the budget.  When the cost totals take few values
    (``cost_levels`` <= ``DP_MAX_COST_LEVELS``) one pass gives the whole curve
    up to the largest budget; otherwise each budget gets its own pass, which
    also drops the points that Lagrangian bounds prove worse than a known
    selection (`_bounded_test`), so that fronts stay short under arbitrary costs.
    """
    n, full = inst.n, (1 << inst.n) - 1
    scale = _tie_scale(inst)
    fronts = _serving_fronts(inst, scale)
    g_start, g_len, g_cost = fronts[0], fronts[1], fronts[2]
    cover = _cover_costs(n, g_start, g_len, g_cost)
    if cost_levels(inst.costs, cap, n) <= DP_MAX_COST_LEVELS:
        pts, front = _front_dp(inst, fronts, scale, lambda owner, cost, value: fits(cost + cover[full ^ owner], cap))
        return [_pick(pts, front, budget) for budget in budgets]
    out = []
    for budget in budgets:
        if not fits(cover[full], budget):
            out.append(None)
            continue
        test = _bounded_test(inst, fronts, cover, budget, scale)
        out.append(_pick(*_front_dp(inst, fronts, scale, test), budget))
    return out


def _front_dp(inst: Instance, fronts, scale: float, useful: Callable):
    """The front DP: (points, indices of F(T)'s points by rising cost).

    ``useful(block, cost, value)`` (arrays) says which partial selections serving exactly ``block`` may
    still lead to an answer; the others are dropped, both from the serving fronts and from F."""
    n, size = inst.n, 1 << inst.n
    full = size - 1
    g_start, g_len, g_cost, g_value, g_cand, g_size = fronts
    g_block = np.repeat(np.arange(size, dtype=np.int64), g_len)
    keep = np.flatnonzero(useful(g_block, g_cost, g_value))
    g_cost, g_value, g_cand, g_size = g_cost[keep], g_value[keep], g_cand[keep], g_size[keep]
    g_start, g_len = _csr(g_block[keep], size)
    # All front points; point 0 is F(∅).  F(U) = points f_start[U] .. + f_len[U].
    f_start, f_len = np.zeros(size, np.int64), np.zeros(size, np.int64)
    f_len[0] = 1
    zero = np.zeros(1, np.int64)
    pts = _Columns(cost=np.zeros(1), value=np.zeros(1), count=zero, heads=zero, index=zero, cand=zero - 1, prev=zero - 1)
    for blocks, first, rest in _splits(n):
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
        value = g_value[gi] + pts["value"][fj]
        ok = np.flatnonzero(useful(owner, cost, value))
        gi, fj, cost, value, owner = gi[ok], fj[ok], cost[ok], value[ok], owner[ok]
        count = pts["count"][fj] + 1
        heads = pts["heads"][fj] + g_size[gi]
        index = pts["index"][fj] + inst.ids[g_cand[gi]]
        keep = _pareto(owner, cost, value, (count, heads, index), scale)
        start, length = _csr(owner[keep], size)
        f_start[blocks] = len(pts) + start[blocks]
        f_len[blocks] = length[blocks]
        pts.append(cost=cost[keep], value=value[keep], count=count[keep], heads=heads[keep],
                   index=index[keep], cand=g_cand[gi[keep]], prev=fj[keep])
    return pts, np.arange(f_start[full], f_start[full] + f_len[full])


def _pick(pts: _Columns, front: np.ndarray, budget: float):
    """(chosen, True, 0.0) for the front's point of lowest value within ``budget``, or None."""
    fitting = front[fits(pts["cost"][front], budget)]
    if len(fitting) == 0:
        return None
    point, chosen = fitting[-1], []  # the front's values fall as cost rises
    while point != 0:
        chosen.append(int(pts["cand"][point]))
        point = pts["prev"][point]
    return tuple(sorted(chosen)), True, 0.0


# --------------------------------------------------------------------------
# Lagrangian bounds (arbitrary costs)
# --------------------------------------------------------------------------

#: Most steps of the search for the best Lagrangian multiplier (each a scalar DP over the subsets).
LAGRANGE_MAX_STEPS = 60
#: Relative slack on the bound test: a point is dropped only when its bound exceeds the known value by more.
BOUND_RTOL = 1e-9


def _lagrangian(n: int, fronts, weight: float, value_weight: float = 1.0):
    """The scalar DP of ``value_weight·value + weight·cost``: (D, cost, value), with D[U] the least such sum
    of serving the tasks of U (a partition of U into blocks, each served by one network; a network may
    serve two blocks and be paid twice, which never beats paying once), and (cost, value) of one
    partition of all tasks reaching D[T]."""
    g_start, g_len, g_cost, g_value = fronts[:4]
    size = 1 << n
    block = np.repeat(np.arange(size, dtype=np.int64), g_len)
    key = value_weight * g_value + weight * g_cost
    order = np.lexsort((key, block))
    head = order[np.r_[True, block[order][1:] != block[order][:-1]]] if len(order) else order
    single, arg = np.full(size, np.inf), np.full(size, -1, np.int64)
    single[block[head]], arg[block[head]] = key[head], head
    D, best = np.zeros(size), np.zeros(size, np.int64)
    for blocks, first, rest in _splits(n):
        total = single[first] + D[rest]
        j = total.argmin(axis=1)
        rows = np.arange(len(blocks))
        D[blocks], best[blocks] = total[rows, j], first[rows, j]
    cost = value = 0.0
    remaining = size - 1
    while remaining:
        point = arg[best[remaining]]
        cost, value = cost + g_cost[point], value + g_value[point]
        remaining ^= int(best[remaining])
    return D, cost, value


def _bounded_test(inst: Instance, fronts, cover: np.ndarray, budget: float, scale: float) -> Callable:
    """The ``useful`` test of one budget's pass, from Lagrangian bounds.

    For a multiplier λ >= 0, any selection serving the other tasks W = T \\ U within the budget left,
    ``budget - c``, has value >= D_λ(W) - λ·(budget - c) (`_lagrangian`).  A partial selection of block U
    at (c, v) is dropped when ``v + λ·c + D_λ(W) - λ·budget`` exceeds the value ``best`` of a known
    selection within the budget, for λ = 0 and the λ that maximises the bound on the whole (found by
    intersecting the lines of the best partitions above and within the budget), or when ``c`` plus the
    cheapest cover of W exceeds the budget.  The known selections are those partitions within the budget."""
    n, full = inst.n, (1 << inst.n) - 1
    D0, c_lo, v_lo = _lagrangian(n, fronts, 0.0)
    multipliers = [(0.0, D0)]
    if fits(c_lo, budget):
        best = v_lo  # the unconstrained optimum fits
    else:
        _, c_hi, v_hi = _lagrangian(n, fronts, 1.0, value_weight=0.0)  # a cheapest cover: within the budget
        best = v_hi
        for _ in range(LAGRANGE_MAX_STEPS):
            if c_lo - c_hi <= 0 or v_hi <= v_lo:
                break
            lam = (v_hi - v_lo) / (c_lo - c_hi)
            D, c, v = _lagrangian(n, fronts, lam)
            line = v_hi + lam * c_hi
            if D[full] >= line - BOUND_RTOL * (abs(line) + scale):
                multipliers.append((lam, D))
                break
            if fits(c, budget):
                c_hi, v_hi, best = c, v, min(best, v)
            else:
                c_lo, v_lo = c, v
            multipliers[1:] = [(lam, D)]
    # The slack scales with every term of the bound: with losses of 0 (scale and best 0) the terms
    # λ·(c - budget) and D(W) cancel only up to rounding, and a zero slack dropped optimal points.
    bounds = [(lam, D, BOUND_RTOL * (abs(best) + scale + lam * abs(budget))) for lam, D in multipliers]

    def useful(block, cost, value):
        rest = full ^ block
        ok = fits(cost + cover[rest], budget)
        for lam, D, slack in bounds:
            ok &= value + lam * (cost - budget) + D[rest] <= best + slack
        return ok

    return useful

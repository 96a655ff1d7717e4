"""The network-selection problem as arrays, and the steps every solver shares.

Internal to `grouping.selection` (the public API, with the problem statement): the candidate type
(`Network`), the answer type (`Selection`), their errors, the array form of an instance (`Instance`:
task bitmasks, costs, sense × losses), the budget tolerance (`fits`), dominance pruning (`prune`) and
turning chosen candidates into networks and an assignment (`finish`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

#: Relative slack allowed when comparing a cost sum with a budget.
BUDGET_RTOL = 1e-9
HALF_PREFIX = "half:"


# --------------------------------------------------------------------------
# Errors and data types
# --------------------------------------------------------------------------


class SelectionError(ValueError):
    """Invalid selection input (bad network, uncovered task, bad budget...)."""


class InfeasibleBudgetError(SelectionError):
    """The budget is below the cost of the cheapest selection covering all tasks."""

    def __init__(self, budget: float, min_budget: float, proven: bool = True):
        self.budget = budget
        self.min_budget = min_budget
        self.proven = proven
        super().__init__(
            f"budget {budget:g} is below the cheapest selection that covers every "
            f"task; the minimum feasible budget is {min_budget:g}"
            + ("" if proven else " or less (the cheapest cover found in the time limit, not proven cheapest)")
        )


class CoverNotProvenError(SelectionError):
    """The cheapest cover was not proven within the time limit; ``best`` and ``lower_bound`` bracket its cost."""

    def __init__(self, best: float, lower_bound: float, time_limit: float):
        self.best = best
        self.lower_bound = lower_bound
        gap = (best - lower_bound) / best if best > 0 else float("inf")
        super().__init__(
            f"the cheapest selection covering every task was not proven within {time_limit:g} s: the best found "
            f"costs {best:g} and none costs less than {lower_bound:g} (gap {gap:.2%}); give it more time"
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




def task_universe(networks: Iterable[Network]) -> tuple[str, ...]:
    """Tasks in order of first appearance."""
    return tuple(dict.fromkeys(t for nw in networks for t in nw.tasks))



def best_per_task(networks: Sequence[Network], tasks: Sequence[str], better: Callable) -> list[float]:
    best = []
    for t in tasks:
        values = [nw.losses[t] for nw in networks if t in nw.losses]
        if not values:
            raise SelectionError(f"no chosen network does task {t!r}")
        best.append(better(values))
    return best


# --------------------------------------------------------------------------
# Problem instance and shared steps
# --------------------------------------------------------------------------


def budget_list(budgets) -> list[float]:
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


def fits(cost, budget: float):
    """cost <= budget up to the documented float slack (works on arrays)."""
    return cost <= budget + BUDGET_RTOL * max(1.0, abs(budget))


@dataclass(frozen=True)
class Instance:
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
        return mask_bits(self.masks, self.n)

    @classmethod
    def build(cls, networks: list[Network], tasks: Sequence[str] | None, sense: float) -> Instance:
        if not networks:
            raise SelectionError("no candidate networks")
        labels: set[str] = set()
        for nw in networks:
            if nw.label in labels:
                raise SelectionError(f"two candidate networks share the label {nw.label!r}")
            labels.add(nw.label)
        tasks = task_universe(networks) if tasks is None else tuple(tasks)
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

    def subset(self, keep: np.ndarray) -> Instance:
        return Instance(self.tasks, tuple(self.networks[i] for i in keep), self.masks[keep], self.costs[keep],
                         self.values[keep], self.ids[keep])


def mask_bits(masks: np.ndarray, n: int) -> np.ndarray:
    """(len(masks), n) boolean matrix of the bits of each mask."""
    return ((masks[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def popcount(masks: np.ndarray) -> np.ndarray:
    """Number of set bits of each mask (np.bitwise_count needs numpy >= 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(masks).astype(np.int64)
    count = np.zeros(masks.shape, np.int64)
    for shift in range(int(masks.max(initial=0)).bit_length()):
        count += (masks >> shift) & 1
    return count


@lru_cache(maxsize=None)
def subset_matrix(k: int) -> np.ndarray:
    """(2^k, k) 0/1 int64 matrix; row r = the bits of r (row 0 = empty set)."""
    r = np.arange(1 << k, dtype=np.int64)
    return (r[:, None] >> np.arange(k, dtype=np.int64)) & 1


#: Most (candidate, candidate) pairs `prune` holds at once (with their loss rows: about 2 MiB per task).
PRUNE_CHUNK_PAIRS = 1 << 18


def superset_pairs(masks: np.ndarray, bits: np.ndarray, n: int):
    """Yields (i, j) index arrays of candidate pairs with S(i) ⊆ S(j), i != j, in chunks of bounded size.

    Candidates with few tasks outside their set enumerate their supermasks (2^k each, k = tasks outside)
    and look them up; the others, whose supermasks outnumber the candidates, are compared with every
    candidate directly. Either way at most about `PRUNE_CHUNK_PAIRS` pairs are held at a time."""
    N = len(masks)
    order = np.argsort(masks, kind="stable")
    sorted_masks = masks[order]
    free = n - popcount(masks)
    for k in np.unique(free):
        rows = np.flatnonzero(free == k)
        if (1 << int(k)) <= N:  # enumerate the supermasks of each row: 2^k per row
            step = max(1, PRUNE_CHUNK_PAIRS >> int(k))
            sub = subset_matrix(int(k)).T
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


def prune(inst: Instance, max_budget: float) -> np.ndarray:
    """Indices of the candidates that fit the largest budget and are not dominated."""
    n = inst.n
    alive = np.flatnonzero(fits(inst.costs, max_budget))
    if len(alive) == 0:
        return alive
    masks, costs, values = inst.masks[alive], inst.costs[alive], inst.values[alive]
    bits = mask_bits(masks, n)
    dominated = np.zeros(len(alive), bool)
    for i, j in superset_pairs(masks, bits, n):
        keep = costs[j] <= costs[i]
        i, j = i[keep], j[keep]
        on_i = bits[i]
        vi, vj = values[i], values[j]
        keep = np.where(on_i, vj <= vi, True).all(axis=1)
        i, j, on_i, vi, vj = i[keep], j[keep], on_i[keep], vi[keep], vj[keep]
        strictly = (masks[j] != masks[i]) | (costs[j] < costs[i]) | np.where(on_i, vj < vi, False).any(axis=1)
        dominated[i[strictly | (j < i)]] = True
    return alive[~dominated]



def finish(inst: Instance, chosen: Sequence[int]) -> tuple[tuple[Network, ...], dict[str, str]]:
    """Assign each task to its best chosen network; drop networks that serve no task."""
    chosen = sorted(chosen)
    assignment, used = {}, set()
    for t_index, t in enumerate(inst.tasks):
        doing = [i for i in chosen if (inst.masks[i] >> t_index) & 1]
        best = min(doing, key=lambda i: (inst.values[i, t_index], inst.costs[i], i))
        assignment[t] = inst.networks[best].label
        used.add(best)
    return tuple(inst.networks[i] for i in chosen if i in used), assignment



def covers(inst: Instance, chosen: Sequence[int]) -> bool:
    return np.bitwise_or.reduce(inst.masks[list(chosen)], initial=0) == (1 << inst.n) - 1


def selection_value(inst: Instance, chosen: Sequence[int]) -> float:
    """Σ over tasks of the best (sense × loss) among the chosen networks."""
    values = np.where(inst.bits[list(chosen)], inst.values[list(chosen)], np.inf)
    return math.fsum(values.min(axis=0))

r"""TAG's grouping (Fifty et al., NeurIPS 2021) as network selection: candidates from an affinity matrix.

Given affinities ``M[a][b]`` (score of task ``a`` when trained with ``b``),
the score of task ``t`` in group ``G`` is ``mean_{u∈G\{t}} M[t][u]`` if
``|G| >= 2`` and ``SINGLETON_SCORE`` (-1e6) if ``G = {t}``.  Choose at most
``k`` groups covering every task, each task taking its best score over the
chosen groups containing it, maximising the mean over tasks.  This is the
problem of `grouping.selection` with every subset as a candidate of cost 1,
loss = -score and budget ``k``: `tag_candidates` builds the candidates,
`grouping.selection.select_groups` solves it (ties as there), and
`select_groups_tag` does both per ``k``; `score_tag` scores given groups.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from grouping.selection import select_groups, subsets_by_size
from grouping.selection_instance import Network, Selection, SelectionError, best_per_task, task_universe

__all__ = [
    "SINGLETON_SCORE",
    "affinity_matrix",
    "score_tag",
    "select_groups_tag",
    "tag_candidates",
]

#: Most tasks `tag_candidates` enumerates every group of (2^20 networks: about a gigabyte of Python objects).
TAG_MAX_TASKS = 20
#: Score of a task trained alone in the TAG variant (as in the TAG notebooks).
SINGLETON_SCORE = -1e6


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
    tasks = task_universe(networks)
    return math.fsum(best_per_task(networks, tasks, max)) / len(tasks)


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

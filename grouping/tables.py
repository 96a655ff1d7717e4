"""Readers for measured loss tables, TAG affinity matrices and budget lists.

Standley text format (the tables released with Standley et al. 2020)
    Tab-separated, no header, one column per task.  Line 1 holds the
    half-size single-task networks (cost 0.5), one value per task.  The next
    ``2^n - 1`` lines hold the full-size networks (cost 1) in the order of
    ``subsets_by_size``: singles, pairs, triples, ..., then the all-task
    network, each size in ``itertools.combinations`` order.  An empty cell
    means the network does not do that task, so every row names its own task
    set; the reader checks that the rows come in that order.
    Short tables (``results_alt_20.txt`` lacks the d+n pair): by default a
    missing network is an error naming it and the line where it was
    expected; with ``allow_missing=True`` the table is read without it (its
    label is listed in ``LossTable.missing``), which is also how the paper's
    own program read that file.
    Task names default to ``s, d, n, k, t`` for five columns (Taskonomy
    task set 1); other widths need names.

CSV format
    A header naming the columns ``network, task, loss`` and optionally
    ``cost``, then one row per (network, task).  ``network`` is the task
    names joined by '+' (``seg+depth``), prefixed ``half:`` for a half-size
    network (``half:seg``).  Cost defaults to 1 (full) and 0.5 (half); when
    given it must agree across a network's rows.  Every network needs one
    row per task it does.

TAG affinity JSON
    ``{task: {other: value}}`` where ``value`` is the score of ``task`` when
    trained with ``other``; the diagonal is ignored.  ``file.json#a/b``
    selects a nested object (e.g. ``affinities.json#taskonomy/tag``).

Losses must be finite and >= 0.  Every problem raises ``TableError`` (a
``ValueError``) whose message starts with ``file:line:``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .selection import HALF_PREFIX, Network, SelectionError, network_label, subsets_by_size
from .selection_tag import affinity_matrix

__all__ = [
    "DEFAULT_TASKS",
    "LossTable",
    "TableError",
    "parse_budgets",
    "parse_network_label",
    "read_affinity",
    "read_loss_csv",
    "read_loss_table",
    "read_standley_table",
    "write_standley_table",
]

#: Column names of Standley's five-task tables (task set 1).
DEFAULT_TASKS = ("s", "d", "n", "k", "t")
FULL_COST, HALF_COST = 1.0, 0.5


class TableError(ValueError):
    """A table or option that cannot be parsed; the message says where and why."""


@dataclass(frozen=True)
class LossTable:
    """Candidate networks read from a file, with the tasks in column order."""

    tasks: tuple[str, ...]
    networks: tuple[Network, ...]
    source: str
    missing: tuple[str, ...] = ()  # labels of networks a short Standley table lacks


def read_loss_table(path: str | Path, tasks: Sequence[str] | None = None, *, allow_missing: bool = False) -> LossTable:
    """Read a ``.csv`` loss table or (any other name) a Standley text table."""
    if Path(path).suffix.lower() == ".csv":
        table = read_loss_csv(path)
        if tasks is not None:
            unknown = [t for t in tasks if t not in table.tasks]
            if unknown:
                raise TableError(f"{path}: task {unknown[0]!r} is not done by any network in the table")
            table = LossTable(tuple(tasks), table.networks, table.source)
        return table
    return read_standley_table(path, tasks, allow_missing=allow_missing)


def _read_lines(path: str | Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not a text file ({exc.reason})") from None


def _loss(cell: str, where: str, label: str, task: str) -> float:
    """A loss cell: finite and >= 0, else TableError naming the network and task."""
    try:
        value = float(cell)
    except ValueError:
        raise TableError(f"{where}: {cell.strip()!r} is not a number (network {label!r}, task {task!r})") from None
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise TableError(f"{where}: network {label!r} has loss {cell.strip()} for task {task!r}; losses must be finite and >= 0")
    return value


def read_standley_table(path: str | Path, tasks: Sequence[str] | None = None, *, allow_missing: bool = False) -> LossTable:
    """Read one of Standley's tab-separated tables (see the module docstring)."""
    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise TableError(f"{path}:1: empty table")
    width = len(lines[0].split("\t"))
    if tasks is None:
        if width != len(DEFAULT_TASKS):
            raise TableError(f"{path}:1: {width} columns; pass the task names (the default names fit 5 columns)")
        tasks = DEFAULT_TASKS
    tasks = tuple(tasks)
    if len(set(tasks)) != len(tasks) or not all(tasks):
        raise TableError(f"{path}: task names must be distinct and non-empty: {tasks}")
    expected = subsets_by_size(tasks)
    position = {frozenset(s): i for i, s in enumerate(expected)}
    networks, missing, next_row, seen = [], [], 0, {}
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        cells = line.split("\t")
        if len(cells) > len(tasks):
            raise TableError(f"{where}: {len(cells)} cells, expected {len(tasks)} (one per task: {', '.join(tasks)})")
        filled = [(t, c) for t, c in zip(tasks, cells) if c.strip()]
        if number == 1:  # half-size single-task networks
            for t, cell in filled:
                label = network_label((t,), half=True)
                networks.append(Network((t,), HALF_COST, {t: _loss(cell, where, label, t)}, label))
            continue
        if not filled:
            raise TableError(f"{where}: empty row (expected network {network_label(expected[min(next_row, len(expected) - 1)])!r})")
        net_tasks = tuple(t for t, _ in filled)
        label = network_label(net_tasks)
        row = position[frozenset(net_tasks)]
        if row in seen:
            raise TableError(f"{where}: network {label!r} was already given on line {seen[row]}")
        if row < next_row:
            raise TableError(f"{where}: network {label!r} is out of order (expected {network_label(expected[next_row])!r}; "
                             "rows go singles, pairs, triples, ... in itertools.combinations order)")
        if row > next_row:
            skipped = [network_label(s) for s in expected[next_row:row]]
            if not allow_missing:
                raise TableError(f"{where}: expected network {skipped[0]!r} but the filled cells are those of {label!r}; "
                                 f"the table lacks {', '.join(map(repr, skipped))} (allow_missing=True, or --allow-missing, reads it without)")
            missing += skipped
        seen[row] = number
        next_row = row + 1
        networks.append(Network(net_tasks, FULL_COST, {t: _loss(c, where, label, t) for t, c in filled}))
    if next_row < len(expected):
        skipped = [network_label(s) for s in expected[next_row:]]
        if not allow_missing:
            raise TableError(f"{path}:{len(lines)}: table ends early; it lacks {', '.join(map(repr, skipped))} "
                             f"({1 + len(expected)} rows expected for {len(tasks)} tasks; "
                             "allow_missing=True, or --allow-missing, reads it without)")
        missing += skipped
    return LossTable(tasks, tuple(networks), str(path), tuple(missing))


def write_standley_table(path: str | Path, tasks: Sequence[str], losses: dict[str, dict[str, float]]) -> Path:
    """Write a Standley text table (the format `read_standley_table` reads).

    ``losses``: network label (``network_label``; ``half:t`` for half-size
    singles) -> {task: loss}; ``tasks`` are the columns. Every half-size single
    and every full-size subset must be present. Values keep 17 significant
    digits, so the table reads back exactly.
    """
    tasks = tuple(tasks)
    rows = [[network_label((t,), half=True) for t in tasks]] + [[network_label(s)] for s in subsets_by_size(tasks)]
    lines = []
    for i, row in enumerate(rows):
        cells = []
        for t in tasks:
            label = row[tasks.index(t)] if i == 0 else row[0]
            net_tasks = (t,) if i == 0 else parse_network_label(label)[0]
            if t not in net_tasks:
                cells.append("")
                continue
            if label not in losses or t not in losses[label]:
                raise ValueError(f"no {t} loss for network {label!r}: a Standley table needs every candidate network")
            cells.append(repr(float(losses[label][t])))
        lines.append("\t".join(cells))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def parse_network_label(label: str) -> tuple[tuple[str, ...], bool]:
    """'a+b' -> (('a', 'b'), False); 'half:a' -> (('a',), True)."""
    half = label.startswith(HALF_PREFIX)
    body = label[len(HALF_PREFIX):] if half else label
    tasks = tuple(t.strip() for t in body.split("+"))
    if not body.strip() or not all(tasks):
        raise ValueError(f"bad network name {label!r} (use task names joined by '+', or 'half:task')")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"network name {label!r} repeats a task")
    return tasks, half


def read_loss_csv(path: str | Path) -> LossTable:
    """Read a ``network,task,loss[,cost]`` CSV table (see the module docstring)."""
    rows = list(csv.reader(_read_lines(path)))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    required, allowed = {"network", "task", "loss"}, {"network", "task", "loss", "cost"}
    if not required <= set(header) or not set(header) <= allowed or len(set(header)) != len(header):
        raise TableError(f"{path}:1: the header must name the columns network,task,loss and optionally cost; got {','.join(header)!r}")
    col = {name: header.index(name) for name in header}
    info: dict[str, dict] = {}  # label -> tasks, half, cost, cost_line, first_line, losses
    task_sets: dict[tuple[frozenset, bool], str] = {}
    for number, row in enumerate(rows[1:], start=2):
        where = f"{path}:{number}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise TableError(f"{where}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        label, task = row[col["network"]].strip(), row[col["task"]].strip()
        if label not in info:
            try:
                net_tasks, half = parse_network_label(label)
            except ValueError as exc:
                raise TableError(f"{where}: {exc}") from None
            key = (frozenset(net_tasks), half)
            if key in task_sets:
                raise TableError(f"{where}: network {label!r} does the same tasks as {task_sets[key]!r}")
            task_sets[key] = label
            info[label] = {"tasks": net_tasks, "half": half, "cost": None, "first_line": number, "losses": {}, "lines": {}}
        net = info[label]
        if task not in net["tasks"]:
            raise TableError(f"{where}: task {task!r} is not one of the tasks of network {label!r}")
        if task in net["losses"]:
            raise TableError(f"{where}: network {label!r} already has a loss for task {task!r} (line {net['lines'][task]})")
        net["losses"][task] = _loss(row[col["loss"]], where, label, task)
        net["lines"][task] = number
        if "cost" in col and row[col["cost"]].strip():
            cost = _cost(row[col["cost"]], where, label)
            if net["cost"] is not None and cost != net["cost"][0]:
                raise TableError(f"{where}: cost {cost:g} of network {label!r} differs from {net['cost'][0]:g} on line {net['cost'][1]}")
            net["cost"] = (cost, number)
    if not info:
        raise TableError(f"{path}:{len(rows) or 1}: no networks in the table")
    networks = []
    for label, net in info.items():
        absent = [t for t in net["tasks"] if t not in net["losses"]]
        if absent:
            raise TableError(f"{path}:{net['first_line']}: network {label!r} has no loss for task {absent[0]!r}")
        cost = net["cost"][0] if net["cost"] else (HALF_COST if net["half"] else FULL_COST)
        networks.append(Network(net["tasks"], cost, net["losses"], label))
    tasks = tuple(dict.fromkeys(t for nw in networks for t in nw.tasks))
    return LossTable(tasks, tuple(networks), str(path))


def _cost(cell: str, where: str, label: str) -> float:
    try:
        cost = float(cell)
    except ValueError:
        raise TableError(f"{where}: cost {cell.strip()!r} of network {label!r} is not a number") from None
    if not (math.isfinite(cost) and cost > 0):
        raise TableError(f"{where}: cost {cell.strip()} of network {label!r} must be finite and > 0")
    return cost


def read_affinity(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TAG affinity matrix ``{task: {other: value}}`` from JSON (``file#key/key`` for a nested one)."""
    text_path, _, fragment = str(path).partition("#")
    try:
        with open(text_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise TableError(f"{text_path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise TableError(f"{text_path}: not a text file ({exc.reason})") from None
    for key in filter(None, fragment.split("/")):
        if not isinstance(data, dict) or key not in data:
            raise TableError(f"{text_path}: no key {key!r} along {fragment!r}")
        data = data[key]
    if not isinstance(data, dict) or not data:
        raise TableError(f"{path}: expected a non-empty JSON object {{task: {{other: value}}}}")
    try:
        affinity_matrix(data)
    except SelectionError as exc:
        raise TableError(f"{path}: {exc}") from None
    return {a: {b: float(v) for b, v in row.items()} for a, row in data.items()}


def parse_budgets(text: str) -> list[float]:
    """'2' -> [2.0]; '1,2,3' -> [1, 2, 3]; '1:5:0.5' -> 1, 1.5, ..., 5 (the end included)."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if not (step > 0 and stop >= start and all(map(math.isfinite, parts))):
                raise TableError(f"budget range {text!r} needs start <= stop and a step > 0")
            count = math.floor((stop - start) / step + 1e-9)
            return [round(start + i * step, 12) for i in range(count + 1)]
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise TableError(f"budgets {text!r}: use a number, a list like 1,2,3 or a range like 1:5:0.5") from None
    if not all(math.isfinite(v) for v in values):
        raise TableError(f"budgets {text!r}: budgets must be finite numbers")
    return values

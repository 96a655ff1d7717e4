"""Choose which networks to train for a budget (Standley et al. 2020) or TAG groups (Fifty et al. 2021).

Examples (from the repository root):

    python scripts/select_networks.py --table results.txt --test-table results_test.txt --budgets 1:5:0.5
    python scripts/select_networks.py --table results.txt --budgets 3 --method hoa --json
    python scripts/select_networks.py --objective tag --table affinities.json#celeba/tag --budgets 2,3
    python scripts/select_networks.py --objective relative --table results.txt --test-table results_test.txt --budgets 2

Tables: Standley's tab-separated format (``--tasks`` names its columns;
default s,d,n,k,t), a ``network,task,loss[,cost]`` CSV (``--tasks``: the
tasks to cover), or for ``--objective tag`` a JSON affinity matrix
(``--tasks``: the tasks to group; budgets are numbers of groups).  Budgets
are in the table's costs (Standley's: a full-size network 1, a half-size one
0.5; a CSV's ``cost`` column).  Budgets below the cheapest selection covering
every task are answered "infeasible" with that minimum, the others solved;
only a list with no feasible budget is an error.  Bad input prints one line
starting with 'error:' on stderr and exits with status 2.

Objectives: ``loss`` (default; Standley's sum of the tasks' losses),
``relative`` (the mean over tasks of each task's loss over its full-size
single-task network's loss in the same table, `grouping.objective`; unit-free)
and ``tag`` (TAG's mean affinity, maximised).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grouping.selection import (  # noqa: E402
    COVER_TIME_LIMIT,
    Selection,
    SelectionError,
    hoa_candidates,
    minimum_budget,
    score,
    select_networks,
    split_budgets,
)
from grouping.selection_tag import score_tag, select_groups_tag  # noqa: E402
from grouping.objective import get_objective  # noqa: E402
from grouping.tables import parse_budgets, read_affinity, read_loss_table  # noqa: E402

METHODS = ("optimal", "hoa")
OBJECTIVES = ("loss", "relative", "tag")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from mtl.options import HelpFormatter

    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--table", required=True, help="selection table (Standley .txt, .csv, or TAG .json[#key/key])")
    p.add_argument("--test-table", help="table to score the chosen networks on (e.g. test losses; default none)")
    p.add_argument("--budgets", required=True, help="a number, a list 1,2,3 or an inclusive range 1:5:0.5")
    p.add_argument("--method", default="optimal", help="optimal or hoa (higher-order approximation from pairs)")
    p.add_argument("--objective", default="loss",
                   help="loss (minimise summed loss), relative (minimise the mean of loss / single-task loss) "
                        "or tag (maximise mean affinity)")
    p.add_argument("--tasks", help="comma-separated task names (columns of a Standley table; tasks to cover or "
                   "group; default s,d,n,k,t for a Standley table, else every task in the table)")
    p.add_argument("--time-limit", type=float, help="seconds for the whole run (MIP solver only; default none)")
    p.add_argument("--allow-missing", action="store_true", help="accept a Standley table that lacks some networks")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


class Infeasible(NamedTuple):
    """A budget below the cheapest selection covering every task."""

    budget: float
    minimum: float


def run(args: argparse.Namespace) -> list[tuple[Selection, float | None] | Infeasible]:
    """Solve as asked: (selection, test total or None) per feasible budget, `Infeasible` for the others."""
    if args.method not in METHODS:
        raise SelectionError(f"unknown method {args.method!r} (use {' or '.join(METHODS)})")
    if args.objective not in OBJECTIVES:
        raise SelectionError(f"unknown objective {args.objective!r} (use {' or '.join(OBJECTIVES)})")
    if args.time_limit is not None and not (args.time_limit > 0 and math.isfinite(args.time_limit)):
        raise SelectionError("--time-limit must be a positive number of seconds")
    budgets = parse_budgets(args.budgets)
    if args.objective == "tag":
        minimum = 1.0  # one group of every task
    else:
        tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
        table = read_loss_table(args.table, tasks, allow_missing=args.allow_missing)
        minimum = minimum_budget(table.networks, tasks=table.tasks,
                                 time_limit=args.time_limit if args.time_limit is not None else COVER_TIME_LIMIT)
    feasible, _ = split_budgets(budgets, minimum)
    solved = iter(_solve(args, feasible))
    return [next(solved) if b in feasible else Infeasible(b, minimum) for b in budgets]


def _solve(args: argparse.Namespace, budgets: list[float]) -> list[tuple[Selection, float | None]]:
    """(selection, test total or None) per budget, every budget feasible."""
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    if args.objective == "tag":
        if args.method != "optimal":
            raise SelectionError("--method hoa applies to loss tables, not to --objective tag")
        if any(b != int(b) or b < 1 for b in budgets):
            raise SelectionError("with --objective tag, budgets are numbers of groups (whole numbers >= 1)")
        affinity = read_affinity(args.table)
        test = read_affinity(args.test_table) if args.test_table else None
        selections = select_groups_tag(affinity, [int(b) for b in budgets], tasks=tasks, time_limit=args.time_limit)
        return [(sel, score_tag(sel.networks, test) if test else None) for sel in selections]
    table = read_loss_table(args.table, tasks, allow_missing=args.allow_missing)
    candidates = hoa_candidates(table.networks) if args.method == "hoa" else table.networks
    test = read_loss_table(args.test_table, table.tasks, allow_missing=args.allow_missing) if args.test_table else None
    objective = get_objective(args.objective)
    candidates = _on_objective(objective, candidates, table.networks, table.tasks)
    selections = select_networks(candidates, budgets, tasks=table.tasks, time_limit=args.time_limit)
    if test is None:
        return [(sel, None) for sel in selections]
    test_networks = _on_objective(objective, test.networks, test.networks, table.tasks)
    return [(sel, score(sel.networks, test_networks, tasks=table.tasks)) for sel in selections]


def _on_objective(objective, networks, measured, tasks):
    """`networks` rescaled for the objective, the references taken from the table's `measured` networks."""
    return objective.table(networks, objective.reference({nw.label: nw.losses for nw in measured}, tasks))


def to_json(args: argparse.Namespace, rows: list) -> dict:
    results = []
    for row in rows:
        if isinstance(row, Infeasible):
            results.append({"budget": row.budget, "feasible": False, "minimum_budget": row.minimum})
            continue
        sel, test_total = row
        results.append({"budget": sel.budget, "feasible": True,
                        "networks": [{"tasks": list(nw.tasks), "cost": nw.cost} for nw in sel.networks],
                        "selection_total": sel.total, "test_total": test_total, "optimal": sel.optimal})
    return {"objective": args.objective, "method": args.method, "results": results}


def render(args: argparse.Namespace, rows: list) -> str:
    """Readable text: one block per budget, one line per chosen network."""
    tag = args.objective == "tag"
    what = {"tag": "mean score", "relative": "mean relative loss"}.get(args.objective, "total loss")
    out = []
    for row in rows:
        if isinstance(row, Infeasible):
            out.append(f"{'groups <=' if tag else 'budget'} {row.budget:g}: infeasible, the cheapest selection "
                       f"covering every task costs {row.minimum:g}")
            continue
        sel, test_total = row
        head = f"{'groups <=' if tag else 'budget'} {sel.budget:g}: selection {what} {sel.total:.6f}"
        if test_total is not None:
            head += f", test {what} {test_total:.6f}"
        head += f", cost {sel.cost:g}" + ("" if sel.optimal else f" (not proven optimal, gap {sel.gap:.2%})")
        out.append(head)
        width = max(len(nw.label) for nw in sel.networks)
        for nw in sel.networks:
            serves = " ".join(t for t, label in sel.assignment.items() if label == nw.label)
            out.append(f"  {nw.label:<{width}}  cost {nw.cost:<4g}  counts for: {serves}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = run(args)  # SelectionError, TableError (ValueErrors) and OSError: cli.run reports them
    print(json.dumps(to_json(args, rows)) if args.json else render(args, rows))
    return 0


if __name__ == "__main__":
    from mtl import cli

    cli.run(main)

"""Which cost should budgets count? nominal vs FLOPs vs latency on the committed ground truth.

    python benchmarks/cost_kinds.py                     # writes benchmarks/results/cost_kinds.json
    python benchmarks/cost_kinds.py --rounds 3 --repeats 30

For the ground truth's tasks and resolution (benchmarks/results/ground_truth/ground_truth.json):

* nominal vs FLOPs: at every budget, the optimal choice (exhaustive's, on
  validation losses, the ground truth's seeds) when the budget counts
  Standley's units, and what that choice really costs in FLOPs units; and
  the optimal choice when the budget counts FLOPs, and whether it differs;
* latency: every candidate network's forward time on this machine
  (`grouping.costs.measure_latency`: jitted, warmed up, median of
  --repeats calls, batch --latency-batch), measured in --rounds independent
  rounds: the spread between rounds, the rank correlation with FLOPs, and
  whether the choices under each round's latencies differ from those under
  FLOPs (and from each other).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grouping import costs as K  # noqa: E402
from grouping import groundtruth as G  # noqa: E402


def optimal_choices(gt: dict, budgets, table) -> dict[str, list[list[str] | None]]:
    """seed -> sorted labels of the optimal (exhaustive's) choice at each budget (None: infeasible)."""
    names = tuple(gt["tasks"])
    minimum = 1.0 if table is None else table.minimum_budget()
    feasible = [b for b in budgets if b >= minimum - 1e-9]
    out = {}
    for seed, record in gt["runs"].items():
        chosen = G.choices(record, names, feasible, "relative", estimators=(), network_costs=table)["optimal"]
        by_budget = {b: sorted(c.labels) for b, c in zip(feasible, chosen)}
        out[seed] = [by_budget.get(b) for b in budgets]
    return out


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ground-truth", default=str(ROOT / "benchmarks" / "results" / "ground_truth" / "ground_truth.json"))
    p.add_argument("--rounds", type=int, default=3, help="independent latency measurements of every network")
    p.add_argument("--repeats", type=int, default=K.LATENCY_REPEATS, help="timed calls per measurement")
    p.add_argument("--latency-batch", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_kinds.json"))
    args = p.parse_args(argv)
    gt = json.loads(Path(args.ground_truth).read_text())
    names, resolution = tuple(gt["tasks"]), gt["settings"]["data"]["resolution"]
    budgets = [b / 2 for b in range(2, 2 * len(names) + 1)]
    flops = K.cost_table(names, "flops", resolution=resolution)

    nominal_choice = optimal_choices(gt, budgets, None)
    flops_choice = optimal_choices(gt, budgets, flops)
    nominal_vs_flops = []
    for i, b in enumerate(budgets):
        row = {"budget": b, "seeds": {}}
        for seed in gt["runs"]:
            chosen = nominal_choice[seed][i]
            real = sum(flops.cost(label) for label in chosen)
            row["seeds"][seed] = {"nominal_choice": chosen, "its_flops_cost": real, "over_budget_in_flops": real > b + 1e-9,
                                  "flops_choice": flops_choice[seed][i],
                                  "same_choice": chosen == flops_choice[seed][i]}
        nominal_vs_flops.append(row)

    specs = flops.specs
    rounds = []
    t0 = time.perf_counter()
    for r in range(args.rounds):
        medians = {}
        for spec in specs:
            samples = K.measure_latency(spec.tasks, spec.size, resolution, args.latency_batch, args.repeats)
            medians[spec.label] = statistics.median(samples)
        rounds.append(medians)
        print(f"latency round {r + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    labels = [s.label for s in specs]
    lat = np.array([[rnd[label] for label in labels] for rnd in rounds])  # (rounds, networks)
    spread = (lat.max(axis=0) - lat.min(axis=0)) / np.median(lat, axis=0)
    fl = np.array([flops.raw[label]["flops"] for label in labels])
    tables = []
    for rnd in rounds:
        raw = {label: {**flops.raw[label], "latency": rnd[label]} for label in labels}
        tables.append(K.CostTable("latency", names, specs, raw, resolution, args.latency_batch))
    latency_choice = [optimal_choices(gt, budgets, t) for t in tables]
    same_as_flops = [[all(lc[s][i] == flops_choice[s][i] for s in gt["runs"]) for i in range(len(budgets))]
                     for lc in latency_choice]
    same_between_rounds = [all(lc[s][i] == latency_choice[0][s][i] for lc in latency_choice for s in gt["runs"])
                           for i in range(len(budgets))]
    result = {
        "command": "python benchmarks/cost_kinds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "tasks": list(names), "resolution": resolution, "budgets": budgets, "seeds": list(gt["runs"]),
        "device": K.device_settings(), "load_average": os.getloadavg(),
        "flops_unit": flops.unit, "flops_minimum_budget": flops.minimum_budget(),
        "network_costs": {label: {"flops_units": flops.cost(label), "latency_seconds": [r[label] for r in rounds]}
                          for label in labels},
        "nominal_vs_flops": nominal_vs_flops,
        "nominal_choices_over_budget_in_flops": sum(s["over_budget_in_flops"] for row in nominal_vs_flops
                                                    for s in row["seeds"].values()),
        "choices_compared": len(budgets) * len(gt["runs"]),
        "nominal_choices_same_as_flops": sum(s["same_choice"] for row in nominal_vs_flops for s in row["seeds"].values()),
        "latency": {
            "rounds": args.rounds, "repeats": args.repeats, "batch": args.latency_batch,
            "spread_between_rounds_percent": {"median": 100 * float(np.median(spread)), "max": 100 * float(spread.max())},
            "spearman_with_flops_per_round": [spearman(row, fl) for row in lat],
            "latency_unit_seconds_per_round": [t.unit for t in tables],
            "minimum_budget_per_round": [t.minimum_budget() for t in tables],
            "budgets_where_latency_choices_equal_flops_choices_per_round": [sum(r) for r in same_as_flops],
            "budgets_where_latency_choices_agree_between_rounds": sum(same_between_rounds),
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    lt = result["latency"]
    print(f"nominal choices over their budget in FLOPs: {result['nominal_choices_over_budget_in_flops']} of "
          f"{result['choices_compared']}; same as the FLOPs choice: {result['nominal_choices_same_as_flops']}")
    print(f"latency: spread between rounds median {lt['spread_between_rounds_percent']['median']:.1f}% "
          f"(max {lt['spread_between_rounds_percent']['max']:.1f}%); Spearman with FLOPs "
          f"{', '.join(f'{v:.3f}' for v in lt['spearman_with_flops_per_round'])}; budgets where latency choices = "
          f"FLOPs choices {lt['budgets_where_latency_choices_equal_flops_choices_per_round']} of {len(budgets)}; "
          f"agree between rounds {lt['budgets_where_latency_choices_agree_between_rounds']} of {len(budgets)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

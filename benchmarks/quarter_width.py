"""Does a quarter-width single-task network earn a place among the candidates? Measured on the ground truth.

    python benchmarks/quarter_width.py        # trains 5 networks per seed (resumable), writes quarter_width.json

Trains each task of the committed ground truth alone with the encoder at
size 0.25 (channels x 0.5), at the ground truth's exact setting (data,
schedule, seeds), through a results store in --run-dir (kill and rerun to
resume); as a control, the half-size singles too, since the record may have
been trained by an older code version: their change against the record says
how far networks trained now compare with the record's. Then, per seed: each task's test loss at width 1, 0.5 and 0.25;
the FLOPs of each width in budget units (the mean full-size single-task
network); and the optimal choice (on validation losses, relative objective,
FLOPs costs) at every budget with and without the quarter-width networks
among the candidates, scored on test losses: does adding them change a
choice, and by how much does it change the test total?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUARTER = 0.25


def main(argv=None) -> int:
    from grouping import costs as K
    from grouping.objective import get_objective
    from grouping.dataspec import DataSpec
    from grouping.runner import NetSpec, Runner
    from grouping.selection import Network, minimum_budget, select_networks
    from grouping.store import ResultsStore
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ground-truth", default=str(ROOT / "benchmarks" / "results" / "ground_truth" / "ground_truth.json"))
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "quarter_width"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quarter_width.json"))
    args = p.parse_args(argv)
    gt = json.loads(Path(args.ground_truth).read_text())
    names = tuple(gt["tasks"])
    tasks = resolve_tasks(list(names))
    d = gt["settings"]["data"]
    data = DataSpec("scenes", d["resolution"], d["seed"], tuple(d["counts"]), labels=d.get("labels"))
    data_settings = data.check(tasks)
    if data_settings != d:
        raise SystemExit(f"this checkout renders other data than the record's ({data_settings} vs {d})")
    train = dict(gt["settings"]["train"])
    flops = K.cost_table(names, "flops", resolution=d["resolution"])
    quarter_cost = {t: K.flops((t,), QUARTER, d["resolution"]) / flops.unit for t in names}
    obj = get_objective("relative")
    budgets = [b / 2 for b in range(2, 2 * len(names) + 1)]
    from grouping.store import code_version

    out = {"command": "python benchmarks/quarter_width.py", "tasks": list(names), "resolution": d["resolution"],
           "record_code_version": gt["settings"].get("code_version"), "code_version": code_version(),
           "cost_in_units": {t: {"full": flops.cost(t), "half": flops.cost(f"half:{t}"), "quarter": quarter_cost[t]}
                             for t in names},
           "seeds": {}}
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ResultsStore(Path(args.run_dir) / "store.sqlite") as store:
        for seed, record in gt["runs"].items():
            cfg = TrainConfig(**{**train, "seed": int(seed)})
            runner = Runner(tasks, data, cfg, args.run_dir, store, progress=False, data_settings=data_settings)
            trained = runner.train([NetSpec((t,), QUARTER) for t in names], phase="quarter")
            # Control: the record's half-size singles retrained with this checkout's code (the record may be older).
            control = runner.train([NetSpec((t,), 0.5) for t in names], phase="control")
            control_test = {spec.tasks[0]: tr.loss(spec.tasks[0], "test") for spec, tr in control.items()}
            quarter = {f"quarter:{spec.tasks[0]}": {split: tr.loss(spec.tasks[0], split) for split in ("validation", "test")}
                       for spec, tr in trained.items()}
            val, test = record["validation"], record["test"]
            base = [Network(tuple(lab.removeprefix("half:").split("+")), flops.cost(lab), losses, lab)
                    for lab, losses in val.items()]
            extra = [Network((lab.split(":")[1],), quarter_cost[lab.split(":")[1]],
                             {lab.split(":")[1]: v["validation"]}, lab) for lab, v in quarter.items()]
            test_all = {**test, **{lab: {lab.split(":")[1]: v["test"]} for lab, v in quarter.items()}}
            val_ref = obj.reference(val, names)
            test_ref = obj.reference(test, names)

            def test_total(sel):
                per_task = {t: test_all[sel.assignment[t]][t] for t in names}
                return obj.total(per_task, test_ref)

            rows = []
            for with_quarter in (False, True):
                candidates = obj.table(base + (extra if with_quarter else []), val_ref)
                minimum = minimum_budget(candidates, tasks=names)
                feasible = [b for b in budgets if b >= minimum - 1e-9]
                sels = dict(zip(feasible, select_networks(candidates, feasible, tasks=names)))
                rows.append({"minimum_budget": minimum,
                             "choices": {str(b): sorted(nw.label for nw in s.networks) for b, s in sels.items()},
                             "test_total": {str(b): test_total(s) for b, s in sels.items()}})
            without, withq = rows
            out["seeds"][seed] = {
                "test_loss": {t: {"full": test[t][t], "half": test[f"half:{t}"][t], "quarter": quarter[f"quarter:{t}"]["test"]}
                              for t in names},
                "half_retrained_now_vs_record_percent": {
                    t: 100 * (control_test[t] / test[f"half:{t}"][t] - 1) for t in names},
                "without_quarter": without, "with_quarter": withq,
                "budgets_where_choice_changes": [b for b in withq["choices"] if withq["choices"][b] != without["choices"].get(b)],
                "test_total_change_percent": {b: 100 * (withq["test_total"][b] / without["test_total"][b] - 1)
                                              for b in withq["test_total"] if b in without["test_total"]},
            }
    out["seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for seed, row in out["seeds"].items():
        print(f"seed {seed}: minimum budget {row['without_quarter']['minimum_budget']:.3f} -> "
              f"{row['with_quarter']['minimum_budget']:.3f}; choices change at budgets "
              f"{', '.join(row['budgets_where_choice_changes']) or 'none'}; test total change (%) "
              + ", ".join(f"{b}: {v:+.2f}" for b, v in row["test_total_change_percent"].items()))
        for t, v in row["test_loss"].items():
            print(f"  {t}: test loss full {v['full']:.4f}, half {v['half']:.4f}, quarter {v['quarter']:.4f}; half "
                  f"retrained now {row['half_retrained_now_vs_record_percent'][t]:+.2f}% vs the record")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

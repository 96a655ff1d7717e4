"""How good is each estimator's choice, and what does it cost? A small-scale check.

    python benchmarks/estimator_quality.py            # about 15 minutes on 2 CPU cores

Runs scripts/find_groups.py with every method (exhaustive, esa, hoa, tag, cs)
on the same tasks, data and schedule, then scores every method's chosen
networks with the test losses of the exhaustively trained networks (each
task read from the network the method assigned it to). Reports, per budget,
the test total of each method's choice, the regret against the exhaustive
choice (selected on validation, like Standley et al.), and the wall time of
each method's find_groups run. Networks are shared through the results store
where their settings agree (hoa reuses the exhaustive run's singles and
pairs; cs reuses tag's run), so those two wall times leave out the reused
training. Writes benchmarks/results/estimator_quality.json.

--objective (default loss, the setting of the committed results) is passed
to find_groups and is what the test totals are (grouping.objective).

This is a small setting (32x32, few steps, one seed): a sanity check of the
pipeline and a first look, not the ground-truth study.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grouping.choose import score  # noqa: E402
from grouping.objective import get_objective  # noqa: E402

METHODS = ("exhaustive", "hoa", "esa", "tag", "cs")


def run_method(method: str, out: Path, args, reuse_from: Path | None) -> tuple[dict, float]:
    out.mkdir(parents=True, exist_ok=True)
    if reuse_from is not None and (reuse_from / "store.sqlite").exists() and not (out / "store.sqlite").exists():
        shutil.copy(reuse_from / "store.sqlite", out / "store.sqlite")
    cmd = [sys.executable, str(ROOT / "scripts" / "find_groups.py"), "--tasks", args.tasks, "--budget", args.budgets,
           "--method", method, "--objective", args.objective, "--resolution", str(args.resolution), "--steps", str(args.steps),
           "--counts", args.counts, "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "report.json").read_text()), time.perf_counter() - t0


def test_table(exhaustive: dict) -> dict[str, dict[str, float]]:
    """network label -> {task: test loss}, from the exhaustive run."""
    return {n["label"]: {t: v["loss"] for t, v in n["test"].items()} for n in exhaustive["trained_networks"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="seg,depth,normals,edges")
    p.add_argument("--budgets", default="1:4:0.5")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--counts", default="1000,200,200")
    p.add_argument("--objective", default="loss", help="relative or loss (default: loss, as committed)")
    p.add_argument("--work", default=str(ROOT / "runs" / "estimator_quality"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimator_quality.json"))
    args = p.parse_args()

    work = Path(args.work)
    reports, wall = {}, {}
    reuse = {"hoa": "exhaustive", "cs": "tag"}
    for m in METHODS:
        print(f"running {m} ...", file=sys.stderr, flush=True)
        reports[m], wall[m] = run_method(m, work / m, args, work / reuse[m] if m in reuse else None)

    table = test_table(reports["exhaustive"])
    tasks = reports["exhaustive"]["tasks"]
    all_label = "+".join(tasks)
    objective = get_objective(args.objective)
    reference = objective.reference(table, tasks)
    results = {}
    for m, rep in reports.items():
        rows = []
        for sel in rep["selections"]:
            # None: a network the exhaustive run did not train
            total = score([n["label"] for n in sel["networks"]], table, tasks, objective, reference, sel["assignment"])
            rows.append({"budget": sel["budget"], "networks": [n["label"] for n in sel["networks"]],
                         "test_total": total})
        results[m] = rows
    optimal = {r["budget"]: r["test_total"] for r in results["exhaustive"]}
    all_in_one = score([all_label], table, tasks, objective, reference)
    summary = {}
    for m, rows in results.items():
        regrets = [100.0 * (r["test_total"] / optimal[r["budget"]] - 1.0) for r in rows
                   if r["test_total"] is not None and optimal.get(r["budget"])]
        for r, g in zip(rows, regrets):
            r["regret_pct"] = g
        summary[m] = {"mean_regret_pct": sum(regrets) / len(regrets) if regrets else None,
                      "wall_seconds": wall[m]}
    out = {
        "settings": vars(args),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d")},
        "all_in_one_test_total": all_in_one,
        "results": results,
        "summary": summary,
        "note": "wall_seconds is each find_groups run's wall time (hoa and cs reuse stored networks, so theirs "
                "understate a fresh run); see the per-method trained networks in runs/estimator_quality/*/report.json",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    budgets = [r["budget"] for r in results["exhaustive"]]
    print(f"{'method':<11}" + "".join(f"{b:>9g}" for b in budgets) + "  mean regret   wall s")
    for m, rows in results.items():
        cells = "".join(f"{r['test_total']:>9.4f}" if r["test_total"] is not None else f"{'-':>9}" for r in rows)
        g = summary[m]["mean_regret_pct"]
        print(f"{m:<11}{cells}  {g:>+10.2f}%  {wall[m]:>7.0f}" if g is not None else f"{m:<11}{cells}")
    print(f"all tasks in one network: test total {all_in_one:.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

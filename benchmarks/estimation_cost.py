"""What each estimator costs, in units of one all-task training run.

In one process, on the same data and machine, after an untimed 10-step
warm-up: one network of all the tasks trained with the full schedule and
evaluated (`mtl.train.train_and_evaluate`, the unit: timed before and after
the estimators, the mean is used), then each registered estimator
(`grouping.methods`), cheapest first by its own `Method.cost`, run from
scratch through `Method.estimate` with an empty results store of its own
(nothing reused):

  tag, cs      one all-task run that also measures the lookahead affinity
               (or the gradient cosine) every --every steps; in find_groups
               both come from the same run;
  lookahead    one all-task run measuring the corrected lookahead every
               --every steps, and the singles (full and half) as ensembles;
  surrogate    the singles (full and half), the all-task network and
               --surrogate-samples random subsets, as ensembles;
  quick        the singles (full and half) and the all-task network with
               --quick-fraction of the schedule, as ensembles;
  hoa          the singles (full and half) and the pairs, as ensembles;
  esa          every candidate network with the short schedule (--esa-fraction);
  exhaustive   every candidate network with the full schedule.

Wall times exclude rendering/loading the data (done once, up front) and
include compilation and evaluation, as a user pays them. Prints a table and,
last, `tag_cost_all_task_runs=<float>`; writes
benchmarks/results/estimation_cost.json (its "units" are what
scripts/ground_truth.py quotes beside each estimator's regret).

    python benchmarks/estimation_cost.py [--resolution 32] [--steps 600]

The defaults are the ground truth's tasks, data, resolution and schedule
(scripts/ground_truth.py: 600 steps), so the cost quoted beside each
estimator's regret is measured where the regret is. Compilation is a fixed
cost, so a shorter schedule gives higher ratios (README: quick at 300 steps).

Fifty et al. (2021) report TAG 11.6x faster than the earlier method (HOA-style
pair training) on Taskonomy; the ratio hoa/tag here is printed beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from grouping.methods import QUICK_FRACTION, SURROGATE_SAMPLES, MethodSettings, get_method, method_names  # noqa: E402
from grouping.dataspec import DataSpec  # noqa: E402
from grouping.runner import Runner  # noqa: E402
from grouping.store import ResultsStore  # noqa: E402
from mtl import runtime  # noqa: E402
from mtl.cli import parse_counts  # noqa: E402
from mtl.train import TrainConfig, train_and_evaluate  # noqa: E402
from tasks.registry import resolve_tasks  # noqa: E402

PAPER_TAG_SPEEDUP = 11.6


def by_cost(names, steps: int) -> list[str]:
    """The registered methods, cheapest first (training steps in all, from each method's `cost`)."""
    def work(m):
        cost = get_method(m).cost(names, steps, MethodSettings())
        return cost.trainings * cost.steps

    return sorted(method_names(), key=work)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="seg,depth,normals,keypoints,edges", help="default: the ground truth's five tasks")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=600, help="the full schedule (default: the ground truth's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--counts", default="4000,500,500", help="default: the ground truth's data")
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method, cheapest first)")
    p.add_argument("--surrogate-samples", type=int, default=SURROGATE_SAMPLES,
                   help="surrogate: random task subsets besides the singles and the all-task network")
    p.add_argument("--quick-fraction", type=float, default=QUICK_FRACTION,
                   help="quick: fraction of the schedule each of its networks is trained for")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimation_cost.json"))
    args = p.parse_args(argv)
    process_settings = runtime.tune_process()  # as the scripts do (mtl.cli.run)
    tasks = resolve_tasks(args.tasks, min_tasks=2)
    names = tuple(t.name for t in tasks)
    methods = [m for m in args.methods.split(",") if m] if args.methods else by_cost(names, args.steps)
    try:
        method_settings = MethodSettings(samples=args.surrogate_samples, quick_fraction=args.quick_fraction)
        get_method("quick").validate(method_settings)
        planned = {m: get_method(m).cost(names, args.steps, method_settings) for m in methods}
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    data = DataSpec("scenes", args.resolution, 0, parse_counts(args.counts))
    settings = data.check(tasks)
    t0 = time.perf_counter()
    splits = data.load(tasks)
    print(f"data: {time.perf_counter() - t0:.1f} s", flush=True)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size)
    load_before = os.getloadavg()

    def all_task_run() -> float:
        t = time.perf_counter()
        train_and_evaluate(tasks, splits, cfg, progress=False)
        return time.perf_counter() - t

    # Warm-up, untimed: the process's first compilations and allocations
    # would otherwise fall on whichever run comes first.
    train_and_evaluate(tasks, splits, dataclasses.replace(cfg, steps=10), progress=False)
    unit_runs = [all_task_run()]
    print(f"all-task run: {unit_runs[0]:.1f} s", flush=True)
    seconds, trained = {}, {}
    for method in methods:
        with tempfile.TemporaryDirectory() as tmp, ResultsStore(Path(tmp) / "store.sqlite") as store:
            # The data were loaded once above: not part of any estimator's cost.
            runner = Runner(tasks, data, dataclasses.replace(cfg, steps_per_call=25), tmp, store, progress=False,
                            data_settings=settings, splits=splits)
            t = time.perf_counter()
            get_method(method).estimate(runner, method_settings)
            seconds[method] = time.perf_counter() - t
            trained[method] = sum(1 for e in runner.log if not e["reused"])
        if trained[method] != planned[method].trainings:
            raise SystemExit(f"error: {method} trained {trained[method]} networks, its cost says "
                             f"{planned[method].trainings}")
        print(f"{method}: {seconds[method]:.1f} s ({planned[method].what}, {planned[method].steps} steps)", flush=True)
    unit_runs.append(all_task_run())
    unit = sum(unit_runs) / len(unit_runs)
    units = {m: s / unit for m, s in seconds.items()}
    print(f"\nall-task run (the unit): {unit:.1f} s (before {unit_runs[0]:.1f}, after {unit_runs[1]:.1f})")
    print(f"{'estimator':<12}{'seconds':>9}{'all-task runs':>15}{'trainings':>11}{'steps each':>12}")
    for m in methods:
        print(f"{m:<12}{seconds[m]:>9.1f}{units[m]:>15.2f}{trained[m]:>11}{planned[m].steps:>12}")
    ratio = units["hoa"] / units["tag"] if "hoa" in units and "tag" in units else None
    if ratio is not None:
        print(f"hoa / tag = {ratio:.1f}x here; Fifty et al. report TAG {PAPER_TAG_SPEEDUP}x faster than the prior method")
    device = jax.devices()[0]
    result = {
        "benchmark": "estimation_cost", "command": "python benchmarks/estimation_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "process_settings": process_settings,
        "device": {"platform": device.platform, "kind": device.device_kind, "cpus": os.cpu_count(),
                   "machine": platform.machine()},
        "tasks": [t.name for t in tasks], "resolution": args.resolution, "steps": args.steps,
        "batch_size": args.batch_size, "counts": list(parse_counts(args.counts)),
        "all_task_run_seconds": unit_runs, "seconds": seconds, "units": units, "trainings": trained,
        "steps_each": {m: planned[m].steps for m in methods}, "surrogate_samples": args.surrogate_samples,
        "quick_fraction": args.quick_fraction,
        "hoa_over_tag": ratio, "paper_tag_speedup_over_prior": PAPER_TAG_SPEEDUP,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if "tag" in units:
        print(f"tag_cost_all_task_runs={units['tag']:.3f}")


if __name__ == "__main__":
    main()

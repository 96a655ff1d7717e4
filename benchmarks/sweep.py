"""A sweep of every subset network, as an ensemble and one by one.

All 2^n - 1 subset networks of the tasks (15 of seg, depth, normals, edges;
with --five also the 31 of those and keypoints) train for the same steps on
the same data, twice in one process:

* one by one: `mtl.train.train_network` per network (what the estimators did
  before ensembles: one compilation, one dispatch stream each);
* as one ensemble: `mtl.ensemble.train_ensemble` (one program; members
  unrolled on a CPU, vmapped on a GPU).

The times are end to end (compilation included, as a user pays it); the
steady-state time per step of each form is measured apart, after warm-up.
The members' final losses are compared with the one-by-one networks'
(they must agree to float32 rounding). Prints a table and, last,
`ensemble_speedup=<one-by-one wall / ensemble wall>` of the first task set;
writes benchmarks/results/sweep_<platform>.json.

    python benchmarks/sweep.py [--resolution 32] [--steps 100] [--five]

On a GPU, --dtype bfloat16 and the model FLOPs utilisation (XLA's FLOP
count of the ensemble step / its time / --peak-tflops) are reported too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mtl import runtime  # noqa: E402
from mtl.ensemble import train_ensemble  # noqa: E402
from mtl.stacked import Ensemble, make_ensemble_train_fn, resolve_strategy  # noqa: E402
from mtl.train import TrainConfig, initial_state, make_optimizer, to_device, train_network  # noqa: E402
from tasks.registry import resolve_tasks  # noqa: E402
from tasks.scenes import render_scenes  # noqa: E402

FOUR = "seg,depth,normals,edges"
FIVE = "seg,depth,normals,edges,keypoints"


def subsets(names: str):
    tasks = resolve_tasks(names)
    return [list(c) for r in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, r)]


def steady_step_seconds(members, data, cfg, strategy, repeats: int = 5) -> tuple[float, float | None]:
    """(seconds per ensemble step after warm-up, XLA's FLOPs of one step or None)."""
    ens = Ensemble.create(members, cfg)
    tx = make_optimizer(cfg)
    state = initial_state(ens.params, tx)
    dev = to_device(data, tuple({t.name: t for m in members for t in m}.values()))
    step = make_ensemble_train_fn(ens, tx, cfg, strategy)
    compiled = step.lower(state, dev).compile()
    flops = None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops")) if cost and cost.get("flops") else None
    except Exception:
        pass
    for _ in range(2):
        state, losses = step(state, dev)
    jax.block_until_ready(losses)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(5):
            state, losses = step(state, dev)
        jax.block_until_ready(losses)
        best = min(best, (time.perf_counter() - t0) / 5)
    return best, flops


def sweep(names: str, data, cfg, strategy: str) -> dict:
    members = subsets(names)
    print(f"{names}: {len(members)} networks, {cfg.steps} steps each", flush=True)
    t0 = time.perf_counter()
    alone = [train_network(m, data, cfg, progress=False) for m in members]
    one_by_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    results, _, _ = train_ensemble(members, data, cfg, strategy=strategy, progress=False)
    ensemble = time.perf_counter() - t0
    diff = max(float(np.abs(a.losses[-1] - r.losses[-1]).max()) for a, r in zip(alone, results))
    steady, flops = steady_step_seconds(members, data, cfg, strategy)
    out = {
        "tasks": names, "networks": len(members), "steps": cfg.steps,
        "one_by_one_seconds": one_by_one, "ensemble_seconds": ensemble,
        "ensemble_speedup": one_by_one / ensemble,
        "ensemble_step_seconds_steady": steady,
        "network_steps_per_second": {"one_by_one": len(members) * cfg.steps / one_by_one,
                                     "ensemble": len(members) * cfg.steps / ensemble},
        "max_final_loss_difference": diff,
        "ensemble_step_flops": flops,
    }
    print(f"  one by one {one_by_one:7.1f} s   ensemble {ensemble:7.1f} s   speedup {one_by_one / ensemble:.2f}x   "
          f"(steady ensemble step {steady * 1e3:.0f} ms; final losses agree to {diff:.1e})", flush=True)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=256, help="training images rendered")
    p.add_argument("--five", action="store_true", help="also the 31 subset networks of five tasks")
    p.add_argument("--strategy", default="auto", help="auto | unroll | vmap")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 (GPU)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak TFLOP/s at --dtype, for the FLOPs utilisation (e.g. 989 for an H100 SXM at bf16)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    runtime.tune_process()  # as the scripts do (mtl.cli.run)
    strategy = resolve_strategy(args.strategy)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, dtype=args.dtype, steps_per_call=25)
    data = render_scenes(seed=0, count=args.images, resolution=args.resolution)
    device = jax.devices()[0]
    load_before = os.getloadavg()
    runs = [sweep(FOUR, data, cfg, strategy)]
    if args.five:
        runs.append(sweep(FIVE, data, cfg, strategy))
    for run in runs:
        if args.peak_tflops and run["ensemble_step_flops"]:
            run["mfu"] = run["ensemble_step_flops"] / run["ensemble_step_seconds_steady"] / (args.peak_tflops * 1e12)
            print(f"  {run['tasks']}: model FLOPs utilisation {run['mfu']:.1%}")
    result = {
        "benchmark": "sweep", "command": "python benchmarks/sweep.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": {"platform": device.platform, "kind": device.device_kind, "count": len(jax.devices()),
                   "cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor()},
        "jax": jax.__version__, "strategy": strategy, "resolution": args.resolution, "batch_size": args.batch_size,
        "dtype": args.dtype, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "runs": runs,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"sweep_{device.platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    print(f"ensemble_speedup={runs[0]['ensemble_speedup']:.3f}")


if __name__ == "__main__":
    main()

"""Training-step time of each balancing method (mtl/balancing.py) relative to equal weights.

The standard network (seg, depth, normals, edges; 64x64, batch 32, AdamW) is
trained with the project's one jitted step (mtl.step.make_step) under every
method. The methods take turns, `--repeats` rounds of `--steps` steps each,
so load from other jobs hits them alike; a method's time per step is the
median over rounds, and `relative_to_equal` the ratio of medians, side by
side from one run (a per-round ratio is kept too).

    python benchmarks/balancing_cost.py [--steps 10] [--repeats 7] [--resolution 64]

Writes benchmarks/results/balancing_cost.json with the load average before
and after (the ratios mean little on a busy machine: say so when quoting).
"""

from __future__ import annotations

import argparse
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
from flax import nnx  # noqa: E402

from mtl.balancing import METHODS  # noqa: E402
from mtl.train import TrainConfig, build_model, initial_state, make_optimizer, make_train_fn, to_device  # noqa: E402
from tasks.registry import resolve_tasks  # noqa: E402
from tasks.scenes import render_scenes  # noqa: E402

TASKS = "seg,depth,normals,edges"


def step_fn(method: str, data, batch: int, steps: int):
    tasks = resolve_tasks(TASKS)
    cfg = TrainConfig(batch_size=batch, steps=steps, balance=method)
    graphdef, params = nnx.split(build_model(tasks, cfg), nnx.Param)
    tx = make_optimizer(cfg)
    run = make_train_fn(graphdef, tasks, tx, cfg)
    device_data = to_device(data, tasks)
    holder = {"state": initial_state(params, tx, cfg, len(tasks))}

    def step():
        holder["state"], losses = run(holder["state"], device_data)
        return losses

    return step


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--repeats", type=int, default=7, help="rounds")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--images", type=int, default=256, help="rendered scenes to sample batches from")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated; equal is always included")
    p.add_argument("--note", default="", help="a remark stored with the results (e.g. that the machine was busy)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "balancing_cost.json"))
    args = p.parse_args()
    methods = ["equal"] + [m for m in args.methods.split(",") if m and m != "equal"]
    data = render_scenes(0, args.images, args.resolution)
    load_before = load_average()
    fns = {m: step_fn(m, data, args.batch, args.steps * args.repeats + 1) for m in methods}
    for m, fn in fns.items():  # compile and warm up
        np.asarray(fn())
    rounds: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        for m, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                losses = fn()
            np.asarray(losses)
            rounds[m].append((time.perf_counter() - t0) / args.steps)
    median = {m: float(np.median(v)) for m, v in rounds.items()}
    results = {
        "what": f"seconds per training step, {TASKS}, {args.resolution}x{args.resolution}, batch {args.batch}, AdamW; "
                "median over rounds; relative_to_equal = median / equal's median",
        "command": "python benchmarks/balancing_cost.py " + " ".join(sys.argv[1:]),
        "note": args.note,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
                    "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
                    "date": time.strftime("%Y-%m-%d %H:%M")},
        "load_average_before_after": [load_before, load_average()],
        "steps_per_round": args.steps, "rounds": args.repeats,
        "seconds_per_step": median,
        "relative_to_equal": {m: median[m] / median["equal"] for m in methods},
        "relative_to_equal_per_round": {m: [a / b for a, b in zip(rounds[m], rounds["equal"])] for m in methods},
        "rounds_seconds_per_step": rounds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for m in methods:
        print(f"{m:<12} {median[m] * 1e3:8.1f} ms/step  x{median[m] / median['equal']:.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What creating networks costs from cold: `mtl.model.kernel_init` and `bias_init` against Flax's own
initialisers.

    python benchmarks/init_cost.py [--out benchmarks/results/init_cost.json]

Each measurement runs in a fresh process (compiled programs are cached per process), on the
ground truth's tasks: the first full-size network, then the first half-size one; and, in a process
of its own, quick's two ensembles (the 5 singles and the all-task network at full size, the 5
half-size singles; `mtl.stacked.Ensemble.create`). Both sides draw the same values (tests/test_model.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(flax_init: bool, part: str) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import jax
    from flax import nnx

    import mtl.model
    from mtl.stacked import Ensemble
    from mtl.train import TrainConfig, build_model
    from tasks.registry import resolve_tasks

    if flax_init:
        mtl.model.kernel_init = nnx.initializers.lecun_normal()
        mtl.model.bias_init = nnx.initializers.zeros_init()
    tasks = resolve_tasks("s,d,n,k,t")
    out = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        jax.block_until_ready(jax.tree.leaves(fn()))
        out[name] = time.perf_counter() - t0

    if part == "networks":
        timed("first_network_s", lambda: nnx.state(build_model(tasks, TrainConfig()), nnx.Param))
        timed("first_half_size_network_s", lambda: nnx.state(build_model(tasks, TrainConfig(size=0.5)), nnx.Param))
        return out
    singles = [(t,) for t in tasks]
    timed("quick_ensembles_s", lambda: (Ensemble.create(singles + [tuple(tasks)], TrainConfig()).params,
                                        Ensemble.create(singles, TrainConfig(size=0.5)).params))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "init_cost.json"))
    p.add_argument("--side", choices=("ours", "flax"), help=argparse.SUPPRESS)  # one measurement, in a child process
    p.add_argument("--part", choices=("networks", "ensembles"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side:
        print(json.dumps(measure(args.side == "flax", args.part)))
        return 0
    result = {}
    for side in ("flax", "ours"):
        result[side] = {}
        for part in ("networks", "ensembles"):
            run = subprocess.run([sys.executable, __file__, "--side", side, "--part", part], capture_output=True,
                                 text=True, check=True)
            result[side].update(json.loads(run.stdout.strip().splitlines()[-1]))
        print(side, {k: round(v, 2) for k, v in result[side].items()})
    result["command"] = "python benchmarks/init_cost.py"
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"quick_ensembles_speedup={result['flax']['quick_ensembles_s'] / result['ours']['quick_ensembles_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

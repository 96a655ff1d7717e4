#!/usr/bin/env python
"""Train one multi-task network and print its per-task losses and metrics.

    python scripts/train.py --tasks seg,depth,normals,edges --steps 1500

Uses the embedded scenes by default (rendered once, then cached), or a
directory in the Taskonomy layout with --data. Checkpoints go to --out; rerun
the same command after an interruption and it resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl import cli  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="seg,depth,normals,edges", help="task names or aliases, comma-separated")
    p.add_argument("--data", default="scenes", help="'scenes' (embedded) or a Taskonomy-layout directory")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--counts", default="4000,500,500", help="train,validation,test images of the scenes")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the rendered scenes")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--size", type=float, default=1.0, help="encoder size: 1 full, 0.5 half")
    p.add_argument("--seed", type=int, default=0, help="initialisation and minibatch seed")
    p.add_argument("--bf16", action="store_true", help="compute in bfloat16 (for GPUs)")
    p.add_argument("--out", default=None, help="checkpoint directory (default runs/train-<time>)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mtl.model import check_resolution
    from mtl.train import TrainConfig, train_and_evaluate
    from tasks.datasets import load_for_tasks
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(args.tasks)
    check_resolution(args.resolution)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer,
                      learning_rate=args.lr, size=args.size, seed=args.seed,
                      dtype="bfloat16" if args.bf16 else "float32")
    counts = cli.parse_counts(args.counts) if args.data == "scenes" else None
    t0 = time.perf_counter()
    splits = load_for_tasks(args.data, tasks, resolution=args.resolution, seed=args.data_seed, counts=counts)
    load_s = time.perf_counter() - t0
    out = Path(args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    report = train_and_evaluate(tasks, splits, cfg, checkpoint_dir=out / "checkpoint")
    report["data_seconds"] = load_s
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"network {'+'.join(t.name for t in tasks)} (size {cfg.size:g}), {cfg.steps} steps, "
          f"data {load_s:.1f} s, training {report['train_seconds']:.1f} s"
          + (f" (resumed at step {report['resumed_from']})" if report["resumed_from"] else ""))
    print(f"{'task':<12}{'val loss':>10}{'test loss':>11}  test metrics")
    for t in tasks:
        v, te = report["validation"][t.name], report["test"][t.name]
        metrics = ", ".join(f"{k} {val:.4g}" for k, val in te.items() if k != "loss")
        print(f"{t.name:<12}{v['loss']:>10.4f}{te['loss']:>11.4f}  {metrics}")
    print(f"total       {sum(report['validation'][t.name]['loss'] for t in tasks):>10.4f}"
          f"{sum(report['test'][t.name]['loss'] for t in tasks):>11.4f}")
    print(f"checkpoint: {out / 'checkpoint'}")
    return 0


if __name__ == "__main__":
    cli.run(main)

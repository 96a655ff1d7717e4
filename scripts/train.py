#!/usr/bin/env python
"""Train one multi-task network and print its per-task losses and metrics.

    python scripts/train.py --tasks seg,depth,normals,edges --steps 1500

Uses the embedded scenes by default (rendered once, then cached), or a
folder with --data: nyuv2:DIR, cityscapes:DIR, celeba:DIR, taskonomy:DIR, or
a DIR whose layout is recognised (README "Your own data"). The run directory (printed
first) is a function of the settings: runs/train-<tasks>-<hash of the data
and training settings and the package source>, unless --out names one. It
holds the orbax checkpoints (every --checkpoint-every steps): rerun the same
command after an interruption and it resumes from the last one. Every number
is checked before any data is rendered: a bad one is one 'error: ...' line
and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl import cli, options  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=options.HelpFormatter)
    p.add_argument("--tasks", default="seg,depth,normals,edges", help="task names or aliases, comma-separated")
    p.add_argument("--data", default="scenes", help="'scenes' (embedded), nyuv2:DIR, cityscapes:DIR, celeba:DIR, "
                   "taskonomy:DIR, or a DIR in one of those layouts")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels: a multiple of 8, 32 to 256")
    p.add_argument("--counts", default="4000,500,500", help="train,validation,test images of the scenes")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the rendered scenes")
    p.add_argument("--labels", default=None,
                   help="which training scenes keep which labels (tasks/label_plan.py; default scarce: seg and depth "
                        "labelled on a few hundred scenes each); full: every label everywhere; scenes only")
    p.add_argument("--task-weights", default=None,
                   help="training loss weights, e.g. seg=3,depth=3; '' for none (default: the label plan's)")
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="adamw, or sgd with momentum 0.9")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (linear warm-up, cosine decay)")
    p.add_argument("--size", type=float, default=1.0,
                   help=f"encoder width: {' or '.join(f'{s:g}' for s in options.SIZES)} (1 full, 0.5 half size)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and minibatch seed")
    p.add_argument("--balance", default="equal",
                   help="how the task losses are combined (mtl/balancing.py): " + " | ".join(_balancing_methods()))
    p.add_argument("--bf16", action="store_true", help="compute in bfloat16 (for GPUs)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--out", default=None,
                   help="run directory for the checkpoints (default runs/train-<tasks>-<settings hash>: "
                        "the same command resumes)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _balancing_methods() -> list[str]:
    from mtl.balancing import METHODS

    return list(METHODS)


def run_settings(tasks, args, cfg, counts, labels=None) -> dict:
    """What the default run directory's hash covers: everything that changes the numbers."""
    from grouping.runner import train_settings
    from grouping.store import code_version

    from grouping.dataspec import _folder_source

    source = "scenes" if args.data == "scenes" else _folder_source(args.data)
    return {"tasks": [t.name for t in tasks],
            "data": {"source": source, "resolution": args.resolution,
                     **({"seed": args.data_seed, "counts": list(counts)} if counts else {}),
                     **({"labels": labels} if labels else {})},
            "train": train_settings(cfg), "code_version": code_version()}


def default_run_dir(settings: dict) -> Path:
    """runs/train-<tasks>-<first 10 hex digits of sha256 of the settings>: the same settings, the same folder."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path("runs") / f"train-{'+'.join(settings['tasks'])}-{digest}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from grouping.dataspec import DataSpec
    from mtl.train import TrainConfig, train_and_evaluate
    from tasks.sources import parse_source, resolve

    # Every number first: nothing is rendered or trained with a bad one.
    kind = parse_source(args.data).kind  # a missing folder or an unknown kind: one error line now
    tasks = resolve(kind, args.tasks)
    options.check_training(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed_value=args.seed,
                           data_seed=args.data_seed, resolution=args.resolution, size_value=args.size,
                           checkpoint_every=args.checkpoint_every)
    counts = cli.parse_counts(args.counts) if kind == "scenes" else None
    labels = cli.scene_labels(kind == "scenes", args.labels)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer,
                      learning_rate=args.lr, size=args.size, seed=args.seed,
                      dtype="bfloat16" if args.bf16 else "float32", checkpoint_every=args.checkpoint_every,
                      balance=args.balance, task_weights=cli.task_weights_for(labels, args.task_weights, tasks))
    settings = run_settings(tasks, args, cfg, counts, labels)
    out = Path(args.out) if args.out else default_run_dir(settings)
    info = sys.stderr if args.json else sys.stdout
    print(f"run directory {out} (rerun the same command to resume from its checkpoints)", file=info, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    t0 = time.perf_counter()
    # the scenes without tensorflow-datasets: rendered in memory, the same arrays
    splits = DataSpec(args.data, args.resolution, args.data_seed, counts, labels=labels).load(
        tasks, progress=not args.quiet)
    load_s = time.perf_counter() - t0
    report = train_and_evaluate(tasks, splits, cfg, checkpoint_dir=out / "checkpoint", progress=not args.quiet)
    report["data_seconds"] = load_s
    report["run_dir"] = str(out)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"network {'+'.join(t.name for t in tasks)} (size {cfg.size:g}"
          + (f", {cfg.balance} balancing" if cfg.balance != "equal" else "") + f"), {cfg.steps} steps, "
          f"data {load_s:.1f} s, training {report['train_seconds']:.1f} s"
          + ("" if not report["resumed_from"] else " (already finished: read back from its checkpoint)"
             if report["resumed_from"] == cfg.steps else f" (resumed at step {report['resumed_from']})"))
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

#!/usr/bin/env python
"""Does grouping matter on the embedded scenes? Train together vs alone.

    python scripts/sharing_study.py            # about 30-40 minutes on 2 CPU cores

Trains seg, depth, normals and edges in one network and each task alone
(the standard network, 64x64, the standard schedule), with two seeds, and
writes benchmarks/results/sharing_study.json: per task, the test loss
together and alone (mean and the two seeds), the relative change, and
whether the change is larger than the seed-to-seed spread. Finished
networks are kept in that file, and a network in training checkpoints
under runs/sharing_study/, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtl import cli, options  # noqa: E402


def verdicts(runs: dict, tasks: list[str], seeds: list[int]) -> dict:
    """Per task: together vs alone test loss over seeds, and the verdict.

    A task gains (or loses) from sharing when the difference of the seed
    means exceeds the larger of the two seed-to-seed spreads (max - min).
    """
    import numpy as np

    out = {}
    for t in tasks:
        together = np.array([runs[f"all/seed{s}"]["test"][t]["loss"] for s in seeds])
        alone = np.array([runs[f"{t}/seed{s}"]["test"][t]["loss"] for s in seeds])
        spread = float(max(np.ptp(together), np.ptp(alone)))
        diff = float(together.mean() - alone.mean())
        out[t] = {
            "together": together.tolist(),
            "alone": alone.tolist(),
            "together_mean": float(together.mean()),
            "alone_mean": float(alone.mean()),
            "change_pct": 100.0 * diff / float(alone.mean()),
            "seed_spread": spread,
            "verdict": "gains from sharing" if diff < -spread else "loses from sharing" if diff > spread else "within seed noise",
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=options.HelpFormatter)
    p.add_argument("--tasks", default="seg,depth,normals,edges", help="task names or aliases, comma-separated")
    p.add_argument("--seeds", default="0,1", help="training seeds, comma-separated")
    p.add_argument("--steps", type=int, default=1500, help="training steps of each network")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels: a multiple of 8, 32 to 256")
    p.add_argument("--counts", default="4000,500,500", help="train,validation,test scenes")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sharing_study.json"),
                   help="the study's JSON (finished networks are kept in it)")
    p.add_argument("--work", default=str(ROOT / "runs" / "sharing_study"), help="checkpoints of unfinished networks")
    args = p.parse_args(argv)

    import jax

    from mtl.train import TrainConfig, train_and_evaluate
    from grouping.dataspec import DataSpec
    from tasks.scene_data import renderer_fingerprint
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(args.tasks, min_tasks=2)
    names = [t.name for t in tasks]
    seeds = [int(s) for s in args.seeds.split(",")]
    counts = cli.parse_counts(args.counts)
    config = {k: v for k, v in dataclasses.asdict(TrainConfig(steps=args.steps)).items() if k != "seed"}
    code = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in ("mtl/model.py", "mtl/train.py", "tasks/registry.py")))
    settings = {"code": code.hexdigest()[:12], "tasks": names, "seeds": seeds, "resolution": args.resolution, "counts": list(counts),
                "data": f"scenes, data seed 0, renderer {renderer_fingerprint()}", "train_config": config}
    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {}
    if state.get("settings", settings) != settings:
        raise ValueError(f"{out} holds a study with other settings; move it away or pass --out")
    runs = state.get("runs", {})
    splits = DataSpec("scenes", args.resolution, 0, counts).load(tasks)
    jobs = [("all", tasks)] + [(t.name, (t,)) for t in tasks]
    for seed in seeds:
        for label, group in jobs:
            key = f"{label}/seed{seed}"
            if key in runs:
                continue
            cfg = TrainConfig(steps=args.steps, seed=seed)
            print(f"[{len(runs) + 1}/{len(jobs) * len(seeds)}] {key}", file=sys.stderr)
            rep = train_and_evaluate(group, splits, cfg,
                                     checkpoint_dir=Path(args.work) / key.replace("/", "_"))
            runs[key] = rep
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"settings": settings, "runs": runs}, indent=1))
            tmp.replace(out)  # atomic: a kill never leaves half a file
    result = {
        "settings": settings,
        "machine": {"platform": platform.platform(), "jax": jax.__version__, "backend": jax.default_backend(),
                    "date": time.strftime("%Y-%m-%d")},
        "tasks": verdicts(runs, names, seeds),
        "runs": runs,
    }
    out.write_text(json.dumps(result, indent=1))
    print(f"{'task':<10}{'together':>10}{'alone':>10}{'change':>9}{'spread':>9}  verdict")
    for t, r in result["tasks"].items():
        print(f"{t:<10}{r['together_mean']:>10.4f}{r['alone_mean']:>10.4f}{r['change_pct']:>8.1f}%"
              f"{r['seed_spread']:>9.4f}  {r['verdict']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)

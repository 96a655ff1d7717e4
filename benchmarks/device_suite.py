"""The speed suite for a machine with one GPU: one script, one JSON, under 8 minutes.

Parts (each timed; one that fails records its error and the rest still run;
the JSON is rewritten after every part, so a run cut short keeps what it had):

1. ``train_step``: one training step of the standard network (4 tasks, 64x64,
   batch 32), our jitted step against its PyTorch twin (benchmarks/torch_twin.py,
   channels-last, cuDNN autotuning on), at float32 and bfloat16 (our
   TrainConfig.dtype; PyTorch's autocast). Interleaved rounds, best of each.
2. ``sweep``: the 15 subset networks of 4 tasks (64x64) trained and evaluated
   three ways: ours as one ensemble (vmapped on a GPU), ours one network after
   another (mtl.train.train_and_evaluate), and PyTorch one after another
   (Standley's way). Walls include compilation.
3. ``mfu``: that sweep's ensemble step at bfloat16: XLA's FLOP count of the
   compiled step and the model FLOPs (3x the forward FLOPs of mtl.cost, per
   image, times batch and members) over its steady time and the device's
   peak dense bf16 FLOP/s (PEAK_BF16_TFLOPS by device kind, or --peak-tflops).
4. ``find_groups``: the default find_groups run (its default method, 4 tasks, 64x64, 500
   steps, budget 2) from cold, data included: the command's own path. Where
   tensorflow-datasets and array_record are not installed (a plain GPU image
   with jax and PyTorch), that path renders the scenes in memory
   (grouping.dataspec.DataSpec: the same arrays and store keys), and the JSON says so.
5. ``ground_truth_slice``: the ground truth's 36 networks (5 tasks) at
   128x128 for a short schedule, as ensembles with evaluation, and the
   network-steps per second that projects the full study from.

    pip install -e '.[bench]'                        # PyTorch, if the image lacks it
    python benchmarks/device_suite.py --out benchmarks/results/device_suite_<gpu>.json
    python benchmarks/device_suite.py --smoke --out /tmp/smoke.json   # CPU, tiny sizes, < 1 min

Without PyTorch the PyTorch halves are skipped (recorded as such); the JAX
parts run. Prints one line per part and, last, the JSON's path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Peak dense bfloat16 TFLOP/s (no sparsity) by a substring of jax's device_kind, most specific first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each part is: the GPU suite's sizes, or --smoke's."""

    step_tasks: str = "seg,depth,normals,edges"
    step_resolution: int = 64
    step_batch: int = 32
    step_steps: int = 20
    step_repeats: int = 5
    sweep_tasks: str = "seg,depth,normals,edges"
    sweep_resolution: int = 64
    sweep_steps: int = 300
    sweep_counts: tuple[int, int] = (2000, 250)
    fg_tasks: str = "seg,depth,normals,edges"
    fg_resolution: int = 64
    fg_steps: int = 500  # grouping.find_groups.DEFAULT_STEPS
    fg_counts: tuple[int, int, int] = (4000, 500, 500)  # tasks.scene_data.DEFAULT_COUNTS
    fg_budget: float = 2.0
    gt_tasks: str = "seg,depth,normals,keypoints,edges"  # grouping.groundtruth.TASKS
    gt_resolution: int = 128
    gt_steps: int = 200
    gt_counts: tuple[int, int] = (2000, 250)
    batch: int = 32


#: --smoke: every part, every code path (ensembles of both widths, find_groups with or without tfds), tiny.
SMOKE = Sizes(step_tasks="depth", step_resolution=32, step_batch=4, step_steps=2, step_repeats=1,
              sweep_tasks="depth", sweep_resolution=32, sweep_steps=2, sweep_counts=(8, 4),
              fg_tasks="seg,depth", fg_resolution=32, fg_steps=2, fg_counts=(8, 4, 4), fg_budget=2.0,
              gt_tasks="depth", gt_resolution=32, gt_steps=2, gt_counts=(8, 4), batch=4)


def torch_device() -> str | None:
    """'cuda' if PyTorch sees a GPU, 'cpu' if PyTorch is CPU-only, None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        return "cuda"
    torch.set_num_threads(os.cpu_count() or 1)
    return "cpu"


def peak_tflops(kind: str, override: float | None) -> float | None:
    if override:
        return override
    return next((p for key, p in PEAK_BF16_TFLOPS if key.lower() in kind.lower()), None)


def rendered(seed: int, counts, resolution: int) -> list[dict]:
    """Consecutive slices of the scenes, one per count (train, validation, test)."""
    from tasks.scenes import render_scenes

    out, start = [], 0
    for n in counts:
        out.append(render_scenes(seed=seed, count=n, resolution=resolution, start=start))
        start += n
    return out


# ---------------------------------------------------------------------------
# 1. The train step.


def part_train_step(s: Sizes, tdev: str | None) -> dict:
    import jax

    from benchmarks import torch_twin
    from benchmarks.train_step import jax_step_fn
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(s.step_tasks)
    (data,) = rendered(0, (256,) if s is not SMOKE else (16,), s.step_resolution)
    total = (s.step_steps * s.step_repeats + 1) * 4
    out = {"tasks": s.step_tasks, "resolution": s.step_resolution, "batch": s.step_batch}
    for dtype in ("float32", "bfloat16"):
        cfg = TrainConfig(batch_size=s.step_batch, steps=total, dtype=dtype)
        steps = {"jax": (jax_step_fn(data, s.step_batch, total, s.step_tasks, dtype), jax.block_until_ready)}
        if tdev is not None:
            import torch

            trainer = torch_twin.Trainer(tasks, 1.0, torch_twin.tensors(data, tdev), cfg, device=tdev,
                                         channels_last=True, bf16=dtype == "bfloat16")
            sync = torch.cuda.synchronize if tdev == "cuda" else (lambda *a: None)
            steps["torch"] = (trainer.step, lambda x: (sync(), x.cpu()))
        times = {k: [] for k in steps}
        for f, wait in steps.values():  # warm-up: compilation, autotuning
            wait(f())
            wait(f())
        names = list(steps)
        for r in range(s.step_repeats):
            for k in names[r % len(names):] + names[: r % len(names)]:
                f, wait = steps[k]
                t0 = time.perf_counter()
                for _ in range(s.step_steps):
                    x = f()
                wait(x)
                times[k].append((time.perf_counter() - t0) / s.step_steps)
        res = {f"{k}_images_per_s": s.step_batch / min(v) for k, v in times.items()}
        res["seconds_per_step"] = times
        if "torch" in times:
            res["speedup_vs_pytorch"] = min(times["torch"]) / min(times["jax"])
        out[dtype] = res
    return out


# ---------------------------------------------------------------------------
# 2. The sweep, three ways; 3. its FLOPs utilisation.


def part_sweep(s: Sizes, tdev: str | None) -> dict:
    from benchmarks.sweep_vs_pytorch import candidates, run_ours, run_torch
    from mtl.train import TrainConfig, train_and_evaluate
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(s.sweep_tasks)
    by_name = {t.name: t for t in tasks}
    specs = candidates(tuple(by_name))
    train, validation = rendered(0, s.sweep_counts, s.sweep_resolution)
    cfg = TrainConfig(steps=s.sweep_steps, batch_size=s.batch)
    out = {"tasks": s.sweep_tasks, "networks": len(specs), "resolution": s.sweep_resolution, "steps": s.sweep_steps}
    out["ensemble"] = run_ours(specs, by_name, train, validation, cfg, "auto")
    t0 = time.perf_counter()
    for spec in specs:
        train_and_evaluate([by_name[t] for t in spec.tasks], {"train": train, "validation": validation},
                           dataclasses.replace(cfg, size=spec.size), progress=False)
    out["one_by_one"] = {"wall_seconds": time.perf_counter() - t0}
    if tdev is not None:
        out["torch_loop"] = run_torch(specs, by_name, train, validation, cfg, channels_last=True, device=tdev)
        out["speedup_vs_pytorch"] = out["torch_loop"]["wall_seconds"] / out["ensemble"]["wall_seconds"]
    out["speedup_vs_one_by_one"] = out["one_by_one"]["wall_seconds"] / out["ensemble"]["wall_seconds"]
    return out


def part_mfu(s: Sizes, peak: float | None) -> dict:
    import jax

    from benchmarks.sweep_vs_pytorch import candidates
    from mtl.cost import network_flops
    from mtl.stacked import Ensemble, make_ensemble_train_fn, resolve_strategy
    from mtl.train import TrainConfig, initial_state, make_optimizer, to_device
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(s.sweep_tasks)
    by_name = {t.name: t for t in tasks}
    members = [[by_name[t] for t in spec.tasks] for spec in candidates(tuple(by_name))]
    (data,) = rendered(0, (s.sweep_counts[0],), s.sweep_resolution)
    cfg = TrainConfig(steps=1000, batch_size=s.batch, dtype="bfloat16")
    strategy = resolve_strategy("auto")
    ens = Ensemble.create(members, cfg)
    tx = make_optimizer(cfg)
    state = initial_state(ens.params, tx)
    dev = to_device(data, tasks)
    compiled = make_ensemble_train_fn(ens, tx, cfg, strategy).lower(state, dev).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float(cost["flops"]) if cost and cost.get("flops") else None
    for _ in range(3):
        state, losses = compiled(state, dev)
    jax.block_until_ready(losses)
    n = 5 if s is SMOKE else 50
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            state, losses = compiled(state, dev)
        jax.block_until_ready(losses)
        best = min(best, (time.perf_counter() - t0) / n)
    # Model FLOPs: forward FLOPs per image (mtl.cost: encoder once, each task's decoder), x3 for the backward.
    # XLA counts a convolution's in-image taps only (zero padding is no work), and biases and activations.
    costs = {t.name: network_flops([t], resolution=s.sweep_resolution) for t in tasks}
    encoder = costs[tasks[0].name].encoder_flops
    forward = sum(encoder + sum(costs[t.name].decoder_flops for t in m) for m in members)
    model_flops = 3 * forward * s.batch
    out = {"dtype": "bfloat16", "members": len(members), "strategy": strategy, "step_seconds": best,
           "xla_flops_per_step": xla_flops, "model_flops_per_step": model_flops, "peak_tflops": peak,
           "achieved_model_tflops": model_flops / best / 1e12}
    if peak:
        out["mfu"] = model_flops / best / (peak * 1e12)
        out["mfu_xla_flops"] = xla_flops / best / (peak * 1e12) if xla_flops else None
    return out


# ---------------------------------------------------------------------------
# 4. find_groups' default run; 5. a 128x128 ground-truth slice.


def part_find_groups(s: Sizes, use_tfds: bool) -> dict:
    """The find_groups command's path (scripts/find_groups.py --tasks ... --budget 2) from a cold
    data cache. Without tensorflow-datasets the scenes are rendered in memory by the same path
    (grouping.dataspec.DataSpec), the same arrays."""
    from grouping.find_groups import DEFAULT_METHOD, Options, find_groups
    from grouping.dataspec import DataSpec
    from tasks.label_plan import DEFAULT_PLAN

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        os.environ["MTL_DATA_DIR"] = os.path.join(tmp, "data")
        opts = Options(tasks=s.fg_tasks, budgets=[s.fg_budget], steps=s.fg_steps, batch_size=s.batch,
                       data=DataSpec(resolution=s.fg_resolution, counts=None if s is not SMOKE else s.fg_counts,
                                     labels=DEFAULT_PLAN),  # the command's default setting, its weights too
                       out=os.path.join(tmp, "run"), progress=False)
        report = find_groups(opts, echo=lambda *a: None)
        timing = report["run"]["timing"]
        return {"path": "find_groups, data " + ("through tensorflow-datasets" if use_tfds else
                                                "rendered in memory (no tensorflow-datasets)"),
                "method": DEFAULT_METHOD, "wall_seconds": time.perf_counter() - t0,
                "data_seconds": timing["data_seconds"], "training_seconds": timing["training_seconds"],
                "data": report.get("data")}


def part_ground_truth_slice(s: Sizes) -> dict:
    from benchmarks.sweep_vs_pytorch import run_ours
    from grouping.runner import candidate_specs
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(s.gt_tasks)
    by_name = {t.name: t for t in tasks}
    specs = candidate_specs(tuple(by_name), half_size=True)
    train, validation = rendered(0, s.gt_counts, s.gt_resolution)
    cfg = TrainConfig(steps=s.gt_steps, batch_size=s.batch)
    ours = run_ours(specs, by_name, train, validation, cfg, "auto")
    rate = len(specs) * s.gt_steps / ours["wall_seconds"]
    return {"tasks": s.gt_tasks, "networks": len(specs), "resolution": s.gt_resolution, "steps": s.gt_steps,
            "counts": list(s.gt_counts), "ours": ours, "network_steps_per_second": rate,
            "projected_seconds_600_steps_3_seeds": 3 * len(specs) * 600 / rate}


# ---------------------------------------------------------------------------


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the JSON to write")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU check in under a minute")
    p.add_argument("--parts", default="train_step,sweep,mfu,find_groups,ground_truth_slice")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak dense bf16 TFLOP/s "
                   "(default: PEAK_BF16_TFLOPS by device kind)")
    p.add_argument("--without-tfds", action="store_true",
                   help="act as if tensorflow-datasets were not installed (find_groups renders the scenes in memory)")
    p.add_argument("--without-torch", action="store_true", help="act as if PyTorch were not installed")
    args = p.parse_args(argv)
    if args.without_tfds:
        sys.modules["tensorflow_datasets"] = None  # an import of it now raises ImportError
        sys.modules["array_record"] = None
    if args.without_torch:
        sys.modules["torch"] = None

    import jax

    from benchmarks.sweep_vs_pytorch import machine
    from tasks.scene_data import tfds_available

    sizes = SMOKE if args.smoke else Sizes()
    device = jax.devices()[0]
    tdev = torch_device()
    use_tfds = tfds_available()
    result = {"benchmark": "device_suite", "smoke": args.smoke,
              "command": "python benchmarks/device_suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": {**machine(), "torch_device": tdev, "tensorflow_datasets": use_tfds},
              "sizes": dataclasses.asdict(sizes), "parts": {}}
    peak = peak_tflops(device.device_kind, args.peak_tflops)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    parts = {"train_step": lambda: part_train_step(sizes, tdev), "sweep": lambda: part_sweep(sizes, tdev),
             "mfu": lambda: part_mfu(sizes, peak), "find_groups": lambda: part_find_groups(sizes, use_tfds),
             "ground_truth_slice": lambda: part_ground_truth_slice(sizes)}
    wanted = [x for x in args.parts.split(",") if x]
    unknown = [x for x in wanted if x not in parts]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; the parts are {', '.join(parts)}")
    for name in wanted:
        t0 = time.perf_counter()
        try:
            r = parts[name]()
            r["part_seconds"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - record and go on: the other parts still run
            r = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8),
                 "part_seconds": time.perf_counter() - t0}
        r["load_average_after"] = list(os.getloadavg())
        result["parts"][name] = r
        result["total_seconds"] = time.perf_counter() - t_all
        out.write_text(json.dumps(result, indent=2, default=float) + "\n")
        headline = {k: v for k, v in r.items() if k in ("speedup_vs_pytorch", "speedup_vs_one_by_one", "mfu",
                                                         "wall_seconds", "network_steps_per_second", "error")}
        if name == "train_step" and "error" not in r:
            headline = {d: round(r[d].get("speedup_vs_pytorch", float("nan")), 3) for d in ("float32", "bfloat16")}
        print(f"{name:<19} {r['part_seconds']:6.1f} s  {headline}", flush=True)
    print(f"wrote {out} ({result['total_seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    from mtl import runtime

    runtime.tune_process()  # as the scripts do (mtl.cli.run)
    main()

"""Images per second of one training step: our JAX network against PyTorch.

The standard network (shared encoder, 4 task decoders: seg, depth, normals,
edges; 64x64 input, batch 32, AdamW with warm-up + cosine) is trained with
the project's own jitted step (mtl.train.make_train_fn), and its PyTorch
twin (benchmarks/torch_twin.py: the same convolutions, channels, pixel-shuffle
decoders, losses, batch sampling from memory and optimizer) is trained in
the same process on the same machine. PyTorch gets its best layout (channels-first
or channels-last, whichever is faster here).

    pip install -e '.[bench]'   # adds torch==2.13.0 (CPU build)
    python benchmarks/train_step.py [--steps 10] [--repeats 7]

JAX and both PyTorch layouts take turns, `--repeats` rounds of `--steps`
steps each, so load from other jobs on a shared machine hits them alike.
Throughputs are best-of-rounds and `speedup_vs_pytorch` is their ratio
(PyTorch in its faster layout); the per-round ratios are reported as well. Prints both throughputs and, last,
`speedup_vs_pytorch=<JAX/PyTorch>`; writes
benchmarks/results/train_step_<platform>.json (with every round's times and
the load average, since the ratio depends on how busy the machine was).

Ensembles (`--ensemble K`, default 4; 0 skips): K copies of the network per
step, as our ensemble (mtl.ensemble: members unrolled
on a CPU, vmapped on a GPU) against K PyTorch models trained one after another
in a Python loop and, if torch.func can vmap the model, as one torch.func
ensemble (stack_module_state + vmap(grad)). Prints
`ensemble_speedup_vs_pytorch=<ours / PyTorch's faster form>` before the last line.
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from mtl import runtime  # noqa: E402
from mtl.train import TrainConfig, build_model, initial_state, make_optimizer, make_train_fn, to_device  # noqa: E402
from tasks.registry import SEG_CLASSES, resolve_tasks  # noqa: E402

TASKS = "seg,depth,normals,edges"


def synthetic_data(n: int, resolution: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random data in the stored encodings (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    r = resolution
    return {
        "rgb": rng.integers(0, 256, (n, r, r, 3), dtype=np.uint8),
        "depth_zbuffer": rng.integers(600, 5000, (n, r, r), dtype=np.uint16),
        "normal": rng.integers(0, 256, (n, r, r, 3), dtype=np.uint8),
        "segment_semantic": rng.integers(0, len(SEG_CLASSES), (n, r, r), dtype=np.uint8),
        "edge_texture": rng.integers(0, 65536, (n, r, r), dtype=np.uint16),
    }


def time_steps(step, n_steps: int, repeats: int) -> float:
    """Best-of-`repeats` seconds per step (after a warm-up call)."""
    return min(time_interleaved({"f": step}, n_steps, repeats)["f"])


def time_interleaved(steps: dict, n_steps: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per step of each `steps[name]`, `repeats` times, interleaved.

    The candidates take turns (round r times each of them once, in an order
    that rotates from round to round), so a burst of load from other jobs on
    a shared machine falls on all of them alike instead of on whichever
    happened to run at that moment; ratios of the same round are then
    comparable even when absolute times are not.
    """
    for step in steps.values():  # warm-up: compilation, allocator, caches
        np.asarray(step())
    names = list(steps)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(n_steps):
                out = steps[k]()
            np.asarray(out)  # waits for the last step (JAX dispatches asynchronously)
            times[k].append((time.perf_counter() - t0) / n_steps)
    return times


def jax_step_fn(data: dict[str, np.ndarray], batch: int, steps: int, tasks=TASKS, dtype: str = "float32"):
    """One jitted training step of the network of `tasks` on `data`, as a no-argument callable
    returning the step's losses (the state is kept between calls)."""
    tasks = resolve_tasks(tasks)
    cfg = TrainConfig(batch_size=batch, steps=steps, dtype=dtype)
    graphdef, params = nnx.split(build_model(tasks, cfg), nnx.Param)
    tx = make_optimizer(cfg)
    run = make_train_fn(graphdef, tasks, tx, cfg)
    device_data = to_device(data, tasks)
    holder = {"state": initial_state(params, tx)}

    def step():
        holder["state"], losses = run(holder["state"], device_data)
        return losses

    return step


def torch_step_fn(data: dict[str, np.ndarray], batch: int, steps: int, channels_last: bool, models: int = 1):
    """One training step of `models` PyTorch networks (benchmarks/torch_twin.py), one after another."""
    from benchmarks import torch_twin

    tasks = resolve_tasks(TASKS)
    cfg = TrainConfig(batch_size=batch, steps=steps)
    train = torch_twin.tensors(data)
    trainers = [torch_twin.Trainer(tasks, 1.0, train, cfg, channels_last=channels_last) for _ in range(models)]

    def step():
        for trainer in trainers:
            loss = trainer.step()
        return loss

    return step


def torch_vmap_step_fn(data: dict[str, np.ndarray], batch: int, steps: int, channels_last: bool, models: int):
    """`models` PyTorch networks as one torch.func ensemble: stacked parameters, vmapped gradients."""
    import copy

    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    from benchmarks import torch_twin

    tasks = resolve_tasks(TASKS)
    cfg = TrainConfig(batch_size=batch, steps=steps)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    first = torch_twin.build_net(tasks).to(memory_format=fmt)
    nets = [first] + [copy.deepcopy(first) for _ in range(models - 1)]  # one class, as stack_module_state needs
    for net in nets[1:]:
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.reset_parameters()
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    leaves = [p.detach().requires_grad_() for p in params.values()]
    params = dict(zip(params, leaves))
    opt = torch.optim.AdamW(leaves, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, torch_twin.lr_factor(cfg))
    train = torch_twin.tensors(data)

    def one(p, b, rgb, y, mask):
        out = functional_call(base, (p, b), (rgb,))
        return sum(torch_twin.task_loss(t, out[t.name], y[t.name], mask) for t in tasks)

    grads_of = vmap(grad(one), in_dims=(0, 0, None, None, None))

    def step():
        idx = torch.randint(0, len(train["rgb"]), (batch,))
        rgb, y, mask = torch_twin.decode({k: v[idx] for k, v in train.items()}, tasks, channels_last)
        grads = grads_of(params, buffers, rgb, y, mask)
        for name, leaf in params.items():
            leaf.grad = grads[name]
        opt.step()
        sched.step()
        return leaves[0].detach().sum()

    return step


def jax_ensemble_step_fn(data: dict[str, np.ndarray], batch: int, steps: int, models: int):
    """`models` copies of the standard network as one of our ensembles (mtl.ensemble)."""
    from mtl.stacked import Ensemble, make_ensemble_train_fn, resolve_strategy

    tasks = resolve_tasks(TASKS)
    cfg = TrainConfig(batch_size=batch, steps=steps)
    ens = Ensemble.create([tasks] * models, cfg)
    tx = make_optimizer(cfg)
    run = make_ensemble_train_fn(ens, tx, cfg, resolve_strategy("auto"))
    device_data = to_device(data, tasks)
    holder = {"state": initial_state(ens.params, tx)}

    def step():
        holder["state"], losses = run(holder["state"], device_data)
        return losses[:, 0]  # (K, T) losses: every member's first task (seg)

    return step


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def ensemble_comparison(data, args, channels_last: bool) -> dict:
    """K networks per step: our ensemble vs PyTorch (a Python loop; torch.func vmap if it runs)."""
    k = args.ensemble
    total_steps = (args.steps * args.repeats + 1) * 3
    steps = {"jax_ensemble": jax_ensemble_step_fn(data, args.batch, total_steps, k),
             "torch_loop": torch_step_fn(data, args.batch, total_steps, channels_last, models=k)}
    vmap_error = None
    try:
        candidate = torch_vmap_step_fn(data, args.batch, total_steps, channels_last, k)
        candidate()
        steps["torch_vmap"] = candidate
    except Exception as e:  # torch.func cannot vmap every op; report instead of failing
        vmap_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(f"torch.func vmap ensemble did not run: {vmap_error}")
    times = time_interleaved(steps, max(1, args.steps // 2), args.repeats)
    out = {"models": k, "torch_layout": "channels_last" if channels_last else "channels_first",
           "seconds_per_step": times, "torch_vmap_error": vmap_error}
    for name, ts in times.items():
        out[f"{name}_images_per_s"] = k * args.batch / min(ts)
        print(f"{name:<13}: {min(ts) * 1e3:7.1f} ms per step of {k} networks  {k * args.batch / min(ts):8.1f} images/s")
    best_torch = min((n for n in times if n.startswith("torch")), key=lambda n: min(times[n]))
    out["torch_best"] = best_torch
    out["speedup_vs_pytorch"] = min(times[best_torch]) / min(times["jax_ensemble"])
    print(f"ensemble_speedup_vs_pytorch={out['speedup_vs_pytorch']:.3f} ({k} networks, vs PyTorch {best_torch})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per framework per round")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds (JAX, PyTorch NCHW, PyTorch NHWC)")
    p.add_argument("--ensemble", type=int, default=4,
                   help="also K networks at once: our ensemble against K PyTorch models in a loop and torch.func vmap (0: skip)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/train_step_<backend>.json)")
    args = p.parse_args()

    # The CPU process settings of the scripts (mtl.runtime.tune_process):
    # PyTorch, in the same process, gets the allocator setting too.
    # MTL_CPU_TUNING=0 runs with XLA's defaults and no process setting.
    tuned = runtime.tune_process()
    data = synthetic_data(512, args.resolution)
    total_steps = (args.steps * args.repeats + 1) * 3  # schedule length; warm-up stays short
    results = {"batch": args.batch, "resolution": args.resolution, "tasks": TASKS, "machine": machine(),
               "cpu_tuning": {"process": tuned, "xla_compiler_options": runtime.compiler_options()}}

    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed; pip install -e '.[bench]' (torch==2.13.0, CPU build)")
    torch.set_num_threads(os.cpu_count() or 1)
    results["load_average_before"] = _loadavg()
    steps = {"jax": jax_step_fn(data, args.batch, total_steps)}
    for channels_last in (False, True):
        layout = "channels_last" if channels_last else "channels_first"
        steps[f"torch_{layout}"] = torch_step_fn(data, args.batch, total_steps, channels_last)
    times = time_interleaved(steps, args.steps, args.repeats)
    results["load_average_after"] = _loadavg()
    results["seconds_per_step"] = times

    jax_s = min(times["jax"])
    results["jax_images_per_s"] = args.batch / jax_s
    print(f"jax     : {jax_s * 1e3:7.1f} ms/step  {args.batch / jax_s:8.1f} images/s  "
          f"(median {np.median(times['jax']) * 1e3:.1f})")
    for layout in ("channels_first", "channels_last"):
        s = min(times[f"torch_{layout}"])
        results[f"torch_{layout}_images_per_s"] = args.batch / s
        print(f"pytorch : {s * 1e3:7.1f} ms/step  {args.batch / s:8.1f} images/s  ({layout}, "
              f"median {np.median(times[f'torch_{layout}']) * 1e3:.1f})")
    # PyTorch's layout is the faster one at its best. The speedup is best-of
    # against best-of: the least disturbed round of each approximates an idle
    # machine. Per-round ratios are kept too, but they are biased towards JAX
    # in loaded rounds (PyTorch's OpenMP threads suffer far more from
    # contention than XLA's), so they are no estimate of the idle ratio.
    best = min(("channels_first", "channels_last"), key=lambda l: min(times[f"torch_{l}"]))
    results["torch_layout"] = best
    results["torch_images_per_s"] = results[f"torch_{best}_images_per_s"]
    ratios = [t / j for t, j in zip(times[f"torch_{best}"], times["jax"])]
    results["speedup_per_round"] = ratios
    results["speedup_median_of_rounds"] = float(np.median(ratios))
    results["speedup_vs_pytorch"] = min(times[f"torch_{best}"]) / jax_s
    print(f"speedup per round: {' '.join(f'{r:.2f}' for r in ratios)} (median {np.median(ratios):.3f})")
    if max(results["load_average_before"], results["load_average_after"]) > (os.cpu_count() or 1):
        print(f"warning: the machine was loaded by other jobs (load average {results['load_average_before']:.1f} "
              f"-> {results['load_average_after']:.1f} on {os.cpu_count()} cores); PyTorch's OpenMP threads slow "
              "down far more than XLA's under contention, so the ratio overstates JAX unless some rounds were quiet", file=sys.stderr)

    if args.ensemble > 1:
        results["ensemble"] = ensemble_comparison(data, args, results["torch_layout"] == "channels_last")

    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"train_step_{jax.default_backend()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    print(f"speedup_vs_pytorch={results['speedup_vs_pytorch']:.3f}")


if __name__ == "__main__":
    main()

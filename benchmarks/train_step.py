"""Images per second of one training step: our JAX network against PyTorch.

The standard network (shared encoder, 4 task decoders: seg, depth, normals,
edges; 64x64 input, batch 32, AdamW with warm-up + cosine) is trained with
the project's own jitted step (mtl.train.make_train_fn), and an equivalent
PyTorch model (the same convolutions, channels, pixel-shuffle decoders,
losses, batch sampling from memory and optimizer) is trained in the same
process on the same machine. PyTorch gets its best layout (channels-first
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

from mtl.model import DECODER_CHANNELS, NEGATIVE_SLOPE, encoder_channels  # noqa: E402
from mtl.train import TrainConfig, build_model, make_optimizer, make_train_fn, to_device  # noqa: E402
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


def jax_step_fn(data: dict[str, np.ndarray], batch: int, steps: int):
    tasks = resolve_tasks(TASKS)
    cfg = TrainConfig(batch_size=batch, steps=steps)
    graphdef, params = nnx.split(build_model(tasks, cfg), nnx.Param)
    tx = make_optimizer(cfg)
    run = make_train_fn(graphdef, tasks, tx, cfg)
    device_data = to_device(data, tasks)
    weights = jnp.ones(len(tasks))
    holder = {"state": {"params": params, "opt_state": tx.init(params), "step": jnp.asarray(0, jnp.int32)}}

    def step():
        holder["state"], losses = run(holder["state"], device_data, weights)
        return losses

    return step


def torch_step_fn(data: dict[str, np.ndarray], batch: int, steps: int, channels_last: bool):
    import torch
    from torch import nn
    import torch.nn.functional as F

    cfg = TrainConfig(batch_size=batch, steps=steps)
    enc = encoder_channels(1.0)

    class Decoder(nn.Module):
        def __init__(self, out_ch):
            super().__init__()
            ins = (enc[-1],) + DECODER_CHANNELS[:-1]
            self.up = nn.ModuleList(nn.Conv2d(i, 4 * o, 3, padding=1) for i, o in zip(ins, DECODER_CHANNELS))
            self.head = nn.Conv2d(DECODER_CHANNELS[-1], 4 * out_ch, 3, padding=1)

        def forward(self, z):
            for conv in self.up:
                z = F.leaky_relu(F.pixel_shuffle(conv(z), 2), NEGATIVE_SLOPE)
            return F.pixel_shuffle(self.head(z), 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            ins = (3,) + enc[:-1]
            self.down = nn.ModuleList(nn.Conv2d(i, o, 3, stride=2, padding=1) for i, o in zip(ins, enc))
            self.bottleneck = nn.Conv2d(enc[-1], enc[-1], 3, padding=1)
            self.heads = nn.ModuleDict(
                {"seg": Decoder(len(SEG_CLASSES)), "depth": Decoder(1), "normals": Decoder(3), "edges": Decoder(1)}
            )

        def forward(self, x):
            for conv in self.down:
                x = F.leaky_relu(conv(x), NEGATIVE_SLOPE)
            z = F.leaky_relu(self.bottleneck(x), NEGATIVE_SLOPE)
            return {k: h(z) for k, h in self.heads.items()}

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = Net().to(memory_format=fmt)
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def lr_lambda(s):
        if s < warmup:
            return s / warmup
        p = min(1.0, (s - warmup) / max(1, cfg.steps - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    t = {k: torch.from_numpy(v.astype(np.int32) if v.dtype == np.uint16 else v) for k, v in data.items()}
    n = len(data["rgb"])

    def masked_l1(pred, target, mask):
        err = (pred - target).abs().mean(1)
        m = mask.float()
        return (err * m).sum() / m.sum().clamp(min=1)

    def step():
        idx = torch.randint(0, n, (batch,))
        rgb = t["rgb"][idx].permute(0, 3, 1, 2).float().div(127.5).sub(1).contiguous(memory_format=fmt)
        depth_raw = t["depth_zbuffer"][idx]
        mask = depth_raw != 65535
        depth = (depth_raw.float().sub(1500).div(1000)).unsqueeze(1)
        normal = t["normal"][idx].permute(0, 3, 1, 2).float().div(127.5).sub(1)
        seg = t["segment_semantic"][idx].long()
        edges = t["edge_texture"][idx].float().div(65535).unsqueeze(1)
        out = net(rgb)
        loss = (
            F.cross_entropy(out["seg"], seg, ignore_index=0)
            + masked_l1(out["depth"], depth, mask)
            + masked_l1(out["normals"], normal, mask)
            + (out["edges"] - edges).abs().mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.detach()

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per framework per round")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds (JAX, PyTorch NCHW, PyTorch NHWC)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/train_step_<backend>.json)")
    args = p.parse_args()

    data = synthetic_data(512, args.resolution)
    total_steps = (args.steps * args.repeats + 1) * 3  # schedule length; warm-up stays short
    results = {"batch": args.batch, "resolution": args.resolution, "tasks": TASKS, "machine": machine()}

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

    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"train_step_{jax.default_backend()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    print(f"speedup_vs_pytorch={results['speedup_vs_pytorch']:.3f}")


if __name__ == "__main__":
    main()

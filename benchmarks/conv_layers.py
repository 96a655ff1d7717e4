"""Where the train-step gap to PyTorch comes from: each convolution alone.

    pip install -e '.[bench]' && python benchmarks/conv_layers.py

For every 3x3 convolution shape of the standard network (the encoder and
the decoders of seg, depth, normals and edges; 64x64 input, batch 32) times
forward + backward (input and weight gradients) in JAX, with the XLA
options the project compiles with (`mtl.runtime`) and with XLA's defaults,
and in PyTorch (nn.Conv2d, its faster of channels-first/last). Each shape
is then counted as often as the network has it (a decoder layer once per
task), which gives the network's convolution time, one convolution at a
time: `conv_only_speedup` is PyTorch's total over JAX's. In a real step
convolutions overlap and share caches, so this is an indication, not a
bound; benchmarks/step_cycles.py measures the step itself. It also checks
whether XLA's oneDNN custom-call option rewrites convolutions in this
jaxlib (`onednn_rewrites_convolutions`).

Then, for the decoder shapes, four convolutions with separate weights done
one by one against the same four done as one vmapped convolution (what an
ensemble or stacked decoders would do): on XLA:CPU vmap becomes a grouped
convolution. Writes benchmarks/results/conv_layers_<backend>.json.
"""

from __future__ import annotations

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

from mtl import runtime  # noqa: E402
from mtl.model import DECODER_CHANNELS, encoder_channels  # noqa: E402
from tasks.registry import resolve_tasks  # noqa: E402

BATCH, RESOLUTION = 32, 64
TASKS = "seg,depth,normals,edges"  # benchmarks/train_step.py's network


def best_ms(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def layers() -> list[tuple[str, int, int, int, int, int]]:
    """(name, input resolution, in channels, out channels, stride, how many
    the network has) of every distinct convolution shape."""
    enc = encoder_channels(1.0)
    tasks = resolve_tasks(TASKS)
    out, r, c = [], RESOLUTION, 3
    for i, o in enumerate(enc):
        out.append((f"encoder {i}", r, c, o, 2, 1))
        r, c = r // 2, o
    out.append(("bottleneck", r, c, c, 1, 1))
    for i, o in enumerate(DECODER_CHANNELS):
        out.append((f"decoder up {i}", r, c, 4 * o, 1, len(tasks)))
        r, c = r * 2, o
    heads: dict[int, list[str]] = {}
    for t in tasks:  # the head is a sub-pixel conv: 4x the task's channels
        heads.setdefault(4 * t.channels, []).append(t.name)
    for co, names in heads.items():
        out.append((f"head ({', '.join(names)})", r, c, co, 1, len(names)))
    return out


def conv(x, w, s=1):
    return jax.lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def jax_ms(r, ci, co, s, compiler_options=None) -> float:
    x, w = jnp.ones((BATCH, r, r, ci)), jnp.full((3, 3, ci, co), 0.01)
    g = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w, s) ** 2), argnums=(0, 1)),
                compiler_options=compiler_options)
    return best_ms(lambda: jax.block_until_ready(g(x, w)))


def torch_ms(r, ci, co, s) -> float:
    import torch

    best = float("inf")
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.ones(BATCH, ci, r, r).contiguous(memory_format=fmt).requires_grad_(True)
        layer = torch.nn.Conv2d(ci, co, 3, stride=s, padding=1).to(memory_format=fmt)

        def step():
            layer.zero_grad()
            x.grad = None
            (layer(x) ** 2).sum().backward()

        best = min(best, best_ms(step))
    return best


def stacked_ms(r, ci, co, k=4, compiler_options=None) -> tuple[float, float]:
    xs, ws = jnp.ones((k, BATCH, r, r, ci)), jnp.full((k, 3, 3, ci, co), 0.01)
    one_by_one = jax.jit(jax.grad(lambda x, w: sum(jnp.sum(conv(x[i], w[i]) ** 2) for i in range(k)), argnums=(0, 1)),
                         compiler_options=compiler_options)
    vmapped = jax.jit(jax.grad(lambda x, w: jnp.sum(jax.vmap(conv)(x, w) ** 2), argnums=(0, 1)),
                      compiler_options=compiler_options)
    return (best_ms(lambda: jax.block_until_ready(one_by_one(xs, ws)), 3),
            best_ms(lambda: jax.block_until_ready(vmapped(xs, ws)), 3))


def onednn_rewrites_convolutions() -> bool | None:
    """Whether XLA's oneDNN custom-call option turns a convolution (and its
    gradients) into oneDNN calls in this jaxlib; None if it rejects the option."""
    x, w = jnp.ones((BATCH, 32, 32, 16)), jnp.ones((3, 3, 16, 32))
    g = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)),
                compiler_options={"xla_cpu_experimental_onednn_custom_call": True})
    try:
        hlo = g.lower(x, w).compile().as_text()
    except Exception:  # noqa: BLE001 - an unknown option: no such rewrite here
        return None
    return "onednn" in hlo.lower() and " convolution(" not in hlo


def main() -> None:
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        sys.exit("error: PyTorch is not installed; pip install -e '.[bench]' (torch==2.13.0, CPU build)")
    tuned = runtime.compiler_options()  # None off a CPU or with MTL_CPU_TUNING=0
    rows = []
    totals = {"jax": 0.0, "jax_xla_default": 0.0, "torch": 0.0}
    print(f"{'layer':<26}{'shape':>21}{'x':>3}{'jax ms':>8}{'(default)':>10}{'torch ms':>9}{'jax/torch':>10}")
    for name, r, ci, co, s, count in layers():
        j = jax_ms(r, ci, co, s, tuned)
        jd = jax_ms(r, ci, co, s) if tuned else j
        t = torch_ms(r, ci, co, s)
        rows.append({"layer": name, "resolution": r, "in": ci, "out": co, "stride": s, "count": count,
                     "jax_ms": j, "jax_xla_default_ms": jd, "torch_ms": t})
        for k, v in (("jax", j), ("jax_xla_default", jd), ("torch", t)):
            totals[k] += count * v
        print(f"{name:<26}{f'{r}x{r} {ci}->{co} s{s}':>21}{count:>3}{j:>8.1f}{jd:>10.1f}{t:>9.1f}{j / t:>10.2f}")
    ratio = totals["torch"] / totals["jax"]
    print(f"{'the network (x counts)':<50}{totals['jax']:>8.1f}{totals['jax_xla_default']:>10.1f}"
          f"{totals['torch']:>9.1f}{1 / ratio:>10.2f}")
    onednn = onednn_rewrites_convolutions() if jax.default_backend() == "cpu" else None
    print(f"XLA's oneDNN custom-call option rewrites convolutions: {onednn}")
    stacked = []
    print(f"\n4 convolutions with separate weights, {BATCH} images each: one by one vs vmapped")
    for name, r, ci, co, s, _ in layers():
        if name.startswith("decoder up"):
            a, b = stacked_ms(r, ci, co, compiler_options=tuned)
            stacked.append({"layer": name, "resolution": r, "in": ci, "out": co, "one_by_one_ms": a, "vmapped_ms": b})
            print(f"{f'{r}x{r} {ci}->{co}':>22}  one by one {a:7.1f} ms  vmapped {b:8.1f} ms  ({b / a:.1f}x)")
    result = {
        "batch": BATCH,
        "tasks": TASKS,
        "xla_compiler_options": tuned,
        "layers": rows,
        "network_conv_ms": totals,
        "conv_only_speedup": ratio,
        "onednn_rewrites_convolutions": onednn,
        "stacked": stacked,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
                    "backend": jax.default_backend(), "torch": torch.__version__,
                    "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d")},
    }
    out = ROOT / "benchmarks" / "results" / f"conv_layers_{jax.default_backend()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    print(f"conv_only_speedup={ratio:.3f}")


if __name__ == "__main__":
    main()

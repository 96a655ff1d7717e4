"""Where the train-step gap to PyTorch comes from: each convolution alone.

    pip install -e '.[bench]' && python benchmarks/conv_layers.py

For every 3x3 convolution of the standard network (encoder and one decoder,
64x64 input, batch 32) times forward + backward (input and weight
gradients) in JAX (XLA's conv) and in PyTorch (nn.Conv2d, its faster of
channels-first/last), and prints the ratio. Then, for the decoder shapes,
four convolutions with separate weights done one by one against the same
four done as one vmapped convolution (what an ensemble or stacked decoders
would do): on XLA:CPU vmap becomes a grouped convolution. Writes
benchmarks/results/conv_layers_<backend>.json.
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

from mtl.model import DECODER_CHANNELS, encoder_channels  # noqa: E402

BATCH, RESOLUTION = 32, 64


def best_ms(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def layers() -> list[tuple[str, int, int, int, int]]:
    """(name, input resolution, in channels, out channels, stride) of every conv."""
    enc = encoder_channels(1.0)
    out, r, c = [], RESOLUTION, 3
    for i, o in enumerate(enc):
        out.append((f"encoder {i}", r, c, o, 2))
        r, c = r // 2, o
    out.append(("bottleneck", r, c, c, 1))
    for i, o in enumerate(DECODER_CHANNELS):
        out.append((f"decoder up {i}", r, c, 4 * o, 1))
        r, c = r * 2, o
    out.append(("decoder head (seg)", r, c, 4 * 8, 1))
    return out


def conv(x, w, s=1):
    return jax.lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def jax_ms(r, ci, co, s) -> float:
    x, w = jnp.ones((BATCH, r, r, ci)), jnp.full((3, 3, ci, co), 0.01)
    g = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w, s) ** 2), argnums=(0, 1)))
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


def stacked_ms(r, ci, co, k=4) -> tuple[float, float]:
    xs, ws = jnp.ones((k, BATCH, r, r, ci)), jnp.full((k, 3, 3, ci, co), 0.01)
    one_by_one = jax.jit(jax.grad(lambda x, w: sum(jnp.sum(conv(x[i], w[i]) ** 2) for i in range(k)), argnums=(0, 1)))
    vmapped = jax.jit(jax.grad(lambda x, w: jnp.sum(jax.vmap(conv)(x, w) ** 2), argnums=(0, 1)))
    return (best_ms(lambda: jax.block_until_ready(one_by_one(xs, ws)), 3),
            best_ms(lambda: jax.block_until_ready(vmapped(xs, ws)), 3))


def main() -> None:
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        sys.exit("error: PyTorch is not installed; pip install -e '.[bench]' (torch==2.13.0, CPU build)")
    rows = []
    print(f"{'layer':<20}{'shape':>22}{'jax ms':>9}{'torch ms':>10}{'jax/torch':>11}")
    for name, r, ci, co, s in layers():
        j, t = jax_ms(r, ci, co, s), torch_ms(r, ci, co, s)
        rows.append({"layer": name, "resolution": r, "in": ci, "out": co, "stride": s, "jax_ms": j, "torch_ms": t})
        print(f"{name:<20}{f'{r}x{r} {ci}->{co} s{s}':>22}{j:>9.1f}{t:>10.1f}{j / t:>11.2f}")
    stacked = []
    print(f"\n4 convolutions with separate weights, {BATCH} images each: one by one vs vmapped")
    for name, r, ci, co, s in layers():
        if name.startswith("decoder up"):
            a, b = stacked_ms(r, ci, co)
            stacked.append({"layer": name, "resolution": r, "in": ci, "out": co, "one_by_one_ms": a, "vmapped_ms": b})
            print(f"{f'{r}x{r} {ci}->{co}':>22}  one by one {a:7.1f} ms  vmapped {b:8.1f} ms  ({b / a:.1f}x)")
    result = {
        "batch": BATCH,
        "layers": rows,
        "stacked": stacked,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
                    "backend": jax.default_backend(), "torch": torch.__version__,
                    "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d")},
    }
    out = ROOT / "benchmarks" / "results" / f"conv_layers_{jax.default_backend()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

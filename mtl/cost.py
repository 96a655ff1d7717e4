"""What a network costs: forward-pass FLOPs measured by XLA's cost analysis.

Standley et al. (2020) budget inference time in units of one full-size
network, counting the shared encoder and not the task decoders. `network_flops`
measures both (an image-level task's pooled linear head counts as its decoder), so a user can see how far `size=0.5` really is from half the
work, and budgets can use measured costs instead of the nominal 1 and 0.5.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mtl.model import MultiTaskNet, check_resolution
from tasks.registry import Task


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    tasks: tuple[str, ...]
    size: float
    resolution: int
    encoder_flops: float  # per image
    total_flops: float  # per image, encoder and all decoders

    @property
    def decoder_flops(self) -> float:
        return self.total_flops - self.encoder_flops


def _flops(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returns one dict per device
        analysis = analysis[0]
    return float(analysis["flops"])


def network_flops(tasks: Sequence[Task], *, size: float = 1.0, resolution: int = 64) -> NetworkCost:
    """Forward FLOPs per image of the network for `tasks` at `size`."""
    check_resolution(resolution)
    model = MultiTaskNet(tasks, size=size, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    total = _flops(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    encoder = _flops(lambda p, x: nnx.merge(graphdef, p).encoder(x), params, x)
    return NetworkCost(tuple(t.name for t in tasks), size, resolution, encoder, total)

"""The multi-task network: one shared encoder, one small decoder per task.

Standley et al. (2020) share an encoder between the tasks of a network and
give each task its own decoder. Here the encoder is a stack of strided 3x3
convolutions and each decoder climbs back to full resolution with sub-pixel
convolutions (conv to 4x the channels, then depth-to-space), which XLA:CPU
differentiates an order of magnitude faster than `lax.conv_transpose`
(../shared/REFERENCES.md).

`size` scales the encoder's multiply-adds: its channels are multiplied by
sqrt(size), so `size=0.5` is Standley's half-size network (cost 0.5 in the
budget). Decoders keep their width whatever the size, as the budget does
not count them. `mtl.cost` measures the real FLOPs with XLA.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtl import runtime
from tasks.registry import Task

# Encoder channels at size 1 (one stride-2 conv each), then one stride-1 conv
# at the bottleneck (1/8 of the input resolution: with a 4x4 bottleneck at
# 64x64, texture edges did not train at all in 300 steps; at 8x8 they do). Decoder channels after each 2x upsampling; the head
# performs the last one.
ENCODER_CHANNELS = (32, 64, 128)
# Decoders are small, as Standley's are ("one small decoder per task"): with
# (32, 16) a task could make up in its own decoder for features the shared
# encoder did not give it, and tasks barely competed for the encoder (at
# 32x32, headroom 6.8% under the relative objective with singles, pairs and
# the all-task network; 9.3% with (16, 8): `python benchmarks/setting_probe.py`,
# README "Choosing the default setting").
DECODER_CHANNELS = (16, 8)
MIN_RESOLUTION, MAX_RESOLUTION = 32, 256
DOWNSAMPLING = 2 ** len(ENCODER_CHANNELS)


NEGATIVE_SLOPE = 0.1


def activation(x: jax.Array) -> jax.Array:
    """Leaky ReLU. With plain ReLU a decoder for a sparse L1 target (texture
    edges) died within 150 steps of the 4-task run: every unit feeding its head
    went negative, its output stuck at 0 and its loss at the target mean."""
    return jax.nn.leaky_relu(x, NEGATIVE_SLOPE)


_TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a standard normal truncated to (-2, 2)


@functools.partial(jax.jit, static_argnums=1)
def _truncated_normal_draw(key: jax.Array, n: int) -> jax.Array:
    return jax.random.truncated_normal(key, -2, 2, (n,), jnp.float32)


def kernel_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32, out_sharding=None) -> jax.Array:
    """Flax's default kernel initialiser (LeCun normal: a normal truncated to 2 standard deviations,
    variance 1 / fan_in), bit for bit, with one compiled draw per size bucket instead of one per
    kernel shape.

    With partitionable threefry (JAX's default), value i of a draw depends only on the key and i,
    so the first n values of a draw of shape (m,), m >= n, are those of a draw of shape (n,), and
    reshaping keeps them in row-major order, as a draw of the kernel's shape has them. Draws are
    made at sizes 4^6, 4^7, ... (at most 4x what is needed) and the product with the standard
    deviation is taken in numpy (the same float32 product), so building a network compiles a few
    programs instead of about 20. With `bias_init` and `runtime.put`, the first network built in a
    process takes 1.0 s instead of 7.9 s, the first half-size one 0.06 s instead of 3.8 s (this CPU,
    `python benchmarks/init_cost.py`; tests/test_model.py checks the values against Flax's
    initialiser). Anything else (other dtypes, threefry not partitionable, a sharded output) takes
    Flax's initialiser itself."""
    shape = tuple(int(d) for d in shape)
    if (out_sharding is not None or jnp.dtype(dtype) != jnp.float32 or len(shape) < 2
            or not jax.config.jax_threefry_partitionable):
        return nnx.initializers.lecun_normal()(key, shape, dtype)
    n = math.prod(shape)
    bucket = 1 << (2 * max(6, -(-(n - 1).bit_length() // 2)))
    # Flax computes the standard deviation in float32 from sqrt(1 / fan_in); so does this.
    stddev = jnp.sqrt(jnp.array(1.0 / math.prod(shape[:-1]), jnp.float32)) / jnp.array(_TRUNCATED_NORMAL_STD,
                                                                                      jnp.float32)
    draw = _truncated_normal_draw(key, bucket)
    if isinstance(draw, jax.core.Tracer):  # built inside a trace (eval_shape, jit): the same product in jnp
        return draw[:n].reshape(shape) * stddev
    return runtime.put(np.asarray(draw)[:n].reshape(shape) * np.asarray(stddev))


def bias_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32, out_sharding=None) -> jax.Array:
    """Flax's default bias initialiser (zeros), made on the host (`runtime.put`): jnp.zeros compiles
    a program per bias shape."""
    if out_sharding is not None:
        return nnx.initializers.zeros(key, shape, dtype, out_sharding=out_sharding)
    return runtime.put(np.zeros(tuple(int(d) for d in shape), jnp.dtype(dtype)))


class ResolutionError(ValueError):
    """An input resolution the network cannot take."""


def valid_resolutions() -> list[int]:
    return list(range(MIN_RESOLUTION, MAX_RESOLUTION + 1, DOWNSAMPLING))


def check_resolution(resolution: int) -> int:
    if resolution not in valid_resolutions():
        raise ResolutionError(
            f"the network cannot take resolution {resolution}: it needs a multiple of {DOWNSAMPLING} "
            f"between {MIN_RESOLUTION} and {MAX_RESOLUTION} ({', '.join(map(str, valid_resolutions()))})"
        )
    return resolution


def encoder_channels(size: float) -> tuple[int, ...]:
    """Channels of the encoder at a given multiply-add fraction `size`."""
    if not 0 < size <= 4:
        raise ValueError(f"network size must be in (0, 4] (1 = full, 0.5 = half), got {size}")
    return tuple(max(4, int(round(c * math.sqrt(size)))) for c in ENCODER_CHANNELS)


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """(B,H,W,C*b*b) -> (B,H*b,W*b,C): the sub-pixel shuffle."""
    b, h, w, c = x.shape
    c_out = c // (block * block)
    x = x.reshape(b, h, w, block, block, c_out)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, c_out)


class Encoder(nnx.Module):
    def __init__(self, size: float, *, dtype, rngs: nnx.Rngs):
        chans = encoder_channels(size)
        ins = (3,) + chans[:-1]
        self.down = nnx.List(
            [nnx.Conv(i, o, (3, 3), strides=2, dtype=dtype, kernel_init=kernel_init, bias_init=bias_init,
                      rngs=rngs) for i, o in zip(ins, chans)]
        )
        self.bottleneck = nnx.Conv(chans[-1], chans[-1], (3, 3), dtype=dtype, kernel_init=kernel_init,
                                   bias_init=bias_init, rngs=rngs)
        self.out_channels = chans[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.down:
            x = activation(conv(x))
        return activation(self.bottleneck(x))


class Decoder(nnx.Module):
    def __init__(self, in_channels: int, out_channels: int, *, dtype, rngs: nnx.Rngs):
        ins = (in_channels,) + DECODER_CHANNELS[:-1]
        self.up = nnx.List(
            [nnx.Conv(i, 4 * o, (3, 3), dtype=dtype, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)
             for i, o in zip(ins, DECODER_CHANNELS)]
        )
        # The last 2x upsampling is the head itself: a sub-pixel convolution at
        # half resolution, so no convolution runs at full resolution.
        self.head = nnx.Conv(DECODER_CHANNELS[-1], 4 * out_channels, (3, 3), dtype=dtype, kernel_init=kernel_init,
                             bias_init=bias_init, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        for conv in self.up:
            z = activation(depth_to_space(conv(z)))
        return depth_to_space(self.head(z)).astype(jnp.float32)


class ImageHead(nnx.Module):
    """An image-level task's head: global average pool of the encoder's
    features, then one linear layer -> (B, out_channels) logits."""

    def __init__(self, in_channels: int, out_channels: int, *, dtype, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_channels, out_channels, dtype=dtype, kernel_init=kernel_init, bias_init=bias_init,
                                 rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.linear(z.mean(axis=(1, 2))).astype(jnp.float32)


class MultiTaskNet(nnx.Module):
    """Shared encoder + one decoder per task (an `ImageHead` for an image-level
    task); returns {task name: prediction}.

    Args:
      tasks: the tasks this network learns (any non-empty subset).
      size: encoder multiply-add fraction (1 full, 0.5 half-size).
      dtype: compute dtype (bfloat16 is an option on a GPU); parameters
        stay float32.
    """

    def __init__(self, tasks: Sequence[Task], *, size: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs):
        if not tasks:
            raise ValueError("a network needs at least one task")
        self.task_names = tuple(t.name for t in tasks)
        self.size = size
        self.encoder = Encoder(size, dtype=dtype, rngs=rngs)
        self.decoders = nnx.Dict(
            {t.name: (ImageHead if t.kind == "image" else Decoder)(self.encoder.out_channels, t.channels, dtype=dtype,
                                                                     rngs=rngs) for t in tasks}
        )

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        z = self.encoder(x)
        return {name: self.decoders[name](z) for name in self.task_names}

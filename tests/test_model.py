"""Network shapes, sizes, resolutions and measured cost."""

import jax.numpy as jnp
import pytest
from flax import nnx

from mtl.cost import network_flops
from mtl.model import MultiTaskNet, ResolutionError, check_resolution, encoder_channels
from tasks.registry import TASKS, resolve_tasks


@pytest.mark.parametrize("size", [0.5, 1.0])
def test_every_task_gets_its_output_shape(size):
    tasks = tuple(TASKS.values())
    model = MultiTaskNet(tasks, size=size, rngs=nnx.Rngs(0))
    out = model(jnp.zeros((2, 32, 32, 3)))
    assert set(out) == set(TASKS)
    for t in tasks:
        assert out[t.name].shape == (2, 32, 32, t.channels)
        assert out[t.name].dtype == jnp.float32


@pytest.mark.parametrize("resolution", [32, 40, 64, 96])
def test_any_valid_resolution(resolution):
    model = MultiTaskNet(resolve_tasks("d"), rngs=nnx.Rngs(0))
    assert model(jnp.zeros((1, resolution, resolution, 3)))["depth"].shape == (1, resolution, resolution, 1)


@pytest.mark.parametrize("bad", [16, 36, 65, 264])
def test_bad_resolution_says_which_are_valid(bad):
    with pytest.raises(ResolutionError, match=r"multiple of 8 between 32 and 256 \(32, 40, 48"):
        check_resolution(bad)


def test_half_size_network_halves_the_encoder_work():
    full = network_flops(resolve_tasks("s"), size=1.0)
    half = network_flops(resolve_tasks("s"), size=0.5)
    assert half.encoder_flops / full.encoder_flops == pytest.approx(0.5, abs=0.05)
    # Decoders keep their widths; only their first layer reads fewer channels.
    assert half.decoder_flops == pytest.approx(full.decoder_flops, rel=0.2)
    assert encoder_channels(0.5) == tuple(round(c * 0.5**0.5) for c in encoder_channels(1.0))


def test_decoders_add_up():
    one = network_flops(resolve_tasks("d"))
    two = network_flops(resolve_tasks("d,t"))
    assert two.encoder_flops == pytest.approx(one.encoder_flops)
    assert two.decoder_flops == pytest.approx(2 * one.decoder_flops, rel=0.01)


def test_bad_size_and_empty_task_list():
    with pytest.raises(ValueError, match="size"):
        encoder_channels(0.0)
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskNet((), rngs=nnx.Rngs(0))

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


@pytest.mark.parametrize("shape", [(3, 3, 3, 32), (3, 3, 128, 128), (3, 3, 8, 28), (5, 7), (64, 1), (3, 3, 1, 1),
                                   (4096, 1), (4097, 1)])
def test_kernel_init_draws_flax_default_values(shape):
    """The bucketed draw is Flax's LeCun-normal initialiser bit for bit, below, at and past a bucket's size."""
    import jax
    import numpy as np

    from mtl.model import kernel_init

    for seed in (0, 7):
        key = jax.random.PRNGKey(seed)
        want = nnx.initializers.lecun_normal()(key, shape, jnp.float32)
        got = kernel_init(key, shape, jnp.float32)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_networks_initialise_as_with_flax_defaults(monkeypatch):
    """Every parameter of full- and half-size networks (dense and image heads) equals what Flax's own
    initialisers give the same network."""
    import jax
    import numpy as np

    import mtl.model
    from tasks.registry import Task, resolve_tasks

    image = Task(name="attr", aliases=(), label="rgb", channels=3, decode=lambda y: y, loss=None, masked=False,
                 stats=None, finalize=None, metric="error", higher_is_better=False, description="", kind="image")
    cases = [(resolve_tasks("s,d,n,k,t"), 1.0), ((*resolve_tasks("s"), image), 0.5)]
    for tasks, size in cases:
        ours = nnx.state(MultiTaskNet(tasks, size=size, rngs=nnx.Rngs(3)), nnx.Param)
        with monkeypatch.context() as m:
            m.setattr(mtl.model, "kernel_init", nnx.initializers.lecun_normal())
            m.setattr(mtl.model, "bias_init", nnx.initializers.zeros_init())
            flax = nnx.state(MultiTaskNet(tasks, size=size, rngs=nnx.Rngs(3)), nnx.Param)
        a, b = jax.tree.leaves(ours), jax.tree.leaves(flax)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_building_an_ensemble_compiles_no_program_per_parameter_shape():
    """Initialisation puts host arrays on the device (no copy program per shape), draws kernels from a
    few size buckets and makes biases on the host. Built at a size no other test uses (new parameter
    shapes): before, this compiled 43 programs, one or two per shape."""
    import jax

    from mtl.stacked import Ensemble
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks
    from tests.compiles import compiled_programs

    with compiled_programs() as compiled:
        tasks = resolve_tasks("s,d,n")
        ens = Ensemble.create([(t,) for t in tasks] + [tuple(tasks)], TrainConfig(steps=5, size=0.37))
    n_shapes = len({tuple(x.shape) for x in jax.tree.leaves(ens.params)})
    assert n_shapes > 15
    assert len(compiled) <= 12, compiled  # 11 in a fresh process; fewer once the size buckets are compiled
    assert compiled.count("jit(stage)") <= 1 and "jit(broadcast_in_dim)" not in compiled, compiled

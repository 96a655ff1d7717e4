"""The one training step with balancing: ensembles equal their networks trained alone, and every
method lowers every task's loss."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from mtl.balancing import METHODS
from mtl.ensemble import train_ensemble
from mtl.train import TrainConfig, build_model, evaluate, to_device, train_network
from tasks.registry import resolve_tasks
from tasks.scenes import render_scenes

MEMBERS = [resolve_tasks(m) for m in ("seg,depth", "depth,normals,edges")]


@pytest.fixture(scope="module")
def tiny():
    return render_scenes(seed=3, count=12, resolution=32)


@pytest.mark.parametrize("balance", ["mgda", "pcgrad", "gradnorm", "dwa"])
def test_balanced_ensemble_members_equal_their_networks_alone(tiny, balance):
    # 12 images, batch 4: an epoch is 3 steps, so DWA's weights move off 1 from step 6 on. SGD, not
    # AdamW: Adam's normalised step carries float32 rounding (the Gram matrices sum in another order)
    # to ~5e-5 in the losses within 8 steps, which would hide nothing but blur the comparison.
    cfg = TrainConfig(steps=8, batch_size=4, steps_per_call=4, balance=balance, optimizer="sgd", learning_rate=0.05)
    results, _, _ = train_ensemble(MEMBERS, tiny, cfg, strategy="unroll", progress=False)
    for member, res in zip(MEMBERS, results, strict=True):
        alone = train_network(member, tiny, cfg, progress=False)
        # Same initialisation and minibatches; a member's weights come from its own tasks only
        # (the other member's tasks are masked out), so only float32 rounding differs.
        np.testing.assert_allclose(res.losses, alone.losses, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("balance", sorted(METHODS))
def test_every_method_lowers_every_task_loss(tiny, balance):
    tasks = resolve_tasks("seg,depth,normals")
    data = {k: v[:4] for k, v in tiny.items()}
    cfg = TrainConfig(steps=40, batch_size=4, steps_per_call=20, learning_rate=3e-3, balance=balance)
    split = to_device(data, tasks)
    graphdef, params = nnx.split(build_model(tasks, cfg), nnx.Param)
    before = evaluate(graphdef, params, split, tasks)
    result = train_network(tasks, data, cfg, progress=False)
    after = evaluate(result.graphdef, result.params, split, tasks)
    for t in tasks:
        assert after[t.name]["loss"] < 0.9 * before[t.name]["loss"], (t.name, before, after)


def test_balance_is_checked_when_the_config_is_made():
    with pytest.raises(ValueError, match="unknown balancing method 'mdga'"):
        dataclasses.replace(TrainConfig(), balance="mdga")


def test_optimizer_state_is_what_optax_makes_and_compiles_nothing_per_shape():
    """AdamW's and SGD's states are zeros, made on the host with the traced shapes; a transform whose
    state starts from the parameters or a constant gets tx.init itself. Every leaf equals tx.init's."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from mtl.step import optimizer_state
    from mtl.train import TrainConfig, make_optimizer

    params = {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones(4), "k": {"c": jnp.full((2, 2, 3, 5), 2.0)}}
    copy = optax.GradientTransformation(lambda p: jax.tree.map(lambda x: x * 1.0, p), lambda u, s, p=None: (u, s))
    ones = optax.GradientTransformation(lambda p: jax.tree.map(jnp.ones_like, p), lambda u, s, p=None: (u, s))
    for tx in (make_optimizer(TrainConfig(steps=50)), make_optimizer(TrainConfig(steps=50, optimizer="sgd")),
               optax.adam(1e-3), copy, ones):
        got, want = optimizer_state(tx, params), tx.init(params)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # inside a trace it is optax's own init
    shapes = jax.eval_shape(lambda p: optimizer_state(optax.adam(1e-3), p), params)
    assert jax.tree.structure(shapes) == jax.tree.structure(optax.adam(1e-3).init(params))
    # parameters of shapes no test used before compile nothing (optax's eager init compiles a zeros
    # program for each of them; the one-element check's programs are compiled above)
    from mtl import runtime
    from tests.compiles import compiled_programs

    # put on the device as the networks' parameters are (`runtime.put`)
    new_shapes = {k: runtime.put(np.ones(s, np.float32))
                  for k, s in {"w": (7, 13), "b": (17,), "c": (3, 3, 19, 23)}.items()}
    with compiled_programs() as compiled:
        optimizer_state(make_optimizer(TrainConfig(steps=77)), new_shapes)
    assert compiled == [], compiled
    with compiled_programs() as compiled:
        make_optimizer(TrainConfig(steps=77)).init(new_shapes)
    assert len(compiled) >= 3, compiled  # what it replaces: one zeros program per new shape

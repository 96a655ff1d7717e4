"""TAG lookahead affinity and gradient cosine: against hand computations on a
linear multi-task model, limiting cases, conventions, the accumulator, and a
real MultiTaskNet against a plain per-task loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grouping.affinity import (
    accumulate,
    affinity_and_cosine,
    gradient_cosine,
    init_accumulator,
    key_names,
    lookahead_affinity,
    mean_matrices,
    multitask_net_loss,
    shared_mask,
    summarise,
    to_tag_matrix,
)
from tests.linear_model import B, D, MASK, f32, hand_grads, hand_losses, linear_loss, linear_split_loss

# ---------------------------------------------------------------------------
# The linear multi-task model of tests/linear_model.py, with 3 tasks.

N = 3


def linear_problem(seed=0, a=None, y=None, w=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, D))
    params = {
        "w": rng.normal(size=D) * 0.5 if w is None else np.asarray(w, float),
        "a": rng.uniform(0.5, 1.5, size=N) if a is None else np.asarray(a, float),
    }
    Y = rng.normal(size=(N, B)) if y is None else np.asarray(y, float)
    return X, Y, params


def hand_affinity(X, Y, p, lr):
    g = hand_grads(X, Y, p)
    before = hand_losses(X, Y, p["w"], p["a"])
    z = np.empty((len(Y), len(Y)))
    for i in range(len(Y)):  # source i takes the step on w; heads a stay
        after = hand_losses(X, Y, p["w"] - lr * g[i], p["a"])
        z[i] = 1.0 - after / before
    return z


def hand_cosine(X, Y, p):
    g = hand_grads(X, Y, p)
    norm = np.linalg.norm(g, axis=1)
    return g @ g.T / np.outer(norm, norm)


LR = 0.05


def test_affinity_matches_the_hand_computation():
    X, Y, p = linear_problem()
    z = np.asarray(lookahead_affinity(linear_loss(X, Y), f32(p), MASK, LR))
    want = hand_affinity(X, Y, p, LR)
    assert np.abs(want).min() > 1e-2  # a step large enough to test relative error
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-7)
    # Row = source: Z[i, j] is the change of target j's loss. Not symmetric.
    assert not np.allclose(z, z.T, rtol=1e-3)


def test_divide_by_lr_is_tags_released_scale():
    X, Y, p = linear_problem(1)
    z = lookahead_affinity(linear_loss(X, Y), f32(p), MASK, LR, divide_by_lr=True)
    np.testing.assert_allclose(np.asarray(z), hand_affinity(X, Y, p, LR) / LR, rtol=1e-5, atol=1e-6)


def test_cosine_matches_the_hand_computation_is_symmetric_with_unit_diagonal():
    X, Y, p = linear_problem(2)
    cos = np.asarray(gradient_cosine(linear_loss(X, Y), f32(p), MASK))
    np.testing.assert_allclose(cos, hand_cosine(X, Y, p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cos, cos.T, atol=1e-7)
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-6)


def test_identical_tasks_affect_each_other_as_themselves():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(N, B))
    y[1] = y[0]
    X, Y, p = linear_problem(3, a=[1.2, 1.2, 0.7], y=y)
    r = affinity_and_cosine(linear_loss(X, Y), f32(p), MASK, LR)
    z, cos = np.asarray(r.affinity), np.asarray(r.cosine)
    np.testing.assert_allclose(z[0, 1], z[0, 0], rtol=1e-6)
    np.testing.assert_allclose(z[1, 0], z[1, 1], rtol=1e-6)
    np.testing.assert_allclose(cos[0, 1], 1.0, atol=1e-6)


def test_opposite_targets_give_negative_affinity_and_cosine_minus_one():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(N, B))
    y[1] = -y[0]
    # w = 0: predictions are 0, so the two gradients are exactly opposite.
    X, Y, p = linear_problem(4, a=[1.0, 1.0, 0.8], y=y, w=np.zeros(D))
    r = affinity_and_cosine(linear_loss(X, Y), f32(p), MASK, LR)
    z, cos = np.asarray(r.affinity), np.asarray(r.cosine)
    assert z[0, 0] > 0 and z[1, 1] > 0  # a task's own step helps it
    assert z[0, 1] < 0 and z[1, 0] < 0  # and hurts its opposite
    np.testing.assert_allclose(cos[0, 1], -1.0, atol=1e-6)
    # atol: 1 - ratio in float32 cannot resolve much below 1e-7.
    np.testing.assert_allclose(z, hand_affinity(X, Y, p, LR), rtol=1e-5, atol=5e-7)


def test_jit_shapes_and_the_total_gradient_is_the_gradient_of_the_summed_loss():
    X, Y, p = linear_problem(5)
    loss_fn = linear_loss(X, Y)
    params = f32(p)
    fn = jax.jit(lambda q, lr: affinity_and_cosine(loss_fn, q, MASK, lr))
    r = fn(params, jnp.float32(LR))  # lr may be traced (a schedule value)
    assert r.losses.shape == (N,) and r.affinity.shape == (N, N) and r.cosine.shape == (N, N)
    np.testing.assert_allclose(np.asarray(r.losses), hand_losses(X, Y, p["w"], p["a"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(r.affinity), hand_affinity(X, Y, p, LR), rtol=1e-5, atol=1e-7)
    want = jax.grad(lambda q: loss_fn(q).sum())(params)
    for k in want:
        np.testing.assert_allclose(np.asarray(r.grad[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-7)
    w = jnp.array([0.5, 0.0, 2.0])
    rw = affinity_and_cosine(loss_fn, params, MASK, LR, weights=w)
    want_w = jax.grad(lambda q: jnp.dot(w, loss_fn(q)))(params)
    for k in want_w:
        np.testing.assert_allclose(np.asarray(rw.grad[k]), np.asarray(want_w[k]), rtol=1e-5, atol=1e-7)
    # Weights enter the total gradient only (jit vs eager: rounding differs).
    np.testing.assert_allclose(np.asarray(rw.affinity), np.asarray(r.affinity), rtol=1e-5, atol=5e-7)


def test_split_loss_gives_the_same_numbers_as_a_plain_loss():
    X, Y, p = linear_problem(6)
    params, w = f32(p), jnp.array([1.0, 0.3, 2.0])
    a = affinity_and_cosine(linear_loss(X, Y), params, MASK, LR, weights=w)
    b = affinity_and_cosine(linear_split_loss(X, Y), params, MASK, LR, weights=w)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_a_predicate_on_key_paths_works_like_a_mask_and_heads_never_step():
    X, Y, p = linear_problem(7)
    loss_fn, params = linear_loss(X, Y), f32(p)
    by_mask = lookahead_affinity(loss_fn, params, MASK, LR)
    by_predicate = lookahead_affinity(loss_fn, params, lambda path: key_names(path)[0] == "w", LR)
    np.testing.assert_array_equal(np.asarray(by_mask), np.asarray(by_predicate))
    # Marking the heads shared too changes the answer (so they were not moving before).
    both = lookahead_affinity(loss_fn, params, {"w": True, "a": True}, LR)
    assert not np.allclose(np.asarray(both), np.asarray(by_mask))
    with pytest.raises(ValueError, match="no parameter"):
        lookahead_affinity(loss_fn, params, {"w": False, "a": False}, LR)
    with pytest.raises(ValueError, match="structure"):
        lookahead_affinity(loss_fn, params, {"w": True}, LR)


def test_a_target_at_zero_loss_gets_zero_not_nan():
    X, Y, p = linear_problem(8, w=np.zeros(D))
    Y = Y.copy()
    Y[2] = 0.0  # w = 0 fits task 2 exactly: its loss and gradient are 0
    r = affinity_and_cosine(linear_loss(X, Y), f32(p), MASK, LR)
    assert np.isfinite(np.asarray(r.affinity)).all() and np.isfinite(np.asarray(r.cosine)).all()
    assert np.asarray(r.affinity)[:, 2].tolist() == [0.0, 0.0, 0.0]
    assert np.asarray(r.cosine)[2].tolist() == [0.0, 0.0, 0.0]


def test_to_tag_matrix_puts_the_receiving_task_first():
    z = np.array([[1.0, 2.0], [3.0, 4.0]])  # Z[source, target]
    m = to_tag_matrix(z, ["s", "d"])
    assert m == {"s": {"s": 1.0, "d": 3.0}, "d": {"s": 2.0, "d": 4.0}}  # m[target][source]
    with pytest.raises(ValueError):
        to_tag_matrix(z, ["s", "d", "n"])


def test_accumulator_averages_skips_and_runs_under_jit():
    acc = init_accumulator(2)
    step = jax.jit(accumulate)
    zs = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[3.0, 0.0], [1.0, 0.0]]), np.full((2, 2), 99.0)]
    cs = [np.eye(2), -np.eye(2), np.full((2, 2), 99.0)]
    for k, (z, c) in enumerate(zip(zs, cs)):
        acc = step(acc, jnp.asarray(z), jnp.asarray(c), k < 2)  # the third is not counted
    s = summarise(acc)
    assert s.count == 2
    np.testing.assert_allclose(s.affinity, [[2.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(s.cosine, np.zeros((2, 2)))
    np.testing.assert_allclose(mean_matrices(list(zip(zs[:2], cs[:2]))).affinity, s.affinity)
    with pytest.raises(ValueError):
        summarise(init_accumulator(2))


# ---------------------------------------------------------------------------
# A real MultiTaskNet: the batched implementation against a plain loop.


def test_multitask_net_vmapped_equals_a_python_loop_and_the_mask_is_the_encoder():
    from mtl.model import MultiTaskNet
    from mtl.train import task_losses
    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    tasks = resolve_tasks("seg,depth")
    # The real network's structure, without its initialisers: on this CPU
    # each truncated-normal initialiser compiles for over a second. LeCun-
    # scaled normal kernels and small biases from numpy instead.
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: MultiTaskNet(tasks, rngs=nnx.Rngs(0))), nnx.Param)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) * (np.prod(s.shape[:-1]) ** -0.5 if len(s.shape) > 1 else 0.1),
                              jnp.float32), abstract)
    batch = {k: jnp.asarray(v) for k, v in render_scenes(0, 2, 32).items()}

    mask = shared_mask(params)
    for path, flag in jax.tree_util.tree_flatten_with_path(mask)[0]:
        assert flag == (key_names(path)[0] == "encoder"), key_names(path)
    assert any(jax.tree.leaves(mask)) and not all(jax.tree.leaves(mask))
    with pytest.raises(ValueError, match="encoder"):
        shared_mask(params, "encodr")

    lr = 300.0  # encoder gradients of a fresh network are tiny: make Z large enough to compare

    def loss_fn(p, b=batch):
        return task_losses(graphdef, p, b, tasks)

    @jax.jit  # both paths in one program: one compilation (seconds on this CPU)
    def measure(p, b):
        plain = affinity_and_cosine(lambda q: loss_fn(q, b), p, mask, lr)
        return plain, affinity_and_cosine(multitask_net_loss(graphdef, tasks, b), p, mask, lr)

    fast, split = measure(params, batch)

    # Reference: one task at a time, in Python (each piece jitted once).
    losses = jax.jit(lambda p: loss_fn(p))
    grad_of = jax.jit(jax.grad(lambda p, i: loss_fn(p)[i]))
    before = np.asarray(losses(params))
    grads = [grad_of(params, i) for i in range(len(tasks))]
    z = np.empty((2, 2))
    for i, g in enumerate(grads):
        stepped = jax.tree.map(lambda x, gx, m: x - lr * gx if m else x, params, g, mask)
        z[i] = 1.0 - np.asarray(losses(stepped)) / before
    flat = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.tree.map(
        lambda gx, m: gx if m else jnp.zeros(0), g, mask))]) for g in grads]
    cos = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in flat] for a in flat])

    assert np.abs(z).min() > 1e-3
    for r in (fast, split):
        np.testing.assert_allclose(np.asarray(r.losses), before, rtol=1e-5)
        # The lookahead losses L'/L = 1 - Z to 1e-5 relative. (Z itself to
        # ~1e-6 absolute: batched and plain convolutions round differently.)
        np.testing.assert_allclose(1.0 - np.asarray(r.affinity), 1.0 - z, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(r.affinity), z, rtol=2e-3)
        np.testing.assert_allclose(np.asarray(r.cosine), cos, rtol=1e-5, atol=1e-6)
        total = jax.tree.map(lambda a, b: a + b, grads[0], grads[1])
        for a, b in zip(jax.tree.leaves(r.grad), jax.tree.leaves(total)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_measuring_during_training_trains_like_plain_training():
    """The probe's step applies the sum of the per-task gradients: the run
    must follow the plain run (up to float rounding) and count k-th steps."""
    from grouping.affinity import affinity_probe, summarise
    from mtl.train import TrainConfig, train_network
    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    tasks = resolve_tasks("seg,depth")
    data = render_scenes(0, 8, 32)
    cfg = TrainConfig(steps=12, batch_size=4, steps_per_call=6)
    plain = train_network(tasks, data, cfg, progress=False)
    probed = train_network(tasks, data, cfg, progress=False, probe=affinity_probe(2, every=5))
    np.testing.assert_allclose(probed.losses, plain.losses, rtol=2e-4, atol=1e-6)
    summary = summarise(probed.probe)
    assert summary.count == 3  # steps 0, 5, 10
    assert summary.affinity.shape == summary.cosine.shape == (2, 2)
    np.testing.assert_allclose(np.diag(summary.cosine), 1.0, atol=1e-5)

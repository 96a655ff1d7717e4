"""The corrected lookahead (grouping.lookahead): against hand computations on a linear multi-task model,
AdamW's preconditioner against optax's real update, units, the averaging, and the probe training like a
plain step on a real network."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grouping.affinity import lookahead_affinity
from grouping.lookahead import (
    LookaheadResult,
    accumulate,
    adam_preconditioner,
    column_normalised,
    init_accumulator,
    lookahead,
    summarise,
)
from tests.linear_model import B, D, MASK, f32, hand_grads, hand_losses, linear_loss, linear_split_loss

# The linear multi-task model of tests/linear_model.py, with 4 tasks (each with its own offset), a loss
# scale s_t where a test gives one, and a positive diagonal preconditioner P.
N = 4


def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, D))
    Y = rng.normal(size=(N, B)) + rng.normal(size=(N, 1))
    params = {"w": rng.normal(size=D) * 0.5, "a": rng.uniform(0.5, 1.5, size=N)}
    pre = {"w": rng.uniform(0.2, 5.0, size=D), "a": rng.uniform(0.2, 5.0, size=N)}  # a positive diagonal P
    return X, Y, params, pre


def hand_lookahead(X, Y, p, pre, length):
    """Z[i, j] by hand: source i steps `length` along P g_i; heads fixed."""
    g = hand_grads(X, Y, p)
    d = g * (np.ones(D) if pre is None else pre["w"])[None, :]
    before = hand_losses(X, Y, p["w"], p["a"])
    z = np.empty((N, N))
    for i in range(N):
        step = length * d[i] / np.linalg.norm(d[i])
        z[i] = 1.0 - hand_losses(X, Y, p["w"] - step, p["a"]) / before
    return z, d @ g.T, d @ d.T


LENGTH = 0.1


@pytest.mark.parametrize("preconditioned", [True, False])
def test_lookahead_matches_the_hand_computation(preconditioned):
    X, Y, p, pre = problem()
    r = lookahead(linear_loss(X, Y), f32(p), MASK, LENGTH, f32(pre) if preconditioned else None)
    z, inner, gram = hand_lookahead(X, Y, p, pre if preconditioned else None, LENGTH)
    assert np.abs(z).max() > 1e-2 and np.all(np.diag(z) > 0)
    np.testing.assert_allclose(np.asarray(r.lookahead), z, rtol=2e-4, atol=1e-6)
    # float32 sums: absolute error ~1e-6 of the largest entry
    np.testing.assert_allclose(np.asarray(r.inner), inner, rtol=1e-5, atol=1e-6 * np.abs(inner).max())
    np.testing.assert_allclose(np.asarray(r.gram), gram, rtol=1e-5, atol=1e-6 * np.abs(gram).max())
    np.testing.assert_allclose(np.asarray(r.losses), hand_losses(X, Y, p["w"], p["a"]), rtol=1e-5)
    want = jax.grad(lambda q: linear_loss(X, Y)(q).sum())(f32(p))  # the training gradient: the sum of the tasks'
    for k in want:
        np.testing.assert_allclose(np.asarray(r.grad[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-7)


def test_a_split_loss_gives_the_same_numbers():
    X, Y, p, pre = problem(1)
    split = linear_split_loss(X, Y)
    a = lookahead(linear_loss(X, Y), f32(p), MASK, LENGTH, f32(pre))
    b = lookahead(split, f32(p), MASK, LENGTH, f32(pre))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_adam_preconditioner_is_what_the_real_adamw_step_divides_by():
    """AdamW's update = -lr_k (m_hat * P + wd * params), P from the state after the update."""
    X, Y, p, _ = problem(2)
    params = f32(p)
    lr, wd = 0.01, 1e-4
    tx = optax.adamw(lr, weight_decay=wd)
    state = tx.init(params)
    f = linear_loss(X, Y)
    for k in range(1, 4):
        g = jax.grad(lambda q: f(q).sum())(params)
        updates, state = tx.update(g, state, params)
        pre = adam_preconditioner(state)
        mu = optax.tree_utils.tree_get(state, "mu")
        for key in params:
            m_hat = mu[key] / (1 - 0.9 ** k)
            np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(-lr * (m_hat * pre[key] + wd * params[key])),
                                       rtol=1e-5, atol=1e-9)
        params = optax.apply_updates(params, updates)
    sgd = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=0.9))
    assert adam_preconditioner(sgd.init(params)) is None  # SGD: the identity


def test_rescaling_one_task_s_loss_changes_no_corrected_choice_but_changes_tag_s():
    """At one point of training (parameters, optimizer state), multiply task 0's loss by 1000: the
    corrected lookahead, and the lookahead method's table and choice, are unchanged; TAG's row 0 and
    TAG's grouping change."""
    from grouping.lookahead import column_normalised
    from grouping.methods.lookahead import calibrated_candidates
    from grouping.objective import get_objective
    from grouping.selection import select_networks
    from grouping.selection_tag import select_groups_tag

    X, Y, p, pre = problem(3)
    names = ("a", "b", "c", "d")
    scale = np.array([1000.0, 1.0, 1.0, 1.0])
    plain = lookahead(linear_loss(X, Y), f32(p), MASK, LENGTH, f32(pre))
    scaled = lookahead(linear_loss(X, Y, scale), f32(p), MASK, LENGTH, f32(pre))
    np.testing.assert_allclose(np.asarray(scaled.lookahead), np.asarray(plain.lookahead), rtol=1e-4, atol=1e-6)

    # The method's table from each: references and the all-task losses scale with the loss too.
    rng = np.random.default_rng(0)
    single = dict(zip(names, rng.uniform(0.5, 1.0, N)))
    half = {t: 1.1 * v for t, v in single.items()}
    together = {t: v * rng.uniform(0.85, 1.15) for t, v in single.items()}

    def choice(z, s):
        zn = column_normalised(np.asarray(z))
        table = calibrated_candidates(names, zn, {t: single[t] * s[i] for i, t in enumerate(names)},
                                      {t: half[t] * s[i] for i, t in enumerate(names)},
                                      {t: together[t] * s[i] for i, t in enumerate(names)})
        obj = get_objective("relative")
        reference = obj.reference({nw.label: nw.losses for nw in table}, names)
        return [sorted(nw.label for nw in sel.networks) for sel in select_networks(obj.table(table, reference),
                                                                                   [1, 1.5, 2, 2.5, 3], tasks=names)]

    assert choice(plain.lookahead, np.ones(N)) == choice(scaled.lookahead, scale)

    lr = 0.05
    tag = np.asarray(lookahead_affinity(linear_loss(X, Y), f32(p), MASK, lr, divide_by_lr=True))
    tag_scaled = np.asarray(lookahead_affinity(linear_loss(X, Y, scale), f32(p), MASK, lr, divide_by_lr=True))
    assert not np.allclose(tag_scaled[0], tag[0], rtol=0.1)  # the scaled source dominates its row
    np.testing.assert_allclose(tag_scaled[1:], tag[1:], rtol=1e-4, atol=1e-5)  # the other rows stay
    groups = [sorted(nw.label for nw in s.networks) for s in select_groups_tag((names, tag.T), [2, 3])]
    groups_scaled = [sorted(nw.label for nw in s.networks) for s in select_groups_tag((names, tag_scaled.T), [2, 3])]
    assert groups != groups_scaled


def test_accumulator_means_and_column_normalisation():
    acc = init_accumulator(2)
    z1, z2 = np.array([[0.2, 0.1], [0.05, 0.4]]), np.array([[0.4, -0.1], [0.15, 0.2]])
    step = jax.jit(accumulate)
    for z in (z1, z2):
        acc = step(acc, LookaheadResult(jnp.zeros(2), jnp.asarray(z), jnp.asarray(2 * z), jnp.asarray(3 * z), None))
    s = summarise(acc)
    assert s.count == 2
    mean = (z1 + z2) / 2  # [[0.3, 0], [0.1, 0.3]]
    np.testing.assert_allclose(s.lookahead, mean, rtol=1e-6)
    np.testing.assert_allclose(s.inner, 2 * mean, rtol=1e-6)
    np.testing.assert_allclose(s.normalised, [[1.0, 0.0], [0.1 / 0.3, 1.0]], rtol=1e-6)
    # A column whose self-affinity is not positive carries no information: 0.
    np.testing.assert_array_equal(column_normalised(np.array([[-0.1, 0.2], [0.3, 0.4]]))[:, 0], [0.0, 0.0])
    with pytest.raises(ValueError):
        summarise(init_accumulator(2))


def test_the_probe_trains_like_plain_training_and_measures_every_kth_step():
    from grouping.lookahead import lookahead_probe
    from mtl.train import TrainConfig, train_network
    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    tasks = resolve_tasks("seg,depth")
    data = render_scenes(0, 8, 32)
    cfg = TrainConfig(steps=12, batch_size=4, steps_per_call=6)
    plain = train_network(tasks, data, cfg, progress=False)
    probed = train_network(tasks, data, cfg, progress=False, probe=lookahead_probe(2, every=5))
    np.testing.assert_allclose(probed.losses, plain.losses, rtol=2e-4, atol=1e-6)
    s = summarise(probed.probe)
    assert s.count == 2  # steps 5, 10; step 0 (the warm-up's rate 0) moves nothing and is not counted
    assert np.all(np.diag(s.lookahead) > 0)  # a step along a task's own AdamW direction lowers its loss
    np.testing.assert_allclose(np.diag(s.normalised), 1.0)
    np.testing.assert_allclose(s.gram, s.gram.T, rtol=1e-5)


def test_the_probe_measures_with_the_real_update_s_length_and_preconditioner():
    """Step 5 of a run by hand: the state after 5 plain steps, the real AdamW update of step 5, and
    `lookahead` with that update's length on the shared parameters and the updated state's P."""
    from flax import nnx

    from grouping.affinity import multitask_net_loss, shared_mask
    from grouping.lookahead import lookahead_probe
    from mtl.train import (TrainConfig, build_model, initial_state, make_optimizer, make_train_fn, sample_batch,
                           to_device, train_network)
    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    tasks = resolve_tasks("seg,depth")
    data = render_scenes(0, 8, 32)
    cfg = TrainConfig(steps=6, batch_size=4, steps_per_call=6)
    probed = train_network(tasks, data, cfg, progress=False, probe=lookahead_probe(2, every=5))
    s = summarise(probed.probe)
    assert s.count == 1  # step 5

    device_data = to_device(data, tasks)
    graphdef, params = nnx.split(build_model(tasks, cfg), nnx.Param)
    tx = make_optimizer(cfg)
    state = initial_state(params, tx)
    step = make_train_fn(graphdef, tasks, tx, cfg)
    for _ in range(5):
        state, _ = step(state, device_data)
    batch = sample_batch(device_data, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 5), cfg.batch_size)
    # Jitted, as the probe runs them (eager, each primitive compiles alone: 3x the test's time).
    grads = jax.jit(jax.grad(lambda p: mtl_losses(graphdef, p, batch, tasks).sum()))(state["params"])
    updates, opt_state = jax.jit(tx.update)(grads, state["opt_state"], state["params"])
    mask = shared_mask(state["params"])
    length = np.sqrt(sum(float(np.sum(np.square(u))) for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(mask))
                         if m))
    r = jax.jit(lambda p, n, P: lookahead(multitask_net_loss(graphdef, tasks, batch), p, mask, n, P))(
        state["params"], length, adam_preconditioner(opt_state))
    assert length > 0 and np.all(np.diag(np.asarray(r.lookahead)) > 0)
    np.testing.assert_allclose(s.lookahead, np.asarray(r.lookahead) / length, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(s.inner, np.asarray(r.inner), rtol=2e-3)


def mtl_losses(graphdef, params, batch, tasks):
    from mtl.train import task_losses

    return task_losses(graphdef, params, batch, tasks)

"""Balancing methods (mtl/balancing.py) against values worked out by hand or by brute force."""

import itertools

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl import balancing as B
from mtl.pertask import SplitLoss
from mtl.step import TaskModel, initial_state, make_step


def simplex_grid(n: int, steps: int) -> np.ndarray:
    """Every point of the simplex in R^n with coordinates in multiples of 1/steps."""
    pts = [c for c in itertools.product(range(steps + 1), repeat=n - 1) if sum(c) <= steps]
    return np.array([(*c, steps - sum(c)) for c in pts], np.float64) / steps


# ---------------------------------------------------------------------------
# MGDA


@pytest.mark.parametrize("seed", range(4))
def test_mgda_two_tasks_is_the_closed_form_min_norm_point(seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(2, 7))
    if seed == 3:  # one gradient inside the other's half-space and shorter: the optimum is a vertex
        g[1] = 3 * g[0] + 0.1 * rng.normal(size=7)
    g1, g2 = g
    alpha = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)  # Sener & Koltun, Algorithm 1
    combined, w = B.mgda(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(np.asarray(w), 2 * np.array([alpha, 1 - alpha]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(combined), 2 * (alpha * g1 + (1 - alpha) * g2), atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_mgda_three_tasks_matches_brute_force_over_the_simplex(seed):
    rng = np.random.default_rng(10 + seed)
    g = rng.normal(size=(3, 5))
    g[1] = -0.7 * g[0] + 0.4 * g[1]  # a conflict, so the optimum is not a vertex
    m = g @ g.T
    grid = simplex_grid(3, 400)
    values = np.einsum("ni,ij,nj->n", grid, m, grid)
    best = grid[values.argmin()]
    _, w = B.mgda(jnp.asarray(g, jnp.float32))
    a = np.asarray(w, np.float64) / 3
    assert a.min() >= 0 and a.sum() == pytest.approx(1, abs=1e-5)
    assert a @ m @ a <= values.min() + 1e-6  # at least as low as the best grid point
    np.testing.assert_allclose(a, best, atol=5e-3)


def test_mgda_ignores_an_absent_task():
    g = np.array([[1.0, 0.0], [5.0, 5.0], [-0.5, 1.0]], np.float32)
    _, w3 = B.mgda(jnp.asarray(g), mask=jnp.array([1.0, 0.0, 1.0]))
    _, w2 = B.mgda(jnp.asarray(g[[0, 2]]))
    assert float(w3[1]) == 0.0
    np.testing.assert_allclose(np.asarray(w3)[[0, 2]], np.asarray(w2), atol=1e-6)


# ---------------------------------------------------------------------------
# PCGrad


def test_pcgrad_projections_by_hand():
    g = jnp.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # g1.g2 = -1: g1' = g1 - (-1/2) g2 = (0.5, 0.5, 0); g2' = g2 - (-1/1) g1 = (0, 1, 0); g3 conflicts with none.
    combined, w = B.pcgrad(g, order=jnp.array([2, 1, 0]))
    np.testing.assert_allclose(np.asarray(combined), [0.5, 1.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(w), [2.0, 1.5, 1.0], atol=1e-6)  # 0.5 g2 + 1 g1 added
    # Without conflicts nothing is projected: the sum.
    combined, _ = B.pcgrad(jnp.abs(g), order=jnp.array([0, 1, 2]))
    np.testing.assert_allclose(np.asarray(combined), np.abs(np.asarray(g)).sum(0), atol=1e-6)
    # An absent task neither contributes nor is projected onto.
    combined, w = B.pcgrad(g, order=jnp.array([0, 1, 2]), mask=jnp.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(combined), [1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_pcgrad_equals_projecting_the_vectors_in_the_given_order(seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(4, 6))
    order = rng.permutation(4)
    expected = np.zeros(6)
    for i in range(4):  # Yu et al., Algorithm 1, literally
        gi = g[i].copy()
        for j in order:
            if j != i and gi @ g[j] < 0:
                gi -= gi @ g[j] / (g[j] @ g[j]) * g[j]
        expected += gi
    combined, _ = B.pcgrad(jnp.asarray(g, jnp.float32), order=jnp.asarray(order))
    np.testing.assert_allclose(np.asarray(combined), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# CAGrad


def cagrad_brute_force(g: np.ndarray, c: float, steps: int) -> tuple[float, np.ndarray]:
    n = len(g)
    g0 = g.mean(0)
    grid = simplex_grid(n, steps)
    gw = grid @ g
    f = gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw, axis=1)
    best = gw[f.argmin()]
    update = (g0 + c * np.linalg.norm(g0) * best / np.linalg.norm(best)) / (1 + c * c)
    return f.min(), n * update


@pytest.mark.parametrize("seed", range(3))
def test_cagrad_matches_brute_force(seed):
    rng = np.random.default_rng(20 + seed)
    for n, steps in ((2, 20000), (3, 300)):
        g = rng.normal(size=(n, 6))
        g[1] = -0.8 * g[0] + 0.5 * g[1]
        fmin, expected = cagrad_brute_force(g, B.CAGRAD_C, steps)
        combined, w = B.cagrad(jnp.asarray(g, jnp.float32))
        # The solver's inner point, recovered from the weights, is at least as good as the grid's best.
        ww = np.asarray(w, np.float64) * (1 + B.CAGRAD_C ** 2) / n - 1 / n
        ww = ww / ww.sum()
        g0, gw = g.mean(0), ww @ g
        assert gw @ g0 + B.CAGRAD_C * np.linalg.norm(g0) * np.linalg.norm(gw) <= fmin + 1e-5
        np.testing.assert_allclose(np.asarray(combined), expected, atol=2e-2 if n == 3 else 1e-3)


def test_cagrad_with_c_zero_is_the_sum():
    g = jnp.array([[1.0, 2.0], [-3.0, 0.5], [0.2, -1.0]])
    combined, w = B.cagrad(g, c=0.0)
    np.testing.assert_allclose(np.asarray(w), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(combined), np.asarray(g).sum(0), atol=1e-6)


# ---------------------------------------------------------------------------
# GradNorm


def test_gradnorm_weight_gradient_by_hand():
    g = jnp.array([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    combined, w, dw = B.gradnorm(g, weights=jnp.array([1.0, 1.0]), losses=jnp.array([2.0, 1.0]),
                                 initial=jnp.array([2.0, 2.0]))
    # L/L0 = (1, 0.5), r = (4/3, 2/3); Gbar = (5 + 1)/2 = 3; targets 3 r^1.5 = (4.62, 1.63);
    # w|g| - target = (+0.38, -0.63): d/dw = (+5, -1).
    np.testing.assert_allclose(np.asarray(dw), [5.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(combined), [3.0, 5.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(B.gradnorm_renormalise(jnp.array([3.0, 1.0, 9.0]), jnp.array([1.0, 1.0, 0.0]))),
                               [1.5, 0.5, 0.0])


# ---------------------------------------------------------------------------
# Uncertainty weighting and DWA, a few steps of the real training step on a toy model.

TARGETS = np.array([1.0, -2.0, 0.5])


def toy_model() -> TaskModel:
    """Task t's loss (h_t w - y_t)^2 + (w - 1)^2 / 10: shared w (the "encoder"), heads h_t."""
    def heads(params, zs):
        return jnp.stack([(params["decoders"]["h"][t] * zs[t] - TARGETS[t]) ** 2 + (zs[t] - 1.0) ** 2 / 10
                          for t in range(3)])

    def features(params):
        return params["encoder"]["w"]

    stack = lambda z: jnp.broadcast_to(z, (3,))  # noqa: E731
    return TaskModel(losses=lambda params, batch: heads(params, stack(features(params))),
                     split=lambda batch: SplitLoss(features, heads, 3), mask=np.ones(3, np.float32),
                     names=("a", "b", "c"))


def toy_losses_and_grads(w, h):
    z = h * w - TARGETS
    losses = z ** 2 + (w - 1) ** 2 / 10
    dw = 2 * z * h + (w - 1) / 5  # d L_t / d w
    dh = 2 * z * w  # d L_t / d h_t
    return losses, dw, dh


class Cfg:
    seed, batch_size = 0, 2


def run_toy(balance: str, steps: int, lr: float):
    params = {"encoder": {"w": jnp.asarray(0.3)}, "decoders": {"h": jnp.array([0.5, 1.5, -1.0])}}
    tx = optax.sgd(lr)
    state = initial_state(params, tx, balance, (3,))
    step = make_step(toy_model(), tx, Cfg, balance=balance)
    data = {"x": jnp.zeros((4, 1))}  # 4 images, batch 2: an epoch is 2 steps
    out = []
    for _ in range(steps):
        state, losses = step(state, data)
        out.append((float(state["params"]["encoder"]["w"]), np.asarray(state["params"]["decoders"]["h"])))
    return out


def test_uncertainty_weighting_over_a_few_steps_by_hand():
    lr = 0.1
    w, h, s = 0.3, np.array([0.5, 1.5, -1.0]), np.zeros(3)
    expected = []
    for _ in range(4):  # loss sum_t (exp(-s_t) L_t + s_t) / 2, SGD on w, h and s together
        losses, dw, dh = toy_losses_and_grads(w, h)
        weights = np.exp(-s) / 2
        w, h, s = w - lr * weights @ dw, h - lr * weights * dh, s - lr * 0.5 * (1 - np.exp(-s) * losses)
        expected.append((w, h.copy()))
    for (w_got, h_got), (w_exp, h_exp) in zip(run_toy("uncertainty", 4, lr), expected):
        assert w_got == pytest.approx(w_exp, rel=1e-5)
        np.testing.assert_allclose(h_got, h_exp, rtol=1e-5)


def test_dwa_over_a_few_steps_by_hand():
    lr, epoch = 0.05, 2  # 4 images, batch 2
    w, h = 0.3, np.array([0.5, 1.5, -1.0])
    epoch_means, running = [], np.zeros(3)
    expected = []
    for step in range(8):
        losses, dw, dh = toy_losses_and_grads(w, h)
        if len(epoch_means) >= 2:  # Liu et al.: T softmax(r / 2), r = Lbar(e-1) / Lbar(e-2)
            r = epoch_means[-1] / epoch_means[-2]
            weights = 3 * np.exp(r / 2) / np.exp(r / 2).sum()
        else:
            weights = np.ones(3)
        running += losses
        if (step + 1) % epoch == 0:
            epoch_means.append(running / epoch)
            running = np.zeros(3)
        w, h = w - lr * weights @ dw, h - lr * weights * dh
        expected.append((w, h.copy()))
    assert len(epoch_means) == 4  # the weights moved off 1 at steps 4 to 7
    for (w_got, h_got), (w_exp, h_exp) in zip(run_toy("dwa", 8, lr), expected):
        assert w_got == pytest.approx(w_exp, rel=1e-5)
        np.testing.assert_allclose(h_got, h_exp, rtol=1e-5)


def test_gradient_methods_in_the_step_combine_the_shared_gradient_only():
    """MGDA-UB on the toy: the representation is w itself, so its per-task gradients are dL_t/dw;
    the shared gradient is sum_t 3 a_t dL_t/dw and each head gets its own task's gradient."""
    lr = 0.1
    w, h = 0.3, np.array([0.5, 1.5, -1.0])
    losses, dw, dh = toy_losses_and_grads(w, h)
    grid = simplex_grid(3, 600)
    a = grid[np.argmin((grid @ dw) ** 2)]
    (w_got, h_got), = run_toy("mgda", 1, lr)
    assert w_got == pytest.approx(w - lr * 3 * a @ dw, abs=2e-3 * lr)
    np.testing.assert_allclose(h_got, h - lr * dh, rtol=1e-6)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown balancing method 'mgdaa'.*equal"):
        B.parse_methods("mgda,mgdaa")

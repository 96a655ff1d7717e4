r"""Balancing the tasks of one network: how the task losses (or their gradients) are combined.

Small pure functions of arrays, in the optax style; `mtl.step` applies them
inside the one training step, per member network (an ensemble's members
have their own task sets: a ``mask`` of the tasks present, 1 or 0, keeps the
absent ones out of every method). Two families:

Loss weighting (the training loss is ``sum_t w_t L_t``):

``equal``        ``w_t = 1``: the sum of the task losses (Standley et al.
                 2020); what every other part of the project trains with.
``uncertainty``  Kendall, Gal & Cipolla, "Multi-task learning using
                 uncertainty to weigh losses", CVPR 2018: a learned log
                 variance ``s_t`` per task, loss ``sum_t (exp(-s_t) L_t + s_t) / 2``
                 (``1/(2 sigma^2) L + log sigma`` with ``s = log sigma^2``),
                 ``s_t`` starting at 0 and trained with the network
                 (`uncertainty_loss`).
``dwa``          Liu, Johns & Davison, "End-to-end multi-task learning with
                 attention" (Dynamic Weight Average), CVPR 2019:
                 ``w_t = T exp(r_t / tau) / sum_u exp(r_u / tau)``,
                 ``r_t = Lbar_t(e-1) / Lbar_t(e-2)``, ``Lbar_t(e)`` the mean
                 training loss of epoch e, ``tau = 2``; ``w = 1`` in the first
                 two epochs (`dwa_weights`, `dwa_update`). An epoch here is
                 ``ceil(train images / batch size)`` steps.

Gradient methods, each a pure function of a (tasks, parameters) matrix ``G``
of per-task gradients of the shared parameters, returning the combined
gradient and the task weights, as LibMTL's methods do (Lin & Zhang,
"LibMTL: a Python library for multi-task learning", JMLR 2023). Every one
of them combines the rows linearly, ``g = sum_t w_t g_t = G^T w``, with ``w``
a function of the Gram matrix ``G G^T`` alone; so `mtl.step` computes the
Gram matrix leaf by leaf without concatenating the gradients, calls the
``*_weights`` function, and sums. The weights are on the scale of ``equal``
(which is ``w = 1``, the sum of the gradients): where a paper's weights sum
to 1 they are multiplied by the number of tasks T.

``gradnorm``  Chen et al., "GradNorm: gradient normalization for adaptive
              loss balancing", ICML 2018: learned weights ``w_t`` (start 1,
              renormalised to sum to T after every update); the training
              gradient is ``sum_t w_t g_t``, and the weights follow the
              gradient of ``sum_t | w_t |g_t| - Gbar r_t^alpha |`` with
              ``Gbar = mean_t w_t |g_t|``, ``r_t = (L_t / L_t(0)) / mean_u (L_u / L_u(0))``,
              the target held constant, ``alpha = 1.5`` (`gradnorm_weight_grad`).
              ``|g_t|`` is over all shared parameters (LibMTL's choice;
              the paper uses the last shared layer).
``mgda``      Sener & Koltun, "Multi-task learning as multi-objective
              optimization", NeurIPS 2018: the min-norm point of the convex
              hull of the gradients, ``min_{a in simplex} |sum_t a_t g_t|^2``,
              weights ``T a``. We implement MGDA-UB, their upper bound: the
              gradients are taken w.r.t. the shared *representation* (the
              encoder's output on the batch), which needs one backward pass
              through the heads instead of T through the encoder; the encoder
              then gets ``sum_t T a_t dL_t/dz`` pulled back. Solved with the
              pairwise (away-step) variant of Frank-Wolfe (`min_norm_weights`):
              Sener & Koltun's Frank-Wolfe with exact line search, moving
              weight from the worst active vertex to the best one, which
              converges linearly where plain Frank-Wolfe zig-zags.
``pcgrad``    Yu et al., "Gradient surgery for multi-task learning",
              NeurIPS 2020: each ``g_i`` in turn is projected off every other
              task's (original) gradient it conflicts with (``g_i . g_j < 0``:
              ``g_i -= (g_i . g_j / |g_j|^2) g_j``), the others visited in a
              random order; the result is ``sum_i g_i``. Each projected
              gradient stays a combination of the originals, so the method
              runs on the Gram matrix (`pcgrad_weights`).
``cagrad``    Liu et al., "Conflict-averse gradient descent for multi-task
              learning", NeurIPS 2021: with ``g0`` the mean gradient and
              ``c = 0.5``, ``w* = argmin_{w in simplex} g_w . g0 + c |g0| |g_w|``,
              ``g = (g0 + c |g0| g_w* / |g_w*|) / (1 + c^2)`` (LibMTL's
              rescaling), times T (`cagrad_weights`; the same pairwise
              Frank-Wolfe, with an exact line search).

Task-specific parameters (the decoders) follow LibMTL: under gradient
methods each decoder gets its own task's unweighted gradient, except under
GradNorm, which weights the losses themselves (``w_t`` on both).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

#: Liu et al. 2019's temperature.
DWA_TEMPERATURE = 2.0
#: Chen et al. 2018's asymmetry on NYUv2.
GRADNORM_ALPHA = 1.5
#: Liu et al. 2021's default.
CAGRAD_C = 0.5
#: Iterations of the pairwise Frank-Wolfe solvers (MGDA, CAGrad): a T x T problem, cheap.
SOLVER_STEPS = 100

_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Method:
    """A balancing method by name. ``kind``: "loss" (a weighted training loss), "gradient"
    (per-task gradients of the shared parameters) or "representation" (per-task gradients of the
    shared representation: MGDA-UB). ``learned``: the method keeps weights in the training state."""

    name: str
    kind: str
    paper: str


METHODS = {m.name: m for m in (
    Method("equal", "loss", "sum of the task losses (Standley et al. 2020)"),
    Method("uncertainty", "loss", "Kendall et al. 2018, uncertainty weighting"),
    Method("dwa", "loss", "Liu et al. 2019, dynamic weight average"),
    Method("gradnorm", "gradient", "Chen et al. 2018, GradNorm"),
    Method("mgda", "representation", "Sener & Koltun 2018, MGDA-UB"),
    Method("pcgrad", "gradient", "Yu et al. 2020, PCGrad"),
    Method("cagrad", "gradient", "Liu et al. 2021, CAGrad"),
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown balancing method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(text: str | None) -> tuple[str, ...]:
    """'mgda,pcgrad' -> ('mgda', 'pcgrad'), each checked (ValueError naming a bad one)."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    for n in names:
        get_method(n)
    return names


# ---------------------------------------------------------------------------
# Loss weighting.


def uncertainty_loss(log_var: jax.Array, losses: jax.Array, mask: jax.Array) -> jax.Array:
    """Kendall et al.: ``sum_t mask_t (exp(-s_t) L_t + s_t) / 2``; differentiate w.r.t. both."""
    return 0.5 * jnp.sum(mask * (jnp.exp(-log_var) * losses + log_var))


def uncertainty_weights(log_var: jax.Array) -> jax.Array:
    """The weight each loss gets under `uncertainty_loss`: ``exp(-s_t) / 2``."""
    return 0.5 * jnp.exp(-log_var)


class DWAState(NamedTuple):
    """Running means of the training losses for DWA: this epoch's sum, the last two epochs' means."""

    sum: jax.Array  # (..., T) losses summed over this epoch's steps so far
    last: jax.Array  # (..., T) mean of the last finished epoch
    before: jax.Array  # (..., T) mean of the one before it
    epochs: jax.Array  # () finished epochs


def dwa_init(shape: tuple[int, ...]) -> DWAState:
    z = lambda: jnp.zeros(shape, jnp.float32)  # noqa: E731  (three buffers: the step donates them)
    return DWAState(z(), z(), z(), jnp.zeros((), jnp.int32))


def dwa_weights(state: DWAState, mask: jax.Array, temperature: float = DWA_TEMPERATURE) -> jax.Array:
    """``T softmax(r / tau)`` over the present tasks (T of them), ``r = last / before``; 1 for the
    first two epochs. Absent tasks get 0."""
    n = jnp.sum(mask, axis=-1, keepdims=True)
    r = state.last / jnp.where(state.before > 0, state.before, 1.0)
    e = jnp.where(mask > 0, jnp.exp((r - jnp.max(jnp.where(mask > 0, r, -jnp.inf), -1, keepdims=True)) / temperature),
                  0.0)
    w = n * e / jnp.sum(e, axis=-1, keepdims=True)
    return jnp.where(state.epochs >= 2, w, mask)


def dwa_update(state: DWAState, losses: jax.Array, step: jax.Array, epoch_steps: int) -> DWAState:
    """Adds step `step`'s training losses; on an epoch's last step its mean becomes `last`."""
    total = state.sum + losses.astype(jnp.float32)
    end = (step + 1) % epoch_steps == 0
    return DWAState(
        sum=jnp.where(end, 0.0, total),
        last=jnp.where(end, total / epoch_steps, state.last),
        before=jnp.where(end, state.last, state.before),
        epochs=state.epochs + end.astype(jnp.int32),
    )


# ---------------------------------------------------------------------------
# Gradient methods on the Gram matrix M = G G^T (T x T); `mask` (T,) 1 for a present task.


def gram(grads: jax.Array) -> jax.Array:
    """``G G^T`` of a (T, P) matrix, in full float32 precision."""
    return jnp.einsum("ip,jp->ij", grads, grads, precision=_HI)


def _pairwise_fw(objective_grad, line_search, m: jax.Array, mask: jax.Array, steps: int) -> jax.Array:
    """Pairwise Frank-Wolfe on the simplex over the present tasks: from the uniform point, each step
    moves weight from the active vertex with the largest gradient to the one with the smallest,
    by the exact minimiser on that segment (`line_search(w, d, gamma_max)`)."""
    present = mask > 0
    w0 = jnp.where(present, 1.0, 0.0) / jnp.maximum(jnp.sum(present), 1)
    eye = jnp.eye(m.shape[0], dtype=m.dtype)

    def body(_, w):
        g = objective_grad(w)
        s = jnp.argmin(jnp.where(present, g, jnp.inf))
        a = jnp.argmax(jnp.where(present & (w > 0), g, -jnp.inf))
        d = eye[s] - eye[a]
        gamma = jnp.where(s == a, 0.0, line_search(w, d, w[a]))
        return jnp.clip(w + gamma * d, 0.0, None)

    return jax.lax.fori_loop(0, steps, body, w0)


def _normalised(m: jax.Array, mask: jax.Array) -> jax.Array:
    """M over the present tasks, scaled to a mean diagonal of 1 (the minimisers do not change)."""
    both = mask[:, None] * mask[None, :]
    m = m * both
    scale = jnp.sum(jnp.diagonal(m)) / jnp.maximum(jnp.sum(mask), 1)
    return m / jnp.where(scale > 0, scale, 1.0)


def min_norm_weights(m: jax.Array, mask: jax.Array, steps: int = SOLVER_STEPS) -> jax.Array:
    """``argmin_{a in simplex} a^T M a`` over the present tasks (absent: 0): the MGDA point.

    Pairwise Frank-Wolfe with exact line search: along ``d = e_s - e_a`` the
    objective is ``Q0 + 2 g Q1 + g^2 Q2`` with ``Q1 = d^T M a``, ``Q2 = d^T M d``."""
    m = _normalised(m, mask)

    def line(w, d, gmax):
        q1, q2 = d @ m @ w, d @ m @ d
        return jnp.clip(jnp.where(q2 > 0, -q1 / jnp.where(q2 > 0, q2, 1.0), gmax), 0.0, gmax)

    return _pairwise_fw(lambda w: m @ w, line, m, mask, steps)


def mgda_weights(m: jax.Array, mask: jax.Array) -> jax.Array:
    """MGDA: T times the min-norm point (`min_norm_weights`), T the number of present tasks."""
    return jnp.sum(mask) * min_norm_weights(m, mask)


def pcgrad_weights(m: jax.Array, mask: jax.Array, order: jax.Array) -> jax.Array:
    """PCGrad's combined gradient ``sum_i g_i'`` as weights on the original gradients.

    ``order`` (T,) is the order in which each ``g_i`` visits the others (a permutation;
    one for every i). Task i's projected gradient is ``c_i^T G``; projecting it off
    ``g_j`` subtracts ``(c_i^T M e_j / M_jj)`` from ``c_i[j]``."""
    n = m.shape[0]
    eye = jnp.eye(n, dtype=m.dtype)

    def one(i):
        def visit(c, j):
            dot = c @ m[:, j]
            hit = (j != i) & (mask[j] > 0) & (dot < 0) & (m[j, j] > 0)
            return c - jnp.where(hit, dot / jnp.where(m[j, j] > 0, m[j, j], 1.0), 0.0) * eye[j], None

        c, _ = jax.lax.scan(visit, eye[i], order)
        return c * mask[i]

    return jnp.sum(jax.vmap(one)(jnp.arange(n)), axis=0)


def cagrad_weights(m: jax.Array, mask: jax.Array, c: float = CAGRAD_C, steps: int = SOLVER_STEPS) -> jax.Array:
    """CAGrad's update as weights on the task gradients (module docstring), times T.

    ``b`` = uniform over the present tasks (``g0 = G^T b``); the inner problem
    ``min_w w^T M b + c sqrt(b^T M b) sqrt(w^T M w)`` on the simplex is solved by pairwise
    Frank-Wolfe with the exact minimiser on each segment (the objective is convex along it:
    ``B g + k sqrt(Q2 g^2 + 2 Q1 g + Q0)``)."""
    n_present = jnp.maximum(jnp.sum(mask), 1)
    mn = _normalised(m, mask)
    b = mask / n_present
    k = c * jnp.sqrt(jnp.clip(b @ mn @ b, 0.0))

    def objective_grad(w):
        q = jnp.sqrt(jnp.clip(w @ mn @ w, 1e-20))
        return mn @ b + k * (mn @ w) / q

    def line(w, d, gmax):
        bb, q0, q1, q2 = d @ mn @ b, w @ mn @ w, d @ mn @ w, d @ mn @ d
        safe_q2 = jnp.where(q2 > 0, q2, 1.0)
        r = -bb / jnp.maximum(k * jnp.sqrt(safe_q2), 1e-30)  # u / sqrt(u^2 + D) = r at the stationary point
        dd = jnp.clip(q0 * q2 - q1 * q1, 0.0)
        u = r * jnp.sqrt(dd / jnp.maximum(1.0 - r * r, 1e-30))
        interior = jnp.clip((u - q1) / safe_q2, 0.0, gmax)
        edge = jnp.where(bb < 0, gmax, 0.0)  # |r| >= 1 (or a flat direction): monotone along d
        return jnp.where((q2 > 0) & (jnp.abs(r) < 1), interior, edge)

    w = _pairwise_fw(objective_grad, line, mn, mask, steps)
    gw = jnp.sqrt(jnp.clip(w @ mn @ w, 0.0))
    lam = k / jnp.maximum(gw, 1e-12)
    return n_present * (b + lam * w) / (1.0 + c * c)


def gradnorm_weight_grad(m: jax.Array, weights: jax.Array, losses: jax.Array, initial: jax.Array, mask: jax.Array,
                         alpha: float = GRADNORM_ALPHA) -> jax.Array:
    """The gradient w.r.t. the weights of GradNorm's loss ``sum_t |w_t |g_t| - Gbar r_t^alpha|``
    (target ``Gbar r^alpha`` held constant, as in the paper): ``sign(w_t |g_t| - target_t) |g_t|``."""
    norms = jnp.sqrt(jnp.clip(jnp.diagonal(m), 0.0))
    n = jnp.maximum(jnp.sum(mask), 1)
    ratio = jnp.where(mask > 0, losses / jnp.where(initial > 0, initial, 1.0), 0.0)
    r = ratio / jnp.maximum(jnp.sum(ratio) / n, 1e-30)
    g_bar = jnp.sum(mask * weights * norms) / n
    target = g_bar * r ** alpha
    return mask * jnp.sign(weights * norms - target) * norms


def gradnorm_renormalise(weights: jax.Array, mask: jax.Array) -> jax.Array:
    """Weights kept positive and summing to the number of present tasks (absent ones 0)."""
    w = jnp.where(mask > 0, jnp.maximum(weights, 1e-6), 0.0)
    return jnp.sum(mask) * w / jnp.sum(w)


# ---------------------------------------------------------------------------
# The public form: (T, P) gradients -> (combined gradient, weights).


def _combine(grads: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.einsum("t,tp->p", weights, grads, precision=_HI), weights


def _mask(grads, mask):
    return jnp.ones(grads.shape[0], grads.dtype) if mask is None else jnp.asarray(mask, grads.dtype)


def mgda(grads: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """MGDA's min-norm combination of the rows of `grads` (T, P): ``(G^T w, w)``, ``w = T a``."""
    mask = _mask(grads, mask)
    return _combine(grads, mgda_weights(gram(grads), mask))


def pcgrad(grads: jax.Array, order: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """PCGrad of the rows of `grads` (T, P), visiting the others in `order`: ``(sum_i g_i', w)``."""
    mask = _mask(grads, mask)
    return _combine(grads, pcgrad_weights(gram(grads), mask, jnp.asarray(order)))


def cagrad(grads: jax.Array, mask: jax.Array | None = None, c: float = CAGRAD_C) -> tuple[jax.Array, jax.Array]:
    """CAGrad's update from the rows of `grads` (T, P): ``(G^T w, w)``."""
    mask = _mask(grads, mask)
    return _combine(grads, cagrad_weights(gram(grads), mask, c))


def gradnorm(grads: jax.Array, weights: jax.Array, losses: jax.Array, initial: jax.Array,
             mask: jax.Array | None = None, alpha: float = GRADNORM_ALPHA) -> tuple[jax.Array, jax.Array, jax.Array]:
    """GradNorm at one step: ``(sum_t w_t g_t, w, d GradNorm loss / d w)``."""
    mask = _mask(grads, mask)
    combined, w = _combine(grads, weights * mask)
    return combined, w, gradnorm_weight_grad(gram(grads), weights, losses, initial, mask, alpha)


def init_state(name: str, shape: tuple[int, ...]) -> dict[str, Any] | None:
    """The training-state entry of a method for per-task arrays of `shape` ((T,) or (K, T)); None if it keeps none.

    uncertainty: the log variances ``s`` (start 0); gradnorm: the weights (start 1) and the first
    step's losses ``L(0)`` (set at step 0); dwa: `DWAState`."""
    if name == "uncertainty":
        return {"log_var": jnp.zeros(shape, jnp.float32)}
    if name == "gradnorm":
        return {"weights": jnp.ones(shape, jnp.float32), "initial": jnp.zeros(shape, jnp.float32)}
    if name == "dwa":
        return dwa_init(shape)._asdict()
    return None

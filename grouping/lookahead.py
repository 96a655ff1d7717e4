r"""The corrected lookahead: optimizer-aware, source-normalised task affinity from one all-task run.

TAG (Fifty et al., NeurIPS 2021; `grouping.affinity`) measures
``Z[i, j] = 1 - L_j(θ_s - η g_i, θ_j) / L_j(θ_s, θ_j)``, one plain SGD step of
size η on the shared parameters θ_s along task i's gradient ``g_i``. Two
faults (Wang et al. 2024, "Towards principled task grouping for multi-task
learning"; "Selective task group updates", ICLR 2025):

* the step is SGD's while training uses AdamW, whose step is the gradient
  divided coordinate by coordinate by the root of its second moment;
* the step is as long as the source's gradient, ``Z[i, j] ≈ η <g_i, g_j> / L_j``,
  so a task with a large loss (or gradient) scale dominates its row.

The corrected measurement, at a measured step of the all-task run, on the
step's own minibatch (`lookahead`):

.. math::

    d_i = P g_i,\qquad
    u_i = ρ\, d_i / \lVert d_i \rVert,\qquad
    Z[i, j] = 1 - L_j(θ_s - u_i, θ_j) / L_j(θ_s, θ_j)

``P`` is the optimizer's preconditioner at this step: for AdamW
``P = diag(1 / (sqrt(ν̂) + ε))``, ``ν̂`` its bias-corrected second moment
after this step's update, exactly what the real step divides its first
moment by (`adam_preconditioner`); for SGD ``P = I``. Every source takes a
step of the same length ρ, the length of the optimizer's real update of the
shared parameters at this step (every task's gradient, momentum, weight
decay and the scheduled rate included), so only its *direction* counts, and
``Z[i, j]`` is how much a step as long as the real one, along task i's
optimizer direction, lowers task j's loss. Heads stay fixed, as in TAG.
The probe records ``Z / ρ`` (per unit of length, as TAG records ``Z / η``,
so every measurement weighs the same while the schedule shrinks ρ); a
measured step where the optimizer does not move (the warm-up's first, at
rate 0) is not counted. After the run (`summarise`) the matrix is averaged
over the measurements and each column divided by the target's
self-affinity (Selective task group updates)::

    Zn[i, j] = mean Z[i, j] / mean Z[j, j]        (Zn[j, j] = 1)

A fixed length, ``η sqrt(p)`` (every coordinate moving by the peak rate η),
overshot: on 5 tasks at 32x32 every entry of Z came out negative, the
diagonal included, since Adam's real steps are far shorter (its first moment
averages the minibatch noise out).

"how much a step along i lowers j, relative to a step of the same length
along j's own direction".

Why ``P g_i`` and not the whole optimizer update. An Adam update is
``-η_k (b1 m + (1 - b1) g) / (sqrt(ν̂) + ε)``: with ``b1 = 0.9`` nine tenths
of it is the momentum of every task's past gradients, the same for every
source; a lookahead with it would measure the momentum. What this step's
gradient contributes to the parameters, summed over the steps that momentum
carries it (weights ``(1 - b1) b1^m`` summing to 1), is ``-η P g``: that is
the direction taken here. Nothing of the optimizer state is changed (the
real update is computed once, from the sum of the per-task gradients, and
applied as in a plain step), so nothing needs restoring.

Units. Multiplying task k's loss by c > 0 multiplies ``g_k`` by c: ``d_k /
|d_k|`` and so row k do not change, and column k is a ratio of k's losses.
At a given point of training (parameters and optimizer state) ``Z`` and
``Zn`` do not depend on the units of any task's loss (tests/test_lookahead.py
rescales one by 1000); TAG's row k grows with c. (Rescaling a loss *in
training* changes the training itself, and with it every network.)

Also accumulated, for other models of the same run (first order, free:
Gram matrices over the shared parameters): ``inner[i, j] = <P g_i, g_j>``
(the first-order loss change of j per unit of the step along ``P g_i``) and
``gram[i, j] = <P g_i, P g_j>``.

The n per-task gradients come from one batched backward pass and the n
lookahead losses from one vmapped evaluation (`grouping.affinity`'s
`_per_task`); the training gradient is their sum, so a measured step trains
exactly like a plain one (to float rounding).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grouping.affinity import LossFn, Mask, SplitLoss, _flags, _per_task

#: optax.adamw's defaults, which `mtl.train.make_optimizer` uses (the state holds no b2 or eps).
ADAM_B2 = 0.999
ADAM_EPS = 1e-8


class LookaheadResult(NamedTuple):
    """One measurement (at the given params, on one batch).

    losses: (n,) per-task losses; lookahead: (n, n) ``Z[source, target]``;
    inner: (n, n) ``<P g_i, g_j>``; gram: (n, n) ``<P g_i, P g_j>``;
    grad: the gradient of the training loss (sum of the per-task gradients)
    over all parameters."""

    losses: jax.Array
    lookahead: jax.Array
    inner: jax.Array
    gram: jax.Array
    grad: Any


def adam_preconditioner(opt_state: Any, b2: float = ADAM_B2, eps: float = ADAM_EPS) -> Any | None:
    """``1 / (sqrt(ν / (1 - b2^count)) + ε)`` of the (first) `optax.ScaleByAdamState` in `opt_state`.

    The per-coordinate factor AdamW divides its bias-corrected first moment by
    (optax's ``scale_by_adam`` with ``eps_root = 0``), with the parameters'
    structure; None when the state holds no Adam moments (SGD: ``P = I``)."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)]
    if not found:
        return None
    state = found[0]
    correction = 1.0 - jnp.asarray(b2, jnp.float32) ** jnp.maximum(state.count, 1).astype(jnp.float32)
    return jax.tree.map(lambda v: 1.0 / (jnp.sqrt(v / correction.astype(v.dtype)) + eps), state.nu)


def _shared(tree: Any, flags) -> list:
    return [x for x, f in zip(jax.tree.leaves(tree), flags) if f]


def _lookahead_from(pt, params, flags, preconditioner, length) -> tuple[jax.Array, jax.Array, jax.Array]:
    sh = _shared(params, flags)
    n = pt.losses.shape[0]
    pre = None if preconditioner is None else _shared(preconditioner, flags)
    d = list(pt.shared) if pre is None else [g * p[None].astype(g.dtype) for g, p in zip(pt.shared, pre)]
    hi = jax.lax.Precision.HIGHEST
    gram = sum(jnp.einsum("ip,jp->ij", x.reshape(n, -1), x.reshape(n, -1), precision=hi) for x in d)
    inner = sum(jnp.einsum("ip,jp->ij", x.reshape(n, -1), g.reshape(n, -1), precision=hi)
                for x, g in zip(d, pt.shared))
    norm = jnp.sqrt(jnp.clip(jnp.diagonal(gram), 0.0))
    size = jnp.asarray(length, jnp.float32)
    scale = jnp.where(norm > 0, size / jnp.where(norm > 0, norm, 1.0), 0.0)  # a zero direction: no step

    def one(d_i, s_i):  # one source's step -> (n targets,) losses
        return pt.stepped([x - (s_i * di).astype(x.dtype) for x, di in zip(sh, d_i)])

    after = jax.vmap(one)(d, scale)
    ok = pt.losses > 0  # a target already at loss 0 has no relative change: 0, not NaN
    z = jnp.where(ok[None, :], 1.0 - after / jnp.where(ok, pt.losses, 1.0)[None, :], 0.0)
    return z, inner, gram


def lookahead(loss_fn: LossFn | SplitLoss, params: Any, is_shared: Mask, step_length: float | jax.Array,
              preconditioner: Any | None = None) -> LookaheadResult:
    """The corrected lookahead at `params` on one batch (module docstring).

    Args:
      loss_fn: params -> (n,) per-task losses on one fixed batch, or a
        `grouping.affinity.SplitLoss` of the same (cheaper).
      params: the parameters (any pytree).
      is_shared: which leaves are shared (`grouping.affinity.shared_mask`).
      step_length: the Euclidean length of every source's step on the shared
        parameters (in the probe: the length of the real update).
      preconditioner: a pytree with params' structure, the optimizer's
        per-coordinate factor P (`adam_preconditioner`); None = identity (SGD).

    Returns LookaheadResult(losses, lookahead[source, target], inner, gram, grad).
    """
    flags = _flags(params, is_shared)
    pt = _per_task(loss_fn, params, flags, None)
    z, inner, gram = _lookahead_from(pt, params, flags, preconditioner, step_length)
    return LookaheadResult(pt.losses, z, inner, gram, pt.total)


# ---------------------------------------------------------------------------
# Averaging over training.

_KEYS = ("lookahead", "inner", "gram")


def init_accumulator(n_tasks: int) -> dict[str, jax.Array]:
    """Running sums of the three matrices and a count (a pytree that checkpoints with the run)."""
    return {**{f"{k}_sum": jnp.zeros((n_tasks, n_tasks), jnp.float32) for k in _KEYS},
            "count": jnp.zeros((), jnp.int32)}


def accumulate(acc: Mapping[str, jax.Array], r: LookaheadResult,
               include: bool | jax.Array = True) -> dict[str, jax.Array]:
    """acc plus one measurement; `include` (may be traced) = False leaves acc unchanged."""
    w = jnp.asarray(include, jnp.float32)
    out = {f"{k}_sum": acc[f"{k}_sum"] + w * getattr(r, k).astype(jnp.float32) for k in _KEYS}
    return {**out, "count": acc["count"] + jnp.asarray(include, jnp.int32)}


def column_normalised(z: np.ndarray) -> np.ndarray:
    """``Zn[i, j] = Z[i, j] / Z[j, j]``; a column whose self-affinity is not positive is 0 (no information)."""
    z = np.asarray(z, dtype=np.float64)
    diag = np.diagonal(z).copy()
    ok = diag > 0
    return np.where(ok[None, :], z / np.where(ok, diag, 1.0)[None, :], 0.0)


class Summary(NamedTuple):
    lookahead: np.ndarray  # (n, n) mean Z[source, target]
    normalised: np.ndarray  # (n, n) Zn = column_normalised(lookahead)
    inner: np.ndarray  # (n, n) mean <P g_i, g_j>
    gram: np.ndarray  # (n, n) mean <P g_i, P g_j>
    count: int


def summarise(acc: Mapping[str, Any]) -> Summary:
    """Means over the measurements (float64) and the column-normalised matrix (ValueError when none)."""
    count = int(np.asarray(acc["count"]))
    if count == 0:
        raise ValueError("no lookahead measurement was accumulated")
    mean = {k: np.asarray(acc[f"{k}_sum"], np.float64) / count for k in _KEYS}
    return Summary(mean["lookahead"], column_normalised(mean["lookahead"]), mean["inner"], mean["gram"], count)


# ---------------------------------------------------------------------------
# Measuring during one all-task training run.


def lookahead_probe(n_tasks: int, every: int = 10):
    """A `mtl.train.Probe` measuring the corrected lookahead every `every` steps.

    A measured step computes the per-task gradients once (batched), applies
    their sum with the real optimizer exactly as a plain step does, takes
    AdamW's preconditioner from the updated state (`adam_preconditioner`;
    SGD: identity) and measures `lookahead` with steps as long as the real
    update of the shared parameters, ρ; it accumulates ``Z / ρ`` (not when
    ρ = 0)."""
    from mtl.train import Probe

    if every < 1:
        raise ValueError(f"the lookahead must be measured every k >= 1 steps, got {every}")

    def make_measure(graphdef, tasks, tx, cfg):
        def measure(acc, pt, params, flags, updates, opt_state):
            length = jnp.sqrt(sum(jnp.sum(jnp.square(u.astype(jnp.float32))) for u in _shared(updates, flags)))
            moved = length > 0
            z, inner, gram = _lookahead_from(pt, params, flags, adam_preconditioner(opt_state), length)
            r = LookaheadResult(pt.losses, z / jnp.where(moved, length, 1.0), inner, gram, None)
            return accumulate(acc, r, moved)

        return measure

    return Probe(every=every, init=lambda: init_accumulator(n_tasks), make_measure=make_measure)


def train_with_lookahead(tasks, splits, cfg, *, every: int = 10, checkpoint_dir=None, progress: bool = True) -> dict:
    """Trains all `tasks` in one network (`mtl.train.train_and_evaluate`) measuring the corrected
    lookahead every `every` steps. Returns the evaluation report plus "lookahead", "normalised",
    "inner", "gram" ((n, n) means, [source, target]), "names" and "measurements"."""
    from mtl.train import train_and_evaluate

    tasks = tuple(tasks)
    report = train_and_evaluate(tasks, splits, cfg, checkpoint_dir=checkpoint_dir, progress=progress,
                                probe=lookahead_probe(len(tasks), every))
    s = summarise(report.pop("probe"))
    report.update(lookahead=s.lookahead, normalised=s.normalised, inner=s.inner, gram=s.gram,
                  names=[t.name for t in tasks], measurements=s.count)
    return report

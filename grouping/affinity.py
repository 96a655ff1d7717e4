"""Inter-task affinity (TAG) and gradient cosine similarity (CS), measured
during one training run of all tasks together.

TAG (Fifty et al., NeurIPS 2021): take one SGD step on the *shared*
parameters with the gradient of task i alone (heads unchanged), on the
current minibatch, and see how much task j's loss on the same minibatch
changes::

    Z[i, j] = 1 - L_j(theta_s - lr * grad_{theta_s} L_i, theta_j) / L_j(theta_s, theta_j)

Positive: a step on task i lowers task j's loss. To first order
``Z[i, j] ~= lr * <g_i, g_j> / L_j``, so Z is not symmetric (it is divided by
the *target's* loss). CS, the baseline of the paper, is the cosine of the
per-task gradients on the shared parameters (flattened and concatenated).

Conventions. Arrays from this module are indexed ``Z[source, target]``:
row i = the task that takes the step, column j = the task whose loss changes.
TAG's notebooks and `grouping.selection` use the transpose, as nested dicts:
``matrix[a][b]`` = affinity of b onto a (row = the receiving task);
`to_tag_matrix` converts.

Everything here is a pure function of arrays (jit-able, no Python loop over
tasks): the n per-task gradients come from one `jax.vjp` of the per-task loss
vector, pulled back with the n one-hot cotangents under `jax.vmap`; the n
lookahead losses from one `jax.vmap` over the n stepped parameter sets.
That costs n backward passes through the whole network, heads included
(n^2 head backwards); a loss given as a `SplitLoss` (shared trunk + per-task
heads, e.g. `multitask_net_loss`) runs the heads' backward once and only the
trunk's n times.

`params` is any pytree (a nested dict, or the `nnx.State` of
``nnx.split(model, nnx.Param)``). Which leaves are shared is given by
`is_shared`: a pytree of Python bools with params' structure (see
`shared_mask`), or a predicate ``is_shared(key_path) -> bool`` on the JAX key
path of each leaf (see `key_names`). The mask is static: it must hold
Python/numpy bools, not traced arrays.

Averaging over training: `init_accumulator` / `accumulate` / `summarise`
keep running sums in a plain dict of arrays (a pytree that checkpoints with
the training state).

Choosing the lookahead step. Z is a difference of two float32 losses, so it
cannot resolve much below 1e-7..1e-6 (batched and plain evaluations round
differently); a step too large leaves the first-order regime (the step
overshoots and Z falls, even below 0 on the diagonal). On the standard
network after 150 AdamW steps, lr = 2e-3 (the peak training rate) matched
the first-order value to a few percent while lr = 0.1 did not. Use a
constant probe step (not a schedule that decays to 1% or warms up from 0)
and `divide_by_lr=True` for TAG's released scale (Z / lr, measured every 10
steps in their Taskonomy code).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl.pertask import (  # noqa: F401  (re-exported: the per-task gradients live in mtl.pertask)
    LossFn,
    Mask,
    SplitLoss,
    _flags,
    _per_task,
    _PerTask,
    _rebuild,
    key_names,
    shared_mask,
)


# ---------------------------------------------------------------------------
# The estimators.


class AffinityResult(NamedTuple):
    """What one measurement returns (all at the given params, on one batch).

    losses:    (n,) per-task losses L_j(theta) -- the step's training losses.
    affinity:  (n, n) Z[source, target] (see the module docstring).
    cosine:    (n, n) cosine of the shared-parameter gradients (symmetric).
    grad:      gradient of the training loss sum_i w_i L_i (w = `weights`,
               1 by default) over ALL parameters (params' structure) = the
               weighted sum of the per-task gradients, so a training step
               can apply it without another backward pass.
    """

    losses: jax.Array
    affinity: jax.Array
    cosine: jax.Array
    grad: Any


def _cosine_from(shared_grads: Sequence[jax.Array], eps: float) -> jax.Array:
    """Cosine of the rows of the (n, P) matrix the leaves concatenate to,
    without materialising it: the Gram matrix is a sum over leaves."""
    n = shared_grads[0].shape[0]
    gram = sum(
        jnp.einsum("ip,jp->ij", g.reshape(n, -1), g.reshape(n, -1), precision=jax.lax.Precision.HIGHEST)
        for g in shared_grads
    )
    norm = jnp.sqrt(jnp.clip(jnp.diagonal(gram), 0.0))
    return gram / jnp.maximum(norm[:, None] * norm[None, :], eps)


def _affinity_from(pt: _PerTask, params, flags, lr, divide_by_lr) -> jax.Array:
    sh = [x for x, f in zip(jax.tree.leaves(params), flags) if f]

    def lookahead(g_i):  # one source task's shared gradient -> (n targets,) losses
        return pt.stepped([x - jnp.asarray(lr, x.dtype) * g.astype(x.dtype) for x, g in zip(sh, g_i)])

    after = jax.vmap(lookahead)(pt.shared)  # (n sources, n targets), batched
    # A target already at loss 0 has no relative change to measure: 0, not NaN.
    ok = pt.losses > 0
    z = jnp.where(ok[None, :], 1.0 - after / jnp.where(ok, pt.losses, 1.0)[None, :], 0.0)
    return z / lr if divide_by_lr else z


def affinity_and_cosine(
    loss_fn: LossFn | SplitLoss, params: Any, is_shared: Mask, lr: float | jax.Array, *,
    divide_by_lr: bool = False, weights: jax.Array | None = None, eps: float = 1e-30,
) -> AffinityResult:
    """TAG affinity, gradient cosine, the losses and the total gradient, from
    ONE forward pass, n batched backward passes and n batched lookahead
    forward passes.

    Args:
      loss_fn: params -> (n,) per-task losses on one fixed batch (close over
        the batch), or a `SplitLoss` of the same (cheaper, see there).
      params: the parameters (any pytree).
      is_shared: which leaves are shared (see module docstring, `shared_mask`).
      lr: the lookahead SGD step size (may be traced, e.g. a schedule value).
      divide_by_lr: report Z / lr, as TAG's released Taskonomy code does
        (the scale of fixtures/tag2021/affinities.json); to first order it is
        then independent of lr. lr must then be nonzero.
      weights: (n,) task weights of the training loss for `grad` (default
        all 1); they do not enter affinity or cosine.
      eps: floor of |g_i| |g_j| in the cosine; a task with a zero shared
        gradient gets cosine 0 (diagonal included), not NaN.

    Returns AffinityResult(losses, affinity[source, target], cosine, grad).
    The total gradient `grad` is the (weighted) sum of the per-task gradients
    over all parameters (the heads' included), i.e. the gradient of the
    training loss sum_i w_i L_i, so a training step that measures affinity
    applies it instead of running a separate backward pass.
    """
    flags = _flags(params, is_shared)
    pt = _per_task(loss_fn, params, flags, weights)
    z = _affinity_from(pt, params, flags, lr, divide_by_lr)
    return AffinityResult(pt.losses, z, _cosine_from(pt.shared, eps), pt.total)


def lookahead_affinity(
    loss_fn: LossFn | SplitLoss, params: Any, is_shared: Mask, lr: float | jax.Array, *,
    divide_by_lr: bool = False,
) -> jax.Array:
    """(n, n) TAG affinity Z[i, j] = 1 - L_j(theta_s - lr grad_s L_i, theta_j) / L_j(theta).

    Row i = the source (the task whose gradient takes the SGD step on the
    shared parameters), column j = the target (the task whose loss is
    re-measured on the same batch). Heads do not move. Z[i, j] > 0: a step on
    i lowers j's loss. A target whose loss is exactly 0 gets 0. Transpose
    (`to_tag_matrix`) for TAG's row = receiving task. See `affinity_and_cosine`.
    """
    flags = _flags(params, is_shared)
    return _affinity_from(_per_task(loss_fn, params, flags, None), params, flags, lr, divide_by_lr)


def gradient_cosine(loss_fn: LossFn | SplitLoss, params: Any, is_shared: Mask, *, eps: float = 1e-30) -> jax.Array:
    """(n, n) cosine similarity of the per-task gradients on the shared
    parameters (all shared leaves flattened and concatenated). Symmetric,
    diagonal 1 (0 for a task whose shared gradient is exactly 0)."""
    flags = _flags(params, is_shared)
    return _cosine_from(_per_task(loss_fn, params, flags, None).shared, eps)


def multitask_net_loss(graphdef: Any, tasks: Sequence[Any], batch: Mapping[str, jax.Array]) -> SplitLoss:
    """The `SplitLoss` of `mtl.model.MultiTaskNet` (params from
    ``nnx.split(model, nnx.Param)``) on one batch: features = the encoder's
    output, heads = decoders + `Task.compute_loss` (`mtl.train.network_split`,
    what the training step uses). Equals
    `mtl.train.task_losses(graphdef, params, batch, tasks)`; shared = the
    'encoder' subtree (`shared_mask(params)`)."""
    from mtl.train import network_split

    return network_split(graphdef, tasks, batch)


# ---------------------------------------------------------------------------
# Conventions.


def to_tag_matrix(z: Any, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Z[source, target] -> {target: {source: value}}: TAG's notebook layout
    (matrix[a][b] = affinity of b onto a, row = receiving task), which
    `grouping.selection` consumes. Diagonal kept (the solver ignores it).
    Also right for the cosine matrix, which is symmetric."""
    z = np.asarray(z, dtype=np.float64)
    names = list(names)
    if z.shape != (len(names), len(names)):
        raise ValueError(f"matrix of shape {z.shape} for {len(names)} task names")
    return {a: {b: float(z[j, i]) for j, b in enumerate(names)} for i, a in enumerate(names)}


# ---------------------------------------------------------------------------
# Averaging over training.


def init_accumulator(n_tasks: int) -> dict[str, jax.Array]:
    """Running sums of affinity and cosine: a dict of arrays (a pytree that
    jit, donation and orbax checkpoints take as is)."""
    return {
        "affinity_sum": jnp.zeros((n_tasks, n_tasks), jnp.float32),
        "cosine_sum": jnp.zeros((n_tasks, n_tasks), jnp.float32),
        "count": jnp.zeros((), jnp.int32),
    }


def accumulate(acc: Mapping[str, jax.Array], affinity: jax.Array, cosine: jax.Array,
               include: bool | jax.Array = True) -> dict[str, jax.Array]:
    """acc plus one measurement; `include` (may be traced) = False leaves acc
    unchanged, so a jitted step can call it every step and count every k-th."""
    w = jnp.asarray(include, jnp.float32)
    return {
        "affinity_sum": acc["affinity_sum"] + w * affinity.astype(jnp.float32),
        "cosine_sum": acc["cosine_sum"] + w * cosine.astype(jnp.float32),
        "count": acc["count"] + jnp.asarray(include, jnp.int32),
    }


class Summary(NamedTuple):
    affinity: np.ndarray  # (n, n) mean Z[source, target]
    cosine: np.ndarray  # (n, n) mean cosine
    count: int  # measurements averaged


def summarise(acc: Mapping[str, Any]) -> Summary:
    """Mean matrices over the measurements (host numpy, float64). Raises
    ValueError when nothing was accumulated."""
    count = int(np.asarray(acc["count"]))
    if count == 0:
        raise ValueError("no affinity measurement was accumulated")
    return Summary(
        affinity=np.asarray(acc["affinity_sum"], np.float64) / count,
        cosine=np.asarray(acc["cosine_sum"], np.float64) / count,
        count=count,
    )


def mean_matrices(measurements: Sequence[AffinityResult] | Sequence[tuple[jax.Array, jax.Array]]) -> Summary:
    """Convenience: `summarise` of a list of (affinity, cosine) or results."""
    items = [(m.affinity, m.cosine) if isinstance(m, AffinityResult) else m for m in measurements]
    if not items:
        raise ValueError("no affinity measurement was given")
    acc = init_accumulator(np.shape(items[0][0])[0])
    for z, c in items:
        acc = accumulate(acc, jnp.asarray(z), jnp.asarray(c))
    return summarise(acc)


# ---------------------------------------------------------------------------
# Measuring during one all-task training run.


def affinity_probe(n_tasks: int, every: int = 10, probe_lr: float | None = None):
    """A `mtl.train.Probe` measuring TAG and CS every `every` steps.

    On a measured step the one training step (`mtl.step.make_step`) computes
    the per-task gradients on its own minibatch and builds its training
    gradient from them (their sum, with equal weights), so the step trains
    exactly like a plain one with no extra backward pass; the measurement is
    `affinity_and_cosine`'s, from those gradients. The lookahead uses a constant SGD step
    `probe_lr` (default: the peak training rate) and reports Z / probe_lr.
    """
    from mtl.train import Probe

    if every < 1:
        raise ValueError(f"the affinity must be measured every k >= 1 steps, got {every}")

    def make_measure(graphdef, tasks, tx, cfg):
        lr = cfg.learning_rate if probe_lr is None else probe_lr

        def measure(acc, pt, params, flags, updates, opt_state):
            z = _affinity_from(pt, params, flags, lr, True)
            return accumulate(acc, z, _cosine_from(pt.shared, 1e-30))

        return measure

    return Probe(every=every, init=lambda: init_accumulator(n_tasks), make_measure=make_measure)


def train_with_affinity(tasks, splits, cfg, *, every: int = 10, checkpoint_dir=None, progress: bool = True) -> dict:
    """Trains all `tasks` in one network (`mtl.train.train_and_evaluate`),
    measuring TAG and CS every `every` steps. Returns the evaluation report
    plus "tag" and "cs" ((n, n) means, [source, target]), "names" and
    "measurements"."""
    from mtl.train import train_and_evaluate

    tasks = tuple(tasks)
    probe = affinity_probe(len(tasks), every)
    report = train_and_evaluate(tasks, splits, cfg, checkpoint_dir=checkpoint_dir, progress=progress, probe=probe)
    summary = summarise(report.pop("probe"))
    report.update(tag=summary.affinity, cs=summary.cosine, names=[t.name for t in tasks],
                  measurements=summary.count)
    return report

"""Per-task gradients from one vmapped vector-Jacobian product, and which parameters are shared.

A network's per-task losses are a vector (or, for an ensemble of K member
networks, a (K, T) matrix whose last axis is the task). Task t's gradient is
the pull-back of the t-th one-hot cotangent; the T pull-backs run batched
under `jax.vmap`. Given as a `SplitLoss` (a shared trunk and per-task heads),
the heads' backward runs once and only the trunk's runs T times (batched).
Used by the training step (`mtl.step`: balancing methods that need per-task
gradients) and by the affinity probes (`grouping.affinity`,
`grouping.lookahead`).

`params` is any pytree (a nested dict, or the `nnx.State` of
``nnx.split(model, nnx.Param)``). Which leaves are shared is given by a
pytree of Python bools with params' structure (`shared_mask`) or a predicate
on the JAX key path of each leaf (`key_names`); the mask is static.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

LossFn = Callable[[Any], jax.Array]  # params -> (n,) per-task losses on one batch
Mask = Any  # pytree of bools with params' structure, or a predicate on key paths


# ---------------------------------------------------------------------------
# Which parameters are shared.


def key_names(path: Sequence[Any]) -> tuple[str, ...]:
    """A JAX key path as plain strings: ('encoder', 'down', '0', 'kernel', 'value')."""
    names = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                names.append(str(getattr(k, attr)))
                break
        else:
            names.append(str(k))
    return tuple(names)


def shared_mask(params: Any, prefix: str | Sequence[str] = "encoder") -> Any:
    """Pytree of bools with params' structure: True on the leaves under `prefix`.

    `prefix` is a top-level key ("encoder", the shared trunk of
    `mtl.model.MultiTaskNet`) or a path ("encoder/down" or a tuple of names).
    Raises ValueError when no leaf matches (a misspelt prefix would otherwise
    make every affinity 0).
    """
    parts = tuple(prefix.split("/")) if isinstance(prefix, str) else tuple(map(str, prefix))
    mask = jax.tree_util.tree_map_with_path(lambda p, _: key_names(p)[: len(parts)] == parts, params)
    if not any(jax.tree.leaves(mask)):
        tops = sorted({key_names(p)[0] for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]})
        raise ValueError(f"no parameter lies under {'/'.join(parts)!r}; top-level keys: {', '.join(tops)}")
    return mask


def _flags(params: Any, is_shared: Mask) -> tuple[bool, ...]:
    """One static bool per leaf of params (flattening order)."""
    if callable(is_shared):
        flags = [bool(is_shared(p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    else:
        treedef = jax.tree.structure(params)
        try:
            leaves = treedef.flatten_up_to(is_shared)
        except (ValueError, TypeError) as e:
            raise ValueError(f"is_shared must have the structure of params: {e}") from None
        flags = []
        for leaf in leaves:
            if isinstance(leaf, jax.core.Tracer):
                raise TypeError("is_shared must hold static Python bools, not traced arrays "
                                "(close over the mask instead of passing it through jit)")
            flags.append(bool(np.asarray(leaf)))
    if not any(flags):
        raise ValueError("is_shared marks no parameter as shared")
    return tuple(flags)


# ---------------------------------------------------------------------------
# The estimators.


class SplitLoss(NamedTuple):
    """A per-task loss given as a shared trunk and per-task heads, which makes
    the n per-task gradients much cheaper than with a plain `loss_fn` (the
    whole affinity step 1.7x faster on the standard 4-task network).

    The loss is ``heads(params, stack_n(features(params)))``. Contract:
    `features` reads only the shared parameters (its output: any pytree);
    `heads` gets the features with a leading task axis of size `n_tasks`,
    task j's loss must read only row j of it, and it must not read the
    shared parameters. Then one pull-back through the heads (cotangent 1 on
    every loss) gives every task's own feature gradient, and only the trunk's
    backward runs n times (batched). With a plain loss_fn, each of the n
    batched backward passes runs through all n heads (n^2 head backwards).
    See `mtl.step.network_model` for `mtl.model.MultiTaskNet`.

    The losses may also be a (K, n) matrix, one row per member network of an
    ensemble (`mtl.step.ensemble_model`): task j's entries all read row j of
    the features, each member only its own slice of it, so the pull-back of
    ones on column j still gives each member's own gradient in its slice.
    """

    features: Callable[[Any], Any]
    heads: Callable[[Any, Any], jax.Array]
    n_tasks: int


class _PerTask(NamedTuple):
    losses: jax.Array  # (n,) (or (K, n) from a SplitLoss of an ensemble)
    shared: list  # shared leaves' per-task gradients, each (n, *leaf.shape)
    total: Any  # weighted total gradient, params' structure
    stepped: Callable  # [shared leaves] -> (n,) losses at those shared leaves
    # SplitLoss only (None otherwise): the features' per-task gradients (n, *features),
    # and the two pull-backs: trunk (features cotangent -> [shared leaves]) and
    # heads (losses cotangent -> ([other leaves], features cotangent)).
    dz: Any = None
    feats_pullback: Callable | None = None
    heads_pullback: Callable | None = None


def _rebuild(treedef, flags, shared, other):
    it_s, it_o = iter(shared), iter(other)
    return jax.tree.unflatten(treedef, [next(it_s) if f else next(it_o) for f in flags])


def _per_task(loss, params, flags, weights) -> _PerTask:
    leaves, treedef = jax.tree.flatten(params)
    sh = [x for x, f in zip(leaves, flags) if f]
    ot = [x for x, f in zip(leaves, flags) if not f]
    if isinstance(loss, SplitLoss):
        return _per_task_split(loss, treedef, flags, sh, ot, weights)

    def stepped(new_sh):
        return loss(_rebuild(treedef, flags, new_sh, ot))

    losses, pullback = jax.vjp(loss, params)
    if losses.ndim != 1:
        raise ValueError(f"loss_fn must return a vector of per-task losses, got shape {losses.shape}")
    # Task i's gradient = the pull-back of the i-th one-hot cotangent; the n
    # backward passes run batched.
    (grads,) = jax.vmap(pullback)(jnp.eye(losses.shape[0], dtype=losses.dtype))
    g_leaves = jax.tree.leaves(grads)
    w = None if weights is None else jnp.asarray(weights)
    total = [g.sum(0) if w is None else jnp.tensordot(w.astype(g.dtype), g, axes=1) for g in g_leaves]
    return _PerTask(losses, [g for g, f in zip(g_leaves, flags) if f],
                    jax.tree.unflatten(treedef, total), stepped)


def _per_task_split(loss: SplitLoss, treedef, flags, sh, ot, weights) -> _PerTask:
    n = loss.n_tasks

    def feats(s):
        return loss.features(_rebuild(treedef, flags, s, ot))

    def heads(o, zs):
        return loss.heads(_rebuild(treedef, flags, sh, o), zs)

    def stack(z):
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), z)

    def stepped(new_sh):
        return loss.heads(_rebuild(treedef, flags, sh, ot), stack(feats(new_sh)))

    z, feats_pullback = jax.vjp(feats, sh)
    losses, heads_pullback = jax.vjp(heads, ot, stack(z))
    if losses.ndim not in (1, 2) or losses.shape[-1] != n:
        raise ValueError(f"SplitLoss.heads must return ({n},) or (members, {n}) losses, got shape {losses.shape}")
    g_heads, dz = heads_pullback(jnp.ones_like(losses))  # dz[j] = dL_j/dfeatures
    if weights is not None:  # the heads' gradient of sum w_j L_j: one more pull-back
        if losses.ndim != 1:
            raise ValueError("task weights apply to a (n,) loss vector; weight a member matrix in mtl.step")
        g_heads, _ = heads_pullback(jnp.asarray(weights, losses.dtype))
    (g_sh,) = jax.vmap(feats_pullback)(dz)  # the trunk's n backward passes, batched
    w = None if weights is None else jnp.asarray(weights)
    total_sh = [g.sum(0) if w is None else jnp.tensordot(w.astype(g.dtype), g, axes=1) for g in g_sh]
    return _PerTask(losses, list(g_sh), _rebuild(treedef, flags, total_sh, g_heads), stepped,
                    dz, feats_pullback, heads_pullback)



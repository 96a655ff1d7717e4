"""The tiny linear multi-task model whose affinities the tests work out by hand (tests of grouping.affinity
and grouping.lookahead).

Shared ``w`` in R^d, scalar heads ``a_t``, ``L_t = s_t * mean((a_t * (X w) - y_t)^2)`` with ``s_t`` a loss
scale (default 1); ``MASK`` marks ``w`` shared. The ``hand_*`` functions compute in float64 with numpy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grouping.affinity import SplitLoss

B, D = 16, 5  # batch size, dimension of w
MASK = {"w": True, "a": False}


def linear_loss(X, Y, scale=None):
    """The per-task losses as one function of the parameters (float32)."""
    X, Y = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    s = None if scale is None else jnp.asarray(scale, jnp.float32)

    def loss_fn(p):
        losses = jnp.mean((p["a"][:, None] * (X @ p["w"])[None, :] - Y) ** 2, axis=1)
        return losses if s is None else s * losses

    return loss_fn


def linear_split_loss(X, Y):
    """The same losses as a SplitLoss: features ``X w``, heads on them."""
    X, Y = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    return SplitLoss(
        features=lambda p: X @ p["w"],
        heads=lambda p, hs: jnp.mean((p["a"][:, None] * hs - Y) ** 2, axis=1),
        n_tasks=Y.shape[0],
    )


def f32(tree):
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), tree)


def hand_losses(X, Y, w, a):
    h = X @ w
    return np.array([np.mean((a[t] * h - Y[t]) ** 2) for t in range(len(Y))])


def hand_grads(X, Y, p):
    """Per-task gradients of L_t (s_t = 1) with respect to w, written out."""
    h = X @ p["w"]
    return np.stack([2.0 / len(X) * p["a"][t] * X.T @ (p["a"][t] * h - Y[t]) for t in range(len(Y))])

"""The one training step and the one training loop, for single networks, ensembles and probe runs.

A `TaskModel` says what is trained: its per-task losses on a batch (a (T,)
vector for one network, a (K, T) matrix for an ensemble of K member
networks over the union of their T tasks, 0 where a member lacks a task),
the same losses split into a shared trunk and per-task heads (a
`mtl.pertask.SplitLoss`, for per-task gradients), and the mask of the tasks
each member has. `make_step` builds the jitted step from it, an optimizer
and a balancing method (`mtl.balancing`), and optionally a measurement (the
affinity probes of `grouping.affinity` and `grouping.lookahead`), which gets
the step's per-task gradients and the optimizer's update. `train_loop` runs
steps in chunks, checks the losses, checkpoints and resumes.

How a step gets its gradient, by the method's kind:

``loss``            one backward pass of ``sum mask * w * L`` (equal: the
                    sum of the losses, as always; uncertainty: Kendall's
                    loss, also differentiated w.r.t. the log variances;
                    dwa: the epoch-averaged weights);
``gradient``        the per-task gradients of the shared (encoder)
                    parameters from one vmapped vjp (`mtl.pertask`), their
                    Gram matrix per member, the method's weights per member
                    (vmapped over members), and ``sum_t w_t g_t``; the heads
                    get their own task's gradient (GradNorm: weighted);
``representation``  MGDA-UB: the per-task gradients of the encoder's output
                    (one pull-back through the heads), the min-norm weights
                    per member, and one pull-back of ``sum_t w_t dL_t/dz``
                    through the encoder.

Members never mix: every member's weights come from its own row of the
losses and its own slice of the gradients, so an ensemble member trains as
the same network would alone (tests/test_step.py). The learned variables of
a method (uncertainty's log variances, GradNorm's weights) are trained with
the run's own optimizer (`tx`, its own state) and kept, with DWA's running
means, in ``state["balance"]``, which is checkpointed with the run.

Steps are dispatched one by one from Python: XLA:CPU runs convolutions
inside a lax.scan body an order of magnitude slower than at top level
(measured here), and dispatch is asynchronous, so the loop costs little. The
host reads the losses back once per chunk of `cfg.steps_per_call` steps.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl import balancing, runtime
from mtl.pertask import SplitLoss, _flags, _per_task, shared_mask

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class TaskModel:
    """What a step trains. ``losses(params, batch)``: (T,) or (K, T); ``split(batch)``: the same
    losses as a `SplitLoss` (trunk = the "encoder" subtree of params); ``mask``: (T,) or (K, T),
    1 where the member has the task; ``names``: the T task names (columns); ``members``: K, or
    None for one network."""

    losses: Callable[[Any, Batch], jax.Array]
    split: Callable[[Batch], SplitLoss]
    mask: np.ndarray
    names: tuple[str, ...]
    members: int | None = None


def task_order(key: jax.Array, names: tuple[str, ...]) -> jax.Array:
    """A random order of the columns (PCGrad's) in which any subset of tasks keeps its relative order:
    each task draws a priority from `key` and its own name, so a member of an ensemble visits its
    tasks in the order the same network alone would."""
    ids = np.asarray([zlib.crc32(n.encode()) & 0x7FFFFFFF for n in names], np.uint32)
    priority = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(jnp.asarray(ids))
    return jnp.argsort(priority)


def sample_batch(data: Batch, key: jax.Array, batch_size: int) -> Batch:
    n = next(iter(data.values())).shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {k: jnp.take(v, idx, axis=0) for k, v in data.items()}


def optimizer_state(tx: optax.GradientTransformation, params: Any) -> Any:
    """``tx.init(params)``, made on the host when it is all zeros (AdamW's and SGD's are).

    Eager, ``tx.init`` compiles a zeros program per parameter shape (about 0.5 s for a new network
    in a fresh process); jitted, it compiles again for every new optimizer (0.15 s per network). So
    the state's shapes come from `jax.eval_shape`, and its values from ``tx.init`` of the same tree
    with one-element leaves of ones: if every leaf of that is zero, the state is zeros of the traced
    shapes, put on the device. Otherwise (a transform whose state starts from the parameters or a
    constant), ``tx.init(params)`` itself."""
    leaves = jax.tree.leaves(params)
    if any(isinstance(x, jax.core.Tracer) or (isinstance(x, jax.Array) and len(x.sharding.device_set) > 1)
           for x in leaves):  # inside a trace, or sharded: as optax makes it
        return tx.init(params)
    shapes = jax.eval_shape(tx.init, params)
    small = tx.init(jax.tree.map(lambda x: np.ones((1,) * np.ndim(x), x.dtype), params))
    small_leaves = jax.tree.leaves(small)
    if len(jax.tree.leaves(shapes)) != len(small_leaves) or any(np.any(np.asarray(x) != 0) for x in small_leaves):
        return tx.init(params)
    return jax.tree.map(lambda s: runtime.put(np.zeros(s.shape, s.dtype)), shapes)


def initial_state(params: Any, tx: optax.GradientTransformation, balance: str = "equal",
                  mask_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The training state a step takes: parameters, optimizer state, step 0, and the balancing
    method's state (``"balance"``, only for methods that keep one; `mask_shape` = the TaskModel's)."""
    state = {"params": params, "opt_state": optimizer_state(tx, params), "step": jnp.asarray(0, jnp.int32)}
    if balancing.get_method(balance).name in ("uncertainty", "gradnorm", "dwa") and mask_shape is None:
        raise ValueError(f"{balance} balancing keeps per-task state: give the shape of the task mask")
    b = balancing.init_state(balance, mask_shape) if balance != "equal" else None
    if b is not None:
        if balance in ("uncertainty", "gradnorm"):
            learned = "log_var" if balance == "uncertainty" else "weights"
            b["opt_state"] = tx.init(b[learned])
        state["balance"] = b
    return state


def _per_member(fn, members: int | None):
    return fn if members is None else jax.vmap(fn)


def _gram(leaves, members: int | None) -> jax.Array:
    """(T, T) or (K, T, T) Gram matrices of per-task leaves (T, [K,] ...), summed over leaves."""
    hi = jax.lax.Precision.HIGHEST
    if members is None:
        return sum(jnp.einsum("ip,jp->ij", g.reshape(g.shape[0], -1), g.reshape(g.shape[0], -1), precision=hi)
                   for g in leaves)
    return sum(jnp.einsum("ikp,jkp->kij", g.reshape(g.shape[0], members, -1), g.reshape(g.shape[0], members, -1),
                          precision=hi) for g in leaves)


def _combine(w: jax.Array, g: jax.Array, members: int | None) -> jax.Array:
    """sum_t w_t g_t of one per-task leaf (T, [K,] ...) with weights (T,) or (K, T)."""
    w = w.astype(g.dtype)
    if members is None:
        return jnp.tensordot(w, g, axes=1)
    return jnp.einsum("kt,tk...->k...", w, g)


def make_step(model: TaskModel, tx: optax.GradientTransformation, cfg, *, balance: str = "equal",
              measure: Callable | None = None) -> Callable:
    """A jitted step ``(state, data) -> (state, losses)``; the state is donated (use the returned one).

    The minibatch of step s is drawn with key ``fold_in(PRNGKey(cfg.seed), s)``. `balance`: a
    `mtl.balancing` method. `measure(probe_state, per_task, params, flags, updates, opt_state)`,
    if given, returns the new ``state["probe"]``; `per_task` is the `mtl.pertask._PerTask` of the
    step's batch (the step's gradient is built from it, so measuring costs no extra backward pass)."""
    method = balancing.get_method(balance)
    weights = task_weight_vector(cfg, model.names)
    if weights is not None:
        model = _weighted_model(model, weights)
    mask = jnp.asarray(model.mask, jnp.float32)
    members = model.members
    base_key = jax.random.PRNGKey(cfg.seed)

    def step(state, data):
        key = jax.random.fold_in(base_key, state["step"])
        batch = sample_batch(data, key, cfg.batch_size)
        params = state["params"]
        b = state.get("balance")
        new_b = b
        pt = flags = None
        if method.kind == "loss" and measure is None:
            grads, losses, new_b = _loss_weighted(method.name, model, params, batch, b, mask, state["step"], data,
                                                  cfg, tx)
        else:
            flags = _flags(params, shared_mask(params))
            pt = _per_task(model.split(batch), params, flags, None)
            losses = pt.losses
            if method.name == "equal":
                grads = pt.total
            elif method.kind == "loss":  # a probe run with a weighted loss: the weights on the per-task parts
                w, new_b = _loss_weights(method.name, b, losses, mask, state["step"], data, cfg, tx)
                grads = _weighted(pt, flags, params, w * mask, w * mask, members, feats=False)
            else:
                grads, new_b = _gradient_balanced(method.name, pt, flags, params, b, mask, members,
                                                  task_order(jax.random.fold_in(key, 1), model.names),
                                                  state["step"], tx)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        out = {**state, "params": optax.apply_updates(params, updates), "opt_state": opt_state,
               "step": state["step"] + 1}
        if new_b is not None:
            out["balance"] = new_b
        if measure is not None:
            out["probe"] = measure(state["probe"], pt, params, flags, updates, opt_state)
        return out, losses if weights is None else losses / weights.astype(losses.dtype)

    return runtime.jit(step, donate_argnums=0)


def task_weight_vector(cfg, names: tuple[str, ...]) -> jax.Array | None:
    """(T,) training loss weights of the tasks `names` from ``cfg.task_weights`` (an unnamed task 1);
    None when every weight is 1."""
    given = dict(getattr(cfg, "task_weights", ()) or ())
    w = [float(given.get(n, 1.0)) for n in names]
    return None if all(x == 1.0 for x in w) else jnp.asarray(w, jnp.float32)


def _weighted_model(model: TaskModel, w: jax.Array) -> TaskModel:
    """`model` with every per-task loss multiplied by its weight: what the step differentiates,
    balances and reports (the step divides the reported losses back)."""

    def weighted(fn):
        def call(*args):
            out = fn(*args)
            return out * w.astype(out.dtype)

        return call

    def split(batch):
        s = model.split(batch)
        return SplitLoss(s.features, weighted(s.heads), s.n_tasks)

    return dataclasses.replace(model, losses=weighted(model.losses), split=split)


def _epoch_steps(data: Batch, cfg) -> int:
    return max(1, -(-next(iter(data.values())).shape[0] // cfg.batch_size))


def _learn(b: dict, name: str, grad: jax.Array, tx) -> dict:
    """One optimizer step on a method's learned variables (their own optimizer state)."""
    updates, opt_state = tx.update(grad, b["opt_state"], b[name])
    return {**b, name: optax.apply_updates(b[name], updates), "opt_state": opt_state}


def _loss_weights(name: str, b, losses, mask, step, data, cfg, tx):
    """(weights, new balance state) of a loss-weighting method, from this step's losses."""
    if name == "dwa":
        state = balancing.DWAState(**b)
        return balancing.dwa_weights(state, mask), balancing.dwa_update(state, losses, step,
                                                                        _epoch_steps(data, cfg))._asdict()
    if name == "uncertainty":
        g = jax.grad(balancing.uncertainty_loss)(b["log_var"], jax.lax.stop_gradient(losses), mask)
        return balancing.uncertainty_weights(b["log_var"]), _learn(b, "log_var", g, tx)
    return mask, b


def _loss_weighted(name, model, params, batch, b, mask, step, data, cfg, tx):
    """grads, losses and the new balance state of a loss-weighting method: one backward pass."""
    if name == "uncertainty":
        def total(p, log_var):
            losses = model.losses(p, batch)
            return balancing.uncertainty_loss(log_var, losses, mask), losses

        (grads, g_lv), losses = jax.grad(total, argnums=(0, 1), has_aux=True)(params, b["log_var"])
        return grads, losses, _learn(b, "log_var", g_lv, tx)
    if name == "dwa":
        state = balancing.DWAState(**b)
        w = balancing.dwa_weights(state, mask)
    else:
        w = mask

    def total(p):
        losses = model.losses(p, batch)
        return jnp.sum(w * losses), losses

    grads, losses = jax.grad(total, has_aux=True)(params)
    if name == "dwa":
        b = balancing.dwa_update(state, losses, step, _epoch_steps(data, cfg))._asdict()
    return grads, losses, b


def _weighted(pt, flags, params, w_shared, w_heads, members, feats: bool):
    """The gradient with the shared parameters weighted by `w_shared` (per-task parameter gradients
    combined, or with ``feats`` the representation gradients combined and pulled back through the
    trunk once) and the heads by `w_heads`."""
    from mtl.pertask import _rebuild

    g_heads, _ = pt.heads_pullback(w_heads.astype(pt.losses.dtype))
    if feats:
        dz = jax.tree.map(lambda d: _combine(w_shared, d, members), pt.dz)
        (g_sh,) = pt.feats_pullback(dz)
    else:
        g_sh = [_combine(w_shared, g, members) for g in pt.shared]
    return _rebuild(jax.tree.structure(params), flags, list(g_sh), g_heads)


def _gradient_balanced(name, pt, flags, params, b, mask, members, order, step, tx):
    """grads and the new balance state of a gradient (or representation) method."""
    per = lambda fn: _per_member(fn, members)  # noqa: E731
    if name == "mgda":
        m = _gram(jax.tree.leaves(pt.dz), members)
        w = per(balancing.mgda_weights)(m, mask)
        return _weighted(pt, flags, params, w, mask, members, feats=True), b
    m = _gram(pt.shared, members)
    if name == "pcgrad":
        w = per(lambda mm, ma: balancing.pcgrad_weights(mm, ma, order))(m, mask)
        return _weighted(pt, flags, params, w, mask, members, feats=False), b
    if name == "cagrad":
        w = per(balancing.cagrad_weights)(m, mask)
        return _weighted(pt, flags, params, w, mask, members, feats=False), b
    if name == "gradnorm":
        losses = jax.lax.stop_gradient(pt.losses)
        initial = jnp.where(step == 0, losses, b["initial"])
        w = b["weights"] * mask
        g_w = per(balancing.gradnorm_weight_grad)(m, w, losses, initial, mask)
        new = _learn({**b, "initial": initial}, "weights", g_w, tx)
        new["weights"] = per(balancing.gradnorm_renormalise)(new["weights"], mask)
        return _weighted(pt, flags, params, w, w, members, feats=False), new
    raise ValueError(f"balancing method {name!r} has no gradient rule")


# ---------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class LoopResult:
    state: dict
    losses: np.ndarray  # (steps run here, *loss shape)
    seconds: float
    resumed_from: int | None


def train_loop(state: dict, data: Batch, step: Callable, cfg, *, measured: Callable | None = None,
               every: int | None = None, checkpoint_dir=None, stop_after: int | None = None,
               progress: bool = True, desc: str = "", check: Callable | None = None,
               read: Callable | None = None, postfix: Callable | None = None) -> LoopResult:
    """Runs `step` (every `every`-th step `measured` instead) until ``cfg.steps``.

    With `checkpoint_dir` the state is saved every ``cfg.checkpoint_every`` steps and at the end,
    except that a save due less than ``cfg.checkpoint_min_seconds`` after the previous one (or the
    start) is skipped: a run shorter than that writes none, and a kill loses at most that long plus
    one interval. A checkpoint found there is resumed from. `stop_after` ends the run after that many steps
    without a final checkpoint, as if killed then. Once per chunk of ``cfg.steps_per_call`` steps
    the losses are read back (`read`, default numpy of the stacked chunk) and `check(losses,
    first step)` raises on a non-finite one; `postfix(last losses)` labels the progress bar."""
    from mtl.train import Checkpoints

    ckpt = Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
    resumed_from = None
    if ckpt is not None and ckpt.latest_step() is not None:
        state = ckpt.restore(state)
        resumed_from = int(state["step"])
    read = read or (lambda chunk: np.asarray(jnp.stack(chunk)))
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    history: list[np.ndarray] = []
    start = last_save = time.perf_counter()
    bar = _progress(total=cfg.steps, initial=int(state["step"]), enabled=progress, desc=desc)
    try:
        while int(state["step"]) < end:
            step0 = int(state["step"])
            n = min(cfg.steps_per_call, end - step0)
            if ckpt is not None:  # land exactly on checkpoint boundaries
                n = min(n, cfg.checkpoint_every - step0 % cfg.checkpoint_every)
            chunk = []
            for s in range(step0, step0 + n):
                if measured is not None and s % every == 0:
                    state, losses = measured(state, data)
                else:
                    state, losses = step(state, data)
                chunk.append(losses)
            losses = read(chunk)
            if check is not None:
                check(losses, step0)
            history.append(losses)
            bar.update(n)
            if postfix is not None:
                bar.set_postfix(postfix(losses[-1]), refresh=False)
            done = int(state["step"])
            due = ckpt is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
            if due and time.perf_counter() - last_save >= cfg.checkpoint_min_seconds:
                ckpt.save(state)  # orbax writes each process's shards
                last_save = time.perf_counter()
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    shape = tuple(np.shape(history[0])[1:]) if history else ()
    return LoopResult(state, np.concatenate(history) if history else np.zeros((0, *shape)),
                      time.perf_counter() - start, resumed_from)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step",
                leave=False, dynamic_ncols=True, mininterval=1.0)


def check_finite(losses: np.ndarray, names, step0: int, network: str | None = None) -> None:
    """Raises `mtl.train.TrainingDiverged` at the first non-finite loss of a (steps, T) chunk."""
    from mtl.train import TrainingDiverged

    bad = ~np.isfinite(losses)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise TrainingDiverged(names[col], step0 + row + 1, float(losses[row, col]), network=network)


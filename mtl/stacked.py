"""K networks of one width as one: stacked parameters, their layout, and the forward pass, loss and
steps of all of them in one program (`mtl.ensemble` trains and evaluates them).

Layout. Parameters and optimizer state are stacked on a leading member axis,
part by part: the K encoders form one stack, and for each task t the
decoders of the K_t members that learn t form another
(``{"encoder": (K, ...), "decoders": {t: (K_t, ...)}}``). Decoder stack t
reads the encoder outputs of its members (a gather), so no member computes a
decoder it does not have, and each member's loss is the sum of its own
tasks' losses. AdamW and SGD act element-wise, so one optimizer update of
the stacks is K independent updates. Members are initialised exactly as
`mtl.train.train_network` initialises the same network, and all members draw
the same minibatch (the one `cfg.seed` gives at each step), so a member's
numbers equal one-at-a-time training (tests/test_ensemble.py).

Execution (``strategy``):

``vmap``    the member axis is vectorised (`jax.vmap`): one wide program,
            the form for GPUs and TPUs, and the one that shards.
``unroll``  the members are written out one after another in the same
            program. XLA:CPU vectorises convolutions over a vmapped member
            axis as grouped convolutions, 10-18x slower than running them
            one by one (benchmarks/conv_layers.py); unrolled, the members'
            independent convolutions run concurrently on the CPU's cores.
``auto``    unroll on a CPU, vmap elsewhere (the default).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mtl import runtime
from mtl.model import MultiTaskNet
from mtl.pertask import SplitLoss
from mtl.step import TaskModel, make_step
from mtl.train import TrainConfig, build_model
from tasks.registry import Task, decode_image

STRATEGIES = ("auto", "vmap", "unroll")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which member owns which stack entry.

    members: task names of each member (K real members); ``encoders`` the
    encoder stack size (K, padded); ``slots[t]``: for each entry of task t's
    decoder stack, the encoder (member) it reads; ``live[t]``: 1 for a real
    entry, 0 for padding.
    """

    members: tuple[tuple[str, ...], ...]
    encoders: int
    slots: Mapping[str, tuple[int, ...]]
    live: Mapping[str, tuple[float, ...]]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def position(self, member: int, task: str) -> int:
        """Index of `member`'s decoder for `task` in that task's stack."""
        return self.slots[task].index(member)

    @classmethod
    def build(cls, members: Sequence[Sequence[str]], pad_to: int = 1) -> "Layout":
        members = tuple(tuple(m) for m in members)
        order = list(dict.fromkeys(t for m in members for t in m))
        k = len(members)
        encoders = -(-k // pad_to) * pad_to
        slots, live = {}, {}
        for t in order:
            owners = [i for i, m in enumerate(members) if t in m]
            pad = -len(owners) % pad_to
            slots[t] = tuple(owners + [owners[0]] * pad)
            live[t] = tuple([1.0] * len(owners) + [0.0] * pad)
        return cls(members, encoders, slots, live)


def resolve_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"ensemble strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return strategy


def _stack(trees: Sequence[Any]) -> Any:
    """The members' parameter trees stacked on a new leading axis. Stacked in numpy, then put on
    the device once (`runtime.put`: jnp.stack compiles a program per leaf shape)."""
    def stack(*xs):
        if any(isinstance(x, jax.core.Tracer) for x in xs):  # created inside a trace (eval_shape)
            return jnp.stack(xs)
        return runtime.put(np.stack([np.asarray(x) for x in xs]))

    return jax.tree.map(stack, *trees)


@dataclasses.dataclass
class Ensemble:
    """The graph definitions of one ensemble and its initial stacked parameters."""

    tasks: Mapping[str, Task]
    layout: Layout
    size: float
    encoder_def: nnx.GraphDef
    decoder_defs: Mapping[str, nnx.GraphDef]
    params: Any  # {"encoder": stacked, "decoders": {task: stacked}}

    @classmethod
    def create(cls, members: Sequence[Sequence[Task]], cfg: TrainConfig, pad_to: int = 1) -> "Ensemble":
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        by_name: dict[str, Task] = {}
        for m in members:
            if not m:
                raise ValueError("every member network needs at least one task")
            for t in m:
                by_name.setdefault(t.name, t)
        layout = Layout.build([[t.name for t in m] for m in members], pad_to)
        encoders, decoders, enc_def, dec_defs = [], {t: [] for t in layout.tasks}, None, {}
        # One model per member, built exactly as train_network builds it.
        for m in members:
            model = build_model(m, cfg)
            enc_def, p = nnx.split(model.encoder, nnx.Param)
            encoders.append(p)
            for t in m:
                dec_defs[t.name], p = nnx.split(model.decoders[t.name], nnx.Param)
                decoders[t.name].append(p)
        encoders += [encoders[0]] * (layout.encoders - len(members))
        stacked_dec = {}
        for t in layout.tasks:
            owners = [i for i, m in enumerate(layout.members) if t in m]
            entries = [decoders[t][owners.index(i)] for i in layout.slots[t]]
            stacked_dec[t] = _stack(entries)
        params = {"encoder": _stack(encoders), "decoders": stacked_dec}
        return cls(by_name, layout, cfg.size, enc_def, dec_defs, params)

    def member_params(self, params: Any, member: int) -> tuple[nnx.GraphDef, Any]:
        """(graphdef, params) of member `member` as a stand-alone MultiTaskNet (`params`: the stacked
        parameters, on the device or fetched to the host)."""
        names = self.layout.members[member]
        model = nnx.eval_shape(lambda: MultiTaskNet([self.tasks[t] for t in names], size=self.size,
                                                    rngs=nnx.Rngs(0)))
        nnx.update(model.encoder, jax.tree.map(lambda a: runtime.put(a[member]), params["encoder"]))
        for t in names:
            pos = self.layout.position(member, t)
            nnx.update(model.decoders[t], jax.tree.map(lambda a, p=pos: runtime.put(a[p]), params["decoders"][t]))
        return nnx.split(model, nnx.Param)

    # -- the forward pass of all members ------------------------------------

    def forward(self, params: Any, x: jax.Array, strategy: str) -> dict[str, jax.Array]:
        """{task: (K_t, B, H, W, C)} predictions of every decoder stack on input x (B, H, W, 3)."""
        enc = lambda p, x: nnx.merge(self.encoder_def, p)(x)  # noqa: E731
        preds = {}
        if strategy == "vmap":
            z = jax.vmap(enc, in_axes=(0, None))(params["encoder"], x)
            for t, slots in self.layout.slots.items():
                dec = lambda p, z, t=t: nnx.merge(self.decoder_defs[t], p)(z)  # noqa: E731
                preds[t] = jax.vmap(dec)(params["decoders"][t], z[jnp.asarray(slots)])
            return preds
        # Unrolled: split each stack once (its gradient is one concatenation;
        # indexing member by member would scatter K full-size gradients).
        zs = [enc(p, x) for p in _unstack(params["encoder"], self.layout.encoders)]
        for t, slots in self.layout.slots.items():
            decs = _unstack(params["decoders"][t], len(slots))
            preds[t] = jnp.stack([nnx.merge(self.decoder_defs[t], p)(zs[k]) for p, k in zip(decs, slots)])
        return preds

    def losses(self, params: Any, batch: Mapping[str, jax.Array], strategy: str) -> dict[str, jax.Array]:
        """{task: (K_t,) loss of each decoder stack entry on the batch}."""
        preds = self.forward(params, decode_image(batch["rgb"]), strategy)
        return {t: jax.vmap(lambda p, t=t: self.tasks[t].compute_loss(p, batch))(preds[t]) for t in preds}

    # -- as a TaskModel: (K, T) losses, member k's row, 0 where it lacks a task --

    @property
    def mask(self) -> np.ndarray:
        """(K, T): 1 where member k (a padded copy: never) has task t (the columns: `layout.tasks`)."""
        m = np.zeros((self.layout.encoders, len(self.layout.tasks)), np.float32)
        for k, names in enumerate(self.layout.members):
            for t in names:
                m[k, self.layout.tasks.index(t)] = 1.0
        return m

    def _matrix(self, per_task: Mapping[str, jax.Array]) -> jax.Array:
        """{task: (K_t,) decoder-stack losses} -> (K, T), the live entries placed in their members' rows."""
        out = jnp.zeros((self.layout.encoders, len(self.layout.tasks)), jnp.float32)
        for col, t in enumerate(self.layout.tasks):
            n = int(sum(self.layout.live[t]))
            out = out.at[np.asarray(self.layout.slots[t][:n]), col].set(per_task[t][:n].astype(jnp.float32))
        return out

    def loss_matrix(self, params: Any, batch: Mapping[str, jax.Array], strategy: str) -> jax.Array:
        return self._matrix(self.losses(params, batch, strategy))

    def split(self, batch: Mapping[str, jax.Array], strategy: str) -> SplitLoss:
        """The (K, T) losses as trunk (the encoder stack, features (K, B, h, w, c)) and heads (the
        decoder stacks; task t's read row t of the features, each entry its own member's slice)."""
        x = decode_image(batch["rgb"])
        enc = lambda p, x: nnx.merge(self.encoder_def, p)(x)  # noqa: E731

        def features(params):
            if strategy == "vmap":
                return jax.vmap(enc, in_axes=(0, None))(params["encoder"], x)
            return jnp.stack([enc(p, x) for p in _unstack(params["encoder"], self.layout.encoders)])

        def heads(params, zs):
            per_task = {}
            for col, (t, slots) in enumerate(self.layout.slots.items()):
                z = zs[col]
                if strategy == "vmap":
                    dec = lambda p, z, t=t: nnx.merge(self.decoder_defs[t], p)(z)  # noqa: E731
                    preds = jax.vmap(dec)(params["decoders"][t], z[jnp.asarray(slots)])
                else:
                    decs = _unstack(params["decoders"][t], len(slots))
                    preds = jnp.stack([nnx.merge(self.decoder_defs[t], p)(z[k]) for p, k in zip(decs, slots)])
                per_task[t] = jax.vmap(lambda p, t=t: self.tasks[t].compute_loss(p, batch))(preds)
            return self._matrix(per_task)

        return SplitLoss(features, heads, len(self.layout.tasks))

    def model(self, strategy: str) -> TaskModel:
        """This ensemble as the `mtl.step.TaskModel` the one training step trains."""
        return TaskModel(losses=lambda params, batch: self.loss_matrix(params, batch, strategy),
                         split=lambda batch: self.split(batch, strategy), mask=self.mask,
                         names=self.layout.tasks, members=self.layout.encoders)


def _unstack(tree: Any, n: int) -> list[Any]:
    """A stacked pytree as a list of its n members."""
    leaves, treedef = jax.tree.flatten(tree)
    parts = [jnp.split(a, n) for a in leaves]
    return [jax.tree.unflatten(treedef, [p[k][0] for p in parts]) for k in range(n)]


def make_ensemble_train_fn(ens: Ensemble, tx: optax.GradientTransformation, cfg: TrainConfig,
                           strategy: str) -> Callable:
    """The jitted step `(state, data) -> (state, (K, T) losses)` of the ensemble (`mtl.step.make_step`,
    balanced by `cfg.balance`, member by member); state is donated.

    Members are independent: the gradient of the sum of every member's (weighted) losses is each
    member's own gradient, in its own slice of the stacks."""
    return make_step(ens.model(strategy), tx, cfg, balance=cfg.balance)


def make_ensemble_eval_fn(ens: Ensemble, strategy: str) -> Callable:
    """A jitted `(params, batch) -> {task: {"loss_sum": (K_t,), **stats (K_t, ...)}}`.

    Like `mtl.train.make_eval_fn`, per decoder stack entry: a loss per image,
    summed over the batch, and the task's metric statistics."""

    def fn(params, batch):
        preds = ens.forward(params, decode_image(batch["rgb"]), strategy)
        out = {}
        for t, p in preds.items():
            task = ens.tasks[t]

            def one_member(pred):
                per_image = jax.vmap(
                    lambda pi, bi: task.compute_loss(pi[None], {k: v[None] for k, v in bi.items()})
                )(pred, dict(batch))
                return {"loss_sum": per_image.sum(), **task.compute_stats(pred, batch)}

            out[t] = jax.vmap(one_member)(p)
        return out

    return runtime.jit(fn)

"""What each candidate network costs at inference, and budgets in a unit a person can read.

Three kinds of cost (``--cost``):

``nominal``  Standley et al.'s units: a full-size network costs 1 whatever
             its number of decoders, a half-size single-task network 0.5.
             Kept to reproduce the papers.
``flops``    the forward FLOPs per image of the network, encoder and every
             decoder, as XLA's cost analysis of the jitted forward counts
             them (`mtl.cost.network_flops`). A network's count is the sum
             of its parts' (the encoder at its width, one decoder per task;
             XLA counts a whole network as exactly that sum, which the
             tests check), so the parts are measured once and every
             candidate is priced from them.
``latency``  the measured forward wall time of the network on the device in
             use: jitted, warmed up (`LATENCY_WARMUP` calls), the median of
             `LATENCY_REPEATS` timed calls on a batch of ``latency_batch``
             images; seconds per batch. Cached in the results store
             (`grouping.store`, rows of kind ``"latency"``) keyed by the
             network, the resolution, the batch, the device and the code
             version, so a rerun on the same machine measures nothing.

The measuring code lives here, not in ``mtl/``: it reads the network, it
does not change it, and ``mtl/`` is part of the results store's code hash
(`grouping.store.CODE_PATHS`): an edit there would discard every finished
training.

Budgets are in multiples of one full-size single-task network in the
chosen cost: 1 = the mean cost of the full-size single-task networks of the
tasks asked for (`CostTable.unit`). Under ``nominal`` that unit is exactly
Standley's 1, so nominal budgets are the papers' budgets.

Candidates (`grouping.runner.candidate_specs`): every subset of the tasks at
full size and each task alone at the single-task widths ``WIDTHS`` (1 and
0.5; why not 0.25: README, "Costs and budgets").
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from grouping.runner import FULL_COST, FULL_SIZE, HALF_COST, NetSpec, candidate_specs
from grouping.selection import Network, minimum_budget
from grouping.store import SCHEMA_VERSION, code_version

__all__ = [
    "COST_KINDS",
    "DEFAULT_COST",
    "LATENCY_REPEATS",
    "CostTable",
    "LatencyError",
    "budget_text",
    "check_cost_kind",
    "cost_table",
    "flops",
    "measure_latency",
]

COST_KINDS = ("nominal", "flops", "latency")
#: The default cost of find_groups and the ground-truth evaluation (README, "Costs and budgets": why).
DEFAULT_COST = "flops"
LATENCY_WARMUP = 3
LATENCY_REPEATS = 30
#: What each kind's raw numbers are.
RAW_UNITS = {"nominal": "Standley's units (full-size network 1, half-size single 0.5)",
             "flops": "forward FLOPs per image", "latency": "seconds per forward batch"}


#: A budget's unit in a few words (`budget_text`).
UNIT_SHORT = {"nominal": "full-size networks, nominal", "flops": "full-size singles, FLOPs",
              "latency": "full-size singles, latency"}


def budget_text(budget: float, kind: str) -> str:
    """'2 [full-size singles, FLOPs]': a budget with its unit."""
    return f"{budget:g} [{UNIT_SHORT[kind]}]"


class LatencyError(ValueError):
    """A latency measurement that could not run (out of memory, a device error)."""


def check_cost_kind(kind: str) -> str:
    if kind not in COST_KINDS:
        raise ValueError(f"unknown cost kind {kind!r}; use one of {', '.join(COST_KINDS)}")
    return kind


def nominal(spec: NetSpec) -> float:
    """Standley's cost: 1 for a full-size network, 0.5 for a half-size one."""
    return FULL_COST if not spec.half else HALF_COST


# ---------------------------------------------------------------------------
# FLOPs: XLA's count of the parts, summed.


@lru_cache(maxsize=None)
def _single_task_flops(task: str, size: float, resolution: int, source: str) -> tuple[float, float]:
    """(encoder FLOPs, decoder FLOPs) per image of the single-task network of `task` (a task of the data
    source kind `source`: `tasks.sources.catalogue`) at `size`."""
    from mtl.cost import network_flops
    from tasks.sources import resolve

    cost = network_flops(resolve(source, [task]), size=size, resolution=resolution)
    return cost.encoder_flops, cost.decoder_flops


def flops(tasks: Sequence[str], size: float, resolution: int, source: str = "scenes") -> float:
    """Forward FLOPs per image of the network doing `tasks` (of the data source kind `source`) at encoder
    `size`: the encoder's plus each task's decoder's or image-level head's, as XLA counts them
    (`mtl.cost.network_flops` of the single-task networks)."""
    parts = [_single_task_flops(t, float(size), int(resolution), source) for t in tasks]
    return parts[0][0] + math.fsum(decoder for _, decoder in parts)


# ---------------------------------------------------------------------------
# Latency: measured on the device in use, cached in the results store.


def device_settings() -> dict[str, Any]:
    """What identifies the device a latency was measured on."""
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "cpus": os.cpu_count(),
            "machine": platform.machine(), "host": platform.node()}


def latency_settings(spec: NetSpec, resolution: int, batch: int, repeats: int = LATENCY_REPEATS,
                     source: str = "scenes") -> dict[str, Any]:
    """The results-store key of one latency measurement."""
    return {"kind": "latency", "tasks": list(spec.tasks), **({} if source == "scenes" else {"source": source}), "size": spec.size, "resolution": int(resolution),
            "batch": int(batch), "repeats": int(repeats), "warmup": LATENCY_WARMUP, "device": device_settings(),
            "code_version": code_version(), "schema": SCHEMA_VERSION}


def measure_latency(tasks: Sequence[str], size: float, resolution: int, batch: int = 1,
                    repeats: int = LATENCY_REPEATS, source: str = "scenes") -> list[float]:
    """Wall seconds of `repeats` jitted forward calls on `batch` images, after `LATENCY_WARMUP` untimed ones.

    Raises `LatencyError` when the forward cannot run (out of memory, say)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from mtl.model import MultiTaskNet
    from tasks.sources import resolve

    label = "+".join(tasks)
    if batch < 1 or repeats < 1:
        raise LatencyError(f"latency needs a batch and a number of repeats of at least 1, got {batch} and {repeats}")
    try:
        model = MultiTaskNet(resolve(source, list(tasks)), size=size, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
        x = jnp.zeros((batch, resolution, resolution, 3), jnp.float32)
        for _ in range(LATENCY_WARMUP):
            jax.block_until_ready(forward(params, x))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(forward(params, x))
            times.append(time.perf_counter() - t0)
    except (MemoryError, RuntimeError) as e:  # XlaRuntimeError (RESOURCE_EXHAUSTED...) is a RuntimeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LatencyError(f"could not measure the latency of network {label} (size {size:g}) on a batch of {batch} "
                           f"{resolution}x{resolution} images: {first}; lower --latency-batch or use --cost flops"
                           ) from None
    return times


def latency(spec: NetSpec, resolution: int, batch: int, store=None, source: str = "scenes",
            repeats: int = LATENCY_REPEATS) -> float:
    """Median forward seconds per batch of `spec`, from `store` when it holds it (else measured and stored)."""
    key = latency_settings(spec, resolution, batch, repeats, source)
    hit = store.get(key) if store is not None else None
    if hit is None:
        samples = measure_latency(spec.tasks, spec.size, resolution, batch, repeats, source)
        hit = {"seconds": statistics.median(samples), "samples": samples}
        if store is not None:
            store.put(key, hit)
    return float(hit["seconds"])


# ---------------------------------------------------------------------------
# The cost table of the candidates, and budgets in its unit.


@dataclasses.dataclass(frozen=True)
class CostTable:
    """Every candidate network's costs and the budget unit of the chosen kind.

    ``raw``: label -> {"nominal", "flops" (per image), "latency" (seconds per
    batch, None where not measured)}. ``unit``: the mean chosen-kind cost of
    the full-size single-task networks of ``names``; a budget b allows
    networks whose chosen costs sum to at most ``b * unit``."""

    kind: str
    names: tuple[str, ...]
    specs: tuple[NetSpec, ...]
    raw: Mapping[str, Mapping[str, float | None]]
    resolution: int
    latency_batch: int | None = None

    @property
    def unit(self) -> float:
        return math.fsum(self.raw[NetSpec((t,), FULL_SIZE).label][self.kind] for t in self.names) / len(self.names)

    def cost(self, spec: NetSpec | str) -> float:
        """A network's cost in budget units (multiples of `unit`)."""
        label = spec if isinstance(spec, str) else spec.label
        if label not in self.raw:
            raise KeyError(f"network {label!r} is not a candidate of {', '.join(self.names)}")
        return self.raw[label][self.kind] / self.unit

    def costs(self, label: str) -> dict[str, float | None]:
        """All three costs of a network (the report's ``costs``)."""
        return dict(self.raw[label])

    def units(self) -> dict[str, float]:
        """label -> cost in budget units, for every candidate."""
        return {label: self.cost(label) for label in self.raw}

    def minimum_budget(self) -> float:
        """The cheapest budget whose networks cover every task."""
        dummy = [Network(s.tasks, self.cost(s), {t: 1.0 for t in s.tasks}, s.label) for s in self.specs]
        return minimum_budget(dummy, tasks=self.names)

    def unit_text(self) -> str:
        """What a budget of 1 means, in words."""
        if self.kind == "nominal":
            return "full-size networks (Standley's units; a half-size single-task network costs 0.5)"
        raw = f"{self.unit / 1e6:.2f} MFLOPs per image" if self.kind == "flops" else \
            f"{self.unit * 1e3:.3f} ms per batch of {self.latency_batch}"
        return (f"full-size single-task networks by {self.kind} (1 = their mean over {', '.join(self.names)}: "
                f"{raw} at {self.resolution}x{self.resolution})")

    def describe(self) -> dict[str, Any]:
        """The report's top-level ``cost``."""
        return {"kind": self.kind, "unit": self.unit_text(), "unit_value": self.unit, "unit_raw": RAW_UNITS[self.kind],
                "resolution": self.resolution, "latency_batch": self.latency_batch,
                "minimum_budget": self.minimum_budget()}


def cost_table(names: Sequence[str], kind: str = DEFAULT_COST, *, resolution: int, latency_batch: int = 1,
               store=None, specs: Iterable[NetSpec] | None = None, progress: bool = False,
               source: str = "scenes") -> CostTable:
    """The costs of `specs` (default: every candidate of `names`, `candidate_specs`) under `kind`.

    FLOPs are always computed (cheap: 2 compiles per task); latency only when
    `kind` is ``"latency"`` (each network compiled and timed, cached in
    `store`)."""
    check_cost_kind(kind)
    names = tuple(names)
    specs = tuple(candidate_specs(names) if specs is None else specs)
    if kind == "latency" and latency_batch < 1:
        raise ValueError(f"--latency-batch must be at least 1, got {latency_batch}")
    raw: dict[str, dict[str, float | None]] = {}
    for i, spec in enumerate(specs):
        entry: dict[str, float | None] = {"nominal": nominal(spec), "flops": flops(spec.tasks, spec.size, resolution, source),
                                          "latency": None}
        if kind == "latency":
            if progress:
                print(f"latency {i + 1}/{len(specs)}: {spec.label}", flush=True)
            entry["latency"] = latency(spec, resolution, latency_batch, store, source)
        for what, value in entry.items():
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"network {spec.label!r} has {what} cost {value!r}; costs must be finite and > 0")
        raw[spec.label] = entry
    return CostTable(kind, names, specs, raw, int(resolution), latency_batch if kind == "latency" else None)

"""The estimator interface and its registry: one object per method, found by name.

An estimator (a `Method`) says

* what it trains: `store_keys` (the results-store keys of its networks or
  of the affinity run) and `estimate`, which trains them through a
  `grouping.runner.Runner`;
* how it predicts: an `Estimate` holding either a candidate table of
  predicted per-task losses (``candidates``), chosen on, or an affinity
  matrix grouped by TAG's rule (``candidates is None``) with the losses
  read off it (``readings``), shown but not chosen on;
* what it reports: `describe` (what its predictions are),
  ``affinity_kind`` and ``affinity_definition``, `settings_used`;
* what it costs: `cost` (trainings and steps each), and its minimum
  feasible budget (`minimum_budget`);
* how to rebuild its estimate from a ground-truth record without training:
  `collect` (what `grouping.groundtruth.collect` keeps for one seed: by
  default `record` of `estimate`), `in_record` (whether a record holds it)
  and `from_record`.

Methods register themselves with `register` when their module is imported;
`get_method` imports every module of this package first, so adding an
estimator means adding one file to ``grouping/methods/``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grouping.runner import AFFINITY_EVERY, NetSpec, Runner, Trained
from grouping.selection import InfeasibleBudgetError, Network

__all__ = [
    "ESA_FRACTION",
    "QUICK_FRACTION",
    "SURROGATE_SAMPLES",
    "Cost",
    "Estimate",
    "Method",
    "MethodSettings",
    "get_method",
    "method_names",
    "register",
]

#: ESA: fraction of the schedule's steps.
ESA_FRACTION = 0.2
#: surrogate: random task subsets trained besides the singles and the all-task network.
SURROGATE_SAMPLES = 5
#: quick: fraction of the schedule each of its networks is trained for.
QUICK_FRACTION = 0.3


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """The estimators' own settings: ESA's fraction of the schedule, the measuring interval of
    tag/cs/lookahead, the surrogate's number of sampled subsets, quick's fraction of the schedule."""

    esa_fraction: float = ESA_FRACTION
    every: int = AFFINITY_EVERY
    samples: int = SURROGATE_SAMPLES
    quick_fraction: float = QUICK_FRACTION


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a method trains: ``trainings`` networks (or runs) of ``steps`` steps each."""

    trainings: int
    steps: int
    what: str  # e.g. "36 networks" or "one training run of all 5 tasks"


@dataclasses.dataclass
class Estimate:
    """What a method produced.

    ``candidates``: Networks with the predicted per-task losses, chosen on
    (None for tag/cs: then ``affinity`` is grouped by TAG's rule).
    ``affinity``: (n, n), row = source, column = target;
    ``affinity_kind`` says which quantity it is. ``known``: label ->
    per-task validation losses of networks the method trained besides its
    predictions (tag/cs: the all-task network of the affinity run).
    ``trained``: the networks it trained (or found in the store).
    ``matrices``: further matrices for the report (tag/cs: both).
    ``readings``: label -> per-task losses read off the affinity (tag/cs:
    every candidate; `grouping.methods.tag`), reported but not chosen on;
    ``reading_settings``: what the reading used (kept in the record).
    """

    method: str
    tasks: tuple[str, ...]
    candidates: list[Network] | None
    affinity: np.ndarray
    affinity_kind: str
    trained: list[Trained]
    specs: dict[str, NetSpec]  # label -> spec, for every candidate and group
    known: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    matrices: dict[str, list] = dataclasses.field(default_factory=dict)
    readings: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    reading_settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def losses(self) -> dict[str, dict[str, float]]:
        """label -> predicted (or known) per-task losses of every network the method has numbers for."""
        out = {label: dict(v) for label, v in self.readings.items()}
        out.update({label: dict(v) for label, v in self.known.items()})
        for nw in self.candidates or ():
            out[nw.label] = dict(nw.losses)
        return out

    def predicted(self, spec: NetSpec) -> dict[str, float] | None:
        return self.losses().get(spec.label)


class Method:
    """One estimator. Subclasses fill in the class attributes and the methods below."""

    name: str
    #: False: `estimate` gives a candidate table of predicted losses, chosen on; True: an affinity
    #: matrix grouped by TAG's rule (its losses, if any, are read off it and shown, not chosen on).
    groups_by_tag_rule: bool
    affinity_kind: str
    affinity_definition: str

    def validate(self, settings: MethodSettings) -> None:
        """ValueError for settings this method cannot run with."""

    def minimum_budget(self, names: Sequence[str]) -> float:
        """The cheapest budget whose networks cover every task."""
        raise NotImplementedError

    def check_budgets(self, names: Sequence[str], budgets: Sequence[float]) -> None:
        """InfeasibleBudgetError (naming the minimum) for a budget below `minimum_budget`."""
        low = self.minimum_budget(names)
        for b in budgets:
            if not b >= low - 1e-9 * max(1.0, abs(low)):
                raise InfeasibleBudgetError(b, low)

    def cost(self, names: Sequence[str], steps: int, settings: MethodSettings) -> Cost:
        """What `estimate` trains for `names` with a full schedule of `steps` steps."""
        raise NotImplementedError

    def store_keys(self, runner: Runner, settings: MethodSettings) -> list[dict[str, Any]]:
        """The results-store keys of everything `estimate` trains."""
        raise NotImplementedError

    def estimate(self, runner: Runner, settings: MethodSettings) -> Estimate:
        """Trains what the method needs through `runner` (stored results are reused) and predicts."""
        raise NotImplementedError

    def describe(self, steps: int, settings: MethodSettings) -> str:
        """What the method's predictions are, for the report."""
        raise NotImplementedError

    def settings_used(self, settings: MethodSettings) -> dict[str, Any]:
        """The settings this method's numbers depend on, for the report."""
        return {}

    def record(self, est: Estimate) -> dict[str, Any]:
        """What the ground truth keeps of `est` (JSON), so `from_record` can rebuild it."""
        raise NotImplementedError

    def collect(self, runner: Runner, settings: MethodSettings) -> dict[str, Any]:
        """The ground truth's evidence of this method for one seed (merged into the seed's record).

        By default `record` of `estimate`. A method whose networks are the
        exhaustive table's (the same settings, so the same store entries)
        may read them from the record instead of training them again."""
        return self.record(self.estimate(runner, settings))

    def in_record(self, record: Mapping[str, Any]) -> bool:
        """Whether a seed's record holds this method's evidence (`from_record` can rebuild it)."""
        raise NotImplementedError

    def from_record(self, record: Mapping[str, Any], names: Sequence[str]) -> Estimate:
        """The estimate rebuilt from a ground-truth record (one seed), without training."""
        raise NotImplementedError


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds `method` to the registry under its name (once)."""
    if method.name in _REGISTRY and _REGISTRY[method.name] is not method:
        raise ValueError(f"two methods are called {method.name!r}")
    _REGISTRY[method.name] = method
    return method


def _load_all() -> None:
    package = importlib.import_module("grouping.methods")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"grouping.methods.{info.name}")


#: The order in which methods are listed (from the most training to the least); others follow by name.
ORDER = ("exhaustive", "esa", "hoa", "surrogate", "lookahead", "quick", "tag", "cs")


def method_names() -> tuple[str, ...]:
    """Every registered method's name, in `ORDER` (whatever order their modules were imported in)."""
    _load_all()
    known = [m for m in ORDER if m in _REGISTRY]
    return tuple(known + sorted(m for m in _REGISTRY if m not in ORDER))


def get_method(name: str) -> Method:
    """The method called `name` (ValueError listing the names otherwise)."""
    names = method_names()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(names)}")
    return _REGISTRY[name]

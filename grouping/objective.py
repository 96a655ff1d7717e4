r"""What "best" means when the tasks' losses come in different units: the objective.

``loss``      Standley et al. (2020): minimise the sum of the tasks' losses,
              ``Σ_t L_t``. Rescaling one task's loss (depth in millimetres
              instead of metres) changes the answer, and the tasks with the
              largest loss scale decide it.
``relative``  The mean over the tasks of each task's loss relative to its
              reference, ``(1/n) Σ_t L_t / R_t``, where ``R_t`` is task t's
              loss in its independent full-size single-task network (the Δ
              convention of Maninis et al., CVPR 2019, and LibMTL). Unit-free:
              multiplying task t's losses by c multiplies ``R_t`` by c too.
              1 = every task as good as alone; 0.95 = 5% better on average.

The selection problem minimises the sum over tasks of the best loss any
chosen network reaches, so the relative objective is the loss objective on
a table whose task-t column is divided by ``n · R_t``: `relative_table`
rescales a candidate table once and the solver is unchanged. Every total of
the package (predicted totals, baselines, test totals, regrets) is
`Objective.total` of per-task losses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from grouping.selection import Network, SelectionError, network_label

__all__ = [
    "DEFAULT_OBJECTIVE",
    "OBJECTIVES",
    "Objective",
    "change_percent",
    "get_objective",
    "reference_losses",
    "relative_losses",
    "relative_table",
]

OBJECTIVES = ("relative", "loss")
DEFAULT_OBJECTIVE = "relative"

#: label -> {task: loss}: the losses of the networks of a table.
Losses = Mapping[str, Mapping[str, float]]


def reference_losses(losses: Losses, tasks: Sequence[str]) -> dict[str, float]:
    """``R_t``: each task's loss in its full-size single-task network (label ``network_label((t,))``).

    SelectionError naming the tasks whose single-task network is missing or has loss 0."""
    missing = [t for t in tasks if t not in losses.get(network_label((t,)), {})]
    if missing:
        raise SelectionError(
            "the relative objective needs each task's full-size single-task network as its reference; "
            f"the table has none for {', '.join(map(repr, missing))} (use --objective loss)")
    out = {t: float(losses[network_label((t,))][t]) for t in tasks}
    zero = [t for t, v in out.items() if not v > 0]
    if zero:
        raise SelectionError(f"the single-task loss of {', '.join(map(repr, zero))} is {out[zero[0]]:g}; the relative "
                             "objective divides by it (use --objective loss)")
    return out


def relative_losses(losses: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """``L_t / R_t / n`` for each task of `losses`, n = the number of tasks in `reference`."""
    n = len(reference)
    return {t: float(v) / reference[t] / n for t, v in losses.items()}


def relative_table(networks: Iterable[Network], reference: Mapping[str, float]) -> list[Network]:
    """The candidate table rescaled so that its selection total is the relative objective.

    Task t's loss in every network becomes ``L_t / R_t / n`` (`relative_losses`):
    the sum over tasks of the best rescaled loss is the mean relative loss.
    Costs and labels are kept, so a selection on this table names the same networks."""
    return [Network(nw.tasks, nw.cost, relative_losses(nw.losses, reference), nw.label) for nw in networks]


def change_percent(losses: Mapping[str, float], against: Mapping[str, float]) -> dict[str, float]:
    """Each task's relative change in %, ``100 (L_t / A_t - 1)``: negative = lower loss than `against`."""
    return {t: 100.0 * (float(v) / against[t] - 1.0) for t, v in losses.items()}


@dataclasses.dataclass(frozen=True)
class Objective:
    """One of `OBJECTIVES`; turns per-task losses into the number selection minimises."""

    name: str

    @property
    def relative(self) -> bool:
        return self.name == "relative"

    @property
    def quantity(self) -> str:
        """What a total is, for tables and axis labels."""
        return ("mean relative loss (L_t / L_t of the task's full-size single-task network, mean over tasks)"
                if self.relative else "total loss (sum over tasks)")

    def reference(self, losses: Losses, tasks: Sequence[str], *, required: bool = True) -> dict[str, float] | None:
        """The references a table supplies (`reference_losses`); None for ``loss``, which needs none,
        and, unless `required`, for a table without every task's single-task network."""
        if not self.relative:
            return None
        if not required and any(t not in losses.get(network_label((t,)), {}) for t in tasks):
            return None
        return reference_losses(losses, tasks)

    def table(self, networks: Iterable[Network], reference: Mapping[str, float] | None) -> list[Network]:
        """The candidate table the solver minimises the objective on."""
        if not self.relative:
            return list(networks)
        if reference is None:
            raise SelectionError("the relative objective needs each task's single-task loss")
        return relative_table(networks, reference)

    def total(self, per_task: Mapping[str, float], reference: Mapping[str, float] | None) -> float | None:
        """The objective of per-task losses (every task once); None when ``relative`` has no reference."""
        if not self.relative:
            return math.fsum(float(v) for v in per_task.values())
        if reference is None:
            return None
        return math.fsum(relative_losses(per_task, reference).values())


def get_objective(name: str | Objective) -> Objective:
    """The objective called `name` (ValueError listing the names otherwise)."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; use one of {', '.join(OBJECTIVES)}")
    return Objective(name)

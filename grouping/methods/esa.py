"""esa: Standley et al.'s early-stopping approximation.

The same networks as exhaustive, each trained for ``round(fraction *
steps)`` steps (default fraction 0.2, at least 1); selection uses those
early validation losses. What we do: a *shorter schedule of the same
shape* (warm-up fraction, cosine decay to 1% of the peak rate over the
shortened run), not the first 20% of the full schedule; the public training
function has no "stop early" switch, and a complete short schedule is the
closer stand-in for "trained to convergence" at equal cost.
"""

from __future__ import annotations

from typing import Any

from grouping.methods.base import Estimate, MethodSettings, register
from grouping.methods.exhaustive import Exhaustive


class Esa(Exhaustive):
    name = "esa"
    record_key = "early_validation"

    def validate(self, settings: MethodSettings) -> None:
        if not 0 < settings.esa_fraction <= 1:
            raise ValueError(f"--esa-fraction must be in (0, 1], got {settings.esa_fraction}")

    def steps(self, steps: int, settings: MethodSettings) -> int:
        return max(1, round(settings.esa_fraction * steps))

    def describe(self, steps: int, settings: MethodSettings) -> str:
        return f"validation loss after {self.steps(steps, settings)} steps (a shortened schedule)"

    def settings_used(self, settings: MethodSettings) -> dict[str, Any]:
        return {"esa_fraction": settings.esa_fraction}

    def record(self, est: Estimate) -> dict[str, Any]:
        return {self.record_key: {tr.spec.label: {t: tr.loss(t) for t in tr.spec.tasks} for tr in est.trained},
                "early_steps": est.trained[0].steps}


ESA = register(Esa())

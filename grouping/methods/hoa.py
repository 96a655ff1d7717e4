"""hoa: Standley et al.'s higher-order approximation, from singles and pairs.

Trains the full and half singles and all pairs (``n + n + n(n-1)/2``
trainings, the full schedule); a network S of 3+ tasks is predicted to reach
``L(t|S) = mean_{u in S\\{t}} L(t|{t,u})`` (`grouping.selection.hoa_candidates`).
In the ground truth it reads the exhaustive run's singles and pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grouping.methods.base import Estimate, register
from grouping.methods.exhaustive import Exhaustive
from grouping.runner import FULL_COST, NetSpec, candidate_specs
from grouping.selection import Network, hoa_candidates


class Hoa(Exhaustive):
    name = "hoa"

    def specs(self, names: Sequence[str]) -> list[NetSpec]:
        return candidate_specs(names, max_size=2)

    def predict(self, names: Sequence[str], losses: Mapping[str, Mapping[str, float]]) -> list[Network]:
        return hoa_candidates(super().predict(names, losses), higher_order_cost=FULL_COST)

    def describe(self, steps: int, settings) -> str:
        return "validation losses of singles and pairs; 3+ task networks by HOA (mean of the pairs)"

    def record(self, est: Estimate) -> dict[str, Any]:
        return {}  # its singles and pairs are exhaustive's networks: the record's "validation"


HOA = register(Hoa())

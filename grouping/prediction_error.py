"""How close each estimator's predicted losses come to the measured ones, in the relative objective's units.

The regret judges a method's choice; this judges the numbers its report
shows (the expected totals, the per-task changes). For one seed's
ground-truth record and every estimator whose evidence it holds, the
estimate is rebuilt (`Method.from_record`) and, for every full-size network
S of two or more tasks and every task t in S,

    predicted  r_hat = L_hat_t(S) / L_hat_t({t})      (the method's own losses: predicted, read off
                                                       its affinity, or measured where it trained S)
    measured   r     = L_t(S) / L_t({t})              (the fully trained networks' TEST losses)
    error            = | ln r_hat - ln r |

is pooled over (S, t) into a median per seed. ``no_effect`` predicts r = 1
everywhere (sharing changes nothing); a method whose median error is not
below it says less about losses than that. exhaustive's error is the gap
between validation and test losses, the floor for any method that predicts
validation losses.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grouping.methods import get_method
from grouping.selection import network_label

#: The row that predicts no change from sharing (r = 1).
NO_EFFECT = "no_effect"


def log_errors(predicted: Mapping[str, Mapping[str, float]], measured: Mapping[str, Mapping[str, float]],
               names: Sequence[str]) -> list[float]:
    """``|ln r_hat - ln r|`` over every full-size network of 2+ tasks and each of its tasks that both tables
    hold (with the tasks' singles); `predicted` None-free."""
    names = tuple(names)
    out = []
    for k in range(2, len(names) + 1):
        for subset in itertools.combinations(names, k):
            label = network_label(subset)
            if label not in predicted or label not in measured:
                continue
            for t in subset:
                single = network_label((t,))
                if t not in predicted.get(single, {}) or t not in measured.get(single, {}):
                    continue
                r_hat = predicted[label][t] / predicted[single][t]
                r = measured[label][t] / measured[single][t]
                out.append(abs(float(np.log(r_hat)) - float(np.log(r))))
    return out


def seed_errors(record: Mapping[str, Any], names: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """method (and `NO_EFFECT`) -> {"median", "pairs"} for one seed's record: `log_errors` of each method's
    losses (exhaustive's: the validation table) against the test table."""
    test = record["test"]
    tables = {NO_EFFECT: {label: {t: 1.0 for t in losses} for label, losses in test.items()}}
    for m in methods:
        tables[m] = get_method(m).from_record(record, names).losses()
    out = {}
    for m, table in tables.items():
        errors = log_errors(table, test, names)
        out[m] = {"median": float(np.median(errors)) if errors else None, "pairs": len(errors)}
    return out


def prediction_errors(runs: Mapping[str, Mapping[str, Any]], names: Sequence[str],
                      methods: Sequence[str]) -> dict[str, Any]:
    """Over seeds: method -> {"mean", "std" (of the per-seed medians), "per_seed", "pairs"}; methods with
    no comparable pairs in some seed are left out."""
    seeds = sorted(runs, key=int)
    per_seed = {s: seed_errors(runs[s], names, methods) for s in seeds}
    out: dict[str, Any] = {}
    for m in (NO_EFFECT, *methods):
        medians = [per_seed[s][m]["median"] for s in seeds]
        if any(v is None for v in medians):
            continue
        a = np.asarray(medians, dtype=np.float64)
        out[m] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                  "per_seed": dict(zip(seeds, medians)), "pairs": [per_seed[s][m]["pairs"] for s in seeds]}
    return {"definition": "median over (network of 2+ tasks, task) of |ln predicted r - ln measured r|, "
                          "r = the task's loss over its single-task loss (test losses measured); mean and std "
                          "of the per-seed medians",
            "errors": out}

"""What a user can expect of a find_groups answer: the whole budget curve, the gain over the baselines,
and how far the estimate can be trusted.

`budget_curve` solves every budget from the cheapest feasible one to n
(in the cost table's unit, `grouping.costs`: n = the n full-size
single-task networks) in steps of `CURVE_STEP`, and the ones asked for
(solving is cheap: one pass of the selection DP), with the baselines of
`grouping.choose` at each: one all-task network, independent networks (full
or half size as the budget allows) and the mean of the random groupings
whose networks fit the budget. Every total is the objective's
(`grouping.objective`): under ``relative`` the expected mean over tasks of
each task's loss relative to its independent full-size network, from the
method's predictions (tag, cs: the losses read off their affinity). A
tag/cs run without them (no all-task losses stored) has no such totals
(None); its curve is its TAG score.

`expected` puts one budget's predicted total against the baselines' in %
(``100 (total / baseline - 1)``: negative = better than the baseline).

`expectation_lines` says both in words, for the terminal and report.md.

`ground_truth_regret` reads the method's measured regret from the ground
truth's evaluation (``benchmarks/results/ground_truth/evaluation.json``,
written by ``scripts/ground_truth.py``): the mean over budgets and seeds of
(test total of its choice - optimal's) / optimal's, with the seed-to-seed
standard deviation, beside random groupings'. Nothing is quoted when the
file is absent (an installed copy); a method the evaluation lacks is named
as not evaluated.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from grouping.choose import baseline_totals, baselines, choose, score
from grouping.costs import CostTable, budget_text
from grouping.methods import Estimate, Method
from grouping.objective import Objective
from grouping.prediction_error import NO_EFFECT

#: Step of the budget curve, in budget units (multiples of one full-size single-task network).
CURVE_STEP = 0.5
#: The ground truth's evaluation, relative to the repository root.
EVALUATION = Path("benchmarks") / "results" / "ground_truth" / "evaluation.json"
#: The curve's baselines: key -> `grouping.choose.baseline_totals` key.
BASELINE_KEYS = {"all_in_one": "all_in_one", "one_per_task": "one_per_task", "random_mean": "random_mean"}


def curve_budgets(names: Sequence[str], asked: Sequence[float], minimum: float) -> list[float]:
    """`minimum`, then 1, 1.5, ..., n (those above `minimum`) and the feasible budgets asked for, sorted."""
    steps = int(round((len(names) - 1) / CURVE_STEP))
    grid = {round(1.0 + CURVE_STEP * i, 9) for i in range(steps + 1)} | {round(minimum, 9)}
    return sorted({b for b in grid if b >= minimum - 1e-9} | {float(b) for b in asked if b >= minimum - 1e-9})


def budget_curve(method: Method, objective: Objective, est: Estimate, asked: Sequence[float],
                 costs: CostTable | None = None) -> dict[str, Any]:
    """{"budgets", "asked" (bools), "method" (expected totals), "tag_score", "networks" (labels),
    "all_in_one", "one_per_task", "random_mean"}: one entry per budget of `curve_budgets`, at `costs`
    (None: nominal)."""
    names = est.tasks
    minimum = method.minimum_budget(names) if costs is None else costs.minimum_budget()
    budgets = curve_budgets(names, asked, minimum)
    losses = est.losses()
    reference = objective.reference(losses, names, required=False)
    asked_set = {float(b) for b in asked}
    out: dict[str, Any] = {"budgets": budgets, "asked": [b in asked_set for b in budgets], "method": [],
                           "tag_score": [], "networks": [], **{k: [] for k in BASELINE_KEYS}}
    random_by_set: dict[tuple, float | None] = {}  # the random mean depends on which partitions fit only
    for ch in choose(est, budgets, objective, costs):
        base = baselines(names, ch.budget, costs)
        k = tuple(base.random)
        if k not in random_by_set:
            random_by_set[k] = baseline_totals(base, losses, names, objective, reference)["random_mean"]
        out["method"].append(ch.predicted_total)
        out["tag_score"].append(ch.tag_score)
        out["networks"].append(ch.labels)
        for key in ("all_in_one", "one_per_task"):
            specs = getattr(base, key)
            out[key].append(None if specs is None else score(specs, losses, names, objective, reference))
        out["random_mean"].append(random_by_set[k])
    return out


def expected(total: float | None, baseline_totals: Mapping[str, float | None]) -> dict[str, float | None]:
    """key -> ``100 (total / baseline - 1)`` in % (None where either is unknown)."""
    return {k: None if total is None or v is None or v == 0 else 100.0 * (total / v - 1.0)
            for k, v in baseline_totals.items()}


def repository_root() -> Path:
    return Path(__file__).resolve().parents[1]


def ground_truth_regret(method: str, path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The method's measured regret on the ground truth (module docstring), or None without an evaluation.

    {"source", "tasks", "seeds", "budgets": [lowest, highest], "objective", "evaluated": bool,
    "mean", "std" (% over seeds; exhaustive: its choice is the optimum, 0 by definition),
    "random_mean", "random_std", "prediction_error", "no_effect_error" (median errors of the predicted relative
    losses, `grouping.prediction_error`, as fractions; None where the evaluation lacks them)}."""
    path = Path(path) if path is not None else repository_root() / EVALUATION
    if not path.is_file():
        return None
    try:
        ev = json.loads(path.read_text())
        average = ev["average_regret_percent"]
    except (OSError, ValueError, KeyError):
        return None
    key = "optimal" if method == "exhaustive" else method
    row, rand = average.get(key), average.get("random_mean") or {}
    try:
        source = str(path.resolve().relative_to(repository_root()))
    except ValueError:
        source = str(path)
    budgets = ev.get("budgets") or []
    errors = (ev.get("relative_prediction_error") or {}).get("errors", {})
    return {"prediction_error": (errors.get(method) or {}).get("mean"),
            "no_effect_error": (errors.get(NO_EFFECT) or {}).get("mean"), "source": source, "tasks": ev.get("tasks"), "seeds": ev.get("seeds"),
            "budgets": [min(budgets), max(budgets)] if budgets else None, "objective": ev.get("objective", "loss"),
            "evaluated": row is not None, "mean": None if row is None else row["mean"],
            "std": None if row is None else row["std"], "random_mean": rand.get("mean"), "random_std": rand.get("std")}


def trust_text(method: str, trust: Mapping[str, Any] | None) -> str | None:
    """One sentence on how far the method's estimate can be trusted, from `ground_truth_regret`."""
    if trust is None:
        return None
    where = (f"the ground truth ({', '.join(trust['tasks'] or [])}; seeds {', '.join(map(str, trust['seeds'] or []))}; "
             f"{trust['objective']} objective; {trust['source']})")
    if method == "exhaustive":
        return (f"How far to trust it: exhaustive trains every candidate network, so on validation losses its "
                f"choice is the best there is; on {where} that choice defines the optimum the other methods are "
                "measured against.")
    if not trust["evaluated"]:
        return (f"How far to trust it: {method} has not been evaluated on {where}; "
                f"python scripts/ground_truth.py --methods {method} adds it.")
    lo, hi = trust["budgets"] or (math.nan, math.nan)
    rand = "" if trust["random_mean"] is None else \
        f"; a random grouping: {trust['random_mean']:+.2f}% ± {trust['random_std']:.2f}%"
    return (f"How far to trust it: on {where}, {method}'s choices at budgets {lo:g} to {hi:g} were on average "
            f"{trust['mean']:+.2f}% ± {trust['std']:.2f}% (seed std) worse than the best possible choice, measured "
            f"on test losses{rand}.{_error_text(method, trust)} Its setting (tasks, images, schedule) may differ "
            "from yours.")


def _error_text(method: str, trust: Mapping[str, Any]) -> str:
    """How far its predicted losses missed the measured ones there (empty without the numbers)."""
    err, none = trust.get("prediction_error"), trust.get("no_effect_error")
    if err is None or none is None:
        return ""
    text = (f" Its predicted losses there missed the measured ones by a median {100 * err:.1f}% per task (relative "
            f"to the task's single-task loss; assuming sharing changes nothing misses by {100 * none:.1f}%)")
    if err >= none:
        text += (f": {method}'s loss numbers say less than that assumption, so read its expected totals as "
                 "illustration; its choice is what the regret above measures")
    return text + "."


def _relation(percent: float) -> str:
    return f"{abs(percent):.1f}% below" if percent < 0 else f"{percent:.1f}% above"


def expectation_lines(report: Mapping[str, Any]) -> list[str]:
    """Per budget asked for: the expected total against the baselines, in the objective's units; then how
    far to trust it (the method's regret on the ground truth)."""
    name = "mean relative loss" if report["objective"] == "relative" else "total"
    method = report["method"]
    lines = []
    for sel in report["selections"]:
        b, total = budget_text(sel["budget"], (report.get("cost") or {}).get("kind", "nominal")), sel["predicted_total"]
        if total is None:
            what = (f"{method} has no losses read off its affinity (its run stored no all-task network's "
                    "losses to read them from)" if report["groups_by_tag_rule"]
                    else "the predictions lack a task's single-task loss")
            score = "" if sel["tag_score"] is None else f" (its TAG score: {sel['tag_score']:.4f})"
            lines.append(f"budget {b}: {what}, so no expected {name}{score}; --verify trains and measures the "
                         "chosen networks, or use a method that predicts losses (lookahead, surrogate, hoa)")
            continue
        parts = []
        for key, label in (("all_in_one", "one all-task network"), ("one_per_task", "independent networks"),
                           ("random", "random groupings")):
            base, pct = sel["baselines"][key], (sel.get("expected_percent") or {}).get(key)
            if base is None:
                parts.append(f"{label}: do not fit" if key == "one_per_task" else f"{label}: none")
            elif pct is None:
                parts.append(f"{label}: unknown")
            else:
                width = f"{base['networks'][0]['width']} size, " if key == "one_per_task" else ""
                parts.append(f"{_relation(pct)} {label} ({width}{base['predicted_total']:.4f})")
        lines.append(f"budget {b}: expected {name} {total:.4f} ({method}'s prediction): " + ", ".join(parts))
    trust = trust_text(method, report.get("trust"))
    if trust:
        lines.append(trust)
    return lines

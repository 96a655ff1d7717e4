"""The find_groups report: report.json as data, and the files of the run directory.

`build_report` collects what a run found (`grouping.find_groups`);
`write_outputs` writes it to the run directory:

* ``report.json``: tasks, method, objective (with each task's reference
  loss under ``relative``), budgets, per budget the chosen networks (tasks,
  size, cost, predicted per-task losses, which tasks each serves), the
  predicted total, each task's change (%) against one all-task network and
  against its independent full-size network, the baselines; ``cost``: which
  cost the budgets are in (`grouping.costs`: kind, unit, minimum budget) and
  ``infeasible_budgets`` (budgets asked for below that minimum); every
  network named (chosen, baselines, and ``candidates``: every candidate
  network, with its predicted losses where the method predicts them) has
  ``cost`` in budget units and ``costs``: ``nominal``, ``flops`` (per image)
  and ``latency`` (seconds per batch, where measured); the affinity matrix
  with its task order and orientation; the trained networks' losses; each
  task's test metrics (mIoU, RMSE, angle...) in the chosen networks and the
  baselines wherever those networks were trained with the full schedule
  (``task_metrics``); data and training settings; the code version (a hash
  of the package source); with ``--verify`` the measured test losses.
  Everything that depends on the run (paths, dates, times, the git commit)
  is under ``"run"``; the rest is the same for the same settings, however
  often the run was interrupted.
  What to expect (`grouping.expectation`): per budget asked for, the
  predicted total against one all-task network, independent networks and
  random groupings in % (``expected_percent``); the whole budget curve, 1
  to n networks in steps of 0.5 besides the budgets asked for (``curve``);
  the method's measured regret on the ground truth when its evaluation is
  in the checkout (``trust``).
* ``affinity.png`` (heatmap with values) and ``curve.png`` (the whole
  budget curve of the method and the baselines, the budgets asked for
  marked, measured test totals dashed with ``--verify``): `grouping.figures`;
  ``report.md`` (`grouping.report_text.format_markdown`; the terminal table,
  `grouping.report_text.format_table`, opens with the same expectations).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from grouping.choose import Baselines, Choice, baseline_totals, network_cost, per_task_losses, task_changes
from grouping.costs import CostTable
from grouping.expectation import budget_curve, expected, ground_truth_regret
from grouping.methods import Estimate, Method
from grouping.objective import Objective
from grouping.report_text import format_markdown
from grouping.runner import NetSpec, train_settings
from grouping.store import code_version

REPORT_FORMAT = "mtl-grouping/find-groups-report"
REPORT_VERSION = 6  # 3: task_metrics, run.git_commit; 4: expected_percent, curve, trust; 5: cost, costs, candidates;
#   6: groups_by_tag_rule replaces predicts_losses (tag/cs predict losses too), prediction_error in trust
ORIENTATION = "matrix[i][j]: effect of task i (row, source) on task j (column, target); positive = i helps j"
#: The report's keys that say what the user chose (`run_settings`), compared by `settings_differences`.
SETTINGS_KEYS = ("tasks", "method", "objective", "cost", "budgets", "data", "training", "verify")
#: Data settings that fingerprint the code or the files, not a choice: a rerun after a code change is the same command.
FINGERPRINTS = ("dataset", "renderer")
#: What the report's "cost" says besides the choice (kind, latency batch): derived from it and the tasks.
COST_DERIVED = ("unit", "unit_value", "unit_raw", "resolution", "minimum_budget")


def run_settings(opts, method: Method, objective: Objective, names: Sequence[str], cfg,
                 data_settings: Mapping) -> dict[str, Any]:
    """The settings part of the report (`SETTINGS_KEYS`), from the run's `grouping.find_groups.Options`."""
    return {"tasks": list(names), "method": method.name, "objective": objective.name,
            "cost": {"kind": opts.cost, "latency_batch": opts.latency_batch if opts.cost == "latency" else None},
            "budgets": [float(b) for b in opts.budgets], "data": dict(data_settings),
            "training": {**train_settings(cfg), "esa_fraction": None, "affinity_every": None,
                         "surrogate_samples": None, **method.settings_used(opts.method_settings)},
            "verify": bool(opts.verify)}


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What the user chose differently in two reports' settings: ['method tag -> hoa', 'training.steps 500 -> 20']."""
    out = []
    for key in SETTINGS_KEYS:
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for sub in sorted(set(a) | set(b)):
                if sub not in FINGERPRINTS + COST_DERIVED and a.get(sub) != b.get(sub):
                    out.append(f"{key}.{sub} {_text(a.get(sub))} -> {_text(b.get(sub))}")
        elif a != b:
            out.append(f"{key} {_text(a)} -> {_text(b)}")
    return out


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def git_commit(root: str | os.PathLike | None = None) -> str | None:
    """The git commit of the checkout the package runs from, with "-dirty" when tracked files have
    changes; None outside a git checkout (an installed copy) or without git."""
    import subprocess

    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.returncode == 0 and status.stdout.strip() else "")


def metric_names(names: Sequence[str], data=None) -> dict[str, dict[str, Any]]:
    """task -> {"metric": its headline metric, "higher_is_better"}, from the tasks of `data`
    (a `grouping.dataspec.DataSpec`; default the Taskonomy vocabulary of tasks.registry)."""
    from tasks.registry import resolve_tasks

    tasks = data.resolve_tasks(list(names)) if data is not None else resolve_tasks(list(names))
    return {t.name: {"metric": t.metric, "higher_is_better": t.higher_is_better} for t in tasks}


def _measured_metrics(est: Estimate, verification: Mapping | None, steps: int) -> dict[str, dict[str, dict]]:
    """label -> task -> test metrics (no loss) of every network trained with the full schedule."""
    out: dict[str, dict[str, dict]] = {}
    for tr in est.trained:
        if tr.steps == steps:  # not esa's shortened runs: their metrics are not the network's
            out[tr.spec.label] = {t: {k: v for k, v in tr.test[t].items() if k != "loss"} for t in tr.spec.tasks}
    for label, nw in (verification or {}).get("networks", {}).items():
        out[label] = nw["test_metrics"]
    return out


def _task_metrics(specs: Sequence[NetSpec] | None, names: Sequence[str], measured: Mapping[str, Mapping],
                  assignment: Mapping[str, str] | None = None) -> dict[str, dict[str, Any] | None] | None:
    """task -> {"network": the network serving it, its test metrics}, None where that network's are unknown."""
    if specs is None:
        return None
    out: dict[str, dict[str, Any] | None] = {}
    for t in names:
        label = assignment[t] if assignment else next(s.label for s in specs if t in s.tasks)
        m = measured.get(label, {}).get(t)
        out[t] = None if m is None else {"network": label, **m}
    return out if any(v is not None for v in out.values()) else None


# ---------------------------------------------------------------------------
# The report as data.


def _net(spec: NetSpec, costs: CostTable, predicted: Mapping[str, float] | None = None,
         scores: Mapping[str, float] | None = None, serves: Sequence[str] | None = None) -> dict[str, Any]:
    return {"label": spec.label, "tasks": list(spec.tasks), "size": spec.size,
            "width": "half" if spec.half else "full", "cost": network_cost(spec, costs),
            "costs": costs.costs(spec.label),
            "predicted": None if predicted is None else {t: float(predicted[t]) for t in spec.tasks},
            "tag_score": None if scores is None else {t: float(scores[t]) for t in spec.tasks},
            "serves": list(serves) if serves is not None else list(spec.tasks)}


def build_report(opts, method: Method, objective: Objective, est: Estimate, choices: Sequence[Choice],
                 bases: Sequence[Baselines], verification: Mapping | None, cfg,
                 data_settings: Mapping, costs: CostTable, infeasible: Sequence[float] = ()) -> dict[str, Any]:
    """The report as data (`opts`: the run's `grouping.find_groups.Options`; `costs`: the candidates'
    costs and the budget unit; `infeasible`: the budgets asked for below the minimum)."""
    names = list(est.tasks)
    losses = est.losses()
    measured = _measured_metrics(est, verification, cfg.steps)
    # Under "relative", a table without every task's single-task loss has no reference: no totals.
    reference = objective.reference(losses, names, required=False)
    selections = []
    for i, (ch, base) in enumerate(zip(choices, bases)):
        nets = []
        for spec in ch.specs:
            serves = [t for t in names if ch.assignment.get(t) == spec.label]
            nets.append(_net(spec, costs, ch.predicted.get(spec.label),
                             ch.scores.get(spec.label) if ch.scores else None, serves))
        totals = baseline_totals(base, losses, names, objective, reference)
        b_out: dict[str, Any] = {}
        for key in ("all_in_one", "one_per_task"):
            specs = getattr(base, key)
            b_out[key] = None if specs is None else {
                "networks": [_net(s, costs, est.predicted(s)) for s in specs],
                "cost": math.fsum(network_cost(s, costs) for s in specs), "predicted_total": totals[key],
                "task_metrics": _task_metrics(specs, names, measured)}
        b_out["random"] = None if not base.random else {
            "predicted_total": totals["random_mean"], "count": len(base.random),
            "sampling": "every set partition of the tasks whose networks (one full-size network per group) fit "
                        "the budget, equally weighted (exact mean)"}
        entry = {"budget": ch.budget, "networks": nets, "cost": ch.cost, "predicted_total": ch.predicted_total,
                 "tag_score": ch.tag_score, "assignment": {t: ch.assignment[t] for t in names},
                 "task_change_percent": task_changes(per_task_losses(ch.specs, losses, names, ch.assignment),
                                                     losses, names),
                 "task_metrics": _task_metrics(ch.specs, names, measured, ch.assignment),
                 "optimal": bool(ch.optimal), "gap": float(ch.gap), "baselines": b_out,
                 "expected_percent": expected(ch.predicted_total, {"all_in_one": totals["all_in_one"],
                                                                   "one_per_task": totals["one_per_task"],
                                                                   "random": totals["random_mean"]})}
        if verification is not None:
            entry["measured"] = verification["per_budget"][i]
        selections.append(entry)
    settings = opts.method_settings
    chosen = run_settings(opts, method, objective, names, cfg, data_settings)
    predicted = {nw.label: nw.losses for nw in est.candidates or ()}
    minimum = costs.minimum_budget()
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "tasks": chosen["tasks"],
        "method": chosen["method"],
        "objective": chosen["objective"],
        "totals": objective.quantity,
        "reference": reference,
        "cost": costs.describe(),
        "budgets": chosen["budgets"],
        "infeasible_budgets": [{"budget": float(b), "feasible": False, "minimum_budget": minimum} for b in infeasible],
        "metrics": metric_names(names, opts.data),
        "groups_by_tag_rule": method.groups_by_tag_rule,
        "predicted": method.describe(opts.steps, settings),
        "selections": selections,
        "curve": budget_curve(method, objective, est, [ch.budget for ch in choices], costs),
        "trust": ground_truth_regret(method.name),
        "candidates": [
            {"label": s.label, "tasks": list(s.tasks), "size": s.size, "cost": network_cost(s, costs),
             "costs": costs.costs(s.label),
             "predicted": {t: float(v) for t, v in predicted[s.label].items()} if s.label in predicted else None}
            for s in costs.specs],
        "affinity": {"tasks": names, "matrix": np.asarray(est.affinity, dtype=float).tolist(), "kind": est.affinity_kind,
                     "orientation": ORIENTATION, "definition": method.affinity_definition, **est.matrices},
        "trained_networks": [
            {"label": tr.spec.label, "tasks": list(tr.spec.tasks), "size": tr.spec.size, "steps": tr.steps,
             "validation": tr.validation, "test": tr.test} for tr in est.trained],
        "data": chosen["data"],
        "training": chosen["training"],
        "code_version": code_version(),
        "verify": chosen["verify"],
    }
    if verification is not None:
        report["verified_networks"] = verification["networks"]
    return report


# ---------------------------------------------------------------------------
# Files.


def write_outputs(out: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """report.json, report.md, affinity.png and curve.png (each written whole, then renamed)."""
    out = Path(out)
    atomic_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    atomic_text(out / "report.md", format_markdown(report))
    from grouping.figures import plot_affinity, plot_curve

    plot_affinity(report, out / "affinity.png")
    plot_curve(report, out / "curve.png")


def atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

"""The find_groups report: report.json as data, the terminal table, report.md and the figures.

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
  ``report.md``; the terminal table (`format_table`) opens with the same
  expectations.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from grouping.choose import Baselines, Choice, baseline_totals, network_cost, per_task_losses, task_changes
from grouping.costs import UNIT_SHORT, CostTable, budget_text
from grouping.expectation import budget_curve, expectation_lines, expected, ground_truth_regret
from grouping.methods import Estimate, Method
from grouping.objective import Objective
from grouping.runner import NetSpec, train_settings
from grouping.store import code_version

REPORT_FORMAT = "mtl-grouping/find-groups-report"
REPORT_VERSION = 5  # 3: task_metrics, run.git_commit; 4: expected_percent, curve, trust; 5: cost, costs, candidates
BASELINE_NAMES = {
    "all_in_one": "all tasks in one network",
    "one_per_task": "one network per task",
    "random": "random groupings (mean)",
}
CHANGE_NAMES = {
    "vs_all_in_one": "change vs one all-task network (%)",
    "vs_independent": "change vs independent networks (%)",
}
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
    (a `grouping.runner.DataSpec`; default the Taskonomy vocabulary of tasks.registry)."""
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
    # Under "relative", a method that trains no single-task networks (tag, cs) has no reference: no totals.
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
        "predicts_losses": method.predicts_losses,
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
# Text.


def _total_name(report: Mapping[str, Any]) -> str:
    return "mean relative loss" if report["objective"] == "relative" else "total"


def _metric_cell(entry: Mapping[str, Any] | None, metric: str) -> float | None:
    value = None if entry is None else entry.get(metric)
    return None if value is None else float(value)


def _metrics_line(label: str, task_metrics: Mapping[str, Any] | None, report: Mapping[str, Any]) -> list[str]:
    """One line of each task's headline test metric under the task columns, or none."""
    if not task_metrics:
        return []
    cells = ""
    for t in report["tasks"]:
        v = _metric_cell(task_metrics.get(t), report["metrics"][t]["metric"])
        cells += f"{'-':>9}" if v is None else f"{v:>9.4g}"
    return [f"  {label:<45}" + cells]


def _metrics_text(task_metrics: Mapping[str, Any] | None, report: Mapping[str, Any]) -> str:
    """'seg miou 0.512, depth rmse_m 0.77' (the known ones), or ''."""
    if not task_metrics:
        return ""
    parts = []
    for t in report["tasks"]:
        metric = report["metrics"][t]["metric"]
        v = _metric_cell(task_metrics.get(t), metric)
        if v is not None:
            parts.append(f"{t} {metric} {v:.4g}")
    return ", ".join(parts)


def metrics_legend(report: Mapping[str, Any]) -> str:
    return ", ".join(f"{t} {m['metric']} ({'higher' if m['higher_is_better'] else 'lower'} = better)"
                     for t, m in report["metrics"].items())


def _changes(label: str, changes: Mapping[str, float] | None, names: Sequence[str]) -> list[str]:
    """One line of per-task changes under the task columns, or none."""
    if changes is None:
        return []
    return [f"  {label:<45}" + "".join(f"{changes[t]:>+8.1f}%" for t in names)]


def format_table(report: Mapping[str, Any]) -> str:
    """The terminal table: chosen networks, each task's change, and the baselines per budget."""
    names = report["tasks"]
    tag = not report["predicts_losses"]
    total_name = _total_name(report)
    kind = report["cost"]["kind"]
    lines = [f"method {report['method']}: predicted = {report['predicted']}",
             f"objective {report['objective']}: totals are the {report['totals']}",
             f"budgets and costs in {report['cost']['unit']}", *infeasible_lines(report), ""]
    lines += expectation_lines(report)
    if tag:
        lines.append("(cells below: each task's TAG score in the network, higher = better; not a loss)")
    head = f"  {'network':<34}{'size':>5}{'cost':>6}" + "".join(f"{t[:8]:>9}" for t in names)
    for sel in report["selections"]:
        what = (f"TAG score {sel['tag_score']:.4f}" if tag else f"predicted {total_name} {sel['predicted_total']:.4f}")
        lines.append("")
        lines.append(f"budget {budget_text(sel['budget'], kind)}: {len(sel['networks'])} network(s), "
                     f"cost {sel['cost']:.3g}, {what}"
                     + ("" if sel["optimal"] else f" (gap {sel['gap']:.2g})"))
        lines.append(head)
        for nw in sel["networks"]:
            values = nw["tag_score"] if tag else nw["predicted"]
            cells = ""
            for t in names:
                if t not in nw["tasks"]:
                    cells += f"{'':>9}"
                else:
                    mark = "*" if t in nw["serves"] else " "
                    cells += f"{values[t]:>8.4f}{mark}"
            lines.append(f"  {nw['label'][:34]:<34}{nw['width']:>5}{nw['cost']:>6.3g}{cells}   {costs_text(nw['costs'])}")
        for key, label in CHANGE_NAMES.items():
            lines += _changes("predicted " + label, sel["task_change_percent"][key], names)
        lines += _metrics_line("test metric (network trained in full)", sel.get("task_metrics"), report)
        meas = sel.get("measured")
        if meas:
            lines.append(f"  {'measured test loss (full schedule)':<45}"
                         + "".join(f"{meas['chosen']['test'][t]:>9.4f}" for t in names)
                         + f"   {total_name} {meas['chosen']['test_total']:.4f}")
            for key, label in CHANGE_NAMES.items():
                lines += _changes("measured " + label, meas["chosen"]["change_percent"][key], names)
        for key, label in BASELINE_NAMES.items():
            b = sel["baselines"][key]
            if b is None:
                lines.append(f"  baseline {label}: does not fit the budget")
                continue
            text = f"  baseline {label}"
            if key == "one_per_task":
                text += f" ({b['networks'][0]['width']} size)"
            if key == "random":
                text += f" over {b['count']} groupings"
            text += ": predicted " + ("-" if b["predicted_total"] is None else f"{b['predicted_total']:.4f}")
            if meas and meas.get(key):
                text += f", measured test {meas[key]['test_total']:.4f}"
            metrics = _metrics_text(b.get("task_metrics"), report)
            if metrics:
                text += f"; test metrics: {metrics}"
            lines.append(text)
        for m, b in ((meas or {}).get("balanced") or {}).items():  # --balance: the all-task network, balanced
            lines.append(f"  baseline one all-task network, {m} balancing: measured test {b['test_total']:.4f}")
        for m, b in ((meas or {}).get("both") or {}).items():  # --balance: the chosen networks, balanced
            lines.append(f"  both: the chosen networks, multi-task ones with {m} balancing: measured test "
                         f"{b['test_total']:.4f}")
    lines.append("")
    lines.append("(* = the network whose output the task uses)")
    if "metrics" in report:
        lines.append(f"(test metrics: {metrics_legend(report)}; '-' = that network was not trained with the full "
                     "schedule: --verify trains it)")
    if report["objective"] == "relative" and report["reference"] is None:
        lines.append(f"(the relative objective needs each task's single-task loss: {report['method']} trains no "
                     "single-task network, so predicted totals are '-'; --verify measures them)")
    return "\n".join(lines)


def costs_text(costs: Mapping[str, float | None]) -> str:
    """'nominal 1, 11.2 MFLOPs, 0.41 ms': a network's cost in all three units (latency where measured)."""
    text = f"nominal {costs['nominal']:g}, {costs['flops'] / 1e6:.3g} MFLOPs"
    return text + ("" if costs.get("latency") is None else f", {costs['latency'] * 1e3:.3g} ms")


def infeasible_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per budget asked for below the cheapest cover."""
    kind = report["cost"]["kind"]
    return [f"budget {budget_text(b['budget'], kind)}: infeasible, the cheapest networks covering every task cost "
            f"{b['minimum_budget']:.4g}" for b in report.get("infeasible_budgets", [])]


def format_timing(report: Mapping[str, Any]) -> str:
    t = report["run"]["timing"]
    lines = [f"time: data {t['data_seconds']:.1f} s, training {t['training_seconds']:.1f} s "
             f"({t['trained']} trained, {t['reused']} reused from the store), solving {t['solve_seconds']:.2f} s"
             + (f", verify {t['verify_seconds']:.1f} s" if report.get("verify") else "")
             + (f", total {t['total_seconds']:.1f} s" if "total_seconds" in t else "")]
    for e in t["networks"]:
        if not e["reused"]:
            resumed = f" (resumed at step {e['resumed_from']})" if e.get("resumed_from") else ""
            lines.append(f"  {e['phase']:<8} {e['network']:<34} {e['steps']:>5} steps {e['seconds']:>7.1f} s{resumed}")
    return "\n".join(lines)


def format_markdown(report: Mapping[str, Any]) -> str:
    names = report["tasks"]
    unit = UNIT_SHORT[report["cost"]["kind"]]
    tag = not report["predicts_losses"]
    md = [f"# Task groupings: {', '.join(names)}", "",
          f"Method **{report['method']}**; predicted = {report['predicted']}.  ",
          f"Objective **{report['objective']}**: totals are the {report['totals']}.  ",
          f"Budgets and costs in {report['cost']['unit']}.", "", *[f"- {line}" for line in infeasible_lines(report)],
          "",
          f"Data: `{json.dumps(report['data'])}`  ",
          f"Training: {report['training']['steps']} steps, batch {report['training']['batch_size']}, "
          f"{report['training']['optimizer']} lr {report['training']['learning_rate']:g}, seed {report['training']['seed']}  ",
          _code_line(report), "",
          "## What to expect", "", *[f"- {line}" for line in expectation_lines(report)], "",
          "![curve](curve.png)", "",
          "## Chosen networks", ""]
    value = "TAG score" if tag else "predicted loss"
    md.append(f"| budget [{unit}] | network | size | cost | nominal | MFLOPs | latency (ms) | {' | '.join(names)} | total |")
    md.append("|---|---|---|---|---|---|---|" + "---|" * len(names) + "---|")
    for sel in report["selections"]:
        for k, nw in enumerate(sel["networks"]):
            vals = nw["tag_score"] if tag else nw["predicted"]
            cells = [(f"**{vals[t]:.4f}**" if t in nw["serves"] else f"{vals[t]:.4f}") if t in nw["tasks"] else ""
                     for t in names]
            total = "" if k else (f"{sel['tag_score']:.4f}" if tag else f"{sel['predicted_total']:.4f}")
            c = nw["costs"]
            latency = "-" if c.get("latency") is None else f"{c['latency'] * 1e3:.3g}"
            md.append(f"| {sel['budget']:g} | {nw['label']} | {nw['width']} | {nw['cost']:.3g} | {c['nominal']:g} | "
                      f"{c['flops'] / 1e6:.3g} | {latency} | {' | '.join(cells)} | {total} |")
    md += ["", f"Cells: {value} per task; bold = the network whose output the task uses. Budget and cost in "
           f"{report['cost']['unit']}; nominal = Standley's units; MFLOPs per image; latency per batch of "
           f"{report['cost']['latency_batch'] or '-'} ('-': not measured, --cost latency measures it).", "",
           "## Each task's change (%) in the chosen networks", "",
           f"| budget [{unit}] | | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
    for sel in report["selections"]:
        rows = [("predicted", sel["task_change_percent"])]
        if sel.get("measured"):
            rows.append(("measured test", sel["measured"]["chosen"]["change_percent"]))
        for what, changes in rows:
            for key, label in CHANGE_NAMES.items():
                c = changes[key]
                cells = [("-" if c is None else f"{c[t]:+.1f}") for t in names]
                md.append(f"| {sel['budget']:g} | {what} {label[:-4]} | {' | '.join(cells)} |")
    md += ["", "Negative = lower loss than in that network; '-' = not known without --verify.", ""]
    if "metrics" in report:
        md += _metrics_markdown(report)
    md += ["## Baselines (predicted totals" + (", measured test totals" if report.get("verify") else "") + ")", "",
           f"| budget [{unit}] | method | " + " | ".join(BASELINE_NAMES.values()) + " |", "|---|---|---|---|---|"]
    for sel in report["selections"]:
        meas = sel.get("measured") or {}

        def cell(total, key=None):
            text = "-" if total is None else f"{total:.4f}"
            if key and meas.get(key):
                text += f" / {meas[key]['test_total']:.4f}"
            return text

        own = cell(sel["tag_score"] if tag else sel["predicted_total"])
        if meas:
            own += f" / {meas['chosen']['test_total']:.4f}"
        row = [cell(sel["baselines"][k]["predicted_total"] if sel["baselines"][k] else None, k) for k in BASELINE_NAMES]
        md.append(f"| {sel['budget']:g} | {own} | " + " | ".join(row) + " |")
    md += _balancing_markdown(report)
    aff = report["affinity"]
    md += ["", f"## Affinity ({aff['kind']})", "", aff["definition"] + ".", "", aff["orientation"] + ".", "",
           "| source \\ target | " + " | ".join(aff["tasks"]) + " |", "|---|" + "---|" * len(aff["tasks"])]
    for t, row in zip(aff["tasks"], aff["matrix"]):
        md.append(f"| {t} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    md += ["", "![affinity](affinity.png)", ""]
    if "run" in report:
        md += ["## Time", "", "```", format_timing(report), "```", ""]
    return "\n".join(md)


def _balancing_markdown(report: Mapping[str, Any]) -> list[str]:
    """--balance: grouping, balancing, or both? Per budget and method, the measured test totals of the chosen
    networks (equal weights), the all-task network trained with the method, and the chosen networks with their
    multi-task ones trained with it."""
    rows = []
    for sel in report["selections"]:
        meas = sel.get("measured") or {}
        for m in dict.fromkeys([*(meas.get("balanced") or {}), *(meas.get("both") or {})]):
            def cell(key):
                entry = (meas.get(key) or {}).get(m)
                return "-" if entry is None else f"{entry['test_total']:.4f}"
            rows.append(f"| {sel['budget']:g} | {m} | {meas['chosen']['test_total']:.4f} | {cell('balanced')} | "
                        f"{cell('both')} |")
    if not rows:
        return []
    return ["", "Grouping, balancing, or both (`--balance`), measured test totals: the chosen networks (equal "
            "weights), one all-task network trained with the balancing method ('-': does not fit the budget), and "
            "the chosen networks with every multi-task one trained with the method (both; single-task networks are "
            "unaffected by balancing):", "",
            f"| budget [{UNIT_SHORT[report['cost']['kind']]}] | balancing | grouping | balancing | both |",
            "|---|---|---|---|---|", *rows]


def _code_line(report: Mapping[str, Any]) -> str:
    commit = report.get("run", {}).get("git_commit")
    text = (f"Code version: `{report['code_version']}`, a hash of the source that trains (the .py files of mtl/, tasks/ "
            "and grouping's affinity, runner and store; the results store keys on it), not a git commit")
    if commit:
        dirty = commit.endswith("-dirty")
        text += f"; git commit `{commit.removesuffix('-dirty')}`" + (" with uncommitted changes" if dirty else "")
    return text


def _metrics_markdown(report: Mapping[str, Any]) -> list[str]:
    """Each task's headline test metric in the chosen networks and the baselines, where measured."""
    names = report["tasks"]
    head = [f"{t} ({m['metric']}, {'higher' if m['higher_is_better'] else 'lower'} = better)"
            for t, m in report["metrics"].items()]
    md = ["## Each task's test metric", "", f"| budget [{UNIT_SHORT[report['cost']['kind']]}] | networks | {' | '.join(head)} |",
          "|---|---|" + "---|" * len(names)]
    for sel in report["selections"]:
        rows = [("chosen", sel.get("task_metrics"))]
        for key in ("all_in_one", "one_per_task"):
            base = sel["baselines"][key]
            if base is not None:
                rows.append((BASELINE_NAMES[key], base.get("task_metrics")))
        for what, tm in rows:
            cells = []
            for t in names:
                v = _metric_cell((tm or {}).get(t), report["metrics"][t]["metric"])
                cells.append("-" if v is None else f"{v:.4g}")
            md.append(f"| {sel['budget']:g} | {what} | {' | '.join(cells)} |")
    md += ["", "Each task in the network whose output it uses, on the test split; '-' = that network was not "
           "trained with the full schedule (`--verify` trains it).", ""]
    return md


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

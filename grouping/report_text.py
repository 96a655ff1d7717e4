"""The find_groups report as text: the terminal table (`format_table`), the
run's timing (`format_timing`) and ``report.md`` (`format_markdown`), all
read from the report's data (`grouping.report.build_report`).

Both open with what to expect (`grouping.expectation.expectation_lines`),
then per budget the chosen networks (each task's predicted loss, or TAG
score, in each network; the network whose output a task uses marked), each
task's change against one all-task network and its independent network,
the tasks' test metrics where measured, and the baselines; with
``--verify`` the measured test totals beside the predicted ones.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from grouping.costs import UNIT_SHORT, budget_text
from grouping.expectation import expectation_lines

#: The baselines, by their key in the report, as the text names them.
BASELINE_NAMES = {
    "all_in_one": "all tasks in one network",
    "one_per_task": "one network per task",
    "random": "random groupings (mean)",
}
#: Each task's changes, by their key in the report, as the text names them.
CHANGE_NAMES = {
    "vs_all_in_one": "change vs one all-task network (%)",
    "vs_independent": "change vs independent networks (%)",
}


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


def _has_predictions(report: Mapping[str, Any]) -> bool:
    """Whether the chosen networks have predicted losses (tag/cs without a reading do not)."""
    return all(nw["predicted"] is not None for sel in report["selections"] for nw in sel["networks"])


def _cells(nw: Mapping[str, Any]) -> Mapping[str, float]:
    """A network's per-task cells: its predicted losses, else its TAG scores."""
    return nw["predicted"] if nw["predicted"] is not None else nw["tag_score"]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _selection_total(sel: Mapping[str, Any], total_name: str) -> str:
    """"predicted <total> x" (and the TAG score where the choice has one)."""
    parts = [] if sel["predicted_total"] is None else [f"predicted {total_name} {sel['predicted_total']:.4f}"]
    if sel["tag_score"] is not None:
        parts.append(f"TAG score {sel['tag_score']:.4f}")
    return ", ".join(parts) or "no predicted total"


def format_table(report: Mapping[str, Any]) -> str:
    """The terminal table: chosen networks, each task's change, and the baselines per budget."""
    names = report["tasks"]
    tag = report["groups_by_tag_rule"]
    total_name = _total_name(report)
    kind = report["cost"]["kind"]
    lines = [f"method {report['method']}: predicted = {report['predicted']}",
             f"objective {report['objective']}: totals are the {report['totals']}",
             f"budgets and costs in {report['cost']['unit']}", *infeasible_lines(report), ""]
    lines += expectation_lines(report)
    if tag:
        lines.append(f"(chosen by TAG's rule on {report['method']}'s group scores; the cells are "
                     + ("the losses read off its affinity, not chosen on)" if _has_predictions(report)
                        else "each task's TAG score in the network, higher = better; not a loss)"))
    head = f"  {'network':<34}{'size':>5}{'cost':>6}" + "".join(f"{t[:8]:>9}" for t in names)
    for sel in report["selections"]:
        what = _selection_total(sel, total_name)
        lines.append("")
        lines.append(f"budget {budget_text(sel['budget'], kind)}: {len(sel['networks'])} network(s), "
                     f"cost {sel['cost']:.3g}, {what}"
                     + ("" if sel["optimal"] else f" (gap {sel['gap']:.2g})"))
        lines.append(head)
        for nw in sel["networks"]:
            values = _cells(nw)
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
    tag = report["groups_by_tag_rule"] and not _has_predictions(report)  # cells are TAG scores
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
            vals = _cells(nw)
            cells = [(f"**{vals[t]:.4f}**" if t in nw["serves"] else f"{vals[t]:.4f}") if t in nw["tasks"] else ""
                     for t in names]
            total = "" if k else _number(sel["tag_score"] if tag else sel["predicted_total"])
            c = nw["costs"]
            latency = "-" if c.get("latency") is None else f"{c['latency'] * 1e3:.3g}"
            md.append(f"| {sel['budget']:g} | {nw['label']} | {nw['width']} | {nw['cost']:.3g} | {c['nominal']:g} | "
                      f"{c['flops'] / 1e6:.3g} | {latency} | {' | '.join(cells)} | {total} |")
    if report["groups_by_tag_rule"] and not tag:
        value += f" (read off {report['method']}'s affinity; chosen by TAG's rule, not on these)"
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

        own = cell(sel["tag_score"] if tag else sel["predicted_total"])  # tag: TAG score, no losses
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

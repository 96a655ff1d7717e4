"""find_groups: run an estimator, choose networks for every budget, write the report.

`find_groups(options)` is what ``scripts/find_groups.py`` calls. It writes to
the run directory (``--out``):

* ``store.sqlite``: the results store (`grouping.store`); reruns reuse it;
* ``checkpoints/``: orbax checkpoints of the network in training;
* ``report.json``: tasks, method, budgets, per budget the chosen networks
  (tasks, size, cost, predicted per-task losses, which tasks each serves),
  the predicted total, the baselines; the candidate table the solver used
  (loss methods); the affinity matrix with its task order and orientation;
  the trained networks' losses; data and training settings; code version;
  with ``--verify`` the measured test losses. Everything that depends on the
  run (paths, dates, times) is under ``"run"``; the rest is the same for the
  same settings, however often the run was interrupted.
* ``affinity.png`` (heatmap with values), ``curve.png`` (predicted total
  against budget for the method and the baselines, measured test totals
  dashed with ``--verify``), ``report.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from grouping import estimators as E
from grouping.store import STORE_NAME, ResultsStore, code_version

REPORT_FORMAT = "mtl-grouping/find-groups-report"
REPORT_VERSION = 1
DEFAULT_STEPS = 500
BASELINE_NAMES = {
    "all_in_one": "all tasks in one network",
    "one_per_task": "one network per task",
    "random": "random groupings (mean)",
}
ORIENTATION = "matrix[i][j]: effect of task i (row, source) on task j (column, target); positive = i helps j"
AFFINITY_DEFINITIONS = {
    "pair-loss-ratio": "1 - L(j|{i,j}) / L(j|{j}): relative drop of j's validation loss when it shares a full-size "
                       "network with i (from the pair and single-task networks); diagonal 0",
    "lookahead": "TAG lookahead affinity 1 - L_j(shared params after one SGD step on task i) / L_j(before), same "
                 "batch, averaged over the all-task training run",
    "cosine": "cosine similarity of the per-task gradients on the shared (encoder) parameters, averaged over the "
              "all-task training run (symmetric)",
}


@dataclasses.dataclass
class Options:
    tasks: str | Sequence[str]
    budgets: Sequence[float]
    method: str = E.DEFAULT_METHOD
    data: E.DataSpec = dataclasses.field(default_factory=E.DataSpec)
    steps: int = DEFAULT_STEPS
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    out: str | os.PathLike = "runs/find_groups"
    verify: bool = False
    esa_fraction: float = E.ESA_FRACTION
    every: int = E.AFFINITY_EVERY
    checkpoint_every: int | None = None
    progress: bool = True
    ensemble: bool = True  # train several networks of one width as one ensemble (mtl.ensemble)
    devices: int | None = None  # ensembles: devices to shard over (None: all local ones)
    max_members: int | None = None  # ensembles: most networks per compiled program
    command: str | None = None


@dataclasses.dataclass
class Setup:
    """Validated inputs of a run: Task objects, their names, budgets, the full
    training configuration and the data settings (store keys)."""

    tasks: tuple
    names: tuple[str, ...]
    budgets: list[float]
    cfg: Any
    data_settings: dict[str, Any]

    def runner(self, opts: "Options", store: ResultsStore) -> E.Runner:
        return E.Runner(self.tasks, opts.data, self.cfg, opts.out, store, progress=opts.progress,
                        checkpoint_every=opts.checkpoint_every, data_settings=self.data_settings,
                        ensemble=opts.ensemble, devices=opts.devices, max_members=opts.max_members)


def setup(opts: Options) -> Setup:
    """Checks every input before anything is trained (ValueError on bad input)."""
    from mtl.model import check_resolution
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks

    if opts.method not in E.METHODS:
        raise ValueError(f"unknown method {opts.method!r}; use one of {', '.join(E.METHODS)}")
    tasks = resolve_tasks(opts.tasks, min_tasks=2)
    names = tuple(t.name for t in tasks)
    budgets = [float(b) for b in opts.budgets]
    if not budgets:
        raise ValueError("no budget given")
    E.check_budgets(opts.method, names, budgets)
    if opts.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {opts.steps}")
    if opts.method == "esa" and not 0 < opts.esa_fraction <= 1:
        raise ValueError(f"--esa-fraction must be in (0, 1], got {opts.esa_fraction}")
    if opts.every < 1:
        raise ValueError(f"--every must be at least 1, got {opts.every}")
    check_resolution(opts.data.resolution)
    if opts.ensemble:
        from mtl.ensemble import ensemble_devices

        ensemble_devices(opts.devices)  # more devices than exist: a clear error now, not after the data
        if opts.max_members is not None and opts.max_members < 1:
            raise ValueError(f"--max-members must be at least 1, got {opts.max_members}")
    cfg = TrainConfig(steps=opts.steps, batch_size=opts.batch_size, learning_rate=opts.learning_rate, seed=opts.seed)
    return Setup(tasks, names, budgets, cfg, opts.data.check(tasks))


def find_groups(opts: Options, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole run; returns the report (also written to opts.out)."""
    t_start = time.perf_counter()
    s = setup(opts)
    names, budgets, cfg, data_settings = s.names, s.budgets, s.cfg, s.data_settings
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"run directory {out} (rerun with --out {out} to resume); method {opts.method}; "
         f"tasks {', '.join(names)}; budgets {', '.join(f'{b:g}' for b in budgets)}")
    with ResultsStore(out / STORE_NAME) as store:
        runner = s.runner(opts, store)
        if opts.method in ("tag", "cs"):
            stored = store.get(runner.affinity_settings(opts.every)) is not None
            echo(f"{opts.method}: one training run of all {len(names)} tasks"
                 + (" (already in the store)" if stored else ""))
        else:
            steps = max(1, round(opts.esa_fraction * opts.steps)) if opts.method == "esa" else None
            plan = E.planned_specs(opts.method, names)
            stored = sum(store.get(runner.settings_for(spec, steps)) is not None for spec in plan)
            echo(f"{opts.method}: {len(plan)} networks of {steps or opts.steps} steps, {stored} already in the store")
        est = E.estimate(opts.method, runner, esa_fraction=opts.esa_fraction, every=opts.every)
        t0 = time.perf_counter()
        choices = E.choose(est, budgets)
        bases = [E.baselines(est, b) for b in budgets]
        solve_seconds = time.perf_counter() - t0
        verification = None
        verify_seconds = 0.0
        if opts.verify:
            t0 = time.perf_counter()
            verification = E.verify(runner, est, choices, bases, opts.seed)
            verify_seconds = time.perf_counter() - t0
        others = store.count_other(runner.keys)
    if others:
        echo(f"note: the store holds {others} finished job(s) from other settings or code versions; not used")
    report = build_report(opts, names, est, choices, bases, verification, cfg, data_settings)
    t0 = time.perf_counter()
    trained_here = [e for e in runner.log if not e["reused"]]
    report["run"] = {
        "out": str(out),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": opts.command,
        "timing": {
            "data_seconds": runner.data_seconds,
            "networks": runner.log,
            "trained": len(trained_here),
            "reused": len(runner.log) - len(trained_here),
            "training_seconds": math.fsum(e["seconds"] for e in trained_here if e["phase"] == "estimate"),
            "solve_seconds": solve_seconds,
            "verify_seconds": verify_seconds,
        },
    }
    write_outputs(out, report)
    timing = report["run"]["timing"]
    timing["report_seconds"] = time.perf_counter() - t0
    timing["total_seconds"] = time.perf_counter() - t_start
    _atomic_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    echo(format_table(report))
    echo(format_timing(report))
    echo(f"wrote {out / 'report.json'}, report.md, affinity.png, curve.png")
    return report


# ---------------------------------------------------------------------------
# The report as data.


def _net(spec: E.NetSpec, predicted: Mapping[str, float] | None = None, scores: Mapping[str, float] | None = None,
         serves: Sequence[str] | None = None) -> dict[str, Any]:
    return {"label": spec.label, "tasks": list(spec.tasks), "size": spec.size,
            "width": "half" if spec.half else "full", "cost": spec.cost,
            "predicted": None if predicted is None else {t: float(predicted[t]) for t in spec.tasks},
            "tag_score": None if scores is None else {t: float(scores[t]) for t in spec.tasks},
            "serves": list(serves) if serves is not None else list(spec.tasks)}


def build_report(opts: Options, names: Sequence[str], est: E.Estimate, choices: Sequence[E.Choice],
                 bases: Sequence[Mapping[str, Any]], verification: Mapping | None, cfg,
                 data_settings: Mapping) -> dict[str, Any]:
    names = list(names)
    selections = []
    for i, (ch, base) in enumerate(zip(choices, bases)):
        nets = []
        for spec in ch.specs:
            serves = [t for t in names if ch.assignment.get(t) == spec.label]
            nets.append(_net(spec, ch.predicted.get(spec.label),
                             ch.scores.get(spec.label) if ch.scores else None, serves))
        b_out: dict[str, Any] = {}
        for key in ("all_in_one", "one_per_task"):
            b = base[key]
            b_out[key] = None if b is None else {
                "networks": [_net(s, est.predicted(s)) for s in b["specs"]],
                "cost": math.fsum(s.cost for s in b["specs"]), "predicted_total": b["predicted_total"]}
        r = base["random"]
        b_out["random"] = None if r is None else {
            "predicted_total": r["predicted_total"], "count": r["count"],
            "sampling": f"every set partition of the tasks into at most {int(math.floor(ch.budget + 1e-9))} "
                        "groups, one full-size network each, equally weighted (exact mean)"}
        entry = {"budget": ch.budget, "networks": nets, "cost": ch.cost, "predicted_total": ch.predicted_total,
                 "tag_score": ch.tag_score, "assignment": {t: ch.assignment[t] for t in names},
                 "optimal": bool(ch.optimal), "gap": float(ch.gap), "baselines": b_out}
        if verification is not None:
            entry["measured"] = verification["per_budget"][i]
        selections.append(entry)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "tasks": names,
        "method": est.method,
        "budgets": [float(b) for b in opts.budgets],
        "predicted": ("validation loss of each network at the end of training" if est.method == "exhaustive" else
                      f"validation loss after {max(1, round(opts.esa_fraction * opts.steps))} steps "
                      "(a shortened schedule)" if est.method == "esa" else
                      "validation losses of singles and pairs; 3+ task networks by HOA (mean of the pairs)"
                      if est.method == "hoa" else
                      "none: tag/cs predict no losses; tag_score = TAG group score (higher = better)"),
        "selections": selections,
        "candidates": None if est.candidates is None else [
            {"label": nw.label, "tasks": list(nw.tasks), "size": est.specs[nw.label].size, "cost": nw.cost,
             "predicted": {t: float(v) for t, v in nw.losses.items()}} for nw in est.candidates],
        "affinity": {"tasks": names, "matrix": np.asarray(est.affinity, dtype=float).tolist(), "kind": est.affinity_kind,
                     "orientation": ORIENTATION, "definition": AFFINITY_DEFINITIONS[est.affinity_kind]},
        "trained_networks": [
            {"label": tr.spec.label, "tasks": list(tr.spec.tasks), "size": tr.spec.size, "steps": tr.steps,
             "validation": tr.validation, "test": tr.test} for tr in est.trained],
        "data": dict(data_settings),
        "training": {**E.train_settings(cfg), "esa_fraction": opts.esa_fraction if est.method == "esa" else None,
                     "affinity_every": opts.every if est.method in ("tag", "cs") else None},
        "code_version": code_version(),
        "verify": verification is not None,
    }
    if est.method in ("tag", "cs"):
        report["affinity"]["tag_matrix"] = est.extra["tag_matrix"]
        report["affinity"]["cs_matrix"] = est.extra["cs_matrix"]
    if verification is not None:
        report["verified_networks"] = verification["networks"]
    return report


# ---------------------------------------------------------------------------
# Text.


def _f(v: float | None, width: int = 8, digits: int = 4) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def format_table(report: Mapping[str, Any]) -> str:
    """The terminal table: chosen networks and baselines per budget."""
    names = report["tasks"]
    tag = report["method"] in ("tag", "cs")
    lines = [f"method {report['method']}: predicted = {report['predicted']}"]
    head = f"  {'network':<34}{'size':>5}{'cost':>6}" + "".join(f"{t[:8]:>9}" for t in names)
    for sel in report["selections"]:
        what = (f"TAG score {sel['tag_score']:.4f}" if tag else f"predicted total {sel['predicted_total']:.4f}")
        lines.append("")
        lines.append(f"budget {sel['budget']:g}: {len(sel['networks'])} network(s), cost {sel['cost']:g}, {what}"
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
            lines.append(f"  {nw['label'][:34]:<34}{nw['width']:>5}{nw['cost']:>6g}{cells}")
        meas = sel.get("measured")
        if meas:
            lines.append(f"  {'measured test loss (full schedule)':<45}"
                         + "".join(f"{meas['chosen']['test'][t]:>9.4f}" for t in names)
                         + f"   total {meas['chosen']['test_total']:.4f}")
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
            lines.append(text)
    lines.append("")
    lines.append("(* = the network whose output the task uses)")
    return "\n".join(lines)


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
    tag = report["method"] in ("tag", "cs")
    md = [f"# Task groupings: {', '.join(names)}", "",
          f"Method **{report['method']}**; predicted = {report['predicted']}.", "",
          f"Data: `{json.dumps(report['data'])}`  ",
          f"Training: {report['training']['steps']} steps, batch {report['training']['batch_size']}, "
          f"{report['training']['optimizer']} lr {report['training']['learning_rate']:g}, seed {report['training']['seed']}  ",
          f"Code version: `{report['code_version']}`", "",
          "## Chosen networks", ""]
    value = "TAG score" if tag else "predicted loss"
    md.append(f"| budget | network | size | cost | {' | '.join(names)} | total |")
    md.append("|---|---|---|---|" + "---|" * len(names) + "---|")
    for sel in report["selections"]:
        for k, nw in enumerate(sel["networks"]):
            vals = nw["tag_score"] if tag else nw["predicted"]
            cells = [(f"**{vals[t]:.4f}**" if t in nw["serves"] else f"{vals[t]:.4f}") if t in nw["tasks"] else ""
                     for t in names]
            total = "" if k else (f"{sel['tag_score']:.4f}" if tag else f"{sel['predicted_total']:.4f}")
            md.append(f"| {sel['budget']:g} | {nw['label']} | {nw['width']} | {nw['cost']:g} | {' | '.join(cells)} | {total} |")
    md += ["", f"Cells: {value} per task; bold = the network whose output the task uses.", "",
           "## Baselines (predicted totals" + (", measured test totals" if report.get("verify") else "") + ")", "",
           "| budget | method | " + " | ".join(BASELINE_NAMES.values()) + " |", "|---|---|---|---|---|"]
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
    aff = report["affinity"]
    md += ["", f"## Affinity ({aff['kind']})", "", aff["definition"] + ". " + aff["orientation"] + ".", "",
           "| source \\ target | " + " | ".join(aff["tasks"]) + " |", "|---|" + "---|" * len(aff["tasks"])]
    for t, row in zip(aff["tasks"], aff["matrix"]):
        md.append(f"| {t} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    md += ["", "![affinity](affinity.png)", "", "![curve](curve.png)", ""]
    if "run" in report:
        md += ["## Time", "", "```", format_timing(report), "```", ""]
    return "\n".join(md)


# ---------------------------------------------------------------------------
# Figures and files.


def plot_affinity(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aff = report["affinity"]
    names = aff["tasks"]
    m = np.array(aff["matrix"], dtype=float)
    shown = m.copy()
    np.fill_diagonal(shown, np.nan)
    lim = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
    lim = lim or 1.0
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.5))
    im = ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j:
                ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", fontsize=9,
                        color="white" if abs(m[i, j]) > 0.6 * lim else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("target (task whose loss changes)")
    ax.set_ylabel("source")
    ax.set_title(f"{report['method']}: {aff['kind']} affinity")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_series(report: Mapping[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """name -> (budgets, totals) of every line of curve.png (None totals skipped)."""
    tag = report["method"] in ("tag", "cs")
    series: dict[str, tuple[list[float], list[float]]] = {}

    def add(name, b, v):
        if v is not None:
            xs, ys = series.setdefault(name, ([], []))
            xs.append(b)
            ys.append(v)

    for sel in report["selections"]:
        b = sel["budget"]
        if not tag:
            add(f"{report['method']} (predicted)", b, sel["predicted_total"])
            for key, label in BASELINE_NAMES.items():
                base = sel["baselines"][key]
                add(f"{label} (predicted)", b, base["predicted_total"] if base else None)
        meas = sel.get("measured")
        if meas:
            add(f"{report['method']} (measured test)", b, meas["chosen"]["test_total"])
            for key, label in BASELINE_NAMES.items():
                add(f"{label} (measured test)", b, meas[key]["test_total"] if meas.get(key) else None)
    return series


def plot_curve(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    series = curve_series(report)
    colors = {}
    for name, (xs, ys) in series.items():
        base = name.split(" (")[0]
        color = colors.setdefault(base, f"C{len(colors)}")
        measured = "measured" in name
        ax.plot(xs, ys, "--" if measured else "-", marker="s" if measured else "o", color=color, label=name)
    if report["method"] in ("tag", "cs") and not series:
        xs = [s["budget"] for s in report["selections"]]
        ys = [s["tag_score"] for s in report["selections"]]
        ax.plot(xs, ys, "-o", label=f"{report['method']} group score (higher = better)")
        ax.set_ylabel("TAG group score (no losses predicted; use --verify)")
    else:
        ax.set_ylabel("total loss (sum over tasks)")
    ax.set_xlabel("budget (full-size network = 1)")
    ax.set_title(f"{report['method']}: {', '.join(report['tasks'])}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """report.json, report.md, affinity.png and curve.png (each written whole, then renamed)."""
    out = Path(out)
    _atomic_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    _atomic_text(out / "report.md", format_markdown(report))
    plot_affinity(report, out / "affinity.png")
    plot_curve(report, out / "curve.png")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

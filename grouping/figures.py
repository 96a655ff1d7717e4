"""The find_groups figures: the affinity heatmap and the budget curve, drawn from report.json's data.

``affinity.png``: the method's affinity matrix (source rows, target
columns) with its values. ``curve.png``: the whole budget curve
(`grouping.expectation.budget_curve`: from the cheapest feasible budget to
n in steps of 0.5, and the ones asked for; solving is free, so it is always
drawn whole) of the method's expected total, in the objective's units,
against one all-task network, independent networks and random groupings,
the budgets asked for marked; with ``--verify`` the measured test totals
at those budgets, dashed (with ``--balance``, also the all-task network
and the chosen networks trained with each balancing method). A tag/cs run without losses read off its affinity
has its TAG score drawn over the whole curve instead. The x-axis is in the
report's budget unit (`grouping.costs`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

#: The curve's lines: report key -> legend.
CURVE_LINES = {"all_in_one": "one all-task network", "one_per_task": "independent networks",
               "random_mean": "random groupings (mean)"}


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
    """name -> (budgets, totals) of every line of curve.png (unknown totals skipped)."""
    series: dict[str, tuple[list[float], list[float]]] = {}

    def add(name, b, v):
        if v is not None:
            xs, ys = series.setdefault(name, ([], []))
            xs.append(b)
            ys.append(v)

    curve = report.get("curve")
    if curve is not None:
        for i, b in enumerate(curve["budgets"]):
            add(f"{report['method']} (expected)", b, curve["method"][i])
            for key, label in CURVE_LINES.items():
                add(f"{label} (expected)", b, curve[key][i])
    for sel in report["selections"]:
        meas = sel.get("measured")
        if meas:
            add(f"{report['method']} (measured test)", sel["budget"], meas["chosen"]["test_total"])
            for key, label in (("all_in_one", CURVE_LINES["all_in_one"]), ("one_per_task", CURVE_LINES["one_per_task"]),
                               ("random", CURVE_LINES["random_mean"])):
                add(f"{label} (measured test)", sel["budget"], meas[key]["test_total"] if meas.get(key) else None)
            for m, b in (meas.get("balanced") or {}).items():  # --balance
                add(f"all-task network, {m} balancing (measured test)", sel["budget"], b["test_total"])
            for m, b in (meas.get("both") or {}).items():  # --balance: the chosen networks, multi-task ones balanced
                add(f"both: {report['method']}'s networks, {m} balancing (measured test)", sel["budget"],
                    b["test_total"])
    return series


def plot_curve(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    series = curve_series(report)
    colors: dict[str, str] = {}
    for name, (xs, ys) in series.items():
        base = name.split(" (")[0]
        color = colors.setdefault(base, f"C{len(colors)}")
        measured = "measured" in name
        own = base == report["method"]
        ax.plot(xs, ys, "--" if measured else "-", marker="s" if measured else "o", ms=5 if own else 3,
                lw=2.2 if own else 1.2, color=color, label=name)
    curve = report.get("curve") or {}
    asked = [b for b, a in zip(curve.get("budgets", []), curve.get("asked", [])) if a]
    handles = []
    if report["groups_by_tag_rule"] and curve and all(v is None for v in curve["method"]):  # no losses: scores
        tag_ax = ax.twinx() if series else ax
        handles = tag_ax.plot(curve["budgets"], curve["tag_score"], "-o", color="C9",
                              label=f"{report['method']} group score (higher = better)")
        tag_ax.set_ylabel("TAG group score, higher = better\n(no losses predicted; --verify measures them)")
        for b in asked:
            tag_ax.plot([b], [curve["tag_score"][curve["budgets"].index(b)]], marker="*", ms=16, color="C9",
                        markeredgecolor="k", zorder=5)
        if tag_ax is ax:
            handles = []  # already among ax's own
    if series or not report["groups_by_tag_rule"]:
        ax.set_ylabel("expected mean relative loss, lower = better\n(1 = independent full-size networks)"
                      if report["objective"] == "relative" else "expected total loss (sum over tasks), lower = better")
    for i, b in enumerate(asked):
        ax.axvline(b, color="k", ls=":", lw=1, label="budget asked for" if i == 0 else None)
        own = series.get(f"{report['method']} (expected)")
        if own and b in own[0]:
            ax.plot([b], [own[1][own[0].index(b)]], marker="*", ms=16, color=colors.get(report["method"], "C0"),
                    markeredgecolor="k", zorder=5)
    cost = report.get("cost") or {}
    ax.set_xlabel(f"budget, in {cost.get('unit', 'full-size networks (a half-size single-task network = 0.5)')}",
                  fontsize=8, wrap=True)
    ax.set_title(f"{report['method']}: {', '.join(report['tasks'])}")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    ax.legend(lines + handles, labels + [h.get_label() for h in handles], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

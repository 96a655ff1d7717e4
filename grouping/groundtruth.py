"""Ground truth: every candidate network trained, and how good each estimator's choice is.

`collect` runs every estimator (`grouping.methods`) through one Runner per
seed: exhaustive trains all 2^n - 1 full-size subset networks and the n
half-size singles with the full schedule (as ensembles), esa the same networks
with the short schedule, hoa reads the singles and pairs back from the store,
tag and cs share one all-task affinity run, lookahead runs its probe run (its
singles are exhaustive's), surrogate draws its sample of exhaustive's networks
(no training). The record keeps what each method's `Method.collect` says
(every network's validation and test losses, the early losses, the affinity
matrices, the surrogate's sample), so `evaluate` needs no training.
`collect(..., methods=...)` gathers some methods only: scripts/ground_truth.py
--methods merges them into a finished record.

`evaluate` answers, for every budget and seed, Standley et al.'s question
with the code find_groups runs, for every method whose evidence every seed's
record holds (`Method.in_record`): each method's estimate is rebuilt from the
record by the registry (`Method.from_record`), chosen on with
`grouping.choose.choose` (its own evidence: validation losses, early
losses, HOA predictions or affinities), and the choice is scored with
`grouping.choose.score` on the TEST losses of the fully trained networks,
each task counting the lowest test loss among the chosen networks that do it
(Standley's scoring). ``optimal`` is exhaustive's choice (selected on
validation losses). Baselines (`grouping.choose.baselines`): one all-task
network, independent networks (full-size singles when the budget holds n of
them, half-size when it holds n/2), and random groupings: every set
partition of the tasks into at most floor(budget) full-size networks,
equally likely (exact mean and worst, by enumeration). Every total is the
objective (`grouping.objective`, default ``relative``: the mean over tasks
of the test loss over the task's full-size single-task network's test loss;
``loss``: Standley's sum).

Regret of a method at a budget = (its test total - optimal's) / optimal's, in
%. Over seeds, each seed is a complete replicate of the whole procedure; a
mean regret no larger than its seed-to-seed standard deviation is reported as
within seed noise. Also reported: each task's change (%) in every choice
against one all-task network and against its independent full-size network,
and the pairwise transfer table (task t's change in the pair network {t,u}
against t alone), each as mean ± std over seeds.

Grouping, balancing, or both (`grouping.balanced`, scripts/ground_truth.py
--balancing): a record holding networks trained with a balancing method of
`mtl.balancing` gains, per method, the row ``balanced:<method>`` (one
all-task network trained with it) and the row ``both:<method>`` (optimal's
choice at each budget with every multi-task network among its networks
trained with it; `both_networks` lists those networks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grouping.balanced import (
    BALANCED,
    BOTH,
    balanced_rows,
    balancing_in,
    both_in,
    both_rows,
    multitask_networks,
)
from grouping.balanced import label as balancing_label
from grouping.costs import CostTable
from grouping.choose import Choice, baseline_totals, baselines, choose, per_task_losses, score, task_changes
from grouping.methods import MethodSettings, get_method, method_names
from grouping.objective import DEFAULT_OBJECTIVE, Objective, change_percent, get_objective
from grouping.prediction_error import NO_EFFECT, prediction_errors
from grouping.runner import NetSpec
from grouping.selection import network_label, split_budgets
from grouping.setting_checks import TARGETS as SETTING_TARGETS

#: The five tasks, in the column order of Standley's tables (s, d, n, k, t).
TASKS = ("seg", "depth", "normals", "keypoints", "edges")
#: The held-out task set, named before any setting was changed for the
#: "grouping that pays off" and "cheap estimate" issues: no choice of scenes,
#: network, schedule or estimator is tuned on it; it is only evaluated
#: (Standley's task set 2 without normals, so it shares no task with TASKS).
HELDOUT_TASKS = ("autoencoder", "occlusion", "reshading", "curvature")
#: The estimators of the first ground truth; `estimators_in` gives those of a record.
ESTIMATORS = ("esa", "hoa", "tag", "cs")
METHODS = ("optimal",) + ESTIMATORS
#: The registered method behind each evaluated one: "optimal" is exhaustive training's choice.
METHOD_NAMES = {"optimal": "exhaustive", **{m: m for m in ESTIMATORS}}


def registered(method: str) -> str:
    """The registered method behind an evaluated one ("optimal" -> "exhaustive")."""
    return METHOD_NAMES.get(method, method)


def estimators_in(record: Mapping[str, Any]) -> tuple[str, ...]:
    """Every registered estimator but exhaustive whose evidence `record` (one seed's) holds."""
    return tuple(m for m in method_names() if m != "exhaustive" and get_method(m).in_record(record))
BUDGETS = tuple(b / 2 for b in range(2, 11))  # 1, 1.5, ..., 5
#: Targets of the ground-truth issue (regret in %, averaged over budgets).
TARGETS = {"tag": 2.0, "hoa": 1.0}
#: Optimal at budget 2 vs one all-task network, %: the bar of the issue "Grouping that pays off"
#: (`grouping.setting_checks` holds it with the setting's other checks).
TARGET_GAIN_AT_2 = SETTING_TARGETS["gain_at_2"]


# ---------------------------------------------------------------------------
# Collecting (training).


def collect(runner, settings: MethodSettings, methods: Sequence[str] | None = None) -> dict[str, Any]:
    """Trains (or reads back from the store) the evidence of `methods` (default: every registered
    method, exhaustive first) for one seed: `Method.collect` of each, merged into one record."""
    names = list(method_names()) if methods is None else list(methods)
    for name in names:
        get_method(name)  # unknown names fail before any training
    if "exhaustive" in names:
        names.remove("exhaustive")
        names.insert(0, "exhaustive")
    record: dict[str, Any] = {"seconds": {}}
    for name in names:
        method = get_method(name)
        start = len(runner.log)
        evidence = method.collect(runner, settings)
        record["seconds"][name] = math.fsum(e["seconds"] for e in runner.log[start:])
        record.update(evidence)
    return record


def merge(gt: dict[str, Any], seed: str, evidence: Mapping[str, Any]) -> None:
    """Adds one seed's `evidence` (a `collect` of some methods) to a ground-truth record in place:
    its keys replace the same keys of the seed's record, its seconds are added to the seed's,
    everything else is kept."""
    record = gt["runs"].setdefault(str(seed), {"seconds": {}})
    for key, value in evidence.items():
        if key == "seconds":
            record.setdefault("seconds", {}).update(value)
        else:
            record[key] = value


# ---------------------------------------------------------------------------
# Balancing: the all-task network and the optimal choices' multi-task networks trained with each
# method of mtl.balancing (grouping.balanced: grouping, balancing, or both).


def both_networks(record: Mapping[str, Any], names: Sequence[str], budgets: Sequence[float] = BUDGETS,
                  objective: str | Objective = DEFAULT_OBJECTIVE) -> list[NetSpec]:
    """The distinct multi-task networks of optimal's choices (nominal costs) at `budgets`: what the
    "both" rows train with each balancing method."""
    budgets, _ = split_budgets(list(budgets), 1.0)
    return multitask_networks(choices(record, names, budgets, objective, estimators=())["optimal"])


# ---------------------------------------------------------------------------
# Evaluating (no training).


def choices(record: Mapping[str, Any], names: Sequence[str], budgets: Sequence[float],
            objective: str | Objective = DEFAULT_OBJECTIVE,
            estimators: Sequence[str] | None = None, network_costs: CostTable | None = None) -> dict[str, list[Choice]]:
    """method -> its choice at each budget: the estimate rebuilt from the record, chosen on by `choose`
    at `network_costs` (None: nominal), for optimal and `estimators` (default: every estimator the record
    holds, `estimators_in`)."""
    estimators = estimators_in(record) if estimators is None else tuple(estimators)
    return {m: choose(get_method(registered(m)).from_record(record, names), budgets, objective, network_costs)
            for m in ("optimal",) + estimators}


def pairwise_transfer(losses: Mapping[str, Mapping[str, float]], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """t -> u -> task t's change (%) in the full-size pair network {t,u} against t's full-size single."""
    return {t: {u: change_percent({t: losses[network_label(tuple(x for x in names if x in (t, u)))][t]},
                                  {t: losses[network_label((t,))][t]})[t]
                for u in names if u != t} for t in names}


def evaluate_seed(record: Mapping[str, Any], names: Sequence[str], budgets: Sequence[float],
                  objective: str | Objective = DEFAULT_OBJECTIVE,
                  estimators: Sequence[str] | None = None, network_costs: CostTable | None = None,
                  balanced: Sequence[str] = (), both: Sequence[str] = ()) -> dict[str, Any]:
    """Test totals of every method (`choices`) and baseline at every budget for one seed's record
    (and of the all-task network trained with each of the `balanced` methods, `balanced_rows`, and of
    optimal's choices with their multi-task networks trained with each of the `both` methods, `both_rows`).
    Regret is None where a total is."""
    obj = get_objective(objective)
    test = record["test"]
    reference = obj.reference(test, names)
    chosen = choices(record, names, budgets, obj, estimators, network_costs)
    methods = tuple(chosen)
    totals: dict[str, list[float | None]] = {m: [score(c.specs, test, names, obj, reference) for c in chosen[m]]
                                             for m in methods}
    base = [baseline_totals(baselines(names, b, network_costs), test, names, obj, reference) for b in budgets]
    for key, column in (("all_in_one", "all_in_one"), ("independent", "one_per_task"),
                        ("random_mean", "random_mean"), ("random_worst", "random_worst")):
        totals[key] = [row[column] for row in base]
    totals.update(balanced_rows(record, names, budgets, obj, reference, balanced))
    totals.update(both_rows(record, names, chosen["optimal"], obj, reference, both))
    regret = {m: [None if totals[m][i] is None else 100 * (totals[m][i] - totals["optimal"][i]) / totals["optimal"][i]
                  for i in range(len(budgets))]
              for m in methods + ("random_mean", "random_worst") + tuple(BALANCED + b for b in balanced)
              + tuple(BOTH + b for b in both)}
    changes = {m: [task_changes(per_task_losses(c.specs, test, names), test, names) for c in chosen[m]]
               for m in methods}
    return {"totals": totals, "regret_percent": regret, "choices": {m: [c.labels for c in chosen[m]] for m in methods},
            "task_change_percent": changes, "pairwise_transfer_percent": pairwise_transfer(test, names)}


def _stats(values: Sequence[float | None]) -> dict[str, float] | None:
    if any(v is None for v in values):
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}


def _changes_over_seeds(rows: Sequence[Mapping[str, Mapping[str, float] | None]]) -> dict[str, Any]:
    """{"vs_all_in_one"|"vs_independent": {task: stats over seeds} or None} from one row per seed."""
    out: dict[str, Any] = {}
    for key in rows[0]:
        if any(r[key] is None for r in rows):
            out[key] = None
        else:
            out[key] = {t: _stats([r[key][t] for r in rows]) for t in rows[0][key]}
    return out


def evaluate(gt: Mapping[str, Any], budgets: Sequence[float] = BUDGETS, costs: Mapping[str, float] | None = None,
             objective: str | Objective = DEFAULT_OBJECTIVE, network_costs: CostTable | None = None,
             seconds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The whole evaluation of a ground-truth record (`scripts/ground_truth.py`'s JSON), for optimal and
    every estimator whose evidence every seed's record holds. `costs`: each estimator's cost in all-task
    runs, and `seconds` its wall time, as benchmarks/estimation_cost.py measured them; `network_costs`: what the networks cost at inference, the budgets' unit (None: nominal). Budgets
    below the cheapest cover are left out and listed under ``infeasible_budgets``."""
    obj = get_objective(objective)
    names = tuple(gt["tasks"])
    minimum = 1.0 if network_costs is None else network_costs.minimum_budget()
    budgets, infeasible = split_budgets(list(budgets), minimum)
    seeds = sorted(gt["runs"], key=int)
    present = [set(estimators_in(gt["runs"][s])) for s in seeds]
    estimators = tuple(m for m in estimators_in(gt["runs"][seeds[0]]) if all(m in p for p in present))
    methods = ("optimal",) + estimators
    balanced = tuple(b for b in balancing_in(gt["runs"][seeds[0]]) if all(b in balancing_in(gt["runs"][s]) for s in seeds))
    both = tuple(b for b in both_in(gt["runs"][seeds[0]]) if all(b in both_in(gt["runs"][s]) for s in seeds))
    per_seed = {s: evaluate_seed(gt["runs"][s], names, budgets, obj, estimators, network_costs, balanced, both)
                for s in seeds}
    keys = list(next(iter(per_seed.values()))["totals"])
    totals = {k: [_stats([per_seed[s]["totals"][k][i] for s in seeds]) for i in range(len(budgets))] for k in keys}
    regret = {k: [_stats([per_seed[s]["regret_percent"][k][i] for s in seeds]) for i in range(len(budgets))]
              for k in per_seed[seeds[0]]["regret_percent"]}
    average = {}
    for k in regret:  # over every budget; none for a row some budget lacks (a "both" row in another cost view)
        if any(row is None for row in regret[k]):
            continue
        per = [float(np.mean(per_seed[s]["regret_percent"][k])) for s in seeds]
        st = _stats(per)
        st["within_seed_noise"] = abs(st["mean"]) <= st["std"]
        average[k] = st
    for k, rows in regret.items():
        for row in rows:
            if row is not None:
                row["within_seed_noise"] = abs(row["mean"]) <= row["std"]
    # Does the optimal choice depend on the seed?
    optimal_changes = [len({tuple(sorted(per_seed[s]["choices"]["optimal"][i])) for s in seeds}) > 1
                       for i in range(len(budgets))]
    # Each network's losses over seeds.
    networks = {}
    for label in gt["runs"][seeds[0]]["test"]:
        networks[label] = {split: {t: _stats([gt["runs"][s][split][label][t] for s in seeds])
                                   for t in gt["runs"][seeds[0]][split][label]}
                           for split in ("validation", "test")}
    mean_total_test = {k: [None if row is None else row["mean"] for row in totals[k]] for k in keys}
    # "Better than the random mean": a lower regret averaged over the budgets (at budgets
    # below 2 there is one grouping only, and every method ties with it).
    beats_random = {m: average[m]["mean"] < average["random_mean"]["mean"] for m in estimators}
    i2 = list(budgets).index(2.0) if 2.0 in budgets else None
    gain_at_2 = None
    if i2 is not None:
        gain_at_2 = 100 * (1 - mean_total_test["optimal"][i2] / mean_total_test["all_in_one"][i2])
    # Headroom: each task served by its best network of all (no budget) against one all-task network.
    headroom = []
    for seed in seeds:
        test = gt["runs"][seed]["test"]
        reference = obj.reference(test, names)
        oracle = score(list(test), test, names, obj, reference)
        headroom.append(100 * (1 - oracle / score([network_label(names)], test, names, obj, reference)))
    targets = {
        **{f"{m}_average_regret_at_most_{v:g}%": average[m]["mean"] <= v for m, v in TARGETS.items()
           if m in average},
        **{f"{m}_better_than_random_mean_on_average": beats_random[m] for m in estimators},
        f"optimal_at_budget_2_at_least_{TARGET_GAIN_AT_2:g}%_below_all_in_one": (gain_at_2 or 0) >= TARGET_GAIN_AT_2,
    }
    changes = {m: [_changes_over_seeds([per_seed[s]["task_change_percent"][m][i] for s in seeds])
                   for i in range(len(budgets))] for m in methods}
    transfer = {t: {u: _stats([per_seed[s]["pairwise_transfer_percent"][t][u] for s in seeds]) for u in names if u != t}
                for t in names}
    return {
        "tasks": list(names), "seeds": [int(s) for s in seeds], "budgets": list(budgets),
        "cost": network_costs.describe() if network_costs is not None else {"kind": "nominal", "minimum_budget": 1.0},
        "infeasible_budgets": [{"budget": b, "feasible": False, "minimum_budget": minimum} for b in infeasible],
        "network_costs": None if network_costs is None else {
            label: {**network_costs.costs(label), "budget_units": network_costs.cost(label)}
            for label in network_costs.raw},
        "estimators": list(estimators), "balanced": list(balanced), "both": list(both),
        "objective": obj.name, "totals": obj.quantity,
        "test_total": totals, "regret_percent": regret, "average_regret_percent": average,
        "optimal_choice_changes_between_seeds": optimal_changes,
        "optimal_gain_over_all_in_one_at_budget_2_percent": gain_at_2,
        "headroom_over_all_in_one_percent": _stats(headroom),
        "task_change_percent": changes,
        "pairwise_transfer_percent": {
            "definition": "100 (L(t|{t,u}) / L(t|{t}) - 1) on test losses: task t's change in the full-size pair "
                          "network with u against t's full-size single-task network; negative = u helps t",
            "orientation": "change[t][u]: t = the task whose loss changes (row), u = its partner (column)",
            "change": transfer},
        "relative_prediction_error": prediction_errors(gt["runs"], names, ("exhaustive",) + estimators),
        "cost_all_task_runs": dict(costs) if costs else None,
        "cost_seconds": dict(seconds) if seconds else None,
        "targets": targets, "per_seed": per_seed, "networks": networks,
    }


# ---------------------------------------------------------------------------
# Presenting.

LABELS = {"optimal": "optimal", "esa": "ESA", "hoa": "HOA", "tag": "TAG", "cs": "CS", "lookahead": "lookahead",
          "surrogate": "surrogate",
          "random_mean": "random (mean)", "random_worst": "random (worst)", "all_in_one": "one all-task network",
          "independent": "independent networks"}


def _estimators(ev: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(ev.get("estimators", ESTIMATORS))


def label(key: str) -> str:
    return balancing_label(key) or LABELS.get(key, key)


def _balancing_keys(ev: Mapping[str, Any]) -> tuple[str, ...]:
    """The balancing rows of an evaluation: each method's all-task network, then its "both" row."""
    return tuple(BALANCED + b for b in ev.get("balanced", ())) + tuple(BOTH + b for b in ev.get("both", ()))


def markdown(ev: Mapping[str, Any]) -> str:
    budgets = ev["budgets"]
    rows = ["| method | " + " | ".join(f"{b:g}" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets)]
    keys = ("optimal",) + _estimators(ev) + ("random_mean", "random_worst", "all_in_one", "independent") + \
        _balancing_keys(ev)
    for k in keys:
        cells = []
        for st in ev["test_total"][k]:
            cells.append("" if st is None else f"{st['mean']:.4f} ± {st['std']:.4f}")
        rows.append(f"| {label(k)} | " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, ev["seeds"]))
    what = "Total test loss" if ev.get("objective", "loss") == "loss" else \
        "Mean relative test loss (each task's test loss over its full-size single-task network's, mean over tasks)"
    unit = budget_unit(ev)
    infeasible = [f"{b['budget']:g}" for b in ev.get("infeasible_budgets", [])]
    out = [f"{what}, mean ± std over seeds {seeds}, by budget in {unit}:", "", *rows, ""]
    if infeasible:
        out += [f"Infeasible budgets (below the cheapest cover, {ev['cost']['minimum_budget']:.4g}): "
                f"{', '.join(infeasible)}.", ""]
    costs, seconds = ev.get("cost_all_task_runs") or {}, ev.get("cost_seconds") or {}
    errors = (ev.get("relative_prediction_error") or {}).get("errors", {})
    out += ["| estimator | mean regret vs optimal (%) | ± std over seeds | within seed noise | cost (all-task runs) "
            "| wall time (s) | prediction error (%) |", "|---|---|---|---|---|---|---|"]
    for m in _estimators(ev) + ("random_mean",) + _balancing_keys(ev):
        a = ev["average_regret_percent"].get(m)
        if a is None:  # a "both" row some budget of this view lacks
            continue
        cost, wall = costs.get(m), seconds.get(m)
        out.append(f"| {label(m)} | {a['mean']:+.2f} | {a['std']:.2f} | {'yes' if a['within_seed_noise'] else 'no'} | "
                   f"{'' if cost is None else f'{cost:.2f}'} | {'' if wall is None else f'{wall:.1f}'} | "
                   f"{_error_cell(errors.get(m))} |")
    if "exhaustive" in costs:
        out += ["", f"Optimal's evidence, exhaustive training, costs {costs['exhaustive']:.2f} all-task runs."]
    if errors:
        out += ["", "Prediction error: the median over (network of 2+ tasks, task) of |ln(predicted r / measured r)| "
                "x 100, r = the task's loss over its single-task loss, measured on test losses (mean ± std of the "
                f"per-seed medians; `grouping.prediction_error`). Predicting no effect of sharing (r = 1): "
                f"{_error_cell(errors.get(NO_EFFECT))}; exhaustive's validation losses: "
                f"{_error_cell(errors.get('exhaustive'))}."]
    changes = [f"{b:g}" for b, c in zip(budgets, ev["optimal_choice_changes_between_seeds"]) if c]
    out += ["", f"Optimal choice differs between seeds at budgets: {', '.join(changes) or 'none'}.",
            f"Optimal at budget 2 vs one all-task network: {ev['optimal_gain_over_all_in_one_at_budget_2_percent']:.1f}% lower "
            f"{'' if ev.get('objective', 'loss') == 'loss' else 'mean relative '}test loss. "
            f"Headroom (every task served by its best network of all {len(ev['networks'])}, no budget): "
            f"{ev['headroom_over_all_in_one_percent']['mean']:.1f}% (seeds {ev['headroom_over_all_in_one_percent']['min']:.1f} to "
            f"{ev['headroom_over_all_in_one_percent']['max']:.1f}%).",
            "", "Targets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in ev["targets"].items()), ""]
    if "task_change_percent" in ev:
        out += _change_tables(ev) + _transfer_table(ev)
    return "\n".join(out)


def _error_cell(st: Mapping[str, Any] | None) -> str:
    return "" if st is None else f"{100 * st['mean']:.2f} ± {100 * st['std']:.2f}"


def budget_unit(ev: Mapping[str, Any]) -> str:
    """The unit of an evaluation's budgets, in words (older evaluations: nominal)."""
    cost = ev.get("cost") or {"kind": "nominal"}
    return cost.get("unit") or "full-size networks (Standley's units; a half-size single-task network costs 0.5)"


def _cell(st: Mapping[str, float] | None) -> str:
    return "" if st is None else f"{st['mean']:+.1f} ± {st['std']:.1f}"


def _change_tables(ev: Mapping[str, Any], budget: float = 2.0) -> list[str]:
    """Each task's change (%) in every method's choice at `budget`, against the two references."""
    if budget not in ev["budgets"]:
        return []
    i, names = ev["budgets"].index(budget), ev["tasks"]
    out = []
    for key, against in (("vs_all_in_one", "one all-task network"),
                         ("vs_independent", "its independent full-size network")):
        out += [f"Each task's test-loss change (%) in the choice at budget {budget:g} [{budget_unit(ev)}] against {against} "
                "(mean ± std over seeds; negative = better):", "",
                "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for m in ("optimal",) + _estimators(ev):
            row = ev["task_change_percent"][m][i][key]
            out.append(f"| {label(m)} | " + " | ".join(_cell(row[t] if row else None) for t in names) + " |")
        out.append("")
    return out


def _transfer_table(ev: Mapping[str, Any]) -> list[str]:
    """Standley's pairwise table: task t's change (%) in the pair network {t,u} against t alone."""
    names, change = ev["tasks"], ev["pairwise_transfer_percent"]["change"]
    out = ["Pairwise transfer: the row task's test-loss change (%) in the full-size pair network with the column "
           "task, against the row task alone (mean ± std over seeds; negative = the partner helps):", "",
           "| task \\ partner | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for t in names:
        out.append(f"| {t} | " + " | ".join("" if u == t else _cell(change[t][u]) for u in names) + " |")
    return out + [""]


def plot(ev: Mapping[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = np.asarray(ev["budgets"])
    entries = 8 + len(_estimators(ev)) + len(_balancing_keys(ev))  # the legend's lines, at about 0.2 inch each
    wide = 3.4 if ev.get("both") else 0.0  # room for the "both" rows' longer legend labels
    fig, ax = plt.subplots(figsize=(8.6 + wide, max(4.5, 0.2 * entries + 1.0)))
    styles = {"optimal": ("k", "-", "o"), "esa": ("tab:orange", "-", "s"), "hoa": ("tab:green", "-", "^"),
              "tag": ("tab:blue", "-", "D"), "cs": ("tab:purple", "-", "v"),
              "lookahead": ("tab:cyan", "-", "P"), "surrogate": ("tab:olive", "-", "h"),
              "random_mean": ("tab:gray", "--", None), "random_worst": ("tab:gray", ":", None)}
    for k in ("optimal",) + _estimators(ev) + ("random_mean", "random_worst"):
        color, ls, marker = styles.get(k, (None, "-", "x"))
        st = ev["test_total"][k]
        mean = np.array([s["mean"] for s in st])
        std = np.array([s["std"] for s in st])
        ax.errorbar(budgets, mean, yerr=std, color=color, ls=ls, marker=marker, ms=4, capsize=2, label=label(k))
    for k, marker in (("all_in_one", "*"), ("independent", "X")):
        pts = [(b, s["mean"]) for b, s in zip(budgets, ev["test_total"][k]) if s is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, s=60, color="tab:red" if k == "all_in_one" else "tab:brown",
                       label=label(k), zorder=5)
    methods = list(dict.fromkeys([*ev.get("balanced", ()), *ev.get("both", ())]))  # one colour per balancing method
    for key in _balancing_keys(ev):  # the all-task network (dash-dot) and the optimal grouping (dashed), balanced
        st = ev["test_total"][key]
        both = key.startswith(BOTH)
        pts = [(x, s["mean"]) for x, s in zip(budgets, st) if s is not None]
        err = [s["std"] for s in st if s is not None]
        if pts:
            color = plt.cm.Dark2(methods.index(key.split(":", 1)[1]) % 8)
            ax.errorbar(*zip(*pts), yerr=err if both else None, ls="--" if both else "-.", lw=1.2 if both else 1,
                        marker="." if both else None, capsize=2, color=color, label=label(key))
    ax.set_xlabel(f"inference budget, in {budget_unit(ev)}", fontsize=8, wrap=True)
    ax.set_ylabel(("mean relative" if ev.get("objective", "loss") == "relative" else "total") + " test loss (lower is better)")
    ax.set_title("Choices of each method on " + ", ".join(ev["tasks"]))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

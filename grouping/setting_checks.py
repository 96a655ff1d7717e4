"""Does grouping pay off at a ground truth's setting? The checks of the issue "Grouping that pays off".

A ground truth can only judge estimators where the choice of networks
matters. `check_setting` reads a ground-truth evaluation
(`grouping.groundtruth.evaluate`, relative objective) and says, with the
numbers behind each verdict:

``gain_at_budget_2``     the optimal choice at budget 2 is at least
                         `TARGETS["gain_at_2"]` % below one all-task network
                         (mean over seeds);
``headroom``             every task served by its best network of all, no
                         budget, is at least `TARGETS["headroom"]` % below
                         one all-task network;
``a_pair_helps_each_other`` / ``a_pair_hurts_each_other``
                         for some pair {t, u}, both t's change next to u and
                         u's next to t (the pairwise transfer table, test
                         losses) have the same sign and exceed
                         `TARGETS["spread_factor"]` times their seed-to-seed
                         standard deviation;
``all_task_network_not_crippled``
                         for at least `TARGETS["all_task_beats_independent_on"]`
                         tasks the all-task network's test loss is below the
                         task's own full-size network's (mean over seeds);
``every_task_learns``    each task's full-size single-task test loss is at
                         most `TARGETS["learns_below_constant"]` times the
                         loss of the best constant prediction on the test
                         split (`constant_losses`): class frequencies for
                         cross-entropy, the per-channel median for L1.
                         Unchecked (None) when the record has no constants.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TARGETS = {
    "gain_at_2": 8.0,  # %, optimal at budget 2 below one all-task network
    "headroom": 12.0,  # %, best network per task below one all-task network
    "spread_factor": 3.0,  # a transfer counts when |mean| > this many seed standard deviations
    "all_task_beats_independent_on": 2,  # tasks
    "learns_below_constant": 0.8,  # single-task loss at most this fraction of the best constant's
}


def constant_loss(task, split: Mapping[str, np.ndarray]) -> float:
    """Test loss of the best constant prediction of `task` on a split (registry encodings).

    Cross-entropy: the entropy of the class frequencies of the valid (non-void)
    pixels. L1: the mean absolute deviation from the per-channel median, over
    the valid pixels when the task is masked."""
    import jax.numpy as jnp

    from tasks.registry import valid_mask

    y = np.asarray(task.decode(jnp.asarray(split[task.label])))
    if task.name == "seg":
        labels = y[y > 0]
        p = np.bincount(labels) / labels.size
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    mask = np.asarray(valid_mask({k: jnp.asarray(v) for k, v in split.items()})) if task.masked else None
    values = y[mask] if mask is not None else y.reshape(-1, *y.shape[3:])
    return float(np.abs(values - np.median(values, axis=0)).mean())


def constant_losses(tasks: Sequence, split: Mapping[str, np.ndarray]) -> dict[str, float]:
    """task name -> `constant_loss` on `split`."""
    return {t.name: constant_loss(t, split) for t in tasks}


def _pairs(change: Mapping[str, Mapping[str, Mapping[str, float]]], names: Sequence[str], sign: int,
           factor: float) -> list[dict[str, Any]]:
    out = []
    for t, u in itertools.combinations(names, 2):
        a, b = change[t][u], change[u][t]
        if all(sign * s["mean"] > 0 and abs(s["mean"]) > factor * s["std"] for s in (a, b)):
            out.append({"pair": [t, u], f"{t}_next_to_{u}": a["mean"], f"{u}_next_to_{t}": b["mean"],
                        "std": [a["std"], b["std"]]})
    return out


def check_setting(gt: Mapping[str, Any], ev: Mapping[str, Any],
                  constants: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The checks of the module docstring for a ground-truth record `gt` and its evaluation `ev`."""
    names = list(ev["tasks"])
    seeds = [str(s) for s in ev["seeds"]]
    factor = TARGETS["spread_factor"]
    change = ev["pairwise_transfer_percent"]["change"]
    # With one seed there is no spread to beat: the pair checks need two seeds at least.
    helps = _pairs(change, names, -1, factor) if len(seeds) > 1 else None
    hurts = _pairs(change, names, +1, factor) if len(seeds) > 1 else None
    all_key = "+".join(names)
    rel_all = {t: float(np.mean([gt["runs"][s]["test"][all_key][t] / gt["runs"][s]["test"][t][t] for s in seeds]))
               for t in names}
    single = {t: float(np.mean([gt["runs"][s]["test"][t][t] for s in seeds])) for t in names}
    learns = None if constants is None else {t: single[t] / constants[t] for t in names}
    gain = ev["optimal_gain_over_all_in_one_at_budget_2_percent"]
    headroom = ev["headroom_over_all_in_one_percent"]["mean"]
    checks = {
        "gain_at_budget_2": gain is not None and gain >= TARGETS["gain_at_2"],
        "headroom": headroom >= TARGETS["headroom"],
        "a_pair_helps_each_other": None if helps is None else bool(helps),
        "a_pair_hurts_each_other": None if hurts is None else bool(hurts),
        "all_task_network_not_crippled": sum(v < 1 for v in rel_all.values()) >= TARGETS["all_task_beats_independent_on"],
        "every_task_learns": None if learns is None else all(v <= TARGETS["learns_below_constant"] for v in learns.values()),
    }
    return {
        "objective": ev["objective"], "targets": dict(TARGETS), "checks": checks,
        "gain_at_budget_2_percent": gain, "headroom_percent": headroom,
        "pairs_helping_each_other": helps, "pairs_hurting_each_other": hurts,
        "all_task_relative_loss": rel_all, "single_task_test_loss": single,
        "constant_test_loss": None if constants is None else dict(constants),
        "single_over_constant": learns,
    }


def markdown(result: Mapping[str, Any]) -> str:
    """The checks as a few lines of Markdown."""
    t = result["targets"]
    verdict = {True: "met", False: "MISSED", None: "not checked"}
    c = result["checks"]
    lines = [
        f"Does grouping pay off at this setting ({result['objective']} objective)?",
        "",
        f"- optimal at budget 2 vs one all-task network: {result['gain_at_budget_2_percent']:.1f}% lower "
        f"(target {t['gain_at_2']:g}%): {verdict[c['gain_at_budget_2']]}",
        f"- headroom: {result['headroom_percent']:.1f}% (target {t['headroom']:g}%): {verdict[c['headroom']]}",
    ]
    for key, word in (("pairs_helping_each_other", "helps"), ("pairs_hurting_each_other", "hurts")):
        found = result[key]
        if found is None:
            lines.append(f"- a pair that {word} each other beyond the seed spread: not checked (one seed)")
            continue
        text = ", ".join("+".join(p["pair"]) for p in found) or "none"
        lines.append(f"- a pair that {word} each other by more than {t['spread_factor']:g}x the seed spread: {text}: "
                     f"{verdict[bool(found)]}")
    rel = result["all_task_relative_loss"]
    lines.append("- the all-task network's loss relative to each task's own network: "
                 + ", ".join(f"{k} {v:.3f}" for k, v in rel.items())
                 + f" (below 1 for at least {t['all_task_beats_independent_on']} tasks: "
                 f"{verdict[c['all_task_network_not_crippled']]})")
    if result["single_over_constant"] is not None:
        lines.append("- each task's single-task test loss over the best constant prediction's: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in result["single_over_constant"].items())
                     + f" (at most {t['learns_below_constant']:g}: {verdict[c['every_task_learns']]})")
    else:
        lines.append("- every task learns: not checked (the record has no constant-prediction losses)")
    return "\n".join(lines) + "\n"

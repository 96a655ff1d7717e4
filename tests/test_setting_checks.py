"""The checks of "does grouping pay off at this setting", on hand-made numbers."""

import math

import numpy as np

from grouping.setting_checks import TARGETS, check_setting, constant_loss, markdown
from tasks.registry import get_task


def test_constant_loss_of_l1_is_the_mean_deviation_from_the_median():
    # edges: 16-bit map scaled to [0, 1]; values 0, 0, 0.5, 1 -> median 0.25, mean |x - 0.25| = 0.375
    edges = np.array([0, 0, 32768, 65535], np.uint16).reshape(1, 2, 2)
    x = edges / 65535.0
    expect = np.abs(x - np.median(x)).mean()
    assert math.isclose(constant_loss(get_task("edges"), {"edge_texture": edges}), expect, rel_tol=1e-6)


def test_constant_loss_of_segmentation_is_the_entropy_of_the_classes_void_left_out():
    seg = np.array([[[0, 1], [1, 2]]], np.uint8)  # void, then classes 1, 1, 2
    p = np.array([2 / 3, 1 / 3])
    assert math.isclose(constant_loss(get_task("seg"), {"segment_semantic": seg}), -(p * np.log(p)).sum(), rel_tol=1e-6)


def _record(test_by_seed):
    return {"runs": {str(s): {"test": t} for s, t in enumerate(test_by_seed)}}


def _stats(values):
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def _evaluation(gt, names, gain, headroom):
    seeds = sorted(gt["runs"])
    change = {t: {u: _stats([100 * (gt["runs"][s]["test"]["+".join(sorted((t, u), key=names.index))][t]
                                    / gt["runs"][s]["test"][t][t] - 1) for s in seeds])
                  for u in names if u != t} for t in names}
    return {"tasks": names, "seeds": [int(s) for s in seeds], "objective": "relative",
            "pairwise_transfer_percent": {"change": change},
            "optimal_gain_over_all_in_one_at_budget_2_percent": gain,
            "headroom_over_all_in_one_percent": {"mean": headroom}}


def test_pairs_that_help_and_hurt_each_other_beyond_the_seed_spread():
    names = ["a", "b", "c"]
    seeds = []
    for noise in (0.0, 0.002, -0.002):
        seeds.append({
            "a": {"a": 1.0}, "b": {"b": 1.0}, "c": {"c": 1.0},
            "a+b": {"a": 0.9 + noise, "b": 0.8 - noise},  # help each other: -10%, -20%, spread 0.2%
            "a+c": {"a": 1.2 + noise, "c": 1.1 + noise},  # hurt each other: +20%, +10%
            "b+c": {"b": 0.9 + 10 * noise, "c": 1.3},  # b helped, c hurt: neither
            "a+b+c": {"a": 0.95, "b": 0.97, "c": 1.4},  # all-task better for a and b
        })
    gt = _record(seeds)
    result = check_setting(gt, _evaluation(gt, names, gain=9.0, headroom=11.0), {"a": 2.0, "b": 1.1, "c": 5.0})
    assert [p["pair"] for p in result["pairs_helping_each_other"]] == [["a", "b"]]
    assert [p["pair"] for p in result["pairs_hurting_each_other"]] == [["a", "c"]]
    c = result["checks"]
    assert c["gain_at_budget_2"] and not c["headroom"]  # 9 >= 8; 11 < 12
    assert c["a_pair_helps_each_other"] and c["a_pair_hurts_each_other"]
    assert c["all_task_network_not_crippled"]  # a 0.95, b 0.97 below 1
    assert math.isclose(result["single_over_constant"]["b"], 1 / 1.1)
    assert not c["every_task_learns"]  # b's single is 0.91 of its constant, above 0.8
    assert TARGETS["learns_below_constant"] == 0.8
    text = markdown(result)
    assert "a+b" in text and "MISSED" in text


def test_a_transfer_within_three_seed_spreads_does_not_count_and_no_constants_is_unchecked():
    names = ["a", "b"]
    seeds = [{"a": {"a": 1.0}, "b": {"b": 1.0}, "a+b": {"a": 0.98 + n, "b": 0.98 - n}} for n in (0.0, 0.01, -0.01)]
    gt = _record(seeds)
    result = check_setting(gt, _evaluation(gt, names, gain=1.0, headroom=2.0))
    assert result["pairs_helping_each_other"] == []  # -2% with a 1% standard deviation
    assert result["checks"]["every_task_learns"] is None
    assert "not checked" in markdown(result)


def test_with_one_seed_the_pair_checks_are_not_made():
    names = ["a", "b"]
    gt = _record([{"a": {"a": 1.0}, "b": {"b": 1.0}, "a+b": {"a": 0.5, "b": 0.5}}])
    ev = _evaluation(gt, names, gain=1.0, headroom=2.0)
    ev["pairwise_transfer_percent"]["change"] = {"a": {"b": {"mean": -50.0, "std": 0.0}},
                                                 "b": {"a": {"mean": -50.0, "std": 0.0}}}
    result = check_setting(gt, ev)
    assert result["checks"]["a_pair_helps_each_other"] is None and result["pairs_helping_each_other"] is None
    assert "not checked (one seed)" in markdown(result)

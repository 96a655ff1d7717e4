"""What find_groups shows a user (grouping.expectation, grouping.report): the expected total against the
baselines in the objective's units, the whole budget curve with the budgets asked for marked, and the
method's measured regret on the ground truth. No network is trained."""

from __future__ import annotations

import json

import numpy as np
import pytest

import grouping.affinity
import grouping.expectation
import grouping.lookahead
from grouping import choose as C
from grouping.expectation import curve_budgets, ground_truth_regret, trust_text
from grouping.figures import curve_series
from grouping.find_groups import Options, find_groups, setup
from grouping.objective import get_objective
from grouping.dataspec import DataSpec
from grouping.runner import NetSpec
from grouping.store import ResultsStore

NAMES = ("seg", "depth", "normals")
ZN = np.array([[1.0, 0.6, 0.3], [0.2, 1.0, 0.4], [0.1, -0.2, 1.0]])
SINGLE = {"seg": 0.5, "depth": 0.25, "normals": 0.125}
HALF = {"seg": 0.6, "depth": 0.3, "normals": 0.13}
TOGETHER = {"seg": 0.45, "depth": 0.26, "normals": 0.14}


@pytest.fixture
def stand_ins(no_training, monkeypatch, tmp_path):
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    monkeypatch.setattr(grouping.lookahead, "train_with_lookahead", lambda tasks, splits, cfg, **kw: {
        "lookahead": ZN, "normalised": ZN, "inner": ZN, "gram": ZN, "measurements": 3, "train_seconds": 1.0,
        "validation": {t: {"loss": v} for t, v in TOGETHER.items()},
        "test": {t: {"loss": v} for t, v in TOGETHER.items()}})
    monkeypatch.setattr(grouping.affinity, "train_with_affinity", lambda tasks, splits, cfg, **kw: {
        "tag": ZN, "cs": ZN, "train_seconds": 1.0})
    # A ground-truth evaluation of this "checkout": lookahead +0.5 ± 0.2 %, random +3 ± 1 %.
    root = tmp_path / "checkout"
    path = root / grouping.expectation.EVALUATION
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"tasks": ["a", "b"], "seeds": [0, 1, 2], "budgets": [1.0, 1.5, 5.0],
                                "objective": "relative", "average_regret_percent": {
                                    "optimal": {"mean": 0.0, "std": 0.0}, "lookahead": {"mean": 0.5, "std": 0.2},
                                    "random_mean": {"mean": 3.0, "std": 1.0}}}))
    monkeypatch.setattr(grouping.expectation, "repository_root", lambda: root)
    return tmp_path


def options(tmp_path, method, budgets=(2,), **kw):
    return Options(cost="nominal", tasks=",".join(NAMES), budgets=list(budgets), method=method,
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, batch_size=8, out=tmp_path / "run",
                   progress=False, **kw)


def fill_singles(tmp_path, opts):
    s = setup(opts)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        for spec in [NetSpec((t,), 0.5) for t in NAMES] + [NetSpec((t,)) for t in NAMES]:
            entry = {spec.tasks[0]: {"loss": (HALF if spec.half else SINGLE)[spec.tasks[0]]}}
            store.put(runner.settings_for(spec), {"validation": entry, "test": entry, "train_seconds": 0.1})


def test_curve_budgets_cover_1_to_n_and_the_budgets_asked_for():
    assert curve_budgets(NAMES, [2.0], 1.0) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert curve_budgets(NAMES, [2.2, 7], 1.0) == [1.0, 1.5, 2.0, 2.2, 2.5, 3.0, 7.0]
    assert curve_budgets(("a", "b", "c", "d", "e"), [2], 1.0)[-1] == 5.0


def test_the_report_answers_in_the_objective_s_units_over_the_whole_curve(stand_ins):
    from grouping.methods import get_method

    tmp_path = stand_ins
    opts = options(tmp_path, "lookahead")
    fill_singles(tmp_path, opts)
    printed = []
    report = find_groups(opts, echo=printed.append)
    curve = report["curve"]
    assert curve["budgets"] == [1.0, 1.5, 2.0, 2.5, 3.0] and curve["asked"] == [False, False, True, False, False]
    # The curve is what choose and the baselines give at every budget, on the method's predictions.
    s = setup(opts)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        est = get_method("lookahead").estimate(s.runner(opts, store), opts.method_settings)
    obj = get_objective("relative")
    losses = est.losses()
    reference = obj.reference(losses, NAMES)
    for i, ch in enumerate(C.choose(est, curve["budgets"], obj)):
        assert curve["method"][i] == pytest.approx(ch.predicted_total)
        assert curve["networks"][i] == ch.labels
        base = C.baseline_totals(C.baselines(NAMES, ch.budget), losses, NAMES, obj, reference)
        for key in ("all_in_one", "one_per_task", "random_mean"):
            assert curve[key][i] == (None if base[key] is None else pytest.approx(base[key]))
    assert curve["all_in_one"][0] == pytest.approx(np.mean([TOGETHER[t] / SINGLE[t] for t in NAMES]))
    assert curve["one_per_task"][0] is None and curve["one_per_task"][-1] == pytest.approx(1.0)
    # At the budget asked for: the expected total against each baseline, in %.
    sel = report["selections"][0]
    for key in ("all_in_one", "one_per_task", "random"):
        base = sel["baselines"][key]["predicted_total"]
        assert sel["expected_percent"][key] == pytest.approx(100 * (sel["predicted_total"] / base - 1))
    table = printed[-3]
    assert "budget 2 [full-size networks, nominal]: expected mean relative loss" in table and "one all-task network (" in table
    assert "independent networks (half size, " in table and "random groupings (" in table
    assert ("lookahead's choices at budgets 1 to 5 were on average +0.50% ± 0.20% (seed std) worse than the best "
            "possible choice") in table and "a random grouping: +3.00% ± 1.00%" in table
    assert report["trust"]["mean"] == 0.5 and report["trust"]["source"] == str(grouping.expectation.EVALUATION)
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## What to expect" in md and "- budget 2 [full-size networks, nominal]: expected mean relative loss" in md and "![curve](curve.png)" in md
    series = curve_series(report)
    assert series["lookahead (expected)"] == (curve["budgets"], curve["method"])
    assert series["independent networks (expected)"][0] == [1.5, 2.0, 2.5, 3.0]
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0


def test_a_method_without_predictions_says_so_and_draws_its_score(stand_ins):
    tmp_path = stand_ins
    report = find_groups(options(tmp_path, "tag", budgets=(1, 2)), echo=lambda line: None)
    curve = report["curve"]
    assert curve["budgets"] == [1.0, 1.5, 2.0, 2.5, 3.0] and curve["asked"] == [True, False, True, False, False]
    assert all(v is None for v in curve["method"]) and all(v is not None for v in curve["tag_score"])
    from grouping.report_text import format_table

    table = format_table(report)
    assert ("budget 2 [full-size networks, nominal]: tag has no losses read off its affinity (its run stored no "
            "all-task network's losses to read them from), so no expected mean relative loss (its TAG score: ") in table
    assert "tag has not been evaluated on the ground truth" in table
    assert "--methods tag" in table and "not a loss" in table
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0


def test_tag_s_losses_read_off_its_affinity_are_shown_as_such_over_the_whole_curve(stand_ins, monkeypatch):
    monkeypatch.setattr(grouping.affinity, "train_with_affinity", lambda tasks, splits, cfg, **kw: {
        "tag": ZN, "cs": ZN, "train_seconds": 1.0, "validation": {t: {"loss": v} for t, v in TOGETHER.items()},
        "test": {t: {"loss": v} for t, v in TOGETHER.items()}})
    printed = []
    report = find_groups(options(stand_ins, "tag", budgets=(1, 2)), echo=printed.append)
    curve = report["curve"]
    assert all(v is not None for v in curve["method"]) and all(v is not None for v in curve["tag_score"])
    assert curve["method"][0] == pytest.approx(curve["all_in_one"][0])  # budget 1: the all-task network
    table = printed[-3]
    assert "budget 2 [full-size networks, nominal]: expected mean relative loss" in table
    assert "(tag's prediction)" in table and "the cells are the losses read off its affinity, not chosen on" in table
    assert "TAG score" in table and "not a loss" not in table
    md = (stand_ins / "run" / "report.md").read_text()
    assert "read off tag's affinity; chosen by TAG's rule, not on these" in md


def test_no_evaluation_no_trust_line(tmp_path):
    assert ground_truth_regret("hoa", tmp_path / "none.json") is None
    assert trust_text("hoa", None) is None
    (tmp_path / "e.json").write_text(json.dumps({"tasks": ["a"], "seeds": [0], "budgets": [1.0],
                                                 "average_regret_percent": {"optimal": {"mean": 0.0, "std": 0.0}}}))
    exhaustive = trust_text("exhaustive", ground_truth_regret("exhaustive", tmp_path / "e.json"))
    assert "defines the optimum" in exhaustive

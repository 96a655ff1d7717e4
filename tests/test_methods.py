"""Estimators (grouping.methods) end to end on stores filled with known numbers: no network is trained.

HOA's prediction formula and the chosen networks against brute force; ESA's
shortened schedule; exhaustive with --verify; tag/cs through a stand-in for
the affinity training hook; the baselines; the registry.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

import grouping.affinity
from grouping import choose as C
from grouping.find_groups import VERIFY_RANDOM_SAMPLES, Options, find_groups, setup
from grouping.methods import MethodSettings, get_method, method_names
from grouping.objective import get_objective
from grouping.dataspec import DataSpec
from grouping.runner import NetSpec, candidate_specs
from grouping.selection import InfeasibleBudgetError, network_label, subsets_by_size
from grouping.selection_tag import SINGLETON_SCORE
from grouping.store import ResultsStore
from mtl.train import TrainConfig, learning_rate_schedule

TASKS = ("seg", "depth", "normals", "edges")




def options(tmp_path, method, tasks=TASKS, budgets=(1, 1.5, 2, 3), **kw):
    return Options(cost="nominal", tasks=",".join(tasks), budgets=list(budgets), method=method,
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, batch_size=8, out=tmp_path / "run",
                   progress=False, **kw)


def known_losses(specs, seed=0):
    """spec -> {task: (validation, test)}: distinct values in [0.1, 1)."""
    rng = random.Random(seed)
    return {s: {t: (rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0)) for t in s.tasks} for s in specs}


def fill(store, runner, table, steps=None):
    for spec, losses in table.items():
        store.put(runner.settings_for(spec, steps), {
            "validation": {t: {"loss": v} for t, (v, _) in losses.items()},
            "test": {t: {"loss": w} for t, (_, w) in losses.items()}, "train_seconds": 0.5})


def brute_force(candidates, tasks, budget):
    """Lowest total over every set of candidates within the budget covering the tasks (DFS with cost cut)."""
    cands = sorted(candidates, key=lambda nw: nw.cost)
    best = math.inf

    def rec(start, chosen, cost):
        nonlocal best
        if {t for nw in chosen for t in nw.tasks} >= set(tasks):
            best = min(best, sum(min(nw.losses[t] for nw in chosen if t in nw.tasks) for t in tasks))
        for i in range(start, len(cands)):
            if cost + cands[i].cost > budget + 1e-9:
                break
            rec(i + 1, chosen + [cands[i]], cost + cands[i].cost)

    rec(0, [], 0.0)
    return best


def test_hoa_predicts_from_pairs_and_chooses_optimally(tmp_path, no_training):
    opts = options(tmp_path, "hoa", objective="loss")
    s = setup(opts)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        trained_specs = candidate_specs(TASKS, max_size=2)
        assert len(trained_specs) == 4 + 4 + 6  # half singles, full singles, pairs
        assert get_method("hoa").cost(TASKS, 40, MethodSettings()).trainings == len(trained_specs)
        table = known_losses(trained_specs)
        fill(store, runner, table)
        est = get_method("hoa").estimate(runner, MethodSettings())
        choices = C.choose(est, opts.budgets, "loss")
    val = {(s.label, t): v for s, losses in table.items() for t, (v, _) in losses.items()}
    assert len(est.candidates) == 4 + 15
    for subset in subsets_by_size(TASKS):
        predicted = est.predicted(NetSpec(subset))
        for t in subset:
            if len(subset) <= 2:
                expected = val[(network_label(subset), t)]
            else:  # L(t|S) = mean over the other members u of L(t|{t,u})
                expected = np.mean([val[(network_label(tuple(x for x in TASKS if x in (t, u))), t)]
                                    for u in subset if u != t])
            assert predicted[t] == pytest.approx(expected, rel=1e-12)
    for t in TASKS:
        assert est.predicted(NetSpec((t,), 0.5)) == {t: val[(f"half:{t}", t)]}
    for choice in choices:
        assert choice.cost <= choice.budget + 1e-9
        assert {t for sp in choice.specs for t in sp.tasks} == set(TASKS)
        assert choice.predicted_total == pytest.approx(brute_force(est.candidates, TASKS, choice.budget))
        for t in TASKS:  # each task uses its best chosen network
            assert choice.predicted[choice.assignment[t]][t] == min(
                choice.predicted[sp.label][t] for sp in choice.specs if t in sp.tasks)
    # The report's pairwise matrix: A[u, t] = 1 - L(t|{t,u}) / L(t|{t}).
    i, j = TASKS.index("normals"), TASKS.index("seg")
    assert est.affinity[i, j] == pytest.approx(1 - val[("seg+normals", "seg")] / val[("seg", "seg")])
    assert np.all(np.diag(est.affinity) == 0)


def test_esa_selects_on_a_shortened_schedule(tmp_path, no_training):
    opts = options(tmp_path, "esa", tasks=TASKS[:3], budgets=(1, 2), esa_fraction=0.25)
    s = setup(opts)
    specs = candidate_specs(TASKS[:3])
    esa, settings = get_method("esa"), MethodSettings(esa_fraction=0.25)
    assert esa.cost(TASKS[:3], 40, settings).steps == 10
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        fill(store, runner, known_losses(specs, seed=1))  # full schedule only: not what ESA trains
        with pytest.raises(AssertionError, match="trained"):
            esa.estimate(runner, settings)
        early = known_losses(specs, seed=2)
        fill(store, runner, early, steps=10)  # 0.25 * 40 steps
        est = esa.estimate(runner, settings)
    assert {tr.steps for tr in est.trained} == {10}
    for spec, losses in early.items():
        assert est.predicted(spec) == {t: v for t, (v, _) in losses.items()}


def test_exhaustive_with_verify_reads_test_losses_of_the_chosen_networks(tmp_path, no_training):
    opts = options(tmp_path, "exhaustive", tasks=TASKS[:3], budgets=(1, 1.5, 2, 3), verify=True)
    s = setup(opts)
    specs = candidate_specs(TASKS[:3])
    table = known_losses(specs, seed=3)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        fill(store, s.runner(opts, store), table)
    report = find_groups(opts, echo=lambda line: None)
    assert report["run"]["timing"]["trained"] == 0
    test = {(sp.label, t): w for sp, losses in table.items() for t, (_, w) in losses.items()}

    def relative(losses):  # the default objective by hand: mean over tasks of L_t / L_t(alone, full size)
        return np.mean([losses[t] / test[(t, t)] for t in TASKS[:3]])

    assert report["objective"] == "relative"
    for sel in report["selections"]:
        m = sel["measured"]
        for t in TASKS[:3]:  # each task's test loss comes from the network chosen for it on validation
            assert m["chosen"]["test"][t] == test[(sel["assignment"][t], t)]
            assert m["chosen"]["change_percent"]["vs_independent"][t] == pytest.approx(
                100 * (m["chosen"]["test"][t] / test[(t, t)] - 1))
            assert m["chosen"]["change_percent"]["vs_all_in_one"][t] == pytest.approx(
                100 * (m["chosen"]["test"][t] / test[("seg+depth+normals", t)] - 1))
        assert m["chosen"]["test_total"] == pytest.approx(relative(m["chosen"]["test"]))
        assert m["all_in_one"]["test_total"] == pytest.approx(
            relative({t: test[("seg+depth+normals", t)] for t in TASKS[:3]}))
        if sel["budget"] < 1.5:  # three half-size networks cost 1.5
            assert m["one_per_task"] is None and sel["baselines"]["one_per_task"] is None
        else:
            prefix = "half:" if sel["budget"] < 3 else ""
            assert m["one_per_task"]["test_total"] == pytest.approx(relative({t: test[(prefix + t, t)] for t in TASKS[:3]}))
        assert len(m["random"]["samples"]) == min(VERIFY_RANDOM_SAMPLES, sel["baselines"]["random"]["count"])
    assert (tmp_path / "run" / "curve.png").exists()


Z = np.array([[0.0, 0.3, -0.2, 0.1],   # Z[source, target]
              [0.25, 0.0, -0.1, 0.05],
              [-0.3, -0.05, 0.0, 0.4],
              [0.2, 0.1, 0.35, 0.0]])
CS = np.array([[1.0, 0.5, -0.2, 0.1],
               [0.5, 1.0, 0.3, -0.4],
               [-0.2, 0.3, 1.0, 0.2],
               [0.1, -0.4, 0.2, 1.0]])


def tag_brute_force(m, k):
    """TAG: best mean over tasks of the best group score, over at most k groups covering every task.

    m[source, target]; a task's score in group G = mean over the other members u of m[u, task]."""
    groups = [g for r in range(1, 5) for g in itertools.combinations(range(4), r)]

    def score(g, t):
        return SINGLETON_SCORE if len(g) == 1 else np.mean([m[u, t] for u in g if u != t])

    best = -math.inf
    for r in range(1, k + 1):
        for combo in itertools.combinations(groups, r):
            if {t for g in combo for t in g} == set(range(4)):
                best = max(best, np.mean([max(score(g, t) for g in combo if t in g) for t in range(4)]))
    return best


@pytest.mark.parametrize("method, matrix", [("tag", Z), ("cs", CS)])
def test_tag_and_cs_group_by_the_averaged_matrix_and_reuse_the_run(tmp_path, no_training, monkeypatch, method, matrix):
    calls = []

    def hook(tasks, splits, cfg, *, every, checkpoint_dir, progress=True):
        calls.append((tuple(t.name for t in tasks), cfg.steps, every, Path(checkpoint_dir).parent.name))
        return {"tag": Z, "cs": CS, "names": [t.name for t in tasks], "train_seconds": 3.0}

    monkeypatch.setattr(grouping.affinity, "train_with_affinity", hook)
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    opts = options(tmp_path, method, budgets=(1, 1.5, 2, 3), every=5)
    report = find_groups(opts, echo=lambda line: None)
    assert calls == [(TASKS, 40, 5, "checkpoints")]
    for sel in report["selections"]:
        k = int(sel["budget"])
        assert len(sel["networks"]) <= k and sel["cost"] == len(sel["networks"]) <= sel["budget"]
        assert all(nw["width"] == "full" and nw["predicted"] is None for nw in sel["networks"])
        assert {t for nw in sel["networks"] for t in nw["tasks"]} == set(TASKS)
        assert sel["tag_score"] == pytest.approx(tag_brute_force(matrix, k))
        assert sel["predicted_total"] is None
    assert report["affinity"]["matrix"] == matrix.tolist() and report["affinity"]["tag_matrix"] == Z.tolist()
    # A rerun reuses the stored measurement: the hook must not run again.
    monkeypatch.setattr(grouping.affinity, "train_with_affinity", lambda *a, **k: pytest.fail("measured again"))
    again = find_groups(opts, echo=lambda line: None)
    assert [s["networks"] for s in again["selections"]] == [s["networks"] for s in report["selections"]]


def test_budgets_below_the_cheapest_cover_are_refused_before_training():
    assert get_method("hoa").minimum_budget(TASKS) == 1.0
    assert get_method("tag").minimum_budget(TASKS) == 1.0
    with pytest.raises(InfeasibleBudgetError, match="minimum feasible budget is 1") as info:
        get_method("exhaustive").check_budgets(TASKS, [2, 0.5])
    assert info.value.min_budget == 1.0
    with pytest.raises(InfeasibleBudgetError):
        get_method("tag").check_budgets(TASKS, [0.9])


def test_the_registry_names_every_method_and_refuses_others():
    assert method_names() == ("exhaustive", "esa", "hoa", "surrogate", "lookahead", "quick", "tag", "cs")
    assert all(get_method(m).name == m for m in method_names())
    with pytest.raises(ValueError, match="unknown method 'magic'; use one of exhaustive, esa, hoa, surrogate, "
                                         "lookahead, quick, tag, cs"):
        get_method("magic")
    n = len(TASKS)
    trainings = {m: get_method(m).cost(TASKS, 100, MethodSettings()).trainings for m in method_names()}
    assert trainings == {"exhaustive": 2 ** n - 1 + n, "esa": 2 ** n - 1 + n, "hoa": 2 * n + n * (n - 1) // 2,
                         "surrogate": 2 * n + 1 + 5, "lookahead": 2 * n + 1, "quick": 2 * n + 1, "tag": 1, "cs": 1}


def test_partitions_and_baselines():
    assert [len(C.partitions(TASKS, k)) for k in (1, 2, 3, 4)] == [1, 8, 14, 15]  # Stirling sums; Bell(4) = 15
    assert len(C.partitions(TASKS)) == 15 and len(C.partitions(TASKS[:3] + ("a", "b", "c"))) == 203
    names = TASKS[:3]
    table = known_losses(candidate_specs(names), seed=4)
    val = {(sp.label, t): v for sp, losses in table.items() for t, (v, _) in losses.items()}
    losses = {sp.label: {t: v for t, (v, _) in ls.items()} for sp, ls in table.items()}
    loss = get_objective("loss")
    b = C.baseline_totals(C.baselines(names, 2.0), losses, names, loss, None)
    assert b["all_in_one"] == pytest.approx(sum(val[("seg+depth+normals", t)] for t in names))
    assert b["one_per_task"] == pytest.approx(sum(val[(f"half:{t}", t)] for t in names))
    # Random groupings within 2 networks: {sdn}, {s|dn}, {d|sn}, {n|sd}, equally weighted.
    parts = [[("seg", "depth", "normals")], [("seg",), ("depth", "normals")], [("depth",), ("seg", "normals")],
             [("normals",), ("seg", "depth")]]
    totals = [sum(val[(network_label(g), t)] for g in p for t in g) for p in parts]
    assert len(C.baselines(names, 2.0).random) == 4
    assert b["random_mean"] == pytest.approx(np.mean(totals)) and b["random_worst"] == pytest.approx(max(totals))
    assert C.baselines(names, 1.0).one_per_task is None
    assert C.baselines(names, 3.0).one_per_task[0].size == 1.0


def test_tag_reports_the_all_task_network_it_trained_as_the_all_in_one_baseline(tmp_path, no_training, monkeypatch):
    val = {"seg": 0.5, "depth": 0.25, "normals": 0.125, "edges": 0.0625}
    monkeypatch.setattr(grouping.affinity, "train_with_affinity", lambda tasks, splits, cfg, **kw: {
        "tag": Z, "cs": CS, "train_seconds": 1.0,
        "validation": {t: {"loss": v} for t, v in val.items()}, "test": {t: {"loss": 1.0} for t in val}})
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    report = find_groups(options(tmp_path, "tag", budgets=(1, 2), objective="loss"), echo=lambda line: None)
    for sel in report["selections"]:
        assert sel["baselines"]["all_in_one"]["predicted_total"] == pytest.approx(sum(val.values()))
        assert sel["baselines"]["all_in_one"]["networks"][0]["predicted"] == val
    # Budget 1 allows only one grouping: all tasks together, so the random mean is that network too.
    assert report["selections"][0]["baselines"]["random"]["predicted_total"] == pytest.approx(sum(val.values()))
    # Every other network's losses are read off the matrix to first order (grouping.methods.tag):
    # L_t(S) = L_t(all) exp(kappa * the affinity onto t from the tasks S leaves out), kappa = the
    # schedule's summed learning rate; the relative objective's references are the singles read so.
    report = find_groups(options(tmp_path, "tag", budgets=(1, 2), overwrite=True), echo=lambda line: None)
    kappa = sum(float(learning_rate_schedule(TrainConfig(steps=40))(i)) for i in range(40))
    single = {t: v * math.exp(kappa * sum(Z[u, j] for u in range(4) if u != j))
              for j, (t, v) in enumerate(val.items())}
    assert report["objective"] == "relative" and report["reference"] == pytest.approx(single)
    for sel in report["selections"]:
        assert sel["baselines"]["all_in_one"]["predicted_total"] == pytest.approx(
            np.mean([val[t] / single[t] for t in val]))
        assert sel["baselines"]["one_per_task"] is None or sel["baselines"]["one_per_task"]["predicted_total"] == 1.0
        for nw in sel["networks"]:  # chosen by TAG's rule; their losses read off the matrix
            left_out = [u for u in range(4) if TASKS[u] not in nw["tasks"]]
            assert nw["predicted"] == pytest.approx(
                {t: val[t] * math.exp(kappa * sum(Z[u, TASKS.index(t)] for u in left_out)) for t in nw["tasks"]})
        per_task = {t: next(nw["predicted"][t] for nw in sel["networks"] if nw["label"] == sel["assignment"][t])
                    for t in TASKS}
        assert sel["predicted_total"] == pytest.approx(np.mean([per_task[t] / single[t] for t in TASKS]))
        assert sel["tag_score"] is not None


def test_another_setting_on_the_same_out_is_refused_naming_what_differs(tmp_path, no_training, monkeypatch):
    monkeypatch.setattr(grouping.affinity, "train_with_affinity",
                        lambda tasks, splits, cfg, **kw: {"tag": Z, "cs": CS, "train_seconds": 1.0})
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    find_groups(options(tmp_path, "tag", budgets=(1, 2)), echo=lambda line: None)
    find_groups(options(tmp_path, "tag", budgets=(1, 2)), echo=lambda line: None)  # the same settings: a rerun
    files = {name: (tmp_path / "run" / name).read_bytes()
             for name in ("report.json", "report.md", "affinity.png", "curve.png")}
    with pytest.raises(ValueError) as refused:
        find_groups(options(tmp_path, "cs", budgets=(1, 2, 3), seed=1), echo=lambda line: None)
    message = str(refused.value)
    for fragment in ("holds the report of other settings", "method tag -> cs", "budgets 1,2 -> 1,2,3",
                     "training.seed 0 -> 1", "another --out", "--overwrite"):
        assert fragment in message, message
    assert files == {name: (tmp_path / "run" / name).read_bytes() for name in files}  # nothing replaced
    report = find_groups(options(tmp_path, "cs", budgets=(1, 2, 3), seed=1, overwrite=True), echo=lambda line: None)
    assert report["method"] == "cs" and json.loads((tmp_path / "run" / "report.json").read_text())["method"] == "cs"


def test_the_report_shows_each_task_s_metric_in_the_networks_that_were_trained_in_full(tmp_path, no_training):
    from grouping.report_text import format_markdown, format_table

    names = TASKS[:3]
    metric = {"seg": "miou", "depth": "rmse_m", "normals": "mean_angle_deg"}
    opts = options(tmp_path, "exhaustive", tasks=names, budgets=(1, 3))
    s = setup(opts)
    specs = candidate_specs(names)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        for i, spec in enumerate(specs):  # metric values that name their network: 10 * index + task
            split = {t: {"loss": 0.1 + 0.01 * i, metric[t]: 10.0 * i + j} for j, t in enumerate(spec.tasks)}
            store.put(runner.settings_for(spec), {"validation": split, "test": split, "train_seconds": 0.5})
    report = find_groups(opts, echo=lambda line: None)
    index = {spec.label: i for i, spec in enumerate(specs)}
    assert report["metrics"]["seg"] == {"metric": "miou", "higher_is_better": True}
    for sel in report["selections"]:
        for t in names:
            entry = sel["task_metrics"][t]
            label = sel["assignment"][t]
            assert entry["network"] == label
            assert entry[metric[t]] == 10.0 * index[label] + specs[index[label]].tasks.index(t)
        together = sel["baselines"]["all_in_one"]["task_metrics"]
        assert {t: together[t]["network"] for t in names} == {t: "seg+depth+normals" for t in names}
    table, md = format_table(report), format_markdown(report)
    assert "test metric (network trained in full)" in table and "seg miou (higher = better)" in table
    assert "## Each task's test metric" in md and "depth (rmse_m, lower = better)" in md


def test_esa_reports_no_metrics_of_its_shortened_runs(tmp_path, no_training):
    opts = options(tmp_path, "esa", tasks=TASKS[:2], budgets=(1,), esa_fraction=0.25)
    s = setup(opts)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        for spec in candidate_specs(TASKS[:2]):
            split = {t: {"loss": 0.5, "miou": 0.5, "rmse_m": 0.5} for t in spec.tasks}
            store.put(runner.settings_for(spec, 10), {"validation": split, "test": split, "train_seconds": 0.5})
    report = find_groups(opts, echo=lambda line: None)
    assert report["selections"][0]["task_metrics"] is None  # 10 of 40 steps: not the network's metrics


def test_the_report_names_the_source_hash_and_the_git_commit(tmp_path, no_training, monkeypatch):
    import subprocess

    from grouping.report import git_commit

    monkeypatch.setattr(grouping.affinity, "train_with_affinity",
                        lambda tasks, splits, cfg, **kw: {"tag": Z, "cs": CS, "train_seconds": 1.0})
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    report = find_groups(options(tmp_path, "tag", budgets=(1, 2)), echo=lambda line: None)
    md = (tmp_path / "run" / "report.md").read_text()
    assert f"Code version: `{report['code_version']}`, a hash of the source that trains" in md
    assert "not a git commit" in md
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:  # a checkout: its commit, "-dirty" when tracked files changed
        assert report["run"]["git_commit"].removesuffix("-dirty") == head.stdout.strip()
        assert f"git commit `{head.stdout.strip()}`" in md
    assert git_commit(tmp_path) is None  # not a checkout
    # The affinity is defined as the numbers are: Z / η, η the peak learning rate (README: Z/η).
    assert "`Z[i,j] / η`" in md and "η = the peak learning rate" in md

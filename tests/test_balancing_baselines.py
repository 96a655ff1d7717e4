"""Balancing baselines: scripts/ground_truth.py --balancing on a tiny setting, and their evaluation rows."""

import importlib.util
import itertools
import json
import random
import sys
from pathlib import Path

import pytest

from grouping import groundtruth as G
from grouping.selection import network_label, subsets_by_size

REPO = Path(__file__).resolve().parents[1]
NAMES = ("seg", "depth", "normals")


def hand_record(seed: int) -> dict:
    """One seed's record with every candidate network's losses drawn at random (no training)."""
    rng = random.Random(seed)
    tasks_of = {network_label((t,), True): (t,) for t in NAMES} | {network_label(s): s for s in subsets_by_size(NAMES)}
    rec = {key: {lbl: {t: rng.uniform(0.1, 1.0) for t in tasks} for lbl, tasks in tasks_of.items()}
           for key in ("validation", "test", "early_validation")}
    rec["seconds"] = {"exhaustive": 10.0}
    return rec


def load_script():
    spec = importlib.util.spec_from_file_location("ground_truth_script", REPO / "scripts" / "ground_truth.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_balancing_rows_are_trained_once_merged_and_evaluated(tmp_path, monkeypatch):
    import mtl.ensemble
    import mtl.train

    script = load_script()
    out, run = tmp_path / "gt", tmp_path / "run"
    args = ["--tasks", ",".join(NAMES), "--seeds", "0", "--resolution", "32", "--counts", "16,8,8", "--steps", "4",
            "--batch-size", "4", "--out", str(out), "--run-dir", str(run), "--quiet", "--budgets", "1,2,3"]
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "argv", ["ground_truth.py", *args])
    gt = {"tasks": list(NAMES), "letters": ["s", "d", "n"],
          "settings": script.record_settings(script.build_parser().parse_args(args), NAMES),
          "runs": {"0": hand_record(0)}}
    out.mkdir()
    (out / "ground_truth.json").write_text(json.dumps(gt))

    trained = []
    real_one, real_many = mtl.train.train_and_evaluate, mtl.ensemble.train_ensemble_and_evaluate

    def one(tasks, splits, cfg, **kw):
        trained.append(("+".join(t.name for t in tasks), cfg.balance))
        return real_one(tasks, splits, cfg, **kw)

    def many(members, splits, cfg, **kw):
        trained.extend(("+".join(t.name for t in m), cfg.balance) for m in members)
        return real_many(members, splits, cfg, **kw)

    monkeypatch.setattr(mtl.train, "train_and_evaluate", one)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", many)
    # "both": the multi-task networks of the optimal choices at budgets 1, 2 and 3, found by brute force
    groups = brute_force_multitask(gt["runs"]["0"], (1.0, 2.0, 3.0))
    assert script.main(args + ["--balancing", "mgda"]) == 0
    assert sorted(trained) == sorted((x, "mgda") for x in groups)
    assert script.main(args + ["--balancing", "dwa,mgda"]) == 0  # mgda's networks are in the record
    assert sorted(trained) == sorted((x, m) for m in ("mgda", "dwa") for x in groups)
    trained_before = list(trained)

    merged = json.loads((out / "ground_truth.json").read_text())
    record = merged["runs"]["0"]
    for key, value in gt["runs"]["0"].items():  # the recorded runs are kept as they were
        if key != "seconds":
            assert record[key] == value
    assert sorted(record["balanced"]) == ["dwa", "mgda"]
    groups.discard(network_label(NAMES))  # the all-task network's losses are under "balanced"
    assert {m: set(nets) for m, nets in record["balanced_groups"].items()} == {m: groups for m in ("dwa", "mgda")}
    assert [m["balancing"] for m in merged["settings"]["merged"]] == [["mgda"], ["dwa", "mgda"]]

    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["balanced"] == ["mgda", "dwa"]
    test = record["test"]
    for m in ev["balanced"]:
        losses = record["balanced"][m]["test"]
        # The relative objective by hand: the mean over tasks of loss / the task's single-task loss.
        expected = sum(losses[t] / test[t][t] for t in NAMES) / len(NAMES)
        for i, st in enumerate(ev["test_total"]["balanced:" + m]):
            assert st["mean"] == pytest.approx(expected)
            optimal = ev["test_total"]["optimal"][i]["mean"]
            assert ev["regret_percent"]["balanced:" + m][i]["mean"] == pytest.approx(100 * (expected - optimal) / optimal)
    md = (out / "evaluation.md").read_text()
    assert "| one all-task network, mgda balancing |" in md
    assert ev["both"] == ["mgda", "dwa"]
    for m in ev["both"]:  # the optimal choice with its multi-task networks' losses those trained with m
        nets = {**{x: losses["test"] for x, losses in record["balanced_groups"][m].items()},
                network_label(NAMES): record["balanced"][m]["test"]}
        for i, choice in enumerate(ev["per_seed"]["0"]["choices"]["optimal"]):
            per_task = {t: min((nets.get(x) or test[x])[t] for x in choice if t in test[x]) for t in NAMES}
            expected_total = sum(per_task[t] / test[t][t] for t in NAMES) / len(NAMES)
            assert ev["test_total"]["both:" + m][i]["mean"] == pytest.approx(expected_total)
    assert "| optimal grouping, multi-task networks with mgda balancing (both) |" in md

    with pytest.raises(ValueError, match="unknown balancing method 'mgdaa'"):
        script.main(args + ["--balancing", "mgdaa"])
    with pytest.raises(ValueError, match="does not exist"):
        script.main([*args, "--out", str(tmp_path / "none"), "--balancing", "mgda"])
    assert trained == trained_before  # bad names train nothing


def test_balanced_rows_need_every_seed():
    rec0, rec1 = hand_record(0), hand_record(1)
    for rec in (rec0, rec1):
        rec["balanced"] = {"mgda": {"validation": rec["validation"]["seg+depth+normals"],
                                    "test": rec["test"]["seg+depth+normals"]}}
    rec0["balanced"]["pcgrad"] = rec0["balanced"]["mgda"]
    gt = {"tasks": list(NAMES), "runs": {"0": rec0, "1": rec1}}
    ev = G.evaluate(gt, (1.0, 2.0), objective="loss")
    assert ev["balanced"] == ["mgda"]  # pcgrad is only in seed 0
    # Trained on the all-task network's own losses, the mgda row equals the all-in-one baseline.
    for a, b in zip(ev["test_total"]["balanced:mgda"], ev["test_total"]["all_in_one"]):
        assert a["mean"] == pytest.approx(b["mean"])


def fake_report(tasks, cfg) -> dict:
    """A trained network's report without training: task t's loss is base_t (1 + 0.1 (tasks - 1)), times
    0.8 under mgda balancing."""
    base = {"seg": 1.0, "depth": 0.5}
    factor = (1 + 0.1 * (len(tasks) - 1)) * (0.8 if cfg.balance == "mgda" else 1.0)
    losses = {t.name: {"loss": base[t.name] * factor} for t in tasks}
    return {"validation": losses, "test": losses, "train_seconds": 0.0, "resumed_from": None,
            "final_train_loss": {}}


def test_find_groups_verify_adds_one_row_per_balancing_method(tmp_path, monkeypatch):
    import mtl.ensemble
    import mtl.train
    from grouping.find_groups import Options, find_groups
    from grouping.dataspec import DataSpec

    balances = []

    def one(tasks, splits, cfg, **kw):
        balances.append(cfg.balance)
        return fake_report(tasks, cfg)

    def many(members, splits, cfg, *, on_member=None, **kw):
        reports = [fake_report(m, cfg) for m in members]
        for i, r in enumerate(reports):
            on_member(i, r)
        return reports

    monkeypatch.setattr(mtl.train, "train_and_evaluate", one)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", many)
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    opts = Options(tasks="seg,depth", budgets=[1.0, 2.0], method="exhaustive",
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=4, batch_size=4, out=tmp_path / "run",
                   verify=True, balance=("mgda", "pcgrad"), progress=False)
    report = find_groups(opts, echo=lambda s: None)
    assert sorted(balances) == ["mgda", "pcgrad"]  # one all-task network each, nothing else balanced
    for sel in report["selections"]:
        rows = sel["measured"]["balanced"]
        # relative objective: mean over tasks of the balanced all-task loss over the task's single loss
        assert rows["mgda"]["test_total"] == pytest.approx(0.8 * 1.1)
        assert rows["pcgrad"]["test_total"] == pytest.approx(1.1)
        assert rows["pcgrad"]["test_total"] == pytest.approx(sel["measured"]["all_in_one"]["test_total"])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| 2 | mgda | 1.0000 | 0.8800 | 1.0000 |" in md  # singles chosen: both = the chosen networks

    with pytest.raises(ValueError, match="give --verify too"):
        find_groups(Options(tasks="seg,depth", budgets=[1.0], balance=("mgda",), out=tmp_path / "x"))
    with pytest.raises(ValueError, match="unknown balancing method 'mdga'"):
        find_groups(Options(tasks="seg,depth", budgets=[1.0], balance=("mdga",), verify=True, out=tmp_path / "y"))


# ---------------------------------------------------------------------------
# Grouping, balancing, or both: the optimal grouping with its multi-task networks balanced.

CANDIDATES = {network_label((t,), True): ((t,), 0.5) for t in NAMES} | {network_label(s): (s, 1.0)
                                                                        for s in subsets_by_size(NAMES)}


def brute_force_multitask(rec: dict, budgets) -> set[str]:
    """The multi-task networks of the best sets of candidates at `budgets`, by enumeration: every set within
    the budget (half-size 0.5, full-size 1) that covers every task, scored on the validation losses as the
    mean over tasks of the lowest loss over the task's full-size single's (the relative objective), the best
    set that has no network serving no task."""
    val = rec["validation"]
    out = set()
    for budget in budgets:
        best = None
        for r in range(1, len(CANDIDATES) + 1):
            for subset in itertools.combinations(CANDIDATES, r):
                if sum(CANDIDATES[x][1] for x in subset) > budget + 1e-9:
                    continue
                doing = {t: [x for x in subset if t in CANDIDATES[x][0]] for t in NAMES}
                if not all(doing.values()):
                    continue
                serving = {t: min(doing[t], key=lambda x: val[x][t]) for t in NAMES}
                if len(set(serving.values())) < len(subset):
                    continue
                total = sum(val[serving[t]][t] / val[t][t] for t in NAMES) / len(NAMES)
                if best is None or total < best[0]:
                    best = (total, subset)
        out |= {x for x in best[1] if len(CANDIDATES[x][0]) > 1}
    return out


@pytest.mark.parametrize("seed", range(6))
def test_both_networks_are_the_multitask_networks_of_the_optimal_choices(seed):
    rec = hand_record(seed)
    budgets = (1.0, 1.5, 2.0, 2.5, 3.0)
    got = [s.label for s in G.both_networks(rec, NAMES, budgets)]
    assert len(got) == len(set(got))  # each network once
    assert set(got) == brute_force_multitask(rec, budgets)
    assert network_label(NAMES) in got  # budget 1 buys the all-task network only


def explicit_record(both_seg: float = 1.8) -> dict:
    """A record whose optimal choices are known by hand (validation, reference 1 per task): budget 1 holds
    the all-task network only; at budget 2 {seg+depth, normals} scores (0.8 + 0.9 + 1) / 3 = 0.9, every other
    cover of cost 2 more (all + seg 1.067, all + seg+depth 0.933, seg+depth + depth+normals 0.933, ...)."""
    val = {"half:seg": {"seg": 1.5}, "half:depth": {"depth": 1.5}, "half:normals": {"normals": 1.5},
           "seg": {"seg": 1.0}, "depth": {"depth": 1.0}, "normals": {"normals": 1.0},
           "seg+depth": {"seg": 0.8, "depth": 0.9}, "seg+normals": {"seg": 1.2, "normals": 1.2},
           "depth+normals": {"depth": 1.3, "normals": 1.1},
           "seg+depth+normals": {"seg": 1.1, "depth": 1.1, "normals": 1.1}}
    test = {"half:seg": {"seg": 3.0}, "half:depth": {"depth": 6.0}, "half:normals": {"normals": 1.5},
            "seg": {"seg": 2.0}, "depth": {"depth": 4.0}, "normals": {"normals": 1.0},
            "seg+depth": {"seg": 1.9, "depth": 4.4}, "seg+normals": {"seg": 2.5, "normals": 1.2},
            "depth+normals": {"depth": 5.0, "normals": 1.1},
            "seg+depth+normals": {"seg": 2.4, "depth": 4.8, "normals": 1.3}}
    return {"validation": val, "test": test, "early_validation": val, "seconds": {"exhaustive": 10.0},
            "balanced": {"mgda": {"validation": val["seg+depth+normals"],
                                  "test": {"seg": 2.2, "depth": 4.0, "normals": 1.2}}},
            "balanced_groups": {"mgda": {"seg+depth": {"validation": val["seg+depth"],
                                                       "test": {"seg": both_seg, "depth": 4.2}}}}}


def test_the_both_row_is_the_objective_of_the_balanced_optimal_choice(tmp_path):
    rec0, rec1 = explicit_record(), explicit_record(both_seg=1.6)
    assert [s.label for s in G.both_networks(rec0, NAMES, (1.0, 2.0))] == ["seg+depth+normals", "seg+depth"]
    ev = G.evaluate({"tasks": list(NAMES), "runs": {"0": rec0, "1": rec1}}, (1.0, 2.0))
    assert ev["balanced"] == ["mgda"] and ev["both"] == ["mgda"]
    assert ev["per_seed"]["0"]["choices"]["optimal"] == [["seg+depth+normals"], ["normals", "seg+depth"]]
    # Relative objective by hand (test losses over the full-size singles' 2, 4, 1):
    # budget 1: the balanced all-task network, (2.2/2 + 4.0/4 + 1.2/1) / 3 = 1.1 (the balanced row's);
    # budget 2: seg+depth balanced and normals alone, (1.8/2 + 4.2/4 + 1) / 3 = 2.95 / 3 (seed 1: 2.85 / 3).
    optimal = [3.7 / 3, 3.05 / 3]
    for seed, both2 in (("0", 2.95 / 3), ("1", 2.85 / 3)):
        totals = ev["per_seed"][seed]["totals"]
        assert totals["optimal"] == pytest.approx(optimal)
        assert totals["both:mgda"] == pytest.approx([1.1, both2])
        assert totals["balanced:mgda"] == pytest.approx([1.1, 1.1])
        assert ev["per_seed"][seed]["regret_percent"]["both:mgda"] == pytest.approx(
            [100 * (1.1 - optimal[0]) / optimal[0], 100 * (both2 - optimal[1]) / optimal[1]])
    st = ev["test_total"]["both:mgda"][1]
    assert st["mean"] == pytest.approx(2.9 / 3) and st["std"] == pytest.approx(0.1 / 3 / 2 ** 0.5)
    md = G.markdown(ev)
    assert "| optimal grouping, multi-task networks with mgda balancing (both) | 1.1000 ± 0.0000 | 0.9667 ± 0.0236 |" in md
    G.plot(ev, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0

    # A choice with a multi-task network the record lacks balanced: no total at that budget.
    del rec1["balanced_groups"]["mgda"]["seg+depth"]
    seed1 = G.evaluate_seed(rec1, NAMES, (1.0, 2.0), both=("mgda",))
    assert seed1["totals"]["both:mgda"][0] == pytest.approx(1.1) and seed1["totals"]["both:mgda"][1] is None
    assert seed1["regret_percent"]["both:mgda"][1] is None
    ev = G.evaluate({"tasks": list(NAMES), "runs": {"0": rec0, "1": rec1}}, (1.0, 2.0))
    assert ev["test_total"]["both:mgda"][1] is None
    assert "both:mgda" not in ev["average_regret_percent"]  # not averaged over some budgets only
    assert "| optimal grouping, multi-task networks with mgda balancing (both) | 1.1000 ± 0.0000 |  |" in G.markdown(ev)
    # An older record without "both" networks: no both row, the rest as before.
    del rec1["balanced_groups"]
    ev = G.evaluate({"tasks": list(NAMES), "runs": {"0": rec0, "1": rec1}}, (1.0, 2.0))
    assert ev["both"] == [] and "both:mgda" not in ev["test_total"] and ev["balanced"] == ["mgda"]


def test_find_groups_verify_balance_reports_both(tmp_path, monkeypatch):
    """find_groups --verify --balance mgda on three tasks with hand-made losses: task t's loss is base_t times
    1.02 in seg+depth, 1 + 0.1 (k - 1) in another network of k tasks, 1.5 at half size and 0.8 under mgda.
    Chosen (relative objective, references 1): budget 1 the all-task network (1.2), budget 2 seg+depth and
    normals ((1.02 + 1.02 + 1) / 3), budget 3 the singles (1). Both: 0.96, (0.816 + 0.816 + 1) / 3, 1."""
    import mtl.ensemble
    import mtl.train
    from grouping.find_groups import Options, find_groups
    from grouping.figures import curve_series
    from grouping.dataspec import DataSpec

    base = {"seg": 1.0, "depth": 0.5, "normals": 2.0}
    balanced = []

    def report(tasks, cfg):
        names = tuple(t.name for t in tasks)
        factor = 1.02 if names == ("seg", "depth") else 1 + 0.1 * (len(names) - 1)
        factor *= (1.5 if cfg.size != 1.0 else 1.0) * (0.8 if cfg.balance == "mgda" else 1.0)
        if cfg.balance != "equal":
            balanced.append(names)
        losses = {t: {"loss": base[t] * factor} for t in names}
        return {"validation": losses, "test": losses, "train_seconds": 0.0, "resumed_from": None,
                "final_train_loss": {}}

    def many(members, splits, cfg, *, on_member=None, **kw):
        for i, m in enumerate(members):
            on_member(i, report(m, cfg))

    monkeypatch.setattr(mtl.train, "train_and_evaluate", lambda tasks, splits, cfg, **kw: report(tasks, cfg))
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", many)
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    lines = []
    opts = Options(tasks=",".join(NAMES), budgets=[1.0, 2.0, 3.0], method="exhaustive", cost="nominal",
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=4, batch_size=4, out=tmp_path / "run",
                   verify=True, balance=("mgda",), progress=False)
    out = find_groups(opts, echo=lines.append)
    assert sorted(balanced) == [("seg", "depth"), ("seg", "depth", "normals")]  # each balanced network once
    sels = out["selections"]
    assert [[nw["label"] for nw in sel["networks"]] for sel in sels] == [
        ["seg+depth+normals"], ["normals", "seg+depth"], ["seg", "depth", "normals"]]
    both = [sel["measured"]["both"]["mgda"] for sel in sels]
    assert [b["networks"] for b in both] == [["seg+depth+normals@mgda"], ["normals", "seg+depth@mgda"],
                                             ["seg", "depth", "normals"]]
    expected = [0.96, (0.816 + 0.816 + 1) / 3, 1.0]
    assert [b["test_total"] for b in both] == pytest.approx(expected)
    assert [sel["measured"]["chosen"]["test_total"] for sel in sels] == pytest.approx([1.2, 3.04 / 3, 1.0])
    assert both[1]["test"] == pytest.approx({"seg": 0.816, "depth": 0.408, "normals": 2.0})
    assert "  both: the chosen networks, multi-task ones with mgda balancing: measured test 0.8773" in "\n".join(lines)
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| 2 | mgda | 1.0133 | 0.9600 | 0.8773 |" in md
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    xs, ys = curve_series(saved)["both: exhaustive's networks, mgda balancing (measured test)"]
    assert xs == [1.0, 2.0, 3.0] and ys == pytest.approx(expected)

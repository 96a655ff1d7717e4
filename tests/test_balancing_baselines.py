"""Balancing baselines: scripts/ground_truth.py --balancing on a tiny setting, and their evaluation rows."""

import importlib.util
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
    real = mtl.train.train_and_evaluate

    def spy(tasks, splits, cfg, **kw):
        trained.append(cfg.balance)
        return real(tasks, splits, cfg, **kw)

    monkeypatch.setattr(mtl.train, "train_and_evaluate", spy)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", lambda *a, **k: pytest.fail("an ensemble"))
    assert script.main(args + ["--balancing", "mgda,pcgrad"]) == 0
    assert script.main(args + ["--balancing", "dwa,mgda"]) == 0  # mgda is read back from the store
    assert trained == ["mgda", "pcgrad", "dwa"]

    merged = json.loads((out / "ground_truth.json").read_text())
    record = merged["runs"]["0"]
    for key, value in gt["runs"]["0"].items():  # the recorded runs are kept as they were
        if key != "seconds":
            assert record[key] == value
    assert sorted(record["balanced"]) == ["dwa", "mgda", "pcgrad"]
    assert [m["balancing"] for m in merged["settings"]["merged"]] == [["mgda", "pcgrad"], ["dwa", "mgda"]]

    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["balanced"] == ["mgda", "pcgrad", "dwa"]
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

    with pytest.raises(ValueError, match="unknown balancing method 'mgdaa'"):
        script.main(args + ["--balancing", "mgdaa"])
    with pytest.raises(ValueError, match="does not exist"):
        script.main([*args, "--out", str(tmp_path / "none"), "--balancing", "mgda"])
    assert trained == ["mgda", "pcgrad", "dwa"]


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
    from grouping.runner import DataSpec

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
    assert "| 2 | mgda | 0.8800 |" in md

    with pytest.raises(ValueError, match="give --verify too"):
        find_groups(Options(tasks="seg,depth", budgets=[1.0], balance=("mgda",), out=tmp_path / "x"))
    with pytest.raises(ValueError, match="unknown balancing method 'mdga'"):
        find_groups(Options(tasks="seg,depth", budgets=[1.0], balance=("mdga",), verify=True, out=tmp_path / "y"))

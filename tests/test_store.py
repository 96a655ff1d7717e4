"""The results store: keys, reuse, failures, schema versions, code versions.

(Recovery after kill -9 of a real run is in test_find_groups.py.)"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from grouping.find_groups import Options, find_groups, setup
from grouping.dataspec import DataSpec
from grouping.runner import candidate_specs
import mtl.train as mtl_train
from grouping.store import SCHEMA_VERSION, ResultsStore, StoreError, canonical_json, code_version, key_hash

SETTINGS = {"kind": "network", "tasks": ["seg", "depth"], "train": {"steps": 20, "size": 1.0, "seed": 0},
            "data": {"source": "scenes", "resolution": 32}, "code_version": "abc"}
RESULT = {"validation": {"seg": {"loss": 1.5, "miou": float("nan")}, "depth": {"loss": 0.25}},
          "test": {"seg": {"loss": 1.6}, "depth": {"loss": 0.3}}, "train_seconds": 2.0}


def test_put_then_get_with_the_same_settings_in_any_key_order(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite") as store:
        assert store.get(SETTINGS) is None
        store.put(SETTINGS, RESULT)
    reordered = dict(reversed(list(SETTINGS.items())))
    assert canonical_json(reordered) == canonical_json(SETTINGS) and key_hash(reordered) == key_hash(SETTINGS)
    with ResultsStore(tmp_path / "s.sqlite") as store:  # reopened: the row persisted
        got = store.get(reordered)
        assert got["validation"]["depth"]["loss"] == 0.25
        assert got["validation"]["seg"]["miou"] is None  # an undefined metric is stored as null
        rows = list(store.rows())
    assert len(rows) == 1 and rows[0]["tasks"] == "seg+depth" and rows[0]["steps"] == 20
    assert rows[0]["settings"] == SETTINGS


@pytest.mark.parametrize("change", [
    {"code_version": "def"},
    {"tasks": ["depth", "seg"]},
    {"train": {"steps": 21, "size": 1.0, "seed": 0}},
    {"data": {"source": "scenes", "resolution": 64}},
])
def test_other_settings_or_code_versions_are_never_matched(tmp_path, change):
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.put(SETTINGS, RESULT)
        other = {**SETTINGS, **change}
        assert store.get(other) is None
        assert store.count_other({canonical_json(other)}) == 1
        assert store.count_other({canonical_json(SETTINGS)}) == 0


def test_a_failed_network_is_never_returned_and_a_later_success_replaces_it(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.put_failed(SETTINGS, "training diverged: the loss of task 'seg' became nan at step 7")
        assert store.get(SETTINGS) is None
        assert "step 7" in store.failure(SETTINGS)
        assert store.count("done") == 0 and store.count("failed") == 1
        store.put(SETTINGS, RESULT)
        assert store.get(SETTINGS) is not None and store.failure(SETTINGS) is None
        assert store.count("failed") == 0


def test_settings_must_be_finite(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite") as store, pytest.raises(StoreError):
        store.put({**SETTINGS, "lr": float("inf")}, RESULT)


def test_another_schema_version_or_another_file_is_refused(tmp_path):
    ResultsStore(tmp_path / "s.sqlite").close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute("UPDATE meta SET value=? WHERE name='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ResultsStore(tmp_path / "s.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a results store"):
        ResultsStore(tmp_path / "junk.sqlite")
    with sqlite3.connect(tmp_path / "other.sqlite") as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a results store"):
        ResultsStore(tmp_path / "other.sqlite")


def test_code_version_hashes_the_package_source(tmp_path):
    root = Path(__file__).resolve().parents[1]
    assert code_version() == code_version(root) and len(code_version()) == 12
    copy = tmp_path / "pkg"
    for folder in ("mtl", "tasks", "grouping"):
        shutil.copytree(root / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_version(copy) == code_version(root)
    (copy / "grouping" / "README.txt").write_text("not python")
    assert code_version(copy) == code_version(root)  # only .py files count
    # selection, estimators' predictions and reports change no trained number
    for name in ("grouping/report.py", "grouping/choose.py", "grouping/methods/base.py"):
        with open(copy / name, "a") as f:
            f.write("\n# an edit\n")
    assert code_version(copy) == code_version(root)
    before = code_version(copy)
    for name in ("mtl/train.py", "tasks/scenes/render.py", "grouping/affinity.py", "grouping/lookahead.py",
                 "grouping/runner.py", "grouping/dataspec.py"):
        with open(copy / name, "a") as f:
            f.write("\n# an edit\n")
        assert code_version(copy) != before, name
        before = code_version(copy)


def test_a_rerun_reuses_every_stored_network_and_trains_nothing(tmp_path, monkeypatch):
    """Fill the store as a finished hoa run would, then run: nothing may train or even load data."""
    import mtl.ensemble
    import mtl.train

    def no_training(*args, **kwargs):
        raise AssertionError("a network was trained again")

    monkeypatch.setattr(mtl.train, "train_and_evaluate", no_training)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", no_training)
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: pytest.fail("the data were loaded"))
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    opts = Options(cost="nominal", tasks="seg,depth,normals", budgets=[1, 2, 3], method="hoa",
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=20, out=tmp_path / "run", progress=False)
    s = setup(opts)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        specs = candidate_specs(s.names, max_size=2)
        for i, spec in enumerate(specs):
            losses = {t: {"loss": 0.1 * (i + 1) + 0.01 * j} for j, t in enumerate(spec.tasks)}
            store.put(runner.settings_for(spec), {"validation": losses, "test": losses, "train_seconds": 1.0})
        store.put({**runner.settings_for(specs[0]), "code_version": "old"}, RESULT)  # another version: ignored
    lines = []
    report = find_groups(opts, echo=lines.append)
    timing = report["run"]["timing"]
    assert timing["trained"] == 0 and timing["reused"] == len(specs) == 9
    assert any("1 finished job(s) from other settings or code versions" in line for line in lines)


def test_the_checkpoint_floor_applies_to_the_default_interval_only_and_is_not_in_the_key(tmp_path):
    from grouping.runner import DEFAULT_CHECKPOINT_MIN_SECONDS, Runner, train_settings

    data = DataSpec("scenes", 32, 0, (16, 8, 8))
    cfgs = {}
    for every in (None, 10):
        with ResultsStore(tmp_path / f"{every}.sqlite") as store:
            runner = Runner([], data, mtl_train.TrainConfig(steps=600), tmp_path, store, checkpoint_every=every,
                            data_settings={"source": "scenes"})
            cfgs[every] = runner._cfg(1.0, None)
    assert (cfgs[None].checkpoint_every, cfgs[None].checkpoint_min_seconds) == (150, DEFAULT_CHECKPOINT_MIN_SECONDS)
    assert (cfgs[10].checkpoint_every, cfgs[10].checkpoint_min_seconds) == (10, 0.0)
    assert train_settings(cfgs[None]) == train_settings(cfgs[10])  # how often to save changes no number


def test_a_shortened_schedule_is_evaluated_on_validation_only_and_never_serves_a_full_request(tmp_path, monkeypatch):
    from grouping.runner import NetSpec, Runner
    from tasks.registry import resolve_tasks

    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    data = DataSpec("scenes", 32, 0, (16, 8, 8))
    tasks = resolve_tasks("seg,depth")
    specs = [NetSpec(("seg",)), NetSpec(("depth",))]

    def runner(steps, store):
        return Runner(tasks, data, mtl_train.TrainConfig(steps=steps, batch_size=4, steps_per_call=5),
                      tmp_path / "run", store, progress=False)

    with ResultsStore(tmp_path / "store.sqlite") as store:
        long = runner(20, store)
        short = long.train(specs, steps=10)  # quick's and esa's kind: evidence only
        for tr in short.values():
            assert tr.test is None and tr.loss(tr.spec.tasks[0]) > 0
            with pytest.raises(ValueError, match=r"network seg|network depth"):
                tr.loss(tr.spec.tasks[0], "test")
        assert all(tr.reused for tr in long.train(specs, steps=10).values())
        full = long.train(specs)
        assert all(not tr.reused and tr.loss(tr.spec.tasks[0], "test") > 0 for tr in full.values())
        # A run whose full schedule is those 10 steps has the same store keys but needs the test split:
        # the validation-only rows are trained again, with both splits.
        again = runner(10, store).train(specs)
        assert all(not tr.reused and tr.test is not None for tr in again.values())
        assert all(tr.reused and tr.test is not None for tr in runner(10, store).train(specs).values())

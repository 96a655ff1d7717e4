"""The lookahead estimator (grouping.methods.lookahead): its calibration by hand, through the store with a
stand-in probe run, and the ground-truth record round trip. No network is trained."""

from __future__ import annotations

import numpy as np
import pytest

import grouping.lookahead
from grouping.methods import MethodSettings, get_method
from grouping.methods.lookahead import MIN_MEAN_AFFINITY, calibrated_candidates, partner_weights
from grouping.dataspec import DataSpec
from grouping.runner import NetSpec
from grouping.selection import network_label, subsets_by_size
from grouping.store import ResultsStore

NAMES = ("seg", "depth", "normals")
# Zn[source, target], diagonal 1: seg and depth help each other, normals barely feels anyone.
ZN = np.array([[1.0, 0.6, 0.02],
               [0.2, 1.0, 0.01],
               [0.1, -0.2, 1.0]])
SINGLE = {"seg": 0.5, "depth": 0.25, "normals": 0.125}
HALF = {"seg": 0.55, "depth": 0.3, "normals": 0.13}
TOGETHER = {"seg": 0.45, "depth": 0.26, "normals": 0.15}  # r_all: 0.9, 1.04, 1.2


def test_the_calibration_by_hand():
    w = partner_weights(NAMES, ZN, SINGLE, TOGETHER)
    # seg: effect -0.1 split over depth 0.2 and normals 0.1 (column seg: Zn[depth, seg], Zn[normals, seg]).
    assert w["seg"] == pytest.approx({"depth": -0.1 * 0.2 / 0.3, "normals": -0.1 * 0.1 / 0.3})
    # depth: +0.04 split over seg 0.6 and normals -0.2: normals' share has the other sign.
    assert w["depth"] == pytest.approx({"seg": 0.04 * 0.6 / 0.4, "normals": 0.04 * -0.2 / 0.4})
    # normals: mean partner affinity 0.015 < MIN_MEAN_AFFINITY: the partners share its +0.2 equally.
    assert (0.02 + 0.01) / 2 < MIN_MEAN_AFFINITY
    assert w["normals"] == pytest.approx({"seg": 0.1, "depth": 0.1})
    table = {nw.label: nw for nw in calibrated_candidates(NAMES, ZN, SINGLE, HALF, TOGETHER)}
    assert len(table) == 3 + 7
    for t in NAMES:  # measured networks as measured
        assert table[f"half:{t}"].losses == {t: HALF[t]} and table[f"half:{t}"].cost == 0.5
        assert table[t].losses == {t: SINGLE[t]}
    assert table["seg+depth+normals"].losses == TOGETHER
    for s in subsets_by_size(NAMES):
        if 2 <= len(s) < 3:
            for t in s:
                want = (1 + sum(w[t][u] for u in s if u != t)) * SINGLE[t]
                assert table[network_label(s)].losses[t] == pytest.approx(want, rel=1e-12)
    assert table["seg+depth"].losses["depth"] == pytest.approx((1 + 0.04 * 0.6 / 0.4) * 0.25)


def test_partners_of_equal_affinity_share_the_all_task_effect_equally():
    names = ("a", "b", "c", "d")
    zn = np.full((4, 4), 0.3) + 0.7 * np.eye(4)
    single = {t: 1.0 for t in names}
    together = {"a": 0.88, "b": 1.06, "c": 1.0, "d": 0.7}
    table = {nw.label: nw for nw in calibrated_candidates(names, zn, single, {t: 1.1 for t in names}, together)}
    for s in subsets_by_size(names):
        if 2 <= len(s) < 4:
            for t in s:
                assert table[network_label(s)].losses[t] == pytest.approx(1 + (together[t] - 1) * (len(s) - 1) / 3)


@pytest.fixture
def no_training(no_training, monkeypatch):  # conftest's, and no data either
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})


def test_the_estimate_through_the_store_and_the_record_round_trip(tmp_path, no_training, monkeypatch):
    from grouping.find_groups import Options, find_groups, setup

    calls = []

    def probe_run(tasks, splits, cfg, *, every, checkpoint_dir, progress=True):
        calls.append((tuple(t.name for t in tasks), cfg.steps, every))
        return {"lookahead": 0.01 * ZN, "normalised": ZN, "inner": ZN + 1, "gram": ZN + 2, "measurements": 4,
                "names": list(NAMES), "train_seconds": 1.0,
                "validation": {t: {"loss": v} for t, v in TOGETHER.items()},
                "test": {t: {"loss": 2 * v} for t, v in TOGETHER.items()}}

    monkeypatch.setattr(grouping.lookahead, "train_with_lookahead", probe_run)
    method = get_method("lookahead")
    settings = MethodSettings(every=5)
    assert method.cost(NAMES, 40, settings).trainings == 2 * 3 + 1
    opts = Options(cost="nominal", tasks=",".join(NAMES), budgets=[1, 1.5, 2, 3], method="lookahead", every=5,
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, batch_size=8, out=tmp_path / "run",
                   progress=False)
    s = setup(opts)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        validation = {}
        for spec in [NetSpec((t,), 0.5) for t in NAMES] + [NetSpec((t,)) for t in NAMES]:
            loss = (HALF if spec.half else SINGLE)[spec.tasks[0]]
            validation[spec.label] = {spec.tasks[0]: loss}
            entry = {spec.tasks[0]: {"loss": loss}}
            store.put(runner.settings_for(spec), {"validation": entry, "test": entry, "train_seconds": 0.1})
        assert len(method.store_keys(runner, settings)) == 7
        est = method.estimate(runner, settings)
        evidence = method.collect(runner, settings)  # the stored probe run: trains nothing more
    assert calls == [(NAMES, 40, 5)]
    want = calibrated_candidates(NAMES, ZN, SINGLE, HALF, TOGETHER)
    assert [(nw.label, nw.losses) for nw in est.candidates] == [(nw.label, nw.losses) for nw in want]
    assert evidence == method.record(est)
    entry = evidence["lookahead"]
    assert entry["normalised"] == ZN.tolist() and entry["validation"] == TOGETHER
    assert entry["test"] == {t: 2 * v for t, v in TOGETHER.items()} and entry["measurements"] == 4
    record = {"validation": validation, **evidence}
    assert method.in_record(record) and not method.in_record({"validation": validation})
    rebuilt = method.from_record(record, NAMES)
    assert [(nw.label, nw.losses) for nw in rebuilt.candidates] == [(nw.label, nw.losses) for nw in want]
    report = find_groups(opts, echo=lambda line: None)
    assert calls == [(NAMES, 40, 5)]  # the stored run was reused
    assert not report["groups_by_tag_rule"] and report["affinity"]["kind"] == "normalised-lookahead"
    assert report["affinity"]["matrix"] == ZN.tolist()
    assert report["reference"] == SINGLE
    for sel in report["selections"]:
        assert sel["predicted_total"] is not None
        assert sel["baselines"]["all_in_one"]["predicted_total"] == pytest.approx(
            np.mean([TOGETHER[t] / SINGLE[t] for t in NAMES]))

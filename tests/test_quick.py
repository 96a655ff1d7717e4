"""The quick estimator (grouping.methods.quick): the singles and the all-task network on a short
schedule, every other network by the equal-partner model, worked out by hand; the store; the record."""

from __future__ import annotations

import pytest

from grouping.methods import MethodSettings, get_method
from grouping.dataspec import DataSpec
from grouping.selection import network_label, subsets_by_size
from grouping.store import ResultsStore

NAMES = ("seg", "depth", "normals", "edges")
SINGLE = {"seg": 0.5, "depth": 0.25, "normals": 0.125, "edges": 2.0}
R_ALL = {"seg": 0.97, "depth": 0.91, "normals": 1.06, "edges": 1.39}  # L_t(all) / L_t({t})
HALF = {"seg": 0.52, "depth": 0.26, "normals": 0.13, "edges": 2.2}


def measured() -> dict:
    """What quick trains: half and full singles, the all-task network."""
    out = {network_label((t,)): {t: SINGLE[t]} for t in NAMES}
    out.update({network_label((t,), True): {t: HALF[t]} for t in NAMES})
    out[network_label(NAMES)] = {t: R_ALL[t] * SINGLE[t] for t in NAMES}
    return out


def test_every_partner_carries_an_equal_share_of_the_all_task_effect():
    est = get_method("quick")._estimate(NAMES, measured(), [])
    table = {nw.label: nw.losses for nw in est.candidates}
    assert len(table) == 2 ** 4 - 1 + 4
    # By hand: seg in {seg, depth}: 1 + (0.97 - 1) * 1/3 = 0.99, times 0.5.
    assert table["seg+depth"]["seg"] == pytest.approx(0.99 * 0.5, rel=1e-12)
    # edges in {seg, normals, edges}: 1 + 0.39 * 2/3 = 1.26, times 2.0.
    assert table["seg+normals+edges"]["edges"] == pytest.approx(1.26 * 2.0, rel=1e-12)
    for s in subsets_by_size(NAMES):
        for t in s:
            r = 1 + (R_ALL[t] - 1) * (len(s) - 1) / 3
            assert table[network_label(s)][t] == pytest.approx(r * SINGLE[t], rel=1e-12)
    for t in NAMES:  # measured networks as measured
        assert table[network_label((t,), True)] == {t: HALF[t]}


def test_it_trains_its_networks_with_the_short_schedule_and_the_record_rebuilds_it(tmp_path, no_training):
    from grouping.find_groups import Options, find_groups, setup

    quick, settings = get_method("quick"), MethodSettings(quick_fraction=0.25)
    opts = Options(tasks=",".join(NAMES), budgets=[1, 2, 3], method="quick", quick_fraction=0.25,
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, batch_size=8, out=tmp_path / "run",
                   progress=False, seed=4)
    s = setup(opts)
    table = measured()
    cost = quick.cost(NAMES, 40, settings)
    assert (cost.trainings, cost.steps) == (2 * 4 + 1, 10)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        for spec in quick.trained_specs(NAMES, 0, 4):
            losses = {t: {"loss": table[spec.label][t]} for t in spec.tasks}
            # the full schedule's entries are not what quick trains: only the 10-step ones are
            store.put(runner.settings_for(spec), {"validation": {t: {"loss": 9.0} for t in spec.tasks},
                                                  "test": losses, "train_seconds": 0.1})
            store.put(runner.settings_for(spec, 10), {"validation": losses, "test": losses, "train_seconds": 0.1})
        est = quick.estimate(runner, settings)
        record = quick.collect(runner, settings)
    assert {tr.steps for tr in est.trained} == {10}
    assert record["quick"]["fraction"] == 0.25 and record["quick"]["steps"] == 10
    rebuilt = quick.from_record(record, NAMES)
    assert [(nw.label, nw.losses) for nw in rebuilt.candidates] == [(nw.label, nw.losses) for nw in est.candidates]
    assert quick.in_record(record) and not quick.in_record({"validation": table})
    report = find_groups(opts, echo=lambda line: None)  # the whole run, from the store
    assert report["training"]["quick_fraction"] == 0.25
    assert all(sel["predicted_total"] is not None for sel in report["selections"])


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ValueError, match="--quick-fraction"):
        get_method("quick").validate(MethodSettings(quick_fraction=fraction))

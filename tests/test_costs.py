"""Inference costs (grouping/costs.py): FLOPs by hand, budget units, latency caching, and choices under real costs.

FLOPs: XLA's count of a single-task network against the convolution formula
by hand, and a multi-task network against the sum of its parts. Budgets:
the unit (the mean full-size single-task network) by hand. tag/cs and a
loss table under hand-made costs against brute force over every selection.
Latency: positive, stored, reused.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

import grouping.affinity
from grouping import choose as C
from grouping import costs as K
from grouping.find_groups import Options, find_groups
from grouping.methods import get_method
from grouping.dataspec import DataSpec
from grouping.runner import NetSpec, candidate_specs
from grouping.selection import network_label, subsets_by_size
from grouping.selection_tag import SINGLETON_SCORE
from grouping.store import ResultsStore


def same_taps(size: int, stride: int, k: int = 3) -> int:
    """Kernel taps that land inside the input, summed over the outputs of one axis ('SAME' padding)."""
    out = -(-size // stride)
    low = max((out - 1) * stride + k - size, 0) // 2
    return sum(1 for o in range(out) for j in range(k) if 0 <= o * stride - low + j < size)


def conv(c_in: int, c_out: int, size: int, stride: int = 1, activated: bool = True) -> float:
    """FLOPs of a 3x3 'SAME' convolution on a size x size input: 2 per multiply-add of every tap inside the
    input, 1 per output for the bias, 3 per output for the leaky ReLU (compare, multiply, select)."""
    out = -(-size // stride)
    return 2 * c_in * c_out * same_taps(size, stride) ** 2 + (4 if activated else 1) * c_out * out * out


def test_flops_of_a_single_task_network_by_hand():
    # depth (1 output channel) at 32x32, full size: encoder 32-64-128 (stride 2) and the 128 bottleneck;
    # decoder: conv to 4x16 at 4x4, depth-to-space, conv to 4x8 at 8x8, depth-to-space, head to 4x1 at 16x16.
    encoder = conv(3, 32, 32, 2) + conv(32, 64, 16, 2) + conv(64, 128, 8, 2) + conv(128, 128, 4)
    decoder = conv(128, 64, 4) + conv(16, 32, 8) + conv(8, 4, 16, activated=False)
    assert K.flops(("depth",), 1.0, 32) == encoder + decoder


def test_a_network_costs_the_sum_of_its_parts_as_xla_counts_them():
    from mtl.cost import network_flops
    from tasks.registry import resolve_tasks

    names = ("seg", "depth", "edges")
    for size in (1.0, 0.5):
        whole = network_flops(resolve_tasks(list(names)), size=size, resolution=32).total_flops
        assert K.flops(names, size, 32) == whole


def hand_table(raw_flops: dict[str, float], names) -> K.CostTable:
    """A cost table with hand-made FLOPs (nominal from the width), for choosing on hand-made instances."""
    specs = tuple(candidate_specs(names))
    raw = {s.label: {"nominal": K.nominal(s), "flops": raw_flops[s.label], "latency": None} for s in specs}
    return K.CostTable("flops", tuple(names), specs, raw, 32)


def test_budget_unit_is_the_mean_full_size_single_task_network():
    names = ("seg", "depth")
    table = K.cost_table(names, "flops", resolution=32)
    unit = (K.flops(("seg",), 1.0, 32) + K.flops(("depth",), 1.0, 32)) / 2
    assert table.unit == unit
    assert table.cost("seg+depth") == K.flops(names, 1.0, 32) / unit
    assert table.cost("half:seg") == K.flops(("seg",), 0.5, 32) / unit
    # The cheapest cover is the pair (one encoder): cheaper than two half-size singles here.
    assert table.minimum_budget() == pytest.approx(min(table.cost("seg+depth"),
                                                       table.cost("half:seg") + table.cost("half:depth")))
    nominal = K.cost_table(names, "nominal", resolution=32)
    assert nominal.unit == 1.0 and nominal.cost("half:seg") == 0.5 and nominal.cost("seg+depth") == 1.0
    with pytest.raises(ValueError, match="unknown cost kind 'watts'"):
        K.cost_table(names, "watts", resolution=32)


# Three tasks; by hand: encoder 10, each decoder 5, a half-size encoder 2 (so a full single 15 = the unit, a half
# single 7, a pair 20, the three-task network 25). Costs in units: single 1, half 7/15, pair 4/3, all 5/3.
NAMES = ("a", "b", "c")
FLOPS = {network_label(s): 10 + 5 * len(s) for s in subsets_by_size(NAMES)} | {f"half:{t}": 7 for t in NAMES}


def selections(costs: K.CostTable, budget: float, specs):
    """Every set of `specs` covering the tasks within the budget."""
    for r in range(1, len(specs) + 1):
        for combo in itertools.combinations(specs, r):
            if {t for s in combo for t in s.tasks} == set(NAMES) and \
                    math.fsum(C.network_cost(s, costs) for s in combo) <= budget + 1e-9:
                yield combo


def test_a_loss_table_chooses_differently_under_measured_costs_checked_by_brute_force():
    # Losses: the pair a+b helps both; c does best alone, worse at half size, worst with others.
    losses = {"a": {"a": 1.0}, "b": {"b": 1.0}, "c": {"c": 1.0}, "half:a": {"a": 1.2}, "half:b": {"b": 1.2},
              "half:c": {"c": 1.1}, "a+b": {"a": 0.7, "b": 0.7}, "a+c": {"a": 0.9, "c": 1.4},
              "b+c": {"b": 0.9, "c": 1.4}, "a+b+c": {"a": 0.8, "b": 0.8, "c": 1.5}}
    est = get_method("exhaustive").from_record({"validation": losses}, NAMES)
    flops = hand_table(FLOPS, NAMES)
    specs = candidate_specs(NAMES)
    for costs in (None, flops):
        for budget in (5 / 3, 2.0, 7 / 3, 3.0):
            if costs is None and budget < 1:
                continue
            (choice,) = C.choose(est, [budget], "loss", costs)
            best = min(math.fsum(min(losses[s.label][t] for s in combo if t in s.tasks) for t in NAMES)
                       for combo in selections(costs, budget, specs))
            assert choice.predicted_total == pytest.approx(best) and choice.cost <= budget + 1e-9
    # Budget 2: nominal buys a+b and c alone (2 networks, 2.4); in FLOPs those cost 20 + 15 = 35 > 30, so
    # a+b and half:c (27 FLOPs = 1.8 units, total 2.5).
    nominal = C.choose(est, [2.0], "loss")[0]
    measured = C.choose(est, [2.0], "loss", flops)[0]
    assert sorted(nominal.labels) == ["a+b", "c"] and nominal.predicted_total == pytest.approx(2.4)
    assert sorted(measured.labels) == ["a+b", "half:c"] and measured.cost == pytest.approx(27 / 15)


def test_tag_takes_a_half_size_network_when_that_is_what_the_budget_allows():
    # Affinity (source row, target column): a and b help each other; c helps nobody.
    m = np.array([[0.0, 0.5, -0.1], [0.4, 0.0, -0.2], [-0.3, -0.1, 0.0]])
    raw = dict(FLOPS, **{"a+b+c": 60})  # the three-task network made dear, so a group plus one task alone wins
    costs = hand_table(raw, NAMES)
    specs = [NetSpec(s) for s in subsets_by_size(NAMES)] + [NetSpec((t,), 0.5) for t in NAMES]

    def score(spec, t):
        return SINGLETON_SCORE if len(spec.tasks) == 1 else \
            np.mean([m[NAMES.index(u), NAMES.index(t)] for u in spec.tasks if u != t])

    for method in ("tag", "cs"):
        est = get_method(method).from_record({method: m.tolist()}, NAMES)
        for budget in (27 / 15, 2.0, 35 / 15, 3.0, 4.0):
            (choice,) = C.choose(est, [budget], "loss", costs)
            # Brute force: the highest mean best score; among those, the fewest half-size networks, then the cheapest.
            best = max(selections(costs, budget, specs), key=lambda combo: (
                round(np.mean([max(score(s, t) for s in combo if t in s.tasks) for t in NAMES]), 6),
                -sum(s.half for s in combo), -math.fsum(costs.cost(s) for s in combo)))
            assert sorted(choice.labels) == sorted(s.label for s in best), (method, budget)
            assert choice.cost <= budget + 1e-9
        assert sorted(C.choose(est, [2.0], "loss", costs)[0].labels) == ["a+b", "half:c"]
        assert sorted(C.choose(est, [35 / 15], "loss", costs)[0].labels) == ["a+b", "c"]  # c widened


def test_baselines_under_measured_costs():
    costs = hand_table(FLOPS, NAMES)
    # 1.5 units = 22.5 FLOPs: the three-task network (25) does not fit, three half singles (21) do.
    base = C.baselines(NAMES, 1.5, costs)
    assert base.all_in_one is None and base.random == []
    assert [s.label for s in base.one_per_task] == ["half:a", "half:b", "half:c"]
    base = C.baselines(NAMES, 2.0, costs)  # 30 FLOPs: the three-task network; a pair and a single cost 35
    assert [s.label for s in base.all_in_one] == ["a+b+c"] and base.random == [(("a", "b", "c"),)]
    base = C.baselines(NAMES, 7 / 3, costs)  # 35 FLOPs: also each pair with the third task alone
    assert sorted(map(len, base.random)) == [1, 2, 2, 2] and base.one_per_task[0].half
    base = C.baselines(NAMES, 3.0, costs)  # 45 FLOPs: the three full-size singles too
    assert len(base.random) == 5 and not base.one_per_task[0].half


def test_latency_is_positive_stored_and_reused(tmp_path, monkeypatch):
    spec = NetSpec(("depth",), 0.5)
    with ResultsStore(tmp_path / "store.sqlite") as store:
        first = K.latency(spec, 32, 2, store, repeats=3)
        assert first > 0
        row = store.get(K.latency_settings(spec, 32, 2, 3))
        assert row["seconds"] == first and len(row["samples"]) == 3 and all(t > 0 for t in row["samples"])
        monkeypatch.setattr(K, "measure_latency", lambda *a, **k: pytest.fail("measured again"))
        assert K.latency(spec, 32, 2, store, repeats=3) == first
    with ResultsStore(tmp_path / "store.sqlite") as store:  # a rerun reads it back
        assert K.latency(spec, 32, 2, store, repeats=3) == first


def test_a_latency_that_cannot_run_is_a_clear_error(monkeypatch):
    import mtl.model

    def out_of_memory(self, x):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.")

    monkeypatch.setattr(mtl.model.MultiTaskNet, "__call__", out_of_memory)
    with pytest.raises(K.LatencyError, match="could not measure the latency of network depth .*RESOURCE_EXHAUSTED.*"
                                             "lower --latency-batch"):
        K.measure_latency(("depth",), 1.0, 32, batch=4096, repeats=1)


Z = np.array([[0.0, 0.3, -0.2, 0.1], [0.25, 0.0, -0.1, 0.05], [-0.3, -0.05, 0.0, 0.4], [0.2, 0.1, 0.35, 0.0]])


def test_report_names_the_cost_and_every_network_s_costs(tmp_path, no_training, monkeypatch):
    names = ("seg", "depth", "normals", "edges")
    monkeypatch.setattr(grouping.affinity, "train_with_affinity", lambda tasks, splits, cfg, **kw: {
        "tag": Z, "cs": Z, "names": list(names), "train_seconds": 1.0})
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    opts = Options(tasks=",".join(names), budgets=[1.0, 2.0, 3.0], method="tag", cost="flops",
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, batch_size=8, out=tmp_path / "run",
                   progress=False)
    printed = []
    report = find_groups(opts, echo=printed.append)
    unit = np.mean([K.flops((t,), 1.0, 32) for t in names])
    assert report["cost"]["kind"] == "flops" and report["cost"]["unit_value"] == pytest.approx(unit)
    minimum = K.flops(names, 1.0, 32) / unit  # the all-task network is the cheapest cover
    assert report["cost"]["minimum_budget"] == pytest.approx(minimum) and 1 < minimum < 2
    assert report["infeasible_budgets"] == [{"budget": 1.0, "feasible": False, "minimum_budget": pytest.approx(minimum)}]
    assert [sel["budget"] for sel in report["selections"]] == [2.0, 3.0]
    assert len(report["candidates"]) == 2 ** 4 - 1 + 4
    named = [nw for sel in report["selections"] for nw in sel["networks"]] + report["candidates"] + [
        nw for sel in report["selections"] for key in ("all_in_one", "one_per_task")
        if sel["baselines"][key] for nw in sel["baselines"][key]["networks"]]
    for nw in named:
        size = nw["size"]
        assert nw["costs"] == {"nominal": 1.0 if size == 1 else 0.5,
                               "flops": pytest.approx(K.flops(nw["tasks"], size, 32)), "latency": None}
        assert nw["cost"] == pytest.approx(nw["costs"]["flops"] / unit)
    for sel in report["selections"]:
        assert sel["cost"] <= sel["budget"] + 1e-9
    assert any("budget 1 [full-size singles, FLOPs] is infeasible" in line for line in printed)
    curve = report["curve"]
    assert curve["budgets"][0] == pytest.approx(minimum) and curve["budgets"][-1] == 4.0
    assert (Path(opts.out) / "curve.png").stat().st_size > 0


def test_find_groups_under_latency_measures_once_and_reuses(tmp_path, no_training, monkeypatch):
    names = ("seg", "depth")
    z = np.array([[0.0, 0.2], [0.1, 0.0]])
    monkeypatch.setattr(grouping.affinity, "train_with_affinity", lambda tasks, splits, cfg, **kw: {
        "tag": z, "cs": z, "names": list(names), "train_seconds": 1.0})
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    opts = Options(tasks=",".join(names), budgets=[3.0], method="tag", cost="latency", latency_batch=2,
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, batch_size=8, out=tmp_path / "run",
                   progress=False)
    printed = []
    report = find_groups(opts, echo=printed.append)
    assert report["cost"]["kind"] == "latency" and report["cost"]["latency_batch"] == 2
    latencies = {c["label"]: c["costs"]["latency"] for c in report["candidates"]}
    assert len(latencies) == 5 and all(v > 0 for v in latencies.values())
    unit = (latencies["seg"] + latencies["depth"]) / 2
    assert all(c["cost"] == pytest.approx(c["costs"]["latency"] / unit) for c in report["candidates"])
    assert not any("other settings or code versions" in line for line in printed)
    monkeypatch.setattr(K, "measure_latency", lambda *a, **k: pytest.fail("measured again"))
    again = find_groups(opts, echo=lambda line: None)  # the rerun reads every latency from the store
    assert {c["label"]: c["costs"]["latency"] for c in again["candidates"]} == latencies

"""The relative objective (grouping.objective): totals by hand, and no choice depends on a task's units."""

from __future__ import annotations

import random

import numpy as np
import pytest

from grouping import groundtruth as G
from grouping.choose import baseline_totals, baselines, choose
from grouping.methods import get_method
from grouping.objective import get_objective, reference_losses, relative_table
from grouping.selection import Network, SelectionError, network_label, select_networks, subsets_by_size

# Two tasks: a alone 2.0, b alone 0.5 (the references); together a 1.0, b 0.6; half-size a 2.5, b 0.4.
HAND = [Network(("a",), 0.5, {"a": 2.5}, "half:a"), Network(("b",), 0.5, {"b": 0.4}, "half:b"),
        Network(("a",), 1.0, {"a": 2.0}), Network(("b",), 1.0, {"b": 0.5}),
        Network(("a", "b"), 1.0, {"a": 1.0, "b": 0.6})]


def losses_of(networks):
    return {nw.label: dict(nw.losses) for nw in networks}


def test_relative_totals_of_a_hand_made_table():
    reference = reference_losses(losses_of(HAND), ("a", "b"))
    assert reference == {"a": 2.0, "b": 0.5}
    table = {nw.label: nw.losses for nw in relative_table(HAND, reference)}
    assert table["a+b"] == pytest.approx({"a": 1.0 / 2.0 / 2, "b": 0.6 / 0.5 / 2})  # 0.25, 0.6
    assert table["half:b"] == pytest.approx({"b": 0.4 / 0.5 / 2})  # 0.4
    # Budget 1: only a+b fits with both tasks: (0.5 + 1.2) / 2 = 0.85 (half a + half b: (1.25 + 0.8) / 2).
    # Budget 1.5: a+b and half:b: (1.0/2 + 0.4/0.5) / 2 = 0.65; budget 2 can do no better.
    sels = select_networks(relative_table(HAND, reference), [1, 1.5, 2], tasks=("a", "b"))
    assert [s.total for s in sels] == pytest.approx([0.85, 0.65, 0.65])
    assert [sorted(nw.label for nw in s.networks) for s in sels] == [["a+b"], ["a+b", "half:b"], ["a+b", "half:b"]]
    relative, loss = get_objective("relative"), get_objective("loss")
    assert relative.total({"a": 1.0, "b": 0.4}, reference) == pytest.approx(0.65)
    assert loss.total({"a": 1.0, "b": 0.4}, None) == pytest.approx(1.4)
    assert relative.total({"a": 1.0, "b": 0.4}, None) is None  # no reference, no relative total


def test_a_table_without_a_single_task_network_or_with_a_zero_reference_is_refused():
    with pytest.raises(SelectionError, match="single-task network.*'b'"):
        reference_losses(losses_of(HAND[:3] + HAND[4:]), ("a", "b"))
    zero = HAND[:3] + [Network(("b",), 1.0, {"b": 0.0})] + HAND[4:]
    with pytest.raises(SelectionError, match="'b' is 0"):
        reference_losses(losses_of(zero), ("a", "b"))
    with pytest.raises(ValueError, match="unknown objective 'mean'; use one of relative, loss"):
        get_objective("mean")


TASKS = ("seg", "depth", "normals", "edges")
BUDGETS = [1, 1.5, 2, 2.5, 3, 3.5, 4]


def random_table(seed, names=TASKS):
    rng = random.Random(seed)
    out = [Network((t,), 0.5, {t: rng.uniform(0.1, 1)}, network_label((t,), True)) for t in names]
    return out + [Network(s, 1.0, {t: rng.uniform(0.1, 1) for t in s}) for s in subsets_by_size(names)]


def rescaled(networks, task, factor=1000.0):
    """The table with `task`'s losses in other units."""
    return [Network(nw.tasks, nw.cost, {t: v * factor if t == task else v for t, v in nw.losses.items()}, nw.label)
            for nw in networks]


def picked(selections):
    return [(sorted(nw.label for nw in s.networks), dict(s.assignment)) for s in selections]


@pytest.mark.parametrize("seed", range(4))
def test_the_selection_does_not_depend_on_a_tasks_units(seed):
    table = random_table(seed)
    relative = get_objective("relative")
    solve = lambda t: select_networks(relative.table(t, relative.reference(losses_of(t), TASKS)), BUDGETS, tasks=TASKS)
    before = solve(table)
    for task in TASKS:
        after = solve(rescaled(table, task))
        assert picked(after) == picked(before)
        assert [s.total for s in after] == pytest.approx([s.total for s in before], rel=1e-12)


def test_the_loss_objective_does_depend_on_units():
    """The check above has teeth: with Standley's sum, a task in other units takes over the choice."""
    table = random_table(0)
    changed = [task for task in TASKS
               if picked(select_networks(rescaled(table, task), BUDGETS, tasks=TASKS))
               != picked(select_networks(table, BUDGETS, tasks=TASKS))]
    assert changed


def test_find_groups_choice_and_baselines_do_not_depend_on_a_tasks_units():
    exhaustive = get_method("exhaustive")
    record = {"validation": losses_of(random_table(5))}
    est = exhaustive.from_record(record, TASKS)
    before = choose(est, BUDGETS)  # the default objective
    relative = get_objective("relative")
    for task in TASKS:
        other = exhaustive.from_record({"validation": losses_of(rescaled(random_table(5), task))}, TASKS)
        after = choose(other, BUDGETS)
        assert [(c.labels, c.assignment) for c in after] == [(c.labels, c.assignment) for c in before]
        assert [c.predicted_total for c in after] == pytest.approx([c.predicted_total for c in before], rel=1e-12)
        for b in BUDGETS:
            one = baseline_totals(baselines(TASKS, b), est.losses(), TASKS, relative,
                                  relative.reference(est.losses(), TASKS))
            two = baseline_totals(baselines(TASKS, b), other.losses(), TASKS, relative,
                                  relative.reference(other.losses(), TASKS))
            assert two == pytest.approx(one, rel=1e-12)


def random_record(seed):
    rng = np.random.default_rng(seed)
    rec = {key: losses_of(random_table(seed * 3 + i)) for i, key in enumerate(("validation", "test", "early_validation"))}
    for key in ("tag", "cs"):
        rec[key] = rng.uniform(-1, 1, (4, 4)).tolist()
    everything = network_label(TASKS)
    rec["affinity_run"] = {split: dict(rec[split][everything]) for split in ("validation", "test")}
    return rec


def rescaled_record(rec, task, factor=1000.0):
    out = dict(rec)
    for key in ("validation", "test", "early_validation"):
        out[key] = {label: {t: v * factor if t == task else v for t, v in row.items()} for label, row in rec[key].items()}
    out["affinity_run"] = {split: {t: v * factor if t == task else v for t, v in row.items()}
                           for split, row in rec["affinity_run"].items()}
    return out


@pytest.mark.parametrize("seed", range(2))
def test_the_ground_truth_evaluation_does_not_depend_on_a_tasks_units(seed):
    rec = random_record(seed)
    before = G.evaluate_seed(rec, TASKS, BUDGETS)  # the default objective
    for task in TASKS:
        after = G.evaluate_seed(rescaled_record(rec, task), TASKS, BUDGETS)
        assert after["choices"] == before["choices"]
        for key, values in before["totals"].items():
            assert after["totals"][key] == pytest.approx(values, rel=1e-12), key
        for t, row in before["pairwise_transfer_percent"].items():
            assert after["pairwise_transfer_percent"][t] == pytest.approx(row)


def test_the_ground_truth_evaluation_reports_relative_changes_by_hand():
    rec = random_record(3)
    ev = G.evaluate_seed(rec, TASKS, [1.0])
    test = rec["test"]
    every = network_label(TASKS)
    # Budget 1: every method picks the all-task network; its relative test total by hand.
    assert ev["totals"]["optimal"][0] == pytest.approx(np.mean([test[every][t] / test[t][t] for t in TASKS]))
    changes = ev["task_change_percent"]["optimal"][0]
    for t in TASKS:
        assert changes["vs_all_in_one"][t] == pytest.approx(0.0)
        assert changes["vs_independent"][t] == pytest.approx(100 * (test[every][t] / test[t][t] - 1))
    pair = ev["pairwise_transfer_percent"]
    assert pair["normals"]["seg"] == pytest.approx(100 * (test["seg+normals"]["normals"] / test["normals"]["normals"] - 1))
    assert set(pair["seg"]) == {"depth", "normals", "edges"}

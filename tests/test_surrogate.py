"""The surrogate estimator (grouping.methods.surrogate): its fit by hand and on tables its model
represents exactly, the seeded sample, the store, and the ground-truth record round trip."""

from __future__ import annotations

import numpy as np
import pytest

from grouping.methods import MethodSettings, get_method
from grouping.methods.surrogate import MIN_RELATIVE, RIDGE, draw_sample, fit_weights, surrogate_relative
from grouping.dataspec import DataSpec
from grouping.selection import network_label, subsets_by_size
from grouping.store import ResultsStore

NAMES = ("seg", "depth", "normals", "edges")


def additive_table(names, weights, single, half=None):
    """label -> {task: loss}: L_t(S) = (1 + sum_{u in S\\t} w[t][u]) L_t({t}) for every subset, and half singles."""
    out = {network_label(s): {t: (1 + sum(weights[t][u] for u in s if u != t)) * single[t] for t in s}
           for s in subsets_by_size(names)}
    for t in names:
        out[network_label((t,), True)] = {t: (half or {}).get(t, 1.2 * single[t])}
    return out


def random_weights(names, seed):
    rng = np.random.default_rng(seed)
    return {t: {u: float(rng.uniform(-0.15, 0.15)) for u in names if u != t} for t in names}


SINGLE = {"seg": 0.5, "depth": 0.25, "normals": 0.125, "edges": 2.0}


@pytest.mark.parametrize("seed", range(3))
def test_least_squares_on_every_subset_of_an_additive_table_reproduces_it(seed):
    w = random_weights(NAMES, seed)
    table = additive_table(NAMES, w, SINGLE)
    fitted = fit_weights(NAMES, table, ridge=0)
    for t in NAMES:
        assert fitted[t] == pytest.approx(w[t], abs=1e-12)
    for s in subsets_by_size(NAMES):
        for t in s:
            assert surrogate_relative(fitted, t, s) * SINGLE[t] == pytest.approx(table[network_label(s)][t], rel=1e-12)


def test_least_squares_from_a_determining_sample_predicts_the_unseen_networks():
    """Each task needs n - 1 = 3 independent rows: the pairs alone determine w (L(t|{t,u}) = (1 + w_tu) L_t)."""
    w = random_weights(NAMES, 7)
    table = additive_table(NAMES, w, SINGLE)
    pairs = {network_label(s): table[network_label(s)] for s in subsets_by_size(NAMES) if len(s) <= 2}
    fitted = fit_weights(NAMES, pairs, ridge=0)
    for s in subsets_by_size(NAMES):
        for t in s:
            assert surrogate_relative(fitted, t, s) * SINGLE[t] == pytest.approx(table[network_label(s)][t], rel=1e-12)


def test_the_ridge_by_hand_and_it_keeps_tables_where_every_partner_weighs_the_same():
    # Task a of (a, b, c): rows {a,b}: y = 0.1, {a,b,c}: y = 0.3 (networks of b and c only matter for b, c).
    names = ("a", "b", "c")
    losses = {"a": {"a": 1.0}, "b": {"b": 1.0}, "c": {"c": 1.0}, "a+b": {"a": 1.1, "b": 1.0},
              "a+b+c": {"a": 1.3, "b": 1.0, "c": 1.0}}
    w = fit_weights(names, losses)["a"]
    x, y = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([0.1, 0.3])
    c = (1 * 0.1 + 2 * 0.3) / (1 + 4)  # pooled: every partner the same weight
    want = np.linalg.solve(x.T @ x + RIDGE * np.eye(2), x.T @ y + RIDGE * c)
    assert [w["b"], w["c"]] == pytest.approx(want.tolist(), rel=1e-12)
    # A table where each task's partners weigh the same is the prior's own family: reproduced from any sample.
    equal = {t: {u: {"seg": -0.05, "depth": 0.02, "normals": 0.08, "edges": -0.1}[t] for u in NAMES if u != t}
             for t in NAMES}
    table = additive_table(NAMES, equal, SINGLE)
    sample = {label: table[label] for label in [network_label((t,)) for t in NAMES]
              + [network_label(NAMES), "seg+normals", "depth+normals+edges"]}
    fitted = fit_weights(NAMES, sample)
    for t in NAMES:
        assert fitted[t] == pytest.approx(equal[t], abs=1e-12)


def test_the_sample_is_seeded_uniform_and_never_a_single_or_everything():
    names = ("a", "b", "c", "d", "e")
    pool = [s for s in subsets_by_size(names) if 2 <= len(s) < 5]
    assert len(pool) == 25
    assert draw_sample(names, 5, 0) == draw_sample(names, 5, 0)
    assert draw_sample(names, 5, 0) != draw_sample(names, 5, 1)
    assert draw_sample(names, 30, 0) == pool and draw_sample(names, 0, 0) == []
    counts = dict.fromkeys(pool, 0)
    for seed in range(2000):
        sample = draw_sample(names, 5, seed)
        assert len(set(sample)) == 5 and all(s in counts for s in sample)
        for s in sample:
            counts[s] += 1
    assert min(counts.values()) > 0.8 * 2000 * 5 / 25 and max(counts.values()) < 1.2 * 2000 * 5 / 25




def test_the_estimate_trains_its_sample_predicts_the_rest_and_the_record_rebuilds_it(tmp_path, no_training):
    from grouping.find_groups import Options, find_groups, setup

    surrogate = get_method("surrogate")
    settings = MethodSettings(samples=3)
    opts = Options(cost="nominal", tasks=",".join(NAMES), budgets=[1, 2, 3], method="surrogate", samples=3,
                   data=DataSpec("scenes", 32, 0, (16, 8, 8)), steps=40, batch_size=8, out=tmp_path / "run",
                   progress=False, seed=4)
    s = setup(opts)
    w = random_weights(NAMES, 11)
    table = additive_table(NAMES, w, SINGLE)
    sample = draw_sample(NAMES, 3, 4)
    with ResultsStore(tmp_path / "run" / "store.sqlite") as store:
        runner = s.runner(opts, store)
        specs = surrogate.trained_specs(NAMES, 3, 4)
        assert [sp.tasks for sp in specs[2 * len(NAMES) + 1:]] == sample
        assert surrogate.cost(NAMES, 40, settings).trainings == len(specs) == 2 * 4 + 1 + 3
        for spec in specs:  # the store holds exactly the networks it trains
            losses = {t: {"loss": table[spec.label][t]} for t in spec.tasks}
            store.put(runner.settings_for(spec), {"validation": losses, "test": losses, "train_seconds": 0.1})
        est = surrogate.estimate(runner, settings)
        record = {"validation": table, **surrogate.collect(runner, settings)}
    trained = {sp.label for sp in specs}
    fitted = fit_weights(NAMES, {label: table[label] for label in trained if not label.startswith("half:")})
    for nw in est.candidates:
        for t in nw.tasks:
            if nw.label in trained:
                assert nw.losses[t] == table[nw.label][t]
            else:
                r = max(MIN_RELATIVE, surrogate_relative(fitted, t, nw.tasks))
                assert nw.losses[t] == pytest.approx(r * SINGLE[t], rel=1e-12)
    assert record["surrogate"] == {"samples": 3, "seed": 4, "sample": [network_label(x) for x in sample]}
    assert surrogate.record(est) == {"surrogate": record["surrogate"]}
    rebuilt = surrogate.from_record(record, NAMES)
    assert [(nw.label, nw.losses) for nw in rebuilt.candidates] == [(nw.label, nw.losses) for nw in est.candidates]
    assert surrogate.in_record(record) and not surrogate.in_record({"validation": table})
    report = find_groups(opts, echo=lambda line: None)  # the whole run, from the store
    assert report["training"]["surrogate_samples"] == 3
    assert all(sel["predicted_total"] is not None for sel in report["selections"])


def test_negative_samples_are_refused():
    with pytest.raises(ValueError, match="--surrogate-samples"):
        get_method("surrogate").validate(MethodSettings(samples=-1))

"""tag/cs's losses read off the affinity (grouping.methods.tag), and how predicted losses are judged
(grouping.prediction_error), against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grouping.expectation import trust_text
from grouping.methods import get_method
from grouping.methods.tag import MAX_LOG_CHANGE, first_order_losses, rate_matrix
from grouping.prediction_error import NO_EFFECT, log_errors, prediction_errors
from mtl.train import TrainConfig, learning_rate_schedule, learning_rate_sum

NAMES = ("a", "b", "c")
RATES = np.array([[0.1, 0.2, 0.0],    # RATES[source, target]
                  [0.05, 0.3, -0.1],
                  [0.0, 0.1, 0.2]])
TOGETHER = {"a": 1.0, "b": 2.0, "c": 4.0}


def test_the_summed_learning_rate_is_the_schedule_summed_over_its_steps():
    for cfg in (TrainConfig(steps=40), TrainConfig(steps=600, learning_rate=0.002, warmup_fraction=0.05)):
        schedule = learning_rate_schedule(cfg)
        assert learning_rate_sum(cfg) == pytest.approx(sum(float(schedule(i)) for i in range(cfg.steps)), rel=1e-6)
    # Warm-up then cosine decay to 1% of the peak: between 1% and 100% of steps x peak.
    cfg = TrainConfig(steps=100, learning_rate=0.01)
    assert 0.01 * 100 * 0.01 < learning_rate_sum(cfg) < 100 * 0.01


def test_first_order_losses_by_hand():
    got = first_order_losses(NAMES, RATES, 2.0, TOGETHER)
    assert got["a+b+c"] == pytest.approx(TOGETHER)  # nothing left out: the measured all-task network
    assert got["a"] == pytest.approx({"a": math.exp(2 * (0.05 + 0.0))})                 # b, c left out
    assert got["a+b"] == pytest.approx({"a": 1.0, "b": 2 * math.exp(2 * 0.1)})          # c left out
    assert got["a+c"] == pytest.approx({"a": math.exp(2 * 0.05), "c": 4 * math.exp(2 * -0.1)})
    assert got["b+c"] == pytest.approx({"b": 2 * math.exp(2 * 0.2), "c": 4.0})
    assert got["half:b"] == got["b"] == pytest.approx({"b": 2 * math.exp(2 * (0.2 + 0.1))})
    assert len(got) == 7 + 3
    # Relative to its single, a task's loss only depends on its partners: exp(-kappa sum over partners).
    assert got["a+c"]["c"] / got["c"]["c"] == pytest.approx(math.exp(-2 * RATES[0, 2]))
    assert got["a+b+c"]["b"] / got["b"]["b"] == pytest.approx(math.exp(-2 * (RATES[0, 1] + RATES[2, 1])))


def test_a_huge_schedule_keeps_the_losses_read_off_finite():
    got = first_order_losses(NAMES, RATES, 1e6, TOGETHER)
    assert all(math.isfinite(v) and v > 0 for losses in got.values() for v in losses.values())
    assert got["a"]["a"] == pytest.approx(math.exp(MAX_LOG_CHANGE))  # b and c pull on a: capped
    assert got["a+c"]["c"] == pytest.approx(4.0 * math.exp(-MAX_LOG_CHANGE))  # b pushes c the other way
    assert got["b+c"]["c"] == 4.0  # a does nothing to c


def test_the_losses_read_off_do_not_depend_on_a_task_s_loss_unit():
    scaled = dict(TOGETHER, b=2000.0)
    one, other = first_order_losses(NAMES, RATES, 1.5, TOGETHER), first_order_losses(NAMES, RATES, 1.5, scaled)
    for label in one:
        for t, v in one[label].items():
            assert other[label][t] == pytest.approx(v * (1000.0 if t == "b" else 1.0))


def test_cs_rates_rebuild_the_inner_product_from_the_cosines_and_tag_s_diagonal():
    tag = np.array([[0.04, 9.0], [9.0, 0.09]])  # only the diagonal is used
    cs = np.array([[1.0, 0.5], [-0.25, 1.0]])
    loss = {"a": 1.0, "b": 4.0}
    d = rate_matrix("cs", {"tag": tag, "cs": cs}, loss, ("a", "b"))
    # D[u, t] = cs[u, t] sqrt(Z[u, u] Z[t, t] L_u / L_t)
    assert d == pytest.approx(np.array([[0.04, 0.5 * math.sqrt(0.04 * 0.09 / 4)],
                                        [-0.25 * math.sqrt(0.09 * 0.04 * 4), 0.09]]))
    assert np.array_equal(rate_matrix("tag", {"tag": tag, "cs": cs}, loss, ("a", "b")), tag)


def test_tag_s_estimate_from_a_record_reads_losses_only_with_the_summed_learning_rate():
    record = {"tag": RATES.tolist(), "cs": np.eye(3).tolist(),
              "affinity_run": {"validation": TOGETHER, "test": TOGETHER}}
    old = get_method("tag").from_record(record, NAMES)
    assert old.readings == {} and old.losses() == {"a+b+c": TOGETHER}
    record["affinity_run"]["learning_rate_sum"] = 2.0
    est = get_method("tag").from_record(record, NAMES)
    assert est.losses() == first_order_losses(NAMES, RATES, 2.0, TOGETHER)
    assert get_method("tag").record(est)["affinity_run"]["learning_rate_sum"] == 2.0


def test_log_errors_and_the_no_effect_row_by_hand():
    measured = {"a": {"a": 1.0}, "b": {"b": 2.0}, "a+b": {"a": 0.5, "b": 2.0}, "half:a": {"a": 9.0},
                "half:b": {"b": 9.0}}
    predicted = {"a": {"a": 2.0}, "b": {"b": 2.0}, "a+b": {"a": 2.0, "b": 4.0}, "half:a": {"a": 9.0},
                 "half:b": {"b": 9.0}}
    # r_hat(a) = 1 vs r(a) = 0.5; r_hat(b) = 2 vs r(b) = 1. Singles are 1 by definition: not counted.
    assert log_errors(predicted, measured, ("a", "b")) == pytest.approx([math.log(2), math.log(2)])
    record = {"test": measured, "validation": predicted, "tag": np.zeros((2, 2)).tolist(),
              "cs": np.eye(2).tolist(), "affinity_run": {"validation": {"a": 1.0, "b": 1.0}}}
    out = prediction_errors({"0": record, "1": record}, ("a", "b"), ("exhaustive", "tag"))["errors"]
    assert out["exhaustive"]["mean"] == pytest.approx(math.log(2)) and out["exhaustive"]["std"] == 0.0
    assert out[NO_EFFECT]["mean"] == pytest.approx(np.median([math.log(2), 0.0]))  # r = 0.5 and 1 against 1
    assert "tag" not in out  # no summed learning rate in the record: nothing read, nothing to judge


def test_the_trust_line_says_when_a_method_s_losses_say_less_than_no_effect():
    trust = {"source": "x.json", "tasks": ["a", "b"], "seeds": [0], "budgets": [1, 2], "objective": "relative",
             "evaluated": True, "mean": 1.0, "std": 0.5, "random_mean": 3.0, "random_std": 0.1,
             "prediction_error": 0.096, "no_effect_error": 0.06}
    text = trust_text("tag", trust)
    assert "median 9.6% per task" in text and "misses by 6.0%" in text and "read its expected totals as" in text
    text = trust_text("quick", dict(trust, prediction_error=0.034))
    assert "median 3.4% per task" in text and "illustration" not in text
    assert "median" not in trust_text("quick", dict(trust, prediction_error=None))

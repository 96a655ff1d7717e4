"""The verdicts of scripts/sharing_study.py on numbers worked out by hand."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sharing_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("sharing_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdicts_compare_the_mean_difference_with_the_seed_spread(study):
    runs = {
        "all/seed0": {"test": {"a": {"loss": 1.0}, "b": {"loss": 2.0}, "c": {"loss": 3.0}}},
        "all/seed1": {"test": {"a": {"loss": 1.2}, "b": {"loss": 2.0}, "c": {"loss": 3.1}}},
        "a/seed0": {"test": {"a": {"loss": 2.0}}},  # alone much worse: gains from sharing
        "a/seed1": {"test": {"a": {"loss": 2.0}}},
        "b/seed0": {"test": {"b": {"loss": 1.5}}},  # alone better: loses from sharing
        "b/seed1": {"test": {"b": {"loss": 1.7}}},
        "c/seed0": {"test": {"c": {"loss": 3.0}}},  # difference 0.05 < spread 0.1: noise
        "c/seed1": {"test": {"c": {"loss": 3.0}}},
    }
    out = study.verdicts(runs, ["a", "b", "c"], [0, 1])
    assert out["a"]["verdict"] == "gains from sharing"
    assert out["a"]["change_pct"] == pytest.approx(100 * (1.1 - 2.0) / 2.0)
    assert out["a"]["seed_spread"] == pytest.approx(0.2)
    assert out["b"]["verdict"] == "loses from sharing"
    assert out["b"]["seed_spread"] == pytest.approx(0.2)
    assert out["c"]["verdict"] == "within seed noise"

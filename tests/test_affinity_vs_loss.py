"""benchmarks/affinity_vs_loss.py against a record built so that TAG's first-order reading is exact."""

import itertools
import json
import math

import numpy as np
import pytest

from benchmarks import affinity_vs_loss as A
from grouping.selection import network_label

NAMES = ("seg", "depth", "normals")
TRAIN = {"steps": 40, "learning_rate": 0.01, "warmup_fraction": 0.1}
TAG = np.array([[0.0, 2.0, -1.0], [0.5, 0.0, 3.0], [-2.0, 1.0, 0.0]])  # [source, target]


def record(noise_seed=None):
    kappa = A.recorded_learning_rate_sum(TRAIN)
    assert kappa == pytest.approx(sum(0.01 * min(1, t / 4) for t in range(4)) + sum(
        0.01 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (t - 4) / 36))) for t in range(4, 40)), rel=1e-5)
    validation = {}
    rng = np.random.default_rng(noise_seed)
    for k in range(1, 4):
        for s in itertools.combinations(NAMES, k):
            left_out = [NAMES.index(i) for i in NAMES if i not in s]
            validation[network_label(s)] = {t: float(np.exp(kappa * sum(TAG[i, NAMES.index(t)] for i in left_out)
                                                            + (rng.normal(0, 0.5) if noise_seed is not None else 0)))
                                            for t in s}
    run = {"validation": validation, "tag": TAG.tolist(), "cs": (-TAG).tolist()}
    return {"tasks": list(NAMES), "settings": {"train": TRAIN}, "runs": {"0": run, "1": dict(run)}}


def test_an_exact_first_order_record_gives_correlation_one_and_no_error():
    out = A.analyse(record())
    tag = out["matrices"]["tag"]
    assert tag["pairs"] == 2 * 9  # two seeds, each: 3 singles of 1 task and 3 pairs of 2
    assert tag["correlation"] == pytest.approx(1.0)
    assert tag["first_order_median_abs_error"] == pytest.approx(0.0, abs=1e-12)
    assert out["matrices"]["cs"]["correlation"] == pytest.approx(-1.0)
    assert "lookahead (normalised)" not in out["matrices"]  # the record has none


def test_the_script_writes_its_json_and_refuses_a_record_without_tag(tmp_path, capsys):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(record(noise_seed=0)))
    A.main(["--record", str(path), "--out", str(tmp_path / "out.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert last == f"tag_loss_correlation={saved['matrices']['tag']['correlation']:.4f}"
    bare = record()
    for run in bare["runs"].values():
        run.pop("tag")
    path.write_text(json.dumps(bare))
    with pytest.raises(SystemExit, match="holds no TAG matrix"):
        A.main(["--record", str(path), "--out", str(tmp_path / "out.json")])

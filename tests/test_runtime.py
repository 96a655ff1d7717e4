"""The CPU settings of mtl.runtime: they change speed, never the numbers."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mtl import runtime
from mtl.train import TrainConfig, build_model, initial_state, make_optimizer, make_train_fn, to_device
from tasks.registry import resolve_tasks
from tasks.scenes import render_scenes

REPO = Path(__file__).resolve().parents[1]


def test_options_on_cpu_and_switch_off(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert runtime.compiler_options() == runtime.CPU_COMPILER_OPTIONS
    monkeypatch.setenv("MTL_CPU_TUNING", "0")
    assert runtime.compiler_options() is None


def test_tuned_step_equals_xla_default_step(monkeypatch):
    """Eigen instead of YNNPACK convolutions: the same step up to float rounding."""
    tasks = resolve_tasks("seg,depth,normals")
    cfg = TrainConfig(steps=6, batch_size=4)
    data = to_device(render_scenes(seed=5, count=8, resolution=32), tasks)
    graphdef, params = nnx.split(build_model(tasks, cfg), nnx.Param)
    tx = make_optimizer(cfg)

    def run_steps():
        step = make_train_fn(graphdef, tasks, tx, cfg)
        state = initial_state(jax.tree.map(jnp.copy, params), tx)
        losses = []
        for _ in range(cfg.steps):
            state, l = step(state, data)
            losses.append(np.asarray(l))
        return np.array(losses)

    tuned = run_steps()
    monkeypatch.setenv("MTL_CPU_TUNING", "0")
    default = run_steps()
    np.testing.assert_allclose(tuned, default, rtol=1e-4, atol=1e-6)
    assert np.all(tuned[-1] < tuned[0])  # it trains


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("opt_in, tuning, expected", [("1", "1", "True"), ("0", "1", "False"), ("1", "0", "False")])
def test_tune_malloc_only_when_asked(opt_in, tuning, expected):
    # In a child process: the allocator setting is process-wide.
    code = "from mtl import runtime; import numpy as np; print(runtime.tune_malloc()); np.ones(10**7).sum()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MTL_TUNE_MALLOC": opt_in, "MTL_CPU_TUNING": tuning})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [expected]

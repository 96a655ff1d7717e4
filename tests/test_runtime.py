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


def _child(code: str, **env) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


_TUNE = ("from mtl import runtime; import jax, jax.numpy as jnp; r = runtime.tune_process(); "
         "x = jnp.ones((256, 256)); print(r['sync_cpu_dispatch'], r['keep_freed_memory'], "
         "jax.config.read('jax_cpu_enable_async_dispatch'), float((x @ x).sum()))")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_process_applies_both_settings_unless_switched_off():
    # In child processes: both settings are process-wide. The first also imports the four scripts
    # first: mtl.cli.run tunes before main, which only works if importing a script computes nothing.
    scripts = ("import sys; sys.path.insert(0, 'scripts'); import find_groups, ground_truth, select_networks, train; "
               "from jax._src import xla_bridge; print(xla_bridge.backends_are_initialized()); ")
    assert _child(scripts + _TUNE, MTL_CPU_TUNING="1") == ["False", "True", "True", "False", str(256.0**3)]
    assert _child(_TUNE, MTL_CPU_TUNING="0") == ["False", "False", "True", str(256.0**3)]


def test_tune_process_after_jax_has_computed_leaves_dispatch_alone():
    code = ("import jax.numpy as jnp; jnp.ones(3).sum(); from mtl import runtime; import jax; "
            "print(runtime.tune_process()['sync_cpu_dispatch'], jax.config.read('jax_cpu_enable_async_dispatch'))")
    assert _child(code, MTL_CPU_TUNING="1") == ["False", "True"]


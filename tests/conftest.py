"""Fixtures shared by the test modules that run the scripts in subprocesses."""

import atexit
import os
import shutil
import tempfile

import jax
import pytest

import mtl.ensemble
import mtl.train

# One JAX compilation cache for this test process too, fresh each session (a clean run starts cold):
# tests build the same programs again and again (the same members, schedule and data in new jitted
# closures, which jit's own cache cannot see), and XLA compiles each once. Programs compiled here
# behave as compiled anew (same executables); jax still logs each compilation, so the tests that
# count compiled programs count the same.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _CACHE = tempfile.mkdtemp(prefix="mtl_tests_jax_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """The environment of a script subprocess: a private data cache, and one JAX compilation
    cache for the whole session, so each tiny program compiles once however many tests run it."""
    env = dict(os.environ)
    env["MTL_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    if not env.get("JAX_COMPILATION_CACHE_DIR"):
        env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Any training fails the test: for runs that must find every network in the store."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network was trained")

    monkeypatch.setattr(mtl.train, "train_and_evaluate", refuse)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", refuse)
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))

"""Fixtures shared by the test modules that run the scripts in subprocesses."""

import os

import pytest

import mtl.ensemble
import mtl.train


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

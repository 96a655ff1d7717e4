"""The command-line scripts as a new user meets them: --help, bad numbers refused before any work,
and scripts/train.py's run directory, which the same command resumes after a kill."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mtl.train  # imported here, so the timing below measures the checks, not the imports
import tasks.datasets
import tasks.scenes
from grouping import find_groups as _find_groups  # noqa: F401  (the same: train.py and find_groups import it)
from mtl import cli
from tests.interrupt import run_until_killed

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
NAMES = sorted(p.stem for p in SCRIPTS.glob("*.py"))


def load(name: str):
    """A script as a module (its main and helpers)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------
# --help


@pytest.mark.parametrize("name", NAMES)
def test_every_option_says_what_it_does_and_its_default(name, monkeypatch):
    parsers = []

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        load(name).main([])
    parser = parsers[0]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        assert action.help, f"{name} {flag}: no help text"
        flag_only = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if not flag_only and not action.required:
            assert "default" in formatter._get_help_string(action), f"{name} {flag}: its default is not shown"


# ---------------------------------------------------------------------------
# Bad numbers: one error line, exit status 2, before any data is rendered or network trained.


def _refuse_work(monkeypatch, tmp_path):
    def work(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(tasks.scenes, "render_scenes", work)
    monkeypatch.setattr(tasks.datasets, "load_for_tasks", work)
    monkeypatch.setattr(tasks.datasets, "prepare", work)
    monkeypatch.setattr(mtl.train, "train_and_evaluate", work)
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


def _run_refused(main, argv, capsys) -> tuple[str, float]:
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0], seconds


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "-1"], "--lr must be a positive number, got -1"),
    (["--lr", "0"], "--lr must be a positive number, got 0"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--size", "0.3"], "supported encoder widths 1, 0.5"),
    (["--size", "2"], "supported encoder widths 1, 0.5"),
    (["--resolution", "50"], "resolution 50"),
    (["--counts", "0,1,1"], "--counts"),
    (["--counts", "10,5"], "--counts"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--data-seed", "-3"], "--data-seed"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--data", "no/such/folder"], "does not exist"),
])
def test_train_refuses_a_bad_number_before_any_work(args, fragment, tmp_path, monkeypatch, capsys):
    _refuse_work(monkeypatch, tmp_path)
    line, seconds = _run_refused(load("train").main, ["--tasks", "seg,depth", *args, "--quiet"], capsys)
    assert fragment in line, line
    assert seconds < 2, f"{seconds:.1f} s before the error"
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "-1"], "--lr must be a positive number, got -1"),
    (["--lr", "0"], "--lr must be a positive number, got 0"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--resolution", "50"], "resolution 50"),
    (["--counts", "0,1,1"], "--counts"),
    (["--seed", "-1"], "--seed"),
    (["--data-seed", "-1"], "--data-seed"),
    (["--every", "0"], "--every must be at least 1"),
    (["--esa-fraction", "0"], "--esa-fraction must be in (0, 1]"),
    (["--esa-fraction", "1.5"], "--esa-fraction must be in (0, 1]"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
    (["--max-members", "0"], "--max-members must be at least 1"),
    (["--devices", "0"], "--devices must be at least 1"),
])
def test_find_groups_refuses_a_bad_number_before_any_work(args, fragment, tmp_path, monkeypatch, capsys):
    _refuse_work(monkeypatch, tmp_path)
    line, seconds = _run_refused(load("find_groups").main,
                                 ["--tasks", "seg,depth", *args, "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert fragment in line, line
    assert seconds < 2, f"{seconds:.1f} s before the error"
    assert not (tmp_path / "data").exists() and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------
# scripts/train.py: the run directory is a function of the settings, so the same command resumes.

TINY = ["--tasks", "seg,depth", "--resolution", "32", "--counts", "16,8,8", "--steps", "60", "--batch-size", "8",
        "--checkpoint-every", "10", "--quiet", "--json"]


def train(env, cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_same_train_command_resumes_where_it_was_killed(env, tmp_path):
    whole = train(env, tmp_path, *TINY, "--out", str(tmp_path / "uninterrupted"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = json.loads(whole.stdout)

    work = tmp_path / "work"
    work.mkdir()

    def run_dir():  # killed as soon as its step-10 checkpoint is written
        found = list(work.glob("runs/*/checkpoint/10"))
        return found[0].parents[1] if found else None

    with open(tmp_path / "killed.err", "w") as err:
        seen = run_until_killed([sys.executable, str(SCRIPTS / "train.py"), *TINY], run_dir, cwd=work, env=env,
                                seconds=300, stderr=err)
    assert seen is not None, "the run ended before it could be killed"
    first = (tmp_path / "killed.err").read_text().splitlines()[0]
    assert first == f"run directory {seen.relative_to(work)} (rerun the same command to resume from its checkpoints)"
    assert seen.name.startswith("train-seg+depth-")

    again = train(env, work, *TINY)  # the identical command, in the same place
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.splitlines()[0] == first  # printed first, the same directory
    report = json.loads(again.stdout)
    assert report["run_dir"] == str(seen.relative_to(work)) and [p.name for p in work.glob("runs/*")] == [seen.name]
    assert report["resumed_from"] is not None and 10 <= report["resumed_from"] < 60, report["resumed_from"]
    for split in ("validation", "test"):
        for task, values in expected[split].items():
            for key, value in values.items():
                assert report[split][task][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (split, task, key)

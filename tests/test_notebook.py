"""notebooks/affinity_explorer.ipynb runs (nbclient) on small reports written here.

The reports come from find_groups on stores filled with known numbers (no
training): a loss method with --verify, and tag through a stand-in for the
affinity training hook. The notebook reads the path from $MTL_REPORT."""

from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import grouping.affinity
import mtl.ensemble
import mtl.train
from grouping.find_groups import Options, find_groups, setup
from grouping.dataspec import DataSpec
from grouping.runner import candidate_specs
from grouping.store import ResultsStore

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "affinity_explorer.ipynb"
TASKS = "seg,depth,edges"


def write_report(tmp_path, method, verify=False) -> Path:
    opts = Options(cost="nominal", tasks=TASKS, budgets=[1, 1.5, 2, 3], method=method, data=DataSpec("scenes", 32, 0, (16, 8, 8)),
                   steps=10, out=tmp_path / method, progress=False, verify=verify)
    s = setup(opts)
    rng = random.Random(0)
    with ResultsStore(tmp_path / method / "store.sqlite") as store:
        runner = s.runner(opts, store)
        for spec in candidate_specs(s.names):
            losses = {t: {"loss": rng.uniform(0.1, 1)} for t in spec.tasks}
            store.put(runner.settings_for(spec), {"validation": losses, "test": losses, "train_seconds": 0.1})
    find_groups(opts, echo=lambda line: None)
    return tmp_path / method / "report.json"


def run_notebook(report: Path, monkeypatch) -> list[str]:
    monkeypatch.setenv("MTL_REPORT", str(report))  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # matrix, graph, curve
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    monkeypatch.setattr(mtl.train, "train_and_evaluate", lambda *a, **k: pytest.fail("a network was trained"))
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", lambda *a, **k: pytest.fail("a network was trained"))
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))


def test_notebook_on_an_exhaustive_report_with_verify(tmp_path, monkeypatch, no_training):
    text = run_notebook(write_report(tmp_path, "exhaustive", verify=True), monkeypatch)
    assert "method exhaustive" in text and "budget 1.5" in text and "measured test total" in text


def test_notebook_on_a_tag_report(tmp_path, monkeypatch, no_training):
    z = np.array([[0, 0.2, -0.1], [0.3, 0, 0.05], [-0.2, 0.1, 0]])
    monkeypatch.setattr(grouping.affinity, "train_with_affinity",
                        value=lambda tasks, splits, cfg, **kw: {"tag": z, "cs": z, "train_seconds": 1.0})
    monkeypatch.setattr(DataSpec, "load", lambda self, tasks, **kw: {})
    text = run_notebook(write_report(tmp_path, "tag"), monkeypatch)
    assert "method tag" in text and "TAG score" in text


def test_the_readme_command_runs_the_notebook(tmp_path):
    # The README's command as printed (the `notebook` extra, in `test` too, installs nbconvert), on a copy.
    readme = (NOTEBOOK.parents[1] / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("jupyter nbconvert"))
    shutil.copytree(NOTEBOOK.parent, tmp_path / "notebooks")
    env = {k: v for k, v in os.environ.items() if k != "MTL_REPORT"}  # the example report next to the notebook
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    result = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "notebook" / "affinity_explorer.html").stat().st_size > 0

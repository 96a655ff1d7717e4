"""notebooks/own_data.ipynb runs (nbclient) end to end: its own tasks registered, synthetic arrays,
a tag run of a few steps, the choice printed for budgets 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "own_data.ipynb"


def test_the_own_data_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_NOTEBOOK_STEPS", "6")  # the kernel inherits the environment
    monkeypatch.setenv("MTL_NOTEBOOK_OUT", str(tmp_path / "run"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["tasks"] == ["disc", "red", "size"] and report["data"]["source"] == "arrays"
    assert report["metrics"] == {"disc": {"metric": "l1", "higher_is_better": False},
                                 "red": {"metric": "error_rate", "higher_is_better": False},
                                 "size": {"metric": "error_rate", "higher_is_better": False}}
    for sel in report["selections"]:
        chosen = " | ".join("+".join(n["tasks"]) for n in sel["networks"])
        assert f"budget {sel['budget']:g}: {chosen}" in text
        assert sorted({t for n in sel["networks"] for t in n["tasks"]}) == ["disc", "red", "size"]

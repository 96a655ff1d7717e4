"""Without tensorflow-datasets: the scenes are rendered in memory (the cache's arrays, the same store
keys), the scripts run, and a folder source names the packages to install.

Each case runs in a subprocess whose first lines set sys.modules["tensorflow_datasets"] and
sys.modules["array_record"] to None, so importing either raises ImportError, as on an image
without them; the test process itself has them and gives the tfds path to compare with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grouping.dataspec import DataSpec
from tasks import scenes
from tasks.registry import TASKS, resolve_tasks
from tasks.scene_data import render_bytes, render_splits

REPO = Path(__file__).resolve().parents[1]
NO_TFDS = "import sys\nsys.modules['tensorflow_datasets'] = None\nsys.modules['array_record'] = None\n"
COUNTS = (6, 3, 3)
IN_MEMORY = "rendering the scenes in memory"


def without_tfds(code: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TFDS + code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def script_without_tfds(script: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    argv = [script, *map(str, args)]
    return without_tfds(f"import runpy\nsys.argv = {argv!r}\nrunpy.run_path({script!r}, run_name='__main__')\n", env)


def test_scenes_without_tfds_are_the_cached_arrays_under_the_same_keys(tmp_path, env, monkeypatch):
    arrays, keys = tmp_path / "memory.npz", tmp_path / "settings.json"
    code = f"""
import json
import numpy as np
from grouping.dataspec import DataSpec
from tasks.registry import TASKS, resolve_tasks
tasks = resolve_tasks(list(TASKS))
spec = DataSpec(source="scenes", resolution=32, counts={COUNTS!r})
assert spec.in_memory and spec.builder() is None
settings = spec.check(tasks)
data = spec.load(tasks, progress=False)
again = spec.load(tasks, progress=False, splits=["test"])
assert list(again) == ["test"] and all(np.array_equal(again["test"][m], data["test"][m]) for m in data["test"])
np.savez({str(arrays)!r}, **{{f"{{s}}__{{m}}": a for s, d in data.items() for m, a in d.items()}})
open({str(keys)!r}, "w").write(json.dumps(settings))
"""
    proc = without_tfds(code, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count(IN_MEMORY) == 1, proc.stderr  # said once, however often the data are loaded

    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    tasks = resolve_tasks(list(TASKS))
    spec = DataSpec(source="scenes", resolution=32, counts=COUNTS)
    assert not spec.in_memory
    assert json.loads(keys.read_text()) == spec.check(tasks)  # the tfds builder's name, config and version
    cached = spec.load(tasks, progress=False)
    memory = np.load(arrays)
    assert sorted(memory.files) == sorted(f"{s}__{m}" for s, d in cached.items() for m in d)
    # The documented ranges of one seed's images: train 0-5, validation 6-8, test 9-11.
    whole = scenes.render_scenes(0, sum(COUNTS), 32)
    ranges = {"train": slice(0, 6), "validation": slice(6, 9), "test": slice(9, 12)}
    for split, d in cached.items():
        for m, a in d.items():
            b = memory[f"{split}__{m}"]
            assert a.dtype == b.dtype and a.shape == b.shape, (split, m)
            assert a.tobytes() == b.tobytes(), (split, m)  # byte for byte
            assert np.array_equal(b, whole[m][ranges[split]]), (split, m)


def test_rendering_in_memory_checks_the_size_first(monkeypatch):
    # rgb: 3 bytes a pixel, depth_zbuffer: one uint16.
    assert render_bytes(5, 32, ["rgb", "depth_zbuffer"]) == 5 * 32 * 32 * (3 + 2)

    def refuse(*args, **kwargs):
        raise AssertionError("rendering started before the size was checked")

    monkeypatch.setattr(scenes, "render_scenes", refuse)
    monkeypatch.setattr("tasks.scene_data.available_memory", lambda: 10**9)
    with pytest.raises(ValueError, match=r"in memory needs about .* and 1\.0 GB is available"):
        render_splits(resolution=64, counts=(100_000, 10, 10), modalities=["rgb"], progress=False)
    with pytest.raises(ValueError, match="resolution 20 out of range"):
        render_splits(resolution=20, counts=(1, 1, 1), progress=False)


def test_a_folder_source_without_tfds_names_the_packages_to_install(tmp_path, env):
    folder = tmp_path / "nyu"
    folder.mkdir()
    code = f"""
from grouping.dataspec import DataSpec
from tasks.scene_data import MissingPackageError
spec = DataSpec("nyuv2:{folder}")
tasks = spec.resolve_tasks("seg,depth")
for call in (lambda: spec.check(tasks), lambda: spec.load(tasks), lambda: __import__("tasks.datasets")):
    try:
        call()
    except MissingPackageError as e:
        assert isinstance(e, ValueError) and isinstance(e, ImportError)
        print(e)
    else:
        raise AssertionError("no error")
"""
    proc = without_tfds(code, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert "tensorflow-datasets and array-record" in line and "pip install tensorflow-datasets array-record" in line
    assert lines[0].startswith(f"the data source nyuv2:{folder} needs")
    proc = script_without_tfds("scripts/find_groups.py", ["--data", f"nyuv2:{folder}", "--tasks", "seg,depth"], env)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: the data source nyuv2:{folder} needs"), proc.stderr
    assert "pip install tensorflow-datasets array-record" in proc.stderr and "Traceback" not in proc.stderr


def test_find_groups_runs_without_tfds_and_its_networks_serve_the_tfds_path(tmp_path, env):
    out = tmp_path / "run"
    # tests/test_find_groups.py's TINY setting: the session's compilation cache holds its programs.
    args = ["--tasks", "seg,depth", "--budget", "1:2.5:0.5", "--method", "exhaustive", "--cost", "nominal",
            "--resolution", "32", "--counts", "16,8,8", "--steps", "20", "--batch-size", "8", "--checkpoint-every",
            "10", "--quiet", "--out", out]
    first_use = {**env, "MTL_DATA_DIR": str(tmp_path / "data")}
    proc = script_without_tfds("scripts/find_groups.py", args, first_use)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count(IN_MEMORY) == 1
    assert not (tmp_path / "data").exists()  # nothing cached
    memory = json.loads((out / "report.json").read_text())
    assert memory["run"]["timing"]["trained"] == 5  # 2 half-size singles, 2 singles, the pair
    # The same command with tensorflow-datasets finds every network in the store: the same keys.
    proc = subprocess.run([sys.executable, "scripts/find_groups.py", *map(str, args)], cwd=REPO, env=first_use,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cached = json.loads((out / "report.json").read_text())
    assert cached["run"]["timing"]["trained"] == 0 and cached["run"]["timing"]["reused"] == 5
    assert cached["data"] == memory["data"]
    assert memory["data"]["dataset"] == DataSpec(resolution=32, counts=(16, 8, 8)).settings()["dataset"]


def test_the_ground_truth_record_is_reusable_without_tfds(env):
    """scripts/ground_truth.py's defaults without tfds have the committed record's settings."""
    path = REPO / "benchmarks" / "results" / "ground_truth" / "ground_truth.json"
    if not path.is_file():
        pytest.skip("no committed ground truth yet (python scripts/ground_truth.py)")
    code = f"""
import importlib.util, json
spec = importlib.util.spec_from_file_location("gt", "scripts/ground_truth.py")
gt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gt)
record = json.loads(open({str(path)!r}).read())
args = gt.build_parser().parse_args(["--seeds", "0,1,2"])
print(json.dumps(gt.differences(record["settings"], gt.record_settings(args, tuple(record["tasks"])))))
"""
    proc = without_tfds(code, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []

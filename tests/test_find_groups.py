"""scripts/find_groups.py end to end at a tiny setting, its recovery after kill -9, and bad input.

Real training, kept tiny: 2 tasks (5 networks: 2 half-size singles, 2 full
singles, the pair), 32x32 scenes, 16/8/8 images, 20 steps of batch 8. The
runs share a JAX compilation cache (one per test session, or
$JAX_COMPILATION_CACHE_DIR when set), so only the first run compiles.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interrupt import run_until_killed

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "find_groups.py"
TINY = ["--tasks", "seg,depth", "--budget", "1:2.5:0.5", "--method", "exhaustive", "--cost", "nominal", "--resolution", "32",
        "--counts", "16,8,8", "--steps", "20", "--batch-size", "8", "--checkpoint-every", "10", "--quiet"]


def cli(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    # Its own data cache: this run must be the data's first use (test_quiet_prints_nothing_of_tfds_on_first_use);
    # the session's compilation cache is still shared.
    first_use = {**env, "MTL_DATA_DIR": str(tmp_path_factory.mktemp("reference_data"))}
    result = cli(first_use, *TINY, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def stable(report: dict) -> dict:
    """The report without what depends on the run (paths, dates, times)."""
    return {k: v for k, v in report.items() if k != "run"}


def assert_same(a, b, path="report"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys differ"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def brute_force(candidates: list[dict], tasks: list[str], budget: float, weight: dict[str, float]) -> float:
    """Lowest predicted total (each task's loss times its weight) over every set of candidates
    within the budget covering all tasks."""
    best = math.inf
    for k in range(1, len(candidates) + 1):
        for combo in itertools.combinations(candidates, k):
            if sum(c["cost"] for c in combo) > budget + 1e-9:
                continue
            if not set(tasks) <= {t for c in combo for t in c["tasks"]}:
                continue
            total = sum(weight[t] * min(c["predicted"][t] for c in combo if t in c["tasks"]) for t in tasks)
            best = min(best, total)
    return best


def test_tiny_run_writes_a_consistent_report(reference):
    out, result = reference
    report = json.loads((out / "report.json").read_text())
    tasks = report["tasks"]
    assert tasks == ["seg", "depth"] and report["method"] == "exhaustive"
    assert report["budgets"] == [1.0, 1.5, 2.0, 2.5]
    assert len(report["candidates"]) == 5 and len(report["trained_networks"]) == 5
    val = {nw["label"]: nw["validation"] for nw in report["trained_networks"]}
    # The default objective, by hand: the mean over tasks of the loss over the full-size single's loss.
    assert report["objective"] == "relative"
    weight = {t: 1 / (len(tasks) * val[t][t]["loss"]) for t in tasks}
    for sel in report["selections"]:
        covered = {t for nw in sel["networks"] for t in nw["tasks"]}
        assert covered == set(tasks), sel
        assert sel["cost"] <= sel["budget"] + 1e-9
        assert sum(nw["cost"] for nw in sel["networks"]) == pytest.approx(sel["cost"])
        # The total is what the chosen networks reach, and no selection within the budget does better.
        by_label = {nw["label"]: nw for nw in sel["networks"]}
        assert sel["predicted_total"] == pytest.approx(
            sum(weight[t] * by_label[sel["assignment"][t]]["predicted"][t] for t in tasks))
        assert sel["predicted_total"] == pytest.approx(brute_force(report["candidates"], tasks, sel["budget"], weight))
        for t in tasks:
            assert sel["task_change_percent"]["vs_all_in_one"][t] == pytest.approx(
                100 * (by_label[sel["assignment"][t]]["predicted"][t] / val["seg+depth"][t]["loss"] - 1))
        base = sel["baselines"]
        assert base["all_in_one"]["predicted_total"] >= sel["predicted_total"] - 1e-9
        assert base["random"]["count"] == (1 if sel["budget"] < 2 else 2)
        assert (base["one_per_task"]["networks"][0]["width"] == ("full" if sel["budget"] >= 2 else "half"))
    # The predictions are the trained networks' validation losses.
    for c in report["candidates"]:
        for t, v in c["predicted"].items():
            assert v == pytest.approx(val[c["label"]][t]["loss"])
    aff = report["affinity"]
    assert aff["tasks"] == tasks and len(aff["matrix"]) == 2 and aff["kind"] == "pair-loss-ratio"
    seg_alone = val["seg"]["seg"]["loss"]
    assert aff["matrix"][1][0] == pytest.approx(1 - val["seg+depth"]["seg"]["loss"] / seg_alone)
    assert report["data"]["resolution"] == 32 and report["training"]["steps"] == 20 and report["code_version"]
    for name in ("affinity.png", "curve.png", "report.md", "store.sqlite"):
        assert (out / name).stat().st_size > 0
    assert not any((out / "checkpoints").iterdir())  # stored networks leave no checkpoint behind
    assert "baseline all tasks in one network" in result.stdout and "time: data" in result.stdout


def test_quiet_prints_nothing_of_tfds_on_first_use(reference):
    _, result = reference
    assert "mtl: preparing mtl_scenes/" in result.stderr  # this run prepared the data: their first use
    text = result.stdout + result.stderr
    tfds_output = ("Downloading and preparing", "Generating splits", "examples...", "Shuffling", "downloaded and prepared")
    assert not [line for line in tfds_output if line in text], text
    assert "%|" not in text and "rendering scenes" not in text  # --quiet: no bar of ours either


def test_a_rerun_trains_nothing(reference, env, monkeypatch, capsys):
    # In-process, with training replaced by an error: everything must come from the store.
    out, _ = reference
    import mtl.ensemble
    import mtl.train
    from mtl import cli as mtl_cli

    def no_training(*args, **kwargs):
        raise AssertionError("a network was trained again")

    monkeypatch.setattr(mtl.train, "train_and_evaluate", no_training)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", no_training)
    monkeypatch.setenv("MTL_DATA_DIR", env["MTL_DATA_DIR"])
    before = json.loads((out / "report.json").read_text())
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import find_groups
    finally:
        sys.path.remove(str(SCRIPT.parent))
    with pytest.raises(SystemExit) as exit_info:
        mtl_cli.run(find_groups.main, [*TINY, "--out", str(out)])
    assert exit_info.value.code == 0, capsys.readouterr().err
    after = json.loads((out / "report.json").read_text())
    assert_same(stable(before), stable(after))
    assert after["run"]["timing"]["trained"] == 0 and after["run"]["timing"]["reused"] == 5


def test_a_run_killed_mid_training_resumes_to_the_same_report(reference, env, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "killed"

    def network():  # killed as soon as the first network (or ensemble) has saved its step-10 checkpoint
        ckpts = out / "checkpoints"
        found = [*ckpts.glob("*/10"), *ckpts.glob("*/chunk-*/10")] if ckpts.is_dir() else []
        return found[0].relative_to(ckpts).parts[0] if found else None

    seen = run_until_killed([sys.executable, str(SCRIPT), *TINY, "--out", str(out)], network, cwd=REPO, env=env,
                            seconds=240)
    assert seen is not None, "the run ended before it could be killed"

    from grouping.store import ResultsStore

    with ResultsStore(out / "store.sqlite") as store:
        finished = {row["key_hash"] for row in store.rows() if row["status"] == "done"}
    result = cli(env, *TINY, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert_same(stable(json.loads((ref_out / "report.json").read_text())), stable(report))
    if not seen.endswith(tuple(finished)):  # killed before that network was stored: it resumed
        assert any(e["resumed_from"] == 10 for e in report["run"]["timing"]["networks"]), report["run"]["timing"]


# ---------------------------------------------------------------------------
# Bad input: 'error: ...' on stderr, exit status 2, no traceback.


def assert_input_error(code, stderr, *fragments):
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_other_settings_on_the_same_out_are_refused_before_any_work(reference, env):
    out, _ = reference
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix in (".json", ".md", ".png")}
    other = [("1:2:0.5" if a == "1:2.5:0.5" else a) for a in TINY]  # the same run, fewer budgets
    result = cli(env, *other, "--out", out)
    assert_input_error(result.returncode, result.stderr, f"--out {out} holds the report of other settings",
                       "budgets 1,1.5,2,2.5 -> 1,1.5,2", "--overwrite")
    assert result.stdout == ""
    assert before == {name: (out / name).read_bytes() for name in before}


def test_unknown_task_lists_the_valid_ones(env, tmp_path):
    result = cli(env, "--tasks", "seg,flow", "--budget", "2", "--method", "hoa", "--out", tmp_path / "r")
    assert_input_error(result.returncode, result.stderr, "unknown task 'flow'", "valid tasks", "normals")
    assert result.stdout == ""


def run_main(argv, capsys):
    from mtl import cli as mtl_cli

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import find_groups
    finally:
        sys.path.remove(str(SCRIPT.parent))
    with pytest.raises(SystemExit) as exit_info:
        mtl_cli.run(find_groups.main, [str(a) for a in argv])
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, fragments", [
    (["--tasks", "seg"], ["at least 2"]),
    (["--tasks", "seg,s"], ["'seg' is given twice"]),
    (["--tasks", "seg,depth,normals", "--budget", "0.5"], ["minimum feasible budget is 1"]),
    (["--tasks", "seg,depth", "--budget", "0.5", "--method", "tag"], ["minimum feasible budget is 1"]),
    (["--tasks", "seg,depth", "--budget", "two"], ["budgets 'two'"]),
    (["--tasks", "seg,depth", "--method", "magic"], ["unknown method 'magic'"]),
    (["--tasks", "seg,depth", "--resolution", "50", "--method", "hoa"], ["resolution 50"]),
    (["--tasks", "seg,depth", "--method", "surrogate", "--surrogate-samples", "-1"],
     ["--surrogate-samples must be at least 0"]),
    (["--tasks", "seg,depth", "--method", "lookahead", "--every", "0"], ["--every must be at least 1"]),
    (["--tasks", "seg,depth", "--cost", "watts"], ["unknown cost kind 'watts'", "nominal, flops, latency"]),
    (["--tasks", "seg,depth", "--cost", "latency", "--latency-batch", "0"], ["--latency-batch must be at least 1"]),
    (["--tasks", "seg,depth", "--budget", "0.5,1.1", "--resolution", "32"], ["minimum feasible budget is 1.19529"]),
    (["--tasks", "seg,depth", "--task-weights", "edges=2"], ["--task-weights names 'edges'", "seg, depth"]),
    (["--tasks", "seg,depth", "--task-weights", "seg=-1"], ["positive weights"]),
    (["--tasks", "seg,depth", "--labels", "rare"], ["unknown label plan 'rare'", "scarce"]),
])
def test_bad_arguments(args, fragments, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    code, err = run_main([*args, "--out", tmp_path / "r", "--quiet"], capsys)
    assert_input_error(code, err, *fragments)
    assert not (tmp_path / "r" / "store.sqlite").exists()  # nothing started


def test_a_data_directory_without_the_labels(tmp_path, capsys, monkeypatch):
    from tasks import taskonomy
    from tasks.scenes import render_scenes

    scenes = render_scenes(seed=1, count=3, resolution=32)
    root = taskonomy.write_taskonomy(tmp_path / "taskonomy", {m: scenes[m] for m in ("rgb", "depth_zbuffer")},
                                     [taskonomy.stem_for_index(i) for i in range(3)])
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    code, err = run_main(["--tasks", "seg,depth", "--data", root, "--resolution", "32", "--method", "hoa",
                          "--out", tmp_path / "r", "--quiet"], capsys)
    assert_input_error(code, err, "segment_semantic", "seg")


def test_a_diverging_network_stops_the_run_and_is_not_stored_as_valid(tmp_path, capsys, monkeypatch):
    import mtl.ensemble
    import mtl.train
    from grouping.store import ResultsStore

    def diverge(tasks, splits, cfg, **kwargs):
        raise mtl.train.TrainingDiverged(tasks[0].name, 7, float("nan"))

    def diverge_ensemble(members, splits, cfg, **kwargs):  # the first member diverges
        raise mtl.train.TrainingDiverged(members[0][0].name, 7, float("nan"),
                                         network="+".join(t.name for t in members[0]))

    monkeypatch.setattr(mtl.train, "train_and_evaluate", diverge)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", diverge_ensemble)
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    code, err = run_main(["--tasks", "seg,depth", "--budget", "2", "--method", "hoa", "--resolution", "32",
                          "--counts", "16,8,8", "--steps", "5", "--out", tmp_path / "r", "--quiet"], capsys)
    assert_input_error(code, err, "'seg'", "nan", "step 7")
    with ResultsStore(tmp_path / "r" / "store.sqlite") as store:
        rows = list(store.rows())
        assert store.count("done") == 0
    assert len(rows) == 1 and rows[0]["status"] == "failed" and "step 7" in rows[0]["error"]
    assert not (tmp_path / "r" / "report.json").exists()


def test_a_store_of_another_schema_version_is_refused(tmp_path, capsys, monkeypatch):
    import sqlite3

    from grouping.store import ResultsStore

    (tmp_path / "r").mkdir()
    ResultsStore(tmp_path / "r" / "store.sqlite").close()
    with sqlite3.connect(tmp_path / "r" / "store.sqlite") as db:
        db.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    code, err = run_main(["--tasks", "seg,depth", "--method", "hoa", "--resolution", "32", "--counts", "16,8,8",
                          "--out", tmp_path / "r", "--quiet"], capsys)
    assert_input_error(code, err, "schema version 99")



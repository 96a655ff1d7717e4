"""Faults a long run meets (issue 19): a damaged dataset cache, a full disk, two runs on one directory.

All at tiny settings. The full disk is simulated: a patched orbax save that
fails the way orbax does on a full file system (its writer thread logs the
error through absl, then the save raises tensorstore's RESOURCE_EXHAUSTED
ValueError), and SQLite's max_page_count for the store. The end-to-end case
runs scripts/find_groups.py in subprocesses that share a JAX compilation
cache, so only the first one compiles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from grouping.store import LOCK_NAME, STORE_NAME, ResultsStore, RunLock, RunLocked, StoreError
from mtl import cli as mtl_cli
from tasks import datasets, taskonomy
from tasks.scenes import render_scenes

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
R = 32
COUNTS = (8, 4, 4)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "default_cache"))


def corrupt(path: Path, size: int = 4096) -> None:
    """Overwrites `size` bytes in the middle of a file, as a bad disk or a stray write would."""
    data = path.read_bytes()
    at = max(0, len(data) // 2 - size // 2)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(np.random.default_rng(0).integers(0, 256, min(size, len(data)), dtype=np.uint8).tobytes())


def shard(data_dir: Path, split: str = "train") -> Path:
    (path,) = data_dir.glob(f"mtl_*/*/*/mtl_*-{split}.array_record-*")
    return path


# ---------------------------------------------------------------------------
# 1. A damaged dataset cache.


@pytest.mark.parametrize("damage", ["records", "truncated", "missing", "metadata"])
def test_a_damaged_cache_file_is_named_and_prepared_again(tmp_path, capsys, damage):
    data_dir = tmp_path / "data"
    load = dict(resolution=R, seed=3, counts=COUNTS, data_dir=data_dir, with_stems=True)
    before = datasets.load_split("scenes", "train", **load)
    path = shard(data_dir)
    if damage == "records":
        corrupt(path)
    elif damage == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "missing":
        path.unlink()
    else:
        path = path.parent / "dataset_info.json"
        path.write_text(path.read_text()[:40])
    capsys.readouterr()
    after = datasets.load_split("scenes", "train", **load)
    err = capsys.readouterr().err
    assert f"the dataset cache file {path} is damaged" in err, err
    assert "preparing it again" in err
    assert set(after) == set(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    # Healed for good: the next load only reads.
    datasets.load_split("scenes", "validation", **load)
    assert "damaged" not in capsys.readouterr().err


def test_read_split_alone_names_the_damaged_file(tmp_path):
    data_dir = tmp_path / "data"
    builder = datasets.get_builder("scenes", resolution=R, seed=3, counts=COUNTS, data_dir=data_dir)
    datasets.prepare(builder)
    corrupt(shard(data_dir))
    with pytest.raises(datasets.CacheDamaged, match="chunk data hash mismatch|Corrupted") as info:
        datasets.read_split(builder, "train")
    assert info.value.files == [shard(data_dir)]
    assert isinstance(info.value, ValueError)  # a user error: the scripts print it on one line


def test_a_cache_damaged_again_after_preparing_it_stops_naming_the_cache_directory(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    prepare = datasets.prepare

    def prepare_on_a_bad_disk(builder, *args, **kwargs):
        prepare(builder, *args, **kwargs)
        corrupt(shard(data_dir))

    monkeypatch.setattr(datasets, "prepare", prepare_on_a_bad_disk)
    with pytest.raises(datasets.CacheError, match="even after preparing it again") as info:
        datasets.load_split("scenes", "train", resolution=R, seed=3, counts=COUNTS, data_dir=data_dir)
    assert f"the dataset cache in {data_dir.resolve()}" in str(info.value) or f"{data_dir}" in str(info.value)
    assert "MTL_DATA_DIR" in str(info.value)


def test_train_script_heals_a_damaged_cache(tmp_path):
    """The issue's reproduction: a damaged train shard, then scripts/train.py."""
    data_dir = tmp_path / "data"
    datasets.prepare(datasets.get_builder("scenes", resolution=R, seed=0, counts=COUNTS, data_dir=data_dir))
    corrupt(shard(data_dir))
    env = {**os.environ, "MTL_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([sys.executable, str(SCRIPTS / "train.py"), "--tasks", "seg", "--steps", "2",
                          "--batch-size", "4", "--resolution", str(R), "--counts", ",".join(map(str, COUNTS)),
                          "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert f"the dataset cache file {shard(data_dir)} is damaged" in run.stderr
    assert "seg" in run.stdout and "total" in run.stdout


BROUGHT = ("rgb", "depth_zbuffer", "segment_semantic")


def _taskonomy_dir(tmp_path: Path) -> Path:
    scenes = render_scenes(seed=1, count=12, resolution=R)
    return taskonomy.write_taskonomy(tmp_path / "taskonomy", {m: scenes[m] for m in BROUGHT},
                                     [taskonomy.stem_for_index(i) for i in range(12)])


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_users_directory_is_never_deleted_its_cache_is_rebuilt_and_a_bad_source_file_is_named(tmp_path, capsys):
    root = _taskonomy_dir(tmp_path)
    data_dir = tmp_path / "data"
    before = datasets.load_split(root, "train", resolution=R, data_dir=data_dir, modalities=BROUGHT)
    sources = _listing(root)

    corrupt(shard(data_dir))  # the derived cache: rebuilt from the PNGs
    capsys.readouterr()
    after = datasets.load_split(root, "train", resolution=R, data_dir=data_dir, modalities=BROUGHT)
    assert "is damaged" in capsys.readouterr().err
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    assert _listing(root) == sources

    # Now a source PNG goes bad too, keeping its size and time (bit rot): the cache
    # is rebuilt from it and the error names that file; nothing of the user's is deleted.
    png = sorted((root / "depth_zbuffer").glob("*.png"))[0]
    stat = png.stat()
    corrupt(png, size=64)
    os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    corrupt(shard(data_dir))
    with pytest.raises(taskonomy.TaskonomyLayoutError, match=png.name):
        datasets.load_split(root, "train", resolution=R, data_dir=data_dir, modalities=BROUGHT)
    assert sorted(_listing(root)) == sorted(sources)


# ---------------------------------------------------------------------------
# 2. A full disk.

TINY = ["--tasks", "seg,depth", "--budget", "1:2.5:0.5", "--method", "exhaustive", "--resolution", "32",
        "--counts", "16,8,8", "--steps", "20", "--batch-size", "8", "--checkpoint-every", "10", "--quiet"]

# Runs find_groups through mtl.cli.run; with FAIL_AT=n the n-th orbax save fails
# as orbax does on a full disk: a partial step folder, the writer thread's
# traceback logged through absl, a late "Event loop is closed", then the error.
DRIVER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {scripts!r})
    fail_at = int(os.environ.get("FAIL_AT", "0"))
    if fail_at:
        import orbax.checkpoint as ocp
        from absl import logging as absl_logging

        original = ocp.CheckpointManager.save
        calls = [0]

        class Late:
            def __del__(self):
                raise RuntimeError("Event loop is closed")

        def save(self, step, *args, **kwargs):
            calls[0] += 1
            if calls[0] != fail_at:
                return original(self, step, *args, **kwargs)
            partial = Path(self.directory) / f"{{step}}.orbax-checkpoint-tmp"
            (partial / "d").mkdir(parents=True)
            (partial / "d" / "half").write_bytes(b"x" * 1000)
            error = ValueError(
                f'RESOURCE_EXHAUSTED: Error writing "params" in OCDBT database at local file "{{partial}}/": '
                "Failed writing: No space left on device [os_error_code='28']")
            try:
                raise error
            except ValueError:
                absl_logging.exception("_SignalingThread.run() raised an exception: %s", error)
            Late()
            raise error

        ocp.CheckpointManager.save = save
    import find_groups
    from mtl import cli
    cli.run(find_groups.main, sys.argv[1:])
""")


def find_groups(env, out, fail_at=0) -> subprocess.CompletedProcess:
    code = DRIVER.format(scripts=str(SCRIPTS))
    return subprocess.run([sys.executable, "-c", code, *TINY, "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**env, "FAIL_AT": str(fail_at)})


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert "ERROR:absl" not in stderr and "Exception ignored" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_full_disk_while_checkpointing_gives_one_line_and_a_rerun_resumes(env, tmp_path):
    out = tmp_path / "run"
    # Saves: the half-size ensemble at steps 10 and 20, then the full-size one at 10 and 20.
    full = find_groups(env, out, fail_at=4)
    assert full.returncode == 2, full.stderr[-3000:]
    line = one_error_line(full.stderr)
    assert "no space left on device in " + str(out / "checkpoints") in line, line
    assert "checkpoint of step 20" in line and "MB" in line and "rerun the same command" in line
    assert not list((out / "checkpoints").rglob("*.orbax-checkpoint-tmp*"))  # the partial save is gone
    with ResultsStore(out / STORE_NAME) as store:
        kept = {r["key_hash"]: r["result"] for r in store.rows()}
        assert store.count("done") == 2 and store.count("failed") == 0  # the finished half-size pair

    rerun = find_groups(env, out)  # space freed: no patch
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    timing = json.loads((out / "report.json").read_text())["run"]["timing"]
    assert timing["reused"] == 2 and timing["trained"] == 3
    # The full-size networks resumed from their last complete checkpoint (an
    # uninterrupted run's equal: test_train, test_find_groups' kill -9 test).
    assert sorted(e["resumed_from"] or 0 for e in timing["networks"]) == [0, 0, 10, 10, 10]
    with ResultsStore(out / STORE_NAME) as store:
        rows = {r["key_hash"]: r["result"] for r in store.rows()}
        assert store.count("done") == 5 and all(rows[k] == v for k, v in kept.items())


def test_a_checkpoint_cut_short_by_a_full_disk_is_ignored_and_training_resumes(tmp_path, monkeypatch):
    """The half-written step folder orbax leaves is removed (or ignored, and removed on
    the next open); a rerun resumes from the last whole checkpoint, which restores
    bit-identically (test_train)."""
    import orbax.checkpoint as ocp

    from mtl.train import TrainConfig, train_network
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks("depth")
    data = render_scenes(seed=7, count=8, resolution=R)
    cfg = TrainConfig(steps=20, batch_size=4, checkpoint_every=10, steps_per_call=5)
    original = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step != 20:
            return original(self, step, *args, **kwargs)
        partial = Path(self.directory) / f"{step}.orbax-checkpoint-tmp"
        (partial / "d").mkdir(parents=True)
        (partial / "d" / "half").write_bytes(b"x" * 1000)
        raise ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left on device [os_error_code='28']")

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(mtl_cli.DiskFullError, match="checkpoint of step 20") as info:
        train_network(tasks, data, cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    assert info.value.errno == 28 and info.value.directory == (tmp_path / "ck").absolute()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["10"]
    monkeypatch.setattr(ocp.CheckpointManager, "save", original)
    (tmp_path / "ck" / "20.orbax-checkpoint-tmp").mkdir()  # as a kill during the save would leave it
    resumed = train_network(tasks, data, cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    assert resumed.resumed_from == 10 and resumed.losses.shape == (10, 1)
    assert np.isfinite(resumed.losses).all()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["10", "20"]


def test_a_full_disk_while_writing_the_store_leaves_no_half_row(tmp_path, capsys):
    settings = {"kind": "network", "tasks": ["seg"], "train": {"steps": 20, "size": 1.0, "seed": 0}}
    with ResultsStore(tmp_path / "run" / STORE_NAME) as store:
        store.put(settings, {"validation": {"seg": {"loss": 1.0}}})
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")  # the file cannot grow: SQLITE_FULL
        big = {"validation": {"seg": {"loss": 2.0}}, "padding": "x" * 20000}
        with pytest.raises(mtl_cli.DiskFullError) as info:
            store.put({**settings, "tasks": ["depth"]}, big)
        assert store.count("done") == 1 and store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        def main(argv):
            raise info.value

        with pytest.raises(SystemExit) as code:
            mtl_cli.run(main, [])
        assert code.value.code == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"no space left on device in {tmp_path / 'run'}: writing the result of network depth" in line
        store._db.execute("PRAGMA max_page_count=1073741823")  # space freed
        store.put({**settings, "tasks": ["depth"]}, big)
    with ResultsStore(tmp_path / "run" / STORE_NAME) as store:
        assert [r["tasks"] for r in store.rows()] == ["seg", "depth"]


def test_any_other_full_disk_error_names_the_directory_and_its_free_space(tmp_path, capsys):
    def main(argv):
        raise OSError(28, "No space left on device", str(tmp_path / "report.json"))

    with pytest.raises(SystemExit):
        mtl_cli.run(main, [])
    line = one_error_line(capsys.readouterr().err)
    assert f"no space left on device in {tmp_path}: writing {tmp_path / 'report.json'} failed" in line
    assert "free there" in line


# ---------------------------------------------------------------------------
# 3. Two runs on one directory.

HOLDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from grouping.store import ResultsStore
    store = ResultsStore(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
    store.close()
""")


def hold(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO)), str(out / STORE_NAME)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def run_find_groups_main(argv, capsys):
    sys.path.insert(0, str(SCRIPTS))
    try:
        import find_groups
    finally:
        sys.path.remove(str(SCRIPTS))
    with pytest.raises(SystemExit) as exit_info:
        mtl_cli.run(find_groups.main, [str(a) for a in argv])
    return exit_info.value.code, capsys.readouterr().err


def test_a_second_run_on_the_same_directory_refuses_at_once_and_trains_nothing(tmp_path, capsys, monkeypatch):
    import mtl.ensemble
    import mtl.train

    def no_training(*args, **kwargs):
        raise AssertionError("the second run trained a network")

    monkeypatch.setattr(mtl.train, "train_and_evaluate", no_training)
    monkeypatch.setattr(mtl.ensemble, "train_ensemble_and_evaluate", no_training)
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    holder = hold(out)
    try:
        t0 = time.monotonic()
        code, err = run_find_groups_main([*TINY, "--out", out], capsys)
        assert time.monotonic() - t0 < 60
        assert code == 2
        line = one_error_line(err)
        assert f"another run is using the run directory {out}" in line, line
        assert f"pid {holder.pid} on host " in line and "started " in line
        assert "Wait for it to finish, or use another --out" in line
        assert not (out / "checkpoints").exists()
        assert not (tmp_path / "data").exists()  # refused before the data were even rendered
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    # Released when the first run closed its store: the directory opens with no note.
    with ResultsStore(out / STORE_NAME) as store:
        assert store.count("done") == 0
    assert "note:" not in capsys.readouterr().err


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    holder = hold(out)
    with pytest.raises(RunLocked):
        ResultsStore(out / STORE_NAME)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    record = json.loads((out / LOCK_NAME).read_text())
    assert record["pid"] == holder.pid  # the killed run's record is still there
    with ResultsStore(out / STORE_NAME) as store:
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
        store.put({"kind": "network", "tasks": ["seg"]}, {"ok": 1})
    err = capsys.readouterr().err
    assert f"pid {holder.pid}" in err and "no longer running; taking it over" in err


def test_a_hand_written_lock_of_a_dead_process_does_not_block(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": os.uname().nodename,
                                                          "started": "2020-01-01T00:00:00+0000"}))
    with ResultsStore(tmp_path / "run" / STORE_NAME) as store:
        assert store.lock.held


def test_the_lock_is_reentrant_in_one_process_and_held_until_the_last_close(tmp_path):
    path = tmp_path / "run" / STORE_NAME
    probe = [sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from grouping.store import ResultsStore, RunLocked
        try:
            ResultsStore({str(path)!r}).close()
        except RunLocked as e:
            print("refused:", e)
        else:
            print("opened")
    """)]

    def other_process() -> str:
        return subprocess.run(probe, capture_output=True, text=True, timeout=120).stdout.strip()

    outer = ResultsStore(path)
    with ResultsStore(path) as inner:  # the same process: allowed
        inner.put({"kind": "network", "tasks": ["seg"]}, {"ok": 1})
    assert other_process().startswith(f"refused: another run is using the run directory {path.parent}: pid {os.getpid()}")
    with ResultsStore(path, lock=False) as reader:  # reading without the lock
        assert reader.count() == 1
    outer.close()
    assert other_process() == "opened"
    with RunLock(path.parent) as lock:
        assert lock.held
    assert not lock.held


def test_a_store_refused_for_another_reason_releases_its_lock(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / STORE_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a results store"):
        ResultsStore(tmp_path / "junk" / STORE_NAME)
    from grouping import store as store_module

    assert not store_module._HELD

"""Serving the data through tfds without TensorFlow: splits, cache, Taskonomy round trip, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

from tasks import datasets, scenes, taskonomy
from tasks.registry import MODALITIES
from tasks.taskonomy import TaskonomyLayoutError

REPO = Path(__file__).resolve().parents[1]
R = 32
COUNTS = (8, 4, 4)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "default_cache"))


@pytest.fixture(scope="module")
def scene_cache(tmp_path_factory):
    """A prepared 8/4/4 scene set at 32x32, seed 3."""
    data_dir = tmp_path_factory.mktemp("cache")
    datasets.prepare(datasets.get_builder("scenes", resolution=R, seed=3, counts=COUNTS, data_dir=data_dir))
    return data_dir


def _render_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "render_scenes.py"), *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory):
    """20 scenes (seed 7, 32x32) written by scripts/render_scenes.py."""
    out = tmp_path_factory.mktemp("render") / "scenes"
    run = _render_script(
        "--out", str(out), "--count", "20", "--resolution", str(R), "--seed", "7", "--layout", "taskonomy"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith("wrote 20 scenes") and len(run.stdout.strip().splitlines()) == 1
    return out


def test_scene_splits_are_the_documented_index_ranges(scene_cache):
    ranges = datasets.scene_ranges(COUNTS)
    assert ranges == {"train": range(0, 8), "validation": range(8, 12), "test": range(12, 16)}
    for split, indices in ranges.items():
        data = datasets.load_split(
            "scenes", split, resolution=R, seed=3, counts=COUNTS, data_dir=scene_cache, with_stems=True
        )
        assert set(data) == set(MODALITIES) | {"stem"}
        assert list(data["stem"]) == [f"point_{i}_view_0" for i in indices]
        expected = scenes.render_scenes(3, len(indices), R, start=indices.start)
        for m, (dtype, _) in MODALITIES.items():
            assert data[m].dtype == np.dtype(dtype) and len(data[m]) == len(indices)
            np.testing.assert_array_equal(data[m], expected[m], err_msg=f"{split}/{m}")


def test_cache_is_reused_without_rendering(scene_cache, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("render_scenes called although the data is cached")

    monkeypatch.setattr(scenes, "render_scenes", fail)
    data = datasets.load_split(
        "scenes", "val", resolution=R, seed=3, counts={"train": 8, "validation": 4, "test": 4},
        data_dir=scene_cache, modalities=["depth_zbuffer", "rgb"],
    )
    assert sorted(data) == ["depth_zbuffer", "rgb"] and data["rgb"].shape == (4, R, R, 3)


def test_different_settings_do_not_share_a_cache(scene_cache, tmp_path):
    base = datasets.get_builder("scenes", resolution=R, seed=3, counts=COUNTS, data_dir=scene_cache)
    others = [
        datasets.get_builder("scenes", resolution=R, seed=4, counts=COUNTS, data_dir=scene_cache),
        datasets.get_builder("scenes", resolution=R, seed=3, counts=(8, 4, 5), data_dir=scene_cache),
        datasets.get_builder("scenes", resolution=48, seed=3, counts=COUNTS, data_dir=scene_cache),
    ]
    assert base.is_prepared() and not any(b.is_prepared() for b in others)
    assert len({Path(b.data_dir) for b in [base, *others]}) == 4
    assert base.builder_config.name.startswith("r32_s3_n8-4-4_")
    other = datasets.load_split("scenes", "train", resolution=R, seed=4, counts=(2, 1, 1), data_dir=tmp_path)["rgb"]
    np.testing.assert_array_equal(other, scenes.render_scenes(4, 2, R)["rgb"])
    seed3 = datasets.load_split("scenes", "train", resolution=R, seed=3, counts=COUNTS, data_dir=scene_cache)
    assert not np.array_equal(other, seed3["rgb"][:2])


def test_default_settings_and_cache_location(monkeypatch, tmp_path):
    builder = datasets.get_builder("scenes")
    config = builder.builder_config
    assert (config.resolution, config.seed, config.counts) == (64, 0, (4000, 500, 500))
    assert config is datasets.Scenes.BUILDER_CONFIGS[0]
    assert Path(builder.data_dir).is_relative_to(tmp_path / "default_cache")
    monkeypatch.delenv("MTL_DATA_DIR")
    assert datasets.default_data_dir() == Path.home() / ".cache" / "mtl_grouping" / "tfds"


def test_taskonomy_round_trip_through_the_script(rendered_dir, tmp_path):
    seen = []
    for split in datasets.SPLITS:
        data = datasets.load_split(rendered_dir, split, resolution=R, data_dir=tmp_path, with_stems=True)
        for j, stem in enumerate(data["stem"]):
            assert datasets.hash_split(stem) == split
            index = int(stem.split("_")[1])
            expected = scenes.render_scenes(7, 1, R, start=index)
            for m in MODALITIES:
                np.testing.assert_array_equal(data[m][j], expected[m][0], err_msg=f"{stem}/{m}")
        seen += list(data["stem"])
    assert sorted(seen) == sorted(f"point_{i}_view_0" for i in range(20))
    small = datasets.load_split(
        rendered_dir, "train", resolution=16, data_dir=tmp_path, modalities=["rgb", "segment_semantic"]
    )
    assert small["rgb"].shape[1:] == (16, 16, 3) and small["segment_semantic"].shape[1:] == (16, 16)


def test_taskonomy_split_folders(tmp_path):
    root = tmp_path / "data"
    for name, start in (("train", 0), ("val", 5), ("test", 7)):
        taskonomy.render_to_taskonomy(root / name, count=2, resolution=R, seed=1, start=start)
    data = datasets.load_split(
        root, "validation", resolution=R, data_dir=tmp_path / "cache", modalities=["normal"], with_stems=True
    )
    assert list(data["stem"]) == ["point_5_view_0", "point_6_view_0"]
    np.testing.assert_array_equal(data["normal"], scenes.render_scenes(1, 2, R, start=5)["normal"])
    shutil.rmtree(root / "test")
    with pytest.raises(TaskonomyLayoutError, match="no test/"):
        datasets.load_split(root, "train", resolution=R, data_dir=tmp_path / "cache")


@pytest.fixture
def broken(rendered_dir, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(rendered_dir, root)
    return root


def _load_error(root, tmp_path) -> TaskonomyLayoutError:
    with pytest.raises(TaskonomyLayoutError) as info:
        datasets.load_split(root, "train", resolution=R, data_dir=tmp_path / "cache")
    frames = "".join(traceback.format_tb(info.value.__traceback__))
    assert "tensorflow_datasets" not in frames  # not buried in a tfds traceback
    return info.value


def test_missing_modality_folder(broken, tmp_path):
    shutil.rmtree(broken / "edge_occlusion")
    assert "modality folder edge_occlusion/ is missing" in str(_load_error(broken, tmp_path))


def test_file_missing_in_one_modality(broken, tmp_path):
    (broken / "keypoints2d" / "point_4_view_0_domain_keypoints2d.png").unlink()
    message = str(_load_error(broken, tmp_path))
    assert "keypoints2d/point_4_view_0_domain_keypoints2d.png is missing" in message and "rgb/point_4_view_0" in message


def test_corrupt_png(broken, tmp_path):
    (broken / "segment_semantic" / "point_3_view_0_domain_segment_semantic.png").write_bytes(b"\x89PNG garbage")
    message = str(_load_error(broken, tmp_path))
    assert "segment_semantic/point_3_view_0_domain_segment_semantic.png cannot be read" in message
    assert not list((tmp_path / "cache").glob("mtl_taskonomy_local/*"))  # no half-written cache left


def test_truncated_png(broken, tmp_path):
    path = broken / "rgb" / "point_0_view_0_domain_rgb.png"
    path.write_bytes(path.read_bytes()[:80])
    assert "rgb/point_0_view_0_domain_rgb.png cannot be decoded" in str(_load_error(broken, tmp_path))


def test_empty_and_missing_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"data directory {tmp_path / 'empty'} is empty"):
        datasets.load_split(tmp_path / "empty", "train", data_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=f"data directory {tmp_path / 'absent'} does not exist"):
        datasets.load_split(str(tmp_path / "absent"), "train", data_dir=tmp_path / "cache")


def test_empty_hash_split_is_an_error(tmp_path):
    root = tmp_path / "three"
    taskonomy.render_to_taskonomy(root, count=3, resolution=R, seed=0)
    assert [datasets.hash_split(f"point_{i}_view_0") for i in range(3)] == ["train", "train", "test"]
    assert len(datasets.load_split(root, "train", resolution=R, data_dir=tmp_path / "cache")["rgb"]) == 2
    with pytest.raises(ValueError, match="split 'validation' .* is empty"):
        datasets.load_split(root, "validation", resolution=R, data_dir=tmp_path / "cache")


def test_bad_arguments(tmp_path, rendered_dir):
    with pytest.raises(ValueError, match="unknown split"):
        datasets.load_split("scenes", "dev", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown modality 'albedo'"):
        datasets.load_split("scenes", "train", modalities=["albedo"], data_dir=tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        datasets.load_split("scenes", "train", resolution=16, data_dir=tmp_path)
    with pytest.raises(ValueError, match="three positive integers"):
        datasets.load_split("scenes", "train", counts=(4, 0, 1), data_dir=tmp_path)
    with pytest.raises(ValueError, match="counts apply to the embedded scenes only"):
        datasets.load_split(rendered_dir, "train", counts=(1, 1, 1), data_dir=tmp_path)
    assert not os.listdir(tmp_path)  # nothing was prepared


def test_render_script_rejects_bad_arguments(tmp_path):
    run = _render_script("--out", str(tmp_path / "x"), "--count", "-3")
    assert run.returncode == 2 and "error: argument --count" in run.stderr and "Traceback" not in run.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("")
    run = _render_script("--out", str(tmp_path / "full"), "--count", "1", "--resolution", "8")
    assert run.returncode == 2 and "error: --resolution must be in 32..256" in run.stderr


#: What tensorflow-datasets prints while it prepares a dataset, and we silence.
TFDS_OUTPUT = ("Downloading and preparing", "Generating splits", "examples...", "Shuffling", "downloaded and prepared")


def test_preparing_shows_our_progress_bar_and_nothing_of_tfds(tmp_path, capfd):
    datasets.load_split("scenes", "train", resolution=R, seed=5, counts=(4, 2, 2), data_dir=tmp_path / "a")
    out, err = capfd.readouterr()
    assert "rendering scenes" in err and "mtl: preparing mtl_scenes/" in err
    assert not [text for text in TFDS_OUTPUT if text in out + err], out + err
    # progress=False (--quiet): the one line saying what is prepared where, no bar.
    datasets.load_split("scenes", "train", resolution=R, seed=5, counts=(4, 2, 2), data_dir=tmp_path / "b",
                        progress=False)
    out, err = capfd.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("mtl: preparing "), err


def test_a_second_preparer_waits_for_the_first_and_reads_what_it_wrote(tmp_path, capsys):
    """Two commands preparing the same dataset at once: the second to finish used to fail renaming
    its files onto the first's. Now one prepares; the other says it waits, then reads the result.
    The first is played here by this thread holding the lock (`_one_preparer`) and preparing."""
    import fcntl
    import threading
    import time

    first = datasets.get_builder("scenes", resolution=32, counts=(6, 2, 2), data_dir=tmp_path)
    second = datasets.get_builder("scenes", resolution=32, counts=(6, 2, 2), data_dir=tmp_path)
    with datasets._one_preparer(first):
        waiter = threading.Thread(target=datasets.prepare, args=(second, False))
        waiter.start()
        deadline = time.monotonic() + 60
        while "waiting for it" not in capsys.readouterr().err:
            assert time.monotonic() < deadline, "the second preparer did not wait"
            time.sleep(0.05)
        datasets._prepare(first, False)
        assert "preparing mtl_scenes" in capsys.readouterr().err  # the first's line
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert "preparing mtl_scenes" not in capsys.readouterr().err  # the second did not prepare again
    got, want = datasets.read_split(second, "train"), datasets.read_split(first, "train")
    assert len(got["rgb"]) == 6 and set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    lock = next((tmp_path / ".preparing").glob("*.lock"))
    with open(lock) as f:  # released: free to take at once
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)

"""Your own data: NYUv2 and Cityscapes (MTAN/LibMTL .npy) and CelebA (official files) written small
here and read back value for value; every kind of bad input named by folder and file; layouts
recognised; register_task and ArrayData."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from tasks.celeba import ATTRIBUTES
from tasks.datasets import load_split
from tasks.mtan import LayoutError
from tasks.sources import parse_source, resolve
from tests.layouts import write_celeba, write_mtan


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "cache"))


def in_validation(index: int) -> bool:
    """The documented rule: sha256 of the decimal index, first 8 bytes mod 100 >= 90."""
    return int.from_bytes(hashlib.sha256(str(index).encode()).digest()[:8], "big") % 100 >= 90


def load_all(source: str, resolution: int) -> dict:
    return {s: load_split(source, s, resolution=resolution, with_stems=True, progress=False)
            for s in ("train", "validation", "test")}


def test_nyuv2_reads_back_value_for_value(tmp_path):
    written = write_mtan(tmp_path / "nyu", "nyuv2", 30, 4, 16, 16)
    data = load_all(f"nyuv2:{tmp_path / 'nyu'}", 16)
    assert sorted(data["validation"]["stem"]) == sorted(f"train/{i}" for i in range(30) if in_validation(i))
    assert sorted(data["train"]["stem"]) == sorted(f"train/{i}" for i in range(30) if not in_validation(i))
    assert list(data["test"]["stem"]) == [f"val/{i}" for i in range(4)]
    for split in data.values():
        for j, stem in enumerate(split["stem"]):
            sub, i = stem.split("/")
            a = written[(sub, int(i))]
            np.testing.assert_array_equal(split["rgb"][j], np.rint(a["image"] * 255).astype(np.uint8))
            np.testing.assert_array_equal(split["semantic"][j], a["label"] + 1)  # -1 (void) -> 0
            np.testing.assert_array_equal(split["depth"][j], a["depth"][..., 0])
            np.testing.assert_array_equal(split["surface_normal"][j], a["normal"])
    assert data["train"]["semantic"].dtype == np.uint8 and data["train"]["depth"].dtype == np.float32


def test_cityscapes_in_mtan_naming_with_19_classes(tmp_path):
    written = write_mtan(tmp_path / "cs", "cityscapes", 12, 3, 16, 16, label_folder="label_7", fine=True)
    test = load_split(f"cityscapes:{tmp_path / 'cs'}", "test", resolution=16, with_stems=True, progress=False)
    assert set(test) == {"rgb", "semantic", "semantic19", "depth", "stem"}
    for j in range(3):
        np.testing.assert_array_equal(test["semantic"][j], written[("val", j)]["label_7"] + 1)
        np.testing.assert_array_equal(test["semantic19"][j], written[("val", j)]["label_19"] + 1)
    assert [t.name for t in resolve("cityscapes", "seg,seg19,depth")] == ["seg", "seg19", "depth"]
    assert [t.channels for t in resolve("cityscapes", "seg,seg19")] == [8, 20]  # void + 7, void + 19


def test_a_wide_frame_is_resized_whole(tmp_path):
    """16x32 -> 16x16: labels take the centre pixel of each 1x2 block (column 2j+1); the image
    averages the block, exact here as both columns of a block are equal."""
    root = tmp_path / "cs"
    write_mtan(root, "cityscapes", 12, 2, 16, 32)
    image = np.repeat(np.random.default_rng(1).uniform(0, 1, (16, 16, 3)).astype(np.float32), 2, axis=1)
    np.save(root / "val" / "image" / "0.npy", image)
    label = np.load(root / "val" / "label" / "0.npy")
    test = load_split(f"cityscapes:{root}", "test", resolution=16, progress=False)
    np.testing.assert_array_equal(test["rgb"][0], np.rint(image[:, ::2] * 255).astype(np.uint8))
    np.testing.assert_array_equal(test["semantic"][0], label[:, 1::2] + 1)


def test_celeba_reads_back_value_for_value(tmp_path):
    partition = [0, 0, 1, 2, 0, 1, 2, 0]
    written = write_celeba(tmp_path / "celeba", partition, 20, 24)
    data = load_all(f"celeba:{tmp_path / 'celeba'}", 20)
    for split, code in (("train", 0), ("validation", 1), ("test", 2)):
        assert list(data[split]["stem"]) == [f"{i + 1:06d}.jpg" for i, p in enumerate(partition) if p == code]
        for j, name in enumerate(data[split]["stem"]):
            decoded = np.asarray(Image.open(tmp_path / "celeba" / "img_align_celeba" / name).convert("RGB"))
            np.testing.assert_array_equal(data[split]["rgb"][j], decoded[2:22])  # the centre 20x20 of 20x24
            np.testing.assert_array_equal(data[split]["attributes"][j], (written[name][1] > 0).astype(np.uint8))


def test_celeba_is_cropped_then_area_resized(tmp_path):
    """A 40x48 PNG at resolution 20: the centre 40x40 (rows 4..43), then 2x2 means, exact for
    an image constant on each 2x2 block."""
    root = tmp_path / "celeba"
    write_celeba(root, [0, 1, 2], 40, 48, fmt="png")
    blocks = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(blocks, 2, 0), 2, 1)
    Image.fromarray(image).save(root / "img_align_celeba" / "000001.png")
    train = load_split(f"celeba:{root}", "train", resolution=20, progress=False)
    np.testing.assert_array_equal(train["rgb"][0], blocks[2:22])


def test_a_changed_file_is_read_again(tmp_path):
    root = tmp_path / "celeba"
    write_celeba(root, [0, 1, 2], 16, 16, fmt="png")
    before = load_split(f"celeba:{root}", "train", resolution=16, progress=False)["rgb"][0]
    new = np.full((16, 16, 3), 7, np.uint8)
    Image.fromarray(new).save(root / "img_align_celeba" / "000001.png")
    after = load_split(f"celeba:{root}", "train", resolution=16, progress=False)["rgb"][0]
    assert not np.array_equal(before, new)
    np.testing.assert_array_equal(after, new)


def test_a_plain_folder_is_recognised_and_said(tmp_path, capsys):
    write_mtan(tmp_path / "a", "nyuv2", 2, 1, 8, 8)
    write_mtan(tmp_path / "b", "cityscapes", 2, 1, 8, 8)
    write_celeba(tmp_path / "c", [0, 1, 2], 8, 8)
    (tmp_path / "d" / "rgb").mkdir(parents=True)
    for name, kind, said in (("a", "nyuv2", "NYUv2"), ("b", "cityscapes", "Cityscapes"), ("c", "celeba", "CelebA"),
                             ("d", "taskonomy", "Taskonomy")):
        assert parse_source(str(tmp_path / name)).kind == kind
        err = capsys.readouterr().err
        assert f"{tmp_path / name} is in the {said}" in err and f"{kind}:{tmp_path / name}" in err
    assert parse_source("scenes").kind == "scenes"
    with pytest.raises(ValueError, match="unknown data source kind 'nyu'"):
        parse_source(f"nyu:{tmp_path / 'a'}")
    with pytest.raises(ValueError, match=f"NYUv2 .* data directory {tmp_path / 'x'} does not exist"):
        parse_source(f"nyuv2:{tmp_path / 'x'}")


# ---------------------------------------------------------------------------
# Bad input: each names the folder and the file, and says what was expected.


def _mtan_fault(root, fault):
    if fault == "missing folder":
        for f in (root / "val" / "normal").iterdir():
            f.unlink()
        (root / "val" / "normal").rmdir()
    elif fault == "ids differ":
        (root / "train" / "depth" / "3.npy").unlink()
    elif fault == "wrong shape":
        np.save(root / "train" / "depth" / "2.npy", np.ones((16, 16, 2), np.float32))
    elif fault == "wrong dtype":
        np.save(root / "train" / "image" / "1.npy", np.ones((16, 16, 3), np.uint8))
    elif fault == "bad class":
        np.save(root / "train" / "label" / "5.npy", np.full((16, 16), 13.0, np.float32))
    elif fault == "not an array":
        (root / "train" / "label" / "4.npy").write_bytes(b"not numpy")
    elif fault == "empty split":
        for folder in (root / "val").iterdir():
            for f in folder.iterdir():
                f.unlink()


@pytest.mark.parametrize("fault, fragments", [
    ("missing folder", ["val", "normal/ is missing"]),
    ("ids differ", ["train", "depth/3.npy is missing but image/3.npy exists"]),
    ("wrong shape", ["train/depth/2.npy", "(16, 16, 2)", "expected a float HxWx1"]),
    ("wrong dtype", ["train/image/1.npy", "uint8", "expected a float HxWx3 image"]),
    ("bad class", ["train/label/5.npy", "class id 13.0", "expected -1 (void) or 0..12"]),
    ("not an array", ["train/label/4.npy", "cannot be read as a .npy array"]),
    ("empty split", ["val/image", "no .npy files (an empty split)"]),
])
def test_bad_mtan_input_is_named(tmp_path, fault, fragments):
    root = tmp_path / "nyu"
    write_mtan(root, "nyuv2", 12, 2, 16, 16)
    _mtan_fault(root, fault)
    with pytest.raises(LayoutError) as e:
        load_split(f"nyuv2:{root}", "train", resolution=16, progress=False)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def _celeba_fault(root, fault):
    part = root / "list_eval_partition.txt"
    if fault == "missing file":
        (root / "list_attr_celeba.txt").unlink()
    elif fault == "ids differ":
        part.write_text("".join(part.read_text().splitlines(keepends=True)[:-1]))
    elif fault == "image missing":
        (root / "img_align_celeba" / "000002.jpg").unlink()
    elif fault == "undecodable":
        (root / "img_align_celeba" / "000003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    elif fault == "bad value":
        attr = root / "list_attr_celeba.txt"
        attr.write_text(attr.read_text().replace("000004.jpg  1", "000004.jpg  0").replace("000004.jpg -1",
                                                                                           "000004.jpg  0"))
    elif fault == "empty split":
        part.write_text(part.read_text().replace(" 2\n", " 1\n"))


@pytest.mark.parametrize("fault, fragments", [
    ("missing file", ["list_attr_celeba.txt is missing"]),
    ("ids differ", ["000004.jpg is in list_attr_celeba.txt but not in list_eval_partition.txt"]),
    ("image missing", ["img_align_celeba", "000002.jpg is listed"]),
    ("undecodable", ["img_align_celeba/000003.jpg cannot be decoded as an image"]),
    ("bad value", ["list_attr_celeba.txt, line 6", "each 1 or -1"]),
    ("empty split", ["list_eval_partition.txt", "the test split is empty"]),
])
def test_bad_celeba_input_is_named(tmp_path, fault, fragments):
    root = tmp_path / "celeba"
    write_celeba(root, [0, 0, 1, 2], 16, 16)
    _celeba_fault(root, fault)
    with pytest.raises(LayoutError) as e:
        load_split(f"celeba:{root}", "train", resolution=16, progress=False)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def test_tags_nine_attributes_are_those_of_its_notebooks():
    import json
    from pathlib import Path

    from tasks.celeba import TAG_ATTRIBUTES

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "tag2021" / "affinities.json"
    assert list(TAG_ATTRIBUTES) == json.loads(fixture.read_text())["celeba"]["tasks"]
    assert [t.name for t in resolve("celeba", ",".join(TAG_ATTRIBUTES))] == list(TAG_ATTRIBUTES)


def test_an_unknown_attribute_lists_the_40():
    assert [t.name for t in resolve("celeba", "smiling,Young")] == ["Smiling", "Young"]
    with pytest.raises(LayoutError) as e:
        resolve("celeba", "Smiling,Grinning")
    assert "unknown CelebA attribute 'Grinning'" in str(e.value)
    assert all(a in str(e.value) for a in ATTRIBUTES) and len(ATTRIBUTES) == 40


# ---------------------------------------------------------------------------
# find_groups end to end on a tiny set of each layout (32x32, tag, 6 steps).


def _find_groups_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "find_groups.py"
    spec = importlib.util.spec_from_file_location("script_find_groups_own_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind, tasks, plain", [
    ("nyuv2", "depth,normals", False),
    ("cityscapes", "seg,depth", True),
    ("celeba", "Smiling,Young", False),
])
def test_find_groups_end_to_end(tmp_path, capsys, kind, tasks, plain):
    import json

    root = tmp_path / kind
    if kind == "celeba":
        write_celeba(root, [0] * 16 + [1] * 6 + [2] * 6, 32, 40)
    else:
        write_mtan(root, kind, 24, 6, 32, 32)
    out = tmp_path / "run"
    data = str(root) if plain else f"{kind}:{root}"
    code = _find_groups_script().main(["--data", data, "--tasks", tasks, "--resolution", "32", "--method", "tag",
                                       "--steps", "6", "--every", "2", "--batch-size", "4", "--budget", "1,2",
                                       "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    names = [t.name for t in resolve(kind, tasks)]
    assert report["tasks"] == names
    assert report["data"]["source"] == f"{kind}:{root.resolve()}"
    assert {t: m["metric"] for t, m in report["metrics"].items()} == {t.name: t.metric for t in resolve(kind, tasks)}
    matrix = np.array(report["affinity"]["matrix"], dtype=float)
    assert matrix.shape == (len(names), len(names)) and np.isfinite(matrix[~np.eye(len(names), dtype=bool)]).all()
    if plain:
        assert "is in the Cityscapes" in capsys.readouterr().err

"""The Taskonomy layout: exact round trips, resizing, and errors that name the file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from tasks import scenes, taskonomy
from tasks.registry import MODALITIES
from tasks.taskonomy import TaskonomyLayoutError

R = 32
SEED = 5


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A 4-image scene set in the layout, and the arrays it was written from."""
    root = tmp_path_factory.mktemp("layout") / "scenes"
    stems = taskonomy.render_to_taskonomy(root, count=4, resolution=R, seed=SEED, chunk=3)
    return root, stems, scenes.render_scenes(SEED, 4, R)


@pytest.fixture
def copy(rendered, tmp_path):
    """A fresh copy of the rendered set to break."""
    root = tmp_path / "copy"
    shutil.copytree(rendered[0], root)
    return root


def test_file_names_and_encodings(rendered):
    root, stems, _ = rendered
    assert stems == [f"point_{i}_view_0" for i in range(4)]
    assert sorted(p.name for p in root.iterdir()) == sorted(MODALITIES)
    modes = {m: Image.open(root / m / f"point_0_view_0_domain_{m}.png").mode for m in MODALITIES}
    assert modes == {
        "rgb": "RGB", "normal": "RGB", "principal_curvature": "RGB",
        "depth_zbuffer": "I;16", "edge_texture": "I;16", "edge_occlusion": "I;16", "keypoints2d": "I;16",
        "segment_semantic": "L", "reshading": "L",
    }
    curvature = np.asarray(Image.open(root / "principal_curvature" / "point_2_view_0_domain_principal_curvature.png"))
    assert (curvature[..., 2] == 0).all()


def test_round_trip_is_exact(rendered):
    root, stems, arrays = rendered
    assert taskonomy.scan(root) == stems
    for i, stem in enumerate(stems):
        example = taskonomy.read_example(root, stem, MODALITIES)
        for m, (dtype, _) in MODALITIES.items():
            assert example[m].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(example[m], arrays[m][i], err_msg=m)
        same = taskonomy.read_example(root, stem, MODALITIES, resolution=R)
        assert all(np.array_equal(same[m], example[m]) for m in MODALITIES)


def test_plain_names_and_natural_order(tmp_path):
    arrays = scenes.render_scenes(0, 3, R)
    stems = ["img_10", "img_2", "img_1"]
    two = {"rgb": arrays["rgb"], "depth_zbuffer": arrays["depth_zbuffer"]}
    root = taskonomy.write_taskonomy(tmp_path / "d", two, stems)
    for m in ("rgb", "depth_zbuffer"):  # rename to {stem}.png
        for stem in stems:
            (root / m / taskonomy.file_name(stem, m)).rename(root / m / f"{stem}.png")
    assert taskonomy.scan(root, ["rgb", "depth_zbuffer"]) == ["img_1", "img_2", "img_10"]
    example = taskonomy.read_example(root, "img_2", ["depth_zbuffer"])
    np.testing.assert_array_equal(example["depth_zbuffer"], arrays["depth_zbuffer"][1])


def test_resize_rgb_by_area_labels_by_nearest(rendered):
    root, stems, arrays = rendered
    small = taskonomy.read_example(root, stems[1], MODALITIES, resolution=R // 2)
    for m, (dtype, ch) in MODALITIES.items():
        assert small[m].shape == (R // 2, R // 2) + ((ch,) if ch else ()) and small[m].dtype == np.dtype(dtype)
    box = np.asarray(Image.fromarray(arrays["rgb"][1]).resize((R // 2, R // 2), Image.Resampling.BOX))
    np.testing.assert_array_equal(small["rgb"], box)
    # Nearest neighbour: every label value is one of the source pixels (pixel centres 1, 3, 5, ...).
    np.testing.assert_array_equal(small["segment_semantic"], arrays["segment_semantic"][1][1::2, 1::2])
    np.testing.assert_array_equal(small["depth_zbuffer"], arrays["depth_zbuffer"][1][1::2, 1::2])
    big = taskonomy.read_example(root, stems[1], ["normal", "principal_curvature"], resolution=2 * R)
    np.testing.assert_array_equal(big["normal"][::2, ::2], arrays["normal"][1])
    np.testing.assert_array_equal(big["principal_curvature"][1::2, 1::2], arrays["principal_curvature"][1])


def _error(root, modalities=tuple(MODALITIES)) -> str:
    with pytest.raises(TaskonomyLayoutError) as info:
        taskonomy.scan(root, modalities)
    return str(info.value)


def test_missing_modality_folder(copy):
    shutil.rmtree(copy / "normal")
    message = _error(copy)
    assert "normal/" in message and "missing" in message and str(copy) in message


def test_file_missing_in_one_modality(copy):
    (copy / "reshading" / "point_2_view_0_domain_reshading.png").unlink()
    message = _error(copy)
    assert "reshading/point_2_view_0_domain_reshading.png is missing" in message
    assert "rgb/point_2_view_0_domain_rgb.png exists" in message


def test_extra_file_in_one_modality(copy):
    shutil.copy(copy / "rgb" / "point_0_view_0_domain_rgb.png", copy / "rgb" / "point_9_view_0_domain_rgb.png")
    message = _error(copy)
    assert "point_9_view_0_domain_depth_zbuffer.png is missing" in message
    assert "rgb/point_9_view_0_domain_rgb.png" in message


def test_corrupt_png(copy):
    (copy / "depth_zbuffer" / "point_1_view_0_domain_depth_zbuffer.png").write_bytes(b"not a png")
    message = _error(copy)
    assert "depth_zbuffer/point_1_view_0_domain_depth_zbuffer.png cannot be read" in message
    assert "16-bit grayscale PNG" in message


def test_truncated_png_fails_on_reading(copy):
    path = copy / "rgb" / "point_3_view_0_domain_rgb.png"
    path.write_bytes(path.read_bytes()[:60])
    assert len(taskonomy.scan(copy)) == 4  # the header is intact: only decoding finds it
    with pytest.raises(TaskonomyLayoutError, match=r"rgb/point_3_view_0_domain_rgb.png cannot be decoded"):
        taskonomy.read_example(copy, "point_3_view_0", ["rgb"])


def test_wrong_mode_and_size(copy):
    Image.fromarray(np.zeros((R, R), np.uint8)).save(copy / "normal" / "point_0_view_0_domain_normal.png")
    message = _error(copy)
    assert "normal/point_0_view_0_domain_normal.png has PIL mode 'L'" in message and "8-bit RGB" in message
    Image.fromarray(np.zeros((R, R, 3), np.uint8)).save(copy / "normal" / "point_0_view_0_domain_normal.png")
    Image.fromarray(np.zeros((R, R + 1), np.uint8)).save(copy / "reshading" / "point_1_view_0_domain_reshading.png")
    assert "reshading/point_1_view_0_domain_reshading.png is 33x32; expected a square image" in _error(copy)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(copy / "reshading" / "point_1_view_0_domain_reshading.png")
    assert "reshading/point_1_view_0_domain_reshading.png is 16x16; expected 32x32" in _error(copy)


def test_empty_and_missing_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path / 'empty'} is empty" in _error(tmp_path / "empty")
    assert f"{tmp_path / 'nope'} does not exist" in _error(tmp_path / "nope")
    (tmp_path / "hollow" / "rgb").mkdir(parents=True)
    assert "rgb/ holds no PNG files" in _error(tmp_path / "hollow", ["rgb"])


def test_write_rejects_wrong_arrays(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        taskonomy.write_taskonomy(tmp_path, {"depth_zbuffer": np.zeros((1, 8, 8), np.uint8)}, ["a"])
    with pytest.raises(ValueError, match="shape"):
        taskonomy.write_taskonomy(tmp_path, {"rgb": np.zeros((1, 8, 8), np.uint8)}, ["a"])
    with pytest.raises(ValueError, match="unknown modality"):
        taskonomy.write_taskonomy(tmp_path, {"albedo": np.zeros((1, 8, 8), np.uint8)}, ["a"])
    with pytest.raises(ValueError, match="2 images for 1 stems"):
        taskonomy.write_taskonomy(tmp_path, {"reshading": np.zeros((2, 8, 8), np.uint8)}, ["a"])

"""benchmarks/setting_probe.py's analysis, on hand-made probe records (nothing is trained)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.setting_probe import _loss_scales, analyse, analyse_seeds  # noqa: E402

NAMES = ["a", "b", "c"]


def _record(seed: int, pair_ab: tuple[float, float], pair_bc: tuple[float, float]) -> dict:
    """Singles at loss 1 (a), 2 (b), 4 (c); the pairs and the all-task network as given ratios."""
    single = {"a": 1.0, "b": 2.0, "c": 4.0}
    test = {t: {t: single[t]} for t in NAMES}
    test["a+b"] = {"a": single["a"] * pair_ab[0], "b": single["b"] * pair_ab[1]}
    test["b+c"] = {"b": single["b"] * pair_bc[0], "c": single["c"] * pair_bc[1]}
    test["a+c"] = {"a": single["a"] * 1.01, "c": single["c"] * 1.02}
    test["a+b+c"] = {"a": 1.0, "b": 2.2, "c": 4.8}  # relative 1, 1.1, 1.2
    return {"settings": {"tasks": "a,b,c", "seed": seed}, "tasks": NAMES, "test": test,
            "constant": {t: 10.0 for t in NAMES}, "train_seconds": 1.0}


def test_one_probe_headroom_and_best_two_by_hand():
    out = analyse(_record(0, (0.9, 0.95), (1.05, 1.1)))
    # all-task mean relative (1 + 1.1 + 1.2) / 3 = 1.1; best per task a 0.9, b 0.95, c 1 -> 2.85 / 3 = 0.95
    assert out["headroom"] == pytest.approx((1.1 - 0.95) / 1.1)
    # best two networks covering a, b, c: {a+b, c}: (0.9 + 0.95 + 1) / 3 = 0.95
    assert sorted(out["best_two"]) == ["a+b", "c"]
    assert out["gain_two"] == pytest.approx((1.1 - 0.95) / 1.1)


def test_seeds_give_the_transfer_spread_and_the_pair_checks():
    # a+b: a -10, -11, -12 %, b -5, -6, -7 % (std 1: beyond 3x); b+c: b +5, +5, +5.5, c +1, +30, -20 (noise)
    recs = [_record(s, (1 - d / 100, 1 - e / 100), (1 + f / 100, 1 + g / 100))
            for s, (d, e, f, g) in enumerate([(10, 5, 5, 1), (11, 6, 5, 30), (12, 7, 5.5, -20)])]
    out = analyse_seeds(recs)
    ab = out["pairwise_transfer_percent"]["a"]["b"]
    assert ab["mean"] == pytest.approx(-11.0) and ab["std"] == pytest.approx(1.0)
    ba = out["pairwise_transfer_percent"]["b"]["a"]
    assert ba["mean"] == pytest.approx(-6.0) and ba["std"] == pytest.approx(1.0)
    cb = out["pairwise_transfer_percent"]["c"]["b"]
    assert cb["mean"] == pytest.approx(np.mean([1, 30, -20]))
    assert [h["pair"] for h in out["helps"]] == [["a", "b"]]
    # a+c: +1 % and +2 % at every seed (no spread) hurts; b+c does not: b's +5 is steady, c's change is noise
    assert [h["pair"] for h in out["hurts"]] == [["a", "c"]]
    # best per task: a and b in a+b, c alone or in b+c (seed 2: -20 %)
    assert out["headroom_percent"] == pytest.approx(
        [100 * (1.1 - np.mean([1 - d / 100, 1 - e / 100, min(1, 1 + g / 100)])) / 1.1
         for d, e, g in [(10, 5, 1), (11, 6, 30), (12, 7, -20)]])


def test_seeds_of_different_settings_are_refused():
    recs = [_record(0, (0.9, 0.9), (1, 1)), _record(1, (0.9, 0.9), (1, 1))]
    recs[1]["settings"]["tasks"] = "a,b,c,d"
    with pytest.raises(SystemExit, match="one setting"):
        analyse_seeds(recs)


def test_an_option_newer_than_a_probe_counts_as_its_default():
    # seed 0 ran before --depth-annotated existed (absent: its default, None); seed 1 records None
    recs = [_record(0, (0.9, 0.9), (1, 1)), _record(1, (0.9, 0.9), (1, 1))]
    recs[1]["settings"]["depth_annotated"] = None
    analyse_seeds(recs)
    recs[1]["settings"]["depth_annotated"] = 0.047  # another value is another setting
    with pytest.raises(SystemExit, match="one setting"):
        analyse_seeds(recs)


def test_loss_scales():
    assert _loss_scales("", None, None) == {}
    assert _loss_scales("seg=0.5,depth=2", None, None) == {"seg": 0.5, "depth": 2.0}
    for bad in ("seg", "seg=x", "seg=0"):
        with pytest.raises(SystemExit, match="--weights"):
            _loss_scales(bad, None, None)


def test_holes_unlabel_the_asked_fraction_in_blobs_per_modality():
    from benchmarks.setting_probe import _UNLABELLED, _punch_holes
    from tasks.registry import DEPTH_INVALID

    assert _UNLABELLED["depth_zbuffer"] == DEPTH_INVALID

    rng = np.random.default_rng(0)
    data = {"segment_semantic": rng.integers(1, 8, (6, 32, 32)).astype(np.uint8),
            "depth_zbuffer": rng.integers(100, 5000, (6, 32, 32)).astype(np.uint16)}
    before = {k: v.copy() for k, v in data.items()}
    _punch_holes(data, "segment_semantic", "0.75")
    _punch_holes(data, "depth_zbuffer", "0.5")
    seg_holes, depth_holes = data["segment_semantic"] == 0, data["depth_zbuffer"] == DEPTH_INVALID
    # every image loses the asked share of its 1,024 pixels (the quantile: ties aside, exactly)
    assert np.all(np.abs(seg_holes.mean(axis=(1, 2)) - 0.75) <= 2 / 1024)
    assert np.all(np.abs(depth_holes.mean(axis=(1, 2)) - 0.5) <= 2 / 1024)
    # labelled pixels keep their labels; the two modalities' holes are drawn apart
    np.testing.assert_array_equal(data["segment_semantic"][~seg_holes], before["segment_semantic"][~seg_holes])
    np.testing.assert_array_equal(data["depth_zbuffer"][~depth_holes], before["depth_zbuffer"][~depth_holes])
    assert (seg_holes & ~depth_holes).any() and (depth_holes & ~seg_holes).any()
    # blobs, not salt and pepper: most hole pixels have a hole to their right
    right = seg_holes[:, :, :-1] & seg_holes[:, :, 1:]
    assert right.sum() / seg_holes[:, :, :-1].sum() > 0.9
    for bad in (("rgb", "0.5"), ("segment_semantic", "1.5"), ("segment_semantic", "half")):
        with pytest.raises(SystemExit, match="--holes"):
            _punch_holes(data, *bad)


def test_annotated_keeps_seg_and_depth_on_the_asked_share_of_training_images():
    from benchmarks.setting_probe import _unannotate
    from tasks.registry import DEPTH_INVALID

    rng = np.random.default_rng(1)
    train = {"rgb": rng.integers(0, 255, (40, 32, 32, 3)).astype(np.uint8),
             "segment_semantic": rng.integers(1, 8, (40, 32, 32)).astype(np.uint8),
             "depth_zbuffer": rng.integers(100, 5000, (40, 32, 32)).astype(np.uint16),
             "edge_texture": rng.integers(0, 65535, (40, 32, 32)).astype(np.uint16)}
    before = {k: v.copy() for k, v in train.items()}
    annotated = _unannotate(train, 0.25)
    seg_kept = (train["segment_semantic"] != 0).all(axis=(1, 2))
    np.testing.assert_array_equal(annotated, np.flatnonzero(seg_kept))  # what --annotated-repeat repeats
    depth_kept = (train["depth_zbuffer"] != DEPTH_INVALID).all(axis=(1, 2))
    assert seg_kept.sum() == 10 and np.array_equal(seg_kept, depth_kept)  # the same annotated images
    assert (train["segment_semantic"][~seg_kept] == 0).all() and (train["depth_zbuffer"][~seg_kept] == DEPTH_INVALID).all()
    np.testing.assert_array_equal(train["segment_semantic"][seg_kept], before["segment_semantic"][seg_kept])
    for m in ("rgb", "edge_texture"):  # labels computed from the image stay everywhere
        np.testing.assert_array_equal(train[m], before[m])
    with pytest.raises(SystemExit, match="--annotated"):
        _unannotate(train, 0.0)


def test_annotated_apart_gives_seg_and_depth_disjoint_images():
    from benchmarks.setting_probe import _unannotate
    from tasks.registry import DEPTH_INVALID

    train = {"rgb": np.zeros((40, 32, 32, 3), np.uint8), "segment_semantic": np.ones((40, 32, 32), np.uint8),
             "depth_zbuffer": np.full((40, 32, 32), 1000, np.uint16)}
    annotated = _unannotate(train, 0.25, apart=True)
    seg_kept = (train["segment_semantic"] != 0).all(axis=(1, 2))
    depth_kept = (train["depth_zbuffer"] != DEPTH_INVALID).all(axis=(1, 2))
    assert seg_kept.sum() == depth_kept.sum() == 10 and not (seg_kept & depth_kept).any()
    np.testing.assert_array_equal(annotated, np.flatnonzero(seg_kept | depth_kept))
    with pytest.raises(SystemExit, match="--annotated-apart"):
        _unannotate(train, 0.6, apart=True)

    train = {"rgb": np.zeros((40, 32, 32, 3), np.uint8), "segment_semantic": np.ones((40, 32, 32), np.uint8),
             "depth_zbuffer": np.full((40, 32, 32), 1000, np.uint16)}
    annotated = _unannotate(train, 0.25, apart=True, depth_fraction=0.1)  # depth on a share of its own size
    seg_kept = (train["segment_semantic"] != 0).all(axis=(1, 2))
    depth_kept = (train["depth_zbuffer"] != DEPTH_INVALID).all(axis=(1, 2))
    assert seg_kept.sum() == 10 and depth_kept.sum() == 4 and not (seg_kept & depth_kept).any()
    np.testing.assert_array_equal(annotated, np.flatnonzero(seg_kept | depth_kept))
    with pytest.raises(SystemExit, match="--depth-annotated"):
        _unannotate(train, 0.25, apart=True, depth_fraction=0.8)


def test_normals_everywhere_unlabels_depth_through_flags_and_leaves_the_validity_mask_whole():
    import jax.numpy as jnp

    from benchmarks.setting_probe import _unannotate
    from tasks.label_plan import labelled_key
    from tasks.registry import DEPTH_INVALID, TASKS

    depth = np.full((40, 4, 4), 2500, np.uint16)
    depth[:, 0, 0] = DEPTH_INVALID  # background: no surface, on every image
    train = {"rgb": np.zeros((40, 4, 4, 3), np.uint8), "segment_semantic": np.ones((40, 4, 4), np.uint8),
             "depth_zbuffer": depth.copy()}
    annotated = _unannotate(train, 0.25, apart=True, depth_flags=True)
    np.testing.assert_array_equal(train["depth_zbuffer"], depth)  # the validity mask, so normals, whole
    flags = train[labelled_key("depth_zbuffer")]
    seg_kept = (train["segment_semantic"] != 0).all(axis=(1, 2))
    assert flags.sum() == 10 and seg_kept.sum() == 10 and not (flags & seg_kept).any()
    np.testing.assert_array_equal(annotated, np.flatnonzero(flags | seg_kept))
    # The depth task: a prediction 1 off on the 15 surface pixels of each flagged image, 50 off elsewhere
    batch = {k: jnp.asarray(v) for k, v in train.items()}
    target = TASKS["depth"].decode(batch["depth_zbuffer"])
    pred = jnp.where(jnp.asarray(flags)[:, None, None, None], target + 1.0, target + 50.0)
    assert float(TASKS["depth"].compute_loss(pred, batch)) == pytest.approx(1.0)
    assert float(TASKS["depth"].compute_stats(pred, batch)["count"]) == 10 * 15
    assert bool(TASKS["normals"].mask(batch)[:, 1:, 1:].all())  # normals: every image's surface counts


@pytest.mark.parametrize("argv, message", [
    (["--normals-everywhere"], "--normals-everywhere needs --annotated"),
    (["--annotated", "0.1", "--depth-annotated", "0.05"], "--depth-annotated needs --annotated-apart"),
    (["--annotated-repeat", "4"], "--annotated-repeat must be at least 1"),
    (["--annotated", "0.5", "--annotated-repeat", "0"], "--annotated-repeat must be at least 1"),
])
def test_settings_that_need_another_are_refused_before_any_rendering(argv, message, monkeypatch):
    import tasks.scenes
    from benchmarks.setting_probe import main

    monkeypatch.setattr(tasks.scenes, "render_scenes", lambda *a, **k: pytest.fail("rendered before refusing"))
    with pytest.raises(SystemExit, match=message):
        main([*argv, "--out", "/nonexistent/never.json"])


def test_seg_by_height_splits_object_classes_by_metric_height(monkeypatch):
    import tasks.scenes.render as render
    from benchmarks.setting_probe import _seg_by_height
    from tasks.registry import SEG_CLASSES, resolve_tasks
    from tasks.scenes import render_scenes, sample_scene_params

    monkeypatch.setattr(render, "encode_labels", render.encode_labels)  # restored after the test
    base = render_scenes(0, 8, 32)
    tasks = _seg_by_height(resolve_tasks("s,d"), 0.9)
    assert [t.channels for t in tasks] == [len(SEG_CLASSES) + 4, 1]
    new = render_scenes(0, 8, 32)
    a, b = base["segment_semantic"], new["segment_semantic"]
    # a tall object's class is its kind's + 4; everything else and every other label is unchanged
    np.testing.assert_array_equal(np.where(b >= len(SEG_CLASSES), b - 4, b), a)
    assert all(np.array_equal(base[k], new[k]) for k in base if k != "segment_semantic")
    # by hand: an image whose objects all stand below 0.9 m has no tall class, one with a taller object has
    p = sample_scene_params(0, 8)
    size = p.obj_size
    kind = p.obj_kind
    height = np.select([kind == 0, kind == 1], [2 * size[..., 1], 2 * size[..., 0]], size[..., 1])
    tallest = np.where(kind >= 0, height, 0).max(axis=1)
    has_tall = (b >= len(SEG_CLASSES)).any(axis=(1, 2))
    assert (tallest < 0.85).sum() >= 2 and has_tall[tallest > 1.2].any()  # both kinds of image are there
    assert not has_tall[tallest < 0.85].any()  # (an object can hide behind another: only this direction is sure)
    with pytest.raises(SystemExit, match="--seg-by-height"):
        _seg_by_height(tasks, 5.0)


def test_seg_noise_gives_whole_objects_a_wrong_kind_at_the_asked_rate(monkeypatch):
    import tasks.scenes.render as render
    from benchmarks.setting_probe import _seg_noise
    from tasks.scenes import render_scenes

    monkeypatch.setattr(render, "encode_labels", render.encode_labels)  # both restored after the test
    monkeypatch.setattr(render, "MODALITIES", render.MODALITIES)
    base = render_scenes(0, 150, 32)
    _seg_noise(0.3)
    new = render_scenes(0, 150, 32)
    a, b = base["segment_semantic"], new["segment_semantic"]
    np.testing.assert_array_equal(new["segment_semantic_true"], a)
    objects = a >= 4  # box, sphere, cylinder, cone
    np.testing.assert_array_equal(b[~objects], a[~objects])  # floor, walls and ceiling stay true
    assert (b[objects] >= 4).all()  # a wrong kind is another object kind
    assert 0.2 < (b[objects] != a[objects]).mean() < 0.4
    np.testing.assert_array_equal(render_scenes(0, 150, 32)["segment_semantic"], b)  # deterministic
    with pytest.raises(SystemExit, match="--seg-noise"):
        _seg_noise(1.5)

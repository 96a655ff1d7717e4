"""Label plans (tasks/label_plan.py) and training loss weights (TrainConfig.task_weights): the
shares and repeats counted by hand, a flagged task's loss against the loss on its labelled images
alone, the weights against a task whose loss is multiplied, and the store keys of runs without either
unchanged."""

import dataclasses
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grouping.dataspec import DataSpec  # noqa: E402
from grouping.runner import train_settings  # noqa: E402
from mtl import cli  # noqa: E402
from mtl.train import TrainConfig, train_network  # noqa: E402
from tasks.label_plan import PLANS, LabelPlan, apply_plan, labelled_key  # noqa: E402
from tasks.registry import resolve_tasks  # noqa: E402
from tasks.scenes import render_scenes  # noqa: E402

SEG, DEPTH = labelled_key("segment_semantic"), labelled_key("depth_zbuffer")


def _split(n: int) -> dict:
    return {"rgb": np.arange(n)[:, None] * np.ones((1, 3)), "segment_semantic": np.arange(n)}


def test_scarce_plan_shares_are_disjoint_and_the_labelled_images_repeat():
    n = 4000
    out = apply_plan(PLANS["scarce"], _split(n))
    seg, depth = out[SEG][:n], out[DEPTH][:n]
    assert seg.sum() == 250 and depth.sum() == 188  # round(0.0625 * 4000), round(0.047 * 4000)
    assert not (seg & depth).any()
    # 438 labelled images, 15 more times each: 4000 + 438 * 15 rows, the originals first
    assert len(out["rgb"]) == 4000 + 438 * 15 == len(out[SEG]) == len(out["segment_semantic"])
    np.testing.assert_array_equal(out["segment_semantic"][:n], np.arange(n))
    labelled = np.flatnonzero(seg | depth)
    np.testing.assert_array_equal(out["segment_semantic"][n:], np.tile(labelled, 15))
    # every row keeps its image's flags
    ids = out["segment_semantic"]
    np.testing.assert_array_equal(out[SEG], seg[ids])
    np.testing.assert_array_equal(out[DEPTH], depth[ids])
    # the same images for the same split size: every task set sees the same data
    again = apply_plan(PLANS["scarce"], {"rgb": np.zeros((n, 1))})
    np.testing.assert_array_equal(again[SEG], out[SEG])


def test_the_scarce_plan_keeps_the_labels_the_probe_kept():
    # benchmarks/setting_probe.py's --annotated 0.0625 --depth-annotated 0.047 --annotated-apart, the
    # setting the plan comes from: the same images keep seg (the probe voids the rest) and depth
    from benchmarks.setting_probe import _UNLABELLED, _unannotate

    n = 4000
    probe = {"segment_semantic": np.ones((n, 1, 1), np.uint8), "depth_zbuffer": np.zeros((n, 1, 1), np.uint16),
             "rgb": np.zeros((n, 1, 1, 3))}
    _unannotate(probe, 0.0625, apart=True, depth_flags=True, depth_fraction=0.047)  # --normals-everywhere
    plan = apply_plan(PLANS["scarce"], {"rgb": np.zeros((n, 1))})
    np.testing.assert_array_equal(plan[SEG][:n], probe["segment_semantic"][:, 0, 0] != _UNLABELLED["segment_semantic"])
    np.testing.assert_array_equal(plan[DEPTH][:n], probe[DEPTH])


def test_plans_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="at most 1"):
        LabelPlan("x", (("a", 0.7), ("b", 0.5)), 1, "")
    with pytest.raises(ValueError, match="repeat"):
        LabelPlan("x", (("a", 0.5),), 0, "")
    with pytest.raises(ValueError, match="applies once"):
        apply_plan(PLANS["scarce"], apply_plan(PLANS["scarce"], _split(100)))
    with pytest.raises(ValueError, match="'rgb'"):
        apply_plan(PLANS["scarce"], {"segment_semantic": np.zeros(3)})


@pytest.fixture(scope="module")
def scenes():
    return render_scenes(seed=5, count=6, resolution=32)


def test_a_flagged_task_counts_only_its_labelled_images(scenes):
    import jax

    depth, normals, seg = resolve_tasks("depth,normals,seg")
    batch = {k: jnp.asarray(v) for k, v in scenes.items()}
    flags = np.array([True, False, True, False, False, True])
    flagged = {**batch, DEPTH: jnp.asarray(flags), SEG: jnp.asarray(flags)}
    kept = {k: v[flags] for k, v in batch.items()}
    key = jax.random.PRNGKey(0)
    for task in (depth, seg):  # masked (validity and flags) and unmasked (void and flags)
        shape = batch[task.label].shape[:3] + (task.channels,)
        pred = jax.random.normal(key, shape)
        np.testing.assert_allclose(task.compute_loss(pred, flagged), task.compute_loss(pred[flags], kept),
                                   rtol=1e-6)
        # the labels of unlabelled images are never read
        other = dict(flagged)
        other[task.label] = flagged[task.label].at[~flags].set(flagged[task.label][flags][0])
        np.testing.assert_allclose(task.compute_loss(pred, other), task.compute_loss(pred, flagged), rtol=1e-6)
    # normals read depth's validity, not depth's flags: every image counts
    np.testing.assert_array_equal(normals.mask(flagged), normals.mask(batch))


def test_task_weights_train_as_a_multiplied_loss_and_report_the_tasks_units(scenes):
    tasks = resolve_tasks("seg,depth")
    cfg = TrainConfig(steps=4, batch_size=3, steps_per_call=2, optimizer="sgd", learning_rate=0.05)
    weighted = train_network(tasks, scenes, dataclasses.replace(cfg, task_weights=(("seg", 3.0),)), progress=False)
    seg = dataclasses.replace(tasks[0], loss=lambda p, y, m, f=tasks[0].loss: 3.0 * f(p, y, m))
    multiplied = train_network((seg, tasks[1]), scenes, cfg, progress=False)
    np.testing.assert_allclose(weighted.losses[:, 0] * 3.0, multiplied.losses[:, 0], rtol=1e-5)
    np.testing.assert_allclose(weighted.losses[:, 1], multiplied.losses[:, 1], rtol=1e-5)
    plain = train_network(tasks, scenes, cfg, progress=False)
    np.testing.assert_allclose(weighted.losses[0], plain.losses[0], rtol=1e-6)  # step 0: same weights, own units
    assert not np.allclose(weighted.losses[-1], plain.losses[-1])


def test_runs_without_plans_or_weights_keep_their_store_keys():
    assert "task_weights" not in train_settings(TrainConfig())
    assert train_settings(TrainConfig(task_weights=(("seg", 3.0),)))["task_weights"] == [["seg", 3.0]]
    assert "labels" not in DataSpec("scenes", 32, 0, (8, 4, 4)).settings()
    assert DataSpec("scenes", 32, 0, (8, 4, 4), labels="scarce").settings()["labels"] == "scarce"
    with pytest.raises(ValueError, match="positive weight"):
        TrainConfig(task_weights=(("seg", 0.0),))


def test_dataspec_plans_the_training_split_only():
    spec = DataSpec("scenes", 32, 0, (40, 4, 4), labels="scarce")
    tasks = resolve_tasks("seg,depth")
    splits = spec.load(tasks, progress=False)
    # 40 images: seg round(2.5) = 2, depth round(1.88) = 2; 4 labelled, 15 more times each
    assert len(splits["train"]["rgb"]) == 40 + 4 * 15
    assert splits["train"][SEG][:40].sum() == 2 and splits["train"][DEPTH][:40].sum() == 2
    assert not any(k.startswith("labelled:") for s in ("validation", "test") for k in splits[s])
    with pytest.raises(ValueError, match="unknown label plan 'rare'; known: scarce"):
        DataSpec("scenes", 32, labels="rare")


def test_task_weights_option():
    tasks = resolve_tasks("seg,depth,normals")
    assert cli.parse_task_weights("s=3,Depth=2.5", tasks) == (("seg", 3.0), ("depth", 2.5))
    assert cli.parse_task_weights("", tasks) == ()
    for text, message in (("seg=0", "positive"), ("seg", "positive"), ("edges=2", "not one of the tasks"),
                          ("seg=2,s=3", "twice")):
        with pytest.raises(ValueError, match=message):
            cli.parse_task_weights(text, tasks)


def test_the_scripts_default_setting_is_the_scarce_plan_with_its_weights():
    seg_normals = resolve_tasks("seg,normals")
    assert cli.scene_labels(True, None) == "scarce"
    assert cli.scene_labels(False, None) is None  # a data folder has the labels it has
    assert cli.scene_labels(True, "full") is None
    # the plan's weights, for the tasks a run has; '' none; given ones replace them
    assert cli.task_weights_for("scarce", None, seg_normals) == (("seg", 3.0),)
    assert cli.task_weights_for("scarce", None, resolve_tasks("depth,seg")) == (("seg", 3.0), ("depth", 3.0))
    assert cli.task_weights_for(None, None, seg_normals) == ()
    assert cli.task_weights_for("scarce", "", seg_normals) == ()
    assert cli.task_weights_for(None, "normals=2", seg_normals) == (("normals", 2.0),)
    with pytest.raises(ValueError, match="unknown label plan 'rare'; known: scarce, or full"):
        cli.scene_labels(True, "rare")
    with pytest.raises(ValueError, match="embedded scenes only"):
        cli.scene_labels(False, "scarce")


def test_a_record_s_weights_make_the_same_config():
    # JSON gives lists: the config (and its store key) is the one the run had
    cfg = TrainConfig(task_weights=[["seg", 3.0], ["depth", 3.0]])
    assert cfg == TrainConfig(task_weights=(("seg", 3.0), ("depth", 3.0)))
    assert train_settings(cfg) == train_settings(TrainConfig(task_weights=(("seg", 3.0), ("depth", 3.0))))

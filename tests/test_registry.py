"""Task registry: names, aliases, and every loss and metric on hand-made inputs."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from tasks.registry import (
    MODALITIES,
    SEG_CLASSES,
    TASKS,
    UnknownTaskError,
    cross_entropy_loss,
    get_task,
    l1_loss,
    modalities_for,
    resolve_tasks,
)


def test_standley_letters_and_taskonomy_names_resolve():
    assert [t.name for t in resolve_tasks("s,d,n,k,t")] == ["seg", "depth", "normals", "keypoints", "edges"]
    assert [t.name for t in resolve_tasks(["e", "r", "c", "a"])] == ["occlusion", "reshading", "curvature", "autoencoder"]
    assert get_task("Depth_ZBuffer").name == "depth"
    assert get_task(" SEG ").name == "seg"


def test_unknown_task_lists_valid_names_and_aliases():
    with pytest.raises(UnknownTaskError) as err:
        resolve_tasks("seg,depht")
    msg = str(err.value)
    assert "'depht'" in msg
    for t in TASKS.values():
        assert t.name in msg
    assert "(s, " in msg  # aliases are listed


def test_repeated_task_through_an_alias_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        resolve_tasks("seg,s")


def test_too_few_tasks():
    with pytest.raises(ValueError, match="at least 2"):
        resolve_tasks("seg", min_tasks=2)


def test_every_task_reads_a_known_modality():
    for t in TASKS.values():
        assert t.label in MODALITIES
        assert set(t.modalities) <= set(MODALITIES)
    assert modalities_for(resolve_tasks("n")) == ("rgb", "depth_zbuffer", "normal")


def _random_raw(rng, r=8, b=2):
    """A stored-encoding batch with some invalid depth pixels."""
    raw = {}
    for name, (dtype, ch) in MODALITIES.items():
        shape = (b, r, r) + ((ch,) if ch else ())
        hi = len(SEG_CLASSES) if name == "segment_semantic" else np.iinfo(dtype).max
        raw[name] = rng.integers(0, hi, shape).astype(dtype)
    raw["depth_zbuffer"][:, 0, :] = 65535  # top row: no surface
    return {k: jnp.asarray(v) for k, v in raw.items()}


@pytest.mark.parametrize("name", list(TASKS))
def test_perfect_prediction_gives_zero_loss_and_best_metric(name):
    task = TASKS[name]
    batch = _random_raw(np.random.default_rng(0))
    target = task.decode(batch[task.label])
    if name == "seg":
        pred = 50.0 * jnp.eye(task.channels)[target]  # confident one-hot logits
    else:
        pred = target
    loss = float(task.compute_loss(pred, batch))
    assert loss == pytest.approx(0.0, abs=1e-6)
    metrics = task.finalize({k: np.asarray(v) for k, v in task.compute_stats(pred, batch).items()})
    best = 1.0 if task.higher_is_better else 0.0
    assert metrics[task.metric] == pytest.approx(best, abs=0.05 if name == "normals" else 1e-6)


def test_masked_l1_by_hand():
    pred = jnp.array([[[[1.0], [2.0]], [[3.0], [4.0]]]])  # (1,2,2,1)
    target = jnp.zeros_like(pred)
    mask = jnp.array([[[True, False], [True, False]]])
    assert float(l1_loss(pred, target, mask)) == pytest.approx((1 + 3) / 2)
    assert float(l1_loss(pred, target, None)) == pytest.approx(10 / 4)


def test_cross_entropy_by_hand_ignores_void():
    logits = jnp.zeros((1, 1, 3, 4))  # uniform over 4 classes
    labels = jnp.array([[[0, 1, 3]]])  # the first pixel is void
    assert float(cross_entropy_loss(logits, labels, None)) == pytest.approx(math.log(4), rel=1e-6)
    logits = logits.at[0, 0, 1, 1].set(100.0)  # pixel 2 is certain and right
    assert float(cross_entropy_loss(logits, labels, None)) == pytest.approx(math.log(4) / 2, rel=1e-5)


def test_miou_by_hand():
    seg = TASKS["seg"]
    labels = jnp.array([[[1, 1, 2, 2, 0]]], dtype=jnp.uint8)
    pred_ids = jnp.array([[[1, 2, 2, 2, 5]]])  # the void pixel's guess does not count
    logits = 10.0 * jnp.eye(seg.channels)[pred_ids]
    batch = {"segment_semantic": labels}
    m = seg.finalize({k: np.asarray(v) for k, v in seg.compute_stats(logits, batch).items()})
    # class 1: tp 1, fn 1 -> 1/2; class 2: tp 2, fp 1 -> 2/3
    assert m["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)


def test_depth_rmse_in_metres_by_hand():
    depth = TASKS["depth"]
    raw = jnp.full((1, 2, 2), 2500, jnp.uint16).at[0, 0, 0].set(65535)
    batch = {"depth_zbuffer": raw}
    target = depth.decode(raw)
    assert float(target[0, 1, 1, 0]) == pytest.approx(1.0)  # (2500 - 1500) / 1000
    pred = target + 1.0  # one normalised unit = 1000/512 m everywhere
    m = depth.finalize({k: np.asarray(v) for k, v in depth.compute_stats(pred, batch).items()})
    assert m["rmse_m"] == pytest.approx(1000 / 512, rel=1e-6)
    assert float(depth.compute_loss(pred, batch)) == pytest.approx(1.0)


def test_normal_angle_by_hand():
    normals = TASKS["normals"]
    raw = jnp.array([[[[128, 255, 128]]]], jnp.uint8)  # ~ (0, 1, 0)
    batch = {"normal": raw, "depth_zbuffer": jnp.full((1, 1, 1), 1000, jnp.uint16)}
    pred = jnp.array([[[[1.0, 0.0, 0.0]]]])
    m = normals.finalize({k: np.asarray(v) for k, v in normals.compute_stats(pred, batch).items()})
    assert m["mean_angle_deg"] == pytest.approx(90.0, abs=0.5)

"""Image-level tasks: the pooled head, its losses and metrics on hand-made inputs, its cost, and
the Python API (register_task, ArrayData)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mtl.cost import network_flops
from mtl.model import ImageHead, MultiTaskNet, encoder_channels
from tasks import registry
from tasks.celeba import CELEBA_TASKS
from tasks.custom import ArrayData, register_task
from tasks.registry import (
    _accuracy_finalize,
    _binary_stats,
    _class_stats,
    binary_cross_entropy_loss,
    softmax_cross_entropy_loss,
)


def test_binary_cross_entropy_by_hand():
    logits = jnp.array([[2.0], [-1.0], [0.0]])
    target = jnp.array([1.0, 1.0, 0.0])
    # -log sigmoid(2), -log sigmoid(-1), -log(1 - sigmoid(0))
    want = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1)) + math.log(2)) / 3
    assert float(binary_cross_entropy_loss(logits, target, None)) == pytest.approx(want, rel=1e-6)
    # predictions 1, 0, 0 (a logit of 0 is not > 0) against 1, 1, 0: two of three right
    stats = {k: float(v) for k, v in _binary_stats(logits, target, None).items()}
    assert stats == {"correct": 2.0, "count": 3.0}
    out = _accuracy_finalize(stats)
    assert out["accuracy"] == pytest.approx(2 / 3) and out["error_rate"] == pytest.approx(1 / 3)


def test_softmax_cross_entropy_by_hand():
    logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    labels = jnp.array([2, 0, 1])
    e = math.e
    want = (-math.log(e**3 / (e + e**2 + e**3)) + math.log(3) + -math.log(1 / (e**5 + 2))) / 3
    assert float(softmax_cross_entropy_loss(logits, labels, None)) == pytest.approx(want, rel=1e-6)
    # argmax 2, 0 (first of a tie), 0 against 2, 0, 1
    assert _accuracy_finalize(_class_stats(logits, labels, None))["error_rate"] == pytest.approx(1 / 3)


def test_an_attribute_task_reads_its_column():
    smiling = CELEBA_TASKS.get("smiling")
    attrs = np.zeros((2, 40), np.uint8)
    attrs[0, 31] = 1  # Smiling is attribute 31
    loss = smiling.compute_loss(jnp.array([[3.0], [3.0]]), {"attributes": jnp.asarray(attrs)})
    want = (math.log(1 + math.exp(-3)) + math.log(1 + math.exp(3))) / 2
    assert float(loss) == pytest.approx(want, rel=1e-6)


def test_the_head_pools_then_projects():
    head = ImageHead(4, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
    z = jnp.arange(2 * 3 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 3, 4)
    w, b = head.linear.kernel[...], head.linear.bias[...]
    np.testing.assert_allclose(head(z), z.mean(axis=(1, 2)) @ w + b, rtol=1e-6)


def test_a_network_with_image_and_dense_tasks():
    tasks = (registry.get_task("seg"), CELEBA_TASKS.get("Young"))
    out = nnx.eval_shape(lambda: MultiTaskNet(tasks, rngs=nnx.Rngs(0))(jnp.zeros((2, 32, 32, 3))))
    assert out["seg"].shape == (2, 32, 32, len(registry.SEG_CLASSES)) and out["Young"].shape == (2, 1)


def test_image_heads_count_in_the_cost():
    """The head adds at least the linear layer's 2 C K multiply-adds to the encoder, and at most
    that plus the pooling (one add per feature value) and the bias, with a little slack."""
    tasks = CELEBA_TASKS.resolve("Smiling,Young,Male")
    cost = network_flops(tasks, resolution=64)
    c, hw = encoder_channels(1.0)[-1], (64 // 8) ** 2
    per_head_low, per_head_high = 2 * c, 2 * c + c * hw + c + 1
    assert 3 * per_head_low <= cost.decoder_flops <= 3 * per_head_high * 1.1


# ---------------------------------------------------------------------------
# The Python API.


@pytest.fixture
def clean_registry():
    before = dict(registry.DEFAULT.tasks)
    yield
    for name in set(registry.DEFAULT.tasks) - set(before):
        t = registry.DEFAULT.tasks.pop(name)
        for key in (t.name, *t.aliases):
            registry.DEFAULT._by_alias.pop(key.lower(), None)


def test_register_task(clean_registry):
    t = register_task("parity", label="p", channels=2, kind="image", loss="softmax")
    assert registry.get_task("PARITY") is t and t.metric == "error_rate" and not t.higher_is_better
    with pytest.raises(ValueError, match="already registered"):
        register_task("parity", label="p", channels=2, kind="image")
    with pytest.raises(ValueError, match="already names the task 'seg'"):
        register_task("mine", label="x", channels=1, aliases=("s",))
    with pytest.raises(ValueError, match="loss 'bce' needs channels=1"):
        register_task("b", label="x", channels=2, kind="image", loss="bce")
    with pytest.raises(ValueError, match="loss 'l1' is for dense tasks"):
        register_task("c", label="x", channels=1, kind="image", loss="l1")
    custom = register_task("sq", label="y", channels=1, loss=lambda p, t, m: ((p - t[..., None]) ** 2).mean())
    assert custom.metric == "loss" and custom.finalize({}) == {}


class Source:
    """A random-access source (len, [i]) of per-sample mappings, as grain's."""

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays["rgb"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.arrays.items()}


def _split(n, seed):
    rng = np.random.default_rng(seed)
    return {"rgb": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "y": rng.integers(0, 2, n).astype(np.uint8)}


def test_array_data_from_arrays_or_a_source_is_the_same(clean_registry):
    splits = [_split(6, 0), _split(3, 1), _split(3, 2)]
    a = ArrayData(*splits)
    b = ArrayData(*(Source(s) for s in splits))
    assert a.fingerprint == b.fingerprint and a.resolution == 32
    for s, arrays in a.splits.items():
        for k in arrays:
            np.testing.assert_array_equal(arrays[k], b.splits[s][k])
    float_rgb = dict(splits[0], rgb=splits[0]["rgb"] / 255.0)
    np.testing.assert_array_equal(ArrayData(float_rgb, *splits[1:]).splits["train"]["rgb"], splits[0]["rgb"])
    t = register_task("y_task", label="y", channels=1, kind="image")
    assert a.check([t])["dataset"] == f"arrays/{a.fingerprint}"
    assert ArrayData(_split(6, 5), *splits[1:]).fingerprint != a.fingerprint


@pytest.mark.parametrize("train, message", [
    ({"y": np.zeros(4)}, "the train split has no 'rgb'"),
    ({"rgb": np.zeros((4, 32, 32, 3), np.uint8), "y": np.zeros(3)}, "'y' holds 3 samples and 'rgb' 4"),
    ({"rgb": np.zeros((0, 32, 32, 3), np.uint8)}, "the train split is empty"),
    ({"rgb": np.full((2, 32, 32, 3), 2.0)}, "values outside \\[0, 1\\]"),
    ({"rgb": np.zeros((2, 32, 16, 3), np.uint8)}, "expected \\(N, R, R, 3\\) square images"),
    (Source({"rgb": np.zeros((0, 32, 32, 3), np.uint8)}), "the train split is empty"),
    (5, "expected a mapping of arrays or a random-access source"),
])
def test_array_data_bad_input(train, message):
    with pytest.raises(ValueError, match=message):
        ArrayData(train, _split(2, 1), _split(2, 2))


def test_array_data_names_a_missing_label(clean_registry):
    t = register_task("z_task", label="z", channels=1, kind="image")
    with pytest.raises(ValueError, match="the train split has no 'z' array, needed by the tasks z_task"):
        ArrayData(_split(2, 0), _split(2, 1), _split(2, 2)).check([t])

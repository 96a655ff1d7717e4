"""Training: loss goes down, checkpoints restore exactly, runs resume, NaN stops."""

import jax
import numpy as np
import pytest

from mtl.train import (
    TrainConfig,
    TrainingDiverged,
    evaluate,
    make_optimizer,
    to_device,
    train_network,
    Checkpoints,
)
from tasks.registry import TASKS, resolve_tasks
from tasks.scenes import render_scenes


@pytest.fixture(scope="module")
def tiny():
    return render_scenes(seed=7, count=8, resolution=32)


def test_a_few_hundred_steps_on_one_batch_drive_every_loss_far_down(tiny):
    # One batch of two images, all nine tasks: the network must memorise it.
    # (Sparse targets, occlusion edges and curvature, need the small batch:
    # L1 first pulls their predictions to the median, zero.)
    tasks = tuple(TASKS.values())
    cfg = TrainConfig(steps=300, batch_size=2, learning_rate=2e-3, steps_per_call=50)
    result = train_network(tasks, {k: v[:2] for k, v in tiny.items()}, cfg, progress=False)
    first, last = result.losses[:5].mean(0), result.losses[-10:].mean(0)
    for t, a, b in zip(tasks, first, last):
        assert b < 0.25 * a, f"{t.name}: loss {a:.4f} -> {b:.4f}"


def test_same_seed_same_run_and_checkpoint_restores_bit_identical(tiny, tmp_path):
    tasks = resolve_tasks("seg,depth")
    cfg = TrainConfig(steps=20, batch_size=4, checkpoint_every=10, steps_per_call=5)
    a = train_network(tasks, tiny, cfg, checkpoint_dir=tmp_path / "a", progress=False)
    b = train_network(tasks, tiny, cfg, progress=False)
    np.testing.assert_array_equal(a.losses, b.losses)  # repeatable on CPU

    # Restore the saved state into a fresh process-like setting and evaluate.
    split = to_device(tiny, tasks)
    before = evaluate(a.graphdef, a.params, split, tasks)
    like = {"params": a.params, "opt_state": make_optimizer(cfg).init(a.params), "step": np.int32(0)}
    ckpt = Checkpoints(tmp_path / "a")
    assert ckpt.latest_step() == 20
    restored = ckpt.restore(jax.tree.map(np.asarray, like))
    ckpt.close()
    after = evaluate(a.graphdef, restored["params"], split, tasks)
    assert before == after  # bit-identical numbers


def test_an_interrupted_run_resumes_to_the_same_result(tiny, tmp_path):
    tasks = resolve_tasks("normals,edges")
    cfg = TrainConfig(steps=20, batch_size=4, checkpoint_every=10, steps_per_call=5)
    whole = train_network(tasks, tiny, cfg, progress=False)
    killed = train_network(tasks, tiny, cfg, checkpoint_dir=tmp_path, stop_after=13, progress=False)
    assert killed.losses.shape[0] == 13
    resumed = train_network(tasks, tiny, cfg, checkpoint_dir=tmp_path, progress=False)
    assert resumed.resumed_from == 10  # the last checkpoint before the kill
    np.testing.assert_array_equal(resumed.losses, whole.losses[10:])
    for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_diverging_loss_stops_naming_the_task_and_step(tiny):
    tasks = resolve_tasks("depth")
    cfg = TrainConfig(steps=30, batch_size=4, learning_rate=1e30, warmup_fraction=0.0, steps_per_call=10)
    with pytest.raises(TrainingDiverged, match=r"task 'depth' became (nan|inf) at step \d+"):
        train_network(tasks, tiny, cfg, progress=False)


def test_missing_labels_and_bad_config_are_clear(tiny):
    no_normals = {k: v for k, v in tiny.items() if k != "normal"}
    with pytest.raises(ValueError, match="no normal labels, needed by tasks normals"):
        train_network(resolve_tasks("normals"), no_normals, TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="optimizer must be 'adamw' or 'sgd'"):
        TrainConfig(optimizer="adam")
    bad_res = {k: v[:, :30, :30] for k, v in tiny.items()}
    with pytest.raises(ValueError, match="cannot take resolution 30"):
        train_network(resolve_tasks("depth"), bad_res, TrainConfig(steps=1), progress=False)


def test_sgd_with_momentum_also_trains(tiny):
    cfg = TrainConfig(steps=60, batch_size=8, optimizer="sgd", learning_rate=0.05, steps_per_call=20)
    r = train_network(resolve_tasks("edges"), tiny, cfg, progress=False)
    assert r.losses[-5:].mean() < r.losses[:5].mean()


def test_even_batch_splits_a_split_into_equal_batches_or_falls_back():
    from mtl.train import even_batch

    assert even_batch(500) == 50  # 10 batches of 50: one evaluation program
    assert even_batch(200) == 50
    assert even_batch(64) == 64 and even_batch(12) == 12  # a split smaller than a batch is one batch
    assert even_batch(97) == 64  # prime: no divisor in 32..64, so batches of 64 and a short last one
    assert even_batch(96) == 48


def test_batches_slice_a_device_split_in_one_program_as_numpy_does():
    from mtl import runtime
    from mtl.train import batches
    from tests.compiles import compiled_programs

    rng = np.random.default_rng(0)
    host = {"rgb": rng.integers(0, 255, (10, 4, 4, 3), dtype=np.uint8), "depth": rng.random((10, 4, 4), np.float32),
            "labelled:depth": rng.random(10) < 0.5}
    device = {k: runtime.put(v) for k, v in host.items()}
    with compiled_programs() as compiled:
        got = list(batches(device, 4))
    assert len([c for c in compiled if "slice" in c]) == 2  # batches of 4 and the last of 2: one program each
    want = list(batches(host, 4))
    assert [len(b["rgb"]) for b in want] == [4, 4, 2]
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k in w:
            np.testing.assert_array_equal(np.asarray(g[k]), w[k])


def test_a_checkpoint_due_sooner_than_min_seconds_after_the_last_is_skipped(tmp_path, monkeypatch):
    """Each step takes 1 s on a fake clock; checkpoints are due every 5 steps, allowed 7 s apart:
    due at 5 (5 s after the start: skipped), 10 (saved), 15 (5 s later: skipped), 20 (saved)."""
    import types

    import jax.numpy as jnp

    import mtl.step

    clock = [0.0]
    monkeypatch.setattr(mtl.step, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def step(state, data):
        clock[0] += 1.0
        return {**state, "step": state["step"] + 1}, jnp.zeros(())

    state = {"step": jnp.int32(0), "w": jnp.arange(3.0)}
    for min_seconds, saved in ((7.0, [10, 20]), (1e6, []), (0.0, [15, 20])):  # max_to_keep=2: the last two
        cfg = TrainConfig(steps=20, steps_per_call=5, checkpoint_every=5, checkpoint_min_seconds=min_seconds)
        mtl.step.train_loop(state, {}, step, cfg, checkpoint_dir=tmp_path / str(min_seconds), progress=False)
        ckpt = Checkpoints(tmp_path / str(min_seconds))
        assert sorted(ckpt.manager.all_steps()) == saved, min_seconds
        ckpt.close()

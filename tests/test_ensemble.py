"""Ensembles: K networks in one program equal K networks trained one at a time."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from mtl.ensemble import (
    EnsembleMemoryError,
    ensemble_devices,
    evaluate_ensemble,
    member_memory_bound,
    member_memory_bytes,
    plan_chunks,
    plan_ensemble,
    train_ensemble,
    train_ensemble_and_evaluate,
)
from mtl.stacked import Layout
from mtl.train import TrainConfig, TrainingDiverged, evaluate, to_device, train_network
from tasks.registry import resolve_tasks
from tasks.scenes import render_scenes

REPO = Path(__file__).resolve().parents[1]
CFG = TrainConfig(steps=12, batch_size=4, steps_per_call=4)
MEMBERS = [resolve_tasks(m) for m in ("seg", "depth,normals", "seg,depth", "seg,depth,normals")]


@pytest.fixture(scope="module")
def tiny():
    return render_scenes(seed=3, count=12, resolution=32)


@pytest.fixture(scope="module")
def one_at_a_time(tiny):
    return [train_network(m, tiny, CFG, progress=False) for m in MEMBERS]


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


@pytest.mark.parametrize("strategy", ["unroll", "vmap"])
def test_every_member_equals_its_network_trained_alone(tiny, one_at_a_time, strategy):
    results, ens, params = train_ensemble(MEMBERS, tiny, CFG, strategy=strategy, progress=False)
    split = to_device(tiny, resolve_tasks("seg,depth,normals"))
    evals = evaluate_ensemble(ens, params, split, strategy=strategy, batch_size=5)
    for members, alone, res, ev in zip(MEMBERS, one_at_a_time, results, evals, strict=True):
        assert res.tasks == alone.tasks
        # Same initialisation, same minibatches: float32 rounding is all that
        # differs. vmap makes XLA:CPU's Eigen convolutions grouped ones, which
        # sum in another order, and Adam's normalised steps (up to 2e-3 each)
        # carry that to ~1e-4-1e-3 in weights whose gradients are near zero;
        # swapped members or minibatches would differ by 1e-2 and more, and
        # the losses must agree to 1e-5.
        np.testing.assert_allclose(res.losses, alone.losses, rtol=1e-5, atol=1e-6)
        assert_trees_close(res.params, alone.params, atol=2e-5 if strategy == "unroll" else 2e-3)
        rel = 1e-4 if strategy == "unroll" else 2e-3  # (an argmax metric follows the weights)
        expected = evaluate(alone.graphdef, alone.params, to_device(tiny, members), members, batch_size=5)
        assert ev.keys() == expected.keys()
        for task in expected:
            for metric, value in expected[task].items():
                assert ev[task][metric] == pytest.approx(value, rel=rel, abs=1e-5), (task, metric)


def test_layout_pads_every_stack_to_the_device_count():
    layout = Layout.build([("seg",), ("depth", "seg"), ("depth",)], pad_to=2)
    assert layout.encoders == 4  # 3 members + 1 padding encoder
    # seg: members 0 and 1 (already even); depth: members 1 and 2.
    assert layout.slots == {"seg": (0, 1), "depth": (1, 2)}
    assert layout.live == {"seg": (1.0, 1.0), "depth": (1.0, 1.0)}
    layout = Layout.build([("seg",), ("depth", "seg"), ("depth",)], pad_to=4)
    assert layout.slots["seg"] == (0, 1, 0, 0) and layout.live["seg"] == (1.0, 1.0, 0.0, 0.0)
    assert layout.position(2, "depth") == 1


def test_chunks_split_what_does_not_fit_and_refuse_what_never_can():
    # 0.7 * 1000 // 100 = 7 members per device.
    assert plan_chunks(7, 100, 1000) == [range(0, 7)]
    assert plan_chunks(15, 100, 1000) == [range(0, 5), range(5, 10), range(10, 15)]  # 3 balanced chunks
    assert plan_chunks(15, 100, 1000, n_devices=4) == [range(0, 15)]  # 28 fit on 4 devices
    assert plan_chunks(10, 100, 1000, max_members=4) == [range(0, 4), range(4, 8), range(8, 10)]
    with pytest.raises(EnsembleMemoryError, match="needs 1.00 GiB but the device has 0.50 GiB free"):
        plan_chunks(3, 2**30, 2**29)
    with pytest.raises(ValueError, match="max_members must be at least 1"):
        plan_chunks(3, 1, 100, max_members=0)


@pytest.mark.parametrize("size,batch", [(1.0, 4), (0.5, 16)])
def test_the_traced_memory_bound_is_above_what_xla_measures(tiny, size, batch):
    cfg = TrainConfig(steps=12, batch_size=batch, size=size)
    bound = member_memory_bound(MEMBERS, cfg, tiny, "unroll")
    measured = member_memory_bytes(MEMBERS, cfg, tiny, "unroll")
    assert measured < bound < 40 * measured


def test_the_plan_compiles_the_probe_only_where_memory_could_limit_the_chunks(tiny, monkeypatch):
    import mtl.ensemble as ensemble

    cpu = jax.devices("cpu")[:1]
    bound = member_memory_bound(MEMBERS, CFG, tiny, "unroll")
    measured = member_memory_bytes(MEMBERS, CFG, tiny, "unroll")
    # Plenty of memory: the whole ensemble's own trace shows it fits, nothing is compiled.
    monkeypatch.setattr(ensemble, "free_memory_bytes", lambda d: 100 * len(MEMBERS) * bound)
    chunks, how, run = plan_ensemble(MEMBERS, CFG, tiny, "unroll", cpu)
    assert (chunks, how) == ([range(0, 4)], "whole") and run.ens.layout.members == tuple(
        tuple(t.name for t in m) for m in MEMBERS)
    # Two chunks at most 2 members (max_members): one member's bound shows they fit.
    assert plan_ensemble(MEMBERS, CFG, tiny, "unroll", cpu, max_members=2) == (
        [range(0, 2), range(2, 4)], "bound", None)
    # Room for 2 members by the measurement but not by the bound: measured, 2 chunks of 2.
    monkeypatch.setattr(ensemble, "free_memory_bytes", lambda d: int(2.5 * measured / ensemble.MEMORY_FRACTION))
    assert plan_ensemble(MEMBERS, CFG, tiny, "unroll", cpu) == ([range(0, 2), range(2, 4)], "measured", None)
    # Not even one member by either: the measured error.
    monkeypatch.setattr(ensemble, "free_memory_bytes", lambda d: measured // 2)
    with pytest.raises(EnsembleMemoryError, match="one network's training step needs"):
        plan_ensemble(MEMBERS, CFG, tiny, "unroll", cpu)


def test_the_whole_plan_is_trained_from_and_its_step_is_traced_once(tiny):
    from tests.compiles import traced_functions

    cpu = jax.devices("cpu")[:1]
    plain, _, _ = train_ensemble(MEMBERS, tiny, CFG, strategy="unroll", devices=cpu, progress=False)
    with traced_functions() as traced:
        chunks, how, run = plan_ensemble(MEMBERS, CFG, tiny, "unroll", cpu)
        assert how == "whole" and traced.count("step") == 1
        planned, _, _ = train_ensemble(MEMBERS, tiny, CFG, strategy="unroll", devices=cpu, progress=False,
                                       prepared=run)
    assert traced.count("step") == 1  # training reused the plan's trace
    for a, b in zip(planned, plain, strict=True):
        np.testing.assert_array_equal(a.losses, b.losses)
    with pytest.raises(ValueError, match="prepared ensemble is of other member networks"):
        train_ensemble(MEMBERS[:2], tiny, CFG, devices=cpu, progress=False, prepared=run)


def test_chunked_training_equals_one_ensemble_and_reports_every_member(tiny, one_at_a_time):
    splits = {"train": tiny, "validation": {k: v[:6] for k, v in tiny.items()}}
    seen = []
    reports = train_ensemble_and_evaluate(MEMBERS, splits, CFG, max_members=3, progress=False,
                                          on_member=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3]  # chunks of 2 and 2
    for members, alone, report in zip(MEMBERS, one_at_a_time, reports, strict=True):
        expected = evaluate(alone.graphdef, alone.params, to_device(splits["validation"], members), members)
        for task in expected:
            assert report["validation"][task]["loss"] == pytest.approx(expected[task]["loss"], rel=1e-4)
        assert report["steps"] == CFG.steps and set(report["final_train_loss"]) == {t.name for t in members}


def test_the_sweep_benchmarks_early_evaluation_compile_is_reused_and_agrees(tiny):
    """benchmarks/sweep_vs_pytorch.py --compile-early on measures something real: the program
    compiled on the thread is the one evaluation runs."""
    from benchmarks.sweep_vs_pytorch import compile_eval_early
    from tests.compiles import compiled_programs

    cpu, members = jax.devices("cpu")[:1], MEMBERS[:2]
    validation = {k: v[:6] for k, v in tiny.items()}
    _, _, run = plan_ensemble(members, CFG, tiny, "unroll", cpu)
    fn, thread = compile_eval_early(run, validation, "unroll")
    thread.join()
    _, ens, params = train_ensemble(members, tiny, CFG, strategy="unroll", devices=cpu, progress=False,
                                    prepared=run)
    split = to_device(validation, tuple({t.name: t for m in members for t in m}.values()))
    # jax.log_compiles is per thread: these are this thread's (a new fn object would compile anew).
    with compiled_programs() as compiled:
        got = evaluate_ensemble(ens, params, split, strategy="unroll", eval_fn=fn)
    assert "jit(fn)" not in compiled
    assert got == evaluate_ensemble(ens, params, split, strategy="unroll")
    run.mesh = object()  # as if sharded
    with pytest.raises(ValueError, match="one-device ensemble"):
        compile_eval_early(run, validation, "unroll")


def test_a_killed_ensemble_resumes_to_the_same_result(tiny, tmp_path):
    cfg = TrainConfig(steps=12, batch_size=4, steps_per_call=4, checkpoint_every=8)
    whole, _, _ = train_ensemble(MEMBERS[:2], tiny, cfg, progress=False)
    killed, _, _ = train_ensemble(MEMBERS[:2], tiny, cfg, checkpoint_dir=tmp_path, stop_after=10, progress=False)
    assert killed[0].losses.shape[0] == 10
    resumed, _, _ = train_ensemble(MEMBERS[:2], tiny, cfg, checkpoint_dir=tmp_path, progress=False)
    for a, b in zip(resumed, whole):
        assert a.resumed_from == 8
        np.testing.assert_array_equal(a.losses, b.losses[8:])
        assert_trees_close(a.params, b.params, atol=0)


def test_a_diverging_member_is_named(tiny):
    cfg = TrainConfig(steps=20, batch_size=4, learning_rate=1e30, warmup_fraction=0.0, steps_per_call=10)
    with pytest.raises(TrainingDiverged, match=r"network seg: .*task 'seg' became (nan|inf)"):
        train_ensemble(MEMBERS[:2], tiny, cfg, progress=False)


def test_bad_requests_are_clear():
    n = len(jax.local_devices())
    with pytest.raises(ValueError, match=rf"{n + 1} devices asked for, but there are {n} "):
        ensemble_devices(n + 1)
    with pytest.raises(ValueError, match="strategy must be one of auto, vmap, unroll"):
        train_ensemble(MEMBERS, {}, CFG, strategy="pmap")
    with pytest.raises(ValueError, match="at least one member"):
        train_ensemble([], {}, CFG)


SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from mtl.ensemble import train_ensemble, ensemble_devices
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    assert len(jax.devices()) == 4, jax.devices()
    data = render_scenes(seed=3, count=12, resolution=32)
    cfg = TrainConfig(steps=6, batch_size=4, steps_per_call=3)
    members = [resolve_tasks(m) for m in ("seg", "depth,normals", "seg,depth,normals")]  # padded to 4
    out = {}
    for devices in (1, 4):
        results, ens, params = train_ensemble(members, data, cfg, strategy="vmap", devices=devices, progress=False)
        out[devices] = [r.losses.tolist() for r in results]
        out[f"params{devices}"] = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(r.params)]).tolist()
                                   for r in results]
    try:
        ensemble_devices(8)
    except ValueError as e:
        out["error"] = str(e)
    json.dump(out, sys.stdout)
""")


def test_sharded_over_four_host_devices_equals_one_device(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SHARDED], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for one, four in zip(out["1"], out["4"], strict=True):
        np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6)
    for one, four in zip(out["params1"], out["params4"], strict=True):
        # Rounding only (the per-device programs split Eigen's work differently); as in the
        # vmap test above, Adam's normalised steps (up to 2e-3 each) carry it to a few 1e-4
        # in weights whose gradients are near zero (seen: 7e-4 in 0.05% of the weights with
        # 16-8-channel decoders); swapped members would differ by 1e-2 and more.
        np.testing.assert_allclose(four, one, rtol=0, atol=2e-3)
    assert "8 devices asked for, but there are 4 " in out["error"]


MULTIPROCESS = textwrap.dedent("""
    import json, sys
    import jax
    from mtl.cli import init_distributed
    init_distributed()  # as the scripts do, from MTL_DISTRIBUTED, JAX_COORDINATOR_ADDRESS, MTL_NUM_PROCESSES/_ID
    import numpy as np
    from mtl.ensemble import train_ensemble
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    data = render_scenes(seed=3, count=12, resolution=32)
    cfg = TrainConfig(steps=6, batch_size=4, steps_per_call=2, checkpoint_every=2)
    members = [resolve_tasks(m) for m in ("seg", "depth,normals", "seg,depth")]
    # Killed after 4 steps, then resumed from the step-4 checkpoint both processes wrote.
    train_ensemble(members, data, cfg, strategy="vmap", checkpoint_dir=sys.argv[3], stop_after=4, progress=False)
    results, _, _ = train_ensemble(members, data, cfg, strategy="vmap", checkpoint_dir=sys.argv[3], progress=False)
    out = {"resumed_from": results[0].resumed_from,
           "params": [np.concatenate([np.ravel(x) for x in jax.tree.leaves(r.params)]).tolist() for r in results]}
    with open(sys.argv[4], "w") as f:
        json.dump(out, f)
""")


def test_two_processes_share_one_sharded_ensemble_and_resume(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    # Output to files, not pipes: a process blocked on a full pipe would stall the other at a collective.
    procs = []
    for i in range(2):
        with open(tmp_path / f"log{i}.txt", "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", MULTIPROCESS, "", "", str(tmp_path / "ckpt"), str(tmp_path / f"out{i}.json")],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env={**env, "MTL_DISTRIBUTED": "1", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                     "MTL_NUM_PROCESSES": "2", "MTL_PROCESS_ID": str(i)}))
    outputs = []
    for i, proc in enumerate(procs):
        try:
            proc.wait(timeout=600)
        finally:
            proc.kill()
        assert proc.returncode == 0, (tmp_path / f"log{i}.txt").read_text()[-3000:]
        outputs.append(json.loads((tmp_path / f"out{i}.json").read_text()))
    data = render_scenes(seed=3, count=12, resolution=32)
    cfg = TrainConfig(steps=6, batch_size=4, steps_per_call=2)
    members = [resolve_tasks(m) for m in ("seg", "depth,normals", "seg,depth")]
    reference, _, _ = train_ensemble(members, data, cfg, strategy="vmap", progress=False)
    for out in outputs:  # every process ends with every member's parameters
        assert out["resumed_from"] == 4
        for ref, got in zip(reference, out["params"], strict=True):
            flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref.params)])
            np.testing.assert_allclose(got, flat, rtol=0, atol=2e-5)

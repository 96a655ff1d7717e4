"""The speed benchmarks that must not rot: benchmarks/device_suite.py --smoke, the sweep's
candidates, and the PyTorch twin (the parts needing PyTorch skip without it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import torch_twin  # noqa: E402
from benchmarks.sweep_vs_pytorch import candidates  # noqa: E402

HAVE_TORCH = torch_twin.available()


def conv_flops(n_in: int, stride: int, c_in: int, c_out: int) -> int:
    """2 x the multiply-adds of a 3x3 'SAME' convolution on an n_in x n_in input, counting only
    taps that fall inside the image, as XLA's cost analysis does (zero padding is not work)."""
    n_out = -(-n_in // stride)
    pad_lo = max((n_out - 1) * stride + 3 - n_in, 0) // 2
    taps = sum(0 <= o * stride - pad_lo + j < n_in for o in range(n_out) for j in range(3))  # per axis
    return 2 * c_in * c_out * taps * taps


def test_sweep_candidates_are_the_subsets_and_the_ground_truths_36():
    four = candidates(("seg", "depth", "normals", "edges"))
    assert len(four) == 2**4 - 1 and all(s.size == 1.0 for s in four)
    assert len({s.tasks for s in four}) == 15
    five = candidates(("seg", "depth", "normals", "keypoints", "edges"))
    assert len(five) == 36  # 31 subsets at full size and the 5 singles at half size
    assert sorted(s.tasks for s in five if s.size == 0.5) == sorted(
        [("seg",), ("depth",), ("normals",), ("keypoints",), ("edges",)])


def test_device_suite_smoke_runs_every_part_without_tfds(tmp_path, env):
    out = tmp_path / "suite.json"
    cmd = [sys.executable, "benchmarks/device_suite.py", "--smoke", "--without-tfds", "--out", str(out)]
    if not HAVE_TORCH:
        cmd.append("--without-torch")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    parts = result["parts"]
    assert set(parts) == {"train_step", "sweep", "mfu", "find_groups", "ground_truth_slice"}
    for name, part in parts.items():
        assert "error" not in part, f"{name}: {part.get('traceback')}"
    assert result["machine"]["tensorflow_datasets"] is False
    for dtype in ("float32", "bfloat16"):
        step = parts["train_step"][dtype]
        assert step["jax_images_per_s"] > 0
        assert ("speedup_vs_pytorch" in step) == HAVE_TORCH
    assert ("speedup_vs_pytorch" in parts["sweep"]) == HAVE_TORCH
    assert parts["sweep"]["networks"] == 1 and parts["sweep"]["speedup_vs_one_by_one"] > 0
    # The model FLOPs of the one-network (depth) ensemble step, counted by hand from the
    # architecture at 32x32: encoder 3-32-64-128 (stride 2) + a 128 bottleneck at 4x4; the
    # decoder 128 -> 4*16 at 4x4, 16 -> 4*8 at 8x8, head 8 -> 4*1 at 16x16; x3 for the
    # backward pass, x batch 4. Biases and activations (XLA counts them too) add < 2%.
    forward = (conv_flops(32, 2, 3, 32) + conv_flops(16, 2, 32, 64) + conv_flops(8, 2, 64, 128)
               + conv_flops(4, 1, 128, 128) + conv_flops(4, 1, 128, 64) + conv_flops(8, 1, 16, 32)
               + conv_flops(16, 1, 8, 4))
    mfu = parts["mfu"]
    assert mfu["model_flops_per_step"] == pytest.approx(3 * 4 * forward, rel=0.02)
    assert mfu["step_seconds"] > 0 and "mfu" not in mfu  # a CPU has no peak in the table
    fg = parts["find_groups"]
    assert fg["path"] == "find_groups, data rendered in memory (no tensorflow-datasets)"
    # The command's own path: its report's data settings are the tfds path's store keys.
    assert fg["data"]["dataset"].startswith("mtl_scenes/r32_s0_n8-4-4_") and fg["data"]["counts"] == [8, 4, 4]
    assert fg["training_seconds"] > 0
    gt = parts["ground_truth_slice"]
    assert gt["networks"] == 2 and sorted(e["size"] for e in gt["ours"]["ensembles"]) == [0.5, 1.0]


def test_peak_table_picks_the_most_specific_device_kind():
    from benchmarks.device_suite import peak_tflops

    assert peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert peak_tflops("NVIDIA H200", None) == 989.0
    assert peak_tflops("cpu", None) is None and peak_tflops("cpu", 1.5) == 1.5


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed (pip install -e '.[bench]')")
@pytest.mark.parametrize("names,size", [(("seg", "depth", "normals", "edges"), 1.0), (("keypoints",), 0.5)])
def test_torch_twin_has_our_networks_parameters(names, size):
    from flax import nnx

    from mtl.train import TrainConfig, build_model
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(list(names))
    ours = nnx.state(build_model(tasks, TrainConfig(size=size)), nnx.Param)
    ours_shapes = sorted(tuple(x.shape) for x in __import__("jax").tree.leaves(ours))
    theirs = torch_twin.build_net(tasks, size)
    # Flax kernels are (3, 3, in, out), PyTorch's (out, in, 3, 3); biases alike.
    theirs_shapes = sorted(tuple(p.shape[2:]) + tuple(p.shape[1::-1]) if p.ndim == 4 else tuple(p.shape)
                           for p in theirs.parameters())
    assert ours_shapes == theirs_shapes


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed (pip install -e '.[bench]')")
def test_torch_twin_losses_match_ours_on_the_same_predictions():
    """The same predictions and labels give the same loss in both frameworks (tasks.registry's)."""
    import jax.numpy as jnp
    import numpy as np
    import torch

    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    tasks = resolve_tasks("seg,depth,normals,keypoints,edges")
    batch = render_scenes(seed=1, count=3, resolution=32)
    rng = np.random.default_rng(0)
    preds = {t.name: rng.normal(size=(3, 32, 32, t.channels)).astype(np.float32) for t in tasks}
    _, targets, mask = torch_twin.decode(torch_twin.tensors(batch), tasks)
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    for t in tasks:
        ours = float(t.compute_loss(jnp.asarray(preds[t.name]), jbatch))
        pred = torch.from_numpy(preds[t.name]).permute(0, 3, 1, 2)
        theirs = float(torch_twin.task_loss(t, pred, targets[t.name], mask))
        per_image = torch_twin.task_loss_per_image(t, pred, targets[t.name], mask)
        ours_per_image = [float(t.compute_loss(jnp.asarray(preds[t.name][i:i + 1]),
                                               {k: v[i:i + 1] for k, v in jbatch.items()})) for i in range(3)]
        assert theirs == pytest.approx(ours, rel=1e-5), t.name
        np.testing.assert_allclose(per_image.numpy(), ours_per_image, rtol=1e-5, err_msg=t.name)

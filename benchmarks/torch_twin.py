"""The PyTorch twin of our network, for the benchmarks that compare against PyTorch.

`mtl.model.MultiTaskNet` rebuilt in PyTorch from the same constants: the
same encoder (strided 3x3 convolutions, channels scaled by sqrt(size)), one
decoder per task (sub-pixel convolutions, DECODER_CHANNELS), leaky ReLU, the
same losses (tasks.registry: cross-entropy with class 0 ignored, masked or
plain L1 on the same decoded targets), AdamW with the same warm-up + cosine
schedule, minibatches drawn from data held in memory. Standley et al.'s
released code trains its candidate networks this way, one after another.

Only the benchmarks import this module; PyTorch is the optional extra
``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from mtl.model import DECODER_CHANNELS, NEGATIVE_SLOPE, encoder_channels
from mtl.train import TrainConfig
from tasks.registry import DEPTH_INVALID, Task

# How each stored modality becomes a target, as tasks.registry decodes it.
_DECODE = {
    "segment_semantic": "labels",
    "depth_zbuffer": "depth",
    "normal": "signed",
    "principal_curvature": "signed",
    "rgb": "signed",
    "edge_texture": "u16",
    "edge_occlusion": "u16",
    "keypoints2d": "u16",
    "reshading": "u8",
}


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def lr_factor(cfg: TrainConfig):
    """The multiplier of cfg.learning_rate at step s (mtl.train.make_optimizer's schedule)."""
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))
    total = max(cfg.steps, warmup + 1)

    def f(s: int) -> float:
        if s < warmup:
            return s / warmup
        p = min(1.0, (s - warmup) / (total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))

    return f


def build_net(tasks: Sequence[Task], size: float = 1.0):
    """An untrained PyTorch MultiTaskNet for `tasks` at encoder size `size` (channels-first)."""
    import torch.nn.functional as F
    from torch import nn

    enc = encoder_channels(size)

    class Decoder(nn.Module):
        def __init__(self, out_ch):
            super().__init__()
            ins = (enc[-1],) + DECODER_CHANNELS[:-1]
            self.up = nn.ModuleList(nn.Conv2d(i, 4 * o, 3, padding=1) for i, o in zip(ins, DECODER_CHANNELS))
            self.head = nn.Conv2d(DECODER_CHANNELS[-1], 4 * out_ch, 3, padding=1)

        def forward(self, z):
            for conv in self.up:
                z = F.leaky_relu(F.pixel_shuffle(conv(z), 2), NEGATIVE_SLOPE)
            return F.pixel_shuffle(self.head(z), 2).float()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            ins = (3,) + enc[:-1]
            self.down = nn.ModuleList(nn.Conv2d(i, o, 3, stride=2, padding=1) for i, o in zip(ins, enc))
            self.bottleneck = nn.Conv2d(enc[-1], enc[-1], 3, padding=1)
            self.heads = nn.ModuleDict({t.name: Decoder(t.channels) for t in tasks})

        def forward(self, x):
            for conv in self.down:
                x = F.leaky_relu(conv(x), NEGATIVE_SLOPE)
            z = F.leaky_relu(self.bottleneck(x), NEGATIVE_SLOPE)
            return {k: h(z) for k, h in self.heads.items()}

    return Net()


def tensors(data: Mapping[str, np.ndarray], device: str = "cpu") -> dict[str, Any]:
    """The stored arrays as torch tensors on `device` (uint16 widened to int32: torch has no uint16 ops)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v.astype(np.int32) if v.dtype == np.uint16 else v)).to(device)
            for k, v in data.items()}


def decode(batch: Mapping[str, Any], tasks: Sequence[Task], channels_last: bool = False):
    """(input image (B,3,H,W) in [-1, 1], {task: target}, validity mask (B,H,W) float)."""
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rgb = batch["rgb"].permute(0, 3, 1, 2).float().div(127.5).sub(1).contiguous(memory_format=fmt)
    targets = {}
    for t in tasks:
        raw, kind = batch[t.label], _DECODE[t.label]
        if kind == "labels":
            targets[t.name] = raw.long()
            continue
        x = raw.float()
        x = {"depth": lambda x: (x - 1500) / 1000, "signed": lambda x: x / 127.5 - 1,
             "u16": lambda x: x / 65535, "u8": lambda x: x / 255}[kind](x)
        targets[t.name] = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)
    mask = (batch["depth_zbuffer"] != DEPTH_INVALID).float() if "depth_zbuffer" in batch else None
    return rgb, targets, mask


def task_loss(task: Task, pred, target, mask):
    """One task's loss on a batch, as tasks.registry computes it."""
    import torch.nn.functional as F

    if task.label == "segment_semantic":
        return F.cross_entropy(pred, target, ignore_index=0)
    err = (pred - target).abs().mean(1)
    if not task.masked:
        return err.mean()
    return (err * mask).sum() / mask.sum().clamp(min=1)


def task_loss_per_image(task: Task, pred, target, mask):
    """(B,) each image's own loss (its mean over its counted pixels), as mtl.train.make_eval_fn."""
    import torch.nn.functional as F

    if task.label == "segment_semantic":
        nll = F.cross_entropy(pred, target, ignore_index=0, reduction="none")
        return nll.sum((1, 2)) / (target != 0).sum((1, 2)).clamp(min=1)
    err = (pred - target).abs().mean(1)
    if not task.masked:
        return err.mean((1, 2))
    return (err * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)


@dataclasses.dataclass
class TorchRun:
    """One PyTorch network's training: its final per-task losses and seconds."""

    tasks: tuple[str, ...]
    size: float
    final_losses: np.ndarray
    train_seconds: float
    eval_seconds: float
    validation_loss: dict[str, float]


class Trainer:
    """One PyTorch network and its AdamW optimizer; `step()` trains one minibatch, as our jitted step does."""

    def __init__(self, tasks: Sequence[Task], size: float, train: Mapping[str, Any], cfg: TrainConfig, *,
                 device: str = "cpu", channels_last: bool = False, bf16: bool = False):
        import torch

        self.tasks, self.cfg, self.train, self.device = tuple(tasks), cfg, train, device
        self.channels_last = channels_last
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        torch.manual_seed(cfg.seed)
        self.net = build_net(tasks, size).to(device=device, memory_format=fmt)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(cfg))
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.needed = {"rgb", "depth_zbuffer"} | {t.label for t in tasks}
        self.autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    def step(self):
        """One step; returns the (n_tasks,) losses as a device tensor (no host sync)."""
        import torch

        idx = torch.randint(0, len(self.train["rgb"]), (self.cfg.batch_size,), device=self.device, generator=self.gen)
        rgb, y, mask = decode({k: v[idx] for k, v in self.train.items() if k in self.needed}, self.tasks,
                              self.channels_last)
        with self.autocast:
            out = self.net(rgb)
        losses = torch.stack([task_loss(t, out[t.name], y[t.name], mask) for t in self.tasks])
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        self.sched.step()
        return losses.detach()

    def evaluate(self, split: Mapping[str, Any], batch: int = 64) -> dict[str, float]:
        """Per task: the mean over `split`'s images of each image's loss (mtl.train.evaluate's loss)."""
        import torch

        m = len(split["rgb"])
        sums = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.net.eval()
        with torch.no_grad(), self.autocast:
            for lo in range(0, m, batch):
                chunk = {k: v[lo: lo + batch] for k, v in split.items() if k in self.needed}
                rgb, y, mask = decode(chunk, self.tasks, self.channels_last)
                out = self.net(rgb)
                for j, t in enumerate(self.tasks):
                    sums[j] += float(task_loss_per_image(t, out[t.name], y[t.name], mask).sum())
        self.net.train()
        return {t.name: float(sums[j] / m) for j, t in enumerate(self.tasks)}


def train_and_evaluate(tasks: Sequence[Task], size: float, train: Mapping[str, Any], cfg: TrainConfig,
                       validation: Mapping[str, Any] | None = None, *, device: str = "cpu",
                       channels_last: bool = False, bf16: bool = False) -> TorchRun:
    """Trains one network for cfg.steps steps (batch cfg.batch_size drawn from `train`, tensors
    from `tensors`), reading the losses back once per cfg.steps_per_call steps as our loop does,
    then evaluates it on `validation`."""
    import time

    import torch

    t0 = time.perf_counter()
    trainer = Trainer(tasks, size, train, cfg, device=device, channels_last=channels_last, bf16=bf16)
    history, final = [], None
    for s in range(cfg.steps):
        history.append(trainer.step())
        if (s + 1) % cfg.steps_per_call == 0 or s + 1 == cfg.steps:
            final = torch.stack(history).cpu().numpy()
            history = []
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    val = trainer.evaluate(validation) if validation is not None else {}
    return TorchRun(tuple(t.name for t in tasks), size, final[-1], train_seconds, time.perf_counter() - t0, val)

"""Writers of small datasets in the real on-disk layouts (MTAN/LibMTL .npy, CelebA's official files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tasks.celeba import ATTRIBUTES


def write_mtan(root: Path, kind: str, n_train: int, n_val: int, h: int, w: int, *, seed: int = 0,
               label_folder: str = "label", fine: bool = False) -> dict:
    """root/{train,val}/{image,label,depth[,normal]}/<i>.npy as MTAN writes them; returns
    {(split dir, i): {folder: array}} of what was written."""
    rng = np.random.default_rng(seed)
    classes = 13 if kind == "nyuv2" else 7
    written = {}
    for sub, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            # smooth-ish content so a tiny network has something to learn
            yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
            phase = rng.uniform(0, 6.28)
            image = (0.5 + 0.4 * np.sin(6 * xx[..., None] + phase + np.arange(3))).astype(np.float32)
            label = np.floor((np.sin(5 * xx + phase) + 1) / 2 * classes).clip(0, classes - 1).astype(np.float32)
            label[rng.random((h, w)) < 0.1] = -1  # void
            depth = (1 + 3 * yy + rng.uniform(0, 1)).astype(np.float32)[..., None]
            depth[rng.random((h, w)) < 0.1] = 0  # missing
            arrays = {"image": image, label_folder: label, "depth": depth}
            if fine:
                arrays["label_19"] = np.floor((np.cos(4 * yy + phase) + 1) / 2 * 19).clip(0, 18).astype(np.float32)
            if kind == "nyuv2":
                v = rng.normal(size=(h, w, 3)) + np.array([0, 0, 3.0])
                normal = (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
                normal[rng.random((h, w)) < 0.1] = 0  # missing
                arrays["normal"] = normal
            for folder, a in arrays.items():
                (root / sub / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / sub / folder / f"{i}.npy", a)
            written[(sub, i)] = arrays
    return written


def write_celeba(root: Path, partition: list[int], w: int, h: int, *, seed: int = 0, fmt: str = "jpg") -> dict:
    """img_align_celeba/*.jpg, list_attr_celeba.txt and list_eval_partition.txt for len(partition)
    images (partition[i] = 0 train, 1 validation, 2 test); returns {file: (uint8 image, +-1 attributes)}."""
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    attr_lines, part_lines, written = [], [], {}
    for i, p in enumerate(partition):
        name = f"{i + 1:06d}.{fmt}"
        attrs = rng.choice([-1, 1], size=len(ATTRIBUTES))
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([(xx * 9 + i * 17) % 256, (yy * 7 + i * 5) % 256, np.full((h, w), 40 + 100 * (attrs[31] > 0))],
                         -1).astype(np.uint8)
        Image.fromarray(image).save(root / "img_align_celeba" / name, quality=95)
        attr_lines.append(name + " " + " ".join(f"{a:2d}" for a in attrs))
        part_lines.append(f"{name} {p}")
        written[name] = (image, attrs)
    (root / "list_attr_celeba.txt").write_text(f"{len(partition)}\n" + " ".join(ATTRIBUTES) + "\n"
                                               + "\n".join(attr_lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")
    return written

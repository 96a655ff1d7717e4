"""NYUv2 and Cityscapes as preprocessed by MTAN (Liu et al., CVPR 2019) and read by LibMTL.

The layout, one ``<index>.npy`` per sample in each folder::

    root/train/image/0.npy   float HxWx3 in [0, 1]
    root/train/label/0.npy   class id per pixel (float or int), -1 = void
    root/train/depth/0.npy   HxWx1 (or HxW) float, 0 = no measurement
    root/train/normal/0.npy  HxWx3 unit normals (NYUv2 only), 0 = none
    root/val/...             the same folders

NYUv2 has 13 classes (288x384), Cityscapes 7 (128x256); MTAN's own
Cityscapes folders name the labels ``label_7/`` (LibMTL's ``label/``), and
a ``label_19/`` folder, if present, gives the 19-class task too.

Splits: ``val/`` is the test split (LibMTL reports on it); ``train/`` is
divided into train and validation by a hash of the index (sha256 of the
decimal index, first 8 bytes mod 100: below 90 train, else validation), so
networks are chosen on images that the reported numbers never saw.

Stored encodings (`tasks.registry.LAYOUT_MODALITIES`), at resolution R: the
whole frame is resized to RxR (the image by area averaging per channel,
then rounded to 8 bits; labels, depth and normals by nearest neighbour, so
void, missing depth and missing normals stay what they are); class ids are
stored plus one (0 = void).

Every problem raises `LayoutError` naming the folder and file and saying
what was expected.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from PIL import Image

from tasks.registry import Task, TaskSet, _labels, _seg_finalize, _seg_stats, cross_entropy_loss

Array = jnp.ndarray

NYUV2_CLASSES = 13
CITYSCAPES_CLASSES = 7
CITYSCAPES_FINE_CLASSES = 19
#: The folders of each split, per dataset: stored modality -> accepted folder names.
FOLDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "nyuv2": {"rgb": ("image",), "semantic": ("label",), "depth": ("depth",), "surface_normal": ("normal",)},
    "cityscapes": {"rgb": ("image",), "semantic": ("label", "label_7"), "depth": ("depth",)},
}
OPTIONAL = {"cityscapes": {"semantic19": ("label_19",)}}
CLASSES = {("nyuv2", "semantic"): NYUV2_CLASSES, ("cityscapes", "semantic"): CITYSCAPES_CLASSES,
           ("cityscapes", "semantic19"): CITYSCAPES_FINE_CLASSES}
SPLIT_DIRS = {"train": "train", "test": "val"}
VALIDATION_PERCENT = 10
NAMES = {"nyuv2": "NYUv2", "cityscapes": "Cityscapes"}


class LayoutError(ValueError):
    """A directory that is not (or not entirely) in a dataset's expected layout."""


def validation_index(index: int) -> bool:
    """Whether sample `index` of train/ goes to the validation split (about 10%)."""
    bucket = int.from_bytes(hashlib.sha256(str(index).encode()).digest()[:8], "big") % 100
    return bucket >= 100 - VALIDATION_PERCENT


class MtanLayout:
    """A NYUv2 or Cityscapes directory in the MTAN/LibMTL layout (`kind` 'nyuv2' or 'cityscapes')."""

    def __init__(self, root: str | os.PathLike, kind: str):
        if kind not in FOLDERS:
            raise ValueError(f"unknown MTAN dataset {kind!r}; expected one of {', '.join(FOLDERS)}")
        self.kind, self.name = kind, NAMES[kind]
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise LayoutError(f"{self.name} data directory {self.root} does not exist")
        self.split_dirs: dict[str, Path] = {}
        for split, sub in SPLIT_DIRS.items():
            d = self.root / sub
            if not d.is_dir():
                raise LayoutError(f"{self.name} layout error in {self.root}: folder {sub}/ is missing; expected "
                                  f"train/ and val/, each with {', '.join(n[0] + '/' for n in FOLDERS[kind].values())}")
            self.split_dirs[split] = d
        self.folders = {m: self._folder(m, names, required=True) for m, names in FOLDERS[kind].items()}
        for m, names in OPTIONAL.get(kind, {}).items():
            found = self._folder(m, names, required=False)
            if found:
                self.folders[m] = found
        self.modalities = tuple(self.folders)

    def _folder(self, modality: str, names: tuple[str, ...], required: bool) -> str | None:
        """The one folder name of `names` that every split dir has (None if none has it and not `required`)."""
        have = {s: [n for n in names if (d / n).is_dir()] for s, d in self.split_dirs.items()}
        if not any(have.values()) and not required:
            return None
        for s, found in have.items():
            where = self.split_dirs[s]
            if not found:
                raise LayoutError(f"{self.name} layout error in {where}: folder {' or '.join(n + '/' for n in names)} "
                                  f"is missing; expected one <index>.npy per sample in it")
            if len(found) > 1:
                raise LayoutError(f"{self.name} layout error in {where}: both {found[0]}/ and {found[1]}/ exist; "
                                  "expected one of them")
        first = have["train"][0]
        if any(f[0] != first for f in have.values()):
            raise LayoutError(f"{self.name} layout error in {self.root}: train/ has {first}/ but val/ has "
                              f"{have['test'][0]}/; expected the same folder names in both")
        return first

    def classes(self, modality: str) -> int:
        return CLASSES[(self.kind, modality)]

    def _indices(self, split_dir: Path) -> list[int]:
        """The sample indices of one split dir, the same in every folder (LayoutError otherwise)."""
        found: dict[str, set[int]] = {}
        for m, folder in self.folders.items():
            ids = set()
            for entry in os.scandir(split_dir / folder):
                if entry.name.startswith("."):
                    continue
                match = re.fullmatch(r"(\d+)\.npy", entry.name)
                if not match:
                    raise LayoutError(f"{self.name} layout error in {split_dir / folder}: {entry.name} is not an "
                                      "<index>.npy file; expected files 0.npy, 1.npy, ...")
                ids.add(int(match.group(1)))
            found[folder] = ids
        if not found["image"]:
            raise LayoutError(f"{self.name} layout error in {split_dir / 'image'}: no .npy files (an empty split); "
                              "expected one <index>.npy per sample")
        for folder, ids in found.items():
            if ids != found["image"]:
                extra, missing = sorted(ids - found["image"]), sorted(found["image"] - ids)
                what = (f"{folder}/{missing[0]}.npy is missing but image/{missing[0]}.npy exists" if missing else
                        f"{folder}/{extra[0]}.npy has no image/{extra[0]}.npy")
                more = len(extra) + len(missing) - 1
                raise LayoutError(f"{self.name} layout error in {split_dir}: {what}"
                                  f"{f' (and {more} more differences)' if more else ''}; expected the same sample "
                                  f"indices in {', '.join(f + '/' for f in found)}")
        return sorted(found["image"])

    def splits(self) -> dict[str, list[tuple[str, int]]]:
        """split -> [(split dir name, index)] for train, validation and test."""
        train = self._indices(self.split_dirs["train"])
        test = self._indices(self.split_dirs["test"])
        out = {"train": [("train", i) for i in train if not validation_index(i)],
               "validation": [("train", i) for i in train if validation_index(i)],
               "test": [("val", i) for i in test]}
        for split, keys in out.items():
            if not keys:
                raise LayoutError(f"{self.name} layout error in {self.root / 'train'}: the {split} split is empty "
                                  f"({len(train)} training samples; validation takes those whose index hashes to the "
                                  f"last {VALIDATION_PERCENT} of 100 buckets): add samples")
        return out

    def files(self) -> list[Path]:
        """Every file the dataset reads (for the cache fingerprint)."""
        return [self.split_dirs[s] / f / e.name for s in self.split_dirs for f in self.folders.values()
                for e in os.scandir(self.split_dirs[s] / f) if e.name.endswith(".npy")]

    def read(self, key: tuple[str, int], resolution: int) -> dict[str, np.ndarray]:
        """modality -> stored array of one sample, resized to resolution x resolution."""
        sub, index = key
        arrays = {m: self._load(self.root / sub / folder, f"{index}.npy") for m, folder in self.folders.items()}
        image = arrays["rgb"]
        where = self.root / sub / self.folders["rgb"] / f"{index}.npy"
        if image.ndim != 3 or image.shape[-1] != 3 or not np.issubdtype(image.dtype, np.floating):
            raise LayoutError(f"{self.name} layout error: {where} holds {image.dtype} {image.shape}; expected a float "
                              "HxWx3 image in [0, 1]")
        h, w = image.shape[:2]
        out = {"rgb": _resize_image(image, resolution)}
        for m, a in arrays.items():
            if m == "rgb":
                continue
            path = self.root / sub / self.folders[m] / f"{index}.npy"
            out[m] = _nearest(self._check(m, a, path, (h, w)), resolution)
        return out

    def _load(self, folder: Path, name: str) -> np.ndarray:
        try:
            return np.load(folder / name, allow_pickle=False)
        except Exception as e:  # numpy raises several kinds for a bad file
            raise LayoutError(f"{self.name} layout error: {folder / name} cannot be read as a .npy array "
                              f"({type(e).__name__}: {e}); expected one array saved by numpy.save") from None

    def _check(self, m: str, a: np.ndarray, path: Path, hw: tuple[int, int]) -> np.ndarray:
        """One label array -> its stored encoding at full size, after checking shape, dtype and values."""
        numeric = np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
        if m == "surface_normal":
            want, ok = "a float HxWx3 array of unit normals", a.shape == hw + (3,) and np.issubdtype(a.dtype, np.floating)
        elif m == "depth":
            want = "a float HxWx1 (or HxW) depth map"
            ok = a.shape in (hw, hw + (1,)) and np.issubdtype(a.dtype, np.floating)
        else:
            want, ok = "an HxW array of class ids (-1 = void)", a.shape in (hw, hw + (1,)) and numeric
        if not ok:
            raise LayoutError(f"{self.name} layout error: {path} holds {a.dtype} {a.shape}; expected {want} "
                              f"matching the image's {hw[0]}x{hw[1]}")
        if m == "surface_normal":
            return a.astype(np.float32)
        a = a.reshape(hw)
        if m == "depth":
            return a.astype(np.float32)
        n = self.classes(m)
        bad = ~np.isin(a, np.arange(-1, n))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise LayoutError(f"{self.name} layout error: {path} has the class id {a[r, c].item()!r} at row {r}, column {c}; "
                              f"expected -1 (void) or 0..{n - 1}")
        return (a.astype(np.int64) + 1).astype(np.uint8)


def _nearest(array: np.ndarray, resolution: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H,W[,C]) array to (R,R[,C]) (pixel centres, like PIL)."""
    h, w = array.shape[:2]
    rows = (2 * np.arange(resolution) + 1) * h // (2 * resolution)
    cols = (2 * np.arange(resolution) + 1) * w // (2 * resolution)
    return np.ascontiguousarray(array[rows][:, cols])


def _resize_image(image: np.ndarray, resolution: int) -> np.ndarray:
    """Float HxWx3 in [0, 1] -> uint8 RxRx3: area-averaged per channel (PIL BOX), round(255 x)."""
    x = np.clip(image.astype(np.float32), 0.0, 1.0)
    if x.shape[:2] != (resolution, resolution):
        x = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c]), mode="F")
                                 .resize((resolution, resolution), Image.Resampling.BOX)) for c in range(3)], -1)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------
# Tasks: LibMTL's losses (depth: L1 over pixels with a measurement; normals:
# 1 - cosine of the unit prediction over pixels with a normal) and metrics.


def _depth_target(x: Array) -> Array:
    return x.astype(jnp.float32)[..., None]


def _depth_loss(pred: Array, target: Array, mask: Array | None) -> Array:
    m = (target[..., 0] > 0).astype(jnp.float32)
    return (jnp.abs(pred[..., 0] - target[..., 0]) * m).sum() / jnp.maximum(m.sum(), 1.0)


def _depth_stats(pred: Array, target: Array, mask: Array | None) -> dict[str, Array]:
    t, p = target[..., 0], pred[..., 0]
    m = (t > 0).astype(jnp.float32)
    err = jnp.abs(p - t) * m
    return {"abs_sum": err.sum(), "rel_sum": (err / jnp.where(t > 0, t, 1.0)).sum(), "count": m.sum()}


def _depth_finalize(s: Mapping[str, float]) -> dict[str, float]:
    c = max(float(s["count"]), 1.0)
    return {"abs_err": float(s["abs_sum"]) / c, "rel_err": float(s["rel_sum"]) / c}


def _unit_pred(pred: Array) -> Array:
    return pred / jnp.maximum(jnp.linalg.norm(pred, axis=-1, keepdims=True), 1e-6)


def _normal_loss(pred: Array, target: Array, mask: Array | None) -> Array:
    m = (jnp.abs(target).sum(-1) > 0).astype(jnp.float32)
    cos = (_unit_pred(pred) * target).sum(-1)
    return ((1.0 - cos) * m).sum() / jnp.maximum(m.sum(), 1.0)


def _normal_stats(pred: Array, target: Array, mask: Array | None) -> dict[str, Array]:
    m = (jnp.abs(target).sum(-1) > 0).astype(jnp.float32)
    t = target / jnp.maximum(jnp.linalg.norm(target, axis=-1, keepdims=True), 1e-6)
    ang = jnp.degrees(jnp.arccos(jnp.clip((_unit_pred(pred) * t).sum(-1), -1.0, 1.0)))
    out = {"angle_sum": (ang * m).sum(), "count": m.sum()}
    for limit in (11.25, 22.5, 30):
        out[f"within_{limit:g}"] = ((ang < limit) * m).sum()
    return out


def _normal_finalize(s: Mapping[str, float]) -> dict[str, float]:
    c = max(float(s["count"]), 1.0)
    out = {"mean_angle_deg": float(s["angle_sum"]) / c}
    out.update({k: float(v) / c for k, v in s.items() if k.startswith("within_")})
    return out


def _seg_task(name: str, aliases: tuple[str, ...], label: str, classes: int, what: str) -> Task:
    return Task(name=name, aliases=aliases, label=label, channels=classes + 1, decode=_labels,
                loss=cross_entropy_loss, masked=False, stats=_seg_stats, finalize=_seg_finalize, metric="miou",
                higher_is_better=True, description=f"{what} semantic segmentation, {classes} classes "
                                                   "(cross-entropy, void ignored; mIoU)")


DEPTH = Task(name="depth", aliases=("d",), label="depth", channels=1, decode=_depth_target, loss=_depth_loss,
             masked=False, stats=_depth_stats, finalize=_depth_finalize, metric="abs_err", higher_is_better=False,
             description="depth (L1 over pixels with a measurement; absolute and relative error)")
NORMALS = Task(name="normals", aliases=("n", "normal"), label="surface_normal", channels=3,
               decode=lambda x: x.astype(jnp.float32), loss=_normal_loss, masked=False, stats=_normal_stats,
               finalize=_normal_finalize, metric="mean_angle_deg", higher_is_better=False,
               description="surface normals (1 - cosine over pixels with a normal; mean angular error)")

NYUV2_TASKS = TaskSet([_seg_task("seg", ("s", "semantic", "segmentation"), "semantic", NYUV2_CLASSES, "NYUv2"),
                       DEPTH, NORMALS], "NYUv2 tasks")
CITYSCAPES_TASKS = TaskSet([_seg_task("seg", ("s", "semantic", "segmentation", "seg7"), "semantic",
                                      CITYSCAPES_CLASSES, "Cityscapes"),
                            _seg_task("seg19", ("semantic19",), "semantic19", CITYSCAPES_FINE_CLASSES,
                                      "Cityscapes (label_19/)"),
                            DEPTH], "Cityscapes tasks")

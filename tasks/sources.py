"""Where the data comes from: naming a source, recognising a folder's layout, and its tasks.

A source is one of:

* ``scenes``: the embedded procedural scenes (the default);
* ``nyuv2:DIR``, ``cityscapes:DIR``: MTAN/LibMTL's preprocessed .npy
  folders (`tasks.mtan`);
* ``celeba:DIR``: CelebA's official layout (`tasks.celeba`);
* ``taskonomy:DIR``: the Taskonomy layout (`tasks.taskonomy`);
* a plain ``DIR``: recognised by what is in it (CelebA's two list files;
  train/ and val/ with image/ folders: NYUv2 when there is a normal/
  folder, else Cityscapes; anything else: Taskonomy), with a line on
  stderr saying which layout was found.

Each kind has its tasks (`catalogue`): the Taskonomy vocabulary for scenes
and Taskonomy folders, seg/depth/normals for NYUv2, seg/depth (and seg19)
for Cityscapes, the 40 attributes for CelebA. The tensorflow-datasets
builder over an NYUv2, Cityscapes or CelebA folder is `tasks.builders.LocalLayout`;
nothing here imports tensorflow-datasets.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

from tasks import celeba, mtan
from tasks.registry import DEFAULT, TaskSet

KINDS = ("scenes", "taskonomy", "nyuv2", "cityscapes", "celeba")
LAYOUT_NAMES = {"taskonomy": "Taskonomy", "nyuv2": "NYUv2 (MTAN/LibMTL .npy)",
                "cityscapes": "Cityscapes (MTAN/LibMTL .npy)", "celeba": "CelebA (official)"}
#: Resolutions a folder can be resized to.
RESOLUTIONS = (16, 512)


@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed source: its kind and, for a folder, the folder."""

    kind: str
    root: Path | None = None

    def __str__(self) -> str:
        return "scenes" if self.kind == "scenes" else f"{self.kind}:{self.root}"


def parse_source(source: str | os.PathLike, *, announce: bool = True) -> Source:
    """'scenes', 'KIND:DIR' or a plain DIR (its layout recognised; said on stderr if `announce`)."""
    text = os.fspath(source)
    if text == "scenes":
        return Source("scenes")
    match = re.fullmatch(r"([a-z0-9]+):(.+)", text)
    if match and match.group(1) in KINDS[1:]:
        kind, root = match.group(1), Path(match.group(2)).expanduser()
        if not root.is_dir():
            raise ValueError(f"{LAYOUT_NAMES[kind]} data directory {root} does not exist")
        return Source(kind, root)
    if match and not Path(text).expanduser().exists() and len(match.group(1)) > 1:
        raise ValueError(f"unknown data source kind {match.group(1)!r} in {text!r}; expected scenes, "
                         f"{', '.join(k + ':DIR' for k in KINDS[1:])} or a directory")
    root = Path(text).expanduser()
    if not root.is_dir():
        raise ValueError(f"data directory {root} does not exist (the source must be 'scenes', "
                         f"{', '.join(k + ':DIR' for k in KINDS[1:])}, or a directory in one of those layouts)")
    kind = detect_layout(root)
    if announce and (kind, root.resolve()) not in _ANNOUNCED:
        _ANNOUNCED.add((kind, root.resolve()))
        print(f"mtl: {root} is in the {LAYOUT_NAMES[kind]} layout (name it {kind}:{root} to skip this guess)",
              file=sys.stderr)
    return Source(kind, root)


_ANNOUNCED: set = set()


def detect_layout(root: Path) -> str:
    """'celeba', 'nyuv2', 'cityscapes' or 'taskonomy': what `root` looks like."""
    if (root / celeba.ATTR_FILE).is_file() or (root / celeba.IMAGES).is_dir():
        return "celeba"
    if (root / "train" / "image").is_dir() or (root / "val" / "image").is_dir():
        return "nyuv2" if (root / "train" / "normal").is_dir() or (root / "val" / "normal").is_dir() else "cityscapes"
    return "taskonomy"


def catalogue(kind: str) -> TaskSet:
    """The tasks a source of `kind` offers."""
    if kind in ("scenes", "taskonomy", "arrays"):  # arrays (`tasks.custom.ArrayData`): the registered tasks
        return DEFAULT
    return {"nyuv2": mtan.NYUV2_TASKS, "cityscapes": mtan.CITYSCAPES_TASKS, "celeba": celeba.CELEBA_TASKS}[kind]


def resolve(kind: str, names, *, min_tasks: int = 1):
    """`catalogue(kind).resolve(names)`; for CelebA an unknown name lists the 40 attributes."""
    if kind == "celeba" and not isinstance(names, str):
        names = ",".join(names)
    if kind == "celeba":
        for n in (n for n in names.split(",") if n.strip()):
            celeba.attribute_task(n.strip())
    return catalogue(kind).resolve(names, min_tasks=min_tasks)


def open_layout(source: Source):
    """The reader of a folder source: `tasks.mtan.MtanLayout` or `tasks.celeba.CelebALayout`."""
    if source.kind == "celeba":
        return celeba.CelebALayout(source.root)
    return mtan.MtanLayout(source.root, source.kind)

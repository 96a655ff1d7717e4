"""CelebA in its official layout: 40 binary face attributes, each an image-level task.

The layout (Liu et al. 2015, as the dataset's site and mirrors ship it)::

    root/img_align_celeba/000001.jpg ...   aligned faces, 178x218
    root/list_attr_celeba.txt               line 1: the image count; line 2:
                                            the 40 attribute names; then
                                            "<file> <40 values of 1 or -1>"
    root/list_eval_partition.txt            "<file> <0 train | 1 val | 2 test>"

(PNG images, as in the img_align_celeba_png variant, are read too.)

Images are center-cropped to a square (the shorter side) and resized to the
resolution by area averaging (PIL BOX); TAG's CelebA experiment (Fifty et
al. 2021) uses 64x64, the default. The attributes are stored as one uint8
vector of 40 per image in `ATTRIBUTES` order, 1 = has it, 0 = not.

Each attribute is a task of its own name (``--tasks Smiling,Young``, any
case): a pooled linear head with one logit, binary cross-entropy, accuracy
and error rate. Every problem raises `tasks.mtan.LayoutError` naming the
folder and file.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

from tasks.mtan import LayoutError
from tasks.registry import Task, TaskSet, _accuracy_finalize, _binary_stats, binary_cross_entropy_loss

#: The 40 attributes in the order of list_attr_celeba.txt.
ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
#: The 9 attributes of TAG's CelebA experiment (fixtures/tag2021/affinities.json, from its notebooks).
TAG_ATTRIBUTES: tuple[str, ...] = ("5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Brown_Hair", "Goatee", "Mustache",
                                   "No_Beard", "Rosy_Cheeks", "Wearing_Hat")
IMAGES, ATTR_FILE, PARTITION_FILE = "img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"
PARTITIONS = {"0": "train", "1": "validation", "2": "test"}


def _attribute_task(i: int, name: str) -> Task:
    return Task(name=name, aliases=(), label="attributes", channels=1,
                decode=lambda x, i=i: x[..., i].astype(jnp.float32), loss=binary_cross_entropy_loss, masked=False,
                stats=_binary_stats, finalize=_accuracy_finalize, metric="error_rate", higher_is_better=False,
                description=f"CelebA attribute {name} (binary cross-entropy; error rate)", kind="image")


CELEBA_TASKS = TaskSet([_attribute_task(i, a) for i, a in enumerate(ATTRIBUTES)],
                       "CelebA attributes (each a task)")


def attribute_task(name: str) -> Task:
    """The task of one attribute; LayoutError listing the 40 for an unknown name."""
    if name not in CELEBA_TASKS:
        raise LayoutError(f"unknown CelebA attribute {name!r}; the 40 attributes are: {', '.join(ATTRIBUTES)}")
    return CELEBA_TASKS.get(name)


class CelebALayout:
    """A CelebA directory in the official layout."""

    kind, name, modalities = "celeba", "CelebA", ("rgb", "attributes")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise LayoutError(f"CelebA data directory {self.root} does not exist")
        for name, what in ((IMAGES, "folder"), (ATTR_FILE, "file"), (PARTITION_FILE, "file")):
            path = self.root / name
            if not (path.is_dir() if what == "folder" else path.is_file()):
                raise LayoutError(f"CelebA layout error in {self.root}: {what} {name}{'/' if what == 'folder' else ''} "
                                  f"is missing; expected {IMAGES}/ with the images, {ATTR_FILE} and {PARTITION_FILE}")

    def _where(self, name: str, line: int | None = None) -> str:
        return f"CelebA layout error in {self.root / name}" + (f", line {line}" if line is not None else "")

    def attributes(self) -> dict[str, np.ndarray]:
        """file name -> uint8 (40,) in ATTRIBUTES order (1 = has it), from list_attr_celeba.txt."""
        lines = (self.root / ATTR_FILE).read_text().splitlines()
        if len(lines) < 2:
            raise LayoutError(f"{self._where(ATTR_FILE)}: {len(lines)} line(s); expected the count, the 40 "
                              "attribute names, then one line per image")
        header = lines[1].split()
        if sorted(header) != sorted(ATTRIBUTES):
            unknown = sorted(set(header) - set(ATTRIBUTES)) or sorted(set(ATTRIBUTES) - set(header))
            raise LayoutError(f"{self._where(ATTR_FILE, 2)}: the attribute names differ from CelebA's at "
                              f"{unknown[0]!r}; expected the 40: {', '.join(ATTRIBUTES)}")
        order = [header.index(a) for a in ATTRIBUTES]
        out: dict[str, np.ndarray] = {}
        for n, line in enumerate(lines[2:], start=3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 41 or any(v not in ("1", "-1") for v in parts[1:]):
                raise LayoutError(f"{self._where(ATTR_FILE, n)}: {line.strip()[:80]!r}; expected a file name and 40 "
                                  "values, each 1 or -1")
            out[parts[0]] = (np.array(parts[1:], dtype=np.int8)[order] > 0).astype(np.uint8)
        try:
            count = int(lines[0].split()[0])
        except (ValueError, IndexError):
            raise LayoutError(f"{self._where(ATTR_FILE, 1)}: {lines[0].strip()[:40]!r}; expected the image count")
        if count != len(out):
            raise LayoutError(f"{self._where(ATTR_FILE)}: line 1 says {count} images, the file lists {len(out)}")
        return out

    def partition(self) -> dict[str, str]:
        """file name -> split, from list_eval_partition.txt."""
        out = {}
        for n, line in enumerate((self.root / PARTITION_FILE).read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in PARTITIONS:
                raise LayoutError(f"{self._where(PARTITION_FILE, n)}: {line.strip()[:80]!r}; expected a file name "
                                  "and 0 (train), 1 (validation) or 2 (test)")
            out[parts[0]] = PARTITIONS[parts[1]]
        return out

    def splits(self) -> dict[str, list[str]]:
        """split -> image file names, after checking that the two lists and the folder agree."""
        attrs, part = self.attributes(), self.partition()
        if set(attrs) != set(part):
            only_a, only_p = sorted(set(attrs) - set(part)), sorted(set(part) - set(attrs))
            which = (f"{only_a[0]} is in {ATTR_FILE} but not in {PARTITION_FILE}" if only_a else
                     f"{only_p[0]} is in {PARTITION_FILE} but not in {ATTR_FILE}")
            raise LayoutError(f"CelebA layout error in {self.root}: {which} "
                              f"({len(only_a) + len(only_p)} file(s) differ); expected the same images in both")
        present = {e.name for e in os.scandir(self.root / IMAGES)}
        missing = sorted(f for f in part if f not in present)
        if missing:
            raise LayoutError(f"CelebA layout error in {self.root / IMAGES}: {missing[0]} is listed in {ATTR_FILE} "
                              f"but missing here ({len(missing)} missing); expected every listed image")
        out = {s: sorted(f for f, p in part.items() if p == s) for s in PARTITIONS.values()}
        for s, files in out.items():
            if not files:
                raise LayoutError(f"{self._where(PARTITION_FILE)}: the {s} split is empty; expected images marked "
                                  f"{[k for k, v in PARTITIONS.items() if v == s][0]}")
        self._attrs = attrs
        return out

    def files(self) -> list[Path]:
        """Every file the dataset reads (for the cache fingerprint): the two lists and the images."""
        images = [self.root / IMAGES / e.name for e in os.scandir(self.root / IMAGES) if not e.name.startswith(".")]
        return [self.root / ATTR_FILE, self.root / PARTITION_FILE, *images]

    def read(self, key: str, resolution: int) -> dict[str, np.ndarray]:
        """{'rgb': uint8 (R,R,3), 'attributes': uint8 (40,)} of one image file."""
        if not hasattr(self, "_attrs"):
            self._attrs = self.attributes()
        return {"rgb": read_face(self.root / IMAGES / key, resolution), "attributes": self._attrs[key]}


def read_face(path: Path, resolution: int) -> np.ndarray:
    """An image file -> uint8 (R,R,3): center-cropped to a square, then area-resized."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except Exception as e:  # PIL raises several kinds for a bad file
        raise LayoutError(f"CelebA layout error: {path} cannot be decoded as an image ({type(e).__name__}: {e}); "
                          "expected a JPEG or PNG face") from None
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)

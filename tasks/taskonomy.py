"""The Taskonomy on-disk layout: write it, check it, read examples from it.

A dataset in this layout is a directory with one folder per modality, each
holding one PNG per image, named as Taskonomy names them::

    root/rgb/point_0_view_0_domain_rgb.png
    root/depth_zbuffer/point_0_view_0_domain_depth_zbuffer.png
    root/normal/point_0_view_0_domain_normal.png
    ...

The part before ``_domain_`` (the *stem*) is the same in every folder; plain
``{stem}.png`` names are accepted too. PNG encodings (see
`tasks.registry.MODALITIES` for what the values mean):

=====================  ===========================================
rgb, normal            8-bit RGB
depth_zbuffer,         16-bit grayscale (PIL mode 'I;16'; Pillow
edge_texture,          versions that open 16-bit PNGs as 'I' are
edge_occlusion,        accepted as well)
keypoints2d
segment_semantic,      8-bit grayscale ('L')
reshading
principal_curvature    8-bit RGB: k1 in R, k2 in G, B = 0 (ignored
                       on reading)
=====================  ===========================================

Every image must be square, and all images of a dataset the same size (real
Taskonomy is 512x512). `read_example` resizes to a requested resolution: the
RGB image by area averaging (PIL BOX), every label by nearest neighbour, so
labels keep valid values. At the stored resolution it returns exactly the
values that `write_taskonomy` was given.

Any problem with a directory raises `TaskonomyLayoutError` naming the folder
and the file and saying what was expected; a missing or empty directory is an
error, never an empty dataset.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from tasks.registry import MODALITIES

PathLike = str | os.PathLike


class TaskonomyLayoutError(ValueError):
    """A directory that is not (or not entirely) in the Taskonomy layout."""


def _pil_mode(modality: str) -> str:
    dtype, channels = MODALITIES[modality]
    if dtype == "uint16":
        return "I;16"
    return "L" if channels == 0 else "RGB"


# PIL modes accepted when reading, per modality.
_READ_MODES: dict[str, tuple[str, ...]] = {
    m: (("I;16", "I") if _pil_mode(m) == "I;16" else (_pil_mode(m),)) for m in MODALITIES
}

_MODE_WORDS = {"I;16": "a 16-bit grayscale PNG", "L": "an 8-bit grayscale PNG", "RGB": "an 8-bit RGB PNG"}


def expected_format(modality: str) -> str:
    """'an 8-bit RGB PNG' and the like: what a file of `modality` must be."""
    return _MODE_WORDS[_pil_mode(modality)]


def stem_for_index(index: int) -> str:
    """The stem of image `index` of a rendered scene set: 'point_{index}_view_0'."""
    return f"point_{index}_view_0"


def file_name(stem: str, modality: str) -> str:
    """Taskonomy's name for the `modality` file of `stem`."""
    return f"{stem}_domain_{modality}.png"


def _natural_key(stem: str) -> tuple:
    """point_2 before point_10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", stem))


def _check_modalities(modalities: Iterable[str]) -> tuple[str, ...]:
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; valid modalities: {', '.join(MODALITIES)}")
    if not modalities:
        raise ValueError("no modalities given")
    return modalities


# ---------------------------------------------------------------------------
# Writing.


def to_image(modality: str, array: np.ndarray) -> Image.Image:
    """One stored array (registry encoding) -> the PIL image Taskonomy keeps."""
    dtype, channels = MODALITIES[modality]
    array = np.asarray(array)
    if array.dtype != np.dtype(dtype):
        raise ValueError(f"{modality}: dtype {array.dtype}, expected {dtype}")
    want_ndim = 3 if channels else 2
    if array.ndim != want_ndim or (channels and array.shape[-1] != channels) or array.shape[0] != array.shape[1]:
        raise ValueError(
            f"{modality}: shape {array.shape}, expected (R, R{', ' + str(channels) if channels else ''})"
        )
    if modality == "principal_curvature":
        array = np.concatenate([array, np.zeros_like(array[..., :1])], axis=-1)
    image = Image.fromarray(np.ascontiguousarray(array))
    if image.mode != _pil_mode(modality):  # pragma: no cover - depends on Pillow
        image = image.convert(_pil_mode(modality))
    return image


def write_taskonomy(out_dir: PathLike, examples: Mapping[str, np.ndarray], stems: Sequence[str]) -> Path:
    """Write `examples` (modality -> array with a leading image axis) in the layout.

    Image j goes to ``out_dir/{modality}/{stems[j]}_domain_{modality}.png``.
    Existing files of the same names are overwritten, others are left, so a
    large set can be written in chunks. Returns the directory.
    """
    out = Path(out_dir)
    stems = [str(s) for s in stems]
    if len(set(stems)) != len(stems):
        raise ValueError("stems must be unique")
    for s in stems:
        if not s or "/" in s or os.sep in s or s.startswith("."):
            raise ValueError(f"invalid stem {s!r}: expected a plain file-name stem like 'point_0_view_0'")
    _check_modalities(examples)
    for modality, arrays in examples.items():
        if len(arrays) != len(stems):
            raise ValueError(f"{modality}: {len(arrays)} images for {len(stems)} stems")
    for modality, arrays in examples.items():
        folder = out / modality
        folder.mkdir(parents=True, exist_ok=True)
        for stem, array in zip(stems, arrays, strict=True):
            to_image(modality, array).save(folder / file_name(stem, modality))
    return out


# ---------------------------------------------------------------------------
# Checking.


def _where(root: Path) -> str:
    return f"Taskonomy layout error in {root}"


def _stem_of(name: str, modality: str) -> str | None:
    if not name.endswith(".png") or name.startswith("."):
        return None
    suffix = f"_domain_{modality}.png"
    return name[: -len(suffix)] if name.endswith(suffix) else name[: -len(".png")]


def check_directory(root: PathLike) -> Path:
    """`root` as a Path; raises TaskonomyLayoutError if it is missing or empty."""
    path = Path(root).expanduser()
    if not path.exists():
        raise TaskonomyLayoutError(f"data directory {path} does not exist")
    if not path.is_dir():
        raise TaskonomyLayoutError(f"data directory {path} is not a directory")
    if not any(path.iterdir()):
        raise TaskonomyLayoutError(
            f"data directory {path} is empty: expected one folder per modality "
            f"({', '.join(m + '/' for m in MODALITIES)}) holding {{stem}}_domain_{{modality}}.png files"
        )
    return path


def index_files(root: PathLike, modalities: Iterable[str]) -> dict[str, dict[str, str]]:
    """stem -> {modality: file name}, checking the folders and the file names only.

    Cheap (directory listings, no image is opened). Raises TaskonomyLayoutError
    for a missing or empty directory or modality folder, a stem given twice in
    one folder, and a stem that has a file in one modality folder and none in
    another.
    """
    modalities = _check_modalities(modalities)
    path = check_directory(root)
    files: dict[str, dict[str, str]] = {m: {} for m in modalities}
    for m in modalities:
        folder = path / m
        if not folder.is_dir():
            present = sorted(p.name + "/" for p in path.iterdir() if p.is_dir())
            raise TaskonomyLayoutError(
                f"{_where(path)}: modality folder {m}/ is missing (found: {', '.join(present) or 'no folders'}); "
                f"expected {folder} holding {file_name('{stem}', m)} files, {expected_format(m)} each"
            )
        for entry in os.scandir(folder):
            stem = _stem_of(entry.name, m)
            if stem is None:
                continue
            if stem in files[m]:
                raise TaskonomyLayoutError(
                    f"{_where(path)}: {m}/{entry.name} and {m}/{files[m][stem]} are both stem {stem!r}; "
                    "expected one file per stem in each modality folder"
                )
            files[m][stem] = entry.name
        if not files[m]:
            raise TaskonomyLayoutError(
                f"{_where(path)}: modality folder {m}/ holds no PNG files; "
                f"expected files named {file_name('{stem}', m)}"
            )
    stems = set().union(*(set(f) for f in files.values()))
    for m in modalities:
        missing = sorted(stems - set(files[m]), key=_natural_key)
        if missing:
            stem = missing[0]
            other = next(o for o in modalities if stem in files[o])
            more = f" (and {len(missing) - 1} more stems)" if len(missing) > 1 else ""
            raise TaskonomyLayoutError(
                f"{_where(path)}: {m}/{file_name(stem, m)} is missing{more}, but "
                f"{other}/{files[other][stem]} exists; expected every stem to have one file in each "
                f"modality folder ({', '.join(modalities)})"
            )
    order = sorted(stems, key=_natural_key)
    return {s: {m: files[m][s] for m in modalities} for s in order}


def _open(path: Path, root: Path, modality: str) -> Image.Image:
    rel = f"{modality}/{path.name}"
    try:
        image = Image.open(path)
    except Exception as e:  # PIL raises several kinds for a bad file
        raise TaskonomyLayoutError(
            f"{_where(root)}: {rel} cannot be read as an image ({e}); expected {expected_format(modality)}"
        ) from None
    mode, (w, h) = image.mode, image.size
    if mode not in _READ_MODES[modality]:
        image.close()
        raise TaskonomyLayoutError(
            f"{_where(root)}: {rel} has PIL mode {mode!r}; expected {expected_format(modality)} "
            f"(mode {' or '.join(map(repr, _READ_MODES[modality]))})"
        )
    if w != h:
        image.close()
        raise TaskonomyLayoutError(f"{_where(root)}: {rel} is {w}x{h}; expected a square image")
    return image


def scan(root: PathLike, modalities: Iterable[str] = tuple(MODALITIES)) -> list[str]:
    """The stems of a directory in the layout, in natural order, after checking it.

    Checks everything `index_files` checks, and opens every file's header:
    each must be a PNG of its modality's mode, square, and the same size as
    every other image. Raises TaskonomyLayoutError naming the folder and file.
    (Pixel data is decoded only by `read_example`, which raises the same error
    for a file that is cut short.)
    """
    path = Path(root).expanduser()
    index = index_files(path, modalities)
    first = None
    for names in index.values():
        for m, name in names.items():
            with _open(path / m / name, path, m) as image:
                first = _same_size(path, f"{m}/{name}", image, first)
    return list(index)


def _same_size(root: Path, label: str, image, first: tuple | None) -> tuple:
    """(size, label) of the first image seen; raises if `image` differs from it."""
    if first is None:
        return image.size, label
    if image.size != first[0]:
        (w, h), (w0, h0) = image.size, first[0]
        raise TaskonomyLayoutError(
            f"{_where(root)}: {label} is {w}x{h}; expected {w0}x{h0} like {first[1]} "
            "(all images of a dataset share one size)"
        )
    return first


# ---------------------------------------------------------------------------
# Reading.


def _nearest(array: np.ndarray, resolution: int) -> np.ndarray:
    """Nearest-neighbour resize of a square (R,R[,C]) array (pixel centres, like PIL)."""
    size = array.shape[0]
    idx = (2 * np.arange(resolution) + 1) * size // (2 * resolution)
    return array[idx][:, idx]


def _decode(image: Image.Image, modality: str, resolution: int | None) -> np.ndarray:
    dtype, _ = MODALITIES[modality]
    if modality == "rgb" and resolution is not None and resolution != image.size[0]:
        image = image.resize((resolution, resolution), Image.Resampling.BOX)
    array = np.asarray(image)
    if image.mode == "I":  # an older Pillow's view of a 16-bit PNG
        array = array.astype(np.uint16)
    if modality == "principal_curvature":
        array = array[..., :2]
    array = np.ascontiguousarray(array, dtype=dtype)
    if resolution is not None and array.shape[0] != resolution:
        array = _nearest(array, resolution)
    return array


def find_file(root: PathLike, stem: str, modality: str) -> Path:
    """The file of `stem` in `modality` (``{stem}_domain_{modality}.png`` or ``{stem}.png``)."""
    folder = Path(root).expanduser() / modality
    for name in (file_name(stem, modality), f"{stem}.png"):
        if (folder / name).is_file():
            return folder / name
    raise TaskonomyLayoutError(
        f"{_where(Path(root))}: {modality}/{file_name(stem, modality)} is missing; "
        f"expected it (or {modality}/{stem}.png) for stem {stem!r}"
    )


def read_example(
    root: PathLike, stem: str, modalities: Iterable[str], resolution: int | None = None
) -> dict[str, np.ndarray]:
    """modality -> array (registry encoding) of one stem, resized to `resolution` if given."""
    path = Path(root).expanduser()
    modalities = _check_modalities(modalities)
    if resolution is not None and resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    out, first = {}, None
    for m in modalities:
        file = find_file(path, stem, m)
        with _open(file, path, m) as image:
            first = _same_size(path, f"{m}/{file.name}", image, first)
            try:
                out[m] = _decode(image, m, resolution)
            except (OSError, SyntaxError, ValueError) as e:
                raise TaskonomyLayoutError(
                    f"{_where(path)}: {m}/{file.name} cannot be decoded ({e}); "
                    f"expected {expected_format(m)}"
                ) from None
    return out


def render_to_taskonomy(
    out_dir: PathLike,
    *,
    count: int,
    resolution: int,
    seed: int = 0,
    start: int = 0,
    chunk: int = 256,
    progress: Callable[[int], object] | None = None,
) -> list[str]:
    """Render scenes start..start+count-1 of `seed` into `out_dir` in the layout.

    Image i is stem ``point_{i}_view_0``. Renders `chunk` images at a time and
    calls `progress(n)` after each chunk with the number just written. Returns
    the stems.
    """
    from tasks import scenes  # the renderer is needed only here

    if count < 1 or start < 0 or seed < 0 or resolution < 1:
        raise ValueError(
            f"need count >= 1, start >= 0, seed >= 0, resolution >= 1; got {count}, {start}, {seed}, {resolution}"
        )
    stems = []
    for lo in range(start, start + count, chunk):
        n = min(chunk, start + count - lo)
        batch = scenes.render_scenes(seed, n, resolution, start=lo)
        names = [stem_for_index(i) for i in range(lo, lo + n)]
        write_taskonomy(out_dir, batch, names)
        stems += names
        if progress is not None:
            progress(n)
    return stems

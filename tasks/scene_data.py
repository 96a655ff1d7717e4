"""The embedded scenes' settings, and the scenes rendered in memory: nothing here needs tensorflow-datasets.

A scene set is (resolution, seed, counts): image i is `tasks.scenes.render_scenes`'s
image i of that seed, train holds images [0, n_train), validation the next
n_val, test the next n_test (`scene_ranges`). The tensorflow-datasets builder
(`tasks.builders.Scenes`) stores exactly these arrays under the name
``mtl_scenes/r{R}_s{seed}_n{train}-{val}-{test}_{renderer}/1.0.0``
(`scenes_dataset`), which also enters the results store's keys. Where
tensorflow-datasets or array_record cannot be imported, `render_splits` renders
the same splits in memory (`grouping.dataspec.DataSpec` does so), and the keys
are the same strings, so networks trained either way are interchangeable in a
results store. Folder sources need tensorflow-datasets: `require_tfds` says
which packages to install.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from tasks import scenes
from tasks.registry import LAYOUT_MODALITIES, MODALITIES, stored_spec

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_RESOLUTION = 64
DEFAULT_COUNTS: tuple[int, int, int] = (4000, 500, 500)
# Inclusive resolution bounds of the renderer.
SCENE_RESOLUTIONS = (getattr(scenes, "MIN_RESOLUTION", 32), getattr(scenes, "MAX_RESOLUTION", 256))
RENDER_PIXELS = 1 << 22  # pixels rendered per call
#: The scenes dataset's builder name and version (tfds's, and in the store keys).
SCENES_NAME = "mtl_scenes"
SCENES_VERSION = "1.0.0"
#: The modules the tensorflow-datasets path imports, and the command that installs them.
TFDS_MODULES = ("tensorflow_datasets", "array_record")
INSTALL_TFDS = "pip install tensorflow-datasets array-record"
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


class MissingPackageError(ImportError, ValueError):
    """tensorflow-datasets or array_record is not installed and the data needs it (a user error:
    the scripts print it on one line)."""


def tfds_available() -> bool:
    """Whether tensorflow_datasets and array_record can be imported."""
    try:
        import array_record  # noqa: F401
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def require_tfds(what: str) -> None:
    """MissingPackageError naming the packages and the install command unless both import."""
    missing = []
    for module in TFDS_MODULES:
        try:
            __import__(module)
        except ImportError:
            missing.append(module.replace("_", "-"))
    if missing:
        raise MissingPackageError(
            f"{what} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"{INSTALL_TFDS} (the embedded scenes need neither: they are rendered in memory without them)")


def split_name(split: str) -> str:
    """'train', 'validation' ('val') or 'test'; ValueError otherwise."""
    key = str(split).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; expected one of train, validation (val), test")
    return _SPLIT_ALIASES[key]


def stored_shape(modality: str, resolution: int) -> tuple[int, ...]:
    return stored_spec(modality, resolution)[1]


def stored_dtype(modality: str) -> np.dtype:
    return np.dtype(stored_spec(modality, 1)[0])


def check_resolution(resolution: int, bounds: tuple[int, int], what: str) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise ValueError(f"resolution must be an integer, got {resolution!r}")
    if not bounds[0] <= resolution <= bounds[1]:
        raise ValueError(f"resolution {resolution} out of range for {what}: expected {bounds[0]}..{bounds[1]}")
    return int(resolution)


def select_modalities(modalities: Iterable[str] | None) -> tuple[str, ...]:
    """The known modalities asked for, in registry order (None: every Taskonomy modality)."""
    if modalities is None:
        return tuple(MODALITIES)
    if isinstance(modalities, str):
        modalities = [modalities]
    wanted = set(modalities)
    known = (*MODALITIES, *LAYOUT_MODALITIES)
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; valid modalities: {', '.join(known)}")
    if not wanted:
        raise ValueError("no modalities requested")
    return tuple(m for m in known if m in wanted)


# ---------------------------------------------------------------------------
# A scene set's settings.


def normalize_counts(counts: Sequence[int] | Mapping[str, int] | None) -> tuple[int, int, int]:
    """(n_train, n_validation, n_test) from a 3-sequence, a split -> count mapping or None."""
    if counts is None:
        return DEFAULT_COUNTS
    if isinstance(counts, Mapping):
        given = {split_name(k): v for k, v in counts.items()}
        if set(given) != set(SPLITS) or len(given) != len(counts):
            raise ValueError(f"counts must give train, validation and test once each, got {dict(counts)}")
        counts = tuple(given[s] for s in SPLITS)
    counts = tuple(counts)
    if len(counts) != 3 or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in counts):
        raise ValueError(f"counts must be three positive integers (train, validation, test), got {counts}")
    return tuple(int(c) for c in counts)  # type: ignore[return-value]


def scene_ranges(counts: Sequence[int] | Mapping[str, int] | None = None) -> dict[str, range]:
    """split -> the image indices it renders: consecutive, disjoint ranges of one seed."""
    n = normalize_counts(counts)
    starts = np.cumsum((0,) + n)
    return {s: range(int(starts[i]), int(starts[i + 1])) for i, s in enumerate(SPLITS)}


def renderer_fingerprint() -> str:
    """8 hex digits that change whenever the renderer's source or the encodings change.

    Hashes every module of the `tasks.scenes` package (names and bytes, in
    name order), the stored encodings and RENDERER_VERSION."""
    h = hashlib.sha256()
    for path in sorted(Path(inspect.getfile(scenes)).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(repr(sorted(MODALITIES.items())).encode())
    h.update(str(getattr(scenes, "RENDERER_VERSION", "")).encode())
    return h.hexdigest()[:8]


#: This renderer's fingerprint -> an older one whose scenes it renders byte for byte. Splitting
#: tasks/scenes.py into the tasks/scenes/ package (issue 15) changed the source, not one rendered
#: value: every modality of 42 scenes (seed 0 images 0-23 at 32 px, seed 3 images 1000-1011 at 64 px,
#: seed 7 images 17-22 at 48 px) was saved before the split and compared array for array after it.
RENDERS_AS: dict[str, str] = {"527bfc6b": "5fdcc044"}


def same_rendering(recorded: str | None) -> bool:
    """Whether scenes recorded with renderer fingerprint `recorded` are what this checkout renders."""
    mine = renderer_fingerprint()
    return recorded is not None and recorded in (mine, RENDERS_AS.get(mine))


def scenes_config_name(resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
                       counts: Sequence[int] | Mapping[str, int] | None = None) -> str:
    """'r{R}_s{seed}_n{train}-{val}-{test}_{renderer}', after checking every setting (ValueError)."""
    resolution = check_resolution(resolution, SCENE_RESOLUTIONS, "the embedded scenes")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = normalize_counts(counts)
    return f"r{resolution}_s{int(seed)}_n{n[0]}-{n[1]}-{n[2]}_{renderer_fingerprint()}"


def scenes_dataset(resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
                   counts: Sequence[int] | Mapping[str, int] | None = None) -> str:
    """The scene set's dataset string in the store keys: '{builder}/{config}/{version}', as tfds names it."""
    return f"{SCENES_NAME}/{scenes_config_name(resolution, seed, counts)}/{SCENES_VERSION}"


# ---------------------------------------------------------------------------
# Rendering.


def render_chunks(seed: int, start: int, stop: int, resolution: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(first index, every modality of images [first, first + n)) for images [start, stop), in
    chunks of RENDER_PIXELS pixels (1,024 images at 64x64: the renderer uses both threads; the
    images do not depend on the chunking). ValueError if the renderer returns a wrong array."""
    chunk = max(1, RENDER_PIXELS // resolution**2)
    for lo in range(start, stop, chunk):
        n = min(chunk, stop - lo)
        batch = scenes.render_scenes(seed, n, resolution, start=lo)
        for m in MODALITIES:
            want = (n,) + stored_shape(m, resolution)
            got = np.shape(batch.get(m))
            if got != want or np.asarray(batch[m]).dtype != np.dtype(MODALITIES[m][0]):
                raise ValueError(
                    f"render_scenes returned {m} of shape {got} and dtype "
                    f"{getattr(batch.get(m), 'dtype', None)}; expected {want}, {MODALITIES[m][0]}"
                )
        yield lo, batch


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def render_bytes(n: int, resolution: int, modalities: Sequence[str]) -> int:
    """Bytes that `n` images of `modalities` take, stored encodings."""
    per_image = sum(int(np.prod(stored_shape(m, resolution))) * stored_dtype(m).itemsize for m in modalities)
    return per_image * n


def render_splits(
    *,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int = 0,
    counts: Sequence[int] | Mapping[str, int] | None = None,
    splits: Sequence[str] = SPLITS,
    modalities: Iterable[str] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """split -> modality -> the split's images rendered in memory: the arrays the
    tensorflow-datasets cache of these settings holds, without it (nothing is written).

    Checks the settings (`scenes_config_name`) and that the arrays, with one
    render chunk of every modality, fit in the available memory (ValueError
    naming both sizes otherwise) before rendering anything."""
    from tqdm.auto import tqdm

    from mtl.cli import size_text

    scenes_config_name(resolution, seed, counts)
    modalities = select_modalities(modalities)
    if not set(modalities) <= set(MODALITIES):
        raise ValueError(f"the embedded scenes have no {sorted(set(modalities) - set(MODALITIES))[0]!r} data; "
                         f"they have {', '.join(MODALITIES)}")
    ranges = scene_ranges(counts)
    splits = tuple(dict.fromkeys(split_name(s) for s in splits))
    total = sum(len(ranges[s]) for s in splits)
    chunk = min(total, max(1, RENDER_PIXELS // resolution**2))
    needed = render_bytes(total, resolution, modalities) + 2 * render_bytes(chunk, resolution, tuple(MODALITIES))
    free = available_memory()
    if free is not None and needed > free:
        raise ValueError(
            f"rendering {total} scenes at {resolution}x{resolution} in memory needs about {size_text(needed)}, "
            f"and {size_text(free)} is available: give smaller --counts or --resolution, or install "
            f"tensorflow-datasets ({INSTALL_TFDS}), which keeps them on disk")
    out: dict[str, dict[str, np.ndarray]] = {}
    with tqdm(total=total, desc="rendering scenes", unit="image", disable=not progress, leave=False,
              dynamic_ncols=True, mininterval=1.0) as bar:
        for s in splits:
            r = ranges[s]
            arrays = {m: np.empty((len(r),) + stored_shape(m, resolution), stored_dtype(m)) for m in modalities}
            for lo, batch in render_chunks(seed, r.start, r.stop, resolution):
                n = len(batch[modalities[0]])
                for m in modalities:
                    arrays[m][lo - r.start: lo - r.start + n] = batch[m]
                bar.update(n)
            out[s] = arrays
    return out

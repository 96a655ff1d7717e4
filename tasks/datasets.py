"""Serving the data through tensorflow-datasets, without TensorFlow.

Two dataset builders write array_record files that `tfds` reads back with
NumPy alone (`builder.as_data_source`, no `tf.data`):

* `Scenes`: the embedded default data, rendered by `tasks.scenes.render_scenes`.
  One seed, one image index range: train is images [0, n_train), validation
  the next n_val, test the next n_test, so the splits never share an image.
  Default: 4000/500/500 images at 64x64, seed 0.
* `TaskonomyLocal`: a local directory in the Taskonomy layout
  (`tasks.taskonomy`), resized to the configured resolution. If the directory
  has train/, val/ (or validation/) and test/ subfolders, each in the layout,
  they are the splits; otherwise each stem goes to a split by a stable hash:
  the first 8 bytes of sha256(stem) mod 100 below 80 -> train, below 90 ->
  validation, else test.

`load_split` is what the training code calls: it prepares a dataset once
(rendering or decoding PNGs, a progress bar on stderr) and then only reads.

Every modality is a `tfds.features.Tensor` of its stored dtype and shape
(`tasks.registry.MODALITIES`) stored as zlib-compressed raw bytes (not Image
features: PNG-encoding every label is slow, and without TensorFlow they decode
through PIL one by one); a `stem` text feature names the image
(``point_{i}_view_0`` for scene i). Records are written in key order
(`disable_shuffling`), so record j of a split is its j-th image.

Cache: ``$MTL_DATA_DIR`` or ``~/.cache/mtl_grouping/tfds``, then
``mtl_scenes/r{R}_s{seed}_n{train}-{val}-{test}_{renderer}/{version}/`` or
``mtl_taskonomy_local/{folder}_r{R}_{fingerprint}/{version}/``. The scenes
name ends with a hash of the renderer's source (every module of tasks/scenes/), so editing
the renderer re-renders; the Taskonomy name ends with a hash of the directory's
path and file listing (names, sizes, modification times), so changed files are
read again. Different settings never share a folder.

The cache is derived data. A damaged file in it (a record whose checksum no
longer matches, a truncated or missing shard, unreadable metadata) is found
when the dataset is opened or read; `load_split` names the file, deletes that
setting's folder and prepares it again, once; if the new copy cannot be read
either, it stops with a `CacheError` naming the cache directory. A
Taskonomy directory's own PNGs are only ever read, never deleted: an
unreadable one stops with a `TaskonomyLayoutError` naming it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from tasks import scenes, taskonomy
from tasks.mtan import LayoutError
from tasks.registry import LAYOUT_MODALITIES, MODALITIES, stored_spec

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_RESOLUTION = 64
DEFAULT_COUNTS: tuple[int, int, int] = (4000, 500, 500)
# Inclusive resolution bounds: the renderer's, and what resizing Taskonomy data allows.
SCENE_RESOLUTIONS = (getattr(scenes, "MIN_RESOLUTION", 32), getattr(scenes, "MAX_RESOLUTION", 256))
TASKONOMY_RESOLUTIONS = (16, 512)
CHUNK = 256  # images decoded / read at a time
RENDER_PIXELS = 1 << 22  # pixels rendered per call
# Folder names accepted for each split of a Taskonomy directory.
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("val", "validation"),
    "test": ("test",),
}
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
_ENCODING = "zlib"


class CacheError(ValueError):
    """The prepared dataset cache cannot be read (a user error: the scripts print it on one line)."""


class CacheDamaged(CacheError):
    """A file in one setting's cache folder is damaged; `load_split` prepares the folder again.

    `folder` is that setting's folder (``<data dir>/<builder>/<config>``, the one
    to delete), `files` the damaged files found in it (may be empty when the
    error names none and every file reads), `cause` what the reader said.
    """

    def __init__(self, folder: Path, files: Sequence[Path], cause: BaseException):
        self.folder, self.files, self.cause = Path(folder), [Path(f) for f in files], cause
        if len(self.files) == 1:
            self.what = f"the dataset cache file {self.files[0]} is damaged ({_reason(cause)})"
        elif self.files:
            self.what = f"the dataset cache files {', '.join(map(str, self.files))} are damaged ({_reason(cause)})"
        else:
            self.what = f"the dataset cache in {self.folder} cannot be read ({_reason(cause)})"
        super().__init__(f"{self.what}; delete {self.folder} to prepare it again")


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def default_data_dir() -> Path:
    """Where prepared datasets live: $MTL_DATA_DIR or ~/.cache/mtl_grouping/tfds."""
    env = os.environ.get("MTL_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mtl_grouping" / "tfds"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide absl warnings (custom configs, TensorFlow not installed) while tfds works."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _shape(modality: str, resolution: int) -> tuple[int, ...]:
    return stored_spec(modality, resolution)[1]


def _dtype(modality: str) -> np.dtype:
    return np.dtype(stored_spec(modality, 1)[0])


def _features(resolution: int, modalities: Sequence[str]) -> tfds.features.FeaturesDict:
    spec = {
        m: tfds.features.Tensor(shape=_shape(m, resolution), dtype=_dtype(m), encoding=_ENCODING)
        for m in modalities
    }
    spec["stem"] = tfds.features.Text()
    return tfds.features.FeaturesDict(spec)


def _check_resolution(resolution: int, bounds: tuple[int, int], what: str) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise ValueError(f"resolution must be an integer, got {resolution!r}")
    if not bounds[0] <= resolution <= bounds[1]:
        raise ValueError(f"resolution {resolution} out of range for {what}: expected {bounds[0]}..{bounds[1]}")
    return int(resolution)


def split_name(split: str) -> str:
    """'train', 'validation' ('val') or 'test'; ValueError otherwise."""
    key = str(split).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; expected one of train, validation (val), test")
    return _SPLIT_ALIASES[key]


def _modalities(modalities: Iterable[str] | None) -> tuple[str, ...]:
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
# The embedded scenes.


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


class ScenesConfig(tfds.core.BuilderConfig):
    """Resolution, seed and split sizes of a rendered scene set; the name encodes all three."""

    def __init__(
        self,
        *,
        resolution: int = DEFAULT_RESOLUTION,
        seed: int = 0,
        counts: Sequence[int] | Mapping[str, int] | None = None,
    ):
        resolution = _check_resolution(resolution, SCENE_RESOLUTIONS, "the embedded scenes")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        n = normalize_counts(counts)
        super().__init__(
            name=f"r{resolution}_s{int(seed)}_n{n[0]}-{n[1]}-{n[2]}_{renderer_fingerprint()}",
            description=(
                f"{sum(n)} scenes at {resolution}x{resolution}, seed {seed}: train images "
                f"[0, {n[0]}), validation [{n[0]}, {n[0] + n[1]}), test [{n[0] + n[1]}, {sum(n)})"
            ),
        )
        self.resolution = resolution
        self.seed = int(seed)
        self.counts = n


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What both builders share: nothing to download, so no checksums file.

    tfds 4.9.10's default `code_path` touches `importlib_resources`, a package
    it requires only on Python < 3.9, and fails without it; no code path means
    no checksums lookup, which these builders do not need.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None


class Scenes(_Builder):
    """The embedded scenes: every modality of `tasks.registry` for each image."""

    name = "mtl_scenes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Tensor features (zlib), records in image order."}
    BUILDER_CONFIGS = [ScenesConfig()]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Rendered indoor scenes (tasks.scenes). {config.description}",
            features=_features(config.resolution, tuple(MODALITIES)),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        ranges = scene_ranges(self.builder_config.counts)
        return {s: self._generate_examples(r.start, r.stop) for s, r in ranges.items()}

    def _generate_examples(self, start: int, stop: int):
        config = self.builder_config
        # Large render calls (4M pixels: 1,024 images at 64x64) let the
        # renderer use both threads; results do not depend on the chunking.
        chunk = max(1, RENDER_PIXELS // config.resolution**2)
        for lo in range(start, stop, chunk):
            n = min(chunk, stop - lo)
            batch = scenes.render_scenes(config.seed, n, config.resolution, start=lo)
            for m in MODALITIES:
                want = (n,) + _shape(m, config.resolution)
                got = np.shape(batch.get(m))
                if got != want or np.asarray(batch[m]).dtype != np.dtype(MODALITIES[m][0]):
                    raise ValueError(
                        f"render_scenes returned {m} of shape {got} and dtype "
                        f"{getattr(batch.get(m), 'dtype', None)}; expected {want}, {MODALITIES[m][0]}"
                    )
            for j in range(n):
                example = {m: batch[m][j] for m in MODALITIES}
                example["stem"] = taskonomy.stem_for_index(lo + j)
                yield lo + j, example


def scenes_config(
    resolution: int = DEFAULT_RESOLUTION, seed: int = 0, counts: Sequence[int] | Mapping[str, int] | None = None
) -> ScenesConfig:
    """The config for these settings (the predefined object when they are the defaults)."""
    config = ScenesConfig(resolution=resolution, seed=seed, counts=counts)
    return Scenes.builder_configs.get(config.name, config)


# ---------------------------------------------------------------------------
# A local Taskonomy directory.


def hash_split(stem: str) -> str:
    """The split of `stem` when a directory has no split folders: 80/10/10 by sha256."""
    bucket = int.from_bytes(hashlib.sha256(stem.encode()).digest()[:8], "big") % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def split_folders(root: str | os.PathLike) -> dict[str, Path] | None:
    """split -> folder when `root` has train/, val/ and test/ subfolders; None when it has none."""
    root = Path(root)
    found: dict[str, list[Path]] = {
        s: [root / name for name in names if (root / name).is_dir()] for s, names in SPLIT_FOLDERS.items()
    }
    if not any(found.values()):
        return None
    for s, dirs in found.items():
        if not dirs:
            have = ", ".join(d.name + "/" for ds in found.values() for d in ds)
            want = " or ".join(n + "/" for n in SPLIT_FOLDERS[s])
            raise taskonomy.TaskonomyLayoutError(
                f"Taskonomy layout error in {root}: it has {have} but no {want}; "
                "expected train/, val/ and test/ subfolders each in the layout, or the modality folders directly in it"
            )
        if len(dirs) > 1:
            raise taskonomy.TaskonomyLayoutError(
                f"Taskonomy layout error in {root}: both {dirs[0].name}/ and {dirs[1].name}/ exist; "
                f"expected one {s} folder"
            )
    return {s: dirs[0] for s, dirs in found.items()}


def present_modalities(root: str | os.PathLike) -> tuple[str, ...]:
    """The modality folders that a Taskonomy directory has (in all its split folders)."""
    root = taskonomy.check_directory(root)
    dirs = list((split_folders(root) or {None: root}).values())
    return tuple(m for m in MODALITIES if all((d / m).is_dir() for d in dirs))


def taskonomy_splits(root: str | os.PathLike, modalities: Sequence[str]) -> dict[str, tuple[Path, list[str]]]:
    """split -> (folder, stems), after checking the whole directory with `taskonomy.scan`."""
    root = taskonomy.check_directory(root)
    folders = split_folders(root)
    if folders is not None:
        return {s: (d, taskonomy.scan(d, modalities)) for s, d in folders.items()}
    stems = taskonomy.scan(root, modalities)
    return {s: (root, [t for t in stems if hash_split(t) == s]) for s in SPLITS}


def _fingerprint(root: Path, modalities: Sequence[str], resolution: int) -> str:
    h = hashlib.sha256(f"{root}|{resolution}|{','.join(modalities)}".encode())
    for d in (split_folders(root) or {None: root}).values():
        for m in modalities:
            entries = sorted(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(d / m) if e.name.endswith(".png")
            )
            h.update(f"{d.relative_to(root)}/{m}:{entries}".encode())
    return h.hexdigest()[:12]


class TaskonomyLocalConfig(tfds.core.BuilderConfig):
    """A directory, its modalities and a resolution; the name ends with a fingerprint of the files."""

    def __init__(self, *, root: str | os.PathLike, resolution: int = DEFAULT_RESOLUTION):
        resolution = _check_resolution(resolution, TASKONOMY_RESOLUTIONS, "Taskonomy data")
        root = taskonomy.check_directory(root).resolve()
        modalities = present_modalities(root)
        if not modalities:  # not one modality folder: let the layout check say what is expected
            folders = split_folders(root)
            taskonomy.index_files(folders["train"] if folders else root, MODALITIES)
        slug = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_")[:40] or "root"
        super().__init__(
            name=f"{slug}_r{resolution}_{_fingerprint(root, modalities, resolution)}",
            description=f"{root} at {resolution}x{resolution} ({', '.join(modalities)})",
        )
        self.root = root
        self.resolution = resolution
        self.modalities = modalities


class TaskonomyLocal(_Builder):
    """A local directory in the Taskonomy layout, resized to the configured resolution."""

    name = "mtl_taskonomy_local"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Tensor features (zlib), records in stem order."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Give a directory in the Taskonomy layout as the manual directory: one folder
    per modality (rgb/, depth_zbuffer/, normal/, segment_semantic/, edge_texture/,
    edge_occlusion/, keypoints2d/, reshading/, principal_curvature/), each with
    one PNG per image named {stem}_domain_{modality}.png (or {stem}.png), the
    same stems in every folder. Encodings: rgb and normal 8-bit RGB; depth_zbuffer,
    edge_texture, edge_occlusion, keypoints2d 16-bit grayscale; segment_semantic
    and reshading 8-bit grayscale; principal_curvature 8-bit RGB (k1, k2, 0).
    Splits: train/, val/ and test/ subfolders, each in that layout, if present;
    otherwise 80/10/10 by a hash of the stem (tasks.datasets.hash_split).
    `python scripts/render_scenes.py --layout taskonomy --out DIR` writes one.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Taskonomy-layout images from {config.description}",
            features=_features(config.resolution, config.modalities),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        root = Path(dl_manager.manual_dir)
        # tfds cannot write an empty split: a split the hash rule left empty is
        # not written, and `read_split` says so when it is asked for.
        return {
            s: self._generate_examples(folder, stems)
            for s, (folder, stems) in taskonomy_splits(root, config.modalities).items()
            if stems
        }

    def _generate_examples(self, folder: Path, stems: list[str]):
        config = self.builder_config

        def read(stem: str) -> dict:
            return taskonomy.read_example(folder, stem, config.modalities, config.resolution)

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for lo in range(0, len(stems), CHUNK):
                chunk = stems[lo : lo + CHUNK]
                for j, example in enumerate(pool.map(read, chunk)):
                    example["stem"] = chunk[j]
                    yield lo + j, example


# ---------------------------------------------------------------------------
# What the training code calls.


def get_builder(
    source: str | os.PathLike,
    *,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int = 0,
    counts: Sequence[int] | Mapping[str, int] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tfds.core.GeneratorBasedBuilder:
    """The builder for 'scenes', 'nyuv2:DIR', 'cityscapes:DIR', 'celeba:DIR', 'taskonomy:DIR' or a
    directory of one of those layouts (`tasks.sources`), not prepared yet.

    `seed` and `counts` apply to the scenes only; a directory's images are what
    they are.
    """
    return _open_builder(source, resolution=resolution, seed=seed, counts=counts, data_dir=data_dir, heal=True)[0]


def _open_builder(
    source: str | os.PathLike,
    *,
    resolution: int,
    seed: int,
    counts: Sequence[int] | Mapping[str, int] | None,
    data_dir: str | os.PathLike | None,
    heal: bool,
) -> tuple[tfds.core.GeneratorBasedBuilder, bool]:
    """(builder, whether a damaged cache folder was deleted to open it).

    tfds reads a prepared folder's metadata when the builder is made: if that
    fails, the folder is damaged; with `heal` it is deleted (the builder then
    prepares it again), otherwise CacheDamaged is raised."""
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if str(source) == "scenes":
        cls, config = Scenes, scenes_config(resolution, seed, counts)
    else:
        from tasks.sources import LocalLayout, LocalLayoutConfig, parse_source

        if counts is not None:
            raise ValueError(f"counts apply to the embedded scenes only; {source} has the images it has")
        parsed = parse_source(source)
        if parsed.kind == "taskonomy":
            cls, config = TaskonomyLocal, TaskonomyLocalConfig(root=parsed.root, resolution=resolution)
        else:
            cls, config = LocalLayout, LocalLayoutConfig(source=parsed, resolution=resolution)

    def make():
        with _quiet():
            return cls(config=config, data_dir=os.fspath(data_dir), file_format="array_record")

    folder = data_dir / cls.name / config.name
    try:
        return make(), False
    except Exception as e:  # tfds and protobuf raise several kinds for a bad dataset_info.json
        if not (folder / str(cls.VERSION)).is_dir():
            raise
        damaged = CacheDamaged(folder, _damaged_files(folder / str(cls.VERSION)), e)
    if not heal:
        raise damaged
    _heal(damaged, data_dir, getattr(config, "root", None))
    return make(), True


def prepare(builder: tfds.core.GeneratorBasedBuilder, progress: bool = True) -> None:
    """Render or decode the dataset into array_record files once; later calls do nothing.

    Says so in one line on stderr, then shows one progress bar of images
    (none if not `progress`); tfds's own output ("Downloading and preparing
    dataset", its split and "Shuffling" bars, "Dataset ... prepared") is
    silenced: nothing is downloaded."""
    with _quiet():
        if builder.is_prepared():
            return
    print(f"mtl: preparing {builder.name}/{builder.builder_config.name} in {builder.data_dir} (once)", file=sys.stderr)
    download_config = None
    if isinstance(builder, TaskonomyLocal):
        download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(builder.builder_config.root))
    try:
        with _quiet(), _silent_tfds(), _image_progress(builder, progress):
            builder.download_and_prepare(download_config=download_config)
    except BaseException as e:
        # tfds removes its incomplete files; drop the empty folders it leaves.
        for folder in (Path(builder.data_dir), Path(builder.data_dir).parent):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(e, (taskonomy.TaskonomyLayoutError, LayoutError)):
            # The message says what is wrong; tfds's frames would only bury it.
            raise type(e)(str(e)) from None
        from mtl.cli import DiskFullError, is_disk_full

        if isinstance(e, Exception) and is_disk_full(e):
            raise DiskFullError(
                Path(builder.data_dir).parent.parent.parent, f"the dataset {builder.name}/{builder.builder_config.name}",
                needed=_raw_size(builder), at_most=True,
                advice="free some space, or set MTL_DATA_DIR to a directory on another disk, and rerun the same "
                       "command (the dataset is prepared once)",
            ) from e
        raise


@contextlib.contextmanager
def _silent_tfds() -> Iterator[None]:
    """No tfds progress bars, and its prints (to stdout) dropped, while it prepares a dataset."""
    from tensorflow_datasets.core.utils import tqdm_utils

    active = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(active)


@contextlib.contextmanager
def _image_progress(builder: tfds.core.GeneratorBasedBuilder, enabled: bool) -> Iterator[None]:
    """Our progress bar while `builder` prepares: one tick per image its generators yield."""
    from tqdm.auto import tqdm

    config = builder.builder_config
    total = sum(normalize_counts(config.counts)) if isinstance(config, ScenesConfig) else None
    bar = tqdm(total=total, desc="rendering scenes" if total else "reading images", unit="image",
               disable=not enabled, leave=False, dynamic_ncols=True, mininterval=1.0)
    generators = builder._split_generators

    def counted(dl_manager):  # tfds inspects the signature: dl_manager only
        def count(examples):
            for example in examples:
                yield example
                bar.update(1)

        return {split: count(examples) for split, examples in generators(dl_manager).items()}

    builder._split_generators = counted
    try:
        yield
    finally:
        del builder._split_generators
        bar.close()


def _raw_size(builder: tfds.core.GeneratorBasedBuilder) -> int | None:
    """Uncompressed bytes of every image and label a dataset will hold: at most what its files take."""
    config = builder.builder_config
    per_image = sum(int(np.prod(_shape(m, config.resolution))) * _dtype(m).itemsize
                    for m in getattr(config, "modalities", MODALITIES))
    if isinstance(config, ScenesConfig):
        return per_image * sum(config.counts)
    if not isinstance(builder, TaskonomyLocal):
        return None
    with contextlib.suppress(OSError):
        folders = split_folders(config.root) or {None: config.root}
        return per_image * sum(sum(1 for e in os.scandir(d / config.modalities[0]) if e.name.endswith(".png"))
                               for d in folders.values())
    return None


def load_split(
    source: str | os.PathLike,
    split: str,
    *,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int = 0,
    counts: Sequence[int] | Mapping[str, int] | None = None,
    data_dir: str | os.PathLike | None = None,
    modalities: Iterable[str] | None = None,
    with_stems: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Every image of one split as modality -> stacked array (registry encodings).

    Args:
      source: 'scenes' (the embedded data), 'nyuv2:DIR', 'cityscapes:DIR',
        'celeba:DIR', 'taskonomy:DIR', or a directory in one of those layouts
        (`tasks.sources.parse_source`).
      split: 'train', 'validation' (or 'val') or 'test'.
      resolution: images are (resolution, resolution); Taskonomy data is resized.
      seed, counts: the scenes' seed and (train, validation, test) sizes,
        default 4000/500/500.
      data_dir: the cache (default: $MTL_DATA_DIR or ~/.cache/mtl_grouping/tfds).
      modalities: the modalities to return (default: every Taskonomy modality for
        scenes and Taskonomy folders, all a NYUv2, Cityscapes or CelebA folder has).
      with_stems: also return 'stem': the image names, a str array.
      progress: show a progress bar while the dataset is prepared.

    The first call for a setting prepares the dataset (renders, or decodes the
    PNGs, and writes array_record files); later calls only read them.
    Raises ValueError (TaskonomyLayoutError for a directory) naming what is
    wrong: a missing or empty directory, a bad layout, an empty split.
    """
    split = split_name(split)
    wanted = None if modalities is None else _modalities(modalities)
    healed = False
    while True:
        try:
            builder, fixed = _open_builder(source, resolution=resolution, seed=seed, counts=counts,
                                           data_dir=data_dir, heal=not healed)
            healed = healed or fixed
            # default: every Taskonomy modality (a folder without one is named), or all a layout has
            modalities = wanted or _modalities(
                None if isinstance(builder, (Scenes, TaskonomyLocal)) else builder.builder_config.modalities)
            if isinstance(builder, TaskonomyLocal) and not set(modalities) <= set(builder.builder_config.modalities):
                # A requested modality has no folder: the layout check names it.
                folders = split_folders(builder.builder_config.root)
                for folder in folders.values() if folders else [builder.builder_config.root]:
                    taskonomy.index_files(folder, modalities)
            prepare(builder, progress)
            return read_split(builder, split, modalities, with_stems=with_stems)
        except CacheDamaged as e:
            if healed:  # prepared anew and damaged again: the disk, not a stray write
                raise CacheError(
                    f"the dataset cache in {e.folder.parent.parent} cannot be read even after preparing it again: "
                    f"{e.what}; check the disk it is on, or set MTL_DATA_DIR to another directory"
                ) from e
            _heal(e, Path(data_dir).expanduser() if data_dir is not None else default_data_dir(),
                  getattr(builder.builder_config, "root", None))
            healed = True


def read_split(
    builder: tfds.core.GeneratorBasedBuilder,
    split: str,
    modalities: Iterable[str] | None = None,
    *,
    with_stems: bool = False,
) -> dict[str, np.ndarray]:
    """Read a prepared split through `builder.as_data_source` into stacked arrays."""
    split = split_name(split)
    modalities = _modalities([m for m in builder.info.features if m != "stem"] if modalities is None else modalities)
    n = builder.info.splits[split].num_examples if split in builder.info.splits else 0
    if n == 0:
        raise ValueError(
            f"split {split!r} of {builder.builder_config.description} is empty"
            + (" (the 80/10/10 hash split left no image in it: add images or use train/, val/, test/ folders)"
               if isinstance(builder, TaskonomyLocal) else "")
        )
    resolution = builder.builder_config.resolution
    unavailable = [m for m in modalities if m not in builder.info.features]
    if unavailable:
        raise ValueError(f"{builder.builder_config.description} has no {unavailable[0]!r} data")
    skip = {m: tfds.decode.SkipDecoding() for m in builder.info.features if m not in modalities and m != "stem"}
    out = {m: np.empty((n,) + _shape(m, resolution), dtype=_dtype(m)) for m in modalities}
    stems: list[str] = []
    try:
        with _quiet():
            source = builder.as_data_source(split=split, decoders=skip or None)
        if len(source) != n:
            raise ValueError(f"split {split!r} should hold {n} records, holds {len(source)}")
        get_many = getattr(source, "__getitems__", None)
        for lo in range(0, n, CHUNK):
            keys = list(range(lo, min(n, lo + CHUNK)))
            records = get_many(keys) if get_many else [source[k] for k in keys]
            for j, record in enumerate(records):
                for m in modalities:
                    out[m][lo + j] = record[m]
                if with_stems:
                    stems.append(record["stem"])
    except MemoryError:
        raise
    except Exception as e:  # array_record raises RuntimeError for a bad checksum or a missing shard; zlib, ValueError
        version_dir = Path(builder.data_dir)
        raise CacheDamaged(version_dir.parent, _damaged_files(version_dir, builder.info), e) from e
    if with_stems:
        out["stem"] = np.array([s.decode() if isinstance(s, bytes) else str(s) for s in stems])
    return out


def _damaged_files(version_dir: Path, info: tfds.core.DatasetInfo | None = None) -> list[Path]:
    """The files of a prepared dataset folder that cannot be read back whole.

    dataset_info.json must parse; every array_record shard (those `info` names,
    and any in the folder) must exist, hold the records `info` says, and read
    back: array_record checks every chunk's hash."""
    from array_record.python.array_record_module import ArrayRecordReader

    bad: list[Path] = []
    try:
        json.loads((version_dir / "dataset_info.json").read_text())
    except Exception:
        bad.append(version_dir / "dataset_info.json")
    expected: dict[Path, int | None] = {}
    if info is not None:
        for split_info in info.splits.values():
            for path, length in zip(split_info.filepaths, split_info.shard_lengths):
                expected[Path(os.fspath(path))] = int(length)
    for path in sorted(version_dir.glob("*.array_record-*")):
        expected.setdefault(path, None)
    for path, length in sorted(expected.items()):
        try:
            reader = ArrayRecordReader(os.fspath(path))
            try:
                count = reader.num_records()
                if length is not None and count != length:
                    raise ValueError(f"{count} records, expected {length}")
                for lo in range(0, count, CHUNK):
                    reader.read(list(range(lo, min(count, lo + CHUNK))))
            finally:
                reader.close()
        except Exception:
            bad.append(path)
    return bad


def _heal(damaged: CacheDamaged, data_dir: Path, source_root: Path | None) -> None:
    """Says which file is damaged and deletes that setting's cache folder (derived data only)."""
    folder, data_dir = damaged.folder.resolve(), data_dir.resolve()
    # Only ever a <data dir>/<builder>/<setting> folder, never one holding a user's own data.
    if folder.parent.parent != data_dir or (source_root is not None and folder in (source_root, *source_root.parents)):
        raise damaged
    print(f"mtl: {damaged.what}; deleting {folder} and preparing it again", file=sys.stderr)
    shutil.rmtree(folder)


def load_for_tasks(
    source: str | os.PathLike,
    tasks: Sequence,
    *,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int = 0,
    counts: Sequence[int] | Mapping[str, int] | None = None,
    data_dir: str | os.PathLike | None = None,
    splits: Sequence[str] = SPLITS,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """split -> the modalities `tasks` need (and the input image), for training."""
    from tasks.registry import modalities_for

    modalities = modalities_for(tasks)
    return {
        s: load_split(source, s, resolution=resolution, seed=seed, counts=counts, data_dir=data_dir,
                      modalities=modalities, progress=progress)
        for s in splits
    }

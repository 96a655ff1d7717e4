"""Serving the data through tensorflow-datasets, without TensorFlow: opening, preparing, reading, the cache.

The builders (`tasks.builders`: the embedded scenes, a Taskonomy directory, a
NYUv2, Cityscapes or CelebA folder) write array_record files that `tfds` reads
back with NumPy alone (`builder.as_data_source`, no `tf.data`). `load_split`
is what the training code calls: it prepares a dataset once (rendering or
decoding PNGs, a progress bar on stderr) and then only reads. The scenes'
settings and their in-memory rendering need no tensorflow-datasets
(`tasks.scene_data`; `grouping.dataspec.DataSpec` renders them in memory where
it is not installed); this module does, and importing it without
tensorflow-datasets or array_record raises `MissingPackageError` naming them.

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

import contextlib
import io
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from tasks.scene_data import require_tfds

require_tfds("reading data through tensorflow-datasets (tasks.datasets)")

import tensorflow_datasets as tfds  # noqa: E402

from tasks import taskonomy  # noqa: E402
from tasks.builders import (  # noqa: E402, F401 - re-exported: the builders and their helpers
    CHUNK,
    SPLIT_FOLDERS,
    TASKONOMY_RESOLUTIONS,
    LocalLayout,
    LocalLayoutConfig,
    Scenes,
    ScenesConfig,
    TaskonomyLocal,
    TaskonomyLocalConfig,
    hash_split,
    present_modalities,
    scenes_config,
    split_folders,
    taskonomy_splits,
)
from tasks.mtan import LayoutError  # noqa: E402
from tasks.registry import MODALITIES  # noqa: E402
from tasks.scene_data import (  # noqa: E402, F401 - re-exported: the scenes' settings
    DEFAULT_COUNTS,
    DEFAULT_RESOLUTION,
    RENDERS_AS,
    SCENE_RESOLUTIONS,
    SPLITS,
    normalize_counts,
    render_bytes,
    renderer_fingerprint,
    same_rendering,
    scene_ranges,
    select_modalities,
    split_name,
    stored_dtype,
    stored_shape,
)


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
        from tasks.sources import parse_source

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
    with _one_preparer(builder):
        with _quiet():
            if builder.is_prepared():  # another process prepared it while this one waited: read what it wrote
                builder.info.read_from_directory(builder.data_dir)
                return
        _prepare(builder, progress)


@contextlib.contextmanager
def _one_preparer(builder: tfds.core.GeneratorBasedBuilder) -> Iterator[None]:
    """One process at a time prepares a dataset; another that asks meanwhile says so, waits, then
    finds it prepared. (Two at once raced: the second to finish failed to rename its files onto
    the first's.) An exclusive lock on a file beside the dataset's folders, which the system
    releases when its holder exits, killed or not; none where the system has no `fcntl`."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    name = f"{builder.name}/{builder.builder_config.name}"
    folder = Path(builder.data_dir).parents[2] / ".preparing"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / (name.replace("/", "--") + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"mtl: another process is preparing {name} in {builder.data_dir}; waiting for it", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _prepare(builder: tfds.core.GeneratorBasedBuilder, progress: bool) -> None:
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
    per_image = render_bytes(1, config.resolution, getattr(config, "modalities", MODALITIES))
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
    wanted = None if modalities is None else select_modalities(modalities)
    healed = False
    while True:
        try:
            builder, fixed = _open_builder(source, resolution=resolution, seed=seed, counts=counts,
                                           data_dir=data_dir, heal=not healed)
            healed = healed or fixed
            # default: every Taskonomy modality (a folder without one is named), or all a layout has
            modalities = wanted or select_modalities(
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
    if modalities is None:
        modalities = [m for m in builder.info.features if m != "stem"]
    modalities = select_modalities(modalities)
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
    out = {m: np.empty((n,) + stored_shape(m, resolution), dtype=stored_dtype(m)) for m in modalities}
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

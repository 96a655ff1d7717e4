"""The tensorflow-datasets builders: the embedded scenes and the data folders, written as array_record.

Three builders write array_record files that `tfds` reads back with NumPy
alone (`builder.as_data_source`, no `tf.data`; `tasks.datasets` opens,
prepares and reads them):

* `Scenes`: the embedded default data, rendered by `tasks.scenes.render_scenes`
  (`tasks.scene_data`: the splits' image ranges, the settings and their names).
  One seed, one image index range: train is images [0, n_train), validation
  the next n_val, test the next n_test, so the splits never share an image.
  Default: 4000/500/500 images at 64x64, seed 0.
* `TaskonomyLocal`: a local directory in the Taskonomy layout
  (`tasks.taskonomy`), resized to the configured resolution. If the directory
  has train/, val/ (or validation/) and test/ subfolders, each in the layout,
  they are the splits; otherwise each stem goes to a split by a stable hash:
  the first 8 bytes of sha256(stem) mod 100 below 80 -> train, below 90 ->
  validation, else test.
* `LocalLayout`: a NYUv2 or Cityscapes (MTAN .npy) or CelebA folder
  (`tasks.sources`), resized to the configured resolution.

Every modality is a `tfds.features.Tensor` of its stored dtype and shape
(`tasks.registry.MODALITIES`) stored as zlib-compressed raw bytes (not Image
features: PNG-encoding every label is slow, and without TensorFlow they decode
through PIL one by one); a `stem` text feature names the image
(``point_{i}_view_0`` for scene i). Records are written in key order
(`disable_shuffling`), so record j of a split is its j-th image.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import tensorflow_datasets as tfds

from tasks import taskonomy
from tasks.sources import LAYOUT_NAMES, RESOLUTIONS, Source, open_layout
from tasks.registry import MODALITIES
from tasks.scene_data import (
    DEFAULT_RESOLUTION,
    SCENES_NAME,
    SCENES_VERSION,
    SPLITS,
    check_resolution,
    normalize_counts,
    render_chunks,
    scene_ranges,
    scenes_config_name,
    stored_dtype,
    stored_shape,
)

TASKONOMY_RESOLUTIONS = (16, 512)
CHUNK = 256  # images decoded / read at a time
# Folder names accepted for each split of a Taskonomy directory.
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("val", "validation"),
    "test": ("test",),
}
_ENCODING = "zlib"


def _features(resolution: int, modalities: Sequence[str]) -> tfds.features.FeaturesDict:
    spec = {
        m: tfds.features.Tensor(shape=stored_shape(m, resolution), dtype=stored_dtype(m), encoding=_ENCODING)
        for m in modalities
    }
    spec["stem"] = tfds.features.Text()
    return tfds.features.FeaturesDict(spec)


class ScenesConfig(tfds.core.BuilderConfig):
    """Resolution, seed and split sizes of a rendered scene set; the name encodes all three."""

    def __init__(
        self,
        *,
        resolution: int = DEFAULT_RESOLUTION,
        seed: int = 0,
        counts: Sequence[int] | Mapping[str, int] | None = None,
    ):
        name = scenes_config_name(resolution, seed, counts)  # checks every setting
        n = normalize_counts(counts)
        super().__init__(
            name=name,
            description=(
                f"{sum(n)} scenes at {resolution}x{resolution}, seed {seed}: train images "
                f"[0, {n[0]}), validation [{n[0]}, {n[0] + n[1]}), test [{n[0] + n[1]}, {sum(n)})"
            ),
        )
        self.resolution = resolution
        self.seed = int(seed)
        self.counts = n


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What the builders share: nothing to download, so no checksums file.

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

    name = SCENES_NAME
    VERSION = tfds.core.Version(SCENES_VERSION)
    RELEASE_NOTES = {SCENES_VERSION: "Tensor features (zlib), records in image order."}
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
        for lo, batch in render_chunks(config.seed, start, stop, config.resolution):
            for j in range(len(batch["rgb"])):
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
        resolution = check_resolution(resolution, TASKONOMY_RESOLUTIONS, "Taskonomy data")
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
# A NYUv2, Cityscapes or CelebA folder.


def _layout_fingerprint(layout, resolution: int) -> str:
    h = hashlib.sha256(f"{layout.kind}|{layout.root.resolve()}|{resolution}|{','.join(layout.modalities)}".encode())
    for path in sorted(layout.files()) + [layout.root]:
        st = path.stat()
        h.update(f"{path.relative_to(layout.root) if path != layout.root else '.'}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


class LocalLayoutConfig(tfds.core.BuilderConfig):
    """A NYUv2, Cityscapes or CelebA folder at a resolution; the name ends with a fingerprint of its files."""

    def __init__(self, *, source: Source, resolution: int):
        resolution = check_resolution(resolution, RESOLUTIONS, f"{LAYOUT_NAMES[source.kind]} data")
        layout = open_layout(source)
        slug = re.sub(r"[^a-z0-9]+", "_", layout.root.resolve().name.lower()).strip("_")[:40] or "root"
        super().__init__(name=f"{source.kind}_{slug}_r{resolution}_{_layout_fingerprint(layout, resolution)}",
                         description=f"{LAYOUT_NAMES[source.kind]} folder {layout.root.resolve()} at "
                                     f"{resolution}x{resolution} ({', '.join(layout.modalities)})")
        self.source, self.layout, self.resolution = source, layout, resolution
        self.root = layout.root.resolve()
        self.modalities = layout.modalities


class LocalLayout(_Builder):
    """A NYUv2 or Cityscapes (MTAN .npy) or CelebA folder, resized to the configured resolution."""

    name = "mtl_local_layout"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Tensor features (zlib), records in sample order."}

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(builder=self, description=config.description,
                                     features=_features(config.resolution, config.modalities), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {s: self._generate_examples(keys) for s, keys in self.builder_config.layout.splits().items()}

    def _generate_examples(self, keys):
        config = self.builder_config

        def read(key):
            return config.layout.read(key, config.resolution)

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for lo in range(0, len(keys), CHUNK):
                chunk = keys[lo: lo + CHUNK]
                for j, example in enumerate(pool.map(read, chunk)):
                    key = chunk[j]
                    example["stem"] = key if isinstance(key, str) else f"{key[0]}/{key[1]}"
                    yield lo + j, example

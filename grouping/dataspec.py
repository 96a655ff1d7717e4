"""The data a job runs on: the embedded scenes or a folder in a layout users have (`DataSpec`),
validated before anything loads, and what identifies them in the results store's keys."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DataSpec"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The data: 'scenes' (with resolution, seed, counts), or a folder: 'nyuv2:DIR',
    'cityscapes:DIR', 'celeba:DIR', 'taskonomy:DIR' or a plain DIR whose layout is
    recognised (`tasks.sources`). In-memory arrays: `tasks.custom.ArrayData`.

    The scenes need no tensorflow-datasets: where it (or array_record) is not
    installed they are rendered in memory (`in_memory`), the same arrays under
    the same store keys; a folder needs it (MissingPackageError says so).

    `labels`: a label plan of `tasks.label_plan.PLANS` (scenes only): the training
    split keeps each planned label on a share of its images, oversampled; validation
    and test keep every label. None: every image keeps every label."""

    source: str = "scenes"
    resolution: int = 64
    seed: int = 0
    counts: tuple[int, int, int] | None = None
    data_dir: str | None = None
    labels: str | None = None

    def __post_init__(self):
        if self.labels is not None:
            from tasks.label_plan import get_plan

            get_plan(self.labels)  # an unknown plan: the message lists the known ones
            if not self.is_scenes:
                raise ValueError(f"--labels {self.labels} applies to the embedded scenes only; the data source "
                                 f"{self.source} has the labels it has")

    @property
    def is_scenes(self) -> bool:
        return self.source == "scenes"

    @property
    def kind(self) -> str:
        """'scenes', 'taskonomy', 'nyuv2', 'cityscapes' or 'celeba'."""
        from tasks.sources import parse_source

        return parse_source(self.source).kind

    def resolve_tasks(self, names, *, min_tasks: int = 1) -> tuple:
        """The Task objects called `names` among this source's tasks (`tasks.sources.catalogue`)."""
        from tasks.sources import resolve

        return resolve(self.kind, names, min_tasks=min_tasks)

    @property
    def in_memory(self) -> bool:
        """Whether the data are rendered in memory: the scenes where tensorflow-datasets or
        array_record cannot be imported (the same arrays and store keys as through tfds)."""
        from tasks.scene_data import tfds_available

        return self.is_scenes and not tfds_available()

    def builder(self):
        """The tensorflow-datasets builder, not prepared; None for scenes rendered in memory
        (`in_memory`). A folder source without tensorflow-datasets: MissingPackageError naming
        what to install."""
        from tasks.scene_data import require_tfds

        if self.in_memory:
            return None
        require_tfds(f"the data source {self.source}")
        from tasks.datasets import get_builder

        return get_builder(self.source, resolution=self.resolution, seed=self.seed,
                           counts=self.counts if self.is_scenes else None, data_dir=self.data_dir)

    def check(self, tasks: Sequence) -> dict[str, Any]:
        """Validates the source for `tasks` without loading it; returns `settings()`.

        A Taskonomy folder must hold every label the tasks need (ValueError
        naming the missing ones otherwise)."""
        from tasks.registry import modalities_for

        if not self.is_scenes:
            self.kind  # noqa: B018 - a missing directory or an unknown kind: the message says what is accepted
            if self.counts is not None:
                raise ValueError("--counts applies to the embedded scenes only; a data directory has the images it has")
        builder = self.builder()
        if not self.is_scenes:
            have = tuple(builder.builder_config.modalities)
            missing = [m for m in modalities_for(tasks) if m not in have]
            if missing:
                names = ", ".join(t.name for t in tasks)
                raise ValueError(
                    f"data source {self.source} has no {', '.join(missing)} labels, needed by the tasks {names}; "
                    f"it has: {', '.join(have) or 'no modality folder'}"
                )
        return self.settings(builder)

    def settings(self, builder=None) -> dict[str, Any]:
        """What identifies the data in the store keys: the dataset's name ends with
        the renderer's fingerprint (scenes) or a fingerprint of the folder's files.
        Scenes rendered in memory have the keys of the tfds path (`tasks.scene_data.scenes_dataset`)."""
        from tasks.scene_data import normalize_counts, renderer_fingerprint, scenes_dataset

        builder = builder or self.builder()
        if builder is None:  # rendered in memory: the name tfds gives these settings
            dataset = scenes_dataset(self.resolution, self.seed, self.counts)
        else:
            dataset = f"{builder.name}/{builder.builder_config.name}/{builder.version}"
        out: dict[str, Any] = {
            "source": "scenes" if self.is_scenes else _folder_source(self.source),
            "resolution": self.resolution,
            "dataset": dataset,
        }
        if self.is_scenes:
            out.update(seed=self.seed, counts=list(normalize_counts(self.counts)), renderer=renderer_fingerprint())
        if self.labels is not None:  # absent otherwise: the keys of every run made before label plans
            out["labels"] = self.labels
        return out

    def load(self, tasks: Sequence, progress: bool = True,
             splits: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """split -> the arrays `tasks` need, for `splits` (default train, validation, test):
        through the tensorflow-datasets cache, or for the scenes without it rendered in memory
        (`tasks.scene_data.render_splits`: byte for byte the cache's arrays)."""
        from tasks.registry import modalities_for
        from tasks.scene_data import SPLITS, render_splits, require_tfds

        splits = SPLITS if splits is None else tuple(splits)
        if self.in_memory:
            if not _SAID_IN_MEMORY:
                _SAID_IN_MEMORY.append(True)
                print("mtl: tensorflow-datasets (or array_record) is not installed: rendering the scenes in memory "
                      "(the images its cache would hold, under the same store keys; nothing is cached)",
                      file=sys.stderr)
            out = render_splits(resolution=self.resolution, seed=self.seed, counts=self.counts, splits=splits,
                                modalities=modalities_for(tasks), progress=progress)
        else:
            require_tfds(f"the data source {self.source}")
            from tasks.datasets import load_for_tasks

            out = load_for_tasks(self.source, tasks, resolution=self.resolution, seed=self.seed,
                                 counts=self.counts if self.is_scenes else None, data_dir=self.data_dir,
                                 splits=splits, progress=progress)
        if self.labels is not None and "train" in out:
            from tasks.label_plan import apply_plan, get_plan

            out["train"] = apply_plan(get_plan(self.labels), out["train"])
        return out


_SAID_IN_MEMORY: list[bool] = []  # the in-memory rendering is announced once per process


def _folder_source(source: str) -> str:
    """A folder source as the store keys name it: the resolved path, prefixed by its kind unless Taskonomy."""
    from tasks.sources import parse_source

    parsed = parse_source(source)
    root = str(Path(parsed.root).resolve())
    return root if parsed.kind == "taskonomy" else f"{parsed.kind}:{root}"

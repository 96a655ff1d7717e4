"""Label plans: which training images keep which labels, as when some labels are costly.

In the embedded scenes every image has every label. Real multi-task data
rarely does: segmentation and depth are annotated (or sensed) on a few
hundred images, while labels computed from the image itself (edges,
keypoints) or from a sensor of their own (surface normals) exist
everywhere. A `LabelPlan` turns the scenes' training split into such data:

- each planned modality keeps its labels on its own share of the training
  images (the shares are disjoint: the labels come from different sources)
  and loses them everywhere else. A lost label is marked, not overwritten:
  the split gains a ``labelled:<modality>`` (N,) bool array, and a task that
  reads that modality counts only the flagged images (`tasks.registry.Task.mask`),
  so the depth task loses its labels while normals keep the validity mask
  that depth's z-buffer gives them;
- the images that keep a planned label appear `repeat` times in the split
  (oversampled), so minibatches see them that much more often.

Validation and test splits keep every label: a network is judged on the
whole task. The plan is a pure function of the split's size and the plan
(`apply_plan`), so every task set sees the same images, flags and repeats.

The scripts train the embedded scenes under `DEFAULT_PLAN` ('scarce') with its
training loss weights unless told otherwise (`mtl.cli.scene_setting`):

    python scripts/find_groups.py --tasks seg,depth,normals,edges --budget 2   # scarce, seg=3,depth=3
    python scripts/find_groups.py ... --labels full --task-weights ''          # every label, equal weights
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

__all__ = ["DEFAULT_PLAN", "LABELLED", "LabelPlan", "PLANS", "apply_plan", "get_plan", "labelled_key"]

#: The prefix of a split's per-image label flags: ``labelled:<modality>``.
LABELLED = "labelled:"


def labelled_key(modality: str) -> str:
    """The split key of `modality`'s per-image label flags."""
    return LABELLED + modality


@dataclasses.dataclass(frozen=True)
class LabelPlan:
    """Each (modality, share) keeps its labels on that share of the training images (disjoint
    shares, in order); every image that keeps one appears `repeat` times."""

    name: str
    shares: tuple[tuple[str, float], ...]
    repeat: int
    description: str
    #: The training loss weights the setting trains with, ((task, weight), ...): the scripts' default
    #: --task-weights under this plan (for the tasks a run has).
    task_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if not self.shares:
            raise ValueError(f"label plan {self.name!r}: no modality to plan")
        if any(not 0 < s <= 1 for _, s in self.shares) or sum(s for _, s in self.shares) > 1:
            raise ValueError(f"label plan {self.name!r}: each share must be in (0, 1] and together at most 1, "
                             f"got {self.shares}")
        if self.repeat < 1:
            raise ValueError(f"label plan {self.name!r}: repeat must be at least 1, got {self.repeat}")


#: The plans a command may name (--labels).
PLANS: dict[str, LabelPlan] = {
    "scarce": LabelPlan(
        "scarce", (("segment_semantic", 0.0625), ("depth_zbuffer", 0.047)), 16,
        "seg labelled on 6.25% of the training scenes (250 of 4,000), depth on a disjoint 4.7% (188), each "
        "such scene repeated 16 times; normals, keypoints and edges labelled everywhere; seg's and depth's "
        "training losses tripled (README: 'Choosing the default setting')",
        task_weights=(("seg", 3.0), ("depth", 3.0))),
}

#: The embedded scenes' plan when a command names none (--labels; 'full' keeps every label).
DEFAULT_PLAN = "scarce"


def get_plan(name: str) -> LabelPlan:
    try:
        return PLANS[name]
    except KeyError:
        raise ValueError(f"unknown label plan {name!r}; known: {', '.join(PLANS)}") from None


def apply_plan(plan: LabelPlan, train: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training split under `plan`: a ``labelled:<modality>`` flag array for each planned
    modality, and the labelled images repeated. The shares are drawn once per split size
    (a permutation seeded by it), so the same images keep the same labels in every task set;
    a modality the split does not hold still takes its share (its flags are simply not needed)."""
    if not train or "rgb" not in train:
        raise ValueError("a label plan applies to a training split with its 'rgb' images")
    if any(k.startswith(LABELLED) for k in train):
        raise ValueError("this split already has label flags: a label plan applies once")
    n = len(train["rgb"])
    order = np.random.default_rng([11, n]).permutation(n)
    flags, start = {}, 0
    for modality, share in plan.shares:
        k = max(1, round(share * n))
        if start + k > n:
            raise ValueError(f"label plan {plan.name!r} needs at least {start + k} training images, the split has {n}")
        keep = np.zeros(n, bool)
        keep[order[start:start + k]] = True
        flags[labelled_key(modality)] = keep
        start += k
    out = {**train, **flags}
    if plan.repeat > 1:
        labelled = np.sort(order[:start])
        index = np.concatenate([np.arange(n)] + [labelled] * (plan.repeat - 1))
        out = {k: v[index] for k, v in out.items()}
    return out

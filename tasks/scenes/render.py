"""Rendering scenes: every label of a batch of images, and the entry points `render_scenes` and
`render_scene_params`.

A batch is rendered in five steps, one module each: cast the primary rays
(`raycast`), find the surface there (`raycast.surface`), texture it and
light it (`shading`), and encode the labels (`labels`, with the image
filters of `filters`).
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from tasks.registry import MODALITIES
from tasks.scenes.geometry import _object_table, _passes, _sorted_slots, _texture_table
from tasks.scenes.labels import encode_labels
from tasks.scenes.params import (
    _CHUNK_PIXELS,
    _PARALLEL_PIXELS,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    N_KINDS,
    SceneParams,
    _check_int,
    sample_scene_params,
)
from tasks.scenes.raycast import cast, primary_rays, surface
from tasks.scenes.shading import lights, shade_rgb, texture_gather, texture_mix


def _default_workers(pixels: int) -> int:
    """Threads for a render of `pixels` pixels: up to 2 (numpy releases the
    GIL inside its loops) when the job is large enough to pay for them."""
    if pixels < _PARALLEL_PIXELS:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def render_scene_params(params: SceneParams, resolution: int, *, workers: int | None = None) -> dict[str, np.ndarray]:
    """Render the scenes `params` at `resolution`: {modality: (N,R,R[,C]) array}.

    Images are rendered in batches of a few hundred thousand pixels; with
    `workers` > 1 threads render batches in parallel (default: 2 for large
    jobs on a machine with 2+ cores, else 1). No output depends on either.
    """
    resolution = _check_int("resolution", resolution, MIN_RESOLUTION, MAX_RESOLUTION)
    n = len(params)
    if n < 1:
        raise ValueError("params must hold at least one scene")
    R = resolution
    workers = _default_workers(n * R * R) if workers is None else _check_int("workers", workers, 1)
    params = _sorted_slots(params)
    obj_table, tex_table = _object_table(params), _texture_table(params)
    counts = np.stack([(params.obj_kind == kd).sum(1) for kd in range(N_KINDS)], 1)
    starts = np.cumsum(counts, 1) - counts  # each kind's first slot, in sorted slot order
    out = {name: np.empty((n, R, R) + ((ch,) if ch else ()), dtype) for name, (dtype, ch) in MODALITIES.items()}

    def render(b: slice) -> None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            res = _render_batch(params.subset(b), obj_table[:, b], tex_table[:, b], counts[b], starts[b], R)
        for name, arr in res.items():
            out[name][b] = arr

    size = max(1, _CHUNK_PIXELS // (R * R))
    batches = [slice(i, min(i + size, n)) for i in range(0, n, size)]
    if workers == 1 or len(batches) == 1:
        for b in batches:
            render(b)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(render, b) for b in batches]:
                f.result()
    return out



def _render_batch(p: SceneParams, obj_table: np.ndarray, tex_table: np.ndarray, counts: np.ndarray,
                  starts: np.ndarray, R: int) -> dict[str, np.ndarray]:
    """Render n scenes: every label, as {modality: (n,R,R[,C])}."""
    objs = _passes(obj_table, counts, starts)
    rays = primary_rays(p, R)
    t, sid, cap = cast(p, rays, objs)
    surf = surface(rays, objs, t, sid, cap)
    gather, flat = texture_gather(tex_table, objs, counts, starts, sid)
    wave = texture_mix(gather, surf, rays, t, R)
    lamb, sun = lights(p, objs, sid, surf)
    rgb, gray = shade_rgb(p, gather, wave, lamb, sun)
    del wave, lamb, sun
    return encode_labels(rays, surf, objs, t, sid, flat, rgb, gray, R)


def render_scenes(
    seed: int, count: int, resolution: int, *, start: int = 0, workers: int | None = None
) -> dict[str, np.ndarray]:
    """Images start..start+count-1 of the procedural dataset `seed`, with all labels.

    Returns {modality: array} for every modality in `tasks.registry.MODALITIES`,
    each with a leading axis of `count` and the dtype and shape listed there.
    Image i depends only on (seed, i), whatever `start`, `count` or
    `workers` (threads; see render_scene_params). Raises ValueError for a
    resolution outside 32..256, a count below 1, or a negative seed or start.
    """
    seed = _check_int("seed", seed, 0)
    count = _check_int("count", count, 1)
    resolution = _check_int("resolution", resolution, MIN_RESOLUTION, MAX_RESOLUTION)
    start = _check_int("start", start, 0)
    return render_scene_params(sample_scene_params(seed, count, start=start), resolution, workers=workers)

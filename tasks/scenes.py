"""Procedural 3D room scenes: the embedded default dataset (an RGB image and
every task's label, all rendered from one scene and consistent with each other).

Each image is a closed room (floor, four walls, ceiling) holding 2-5 objects
(in 1 of ~20000 scenes placement fails and fewer remain) standing on the floor (boxes, axis-aligned or yaw-rotated; spheres; vertical
cylinders; vertical cones), seen by a pinhole camera (60 degree field of view,
square image) inside the room at 1.1-1.8 m, pitched 5-25 degrees down at a
random yaw. Every surface carries a procedural solid texture (plain, stripes,
checkerboard or blobs with random colours, frequencies and orientations), so
texture edges need not be depth edges. The RGB image is lit by ambient light,
a point light near the ceiling (with hard shadows cast by the objects) and,
in about 60% of scenes, a directional light.

Rendering is vectorised ray casting in numpy, float32: the rays of a batch of
images form one (n, pixels) array, intersected analytically with the room
(slabs) and then with one object pass per (kind, j) -- the j-th box, sphere,
cylinder or cone of every image in the batch that has one, on those images'
rows (slabs for boxes, quadrics for the rest). Per-object work after that
(normals, curvature, shadow rays) runs on the pixels concerned only; image
filters (Canny, Harris) run on the whole batch. Large jobs render batches on
two threads (numpy releases the GIL in its loops). No JAX, no assets.

Image i of a dataset depends only on (seed, i): its scene parameters are
drawn from ``np.random.default_rng([seed, i])``, so any slice can be
re-rendered alone (and a split rendered in chunks) with identical results.

Conventions and label encodings (those of `tasks.registry`):

* camera frame: x right, y up, z toward the viewer (the camera looks along
  -z); image row 0 is the top.
* depth_zbuffer: distance along the optical axis (not along the ray) in
  1/512 m, rounded, clipped to 65534; 65535 where a ray hits nothing (never
  inside a closed room).
* normal: unit surface normal in the camera frame, facing the camera, stored
  as round((n + 1) / 2 * 255).
* segment_semantic: SEG_CLASSES ids (floor 1, wall 2, ceiling 3, box 4,
  sphere 5, cylinder 6, cone 7); 0 (void) does not occur.
* principal_curvature: signed principal curvatures (k1, k2), |k1| >= |k2|,
  positive where the surface is convex toward the viewer, times
  CURVATURE_SCALE_M (0.25 m), clipped to [-1, 1], stored as
  round((c + 1) / 2 * 255). Planes (room, box faces, cylinder tops): (0, 0);
  sphere of radius r: (s/r, s/r); cylinder side: (s/r, 0); cone side:
  (s cos(a) / rho, 0), a the half-angle, rho the distance from the axis.
* reshading: Lambertian shading of the untextured geometry under one fixed
  directional light from the camera's upper left, behind it (camera-frame
  direction (-1, 1, 1)/sqrt(3)): round(255 * (0.1 + 0.9 * max(0, n.l))), no
  shadows.
* edge_texture: Canny on the RGB image: luma, 5x5 binomial blur (sigma ~1
  px), Sobel, non-maximum suppression along the gradient direction quantised
  to 4 directions, double threshold (CANNY_LOW, CANNY_HIGH on the gradient
  per pixel of luma in [0, 1]) and two steps of hysteresis growth; no edges
  on the outermost pixel ring. Stored spread (`_spread`): 1 on an edge
  pixel and 1/2 on its 8 neighbours, then a 5x5 binomial blur, divided by
  the image's maximum, times 65535.
* edge_occlusion: the near side of a depth discontinuity at an object's
  silhouette: an object pixel whose 4-neighbour lies on another surface more
  than OCCLUSION_REL_JUMP (3%) deeper. Contacts (an object standing on the
  floor) and room creases are not occlusions. Stored lightly blurred:
  65535 on an edge pixel, 32768 on its 8 neighbours, 0 elsewhere.
* keypoints2d: Harris corner response (k = 0.05, 3x3 binomial window) of the
  blurred luma, negative values set to 0, divided by the image's maximum and
  square-rooted (so it grows with contrast squared), then stored spread
  like edge_texture.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os

import numpy as np

from tasks.registry import DEPTH_INVALID, DEPTH_UNITS_PER_METRE, MODALITIES, SEG_CLASSES

MIN_RESOLUTION = 32
MAX_RESOLUTION = 256
FOV_DEG = 60.0
MAX_OBJECTS = 5
N_ROOM_SURFACES = 6  # surface ids: floor, ceiling, wall x=0, wall x=W, wall z=0, wall z=D
CURVATURE_SCALE_M = 0.25
OCCLUSION_REL_JUMP = 0.03
CANNY_LOW = 0.02  # gradient thresholds, luma units per pixel
CANNY_HIGH = 0.05
HARRIS_K = 0.05
RESHADING_LIGHT = (-1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3))

KIND_NONE, KIND_BOX, KIND_SPHERE, KIND_CYLINDER, KIND_CONE = -1, 0, 1, 2, 3
N_KINDS = 4
_KIND_CLASS = np.array([SEG_CLASSES.index(c) for c in ("box", "sphere", "cylinder", "cone")], np.uint8)
_ROOM_CLASS = np.array([SEG_CLASSES.index(c) for c in ("floor", "ceiling", "wall", "wall", "wall", "wall")], np.uint8)
_ROOM_NORMAL = np.array([[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], np.float32)
_EPS = np.float32(1e-4)
_CHUNK_PIXELS = 1 << 18  # pixels per rendered batch: bounds memory, keeps arrays in cache
_PARALLEL_PIXELS = 1 << 21  # jobs from this many pixels render on 2 threads
_F32 = np.float32


# ---------------------------------------------------------------------------
# Scene parameters.


@dataclasses.dataclass
class SceneParams:
    """Parameters of N scenes. K = MAX_OBJECTS object slots; S = 6 + K surfaces
    (the room's six, by surface id, then the object slots).

    World frame: y up; the room spans [0, W] x [0, H] x [0, D] in (x, y, z).

    room: (N,3) W, H, D in metres.
    cam_pos: (N,3); cam_yaw: (N,) radians (0 looks along -z, positive turns
      toward -x); cam_pitch: (N,) radians, positive looks down.
    obj_kind: (N,K) int8 KIND_* (KIND_NONE marks an empty slot).
    obj_pos: (N,K,3) centre of the object's base (x, y_base, z).
    obj_size: (N,K,3) box: half extents (hx, hy, hz); sphere: (r, 0, 0);
      cylinder: (r, height, 0); cone: (base radius, height, 0).
    obj_yaw: (N,K) rotation of a box about the vertical (radians).
    tex_color1, tex_color2: (N,S,3) linear albedos in [0, 1].
    tex_k1, tex_k2: (N,S,3) wave vectors (cycles per metre); tex_phase: (N,S,2)
      (cycles); tex_thr: (N,S). With tri(x) the triangle wave of period 1 in
      [-1, 1] (1 at half-integers), a = tri(k1.p + phase1) and
      b = tri(k2.p + phase2), a surface point p has colour2 where
      sign(a b) min(|a|, |b|) > thr, else colour1 (anti-aliased over about
      a pixel, fading to the mean where the pattern's period nears 2
      pixels). Stripes have k2 = 0, phase2 = 0.5; checkers thr = 0; plain
      surfaces colour2 == colour1.
    ambient: (N,3); light_pos, light_color: (N,3) the point light; sun_dir:
      (N,3) unit vector toward the directional light; sun_color: (N,3), zero
      when the scene has none.
    """

    room: np.ndarray
    cam_pos: np.ndarray
    cam_yaw: np.ndarray
    cam_pitch: np.ndarray
    obj_kind: np.ndarray
    obj_pos: np.ndarray
    obj_size: np.ndarray
    obj_yaw: np.ndarray
    tex_color1: np.ndarray
    tex_color2: np.ndarray
    tex_k1: np.ndarray
    tex_k2: np.ndarray
    tex_phase: np.ndarray
    tex_thr: np.ndarray
    ambient: np.ndarray
    light_pos: np.ndarray
    light_color: np.ndarray
    sun_dir: np.ndarray
    sun_color: np.ndarray

    def __len__(self) -> int:
        return len(self.room)

    def subset(self, index) -> "SceneParams":
        """The scenes at `index` (anything that indexes a numpy axis)."""
        return SceneParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        valid = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {valid}, got {value}")
    return value


class _Draws:
    """Hands out consecutive columns of an (N, M) array of uniform draws."""

    def __init__(self, u: np.ndarray):
        self.u, self.i = u, 0

    def __call__(self, lo=0.0, hi=1.0, shape=()) -> np.ndarray:
        k = math.prod(shape)
        if self.i + k > self.u.shape[1]:
            raise RuntimeError("scene sampler ran out of random draws")
        x = self.u[:, self.i : self.i + k].reshape((len(self.u),) + tuple(shape))
        self.i += k
        return lo + (hi - lo) * x


_N_DRAWS = 512


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _luma(c: np.ndarray) -> np.ndarray:
    return c @ np.array([0.299, 0.587, 0.114])


def _random_colors(d: _Draws, shape: tuple) -> np.ndarray:
    """Random albedos: a hue mixed with grey by a random saturation, random value."""
    hue = d(0, 1, shape + (3,))
    hue = hue / np.maximum(hue.max(-1, keepdims=True), 1e-3)
    sat = d(0.2, 1.0, shape + (1,))
    val = d(0.25, 0.95, shape + (1,))
    return val * (1 - sat + sat * hue)


def _tint(d: _Draws, amount: float) -> np.ndarray:
    """A light colour: white mixed with a random tint, brightest channel 1."""
    c = 1 - amount + amount * d(0, 1, (3,))
    return c / c.max(-1, keepdims=True)


def sample_scene_params(seed: int, count: int, *, start: int = 0) -> SceneParams:
    """Scene parameters of images start..start+count-1 of dataset `seed`.

    Image i's parameters are a function of np.random.default_rng([seed, i])
    alone; all mapping from draws to parameters is vectorised over images.
    """
    seed = _check_int("seed", seed, 0)
    count = _check_int("count", count, 1)
    start = _check_int("start", start, 0)
    d = _Draws(np.stack([np.random.default_rng([seed, i]).random(_N_DRAWS) for i in range(start, start + count)]))
    n, K = count, MAX_OBJECTS
    S = N_ROOM_SURFACES + K

    # Room and camera: the camera stands back from the room's centre, facing it.
    W, D, H = d(4.0, 8.0), d(4.0, 8.0), d(2.6, 3.4)
    yaw = d(-np.pi, np.pi)
    pitch = np.radians(d(5.0, 25.0))
    fwd = np.stack([-np.sin(yaw), -np.cos(yaw)], -1)  # horizontal view direction (x, z)
    right = np.stack([np.cos(yaw), -np.sin(yaw)], -1)
    with np.errstate(divide="ignore"):
        t_back = np.minimum(W / 2 / np.abs(fwd[:, 0]), D / 2 / np.abs(fwd[:, 1]))
    cam_xz = np.stack([W, D], -1) / 2 - fwd * (d(0.35, 0.85) * t_back)[:, None] + right * d(-0.6, 0.6)[:, None]
    cam_xz = np.clip(cam_xz, 0.35, np.stack([W, D], -1) - 0.35)
    cam_y = np.minimum(d(1.1, 1.8), H - 0.4)

    # Objects: kind and size per slot, then a position by rejection sampling
    # (in front of the camera, inside the room, not overlapping earlier ones).
    n_target = np.floor(d(2.0, 6.0)).astype(int)  # 2..5
    kind = np.floor(d(0.0, N_KINDS, (K,))).astype(np.int8)
    a, b, c = d(0, 1, (K,)), d(0, 1, (K,)), d(0, 1, (K,))
    box, sph, cyl = kind == KIND_BOX, kind == KIND_SPHERE, kind == KIND_CYLINDER
    size = np.zeros((n, K, 3))
    size[..., 0] = np.select([box, sph, cyl], [0.15 + 0.35 * a, 0.15 + 0.35 * a, 0.12 + 0.28 * a], 0.15 + 0.3 * a)
    size[..., 1] = np.select([box, sph, cyl], [0.12 + 0.5 * b, 0 * b, 0.3 + 1.1 * b], 0.4 + 1.0 * b)
    size[..., 2] = np.where(box, 0.15 + 0.35 * c, 0.0)
    obj_yaw = np.where(box & (d(0, 1, (K,)) < 0.6), d(0, np.pi / 2, (K,)), 0.0)
    foot = np.where(box, np.hypot(size[..., 0], size[..., 2]), size[..., 0])  # footprint radius
    n_cand = 10
    alpha = np.radians(d(-33.0, 33.0, (K, n_cand)))
    rdist = d(0, 1, (K, n_cand))
    placed = np.zeros((n, K), bool)
    pos = np.zeros((n, K, 2))
    room_xz = np.stack([W, D], -1)
    for k in range(K):
        for j in range(n_cand):
            dirv = _unit(fwd + np.tan(alpha[:, k, j])[:, None] * right)
            with np.errstate(divide="ignore", invalid="ignore"):
                t_wall = np.min(np.abs(np.where(dirv > 0, room_xz - cam_xz, -cam_xz) / dirv), -1)
            r_lo = 0.9 + foot[:, k]
            r_hi = np.minimum(5.0, t_wall - foot[:, k] - 0.05)
            p = cam_xz + dirv * (r_lo + (r_hi - r_lo) * rdist[:, k, j])[:, None]
            ok = (r_hi > r_lo) & ~placed[:, k] & (k < n_target)
            ok &= np.all((p > foot[:, k, None] + 0.02) & (p < room_xz - foot[:, k, None] - 0.02), -1)
            for m in range(k):
                gap = np.linalg.norm(p - pos[:, m], axis=-1) - foot[:, k] - foot[:, m]
                ok &= ~placed[:, m] | (gap > 0.05)
            pos[ok, k] = p[ok]
            placed[ok, k] = True
    kind = np.where(placed, kind, KIND_NONE).astype(np.int8)

    # Textures. Pattern kinds: 0 plain, 1 stripes, 2 checker, 3 blobs; the
    # probabilities depend on the surface (floor, ceiling, walls, objects).
    probs = np.array([[0.15, 0.3, 0.35, 0.2], [0.6, 0.3, 0.1, 0.0]] + [[0.35, 0.35, 0.1, 0.2]] * 4 + [[0.3, 0.25, 0.2, 0.25]] * K)
    pat = (d(0, 1, (S,))[..., None] > np.cumsum(probs, -1)[None, :, :-1]).sum(-1)
    c1, c2 = _random_colors(d, (S,)), _random_colors(d, (S,))
    # the two colours of a pattern differ in brightness by at least 0.15
    l1, l2 = _luma(c1), _luma(c2)
    close = np.abs(l1 - l2) < 0.15
    darker = np.clip(c1 * 0.45, 0, 1)
    lighter = np.clip(c1 * 0.5 + 0.45, 0, 1)
    c2 = np.where(close[..., None], np.where((l1 > 0.45)[..., None], darker, lighter), c2)
    c2 = np.where((pat == 0)[..., None], c1, c2)
    # in-plane axes of the room's surfaces, rotated by phi (walls mostly by 0/90 degrees)
    plane_axes = np.array([[[1, 0, 0], [0, 0, 1]]] * 2 + [[[0, 0, 1], [0, 1, 0]]] * 2 + [[[1, 0, 0], [0, 1, 0]]] * 2, float)
    phi = d(0, np.pi, (N_ROOM_SURFACES,))
    snap = d(0, 1, (N_ROOM_SURFACES,)) < np.array([0.3, 0.5, 0.75, 0.75, 0.75, 0.75])
    phi = np.where(snap, np.round(phi / (np.pi / 2)) * (np.pi / 2), phi)
    cp, sp = np.cos(phi)[..., None], np.sin(phi)[..., None]
    e1 = np.concatenate([cp * plane_axes[:, 0] + sp * plane_axes[:, 1], _unit(d(-1, 1, (K, 3)))], 1)
    e2_room = -sp * plane_axes[:, 0] + cp * plane_axes[:, 1]
    e2_obj = _unit(np.cross(e1[:, N_ROOM_SURFACES:], _unit(d(-1, 1, (K, 3)))))
    e2 = np.concatenate([e2_room, e2_obj], 1)
    freq = np.concatenate([d(1.0, 4.0, (N_ROOM_SURFACES,)), d(2.0, 7.0, (K,))], 1)  # cycles per metre
    blob_dir = _unit(e2 + 0.6 * _unit(d(-1, 1, (S, 3))))
    k1 = freq[..., None] * e1
    k2 = np.select(
        [(pat == 2)[..., None], (pat == 3)[..., None]],
        [freq[..., None] * e2, (freq * d(0.7, 1.4, (S,)))[..., None] * blob_dir],
        0.0,
    )
    k1 = np.where((pat == 0)[..., None], 0.0, k1)
    phase = d(0, 1, (S, 2))
    phase[..., 0] = np.where(pat == 0, 0.5, phase[..., 0])
    phase[..., 1] = np.where(pat <= 1, 0.5, phase[..., 1])
    thr = np.where(pat == 3, d(0.1, 0.45, (S,)), 0.0)

    # Lights.
    ambient = d(0.12, 0.3)[:, None] * _tint(d, 0.25)
    light_pos = np.stack([W * d(0.15, 0.85), H - 0.25, D * d(0.15, 0.85)], -1)
    light_color = d(0.8, 1.5)[:, None] * _tint(d, 0.35)
    elev, azim = np.radians(d(25.0, 70.0)), d(-np.pi, np.pi)
    sun_dir = np.stack([np.cos(elev) * np.cos(azim), np.sin(elev), np.cos(elev) * np.sin(azim)], -1)
    sun_color = np.where(d(0, 1) < 0.6, d(0.25, 0.7), 0.0)[:, None] * _tint(d, 0.35)

    f32 = lambda x: np.ascontiguousarray(x, _F32)  # noqa: E731
    return SceneParams(
        room=f32(np.stack([W, H, D], -1)),
        cam_pos=f32(np.stack([cam_xz[:, 0], cam_y, cam_xz[:, 1]], -1)),
        cam_yaw=f32(yaw),
        cam_pitch=f32(pitch),
        obj_kind=kind,
        obj_pos=f32(np.stack([pos[..., 0], np.zeros((n, K)), pos[..., 1]], -1)),
        obj_size=f32(size),
        obj_yaw=f32(obj_yaw),
        tex_color1=f32(c1),
        tex_color2=f32(c2),
        tex_k1=f32(k1),
        tex_k2=f32(k2),
        tex_phase=f32(phase),
        tex_thr=f32(thr),
        ambient=f32(ambient),
        light_pos=f32(light_pos),
        light_color=f32(light_color),
        sun_dir=f32(sun_dir),
        sun_color=f32(sun_color),
    )


# ---------------------------------------------------------------------------
# Rendering: geometry.


def _col(x) -> np.ndarray:
    """(n,) -> (n,1) float32, to broadcast against (n,P) pixel arrays."""
    return np.asarray(x, _F32).reshape(-1, 1)


def _pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray directions (u, v, -1) through the pixel centres, as (1,P) rows."""
    tan = math.tan(math.radians(FOV_DEG) / 2)
    c = ((np.arange(resolution, dtype=np.float64) + 0.5) / resolution * 2 - 1) * tan
    u = np.tile(c, resolution)
    v = np.repeat(-c, resolution)
    return u.astype(_F32)[None], v.astype(_F32)[None]


def _sorted_slots(p: SceneParams) -> SceneParams:
    """The same scenes with each image's object slots ordered box, sphere,
    cylinder, cone, empty (textures follow their objects)."""
    order = np.argsort(np.where(p.obj_kind == KIND_NONE, N_KINDS, p.obj_kind), axis=1, kind="stable")
    surf = np.concatenate([np.broadcast_to(np.arange(N_ROOM_SURFACES), (len(p), N_ROOM_SURFACES)), N_ROOM_SURFACES + order], 1)
    fields = {}
    for f in dataclasses.fields(p):
        x = getattr(p, f.name)
        if f.name.startswith("obj_"):
            x = np.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), 1)
        elif f.name.startswith("tex_"):
            x = np.take_along_axis(x, surf.reshape(surf.shape + (1,) * (x.ndim - 2)), 1)
        fields[f.name] = x
    return SceneParams(**fields)


# Fields of the per-object table (N, K) and the per-surface texture table (N, S).
_OBJ_FIELDS = ("cx", "cy", "cz", "r", "h", "hz", "cos", "sin", "foot", "top")
_TEX_FIELDS = ("k1x", "k1y", "k1z", "ph1", "k2x", "k2y", "k2z", "ph2", "thr", "kmax",
               "c1r", "c1g", "c1b", "dcr", "dcg", "dcb")


def _object_table(p: SceneParams) -> np.ndarray:
    """(len(_OBJ_FIELDS), N, K) float32: what the renderer needs of each object.

    cy is the box's centre height, the sphere's centre, or the base of a
    cylinder or cone; r the radius (a box's half extent x), h the height (a
    box's half extent y), hz a box's half extent z; foot the radius of the
    footprint around (cx, cz) and top the height of the highest point.
    """
    kind, pos, size = p.obj_kind, p.obj_pos.astype(np.float64), p.obj_size.astype(np.float64)
    s0, s1, s2 = size[..., 0], size[..., 1], size[..., 2]
    box, sph = kind == KIND_BOX, kind == KIND_SPHERE
    cy = pos[..., 1] + np.select([box, sph], [s1, s0], 0.0)
    foot = np.where(box, np.hypot(s0, s2), s0)
    top = pos[..., 1] + np.select([box, sph], [2 * s1, 2 * s0], s1)
    yaw = p.obj_yaw.astype(np.float64)
    return np.stack([pos[..., 0], cy, pos[..., 2], s0, s1, s2, np.cos(yaw), np.sin(yaw), foot, top]).astype(_F32)


def _texture_table(p: SceneParams) -> np.ndarray:
    """(len(_TEX_FIELDS), N, S) float32: each surface's texture parameters."""
    kmax = np.linalg.norm(p.tex_k1, axis=-1) + np.linalg.norm(p.tex_k2, axis=-1)
    dc = p.tex_color2 - p.tex_color1
    cols = [p.tex_k1[..., i] for i in range(3)] + [p.tex_phase[..., 0]]
    cols += [p.tex_k2[..., i] for i in range(3)] + [p.tex_phase[..., 1], p.tex_thr, kmax]
    cols += [p.tex_color1[..., i] for i in range(3)] + [dc[..., i] for i in range(3)]
    return np.stack(cols).astype(_F32)


@dataclasses.dataclass
class _Obj:
    """One pass of a batch: the j-th object of one kind in each image that has
    one (`rows`); the fields of _OBJ_FIELDS as (m,1) columns, or per pixel."""

    kind: int
    sid: int  # surface id
    rows: np.ndarray | slice  # the batch's images that hold this object
    cx: np.ndarray
    cy: np.ndarray
    cz: np.ndarray
    r: np.ndarray
    h: np.ndarray
    hz: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    foot: np.ndarray
    top: np.ndarray

    def expand(self, counts: np.ndarray, names: tuple[str, ...]) -> "_Obj":
        """Per-pixel copies of the fields `names`, for a flat pixel subset
        holding counts[i] pixels of image i (in image order)."""
        vals = {name: np.repeat(getattr(self, name).reshape(-1), counts) for name in names}
        return dataclasses.replace(self, **vals)


def _hit_box(o: _Obj, Ox, Oy, Oz, Dx, Dy, Dz, iDy, near, far):
    """Slab test of the ray O + t D, t in (near, far), with a yaw-rotated box.

    Works on (n,P) arrays with (n,1) parameters or on flat (m,) arrays with
    per-element parameters. Returns the entry t and the hit mask.
    """
    ox, oz = Ox - o.cx, Oz - o.cz
    lox = ox * o.cos - oz * o.sin
    loz = ox * o.sin + oz * o.cos
    ldx = Dx * o.cos - Dz * o.sin
    ldz = Dx * o.sin + Dz * o.cos
    tn = np.full(np.broadcast_shapes(np.shape(Dx), np.shape(Ox)), near, _F32)
    tf = np.full(tn.shape, far, _F32)
    for lo_, ld, h, inv in ((lox, ldx, o.r, None), (Oy - o.cy, Dy, o.h, iDy), (loz, ldz, o.hz, None)):
        inv = np.divide(1, ld, out=ld) if inv is None else inv
        ta = (-h - lo_) * inv
        tb = (h - lo_) * inv
        np.maximum(tn, np.minimum(ta, tb), out=tn)
        np.minimum(tf, np.maximum(ta, tb, out=tb), out=tf)
    return tn, tn <= tf


_NEEDS = {
    KIND_BOX: ("cx", "cy", "cz", "r", "h", "hz", "cos", "sin"),
    KIND_SPHERE: ("cx", "cy", "cz", "r"),
    KIND_CYLINDER: ("cx", "cy", "cz", "r", "h"),
    KIND_CONE: ("cx", "cy", "cz", "r", "h"),
}


def _segment_blocked(o: _Obj, px, py, pz, lx, ly, lz):
    """Whether the segment p + s l, s in (1e-3, 1 - 1e-3), meets object o (flat arrays)."""
    lo, hi = _F32(1e-3), _F32(1 - 1e-3)
    if o.kind == KIND_BOX:
        return _hit_box(o, px, py, pz, lx, ly, lz, 1 / ly, lo, hi)[1]
    wx, wz = px - o.cx, pz - o.cz
    if o.kind == KIND_SPHERE:
        wy = py - o.cy
        l2 = lx * lx + ly * ly + lz * lz
        b = lx * wx + ly * wy + lz * wz
        c = wx * wx + wy * wy + wz * wz - o.r * o.r
        disc = b * b - l2 * c
        s = -b - np.sqrt(disc)  # the near root, times l2
        return (disc > 0) & (s > lo * l2) & (s < hi * l2)
    if o.kind == KIND_CYLINDER:
        beta, wy, gamma = 0.0, py - o.cy, o.r * o.r
    else:  # cone, apex at the top
        beta, wy, gamma = -((o.r / o.h) ** 2), py - (o.cy + o.h), 0.0
    ylo, yhi = o.cy, o.cy + o.h
    A = lx * lx + lz * lz + beta * ly * ly
    B = lx * wx + lz * wz + beta * ly * wy
    C = wx * wx + wz * wz + beta * wy * wy - gamma
    sq = np.sqrt(B * B - A * C)
    blocked = np.zeros(np.shape(px), bool)
    for s in ((-B - sq) / A, (-B + sq) / A):
        y = py + s * ly
        blocked |= (s > lo) & (s < hi) & (y >= ylo) & (y <= yhi)
    if o.kind == KIND_CYLINDER:
        s = (yhi - py) / ly
        qx, qz = wx + s * lx, wz + s * lz
        blocked |= (s > lo) & (s < hi) & (qx * qx + qz * qz <= gamma)
    return blocked


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


def _pass_keys(counts: np.ndarray) -> list[tuple[int, int]]:
    """(kind, j) of a batch's object passes, in order, from its (n, N_KINDS) counts."""
    return [(kd, j) for kd in range(N_KINDS) for j in range(int(counts[:, kd].max(initial=0)))]


def _passes(obj_table: np.ndarray, counts: np.ndarray, starts: np.ndarray) -> list[_Obj]:
    """The batch's object passes: for each kind and j, the j-th object of that
    kind in every image that has one (surface ids 6, 7, ... in pass order)."""
    passes = []
    n = len(counts)
    for kd, j in _pass_keys(counts):
        present = counts[:, kd] > j
        rows = slice(None) if present.all() else np.flatnonzero(present)
        cols = obj_table[:, np.arange(n)[rows], starts[rows, kd] + j]  # (F, m)
        fields = {name: np.ascontiguousarray(cols[i][:, None]) for i, name in enumerate(_OBJ_FIELDS)}
        passes.append(_Obj(kind=kd, sid=N_ROOM_SURFACES + len(passes), rows=rows, **fields))
    return passes


def _rows(a: np.ndarray, rows) -> np.ndarray:
    """The rows of a batch array (a view when all of them)."""
    return a if isinstance(rows, slice) else a[rows]


def _flat_index(idx: np.ndarray, rows, n_rows: int, P: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels found in a (m,P) row subset (flat idx, sorted): their flat index
    in the (n,P) batch, and how many fall in each of the m rows."""
    counts = np.diff(np.searchsorted(idx, np.arange(0, n_rows * P + 1, P)))
    if isinstance(rows, slice):
        return idx, counts
    return idx + np.repeat((rows - np.arange(len(rows))) * P, counts), counts


def _render_batch(p: SceneParams, obj_table: np.ndarray, tex_table: np.ndarray, counts: np.ndarray,
                  starts: np.ndarray, R: int) -> dict[str, np.ndarray]:
    """Render n scenes: every label, as {modality: (n,R,R[,C])}."""
    n, P = len(p), R * R
    objs = _passes(obj_table, counts, starts)
    S = N_ROOM_SURFACES + len(objs)  # surface ids of this batch: the room's, then the passes

    # Primary rays, world frame: D = R_y(yaw) R_x(-pitch) (u, v, -1); with the
    # camera-frame z of D being -1, the ray parameter t is the z-buffer depth.
    u, v = _pixel_grid(R)
    cth, sth = _col(np.cos(p.cam_pitch)), _col(np.sin(p.cam_pitch))
    cps, sps = _col(np.cos(p.cam_yaw)), _col(np.sin(p.cam_yaw))
    Dy = v * cth - sth
    zc = -v * sth - cth
    Dx = u * cps + zc * sps
    Dz = zc * cps - u * sps
    del zc
    iDy = 1 / Dy
    Ox, Oy, Oz = (_col(p.cam_pos[:, i]) for i in range(3))

    # The room, from inside: the nearest of the three exit planes.
    W, H, Dd = (_col(p.room[:, i]) for i in range(3))
    iD = 1 / Dx
    tx = np.maximum((W - Ox) * iD, -Ox * iD)
    np.divide(1, Dz, out=iD)
    tz = np.maximum((Dd - Oz) * iD, -Oz * iD)
    del iD
    ty = np.maximum((H - Oy) * iDy, -Oy * iDy)
    t = np.minimum(np.minimum(tx, ty), tz)
    on_y = ty == t
    on_x = (tx == t) & ~on_y
    on_z = ~(on_x | on_y)
    del tx, ty, tz
    sid = (on_y & (Dy > 0)).view(np.int8).copy()
    sid += on_x.view(np.int8) * (2 + (Dx > 0).view(np.int8))
    sid += on_z.view(np.int8) * (4 + (Dz > 0).view(np.int8))
    del on_x, on_y, on_z

    # Objects (the camera is outside all of them): keep the nearest hit. Each
    # pass works on the rows (images) that hold its object.
    kinds = {o.kind for o in objs}
    if KIND_CYLINDER in kinds or KIND_CONE in kinds:
        Dxz2 = Dx * Dx + Dz * Dz
    if KIND_SPHERE in kinds:
        idd = 1 / (u * u + v * v + 1)  # 1/|D|^2 (the rotation keeps lengths)
    cap = np.zeros((n, P), bool) if KIND_CYLINDER in kinds else None
    for o in objs:
        rows = o.rows
        dx, dy, dz, idy, tr = (_rows(a, rows) for a in (Dx, Dy, Dz, iDy, t))
        ox, oy, oz = (_rows(a, rows) for a in (Ox, Oy, Oz))
        if o.kind == KIND_BOX:
            tq, hit = _hit_box(o, ox, oy, oz, dx, dy, dz, idy, _EPS, np.inf)
            hit &= tq < tr
        elif o.kind == KIND_SPHERE:
            wx, wy, wz = ox - o.cx, oy - o.cy, oz - o.cz
            B = dx * wx
            B += dy * wy
            B += dz * wz
            disc = B * B
            disc -= (wx * wx + wy * wy + wz * wz - o.r * o.r) / idd
            np.sqrt(disc, out=disc)
            tq = np.add(B, disc, out=B)
            tq *= -idd
            hit = (tq > _EPS) & (tq < tr)
        elif o.kind == KIND_CYLINDER:
            dxz2 = _rows(Dxz2, rows)
            wx, wz = ox - o.cx, oz - o.cz
            B = dx * wx
            B += dz * wz
            disc = B * B
            disc -= dxz2 * (wx * wx + wz * wz - o.r * o.r)
            np.sqrt(disc, out=disc)
            B += disc
            tq = np.divide(B, dxz2, out=B)
            np.negative(tq, out=tq)  # entry through the side ...
            y = oy + tq * dy
            side = (y >= o.cy) & (y <= o.cy + o.h) & (tq > _EPS)
            tc = (o.cy + o.h - oy) * idy  # ... or through the top
            qx = wx + tc * dx
            qz = wz + tc * dz
            qx *= qx
            qz *= qz
            qx += qz
            top = (qx <= o.r * o.r) & (tc > _EPS) & (oy > o.cy + o.h)  # seen from above
            tq[~side] = np.inf
            np.copyto(tq, tc, where=top)
            hit = tq < tr
        else:  # cone, apex at the top: x^2 + z^2 = k^2 (y - apex)^2, base <= y <= apex
            k2 = (o.r / o.h) ** 2
            wx, wy, wz = ox - o.cx, oy - (o.cy + o.h), oz - o.cz
            A = dy * dy
            A *= -k2
            A += _rows(Dxz2, rows)
            B = dx * wx
            B += dz * wz
            B -= dy * (k2 * wy)
            disc = B * B
            disc -= A * (wx * wx + wz * wz - k2 * wy * wy)
            np.sqrt(disc, out=disc)
            np.divide(1, A, out=A)
            np.negative(B, out=B)
            t1 = (B - disc) * A
            t2 = np.add(B, disc, out=B)
            t2 *= A
            tq = np.maximum(t1, t2)
            np.minimum(t1, t2, out=t1)
            del A, disc
            y = oy + tq * dy
            tq[~((y >= o.cy) & (y <= o.cy + o.h) & (tq > _EPS))] = np.inf  # far root ...
            np.multiply(t1, dy, out=y)
            y += oy
            np.copyto(tq, t1, where=(y >= o.cy) & (y <= o.cy + o.h) & (t1 > _EPS))  # ... near root wins
            hit = tq < tr
        np.copyto(tr, tq, where=hit)
        sr = _rows(sid, rows)
        np.copyto(sr, o.sid, where=hit)
        if cap is not None:
            cr = _rows(cap, rows)
            np.copyto(cr, top if o.kind == KIND_CYLINDER else False, where=hit)
        if not isinstance(rows, slice):  # write the subset back
            t[rows], sid[rows] = tr, sr
            if cap is not None:
                cap[rows] = cr

    # Hit points; world normals and curvature, per object on its own pixels.
    Px = Ox + t * Dx
    Py = Oy + t * Dy
    Pz = Oz + t * Dz
    room_n = np.zeros((S, 3), _F32)
    room_n[:N_ROOM_SURFACES] = _ROOM_NORMAL
    sid_flat = sid.reshape(-1)
    Nx, Ny, Nz = (np.take(room_n[:, i], sid_flat, mode="wrap").reshape(n, P) for i in range(3))
    K1 = np.zeros((n, P), _F32)
    K2 = np.zeros((n, P), _F32)
    px_f, py_f, pz_f, nx_f, ny_f, nz_f, k1_f, k2_f = (a.reshape(-1) for a in (Px, Py, Pz, Nx, Ny, Nz, K1, K2))
    for o in objs:
        sr = _rows(sid, o.rows)
        idx, per_row = _flat_index(np.flatnonzero(sr == o.sid), o.rows, len(sr), P)
        if idx.size == 0:
            continue
        q = o.expand(per_row, _NEEDS[o.kind])
        dx, dy, dz = px_f[idx] - q.cx, py_f[idx] - q.cy, pz_f[idx] - q.cz
        if o.kind == KIND_BOX:
            lx = dx * q.cos - dz * q.sin
            lz = dx * q.sin + dz * q.cos
            ax, ay, az = np.abs(lx) / q.r, np.abs(dy) / q.h, np.abs(lz) / q.hz
            fx = (ax >= ay) & (ax >= az)
            fy = (ay > ax) & (ay >= az)
            fz = ~(fx | fy)
            nlx = np.copysign(fx, lx, dtype=_F32)
            nlz = np.copysign(fz, lz, dtype=_F32)
            nx_f[idx] = nlx * q.cos + nlz * q.sin
            ny_f[idx] = np.copysign(fy, dy, dtype=_F32)
            nz_f[idx] = nlz * q.cos - nlx * q.sin
        elif o.kind == KIND_SPHERE:
            inv = 1 / q.r
            nx_f[idx], ny_f[idx], nz_f[idx] = dx * inv, dy * inv, dz * inv
            k1_f[idx] = inv
            k2_f[idx] = inv
        elif o.kind == KIND_CYLINDER:
            top = cap.reshape(-1)[idx]
            inv = np.where(top, 0, 1 / np.sqrt(dx * dx + dz * dz))
            nx_f[idx], ny_f[idx], nz_f[idx] = dx * inv, top.astype(_F32), dz * inv
            k1_f[idx] = np.where(top, 0, 1 / q.r)
        else:  # cone: normal ~ (dx/rho, r/h, dz/rho); k1 = cos(a)/rho
            slope = q.r / q.h
            cosa = 1 / np.sqrt(1 + slope * slope)
            inv = cosa / np.sqrt(dx * dx + dz * dz)
            nx_f[idx], ny_f[idx], nz_f[idx] = dx * inv, slope * cosa, dz * inv
            k1_f[idx] = inv

    # Albedo: solid textures of the world point, parameters gathered per pixel.
    # each batch surface id's source column in the texture table: the room's
    # six, then for pass (kind, j) the image's j-th slot of that kind
    src = np.zeros((n, S), np.intp)
    src[:, :N_ROOM_SURFACES] = np.arange(N_ROOM_SURFACES)
    for o, (kd, j) in zip(objs, _pass_keys(counts)):
        src[:, o.sid] = N_ROOM_SURFACES + np.minimum(starts[:, kd] + j, MAX_OBJECTS - 1)
    tex = np.take_along_axis(tex_table, src[None], 2).reshape(len(_TEX_FIELDS), n * S)
    flat = sid_flat + np.repeat(np.arange(0, n * S, S, dtype=np.intp), P)

    def gather(name):  # the surface's parameter at each pixel, (n,P)
        return np.take(tex[_TEX_FIELDS.index(name)], flat, mode="wrap").reshape(n, P)

    waves = []
    for i in "12":
        x = Px * gather(f"k{i}x")
        x += Py * gather(f"k{i}y")
        x += Pz * gather(f"k{i}z")
        x += gather(f"ph{i}")
        tri = np.floor(x)
        np.subtract(x, tri, out=tri)  # triangle wave: 1 - 4 |frac(x) - 1/2|
        tri -= 0.5
        np.abs(tri, out=tri)
        tri *= -4
        tri += 1
        waves.append(tri)
    t1, t2 = waves
    # sign(t1 t2) min(|t1|, |t2|): sharp checkers, ramps of unit slope
    wave = t1 * t2
    np.abs(t1, out=t1)
    np.abs(t2, out=t2)
    np.maximum(t1, t2, out=t1)
    np.maximum(t1, 1e-6, out=t1)
    wave /= t1
    wave -= gather("thr")
    del waves, t1, t2, x
    # anti-aliasing: wave cycles per pixel from the pixel's footprint on the surface
    cosi = Nx * Dx
    cosi += Ny * Dy
    cosi += Nz * Dz
    np.abs(cosi, out=cosi)
    cosi *= 1 / np.sqrt(u * u + v * v + 1)
    np.maximum(cosi, 0.2, out=cosi)
    nu = t * gather("kmax")
    nu *= 2 * math.tan(math.radians(FOV_DEG) / 2) / R
    nu /= cosi
    del cosi
    fade = np.clip(2 - 4 * nu, 0, 1)  # a period under 4 px fades toward the mean
    wave /= 2 * nu + 1e-4
    np.clip(wave, -1, 1, out=wave)
    wave *= fade
    wave += 1
    wave *= 0.5  # 0 -> colour 1, 1 -> colour 2
    del fade, nu

    # Lighting: ambient + point light (shadowed by the objects) + sun.
    Lx = _col(p.light_pos[:, 0]) - Px
    Ly = _col(p.light_pos[:, 1]) - Py
    Lz = _col(p.light_pos[:, 2]) - Pz
    d2 = Lx * Lx
    d2 += Ly * Ly
    d2 += Lz * Lz
    dist = np.sqrt(d2)
    lamb = Nx * Lx
    lamb += Ny * Ly
    lamb += Nz * Lz
    lamb /= dist
    np.maximum(lamb, 0, out=lamb)
    lamb *= 9.0 / (9.0 + d2)
    del d2
    del dist
    _shadow(lamb, objs, sid, p.light_pos, Px, Py, Pz, Lx, Ly, Lz)
    del Lx, Ly, Lz
    sun = Nx * _col(p.sun_dir[:, 0])
    sun += Ny * _col(p.sun_dir[:, 1])
    sun += Nz * _col(p.sun_dir[:, 2])
    np.maximum(sun, 0, out=sun)
    rgb = np.empty((n, P, 3), np.uint8)
    gray = np.zeros((n, P), _F32)
    for ch, (c, wgt) in enumerate(zip("rgb", (0.299, 0.587, 0.114))):
        col = gather("dc" + c)
        col *= wave
        col += gather("c1" + c)
        light = lamb * _col(p.light_color[:, ch])
        light += sun * _col(p.sun_color[:, ch])
        light += _col(p.ambient[:, ch])
        col *= light
        np.clip(col, 0, 1, out=col)
        # display curve x (2 - x), a cheap stand-in for gamma, then 8 bits
        np.multiply(col, 2 - col, out=col)
        col *= 255
        np.rint(col, out=col)
        rgb[..., ch] = col
        col *= wgt / 255
        gray += col
    del wave, lamb, sun, light, col

    # Camera-frame normals: R^T n, R = R_y(yaw) R_x(-pitch).
    nx = Nx * cps
    nx -= Nz * sps
    nz = Nx * sps
    nz += Nz * cps
    ny = Ny * cth
    ny -= nz * sth
    nz *= cth
    nz += Ny * sth
    del Nx, Ny, Nz

    out: dict[str, np.ndarray] = {"rgb": rgb.reshape(n, R, R, 3)}
    depth = t * DEPTH_UNITS_PER_METRE
    np.rint(depth, out=depth)
    np.minimum(depth, DEPTH_INVALID - 1, out=depth)
    depth[~np.isfinite(t)] = DEPTH_INVALID
    out["depth_zbuffer"] = depth.astype(np.uint16).reshape(n, R, R)
    normal = np.empty((n, P, 3), np.uint8)
    for i, c in enumerate((nx, ny, nz)):
        c += 1
        c *= 127.5
        normal[..., i] = np.rint(c, out=c)
    out["normal"] = normal.reshape(n, R, R, 3)
    cls = np.empty((n, S), np.uint8)
    cls[:, :N_ROOM_SURFACES] = _ROOM_CLASS
    cls[:, N_ROOM_SURFACES:] = _KIND_CLASS[[o.kind for o in objs]]
    out["segment_semantic"] = np.take(cls.reshape(-1), flat, mode="wrap").reshape(n, R, R)
    # nx, ny, nz now hold the stored round((n + 1) * 127.5): shade from the stored normal
    lx, ly, lz = RESHADING_LIGHT
    shade = nx * (lx / 127.5)
    shade += ny * (ly / 127.5)
    shade += nz * (lz / 127.5)
    shade -= lx + ly + lz
    np.clip(shade, 0, 1, out=shade)
    shade *= 0.9 * 255
    shade += 0.1 * 255
    out["reshading"] = np.rint(shade, out=shade).astype(np.uint8).reshape(n, R, R)
    curv = np.empty((n, P, 2), np.uint8)
    for i, c in enumerate((K1, K2)):
        c *= CURVATURE_SCALE_M
        np.clip(c, -1, 1, out=c)
        c += 1
        c *= 127.5
        curv[..., i] = np.rint(c, out=c)
    out["principal_curvature"] = curv.reshape(n, R, R, 2)
    out["edge_texture"], out["keypoints2d"] = _canny_and_harris(gray.reshape(n, R, R))
    out["edge_occlusion"] = _soft_edges(_occlusion_edges(t.reshape(n, R, R), sid.reshape(n, R, R)))
    return out


def _shadow(lamb, objs, sid, light_pos, Px, Py, Pz, Lx, Ly, Lz) -> None:
    """Zero `lamb` (the point light's term) where an object blocks the segment
    from the surface point P to the light (L = light - P).

    The light hangs above every object, so a pixel is tested exactly only if
    the segment can meet the object's vertical bounding cylinder: seen from
    above, P lies in the wedge the footprint subtends from the light, at
    least as far as its near side, and the segment has come down below the
    object's top by the time it passes the footprint's far side (or P).
    Lit points of an object itself are skipped (the objects are convex).
    """
    lit = lamb > 0
    n, P = lamb.shape
    blocked = np.zeros(n * P, bool)
    flat = [a.reshape(-1) for a in (Px, Py, Pz, Lx, Ly, Lz)]
    # per pixel: horizontal distance from the light and unit direction light -> P
    h = Lx * Lx
    h += Lz * Lz
    np.sqrt(h, out=h)
    ux = Lx / h
    np.negative(ux, out=ux)
    uz = Lz / h
    np.negative(uz, out=uz)
    for o in objs:
        rows = o.rows
        m = n if isinstance(rows, slice) else len(rows)
        lp = _rows(light_pos, rows)
        qx, qz = o.cx - _col(lp[:, 0]), o.cz - _col(lp[:, 2])  # light -> object, horizontally
        qd = np.sqrt(qx * qx + qz * qz)
        cos_w = np.where(qd > o.foot, np.sqrt(np.maximum(1 - (o.foot / np.maximum(qd, 1e-6)) ** 2, 0)), -2.0)
        hr = _rows(h, rows)
        cand = _rows(ux, rows) * (qx / qd)
        cand += _rows(uz, rows) * (qz / qd)
        cand = cand >= cos_w  # in the wedge
        cand &= hr >= qd - o.foot  # beyond the near side
        cand &= _rows(Ly, rows) * np.minimum(hr, qd + o.foot) >= (_col(lp[:, 1]) - o.top) * hr  # low enough
        cand &= _rows(lit, rows)
        cand &= _rows(sid, rows) != o.sid  # a lit point of a convex object is not shadowed by it
        idx, per_row = _flat_index(np.flatnonzero(cand), rows, m, P)
        if idx.size == 0:
            continue
        q = o.expand(per_row, _NEEDS[o.kind])
        hit = _segment_blocked(q, *(a[idx] for a in flat))
        blocked[idx[hit]] = True
    lamb.reshape(-1)[blocked] = 0


# ---------------------------------------------------------------------------
# Rendering: image-space labels. Filters shift the flattened (n*R*R,) array
# (contiguous, fast) and then repair the border columns.


def _smooth_x(x: np.ndarray) -> np.ndarray:
    """[1,2,1] along the last axis of (n,R,R), edges replicated (not normalised)."""
    f = x.reshape(-1)
    s = f[:-1] + f[1:]
    y = np.empty_like(x)
    np.add(s[:-1], s[1:], out=y.reshape(-1)[1:-1])
    y[..., 0] = 3 * x[..., 0] + x[..., 1]
    y[..., -1] = 3 * x[..., -1] + x[..., -2]
    return y


def _smooth_y(x: np.ndarray) -> np.ndarray:
    """[1,2,1] along axis 1 of (n,R,R), edges replicated (not normalised)."""
    s = x[:, :-1] + x[:, 1:]
    y = np.empty_like(x)
    np.add(s[:, :-1], s[:, 1:], out=y[:, 1:-1])
    y[:, 0] = 3 * x[:, 0] + x[:, 1]
    y[:, -1] = 3 * x[:, -1] + x[:, -2]
    return y


def _blur5(x: np.ndarray) -> np.ndarray:
    """5x5 binomial blur ([1,4,6,4,1] each way), not normalised (gain 256)."""
    return _smooth_y(_smooth_y(_smooth_x(_smooth_x(x))))


def _max3(x: np.ndarray) -> np.ndarray:
    """3x3 maximum filter of an (n,R,R) array (borders use the pixels inside)."""
    f = x.reshape(-1)
    y = x.copy()
    g = y.reshape(-1)
    np.maximum(g[1:], f[:-1], out=g[1:])
    np.maximum(g[:-1], f[1:], out=g[:-1])
    y[..., 0] = np.maximum(x[..., 0], x[..., 1])
    y[..., -1] = np.maximum(x[..., -1], x[..., -2])
    z = y.copy()
    np.maximum(z[:, 1:], y[:, :-1], out=z[:, 1:])
    np.maximum(z[:, :-1], y[:, 1:], out=z[:, :-1])
    return z


def _soft_edges(edges: np.ndarray) -> np.ndarray:
    """Binary (n,R,R) edges -> uint16: 65535 on an edge, 32768 on its 8 neighbours."""
    e = edges.view(np.uint8)
    out = _max3(e).astype(np.uint16)
    out <<= 15
    out |= e * np.uint16(32767)
    return out


def _canny_and_harris(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(edge_texture, keypoints2d) uint16 from the (n,R,R) luma in [0, 1]."""
    n, R, _ = gray.shape
    b = _blur5(gray)
    b *= 1 / 256
    # Sobel, as a derivative per pixel: x to the right, y downward.
    d = np.empty_like(b)
    f, g = b.reshape(-1), d.reshape(-1)
    np.subtract(f[2:], f[:-2], out=g[1:-1])
    d[..., 0] = b[..., 1] - b[..., 0]
    d[..., -1] = b[..., -1] - b[..., -2]
    gx = _smooth_y(d)
    gx *= 1 / 8
    np.subtract(b[:, 2:], b[:, :-2], out=d[:, 1:-1])
    d[:, 0] = b[:, 1] - b[:, 0]
    d[:, -1] = b[:, -1] - b[:, -2]
    gy = _smooth_x(d)
    gy *= 1 / 8
    del b, d
    gxx = gx * gx
    gyy = gy * gy
    m2 = gxx + gyy  # squared gradient magnitude

    # Non-maximum suppression on the flattened array; pixels on the image
    # border (whose flat neighbours wrap) are dropped afterwards.
    L, o = n * R * R, R + 1
    m = m2.reshape(-1)
    c = slice(o, L - o)
    mc = m[c]
    sh = lambda k: m[o + k : L - o + k]  # noqa: E731
    gxc, gyc = gx.reshape(-1)[c], gy.reshape(-1)[c]
    ax, ay = np.abs(gxc), np.abs(gyc)
    horiz = ay <= 0.41421356 * ax  # gradient along x: compare left and right
    vert = ax <= 0.41421356 * ay
    diag = ~(horiz | vert)
    same = (gxc > 0) == (gyc > 0)  # gradient toward down-right or up-left
    del ax, ay
    keep = horiz & (mc > sh(-1)) & (mc >= sh(1))
    keep |= vert & (mc > sh(-R)) & (mc >= sh(R))
    keep |= diag & same & (mc > sh(-R - 1)) & (mc >= sh(R + 1))
    keep |= diag & ~same & (mc > sh(-R + 1)) & (mc >= sh(R - 1))
    weak = np.zeros(L, bool)
    strong = np.zeros(L, bool)
    np.logical_and(keep, mc >= CANNY_LOW**2, out=weak[c])
    np.logical_and(keep, mc >= CANNY_HIGH**2, out=strong[c])
    weak = weak.reshape(n, R, R)
    strong = strong.reshape(n, R, R)
    for a in (weak, strong):
        a[:, 0] = a[:, -1] = False
        a[:, :, 0] = a[:, :, -1] = False
    edges = strong
    for _ in range(2):  # hysteresis: weak edges touching strong ones, two steps
        edges = strong | (weak & _max3(edges.view(np.uint8)).view(bool))
    edge_texture = _spread(_soft_edges(edges).astype(np.float32))

    # Harris corner response, 3x3 binomial window.
    sxx, syy = _smooth_y(_smooth_x(gxx)), _smooth_y(_smooth_x(gyy))
    gx *= gy
    sxy = _smooth_y(_smooth_x(gx))
    tr = sxx + syy
    sxx *= syy
    sxy *= sxy
    sxx -= sxy
    tr *= tr
    tr *= HARRIS_K
    sxx -= tr
    resp = np.maximum(sxx, 0, out=sxx)
    peak = resp.reshape(n, -1).max(1).reshape(n, 1, 1)
    resp /= np.maximum(peak, 1e-30)
    np.sqrt(resp, out=resp)
    return edge_texture, _spread(resp)


def _spread(x: np.ndarray) -> np.ndarray:
    """A sparse (n,R,R) label map -> uint16: 5x5 binomial blur, divided by each image's maximum, times 65535.

    Texture edges and keypoints are stored spread over a few pixels, as
    Taskonomy's keypoint maps are blurred heatmaps. Unspread, the maps are so
    sparse that an L1 loss is minimised by predicting 0 almost everywhere: at
    32x32 no keypoint network beat the best constant prediction, and the
    texture-edge network alone sometimes stayed near it, depending on the seed
    (`python benchmarks/setting_probe.py`, README "Choosing the default setting").
    """
    x = _blur5(x)
    peak = x.reshape(len(x), -1).max(1).reshape(-1, 1, 1)
    x /= np.maximum(peak, 1e-30)
    x *= 65535
    return np.rint(x).astype(np.uint16)


def _occlusion_edges(depth: np.ndarray, sid: np.ndarray) -> np.ndarray:
    """(n,R,R) bool: object pixels with a 4-neighbour on another surface more
    than OCCLUSION_REL_JUMP deeper."""
    n, R, _ = depth.shape
    z, s = depth.reshape(-1), sid.reshape(-1)
    far = z * (1 + OCCLUSION_REL_JUMP)
    edge = np.zeros(z.shape, bool)
    # horizontal pairs on the flat array (pairs that wrap across rows are
    # dropped below), then vertical pairs within each image
    for k, a, b in ((1, slice(None, -1), slice(1, None)), (-1, slice(1, None), slice(None, -1))):
        e = (s[a] != s[b]) & (z[b] > far[a])
        e = e.reshape(-1)
        wrap = np.zeros((n, R, R), bool)
        wrap[:, :, -1 if k == 1 else 0] = True
        e &= ~wrap.reshape(-1)[a]
        edge[a] |= e
    e3 = edge.reshape(n, R, R)
    z3, f3, s3 = depth, far.reshape(n, R, R), sid
    e3[:, :-1] |= (s3[:, :-1] != s3[:, 1:]) & (z3[:, 1:] > f3[:, :-1])
    e3[:, 1:] |= (s3[:, 1:] != s3[:, :-1]) & (z3[:, :-1] > f3[:, 1:])
    e3 &= sid >= N_ROOM_SURFACES
    return e3


# ---------------------------------------------------------------------------


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

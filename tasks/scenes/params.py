"""Scene parameters: what each image of the embedded scenes holds, drawn from (seed, index).

The renderer's constants live here too (field of view, label scales, filter
thresholds), so every other module of the renderer reads them from one place.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tasks.registry import SEG_CLASSES

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


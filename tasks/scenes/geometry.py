"""Scene geometry for the ray caster: object and texture tables, object passes, shape tests.

A batch of images is cast as one (n, pixels) array of rays. Objects are
intersected in passes: pass (kind, j) holds the j-th object of that kind in
every image that has one (`_Obj`, on those images' rows), so each pass is
one vectorised shape test.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tasks.scenes.params import (
    _F32,
    FOV_DEG,
    KIND_BOX,
    KIND_CONE,
    KIND_CYLINDER,
    KIND_NONE,
    KIND_SPHERE,
    N_KINDS,
    N_ROOM_SURFACES,
    SceneParams,
)

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

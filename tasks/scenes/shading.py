"""Shading the hit points of a batch: solid textures, the lights with shadows, the RGB image.

Albedo is a solid texture of the world point (two triangle waves, see
`SceneParams`), anti-aliased by the pixel's footprint on the surface. Light
is ambient + a point light (shadowed by the objects) + a directional sun;
the image is passed through a display curve x (2 - x) and stored in 8 bits.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tasks.scenes.geometry import _TEX_FIELDS, _NEEDS, _col, _flat_index, _Obj, _pass_keys, _rows, _segment_blocked
from tasks.scenes.params import _F32, FOV_DEG, MAX_OBJECTS, N_ROOM_SURFACES, SceneParams
from tasks.scenes.raycast import Rays, Surface


def texture_gather(tex_table: np.ndarray, objs: list[_Obj], counts: np.ndarray, starts: np.ndarray,
                   sid: np.ndarray) -> tuple[Callable[[str], np.ndarray], np.ndarray]:
    """(gather, flat): gather(name) is the hit surface's texture parameter `name` at
    each pixel, (n,P); flat indexes each pixel's surface in the (n*S,) per-surface tables."""
    n, P = sid.shape
    S = N_ROOM_SURFACES + len(objs)
    # each batch surface id's source column in the texture table: the room's
    # six, then for pass (kind, j) the image's j-th slot of that kind
    src = np.zeros((n, S), np.intp)
    src[:, :N_ROOM_SURFACES] = np.arange(N_ROOM_SURFACES)
    for o, (kd, j) in zip(objs, _pass_keys(counts)):
        src[:, o.sid] = N_ROOM_SURFACES + np.minimum(starts[:, kd] + j, MAX_OBJECTS - 1)
    tex = np.take_along_axis(tex_table, src[None], 2).reshape(len(_TEX_FIELDS), n * S)
    flat = sid.reshape(-1) + np.repeat(np.arange(0, n * S, S, dtype=np.intp), P)

    def gather(name):  # the surface's parameter at each pixel, (n,P)
        return np.take(tex[_TEX_FIELDS.index(name)], flat, mode="wrap").reshape(n, P)

    return gather, flat


def texture_mix(gather: Callable[[str], np.ndarray], s: Surface, r: Rays, t: np.ndarray, R: int) -> np.ndarray:
    """(n,P) in [0, 1]: how much of colour 2 (against colour 1) each pixel shows."""
    Px, Py, Pz = s.Px, s.Py, s.Pz
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
    cosi = s.Nx * r.Dx
    cosi += s.Ny * r.Dy
    cosi += s.Nz * r.Dz
    np.abs(cosi, out=cosi)
    cosi *= 1 / np.sqrt(r.u * r.u + r.v * r.v + 1)
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
    return wave


def lights(p: SceneParams, objs: list[_Obj], sid: np.ndarray, s: Surface) -> tuple[np.ndarray, np.ndarray]:
    """(point, sun): the point light's Lambertian term with distance falloff and
    hard shadows, and the directional light's Lambertian term, (n,P) each."""
    Px, Py, Pz, Nx, Ny, Nz = s.Px, s.Py, s.Pz, s.Nx, s.Ny, s.Nz
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
    return lamb, sun


def shade_rgb(p: SceneParams, gather: Callable[[str], np.ndarray], wave: np.ndarray, lamb: np.ndarray,
              sun: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, gray): the (n,P,3) uint8 image and its (n,P) float32 luma in [0, 1]."""
    n, P = wave.shape
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
    return rgb, gray


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

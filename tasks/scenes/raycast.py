"""Casting the primary rays of a batch: where each pixel's ray first meets the room or an object.

`cast` returns, per pixel, the z-buffer depth t, the surface id hit (the
room's six, then one per object pass) and, for cylinders, whether the hit
is on the top cap; `surface` then gives the world-frame hit point, unit
normal and principal curvatures there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tasks.scenes.geometry import _col, _flat_index, _hit_box, _NEEDS, _Obj, _pixel_grid, _rows
from tasks.scenes.params import (
    _EPS,
    _F32,
    _ROOM_NORMAL,
    KIND_BOX,
    KIND_CONE,
    KIND_CYLINDER,
    KIND_SPHERE,
    N_ROOM_SURFACES,
    SceneParams,
)


@dataclasses.dataclass
class Rays:
    """The primary rays of n images, world frame: origin (n,1) columns, directions (n,P).

    D = R_y(yaw) R_x(-pitch) (u, v, -1); with the camera-frame z of D being
    -1, the ray parameter t is the z-buffer depth. u, v are the camera-frame
    (1,P) pixel directions; cth, sth, cps, sps the cosines and sines of
    pitch and yaw, as (n,1) columns."""

    u: np.ndarray
    v: np.ndarray
    cth: np.ndarray
    sth: np.ndarray
    cps: np.ndarray
    sps: np.ndarray
    Dx: np.ndarray
    Dy: np.ndarray
    Dz: np.ndarray
    iDy: np.ndarray
    Ox: np.ndarray
    Oy: np.ndarray
    Oz: np.ndarray


def primary_rays(p: SceneParams, R: int) -> Rays:
    """One ray through each pixel centre of each image of `p`."""
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
    return Rays(u, v, cth, sth, cps, sps, Dx, Dy, Dz, iDy, Ox, Oy, Oz)


def _hit_room(p: SceneParams, r: Rays) -> tuple[np.ndarray, np.ndarray]:
    """(t, surface id) where each ray leaves the room: the nearest of three exit planes."""
    Dx, Dy, Dz, iDy, Ox, Oy, Oz = r.Dx, r.Dy, r.Dz, r.iDy, r.Ox, r.Oy, r.Oz
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
    return t, sid


def _enter_sphere(o: _Obj, ox, oy, oz, dx, dy, dz, idd, tr):
    wx, wy, wz = ox - o.cx, oy - o.cy, oz - o.cz
    B = dx * wx
    B += dy * wy
    B += dz * wz
    disc = B * B
    disc -= (wx * wx + wy * wy + wz * wz - o.r * o.r) / idd
    np.sqrt(disc, out=disc)
    tq = np.add(B, disc, out=B)
    tq *= -idd
    return tq, (tq > _EPS) & (tq < tr)


def _enter_cylinder(o: _Obj, ox, oy, oz, dx, dy, dz, idy, dxz2, tr):
    """Entry t, hit mask and whether the entry is through the top cap."""
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
    return tq, tq < tr, top


def _enter_cone(o: _Obj, ox, oy, oz, dx, dy, dz, dxz2, tr):
    """Cone, apex at the top: x^2 + z^2 = k^2 (y - apex)^2, base <= y <= apex."""
    k2 = (o.r / o.h) ** 2
    wx, wy, wz = ox - o.cx, oy - (o.cy + o.h), oz - o.cz
    A = dy * dy
    A *= -k2
    A += dxz2
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
    return tq, tq < tr


def cast(p: SceneParams, r: Rays, objs: list[_Obj]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(t, sid, cap): depth and surface id of the nearest hit of each ray, and
    (when the batch has cylinders) whether it is a cylinder's top cap.

    The room is hit from inside, the objects from outside (the camera is
    outside all of them); each object pass works on the rows (images) that
    hold its object and keeps the hit where it is nearer."""
    t, sid = _hit_room(p, r)
    n, P = t.shape
    Dx, Dy, Dz, iDy = r.Dx, r.Dy, r.Dz, r.iDy
    kinds = {o.kind for o in objs}
    if KIND_CYLINDER in kinds or KIND_CONE in kinds:
        Dxz2 = Dx * Dx + Dz * Dz
    if KIND_SPHERE in kinds:
        idd = 1 / (r.u * r.u + r.v * r.v + 1)  # 1/|D|^2 (the rotation keeps lengths)
    cap = np.zeros((n, P), bool) if KIND_CYLINDER in kinds else None
    for o in objs:
        rows = o.rows
        dx, dy, dz, idy, tr = (_rows(a, rows) for a in (Dx, Dy, Dz, iDy, t))
        ox, oy, oz = (_rows(a, rows) for a in (r.Ox, r.Oy, r.Oz))
        top = None
        if o.kind == KIND_BOX:
            tq, hit = _hit_box(o, ox, oy, oz, dx, dy, dz, idy, _EPS, np.inf)
            hit &= tq < tr
        elif o.kind == KIND_SPHERE:
            tq, hit = _enter_sphere(o, ox, oy, oz, dx, dy, dz, idd, tr)
        elif o.kind == KIND_CYLINDER:
            tq, hit, top = _enter_cylinder(o, ox, oy, oz, dx, dy, dz, idy, _rows(Dxz2, rows), tr)
        else:
            tq, hit = _enter_cone(o, ox, oy, oz, dx, dy, dz, _rows(Dxz2, rows), tr)
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
    return t, sid, cap


@dataclasses.dataclass
class Surface:
    """World-frame hit point P, unit normal N and principal curvatures K1, K2 per pixel, (n,P) each."""

    Px: np.ndarray
    Py: np.ndarray
    Pz: np.ndarray
    Nx: np.ndarray
    Ny: np.ndarray
    Nz: np.ndarray
    K1: np.ndarray
    K2: np.ndarray


def surface(r: Rays, objs: list[_Obj], t: np.ndarray, sid: np.ndarray, cap: np.ndarray | None) -> Surface:
    """Hit points; world normals and curvature, per object on its own pixels."""
    n, P = t.shape
    S = N_ROOM_SURFACES + len(objs)
    Px = r.Ox + t * r.Dx
    Py = r.Oy + t * r.Dy
    Pz = r.Oz + t * r.Dz
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
    return Surface(Px, Py, Pz, Nx, Ny, Nz, K1, K2)

"""Encoding a batch's geometry as the stored labels of `tasks.registry` (depth, normals, segmentation,
reshading, curvature, and the image-space edges and keypoints of `tasks.scenes.filters`)."""

from __future__ import annotations

import numpy as np

from tasks.registry import DEPTH_INVALID, DEPTH_UNITS_PER_METRE
from tasks.scenes.filters import _canny_and_harris, _occlusion_edges, _soft_edges
from tasks.scenes.geometry import _Obj
from tasks.scenes.params import _KIND_CLASS, _ROOM_CLASS, CURVATURE_SCALE_M, N_ROOM_SURFACES, RESHADING_LIGHT
from tasks.scenes.raycast import Rays, Surface


def encode_labels(r: Rays, s: Surface, objs: list[_Obj], t: np.ndarray, sid: np.ndarray, flat: np.ndarray,
                  rgb: np.ndarray, gray: np.ndarray, R: int) -> dict[str, np.ndarray]:
    """{modality: (n,R,R[,C])} for every modality, the (n,P,3) image `rgb` included.

    `flat` indexes each pixel's surface in the batch's (n*S,) per-surface
    tables (`tasks.scenes.shading.texture_gather`), `gray` is the image's luma."""
    n, P = t.shape
    S = N_ROOM_SURFACES + len(objs)
    Nx, Ny, Nz, cps, sps, cth, sth = s.Nx, s.Ny, s.Nz, r.cps, r.sps, r.cth, r.sth
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
    for i, c in enumerate((s.K1, s.K2)):
        c *= CURVATURE_SCALE_M
        np.clip(c, -1, 1, out=c)
        c += 1
        c *= 127.5
        curv[..., i] = np.rint(c, out=c)
    out["principal_curvature"] = curv.reshape(n, R, R, 2)
    out["edge_texture"], out["keypoints2d"] = _canny_and_harris(gray.reshape(n, R, R))
    out["edge_occlusion"] = _soft_edges(_occlusion_edges(t.reshape(n, R, R), sid.reshape(n, R, R)))
    return out

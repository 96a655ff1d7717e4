"""Image-space labels of the scenes: Canny texture edges, Harris keypoints, occlusion edges.

Filters shift the flattened (n*R*R,) array (contiguous, fast) and then
repair the border columns.
"""

from __future__ import annotations

import numpy as np

from tasks.scenes.params import CANNY_HIGH, CANNY_LOW, HARRIS_K, N_ROOM_SURFACES, OCCLUSION_REL_JUMP

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


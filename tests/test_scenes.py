"""The procedural scene renderer: encodings, determinism, and that every label
agrees with the geometry it was rendered from."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tasks.registry import MODALITIES, SEG_CLASSES
from tasks import scenes

CLS = {name: i for i, name in enumerate(SEG_CLASSES)}


@pytest.fixture(scope="module")
def batch():
    """A small random batch shared by the invariant tests."""
    return scenes.render_scenes(3, 24, 48)


def decode_normals(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 127.5 - 1.0


def camera_rays(R: int) -> np.ndarray:
    """(R,R,3) camera-frame ray directions (u, v, -1): x right, y up, z toward the viewer."""
    tan = math.tan(math.radians(scenes.FOV_DEG) / 2)
    c = ((np.arange(R) + 0.5) / R * 2 - 1) * tan
    u, v = np.meshgrid(c, -c)
    return np.stack([u, v, -np.ones_like(u)], -1)


def hand_scene(objects=(), *, pitch_deg=20.0, yaw=0.0, floor="stripes", plain_walls=True) -> scenes.SceneParams:
    """One scene built by hand: a 6 x 3 x 8 m room, the camera at (3, 1.5, 7)
    looking along -z (yaw 0) pitched down; `objects` as (kind, (x, z), size).
    Textures: the floor striped (or plain), everything else plain; one
    point light, no sun."""
    p = scenes.sample_scene_params(0, 1)
    K, S = scenes.MAX_OBJECTS, scenes.N_ROOM_SURFACES + scenes.MAX_OBJECTS
    f = dataclasses.asdict(p)
    f["room"] = np.array([[6.0, 3.0, 8.0]], np.float32)
    f["cam_pos"] = np.array([[3.0, 1.5, 7.0]], np.float32)
    f["cam_yaw"] = np.array([yaw], np.float32)
    f["cam_pitch"] = np.array([math.radians(pitch_deg)], np.float32)
    kind = np.full((1, K), scenes.KIND_NONE, np.int8)
    pos = np.zeros((1, K, 3), np.float32)
    size = np.zeros((1, K, 3), np.float32)
    for k, (kd, (x, z), sz) in enumerate(objects):
        kind[0, k], pos[0, k] = kd, (x, 0.0, z)
        size[0, k, : len(sz)] = sz
    f.update(obj_kind=kind, obj_pos=pos, obj_size=size, obj_yaw=np.zeros((1, K), np.float32))
    c1 = np.tile(np.array([0.6, 0.55, 0.5], np.float32), (1, S, 1))
    c1[0, 0] = (0.8, 0.8, 0.8)  # floor
    c1[0, 2:6] = (0.45, 0.5, 0.6)  # walls
    c1[0, 6:] = (0.8, 0.2, 0.2)  # objects: plain red
    c2 = c1.copy()
    k1 = np.zeros((1, S, 3), np.float32)
    phase = np.full((1, S, 2), 0.5, np.float32)
    if floor == "stripes":
        c2[0, 0] = (0.1, 0.1, 0.1)
        k1[0, 0] = (1.5, 0.0, 0.0)  # stripes along z, 1.5 per metre
        phase[0, 0, 0] = 0.1
    f.update(tex_color1=c1, tex_color2=c2, tex_k1=k1, tex_k2=np.zeros((1, S, 3), np.float32), tex_phase=phase,
             tex_thr=np.zeros((1, S), np.float32))
    f["light_pos"] = np.array([[3.0, 2.8, 4.0]], np.float32)
    f["light_color"] = np.ones((1, 3), np.float32)
    f["sun_color"] = np.zeros((1, 3), np.float32)
    f["ambient"] = np.full((1, 3), 0.3, np.float32)
    return scenes.SceneParams(**f)


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("R", [32, 48, 64])
def test_modalities_dtypes_and_shapes(R):
    out = scenes.render_scenes(0, 2, R)
    assert list(out) == list(MODALITIES)
    for name, (dtype, ch) in MODALITIES.items():
        assert out[name].dtype == np.dtype(dtype), name
        assert out[name].shape == (2, R, R) + ((ch,) if ch else ()), name


def test_deterministic_per_image_and_sliceable():
    a = scenes.render_scenes(11, 5, 32)
    b = scenes.render_scenes(11, 5, 32)
    part = scenes.render_scenes(11, 3, 32, start=2)
    threads = scenes.render_scenes(11, 5, 32, workers=2)
    other = scenes.render_scenes(12, 5, 32)
    for name in MODALITIES:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_array_equal(a[name][2:], part[name], err_msg=name)
        np.testing.assert_array_equal(a[name], threads[name], err_msg=name)
    assert not np.array_equal(a["rgb"], other["rgb"])
    assert not np.array_equal(a["rgb"][0], a["rgb"][1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(seed=0, count=1, resolution=31), "32..256"),
        (dict(seed=0, count=1, resolution=257), "32..256"),
        (dict(seed=0, count=1, resolution=64.0), "resolution must be an integer"),
        (dict(seed=0, count=0, resolution=64), "count must be >= 1"),
        (dict(seed=-1, count=1, resolution=64), "seed must be >= 0"),
        (dict(seed=0, count=1, resolution=64, start=-3), "start must be >= 0"),
        (dict(seed=0, count=1, resolution=64, workers=0), "workers must be >= 1"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scenes.render_scenes(**kwargs)


def test_scene_contents(batch):
    p = scenes.sample_scene_params(3, 200)
    n_obj = (p.obj_kind != scenes.KIND_NONE).sum(1)
    assert n_obj.min() >= 1 and n_obj.max() <= 5 and (n_obj >= 2).mean() > 0.97
    seg = batch["segment_semantic"]
    assert seg.min() >= 1 and seg.max() <= len(SEG_CLASSES) - 1  # void never occurs
    present = set(np.unique(seg))
    assert {CLS[c] for c in ("floor", "wall", "box", "sphere", "cylinder", "cone")} <= present
    # most images show several objects and several textures
    obj_px = (seg >= CLS["box"]).mean((1, 2))
    assert np.median(obj_px) > 0.08
    assert (batch["edge_texture"] > 32768).mean() > 0.02  # ridges of the spread edge map


def test_depth_is_valid_z_buffer(batch):
    d = batch["depth_zbuffer"]
    assert d.min() > 0 and d.max() < 65535  # a closed room: every ray hits
    assert d.max() / 512 < 12.0  # within the largest room's diagonal


def test_normals_unit_and_facing_camera(batch):
    n = decode_normals(batch["normal"])
    norm = np.linalg.norm(n, axis=-1)
    assert np.abs(norm - 1).max() < 0.015  # 8-bit quantisation
    rays = camera_rays(n.shape[1])
    assert (np.einsum("nijc,ijc->nij", n, rays) < 0.02).all()


def test_normals_agree_with_depth_on_planes(batch):
    """Back-project the depth map; on flat interiors the cross product of the
    point differences is the decoded normal."""
    R = batch["depth_zbuffer"].shape[1]
    z = batch["depth_zbuffer"].astype(np.float64) / 512
    X = camera_rays(R)[None] * z[..., None]  # camera-frame points
    dx = X[:, 1:-1, 2:] - X[:, 1:-1, :-2]
    dy = X[:, :-2, 1:-1] - X[:, 2:, 1:-1]  # upward
    est = np.cross(dx, dy)
    est /= np.linalg.norm(est, axis=-1, keepdims=True)
    n = batch["normal"].astype(np.int16)
    # pixels whose 3x3 neighbourhood has one normal (a plane interior)
    flat = np.ones(est.shape[:3], bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            nb = n[:, 1 + di : R - 1 + di, 1 + dj : R - 1 + dj]
            flat &= (np.abs(nb - n[:, 1:-1, 1:-1]).max(-1) <= 1)
    assert flat.mean() > 0.5
    dec = decode_normals(batch["normal"][:, 1:-1, 1:-1])
    dec /= np.linalg.norm(dec, axis=-1, keepdims=True)  # undo the 8-bit length error
    cos = np.clip((est * dec).sum(-1), -1, 1)[flat]
    angle = np.degrees(np.arccos(cos))
    assert np.median(angle) < 1.0
    assert np.percentile(angle, 95) < 4.0


def test_floor_normal_is_up_tilted_by_pitch():
    for pitch in (8.0, 22.0):
        out = scenes.render_scene_params(hand_scene(pitch_deg=pitch), 48)
        floor = out["segment_semantic"][0] == CLS["floor"]
        n = decode_normals(out["normal"][0][floor])
        th = math.radians(pitch)
        np.testing.assert_allclose(n, np.broadcast_to([0, math.cos(th), math.sin(th)], n.shape), atol=0.012)


def test_hand_built_layout_segmentation_curvature_depth():
    r = 0.5
    p = hand_scene([(scenes.KIND_SPHERE, (3.0, 4.0), (r,)), (scenes.KIND_CYLINDER, (1.8, 3.5), (0.3, 1.0))])
    R = 64
    out = scenes.render_scene_params(p, R)
    seg = out["segment_semantic"][0]
    # the bottom rows are mostly floor; the top rows wall or ceiling
    assert (seg[-3:] == CLS["floor"]).mean() > 0.6
    assert np.isin(seg[:3], [CLS["wall"], CLS["ceiling"]]).all()
    # the sphere's centre projects where the renderer put it, at the right depth
    th = math.radians(20.0)
    rel = np.array([0.0, r - 1.5, 4.0 - 7.0])  # world offset from the camera
    cam = np.array([rel[0], rel[1] * math.cos(th) - rel[2] * math.sin(th), rel[1] * math.sin(th) + rel[2] * math.cos(th)])
    tan = math.tan(math.radians(scenes.FOV_DEG) / 2)
    col = int((cam[0] / -cam[2] / tan + 1) / 2 * R)
    row = int((1 - cam[1] / -cam[2] / tan) / 2 * R)
    assert seg[row, col] == CLS["sphere"]
    centre_dist = -cam[2]
    assert abs(out["depth_zbuffer"][0, row, col] / 512 - (centre_dist - r)) < 0.1
    # curvature: sphere (s/r, s/r), cylinder side (s/r, 0), planes (0, 0)
    curv = out["principal_curvature"][0].astype(np.float64) / 127.5 - 1
    s = scenes.CURVATURE_SCALE_M
    sph = seg == CLS["sphere"]
    np.testing.assert_allclose(curv[sph], s / r, atol=0.01)
    cyl = seg == CLS["cylinder"]
    side = cyl & (np.abs(curv[..., 0] - s / 0.3) < 0.01)
    assert side.sum() > 0.5 * cyl.sum()
    np.testing.assert_allclose(curv[cyl][:, 1], 0, atol=0.005)
    room = np.isin(seg, [CLS["floor"], CLS["wall"], CLS["ceiling"]])
    np.testing.assert_allclose(curv[room], 0, atol=0.005)


def test_tall_cylinder_seen_from_below_its_top():
    """A cylinder taller than the camera: its top is invisible, its side faces the camera."""
    out = scenes.render_scene_params(hand_scene([(scenes.KIND_CYLINDER, (3.2, 5.0), (0.4, 2.2))], pitch_deg=5), 48)
    cyl = out["segment_semantic"][0] == CLS["cylinder"]
    assert cyl.sum() > 50
    n = decode_normals(out["normal"][0])
    assert (np.einsum("ijc,ijc->ij", n, camera_rays(48))[cyl] < 0.02).all()
    k1 = out["principal_curvature"][0][..., 0].astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(k1[cyl], scenes.CURVATURE_SCALE_M / 0.4, atol=0.01)


def test_curvature_matches_classes(batch):
    seg, curv = batch["segment_semantic"], batch["principal_curvature"].astype(np.int16) - 128
    for c in ("floor", "wall", "ceiling", "box"):
        assert np.abs(curv[seg == CLS[c]]).max() <= 1, c
    sph = curv[seg == CLS["sphere"]]
    assert (np.abs(sph[:, 0] - sph[:, 1]) <= 1).all() and (sph[:, 0] > 10).all()
    for c in ("cylinder", "cone"):
        assert np.abs(curv[seg == CLS[c]][:, 1]).max() <= 1, c
    assert (curv[..., 0] >= -1).all()  # every surface here is convex toward the viewer or flat


def test_occlusion_edges_lie_on_depth_discontinuities(batch):
    z = batch["depth_zbuffer"].astype(np.float64)
    seg = batch["segment_semantic"]
    occ = batch["edge_occlusion"]
    core = occ == 65535
    assert core.any()
    assert set(np.unique(occ)) <= {0, 32768, 65535}
    jump = np.zeros(z.shape, bool)  # some 4-neighbour is deeper by the threshold
    big = np.zeros(z.shape, bool)  # a neighbour of another class is > 30% deeper
    for sl_a, sl_b in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
        ((slice(None), slice(None), slice(None, -1)), (slice(None), slice(None), slice(1, None))),
        ((slice(None), slice(None), slice(1, None)), (slice(None), slice(None), slice(None, -1))),
    ):
        jump[sl_a] |= z[sl_b] > z[sl_a] * (1 + scenes.OCCLUSION_REL_JUMP) - 2
        big[sl_a] |= (z[sl_b] > z[sl_a] * 1.3) & (seg[sl_b] != seg[sl_a])
    assert jump[core].all()
    assert (seg[core] >= CLS["box"]).all()  # silhouettes of objects
    must = big & (seg >= CLS["box"])
    assert core[must].all()


def test_texture_edges_without_geometry_and_geometry_without_texture():
    p = hand_scene([(scenes.KIND_BOX, (2.0, 3.5), (0.4, 0.4, 0.4))])
    out = scenes.render_scene_params(p, 64)
    seg = out["segment_semantic"][0]
    tex = out["edge_texture"][0] > 32768  # the ridges of the spread edge map
    occ = out["edge_occlusion"][0]
    floor = seg == CLS["floor"]
    # stripes on the floor: texture edges where there is no depth edge
    floor_inner = floor.copy()
    for ax in (0, 1):
        for sh in (-2, -1, 1, 2):
            floor_inner &= np.roll(floor, sh, axis=ax)
    assert tex[floor_inner].sum() > 20
    assert (occ[floor_inner] == 0).all()
    # the plain box: occlusion edges on its outline, no texture edges inside it
    box = seg == CLS["box"]
    inner = box.copy()
    for ax in (0, 1):
        for sh in (-2, -1, 1, 2):
            inner &= np.roll(box, sh, axis=ax)
    assert inner.sum() > 30
    assert (occ[box] == 65535).sum() > 10
    # inside a plain object only shading boundaries between faces can be edges
    face_edge = np.zeros_like(inner)
    n = out["normal"][0].astype(np.int16)
    for ax in (0, 1):
        for sh in (-1, 1):
            face_edge |= np.abs(np.roll(n, sh, axis=ax) - n).max(-1) > 2
    near_face_edge = face_edge.copy()  # the stored map spreads each edge by up to 2 pixels
    for ax in (0, 1):
        for sh in (-2, -1, 1, 2):
            near_face_edge |= np.roll(face_edge, sh, axis=ax)
    assert not (tex & inner & ~near_face_edge).any()
    # an empty room has no occlusion edges at all (creases are not occlusions)
    empty = scenes.render_scene_params(hand_scene([], pitch_deg=10, yaw=0.6), 64)
    assert (empty["edge_occlusion"] == 0).all()


def test_reshading_is_canonical_light_on_normals(batch):
    n = decode_normals(batch["normal"])
    expect = 255 * (0.1 + 0.9 * np.maximum(n @ np.array(scenes.RESHADING_LIGHT), 0))
    assert np.abs(batch["reshading"] - expect).max() <= 2.0


def test_keypoints_are_normalised_per_image(batch):
    k = batch["keypoints2d"]
    assert (k.reshape(len(k), -1).max(1) == 65535).all()
    assert (k == 0).mean() > 0.2  # a sparse response


def test_render_scene_params_rejects_bad_resolution():
    with pytest.raises(ValueError, match="32..256"):
        scenes.render_scene_params(hand_scene(), 16)


def test_spread_is_a_normalised_binomial_blur():
    # one bright pixel -> the 5x5 binomial kernel [1,4,6,4,1] x [1,4,6,4,1], peak 65535
    x = np.zeros((2, 9, 9), np.float32)
    x[0, 4, 4] = 0.3
    out = scenes._spread(x)
    k = np.array([1, 4, 6, 4, 1], np.float64)
    expect = np.rint(65535 * np.outer(k, k) / 36)
    assert out.dtype == np.uint16
    assert (out[0, 2:7, 2:7] == expect).all()
    assert out[0].sum() == expect.sum()  # nothing outside the 5x5 window
    assert (out[1] == 0).all()  # an empty map stays empty


def test_texture_edges_and_keypoints_are_spread_maps(batch):
    for m in ("edge_texture", "keypoints2d"):
        k = batch[m]
        assert (k.reshape(len(k), -1).max(1) == 65535).all()
        assert len(np.unique(k)) > 100  # graded, not the 3 levels of the occlusion edges
    assert set(np.unique(batch["edge_occlusion"])) <= {0, 32768, 65535}

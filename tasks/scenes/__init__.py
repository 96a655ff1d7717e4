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

The renderer's modules, one job each: `params` (constants, scene
parameters and their sampling), `geometry` (object tables, passes, shape
tests), `raycast` (primary rays, nearest hits, surface normals and
curvature), `shading` (textures, lights and shadows, the RGB image),
`filters` (edges and keypoints), `labels` (the stored encodings) and
`render` (batches, threads, the entry points). `tasks.datasets.renderer_fingerprint`
hashes every one of them.
"""

from tasks.scenes.filters import _blur5, _spread  # noqa: F401
from tasks.scenes.params import (  # noqa: F401
    CANNY_HIGH,
    CANNY_LOW,
    CURVATURE_SCALE_M,
    FOV_DEG,
    HARRIS_K,
    KIND_BOX,
    KIND_CONE,
    KIND_CYLINDER,
    KIND_NONE,
    KIND_SPHERE,
    MAX_OBJECTS,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    N_KINDS,
    N_ROOM_SURFACES,
    OCCLUSION_REL_JUMP,
    RESHADING_LIGHT,
    SceneParams,
    sample_scene_params,
)
from tasks.scenes.render import _default_workers, render_scene_params, render_scenes  # noqa: F401

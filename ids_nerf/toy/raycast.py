"""The analytic numpy ray caster of the toy world: ray/primitive intersections, shadows, shading, :func:`render`.

Numpy only by design: every image, depth map and object mask is computed in closed form (no rasteriser, no
learned model), so the ground truth of the datasets and benchmarks is exact.

* ``RenderOutput.depth`` is the z-depth (distance along the camera's -Z axis, not along the ray) of the surface
  seen through each pixel centre; it is ``inf`` where the ray sees the sky.
* Lighting: white light, so shading only scales an albedo; hue and saturation of an object's colour survive
  shading, which is what :mod:`ids_nerf.toy.detectors` relies on. One directional light (Lambert, hard shadows)
  plus a hemispherical ambient term (brighter on upward-facing surfaces).
* Rays are traced as whole arrays, each object only against the rays inside its projected bounding box; vectors
  are stored channel-first, shape (3, N): numpy broadcasts a (3, N) array against a (3, 1) one much faster than
  an (N, 3) array against a (3,) one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ids_nerf.errors import UserInputError
from ids_nerf.toy.cameras import Camera
from ids_nerf.toy.scene_spec import (
    CHECKER_COLORS,
    COLORS,
    SKY_HORIZON,
    SKY_ZENITH,
    WOOD_COLORS,
    ObjectSpec,
    SceneSpec,
    footprint_radius,
)

_EPS = 1e-4


@dataclass(frozen=True, eq=False)
class RenderOutput:
    """What :func:`render` returns."""

    rgb: np.ndarray
    """float32 (H, W, 3) in [0, 1]."""
    depth: np.ndarray
    """float32 (H, W) z-depth along the camera's -Z axis at pixel centres; ``inf`` for sky."""
    object_ids: np.ndarray
    """int32 (H, W): index into ``SceneSpec.objects`` of the object seen at the pixel centre, -1 elsewhere."""
    floor_mask: np.ndarray
    """bool (H, W): the pixel centre sees the floor."""


def grid_directions(camera: Camera, s: int) -> np.ndarray:
    """Ray directions (3, H*s, W*s) through a regular ``s x s`` grid inside every pixel (camera-space z = -1)."""
    h, w = camera.height * s, camera.width * s
    f = camera.focal * s
    xs = (np.arange(w, dtype=np.float64) + 0.5 - 0.5 * w) / f
    ys = -(np.arange(h, dtype=np.float64) + 0.5 - 0.5 * h) / f
    rot = np.asarray(camera.c2w, dtype=np.float64)[:3, :3]
    # d_world = R @ [x, y, -1]  =  x * R[:, 0] + y * R[:, 1] - R[:, 2]
    return rot[:, 0, None, None] * xs[None, None, :] + rot[:, 1, None, None] * ys[None, :, None] - rot[:, 2, None, None]


def _rot_z(yaw: float) -> np.ndarray:
    """Local-to-world rotation about +Z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roots ``(t_small, t_large)`` of ``a t^2 + b t + c`` for ``a > 0`` and whether they are real."""
    disc = b * b - 4.0 * a * c
    ok = disc >= 0.0
    sq = np.sqrt(np.maximum(disc, 0.0))
    inv = 0.5 / np.where(np.abs(a) > 1e-12, a, 1e-12)
    return (-b - sq) * inv, (-b + sq) * inv, ok


def _intersect_sphere(o: np.ndarray, d: np.ndarray, obj: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    p = o - np.asarray(obj.center)[:, None]
    a = (d * d).sum(0)
    b = 2.0 * (p * d).sum(0)
    c = (p * p).sum(0) - obj.size**2
    t0, _, ok = _roots(a, b, c)
    t = np.where(ok & (t0 > _EPS), t0, np.inf)
    n = (p + np.where(ok, t0, 0.0) * d) / obj.size
    return t, n


def _intersect_cube(o: np.ndarray, d: np.ndarray, obj: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    rot = _rot_z(obj.yaw)
    p = rot.T @ (o - np.asarray(obj.center)[:, None])  # world -> local
    dl = rot.T @ d
    p, dl = np.broadcast_arrays(p, dl)
    dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    inv = 1.0 / dl
    t1 = (-obj.size - p) * inv
    t2 = (obj.size - p) * inv
    tmin = np.minimum(t1, t2)
    tnear = tmin.max(axis=0)
    tfar = np.maximum(t1, t2).min(axis=0)
    t = np.where((tnear <= tfar) & (tnear > _EPS), tnear, np.inf)
    axis = tmin.argmax(axis=0)
    cols = np.arange(t.shape[0])
    nl = np.zeros(dl.shape)
    nl[axis, cols] = -np.sign(dl[axis, cols])
    return t, rot @ nl


def _intersect_cylinder(o: np.ndarray, d: np.ndarray, obj: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    r = h = obj.size
    p, d = np.broadcast_arrays(o - np.asarray(obj.center)[:, None], d)
    a = d[0] * d[0] + d[1] * d[1]
    b = 2.0 * (p[0] * d[0] + p[1] * d[1])
    c = p[0] * p[0] + p[1] * p[1] - r * r
    t0, _, ok = _roots(a, b, c)
    best = np.where(ok & (a > 1e-12) & (t0 > _EPS) & (np.abs(p[2] + t0 * d[2]) <= h), t0, np.inf)
    t_side = np.where(np.isfinite(best), best, 0.0)
    n = np.stack([(p[0] + t_side * d[0]) / r, (p[1] + t_side * d[1]) / r, np.zeros_like(t_side)])
    dz = np.where(np.abs(d[2]) < 1e-12, 1e-12, d[2])
    for zc, nz in ((h, 1.0), (-h, -1.0)):
        tc = (zc - p[2]) / dz
        qx, qy = p[0] + tc * d[0], p[1] + tc * d[1]
        cap = (tc > _EPS) & (qx * qx + qy * qy <= r * r) & (tc < best)
        best = np.where(cap, tc, best)
        n[:, cap] = np.array([[0.0], [0.0], [nz]])
    return best, n


def _intersect_cone(o: np.ndarray, d: np.ndarray, obj: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    r = h = obj.size
    k2 = (r / (2.0 * h)) ** 2
    apex = np.asarray(obj.center) + np.array([0.0, 0.0, h])
    q, d = np.broadcast_arrays(o - apex[:, None], d)
    a = d[0] * d[0] + d[1] * d[1] - k2 * d[2] * d[2]
    b = 2.0 * (q[0] * d[0] + q[1] * d[1] - k2 * q[2] * d[2])
    c = q[0] * q[0] + q[1] * q[1] - k2 * q[2] * q[2]
    t_a, t_b, ok = _roots(a, b, c)  # a may be negative here: the two roots are then swapped, test both
    best = np.full(a.shape, np.inf)
    for t_root in (t_a, t_b):
        z = q[2] + t_root * d[2]
        good = ok & (t_root > _EPS) & (z <= 0.0) & (z >= -2.0 * h) & (t_root < best)
        best = np.where(good, t_root, best)
    t_side = np.where(np.isfinite(best), best, 0.0)
    qh = q + t_side * d
    n = np.stack([qh[0], qh[1], -k2 * qh[2]])
    n /= np.maximum(np.sqrt((n * n).sum(0)), 1e-12)
    dz = np.where(np.abs(d[2]) < 1e-12, 1e-12, d[2])
    tb = (-2.0 * h - q[2]) / dz
    bx, by = q[0] + tb * d[0], q[1] + tb * d[1]
    base = (tb > _EPS) & (bx * bx + by * by <= r * r) & (tb < best)
    best = np.where(base, tb, best)
    n[:, base] = np.array([[0.0], [0.0], [-1.0]])
    return best, n


_INTERSECTORS = {
    "sphere": _intersect_sphere,
    "cube": _intersect_cube,
    "cylinder": _intersect_cylinder,
    "cone": _intersect_cone,
}

_BOUND_FACTOR = {"sphere": 1.0, "cube": math.sqrt(3.0), "cylinder": math.sqrt(2.0), "cone": math.sqrt(2.0)}


def intersect_object(o: np.ndarray, d: np.ndarray, obj: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays with one object.

    Args:
        o: ray origins, (3, N) or (3, 1) (channel-first).
        d: ray directions, (3, N) or (3, 1); need not be normalised (``t`` is in units of ``|d|``).
        obj: the object.

    Returns:
        ``t`` (N,) of the first hit with ``t > 1e-4`` (``inf`` if none) and the unit outward normal (3, N)
        there (meaningless where ``t`` is ``inf``).
    """
    return _INTERSECTORS[obj.shape](o, d, obj)


def bounding_sphere(obj: ObjectSpec) -> tuple[np.ndarray, float]:
    """Centre and radius of a sphere that contains the object."""
    return np.asarray(obj.center, dtype=np.float64), obj.size * _BOUND_FACTOR[obj.shape]


def _screen_rect(obj: ObjectSpec, camera: Camera, s: int) -> tuple[int, int, int, int] | None:
    """Conservative rows/cols ``(r0, r1, c0, c1)`` of the sub-pixel grid whose rays can hit ``obj``.

    Projects the corners of the object's bounding box (convex, so its image contains the object's image);
    ``None`` if the box is entirely behind the camera or outside the view.
    """
    cx, cy, _ = obj.center
    fp = footprint_radius(obj.shape, obj.size)
    corners = np.array([[x, y, z] for x in (cx - fp, cx + fp) for y in (cy - fp, cy + fp) for z in (0.0, 2 * obj.size)])
    c2w = np.asarray(camera.c2w, dtype=np.float64)
    pc = (corners - c2w[:3, 3]) @ c2w[:3, :3]  # world -> camera
    h, w = camera.height * s, camera.width * s
    if np.any(pc[:, 2] > -1e-6):  # a corner is beside or behind the camera: no cheap bound
        return (0, h, 0, w) if np.any(pc[:, 2] < 0.0) else None
    f = camera.focal * s
    u = f * pc[:, 0] / -pc[:, 2] + 0.5 * w
    v = -f * pc[:, 1] / -pc[:, 2] + 0.5 * h
    c0, c1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 1, w)
    r0, r1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 1, h)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def trace(scene: SceneSpec, camera: Camera, dirs: np.ndarray, s: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest hits of the camera's grid of rays ``dirs`` (3, H*s, W*s) (see ``grid_directions``).

    Returns ``t`` (H*s, W*s) (the z-depth; ``inf``: sky), hit ids (H*s, W*s) (-2 sky, -1 floor, k: object k)
    and unit normals (3, H*s, W*s). Each object is only tested against the rays inside its projected bounding
    box.
    """
    eye = np.asarray(camera.c2w, dtype=np.float64)[:3, 3]
    dz = dirs[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dz < -1e-12, -eye[2] / dz, np.inf)
        t = np.where(t > _EPS, t, np.inf)
        on_disk = (eye[0] + t * dirs[0]) ** 2 + (eye[1] + t * dirs[1]) ** 2 <= scene.floor_radius**2
    t = np.where(on_disk, t, np.inf)
    ids = np.where(np.isfinite(t), -1, -2).astype(np.int32)
    normals = np.zeros(dirs.shape)
    normals[2] = 1.0
    for k, obj in enumerate(scene.objects):
        rect = _screen_rect(obj, camera, s)
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        sub = dirs[:, r0:r1, c0:c1].reshape(3, -1)
        tk, nk = intersect_object(eye[:, None], sub, obj)
        tk = tk.reshape(r1 - r0, c1 - c0)
        t_view, id_view, n_view = t[r0:r1, c0:c1], ids[r0:r1, c0:c1], normals[:, r0:r1, c0:c1]
        closer = tk < t_view
        t_view[closer] = tk[closer]
        id_view[closer] = k
        n_view[:, closer] = nk.reshape(3, r1 - r0, c1 - c0)[:, closer]
    return t, ids, normals


def _in_shadow(scene: SceneSpec, points: np.ndarray, normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Whether an object blocks the light ``light`` (3,) at surface points (3, M) with normals (3, M)."""
    blocked = np.zeros(points.shape[1], dtype=bool)
    if points.shape[1] == 0:
        return blocked
    o = points + 1e-3 * normals
    for obj in scene.objects:
        c, rad = bounding_sphere(obj)
        v = c[:, None] - o
        proj = light @ v
        cand = (proj > -rad) & ((v * v).sum(0) - proj * proj <= rad * rad) & ~blocked
        idx = np.flatnonzero(cand)
        if idx.size:
            tk, _ = intersect_object(o[:, idx], light[:, None], obj)
            blocked[idx[np.isfinite(tk)]] = True
    return blocked


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    u = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _hash01(i: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer (the classic shader hash)."""
    v = np.sin(i * 12.9898 + 78.233) * 43758.5453
    return v - np.floor(v)


def floor_albedo(scene: SceneSpec, x: np.ndarray, y: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Floor texture colour (3, N) at floor points ``(x, y)``.

    ``footprint`` (N,) is the size of a pixel on the floor in world units; the texture fades to its mean colour
    where a pixel covers a large part of a tile or plank (a cheap prefilter against aliasing near the horizon).
    """
    cr, sr = math.cos(scene.floor_rotation), math.sin(scene.floor_rotation)
    u = (cr * x + sr * y) / scene.floor_scale
    v = (-sr * x + cr * y) / scene.floor_scale
    rel = footprint / scene.floor_scale
    if scene.floor == "checkered":
        dark, light = (np.asarray(c)[:, None] for c in CHECKER_COLORS)
        fu, fv = np.floor(u), np.floor(v)
        parity = (fu + fv) - 2.0 * np.floor(0.5 * (fu + fv))
        mix = 0.5 + (parity - 0.5) * (1.0 - _smoothstep(0.25, 0.8, rel))
    elif scene.floor == "wooden":
        dark, light = (np.asarray(c)[:, None] for c in WOOD_COLORS)
        plank = np.floor(u)
        along = v * 0.35 + _hash01(plank) * 7.0  # boards are staggered from plank to plank
        board = np.floor(along)
        tone = _hash01(plank * 31.0 + board * 7.0)
        grain = 0.5 + 0.5 * np.sin(2.0 * np.pi * (u * 3.0 + 0.4 * np.sin(v * 1.7 + plank * 1.3) + tone))
        seam_u = np.minimum(u - plank, plank + 1.0 - u)
        seam_v = np.minimum(along - board, board + 1.0 - along) / 0.35
        mix = np.where(np.minimum(seam_u, seam_v) < 0.04, 0.0, 0.15 + 0.5 * tone + 0.3 * grain)
        mix = mix + (0.55 - mix) * _smoothstep(0.08, 0.5, rel)
    else:
        raise UserInputError(f"unknown floor {scene.floor!r}")
    return dark + (light - dark) * mix


def sky_color(dir_z: np.ndarray) -> np.ndarray:
    """Sky gradient (3, N) from the z components (N,) of unit ray directions: horizon to zenith colour."""
    w = np.sqrt(np.clip(dir_z, 0.0, 1.0))
    horizon, zenith = np.asarray(SKY_HORIZON)[:, None], np.asarray(SKY_ZENITH)[:, None]
    return horizon + (zenith - horizon) * w


def _shade(
    scene: SceneSpec, eye: np.ndarray, d: np.ndarray, t: np.ndarray, ids: np.ndarray, normals: np.ndarray, focal: float
) -> np.ndarray:
    """Colour (3, N) of rays from ``eye`` along ``d`` (3, N) given their hits ``t``, ``ids`` (N,), ``normals``."""
    light = np.asarray(scene.light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    dn_z = d[2] / np.sqrt((d * d).sum(0))
    sky = ids == -2
    t_safe = np.where(sky, 0.0, t)
    pts = eye[:, None] + t_safe * d
    footprint = t_safe / focal / np.maximum(np.abs(dn_z), 1e-6)
    albedo = floor_albedo(scene, pts[0], pts[1], footprint)
    if scene.objects:
        palette = np.array([COLORS[obj.color] for obj in scene.objects]).T  # (3, K)
        albedo = np.where(ids >= 0, palette[:, np.maximum(ids, 0)], albedo)
    lambert = np.maximum(light @ normals, 0.0)
    lit = np.flatnonzero((lambert > 0.0) & ~sky)
    lambert[lit[_in_shadow(scene, pts[:, lit], normals[:, lit], light)]] = 0.0
    shading = scene.ambient * (0.7 + 0.3 * normals[2]) + (1.0 - scene.ambient) * lambert
    return np.clip(np.where(sky, sky_color(dn_z), albedo * shading), 0.0, 1.0)


def render(scene: SceneSpec, camera: Camera, supersample: int = 2) -> RenderOutput:
    """Ray-cast ``scene`` from ``camera``.

    Colour is the box-filtered average of ``supersample**2`` rays per pixel; depth, object ids and the floor
    mask come from one extra ray through each pixel centre (exact, not averaged).
    """
    h, w = camera.height, camera.width
    s = int(supersample)
    eye = np.asarray(camera.c2w, dtype=np.float64)[:3, 3]
    dc = grid_directions(camera, 1)
    tc, idc, nc = trace(scene, camera, dc, 1)
    if s > 1:
        ds = grid_directions(camera, s)
        ts, ids_s, ns = trace(scene, camera, ds, s)
        rgb = _shade(scene, eye, ds.reshape(3, -1), ts.ravel(), ids_s.ravel(), ns.reshape(3, -1), camera.focal)
        rgb = rgb.reshape(3, h, s, w, s).mean(axis=(2, 4))
    else:
        rgb = _shade(scene, eye, dc.reshape(3, -1), tc.ravel(), idc.ravel(), nc.reshape(3, -1), camera.focal)
        rgb = rgb.reshape(3, h, w)
    return RenderOutput(
        rgb=np.ascontiguousarray(rgb.transpose(1, 2, 0), dtype=np.float32),
        depth=tc.astype(np.float32),
        object_ids=np.where(idc >= 0, idc, -1).astype(np.int32),
        floor_mask=idc == -1,
    )


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

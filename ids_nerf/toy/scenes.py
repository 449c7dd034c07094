"""Procedural captioned scenes of coloured primitives, rendered by an analytic numpy ray caster.

Conventions
-----------
* World frame: right-handed, **+Z up** (as in Blender's world). The floor is a large disk (radius
  ``SceneSpec.floor_radius``, default 8) of the plane ``z = 0`` around the origin; every object rests on it,
  near the origin. Beyond the disk is sky, so all depths are finite and bounded except the sky's.
* ``ObjectSpec.center`` is the centre of the object's axis-aligned (before yaw) bounding box and
  ``ObjectSpec.size`` its half-height, so ``center[2] == size`` for every shape:

  - ``sphere``: radius ``size``;
  - ``cube``: half edge ``size``, rotated by ``yaw`` radians about the vertical axis;
  - ``cylinder``: vertical axis, radius ``size``, height ``2 * size``;
  - ``cone``: vertical axis, base radius ``size`` on the floor, apex at height ``2 * size``.
* Cameras: ``Camera.c2w`` is a 4x4 camera-to-world matrix in the OpenGL/Blender convention (the camera looks
  down its local -Z axis, +Y is up, +X right), as in NeRF-synthetic ``transforms_*.json`` files.
* ``RenderOutput.depth`` is the z-depth (distance along the camera's -Z axis, not along the ray) of the
  surface seen through each pixel centre; it is ``inf`` where the ray sees the sky.
* Lighting: white light, so shading only scales an albedo; hue and saturation of an object's colour survive
  shading, which is what :mod:`ids_nerf.toy.detectors` relies on. One directional light (Lambert, hard
  shadows) plus a hemispherical ambient term (brighter on upward-facing surfaces).
* Colour design: object colours are saturated (HSV saturation >= 0.8) or neutral white; the floors (teal
  tiles, brown wood) and the blue sky have saturation between 0.15 and 0.6, so that a pixel's colour tells
  objects apart from the background.

Captions
--------
Deterministic grammar (objects in ``SceneSpec.objects`` order)::

    caption     := objects " on a " floor " floor"
    objects     := np | np " and " np | np ", " np " and " np
    np          := article " " color " " shape        (article: "an" before a vowel, else "a")

e.g. ``"a red sphere on a checkered floor"``, ``"an orange cone, a blue cube and a white sphere on a wooden
floor"``. Edits are phrased by substituting words ("red sphere" -> "blue sphere", "sphere" -> "cube",
"checkered floor" -> "wooden floor"); :func:`sample_scene` keeps colours distinct within a scene by default so
that a colour word names one object. To re-caption an edited scene with the right articles, edit the
:class:`SceneSpec` (``dataclasses.replace``) and call :func:`caption` again.

Speed (``measure_speed``, one CPU core of the development machine): about 5,000 images per minute at 64x64
with the default 2x2 supersampling, about 19,000 without it, about 1,350 at 128x128. Rays are traced as whole
arrays, each object only against the rays inside its projected bounding box.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone")
"""Supported primitive shapes."""

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.09),
    "orange": (0.98, 0.50, 0.05),
    "yellow": (0.95, 0.85, 0.08),
    "green": (0.12, 0.72, 0.18),
    "blue": (0.10, 0.28, 0.95),
    "purple": (0.55, 0.14, 0.85),
    "white": (0.93, 0.93, 0.93),
}
"""Object colour names -> albedo (linear display RGB in [0, 1])."""

FLOORS: tuple[str, ...] = ("checkered", "wooden")
"""Supported floor textures."""

CHECKER_COLORS: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.20, 0.40, 0.37), (0.60, 0.77, 0.73))
"""Dark and light tiles of the checkered floor (a teal family, so blends between them keep their hue)."""

WOOD_COLORS: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.40, 0.28, 0.19), (0.72, 0.58, 0.44))
"""Dark and light tones of the wooden floor."""

SKY_HORIZON: tuple[float, float, float] = (0.76, 0.86, 0.97)
"""Sky colour at the horizon."""

SKY_ZENITH: tuple[float, float, float] = (0.42, 0.60, 0.90)
"""Sky colour straight up."""

_EPS = 1e-4


# ----------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ObjectSpec:
    """One primitive resting on the floor."""

    shape: str
    """One of :data:`SHAPES`."""
    color: str
    """A key of :data:`COLORS`."""
    center: tuple[float, float, float]
    """Centre of the bounding box (world, +Z up); ``center[2] == size`` so the object touches the floor."""
    size: float
    """Half-height (sphere/cylinder/cone radius, cube half edge)."""
    yaw: float = 0.0
    """Rotation about the vertical axis in radians (only visible on cubes)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly representation."""
        return {
            "shape": self.shape,
            "color": self.color,
            "center": [float(c) for c in self.center],
            "size": float(self.size),
            "yaw": float(self.yaw),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ObjectSpec:
        """Inverse of :meth:`to_dict`."""
        c = d["center"]
        return ObjectSpec(
            d["shape"], d["color"], (float(c[0]), float(c[1]), float(c[2])), float(d["size"]), float(d.get("yaw", 0.0))
        )


@dataclass(frozen=True)
class SceneSpec:
    """A whole scene: objects, floor texture and light."""

    objects: tuple[ObjectSpec, ...]
    """One to three objects (any number renders; captions are written for any number)."""
    floor: str = "checkered"
    """One of :data:`FLOORS`."""
    light_dir: tuple[float, float, float] = (0.4, -0.3, 0.866)
    """Unit vector pointing from the scene towards the directional light."""
    ambient: float = 0.3
    """Ambient light strength; the directional light has strength ``1 - ambient``."""
    floor_scale: float = 0.5
    """Tile size of the checkered floor / plank width of the wooden floor, in world units."""
    floor_rotation: float = 0.0
    """Rotation of the floor texture about the vertical axis, radians."""
    floor_radius: float = 8.0
    """The floor is the disk of this radius around the origin of the plane ``z = 0`` (beyond it: sky), which
    keeps every depth finite and bounded like a captured scene."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly representation."""
        return {
            "objects": [o.to_dict() for o in self.objects],
            "floor": self.floor,
            "light_dir": [float(v) for v in self.light_dir],
            "ambient": float(self.ambient),
            "floor_scale": float(self.floor_scale),
            "floor_rotation": float(self.floor_rotation),
            "floor_radius": float(self.floor_radius),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> SceneSpec:
        """Inverse of :meth:`to_dict`."""
        ld = d.get("light_dir", (0.4, -0.3, 0.866))
        return SceneSpec(
            objects=tuple(ObjectSpec.from_dict(o) for o in d["objects"]),
            floor=str(d.get("floor", "checkered")),
            light_dir=(float(ld[0]), float(ld[1]), float(ld[2])),
            ambient=float(d.get("ambient", 0.3)),
            floor_scale=float(d.get("floor_scale", 0.5)),
            floor_rotation=float(d.get("floor_rotation", 0.0)),
            floor_radius=float(d.get("floor_radius", 8.0)),
        )


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera with square pixels."""

    c2w: np.ndarray
    """4x4 camera-to-world matrix, OpenGL/Blender convention (looks down -Z, +Y up)."""
    fov_x: float
    """Horizontal field of view in radians (NeRF-synthetic ``camera_angle_x``)."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return 0.5 * self.width / math.tan(0.5 * self.fov_x)

    @property
    def center(self) -> np.ndarray:
        """Camera position in world coordinates, shape (3,)."""
        return np.asarray(self.c2w[:3, 3], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly representation."""
        return {
            "c2w": np.asarray(self.c2w).tolist(),
            "fov_x": float(self.fov_x),
            "width": int(self.width),
            "height": int(self.height),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Camera:
        """Inverse of :meth:`to_dict`."""
        return Camera(np.asarray(d["c2w"], dtype=np.float64), float(d["fov_x"]), int(d["width"]), int(d["height"]))


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


# ----------------------------------------------------------------------------------------------- sampling


def footprint_radius(obj_shape: str, size: float) -> float:
    """Radius of the circle that contains the object's footprint on the floor (any yaw)."""
    return size * math.sqrt(2.0) if obj_shape == "cube" else size


def sample_scene(
    rng: np.random.Generator,
    n_objects: int | None = None,
    shapes: Sequence[str] = SHAPES,
    colors: Sequence[str] = tuple(COLORS),
    floors: Sequence[str] = FLOORS,
    size_range: tuple[float, float] = (0.3, 0.5),
    distinct_colors: bool = True,
) -> SceneSpec:
    """Draw a random scene: 1-3 non-overlapping objects resting on the floor, a floor texture and a light.

    Args:
        rng: the only source of randomness.
        n_objects: number of objects; ``None`` draws 1, 2 or 3 uniformly.
        shapes, colors, floors: the vocabularies to draw from.
        size_range: range of ``ObjectSpec.size``.
        distinct_colors: give every object a different colour (needs ``len(colors) >= n_objects``), so that
            colour words in captions and :func:`ids_nerf.toy.detectors.color_mask` name a single object.
    """
    n = int(rng.integers(1, 4)) if n_objects is None else int(n_objects)
    if n < 1:
        raise ValueError(f"n_objects must be >= 1, got {n}")
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"unknown shape {s!r}; known: {SHAPES}")
    for c in colors:
        if c not in COLORS:
            raise ValueError(f"unknown color {c!r}; known: {tuple(COLORS)}")
    for f in floors:
        if f not in FLOORS:
            raise ValueError(f"unknown floor {f!r}; known: {FLOORS}")
    if distinct_colors and len(colors) < n:
        raise ValueError(f"{n} objects with distinct colours need at least {n} colours, got {len(colors)}")

    if distinct_colors:
        color_idx = rng.permutation(len(colors))[:n]
    else:
        color_idx = rng.integers(0, len(colors), size=n)
    shape_idx = rng.integers(0, len(shapes), size=n)
    sizes = rng.uniform(size_range[0], size_range[1], size=n)
    yaws = rng.uniform(0.0, 0.5 * math.pi, size=n)
    spread = 0.3 + 0.55 * (n - 1)  # radius of the disk holding the object centres

    objs: list[ObjectSpec] = []
    placed: list[tuple[float, float, float]] = []  # (x, y, footprint radius)
    for i in range(n):
        shape = shapes[int(shape_idx[i])]
        size = float(sizes[i])
        r_i = footprint_radius(shape, size)
        for attempt in range(10_000):
            rad = spread * (1.0 + attempt / 500.0) * math.sqrt(rng.uniform())
            ang = rng.uniform(0.0, 2.0 * math.pi)
            x, y = rad * math.cos(ang), rad * math.sin(ang)
            if all(math.hypot(x - px, y - py) >= r_i + pr + 0.1 for px, py, pr in placed):
                break
        else:  # pragma: no cover - the growing disk always finds room
            raise RuntimeError("could not place objects without overlap")
        placed.append((x, y, r_i))
        objs.append(ObjectSpec(shape, colors[int(color_idx[i])], (x, y, size), size, float(yaws[i])))

    floor = floors[int(rng.integers(0, len(floors)))]
    light_az = rng.uniform(0.0, 2.0 * math.pi)
    light_el = rng.uniform(math.radians(35.0), math.radians(65.0))
    light = (math.cos(light_el) * math.cos(light_az), math.cos(light_el) * math.sin(light_az), math.sin(light_el))
    return SceneSpec(
        objects=tuple(objs),
        floor=floor,
        light_dir=light,
        ambient=0.3,
        floor_scale=float(rng.uniform(0.35, 0.6)),
        floor_rotation=float(rng.uniform(0.0, 0.5 * math.pi)),
    )


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world matrix of a camera at ``eye`` looking at ``target`` with world ``up`` roughly up."""
    eye_a = np.asarray(eye, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - eye_a
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-8:  # looking straight up/down: any right vector will do
        right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, fwd)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -fwd, eye_a
    return c2w


def orbit_position(azimuth: float, elevation: float, radius: float, target: Sequence[float]) -> np.ndarray:
    """Point on a sphere around ``target`` (angles in radians, azimuth from +X towards +Y)."""
    t = np.asarray(target, dtype=np.float64)
    return t + radius * np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )


def sample_camera(
    rng: np.random.Generator,
    width: int = 64,
    height: int = 64,
    fov_deg: float = 45.0,
    radius_range: tuple[float, float] = (3.0, 4.2),
    elevation_range_deg: tuple[float, float] = (12.0, 45.0),
    target: Sequence[float] = (0.0, 0.0, 0.3),
    target_jitter: float = 0.15,
) -> Camera:
    """Random camera on an orbit around ``target``: azimuth uniform, elevation and radius uniform in range.

    The camera looks at ``target`` plus a uniform jitter of at most ``target_jitter`` per horizontal axis.
    """
    az = rng.uniform(0.0, 2.0 * math.pi)
    el = math.radians(rng.uniform(*elevation_range_deg))
    radius = rng.uniform(*radius_range)
    tgt = np.asarray(target, dtype=np.float64).copy()
    tgt[:2] += rng.uniform(-target_jitter, target_jitter, size=2)
    eye = orbit_position(az, el, radius, tgt)
    return Camera(look_at(eye, tgt), math.radians(fov_deg), int(width), int(height))


def scene_extent(scene: SceneSpec) -> tuple[np.ndarray, float]:
    """Centre (3,) of the objects' floor footprints (at half the mean object height) and the radius around it
    that contains every footprint."""
    if not scene.objects:
        return np.array([0.0, 0.0, 0.3]), 0.5
    xy = np.array([o.center[:2] for o in scene.objects])
    center = 0.5 * (xy.min(axis=0) + xy.max(axis=0))
    radius = max(
        float(np.hypot(*(np.asarray(o.center[:2]) - center))) + footprint_radius(o.shape, o.size) for o in scene.objects
    )
    z = float(np.mean([o.size for o in scene.objects]))
    return np.array([center[0], center[1], z]), radius


def sample_camera_for_scene(
    rng: np.random.Generator, scene: SceneSpec, width: int = 64, height: int = 64, **kwargs: Any
) -> Camera:
    """:func:`sample_camera` aimed at the scene's centre from a distance that frames all of its objects.

    ``kwargs`` override :func:`sample_camera`'s arguments (``radius_range``, ``target``, ...).
    """
    center, radius = scene_extent(scene)
    opts: dict[str, Any] = {
        "radius_range": (1.9 + 1.7 * radius, 2.6 + 2.0 * radius),
        "target": tuple(center),
        "target_jitter": 0.1 * radius,
    }
    opts.update(kwargs)
    return sample_camera(rng, width, height, **opts)


def orbit_cameras(
    n: int,
    width: int = 64,
    height: int = 64,
    radius: float = 3.8,
    elevation_deg: float = 30.0,
    fov_deg: float = 45.0,
    target: Sequence[float] = (0.0, 0.0, 0.3),
    start_azimuth_deg: float = 0.0,
) -> list[Camera]:
    """``n`` cameras evenly spaced on a horizontal ring around ``target``, all looking at it."""
    cams = []
    for i in range(n):
        az = math.radians(start_azimuth_deg) + 2.0 * math.pi * i / n
        eye = orbit_position(az, math.radians(elevation_deg), radius, target)
        cams.append(Camera(look_at(eye, target), math.radians(fov_deg), int(width), int(height)))
    return cams


# ----------------------------------------------------------------------------------------------- captions


def noun_phrase(obj: ObjectSpec) -> str:
    """``"a red sphere"`` / ``"an orange cube"``."""
    article = "an" if obj.color[0] in "aeiou" else "a"
    return f"{article} {obj.color} {obj.shape}"


def caption(scene: SceneSpec) -> str:
    """Deterministic caption following the grammar in the module docstring."""
    nps = [noun_phrase(o) for o in scene.objects]
    if not nps:
        subject = "nothing"
    elif len(nps) == 1:
        subject = nps[0]
    else:
        subject = ", ".join(nps[:-1]) + " and " + nps[-1]
    return f"{subject} on a {scene.floor} floor"


# ----------------------------------------------------------------------------------------------- ray casting
# Vectors are stored channel-first, shape (3, N): numpy broadcasts a (3, N) array against a (3, 1) one much
# faster than an (N, 3) array against a (3,) one.


def _grid_dirs(camera: Camera, s: int) -> np.ndarray:
    """Ray directions (3, H*s, W*s) through a regular ``s x s`` grid inside every pixel (camera-space z = -1)."""
    h, w = camera.height * s, camera.width * s
    f = camera.focal * s
    xs = (np.arange(w, dtype=np.float64) + 0.5 - 0.5 * w) / f
    ys = -(np.arange(h, dtype=np.float64) + 0.5 - 0.5 * h) / f
    rot = np.asarray(camera.c2w, dtype=np.float64)[:3, :3]
    # d_world = R @ [x, y, -1]  =  x * R[:, 0] + y * R[:, 1] - R[:, 2]
    return rot[:, 0, None, None] * xs[None, None, :] + rot[:, 1, None, None] * ys[None, :, None] - rot[:, 2, None, None]


def camera_rays(camera: Camera, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rays through a regular ``supersample x supersample`` grid inside every pixel.

    Returns ``(origins, dirs)`` of shape (H*s, W*s, 3). Directions are not normalised: their camera-space z
    component is -1, so a ray parameter ``t`` equals the z-depth of the point ``o + t d``.
    """
    dirs = np.moveaxis(_grid_dirs(camera, int(supersample)), 0, -1)
    origins = np.broadcast_to(np.asarray(camera.c2w, dtype=np.float64)[:3, 3], dirs.shape)
    return origins, dirs


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
    """Closest hits of the camera's grid of rays ``dirs`` (3, H*s, W*s) (see ``_grid_dirs``).

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
        raise ValueError(f"unknown floor {scene.floor!r}")
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
    dc = _grid_dirs(camera, 1)
    tc, idc, nc = trace(scene, camera, dc, 1)
    if s > 1:
        ds = _grid_dirs(camera, s)
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


# ----------------------------------------------------------------------------------------------- generation


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class GenerationConfig:
    """Options of :func:`generate_images` beyond size and seed."""

    n_objects: int | None = None
    """Objects per image (``None``: 1-3 at random)."""
    shapes: tuple[str, ...] = SHAPES
    """Shapes to draw from."""
    colors: tuple[str, ...] = tuple(COLORS)
    """Colours to draw from."""
    floors: tuple[str, ...] = FLOORS
    """Floor textures to draw from."""
    supersample: int = 2
    """Anti-aliasing: rays per pixel along each axis."""
    camera_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments overriding :func:`sample_camera_for_scene`'s framing (e.g. ``radius_range``)."""


def generate_one(
    index: int, size: int = 64, seed: int = 0, config: GenerationConfig | None = None
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Image ``index`` of the stream :func:`generate_images` yields for ``seed`` (random access)."""
    cfg = config or GenerationConfig()
    rng = np.random.default_rng([int(seed), int(index)])
    scene = sample_scene(rng, cfg.n_objects, cfg.shapes, cfg.colors, cfg.floors)
    cam = sample_camera_for_scene(rng, scene, size, size, **cfg.camera_kwargs)
    out = render(scene, cam, cfg.supersample)
    meta = {
        "index": int(index),
        "seed": int(seed),
        "scene": scene.to_dict(),
        "camera": cam.to_dict(),
        "object_pixels": [int((out.object_ids == k).sum()) for k in range(len(scene.objects))],
    }
    return to_uint8(out.rgb), caption(scene), meta


def generate_images(
    n: int, size: int = 64, seed: int = 0, config: GenerationConfig | None = None
) -> Iterator[tuple[np.ndarray, str, dict[str, Any]]]:
    """Yield ``n`` tuples ``(uint8 image (size, size, 3), caption, metadata)``, fully determined by ``seed``.

    Image ``i`` draws everything from ``np.random.default_rng([seed, i])``, so any prefix of the stream is the
    same whatever ``n`` is, and :func:`generate_one` gives random access. The metadata holds the scene
    (``SceneSpec.to_dict``), the camera (``Camera.to_dict``) and the visible pixel count of every object.
    """
    for i in range(int(n)):
        yield generate_one(i, size, seed, config)


def generate_arrays(
    n: int, size: int = 64, seed: int = 0, config: GenerationConfig | None = None
) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """:func:`generate_images` collected into a uint8 array (n, size, size, 3), captions and metadata."""
    images, caps, metas = [], [], []
    for img, cap, meta in generate_images(n, size, seed, config):
        images.append(img)
        caps.append(cap)
        metas.append(meta)
    arr = np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    return arr, caps, metas


def measure_speed(n: int = 200, size: int = 64, seed: int = 0, config: GenerationConfig | None = None) -> float:
    """Images per minute of :func:`generate_images` in this process (use one thread for a per-core figure)."""
    start = time.perf_counter()
    for _ in generate_images(n, size, seed, config):
        pass
    return 60.0 * n / (time.perf_counter() - start)

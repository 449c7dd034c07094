"""Pinhole cameras of the toy world and the ways to place them: look-at, orbits, rings, forward-facing grids.

``Camera.c2w`` is a 4x4 camera-to-world matrix in the OpenGL/Blender convention (the camera looks down its local
-Z axis, +Y is up, +X right), as in NeRF-synthetic ``transforms_*.json`` files; the world is +Z up (see
:mod:`ids_nerf.toy.scene_spec`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ids_nerf.toy.scene_spec import SceneSpec, scene_extent


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


def forward_facing_cameras(
    scene: SceneSpec,
    n_views: int,
    width: int,
    height: int,
    rng: np.random.Generator,
    fov_deg: float = 45.0,
    spread: float = 0.6,
) -> list[Camera]:
    """LLFF-like cameras: a jittered grid of positions on a plane facing the scene, all looking at its centre.

    The viewing direction (azimuth uniform, elevation 15-30 degrees) and the distance are drawn from ``rng``;
    positions span ``spread`` times the distance horizontally (three quarters of that vertically) so the views
    differ by a few degrees, like a hand-held forward-facing capture.
    """
    center, radius = scene_extent(scene)
    az = rng.uniform(0.0, 2.0 * math.pi)
    el = math.radians(rng.uniform(15.0, 30.0))
    dist = rng.uniform(2.0 + 1.4 * radius, 2.4 + 1.6 * radius)
    base = orbit_position(az, el, dist, center)
    base_c2w = look_at(base, center)
    right, up = base_c2w[:3, 0], base_c2w[:3, 1]
    cols = int(math.ceil(math.sqrt(n_views * 4.0 / 3.0)))
    rows = int(math.ceil(n_views / cols))
    cams = []
    for i in range(n_views):
        r, c = divmod(i, cols)
        gx = (c + 0.5) / cols - 0.5 + rng.uniform(-0.15, 0.15) / cols
        gy = (r + 0.5) / rows - 0.5 + rng.uniform(-0.15, 0.15) / rows
        eye = base + spread * dist * (gx * right + 0.75 * gy * up)
        target = np.asarray(center) + rng.uniform(-0.05, 0.05, size=3) * radius
        cams.append(Camera(look_at(eye, target), math.radians(fov_deg), int(width), int(height)))
    return cams

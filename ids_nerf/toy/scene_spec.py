"""What a toy scene is: the palette, object and scene specs, random scenes, and their captions.

World frame: right-handed, **+Z up** (as in Blender's world). The floor is a large disk (radius
``SceneSpec.floor_radius``, default 8) of the plane ``z = 0`` around the origin; every object rests on it, near the
origin. Beyond the disk is sky, so all depths are finite and bounded except the sky's.

``ObjectSpec.center`` is the centre of the object's axis-aligned (before yaw) bounding box and ``ObjectSpec.size``
its half-height, so ``center[2] == size`` for every shape:

* ``sphere``: radius ``size``;
* ``cube``: half edge ``size``, rotated by ``yaw`` radians about the vertical axis;
* ``cylinder``: vertical axis, radius ``size``, height ``2 * size``;
* ``cone``: vertical axis, base radius ``size`` on the floor, apex at height ``2 * size``.

Colour design: object colours are saturated (HSV saturation >= 0.8) or neutral white; the floors (teal tiles,
brown wood) and the blue sky have saturation between 0.15 and 0.6, so that a pixel's colour tells objects apart
from the background (what :mod:`ids_nerf.toy.detectors` relies on).

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ids_nerf.errors import UserInputError

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


# ----------------------------------------------------------------------------------------------- random scenes


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
        raise UserInputError(f"n_objects must be >= 1, got {n}")
    for s in shapes:
        if s not in SHAPES:
            raise UserInputError(f"unknown shape {s!r}; known: {SHAPES}")
    for c in colors:
        if c not in COLORS:
            raise UserInputError(f"unknown color {c!r}; known: {tuple(COLORS)}")
    for f in floors:
        if f not in FLOORS:
            raise UserInputError(f"unknown floor {f!r}; known: {FLOORS}")
    if distinct_colors and len(colors) < n:
        raise UserInputError(f"{n} objects with distinct colours need at least {n} colours, got {len(colors)}")

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

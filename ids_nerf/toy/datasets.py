"""Write toy scenes as NeRF datasets (Blender/NeRF-synthetic and LLFF layouts) with ground truth.

Blender layout (``write_blender``)::

    out_dir/
      transforms_train.json  transforms_val.json  transforms_test.json
      train/r_0.png  train/r_0_mask.png  train/r_0_depth.npy  ...   (same under val/ and test/)
      scene.json

``transforms_*.json`` follow the NeRF-synthetic format: ``camera_angle_x`` (horizontal field of view, radians)
and ``frames`` with ``file_path`` ``"./train/r_0"`` (no extension; the image is ``train/r_0.png``) and
``transform_matrix``, the 4x4 camera-to-world matrix in the Blender/OpenGL convention (camera looks down -Z,
+Y up). The world is +Z up with the floor at ``z = 0`` (see :mod:`ids_nerf.toy.scene_spec`). Train and val
cameras are random orbit cameras; test cameras are an evenly spaced ring.

LLFF layout (``write_llff``)::

    out_dir/
      images/IMG_0000.png ...
      poses_bounds.npy                       (N, 17) float64
      gt/IMG_0000_mask.png  gt/IMG_0000_depth.npy ...
      scene.json

Each row of ``poses_bounds.npy`` is a 3x5 matrix flattened row-major, ``[R | t | hwf]``, followed by the
near and far depth bounds. As in the original LLFF release, the rotation columns are ordered
``[down, right, backwards]``, i.e. ``[-up, right, back]`` of the OpenGL camera axes, so the usual loader
(``poses = np.concatenate([poses[:, 1:2], -poses[:, 0:1], poses[:, 2:]], 1)``) recovers OpenGL
``[right, up, back]``. ``hwf`` is ``(height, width, focal in pixels)``. The bounds are the 1st and 99th
percentiles of the view's finite ground-truth z-depth (the role COLMAP's point depths play in real captures).
Cameras are forward-facing (:func:`ids_nerf.toy.cameras.forward_facing_cameras`): a small jittered grid of
positions in front of the scene, all looking at (roughly) the scene centre.

Ground truth, in both layouts: ``*_mask.png`` is uint8 with ``object index + 1`` per pixel (0: floor or sky),
``*_depth.npy`` is float32 z-depth with ``inf`` for sky, and ``scene.json`` holds the ``SceneSpec``
(``"scene"``), its ``"caption"`` and the generation arguments. ``read_blender_poses`` / ``read_llff_poses``
give the OpenGL camera-to-world matrices back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ids_nerf.toy.cameras import Camera, forward_facing_cameras, orbit_cameras, sample_camera_for_scene
from ids_nerf.toy.raycast import RenderOutput, grid_directions, render, to_uint8
from ids_nerf.toy.scene_spec import SceneSpec, caption, scene_extent

# Column permutation between OpenGL camera axes [right, up, back] and LLFF's [down, right, back].
_GL_TO_LLFF = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
"""``R_llff = R_gl @ _GL_TO_LLFF``: LLFF column 0 = -up, column 1 = right, column 2 = back."""


def _save_view(scene: SceneSpec, camera: Camera, image_path: Path, gt_stem: Path, supersample: int) -> RenderOutput:
    """Render one view; save the PNG, the id mask and the depth. Returns the render."""
    out = render(scene, camera, supersample)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    gt_stem.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(out.rgb)).save(image_path)
    Image.fromarray((out.object_ids + 1).astype(np.uint8)).save(gt_stem.with_name(gt_stem.name + "_mask.png"))
    np.save(gt_stem.with_name(gt_stem.name + "_depth.npy"), out.depth)
    return out


POINTS_FILE = "points3d.ply"
"""The point cloud :func:`write_blender` writes with ``points > 0`` (nerfstudio's Blender parser reads it with
``--ply-path points3d.ply``): what a COLMAP reconstruction would give splatfacto to start from."""


def point_cloud(
    views: list[tuple[Camera, RenderOutput]], n_points: int, rng: np.random.Generator, sky_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n_points`` coloured points (xyz float (N, 3), rgb uint8 (N, 3)) sampled from the views' pixel centres: the
    surface each pixel sees (its z-depth along the ray), and sky pixels on a dome ``sky_distance`` from the camera."""
    xyz, rgb = [], []
    for camera, out in views:
        dirs = grid_directions(camera, 1).reshape(3, -1).T  # camera-space z = -1: t along dirs = the z-depth
        depth = out.depth.reshape(-1).astype(np.float64)
        sky = ~np.isfinite(depth)
        t = np.where(sky, sky_distance / np.linalg.norm(dirs, axis=1), depth)
        xyz.append(camera.center[None, :] + t[:, None] * dirs)
        rgb.append(to_uint8(out.rgb.reshape(-1, 3)))
    all_xyz, all_rgb = np.concatenate(xyz), np.concatenate(rgb)
    pick = rng.choice(len(all_xyz), size=min(n_points, len(all_xyz)), replace=False)
    return all_xyz[pick], all_rgb[pick]


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """An ASCII PLY of coloured points (what open3d and nerfstudio's parsers read)."""
    header = [
        "ply",
        "format ascii 1.0",
        f"element vertex {len(xyz)}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ]
    rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(xyz, rgb, strict=True)]
    path.write_text("\n".join(header + rows) + "\n")


def _write_scene_json(scene: SceneSpec, out_dir: Path, extra: dict[str, Any]) -> None:
    meta = {"scene": scene.to_dict(), "caption": caption(scene), "generator": "ids_nerf.toy.raycast", **extra}
    (out_dir / "scene.json").write_text(json.dumps(meta, indent=2))


def read_scene_json(directory: str | Path) -> tuple[SceneSpec, str]:
    """The scene and caption stored in ``scene.json`` by either writer."""
    meta = json.loads((Path(directory) / "scene.json").read_text())
    return SceneSpec.from_dict(meta["scene"]), str(meta["caption"])


# ----------------------------------------------------------------------------------------------- Blender


def write_blender(
    scene: SceneSpec,
    out_dir: str | Path,
    n_train: int = 100,
    n_val: int = 10,
    n_test: int = 20,
    size: int = 128,
    seed: int = 0,
    fov_deg: float = 45.0,
    supersample: int = 2,
    points: int = 0,
) -> dict[str, list[Camera]]:
    """Render ``scene`` into a NeRF-synthetic style dataset under ``out_dir`` (see the module docstring).

    Train and val cameras are drawn from ``np.random.default_rng(seed)`` (random azimuth, elevation and
    distance around the scene); test cameras are a ring of ``n_test`` at 30 degrees elevation. With ``points > 0``
    also :data:`POINTS_FILE`: that many coloured points seen by the training views (:func:`point_cloud`, the sky on
    a dome three times the cameras' distance away), drawn from the same generator after the cameras.

    Returns:
        The cameras of each split, ``{"train": [...], "val": [...], "test": [...]}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    center, radius = scene_extent(scene)
    cams = {
        "train": [sample_camera_for_scene(rng, scene, size, size, fov_deg=fov_deg) for _ in range(n_train)],
        "val": [sample_camera_for_scene(rng, scene, size, size, fov_deg=fov_deg) for _ in range(n_val)],
        "test": orbit_cameras(
            n_test, size, size, radius=2.25 + 1.85 * radius, elevation_deg=30.0, fov_deg=fov_deg, target=tuple(center)
        ),
    }
    train_views: list[tuple[Camera, RenderOutput]] = []
    for split, split_cams in cams.items():
        frames = []
        for i, cam in enumerate(split_cams):
            stem = out / split / f"r_{i}"
            rendered = _save_view(scene, cam, stem.with_suffix(".png"), stem, supersample)
            if split == "train":
                train_views.append((cam, rendered))
            frames.append(
                {"file_path": f"./{split}/r_{i}", "rotation": 0.0, "transform_matrix": np.asarray(cam.c2w).tolist()}
            )
        transforms = {"camera_angle_x": math.radians(fov_deg), "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(transforms, indent=2))
    if points > 0:
        distance = 3.0 * float(np.mean([np.linalg.norm(cam.center - center) for cam, _ in train_views]))
        write_ply(out / POINTS_FILE, *point_cloud(train_views, points, rng, distance))
    _write_scene_json(
        scene,
        out,
        {
            "layout": "blender",
            "size": size,
            "seed": seed,
            "fov_deg": fov_deg,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "points": points,
        },
    )
    return cams


def read_blender_poses(directory: str | Path, split: str = "train") -> np.ndarray:
    """Camera-to-world matrices (N, 4, 4), OpenGL convention, of ``transforms_{split}.json``."""
    meta = json.loads((Path(directory) / f"transforms_{split}.json").read_text())
    return np.array([frame["transform_matrix"] for frame in meta["frames"]], dtype=np.float64)


# ----------------------------------------------------------------------------------------------- LLFF


def _llff_row(camera: Camera, near: float, far: float) -> np.ndarray:
    """One row of ``poses_bounds.npy`` for an OpenGL camera."""
    c2w = np.asarray(camera.c2w, dtype=np.float64)
    pose = np.zeros((3, 5))
    pose[:, :3] = c2w[:3, :3] @ _GL_TO_LLFF
    pose[:, 3] = c2w[:3, 3]
    pose[:, 4] = (camera.height, camera.width, camera.focal)
    return np.concatenate([pose.ravel(), [near, far]])


def write_llff(
    scene: SceneSpec,
    out_dir: str | Path,
    n_views: int = 20,
    size: int | tuple[int, int] = (96, 72),
    seed: int = 0,
    fov_deg: float = 45.0,
    supersample: int = 2,
) -> list[Camera]:
    """Render ``scene`` into an LLFF-style forward-facing dataset under ``out_dir`` (see the module docstring).

    Args:
        size: ``(width, height)``, or an int for square images.
        seed: seeds ``np.random.default_rng(seed)``, the only source of the camera layout.

    Returns:
        The cameras, in image order.
    """
    width, height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cams = forward_facing_cameras(scene, n_views, width, height, np.random.default_rng(seed), fov_deg)
    rows = []
    for i, cam in enumerate(cams):
        name = f"IMG_{i:04d}"
        depth = _save_view(scene, cam, out / "images" / f"{name}.png", out / "gt" / name, supersample).depth
        finite = depth[np.isfinite(depth)]
        near, far = (
            (float(np.percentile(finite, 1.0)), float(np.percentile(finite, 99.0))) if finite.size else (0.1, 100.0)
        )
        rows.append(_llff_row(cam, near, far))
    np.save(out / "poses_bounds.npy", np.stack(rows))
    _write_scene_json(
        scene,
        out,
        {"layout": "llff", "width": width, "height": height, "seed": seed, "fov_deg": fov_deg, "n_views": n_views},
    )
    return cams


def read_llff_poses(directory: str | Path) -> np.ndarray:
    """Camera-to-world matrices (N, 4, 4), OpenGL convention, from ``poses_bounds.npy`` (no recentring)."""
    arr = np.load(Path(directory) / "poses_bounds.npy")
    poses = arr[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(arr), 1, 1))
    # the loader's fix-up: [down, right, back] -> [right, up, back]
    c2w[:, :3, :3] = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:3]], axis=2)
    c2w[:, :3, 3] = poses[:, :, 3]
    return c2w


def read_llff_bounds(directory: str | Path) -> np.ndarray:
    """Near/far bounds (N, 2) from ``poses_bounds.npy``."""
    return np.load(Path(directory) / "poses_bounds.npy")[:, 15:17]

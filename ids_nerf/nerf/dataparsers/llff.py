"""LLFF dataparser: forward-facing captures laid out as the original LLFF release (``nerf_llff_data/fern``).

Layout::

    scene/
      poses_bounds.npy          (N, 17): 3x5 pose [R | t | hwf] row-major, then near and far depth bounds
      images/                   full-resolution images (sorted by file name, one per pose)
      images_4/  images_8/      optional downscaled copies (chosen with ``downscale_factor``)

The rotation columns of ``poses_bounds.npy`` are ``[down, right, backwards]``; they are converted to
nerfstudio's OpenGL camera axes ``[right, up, backwards]`` as NeRF's ``load_llff_data`` does. ``hwf`` is the
full-resolution ``(height, width, focal)``; intrinsics are scaled by the size of the images actually loaded.

Scene normalisation (world -> nerfstudio coordinates, ``x_ns = scale * (R @ x + t)``):

1. scale: NeRF's ``bd_factor``: ``1 / (min(near) * bd_factor)``, so the nearest content is ~1.33 from the
   cameras whatever the capture's units (COLMAP's scale is arbitrary), times ``scale_factor``;
2. orientation (``average``): the average camera pose (NeRF's ``poses_avg``) becomes nerfstudio's z-up
   world: its right axis -> +x, its up axis -> +z, its viewing direction -> +y;
3. centre (``content``): the origin is put on the average viewing axis at the disparity midpoint of the
   mean near and far bounds, where forward-facing content concentrates, so that the scene box and the
   uncontracted region of scene-contraction models (nerfacto) hold the scene rather than empty space
   behind the cameras. ``poses`` centres on the average camera instead (NeRF's ``recenter_poses``).

``dataparser_transform`` and ``dataparser_scale`` hold exactly this map, so ``ns-export`` and the
``transform_poses_to_original_space`` helpers recover the original poses.

A missing ``images_{k}`` folder is written from ``images/`` on first use (area-averaged PNGs, as NeRF's
``_minify`` does with ImageMagick) unless ``create_downscaled`` is off, in which case the error names it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from ids_nerf.errors import UserInputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
"""Image file suffixes (case-insensitive) read from the image folders."""

MAX_AUTO_RESOLUTION = 1600
"""With ``downscale_factor=None`` the smallest factor whose images fit in this many pixels is used."""

AUTO_FACTORS: tuple[int, ...] = (1, 2, 4, 8)
"""Factors tried by the automatic downscale choice (the LLFF release ships images_4 and images_8)."""

_CAMERA_TO_NS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Average-camera axes (right, up, backwards) -> nerfstudio world (x, z, -y): up -> +z, viewing direction -> +y."""


@dataclass
class LLFFDataParserConfig(DataParserConfig):
    """LLFF forward-facing dataset (``poses_bounds.npy`` + ``images/``), e.g. ``nerf_llff_data/fern``."""

    _target: type = field(default_factory=lambda: LLFFDataParser)
    """Target class to instantiate."""
    data: Path = Path("data/nerf_llff_data/fern")
    """Scene folder holding poses_bounds.npy and images/."""
    downscale_factor: int | None = None
    """Load images from images_{factor}/ (1: images/). None: the smallest of 1, 2, 4, 8 whose images fit in
    1600 pixels. Intrinsics and image size are scaled by the size of the images loaded."""
    create_downscaled: bool = True
    """If images_{factor}/ is missing, write it from images/ (area-averaged PNGs, like NeRF's load_llff_data);
    if False, stop with an error naming the missing folder."""
    eval_interval: int = 8
    """Every eval_interval-th image (0, 8, 16, ...) is held out for evaluation (LLFF's llffhold). 0: no hold-out,
    all images are used for both training and evaluation."""
    bd_factor: float = 0.75
    """Scale the scene by 1 / (min(near bound) * bd_factor), so the nearest content is ~1/bd_factor away (NeRF's
    convention). 0 disables the bound-based scale."""
    scale_factor: float = 1.0
    """Extra scale applied to the scene after the bound-based scale."""
    orientation_method: Literal["average", "up", "vertical", "none"] = "average"
    """average: the average camera's up becomes +z and its viewing direction +y. up/vertical: nerfstudio's
    auto_orient_and_center_poses methods (up only, yaw left as is). none: keep the capture's world axes."""
    center_method: Literal["content", "poses", "none"] = "content"
    """content: origin on the average viewing axis at the disparity midpoint of the mean near/far bounds (the
    scene, not the cameras, sits in the scene box). poses: origin at the average camera centre (NeRF's
    recenter_poses). none: keep the capture's origin."""
    scene_scale: float = 1.0
    """Half side of the scene box (an axis-aligned cube around the origin), in normalised units."""


def read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``poses_bounds.npy``.

    Returns:
        ``c2w`` (N, 4, 4) camera-to-world matrices with OpenGL camera axes, ``bounds`` (N, 2) near/far depths,
        ``hwf`` (N, 3) full-resolution height, width and focal length in pixels.
    """
    try:
        arr = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        raise UserInputError(f"Cannot read '{path}' as a numpy array (.npy): {exc}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise UserInputError(f"'{path}' is an .npz archive; LLFF needs one (N, 17) array saved with np.save.")
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0:
        raise UserInputError(
            f"'{path}' should hold an (N, 17) array (LLFF poses_bounds.npy: per image a 3x5 pose [R | t | hwf] "
            f"and the near and far bounds), got shape {arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise UserInputError(f"'{path}' should hold numbers, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise UserInputError(f"'{path}' holds NaN or infinite values (rows {rows[:5].tolist()}).")
    poses = arr[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(arr), 1, 1))
    # [down, right, backwards] -> [right, up, backwards], as in NeRF's load_llff_data
    c2w[:, :3, :3] = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:3]], axis=2)
    c2w[:, :3, 3] = poses[:, :, 3]
    return c2w, arr[:, 15:17].copy(), poses[:, :, 4].copy()


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """NeRF's ``poses_avg``: mean centre, normalised summed viewing axis, up re-orthogonalised. Returns (4, 4)."""
    z = _normalize(c2w[:, :3, 2].sum(0))
    x = _normalize(np.cross(c2w[:, :3, 1].sum(0), z))
    y = np.cross(z, x)
    avg = np.eye(4)
    avg[:3, :3] = np.stack([x, y, z], axis=1)
    avg[:3, 3] = c2w[:, :3, 3].mean(0)
    return avg


def forward_facing_transform(
    c2w: np.ndarray,
    bounds: np.ndarray,
    bd_factor: float = 0.75,
    scale_factor: float = 1.0,
    orientation_method: Literal["average", "up", "vertical", "none"] = "average",
    center_method: Literal["content", "poses", "none"] = "content",
) -> tuple[np.ndarray, float]:
    """The world -> nerfstudio map of a forward-facing capture: ``x_ns = scale * (transform @ [x, 1])``.

    Args:
        c2w: (N, 4, 4) camera-to-world matrices, OpenGL camera axes.
        bounds: (N, 2) near/far depth bounds in world units.
        bd_factor, scale_factor, orientation_method, center_method: see :class:`LLFFDataParserConfig`.

    Returns:
        ``transform`` (3, 4) rotation and translation in world units, and ``scale``.
    """
    avg = average_pose(c2w)
    if orientation_method == "average":
        rotation = _CAMERA_TO_NS @ avg[:3, :3].T
    elif orientation_method in ("up", "vertical"):
        _, oriented = camera_utils.auto_orient_and_center_poses(
            torch.from_numpy(c2w).float(), method=orientation_method, center_method="none"
        )
        rotation = oriented[:3, :3].double().numpy()
    elif orientation_method == "none":
        rotation = np.eye(3)
    else:
        raise ValueError(f"Unknown orientation_method {orientation_method!r}")

    if center_method == "content":
        near, far = float(bounds[:, 0].mean()), float(bounds[:, 1].mean())
        if not (near > 0 and far > 0):
            raise UserInputError(f"Depth bounds must be positive for center_method='content' (mean {near}, {far}).")
        depth = 2.0 / (1.0 / near + 1.0 / far)  # disparity midpoint
        center = avg[:3, 3] - depth * avg[:3, 2]  # the camera looks down its -z axis
    elif center_method == "poses":
        center = avg[:3, 3]
    elif center_method == "none":
        center = np.zeros(3)
    else:
        raise ValueError(f"Unknown center_method {center_method!r}")

    scale = float(scale_factor)
    if bd_factor > 0:
        min_near = float(bounds[:, 0].min())
        if not min_near > 0:
            raise UserInputError(f"Near bounds must be positive to scale by bd_factor (min near {min_near}).")
        scale /= min_near * bd_factor
    transform = np.concatenate([rotation, -(rotation @ center)[:, None]], axis=1)
    return transform, scale


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def image_folder(data: Path, factor: int) -> Path:
    """``images/`` for factor 1, else ``images_{factor}/`` (the LLFF naming)."""
    return data / ("images" if factor == 1 else f"images_{factor}")


def write_downscaled(src: Path, dst: Path, factor: int) -> None:
    """Write every image of ``src`` to ``dst`` as PNG, ``factor`` times smaller (area average, floored size).

    The folder is written under a temporary name and renamed when complete.
    """
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for path in list_images(src):
            with Image.open(path) as img:
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
                size = (max(1, img.width // factor), max(1, img.height // factor))
                img.resize(size, Image.Resampling.BOX).save(tmp / f"{path.stem}.png")
        tmp.rename(dst)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if dst.is_dir():  # another process wrote it first
            return
        raise UserInputError(
            f"Could not write the downscaled image folder '{dst}' ({exc}). Create it yourself (images {factor}x "
            f"smaller than in '{src}'), or choose a downscale factor whose folder exists."
        ) from exc


def choose_downscale_factor(hwf: np.ndarray, downscale_factor: int | None) -> int:
    """The factor of the image folder to read: ``downscale_factor`` if given (>= 1), else the smallest of
    :data:`AUTO_FACTORS` whose images fit in :data:`MAX_AUTO_RESOLUTION` pixels (``hwf``: (N, 3) full-resolution
    height, width, focal)."""
    if downscale_factor is not None:
        if downscale_factor < 1:
            raise UserInputError(f"downscale_factor must be >= 1, got {downscale_factor}.")
        return int(downscale_factor)
    full = float(hwf[:, :2].max())
    return next((k for k in AUTO_FACTORS if full / k <= MAX_AUTO_RESOLUTION), AUTO_FACTORS[-1])


def source_image_folder(data: Path, factor: int, create_downscaled: bool) -> tuple[Path, Path]:
    """``(folder, source)``: the image folder the parser reads for ``factor`` and the folder its images come from:
    ``folder`` itself when it exists, else ``images/`` (from which the parser writes ``folder``). Writes nothing.

    Raises:
        UserInputError: neither exists (or ``create_downscaled`` is off); the message names the folder.
    """
    folder = image_folder(data, factor)
    if folder.is_dir():
        return folder, folder
    full = image_folder(data, 1)
    if factor == 1 or not create_downscaled or not full.is_dir():
        if factor == 1:
            hint = "The full-resolution images belong in images/."
        elif not full.is_dir():
            hint = f"It cannot be written from the full-resolution images: '{full}' is missing too."
        else:
            hint = "Set --create-downscaled True to write it from images/, or pick a factor whose folder exists."
        raise UserInputError(
            f"LLFF image folder '{folder}' does not exist (downscale factor {factor}). {hint} "
            f"Found image folders: {sorted(p.name for p in data.glob('images*') if p.is_dir()) or 'none'}."
        )
    return folder, full


def check_image_count(folder: Path, num_images: int, poses_path: Path, num_poses: int) -> None:
    """LLFF pairs the images of ``folder`` (sorted by name) with the poses one to one."""
    if num_images != num_poses:
        raise UserInputError(
            f"'{folder}' holds {num_images} images but '{poses_path}' has {num_poses} poses; "
            "they must match one to one (images sorted by file name)."
        )


def check_aspect_ratio(sizes: np.ndarray, hwf: np.ndarray, folder: Path) -> None:
    """The images' (N, 2) width, height must have the aspect ratio of ``hwf`` (2% tolerance)."""
    sx, sy = sizes[:, 0] / hwf[:, 1], sizes[:, 1] / hwf[:, 0]
    if np.any(np.abs(sx - sy) > 0.02 * np.maximum(sx, sy)):
        raise UserInputError(
            f"Images in '{folder}' do not have the aspect ratio of poses_bounds.npy's height/width "
            f"({int(hwf[0, 0])}x{int(hwf[0, 1])}); are they rotated or cropped?"
        )


class LLFFDataParser(DataParser):
    """Parses an LLFF scene folder into nerfstudio cameras; see the module docstring for the conventions."""

    config: LLFFDataParserConfig

    def __init__(self, config: LLFFDataParserConfig) -> None:
        super().__init__(config=config)

    def _choose_factor(self, hwf: np.ndarray) -> int:
        factor = choose_downscale_factor(hwf, self.config.downscale_factor)
        if factor > 1 and self.config.downscale_factor is None:
            CONSOLE.log(f"LLFF: automatic downscale factor {factor} (full resolution {float(hwf[:, :2].max()):.0f} px)")
        return factor

    def _image_files(self, factor: int, num_poses: int) -> list[Path]:
        data = self.config.data
        folder, source = source_image_folder(data, factor, self.config.create_downscaled)
        if source != folder:
            CONSOLE.log(f"LLFF: writing '{folder}' ({factor}x smaller than '{source}')")
            write_downscaled(source, folder, factor)
        files = list_images(folder)
        check_image_count(folder, len(files), data / "poses_bounds.npy", num_poses)
        return files

    def _split_indices(self, num_images: int, split: str) -> np.ndarray:
        indices = np.arange(num_images)
        k = self.config.eval_interval
        if k <= 0:
            return indices
        if split == "train":
            train = indices[indices % k != 0]
            if len(train) == 0:
                raise UserInputError(
                    f"With eval_interval={k} no image of the {num_images} is left for training; use eval_interval 0."
                )
            return train
        if split in ("val", "test"):
            return indices[indices % k == 0]
        raise ValueError(f"Unknown dataparser split {split!r} (expected train, val or test)")

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: object) -> DataparserOutputs:
        data = self.config.data
        poses_path = data / "poses_bounds.npy"
        if not poses_path.is_file():
            raise UserInputError(f"'{poses_path}' not found: '{data}' is not an LLFF scene folder.")
        c2w, bounds, hwf = read_poses_bounds(poses_path)
        factor = self._choose_factor(hwf)
        files = self._image_files(factor, len(c2w))

        sizes = []
        for path in files:
            with Image.open(path) as img:
                sizes.append(img.size)
        wh = np.array(sizes, dtype=np.float64)  # (N, 2) width, height
        check_aspect_ratio(wh, hwf, files[0].parent)
        sx, sy = wh[:, 0] / hwf[:, 1], wh[:, 1] / hwf[:, 0]
        if np.any(np.abs(wh[:, 0] - hwf[:, 1] / factor) > 1.0):
            CONSOLE.log(
                f"[yellow]LLFF: images in '{files[0].parent}' are not {factor}x smaller than poses_bounds.npy's "
                "size; intrinsics are scaled by the actual image size."
            )

        transform, scale = forward_facing_transform(
            c2w,
            bounds,
            bd_factor=self.config.bd_factor,
            scale_factor=self.config.scale_factor,
            orientation_method=self.config.orientation_method,
            center_method=self.config.center_method,
        )
        poses = transform[None] @ c2w  # (N, 3, 4)
        poses[:, :, 3] *= scale

        idx = self._split_indices(len(files), split)
        t = torch.from_numpy
        cameras = Cameras(
            camera_to_worlds=t(poses[idx]).float(),
            fx=t(hwf[idx, 2] * sx[idx]).float()[:, None],
            fy=t(hwf[idx, 2] * sy[idx]).float()[:, None],
            cx=t(wh[idx, 0] / 2.0).float()[:, None],
            cy=t(wh[idx, 1] / 2.0).float()[:, None],
            width=t(wh[idx, 0]).int()[:, None],
            height=t(wh[idx, 1]).int()[:, None],
            camera_type=CameraType.PERSPECTIVE,
            metadata={},  # not None: `ns-export cameras` (nerfstudio 1.1.5) asserts it with a camera optimizer
        )
        s = float(self.config.scene_scale)
        return DataparserOutputs(
            image_filenames=[files[i] for i in idx],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
            dataparser_transform=t(transform).float(),
            dataparser_scale=scale,
            metadata={"near_far": t(bounds[idx] * scale).float()},
        )

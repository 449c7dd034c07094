"""Edit only where the user points: a 3D box in scene coordinates and/or per-view masks restrict a scene edit.

How the region acts depends on the scene type, because the parameters do (each scene model says which with its
``region_mode``):

- ``"parameters"`` (Gaussian splats): each Gaussian is a separate set of parameters, so the edit optimises only the
  Gaussians inside the region (centre in the box; with masks, projecting into the masks of the views that see it)
  and leaves every other one bit-identical; culling happens inside only (:class:`EditRegion.gaussians`).
- ``"image"`` (NeRF): one shared hash grid holds the whole scene, so parameters cannot be split by region. The
  guidance gradient is masked per ray instead (rays whose point at the source render's depth falls in the box, or
  the view's mask), and outside the region the render is anchored to the frozen source scene's render of the same
  rays, so that density and colour outside stay put (:class:`EditRegion.pixels`, :func:`region_image_gradient`).

The 2D editor's masks act on its latent (``ids_nerf.image``). Every check that needs no model (box shape and
bounds, mask files and sizes, an empty region) runs before anything is written (:func:`check_region`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ids_nerf.errors import UserInputError

MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
"""Image formats read as masks (case-insensitive)."""
MASK_THRESHOLD = 128
"""A mask pixel is editable when its gray value is at least this (of 255)."""


@dataclass
class RegionConfig:
    """Restrict the edit to a region of the scene: a 3D box and/or per-view masks (none: the whole scene)."""

    box: tuple[float, ...] | None = None
    """Box in scene coordinates (those of the viewer and its crop box): centre x y z, size x y z, and optionally a
    rotation roll pitch yaw in radians (nerfstudio's OrientedBox.from_params), e.g. `--pipeline.region.box 0 0 0.15
    0.4 0.4 0.4`. In the viewer, "Use the crop box as edit region" sets it while editing. None: no box."""
    masks: Path | None = None
    """Folder of per-view masks: one image per training image with the same file name (any image extension) and
    size, white = editable (e.g. made with SAM). With a box too, both must agree (intersection). None: no masks."""
    anchor_weight: float = 1.0
    """NeRF scenes: weight w of the anchor w * sum over pixels outside the region of (render - source render)^2, the
    source render being the frozen source scene's render of the same rays (splat scenes freeze parameters instead)."""
    mask_vote: float = 0.5
    """Splat scenes with masks: a Gaussian is editable when its centre projects into the masks of at least this
    fraction of the training views that see it (in front of the camera and inside the image)."""

    def enabled(self) -> bool:
        """Whether a region is set."""
        return self.box is not None or self.masks is not None

    def describe(self) -> str:
        """One line for the viewer's status line and messages."""
        parts = []
        if self.box is not None:
            parts.append("box " + " ".join(f"{v:g}" for v in self.box))
        if self.masks is not None:
            parts.append(f"masks {self.masks}")
        return "region: " + (" and ".join(parts) if parts else "whole scene")


def oriented_box(box: Sequence[float]):
    """nerfstudio's OrientedBox of a region box (centre, size[, roll pitch yaw])."""
    from nerfstudio.data.scene_box import OrientedBox

    values = [float(v) for v in box]
    rpy = values[6:9] if len(values) == 9 else [0.0, 0.0, 0.0]
    obb = OrientedBox.from_params(tuple(values[:3]), tuple(rpy), tuple(values[3:6]))
    return OrientedBox(R=obb.R.float(), T=obb.T.float(), S=obb.S.float())


def box_contains(obb, points: Tensor) -> Tensor:
    """Which ``points`` (..., 3) lie strictly inside nerfstudio's OrientedBox ``obb`` (as its ``within``, without its
    per-call warnings)."""
    rot, centre, size = (t.to(points) for t in (obb.R, obb.T, obb.S))
    local = (points - centre) @ rot  # R^T (p - T), row-wise
    return (local.abs() < size / 2).all(dim=-1)


def box_of(obb) -> tuple[float, ...]:
    """A region box (centre, size, roll pitch yaw) of nerfstudio's OrientedBox (e.g. the viewer's crop box)."""
    import viser.transforms as vtf

    rpy = vtf.SO3.from_matrix(np.asarray(obb.R, dtype=np.float64)).as_rpy_radians()
    values = [*np.asarray(obb.T).tolist(), *np.asarray(obb.S).tolist(), rpy.roll, rpy.pitch, rpy.yaw]
    return tuple(round(float(v), 6) for v in values)


def _box_corners(box: Sequence[float]) -> Tensor:
    obb = oriented_box(box)
    signs = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    return (signs * obb.S) @ obb.R.T + obb.T


def check_box(box: Sequence[float] | None, flag: str, aabb: Tensor | None = None) -> None:
    """Refuse a box of the wrong length, with non-finite numbers or sizes <= 0, or (given the scene's axis-aligned
    bounds ``aabb`` (2, 3)) one that does not overlap the scene."""
    if box is None:
        return
    if len(box) not in (6, 9) or not all(math.isfinite(float(v)) for v in box):
        raise UserInputError(
            f"{flag} takes 6 or 9 finite numbers (centre x y z, size x y z[, roll pitch yaw in radians]); got "
            f"{' '.join(str(v) for v in box) or 'nothing'}."
        )
    if min(float(v) for v in box[3:6]) <= 0:
        raise UserInputError(
            f"{flag}: the box's size (numbers 4 to 6) must be > 0; got {' '.join(map(str, box[3:6]))}."
        )
    if aabb is not None:
        corners = _box_corners(box)
        lo, hi = corners.min(dim=0).values, corners.max(dim=0).values
        if bool((hi <= aabb[0]).any() or (lo >= aabb[1]).any()):
            bounds = " .. ".join(" ".join(f"{v:.3g}" for v in row) for row in aabb.tolist())
            raise UserInputError(
                f"{flag} {' '.join(f'{float(v):g}' for v in box)} lies outside the scene's bounds ({bounds}, scene "
                "coordinates as the viewer shows them): the region would be empty. Place the box in the viewer with "
                "its crop box and copy the values, or use the viewer's button while editing."
            )


def list_masks(folder: Path, flag: str) -> dict[str, Path]:
    """The mask files of ``folder`` by file stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{flag} {folder}: no such folder; pass the folder holding one mask per training image.")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in MASK_EXTENSIONS:
            files.setdefault(p.stem, p)
    return files


def read_mask(path: Path, flag: str) -> np.ndarray:
    """A mask file as (H, W) bool (editable where the gray value >= :data:`MASK_THRESHOLD`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            gray = img.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f"{flag}: cannot read {path} as a mask image ({err}).") from None
    return np.asarray(gray) >= MASK_THRESHOLD


def match_masks(folder: Path, images: Sequence[Path], sizes: Sequence[tuple[int, int]], flag: str) -> list[Path]:
    """The mask of each training image (same stem) checked for existence and size (H, W); refuses masks that are
    all black. Returns the mask files in training order."""
    files = list_masks(folder, flag)
    missing = [Path(img).name for img in images if Path(img).stem not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserInputError(
            f"{flag} {folder}: no mask for the training image(s) {shown}; each training image needs a mask of the same "
            f"file name (any image extension), white = editable."
        )
    from PIL import Image

    masks = [files[Path(img).stem] for img in images]
    for mask, img, size in zip(masks, images, sizes, strict=True):
        with Image.open(mask) as m:
            if (m.height, m.width) != tuple(size):
                raise UserInputError(
                    f"{flag}: {mask} is {m.width}x{m.height}, but its training image {img} is {size[1]}x{size[0]}; "
                    "make the mask at the size of the image the dataparser reads (see --downscale-factor)."
                )
    if not any(read_mask(mask, flag).any() for mask in masks):
        raise UserInputError(
            f"{flag} {folder}: every mask is black (nothing editable); white (gray >= {MASK_THRESHOLD}) marks the "
            "region to edit."
        )
    return masks


class EditRegion:
    """A region at run time: the box and the training views' masks, answering per pixel (NeRF) or per Gaussian
    (splat) whether something is inside."""

    def __init__(self, config: RegionConfig, cameras, image_filenames: Sequence[Path], flag: str) -> None:
        self.config = config
        self.box = oriented_box(config.box) if config.box is not None else None
        self.cameras = cameras
        self.masks: list[Tensor] | None = None
        if config.masks is not None:
            sizes = [(int(h), int(w)) for h, w in zip(cameras.height[:, 0], cameras.width[:, 0], strict=True)]
            files = match_masks(config.masks, image_filenames, sizes, f"{flag}.masks")
            self.masks = [torch.from_numpy(read_mask(path, f"{flag}.masks")) for path in files]

    def _inside_box(self, points: Tensor) -> Tensor:
        if self.box is None:
            return torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)
        return box_contains(self.box, points)

    def pixels(self, index: int, camera, depth: Tensor) -> Tensor:
        """(H, W, 1) float mask of a view rendered by ``camera`` (one camera at the render size) with the NeRF's
        ``depth`` (H, W, 1; distance along the unit ray directions): 1 where the point at that depth is in the box
        and the view's mask (resized, nearest) is white."""
        height, width = depth.shape[:2]
        inside = torch.ones(height, width, dtype=torch.bool, device=depth.device)
        if self.box is not None:
            rays = camera.to(depth.device).generate_rays(camera_indices=0, keep_shape=True)
            points = rays.origins + rays.directions * depth
            inside &= self._inside_box(points)
        if self.masks is not None:
            mask = self.masks[index][None, None].float()
            mask = torch.nn.functional.interpolate(mask, size=(height, width), mode="nearest")[0, 0] > 0.5
            inside &= mask.to(inside.device)
        return inside[..., None].float()

    def gaussians(self, means: Tensor) -> Tensor:
        """(N,) bool: the Gaussians (centres ``means``) the edit may change: centre in the box and, with masks,
        projecting into the masks of at least ``mask_vote`` of the training views that see it."""
        editable = self._inside_box(means)
        if self.masks is None:
            return editable
        votes = torch.zeros(len(means), device=means.device)
        seen = torch.zeros(len(means), device=means.device)
        for index, mask in enumerate(self.masks):
            col, row, visible = project(self.cameras[index : index + 1], means)
            inside = torch.zeros(len(means), dtype=torch.bool, device=means.device)
            mask = mask.to(means.device)
            inside[visible] = mask[row[visible], col[visible]]
            votes += inside.float()
            seen += visible.float()
        return editable & (seen > 0) & (votes >= self.config.mask_vote * seen)


def project(camera, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel column, row (long) and visibility (in front of the camera, inside the image) of world ``points`` in a
    one-camera nerfstudio ``Cameras`` (OpenGL axes: the camera looks along -z)."""
    c2w = camera.camera_to_worlds[0].to(points)
    rot, origin = c2w[:3, :3], c2w[:3, 3]
    local = (points - origin) @ rot  # world -> camera axes
    depth = -local[:, 2]
    z = depth.clamp(min=1e-8)
    fx, fy, cx, cy = (float(getattr(camera, k)[0, 0]) for k in ("fx", "fy", "cx", "cy"))
    u = fx * local[:, 0] / z + cx
    v = -fy * local[:, 1] / z + cy
    height, width = int(camera.height[0, 0]), int(camera.width[0, 0])
    visible = (depth > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    col = u.clamp(0, width - 1).long()
    row = v.clamp(0, height - 1).long()
    return col, row, visible


def region_image_gradient(
    image_grad: Tensor, inside: Tensor, rgb: Tensor, source_rgb: Tensor | None, anchor_weight: float
) -> Tensor:
    """The image gradient of a region edit (NeRF): the guidance gradient inside the region, plus outside the gradient
    of the anchor ``anchor_weight * sum((1 - inside) * (rgb - source_rgb)^2)``. All (H, W, 3) / (H, W, 1)."""
    grad = image_grad * inside
    if source_rgb is not None and anchor_weight > 0:
        grad = grad + 2.0 * anchor_weight * (1.0 - inside) * (rgb - source_rgb)
    return grad


def check_region(region: RegionConfig, outputs, means: Tensor | None, flag: str = "--pipeline.region") -> None:
    """Every check of a scene edit's region that needs no model, before anything is written: the box (shape, sizes,
    overlap with the scene's bounds), the options' ranges, the masks (one per training image, same size, not all
    black) and, for a splat scene whose Gaussian centres ``means`` are known, at least one Gaussian inside.
    ``outputs``: the dataparser's training outputs (image files, cameras, scene box)."""
    if not region.enabled():
        return
    if not (math.isfinite(region.anchor_weight) and region.anchor_weight >= 0):
        raise UserInputError(f"{flag}.anchor-weight must be a finite number >= 0 (got {region.anchor_weight}).")
    if not (math.isfinite(region.mask_vote) and 0 < region.mask_vote <= 1):
        raise UserInputError(f"{flag}.mask-vote must be in (0, 1] (got {region.mask_vote}).")
    check_box(region.box, f"{flag}.box", outputs.scene_box.aabb)
    cameras = outputs.cameras
    if region.masks is not None:
        sizes = [(int(h), int(w)) for h, w in zip(cameras.height[:, 0], cameras.width[:, 0], strict=True)]
        match_masks(region.masks, outputs.image_filenames, sizes, f"{flag}.masks")
    if means is not None:
        editable = EditRegion(region, cameras, outputs.image_filenames, flag).gaussians(means.float())
        if not bool(editable.any()):
            what = " and ".join(x for x, on in (("box", region.box), ("masks", region.masks)) if on is not None)
            raise UserInputError(
                f"{flag}: no Gaussian of the source scene ({len(means)} Gaussians) is inside the region's {what}; the "
                "edit would change nothing. Enlarge or move the region (the viewer's crop box shows it)."
            )

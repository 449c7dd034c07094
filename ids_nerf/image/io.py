"""Robust image input/output for the 2D editor: any PIL-readable file in, PNG/GIF out, nothing overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ids_nerf.errors import UserInputError


def check_image_path(path: str | Path) -> Path:
    """Refuse a missing ``--image`` or a folder, before anything is loaded."""
    p = Path(path)
    if not p.exists():
        raise UserInputError(f"--image: file not found: {p}. Check the path.")
    if p.is_dir():
        raise UserInputError(f"--image: {p} is a folder; pass an image file (PNG, JPEG, ...).")
    return p


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an RGB image: EXIF rotation applied, alpha composited on white, grayscale/palette -> RGB."""
    p = check_image_path(path)
    try:
        with Image.open(p) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserInputError(
            f"--image: cannot read {p} as an image ({err}). Pass a PNG, JPEG, WebP, ... file."
        ) from None
    if img.width < 1 or img.height < 1:
        raise UserInputError(f"--image: {p} is empty ({img.width}x{img.height}).")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def to_tensor(img: Image.Image, size: tuple[int, int]) -> Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [0, 1], resized (bicubic) to ``size`` = (height, width)."""
    height, width = size
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pil(images: Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> PIL RGB, optionally resized (bicubic) to ``size`` = (height, width)."""
    arr = images.detach().float().clamp(0, 1).squeeze(0).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8))
    if size is None or img.size == (size[1], size[0]):
        return img
    return img.resize((size[1], size[0]), Image.Resampling.BICUBIC)


def check_output_path(path: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """Refuse to overwrite an existing file unless ``overwrite``; the parent folder must be creatable."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise UserInputError(f"{flag}: {p} already exists; choose another path or pass --overwrite.")
    if p.exists() and p.is_dir():
        raise UserInputError(f"{flag}: {p} is a folder; pass a file path such as {p / 'edit.png'}.")
    if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"):
        raise UserInputError(f"{flag}: {p} has no image extension; use e.g. .png.")
    return p


def save_trajectory(frames: list[Image.Image], path: Path, duration_ms: int = 120) -> None:
    """Save intermediate decodes as a horizontal strip (any still format) or an animated GIF (``.gif``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
        return
    width, height = frames[0].size
    strip = Image.new("RGB", (width * len(frames), height), (255, 255, 255))
    for i, frame in enumerate(frames):
        strip.paste(frame, (i * width, 0))
    strip.save(path)

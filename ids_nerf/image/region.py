"""Edit only where the mask is white: the 2D editor's region (``ids-edit-image --mask``).

The latent is the parameter here, so the region acts on it directly: the guidance gradient is multiplied by the mask
at latent resolution (the mask's area average over each latent cell, optionally feathered first), and after each
step the latent outside the mask is put back to the source's (``z = m z + (1 - m) z_src``). The decoded edit is then
composited over the input with the image-resolution mask (default), so the pixels outside are exactly the input's
rather than its VAE round trip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ids_nerf.errors import UserInputError


def load_mask(path: Path, size: tuple[int, int], flag: str = "--mask") -> np.ndarray:
    """A mask file as (H, W) float in [0, 1] (its gray level: white = editable, grey = partly), EXIF rotation applied
    as for the image. Refused (naming ``flag``): unreadable, not ``size`` = (height, width) of the image, all black."""
    try:
        with Image.open(path) as img:
            img.load()
            gray = ImageOps.exif_transpose(img).convert("L")
    except FileNotFoundError:
        raise UserInputError(f"{flag}: file not found: {path}.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f"{flag}: cannot read {path} as a mask image ({err}).") from None
    if (gray.height, gray.width) != tuple(size):
        raise UserInputError(
            f"{flag}: {path} is {gray.width}x{gray.height}, the image is {size[1]}x{size[0]}; make the mask at the "
            "image's size (white = editable)."
        )
    mask = np.asarray(gray, dtype=np.float32) / 255.0
    if mask.max() < 0.5:
        raise UserInputError(f"{flag}: {path} is black everywhere (nothing editable); white marks the region to edit.")
    return mask


def feather(mask: np.ndarray, pixels: float) -> np.ndarray:
    """``mask`` blurred with a Gaussian of standard deviation ``pixels`` (0: unchanged), kept in [0, 1]."""
    if pixels <= 0:
        return mask
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(mask, sigma=pixels, mode="nearest"), 0.0, 1.0).astype(np.float32)


def latent_mask(mask: np.ndarray, latent_hw: tuple[int, int], device: torch.device | str = "cpu") -> Tensor:
    """(1, 1, h, w) mask at latent resolution: the area average of ``mask`` (resized to a multiple of the latent
    size first) over each latent cell."""
    h, w = latent_hw
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    scale = max(1, -(-t.shape[-2] // h), -(-t.shape[-1] // w))
    t = torch.nn.functional.interpolate(t, size=(h * scale, w * scale), mode="bilinear", align_corners=False)
    return torch.nn.functional.avg_pool2d(t, scale).clamp(0, 1).to(device)


def composite(edit: Image.Image, source: Image.Image, mask: np.ndarray) -> Image.Image:
    """``mask * edit + (1 - mask) * source`` of two RGB images of the mask's size (uint8 rounding)."""
    m = mask[..., None]
    out = m * np.asarray(edit, dtype=np.float32) + (1 - m) * np.asarray(source.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))

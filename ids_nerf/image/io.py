"""Robust image input/output for the 2D editor: any PIL-readable file in (every pixel mode read faithfully or
refused), PNG/GIF out, nothing overwritten, every output location checked before the work starts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ids_nerf.errors import UserInputError

#: Extensions the outputs may have (PIL picks the format from them).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: Modes PIL converts to RGB exactly as they mean: bilevel, gray, palette, RGB, padded RGB, YCbCr (JPEG's full-range
#: BT.601), HSV, CIE LAB (to sRGB, as littlecms does) and CMYK without a colour profile (R = (255 - C)(255 - K) / 255).
_CONVERTIBLE = {"1", "L", "P", "RGB", "RGBX", "YCbCr", "HSV", "LAB", "CMYK"}
#: Modes with straight (not premultiplied) alpha, composited on white.
_STRAIGHT_ALPHA = {"LA", "PA", "RGBA"}


def check_image_path(path: str | Path) -> Path:
    """Refuse a missing ``--image`` or a folder, before anything is loaded."""
    p = Path(path)
    if not p.exists():
        raise UserInputError(f"--image: file not found: {p}. Check the path.")
    if p.is_dir():
        raise UserInputError(f"--image: {p} is a folder; pass an image file (PNG, JPEG, ...).")
    return p


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image (EXIF rotation applied), every pixel mode read as it means
    (:func:`image_to_rgb`) or refused with a UserInputError naming ``--image``."""
    p = check_image_path(path)
    try:
        with Image.open(p) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserInputError(
            f"--image: cannot read {p} as an image ({err}). Pass a PNG, JPEG, WebP, ... file."
        ) from None
    if img.width < 1 or img.height < 1:
        raise UserInputError(f"--image: {p} is empty ({img.width}x{img.height}).")
    return image_to_rgb(img, p)


def _refuse_mode(name: str | Path, mode: str, why: str) -> UserInputError:
    return UserInputError(
        f"--image: {name} has pixel mode {mode} ({why}); the editor reads 8-bit RGB(A), gray, palette, 16-bit gray, "
        "CMYK, YCbCr, LAB and HSV images. Convert it to an 8-bit RGB PNG first (e.g. in an image editor, or PIL's "
        "Image.convert), choosing how its values map to 0-255."
    )


def _on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight-alpha colour (H, W, C) in 0-255 over a white background, as uint8."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.clip(rgb.astype(np.float64) * a + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))


def _scaled_to_8bit(values: np.ndarray, full_scale: float) -> np.ndarray:
    return np.clip(values.astype(np.float64) * (255.0 / full_scale) + 0.5, 0, 255).astype(np.uint8)


def image_to_rgb(img: Image.Image, name: str | Path = "the image") -> Image.Image:
    """``img`` as 8-bit RGB, each pixel mode read as it means; ``name`` is the file for messages.

    - 1, L, P, RGB, RGBX, YCbCr, HSV, LAB, CMYK (no colour profile): PIL's conversions, which are exact for these.
    - CMYK with an embedded ICC profile: colour-managed to sRGB with that profile (littlecms).
    - LA, PA, RGBA, P with a transparent colour: composited on white; La, RGBa (premultiplied alpha): the same,
      ``colour + 255 - alpha``.
    - I;16 (16-bit gray, e.g. a 16-bit PNG): scaled by 65535, not clipped at 255; I (32-bit integer): the same
      when every value lies in 0-65535 (PIL reads 16-bit data so), refused otherwise; F (32-bit float): values in
      0-1 scaled by 255, refused otherwise.
    - Anything else is refused with a UserInputError naming ``--image``, the mode and what to do.
    """
    mode = img.mode
    if mode in _STRAIGHT_ALPHA or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        return Image.fromarray(_on_white(rgba[..., :3], rgba[..., 3]))
    if mode in ("RGBa", "La"):
        arr = np.asarray(img).astype(np.int32)
        colour = arr[..., :3] if mode == "RGBa" else np.repeat(arr[..., :1], 3, axis=2)
        alpha = arr[..., 3:4] if mode == "RGBa" else arr[..., 1:2]
        return Image.fromarray(np.clip(colour + 255 - alpha, 0, 255).astype(np.uint8))
    if mode == "CMYK" and img.info.get("icc_profile"):
        return _colour_managed(img, name)
    if mode in _CONVERTIBLE:
        return img.convert("RGB")
    if mode.startswith("I;16"):
        return _gray_to_rgb(_scaled_to_8bit(np.asarray(img).astype(np.float64), 65535.0))
    if mode == "I":
        values = np.asarray(img)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise _refuse_mode(name, mode, f"32-bit integers from {low} to {high}, no known range")
        return _gray_to_rgb(_scaled_to_8bit(values, 65535.0))
    if mode == "F":
        values = np.asarray(img)
        if not np.isfinite(values).all():
            raise _refuse_mode(name, mode, "32-bit floats with NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise _refuse_mode(name, mode, f"32-bit floats from {low:g} to {high:g}, not fractions in 0-1")
        return _gray_to_rgb(_scaled_to_8bit(values, 1.0))
    raise _refuse_mode(name, mode, "not a mode the editor knows how to read")


def _colour_managed(img: Image.Image, name: str | Path) -> Image.Image:
    """An image with an embedded ICC profile (CMYK) converted to sRGB by littlecms."""
    import io

    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), img.mode, "RGB")
        return ImageCms.applyTransform(img, transform)
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        raise _refuse_mode(name, img.mode, f"its colours could not be converted to sRGB: {err}") from None


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
    """Refuse to overwrite an existing file unless ``overwrite``, a folder, a name without an image extension, and a
    location this process cannot write (:func:`check_writable`)."""
    p = Path(path)
    if p.is_dir():
        raise UserInputError(f"{flag}: {p} is a folder; pass a file path such as {p / 'edit.png'}.")
    if p.exists() and not overwrite:
        raise UserInputError(f"{flag}: {p} already exists; choose another path or pass --overwrite.")
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UserInputError(f"{flag}: {p} has no image extension; use e.g. .png.")
    check_writable(p, flag)
    return p


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a broken link counts as existing)."""
    current = path
    while not (current.exists() or current.is_symlink()) and current != current.parent:
        current = current.parent
    return current


def check_writable(path: Path, flag: str, folder: bool = False) -> None:
    """Raise a UserInputError naming ``flag`` unless the file ``path`` (``folder``: the folder ``path``, created if
    missing) can be written: nothing on its way is a file, and its nearest existing folder lets this process create
    a file there (tried with a temporary file, removed at once: read-only folders and file systems, permissions,
    pseudo file systems). Creates no folder."""
    target = path if folder else path.parent
    base = _nearest_existing(target.absolute())
    if not base.is_dir():
        what = "a file" if base.exists() else "a broken link"
        raise UserInputError(
            f"{flag}: cannot create {path}: {base} is {what}, not a folder. Choose a path in a folder."
        )
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".ids-write-check-")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserInputError(
            f"{flag}: cannot write {path}: creating a file in {base} fails ({reason}). Choose a writable folder."
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file: the same path once links and ``..`` are resolved, or (both existing) the same
    file on disk (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    image: Path,
    out: Path,
    overwrite: bool,
    sidecar: Path | None = None,
    trajectory: Path | None = None,
    cache_dir: Path | None = None,
) -> None:
    """Every output location of an edit, before anything loads: ``out`` (``--out``), its diagnostics ``sidecar``,
    ``trajectory`` (``--save-trajectory``) and ``cache_dir`` (``--cache-dir``) can be written, none is the input
    ``image`` (refused even with ``overwrite``: the edit would destroy its input), and no two outputs are one file."""
    check_output_path(out, overwrite)
    outputs = [("--out", out)]
    if sidecar is not None:
        if sidecar.is_dir():
            raise UserInputError(f"{sidecar} (diagnostics of --out) is a folder; choose another --out.")
        if sidecar.exists() and not overwrite:
            raise UserInputError(f"{sidecar} (diagnostics of --out) already exists; pass --overwrite or another --out.")
        outputs.append(("the diagnostics of --out", sidecar))
    if trajectory is not None:
        check_output_path(trajectory, overwrite, flag="--save-trajectory")
        outputs.append(("--save-trajectory", trajectory))
    for flag, path in outputs:
        if same_file(path, image):
            raise UserInputError(
                f"{flag} {path} is the input image (--image {image}): the edit would overwrite its own input, "
                "--overwrite or not. Choose another output path."
            )
    for i, (flag_a, a) in enumerate(outputs):
        for flag_b, b in outputs[i + 1 :]:
            if same_file(a, b):
                raise UserInputError(f"{flag_a} and {flag_b} are the same file ({a}); give them different paths.")
    if cache_dir is not None:
        if cache_dir.exists() and not cache_dir.is_dir():
            raise UserInputError(f"--cache-dir {cache_dir} is not a folder; pass a folder (created if missing).")
        check_writable(cache_dir, "--cache-dir", folder=True)


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

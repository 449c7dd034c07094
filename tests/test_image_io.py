"""ids_nerf.image.io: every PIL pixel mode read as it means or refused, and the output-location checks."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from ids_nerf.errors import UserInputError
from ids_nerf.image.io import check_outputs, check_writable, image_to_rgb, load_image, same_file

GRAY = np.array([[0, 1, 2, 127], [128, 200, 254, 255]], dtype=np.uint8)
ALPHA = np.array([[0, 255, 128, 64], [255, 0, 1, 254]], dtype=np.uint8)
RGB = np.stack([GRAY, 255 - GRAY, np.roll(GRAY, 1, axis=1)], axis=2)


def _on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    return np.floor(colour.astype(np.float64) * a + 255 * (1 - a) + 0.5).astype(np.uint8)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _saved(img: Image.Image, path: Path) -> Path:
    img.save(path)
    with Image.open(path) as check:  # the file really holds that mode
        assert check.mode == img.mode, (check.mode, img.mode)
    return path


def _read(img: Image.Image, tmp_path: Path, suffix: str | None) -> np.ndarray:
    """``img`` through a file of ``suffix`` and :func:`load_image`, or (None: no format writes that mode) straight
    through :func:`image_to_rgb`."""
    out = load_image(_saved(img, tmp_path / f"in{suffix}")) if suffix else image_to_rgb(img, "in")
    assert out.mode == "RGB" and out.size == img.size
    return np.asarray(out)


def test_bilevel_gray_rgb_and_rgbx(tmp_path):
    bits = GRAY > 127
    assert np.array_equal(_read(Image.fromarray(bits), tmp_path, ".png"), _gray3(np.where(bits, 255, 0)))
    assert np.array_equal(_read(Image.fromarray(GRAY, "L"), tmp_path, ".png"), _gray3(GRAY))
    assert np.array_equal(_read(Image.fromarray(RGB, "RGB"), tmp_path, ".png"), RGB)
    assert np.array_equal(_read(Image.fromarray(RGB, "RGB").convert("RGBX"), tmp_path, None), RGB)


@pytest.mark.parametrize(("mode", "suffix"), [("LA", ".png"), ("RGBA", ".png"), ("PA", ".tif")])
def test_straight_alpha_is_composited_on_white(tmp_path, mode, suffix):
    if mode == "LA":
        img, colour = Image.fromarray(np.stack([GRAY, ALPHA], axis=2), "LA"), _gray3(GRAY)
    else:
        img, colour = Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"), RGB
        if mode == "PA":  # a palette of the 8 colours, alpha per pixel
            palette = Image.fromarray(RGB, "RGB").quantize(colors=8, dither=Image.Dither.NONE)
            colour = np.asarray(palette.convert("RGB"))
            img = palette.convert("PA")
            img.putalpha(Image.fromarray(ALPHA, "L"))
    assert np.array_equal(_read(img, tmp_path, suffix), _on_white(colour, ALPHA))


def test_palette_with_and_without_a_transparent_colour(tmp_path):
    palette = Image.fromarray(RGB, "RGB").quantize(colors=8, dither=Image.Dither.NONE)
    colours = np.asarray(palette.convert("RGB"))
    assert np.array_equal(_read(palette, tmp_path, ".png"), colours)
    index = np.asarray(palette)[0, 0]
    palette.info["transparency"] = int(index)
    expected = np.where((np.asarray(palette) == index)[..., None], 255, colours)
    (tmp_path / "t").mkdir()
    assert np.array_equal(_read(palette, tmp_path / "t", ".png"), expected)


@pytest.mark.parametrize("mode", ["RGBa", "La"])
def test_premultiplied_alpha_is_composited_on_white(mode):
    colour = RGB if mode == "RGBa" else _gray3(GRAY)
    premultiplied = (colour.astype(np.float64) * ALPHA[..., None] / 255).round().astype(np.uint8)
    bands = np.dstack([premultiplied, ALPHA]) if mode == "RGBa" else np.dstack([premultiplied[..., :1], ALPHA])
    img = Image.frombytes(mode, (4, 2), np.ascontiguousarray(bands).tobytes())
    got = _read(img, Path("."), None)
    assert np.abs(got.astype(int) - _on_white(colour, ALPHA).astype(int)).max() <= 1  # premultiplying rounds


def test_sixteen_bit_gray_png_is_scaled_by_65535_not_clipped(tmp_path):
    values = np.array([[0, 300, 1000, 32768], [40000, 65000, 65534, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    got = _read(img, tmp_path, ".png")
    assert np.array_equal(got, _gray3(np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)))
    assert got[0, 1, 0] == 1 and got[0, 3, 0] == 128  # 300 and 32768: not 255 as a clip at 255 gives


def test_32_bit_integer_image_in_16_bit_range_is_read_and_others_refused(tmp_path):
    values = np.array([[0, 255, 256, 65535]], dtype=np.int32)
    got = _read(Image.fromarray(values, "I"), tmp_path, ".tif")
    assert np.array_equal(got[0, :, 0], [0, 1, 1, 255])
    for bad in ([[-1, 5]], [[0, 70000]]):
        path = _saved(Image.fromarray(np.array(bad, dtype=np.int32), "I"), tmp_path / "bad.tif")
        with pytest.raises(UserInputError, match=r"--image: .*bad\.tif has pixel mode I \(32-bit integers") as info:
            load_image(path)
        assert "Convert it to an 8-bit RGB PNG" in str(info.value)


def test_float_image_in_0_1_is_read_and_others_refused(tmp_path):
    values = np.array([[0.0, 0.5, 0.25, 1.0]], dtype=np.float32)
    got = _read(Image.fromarray(values, "F"), tmp_path, ".tif")
    assert np.array_equal(got[0, :, 0], [0, 128, 64, 255])
    for bad, why in (([[0.0, 255.0]], "from 0 to 255"), ([[0.5, np.nan]], "NaN")):
        path = _saved(Image.fromarray(np.array(bad, dtype=np.float32), "F"), tmp_path / "bad.tif")
        with pytest.raises(UserInputError, match=f"--image: .*pixel mode F .*{why}"):
            load_image(path)


def test_cmyk_is_converted_multiplicatively(tmp_path):
    rows = [[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128]]
    rows2 = [[128, 0, 0, 128], [0, 255, 255, 0], [10, 20, 30, 40], [255, 255, 255, 255]]
    cmyk = np.array([rows, rows2], dtype=np.uint8)
    got = _read(Image.fromarray(cmyk, "CMYK"), tmp_path, ".tif")
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    expected = (255 - c) * (255 - k) / 255
    assert np.abs(got - expected).max() <= 1
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [0, 255, 255]  # white, cyan


def test_ycbcr_is_converted_with_full_range_bt601(tmp_path):
    img = Image.fromarray(RGB, "RGB").convert("YCbCr")
    y, cb, cr = (np.asarray(img)[..., i].astype(np.float64) for i in range(3))
    expected = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], axis=2
    ).clip(0, 255)
    got = _read(img, tmp_path, ".tif")
    assert np.abs(got - expected).max() <= 1.5 and np.abs(got.astype(int) - RGB).max() <= 3


def test_lab_is_colour_managed_to_srgb(tmp_path):
    """8-bit LAB keeps about one unit of a and b: mid-tones come back within a few levels (near the sRGB gamut's
    black edges the gamma curve magnifies that step)."""
    mid = (40 + RGB.astype(int) * 175 // 255).astype(np.uint8)
    srgb, lab_profile = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    lab = ImageCms.applyTransform(Image.fromarray(mid), ImageCms.buildTransform(srgb, lab_profile, "RGB", "LAB"))
    assert lab.mode == "LAB"
    got = _read(lab, tmp_path, ".tif")
    reference = ImageCms.applyTransform(lab, ImageCms.buildTransform(lab_profile, srgb, "LAB", "RGB"))
    assert np.array_equal(got, np.asarray(reference)) and np.abs(got.astype(int) - mid).max() <= 4


def test_hsv_is_converted():
    hsv = np.array([[[0, 255, 255], [85, 255, 255], [170, 255, 255], [0, 0, 128]]], dtype=np.uint8)
    got = _read(Image.fromarray(hsv, "HSV"), Path("."), None)
    assert got.tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]]]


# ------------------------------------------------------------------------------------------------ outputs
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` unwritable for this process: immutable as root (permissions do not stop root), mode 0555 otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available: no way to make a folder read-only for root")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = None
    try:
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            folder.chmod(0o755)


def test_writable_checks_create_nothing(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "o.png", "--out")
    check_writable(tmp_path / "cache", "--cache-dir", folder=True)
    assert list(tmp_path.iterdir()) == []  # no folder, no leftover probe file
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserInputError, match=r"--out: cannot create .*file\.txt is a file, not a folder"):
        check_writable(tmp_path / "file.txt" / "sub" / "o.png", "--out")
    with read_only(tmp_path / "locked"):
        with pytest.raises(UserInputError, match=r"--save-trajectory: cannot write .*locked"):
            check_writable(tmp_path / "locked" / "t.gif", "--save-trajectory")
        with pytest.raises(UserInputError, match="--cache-dir"):
            check_writable(tmp_path / "locked" / "cache", "--cache-dir", folder=True)
        assert list((tmp_path / "locked").iterdir()) == []


def test_the_input_is_never_an_output(tmp_path, monkeypatch):
    image = tmp_path / "in.png"
    Image.fromarray(RGB).save(image)
    link, hard = tmp_path / "link.png", tmp_path / "hard.png"
    link.symlink_to(image)
    os.link(image, hard)
    monkeypatch.chdir(tmp_path)
    for out in (image, Path("in.png"), Path("sub/../in.png"), link, hard):
        assert same_file(out, image)
        with pytest.raises(UserInputError, match=r"--out .* is the input image \(--image .*in\.png\)"):
            check_outputs(image, out, overwrite=True)
        with pytest.raises(UserInputError, match="--save-trajectory .* is the input image"):
            check_outputs(image, tmp_path / "o.png", overwrite=True, trajectory=out)
    with pytest.raises(UserInputError, match="--out and --save-trajectory are the same file"):
        check_outputs(image, tmp_path / "o.png", overwrite=True, trajectory=Path("o.png"))
    check_outputs(image, tmp_path / "o.png", overwrite=True, sidecar=tmp_path / "o.json", trajectory=tmp_path / "t.gif")
    assert not same_file(tmp_path / "o.png", image)


def test_cmyk_with_an_unusable_colour_profile_is_refused():
    img = Image.fromarray(np.zeros((2, 2, 4), dtype=np.uint8), "CMYK")
    img.info["icc_profile"] = b"not an ICC profile"
    with pytest.raises(UserInputError, match="--image: in has pixel mode CMYK .*could not be converted to sRGB"):
        image_to_rgb(img, "in")

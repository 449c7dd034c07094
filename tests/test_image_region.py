"""ids-edit-image --mask: the latent outside the mask stays the source's, the output outside is the input's exactly
(composited), the inside still edits; bad masks are refused before anything loads or is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from refusals import assert_refused, in_process, snapshot

from ids_nerf.image.region import composite, feather, latent_mask


@pytest.fixture
def photo_and_mask(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    image = tmp_path / "in.png"
    Image.fromarray((rng.random((64, 96, 3)) * 255).astype(np.uint8)).save(image)
    mask = np.zeros((64, 96), np.uint8)
    mask[16:48, 24:72] = 255  # the middle is editable
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return image, tmp_path / "mask.png"


def test_latent_mask_is_the_area_average():
    mask = np.zeros((64, 64), np.float32)
    mask[:, :32] = 1.0
    mask[:, 36] = 1.0  # a quarter of latent column 4 (pixels 32..39)
    m = latent_mask(mask, (8, 8))[0, 0]
    assert torch.equal(m[:, :4], torch.ones(8, 4)) and torch.equal(m[:, 5:], torch.zeros(8, 3))
    torch.testing.assert_close(m[:, 4], torch.full((8,), 0.125))
    assert feather(mask, 0) is mask and 0 < feather(mask, 2.0)[0, 33] < 1


def test_composite_keeps_the_outside_exactly():
    a = Image.fromarray(np.full((4, 4, 3), 200, np.uint8))
    b = Image.fromarray(np.full((4, 4, 3), 10, np.uint8))
    mask = np.zeros((4, 4), np.float32)
    mask[0, 0] = 1.0
    out = np.asarray(composite(a, b, mask))
    assert (out[0, 0] == 200).all() and (out[1:, :] == 10).all()


def test_masked_edit_keeps_the_outside_and_edits_the_inside(photo_and_mask, tmp_path, tiny_prior_dir, tiny_prior):
    from ids_nerf.guidance.prior import PriorConfig
    from ids_nerf.image.cli import EditImageConfig, run
    from ids_nerf.image.editor import OptimConfig

    image, mask = photo_and_mask

    def edit(out: Path, **kw) -> np.ndarray:
        run(
            EditImageConfig(
                image=image,
                out=out,
                src_prompt="a red sphere",
                trg_prompt="a blue sphere",
                optim=OptimConfig(steps=4, lr=2.0),
                prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
                progress=False,
                **kw,
            )
        )
        return np.asarray(Image.open(out), dtype=np.int16)

    source = np.asarray(Image.open(image), dtype=np.int16)
    region = edit(tmp_path / "region.png", mask=mask)
    inside = np.asarray(Image.open(mask)) > 127
    assert (region[~inside] == source[~inside]).all()  # composited: the input's pixels, exactly
    assert np.abs(region[inside] - source[inside]).mean() > 1  # the inside edited
    raw = edit(tmp_path / "raw.png", mask=mask, mask_composite=False)
    whole = edit(tmp_path / "whole.png")
    outside_raw = np.abs(raw[~inside] - source[~inside]).mean()  # the source latent kept there, decoded
    outside_whole = np.abs(whole[~inside] - source[~inside]).mean()
    assert outside_raw < outside_whole
    import json

    record = json.loads((tmp_path / "region.json").read_text())
    assert record["region"]["fraction"] == pytest.approx(float(inside.mean())) and record["region"]["composite"]


def test_the_editor_keeps_the_latent_outside_the_region(tiny_prior):
    from ids_nerf.guidance.config import guidance_config
    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.image.editor import OptimConfig, edit_latent

    z_src = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond_src, cond_trg = tiny_prior.text_embeddings("a red sphere"), tiny_prior.text_embeddings("a blue sphere")
    region = torch.zeros(1, 1, 8, 8)
    region[..., 2:6, 2:6] = 1.0
    distiller = ScoreDistiller(tiny_prior, guidance_config("dds"), seed=0)
    result = edit_latent(
        distiller, z_src, cond_src, cond_trg, OptimConfig(steps=3, lr=1.0), progress=False, region=region
    )
    outside = region.expand_as(z_src) == 0
    assert torch.equal(result.latent[outside], z_src[outside])
    assert not torch.equal(result.latent[~outside], z_src[~outside])


@pytest.mark.parametrize(
    ("fault", "names"),
    [
        ("missing", ["--mask", "file not found"]),
        ("size", ["--mask", "make the mask at the image's size"]),
        ("black", ["--mask", "black everywhere"]),
        ("unreadable", ["--mask", "cannot read"]),
        ("feather", ["--mask-feather"]),
    ],
)
def test_bad_masks_are_refused_before_anything_loads(photo_and_mask, tmp_path, fault, names):
    from ids_nerf.image.cli import entrypoint

    image, mask = photo_and_mask
    extra = ["--mask", str(mask)]
    if fault == "missing":
        extra = ["--mask", str(tmp_path / "nope.png")]
    elif fault == "size":
        Image.new("L", (10, 10), 255).save(mask)
    elif fault == "black":
        Image.new("L", (96, 64), 0).save(mask)
    elif fault == "unreadable":
        mask.write_bytes(b"not an image")
    else:
        extra += ["--mask-feather", "-2"]
    out = tmp_path / "out"
    before = snapshot(out, image, mask)
    argv = ["ids-edit-image", "--image", str(image), "--src-prompt", "a", "--trg-prompt", "b"]
    argv += ["--out", str(out / "edit.png"), "--prior.model", "/nonexistent/prior", *extra]
    outcome = in_process(entrypoint, argv)
    assert_refused(outcome, names, before, snapshot(out, image, mask))

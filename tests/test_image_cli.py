"""ids-edit-image: end-to-end on the tiny model, input robustness, errors with exit code 2, no overwrites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ids_nerf.errors import UserInputError
from ids_nerf.image.cli import EditImageConfig, run
from ids_nerf.image.io import load_image


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    arr = (rng.random((90, 150, 3)) * 255).astype(np.uint8)
    path = tmp_path / "in.png"
    Image.fromarray(arr).save(path)
    return path


def _cfg(image: Path, out: Path, prior: Path, **kw) -> EditImageConfig:
    base = {
        "image": image,
        "out": out,
        "src_prompt": "a red sphere",
        "trg_prompt": "a blue sphere",
        "steps": 3,
        "prior": str(prior),
        "device": "cpu",
        "progress": False,
    }
    return EditImageConfig(**{**base, **kw})


def test_three_steps_write_png_at_input_size(photo, tmp_path, tiny_prior_dir):
    out = tmp_path / "out.png"
    summary = run(_cfg(photo, out, tiny_prior_dir, save_trajectory=tmp_path / "traj.gif", trajectory_frames=3))
    img = Image.open(out)
    assert img.size == (150, 90)
    assert summary["method"] == "ids"
    diag = json.loads(out.with_suffix(".json").read_text())
    assert len(diag["history"]) == 3 and len(diag["history"][0]["fpr_losses"]) == 3
    gif = Image.open(tmp_path / "traj.gif")
    assert gif.n_frames == 4  # the source decode + 3 intermediate decodes


def test_same_seed_gives_identical_edit(photo, tmp_path, tiny_prior_dir):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    run(_cfg(photo, a, tiny_prior_dir, seed=5, method="dds"))
    run(_cfg(photo, b, tiny_prior_dir, seed=5, method="dds"))
    run(_cfg(photo, c, tiny_prior_dir, seed=6, method="dds"))
    arr = [np.asarray(Image.open(p)) for p in (a, b, c)]
    assert np.array_equal(arr[0], arr[1])
    assert not np.array_equal(arr[0], arr[2])


def test_edit_moves_latent_and_zero_steps_keeps_it(photo, tmp_path, tiny_prior_dir, tiny_prior):
    from ids_nerf.guidance.distiller import ScoreDistiller, guidance_from_preset
    from ids_nerf.image.editor import OptimConfig, edit_latent
    from ids_nerf.image.io import to_tensor

    with torch.no_grad():
        z_src = tiny_prior.encode(to_tensor(load_image(photo), (128, 128)))
    d = ScoreDistiller(tiny_prior, guidance_from_preset("ids"), seed=0)
    c_src, c_trg = tiny_prior.text_embeddings("a red sphere"), tiny_prior.text_embeddings("a blue cube")
    res = edit_latent(d, z_src, c_src, c_trg, OptimConfig(steps=4), progress=False)
    assert float((res.latent - z_src).abs().max()) > 0
    same = edit_latent(d, z_src, c_src, c_src, OptimConfig(steps=4), progress=False)
    assert torch.equal(same.latent, z_src)  # IDS with equal prompts leaves the source untouched


def test_rgba_grayscale_and_exif_inputs(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.asarray(load_image(tmp_path / "a.png")).min() == 255
    Image.fromarray(np.full((5, 7), 40, np.uint8), "L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.mode == "RGB" and g.size == (7, 5)
    img = Image.new("RGB", (20, 10), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").size == (10, 20)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"image_path": Path("missing.png")}, "file not found"),
        ({"src_prompt": "  "}, "--src-prompt is empty"),
        ({"trg_prompt": ""}, "--trg-prompt is empty"),
        ({"steps": -1}, "--steps"),
    ],
)
def test_bad_inputs_raise_before_model_loads(photo, tmp_path, change, match):
    image = change.pop("image_path", photo)
    cfg = _cfg(image, tmp_path / "o.png", Path("/nonexistent-prior"), **change)
    with pytest.raises(UserInputError, match=match):
        run(cfg)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UserInputError, match="cannot read"):
        load_image(bad)


def test_existing_output_is_never_overwritten(photo, tmp_path, tiny_prior_dir):
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    with pytest.raises(UserInputError, match="already exists"):
        run(_cfg(photo, out, tiny_prior_dir))
    assert out.read_bytes() == b"precious"
    run(_cfg(photo, out, tiny_prior_dir, overwrite=True, steps=1))
    assert Image.open(out).size == (150, 90)


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "ids_nerf.image.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_subprocess_success_and_exit_code_2(photo, tmp_path, tiny_prior_dir):
    out = tmp_path / "cli.png"
    ok = _cli(
        "--image",
        str(photo),
        "--src-prompt",
        "a red sphere",
        "--trg-prompt",
        "a blue sphere",
        "--out",
        str(out),
        "--steps",
        "3",
        "--prior",
        str(tiny_prior_dir),
        "--method",
        "pds-fpr",
        "--no-progress",
    )
    assert ok.returncode == 0, ok.stderr
    assert out.is_file() and "wrote" in ok.stdout
    missing = _cli(
        "--image",
        str(tmp_path / "nope.png"),
        "--src-prompt",
        "a",
        "--trg-prompt",
        "b",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert missing.returncode == 2 and "file not found" in missing.stderr and "Traceback" not in missing.stderr
    offline = _cli("--image", str(photo), "--src-prompt", "a", "--trg-prompt", "b", "--out", str(tmp_path / "y.png"))
    assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr and "Traceback" not in offline.stderr
    assert len(offline.stderr.strip().splitlines()) <= 3


def test_help_documents_every_option():
    res = _cli("--help")
    assert res.returncode == 0
    for flag in (
        "--image",
        "--src-prompt",
        "--trg-prompt",
        "--method",
        "--steps",
        "--lr",
        "--seed",
        "--prior",
        "--guidance-scale",
        "--fpr.iterations",
        "--fpr.scale",
        "--fpr.metric",
        "--fpr.wrt",
        "--fpr.guidance-scale",
        "--save-trajectory",
        "--overwrite",
    ):
        assert flag in res.stdout, flag

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

from ids_nerf.errors import PriorLoadError, UserInputError
from ids_nerf.guidance.config import SourceSideConfig
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.image.cli import EditImageConfig, run, validate
from ids_nerf.image.editor import OptimConfig
from ids_nerf.image.io import load_image, to_tensor


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    arr = (rng.random((90, 150, 3)) * 255).astype(np.uint8)
    path = tmp_path / "in.png"
    Image.fromarray(arr).save(path)
    return path


def _cfg(image: Path, out: Path, prior: Path, steps: int = 3, dtype: str = "auto", **kw) -> EditImageConfig:
    base = {
        "image": image,
        "out": out,
        "src_prompt": "a red sphere",
        "trg_prompt": "a blue sphere",
        "optim": OptimConfig(steps=steps),
        "prior": PriorConfig(model=str(prior), device="cpu", dtype=dtype),
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
    assert diag["nonfinite_steps"] == 0 and [h["nonfinite"] for h in diag["history"]] == [0, 0, 0]
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]  # outputs moved into place whole


def test_same_seed_gives_identical_edit(photo, tmp_path, tiny_prior_dir):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    run(_cfg(photo, a, tiny_prior_dir, seed=5, method="dds"))
    run(_cfg(photo, b, tiny_prior_dir, seed=5, method="dds"))
    run(_cfg(photo, c, tiny_prior_dir, seed=6, method="dds"))
    arr = [np.asarray(Image.open(p)) for p in (a, b, c)]
    assert np.array_equal(arr[0], arr[1])
    assert not np.array_equal(arr[0], arr[2])


def test_edit_moves_latent_and_zero_steps_keeps_it(photo, tmp_path, tiny_prior_dir, tiny_prior):
    from ids_nerf.guidance.config import guidance_config
    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.image.editor import edit_latent

    with torch.no_grad():
        z_src = tiny_prior.encode(to_tensor(load_image(photo), (128, 128)))
    d = ScoreDistiller(tiny_prior, guidance_config("ids"), seed=0)
    c_src, c_trg = tiny_prior.text_embeddings("a red sphere"), tiny_prior.text_embeddings("a blue cube")
    res = edit_latent(d, z_src, c_src, c_trg, OptimConfig(steps=4), progress=False)
    assert float((res.latent - z_src).abs().max()) > 0
    pinned = guidance_config("ids")
    pinned.source.lookahead = 1  # per step: both branches in one UNet call, so e_trg - e_src is exactly 0
    same = edit_latent(ScoreDistiller(tiny_prior, pinned, seed=0), z_src, c_src, c_src, OptimConfig(4), progress=False)
    assert torch.equal(same.latent, z_src)  # IDS with equal prompts leaves the source untouched
    # the default look-ahead computes the source branch in its own batch: untouched within float rounding
    ahead = edit_latent(d, z_src, c_src, c_src, OptimConfig(steps=4), progress=False)
    torch.testing.assert_close(ahead.latent, z_src, rtol=0, atol=1e-4)


def test_render_size_keeps_the_aspect():
    from ids_nerf.guidance.sizes import render_size

    assert render_size(384, 512, 512, 64) == (384, 512)  # (height, width); SD 1.x: a 48x64 latent
    assert render_size(120, 160, 128, 16) == (96, 128)
    assert render_size(160, 120, 128, 16) == (128, 96)
    assert render_size(10, 1000, 128, 16) == (16, 128)  # the short side is at least one multiple


@pytest.mark.parametrize(("size", "edit_size"), [((160, 120), (96, 128)), ((90, 150), (128, 80))])
def test_edit_at_the_input_aspect(tmp_path, tiny_prior_dir, tiny_prior, monkeypatch, size, edit_size):
    """Long side = the prior's resolution (128), short side rounded to its size multiple (16): no squashing."""
    from ids_nerf.image import cli

    assert (tiny_prior.resolution, tiny_prior.size_multiple) == (128, 16)
    encoded_sizes = []
    monkeypatch.setattr(cli, "to_tensor", lambda img, sz: encoded_sizes.append(sz) or to_tensor(img, sz))
    width, height = size
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(1).random((height, width, 3)) * 255).astype(np.uint8)).save(image)
    out, strip = tmp_path / "out.png", tmp_path / "traj.png"
    summary = run(_cfg(image, out, tiny_prior_dir, method="dds", steps=2, save_trajectory=strip, trajectory_frames=2))
    assert encoded_sizes == [edit_size]  # the source is encoded at the edit size, not squashed to 128x128
    latent_shape = [4, edit_size[0] // 8, edit_size[1] // 8]  # edit_size is (height, width)
    assert summary["edit_size"] == list(edit_size) and summary["latent_shape"] == latent_shape
    diag = json.loads(out.with_suffix(".json").read_text())
    assert diag["edit_size"] == list(edit_size) and diag["latent_shape"] == latent_shape
    assert Image.open(out).size == size  # written at the input's size
    assert Image.open(strip).size == (3 * edit_size[1], edit_size[0])  # source + 2 frames, at the edit size


@pytest.mark.parametrize(("method", "base", "scale", "fpr"), [("ids", "dds", 7.5, True), ("pds", "pds", 100.0, False)])
def test_diagnostics_record_the_effective_guidance(photo, tmp_path, tiny_prior_dir, method, base, scale, fpr):
    out = tmp_path / "out.png"
    run(_cfg(photo, out, tiny_prior_dir, method=method, steps=1))
    diag = json.loads(out.with_suffix(".json").read_text())
    assert diag["options"]["method"] == method and diag["options"]["fpr"]["enabled"] is False  # as given
    guidance = diag["guidance"]  # after the preset and the method's default scale
    assert guidance["score"] == base and guidance["guidance_scale"] == scale
    assert guidance["fpr"]["enabled"] is fpr and guidance["fpr"]["iterations"] == 3


def test_validate_checks_the_prior_before_anything_loads(photo, tmp_path):
    with pytest.raises(UserInputError, match="use --prior.dtype float32"):
        validate(_cfg(photo, tmp_path / "o.png", Path("tiny"), dtype="float16"))
    with pytest.raises(PriorLoadError, match="HF_HUB_OFFLINE"):
        validate(_cfg(photo, tmp_path / "o.png", Path("org/not-in-the-cache")))
    with pytest.raises(PriorLoadError, match="no unet/ subfolder"):
        validate(_cfg(photo, tmp_path / "o.png", tmp_path))


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
        ({"steps": -1}, "--optim.steps"),
        ({"source": SourceSideConfig(lookahead=0)}, "--source.lookahead"),
        ({"source": SourceSideConfig(pool=0)}, "--source.pool"),
        ({"method": "cds", "source": SourceSideConfig(lookahead=4)}, "--source.lookahead"),
        ({"method": "cds", "cache_dir": Path("cache")}, "--cache-dir"),
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
        "--optim.steps",
        "3",
        "--prior.model",
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
        "--optim.steps",
        "--optim.lr",
        "--seed",
        "--prior.model",
        "--prior.dtype",
        "--guidance-scale",
        "--fpr.iterations",
        "--fpr.step-size",
        "--fpr.metric",
        "--fpr.wrt",
        "--fpr.source-guidance-scale",
        "--save-trajectory",
        "--overwrite",
        "--source.lookahead",
        "--source.pool",
        "--cache-dir",
    ):
        assert flag in res.stdout, flag


def test_cli_float16_on_cpu_exits_2_with_one_line_and_writes_nothing(photo, tmp_path):
    out = tmp_path / "new" / "o.png"
    cache = tmp_path / "cache"
    res = _cli(
        *("--image", str(photo), "--src-prompt", "a", "--trg-prompt", "b", "--out", str(out)),
        *("--prior.model", "tiny", "--prior.dtype", "float16", "--prior.device", "cpu"),
        env_extra={"IDS_NERF_CACHE": str(cache)},
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "float16 is not supported on the CPU" in lines[0] and "--prior.dtype" in lines[0], lines
    assert not out.parent.exists() and not cache.exists()


def test_source_side_options_and_cache_in_the_diagnostics(photo, tmp_path, tiny_prior_dir):
    """--source.lookahead and --cache-dir: a second edit with another target prompt loads the source sides."""
    cache = tmp_path / "cache"
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    look = SourceSideConfig(lookahead=2)
    run(_cfg(photo, first, tiny_prior_dir, steps=3, source=look, cache_dir=cache))
    run(_cfg(photo, second, tiny_prior_dir, steps=3, source=look, cache_dir=cache, trg_prompt="a green cube"))
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (first, second))
    assert a["source_side"]["cache"] == "miss" and b["source_side"]["cache"] == "hit"
    assert b["source_side"]["cache_file"] == a["source_side"]["cache_file"]
    assert b["source_side"]["cache_hits"] == 3 and b["options"]["source"]["lookahead"] == 2
    assert [h["source"] for h in b["history"]] == ["lookahead"] * 3 and all(h["source_cached"] for h in b["history"])
    assert [h["t"] for h in a["history"]] == [h["t"] for h in b["history"]]
    pool = tmp_path / "pool.png"
    run(_cfg(photo, pool, tiny_prior_dir, steps=4, source=SourceSideConfig(pool=2)))
    side = json.loads(pool.with_suffix(".json").read_text())["source_side"]
    assert side["mode"] == "pool" and side["reuse_factor"] == 2 and len(side["pool_fpr_losses"]) == 2
    assert all(len(losses) == 3 for losses in side["pool_fpr_losses"])  # ids: N = 3 FPR losses per entry


def test_cli_bad_source_option_exits_2_naming_the_flag(photo, tmp_path):
    res = _cli(
        *("--image", str(photo), "--src-prompt", "a", "--trg-prompt", "b", "--out", str(tmp_path / "o.png")),
        *("--source.lookahead", "0"),
    )
    assert res.returncode == 2 and "--source.lookahead must be >= 1" in res.stderr and "Traceback" not in res.stderr


def test_lookahead_is_auto_by_default_and_its_choice_is_recorded(photo, tmp_path, tiny_prior_dir):
    import tyro

    base = ["--image", str(photo), "--src-prompt", "a", "--trg-prompt", "b", "--out", str(tmp_path / "o.png")]
    assert tyro.cli(EditImageConfig, args=base).source.lookahead == "auto"
    assert tyro.cli(EditImageConfig, args=[*base, "--source.lookahead", "1"]).source.lookahead == 1
    assert tyro.cli(EditImageConfig, args=[*base, "--source.lookahead", "auto"]).source.lookahead == "auto"
    out = tmp_path / "auto.png"
    run(_cfg(photo, out, tiny_prior_dir, steps=4))
    record = json.loads(out.with_suffix(".json").read_text())
    side, choice = record["source_side"], record["source_side"]["lookahead_choice"]
    assert record["options"]["source"]["lookahead"] == "auto" and side["lookahead_setting"] == "auto"
    assert choice["k"] == side["lookahead"] >= 1 and choice["reason"].startswith(f"K = {choice['k']} (")
    assert choice["memory_of"] == "cpu" and choice["free_bytes"] > 0
    assert record["history"][0]["lookahead"] == 1  # the first step's batch: the memory probe

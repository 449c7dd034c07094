"""ids-eval: every metric on constructed inputs (known values, symmetry, invariances), the CLI in images, render and
compare modes with random-weight networks built offline, and every bad input (exit code 2, before models load)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ids_nerf.eval import clip_metrics as cm
from ids_nerf.eval import preservation
from ids_nerf.eval.cli import main

CLIP = ["--clip-model", "ViT-S-32", "--random-weights", "--no-progress"]  # small open_clip architecture, offline
PROMPTS = ["--src-prompt", "a photo of a cat", "--trg-prompt", "a photo of a dog"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The test machine is shared: one intra-op thread for this module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------- CLIP metrics


def test_text_image_similarity_is_plain_cosine():
    img = _t([1.0, 0.0, 0.0], [0.0, 5.0, 0.0], [-2.0, 0.0, 0.0])
    txt = _t([3.0, 3.0, 0.0])
    got = cm.text_image_similarity(img, txt)
    assert torch.allclose(got, _t(2**-0.5, 2**-0.5, -(2**-0.5)))  # no x100, no clamp at 0


def test_directional_similarity_normalises_before_the_difference():
    src, edit = _t([1.0, 0.0]), _t([0.0, 3.0])  # un-normalised difference would be (-1, 3): cos 0.894 with (-1, 1)
    t_src, t_trg = _t([2.0, 0.0]), _t([0.0, 0.5])
    assert cm.directional_similarity(src, edit, t_src, t_trg).item() == pytest.approx(1.0, abs=1e-12)
    assert cm.directional_similarity(src, edit, t_trg, t_src).item() == pytest.approx(-1.0, abs=1e-12)
    # a third axis: image moves along e2 only half of the text direction's components
    got = cm.directional_similarity(_t([1.0, 0.0, 0.0]), _t([0.0, 1.0, 0.0]), _t([1.0, 0.0, 0.0]), _t([0.0, 0.0, 1.0]))
    assert got.item() == pytest.approx(0.5)  # cos((-1,1,0), (-1,0,1)) = 1/2


def test_directional_similarity_of_identical_pairs_is_zero():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(4, 8, generator=g, dtype=torch.float64)
    t_src, t_trg = torch.randn(2, 8, generator=g, dtype=torch.float64)
    assert torch.equal(cm.directional_similarity(e, e, t_src, t_trg), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(cm.directional_similarity(e, 2 * e, t_src, t_trg), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(cm.directional_similarity(e, e.flip(0), t_src, t_src), torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(cm.image_similarity(e, 3 * e), torch.ones(4, dtype=torch.float64))


def test_clip_metrics_symmetry_and_scale_invariance():
    g = torch.Generator().manual_seed(1)
    s, e = torch.randn(5, 16, generator=g, dtype=torch.float64), torch.randn(5, 16, generator=g, dtype=torch.float64)
    ts, tt = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    d = cm.directional_similarity(s, e, ts, tt)
    assert torch.allclose(d, cm.directional_similarity(e, s, tt, ts))  # swapping both roles
    assert torch.allclose(d, -cm.directional_similarity(e, s, ts, tt))  # swapping one role flips the sign
    scale = torch.rand(5, 1, generator=g, dtype=torch.float64) + 0.1
    assert torch.allclose(d, cm.directional_similarity(s * scale, e * 7, ts * 0.01, tt))
    assert torch.allclose(cm.image_similarity(s, e), cm.image_similarity(e, s))
    assert (d.abs() <= 1).all()


def test_consistency_metrics_known_values():
    s = _t([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    e = _t([0.0, 0.0, 1.0], [0.0, 1.0, 0.0])
    # source change (-1, 1, 0), edit change (0, 1, -1): cos = 1/2; edit deltas (-1, 0, 1) and 0: cos := 0
    assert cm.direction_consistency(s, e).tolist() == pytest.approx([0.5])
    assert cm.edit_consistency(s, e).tolist() == [0.0]
    e2 = _t([0.0, 0.0, 2.0], [3.0, 0.0, 0.0])  # edit deltas (-1, 0, 1), (1, -1, 0): cos = -1/2
    assert cm.edit_consistency(s, e2).tolist() == pytest.approx([-0.5])
    assert cm.direction_consistency(s, s).tolist() == pytest.approx([1.0])  # unedited: edit follows the source
    assert cm.direction_consistency(s[:1], e[:1]).numel() == 0  # one view: no pair


def test_clip_loads_a_local_checkpoint(tmp_path):
    rand = cm.load_clip("ViT-S-32", random_weights=True)
    assert rand.info.random_weights and rand.info.pretrained is None
    ckpt = tmp_path / "clip.bin"
    torch.save(rand.model.state_dict(), ckpt)
    local = cm.load_clip("ViT-S-32", str(ckpt))
    assert local.info.checkpoint == str(ckpt) and not local.info.random_weights
    assert torch.allclose(local.encode_texts(["a cat"]), rand.encode_texts(["a cat"]), atol=1e-6)
    img = [_image(40, 56, seed=9)]
    assert torch.allclose(local.encode_images(img), rand.encode_images(img), atol=1e-6)
    assert local.encode_images(img).norm(dim=-1).item() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------- identity metrics


def _image(h: int = 64, w: int = 64, seed: int = 0, lo: float = 0.25, hi: float = 0.75) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, (h, w, 3)).astype(np.float32)


def test_local_std_matches_brute_force():
    r = torch.from_numpy(np.random.default_rng(3).normal(size=(12, 10)))
    for window in (1, 4, 5, 30):
        got = preservation.local_std(r, window).numpy()
        a = window // 2
        want = np.array(
            [
                [r.numpy()[max(0, y - a) : y - a + window, max(0, x - a) : x - a + window].std() for x in range(10)]
                for y in range(12)
            ]
        )
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_background_psnr_of_identical_images_is_capped():
    img = _image()
    bg = preservation.background_psnr(img, img.copy())
    assert bg.psnr == preservation.PSNR_CAP_DB == 100.0 and bg.fraction == 1.0 and bg.mask.all()
    assert preservation.psnr_from_mse(0.0) == 100.0 and preservation.psnr_from_mse(1e-4) == pytest.approx(40.0)


@pytest.mark.parametrize("threshold", ["mean", "median"])
def test_background_psnr_of_a_constant_offset_is_exact(threshold):
    src = _image()
    bg = preservation.background_psnr(src, src + 0.1, threshold=threshold)
    assert bg.psnr == pytest.approx(20.0, abs=1e-4)  # every pixel's error is 0.1, whatever the mask
    full = preservation.background_psnr(src, src + 0.1, threshold=threshold, average="image")
    assert full.psnr == pytest.approx(20.0 + 10 * math.log10(1 / full.fraction), abs=1e-4)


@pytest.mark.parametrize("threshold", ["mean", "median"])
def test_background_psnr_of_known_noise_excludes_the_edit(threshold):
    src = _image(96, 96, seed=1)
    noise = np.random.default_rng(2).normal(0, 0.02, src.shape).astype(np.float32)
    edit = src + noise
    edit[40:60, 40:60] = np.random.default_rng(4).uniform(0, 1, (20, 20, 3))  # the "object" changed completely
    bg = preservation.background_psnr(src, edit, window=30, threshold=threshold)
    assert not bg.mask[40:60, 40:60].any()
    assert bg.psnr == pytest.approx(-10 * math.log10(0.02**2), abs=0.4)  # 33.98 dB: the noise level
    if threshold == "median":
        assert bg.fraction == pytest.approx(0.5, abs=0.01)
    assert preservation.background_psnr(src, edit, window=30, threshold="mean").fraction > 0.5


def test_mask_iou_known_values():
    a, b = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    assert preservation.mask_iou(a, b) == 1.0  # both empty
    a[0:4, 0:4] = True
    b[2:6, 2:6] = True
    assert preservation.mask_iou(a, b) == pytest.approx(4 / 28)
    assert preservation.mask_iou(a, a) == 1.0 and preservation.mask_iou(a, ~a) == 0.0
    assert preservation.mask_iou(a, b) == preservation.mask_iou(b, a)


def test_depth_change_median_over_mask():
    d_src = np.full((4, 4), 2.0)
    d_edit = d_src.copy()
    d_edit[1:] += 0.5  # three quarters of the pixels moved by 0.5
    d_edit[0, 0] = np.nan  # ignored
    keep = np.zeros((4, 4), bool)
    keep[0] = True
    assert preservation.depth_change(d_src, d_edit, keep) == 0.0
    assert preservation.depth_change(d_src, d_edit) == 0.5
    assert preservation.depth_change(d_src, d_edit, np.zeros((4, 4), bool)) is None


def test_lpips_with_random_backbone():
    metric = preservation.LpipsMetric("alex", random_backbone=True)
    a, b = _image(32, 48, seed=5), _image(32, 48, seed=6)
    assert metric(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metric(a, b) > 0 and metric(a, b) == pytest.approx(metric(b, a), rel=1e-5)
    assert metric(a[:16, :16], b[:16, :16]) > 0  # upsampled to a 64 px short side first


def test_missing_weights_raise_clear_errors(monkeypatch):
    import open_clip
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(cm.WeightsUnavailableError, match="--clip-pretrained /path/to/open_clip_pytorch_model.bin"):
        cm.load_clip("ViT-B-32", "openai")
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(cm.WeightsUnavailableError, match="alexnet-owt-7be5be79.pth.*TORCH_HOME") as info:
        preservation.LpipsMetric("alex")
    assert info.value.metric == "lpips"
    with pytest.raises(cm.UserInputError, match="not a pretrained tag"):
        cm.load_clip("ViT-S-32", "openai")
    with pytest.raises(cm.UserInputError, match="checkpoint file not found"):
        cm.load_clip("ViT-S-32", "/nonexistent/clip.bin")
    with pytest.raises(cm.UserInputError, match="not an open_clip architecture"):
        cm.load_clip("ViT-XXL-nope", "openai")


# --------------------------------------------------------------------------------------------- images mode (CLI)


def _save(arr: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def image_eval(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three pairs (one unchanged, one .jpg edit at another size), an unpaired file, masks; one CLI run."""
    root = tmp_path_factory.mktemp("images")
    dirs = {k: root / k for k in ("src", "edit", "msrc", "medit")}
    for d in dirs.values():
        d.mkdir()
    for k in range(3):
        src = _image(48, 64, seed=10 + k)
        edit = src.copy()
        if k > 0:
            edit[10:30, 20:40] = [0.9, 0.2, 0.1]
        _save(src, dirs["src"] / f"view{k}.png")
        if k == 2:
            Image.fromarray((edit * 255).astype(np.uint8)).resize((96, 72)).save(dirs["edit"] / f"view{k}.jpg")
        else:
            _save(edit, dirs["edit"] / f"view{k}.png")
        ms, me = np.zeros((48, 64)), np.zeros((48, 64))
        ms[10:30, 20:40] = 1
        me[10:30, 30:40] = 1  # half of the object: IoU 1/2
        _save(np.repeat(ms[..., None], 3, -1), dirs["msrc"] / f"view{k}.png")
        _save(np.repeat(me[..., None], 3, -1), dirs["medit"] / f"view{k}.png")
    _save(_image(8, 8), dirs["src"] / "extra.png")
    out = root / "eval"
    args = ["images", "--source", str(dirs["src"]), "--edited", str(dirs["edit"]), "--output-dir", str(out)]
    args += [
        "--masks-source",
        str(dirs["msrc"]),
        "--masks-edited",
        str(dirs["medit"]),
        "--video",
        "--video-format",
        "gif",
        *PROMPTS,
        *CLIP,
    ]
    code = main(args)
    return {"code": code, "out": out, "args": args, "root": root, **dirs}


def _strict_json(path: Path) -> dict:
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def test_images_mode_end_to_end(image_eval):
    assert image_eval["code"] == 0
    out = image_eval["out"]
    rec = _strict_json(out / "metrics.json")
    assert rec["tool"] == "ids-eval" and rec["mode"] == "images" and rec["random_weights"] is True
    assert "NOT meaningful" in rec["warning"] and "NOT meaningful" in (out / "metrics.md").read_text()
    assert [v["name"] for v in rec["views"]] == ["view0", "view1", "view2"]  # "extra" has no partner
    assert [p["views"] for p in rec["pairs"]] == [["view0", "view1"], ["view1", "view2"]]
    assert any("extra" in n for n in rec["notes"]) and any("resized" in n for n in rec["notes"])
    unchanged = rec["views"][0]
    assert unchanged["clip_image"] == pytest.approx(1.0, abs=1e-6)
    assert unchanged["clip_direction"] == 0.0
    assert unchanged["lpips"] == pytest.approx(0.0, abs=1e-6) and unchanged["bg_psnr"] == 100.0
    for v in rec["views"]:
        assert -1 <= v["clip_text"] <= 1 and v["iou"] == pytest.approx(0.5)
        assert v["depth_change"] is None
    for key in ("clip_text", "lpips", "bg_psnr", "iou"):
        assert rec["means"][key] == pytest.approx(np.mean([v[key] for v in rec["views"]]))
    assert rec["means"]["clip_consistency"] == pytest.approx(np.mean([p["clip_consistency"] for p in rec["pairs"]]))
    assert rec["counts"]["clip_consistency"] == 2 and rec["counts"]["lpips"] == 3
    assert rec["unavailable"]["depth_change"] == "render mode only" and "iou" not in rec["unavailable"]
    assert rec["models"]["clip"]["model"] == "ViT-S-32" and rec["models"]["clip"]["random_weights"] is True
    assert rec["versions"]["torch"] and rec["versions"]["lpips"] and rec["versions"]["open_clip_torch"]
    assert "normalised BEFORE the difference" in rec["definitions"]
    assert rec["options"]["bg_window"] == 30 and rec["options"]["bg_threshold"] == "mean"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.height > 3 * 128  # one row per view
    with Image.open(out / "views.gif") as gif:
        assert gif.n_frames == 3
    md = (out / "metrics.md").read_text()
    assert "| view2 |" in md and "view0 → view1" in md


def test_images_mode_never_overwrites_without_flag(image_eval, capsys):
    before = (image_eval["out"] / "metrics.json").read_text()
    assert main(image_eval["args"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (image_eval["out"] / "metrics.json").read_text() == before


def test_images_mode_skip_missing_reports_nulls(image_eval, tmp_path, monkeypatch, capsys):
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    base = ["images", "--source", str(image_eval["src"]), "--edited", str(image_eval["edit"]), *PROMPTS]
    base += ["--clip-model", "ViT-B-32", "--no-progress"]
    assert main([*base, "--output-dir", str(tmp_path / "a")]) == 2
    assert "CLIP metrics" in capsys.readouterr().err and not (tmp_path / "a").exists()
    monkeypatch.setattr(preservation, "LpipsMetric", _OfflineLpips)
    assert main([*base, "--output-dir", str(tmp_path / "b"), "--skip-missing"]) == 0
    rec = _strict_json(tmp_path / "b" / "metrics.json")
    assert rec["means"]["clip_text"] is None and rec["means"]["lpips"] is None
    assert "--clip-pretrained" in rec["unavailable"]["clip_direction"] and "TORCH_HOME" in rec["unavailable"]["lpips"]
    assert rec["means"]["bg_psnr"] is not None and rec["random_weights"] is False


class _OfflineLpips:
    def __init__(self, net, random_backbone=False, device="cpu"):
        raise cm.WeightsUnavailableError("lpips", preservation._lpips_missing_message(net, OSError("offline")))


def _bad_image_dirs(tmp_path: Path) -> dict[str, Path]:
    good, other, empty, broken = (tmp_path / n for n in ("good", "other", "empty", "broken"))
    for d in (good, other, empty, broken):
        d.mkdir()
    _save(_image(16, 16), good / "a.png")
    _save(_image(16, 16), other / "b.png")
    (broken / "a.png").write_bytes(b"not an image")
    (empty / "notes.txt").write_text("no images here")
    return {"good": good, "other": other, "empty": empty, "broken": broken, "missing": tmp_path / "nope"}


@pytest.mark.parametrize(
    ("source", "edited", "extra", "match"),
    [
        ("missing", "good", [], "folder not found"),
        ("good", "empty", [], "holds no images"),
        ("good", "other", [], "no file of --edited"),
        ("good", "broken", [], "cannot read"),
        ("good", "good", ["--masks-source", "good"], "pass both --masks-source and --masks-edited"),
        ("good", "good", ["--trg-prompt", "a photo of a cat"], "identical"),
        ("good", "good", ["--src-prompt", " "], "--src-prompt is empty"),
    ],
)
def test_images_mode_bad_inputs_exit_2(tmp_path, capsys, source, edited, extra, match):
    d = _bad_image_dirs(tmp_path)
    extra = [str(d[x]) if x in d else x for x in extra]
    args = ["images", "--source", str(d[source]), "--edited", str(d[edited]), *PROMPTS, *CLIP, *extra]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ids-eval: error: ") and match in err and err.count("\n") == 1  # one paragraph
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------- compare mode


def test_compare_table(image_eval, tmp_path, capsys):
    first = image_eval["out"] / "metrics.json"
    rec = json.loads(first.read_text())
    rec.update(name="other-method", random_weights=False)
    rec["means"]["lpips"] = 0.25
    second = tmp_path / "b" / "metrics.json"
    second.parent.mkdir()
    second.write_text(json.dumps(rec))
    md = tmp_path / "table.md"
    assert main(["compare", str(first), str(second.parent), "--labels", "IDS", "DDS", "--out", str(md)]) == 0
    table = capsys.readouterr().out
    assert md.read_text().strip() == table.strip()
    lines = table.splitlines()
    assert lines[0].startswith("| run | CLIP text-image ↑ | CLIP direction ↑") and "LPIPS ↓" in lines[0]
    assert "depth change" not in lines[0]  # no run has it
    assert lines[2].startswith("| IDS † |") and lines[3].startswith("| DDS |") and "| 0.2500 |" in lines[3]
    assert "random-weight networks" in table
    assert main(["compare", str(first), "--out", str(md)]) == 2  # never overwrites
    assert main(["compare", str(first), str(second), "--labels", "one"]) == 2
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}')
    assert main(["compare", str(bogus)]) == 2
    assert main(["compare", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- render mode (NeRF)


@pytest.fixture(scope="module")
def nerf_runs(toy_nerf_run: dict) -> dict:
    """The shared toy run of tests/conftest.py: toy scene -> ids-recon warm-up -> ids-edit with the tiny prior."""
    return {
        "root": toy_nerf_run["root"],
        "recon": toy_nerf_run["recon"].get_base_dir() / "config.yml",
        "edit": toy_nerf_run["edit"].get_base_dir() / "config.yml",
    }


RENDER_PROMPTS = ["--src-prompt", "a red sphere on a checkered floor", "--trg-prompt", "a blue sphere"]


def test_render_mode_with_source_run(nerf_runs, tmp_path):
    out = tmp_path / "eval"
    args = ["render", "--load-config", str(nerf_runs["edit"]), "--source-config", str(nerf_runs["recon"])]
    assert main([*args, *RENDER_PROMPTS, *CLIP, "--output-dir", str(out)]) == 0
    rec = _strict_json(out / "metrics.json")
    assert rec["mode"] == "render" and rec["name"] == "ids-edit/edit"
    assert [v["name"] for v in rec["views"]] == ["test/r_0", "test/r_1", "test/r_2"]
    assert main([*args, *RENDER_PROMPTS, *CLIP, "--output-dir", str(out)]) == 2  # never overwrites
    assert rec["provenance"]["edited_run"]["method"] == "ids-edit"
    assert rec["provenance"]["source_run"]["method"] == "ids-recon" and rec["versions"]["nerfstudio"]
    for v in rec["views"]:
        assert v["depth_change"] is not None and v["depth_change"] >= 0 and v["lpips"] >= 0
        assert 0 < v["bg_fraction"] <= 1
    assert len(list((out / "renders" / "depth_edit").glob("*.npy"))) == 3
    assert len(list((out / "renders" / "source").glob("*.png"))) == 3
    with Image.open(out / "contact_sheet.png") as sheet:  # source | edit | 2 depths | diff | mask
        assert sheet.width >= 6 * 128


def test_render_mode_video_writes_an_orbit_of_source_and_edit(nerf_runs, tmp_path):
    """--video: views.mp4 and orbit.mp4, a path through the training views rendered by the source run (found from
    the edit's --load-dir) and the edited run side by side."""
    import imageio.v2 as imageio

    out = tmp_path / "eval"
    args = ["render", "--load-config", str(nerf_runs["edit"]), "--video", "--orbit-keyframes", "3"]
    assert main([*args, "--orbit-steps", "4", *RENDER_PROMPTS, *CLIP, "--output-dir", str(out)]) == 0
    rec = _strict_json(out / "metrics.json")
    assert rec["orbit"]["source_run"] == str(nerf_runs["recon"]) and (out / "views.mp4").is_file()
    reader = imageio.get_reader(out / "orbit.mp4", format="FFMPEG")
    frames = [reader.get_data(i) for i in range(reader.count_frames())]  # list(reader): its length is inf
    assert len(frames) == rec["orbit"]["frames"] >= 8
    assert frames[0].shape[1] >= 2 * 32 and not np.array_equal(frames[0], frames[len(frames) // 2])  # it moves
    left, right = frames[0][14:46, :32].astype(int), frames[0][14:46, 36:68].astype(int)
    assert np.abs(left - right).mean() > 1.0  # source and edit differ


def test_render_mode_against_photos(nerf_runs, tmp_path):
    out = tmp_path / "eval"
    args = ["render", "--load-config", str(nerf_runs["edit"]), "--split", "val", *RENDER_PROMPTS, *CLIP]
    assert main([*args, "--output-dir", str(out)]) == 0
    rec = _strict_json(out / "metrics.json")
    assert [v["name"] for v in rec["views"]] == ["val/r_0", "val/r_1"] and rec["source_kind"] == "original photos"
    assert rec["means"]["depth_change"] is None and "--source-config" in rec["unavailable"]["depth_change"]


def test_render_mode_bad_configs_exit_2(tmp_path, capsys):
    """Checked before any network loads or anything renders; needs no trained run."""
    import copy

    import yaml

    from ids_nerf.method_configs import ids_recon

    config = copy.deepcopy(ids_recon.config)
    config.output_dir, config.experiment_name, config.timestamp = tmp_path / "runs", "toy", "ts"
    no_ckpt = config.get_base_dir() / "config.yml"
    no_ckpt.parent.mkdir(parents=True)
    no_ckpt.write_text(yaml.dump(config))
    not_ns = tmp_path / "other.yml"
    not_ns.write_text("a: 1\n")
    base = [*RENDER_PROMPTS, *CLIP, "--output-dir", str(tmp_path / "out")]
    cases = [
        (tmp_path / "missing.yml", "file not found"),
        (no_ckpt.parent, "is a folder; pass its config.yml"),
        (not_ns, "not a nerfstudio run config"),
        (no_ckpt, "no checkpoint (step-*.ckpt)"),
    ]
    for path, match in cases:
        assert main(["render", "--load-config", str(path), *base]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ids-eval: error: --load-config") and match in err, err
    assert not (tmp_path / "out").exists()


def test_render_mode_scores_the_copied_run_itself(nerf_runs, tmp_path, capsys):
    """A run folder copied elsewhere is scored with the checkpoint of its own nerfstudio_models/ (nerfstudio's
    eval_setup would load the original's, which its config.yml still records); the checkpoint is printed and recorded.
    The copy's checkpoint has its colour head switched off, so its renders are black where the original's are not."""
    import shutil

    from ids_nerf.nerf.checkpoints import load_checkpoint

    copy = tmp_path / "copied-edit"
    shutil.copytree(nerf_runs["edit"].parent, copy, ignore=shutil.ignore_patterns("eval-*", "events.out.*"))
    ckpt = sorted((copy / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    state = load_checkpoint(ckpt)
    state["pipeline"]["_model.field.mlp_head.layers.2.weight"].zero_()
    state["pipeline"]["_model.field.mlp_head.layers.2.bias"].fill_(-30.0)  # sigmoid -> rgb 0
    torch.save(state, ckpt)
    out = tmp_path / "eval"
    args = ["render", "--load-config", str(copy / "config.yml"), "--source-config", str(nerf_runs["recon"])]
    assert main([*args, *RENDER_PROMPTS, *CLIP, "--output-dir", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"checkpoint (--load-config): {ckpt} (step" in printed
    rec = _strict_json(out / "metrics.json")
    assert rec["provenance"]["edited_run"]["checkpoint"] == str(ckpt)
    recon_ckpt = sorted((nerf_runs["recon"].parent / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    assert rec["provenance"]["source_run"]["checkpoint"] == str(recon_ckpt)
    pngs = sorted((out / "renders" / "edit").glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        edit = np.asarray(Image.open(png), dtype=np.float64) / 255
        source = np.asarray(Image.open(out / "renders" / "source" / png.name), dtype=np.float64) / 255
        assert edit.mean() < 0.02 < 0.2 < source.mean(), (png.name, edit.mean(), source.mean())

"""Region-restricted scene edits (--pipeline.region.*): splat Gaussians outside the region stay bit-identical (also
across culls and a resume), masks select Gaussians by projection, the NeRF anchor keeps the outside at the source
render, the viewer takes over its crop box, and every bad region is refused before anything is written."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from resume_helpers import resume, run_whole_and_cut

from ids_nerf.nerf.region import (
    EditRegion,
    RegionConfig,
    box_contains,
    box_of,
    oriented_box,
    region_image_gradient,
)
from ids_nerf.nerf.runs import train_run
from ids_nerf.scenes.splat import GAUSSIAN_GROUPS, EditCullConfig

SPHERE_BOX = (0.0, 0.0, 0.15, 0.4, 0.4, 0.4)
"""A box around the toy sphere in scene coordinates (the toy Blender parser scales the scene by 0.3)."""


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _gaussians(state: dict) -> dict[str, torch.Tensor]:
    return {name: state["pipeline"][f"_model.gauss_params.{name}"] for name in GAUSSIAN_GROUPS}


def _last(config) -> Path:
    return sorted(config.get_checkpoint_dir().glob("step-*.ckpt"))[-1]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_box_and_oriented_box_round_trip():
    box = (0.1, -0.2, 0.3, 0.5, 0.6, 0.7, 0.1, -0.2, 0.3)
    assert box_of(oriented_box(box)) == pytest.approx(box, abs=1e-5)
    obb = oriented_box(SPHERE_BOX)
    points = torch.rand(200, 3) - 0.5
    assert box_contains(obb, points).tolist() == obb.within(points).tolist()  # nerfstudio's rule
    assert box_contains(obb, torch.tensor([[0.0, 0.0, 0.15], [0.0, 0.0, 0.4]])).tolist() == [True, False]


def test_region_image_gradient_masks_guidance_and_anchors_outside():
    grad, rgb, src = torch.full((2, 2, 3), 0.5), torch.full((2, 2, 3), 0.4), torch.full((2, 2, 3), 0.1)
    inside = torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]])
    out = region_image_gradient(grad, inside, rgb, src, anchor_weight=2.0)
    torch.testing.assert_close(out[0, 0], torch.full((3,), 0.5))  # inside: the guidance gradient
    torch.testing.assert_close(out[0, 1], torch.full((3,), 2 * 2.0 * 0.3))  # outside: d/drgb of w (rgb - src)^2


def test_splat_box_edit_leaves_the_outside_bit_identical_across_culls_and_a_resume(
    toy_splat_run, tmp_path, monkeypatch, one_thread
):
    """4 steps with a box around the sphere, culling every step inside: every Gaussian outside the box is
    bit-identical to the source's; inside they changed; an edit killed at step 3 and resumed ends identical."""
    base = copy.deepcopy(toy_splat_run["edit"])
    base.output_dir, base.max_num_iterations, base.steps_per_save = tmp_path, 4, 2
    base.pipeline.region.box = SPHERE_BOX
    base.pipeline.model.edit_cull = EditCullConfig(every=1, alpha_thresh=0.15)
    whole, cut = run_whole_and_cut(base, monkeypatch, stop_in=3)
    source = _gaussians(_ckpt(toy_splat_run["edit"].pipeline.source_checkpoint))
    inside_source = box_contains(oriented_box(SPHERE_BOX), source["means"])
    assert 0 < int(inside_source.sum()) < len(inside_source)
    final = _ckpt(_last(whole))
    from ids_nerf.nerf.resume import load_edit_state

    editable = load_edit_state(_last(whole))["region_gaussians"]
    edited = _gaussians(final)
    assert len(edited["means"]) < len(source["means"])  # it culled (inside only)
    assert int((~editable).sum()) == int((~inside_source).sum())  # no Gaussian outside was culled
    for name in GAUSSIAN_GROUPS:
        assert torch.equal(edited[name][~editable], source[name][~inside_source]), name
    assert not torch.equal(edited["features_dc"][editable], source["features_dc"][inside_source][: int(editable.sum())])

    resumed = resume(toy_splat_run["edit"], tmp_path, cut.get_checkpoint_dir())
    again = _ckpt(_last(resumed))
    for k, v in final["pipeline"].items():
        assert torch.equal(v, again["pipeline"][k]), k


def _write_object_masks(data: Path, folder: Path) -> None:
    """Region masks from the toy scene's object-id masks: white on the sphere."""
    folder.mkdir()
    for ids in sorted((data / "train").glob("*_mask.png")):
        sphere = np.asarray(Image.open(ids)) == 1  # ids + 1: sky 255, floor 0, object k -> k + 1
        Image.fromarray((sphere * 255).astype(np.uint8)).save(folder / ids.name.replace("_mask", ""))


def test_masks_select_the_gaussians_that_project_onto_the_object(toy_splat_run, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    masks = tmp_path / "masks"
    _write_object_masks(toy_splat_run["data"], masks)
    _, pipeline, _, _ = eval_setup(toy_splat_run["recon"].get_base_dir() / "config.yml", test_mode="val")
    dataset = pipeline.datamanager.train_dataset
    means = pipeline.model.means.detach()
    by_masks = EditRegion(RegionConfig(masks=masks), dataset.cameras, dataset.image_filenames, "--x").gaussians(means)
    by_box = EditRegion(RegionConfig(box=SPHERE_BOX), dataset.cameras, dataset.image_filenames, "--x").gaussians(means)
    both = EditRegion(
        RegionConfig(box=SPHERE_BOX, masks=masks), dataset.cameras, dataset.image_filenames, "--x"
    ).gaussians(means)
    assert 0 < int(by_masks.sum()) < len(means)
    assert torch.equal(both, by_masks & by_box)
    # points inside the sphere project onto it in every view; floor points on a ring around it (0.25 away) do in
    # fewer than half of the views that see them (a vote ignores occlusion: a point behind the sphere gets votes)
    region = EditRegion(RegionConfig(masks=masks), dataset.cameras, dataset.image_filenames, "--x")
    assert region.gaussians(torch.tensor([[0.0, 0.0, 0.15], [0.0, 0.0, 0.05], [0.05, 0.0, 0.15]])).all()
    angles = torch.linspace(0, 2 * np.pi, 9)[:-1]
    ring = torch.stack([0.25 * torch.cos(angles), 0.25 * torch.sin(angles), torch.zeros(8)], dim=-1)
    assert not region.gaussians(ring).any()


def test_nerf_box_edit_masks_the_guidance_and_anchors_the_outside(toy_nerf_run, tmp_path):
    """A NeRF region step: the guidance moves only rays inside (region_fraction reported), the outside is pulled to
    the frozen source render of the same rays; the source scene is loaded once, outside the module tree."""
    config = copy.deepcopy(toy_nerf_run["edit"])
    config.output_dir, config.timestamp, config.max_num_iterations = tmp_path, "box", 2
    config.pipeline.region.box = SPHERE_BOX
    train_run(config)
    saved = (config.get_base_dir() / "config.yml").read_text()
    assert "region" in saved and "0.4" in saved  # recorded in config.yml
    state = _ckpt(_last(config))
    assert not any("source" in k for k in state["pipeline"])


def test_viewer_takes_over_its_crop_box_as_the_region(toy_splat_run, tmp_path):
    """The button reads the viewer's crop box (centre, scale, rotation), queues the region for the next step, logs
    the change and shows the region in the status line."""
    import json

    from nerfstudio.data.scene_box import OrientedBox

    from ids_nerf.nerf.controls import EditControls

    applied = []
    controls = EditControls(copy.deepcopy(toy_splat_run["edit"].pipeline.guidance), live=True, on_region=applied.append)
    elements = controls.elements()
    assert {"edit_region_from_crop", "edit_region_clear"} <= set(elements)

    class Panel:
        crop_viewport = True
        crop_obb = OrientedBox.from_params((0.0, 0.0, 0.15), (0.0, 0.0, 0.5), (0.4, 0.4, 0.4))

    trainer = type("T", (), {"step": 7, "base_dir": tmp_path, "viewer_state": type("V", (), {"control_panel": Panel})})
    controls.attach_trainer(trainer)
    controls._on_region_from_crop(elements["edit_region_from_crop"])
    assert applied and applied[-1].box == pytest.approx((0.0, 0.0, 0.15, 0.4, 0.4, 0.4, 0.0, 0.0, 0.5), abs=1e-5)
    assert "region: box 0 0 0.15 0.4 0.4 0.4" in controls.status()
    line = json.loads((tmp_path / "edit_changes.jsonl").read_text().splitlines()[-1])
    assert line["field"] == "region_box" and line["step"] == 7
    controls._on_region_clear(elements["edit_region_clear"])
    assert applied[-1].enabled() is False and "region: whole scene" in controls.status()
    Panel.crop_viewport = False
    controls._on_region_from_crop(elements["edit_region_from_crop"])
    assert "Crop Viewport" in controls.status() and len(applied) == 2


def _refused(config, capsys, *names: str) -> None:
    with pytest.raises(SystemExit) as info:
        train_run(config)
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2, err
    assert "Traceback" not in err
    for name in names:
        assert name in err, err
    assert not config.get_base_dir().exists()


@pytest.mark.parametrize(
    ("kind", "region", "names"),
    [
        ("splat", {"box": (5.0, 5.0, 5.0, 0.1, 0.1, 0.1)}, ["--pipeline.region.box", "outside the scene's bounds"]),
        ("nerf", {"box": (0.0, 0.0, 0.1, 0.2)}, ["--pipeline.region.box", "6 or 9 finite numbers"]),
        ("nerf", {"box": (0.0, 0.0, 0.1, 0.2, 0.0, 0.2)}, ["--pipeline.region.box", "must be > 0"]),
        ("nerf", {"box": (0.0, 0.0, float("nan"), 0.2, 0.2, 0.2)}, ["--pipeline.region.box"]),
        ("splat", {"box": (1.2, 1.2, 1.2, 0.05, 0.05, 0.05)}, ["--pipeline.region", "no Gaussian"]),
        ("nerf", {"masks": "MISSING"}, ["--pipeline.region.masks", "no mask for the training image"]),
        ("nerf", {"masks": "SMALL"}, ["--pipeline.region.masks", "make the mask at the size"]),
        ("splat", {"masks": "BLACK"}, ["--pipeline.region.masks", "every mask is black"]),
        ("nerf", {"masks": "NOFOLDER"}, ["--pipeline.region.masks", "no such folder"]),
        ("nerf", {"box": SPHERE_BOX, "anchor_weight": -1.0}, ["--pipeline.region.anchor-weight"]),
    ],
)
def test_bad_regions_are_refused_before_anything_is_written(
    toy_nerf_run, toy_splat_run, tmp_path, capsys, kind, region, names
):
    run = toy_splat_run if kind == "splat" else toy_nerf_run
    config = copy.deepcopy(run["edit"])
    config.output_dir, config.timestamp = tmp_path / "out", "bad"
    config.pipeline.guidance.prior.model = "/nonexistent/prior"  # would fail loudly if anything tried to load it
    masks = region.get("masks")
    if masks is not None:
        folder = tmp_path / "masks"
        if masks != "NOFOLDER":
            _write_object_masks(run["data"], folder)
        if masks == "MISSING":
            sorted(folder.iterdir())[0].unlink()
        elif masks == "SMALL":
            first = sorted(folder.iterdir())[0]
            Image.open(first).resize((8, 8)).save(first)
        elif masks == "BLACK":
            for f in folder.iterdir():
                Image.new("L", Image.open(f).size, 0).save(f)
        region = {**region, "masks": folder}
    for key, value in region.items():
        setattr(config.pipeline.region, key, value)
    _refused(config, capsys, *names)


def test_a_preset_names_the_region_and_the_command_line_wins(toy_nerf_run, tmp_path):
    from ids_nerf.errors import UserInputError
    from ids_nerf.presets import PRESETS_DIR, apply_preset, load_preset

    preset = load_preset(PRESETS_DIR / "toy" / "sphere-blue-box.yaml")
    assert preset.region == {"box": (0.0, 0.0, 0.15, 0.4, 0.4, 0.4)}
    config = copy.deepcopy(toy_nerf_run["edit"])
    apply_preset(config, preset)
    assert config.pipeline.region.box == (0.0, 0.0, 0.15, 0.4, 0.4, 0.4)
    given = copy.deepcopy(toy_nerf_run["edit"])
    given.pipeline.region.box = (0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
    apply_preset(given, preset)
    assert given.pipeline.region.box == (0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
    masked = tmp_path / "masked.yaml"
    masked.write_text("scene: toy/sphere\nsrc_prompt: a\ntrg_prompt: b\nregion:\n  masks: masks\n  anchor_weight: 2\n")
    config = copy.deepcopy(toy_nerf_run["edit"])
    apply_preset(config, load_preset(masked))
    assert config.pipeline.region.masks == Path(config.pipeline.datamanager.data) / "masks"
    assert config.pipeline.region.anchor_weight == 2.0
    for text, match in (
        ("region:\n  box: [1, 2, 3]\n", "region.box must be a list of 6 or 9"),
        ("region:\n  box: [0, 0, 0, 1, 1, .nan]\n", "region.box must be a list of 6 or 9"),
        ("region:\n  colour: red\n", "region may set"),
        ("region: [1, 2]\n", "region must be a mapping"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text("scene: toy/sphere\nsrc_prompt: a\ntrg_prompt: b\n" + text)
        with pytest.raises(UserInputError, match=match):
            load_preset(bad, "--pipeline.guidance.preset")

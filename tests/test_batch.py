"""Editing presets (configs/) and ids-batch end to end offline with the in-process executor: a generated toy scene,
the tiny prior, random-weight CLIP/LPIPS (the Ray executor against it: tests/test_batch_ray.py)."""

from __future__ import annotations

import copy
import json

import pytest
from refusals import in_process

from ids_nerf.errors import UserInputError
from ids_nerf.presets import PRESETS_DIR, load_preset


def test_every_shipped_preset_loads():
    files = sorted(PRESETS_DIR.rglob("*.yaml"))
    scenes = {load_preset(f).scene for f in files}
    for scene in ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex"):
        assert f"llff/{scene}" in scenes
    for scene in ("lego", "chair", "ficus", "hotdog"):
        assert f"blender/{scene}" in scenes
    paper = load_preset(PRESETS_DIR / "llff" / "leaves-autumn.yaml")
    assert (paper.src_prompt, paper.trg_prompt) == ("The green leaves", "Yellow and red leaves in autumn")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("scene: a\nsrc_prompt: x\n", "missing trg_prompt"),
        ("scene: a\nsrc_prompt: x\ntrg_prompt: y\ncolour: red\n", "unknown keys"),
        ("scene: a\nsrc_prompt: x\ntrg_prompt: y\nguidance: {fpr: 3}\n", "guidance may set"),
        ("scene: a\nsrc_prompt: x\ntrg_prompt: x\n", "identical"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_bad_presets_name_the_file_and_flag(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError, match=match) as info:
        load_preset(path, "--pipeline.guidance.preset")
    assert str(info.value).startswith(f"--pipeline.guidance.preset {path}")


def test_preset_under_ns_train_fills_data_and_prompts(toy_nerf_run, tmp_path, capsys):
    from ids_nerf.nerf.runs import read_run_config, train_run

    config = copy.deepcopy(toy_nerf_run["edit"])
    g = config.pipeline.guidance
    g.src_prompt = g.trg_prompt = ""
    config.data = config.pipeline.datamanager.data = None
    g.preset, g.preset_data_root = PRESETS_DIR / "toy" / "sphere-blue.yaml", tmp_path / "data"
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "data" / "toy" / "sphere").symlink_to(toy_nerf_run["data"])
    config.output_dir, config.timestamp, config.max_num_iterations = tmp_path / "out", "p", 1
    train_run(config)
    saved = read_run_config(config.get_base_dir() / "config.yml")
    assert saved.pipeline.guidance.trg_prompt == "a blue sphere on a checkered floor"
    assert saved.pipeline.datamanager.data == tmp_path / "data" / "toy" / "sphere"


def test_batch_end_to_end_offline(tmp_path, tiny_prior_dir):
    """The in-process executor (the default): reconstruct -> edit with two methods -> ids-eval render -> the
    comparison; a bad preset among good ones fails its rows only (exit code 1); a second run reuses every run."""
    from ids_nerf.batch import entrypoint
    from ids_nerf.toy.datasets import write_blender
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    scene = SceneSpec(objects=[ObjectSpec(shape="sphere", color="red", center=(0.0, 0.0, 0.5), size=0.5)])
    write_blender(scene, tmp_path / "data" / "toy" / "sphere", n_train=4, n_val=1, n_test=2, size=32, seed=0)
    bad = tmp_path / "no-target.yaml"
    bad.write_text("scene: toy/sphere\nsrc_prompt: a red sphere\n")
    out = tmp_path / "outputs"
    argv = ["ids-batch", "--presets", str(PRESETS_DIR / "toy" / "sphere-blue.yaml"), str(bad)]
    argv += ["--methods", "ids-edit", "dds-edit", "ids-splat-edit", "--data-root", str(tmp_path / "data")]
    argv += ["--output-dir", str(out)]
    argv += ["--recon-steps", "10", "--edit-steps", "2", "--prior.model", str(tiny_prior_dir), "--device", "cpu"]
    argv += ["--render-resolution", "64", "--cpu-scenes", "--eval.random-weights", "--eval.clip-model", "ViT-B-32"]
    argv += ["--n-bootstrap", "200"]
    first = in_process(entrypoint, argv)
    assert first.code == 1 and "Traceback" not in first.err, first.err[-3000:]
    assert f"ids-batch: failed: no-target ids-edit seed 42: --presets {bad}: missing trg_prompt" in first.err
    table = (out / "comparison.md").read_text()
    assert table in first.out and "| ids-edit | 1 |" in table and "| ids-edit - dds-edit | 1 |" in table
    assert "sphere-blue: CLIP text (↑)" in table and "sphere-blue: depth change (↓)" in table
    assert "NOT meaningful" in table and "Failed (3):" in table
    summary = json.loads((out / "comparison.json").read_text())
    for method in ("ids-edit", "dds-edit", "ids-splat-edit"):  # a splat method edits the scene's splat reconstruction
        means = summary["means"]["sphere-blue"][method]
        assert means["depth_change"] is not None and means["bg_psnr"] is not None
        run = out / "sphere-blue" / method / "seed42"
        assert summary["runs"]["sphere-blue"][method] == {"42": str(run / "config.yml")}
        assert (run / "batch.log").is_file() and (run / "eval-test" / "metrics.json").is_file()
    again = in_process(entrypoint, argv)  # every run is reused: same runs, same numbers
    assert again.code == 1 and again.out.count("(reused)") == 3
    assert sorted(p.name for p in (out / "sphere").glob("*recon")) == ["ids-recon", "ids-splat-recon"]
    assert json.loads((out / "comparison.json").read_text())["means"] == summary["means"]
    assert (out / "comparison.md").read_text() == table

"""Editing presets (configs/) and ids-batch end to end offline: a generated toy scene, the tiny prior, random-weight
CLIP/LPIPS; reconstruct -> edit with two methods -> ids-eval render -> the Table-3-shaped comparison."""

from __future__ import annotations

import copy
import json

import pytest

from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig
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
    from ids_nerf.batch import BatchConfig, BatchEvalConfig, run
    from ids_nerf.toy.datasets import write_blender
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    scene = SceneSpec(objects=[ObjectSpec(shape="sphere", color="red", center=(0.0, 0.0, 0.5), size=0.5)])
    write_blender(scene, tmp_path / "data" / "toy" / "sphere", n_train=4, n_val=1, n_test=2, size=32, seed=0)
    cfg = BatchConfig(
        presets=(PRESETS_DIR / "toy" / "sphere-blue.yaml",),
        methods=("ids-edit", "dds-edit"),
        data_root=tmp_path / "data",
        output_dir=tmp_path / "outputs",
        recon_steps=10,
        edit_steps=2,
        prior=PriorConfig(model=str(tiny_prior_dir)),
        device="cpu",
        render_resolution=64,
        cpu_nerfacto=True,
        eval=BatchEvalConfig(random_weights=True),
    )
    result = run(cfg)
    table = (tmp_path / "outputs" / "comparison.md").read_text()
    assert table == result["table"] and "| ids-edit |" in table and "| dds-edit |" in table
    assert (
        "sphere-blue: CLIP text (↑)" in table and "sphere-blue: depth change (↓)" in table and "NOT meaningful" in table
    )
    means = json.loads((tmp_path / "outputs" / "comparison.json").read_text())["means"]["sphere-blue"]
    for method in ("ids-edit", "dds-edit"):
        assert means[method]["depth_change"] is not None and means[method]["bg_psnr"] is not None
    again = run(cfg)  # every step is reused: same runs, same numbers
    assert again["table"] == result["table"] and again["runs"] == result["runs"]
    with pytest.raises(UserInputError, match="does not exist"):
        run(BatchConfig(presets=(PRESETS_DIR / "llff" / "fern-autumn.yaml",), data_root=tmp_path / "none"))
    with pytest.raises(UserInputError, match="--methods nerfacto"):
        run(BatchConfig(presets=cfg.presets, methods=("nerfacto",)))

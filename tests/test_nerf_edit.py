"""ids-edit end to end on CPU: toy scene -> ids-recon warm-up -> a few ids-edit steps with the tiny prior ->
checkpoint without the prior -> ns-render; plus registration, import cost and every bad input."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ids_nerf.nerf.runs import train_run


@pytest.fixture(scope="module")
def edited_run(toy_nerf_run: dict) -> dict:
    return toy_nerf_run


def test_exactly_max_num_iterations_steps_and_checkpoint(edited_run):
    steps = edited_run["edit_steps"]
    ckpts = sorted(edited_run["edit"].get_checkpoint_dir().glob("step-*.ckpt"))
    assert [p.name for p in ckpts] == [f"step-{steps - 1:09d}.ckpt"]  # source was saved at step 19
    progress = sorted((edited_run["edit"].get_base_dir() / "edit_progress").glob("*.png"))
    assert len(progress) == steps


def test_checkpoint_holds_only_the_scene(edited_run):
    src = torch.load(next(edited_run["recon"].get_checkpoint_dir().glob("*.ckpt")), map_location="cpu")
    dst = torch.load(next(edited_run["edit"].get_checkpoint_dir().glob("*.ckpt")), map_location="cpu")
    keys = set(dst["pipeline"])
    assert not any(w in k for k in keys for w in ("unet", "vae", "text_encoder", "prior"))
    assert keys == set(src["pipeline"])  # same nerfacto architecture, nothing added
    changed = [
        k for k in keys if k.startswith("_model.field.") and not torch.equal(src["pipeline"][k], dst["pipeline"][k])
    ]
    assert changed, "editing did not change the field"


def test_source_run_is_never_written(edited_run, snapshot):
    assert snapshot(edited_run["source_run"]) == edited_run["source_before"]
    saved = yaml.load((edited_run["edit"].get_base_dir() / "config.yml").read_text(), Loader=yaml.Loader)
    assert saved.pipeline.model.num_levels == 8  # the source run's model settings were adopted and saved


def test_ns_render_and_eval_setup_never_load_the_prior(edited_run, tmp_path):
    config_yml = edited_run["edit"].get_base_dir() / "config.yml"
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ns-render"),
            "dataset",
            "--load-config",
            str(config_yml),
            "--output-path",
            str(tmp_path / "renders"),
            "--split",
            "test",
            "--rendered-output-names",
            "rgb",
            "depth",
            "--image-format",
            "png",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((tmp_path / "renders").rglob("*.png"))) >= 2
    probe = (  # what ns-eval / ns-render / ns-viewer do: eval_setup, then the viewer walks the pipeline's attributes
        "import sys; from nerfstudio.utils.eval_utils import eval_setup; "
        "from nerfstudio.viewer.utils import parse_object; "
        "from nerfstudio.viewer.viewer_elements import ViewerElement; "
        f"_, p, _, _ = eval_setup(__import__('pathlib').Path({str(config_yml)!r}), test_mode='test'); "
        "print(sorted(n for n, _ in parse_object(p, ViewerElement, 'Custom'))); "
        "print('LOADED' if 'diffusers' in sys.modules else 'CLEAN')"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("CLEAN")
    # ns-viewer on a finished run: the run's method and prompts read-only, the before/after switch; no live controls
    shown = res.stdout.strip().splitlines()[-2]
    for name in ("edit_method", "edit_source_prompt", "edit_target_prompt", "edit_before_after"):
        assert name in shown, shown
    assert "edit_pause" not in shown and "edit_guidance_scale" not in shown


def _expect_exit(config, match: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train_run(config)
    assert info.value.code == 2
    assert match in capsys.readouterr().err.replace("\n", " ")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"load_dir": None, "data": None}, "needs a scene: pass --data"),
        ({"src_prompt": ""}, "src-prompt is empty"),
        ({"trg_prompt": " "}, "trg-prompt is empty"),
        ({"trg_prompt": "a red sphere on a checkered floor"}, "are identical"),
        ({"load_dir": "EMPTY"}, "contains no step-*.ckpt"),
        ({"data": "NO_FORMAT"}, "holds no known dataset"),
    ],
)
def test_bad_inputs_exit_before_models_load(edited_run, tmp_path, capsys, change, match):
    config = copy.deepcopy(edited_run["edit"])
    config.output_dir, config.timestamp = tmp_path, "bad"
    g = config.pipeline.guidance
    g.prior.model = "/nonexistent/prior"  # would fail loudly if anything tried to load it
    if "load_dir" in change:
        config.load_dir = None if change["load_dir"] is None else tmp_path
    if change.get("data") == "NO_FORMAT":
        (tmp_path / "photos").mkdir()
        config.data = config.pipeline.datamanager.data = tmp_path / "photos"
    elif "data" in change:
        config.data = config.pipeline.datamanager.data = None
    for key in ("src_prompt", "trg_prompt"):
        if key in change:
            setattr(g, key, change[key])
    _expect_exit(config, match, capsys)


def test_checkpoint_of_another_method_is_rejected(edited_run, tmp_path, capsys):
    from nerfstudio.configs.method_configs import method_configs

    other = copy.deepcopy(method_configs["vanilla-nerf"])
    run = tmp_path / "vanilla"
    (run / "nerfstudio_models").mkdir(parents=True)
    (run / "config.yml").write_text(yaml.dump(other))
    torch.save({"step": 1, "pipeline": {}}, run / "nerfstudio_models" / "step-000000001.ckpt")
    config = copy.deepcopy(edited_run["edit"])
    config.output_dir, config.timestamp, config.load_dir = tmp_path / "out", "x", run / "nerfstudio_models"
    _expect_exit(config, "vanilla-nerf", capsys)


def test_methods_registered_and_entry_module_is_cheap():
    probe = (
        "import sys; import ids_nerf.method_configs as m; "
        "print(sorted(k for k in ('diffusers', 'transformers') if k in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("[]")
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    for name in ("ids-edit", "pds-fpr-edit", "dds-edit", "cds-edit", "pds-edit", "sds-edit", "ids-recon"):
        assert name in methods and descriptions[name]
    assert methods["ids-edit"].pipeline.guidance.fpr.enabled
    assert methods["ids-edit"].pipeline.guidance.score == "dds"
    assert not methods["dds-edit"].pipeline.guidance.fpr.enabled
    assert methods["pds-fpr-edit"].pipeline.guidance.score == "pds"


def test_viewer_controls_change_the_live_guidance():
    from ids_nerf.nerf.controls import EditControls
    from ids_nerf.nerf.pipeline import NerfGuidanceConfig

    g = NerfGuidanceConfig(score="dds", src_prompt="a", trg_prompt="b")
    controls = EditControls(g, live=True)
    elements = controls.elements()
    live = {"edit_status", "edit_target_prompt", "edit_guidance_scale", "edit_fpr", "edit_pause", "edit_before_after"}
    live |= {"edit_region_from_crop", "edit_region_clear"}
    assert set(elements) == live | {"edit_before_after_status"}

    class _Stub:  # what a viewer element hands its callback
        def __init__(self, value):
            self.value = value

    controls._on_prompt(_Stub("c"))
    controls._on_scale(_Stub(12.5))
    controls._on_fpr(_Stub(True))
    assert controls.target_prompt == "c" and g.effective_guidance_scale() == 12.5 and g.fpr.enabled and g.name == "ids"

    class _Trainer:
        training_state = "training"

    trainer = _Trainer()
    controls.attach_trainer(trainer)
    controls._on_pause(_Stub(True))
    assert trainer.training_state == "paused"
    controls._on_pause(_Stub(False))
    assert trainer.training_state == "training"


def test_chunked_two_pass_backprop_is_exact(edited_run):
    """edit_step's two-pass path (no-grad render, image gradient, chunk-by-chunk re-render) accumulates the same
    parameter gradients as rendering every chunk with grad and backpropagating once."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ids_nerf.scenes import nerfacto as render
    from ids_nerf.scenes.base import view_camera

    _, pipe, _, _ = eval_setup(edited_run["edit"].get_base_dir() / "config.yml", test_mode="val")
    pipe.train()
    g = pipe.config.guidance
    pipe.config.render.chunk_size, pipe.config.log_every, pipe.config.render.downscale = 1000, 0, 1
    g.proposal_loss_mult = 1.0
    params = [p for group in pipe.get_param_groups().values() for p in group]

    pipe.reset_random_streams()
    pipe.zero_grad(set_to_none=True)
    pipe.edit_step(0)
    two_pass = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    pipe.reset_random_streams()
    pipe.zero_grad(set_to_none=True)
    index = pipe._view_index(0)
    height, width = pipe._view_size(index)
    camera = view_camera(pipe.datamanager.train_dataset.cameras, index, height, width)
    rays = render.view_rays(camera, index, pipe.device)
    assert len(rays) > pipe.config.render.chunk_size  # the two-pass path was taken above
    with render.seeded_sampling(pipe.derived_seed(2), pipe.device), torch.enable_grad():
        outs = [pipe.model(rays[s : s + 1000]) for s in range(0, len(rays), 1000)]
        rgb = torch.cat([o["rgb"] for o in outs]).reshape(height, width, 3)
        loss, _ = pipe._guidance_loss(rgb, index, height, width)
        prop = sum(render.proposal_loss(o, 1.0) * len(o["rgb"]) / len(rays) for o in outs)
        (loss + prop).backward()
    direct = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    assert max(float(d.abs().max()) for d in direct) > 0
    for a, b in zip(two_pass, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)

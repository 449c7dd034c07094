"""ns-train <method>-edit without --load-dir (the newest finished reconstruction of --data, or one trained first) and
interrupted edits that resume (step count, optimizers, schedulers and random streams)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from resume_helpers import resume, run_whole_and_cut

from ids_nerf.nerf.resume import load_edit_state
from ids_nerf.nerf.runs import find_reconstruction, train_run


def _edit_without_load_dir(toy_nerf_run: dict, outputs, steps: int = 2):
    config = copy.deepcopy(toy_nerf_run["edit"])
    config.load_dir, config.output_dir, config.timestamp = None, outputs, "edit"
    config.max_num_iterations = config.steps_per_save = steps
    return config


def test_newest_finished_reconstruction_of_the_data_is_edited(toy_nerf_run, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    source = toy_nerf_run["source_run"]
    older, newer = outputs / "toy" / "ids-recon" / "older", outputs / "toy" / "ids-recon" / "newer"
    shutil.copytree(source, older)
    shutil.copytree(source, newer)
    (newer / "nerfstudio_models" / "step-000000019.ckpt").touch()  # written last
    unfinished = outputs / "toy" / "ids-recon" / "unfinished"
    shutil.copytree(source, unfinished)
    (unfinished / "nerfstudio_models" / "step-000000019.ckpt").rename(unfinished / "nerfstudio_models" / "x")
    found = find_reconstruction(outputs, toy_nerf_run["data"])
    assert found is not None and found.run == newer and found.others == 1
    assert find_reconstruction(outputs, tmp_path) is None  # another data folder
    config = _edit_without_load_dir(toy_nerf_run, outputs)
    train_run(config)
    out = " ".join(capsys.readouterr().out.split())
    assert f"Editing the reconstruction {newer} (newest of 2)" in out and "--load-dir" in out
    assert (config.get_checkpoint_dir() / "step-000000001.ckpt").is_file()


def test_without_any_reconstruction_one_is_trained_first(toy_nerf_run, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    config = _edit_without_load_dir(toy_nerf_run, outputs, steps=1)
    config.recon_steps = 3
    train_run(config)
    out = " ".join(capsys.readouterr().out.split())
    assert "reconstructing it first (3 ids-recon steps, --recon-steps)" in out
    recon = find_reconstruction(outputs, toy_nerf_run["data"])
    assert recon is not None and recon.checkpoint.name == "step-000000002.ckpt"  # kept as the source run
    assert (config.get_checkpoint_dir() / "step-000000000.ckpt").is_file()
    assert yaml_load(config.get_base_dir() / "config.yml").load_dir == recon.checkpoint.parent


def yaml_load(path):
    import yaml

    return yaml.load(path.read_text(), Loader=yaml.Loader)


def _states(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture
def one_thread():
    """One torch CPU thread: with more, the CPU hash grid's backward sums in a nondeterministic order, so two
    identical runs differ in the last bits (an uninterrupted run against itself too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_interrupted_edit_resumes_bit_equal(toy_nerf_run, tmp_path, monkeypatch, capsys, one_thread):
    """4 steps in one go vs. killed in step 3 (checkpoint of step 2) and resumed with only --load-dir: the same
    final checkpoint, bit for bit."""
    base = copy.deepcopy(toy_nerf_run["edit"])
    base.output_dir, base.max_num_iterations, base.steps_per_save = tmp_path, 4, 2
    base.pipeline.render.view_repeat = 1
    whole, cut = run_whole_and_cut(base, monkeypatch, stop_in=3)
    models = cut.get_checkpoint_dir()
    assert sorted(p.name for p in models.glob("step-*.ckpt")) == ["step-000000002.ckpt"]
    assert load_edit_state(models / "step-000000002.ckpt")["step"] == 2

    capsys.readouterr()
    resumed = resume(toy_nerf_run["edit"], tmp_path, models)  # only --load-dir: the rest comes from the edit
    out = " ".join(capsys.readouterr().out.split())
    assert "Resuming the edit" in out and "at step 3 of 4" in out and "random streams restored" in out
    final = sorted(p.name for p in resumed.get_checkpoint_dir().glob("step-*.ckpt"))
    assert final == ["step-000000003.ckpt"]
    a = _states(whole.get_checkpoint_dir() / "step-000000003.ckpt")
    b = _states(resumed.get_checkpoint_dir() / "step-000000003.ckpt")
    assert a["step"] == b["step"] == 3
    for k, v in a["pipeline"].items():
        assert torch.equal(v, b["pipeline"][k]), k
    assert a["schedulers"] == b["schedulers"]

    # editing the edited scene anew is named differently; other prompts without it are refused
    anew = copy.deepcopy(toy_nerf_run["edit"])
    anew.output_dir, anew.timestamp, anew.load_dir = tmp_path, "other", models
    anew.pipeline.guidance.trg_prompt = "a green sphere on a checkered floor"
    with pytest.raises(SystemExit) as info:
        train_run(anew)
    assert info.value.code == 2 and "--edit-anew" in capsys.readouterr().err
    assert not anew.get_base_dir().exists()
    anew.edit_anew, anew.max_num_iterations = True, 1
    train_run(anew)
    assert "anew (--edit-anew)" in " ".join(capsys.readouterr().out.split())
    assert (anew.get_checkpoint_dir() / "step-000000000.ckpt").is_file()


def test_known_third_party_warnings_are_filtered_and_ours_stay():
    import warnings

    from ids_nerf.quiet import quiet_third_party_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        for module, message, category in (
            (
                "nerfstudio.cameras.cameras",
                "Using a non-tuple sequence for multidimensional indexing is deprecated",
                UserWarning,
            ),
            (
                "nerfstudio.engine.trainer",
                "`torch.cuda.amp.GradScaler(args...)` is deprecated. Please use ...",
                FutureWarning,
            ),
            (
                "ids_nerf.nerf.pipeline",
                "Using a non-tuple sequence for multidimensional indexing is deprecated",
                UserWarning,
            ),
        ):
            warnings.warn_explicit(
                message, category, filename=module.replace(".", "/") + ".py", lineno=1, module=module
            )
    assert [str(w.message)[:10] for w in caught] == ["Using a no"] and caught[0].filename.startswith("ids_nerf")


def test_nerfacto_never_downloads_lpips_weights(tmp_path, monkeypatch):
    """Without cached AlexNet weights the model builds without LPIPS and without touching the network."""
    import urllib.request

    from nerfstudio.data.scene_box import SceneBox

    from ids_nerf.scenes import base as model_module
    from ids_nerf.scenes.cpu_sizes import cpu_friendly_nerfacto
    from ids_nerf.scenes.nerfacto import IDSNerfactoModelConfig

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setitem(model_module._said, "lpips", False)
    config = IDSNerfactoModelConfig()
    cpu_friendly_nerfacto(config)
    with pytest.warns(UserWarning, match="LPIPS metric off.*no download is attempted"):
        model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=2)
    assert model.lpips is None and model.psnr is not None


def test_viewer_before_after_renders_the_frozen_source(toy_nerf_run):
    """ns-viewer's pipeline (eval_setup, test mode): read-only panel; the before/after switch loads the source
    checkpoint, adds source_rgb / source_depth / depth_change outputs, and nothing of it reaches the state dict."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ids_nerf.nerf.runs import read_run_config

    edit_yml = toy_nerf_run["edit"].get_base_dir() / "config.yml"
    assert read_run_config(edit_yml).pipeline.source_checkpoint.name == "step-000000019.ckpt"
    _, pipeline, _, _ = eval_setup(edit_yml, test_mode="test")
    assert pipeline.edit_target_prompt.disabled and not hasattr(pipeline, "edit_pause")
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    plain = pipeline.model.get_outputs_for_camera(camera)
    assert "source_rgb" not in plain
    message = pipeline.show_source(True)
    assert message.startswith("source scene shown (") and "MB of weights" in message
    both = pipeline.model.get_outputs_for_camera(camera)
    torch.testing.assert_close(both["rgb"], plain["rgb"])
    _, recon, _, _ = eval_setup(toy_nerf_run["recon"].get_base_dir() / "config.yml", test_mode="test")
    torch.testing.assert_close(both["source_rgb"], recon.model.get_outputs_for_camera(camera)["rgb"])
    torch.testing.assert_close(both["depth_change"], (both["depth"] - both["source_depth"]).abs())
    assert not any("source" in k for k in pipeline.state_dict())
    assert pipeline.show_source(False) == "source scene hidden" and pipeline.model.source_model is None


def test_control_changes_are_acknowledged(toy_nerf_run, tmp_path):
    from ids_nerf.nerf.controls import EditControls

    guidance = copy.deepcopy(toy_nerf_run["edit"].pipeline.guidance)
    controls = EditControls(guidance, live=True, method="ids")
    elements = controls.elements()
    assert {"edit_status", "edit_pause", "edit_guidance_scale", "edit_before_after"} <= set(elements)
    trainer = type("T", (), {"step": 120, "base_dir": tmp_path, "edit_steps_total": 3000})()
    controls.attach_trainer(trainer)
    assert controls.step_done(119, 3000) == "step 120 of 3000 (2880 left); region: whole scene"
    elements["edit_guidance_scale"].value = 12.5
    controls._on_scale(elements["edit_guidance_scale"])
    elements["edit_target_prompt"].value = "a green sphere"
    controls._on_prompt(elements["edit_target_prompt"])
    assert guidance.guidance_scale == 12.5 and controls.target_prompt == "a green sphere"
    lines = (tmp_path / "edit_changes.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 120, "field": "guidance_scale", "value": 12.5},
        {"step": 120, "field": "target_prompt", "value": "a green sphere"},
    ]
    assert (
        controls.step_done(120, 3000)
        == "step 121 of 3000 (2879 left); region: whole scene; target_prompt = 'a green sphere' at step 120"
    )

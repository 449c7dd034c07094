"""Gaussian-splat editing end to end on CPU: toy scene -> ids-splat-recon (CPU rasterizer) -> ids-splat-edit with the
tiny prior; loading (optimizers hold the loaded Gaussians), culling, every registered method, resume, viewer,
ns-render / ns-export, ids-eval, the one-command flow and wrong-scene-kind refusals."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from resume_helpers import resume, run_whole_and_cut

from ids_nerf.nerf.runs import train_run
from ids_nerf.scenes.splat import GAUSSIAN_GROUPS, EditCullConfig, cull_gaussians

EDITED = ("means", "features_dc", "opacities")
"""Groups every editing step must move (the guidance gradient reaches positions, colours and opacities)."""


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _last_ckpt(config) -> Path:
    return sorted(config.get_checkpoint_dir().glob("step-*.ckpt"))[-1]


def _gaussians(state: dict) -> dict[str, torch.Tensor]:
    return {name: state["pipeline"][f"_model.gauss_params.{name}"] for name in GAUSSIAN_GROUPS}


def test_edit_run_holds_only_the_scene_and_the_source_run_is_untouched(toy_splat_run, snapshot):
    steps = toy_splat_run["edit_steps"]
    edit = toy_splat_run["edit"]
    assert [p.name for p in edit.get_checkpoint_dir().glob("step-*.ckpt")] == [f"step-{steps - 1:09d}.ckpt"]
    assert len(list((edit.get_base_dir() / "edit_progress").glob("*.png"))) == steps
    keys = set(_ckpt(_last_ckpt(edit))["pipeline"])
    assert not any(w in k for k in keys for w in ("unet", "vae", "text_encoder", "prior"))
    assert keys == set(_ckpt(_last_ckpt(toy_splat_run["recon"]))["pipeline"])  # splatfacto's keys, nothing added
    assert snapshot(toy_splat_run["source_run"]) == toy_splat_run["source_before"]


def _trainer(toy_splat_run: dict, out: Path, steps: int = 2):
    config = copy.deepcopy(toy_splat_run["edit"])
    config.output_dir, config.timestamp, config.max_num_iterations = out, "t", steps
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def test_loading_gives_the_optimizers_the_loaded_gaussians(toy_splat_run, tmp_path):
    """nerfstudio 1.1.5 builds the optimizers before it loads a checkpoint, and splatfacto's load_state_dict replaces
    every Gaussian tensor (the checkpoint's count differs from a fresh model's): the optimizers keep the discarded
    tensors and an edit changes nothing. IDSEditTrainer builds them after loading."""
    from nerfstudio.engine.optimizers import Optimizers

    trainer = _trainer(toy_splat_run, tmp_path)
    model = trainer.pipeline.model
    source = _gaussians(_ckpt(toy_splat_run["edit"].pipeline.source_checkpoint))
    assert model.num_points == len(source["means"])
    for name in GAUSSIAN_GROUPS:
        assert trainer.optimizers.optimizers[name].param_groups[0]["params"][0] is model.gauss_params[name], name
        assert trainer.optimizers.parameters[name][0] is model.gauss_params[name]
    # the stock order (optimizers first, then the checkpoint) is what the test guards against: it does go stale
    stale = Optimizers(copy.deepcopy(trainer.config.optimizers), trainer.pipeline.get_param_groups())
    trainer.pipeline.load_pipeline(_ckpt(toy_splat_run["edit"].pipeline.source_checkpoint)["pipeline"], 0)
    assert stale.optimizers["means"].param_groups[0]["params"][0] is not trainer.pipeline.model.gauss_params["means"]
    trainer = _trainer(toy_splat_run, tmp_path / "again")
    before = {n: p.detach().clone() for n, p in trainer.pipeline.model.gauss_params.items()}
    trainer.train_iteration(0)
    after = trainer.pipeline.model.gauss_params
    for name in EDITED:
        assert not torch.equal(before[name], after[name]), f"one editing step left {name} unchanged"


def test_cull_updates_parameters_and_optimizer_state_together(toy_splat_run, tmp_path):
    trainer = _trainer(toy_splat_run, tmp_path)
    model, optimizers = trainer.pipeline.model, trainer.optimizers
    trainer.train_iteration(0)  # Adam has state now
    n = model.num_points
    with torch.no_grad():
        model.gauss_params["opacities"][:10] = -20.0  # opacity ~2e-9: invisible
        model.gauss_params["scales"][10:15] = float(np.log(10.0))  # 10 scene units: huge
    kept = {name: p.detach()[15:].clone() for name, p in model.gauss_params.items()}
    assert cull_gaussians(model, optimizers, EditCullConfig()) == 15
    assert model.num_points == n - 15
    for name in GAUSSIAN_GROUPS:
        param = model.gauss_params[name]
        assert torch.equal(param.detach(), kept[name]), name
        optimizer = optimizers.optimizers[name]
        assert optimizer.param_groups[0]["params"][0] is param and optimizers.parameters[name][0] is param
        state = optimizer.state[param]
        assert state["exp_avg"].shape == param.shape and state["exp_avg_sq"].shape == param.shape
    trainer.train_iteration(1)  # the next step runs on the culled scene
    assert cull_gaussians(model, optimizers, EditCullConfig(alpha_thresh=0.0, scale_thresh=1e9)) == 0


def _configure(pipeline) -> None:
    pipeline.render.resolution, pipeline.log_every = 64, 0


@pytest.mark.parametrize(
    "method",
    ["ids-splat-edit", "dds-splat-edit", "cds-splat-edit", "pds-splat-edit", "sds-splat-edit", "pds-fpr-splat-edit"],
)
def test_every_registered_method_edits_a_splat_scene(toy_splat_run, tiny_prior, method):
    from ids_nerf.nerf.standalone import build_edit

    def configure(pipeline) -> None:
        _configure(pipeline)
        pipeline.guidance.src_prompt = toy_splat_run["edit"].pipeline.guidance.src_prompt
        pipeline.guidance.trg_prompt = toy_splat_run["edit"].pipeline.guidance.trg_prompt

    run = build_edit(
        method,
        toy_splat_run["data"],
        "cpu",
        load_dir=toy_splat_run["recon"].get_checkpoint_dir(),
        prior=tiny_prior,
        guidance=configure,
    )
    model = run.pipeline.model
    assert type(model).__name__ == "IDSSplatModel" and run.pipeline.method_name() == method.removesuffix("-splat-edit")
    before = {n: p.detach().clone() for n, p in model.gauss_params.items()}
    loss_dict, metrics = run.step(0)
    assert torch.isfinite(loss_dict["guidance_loss"]) and metrics["image_grad_norm"] > 0
    for name in EDITED:
        assert not torch.equal(before[name], model.gauss_params[name]), name


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_interrupted_splat_edit_resumes_bit_equal(toy_splat_run, tmp_path, monkeypatch, capsys, one_thread):
    """4 steps (culling every 2) in one go vs killed in step 3 and resumed with only --load-dir: the same final
    checkpoint, bit for bit (Gaussian count, parameters, optimizer state)."""
    base = copy.deepcopy(toy_splat_run["edit"])
    base.output_dir, base.max_num_iterations, base.steps_per_save = tmp_path, 4, 2
    base.pipeline.model.edit_cull = EditCullConfig(every=2, alpha_thresh=0.2)  # culls some Gaussians on the way
    whole, cut = run_whole_and_cut(base, monkeypatch, stop_in=3)
    capsys.readouterr()
    resumed = resume(toy_splat_run["edit"], tmp_path, cut.get_checkpoint_dir())
    assert "at step 3 of 4" in " ".join(capsys.readouterr().out.split())
    a, b = _ckpt(_last_ckpt(whole)), _ckpt(_last_ckpt(resumed))
    source = _gaussians(_ckpt(toy_splat_run["edit"].pipeline.source_checkpoint))
    assert a["step"] == b["step"] == 3 and len(_gaussians(a)["means"]) < len(source["means"])  # it did cull
    for k, v in a["pipeline"].items():
        assert torch.equal(v, b["pipeline"][k]), k
    for name, opt in a["optimizers"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt["state"][0][key], b["optimizers"][name]["state"][0][key]), (name, key)


def _ns(command: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / command), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )


def _read_ply(path: Path) -> dict[str, np.ndarray]:
    """The vertex properties of a binary little-endian PLY of float properties (ns-export gaussian-splat's)."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode().splitlines()
    assert "format binary_little_endian 1.0" in header
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    names = [line.split()[2] for line in header if line.startswith("property float")]
    data = np.frombuffer(raw[end:], dtype="<f4", count=count * len(names)).reshape(count, len(names))
    return {name: data[:, i] for i, name in enumerate(names)}


def test_ns_export_gaussian_splat_and_ns_render(toy_splat_run, tmp_path):
    edit_yml = toy_splat_run["edit"].get_base_dir() / "config.yml"
    recon_yml = toy_splat_run["recon"].get_base_dir() / "config.yml"
    plys = {}
    for name, config in (("edit", edit_yml), ("source", recon_yml)):
        res = _ns("ns-export", "gaussian-splat", "--load-config", str(config), "--output-dir", str(tmp_path / name))
        assert res.returncode == 0, res.stderr[-3000:]
        plys[name] = _read_ply(tmp_path / name / "splat.ply")
    edit, source = plys["edit"], plys["source"]
    assert {"x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0"} <= set(edit)
    n = len(_gaussians(_ckpt(_last_ckpt(toy_splat_run["edit"])))["means"])
    assert len(edit["x"]) <= n and len(edit["x"]) > 0  # ns-export drops non-finite Gaussians only
    common = min(len(edit["f_dc_0"]), len(source["f_dc_0"]))
    assert not np.array_equal(edit["f_dc_0"][:common], source["f_dc_0"][:common])
    res = _ns(
        "ns-render",
        "dataset",
        "--load-config",
        str(edit_yml),
        "--output-path",
        str(tmp_path / "renders"),
        "--split",
        "test",
        "--rendered-output-names",
        "rgb",
        "depth",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "renders").rglob("*.jpg")) + list((tmp_path / "renders").rglob("*.png"))) >= 2


def test_viewer_panel_and_before_after_on_a_splat_edit(toy_splat_run):
    """What ns-viewer does (eval_setup): no diffusion prior, the read-only panel, and the before/after switch loads
    the frozen source splat (its own Gaussian count) next to the edit."""
    from nerfstudio.utils.eval_utils import eval_setup

    edit_yml = toy_splat_run["edit"].get_base_dir() / "config.yml"
    probe = (
        "import sys; from pathlib import Path; from nerfstudio.utils.eval_utils import eval_setup; "
        f"_, p, _, _ = eval_setup(Path({str(edit_yml)!r}), test_mode='test'); "
        "print('LOADED' if 'diffusers' in sys.modules else 'CLEAN')"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.strip().endswith("CLEAN"), res.stderr[-2000:]
    _, pipeline, _, _ = eval_setup(edit_yml, test_mode="test")
    assert pipeline.edit_method.value == "ids" and pipeline.edit_target_prompt.disabled
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    plain = pipeline.model.get_outputs_for_camera(camera)
    assert pipeline.show_source(True).startswith("source scene shown (")
    both = pipeline.model.get_outputs_for_camera(camera)
    torch.testing.assert_close(both["rgb"], plain["rgb"])
    _, recon, _, _ = eval_setup(toy_splat_run["recon"].get_base_dir() / "config.yml", test_mode="test")
    torch.testing.assert_close(both["source_rgb"], recon.model.get_outputs_for_camera(camera)["rgb"])
    assert pipeline.model.source_model.num_points == recon.model.num_points
    assert not torch.equal(both["rgb"], both["source_rgb"])
    assert not any("source" in k for k in pipeline.state_dict())


def test_ids_eval_render_scores_a_splat_edit(toy_splat_run, tmp_path):
    import json

    from ids_nerf.eval.cli import RenderOptions, evaluate

    g = toy_splat_run["edit"].pipeline.guidance
    options = RenderOptions(
        load_config=toy_splat_run["edit"].get_base_dir() / "config.yml",
        source_config=toy_splat_run["recon"].get_base_dir() / "config.yml",
        src_prompt=g.src_prompt,
        trg_prompt=g.trg_prompt,
        output_dir=tmp_path / "eval",
        random_weights=True,
        video=True,
        orbit_keyframes=3,
        orbit_steps=2,
        device="cpu",
    )
    evaluate(options)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("bg_psnr", "depth_change", "clip_text"):
        assert metrics["means"][key] is not None, key
    assert (tmp_path / "eval" / "orbit.mp4").stat().st_size > 0


def test_one_command_edits_the_newest_splat_reconstruction_or_trains_one(toy_splat_run, toy_nerf_run, tmp_path, capsys):
    """Without --load-dir: the newest finished splat reconstruction of --data (a nerfacto one of the same data does
    not count), else ids-splat-recon first."""
    from ids_nerf.nerf.runs import find_reconstruction
    from ids_nerf.scenes.kinds import SCENE_KINDS

    outputs = tmp_path / "outputs"
    shutil.copytree(toy_splat_run["source_run"], outputs / "toy" / "ids-splat-recon" / "found")
    config = copy.deepcopy(toy_splat_run["edit"])
    config.load_dir, config.output_dir, config.timestamp, config.max_num_iterations = None, outputs, "e", 1
    train_run(config)
    assert "Editing the reconstruction" in " ".join(capsys.readouterr().out.split())
    assert config.get_checkpoint_dir().joinpath("step-000000000.ckpt").is_file()
    assert find_reconstruction(outputs, toy_splat_run["data"], SCENE_KINDS["nerfacto"]) is None

    fresh = copy.deepcopy(toy_splat_run["edit"])
    fresh.load_dir, fresh.output_dir, fresh.timestamp, fresh.max_num_iterations = None, tmp_path / "o2", "e", 1
    fresh.recon_steps = 3
    train_run(fresh)
    assert "reconstructing it first (3 ids-splat-recon steps" in " ".join(capsys.readouterr().out.split())
    found = find_reconstruction(tmp_path / "o2", toy_splat_run["data"], SCENE_KINDS["splat"])
    assert found is not None and found.run.parent.name == "ids-splat-recon"


def test_a_scene_of_the_other_kind_is_refused_naming_the_right_method(toy_splat_run, toy_nerf_run, tmp_path, capsys):
    for config, load_dir, hint in (
        (toy_splat_run["edit"], toy_nerf_run["recon"].get_checkpoint_dir(), "ns-train ids-edit"),
        (toy_nerf_run["edit"], toy_splat_run["recon"].get_checkpoint_dir(), "ns-train ids-splat-edit"),
    ):
        wrong = copy.deepcopy(config)
        wrong.output_dir, wrong.timestamp, wrong.load_dir = tmp_path, "wrong", load_dir
        with pytest.raises(SystemExit) as info:
            train_run(wrong)
        err = " ".join(capsys.readouterr().err.split())
        assert info.value.code == 2 and hint in err, err
        assert not wrong.get_base_dir().exists()

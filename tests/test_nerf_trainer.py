"""IDSEditTrainer: nerfstudio trainer options (gradient accumulation, gradient logging, mixed precision) and prior
errors under ns-train (one paragraph naming the ns-train flag, exit 2, nothing written)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nerfstudio.engine.trainer import GradScaler

from ids_nerf.nerf.runs import train_run
from ids_nerf.nerf.standalone import build_edit
from ids_nerf.nerf.trainer import IDSEditTrainer
from ids_nerf.scenes.cpu_sizes import cpu_friendly_nerfacto


def _bad_run(toy_nerf_run: dict, tmp_path: Path):
    config = copy.deepcopy(toy_nerf_run["edit"])
    config.output_dir, config.timestamp = tmp_path / "out", "bad"
    return config


def _expect_exit(config, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        train_run(config)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not config.get_base_dir().exists()  # nothing written: no run folder, no config.yml
    return " ".join(err.split())


def test_prior_not_in_the_cache_names_the_ns_train_flag(toy_nerf_run, tmp_path, capsys):
    config = _bad_run(toy_nerf_run, tmp_path)
    config.pipeline.guidance.prior.model = "CompVis/stable-diffusion-v1-4"  # offline (HF_HUB_OFFLINE=1), not cached
    err = _expect_exit(config, capsys)
    assert err.startswith("ns-train ids-edit: error:")
    assert "--pipeline.guidance.prior.model /path/to/folder" in err and " --prior " not in err


def test_float16_prior_on_cpu_names_the_ns_train_flag(toy_nerf_run, tmp_path, capsys):
    config = _bad_run(toy_nerf_run, tmp_path)
    config.pipeline.guidance.prior.dtype = "float16"
    err = _expect_exit(config, capsys)
    assert "--pipeline.guidance.prior.dtype float32" in err and " --dtype " not in err


def test_prior_that_fails_to_load_exits_before_anything_is_written(toy_nerf_run, tmp_path, capsys):
    """A folder that passes the pre-flight check (it has unet/) but holds no weights: the load fails in setup."""
    broken = tmp_path / "broken-prior"
    (broken / "unet").mkdir(parents=True)
    config = _bad_run(toy_nerf_run, tmp_path)
    config.pipeline.guidance.prior.model = str(broken)
    err = _expect_exit(config, capsys)
    assert "--pipeline.guidance.prior" in err


@pytest.mark.parametrize("flag", ["mixed_precision", "use_grad_scaler"])
def test_mixed_precision_is_refused_with_the_flag(toy_nerf_run, tmp_path, capsys, flag):
    config = _bad_run(toy_nerf_run, tmp_path)
    setattr(config, flag, True)
    err = _expect_exit(config, capsys)
    assert f"--{flag.replace('_', '-')} True is not supported" in err


def test_ns_train_cli_prints_one_paragraph(toy_nerf_run, tmp_path):
    """The real `ns-train ids-edit` command line, offline, with the default (uncached) prior."""
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ns-train"),
            "ids-edit",
            "--data",
            str(toy_nerf_run["data"]),
            "--load-dir",
            str(toy_nerf_run["recon"].get_checkpoint_dir()),
            "--output-dir",
            str(tmp_path / "out"),
            "--machine.device-type",
            "cpu",
            "--vis",
            "tensorboard",
            "--pipeline.guidance.src-prompt",
            "a red sphere",
            "--pipeline.guidance.trg-prompt",
            "a blue sphere",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "ns-train ids-edit: error:" in out.stderr and "--pipeline.guidance.prior" in out.stderr
    assert not (tmp_path / "out").exists()


def test_gradient_accumulation_and_gradient_logging(tmp_path, tiny_prior):
    """--gradient-accumulation-steps fields 2: the fields step every second editing step, the proposal networks
    every step; --log-gradients reports per-parameter and total gradient norms."""
    from ids_nerf.toy.datasets import write_llff
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    write_llff(
        SceneSpec(objects=[ObjectSpec(shape="cube", color="red", center=(0.0, 0.0, 0.4), size=0.4)]),
        tmp_path,
        n_views=3,
        size=(64, 48),
    )

    def guidance(pipeline) -> None:
        pipeline.guidance.src_prompt, pipeline.guidance.trg_prompt, pipeline.log_every = "a red cube", "a blue cube", 0

    run = build_edit("dds-edit", tmp_path, "cpu", model=cpu_friendly_nerfacto, prior=tiny_prior, guidance=guidance)
    trainer = object.__new__(IDSEditTrainer)  # the attributes train_iteration uses, as Trainer.setup() sets them
    trainer.pipeline, trainer.optimizers = run.pipeline, run.optimizers
    trainer.gradient_accumulation_steps = {"fields": 2, "proposal_networks": 1}
    trainer.grad_scaler = GradScaler(enabled=False)
    trainer.config = type("Cfg", (), {"log_gradients": True})()
    groups = run.pipeline.get_param_groups()

    def snapshot() -> dict[str, list[torch.Tensor]]:
        return {name: [p.detach().clone() for p in params] for name, params in groups.items()}

    def changed(before, name) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(before[name], groups[name], strict=True))

    before = snapshot()
    _, _, metrics = trainer.train_iteration(0)  # step 0 < 10: the proposal networks update
    assert not changed(before, "fields") and changed(before, "proposal_networks")
    assert metrics["Gradients/Total"] > 0 and any(k.startswith("Gradients/field.") for k in metrics)
    fields_grad = [p.grad.clone() for p in groups["fields"] if p.grad is not None]
    trainer.train_iteration(1)
    assert changed(before, "fields")
    accumulated = [p.grad for p in groups["fields"] if p.grad is not None]
    assert any(not torch.equal(a, b) for a, b in zip(fields_grad, accumulated, strict=True))  # summed over 2 steps

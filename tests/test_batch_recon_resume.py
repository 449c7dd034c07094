"""ids-batch: a reconstruction whose worker died mid-way continues from its last complete checkpoint when its task
runs again (Ray's retry, or ids-batch started again), instead of from step 0; a checkpoint cut short by the kill is
passed over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ids_nerf.batch.config import BatchConfig
from ids_nerf.batch.tasks import ReconSpec, TaskEnv, reconstruct_task
from ids_nerf.nerf.recon import ReconTrainer
from ids_nerf.nerf.runs import find_reconstruction, read_run_config
from ids_nerf.scenes.kinds import SCENE_KINDS
from ids_nerf.toy.datasets import write_blender
from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec


@pytest.mark.parametrize(("kind", "template"), [("nerfacto", "ids-edit"), ("splat", "ids-splat-edit")])
def test_a_killed_reconstruction_continues_from_its_last_checkpoint(tmp_path, monkeypatch, kind, template):
    data = tmp_path / "data" / "toy" / "sphere"
    scene = SceneSpec(objects=[ObjectSpec(shape="sphere", color="red", center=(0.0, 0.0, 0.5), size=0.5)])
    write_blender(scene, data, n_train=4, n_val=1, n_test=2, size=32, seed=0)
    cfg = BatchConfig(output_dir=tmp_path / "out", recon_steps=12, save_every=5, device="cpu", cpu_scenes=True)
    spec = ReconSpec(data=data, kind=kind, template=template, scene="toy/sphere")

    dying = ReconTrainer.train_iteration

    def train_iteration(self, step):
        if step == 8:
            raise RuntimeError("the worker died")
        return dying(self, step)

    with monkeypatch.context() as patch:
        patch.setattr(ReconTrainer, "train_iteration", train_iteration)
        first = reconstruct_task(cfg, spec, TaskEnv())
    assert first["status"] == "failed" and "the worker died" in first["reason"]
    models = Path(first["run"]) / "nerfstudio_models"
    assert sorted(p.name for p in models.glob("*.ckpt")) == ["step-000000005.ckpt"]
    (models / "step-000000007.ckpt").write_bytes(b"PK\x03\x04 cut short by the kill")  # never a complete one

    second = reconstruct_task(cfg, spec, TaskEnv())
    assert second["status"] == "ok" and second["run"] != first["run"], second
    assert second["first_step"] == 6
    task = json.loads((Path(second["run"]) / "batch_task.json").read_text())
    assert task["resumed_from"] == str(models / "step-000000005.ckpt") and task["first_step"] == 6
    saved = read_run_config(Path(second["config"]))
    assert (saved.load_step, saved.max_num_iterations) == (5, 6)  # steps 6..11 of 12
    assert (Path(second["run"]) / "nerfstudio_models" / "step-000000011.ckpt").is_file()
    found = find_reconstruction(cfg.output_dir, data, SCENE_KINDS[kind])
    assert found is not None and str(found.run) == second["run"]

    third = reconstruct_task(cfg, spec, TaskEnv())
    assert third["reused"] and third["run"] == second["run"]

"""nerfstudio method specifications of the plugin (entry points ``nerfstudio.method_configs``).

Imported by every ``ns-*`` command at start-up: it imports nerfstudio config classes only (no diffusers, no
transformers), registers the numpy globals that nerfstudio checkpoints need with torch >= 2.6 and filters the known
third-party warnings (:mod:`ids_nerf.quiet`).

All editing methods come from :func:`edit_method` applied to the method registry's NeRF methods
(:data:`ids_nerf.guidance.methods.NERF_METHODS`); they differ only in the guidance.
"""

from __future__ import annotations

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from ids_nerf.guidance.config import guidance_config
from ids_nerf.guidance.methods import NERF_METHODS, MethodSpec
from ids_nerf.nerf.checkpoints import register_safe_globals
from ids_nerf.nerf.dataparsers.auto import AutoDataParserConfig
from ids_nerf.nerf.model import IDSNerfactoModelConfig
from ids_nerf.nerf.pipeline import IDSEditPipelineConfig, NerfGuidanceConfig
from ids_nerf.nerf.trainer import IDSEditTrainerConfig
from ids_nerf.quiet import quiet_third_party_warnings

register_safe_globals()
quiet_third_party_warnings()

#: Default number of editing steps (the official PDS plugin runs 30,000; IDS converges much earlier on LLFF).
EDIT_STEPS = 3000


def _adam(lr: float, lr_final: float, max_steps: int) -> dict:
    return {
        "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr_final, max_steps=max_steps),
    }


def edit_method(spec: MethodSpec) -> MethodSpecification:
    """The ns-train method ``<name>-edit`` of a registered editing method: a pretrained nerfacto scene edited with
    that method's guidance."""
    guidance = guidance_config(spec.name)
    config = IDSEditTrainerConfig(
        method_name=spec.nerf_method,
        steps_per_eval_batch=1_000_000,
        steps_per_eval_image=500,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=500,
        max_num_iterations=EDIT_STEPS,
        mixed_precision=False,
        pipeline=IDSEditPipelineConfig(
            datamanager=VanillaDataManagerConfig(dataparser=AutoDataParserConfig()),
            model=IDSNerfactoModelConfig(eval_num_rays_per_chunk=1 << 15),
            guidance=NerfGuidanceConfig(score=guidance.score, fpr=guidance.fpr),
        ),
        optimizers={  # official PDS plugin: Adam 1e-2 decaying to 1e-3 over the editing run
            "proposal_networks": _adam(1e-2, 1e-3, EDIT_STEPS),
            "fields": _adam(1e-2, 1e-3, EDIT_STEPS),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )
    return MethodSpecification(
        config=config, description=f"{spec.description}: text-guided editing of a nerfacto scene."
    )


#: Every ns-train editing method (``ids-edit``, ``dds-edit``, ``cds-edit``, ...), from the method registry.
EDIT_METHODS: dict[str, MethodSpecification] = {name: edit_method(spec) for name, spec in NERF_METHODS.items()}


def __getattr__(name: str) -> MethodSpecification:
    """``ids_edit``, ``cds_edit``, ...: the entry points in pyproject.toml name the editing methods this way."""
    method = name.replace("_", "-")
    if method in EDIT_METHODS:
        return EDIT_METHODS[method]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ids_recon = MethodSpecification(
    config=TrainerConfig(
        method_name="ids-recon",
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=AutoDataParserConfig(), train_num_rays_per_batch=4096, eval_num_rays_per_batch=4096
            ),
            model=IDSNerfactoModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                average_init_density=0.01,
                camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
            ),
        ),
        optimizers={
            "proposal_networks": _adam(1e-2, 1e-4, 200000),
            "fields": _adam(1e-2, 1e-4, 200000),
            "camera_opt": _adam(1e-3, 1e-4, 5000),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="nerfacto reconstruction warm-up before editing: data format detected from the folder, works "
    "offline (LPIPS optional).",
)

"""nerfstudio method specifications of the plugin (entry points ``nerfstudio.method_configs``).

Imported by every ``ns-*`` command at start-up: it imports nerfstudio config classes only (no diffusers, no
transformers), registers the numpy globals that nerfstudio checkpoints need with torch >= 2.6 and filters the known
third-party warnings (:mod:`ids_nerf.quiet`).

All editing methods come from :func:`edit_method` applied to the method registry's NeRF methods times the scene
kinds (:func:`ids_nerf.scenes.kinds.editing_methods`): ``ids-edit`` / ``ids-splat-edit``, ``dds-edit`` /
``dds-splat-edit``, ...; they differ only in the guidance and the scene kind. The reconstruction warm-ups are
``ids-recon`` (nerfacto) and ``ids-splat-recon`` (splatfacto).
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from ids_nerf.guidance.config import guidance_config
from ids_nerf.guidance.methods import MethodSpec
from ids_nerf.nerf.checkpoints import register_safe_globals
from ids_nerf.nerf.edit_config import NerfGuidanceConfig
from ids_nerf.nerf.pipeline import IDSEditPipelineConfig
from ids_nerf.nerf.trainer import IDSEditTrainerConfig
from ids_nerf.quiet import quiet_third_party_warnings
from ids_nerf.scenes.kinds import SCENE_KINDS, SceneKind, editing_methods

register_safe_globals()
quiet_third_party_warnings()

#: Default number of editing steps (the official PDS plugin runs 30,000; IDS converges much earlier on LLFF).
EDIT_STEPS = 3000


def edit_method(spec: MethodSpec, kind: SceneKind) -> MethodSpecification:
    """The ns-train method ``<name>-<kind suffix>`` of a registered editing method: a pretrained scene of ``kind``
    edited with that method's guidance."""
    guidance = guidance_config(spec.name)
    config = IDSEditTrainerConfig(
        method_name=kind.edit_method(spec),
        steps_per_eval_batch=1_000_000,
        steps_per_eval_image=500,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=500,
        max_num_iterations=EDIT_STEPS,
        mixed_precision=False,
        pipeline=IDSEditPipelineConfig(
            datamanager=kind.datamanager(),
            model=kind.model_config(eval_num_rays_per_chunk=1 << 15),
            guidance=NerfGuidanceConfig(score=guidance.score, fpr=guidance.fpr),
        ),
        optimizers=kind.edit_optimizers(EDIT_STEPS),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )
    return MethodSpecification(config=config, description=f"{spec.description}: text-guided editing of a {kind.label}.")


#: Every ns-train editing method (``ids-edit``, ``ids-splat-edit``, ``dds-edit``, ...), from the method registry.
EDIT_METHODS: dict[str, MethodSpecification] = {
    name: edit_method(spec, kind) for name, (spec, kind) in editing_methods().items()
}

#: The reconstruction warm-ups an edit without a reconstruction runs first, by ns-train name.
RECON_METHODS: dict[str, MethodSpecification] = {
    "ids-recon": MethodSpecification(
        config=SCENE_KINDS["nerfacto"].recon(),
        description="nerfacto reconstruction warm-up before editing: data format detected from the folder, works "
        "offline (LPIPS optional).",
    ),
    "ids-splat-recon": MethodSpecification(
        config=SCENE_KINDS["splat"].recon(),
        description="splatfacto reconstruction warm-up before splat editing: data format detected from the folder "
        "(random initialisation without points), runs on CUDA (gsplat) or CPU, works offline (LPIPS optional).",
    ),
}


def __getattr__(name: str) -> MethodSpecification:
    """``ids_edit``, ``ids_splat_edit``, ``ids_recon``, ...: the entry points in pyproject.toml name the methods
    this way."""
    method = name.replace("_", "-")
    for methods in (EDIT_METHODS, RECON_METHODS):
        if method in methods:
            return methods[method]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

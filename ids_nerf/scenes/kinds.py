"""The scene types an edit can start from, and everything about them that is not rendering: their ns-train names,
reconstruction warm-ups, which finished runs count as reconstructions, how to recognise their checkpoints, and the
nerfstudio configs (data manager, model, optimizers) of their editing and reconstruction runs.

One entry per scene type in :data:`SCENE_KINDS`; the editing methods are the method registry's NeRF methods
(:data:`ids_nerf.guidance.methods.NERF_METHODS`) times these kinds (:func:`editing_methods`): ``ids-edit`` and
``ids-splat-edit``, ``dds-edit`` and ``dds-splat-edit``, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig, VanillaDataManagerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.models.nerfacto import NerfactoModelConfig
from nerfstudio.models.splatfacto import SplatfactoModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from ids_nerf.guidance.methods import NERF_METHODS, MethodSpec
from ids_nerf.nerf.dataparsers.auto import AutoDataParserConfig
from ids_nerf.nerf.recon import ReconTrainerConfig
from ids_nerf.scenes.nerfacto import IDSNerfactoModelConfig
from ids_nerf.scenes.splat import GAUSSIAN_GROUPS, IDSSplatModelConfig


def adam(lr: float, lr_final: float | None = None, max_steps: int = 30000, **scheduler: Any) -> dict:
    """An optimizer entry of a nerfstudio TrainerConfig: Adam (eps 1e-15, as nerfstudio's methods), with an
    exponential decay to ``lr_final`` over ``max_steps`` (None: constant)."""
    return {
        "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": None
        if lr_final is None
        else ExponentialDecaySchedulerConfig(lr_final=lr_final, max_steps=max_steps, **scheduler),
    }


def _nerfacto_edit_optimizers(steps: int) -> dict[str, dict]:
    # official PDS plugin: Adam 1e-2 decaying to 1e-3 over the editing run
    return {"proposal_networks": adam(1e-2, 1e-3, steps), "fields": adam(1e-2, 1e-3, steps)}


def _splat_edit_optimizers(steps: int) -> dict[str, dict]:
    """An edit starts from a finished reconstruction and runs a few hundred to a few thousand guidance steps, so the
    colours move ten times faster than in splatfacto's recipe (which grows them from seed colours over 30,000
    steps) and positions, scales and opacities five to ten times slower: appearance changes before the guidance's
    noise tears the geometry. Measured on the toy demo (150 ids-splat-edit steps, toy prior, red -> blue sphere):
    with splatfacto's rates (PDS's pds_splat uses them unchanged) the sphere turned transparent and dark, the
    detector found no blue object in any of 8 test views; with these, blue in 8 of 8; with colours at 0.05, blue
    too but the floor and sky speckled with colour noise."""
    return {
        "means": adam(1.6e-5, 1.6e-7, steps),
        "features_dc": adam(0.025),
        "features_rest": adam(0.025 / 20),
        "opacities": adam(0.01),
        "scales": adam(0.001),
        "quats": adam(0.001),
    }


def _splat_optimizers(steps: int) -> dict[str, dict]:
    # splatfacto's learning rates (reconstruction)
    return {
        "means": adam(1.6e-4, 1.6e-6, steps),
        "features_dc": adam(0.0025),
        "features_rest": adam(0.0025 / 20),
        "opacities": adam(0.05),
        "scales": adam(0.005),
        "quats": adam(0.001),
    }


@dataclass(frozen=True)
class SceneKind:
    """One scene type."""

    name: str
    """Short name (``nerfacto``, ``splat``)."""
    label: str
    """How messages name a scene of this kind."""
    method_suffix: str
    """ns-train editing methods are ``<method>-<suffix>`` (``ids-edit``, ``ids-splat-edit``)."""
    recon_method: str
    """The reconstruction warm-up that runs first when an edit finds no reconstruction."""
    source_methods: tuple[str, ...]
    """Methods whose finished runs are reconstructions of this kind (searched for by ``ns-train <edit>`` without
    --load-dir); nerfstudio names splatfacto-big runs ``splatfacto`` too."""
    source_model_config: type
    """The nerfstudio model config of a source run of this kind (stock runs included)."""
    model_config: type
    """Our editable model config of this kind (its fields are adopted from the source run's)."""
    checkpoint_keys: tuple[str, ...]
    """State-dict key prefixes every checkpoint of this kind holds."""
    train_hint: str
    """How a user trains a scene of this kind (for error messages)."""
    datamanager: Callable[[], DataManagerConfig]
    """The data manager of its editing and reconstruction runs."""
    edit_optimizers: Callable[[int], dict[str, dict]]
    """Optimizer entries of an edit of N steps."""
    recon: Callable[[], TrainerConfig]
    """The reconstruction warm-up's TrainerConfig."""

    def edit_method(self, spec: MethodSpec) -> str:
        """The ns-train name of ``spec`` on this scene kind."""
        return f"{spec.name}-{self.method_suffix}"

    def checkpoint_matches(self, state: dict[str, Any]) -> bool:
        """Whether a nerfstudio checkpoint (``{"pipeline": state dict, ...}``) holds a scene of this kind."""
        keys = state.get("pipeline", {}).keys()
        return all(any(k.startswith(prefix) for k in keys) for prefix in self.checkpoint_keys)


def _nerfacto_recon() -> TrainerConfig:
    return ReconTrainerConfig(
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
            "proposal_networks": adam(1e-2, 1e-4, 200000),
            "fields": adam(1e-2, 1e-4, 200000),
            "camera_opt": adam(1e-3, 1e-4, 5000),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


def _splat_datamanager() -> FullImageDatamanagerConfig:
    # images cached on the run's device (nerfstudio's "gpu" setting; its "cpu" setting pins memory, CUDA only)
    return FullImageDatamanagerConfig(dataparser=AutoDataParserConfig(load_3D_points=True), cache_images_type="uint8")


def _splat_recon() -> TrainerConfig:
    """splatfacto's own recipe (nerfstudio 1.1.5 ``splatfacto``), through the format-detecting dataparser (3D points
    when the data has them, else splatfacto's random initialisation) and on CUDA or CPU."""
    steps = 30000
    return ReconTrainerConfig(
        method_name="ids-splat-recon",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=steps,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(datamanager=_splat_datamanager(), model=IDSSplatModelConfig()),
        optimizers={
            **_splat_optimizers(steps),
            "camera_opt": adam(1e-4, 5e-7, steps, warmup_steps=1000, lr_pre_warmup=0),
            "bilateral_grid": adam(2e-3, 1e-4, steps, warmup_steps=1000, lr_pre_warmup=0),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


SCENE_KINDS: dict[str, SceneKind] = {
    "nerfacto": SceneKind(
        name="nerfacto",
        label="nerfacto scene",
        method_suffix="edit",
        recon_method="ids-recon",
        source_methods=("nerfacto", "nerfacto-big", "nerfacto-huge", "ids-recon"),
        source_model_config=NerfactoModelConfig,
        model_config=IDSNerfactoModelConfig,
        checkpoint_keys=("_model.field.", "_model.proposal_networks."),
        train_hint="`ns-train nerfacto --data <scene>` (or `ns-train ids-recon --data <scene>`)",
        datamanager=lambda: VanillaDataManagerConfig(dataparser=AutoDataParserConfig()),
        edit_optimizers=_nerfacto_edit_optimizers,
        recon=_nerfacto_recon,
    ),
    "splat": SceneKind(
        name="splat",
        label="Gaussian-splat (splatfacto) scene",
        method_suffix="splat-edit",
        recon_method="ids-splat-recon",
        source_methods=("splatfacto", "splatfacto-big", "ids-splat-recon"),
        source_model_config=SplatfactoModelConfig,
        model_config=IDSSplatModelConfig,
        checkpoint_keys=tuple(f"_model.gauss_params.{name}" for name in GAUSSIAN_GROUPS),
        train_hint="`ns-train splatfacto --data <scene>` (or `ns-train ids-splat-recon --data <scene>`)",
        datamanager=_splat_datamanager,
        edit_optimizers=_splat_edit_optimizers,
        recon=_splat_recon,
    ),
}
"""Every scene type, by name."""


def editing_methods() -> dict[str, tuple[MethodSpec, SceneKind]]:
    """Every ns-train editing method: ``{ns-train name: (method, scene kind)}``, NeRF methods first."""
    return {kind.edit_method(spec): (spec, kind) for kind in SCENE_KINDS.values() for spec in NERF_METHODS.values()}


def kind_of_model(model: ModelConfig) -> SceneKind | None:
    """The scene kind of a model config (ours or a stock nerfstudio one), or None for another model."""
    for kind in SCENE_KINDS.values():
        if isinstance(model, kind.source_model_config):
            return kind
    return None

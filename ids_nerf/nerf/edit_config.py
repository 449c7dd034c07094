"""Options of a scene edit that are not the scene's own: prompts, guidance, prior, loss weights (NerfGuidanceConfig)
and how a training view is rendered for the prior (EditRenderConfig). Shared by the editing pipeline, the viewer
controls and the trainer; imports no model code."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ids_nerf.guidance.config import GuidanceConfig
from ids_nerf.guidance.prior import PriorConfig, PriorFlags

#: How ``ns-train`` spells the prior options: error messages about the prior name these flags.
NERF_PRIOR_FLAGS = PriorFlags.nested("--pipeline.guidance.prior")


@dataclass
class NerfGuidanceConfig(GuidanceConfig):
    """Text prompts, score (+ FPR), loss weights and diffusion prior of a scene edit (NeRF or splat)."""

    preset: Path | None = None
    """Editing preset (a YAML file of configs/, e.g. configs/llff/leaves-autumn.yaml): fills the prompts, --data
    (<preset-data-root>/<scene>) and guidance settings that are not given on the command line."""
    preset_data_root: Path = Path("data")
    """Folder holding the preset scenes (data/llff/leaves, data/blender/lego, ...)."""
    src_prompt: str = ""
    """Prompt describing the original scene, e.g. "a photo of a fern"."""
    trg_prompt: str = ""
    """Prompt describing the edited scene, e.g. "a photo of a fern made of gold"."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """Diffusion prior: model (hub id, local diffusers folder, `toy`, `tiny`), device (`auto` = the scene's device;
    `cuda:1` puts it on a second GPU), dtype and VAE memory options."""
    loss_scale: float = 1.0
    """Scale of the guidance loss (z * grad).sum(); Adam makes the scene update nearly invariant to it."""
    anchor_weight: float = 0.0
    """Weight of an optional RGB anchoring loss mean((render - photo)^2) keeping the render near the photo."""
    proposal_loss_mult: float = 1.0
    """NeRF scenes: weight of nerfacto's interlevel loss during editing, so proposal networks follow edited geometry
    (splat scenes have no proposal networks and ignore it)."""
    cache_dir: Path | None = None
    """Folder of the source-side disk cache (FPR results per view, keyed by the prior, the view's photo, the source
    prompt, FPR and the seed; never by the target prompt): a second edit of the scene with another target prompt
    skips the source side. None (default): no cache. Used with the look-ahead (the default, automatic K) and with
    --pipeline.guidance.source.pool; not with --pipeline.guidance.source.lookahead 1."""

    def prior_config(self, scene_device: torch.device | str) -> PriorConfig:
        """The prior's options with `auto` device resolved to the scene's device."""
        return replace(self.prior, device=str(scene_device)) if self.prior.device == "auto" else self.prior


@dataclass
class EditRenderConfig:
    """How a training view is rendered for the prior each editing step."""

    resolution: int | None = None
    """Long side of the rendered view in pixels; None = the prior's resolution (512 for SD 1.x). The short side
    follows the view's aspect, rounded to the prior's size multiple."""
    chunk_size: int = 4096
    """NeRF scenes: rays rendered at once (memory knob): the differentiable render never holds more than one chunk's
    graph; a view with at most this many rays is rendered once, with grad. Splat scenes rasterize the whole view at
    once and ignore it."""
    downscale: int = 1
    """Render the view at 1/k of the prior's resolution and upsample it bilinearly before encoding (speed knob)."""
    view_repeat: int = 10
    """Editing steps spent on one training view before another is drawn (official PDS: 10)."""

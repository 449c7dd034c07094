"""IDSEditPipeline: text-guided editing of a pretrained scene (nerfacto or splatfacto) with the shared ScoreDistiller.

Each editing step: pick a training view (kept for ``view_repeat`` steps), render it at the prior's resolution
through the scene's seam (:class:`~ids_nerf.scenes.base.EditableScene`), encode it to a latent (target), take the
guidance gradient against the cached latent of that view's original photo (source), backpropagate through the VAE
encoder into the image, then push the image gradient into the scene (nerfacto: ray chunk by ray chunk; a splat:
through its one rasterization). Nothing here depends on the scene type.

The diffusion prior is built lazily on the first editing step and held outside the module tree: checkpoints hold
only the scene, and ``ns-render``/``ns-eval``/``ns-export``/``ns-viewer`` never load Stable Diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig, VanillaDataManagerConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import colormaps
from torch import Tensor

from ids_nerf.guidance.sizes import render_size
from ids_nerf.nerf.controls import EditControls
from ids_nerf.nerf.edit_config import NERF_PRIOR_FLAGS, EditRenderConfig, NerfGuidanceConfig
from ids_nerf.nerf.region import EditRegion, RegionConfig, region_image_gradient
from ids_nerf.profiling import phase
from ids_nerf.scenes.base import EditView, view_camera
from ids_nerf.scenes.nerfacto import IDSNerfactoModelConfig

__all__ = [
    "NERF_PRIOR_FLAGS",
    "EditRenderConfig",
    "IDSEditPipeline",
    "IDSEditPipelineConfig",
    "NerfGuidanceConfig",
    "RegionConfig",
]


@dataclass
class IDSEditPipelineConfig(VanillaPipelineConfig):
    """Pipeline editing a pretrained scene (nerfacto or splatfacto) with score distillation (IDS = DDS + FPR by
    default)."""

    _target: type = field(default_factory=lambda: IDSEditPipeline)
    datamanager: DataManagerConfig = field(default_factory=VanillaDataManagerConfig)
    """Data manager; its dataparser must describe the same scene (and frame) as the source checkpoint."""
    model: ModelConfig = field(default_factory=IDSNerfactoModelConfig)
    """Scene model (nerfacto or splatfacto); its settings are adopted from the source run's config.yml."""
    guidance: NerfGuidanceConfig = field(default_factory=NerfGuidanceConfig)
    """Editing guidance: prompts, score, FPR, prior."""
    render: EditRenderConfig = field(default_factory=EditRenderConfig)
    """Rendering of the edited view: resolution, ray chunks (NeRF), downscale, views."""
    region: RegionConfig = field(default_factory=RegionConfig)
    """Restrict the edit to a 3D box and/or per-view masks; outside it the scene stays the source scene (splat:
    Gaussians outside are frozen; NeRF: the guidance gradient is masked per ray and the render outside is anchored
    to the source scene's). None given: the whole scene is edited."""
    log_every: int = 50
    """Every N steps save a side-by-side (source photo | render | depth) under <run>/edit_progress and log it."""
    source_checkpoint: Path | None = None
    """The checkpoint the edit started from (set by the trainer, saved in config.yml): the viewer's before/after
    switch renders it."""


class IDSEditPipeline(VanillaPipeline):
    """VanillaPipeline + :meth:`edit_step` (the IDSEditTrainer calls it instead of ``get_train_loss_dict``)."""

    config: IDSEditPipelineConfig

    def __init__(
        self,
        config: IDSEditPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Any = None,
    ) -> None:
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        # Plain attributes (not nn.Modules): nothing of the prior reaches state_dict() or checkpoints.
        self.__dict__["_prior"] = None
        self.__dict__["_src_latents"] = {}
        self.__dict__["_frozen_source"] = None  # the source scene, frozen: before/after and the region's anchor
        self.__dict__["_region"] = None  # EditRegion, built on the first step that needs it
        self.set_seed(42)  # nerfstudio's default --machine.seed; IDSEditTrainer sets the run's
        self.__dict__["progress_dir"] = None
        self.__dict__["controls"] = EditControls(
            config.guidance,
            live=test_mode == "val",
            method=self.method_name(),
            on_before_after=self.show_source,
            region=config.region,
            on_region=self.set_region,
        )
        for name, element in self.controls.elements().items():
            setattr(self, name, element)

    def set_seed(self, seed: int) -> None:
        """Seed every random draw of the edit (views, timesteps, noises, sampler jitter) from the run's one seed,
        ``--machine.seed``, and restart the streams."""
        self.__dict__["seed"] = int(seed)
        self.reset_random_streams()

    def derived_seed(self, stream: int) -> int:
        """Independent seed for one random stream (0: views, 1: guidance, 2: render jitter) of this run."""
        return (self.seed * 1_000_003 + stream * 7_919) % (2**62)

    def reset_random_streams(self) -> None:
        """Re-seed the view and guidance draws from the run's seed (a fresh run draws the same sequence)."""
        self.__dict__["_distiller"] = None
        self.__dict__["_view_generator"] = torch.Generator().manual_seed(self.derived_seed(0))
        self.__dict__["_block_sources"] = None  # SourceSupplier of the current view block (look-ahead)
        self.__dict__["_view_pools"] = {}  # view -> SourceSupplier holding its pool (--...source.pool)
        self.__dict__["_current_view"] = 0
        camera_optimizer = getattr(self.model, "camera_optimizer", None)
        if camera_optimizer is not None:  # poses of the source run stay fixed while editing
            camera_optimizer.requires_grad_(False)

    def random_state(self) -> dict[str, Any]:
        """The edit's random streams now (view draws, the distiller's t/noise draws), for a resumable checkpoint.

        Sampler jitter is seeded per step and needs no state. Not included: a look-ahead batch or pool in progress
        (``source.lookahead`` / ``source.pool``): a resumed edit computes its source sides anew from the same draws
        (the look-ahead leaves the generator where the per-step algorithm would), so it equals the uninterrupted edit
        bit for bit (one CPU thread) when no look-ahead batch was split by the interruption (``source.lookahead 1``,
        or a stop at a view block's end), and within float tolerance otherwise (the batches differ); and the draws of
        ``encode_mode sample`` source latents.
        """
        distiller = self._distiller
        editable = getattr(self.model, "edit_region_mask", None)
        return {
            "seed": self.seed,
            "view_generator": self._view_generator.get_state(),
            "current_view": self._current_view,
            "distiller_generator": distiller.generator.get_state() if distiller is not None else None,
            "region_gaussians": editable.cpu() if editable is not None else None,
        }

    def load_random_state(self, state: dict[str, Any]) -> None:
        """Continue the streams saved by :meth:`random_state` (after :meth:`set_seed` / :meth:`set_prior`)."""
        self.set_seed(int(state["seed"]))
        self._view_generator.set_state(state["view_generator"])
        self.__dict__["_current_view"] = int(state["current_view"])
        if state.get("distiller_generator") is not None:
            self.get_distiller().generator.set_state(state["distiller_generator"])
        if state.get("region_gaussians") is not None and self.config.region.enabled():
            # the splat region of the interrupted edit (its Gaussians moved since: do not recompute it)
            dataset = self.datamanager.train_dataset
            region = EditRegion(self.config.region, dataset.cameras, dataset.image_filenames, "--pipeline.region")
            self.__dict__["_region"] = region
            self.model.set_edit_region(state["region_gaussians"].to(self.device))

    def method_name(self) -> str:
        """The editing method of the guidance settings (``ids``, ``dds``, ...)."""
        from ids_nerf.guidance.methods import method_name

        g = self.config.guidance
        try:
            return method_name(g.score, g.fpr.enabled, g.fpr.jacobian)
        except KeyError:
            return g.score

    def frozen_source(self):
        """A frozen copy of the scene the edit started from (``source_checkpoint``), loaded on first use and shared by
        the viewer's before/after switch and a region edit's anchor; held outside the module tree (never saved, never
        optimised). None when the checkpoint is not there."""
        if self._frozen_source is not None:
            return self._frozen_source
        checkpoint = self.config.source_checkpoint
        if checkpoint is None or not Path(checkpoint).is_file():
            return None
        from ids_nerf.nerf.checkpoints import load_checkpoint

        state = load_checkpoint(checkpoint)
        source = self.model.frozen_copy()
        weights = {k[len("_model.") :]: v for k, v in state["pipeline"].items() if k.startswith("_model.")}
        source.update_to_step(int(state["step"]))
        source.load_state_dict(weights)  # a splat scene resizes to the checkpoint's Gaussian count
        source.requires_grad_(False)
        self.__dict__["_frozen_source"] = source
        return source

    def show_source(self, on: bool) -> str:
        """Before/after: show (on) or hide (off) the frozen source scene next to the edit. Returns a one-line status
        (what it costs in memory)."""
        if not on:
            self.model.set_source_model(None)
            return "source scene hidden"
        source = self.frozen_source()
        if source is None:
            return f"no source checkpoint to show ({self.config.source_checkpoint})"
        self.model.set_source_model(source)
        megabytes = sum(t.numel() * t.element_size() for t in source.state_dict().values()) / 1e6
        return f"source scene shown ({megabytes:.0f} MB of weights on {self.device})"

    # ----------------------------------------------------------------- region
    def edit_region(self) -> EditRegion | None:
        """The run's region (built on first use from ``config.region``), or None for a whole-scene edit."""
        if self._region is None and self.config.region.enabled():
            dataset = self.datamanager.train_dataset
            region = EditRegion(self.config.region, dataset.cameras, dataset.image_filenames, "--pipeline.region")
            self.__dict__["_region"] = region
            if self.model.region_mode == "parameters":
                self.model.set_edit_region(region.gaussians(self.model.means.detach()))
        return self._region

    def set_region(self, config: RegionConfig) -> str:
        """Change the region from the next editing step on (the viewer's crop-box button, called from the viewer's
        thread: the change waits for the step boundary); returns its description."""
        self.__dict__["_pending_region"] = config
        return config.describe()

    def _apply_pending_region(self) -> None:
        config = self.__dict__.pop("_pending_region", None)
        if config is None:
            return
        self.config.region = config
        self.__dict__["_region"] = None
        if self.model.region_mode == "parameters":
            self.model.set_edit_region(None)

    def _region_gradient(self, view: EditView, rendered, image_grad: Tensor, metrics: dict[str, Any]) -> Tensor:
        """NeRF region: the guidance gradient inside, the anchor to the source render outside (same rays, same
        sampling seed)."""
        region = self.edit_region()
        if region is None or self.model.region_mode != "image":
            return image_grad
        source = self.frozen_source()
        if source is None:
            raise RuntimeError(f"a region edit needs its source checkpoint ({self.config.source_checkpoint})")
        source.train()  # rendered as the edit is: training-mode sampling, the views' learned pose corrections
        try:
            with phase("region: source render"), torch.no_grad():
                before = source.render_for_edit(view)
        finally:
            source.eval()
        inside = region.pixels(view.index, view.camera, before.depth)
        metrics["region_fraction"] = float(inside.mean())
        return region_image_gradient(image_grad, inside, rendered.rgb, before.rgb, self.config.region.anchor_weight)

    # ----------------------------------------------------------------- lazy prior
    # Methods, not properties: nerfstudio's viewer getattr()s every public attribute of the pipeline.
    def get_prior(self):
        """The diffusion prior, loaded on first use (never by ns-render / ns-eval / ns-viewer)."""
        if self._prior is None:
            from ids_nerf.guidance.prior import DiffusionPrior

            self.set_prior(DiffusionPrior(self.config.guidance.prior_config(self.device), flags=NERF_PRIOR_FLAGS))
        return self._prior

    def set_prior(self, prior) -> None:
        """Use an already built prior (benchmarks with random-weight architectures, several pipelines sharing one);
        the random streams restart, so nothing computed with another prior (distiller, source sides) is kept."""
        self.__dict__["_prior"] = prior
        self._src_latents.clear()
        self.reset_random_streams()

    def get_distiller(self):
        """The shared ScoreDistiller, seeded by the run's seed."""
        if self._distiller is None:
            from ids_nerf.guidance.distiller import ScoreDistiller

            seed = self.derived_seed(1)
            group = next(iter(self.model.edit_param_groups()), "fields")  # what the learning-rate hint names
            self.__dict__["_distiller"] = ScoreDistiller(
                self.get_prior(),
                self.config.guidance,
                seed=seed,
                flag_prefix="--pipeline.guidance.",
                lr_flag=f"--optimizers.{group}.optimizer.lr",
            )
        return self._distiller

    # ----------------------------------------------------------------- views
    def _view_index(self, step: int) -> int:
        if step % max(1, self.config.render.view_repeat) == 0:
            n = len(self.datamanager.train_dataset)
            self.__dict__["_current_view"] = int(torch.randint(n, (1,), generator=self._view_generator))
        return self._current_view

    def _view_size(self, index: int) -> tuple[int, int]:
        cams = self.datamanager.train_dataset.cameras
        long_side = self.config.render.resolution or self.get_prior().resolution
        multiple = self.get_prior().size_multiple
        return render_size(int(cams.height[index, 0]), int(cams.width[index, 0]), long_side, multiple)

    def source_photo(self, index: int, height: int, width: int) -> Tensor:
        """The original training photo of view ``index`` as (1, 3, H, W) in [0, 1] at ``height`` x ``width``."""
        image = self.datamanager.train_dataset[index]["image"].float()
        if image.shape[-1] == 4:  # RGBA -> composite on the model's background colour (white by default)
            image = image[..., :3] * image[..., 3:] + (1 - image[..., 3:])
        image = image.permute(2, 0, 1)[None]
        return torch.nn.functional.interpolate(
            image, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0, 1)

    def _source_latent(self, index: int, height: int, width: int) -> Tensor:
        key = (index, height, width)
        if key not in self._src_latents:
            with torch.no_grad(), phase("source latent (once per view)"):
                photo = self.source_photo(index, height, width).to(self.get_prior().device)
                self._src_latents[key] = self.get_prior().encode(photo, generator=self.get_distiller().generator)
        return self._src_latents[key]

    # ----------------------------------------------------------------- editing step
    def edit_step(self, step: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """One editing step; accumulates gradients in the scene's parameters. Returns (loss_dict, metrics_dict).

        The view is rendered through the scene's seam, the guidance gradient is taken w.r.t. the rendered *image*
        (through the VAE encoder), and the scene pushes that image gradient into its parameters.
        """
        g, r = self.config.guidance, self.config.render
        index = self._view_index(step)
        height, width = self._view_size(index)  # the prior's input size
        k = max(1, r.downscale)
        camera = view_camera(self.datamanager.train_dataset.cameras, index, height // k, width // k)
        view = EditView(camera, index, self.derived_seed(2) + step, r.chunk_size, g.proposal_loss_mult)
        self._apply_pending_region()
        self.edit_region()  # a splat region is resolved before the first render
        rendered = self.model.render_for_edit(view)
        image = rendered.rgb.detach().requires_grad_(True)
        with torch.enable_grad():
            loss, guidance = self._guidance_loss(image, index, height, width, step)
            with phase("vae backward"):
                (image_grad,) = torch.autograd.grad(loss, image)
        metrics: dict[str, Any] = {}
        image_grad = self._region_gradient(view, rendered, image_grad, metrics)
        scene_losses = rendered.push(image_grad)
        if self.model.region_mode == "parameters" and self.edit_region() is not None:
            metrics["region_gaussians"] = self.model.freeze_outside_region()
        diag = guidance.diagnostics
        metrics |= {
            "view": index,
            "t": diag["t"],
            "grad_norm": diag["grad_norm"],
            "image_grad_norm": float(image_grad.norm()),
            "source_precomputed": int(diag.get("source") != "step"),
            "source_lookahead": int(diag.get("lookahead", 1) or 1),
            "source_cached": int(bool(diag.get("source_cached"))),
        }
        if diag.get("fpr_losses"):
            metrics["fpr_loss_first"] = diag["fpr_losses"][0]
            if diag.get("fpr_loss_final") is not None:
                metrics["fpr_loss_final"] = diag["fpr_loss_final"]
        log_every = self.config.log_every
        if log_every > 0 and step % log_every == 0:
            self._log_progress(step, index, {"rgb": rendered.rgb, "depth": rendered.depth})
        loss_dict = {"guidance_loss": loss.detach()}
        loss_dict.update({name: torch.tensor(value) for name, value in scene_losses.items()})
        trainer = self.controls.trainer
        self.controls.step_done(step, getattr(trainer, "edit_steps_total", None) or step + 1)
        return loss_dict, metrics

    def _source_side(self, step: int, index: int, z_src: Tensor, cond_src: Tensor):
        """This step's source side (:class:`~ids_nerf.guidance.distiller.SourceDraw`): drawn in the step (default,
        the paper's algorithm), from this view block's look-ahead batch (``source.lookahead`` K > 1: the block's
        next K steps at once; exact, the same draws in the same order), or from the view's pool (``source.pool``;
        approximate). With ``cache_dir``, precomputed source sides are loaded from / stored in the disk cache."""
        from ids_nerf.guidance.source_side import SourceSupplier

        g, distiller = self.config.guidance, self.get_distiller()
        if g.source.pool is not None:
            if index not in self._view_pools:
                steps_per_view = max(1, self.config.render.view_repeat)  # reuse is reported per visit of the view
                self._view_pools[index] = SourceSupplier(distiller, z_src, cond_src, steps_per_view, g.cache_dir)
            source = self._view_pools[index].next()
        else:
            repeat = max(1, self.config.render.view_repeat)
            if step % repeat == 0 or self._block_sources is None:
                left = repeat - step % repeat  # a block never reaches into the next view's steps
                self.__dict__["_block_sources"] = SourceSupplier(distiller, z_src, cond_src, left, g.cache_dir)
            source = self._block_sources.next()
            choice = distiller.lookahead_choice
            if choice is not None and self.__dict__.get("_logged_lookahead") != choice.k:
                from nerfstudio.utils.rich_utils import CONSOLE

                self.__dict__["_logged_lookahead"] = choice.k
                CONSOLE.log(f"Source-side look-ahead: {choice.reason}")
        return source if source is not None else distiller.draw_source(z_src, cond_src)

    def _guidance_loss(self, rgb: Tensor, index: int, height: int, width: int, step: int = 0):
        """Guidance (+ CDS, + anchoring) loss of a rendered view (h, w, 3), differentiable w.r.t. ``rgb``, on
        ``rgb``'s device.

        The render is upsampled to the prior's input size (height x width) when the render is downscaled. The source
        side of the step (FPR) runs before the render is encoded, so FPR's UNet passes never share memory with the
        VAE encoder's graph of the render (at 512x384 in fp32 that graph alone is ~2.4 GB).
        """
        g = self.config.guidance
        prior = self.get_prior()
        image = rgb.permute(2, 0, 1)[None].to(prior.device, torch.float32)
        if image.shape[-2:] != (height, width):
            image = torch.nn.functional.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
        z_src = self._source_latent(index, height, width)
        cond_src, cond_trg = prior.text_embeddings(g.src_prompt), prior.text_embeddings(self.controls.target_prompt)
        distiller = self.get_distiller()
        source = self._source_side(step, index, z_src, cond_src)
        with phase("vae encode"):
            z = prior.encode(image)
        out = distiller.step(z_src=z_src, z_trg=z, cond_src=cond_src, cond_trg=cond_trg, source=source)
        loss = g.loss_scale * (z * out.grad).sum()
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
        if g.anchor_weight > 0:
            photo = self.source_photo(index, height, width).to(prior.device)
            loss = loss + g.anchor_weight * torch.mean((image - photo) ** 2)
        return loss.to(rgb.device), out  # back on the scene's device (the prior may live on another one)

    def _log_progress(self, step: int, index: int, rendered: dict[str, Tensor]) -> None:
        from nerfstudio.utils import writer

        height, width = rendered["rgb"].shape[:2]
        photo = self.source_photo(index, height, width)[0].permute(1, 2, 0).to(rendered["rgb"].device)
        depth = colormaps.apply_depth_colormap(rendered["depth"])
        panel = torch.cat([photo, rendered["rgb"].clamp(0, 1), depth], dim=1)
        writer.put_image(name="Edit/source|render|depth", image=panel, step=step)
        if self.progress_dir is not None:
            from PIL import Image

            self.progress_dir.mkdir(parents=True, exist_ok=True)
            arr = (panel.detach().cpu().numpy() * 255 + 0.5).astype("uint8")
            Image.fromarray(arr).save(self.progress_dir / f"step-{step:06d}.png")

    def get_train_loss_dict(self, step: int):
        """Not used for editing: :class:`IDSEditTrainer` calls :meth:`edit_step`."""
        raise RuntimeError("IDSEditPipeline is driven by IDSEditTrainer.edit_step; use an ids-edit method config.")

    # ----------------------------------------------------------------- optimisation
    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The scene's edited parameter groups (:meth:`~ids_nerf.scenes.base.EditableScene.edit_param_groups`):
        camera poses and appearance models learned by the source run stay fixed."""
        return self.model.edit_param_groups()

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> list[TrainingCallback]:
        """The scene's between-step callbacks (nerfacto: proposal-sampler schedule; splat: culling), and the run
        folder for the progress pictures and the viewer controls."""
        trainer = attrs.trainer
        if trainer is not None:
            self.__dict__["progress_dir"] = Path(trainer.base_dir) / "edit_progress"
            self.controls.attach_trainer(trainer)
        return self.model.edit_callbacks(attrs)

"""splatfacto as an editable scene: a view is one differentiable rasterization, the image gradient goes back through
it in one backward.

:class:`IDSSplatModel` is nerfstudio's splatfacto (same parameters, state-dict keys and checkpoints: stock
``splatfacto`` runs load into it and its checkpoints load into splatfacto, ``ns-export gaussian-splat`` exports it)
with what editing and CPU machines need:

- the rasterizer is picked by device (:func:`ids_nerf.scenes.rasterize.rasterization`): gsplat's CUDA rasterizer
  exactly as splatfacto calls it on a GPU, the pure-PyTorch one of :mod:`ids_nerf.scenes.rasterize_cpu` on a CPU
  (splatfacto 1.1.5 calls ``.cuda()`` in ``get_outputs`` and when it builds coloured seed points; neither here);
- LPIPS is built only when its weights are cached (:func:`~ids_nerf.scenes.base.lpips_without_download`);
- :meth:`IDSSplatModel.render_for_edit` renders a training view at the prior's size with every SH degree the scene
  has, on a fixed background (:attr:`IDSSplatModelConfig.edit_background`), never at splatfacto's training-time
  downscale or with its random background, so that the prior sees the scene as it is;
- densification while editing is :class:`EditCullConfig` (culling only), applied by :func:`cull_gaussians`, which
  updates the parameters and their optimizer state in the same call (gsplat's ``strategy.ops.remove``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from torch import Tensor
from torch.nn import Parameter

from ids_nerf.profiling import phase
from ids_nerf.scenes.base import EditView, OptionalLPIPS, RenderedView, SourceComparison, lpips_without_download

GAUSSIAN_GROUPS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")
"""splatfacto's per-Gaussian parameter groups (nerfstudio 1.1.5 names; 1.0.x used xyz, scaling, rotation, opacity)."""


@dataclass
class EditCullConfig:
    """Densification while editing: culling only.

    Why: an edit starts from a finished reconstruction whose Gaussians already describe the scene; the guidance
    gradient is noisy (a random timestep and noise each step), so splitting/duplicating on its positional gradient
    grows Gaussians where the noise is, not where the scene needs detail, and splatfacto's periodic opacity reset
    would wipe the source's appearance that the edit must preserve. So: no splitting, no duplication, no opacity
    reset; every ``every`` steps remove the Gaussians that became invisible or huge.
    """

    every: int = 100
    """Cull every N editing steps (0: never)."""
    alpha_thresh: float = 1 / 255
    """Remove Gaussians whose opacity fell below this. The default, 1/255, is the rasterizer's own per-pixel alpha
    threshold: such a Gaussian contributes to no pixel, so removing it changes no render."""
    scale_thresh: float = 0.5
    """Remove Gaussians whose largest scale grew above this (scene units; splatfacto's ``cull_scale_thresh``): the
    huge floaters a text-guided edit can blow up."""


@dataclass
class IDSSplatModelConfig(SplatfactoModelConfig):
    """splatfacto on CUDA or CPU, editable; LPIPS only when its weights are cached (never downloads)."""

    _target: type = field(default_factory=lambda: IDSSplatModel)
    edit_background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour of the views rendered for the prior while editing (RGB in [0, 1]). White: transparent pixels
    of the source photos are composited on white before they are encoded, so an edit render matches them."""
    edit_cull: EditCullConfig = field(default_factory=EditCullConfig)
    """Densification while editing (culling only; see its docstring for the reasons)."""


def world_to_camera(camera_to_worlds: Tensor) -> Tensor:
    """gsplat's (C, 4, 4) world-to-camera matrices (OpenCV axes) of nerfstudio (C, 3, 4) camera-to-world poses
    (OpenGL axes): splatfacto's ``get_viewmat`` without its ``torch.compile`` (which needs a C++ toolchain on CPU)."""
    rot = camera_to_worlds[:, :3, :3] * torch.tensor([[[1, -1, -1]]], device=camera_to_worlds.device)
    trans = camera_to_worlds[:, :3, 3:4]
    rot_inv = rot.transpose(1, 2)
    viewmat = torch.zeros(rot.shape[0], 4, 4, device=rot.device, dtype=rot.dtype)
    viewmat[:, 3, 3] = 1.0
    viewmat[:, :3, :3] = rot_inv
    viewmat[:, :3, 3:4] = -torch.bmm(rot_inv, trans)
    return viewmat


class IDSSplatModel(SourceComparison, OptionalLPIPS, SplatfactoModel):
    """splatfacto, editable (:class:`~ids_nerf.scenes.base.EditableScene`), on CUDA or CPU."""

    config: IDSSplatModelConfig
    region_mode = "parameters"
    """Each Gaussian is its own parameters: a region edit optimises only the Gaussians inside
    (:meth:`set_edit_region`) and leaves the others bit-identical."""

    def populate_modules(self) -> None:
        """splatfacto's modules; seed points with colours are set up on the CPU (splatfacto calls ``.cuda()``)."""
        seed = self.seed_points
        coloured = seed is not None and not self.config.random_init and seed[1].shape[0] > 0
        if coloured:  # let splatfacto take its colourless branch, then set the colours as it would
            self.seed_points = (seed[0], seed[1][:0])
        with lpips_without_download():
            super().populate_modules()
        if coloured:
            self.seed_points = seed
            rgb = seed[1].float() / 255
            dc = RGB2SH(rgb) if self.config.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
            with torch.no_grad():
                self.gauss_params["features_dc"].copy_(dc)

    # ------------------------------------------------------------------ rendering
    def _colors_and_degree(self, crop: Tensor | None, sh_degree: int | None) -> tuple[Tensor, int | None]:
        dc, rest = self.features_dc, self.features_rest
        if crop is not None:
            dc, rest = dc[crop], rest[crop]
        colors = torch.cat((dc[:, None, :], rest), dim=1)
        if self.config.sh_degree > 0:
            return colors, sh_degree
        return torch.sigmoid(colors).squeeze(1), None

    def rasterize(
        self,
        camera: Cameras,
        camera_to_world: Tensor,
        background: Tensor,
        sh_degree: int | None,
        depth: bool,
        crop: Tensor | None = None,
        absgrad: bool = False,
    ) -> tuple[dict[str, Tensor], dict]:
        """Rasterize the Gaussians (or the ``crop`` mask of them) for one camera at its own size: ``rgb`` (H, W, 3)
        composited on ``background``, ``accumulation`` (H, W, 1) and, with ``depth``, ``depth`` (H, W, 1; expected
        depth, where nothing is hit: the image's largest depth), plus the rasterizer's meta."""
        from ids_nerf.scenes.rasterize import rasterization

        params = {name: self.gauss_params[name] for name in ("means", "quats", "scales", "opacities")}
        if crop is not None:
            params = {name: value[crop] for name, value in params.items()}
        colors, degree = self._colors_and_degree(crop, sh_degree)
        width, height = int(camera.width.item()), int(camera.height.item())
        render, alpha, meta = rasterization(
            means=params["means"],
            quats=params["quats"],  # normalised inside
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1),
            colors=colors,
            viewmats=world_to_camera(camera_to_world),
            Ks=camera.get_intrinsics_matrices().to(self.device),
            width=width,
            height=height,
            packed=False,
            near_plane=0.01,
            far_plane=1e10,
            render_mode="RGB+ED" if depth else "RGB",
            sh_degree=degree,
            sparse_grad=False,
            absgrad=absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )
        outputs = {
            "rgb": torch.clamp(render[0, ..., :3] + (1 - alpha[0]) * background, 0.0, 1.0),
            "accumulation": alpha[0],
        }
        if depth:
            depth_im = render[0, ..., 3:4]
            outputs["depth"] = torch.where(alpha[0] > 0, depth_im, depth_im.detach().max())
        return outputs, meta

    def get_outputs(self, camera: Cameras) -> dict[str, Tensor | list]:  # type: ignore[override]
        """splatfacto's ``get_outputs`` (training schedule, random background, crop box, densification hooks), on
        any device."""
        if not isinstance(camera, Cameras):
            return {}
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds
        crop = None
        if self.crop_box is not None and not self.training:
            crop = self.crop_box.within(self.means).squeeze()
            if crop.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )
        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        sized = camera.to(self.device)
        camera.rescale_output_resolution(scale)
        height, width = int(sized.height.item()), int(sized.width.item())
        self.last_size = (height, width)
        if self.config.rasterize_mode not in ("antialiased", "classic"):
            raise ValueError(f"Unknown rasterize_mode: {self.config.rasterize_mode}")
        depth = self.config.output_depth_during_training or not self.training
        degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        background = self._get_background_color()
        outputs, self.info = self.rasterize(
            sized, camera_to_world.to(self.device), background, degree, depth, crop, absgrad=self.strategy.absgrad
        )
        if self.training:
            strategy_args = (self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info)
            self.strategy.step_pre_backward(*strategy_args)
        if self.config.use_bilateral_grid and self.training:
            if camera.metadata is not None and "cam_idx" in camera.metadata:
                outputs["rgb"] = self._apply_bilateral_grid(outputs["rgb"], camera.metadata["cam_idx"], height, width)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(height, width, 3)
        return {
            "rgb": outputs["rgb"],
            "depth": outputs.get("depth"),  # type: ignore[dict-item]
            "accumulation": outputs["accumulation"],
            "background": background,
        }

    # ------------------------------------------------------------------ EditableScene
    def render_for_edit(self, view: EditView) -> RenderedView:
        """One rasterization of the whole view with grad (every SH degree, the edit background, the view's learned
        pose correction if the reconstruction optimised poses); ``push`` backpropagates through it."""
        camera = view.camera.to(self.device)
        camera.metadata = {"cam_idx": view.index}
        camera_to_world = self.camera_optimizer.apply_to_camera(camera).detach()
        background = torch.tensor(self.config.edit_background, device=self.device, dtype=torch.float32)
        with phase("render (with grad)"):  # with grad unless the caller disabled it (a frozen source render)
            outputs, _ = self.rasterize(camera, camera_to_world, background, self.config.sh_degree, depth=True)
        rgb = outputs["rgb"]

        def push(image_grad: Tensor) -> dict[str, float]:
            with phase("scene backward"):
                rgb.backward(image_grad.to(rgb.dtype))
            return {}

        return RenderedView(rgb=rgb.detach(), depth=outputs["depth"].detach(), push=push)

    # ------------------------------------------------------------------ region (parameters mode)
    @property
    def edit_region_mask(self) -> Tensor | None:
        """(N,) bool: the Gaussians a region edit may change (None: all of them)."""
        return self.__dict__.get("_edit_region")

    @torch.no_grad()
    def set_edit_region(self, editable: Tensor | None) -> None:
        """Restrict the edit to the Gaussians of ``editable`` (N,) bool, or lift the restriction (None). Gaussians
        that become frozen lose their Adam moments in the same call, so they stop at once (a frozen Gaussian has a
        zero gradient and zero moments: Adam leaves it bit-identical)."""
        self.__dict__["_edit_region"] = editable
        optimizers = self.__dict__.get("_edit_optimizers")
        if editable is None or optimizers is None:
            return
        frozen = ~editable
        for name in GAUSSIAN_GROUPS:
            optimizer = optimizers.optimizers.get(name)
            if optimizer is None:
                continue
            for key, value in optimizer.state.get(self.gauss_params[name], {}).items():
                if key != "step" and isinstance(value, Tensor) and value.shape[:1] == frozen.shape:
                    value[frozen] = 0

    @torch.no_grad()
    def freeze_outside_region(self) -> int:
        """Zero the gradients of the Gaussians outside the region (call after the backward, before the optimizer
        step). Returns how many Gaussians may change."""
        editable = self.edit_region_mask
        if editable is None:
            return self.num_points
        for param in self.gauss_params.values():
            if param.grad is not None:
                param.grad[~editable] = 0
        return int(editable.sum())

    def edit_param_groups(self) -> dict[str, list[Parameter]]:
        """The six per-Gaussian groups; camera poses and the bilateral grid stay as reconstructed."""
        self.camera_optimizer.requires_grad_(False)
        return self.get_gaussian_param_groups()

    def edit_callbacks(self, attrs: TrainingCallbackAttributes) -> list[TrainingCallback]:
        """Culling every ``edit_cull.every`` steps (:class:`EditCullConfig`)."""
        self.__dict__["_edit_optimizers"] = attrs.optimizers  # a region change resets its frozen Adam moments
        cull = self.config.edit_cull
        if cull.every <= 0 or attrs.optimizers is None:
            return []
        optimizers = attrs.optimizers
        return [
            TrainingCallback(
                [TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                lambda step: cull_gaussians(self, optimizers, cull),
                update_every_num_iters=cull.every,
            )
        ]


@torch.no_grad()
def cull_gaussians(model: SplatfactoModel, optimizers: Optimizers, cull: EditCullConfig) -> int:
    """Remove the Gaussians that are invisible (opacity < ``cull.alpha_thresh``) or huge (largest scale >
    ``cull.scale_thresh``), from the parameters and from their optimizers' state in the same call (gsplat's
    ``strategy.ops.remove``); with a region, only Gaussians inside it, and the region's mask shrinks with them.
    Returns how many were removed."""
    from gsplat.strategy.ops import remove

    params = model.gauss_params
    opacity = torch.sigmoid(params["opacities"].flatten())
    largest = torch.exp(params["scales"]).amax(dim=-1)
    mask = (opacity < cull.alpha_thresh) | (largest > cull.scale_thresh)
    editable = getattr(model, "edit_region_mask", None)
    if editable is not None:
        mask &= editable
    count = int(mask.sum())
    if count == 0:
        return 0
    groups = [name for name in GAUSSIAN_GROUPS if name in optimizers.optimizers]
    for name in groups:
        if optimizers.optimizers[name].param_groups[0]["params"][0] is not params[name]:
            raise RuntimeError(
                f"The {name!r} optimizer holds another tensor than the model's {name!r} (optimizers built before a "
                "checkpoint was loaded?): rebuild the optimizers after loading (IDSEditTrainer does)."
            )
    if len(groups) != len(GAUSSIAN_GROUPS):  # a group without optimizer: its tensor must shrink too
        missing = [name for name in GAUSSIAN_GROUPS if name not in groups]
        for name in missing:
            params[name] = Parameter(params[name][~mask], requires_grad=params[name].requires_grad)
    remove(params={name: params[name] for name in groups}, optimizers=optimizers.optimizers, state={}, mask=mask)
    for name in groups:  # gsplat's remove replaced the Parameters: the ParameterDict and nerfstudio's view follow
        params[name] = optimizers.optimizers[name].param_groups[0]["params"][0]
        optimizers.parameters[name] = [params[name]]
    if editable is not None:
        model.__dict__["_edit_region"] = editable[~mask]
    return count

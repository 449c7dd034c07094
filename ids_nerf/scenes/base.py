"""The seam between the editing loop and a scene type.

An editing step is the same for every scene: pick a training view, render it differentiably at the prior's size,
encode it, take the distiller's gradient w.r.t. the *image*, push that image gradient into the scene. Only two of
those parts depend on the scene type, and they are all a scene implements (:class:`EditableScene`):

- :meth:`EditableScene.render_for_edit` renders one :class:`EditView` and returns a :class:`RenderedView`: the image
  (detached) and a ``push`` that turns an image gradient into parameter gradients. nerfacto renders in ray chunks
  without grad and re-renders chunk by chunk in ``push`` (peak memory = one chunk's graph); a Gaussian splat
  rasterizes the whole view once with grad and ``push`` backpropagates through that one graph;
- :meth:`EditableScene.edit_param_groups` / :meth:`EditableScene.edit_callbacks`: which parameter groups the edit
  optimises and what runs between steps (nerfacto: the proposal sampler's schedule; splats: culling).

The 2D editor is the degenerate case (the latent is the parameter, rendering is the identity) and keeps its own
short loop around the same :class:`~ids_nerf.guidance.distiller.ScoreDistiller`.

Everything else (pipeline, trainer, viewer controls, resume, before/after, the source-side look-ahead/pool/cache,
the anchoring loss, evaluation) is written once against this seam. :class:`SourceComparison` is the one shared
piece of model code: the frozen source scene rendered next to the edit (the viewer's before/after switch).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from unittest import mock

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from torch import Tensor
from torch.nn import Parameter

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's AlexNet ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1``), the backbone of LPIPS in nerfstudio's
models (nerfacto and splatfacto build it at construction)."""

_said = {"lpips": False}


def lpips_backbone_path() -> Path:
    """Where torchvision looks for (and would download) the AlexNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


@contextlib.contextmanager
def lpips_without_download() -> Iterator[bool]:
    """Build a nerfstudio model inside this block: its LPIPS metric is built only when torchvision's AlexNet weights
    are already cached (nerfstudio's models download them at construction, which fails offline or waits for a
    network timeout at every run and viewer start). Yields whether LPIPS is available; says once per process how to
    enable it."""
    if lpips_backbone_path().is_file():
        yield True
        return
    with mock.patch("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", lambda **_: None):
        yield False
    if not _said["lpips"]:  # once per process (an edit that reconstructs first builds two models)
        _said["lpips"] = True
        warnings.warn(
            f"LPIPS metric off: torchvision's AlexNet weights are not in {lpips_backbone_path().parent} (no "
            f"download is attempted). To enable it, put {ALEXNET_FILE} there.",
            stacklevel=3,
        )


class NaNMetric:
    """Stand-in LPIPS used only while nerfstudio's metric code runs without LPIPS; its value is dropped."""

    def __call__(self, *_args: Any, **_kwargs: Any) -> float:
        return float("nan")


class OptionalLPIPS:
    """Mixin of the scene models built under :func:`lpips_without_download`: without LPIPS (``self.lpips`` None)
    evaluation reports the model's other metrics, without an ``lpips`` entry."""

    lpips: Any

    def get_image_metrics_and_images(self, outputs, batch):  # type: ignore[no-untyped-def]
        if self.lpips is not None:
            return super().get_image_metrics_and_images(outputs, batch)  # type: ignore[misc]
        self.lpips = NaNMetric()
        try:
            metrics, images = super().get_image_metrics_and_images(outputs, batch)  # type: ignore[misc]
        finally:
            self.lpips = None
        metrics.pop("lpips", None)
        return metrics, images


@dataclass(frozen=True)
class EditView:
    """One training view to render for the prior in an editing step."""

    camera: Cameras
    """One camera, its intrinsics already at the render size (the prior's input size, or 1/k of it)."""
    index: int
    """Index of the training image (appearance embedding, camera optimiser, region masks)."""
    seed: int
    """Seed of this step's random choices inside the render (NeRF sampler jitter): a re-render with the same seed
    draws the same samples, which makes the chunked backward exact."""
    chunk_size: int = 4096
    """Rays rendered at once (NeRF memory knob); scenes that rasterize whole images ignore it."""
    proposal_loss_mult: float = 1.0
    """Weight of nerfacto's interlevel loss in ``push`` (so the proposal networks follow the edited density);
    scenes without proposal networks ignore it."""


@dataclass
class RenderedView:
    """A rendered view and the way back into the scene."""

    rgb: Tensor
    """(H, W, 3) colours in [0, 1], detached."""
    depth: Tensor
    """(H, W, 1) depth (NeRF: median termination distance; splat: expected depth), detached."""
    push: Callable[[Tensor], dict[str, float]]
    """``push(image_grad)``: accumulate ``d(sum(rgb * image_grad) + scene regularisers) / d params`` in the scene's
    parameters (``.grad``). Returns the scene's own loss terms by name (logged with the guidance loss). Call once."""


@runtime_checkable
class EditableScene(Protocol):
    """What the editing loop needs of a scene model (nerfacto, splatfacto)."""

    def render_for_edit(self, view: EditView) -> RenderedView:
        """Render ``view`` in training mode (sampling, no eval-only shortcuts), ready for :attr:`RenderedView.push`."""
        ...

    def edit_param_groups(self) -> dict[str, list[Parameter]]:
        """The parameter groups an edit optimises (camera poses and appearance models stay as reconstructed)."""
        ...

    def edit_callbacks(self, attrs: TrainingCallbackAttributes) -> list[TrainingCallback]:
        """What runs between editing steps (schedules, culling), given the run's optimizers."""
        ...


class SourceComparison:
    """Mixin of the scene models: a frozen copy of the source scene rendered next to the edit (before/after).

    The copy is held outside the module tree (never in ``state_dict()``, checkpoints or optimizers). With it,
    :meth:`get_outputs_for_camera` also returns ``source_rgb``, ``source_depth`` and ``depth_change`` (|edited depth
    - source depth|), which the viewer offers in its output list and split screen.
    """

    TRANSIENT = ("_source_model", "_edit_optimizers", "_edit_region", "info", "optimizers")
    """Run-time attributes that are not the scene: never copied into a frozen copy."""

    def set_source_model(self, source: Any | None) -> None:
        """Show the frozen ``source`` model next to this one, or stop (None)."""
        self.__dict__["_source_model"] = source

    def frozen_copy(self) -> Any:
        """A deep copy of this model without its run-time attributes (:data:`TRANSIENT`: the shown source model, the
        edit's optimizers and region, the last rasterization's meta; and any tensor of the last forward's graph a
        submodule keeps, such as nerfacto's ``field._density_before_activation``), in eval mode, gradients off."""
        import copy

        held = {k: self.__dict__.pop(k) for k in self.TRANSIENT if k in self.__dict__}
        graph = {  # tensors of a forward's graph cannot be deep-copied (and are no part of the scene)
            id(value): None
            for module in self.modules()  # type: ignore[attr-defined]
            for value in module.__dict__.values()
            if isinstance(value, Tensor) and value.grad_fn is not None
        }
        try:
            twin = copy.deepcopy(self, memo=graph)
        finally:
            self.__dict__.update(held)
        return twin.eval().requires_grad_(False)

    @property
    def source_model(self) -> Any | None:
        """The frozen source model of :meth:`set_source_model`, if any."""
        return self.__dict__.get("_source_model")

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Any = None) -> dict[str, Tensor]:
        outputs = super().get_outputs_for_camera(camera, obb_box=obb_box)  # type: ignore[misc]
        source = self.source_model
        if source is not None:
            before = source.get_outputs_for_camera(camera, obb_box=obb_box)
            outputs["source_rgb"], outputs["source_depth"] = before["rgb"], before["depth"]
            outputs["depth_change"] = (outputs["depth"] - before["depth"]).abs()
        return outputs


def view_camera(cameras: Cameras, index: int, height: int, width: int) -> Cameras:
    """Camera ``index`` of ``cameras`` with its intrinsics rescaled to ``height`` x ``width`` (the aspect may change
    slightly: the prior's input size is rounded to its size multiple)."""
    cam = cameras[index : index + 1]
    sx, sy = width / float(cam.width[0, 0]), height / float(cam.height[0, 0])
    return Cameras(
        camera_to_worlds=cam.camera_to_worlds,
        fx=cam.fx * sx,
        fy=cam.fy * sy,
        cx=cam.cx * sx,
        cy=cam.cy * sy,
        width=torch.full_like(cam.width, width),
        height=torch.full_like(cam.height, height),
        camera_type=cam.camera_type,
        distortion_params=cam.distortion_params,
        times=cam.times,
    )

"""Nerfacto whose LPIPS metric never downloads: nerfacto builds torchmetrics' LPIPS at construction, which fetches
torchvision's AlexNet weights and, offline, fails (or waits for a network timeout) at every start of a run or viewer.

:class:`IDSNerfactoModel` builds LPIPS only when the AlexNet weights are already in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``); otherwise evaluation reports PSNR/SSIM without LPIPS, and says once how to enable
it. Everything else (fields, proposal networks, camera optimizer, appearance embedding, state-dict keys) is
nerfacto's, so stock ``nerfacto`` checkpoints load into this model and its checkpoints load into nerfacto.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's AlexNet ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1``), the backbone of nerfacto's LPIPS."""


_said = {"lpips": False}


def lpips_backbone_path() -> Path:
    """Where torchvision looks for (and would download) the AlexNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


@dataclass
class IDSNerfactoModelConfig(NerfactoModelConfig):
    """Nerfacto with an optional LPIPS metric (built only when its AlexNet weights are cached; never downloads)."""

    _target: type = field(default_factory=lambda: IDSNerfactoModel)


class IDSNerfactoModel(NerfactoModel):
    """Nerfacto; without cached AlexNet weights, evaluation reports PSNR/SSIM without LPIPS."""

    config: IDSNerfactoModelConfig

    def populate_modules(self) -> None:
        if lpips_backbone_path().is_file():
            super().populate_modules()
            return
        # nerfacto imports LPIPS inside populate_modules and builds it last: skip it instead of downloading
        with mock.patch("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", lambda **_: None):
            super().populate_modules()
        if not _said["lpips"]:  # once per process (an edit that reconstructs first builds two models)
            _said["lpips"] = True
            warnings.warn(
                f"LPIPS metric off: torchvision's AlexNet weights are not in {lpips_backbone_path().parent} (no "
                f"download is attempted). To enable it, put {ALEXNET_FILE} there.",
                stacklevel=2,
            )

    def set_source_model(self, source: NerfactoModel | None) -> None:
        """A frozen model of the source scene rendered next to this one (before/after), or None. Held outside the
        module tree: never in ``state_dict()``, checkpoints or the optimizer."""
        self.__dict__["_source_model"] = source

    @property
    def source_model(self) -> NerfactoModel | None:
        """The frozen source model of :meth:`set_source_model`, if any."""
        return self.__dict__.get("_source_model")

    @torch.no_grad()
    def get_outputs_for_camera(self, camera, obb_box=None):  # type: ignore[override]
        """nerfacto's outputs; with a source model also ``source_rgb``, ``source_depth`` and ``depth_change``
        (|edited depth - source depth|), which the viewer offers in its output list and split screen."""
        outputs = super().get_outputs_for_camera(camera, obb_box=obb_box)
        source = self.source_model
        if source is not None:
            before = source.get_outputs_for_camera(camera, obb_box=obb_box)
            outputs["source_rgb"], outputs["source_depth"] = before["rgb"], before["depth"]
            outputs["depth_change"] = (outputs["depth"] - before["depth"]).abs()
        return outputs

    def get_image_metrics_and_images(self, outputs, batch):  # type: ignore[override]
        if self.lpips is not None:
            return super().get_image_metrics_and_images(outputs, batch)
        self.lpips = _NaNMetric()
        try:
            metrics, images = super().get_image_metrics_and_images(outputs, batch)
        finally:
            self.lpips = None
        metrics.pop("lpips", None)
        return metrics, images


class _NaNMetric:
    """Stand-in LPIPS used only while nerfacto's metric code runs; its value is dropped from the metrics."""

    def __call__(self, *_args, **_kwargs) -> float:
        return float("nan")

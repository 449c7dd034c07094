"""Nerfacto whose LPIPS metric is optional: nerfacto downloads AlexNet weights at construction, which fails offline.

Everything else (fields, proposal networks, camera optimizer, appearance embedding, state-dict keys) is nerfacto's,
so stock ``nerfacto`` checkpoints load into this model and its checkpoints load into nerfacto.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig


@dataclass
class IDSNerfactoModelConfig(NerfactoModelConfig):
    """Nerfacto with an optional LPIPS metric (evaluation works offline without the AlexNet download)."""

    _target: type = field(default_factory=lambda: IDSNerfactoModel)


class IDSNerfactoModel(NerfactoModel):
    """Nerfacto; if the LPIPS backbone cannot be downloaded, evaluation reports PSNR/SSIM without LPIPS."""

    config: IDSNerfactoModelConfig

    def populate_modules(self) -> None:
        try:
            super().populate_modules()
        except OSError as err:  # urllib's URLError (offline) is an OSError; LPIPS is built last, after everything
            if not hasattr(self, "psnr"):
                raise
            warnings.warn(f"LPIPS metric disabled: its AlexNet weights could not be downloaded ({err}).", stacklevel=2)
            self.lpips = None
            self.step = 0

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

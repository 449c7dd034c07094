"""Preservation metrics (how much of the source an edit keeps): LPIPS, background PSNR (IDS supplementary D), mask IoU
and depth change.

Images are (H, W, 3) float arrays in [0, 1]; masks (H, W) bool; depths (H, W) float. Exact definitions: see the
docstring of :mod:`ids_nerf.eval`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ids_nerf.errors import UserInputError
from ids_nerf.eval.clip_metrics import WeightsUnavailableError

PSNR_CAP_DB = 100.0
"""Background PSNR is capped here (MSE floored at 1e-10) so identical images give a finite value and means stay
finite."""

LPIPS_MIN_SIDE = 64
"""Views whose short side is smaller are bilinearly upsampled to this short side before LPIPS."""

LpipsNet = Literal["alex", "vgg", "squeeze"]


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)


def local_std(residual: torch.Tensor, window: int = 30) -> torch.Tensor:
    """Per-pixel standard deviation of an (H, W) map over a ``window`` x ``window`` box.

    The box of pixel (y, x) covers rows y - window//2 .. y - window//2 + window - 1 (same for columns), clipped at
    the image border (only pixels inside the image are averaged). sigma = sqrt(max(E[r^2] - E[r]^2, 0)).
    """
    if window < 1:
        raise UserInputError(f"--bg-window must be >= 1 (got {window}).")
    r = residual.double()[None, None]
    pad = window // 2
    if pad:
        # avg_pool2d with count_include_pad=False averages only the pixels inside the image
        mean = F.avg_pool2d(r, window, stride=1, padding=pad, count_include_pad=False)
        mean_sq = F.avg_pool2d(r * r, window, stride=1, padding=pad, count_include_pad=False)
    else:
        mean, mean_sq = r, r * r
    h, w = residual.shape
    var = (mean_sq - mean * mean)[0, 0, :h, :w]
    return var.clamp_min(0).sqrt()


def background_mask(
    source: np.ndarray, edit: np.ndarray, window: int = 30, threshold: Literal["mean", "median"] = "mean"
) -> np.ndarray:
    """IDS background mask: sigma = local std of r = mean_c(edit - source); M = sigma <= mean(sigma) (or median)."""
    residual = (_chw(edit) - _chw(source)).double().mean(0)
    sigma = local_std(residual, window)
    t = sigma.mean() if threshold == "mean" else sigma.flatten().median()
    return (sigma <= t).numpy()


def psnr_from_mse(mse: float, cap_db: float = PSNR_CAP_DB) -> float:
    """10 log10(1 / mse) for images in [0, 1], capped at ``cap_db`` (mse floored at 10^(-cap_db/10))."""
    return min(cap_db, 10.0 * math.log10(1.0 / max(mse, 10.0 ** (-cap_db / 10.0))))


@dataclass
class BackgroundPSNR:
    """Background PSNR of one view."""

    psnr: float
    """bg_psnr in dB (capped at PSNR_CAP_DB)."""
    fraction: float
    """|M| / (H W): the share of pixels counted as background."""
    mask: np.ndarray
    """The (H, W) bool mask M."""


def background_psnr(
    source: np.ndarray,
    edit: np.ndarray,
    window: int = 30,
    threshold: Literal["mean", "median"] = "mean",
    average: Literal["mask", "image"] = "mask",
) -> BackgroundPSNR:
    """bg_psnr = 10 log10(1 / MSE), MSE = sum_{p in M, c} (e - s)^2 / (3 |M|) (``average="mask"``) or / (3 H W)
    (``average="image"``: PSNR(M * s, M * e) of the masked full images); M = :func:`background_mask`."""
    if source.shape != edit.shape:
        raise ValueError(f"source {source.shape} and edit {edit.shape} differ in shape")
    mask = background_mask(source, edit, window, threshold)
    sq = (edit.astype(np.float64) - source.astype(np.float64)) ** 2
    total = float(sq[mask].sum())
    n = 3 * (int(mask.sum()) if average == "mask" else mask.size)
    mse = total / n if n else 0.0
    return BackgroundPSNR(psnr=psnr_from_mse(mse), fraction=float(mask.mean()), mask=mask)


def masked_psnr(source: np.ndarray, edit: np.ndarray, mask: np.ndarray) -> float:
    """PSNR of two (H, W, 3) images in [0, 1] over the pixels of the (H, W) bool ``mask`` (capped); nan if empty."""
    if not mask.any():
        return float("nan")
    sq = (edit.astype(np.float64) - source.astype(np.float64)) ** 2
    return psnr_from_mse(float(sq[mask].mean()))


def masked_ssim(source: np.ndarray, edit: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map (torchmetrics, 11x11 Gaussian window, channels averaged) of two (H, W, 3) images in
    [0, 1] over the pixels of the (H, W) bool ``mask``; nan if empty."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    if not mask.any():
        return float("nan")
    _, ssim_map = ssim(_chw(edit).double()[None], _chw(source).double()[None], data_range=1.0, return_full_image=True)
    return float(ssim_map[0].mean(0).numpy()[mask].mean())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """|A and B| / |A or B| of two bool masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"masks {a.shape} and {b.shape} differ in shape")
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def depth_change(depth_source: np.ndarray, depth_edit: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Median of |D_e - D_s| over the mask's pixels (all pixels when ``mask`` is None); None for an empty mask."""
    diff = np.abs(depth_edit.astype(np.float64) - depth_source.astype(np.float64))
    values = diff[mask] if mask is not None else diff.ravel()
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def _lpips_missing_message(net: str, err: Exception) -> str:
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    url = {
        "alex": AlexNet_Weights.IMAGENET1K_V1.url,
        "vgg": VGG16_Weights.IMAGENET1K_V1.url,
        "squeeze": SqueezeNet1_1_Weights.IMAGENET1K_V1.url,
    }[net]
    folder = f"{torch.hub.get_dir()}/checkpoints"
    return (
        f"LPIPS metric: the lpips package needs torchvision's ImageNet {net} backbone ({url.rsplit('/', 1)[1]}), "
        f"which is not in {folder} and could not be downloaded ({type(err).__name__}: {str(err)[:200]}). Download "
        f"{url} on a machine with internet and copy it into {folder} (or into $TORCH_HOME/hub/checkpoints with "
        "TORCH_HOME set). Or pass --skip-missing to compute the other metrics, or --random-weights for an offline "
        "smoke test (random backbone, numbers not meaningful)."
    )


class LpipsMetric:
    """LPIPS distance of two images through the ``lpips`` package (v0.1 linear heads shipped with the package)."""

    def __init__(self, net: LpipsNet = "alex", random_backbone: bool = False, device: str | torch.device = "cpu"):
        """Build the network; ``random_backbone`` uses a seeded random backbone (offline smoke tests only).

        Raises:
            WeightsUnavailableError: the backbone's ImageNet weights are not cached and cannot be downloaded.
        """
        import lpips

        self.net_name = net
        self.random_backbone = random_backbone
        self.device = torch.device(device)
        try:
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation, inside lpips
                torch.manual_seed(0)
                self.net = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
        except Exception as err:  # URLError, OSError, hash mismatch, ...
            raise WeightsUnavailableError("lpips", _lpips_missing_message(net, err)) from None
        self.net = self.net.eval().requires_grad_(False).to(self.device)

    @torch.no_grad()
    def __call__(self, source: np.ndarray, edit: np.ndarray) -> float:
        """lpips = LPIPS(source, edit) of two same-size images in [0, 1] (scaled to [-1, 1] here)."""
        if source.shape != edit.shape:
            raise ValueError(f"source {source.shape} and edit {edit.shape} differ in shape")
        x = torch.stack([_chw(source), _chw(edit)]).to(self.device) * 2.0 - 1.0
        h, w = x.shape[-2:]
        if min(h, w) < LPIPS_MIN_SIDE:
            scale = LPIPS_MIN_SIDE / min(h, w)
            size = (max(LPIPS_MIN_SIDE, round(h * scale)), max(LPIPS_MIN_SIDE, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return float(self.net(x[:1], x[1:]).flatten()[0])

"""Fixed-point regularization (FPR, Algorithm 1 of IDS): find the guided noise ``eps*`` for a source latent.

Starting from ``z_t = sqrt(a_t) z_src + sqrt(1 - a_t) eps``, FPR takes N gradient steps on ``z_t`` (or on ``eps``)
that make the Tweedie posterior mean of the source prompt's CFG score reconstruct ``z_src``:

    e      = eps_w(z_t, y_src, t)
    z0_hat = (z_t - sqrt(1 - a_t) e) / sqrt(a_t)
    L      = d(z0_hat, z_src)
    z_t    = z_t - lambda * dL/dz_t          (gradient through the UNet, both CFG branches)

and returns ``eps* = (z_t - sqrt(a_t) z_src) / sqrt(1 - a_t)`` together with the refined ``z_t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ids_nerf.guidance.denoiser import Denoiser, add_noise, alpha_sigma, implied_noise, tweedie_x0

FPRMetric = Literal["norm", "mse", "l1", "ssim"]


@dataclass
class FPRConfig:
    """Fixed-point regularization options (the IDS module); usable with every score method."""

    enabled: bool = False
    """Apply FPR: replace the random noise shared by the branches with the guided noise eps* (`ids` = dds + FPR)."""
    iterations: int = 3
    """Number of fixed-point steps N per editing step (paper default 3; N = 1 already preserves identity)."""
    step_size: float = 1.0
    """Step size lambda of each fixed-point step (paper default 1.0; ablation 0.4, 0.8, 1.0)."""
    metric: FPRMetric = "norm"
    """Distance d(z0_hat, z_src): `norm` = unsquared Frobenius norm per sample (official code, default), `mse` = mean
    squared error (squared Euclidean distance / number of elements), `l1` = mean absolute error, `ssim` = 1 - SSIM."""
    wrt: Literal["z_t", "eps"] = "z_t"
    """Variable refined by the fixed-point steps: the noisy latent `z_t` (paper, default) or the noise `eps`."""
    source_guidance_scale: float = 7.5
    """Classifier-free guidance scale of the source prompt's score inside FPR (official code: 7.5), independent of
    the edit's guidance scale."""
    jacobian: Literal["exact", "free"] = "exact"
    """`exact` (paper): the gradient flows through the UNet. `free` (opt-in, cheaper): treat the score as constant
    in each step (d eps / d z_t = 0), so an iteration costs one forward and no UNet backward."""


@dataclass
class FPRResult:
    """Output of :func:`fixed_point_regularization`."""

    z_t: Tensor
    """Refined noisy source latent z_t^src* (detached)."""
    eps: Tensor
    """Guided noise eps* = (z_t^src* - sqrt(a_t) z_src) / sqrt(1 - a_t) (detached)."""
    losses: list[float] = field(default_factory=list)
    """FPR loss before each iteration (length N)."""


def fpr_distance(z0_hat: Tensor, z_src: Tensor, metric: FPRMetric) -> Tensor:
    """FPR loss d(z0_hat, z_src), summed over the batch so that each sample's gradient is its own."""
    diff = (z0_hat - z_src).flatten(1)
    if metric == "norm":
        return torch.linalg.vector_norm(diff, dim=1).sum()
    if metric == "mse":
        return diff.pow(2).mean(dim=1).sum()
    if metric == "l1":
        return diff.abs().mean(dim=1).sum()
    if metric == "ssim":
        return (1 - latent_ssim(z0_hat, z_src)).sum()
    raise ValueError(f"Unknown FPR metric {metric!r}; choose norm, mse, l1 or ssim.")


def latent_ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-sample SSIM of latents (Gaussian window 11, sigma 1.5, data range of ``y``), differentiable in ``x``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    data_range = (y.amax(dim=(1, 2, 3)) - y.amin(dim=(1, 2, 3))).clamp_min(1e-6)
    scores = [
        structural_similarity_index_measure(x[i : i + 1], y[i : i + 1], data_range=float(data_range[i]))
        for i in range(x.shape[0])
    ]
    return torch.stack([torch.as_tensor(s) for s in scores])


def fixed_point_regularization(
    denoiser: Denoiser, z_src: Tensor, cond_src: Tensor, t: Tensor | int, eps: Tensor, config: FPRConfig
) -> FPRResult:
    """Algorithm 1 of IDS. ``eps`` is the injected noise; returns the refined z_t^src* and the guided noise eps*.

    With ``config.iterations == 0`` the injected noise comes back unchanged.
    """
    acp = denoiser.alphas_cumprod
    z_src = z_src.detach()
    z_t = add_noise(acp, z_src, eps, t).detach()
    current_eps = eps.detach()
    # the losses stay on the device until every iteration is queued: reading one (float()) inside the loop would
    # make the host wait for the accelerator each iteration, and the next iteration's kernels would only then be
    # launched (the UNet's forward + backward at batch 2 is launch-bound on a large GPU)
    losses: list[Tensor] = []
    for _ in range(config.iterations):
        if config.jacobian == "free":
            z_t, current_eps, loss_value = _jacobian_free_step(denoiser, z_src, cond_src, t, z_t, config)
            losses.append(loss_value)
            continue
        with torch.enable_grad():
            if config.wrt == "z_t":
                var = z_t.detach().requires_grad_(True)
                zt_var = var
            elif config.wrt == "eps":
                var = current_eps.detach().requires_grad_(True)
                zt_var = add_noise(acp, z_src, var, t)
            else:
                raise ValueError(f"Unknown FPR variable {config.wrt!r}; choose z_t or eps.")
            e = denoiser.eps(zt_var, t, cond_src, config.source_guidance_scale)
            loss = fpr_distance(tweedie_x0(acp, zt_var, e, t), z_src, config.metric)
            (grad,) = torch.autograd.grad(loss, var)
        losses.append(loss.detach())
        if config.wrt == "z_t":
            z_t = (var - config.step_size * grad).detach()
            current_eps = implied_noise(acp, z_t, z_src, t)
        else:
            current_eps = (var - config.step_size * grad).detach()
            z_t = add_noise(acp, z_src, current_eps, t)
    return FPRResult(z_t=z_t, eps=current_eps, losses=torch.stack(losses).tolist() if losses else [])


def _jacobian_free_step(
    denoiser: Denoiser, z_src: Tensor, cond_src: Tensor, t: Tensor | int, z_t: Tensor, config: FPRConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """One FPR step with the score held constant: dL/dz_t = dL/dz0_hat / sqrt(a_t) (and x sqrt(1-a_t) for eps)."""
    acp = denoiser.alphas_cumprod
    with torch.no_grad():
        e = denoiser.eps(z_t, t, cond_src, config.source_guidance_scale)
    with torch.enable_grad():
        x0 = tweedie_x0(acp, z_t, e, t).requires_grad_(True)
        loss = fpr_distance(x0, z_src, config.metric)
        (g0,) = torch.autograd.grad(loss, x0)
    sa, so = alpha_sigma(acp, t, z_t)
    if config.wrt == "z_t":
        z_t = (z_t - config.step_size * g0 / sa).detach()
        eps = implied_noise(acp, z_t, z_src, t)
    else:
        eps = (implied_noise(acp, z_t, z_src, t) - config.step_size * g0 * so / sa).detach()
        z_t = add_noise(acp, z_src, eps, t)
    return z_t, eps, loss.detach()

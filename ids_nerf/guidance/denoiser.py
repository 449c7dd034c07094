"""The minimal interface the score functions need from a diffusion model, and the DDPM algebra around it."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Denoiser(Protocol):
    """Anything that predicts classifier-free-guided noise: a :class:`DiffusionPrior` or a hand-written predictor."""

    alphas_cumprod: Tensor
    """(T,) cumulative products of the scheduler's alphas, on the device of the latents."""

    def eps(self, z_t: Tensor, t: Tensor | int, cond: Tensor, guidance_scale: float) -> Tensor:
        """CFG noise prediction ``eps(z_t, Ø, t) + w * (eps(z_t, y, t) - eps(z_t, Ø, t))``, differentiable in z_t."""
        ...


def per_sample(t: Tensor | int, batch: int) -> Tensor:
    """Timesteps as a (batch,) long tensor from a scalar, a (1,) or a (batch,) tensor."""
    t = torch.as_tensor(t).long().reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{t.numel()} timesteps for a batch of {batch}.")
    return t


def repeat_t(t: Tensor | int, times: int) -> Tensor | int:
    """Timesteps for ``times`` stacked copies of a batch (scalars pass through)."""
    t = torch.as_tensor(t)
    return t.reshape(-1).repeat(times) if t.numel() > 1 else t


def cfg_combine(e_uncond: Tensor, e_cond: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance in the official code's form ``uncond + w * (cond - uncond)``."""
    return e_uncond + guidance_scale * (e_cond - e_uncond)


def alpha_sigma(alphas_cumprod: Tensor, t: Tensor | int, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(sqrt(a_t), sqrt(1 - a_t))`` shaped to broadcast against ``like`` (same dtype)."""
    a = alphas_cumprod[torch.as_tensor(t, device=alphas_cumprod.device).long()].to(like.dtype)
    a = a.reshape(-1, *([1] * (like.dim() - 1)))
    return a.sqrt(), (1 - a).sqrt()


def add_noise(alphas_cumprod: Tensor, z0: Tensor, eps: Tensor, t: Tensor | int) -> Tensor:
    """Forward diffusion ``z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps``."""
    sa, so = alpha_sigma(alphas_cumprod, t, z0)
    return sa * z0 + so * eps


def tweedie_x0(alphas_cumprod: Tensor, z_t: Tensor, eps_pred: Tensor, t: Tensor | int) -> Tensor:
    """Posterior mean by Tweedie's formula ``(z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``."""
    sa, so = alpha_sigma(alphas_cumprod, t, z_t)
    return (z_t - so * eps_pred) / sa


def implied_noise(alphas_cumprod: Tensor, z_t: Tensor, z0: Tensor, t: Tensor | int) -> Tensor:
    """The noise that maps ``z0`` to ``z_t``: ``(z_t - sqrt(a_t) z0) / sqrt(1 - a_t)``."""
    sa, so = alpha_sigma(alphas_cumprod, t, z_t)
    return (z_t - sa * z0) / so

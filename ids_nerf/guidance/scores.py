"""Score-distillation gradients w.r.t. the target latent: SDS, DDS, CDS (PatchNCE term) and PDS.

Pure functions of a :class:`Denoiser`, the latents, the timestep and the noise. Sampling of ``t`` and the noise,
and FPR, live in :mod:`ids_nerf.guidance.distiller`, so the same functions serve plain and FPR-guided variants:
the caller passes the noisy source latent ``z_t_src`` (``sqrt(a_t) z_src + sqrt(1-a_t) eps``, or FPR's refined one)
and the noise ``eps`` that produced it.

The target branch is noised as ``z_t_trg = z_t_src + sqrt(a_t) (z_trg - z_src)``, which equals
``sqrt(a_t) z_trg + sqrt(1 - a_t) eps`` and makes both branches bit-identical when ``z_trg == z_src``
(so DDS/IDS gradients are exactly zero for an unedited image with equal prompts).

A sample whose gradient holds NaN/Inf gets a zero gradient (:func:`finite_grad`) and is reported in
:attr:`ScoreResult.nonfinite`; the distiller counts such steps, warns and stops a run of them
(:mod:`ids_nerf.guidance.nonfinite`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ids_nerf.guidance.denoiser import Denoiser, add_noise, alpha_sigma, repeat_t, tweedie_x0


@dataclass
class ScoreResult:
    """A score's gradient w.r.t. ``z_trg`` and what the distiller may reuse for diagnostics."""

    grad: Tensor
    """Gradient direction for the target latent (detached, same shape as z_trg)."""
    eps_src: Tensor | None = None
    """CFG noise prediction of the source branch at z_t_src (None for SDS)."""
    nonfinite: Tensor | None = None
    """(B,) bool: the samples whose gradient held NaN/Inf; their ``grad`` is zero (see :func:`finite_grad`)."""


def finite_grad(grad: Tensor) -> ScoreResult:
    """``grad`` with the gradient of every sample holding a NaN/Inf zeroed (that sample skips the step: a partly
    non-finite prediction is garbage, and one NaN would poison the latent), and which samples those were. Finite
    gradients pass through bit for bit; the caller counts and reports the others
    (:class:`~ids_nerf.guidance.nonfinite.NonFiniteMonitor`)."""
    bad = ~torch.isfinite(grad).flatten(1).all(dim=1)
    grad = grad.masked_fill(bad.reshape(-1, *([1] * (grad.dim() - 1))), 0.0)
    return ScoreResult(grad=grad, nonfinite=bad)


def target_noisy_latent(
    alphas_cumprod: Tensor, z_t_src: Tensor, z_src: Tensor, z_trg: Tensor, t: Tensor | int
) -> Tensor:
    """``z_t_src + sqrt(a_t) (z_trg - z_src)``: the target noised with the same noise as the source branch."""
    sa, _ = alpha_sigma(alphas_cumprod, t, z_trg)
    return z_t_src + sa * (z_trg - z_src)


def branch_eps(
    den: Denoiser,
    z_t_src: Tensor,
    z_t_trg: Tensor,
    t: Tensor | int,
    cond_src: Tensor,
    cond_trg: Tensor,
    guidance_scale: float,
    eps_src: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """CFG predictions of the source and target branches (no grad): both in one batched UNet call, or, when the
    source branch's prediction ``eps_src`` at ``z_t_src`` was computed beforehand, the target branch alone."""
    with torch.no_grad():
        if eps_src is not None:
            return eps_src, den.eps(z_t_trg, t, cond_trg, guidance_scale)
        batch = z_t_src.shape[0]
        cond = torch.cat([cond_src.expand(batch, -1, -1), cond_trg.expand(batch, -1, -1)])
        e_src, e_trg = den.eps(torch.cat([z_t_src, z_t_trg]), repeat_t(t, 2), cond, guidance_scale).chunk(2)
    return e_src, e_trg


def sds(
    den: Denoiser,
    z_trg: Tensor,
    t: Tensor | int,
    eps: Tensor,
    cond_trg: Tensor,
    guidance_scale: float,
    z_t_trg: Tensor | None = None,
) -> ScoreResult:
    """SDS: ``eps_w(z_t, y_trg, t) - eps``, ``z_t`` = target noised by ``eps`` (weight w(t) = 1 as in the DDS code)."""
    if z_t_trg is None:
        z_t_trg = add_noise(den.alphas_cumprod, z_trg.detach(), eps, t)
    with torch.no_grad():
        e = den.eps(z_t_trg, t, cond_trg, guidance_scale)
    return finite_grad(e - eps)


def dds(
    den: Denoiser,
    z_src: Tensor,
    z_trg: Tensor,
    z_t_src: Tensor,
    t: Tensor | int,
    cond_src: Tensor,
    cond_trg: Tensor,
    guidance_scale: float,
    eps_src: Tensor | None = None,
) -> ScoreResult:
    """DDS: ``eps_w(z_t_trg, y_trg, t) - eps_w(z_t_src, y_src, t)``, both branches in one batched call; with the
    source branch's prediction ``eps_src`` given (computed beforehand), only the target branch is evaluated."""
    z_t_trg = target_noisy_latent(den.alphas_cumprod, z_t_src, z_src, z_trg.detach(), t)
    e_src, e_trg = branch_eps(den, z_t_src, z_t_trg, t, cond_src, cond_trg, guidance_scale, eps_src)
    result = finite_grad(e_trg - e_src)
    result.eps_src = e_src
    return result


def pds(
    den: Denoiser,
    z_src: Tensor,
    z_trg: Tensor,
    z_t_src: Tensor,
    t: Tensor | int,
    t_prev: Tensor | int,
    eps_prev: Tensor,
    cond_src: Tensor,
    cond_trg: Tensor,
    guidance_scale: float,
    posterior: str = "official",
    eps_src: Tensor | None = None,
) -> ScoreResult:
    """PDS (Koo et al. 2024): difference of the two branches' posterior noises ``(x_{t'} - mu(x_t, eps_w)) / sigma``.

    ``posterior="official"`` uses the one-step coefficients of the official code (``beta_t``, ``alpha_t`` of step t
    even when ``t_prev = t - k``); ``"exact"`` uses the true DDPM posterior q(x_{t'} | x_t, x_0) for the jump t -> t'.
    ``x_{t'}`` of each branch uses ``eps_prev`` (shared), the ``x_t`` branches the shared/guided noise of ``z_t_src``.
    With the source branch's prediction ``eps_src`` given (computed beforehand), only the target branch is evaluated.
    """
    acp = den.alphas_cumprod
    shape = (-1, *([1] * (z_trg.dim() - 1)))
    t = torch.as_tensor(t, device=acp.device).long()
    t_prev = torch.as_tensor(t_prev, device=acp.device).long()
    a_t, a_prev = acp[t].reshape(shape), acp[t_prev].reshape(shape)
    if posterior == "official":
        alpha_step = a_t / acp[(t - 1).clamp_min(0)].reshape(shape)
    elif posterior == "exact":
        alpha_step = a_t / a_prev
    else:
        raise ValueError(f"Unknown PDS posterior {posterior!r}; choose official or exact.")
    beta_step = 1 - alpha_step
    c0 = a_prev.sqrt() * beta_step / (1 - a_t)
    c1 = alpha_step.sqrt() * (1 - a_prev) / (1 - a_t)
    sigma = ((1 - a_prev) / (1 - a_t) * beta_step).sqrt()

    z_t_trg = target_noisy_latent(acp, z_t_src, z_src, z_trg.detach(), t)
    e_src, e_trg = branch_eps(den, z_t_src, z_t_trg, t, cond_src, cond_trg, guidance_scale, eps_src)

    def posterior_noise(x0: Tensor, x_t: Tensor, e: Tensor) -> Tensor:
        x_prev = add_noise(acp, x0, eps_prev, t_prev)
        mu = c0 * tweedie_x0(acp, x_t, e, t) + c1 * x_t
        return (x_prev - mu) / sigma

    grad = posterior_noise(z_trg.detach(), z_t_trg, e_trg) - posterior_noise(z_src, z_t_src, e_src)
    result = finite_grad(grad)
    result.eps_src = e_src
    return result


def patch_nce(ref: Tensor, trg: Tensor, temperature: float) -> Tensor:
    """PatchNCE (CUT) loss for matched rows of ``ref`` (detached anchors) and ``trg`` (N, C), mean over patches.

    Positive: the same patch; negatives: all other patches of the target (diagonal masked with -10 as in CDS).
    """
    ref = ref.detach()
    n = ref.shape[0]
    l_pos = (ref * trg).sum(dim=1, keepdim=True)
    l_neg = ref @ trg.t()
    l_neg = l_neg.masked_fill(torch.eye(n, dtype=torch.bool, device=ref.device), -10.0)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=ref.device))


def attention_patch_nce(
    ref_feats: list[Tensor],
    trg_feats: list[Tensor],
    latent_hw: tuple[int, int],
    patch_sizes: tuple[int, ...],
    n_patches: int,
    temperature: float,
    generator: torch.Generator,
) -> Tensor:
    """CDS's contrastive term over self-attention features: for each layer and patch size, average-pool to patches,
    L2-normalise channels, draw ``n_patches`` random locations (shared by both branches) and apply PatchNCE.

    Features are (B, h*w, C) with h/w = the latent's aspect ratio; the loss is summed over batch elements, each
    compared with its own reference (for B = 1 this is the official CDS loss).
    """
    total = torch.zeros((), device=trg_feats[0].device)
    lat_h, lat_w = latent_hw
    for ref, trg in zip(ref_feats, trg_feats, strict=True):
        hw, channels = ref.shape[1], ref.shape[2]
        h = round((hw * lat_h / lat_w) ** 0.5)
        w = hw // h
        ref_map = ref.float().reshape(-1, h, w, channels).permute(0, 3, 1, 2)
        trg_map = trg.float().reshape(-1, h, w, channels).permute(0, 3, 1, 2)
        for ps in patch_sizes:
            if ps > 1:
                ref_p, trg_p = F.avg_pool2d(ref_map, ps), F.avg_pool2d(trg_map, ps)
            else:
                ref_p, trg_p = ref_map, trg_map
            ref_p = F.normalize(ref_p, dim=1).flatten(2).transpose(1, 2)
            trg_p = F.normalize(trg_p, dim=1).flatten(2).transpose(1, 2)
            for b in range(ref_p.shape[0]):
                ids = torch.randperm(ref_p.shape[1], generator=generator)[:n_patches].to(ref_p.device)
                total = total + patch_nce(ref_p[b, ids], trg_p[b, ids], temperature)
    return total

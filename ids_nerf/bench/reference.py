"""A plain transcription of the official IDS step, for "ours vs the official formulation" measured side by side.

As the authors' code (built on the CDS code): each branch's CFG pair is one UNet call of batch 2 (uncond, cond);
the source and target branches are separate calls; every FPR iteration is a forward + backward through both CFG
halves; nothing is batched across branches or reused. Same math as :class:`ScoreDistiller` with ``ids``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ids_nerf.guidance.config import guidance_config
from ids_nerf.guidance.denoiser import alpha_sigma, cfg_combine
from ids_nerf.guidance.distiller import ScoreDistiller, StepOutput


def _cfg_eps(prior, z_t: Tensor, t: Tensor, cond: Tensor, scale: float) -> Tensor:
    """One official-style CFG call: batch [uncond, cond] of one latent."""
    uncond = prior.text_embeddings("")
    e = prior.unet(
        torch.cat([z_t, z_t]).to(prior.dtype),
        torch.cat([t, t]),
        encoder_hidden_states=torch.cat([uncond, cond]).to(prior.dtype),
    ).sample.to(z_t.dtype)
    e_u, e_c = e.chunk(2)
    return cfg_combine(e_u, e_c, scale)


def reference_ids_grad(
    prior,
    z_src: Tensor,
    z_trg: Tensor,
    cond_src: Tensor,
    cond_trg: Tensor,
    t: Tensor,
    eps: Tensor,
    iterations: int = 3,
    step_size: float = 1.0,
    guidance_scale: float = 7.5,
) -> Tensor:
    """Gradient of one IDS step (DDS with FPR-guided noise), official formulation (epsilon-prediction models)."""
    acp = prior.alphas_cumprod
    sa, so = alpha_sigma(acp, t, z_src)
    z_t = sa * z_src + so * eps
    for _ in range(iterations):
        z_t = z_t.detach().requires_grad_(True)
        with torch.enable_grad():
            e = _cfg_eps(prior, z_t, t, cond_src, guidance_scale)
            x0 = (z_t - so * e) / sa
            loss = torch.linalg.norm(z_src - x0)
            (g,) = torch.autograd.grad(loss, z_t)
        z_t = (z_t - step_size * g).detach()
    eps_star = (z_t - sa * z_src) / so
    with torch.no_grad():
        e_src = _cfg_eps(prior, z_t, t, cond_src, guidance_scale)
        e_trg = _cfg_eps(prior, sa * z_trg + so * eps_star, t, cond_trg, guidance_scale)
    return e_trg - e_src


class ReferenceDistiller(ScoreDistiller):
    """The official formulation behind the ScoreDistiller interface: same seeded (t, eps) draws, so an edit with it
    follows the same random stream as ``ScoreDistiller(prior, ids/dds, seed)`` and can be compared step for step."""

    def __init__(self, prior, iterations: int, seed: int = 0) -> None:
        super().__init__(prior, guidance_config("ids" if iterations > 0 else "dds"), seed=seed)
        self.config.fpr.iterations = iterations

    def step(  # type: ignore[override]
        self, *, z_src: Tensor, z_trg: Tensor, cond_src: Tensor, cond_trg: Tensor, source=None
    ) -> StepOutput:
        assert source is None, "the reference formulation draws its own source side"
        t = self.sample_t(z_src.shape[0]).to(z_src.device)
        eps = self._randn(z_src)
        grad = reference_ids_grad(
            self.den,
            z_src,
            z_trg.detach(),
            cond_src,
            cond_trg,
            t,
            eps,
            iterations=self.config.fpr.iterations,
            step_size=self.config.fpr.step_size,
            guidance_scale=self.config.effective_guidance_scale(),
        )
        return StepOutput(grad=grad, aux_loss=None, diagnostics={"t": int(t[0]), "grad_norm": float(grad.norm())})

"""The 2D editor: score distillation on an image latent, the degenerate generator ``z = theta``.

Same :class:`ScoreDistiller` as the NeRF pipeline; the "renderer" is the identity and the optimiser is the official
code's plain SGD on the latent with loss ``loss_scale * (z * grad).sum()`` (+ the CDS term). Each step's source side
comes from a :class:`~ids_nerf.guidance.source_side.SourceSupplier` (by default a look-ahead batch of K steps, K
chosen from the memory; in the step, pool and disk cache per ``distiller.config.source``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ids_nerf.guidance.distiller import ScoreDistiller, StepOutput
from ids_nerf.guidance.source_side import SourceSupplier

#: Official DDS/CDS/IDS loss scale: 2000 / (64 * 64) for SD's 64x64 latents. Kept fixed for other latent sizes so
#: that the per-element step ``lr * scale * grad`` does not depend on the resolution.
OFFICIAL_LOSS_SCALE = 2000.0 / (64 * 64)


@dataclass
class OptimConfig:
    """Optimisation of the target latent."""

    steps: int = 200
    """Number of editing steps (official: 200)."""
    lr: float = 0.1
    """SGD learning rate on the latent (official: 0.1, no momentum, no schedule)."""
    loss_scale: float = OFFICIAL_LOSS_SCALE
    """Scale of the surrogate loss (z * grad).sum(); official 2000/(64*64), kept fixed for other latent sizes."""


@dataclass
class EditResult:
    """Output of :func:`edit_latent`."""

    latent: Tensor
    """Edited latent (detached)."""
    history: list[dict] = field(default_factory=list)
    """Per-step diagnostics from the distiller."""
    frames: list[Tensor] = field(default_factory=list)
    """Decoded intermediate images (1, 3, H, W) in [0, 1], when requested."""
    source_side: dict = field(default_factory=dict)
    """How the source sides were obtained (:meth:`SourceSupplier.summary`: mode, cache status, pool FPR losses)."""


def _postfix(out: StepOutput) -> dict[str, str]:
    d = out.diagnostics
    post = {"t": str(d["t"]), "|g|": f"{d['grad_norm']:.3g}"}
    losses = d.get("fpr_losses") or []
    if losses:
        final = d.get("fpr_loss_final")
        post["fpr"] = f"{losses[0]:.3g}->{(final if final is not None else losses[-1]):.3g}"
    return post


def edit_latent(
    distiller: ScoreDistiller,
    z_src: Tensor,
    cond_src: Tensor,
    cond_trg: Tensor,
    optim: OptimConfig,
    decode: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    frames: int = 0,
    sources: SourceSupplier | None = None,
    region: Tensor | None = None,
) -> EditResult:
    """Optimise ``z`` (initialised to ``z_src``) with the distiller's gradient for ``optim.steps`` SGD steps.

    ``frames`` > 0 keeps that many intermediate decodes (needs ``decode``), evenly spaced, the last step included,
    after a decode of the start. ``sources`` supplies each step's source side (default: a supplier for this edit
    following ``distiller.config.source``, without disk cache). ``region`` ((B or 1, 1, h, w) in [0, 1], latent
    resolution; :mod:`ids_nerf.image.region`): the gradient is multiplied by it and after each step the latent is
    put back to the source's outside it (``z = m z + (1 - m) z_src``)."""
    if sources is None:
        sources = SourceSupplier(distiller, z_src, cond_src, optim.steps)
    z = z_src.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=optim.lr)
    result = EditResult(latent=z)
    keep = set()
    if frames > 0 and decode is not None and optim.steps > 0:
        n = min(frames, optim.steps)
        keep = {round((i + 1) * optim.steps / n) - 1 for i in range(n)}
        with torch.no_grad():
            result.frames.append(decode(z.detach()))
    bar = tqdm(range(optim.steps), desc=f"edit ({distiller.config.name})", disable=not progress, leave=False)
    for i in bar:
        out = distiller.step(z_src=z_src, z_trg=z, cond_src=cond_src, cond_trg=cond_trg, source=sources.next())
        loss = optim.loss_scale * (z * out.grad).sum()
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if region is not None:
            z.grad.mul_(region)
        opt.step()
        if region is not None:
            with torch.no_grad():
                z.copy_(region * z + (1 - region) * z_src)
        result.history.append(out.diagnostics)
        bar.set_postfix(_postfix(out), refresh=False)
        if i in keep:
            with torch.no_grad():
                result.frames.append(decode(z.detach()))  # type: ignore[misc]
    result.latent = z.detach()
    result.source_side = sources.summary()
    return result

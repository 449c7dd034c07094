"""ScoreDistiller: one guidance code path for the 2D editor and the NeRF pipeline.

Each :meth:`ScoreDistiller.step` draws ``t`` and the noise from a generator seeded by the run's seed, applies FPR
when enabled (the guided noise replaces the random one in every branch), evaluates the chosen score and returns
the gradient for the target latent, an optional differentiable auxiliary loss (CDS) and diagnostics.

The source side of a step (its draws, FPR and the source branch's prediction) never depends on the target latent:
:meth:`ScoreDistiller.prepare_sources` computes it for the next K steps in one batch, drawing from the generator in
the order K sequential steps would, and :meth:`ScoreDistiller.step` then evaluates only the target branch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ids_nerf.errors import UserInputError
from ids_nerf.guidance import scores
from ids_nerf.guidance.config import GuidanceConfig
from ids_nerf.guidance.denoiser import Denoiser, add_noise, tweedie_x0
from ids_nerf.guidance.fpr import FPRMetric, fixed_point_regularization, fpr_distance
from ids_nerf.guidance.methods import SCORES
from ids_nerf.guidance.nonfinite import NonFiniteMonitor
from ids_nerf.profiling import phase


@dataclass
class StepOutput:
    """What one guidance step returns."""

    grad: Tensor
    """Gradient for the target latent; use ``(z_trg * grad).sum()`` as surrogate loss (d/dz = grad)."""
    aux_loss: Tensor | None
    """Differentiable extra loss w.r.t. z_trg (CDS PatchNCE, already weighted), else None."""
    diagnostics: dict[str, float | int | str | list[float] | None]
    """t (of the first sample; t_all for a batch), (t_prev), fpr_losses (before each FPR iteration, summed over the
    batch), fpr_loss_final (after the last, when free), grad_norm (mean over the batch), nonfinite (samples whose
    gradient held NaN/Inf and was zeroed, 0 normally; see :mod:`ids_nerf.guidance.nonfinite`), source (where the
    source side came from: `step`, `lookahead` or `pool`, see :attr:`SourceDraw.origin`), source_cached (loaded from
    a disk cache), lookahead (K of the look-ahead batch it came from, 1 otherwise), pool_index (the pool entry
    reused, pool only)."""


@dataclass
class SourceDraw:
    """The part of a guidance step that depends only on the source (see :meth:`ScoreDistiller.draw_source`)."""

    t: Tensor
    """Timesteps (B,)."""
    t_prev: Tensor | None
    """PDS's previous timesteps (B,), else None."""
    eps: Tensor
    """Noise shared by the branches: the drawn noise, or FPR's guided noise eps*."""
    eps_prev: Tensor | None
    """PDS's second noise, else None."""
    z_t_src: Tensor
    """Noisy source latent sqrt(a_t) z_src + sqrt(1 - a_t) eps (FPR's refined z_t^src* when FPR is on)."""
    fpr_losses: list[float]
    """FPR loss before each iteration, summed over the batch (empty without FPR)."""
    eps_src: Tensor | None = None
    """The source branch's CFG prediction at z_t_src with the edit's guidance scale, when computed beforehand
    (:meth:`ScoreDistiller.prepare_sources`): :meth:`ScoreDistiller.step` then evaluates only the target branch.
    None: the step evaluates both branches in one call (and SDS has no source branch)."""
    origin: Literal["step", "lookahead", "pool"] = "step"
    """`step`: drawn for its step (:meth:`ScoreDistiller.draw_source`); `lookahead`: computed ahead in a batch of
    steps (exact); `pool`: an entry of a per-source pool, reused by several steps."""
    cached: bool = False
    """Loaded from a source-side disk cache."""
    pool_index: int | None = None
    """The pool entry this is (origin `pool`)."""
    guidance_scale: float | None = None
    """The guidance scale ``eps_src`` was computed with; a step at another scale (changed live in the viewer)
    evaluates both branches instead of reusing it."""
    lookahead: int = 1
    """K of the look-ahead batch this was computed in (1: drawn in its step, computed alone, or loaded)."""
    generator_after: Tensor | None = None
    """The run generator's state right after this step's draws (look-ahead): a supplier restores it when it serves
    the step, so that between steps the generator is where the sequential algorithm would have left it."""


class _SampleFPRLosses:
    """The denoiser as FPR sees it, also recording each call's per-sample FPR distance.

    FPR reports its loss summed over the batch; a look-ahead batch stacks several steps, each of which reports the
    sum over its own samples. FPR calls the denoiser once per iteration and takes the distance of the Tweedie mean
    of that prediction, which is what is recorded here (no grad).
    """

    def __init__(self, den: Denoiser, z_src: Tensor, metric: FPRMetric) -> None:
        self.den = den
        self.alphas_cumprod = den.alphas_cumprod
        self.z_src = z_src
        self.metric = metric
        self.losses: list[Tensor] = []
        """Per-sample distances (batch,) before each FPR iteration."""

    def eps(self, z_t: Tensor, t: Tensor | int, cond: Tensor, guidance_scale: float) -> Tensor:
        e = self.den.eps(z_t, t, cond, guidance_scale)
        with torch.no_grad():
            x0 = tweedie_x0(self.alphas_cumprod, z_t.detach(), e.detach(), t)
            per_sample = [fpr_distance(x0[i : i + 1], self.z_src[i : i + 1], self.metric) for i in range(len(x0))]
            self.losses.append(torch.stack(per_sample))
        return e


class ScoreDistiller:
    """Draws (t, eps) from a seeded generator, applies FPR when enabled and evaluates the configured score.

    ``flag_prefix`` / ``lr_flag``: how the guidance options and the learning rate are spelled on the command line
    (``--`` and ``--optim.lr`` for ids-edit-image, ``--pipeline.guidance.`` under ns-train; None: not options), named
    by the :class:`~ids_nerf.guidance.nonfinite.NonFiniteGuidanceError` that stops a run of
    ``config.max_nonfinite_steps`` consecutive non-finite steps."""

    def __init__(
        self,
        denoiser: Denoiser,
        config: GuidanceConfig,
        seed: int = 0,
        *,
        flag_prefix: str | None = "--",
        lr_flag: str | None = None,
    ) -> None:
        self.den = denoiser
        self.config = config
        self.seed = seed
        self.nonfinite = NonFiniteMonitor(flag_prefix, lr_flag)
        """Counts the steps whose gradient held NaN/Inf (:meth:`step` warns at the first, raises after a run)."""
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.lookahead_choice: Any = None
        """The last K ``auto`` chose and why (:class:`~ids_nerf.guidance.source_side.LookaheadChoice`), else None."""
        if config.score not in SCORES:
            raise UserInputError(f"Unknown score {config.score!r}; choose one of {', '.join(SCORES)}.")
        if config.score == "cds" and not hasattr(denoiser, "capture_self_attention"):
            raise ValueError("CDS needs a UNet with self-attention layers (a DiffusionPrior), not a plain denoiser.")
        self._pds_grid: Tensor | None = None

    # ---------------------------------------------------------------- sampling
    def _randn(self, like: Tensor) -> Tensor:
        """Standard normal noise drawn on the CPU (identical on every device for a seed), moved to ``like``."""
        return torch.randn(like.shape, generator=self.generator, dtype=torch.float32).to(like.device, like.dtype)

    def _randint(self, low: int, high: int, batch: int) -> Tensor:
        if high <= low:
            raise UserInputError(f"Empty timestep range [{low}, {high}); widen t_range.")
        return torch.randint(low, high, (batch,), generator=self.generator)

    def sample_t(self, batch: int = 1) -> Tensor:
        """SDS/DDS/CDS timesteps (batch,): U{int(T lo), ..., int(T hi) - 2} (the official randint(lo, hi - 1))."""
        num = self.den.alphas_cumprod.shape[0]
        lo, hi = self.config.t_range
        return self._randint(int(num * lo), int(num * hi) - 1, batch)

    def pds_grid(self) -> Tensor:
        """Increasing DDIM timestep grid of PDS (the prior's scheduler spacing when it has one).

        Computed on a copy of the prior's scheduler: the shared scheduler's timesteps are left untouched.
        """
        if self._pds_grid is None:
            n = self.config.pds.num_inference_steps
            scheduler = getattr(self.den, "scheduler", None)
            if scheduler is not None:
                grid_scheduler = copy.deepcopy(scheduler)
                grid_scheduler.set_timesteps(n)
                self._pds_grid = grid_scheduler.timesteps.flip(0).long().cpu()
            else:
                num = self.den.alphas_cumprod.shape[0]
                self._pds_grid = torch.arange(n) * (num // n)
        return self._pds_grid

    def sample_pds_t(self, batch: int = 1) -> tuple[Tensor, Tensor]:
        """PDS (t, t_prev), each (batch,), on the DDIM grid; index in [max(1, n lo), n hi) as the official code."""
        grid = self.pds_grid()
        n = grid.shape[0]
        lo, hi = self.config.pds.grid_range
        min_idx = max(1, int(n * lo))
        idx = self._randint(min_idx, max(int(n * hi), min_idx + 1), batch)
        return grid[idx], grid[idx - 1]

    def _draw(self, z_src: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """One step's draws, in the step's order: t (PDS: t and t_prev), the noise, PDS's second noise."""
        batch = z_src.shape[0]
        if self.config.score == "pds":
            t, t_prev = self.sample_pds_t(batch)
            t_prev = t_prev.to(z_src.device)
        else:
            t, t_prev = self.sample_t(batch), None
        t = t.to(z_src.device)
        eps = self._randn(z_src)
        eps_prev = self._randn(z_src) if self.config.score == "pds" else None
        return t, t_prev, eps, eps_prev

    # ---------------------------------------------------------------- source side
    def draw_source(self, z_src: Tensor, cond_src: Tensor) -> SourceDraw:
        """The source side of one step: draw ``t`` (and PDS's ``t_prev``) and the noise, and with FPR refine the
        noisy source latent. Depends only on the source, never on the target latent, so it can run before the
        target is encoded (the NeRF step does, so that FPR never shares memory with the VAE encoder's graph)."""
        cfg = self.config
        z_src = z_src.detach()
        t, t_prev, eps, eps_prev = self._draw(z_src)
        if not cfg.fpr.enabled:
            return SourceDraw(t, t_prev, eps, eps_prev, add_noise(self.den.alphas_cumprod, z_src, eps, t), [])
        with phase("fpr"):
            refined = fixed_point_regularization(self.den, z_src, cond_src, t, eps, cfg.fpr)
        return SourceDraw(t, t_prev, refined.eps, eps_prev, refined.z_t, refined.losses)

    def prepare_sources(self, z_src: Tensor, cond_src: Tensor, k: int) -> list[SourceDraw]:
        """The source sides of the next ``k`` steps of source ``z_src`` (B, ...), each carrying ``eps_src``.

        Draws each step's t (and t_prev) and noises from the generator in exactly the order ``k`` calls of
        :meth:`draw_source` would, then runs FPR on all ``k * B`` samples in one batch and the source branch's CFG
        prediction (the edit's guidance scale) in one more call; :meth:`step` given one of them evaluates only the
        target branch. The same steps as the sequential path within float tolerance (batched UNet calls round
        differently). ``k = 1`` still precomputes the source branch; the sequential path is :meth:`step` without
        ``source``. Not for ``cds`` with ``k > 1`` (its PatchNCE patches are drawn inside each step).
        """
        cfg = self.config
        if k < 1:
            raise ValueError(f"prepare_sources needs k >= 1 steps (got {k}).")
        if cfg.score == "cds" and k > 1:
            raise UserInputError(
                "A look-ahead of more than one step is not available for cds: it draws its PatchNCE patches from the "
                "run's generator inside each step, after the step's noise."
            )
        z_src = z_src.detach()
        batch = z_src.shape[0]
        drawn, states = [], []
        for _ in range(k):
            drawn.append(self._draw(z_src))
            states.append(self.generator.get_state())
        t = torch.cat([d[0] for d in drawn])
        eps = torch.cat([d[2] for d in drawn])
        z_all = z_src.repeat(k, *([1] * (z_src.dim() - 1)))
        cond_all = cond_src if cond_src.shape[0] == 1 else cond_src.repeat(k, 1, 1)
        losses: list[Tensor] = []
        if cfg.fpr.enabled:
            recorder = _SampleFPRLosses(self.den, z_all, cfg.fpr.metric)
            with phase("fpr"):
                refined = fixed_point_regularization(recorder, z_all, cond_all, t, eps, cfg.fpr)
            z_t, eps, losses = refined.z_t, refined.eps, recorder.losses
        else:
            z_t = add_noise(self.den.alphas_cumprod, z_all, eps, t)
        eps_src = None
        if cfg.score != "sds":
            with torch.no_grad(), phase("source branch"):
                eps_src = self.den.eps(z_t, t, cond_all, cfg.effective_guidance_scale())
        sources = []
        for i, (_, t_prev, _, eps_prev) in enumerate(drawn):
            part = slice(i * batch, (i + 1) * batch)
            sources.append(
                SourceDraw(
                    t=t[part],
                    t_prev=t_prev,
                    eps=eps[part],
                    eps_prev=eps_prev,
                    z_t_src=z_t[part],
                    fpr_losses=[float(loss[part].sum()) for loss in losses],
                    eps_src=None if eps_src is None else eps_src[part],
                    origin="lookahead",
                    guidance_scale=cfg.effective_guidance_scale(),
                    lookahead=k,
                    generator_after=states[i],
                )
            )
        return sources

    def step(
        self,
        *,
        z_src: Tensor,
        z_trg: Tensor,
        cond_src: Tensor,
        cond_trg: Tensor,
        source: SourceDraw | None = None,
    ) -> StepOutput:
        """One guidance evaluation for the current target latent (z_trg may require grad; it is not modified).

        ``source`` is this step's :meth:`draw_source` when the caller ran it first, or one of
        :meth:`prepare_sources` (only the target branch is evaluated then); drawn here otherwise (same random
        stream either way)."""
        cfg = self.config
        z_src = z_src.detach()
        if source is None:
            source = self.draw_source(z_src, cond_src)
        t, t_prev, eps, eps_prev, z_t_src = source.t, source.t_prev, source.eps, source.eps_prev, source.z_t_src
        fpr_losses = source.fpr_losses
        diag: dict[str, float | int | list[float] | None] = {"t": int(t[0])}
        if t_prev is not None:
            diag["t_prev"] = int(t_prev[0])
        if t.shape[0] > 1:
            diag["t_all"] = t.tolist()
        diag["fpr_losses"] = fpr_losses
        diag["source"] = source.origin
        diag["source_cached"] = source.cached
        diag["lookahead"] = source.lookahead
        if source.pool_index is not None:
            diag["pool_index"] = source.pool_index

        scale = cfg.effective_guidance_scale()
        z_det = z_trg.detach()
        eps_src = source.eps_src if source.guidance_scale == scale else None  # stale after a live scale change
        with phase("guidance branches"):
            if cfg.score == "sds":
                z_t_trg = scores.target_noisy_latent(self.den.alphas_cumprod, z_t_src, z_src, z_det, t)
                result = scores.sds(self.den, z_det, t, eps, cond_trg, scale, z_t_trg=z_t_trg)
            elif cfg.score in ("dds", "cds"):
                result = scores.dds(self.den, z_src, z_det, z_t_src, t, cond_src, cond_trg, scale, eps_src)
            else:
                assert eps_prev is not None and t_prev is not None
                result = scores.pds(
                    self.den,
                    z_src,
                    z_det,
                    z_t_src,
                    t,
                    t_prev,
                    eps_prev,
                    cond_src,
                    cond_trg,
                    scale,
                    cfg.pds.posterior,
                    eps_src,
                )

        diag["fpr_loss_final"] = None
        if (
            cfg.fpr.enabled
            and cfg.fpr.iterations > 0
            and result.eps_src is not None
            and scale == cfg.fpr.source_guidance_scale
        ):
            # The source branch's forward at z_t^src* is exactly FPR's next forward: its loss costs nothing.
            x0 = tweedie_x0(self.den.alphas_cumprod, z_t_src, result.eps_src, t)
            diag["fpr_loss_final"] = float(fpr_distance(x0, z_src, cfg.fpr.metric))

        batch = result.grad.shape[0]
        nonfinite = int(result.nonfinite.sum()) if result.nonfinite is not None else 0
        aux = None
        if cfg.score == "cds" and cfg.cds.weight != 0:
            with phase("guidance branches"):
                aux = cfg.cds.weight * self._cds_term(z_trg, z_src, z_t_src, t, cond_src, cond_trg)
            diag["cds_loss"] = float(aux.detach())
            if not torch.isfinite(aux.detach()):  # one loss for the batch: its backward would poison every sample
                aux, nonfinite = None, batch
        diag["grad_norm"] = float(result.grad.flatten(1).norm(dim=1).mean())
        diag["nonfinite"] = nonfinite
        self.nonfinite.update(nonfinite, batch, cfg.max_nonfinite_steps, scale, getattr(self.den, "dtype", None))
        return StepOutput(grad=result.grad, aux_loss=aux, diagnostics=diag)

    def _cds_term(
        self, z_trg: Tensor, z_src: Tensor, z_t_src: Tensor, t: int, cond_src: Tensor, cond_trg: Tensor
    ) -> Tensor:
        """PatchNCE between self-attention features of the source branch (reference, no grad) and of the target
        branch (differentiable w.r.t. z_trg); conditional branches only, as the official CDS code uses."""
        cds_cfg = self.config.cds
        capture = self.den.capture_self_attention  # type: ignore[attr-defined]
        with torch.no_grad(), capture() as ref_feats:
            self.den.eps(z_t_src, t, cond_src, 1.0)
        z_t_trg = scores.target_noisy_latent(self.den.alphas_cumprod, z_t_src, z_src, z_trg, t)
        with torch.enable_grad(), capture() as trg_feats:
            self.den.eps(z_t_trg, t, cond_trg, 1.0)
        return scores.attention_patch_nce(
            list(ref_feats),
            list(trg_feats),
            tuple(z_trg.shape[-2:]),
            cds_cfg.patch_sizes,
            cds_cfg.n_patches,
            cds_cfg.temperature,
            self.generator,
        )

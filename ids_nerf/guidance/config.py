"""Configuration of the guidance: the score, its CFG scale and timestep range, FPR, the CDS / PDS options and how the
source side of each step is computed (per step, look-ahead batches or a reused pool)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ids_nerf.errors import UserInputError
from ids_nerf.guidance.fpr import FPRConfig
from ids_nerf.guidance.methods import DEFAULT_GUIDANCE_SCALE, ScoreName, method_name, parse_method


@dataclass
class CDSConfig:
    """Contrastive Denoising Score (CDS) PatchNCE term; defaults from the official CDS code."""

    weight: float = 3.0
    """Weight of the PatchNCE loss on up-block self-attention features (official w_cut = 3.0)."""
    patch_sizes: tuple[int, ...] = (1, 2)
    """Average-pooling patch sizes of the features (official: 1 and 2)."""
    n_patches: int = 256
    """Number of random patch locations per layer and patch size."""
    temperature: float = 0.07
    """PatchNCE softmax temperature."""


@dataclass
class PDSConfig:
    """Posterior Distillation Sampling options; defaults from the official PDS code."""

    num_inference_steps: int = 500
    """DDIM grid on which (t, t_prev) pairs are drawn."""
    grid_range: tuple[float, float] = (0.02, 0.98)
    """Range of the index into the DDIM grid, as fractions of its length (official: 0.02, 0.98)."""
    posterior: Literal["official", "exact"] = "official"
    """Posterior coefficients: `official` (one-step beta_t even for skipped steps, as the PDS code) or `exact`."""


@dataclass
class SourceSideConfig:
    """How the source side of each step (t and noise draws, FPR, the source branch's prediction) is computed. The
    defaults give the paper's exact algorithm's results: every draw in the steps' order, no reuse."""

    lookahead: int | Literal["auto"] = "auto"
    """K: draw the next K steps' timesteps and noises at once (in the order the steps would draw them), run FPR and
    the source branch for all K in one batch, then take K steps that evaluate only the target branch. Exact (the
    same edit within float tolerance); memory grows with K (FPR's backward runs on K times the batch). `auto`
    (default): K from the memory one step's batch measured and the memory free (CPU RAM or CUDA), at most 8 and the
    steps left (a NeRF view block), 1 for cds and where it gains nothing; the choice and why are in the
    diagnostics. 1 = in each step (pins the paper's per-step algorithm). With --source.pool, the pool is computed K
    entries at a time. K > 1 is not available for cds."""
    pool: int | None = None
    """P: compute P source sides per source once and let every step reuse one of them (a random pass over the
    pool, then another, seeded by the run's seed); reuse factor r = steps / P. Approximate, not the paper's
    algorithm: each t and guided noise comes back r times. None = no reuse (default, exact). Not for cds."""

    def check(self, score: str, cache: bool = False, prefix: str = "--source", cache_flag: str = "--cache-dir") -> None:
        """Raise a UserInputError naming the flag (``prefix``.lookahead, ``prefix``.pool, ``cache_flag``) for a value
        out of range (:data:`ids_nerf.guidance.validation.RANGES`) or a combination ``score`` cannot use (``cache``:
        a source-side disk cache is wanted)."""
        from ids_nerf.guidance.validation import check_config

        check_config(self, prefix + ".")
        if isinstance(self.lookahead, str) and self.lookahead != "auto":
            raise UserInputError(f"{prefix}.lookahead must be auto or a whole number >= 1 (got {self.lookahead!r}).")
        if score != "cds":
            return
        reason = "cds draws its PatchNCE patches from the run's generator inside each step, after the step's noise"
        if (self.lookahead != "auto" and self.lookahead > 1) or self.pool is not None:
            raise UserInputError(
                f"{prefix}.lookahead > 1 and {prefix}.pool are not available for cds ({reason}); "
                f"use {prefix}.lookahead auto or 1 and no {prefix}.pool."
            )
        if cache:
            raise UserInputError(f"{cache_flag} (the source-side cache) is not available for cds ({reason}).")


@dataclass
class GuidanceConfig:
    """Score-distillation loss and its options. Score and FPR are orthogonal (dds + FPR = IDS)."""

    score: ScoreName = "dds"
    """Score: `sds`, `dds`, `cds` or `pds`. Enable `fpr` for the identity-preserving variant (dds + FPR = IDS)."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale of the edit's score; None = the score's official default (7.5; PDS 100)."""
    t_range: tuple[float, float] = (0.05, 0.95)
    """Timestep range as fractions of the prior's training steps (SDS/DDS/CDS): t ~ U{50, ..., 948} for 1000 steps,
    as the official CDS/IDS code (randint(50, 949))."""
    fpr: FPRConfig = field(default_factory=FPRConfig)
    """Fixed-point regularization (the IDS module)."""
    cds: CDSConfig = field(default_factory=CDSConfig)
    """CDS options (score cds)."""
    pds: PDSConfig = field(default_factory=PDSConfig)
    """PDS options (score pds)."""
    source: SourceSideConfig = field(default_factory=SourceSideConfig)
    """Source side of each step: K steps ahead in one batch (exact, K chosen from the free memory by default), in
    the step (K = 1) or reused from a per-source pool (approximate)."""
    max_nonfinite_steps: int = 10
    """Stop with an error after this many consecutive steps whose guidance gradient holds NaN/Inf (the guidance
    diverged or the prior overflowed). Each such step is counted in the step diagnostics (`nonfinite`) and skipped
    for the affected samples (their gradient set to zero); the first one prints a warning."""

    def effective_guidance_scale(self) -> float:
        """The CFG scale the edit uses: ``guidance_scale``, or the score's default."""
        return DEFAULT_GUIDANCE_SCALE[self.score] if self.guidance_scale is None else self.guidance_scale

    @property
    def name(self) -> str:
        """The registered method name of this configuration (``ids`` for dds + FPR)."""
        return method_name(self.score, self.fpr.enabled, self.fpr.jacobian)


def guidance_config(name: str) -> GuidanceConfig:
    """The GuidanceConfig of a registered method (see :data:`ids_nerf.guidance.methods.METHODS`); an FPR method may
    carry ``-nN`` for N FPR iterations (``ids-n1``)."""
    try:
        spec, iterations = parse_method(name)
    except KeyError as err:
        text = str(err.args[0])
        raise UserInputError(text[:1].upper() + text[1:] + ".") from None  # not capitalize(): keeps "FPR", "-nN"
    fpr = FPRConfig(enabled=spec.fpr, jacobian=spec.jacobian)
    if iterations is not None:
        fpr.iterations = iterations
    return GuidanceConfig(score=spec.score, fpr=fpr)

"""Configuration of the guidance: the score, its CFG scale and timestep range, FPR, and the CDS / PDS options."""

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
        raise UserInputError(str(err.args[0]).capitalize() + ".") from None
    fpr = FPRConfig(enabled=spec.fpr, jacobian=spec.jacobian)
    if iterations is not None:
        fpr.iterations = iterations
    return GuidanceConfig(score=spec.score, fpr=fpr)

"""ids-edit-image: text-guided editing of one image with SDS / DDS / CDS / PDS, each with optional FPR (IDS).

Example:
    ids-edit-image --image cat.png --src-prompt "a photo of a cat" --trg-prompt "a photo of a pig" \\
        --method ids --out pig.png

The source side of several steps is computed in one batch by default (--source.lookahead auto: K from the free
memory, the same edit within float tolerance; --source.lookahead 1 pins the per-step algorithm). Faster, approximate:
--source.pool 50 (each step reuses one of 50 precomputed source sides). Another target prompt for the same image
and source prompt: --cache-dir DIR skips the source side when it was computed before.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from ids_nerf.atomic import StagedOutputs
from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.config import CDSConfig, GuidanceConfig, PDSConfig, SourceSideConfig, guidance_config
from ids_nerf.guidance.fpr import FPRConfig
from ids_nerf.guidance.methods import METHODS
from ids_nerf.guidance.prior import PriorConfig, check_prior
from ids_nerf.guidance.sizes import render_size
from ids_nerf.guidance.validation import check_config, check_guidance
from ids_nerf.image.editor import OptimConfig
from ids_nerf.image.io import check_image_path, check_outputs, load_image, save_trajectory, to_pil, to_tensor

MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]  # the registry's names, one place


@dataclass
class EditImageConfig:
    """Edit an image so that it matches the target prompt while keeping the source's identity."""

    image: Path
    """Input image (PNG, JPEG, ...; RGBA is composited on white, 16-bit gray scaled to 8 bits, CMYK and LAB
    converted to sRGB, EXIF rotation applied, any size; modes with no known meaning are refused). It is edited at
    its aspect ratio: long side = the prior's resolution, short side rounded to the UNet's size multiple."""
    src_prompt: str
    """Prompt describing the input image, e.g. "a photo of a cat"."""
    trg_prompt: str
    """Prompt describing the wanted edit, e.g. "a photo of a pig"."""
    out: Path
    """Output image path (written at the input's size). Never overwritten unless --overwrite, never the --image file.
    Its folder (created if missing) must be writable; checked before anything loads."""
    method: MethodName = "ids"
    """Editing method: ids (= dds + FPR, the paper's method), dds, sds, cds, pds, any of them with FPR (*-fpr), or
    a Jacobian-free FPR variant (*-jf: cheaper, see `ids-bench-identity` for its identity metrics)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimisation of the latent (the official code's plain SGD)."""
    seed: int = 0
    """Seed of every random draw (timesteps, noises, CDS patches, VAE sampling): same seed, same edit."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """Diffusion prior: model (hub id, local diffusers folder, `toy` bundled offline model, `tiny` random weights),
    device, dtype, VAE encoding."""
    guidance_scale: float | None = None
    """CFG scale of the edit's score; default: the method's official value (7.5; PDS 100)."""
    t_range: tuple[float, float] = (0.05, 0.95)
    """Timestep range as fractions of the prior's training steps (SDS/DDS/CDS)."""
    fpr: FPRConfig = field(default_factory=FPRConfig)
    """Fixed-point regularization; `enabled` is switched on by --method ids / *-fpr, or by --fpr.enabled."""
    cds: CDSConfig = field(default_factory=CDSConfig)
    """CDS options (method cds / cds-fpr)."""
    pds: PDSConfig = field(default_factory=PDSConfig)
    """PDS options (method pds / pds-fpr)."""
    source: SourceSideConfig = field(default_factory=SourceSideConfig)
    """Source side of each step (t and noise draws, FPR, source branch): --source.lookahead K steps ahead in one
    batch (exact, faster; default auto: K from the memory, recorded in the .json), in the step (K = 1, the paper's
    per-step algorithm), or reused from a --source.pool of P per image (approximate, faster still)."""
    max_nonfinite_steps: int = 10
    """Stop with an error (exit code 2, nothing written) after this many consecutive steps whose guidance gradient
    holds NaN/Inf; each such step is skipped (its gradient set to zero) and counted in the diagnostics (`nonfinite`),
    the first one with a warning."""
    cache_dir: Path | None = None
    """Folder of a disk cache of precomputed source sides (under <dir>/source-side/, one safetensors file per key:
    prior, source image latent, source prompt, seed, FPR and score options, look-ahead/pool layout; never the target
    prompt). A later edit of the same image and source prompt with another target prompt loads them and skips FPR
    and the source branch. Implies precomputing (--source.lookahead batches, K = 1 included). Default: no cache.
    Not for cds."""
    save_trajectory: Path | None = None
    """Also save intermediate decodes (at the edit size): a strip (.png/.jpg) or an animation (.gif)."""
    trajectory_frames: int = 8
    """Number of intermediate decodes in the trajectory."""
    save_diagnostics: bool = True
    """Write <out>.json next to the output with the options as given, the effective guidance configuration (method
    and default scales applied), the edit size, timings, how the source sides were obtained (source_side: mode,
    cache status, the pool's FPR losses) and per-step diagnostics (t, FPR losses, source: step / lookahead / pool,
    source_cached)."""
    mask: Path | None = None
    """Edit only where this mask image is white (grey: partly; same size as --image): the latent outside keeps the
    source's and the output outside is the input's (--mask-composite). None: the whole image."""
    mask_feather: float = 0.0
    """Standard deviation in pixels of a Gaussian blur applied to --mask before use (soft edges); 0: as given."""
    mask_composite: bool = True
    """With --mask: composite the decoded edit over the input with the mask, so the pixels outside are exactly the
    input's (otherwise they are the VAE's reconstruction of the source latent kept there)."""
    overwrite: bool = False
    """Allow overwriting existing output files."""
    progress: bool = True
    """Show a progress bar."""

    def guidance(self) -> GuidanceConfig:
        """The GuidanceConfig these options describe, with the method's score and FPR setting applied."""
        method = guidance_config(self.method)
        fpr = replace(
            self.fpr,
            enabled=self.fpr.enabled or method.fpr.enabled,
            jacobian="free" if method.fpr.jacobian == "free" else self.fpr.jacobian,
        )
        return GuidanceConfig(
            score=method.score,
            guidance_scale=self.guidance_scale,
            t_range=self.t_range,
            fpr=fpr,
            cds=self.cds,
            pds=self.pds,
            source=self.source,
            max_nonfinite_steps=self.max_nonfinite_steps,
        )


def validate(cfg: EditImageConfig) -> None:
    """Check everything the user gave before the image or any model loads; raise a UserError with the fix."""
    if not cfg.src_prompt.strip():
        raise UserInputError('--src-prompt is empty: describe the input image, e.g. "a photo of a cat".')
    if not cfg.trg_prompt.strip():
        raise UserInputError('--trg-prompt is empty: describe the edit, e.g. "a photo of a pig".')
    check_guidance(cfg.guidance(), "--")  # every guidance option: finite and in range (RANGES)
    check_config(cfg, "--")  # --optim.*, --seed, --trajectory-frames, ...
    cfg.source.check(guidance_config(cfg.method).score, cache=cfg.cache_dir is not None)
    check_image_path(cfg.image)
    if cfg.mask is not None:
        from ids_nerf.image.region import load_mask

        image = load_image(cfg.image)
        load_mask(cfg.mask, (image.height, image.width))
    # every output location writable, none of them the input (even with --overwrite), before the prior loads
    check_outputs(
        cfg.image,
        cfg.out,
        cfg.overwrite,
        sidecar=cfg.out.with_suffix(".json") if cfg.save_diagnostics else None,
        trajectory=cfg.save_trajectory,
        cache_dir=cfg.cache_dir,
    )
    check_prior(cfg.prior)


def run(cfg: EditImageConfig) -> dict:
    """Run one edit; returns a summary (paths, timings). Raises UserInputError / PriorLoadError on bad input."""
    import torch

    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.guidance.prior import DiffusionPrior
    from ids_nerf.guidance.source_side import SourceSupplier
    from ids_nerf.image.editor import edit_latent

    validate(cfg)
    source = load_image(cfg.image)
    guidance = cfg.guidance()
    t0 = time.perf_counter()
    prior = DiffusionPrior(cfg.prior)
    t_load = time.perf_counter() - t0

    distiller = ScoreDistiller(prior, guidance, seed=cfg.seed, flag_prefix="--", lr_flag="--optim.lr")
    edit_size = render_size(source.height, source.width, prior.resolution, prior.size_multiple)  # (h, w)
    with torch.no_grad():
        z_src = prior.encode(to_tensor(source, edit_size).to(prior.device), generator=distiller.generator)
    cond_src, cond_trg = prior.text_embeddings(cfg.src_prompt), prior.text_embeddings(cfg.trg_prompt)
    frames = cfg.trajectory_frames if cfg.save_trajectory else 0
    mask, region = None, None
    if cfg.mask is not None:
        from ids_nerf.image.region import feather, latent_mask, load_mask

        mask = feather(load_mask(cfg.mask, (source.height, source.width)), cfg.mask_feather)
        region = latent_mask(mask, tuple(z_src.shape[-2:]), z_src.device)
    t1 = time.perf_counter()
    sources = SourceSupplier(distiller, z_src, cond_src, cfg.optim.steps, cache_dir=cfg.cache_dir)
    result = edit_latent(
        distiller,
        z_src,
        cond_src,
        cond_trg,
        cfg.optim,
        decode=prior.decode,
        progress=cfg.progress,
        frames=frames,
        sources=sources,
        region=region,
    )
    t_edit = time.perf_counter() - t1
    with torch.no_grad():
        edited = prior.decode(result.latent)

    summary = {
        "out": str(cfg.out),
        "method": guidance.name,
        "steps": cfg.optim.steps,
        "seconds_load": t_load,
        "seconds_edit": t_edit,
        "seconds_per_step": t_edit / max(cfg.optim.steps, 1),
        "device": str(prior.device),
        "resolution": prior.resolution,
        "edit_size": list(edit_size),  # (height, width)
        "latent_shape": list(z_src.shape[1:]),
        "source_side": result.source_side,
        "nonfinite_steps": distiller.nonfinite.total,
        "region": None
        if mask is None
        else {"mask": str(cfg.mask), "fraction": float(mask.mean()), "composite": cfg.mask_composite},
    }
    output = to_pil(edited, (source.height, source.width))
    if mask is not None and cfg.mask_composite:
        from ids_nerf.image.region import composite

        output = composite(output, source, mask)
    # Outputs only after the whole edit, each to a temporary file moved into place with the others at the end: an
    # interruption or error leaves none of them (half-written) and no folder made for them.
    with StagedOutputs() as staged:
        output.save(staged.path(cfg.out))
        if cfg.save_trajectory is not None and result.frames:
            save_trajectory([to_pil(f) for f in result.frames], staged.path(cfg.save_trajectory))
            summary["trajectory"] = str(cfg.save_trajectory)
        if cfg.save_diagnostics:
            options = json.loads(json.dumps(asdict(cfg), default=str))
            effective = asdict(replace(guidance, guidance_scale=guidance.effective_guidance_scale()))
            record = {**summary, "options": options, "guidance": effective, "history": result.history}
            staged.path(cfg.out.with_suffix(".json")).write_text(json.dumps(record, indent=1))
        staged.commit()
    return summary


def entrypoint() -> None:
    """Console entry point; user errors print one paragraph and exit with code 2, Ctrl-C / SIGTERM one line and
    130 / 143 (no output is written unless the edit finishes)."""
    _, summary = run_console(
        "ids-edit-image", EditImageConfig, run, __doc__, interrupted=lambda: "interrupted; nothing was written"
    )
    print(
        f"wrote {summary['out']} ({summary['method']}, {summary['steps']} steps, "
        f"{summary['seconds_per_step']:.3f} s/step on {summary['device']})"
    )


if __name__ == "__main__":
    entrypoint()

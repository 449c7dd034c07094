"""Quality gates of the bundled toy prior, scored by the analytic detectors of :mod:`ids_nerf.toy.detectors`.

    python -m ids_nerf.toy.quality --prior.model ids_nerf/toy/weights/toy-prior

Gates (defaults of :class:`QualityConfig`):

* ``n_samples`` (200) prompted samples, single-object prompts ``"a {color} {shape} on a {floor} floor"``
  cycling through all 7 x 4 x 2 combinations, DDIM (``steps``, eta 0) with classifier-free guidance, decoded by
  the VAE: the dominant object colour (:func:`~ids_nerf.toy.detectors.dominant_color`) matches the prompt in
  >= 85% and the shape (:func:`~ids_nerf.toy.detectors.shape_class`) in >= 70% of the samples;
* VAE round trip (encode to the posterior mean, decode) of ``n_vae_images`` held-out scenes (the
  :data:`~ids_nerf.toy.training_data.HOLDOUT_SEED` stream, never trained on): mean PSNR >= 26 dB.

Everything goes through :class:`ids_nerf.guidance.prior.DiffusionPrior`, the code path the editors use.
A grid of samples (prompt, and what the detectors saw) is written to ``grid``. Exit status: 0 when every gate
holds, 1 when one fails, 2 on a user error (e.g. a prior that cannot be loaded).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from ids_nerf.console import run_console
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.toy.detectors import dominant_color, shape_class
from ids_nerf.toy.scene_spec import COLORS, FLOORS, SHAPES
from ids_nerf.toy.training_data import HOLDOUT_SEED, SINGLE_OBJECT_FRACTION, generate_dataset


@dataclass(frozen=True)
class PromptSpec:
    """A single-object prompt and what it asks for."""

    prompt: str
    """The text, e.g. ``"a red sphere on a checkered floor"``."""
    color: str
    """Requested colour (a key of ``COLORS``)."""
    shape: str
    """Requested shape (one of ``SHAPES``)."""
    floor: str
    """Requested floor (one of ``FLOORS``)."""


@dataclass
class QualityConfig:
    """Which prior to check, and how."""

    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="toy", device="cpu", dtype="float32"))
    """Prior to check: model ``toy`` (the bundled one) or a diffusers folder; device, dtype."""
    n_samples: int = 200
    """Prompted samples (the prompts cycle through all colour/shape/floor combinations)."""
    steps: int = 50
    """DDIM steps."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale."""
    seed: int = 0
    """Seed of the initial noise."""
    batch_size: int = 50
    """Samples denoised together (results do not depend on it)."""
    n_vae_images: int = 2000
    """Held-out scenes for the VAE round-trip PSNR."""
    color_gate: float = 0.85
    """Minimum share of samples whose object colour matches the prompt."""
    shape_gate: float = 0.70
    """Minimum share of samples whose shape matches the prompt."""
    psnr_gate: float = 26.0
    """Minimum mean VAE round-trip PSNR (dB) on held-out scenes."""
    grid: Path | None = Path("outputs/toy-prior-quality/samples.png")
    """Where to write the grid of the first 56 samples (None: no grid); relative paths are under the current
    folder."""
    json_out: Path | None = None
    """Optional path for the full results as JSON."""
    samples_out: Path | None = None
    """Optional ``.npz`` for every sample (uint8 ``images``) with its requested ``colors``/``shapes``/``floors``, to
    score them again without sampling."""
    threads: int = 2
    """Torch CPU threads."""


def single_object_prompts(n: int) -> list[PromptSpec]:
    """``n`` prompts cycling through every (colour, shape, floor) combination in a fixed order."""
    combos = [(c, s, f) for c in COLORS for s in SHAPES for f in FLOORS]
    out = []
    for i in range(n):
        c, s, f = combos[i % len(combos)]
        article = "an" if c[0] in "aeiou" else "a"
        out.append(PromptSpec(f"{article} {c} {s} on a {f} floor", c, s, f))
    return out


@torch.no_grad()
def sample(
    prior: Any,
    prompts: list[str],
    steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int = 0,
    batch_size: int = 50,
    progress: bool = True,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDIM samples (eta 0) of a :class:`~ids_nerf.guidance.prior.DiffusionPrior`, images (N, 3, H, W) in [0, 1].

    The initial noise of sample ``i`` depends only on ``seed`` and ``i`` (not on ``batch_size``); ``noise``
    (N, C, h, w) replaces it (:mod:`ids_nerf.toy.diagnose` starts from altered noise).
    """
    from diffusers import DDIMScheduler  # diffusers takes seconds to import; only sampling needs it

    scheduler = DDIMScheduler.from_config(prior.scheduler.config)
    scheduler.set_timesteps(steps)
    c, h, w = prior.latent_shape(prior.resolution, prior.resolution)
    if noise is None:
        noise = torch.randn(len(prompts), c, h, w, generator=torch.Generator().manual_seed(seed))
    noise = noise * scheduler.init_noise_sigma
    images = []
    chunks = range(0, len(prompts), batch_size)
    for s in tqdm(chunks, desc="sampling", leave=False, disable=not progress):
        cond = torch.cat([prior.text_embeddings(p) for p in prompts[s : s + batch_size]])
        z = noise[s : s + batch_size].to(prior.device)
        for t in scheduler.timesteps:
            eps = prior.eps(z, t, cond, guidance_scale)
            z = scheduler.step(eps, t, z).prev_sample
        images.append(prior.decode(z).float().cpu())
    return torch.cat(images)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3)."""
    return (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def score(images: np.ndarray, specs: list[PromptSpec]) -> dict[str, Any]:
    """Colour and shape accuracy of uint8 samples against their prompts, with per-class breakdowns."""
    per = []
    for img, spec in zip(images, specs, strict=True):
        per.append({"prompt": spec.prompt, "color": dominant_color(img), "shape": shape_class(img)})
    color_ok = [p["color"] == s.color for p, s in zip(per, specs, strict=True)]
    shape_ok = [p["shape"] == s.shape for p, s in zip(per, specs, strict=True)]
    by_color = {
        c: float(np.mean([ok for ok, s in zip(color_ok, specs, strict=True) if s.color == c]))
        for c in COLORS
        if any(s.color == c for s in specs)
    }
    by_shape = {
        k: float(np.mean([ok for ok, s in zip(shape_ok, specs, strict=True) if s.shape == k]))
        for k in SHAPES
        if any(s.shape == k for s in specs)
    }
    confusion: dict[str, dict[str, int]] = {k: {} for k in SHAPES}
    for p, s in zip(per, specs, strict=True):
        confusion[s.shape][p["shape"]] = confusion[s.shape].get(p["shape"], 0) + 1
    return {
        "n": len(specs),
        "color_accuracy": float(np.mean(color_ok)),
        "shape_accuracy": float(np.mean(shape_ok)),
        "both_accuracy": float(np.mean([a and b for a, b in zip(color_ok, shape_ok, strict=True)])),
        "color_accuracy_by_color": by_color,
        "shape_accuracy_by_shape": by_shape,
        "shape_confusion": confusion,
        "per_prompt": per,
    }


def evaluate_samples(
    prior: Any,
    specs: list[PromptSpec],
    steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int = 0,
    batch_size: int = 50,
) -> dict[str, Any]:
    """Sample every prompt of ``specs`` and :func:`score` the results (the uint8 images under ``"images"``)."""
    images = to_uint8_images(sample(prior, [s.prompt for s in specs], steps, guidance_scale, seed, batch_size))
    return {**score(images, specs), "images": images}


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB, torchmetrics) of uint8 or [0, 1] float batches (N, H, W, 3); identical images score
    120 dB (a mean squared error of 1e-12), not infinity."""

    from torchmetrics.functional.image import peak_signal_noise_ratio  # ~5 s to import; only the VAE gate needs it

    def unit(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.astype(np.float64) / (255.0 if x.dtype == np.uint8 else 1.0))

    values = peak_signal_noise_ratio(unit(a), unit(b), data_range=1.0, reduction="none", dim=(1, 2, 3))
    return values.clamp(max=120.0).numpy()


def holdout_images(n: int, size: int = 64) -> np.ndarray:
    """The first ``n`` held-out scenes (never trained on), uint8 (n, size, size, 3)."""
    images, _ = generate_dataset(n, size, HOLDOUT_SEED, SINGLE_OBJECT_FRACTION, workers=1, desc="held-out scenes")
    return images


@torch.no_grad()
def vae_round_trip(prior: Any, images: np.ndarray, batch_size: int = 100) -> np.ndarray:
    """Decoded posterior means of uint8 images (N, H, W, 3), as uint8."""
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(images[s : s + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        out.append(to_uint8_images(prior.decode(prior.encode(x)).float().cpu()))
    return np.concatenate(out)


def save_grid(
    images: np.ndarray,
    specs: list[PromptSpec],
    results: list[dict[str, Any]],
    path: Path,
    columns: int = 8,
    scale: int = 2,
) -> Path:
    """PNG grid: each sample (upscaled) above its prompt and the detected colour/shape (``ok``/``X`` marks)."""
    n = len(images)
    size = images.shape[1] * scale
    cell_w, cell_h = max(size, 150), size + 26
    rows = math.ceil(n / columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (img, spec, res) in enumerate(zip(images, specs, results, strict=True)):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        canvas.paste(Image.fromarray(img).resize((size, size), Image.NEAREST), (x, y))
        marks = ("ok" if res["color"] == spec.color else "X") + "/" + ("ok" if res["shape"] == spec.shape else "X")
        draw.text((x + 2, y + size + 1), f"{spec.color} {spec.shape} {spec.floor[:5]}", fill=(0, 0, 0))
        draw.text((x + 2, y + size + 13), f"-> {res['color']} {res['shape']} {marks}", fill=(90, 90, 90))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def run_quality(cfg: QualityConfig) -> dict[str, Any]:
    """Measure every gate of ``cfg``; prints a report and returns the numbers (``passed`` says whether all hold)."""
    from ids_nerf.guidance.prior import DiffusionPrior  # imports diffusers (seconds)

    torch.set_num_threads(cfg.threads)
    prior = DiffusionPrior(cfg.prior)
    t0 = time.perf_counter()
    specs = single_object_prompts(cfg.n_samples)
    res = evaluate_samples(prior, specs, cfg.steps, cfg.guidance_scale, cfg.seed, cfg.batch_size)
    t_sample = time.perf_counter() - t0
    images = res.pop("images")
    if cfg.samples_out is not None:
        Path(cfg.samples_out).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            cfg.samples_out,
            images=images,
            colors=[s.color for s in specs],
            shapes=[s.shape for s in specs],
            floors=[s.floor for s in specs],
        )
    if cfg.grid is not None:
        k = min(56, len(images))
        save_grid(images[:k], specs[:k], res["per_prompt"][:k], cfg.grid)

    t0 = time.perf_counter()
    held = holdout_images(cfg.n_vae_images, prior.resolution)
    values = psnr(held, vae_round_trip(prior, held))
    t_vae = time.perf_counter() - t0

    out = {
        "prior": cfg.prior.model,
        "samples": {k: v for k, v in res.items() if k != "per_prompt"},
        "sampling": {"steps": cfg.steps, "guidance_scale": cfg.guidance_scale, "seed": cfg.seed, "time_s": t_sample},
        "vae_psnr_mean": float(values.mean()),
        "vae_psnr_min": float(values.min()),
        "vae_psnr_p05": float(np.percentile(values, 5)),
        "vae_n_images": int(len(values)),
        "vae_time_s": t_vae,
        "gates": {
            "color": [res["color_accuracy"], cfg.color_gate, res["color_accuracy"] >= cfg.color_gate],
            "shape": [res["shape_accuracy"], cfg.shape_gate, res["shape_accuracy"] >= cfg.shape_gate],
            "vae_psnr": [float(values.mean()), cfg.psnr_gate, float(values.mean()) >= cfg.psnr_gate],
        },
    }
    out["passed"] = all(g[2] for g in out["gates"].values())
    _print_report(out, cfg)
    if cfg.json_out is not None:
        Path(cfg.json_out).write_text(json.dumps({**out, "per_prompt": res["per_prompt"]}, indent=2))
    return out


def _print_report(out: dict[str, Any], cfg: QualityConfig) -> None:
    s = out["samples"]
    print(f"prior: {out['prior']}")
    print(
        f"{s['n']} samples, DDIM {cfg.steps} steps, CFG {cfg.guidance_scale}, seed {cfg.seed} "
        f"({out['sampling']['time_s']:.0f} s)"
    )
    print("  colour by colour: " + ", ".join(f"{k} {v:.2f}" for k, v in s["color_accuracy_by_color"].items()))
    print("  shape by shape:   " + ", ".join(f"{k} {v:.2f}" for k, v in s["shape_accuracy_by_shape"].items()))
    print(f"  shape confusion (true -> detected): {json.dumps(s['shape_confusion'])}")
    print(
        f"VAE round trip on {out['vae_n_images']} held-out scenes: mean PSNR {out['vae_psnr_mean']:.2f} dB "
        f"(5th percentile {out['vae_psnr_p05']:.2f}, min {out['vae_psnr_min']:.2f})"
    )
    for name, (value, gate, ok) in out["gates"].items():
        unit = " dB" if name == "vae_psnr" else ""
        print(f"gate {name:9s}: {value:.3f}{unit} (>= {gate}{unit}) {'PASS' if ok else 'FAIL'}")
    if cfg.grid is not None:
        print(f"grid of samples: {cfg.grid}")


def entrypoint() -> None:
    """Console entry point (``python -m ids_nerf.toy.quality``); exits with status 1 when a gate fails."""
    _, out = run_console("ids_nerf.toy.quality", QualityConfig, run_quality, __doc__)
    raise SystemExit(0 if out["passed"] else 1)


if __name__ == "__main__":
    entrypoint()

"""Why does a prior miss its quality gates? Measurements that separate the model, the detectors and the sampler.

    python -m ids_nerf.toy.diagnose --prior.model toy

Four measurements, printed and optionally written as JSON:

* **detector ceiling**: colour and shape accuracy of the detectors of :mod:`ids_nerf.toy.quality` on held-out
  single-object scenes (never trained on) and on their VAE round trips: how well a perfect UNet could score;
* **loss by timestep**: epsilon MSE of the UNet on those scenes at fixed timesteps with their own caption, the empty
  caption and a caption naming another shape: where the model uses the text;
* **noise-mean gain**: the slope of the predicted ``x0``'s per-channel spatial mean against the per-channel mean of
  pure-noise inputs, at the first DDIM timesteps. A UNet that cannot see its input's channel means predicts noise
  without them and so reads them as image content: slope ``1 / sqrt(alpha_bar)`` (13.2 at t=981), against the
  Bayes-optimal ``a s^2 / (a^2 s^2 + (1 - a^2) / (h w))`` (``a = sqrt(alpha_bar)``, ``s`` the spread of the
  training images' channel means, ``h w`` latent pixels). At 16x16 latents the mean of the starting noise is large
  (std 1/16), so a blind UNet starts every sample from a random global tone;
* **mean-start counterfactual**: the colour/shape accuracy of the gate's sampling (DDIM, CFG) from plain noise and
  from the same noise with its channel means replaced by those an average training image leaks at the first
  timestep. A large gap says the samples fail because of the starting noise's mean, not because of the text.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ids_nerf.console import run_console
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.toy.generation import GenerationConfig, generate_one
from ids_nerf.toy.quality import PromptSpec, sample, score, single_object_prompts, to_uint8_images
from ids_nerf.toy.scene_spec import SHAPES
from ids_nerf.toy.training_data import HOLDOUT_SEED


@dataclass
class DiagnoseConfig:
    """Which prior to diagnose, and on how much data."""

    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="toy", device="cpu", dtype="float32"))
    """Prior to diagnose: model ``toy`` (the bundled one) or a diffusers folder; device, dtype."""
    n_images: int = 280
    """Held-out single-object scenes for the detector ceiling, the loss by timestep and the channel-mean spread."""
    timesteps: tuple[int, ...] = (50, 150, 250, 400, 550, 700, 850, 950, 999)
    """Timesteps of the loss by timestep."""
    n_samples: int = 112
    """Prompted samples of the mean-start counterfactual (0: skip it); the prompts of the quality gates."""
    steps: int = 50
    """DDIM steps of the counterfactual's sampling (as the gates)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale of the counterfactual (as the gates)."""
    seed: int = 0
    """Seed of every noise draw."""
    batch_size: int = 56
    """Images through the UNet at once."""
    json_out: Path | None = None
    """Optional path for the results as JSON."""
    threads: int = 2
    """Torch CPU threads."""


def held_out_single_objects(n: int, size: int = 64) -> tuple[np.ndarray, list[PromptSpec]]:
    """The first ``n`` single-object held-out scenes: uint8 images (n, size, size, 3) and, per image, its caption
    with the colour, shape and floor it shows (what :func:`~ids_nerf.toy.quality.score` checks)."""
    images, specs = [], []
    for i in range(n):
        img, cap, meta = generate_one(i, size, HOLDOUT_SEED, GenerationConfig(n_objects=1))
        obj = meta["scene"]["objects"][0]
        images.append(img)
        specs.append(PromptSpec(cap, obj["color"], obj["shape"], meta["scene"]["floor"]))
    return np.stack(images), specs


def _accuracy(images: np.ndarray, specs: list[PromptSpec]) -> dict[str, float]:
    """Colour and shape accuracy of the detectors (:func:`~ids_nerf.toy.quality.score`) on uint8 images."""
    res = score(images, specs)
    return {k: res[k] for k in ("color_accuracy", "shape_accuracy")}


def other_shape_caption(caption: str, shape: str) -> str:
    """``caption`` with its shape word replaced by the next shape of :data:`SHAPES`."""
    return caption.replace(shape, SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)])


@torch.no_grad()
def loss_by_timestep(
    prior: Any,
    latents: Tensor,
    captions: dict[str, list[str]],
    timesteps: tuple[int, ...],
    seed: int = 0,
    batch_size: int = 56,
) -> list[dict[str, float]]:
    """Epsilon MSE of ``prior.unet`` on ``latents`` noised to each timestep (one noise draw per timestep, shared by
    the captions), for every named list of ``captions`` (e.g. ``{"own": ..., "empty": ...}``)."""
    alphas = prior.alphas_cumprod.float().cpu()
    embeddings = {name: torch.cat([prior.text_embeddings(c) for c in caps]) for name, caps in captions.items()}
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=gen)
        z_t = alphas[t].sqrt() * latents + (1 - alphas[t]).sqrt() * noise
        row: dict[str, float] = {"t": int(t)}
        for name, emb in embeddings.items():
            err = 0.0
            for s in range(0, len(latents), batch_size):
                z = z_t[s : s + batch_size].to(prior.device, prior.dtype)
                eps = prior.eps(z, int(t), emb[s : s + batch_size], 1.0).float().cpu()
                err += float((eps - noise[s : s + batch_size]).pow(2).sum())
            row[name] = err / noise.numel()
        rows.append(row)
    return rows


@torch.no_grad()
def noise_mean_gain(
    prior: Any,
    cond: Tensor,
    timesteps: list[int],
    latent_shape: tuple[int, int, int],
    channel_mean_std: Tensor,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per timestep: the least-squares slope of the predicted ``x0``'s channel means against the channel means of
    pure-noise inputs (one input per row of ``cond``, conditional prediction), next to the slope of a UNet blind to
    them (``1 / sqrt(alpha_bar)``) and the Bayes-optimal one for training images whose channel means spread by
    ``channel_mean_std`` (C,)."""
    c, h, w = latent_shape
    alphas = prior.alphas_cumprod.float().cpu()
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in timesteps:
        z = torch.randn(len(cond), c, h, w, generator=gen)
        eps = prior.eps(z.to(prior.device, prior.dtype), int(t), cond, 1.0).float().cpu()
        a = alphas[t].sqrt()
        x0 = (z - (1 - alphas[t]).sqrt() * eps) / a
        zm, xm = z.mean(dim=(2, 3)), x0.mean(dim=(2, 3))
        zc = zm - zm.mean(0)
        slope = (zc * (xm - xm.mean(0))).sum(0) / zc.pow(2).sum(0)
        s2 = channel_mean_std.float().pow(2)
        bayes = a * s2 / (a**2 * s2 + (1 - a**2) / (h * w))
        rows.append(
            {
                "t": int(t),
                "slope": [round(float(v), 3) for v in slope],
                "blind": round(float(1 / a), 3),
                "bayes": [round(float(v), 3) for v in bayes],
            }
        )
    return rows


def mean_start_noise(noise: Tensor, channel_means: Tensor, alpha_bar: float) -> Tensor:
    """``noise`` (N, C, H, W) with each channel's spatial mean replaced by what a latent whose channel means are
    ``channel_means`` (C,) leaks into the noisy latent at ``alpha_bar`` (scaled back to unit noise variance)."""
    leak = alpha_bar**0.5 * channel_means / (1 - alpha_bar) ** 0.5
    return noise - noise.mean(dim=(2, 3), keepdim=True) + leak.view(1, -1, 1, 1)


def run_diagnose(cfg: DiagnoseConfig) -> dict[str, Any]:
    """Run the four measurements of the module docstring; prints a report and returns the numbers."""
    from diffusers import DDIMScheduler

    from ids_nerf.guidance.prior import DiffusionPrior

    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    prior = DiffusionPrior(cfg.prior)
    images, held_out = held_out_single_objects(cfg.n_images, prior.resolution)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    encoded, decoded = [], []
    with torch.no_grad():  # encoded once: the latents of the loss by timestep, decoded for the round trip
        for s in range(0, len(x), 100):
            z = prior.encode(x[s : s + 100].to(prior.device))
            encoded.append(z.float().cpu())
            decoded.append(prior.decode(z).float().cpu())
    latents = torch.cat(encoded)
    out: dict[str, Any] = {
        "prior": cfg.prior.model,
        "detector_ceiling": {
            "real": _accuracy(images, held_out),
            "vae_round_trip": _accuracy(to_uint8_images(torch.cat(decoded)), held_out),
        },
    }
    captions = [h.prompt for h in held_out]
    named = {"own": captions, "empty": [""] * len(captions)}
    named["other_shape"] = [other_shape_caption(h.prompt, h.shape) for h in held_out]
    out["loss_by_timestep"] = loss_by_timestep(prior, latents, named, cfg.timesteps, cfg.seed, cfg.batch_size)

    scheduler = DDIMScheduler.from_config(prior.scheduler.config)
    scheduler.set_timesteps(cfg.steps)
    first = [int(t) for t in scheduler.timesteps[:4]]
    channel_means = latents.mean(dim=(2, 3))
    specs = single_object_prompts(max(cfg.n_samples, 56))
    cond = torch.cat([prior.text_embeddings(s.prompt) for s in specs[:56]])
    shape = prior.latent_shape(prior.resolution, prior.resolution)
    out["channel_means"] = {"mean": channel_means.mean(0).tolist(), "std": channel_means.std(0).tolist()}
    out["noise_mean_gain"] = noise_mean_gain(prior, cond, first, shape, channel_means.std(0), cfg.seed)

    if cfg.n_samples > 0:
        specs = specs[: cfg.n_samples]
        prompts = [s.prompt for s in specs]
        alpha_bar = float(prior.alphas_cumprod[first[0]])
        noise = torch.randn((len(specs), *shape), generator=torch.Generator().manual_seed(cfg.seed))
        counterfactual = {}
        for name, start_noise in (
            ("plain", noise),
            ("mean_start", mean_start_noise(noise, channel_means.mean(0), alpha_bar)),
        ):
            imgs = sample(prior, prompts, cfg.steps, cfg.guidance_scale, cfg.seed, cfg.batch_size, noise=start_noise)
            res = score(to_uint8_images(imgs), specs)
            counterfactual[name] = {k: res[k] for k in ("color_accuracy", "shape_accuracy")}
        out["mean_start_counterfactual"] = counterfactual
    out["time_s"] = time.perf_counter() - start
    _print_report(out)
    if cfg.json_out is not None:
        Path(cfg.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json_out).write_text(json.dumps(out, indent=2))
    return out


def _print_report(out: dict[str, Any]) -> None:
    print(f"prior: {out['prior']}")
    for name, acc in out["detector_ceiling"].items():
        print(
            f"detectors on held-out {name.replace('_', ' ')}: colour {acc['color_accuracy']:.3f}, "
            f"shape {acc['shape_accuracy']:.3f}"
        )
    print("epsilon MSE by timestep (own caption / empty / other shape):")
    for row in out["loss_by_timestep"]:
        print(f"  t={row['t']:4d}: {row['own']:.4f} / {row['empty']:.4f} / {row['other_shape']:.4f}")
    print("x0 channel-mean gain on pure noise (measured per channel; blind UNet; Bayes-optimal per channel):")
    for row in out["noise_mean_gain"]:
        print(f"  t={row['t']:4d}: {row['slope']}; blind {row['blind']}; Bayes {row['bayes']}")
    if "mean_start_counterfactual" in out:
        for name, acc in out["mean_start_counterfactual"].items():
            print(
                f"samples from {name.replace('_', '-')} noise: colour {acc['color_accuracy']:.3f}, "
                f"shape {acc['shape_accuracy']:.3f}"
            )
    print(f"({out['time_s']:.0f} s)")


def entrypoint() -> None:
    """Console entry point (``python -m ids_nerf.toy.diagnose``)."""
    run_console("ids_nerf.toy.diagnose", DiagnoseConfig, run_diagnose, __doc__)


if __name__ == "__main__":
    entrypoint()

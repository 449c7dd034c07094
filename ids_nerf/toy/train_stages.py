"""The stages of the toy prior's training: data, VAE, latents, decoder fine-tuning, text encoder + UNet.

Each stage caches its result in the work dir under :func:`~ids_nerf.toy.train_config.stage_key` and returns it
from there when it exists (with ``resume``); the three training stages define their loss and run it through
:func:`ids_nerf.toy.train_loop.run_training`, which checkpoints and resumes them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from torch import Tensor, nn

from ids_nerf.toy.models import build_scheduler, build_text_encoder, build_unet, build_vae
from ids_nerf.toy.train_config import TrainPriorConfig, stage_key
from ids_nerf.toy.train_loop import LoopConfig, Stopwatch, load, make_ema, remove_checkpoint, run_training, save_atomic
from ids_nerf.toy.training_data import (
    encode_images,
    generate_dataset,
    latent_scaling_factor,
    random_crops,
    to_model_range,
)


def min_snr_weighted(losses: Tensor, alphas_cumprod: Tensor, t: Tensor, gamma: float) -> Tensor:
    """Per-sample losses at timesteps ``t`` times their Min-SNR-gamma weights ``min(SNR, gamma) / SNR`` (epsilon
    prediction), with ``SNR = alpha_bar / (1 - alpha_bar)``.

    Not diffusers' ``compute_snr``: it computes the same SNR as ``(sqrt(alpha_bar) / sqrt(1 - alpha_bar))**2``,
    which differs by up to 3.4e-7 (relative) on SD's schedule, and Adam amplifies rounding differences: with
    ``compute_snr``, or with ``losses * (min(SNR, gamma) / SNR)``, 25 UNet steps of a small configuration end
    7e-4 to 8e-4 apart from this expression, which is the one the recorded command of the shipped weights
    (``train_log.json``) was run with (``tests/test_toy_prior.py`` measures the SNR difference).
    """
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return losses * snr.clamp(max=gamma) / snr


def _psnr(l2: Tensor) -> Tensor:
    """PSNR (dB) of images in [-1, 1] (range 2) from their mean squared error, for the progress bar."""
    return 10 * torch.log10(4.0 / l2.detach().clamp(min=1e-12))


def load_data(cfg: TrainPriorConfig, work: Path) -> tuple[np.ndarray, list[str], dict[str, float]]:
    """Stage 1 (cached in ``work``): training images, captions, and the wall/CPU seconds their rendering took."""
    path = work / f"{stage_key(cfg, 'data')}.npz"
    if cfg.resume and path.is_file():
        with np.load(path) as d:
            seconds = {"wall": float(d["seconds"]), "cpu": float(d["cpu_seconds"]) if "cpu_seconds" in d else -1.0}
            return d["images"], [str(c) for c in d["captions"]], seconds
    clock = Stopwatch().start()
    images, captions = generate_dataset(
        cfg.n_train, cfg.image_size, cfg.seed, cfg.single_object_fraction, cfg.workers, desc="training scenes"
    )
    seconds = clock.stop().read()
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, images=images, captions=np.array(captions), seconds=seconds["wall"], cpu_seconds=seconds["cpu"])
    os.replace(tmp, path)
    return images, captions, seconds


def train_vae(cfg: TrainPriorConfig, images: Tensor, work: Path) -> tuple[nn.Module, dict[str, float]]:
    """Stage 2: the AutoencoderKL on uint8 images (N, H, W, 3) and mirror images; resumable.

    Random crops, L1 + L2 reconstruction and a small KL term. Returns the VAE and the wall/CPU seconds its
    training took (summed over resumed sessions).
    """
    key = stage_key(cfg, "vae")
    final = work / f"{key}.pt"
    if cfg.resume and final.is_file():
        state = load(final)
        vae = build_vae(cfg.vae_channels, cfg.vae_layers_per_block, cfg.image_size)
        vae.load_state_dict(state["vae"])
        return vae.eval(), dict(state["seconds"])
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.vae_channels, cfg.vae_layers_per_block, cfg.image_size)  # weights drawn from the seed

    def step(gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        idx = torch.randint(0, images.shape[0], (cfg.vae_batch_size,), generator=gen)
        x = random_crops(to_model_range(images[idx]), cfg.vae_crop, gen)
        flip = torch.rand(cfg.vae_batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(generator=gen)).sample
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).pow(2).mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return l1 + l2 + cfg.vae_kl_weight * kl, {"psnr": _psnr(l2), "kl": kl.detach()}

    loop = LoopConfig(
        "vae",
        cfg.vae_steps,
        cfg.vae_lr,
        cfg.warmup_steps,
        cfg.grad_clip,
        cfg.seed + 1,
        cfg.checkpoint_every,
        cfg.resume,
    )
    checkpoint = work / f"{key}-checkpoint"
    result = run_training(loop, [vae], list(vae.parameters()), step, checkpoint)
    save_atomic({"vae": vae.state_dict(), "seconds": result.seconds}, final)
    remove_checkpoint(checkpoint)
    return vae, result.seconds


def load_latents(
    cfg: TrainPriorConfig, vae: nn.Module, images: Tensor, work: Path, init: InitWeights | None = None
) -> dict[str, Any]:
    """Stage 3 (cached in ``work``): posterior means/stds of the images and mirror images, the scaling factor.

    With ``init`` (a continued training), the VAE is the initial folder's and so is the scaling factor (the UNet
    was trained with it).
    """
    name = f"init-{init.fingerprint}" if init is not None else stage_key(cfg, "vae")
    path = work / f"{name}-latents.pt"
    if cfg.resume and path.is_file():
        return load(path)
    clock = Stopwatch().start()
    with torch.no_grad():
        means, stds = encode_images(vae, images)
    scaling_factor = float(vae.config.scaling_factor) if init is not None else latent_scaling_factor(means)
    lat = {"means": means, "stds": stds, "scaling_factor": scaling_factor, "seconds": clock.stop().read()}
    save_atomic(lat, path)
    return lat


def finetune_decoder(
    cfg: TrainPriorConfig, vae: nn.Module, images: Tensor, means: Tensor, stds: Tensor, work: Path
) -> dict[str, float]:
    """Stage 3b: fine-tune ``post_quant_conv`` + decoder in place on whole images; resumable.

    ``means``/``stds`` are the cached posteriors of ``images`` followed by those of the mirror images (see
    :func:`~ids_nerf.toy.training_data.encode_images`); the encoder is not touched. Returns the wall/CPU seconds
    it took.
    """
    key = stage_key(cfg, "decoder")
    final = work / f"{key}.pt"
    modules = nn.ModuleDict({"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv})
    if cfg.resume and final.is_file():
        state = load(final)
        modules.load_state_dict(state["modules"])
        return dict(state["seconds"])
    if cfg.decoder_steps <= 0:
        return {"wall": 0.0, "cpu": 0.0}
    n = images.shape[0]

    def step(gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        idx = torch.randint(0, means.shape[0], (cfg.decoder_batch_size,), generator=gen)
        x = to_model_range(images[idx % n])
        x = torch.where((idx >= n)[:, None, None, None], x.flip(-1), x)
        z = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)
        rec = vae.decode(z).sample
        l2 = (rec - x).pow(2).mean()
        return (rec - x).abs().mean() + l2, {"psnr": _psnr(l2)}

    warmup = min(cfg.warmup_steps, max(1, cfg.decoder_steps // 10))
    loop = LoopConfig(
        "vae decoder",
        cfg.decoder_steps,
        cfg.decoder_lr,
        warmup,
        cfg.grad_clip,
        cfg.seed + 4,
        cfg.checkpoint_every,
        cfg.resume,
    )
    checkpoint = work / f"{key}-checkpoint"
    vae.requires_grad_(False)
    modules.requires_grad_(True)
    result = run_training(loop, [modules], list(modules.parameters()), step, checkpoint)
    vae.requires_grad_(True)
    vae.eval()
    save_atomic({"modules": modules.state_dict(), "seconds": result.seconds}, final)
    remove_checkpoint(checkpoint)
    return result.seconds


@dataclass
class InitWeights:
    """Trained weights a continued training starts from (``--init-from``)."""

    vae: nn.Module
    """The folder's VAE (float32), kept as it is: the VAE and decoder stages are skipped."""
    text_encoder: nn.Module
    """The folder's text encoder (float32)."""
    unet: nn.Module
    """The folder's UNet (float32)."""
    fingerprint: str
    """:func:`~ids_nerf.toy.models.weights_fingerprint` of the folder (names the stage's files)."""
    round: int
    """How many training runs made these weights (1 for weights trained from scratch): the new run draws its
    batches from another stream than every earlier run."""


def ema_copies(text_encoder: nn.Module, unet: nn.Module, ema: EMAModel) -> tuple[nn.Module, nn.Module]:
    """Eval-mode copies of both models holding the EMA weights."""
    te, un = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    ema.copy_to(list(te.parameters()) + list(un.parameters()))
    return te.eval(), un.eval()


def train_unet(
    cfg: TrainPriorConfig,
    means: Tensor,
    stds: Tensor,
    caption_ids: Tensor,
    tokens: Tensor,
    empty_id: int,
    scaling_factor: float,
    work: Path,
    evaluate: Callable[[nn.Module, nn.Module, int], dict[str, Any]] | None = None,
    init: InitWeights | None = None,
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Stage 4: text encoder + UNet on (latent, caption) pairs; resumable.

    Epsilon-prediction DDPM loss, timesteps weighted by Min-SNR-gamma (:func:`min_snr_weighted`; ``snr_gamma`` 0:
    unweighted), captions dropped to the empty prompt with probability ``caption_dropout``.
    ``caption_ids[i]`` indexes ``tokens`` for latent ``i``; ``tokens[empty_id]`` is the empty prompt. ``evaluate``
    (EMA copies of both models, step) runs every ``eval_every`` steps. Returns copies of both models holding the
    EMA weights, and ``{"seconds", "history", "final_loss"}`` (wall/CPU seconds of training summed over resumed
    sessions, without the in-training evaluations; evaluation results; smoothed final loss).
    ``init``: start from these weights (a fresh optimiser, warm-up and EMA) instead of fresh ones.
    """
    key = stage_key(cfg, "unet", init.fingerprint if init is not None else None)
    final = work / f"{key}.pt"
    latent_size = cfg.image_size // 2 ** (len(cfg.vae_channels) - 1)

    def build() -> tuple[nn.Module, nn.Module]:
        if init is not None:
            return copy.deepcopy(init.text_encoder), copy.deepcopy(init.unet)
        te = build_text_encoder(cfg.text_hidden_size, cfg.text_layers, cfg.text_heads, cfg.text_intermediate_size)
        un = build_unet(
            cfg.unet_channels,
            cfg.unet_layers_per_block,
            cfg.unet_head_dim,
            cfg.text_hidden_size,
            latent_size,
            cfg.unet_norm_groups,
        )
        return te, un

    if cfg.resume and final.is_file():
        state = load(final)
        text_encoder, unet = build()
        text_encoder.load_state_dict(state.pop("text_encoder"))
        unet.load_state_dict(state.pop("unet"))
        return text_encoder.eval(), unet.eval(), state
    torch.manual_seed(cfg.seed + 2)
    text_encoder, unet = build()
    scheduler = build_scheduler()
    alphas = scheduler.alphas_cumprod.float()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    ema = make_ema(params, cfg.ema_decay)
    n = means.shape[0]

    def step(gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        b = cfg.unet_batch_size
        idx = torch.randint(0, n, (b,), generator=gen)
        z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scaling_factor
        caps = caption_ids[idx].clone()
        caps[torch.rand(b, generator=gen) < cfg.caption_dropout] = empty_id
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen)
        z_t = scheduler.add_noise(z0, noise, t)
        hidden = text_encoder(tokens[caps])[0]
        pred = unet(z_t, t, encoder_hidden_states=hidden).sample
        mse = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        if cfg.snr_gamma > 0:
            mse = min_snr_weighted(mse, alphas, t, cfg.snr_gamma)
        return mse.mean(), {}

    def evaluate_ema(done: int) -> dict[str, Any]:
        return evaluate(*ema_copies(text_encoder, unet, ema), done) if evaluate is not None else {}

    loop = LoopConfig(
        "unet",
        cfg.unet_steps,
        cfg.unet_lr,
        cfg.warmup_steps,
        cfg.grad_clip,
        cfg.seed + 3 + (10 * init.round if init is not None else 0),
        cfg.checkpoint_every,
        cfg.resume,
        eval_every=cfg.eval_every if evaluate is not None else 0,
    )
    checkpoint = work / f"{key}-checkpoint"
    result = run_training(loop, [text_encoder, unet], params, step, checkpoint, ema, evaluate_ema)
    te, un = ema_copies(text_encoder, unet, ema)
    info = {"seconds": result.seconds, "history": result.history, "final_loss": result.avg_loss}
    save_atomic({"text_encoder": te.state_dict(), "unet": un.state_dict(), **info}, final)
    remove_checkpoint(checkpoint)
    return te, un, info

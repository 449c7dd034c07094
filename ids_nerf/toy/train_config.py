"""Options of the toy prior's training (:class:`TrainPriorConfig`) and the keys naming each stage's cached results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ids_nerf.toy.training_data import SINGLE_OBJECT_FRACTION


@dataclass
class TrainPriorConfig:
    """Training of the toy prior: all stages from scratch, or more text-encoder + UNet steps from a trained one."""

    out: Path = Path("ids_nerf/toy/weights/toy-prior")
    """Output folder, written with ``StableDiffusionPipeline.save_pretrained`` (replaced if it exists)."""
    seed: int = 0
    """Seed of everything: training scenes, initial weights, batches, noise."""
    work_dir: Path | None = None
    """Folder for stage results and checkpoints, named after hashes of the options they depend on (default:
    ``$IDS_NERF_CACHE/train-prior``)."""
    init_from: Path | None = None
    """Continue from this pipeline folder (e.g. the shipped ``ids_nerf/toy/weights/toy-prior``): its VAE is kept
    (the VAE and decoder stages are skipped; the training images are re-encoded with it), its text encoder and UNet
    train for ``--unet-steps`` more steps with a fresh warm-up and a new batch stream, and its ``train_log.json``
    runs are carried into the new log. The architecture options must match the folder's."""
    resume: bool = True
    """Reuse finished stages and the last checkpoint found in ``work_dir``."""
    threads: int = 2
    """Torch CPU threads."""
    workers: int = 2
    """Processes rendering the training scenes."""

    image_size: int = 64
    """Image resolution (square)."""
    n_train: int = 24_000
    """Number of training scenes (each is also used mirrored)."""
    single_object_fraction: float = SINGLE_OBJECT_FRACTION
    """Share of training scenes with exactly one object; the others have 1-3 (uniform)."""

    vae_channels: tuple[int, ...] = (16, 32, 64)
    """AutoencoderKL ``block_out_channels``; n blocks downsample by 2^(n-1)."""
    vae_layers_per_block: int = 1
    """ResNet layers per VAE block."""
    vae_steps: int = 2000
    """VAE optimisation steps."""
    vae_batch_size: int = 64
    """VAE batch size."""
    vae_crop: int = 32
    """VAE training on random square crops of this size (0: whole images); the VAE is fully convolutional (no
    mid-block attention), so crops train it for whole images at a quarter of the cost."""
    vae_lr: float = 2e-3
    """VAE peak learning rate (AdamW, linear warm-up then cosine decay to 10%)."""
    vae_kl_weight: float = 1e-5
    """Weight of the KL term (mean per latent element) against L1 + L2 (means per pixel, images in [-1, 1])."""
    decoder_steps: int = 600
    """Then fine-tune the decoder on whole images with the encoder frozen (the latents stay those the UNet is
    trained on; GroupNorm statistics and image borders of whole images differ from those of crops)."""
    decoder_batch_size: int = 16
    """Batch size of the decoder fine-tuning."""
    decoder_lr: float = 5e-4
    """Peak learning rate of the decoder fine-tuning."""

    text_hidden_size: int = 64
    """CLIPTextModel hidden size (= UNet ``cross_attention_dim``)."""
    text_layers: int = 2
    """CLIPTextModel transformer layers."""
    text_heads: int = 4
    """CLIPTextModel attention heads."""
    text_intermediate_size: int = 256
    """CLIPTextModel MLP width."""

    unet_channels: tuple[int, ...] = (32, 64, 128)
    """UNet ``block_out_channels`` (cross-attention in every block but the lowest-resolution one, as in SD)."""
    unet_layers_per_block: int = 2
    """ResNet (+ transformer) layers per UNet block."""
    unet_head_dim: int = 32
    """Channels per attention head in the UNet."""
    unet_norm_groups: int = 8
    """GroupNorm groups of the UNet (must divide every width of ``unet_channels``). With one channel per group
    (32 groups on 32 channels, the first runs of the shipped weights) GroupNorm removes every channel's spatial
    mean and the UNet cannot see the mean of its input's channels: from pure noise it then reads the random mean
    of the 16x16 starting noise as image content (x0 channel means = 13 x noise means at t=981). With
    ``--init-from`` a different value regroups the folder's UNet (same weights) and trains it on."""
    unet_steps: int = 3500
    """Steps of the joint text-encoder + UNet training."""
    unet_batch_size: int = 32
    """Batch size of the UNet stage."""
    unet_lr: float = 8e-4
    """Peak learning rate of the UNet stage (AdamW, warm-up then cosine decay to 10%)."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up steps (both stages)."""
    caption_dropout: float = 0.1
    """Probability of replacing a caption by the empty prompt (classifier-free guidance)."""
    snr_gamma: float = 5.0
    """Min-SNR-gamma loss weighting of the timesteps (``min(SNR, gamma) / SNR``); 0 gives the plain DDPM loss."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the text-encoder and UNet weights (the saved weights)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (both stages)."""
    checkpoint_every: int = 500
    """Checkpoint interval in steps (both stages)."""
    eval_every: int = 1000
    """Run a small sampling evaluation every this many UNet steps (0: never); it does not change training."""
    eval_samples: int = 56
    """Samples of that evaluation (one per colour/shape/floor combination)."""

    save_dtype: Literal["float16", "float32"] = "float16"
    """Dtype of the saved weights (float16 halves the size; DiffusionPrior upcasts UNet and VAE on the CPU)."""
    final_eval: bool = True
    """After saving, run the quality gates of :mod:`ids_nerf.toy.quality` on the saved folder."""


_DATA_FIELDS = ("seed", "image_size", "n_train", "single_object_fraction")
_VAE_FIELDS = _DATA_FIELDS + (
    "vae_channels",
    "vae_layers_per_block",
    "vae_steps",
    "vae_batch_size",
    "vae_crop",
    "vae_lr",
    "vae_kl_weight",
    "warmup_steps",
    "grad_clip",
)
_DECODER_FIELDS = ("decoder_steps", "decoder_batch_size", "decoder_lr")
_NOT_TRAINING = (
    "out",
    "init_from",
    "work_dir",
    "resume",
    "threads",
    "workers",
    "eval_every",
    "eval_samples",
    "save_dtype",
    "final_eval",
    "checkpoint_every",
)


def stage_key(cfg: TrainPriorConfig, stage: Literal["data", "vae", "decoder", "unet"], init: str | None = None) -> str:
    """Hash of the options a stage's result depends on (names its files in the work dir).

    The UNet stage does not depend on the decoder fine-tuning (it trains on the frozen encoder's latents).
    ``init``: fingerprint of the ``--init-from`` weights a continued stage starts from (not the folder's path).
    """
    values = asdict(cfg)
    if stage == "data":
        fields = {k: values[k] for k in _DATA_FIELDS}
    elif stage == "vae":
        fields = {k: values[k] for k in _VAE_FIELDS}
    elif stage == "decoder":
        fields = {k: values[k] for k in _VAE_FIELDS + _DECODER_FIELDS}
    else:
        fields = {k: v for k, v in values.items() if k not in _NOT_TRAINING + _DECODER_FIELDS}
    if init is not None:
        fields["init"] = init
    text = json.dumps({"stage": stage, **fields}, sort_keys=True, default=str)
    return f"{stage}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"

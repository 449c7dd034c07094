"""A tiny Stable-Diffusion-architecture pipeline with random weights, built from configs (tests, CPU benchmarks).

Same components and code path as SD 1.x (UNet2DConditionModel with cross- and self-attention, AutoencoderKL with
an 8x downsampling, CLIPTextModel + CLIPTokenizer, DDIM scheduler with SD's ``scaled_linear`` betas), small
enough to run a guidance step in tens of milliseconds on one CPU core. 128x128 images, 4x16x16 latents.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (16, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 128,
    "scaling_factor": 0.18215,
}
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}
#: Stable Diffusion 1.x noise schedule.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def build_components(
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    text_config: dict[str, Any],
    scheduler_config: dict[str, Any],
    seed: int,
    tokenizer_dir: str | Path,
) -> dict[str, Any]:
    """Random-weight SD-architecture components (weights drawn from ``seed``) with the offline CLIP tokenizer
    (its files are written to ``tokenizer_dir``)."""
    # diffusers and transformers take seconds to import; importers of the configs above (benchmarks) do not need them
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ids_nerf.toy.tokenizer import write_clip_tokenizer_files

    torch.manual_seed(seed)
    return {
        "unet": UNet2DConditionModel(**unet_config),
        "vae": AutoencoderKL(**vae_config),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text_config)),
        "tokenizer": CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tokenizer_dir)),
        "scheduler": DDIMScheduler(**scheduler_config),
    }


def build_tiny_pipeline(out_dir: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Build the tiny pipeline with weights drawn from ``seed`` and ``save_pretrained`` it to ``out_dir``."""
    from diffusers import StableDiffusionPipeline  # seconds to import, as above

    out = Path(out_dir)
    scheduler_config = {**SCHEDULER_CONFIG, "prediction_type": prediction_type}
    with tempfile.TemporaryDirectory(prefix="clip-tokenizer-") as tok_dir:
        parts = build_components(UNET_CONFIG, VAE_CONFIG, TEXT_CONFIG, scheduler_config, seed, tok_dir)
        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        pipe.save_pretrained(out)
    return out

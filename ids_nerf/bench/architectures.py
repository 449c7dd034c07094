"""Public architecture configs of Stable Diffusion v1.x (CompVis/stable-diffusion-v1-4), for timing with random
weights: the FLOPs and memory traffic of a step are those of the real model."""

from __future__ import annotations

import tempfile
from typing import Any

from ids_nerf.toy.tiny import SCHEDULER_CONFIG, build_components

SD_V1_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD_V1_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD_V1_TEXT: dict[str, Any] = {  # CLIP ViT-L/14 text tower
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

ARCHITECTURES = {"sd-v1": (SD_V1_UNET, SD_V1_VAE, SD_V1_TEXT)}


def random_components(arch: str, seed: int = 0) -> dict[str, Any]:
    """In-memory random-weight components of ``arch`` (for :class:`DiffusionPrior`'s ``components``)."""
    unet, vae, text = ARCHITECTURES[arch]
    with tempfile.TemporaryDirectory() as tok_dir:
        return build_components(unet, vae, text, SCHEDULER_CONFIG, seed, tok_dir)

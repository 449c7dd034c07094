"""The components of the toy prior: fresh Stable-Diffusion-architecture models, and the pipeline folder they make.

Builders take the sizes they need (not the whole training config), so this module depends on nothing else of the
training; :func:`save_pipeline` writes the ``StableDiffusionPipeline`` folder that
:class:`ids_nerf.guidance.prior.DiffusionPrior` loads.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ids_nerf.toy.tiny import SCHEDULER_CONFIG
from ids_nerf.toy.tokenizer import write_clip_tokenizer_files


def _groups(channels: Iterable[int]) -> int:
    """GroupNorm groups dividing every width (at most 32)."""
    return min(32, math.gcd(*channels))


def build_vae(channels: tuple[int, ...], layers_per_block: int, image_size: int) -> AutoencoderKL:
    """AutoencoderKL (``block_out_channels=channels``, 4 latent channels, no mid-block attention), fresh weights."""
    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=tuple(channels),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=layers_per_block,
        norm_num_groups=_groups(channels),
        sample_size=image_size,
        mid_block_add_attention=False,
    )


def build_text_encoder(hidden_size: int, layers: int, heads: int, intermediate_size: int) -> CLIPTextModel:
    """A CLIPTextModel over CLIP's 49,408-token vocabulary with fresh weights."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def build_unet(
    channels: tuple[int, ...],
    layers_per_block: int,
    head_dim: int,
    cross_attention_dim: int,
    latent_size: int,
    norm_groups: int,
) -> UNet2DConditionModel:
    """SD-layout UNet2DConditionModel: CrossAttnDownBlock2D ... DownBlock2D / UpBlock2D, CrossAttnUpBlock2D ...

    ``head_dim`` channels per attention head; cross-attention in every block but the lowest-resolution one;
    ``norm_groups`` GroupNorm groups (a divisor of every width).
    """
    n = len(channels)
    heads = tuple(max(1, c // head_dim) for c in channels)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(channels),
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads,  # diffusers' legacy name: the number of heads per block
        norm_num_groups=norm_groups,
    )


def build_tokenizer() -> CLIPTokenizer:
    """CLIPTokenizer with the offline CLIP BPE vocabulary (its files are read into memory and deleted)."""
    with tempfile.TemporaryDirectory(prefix="clip-tokenizer-") as tmp:
        return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp))


def build_scheduler() -> DDIMScheduler:
    """DDIM with SD 1.x's ``scaled_linear`` betas (0.00085 -> 0.012, 1000 steps, epsilon prediction)."""
    return DDIMScheduler(**SCHEDULER_CONFIG)


def regroup_unet(unet: UNet2DConditionModel, norm_groups: int) -> UNet2DConditionModel:
    """``unet`` with ``norm_groups`` GroupNorm groups and the same weights (GroupNorm's parameters are per channel,
    so every tensor keeps its shape; the function changes, and training adapts to it)."""
    if unet.config.norm_num_groups == norm_groups:
        return unet
    regrouped = UNet2DConditionModel.from_config({**unet.config, "norm_num_groups": norm_groups})
    regrouped.load_state_dict(unet.state_dict())
    return regrouped.to(unet.dtype).train(unet.training)


def n_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


def save_pipeline(
    out: Path, vae: nn.Module, text_encoder: nn.Module, unet: nn.Module, dtype: torch.dtype = torch.float16
) -> Path:
    """Write a StableDiffusionPipeline folder (DDIM scheduler, offline CLIP tokenizer) to ``out``, replacing it.

    The folder is written to ``<out>.tmp`` first and then moved into place, so ``out`` is never half written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).to(dtype),
        text_encoder=copy.deepcopy(text_encoder).to(dtype),
        tokenizer=build_tokenizer(),
        unet=copy.deepcopy(unet).to(dtype),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def load_pipeline(folder: Path) -> tuple[AutoencoderKL, CLIPTextModel, UNet2DConditionModel]:
    """The VAE, text encoder and UNet of a pipeline folder written by :func:`save_pipeline`, in float32 (to train)."""
    folder = Path(folder)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    return vae.eval(), text_encoder.eval(), unet.eval()


def weights_fingerprint(folder: Path) -> str:
    """SHA-256 (16 hex digits) of every weight file of a pipeline folder, in path order."""
    digest = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*.safetensors")):
        digest.update(f.relative_to(folder).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]

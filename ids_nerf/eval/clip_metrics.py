"""CLIP metrics: text-image, direction, image-image and multi-view consistency similarities, plus the open_clip
loader (a pretrained tag, a local checkpoint, or random weights for offline smoke tests).

The metric functions take embeddings (rows) and normalise them themselves, so they can be checked on hand-made
vectors. Exact definitions: see the docstring of :mod:`ids_nerf.eval`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ids_nerf.errors import UserError, UserInputError

ZERO_NORM = 1e-12
"""Vectors with an L2 norm below this count as zero: they stay zero under :func:`normalize`, and their cosine
with anything is defined as 0."""


class WeightsUnavailableError(UserError):
    """A metric's network weights are neither cached nor downloadable; the message names the metric and the fix."""

    def __init__(self, metric: str, message: str):
        super().__init__(message)
        self.metric = metric


def normalize(v: Tensor) -> Tensor:
    """Rows divided by their L2 norm, n(v) = v / ||v||_2; zero rows stay zero."""
    v = v.double()
    norm = v.norm(dim=-1, keepdim=True)
    return torch.where(norm > ZERO_NORM, v / norm.clamp_min(ZERO_NORM), torch.zeros_like(v))


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cos(a, b) = a.b / (||a|| ||b||), defined as 0 when a or b is the zero vector."""
    return (normalize(a) * normalize(b)).sum(-1)


def text_image_similarity(image: Tensor, text: Tensor) -> Tensor:
    """clip_text = cos(n(E_I(e)), n(E_T(trg))) per image row: plain cosine, no x100, no clamp (IDS Table 3).

    Args:
        image: (N, D) image embeddings of the edited views.
        text: (D,) or (1, D) embedding of the target prompt.
    """
    return cosine(image, text.reshape(1, -1).expand_as(image))


def directional_similarity(image_src: Tensor, image_edit: Tensor, text_src: Tensor, text_trg: Tensor) -> Tensor:
    """clip_direction = cos(n(E_I(e)) - n(E_I(s)), n(E_T(trg)) - n(E_T(src))), normalised BEFORE the difference.

    0 for an unchanged view (zero image direction) or identical prompts (zero text direction).
    """
    d_image = normalize(image_edit) - normalize(image_src)
    d_text = normalize(text_trg.reshape(1, -1)) - normalize(text_src.reshape(1, -1))
    return cosine(d_image, d_text.expand_as(d_image))


def image_similarity(image_src: Tensor, image_edit: Tensor) -> Tensor:
    """clip_image = cos(n(E_I(s)), n(E_I(e))) per view."""
    return cosine(image_src, image_edit)


def direction_consistency(image_src: Tensor, image_edit: Tensor) -> Tensor:
    """clip_consistency (instruct-nerf2nerf): cos(n(E_I(s_{i+1})) - n(E_I(s_i)), n(E_I(e_{i+1})) - n(E_I(e_i))).

    One value per pair of neighbouring views (N - 1 values; empty for a single view).
    """
    s, e = normalize(image_src), normalize(image_edit)
    return cosine(s[1:] - s[:-1], e[1:] - e[:-1])


def edit_consistency(image_src: Tensor, image_edit: Tensor) -> Tensor:
    """clip_edit_consistency: cos(n(E_I(e_i)) - n(E_I(s_i)), n(E_I(e_{i+1})) - n(E_I(s_{i+1}))), N - 1 values."""
    delta = normalize(image_edit) - normalize(image_src)
    return cosine(delta[:-1], delta[1:])


@dataclass
class ClipInfo:
    """What was loaded, for the report."""

    model: str
    """open_clip architecture name."""
    pretrained: str | None
    """Pretrained tag or local checkpoint path; None with random weights."""
    random_weights: bool
    """True when the network has random weights (metrics not meaningful)."""
    checkpoint: str | None = None
    """Resolved local checkpoint file, when known."""


class ClipEmbedder:
    """An open_clip model with its preprocessing and tokenizer; returns L2-normalised float64 embeddings on CPU."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, device: torch.device, info: ClipInfo):
        self.model = model.eval().requires_grad_(False).to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.info = info

    @torch.no_grad()
    def encode_images(self, images: Sequence[np.ndarray], batch_size: int = 16) -> Tensor:
        """(H, W, 3) float images in [0, 1] -> (N, D) normalised embeddings, through open_clip's preprocessing."""
        from PIL import Image

        out = []
        for start in range(0, len(images), batch_size):
            batch = [
                self.preprocess(Image.fromarray((np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)))
                for img in images[start : start + batch_size]
            ]
            out.append(self.model.encode_image(torch.stack(batch).to(self.device)).float().cpu())
        return normalize(torch.cat(out)) if out else torch.zeros(0, 0, dtype=torch.float64)

    @torch.no_grad()
    def encode_texts(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> (N, D) normalised embeddings."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return normalize(self.model.encode_text(tokens).float().cpu())


def _missing_message(model: str, pretrained: str, cfg: dict, err: Exception) -> str:
    # open_clip's hf_hub entries are "org/repo/" (default file name) or "org/repo/file.bin"
    hub_id, file_name = os.path.split(cfg.get("hf_hub", ""))
    file_name = file_name or "open_clip_pytorch_model.bin"
    where = f"https://huggingface.co/{hub_id} (file {file_name})" if hub_id else cfg.get("url", "its release page")
    return (
        f"CLIP metrics (clip_*): the open_clip weights "
        f"{model!r} / {pretrained!r} are not in the local cache and could not be downloaded ({type(err).__name__}: "
        f"{str(err)[:200]}). Supply them in one of these ways: download {where} on a machine with internet and pass "
        f"its path with --clip-pretrained /path/to/{file_name}; or copy the Hugging Face cache entry into this "
        f"machine's cache (HF_HOME, default ~/.cache/huggingface; or --clip-cache-dir) and set HF_HUB_OFFLINE=1. "
        f"Or pass --skip-missing to compute the other metrics, or --random-weights for an offline smoke test "
        f"(numbers not meaningful)."
    )


def load_clip(
    model: str = "ViT-L-14",
    pretrained: str | None = "openai",
    *,
    random_weights: bool = False,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ClipEmbedder:
    """Build an open_clip model.

    Args:
        model: open_clip architecture (``open_clip.list_models()``) or ``hf-hub:org/repo``.
        pretrained: a pretrained tag (``open_clip.list_pretrained_tags_by_model(model)``) or a local checkpoint
            file (open_clip state dict, .bin/.pt/.safetensors). For OpenAI weights from a local file use the
            ``-quickgelu`` architecture (e.g. ``ViT-L-14-quickgelu``), as open_clip only infers it from the tag.
        random_weights: ignore ``pretrained`` and initialise randomly (seeded): offline smoke tests only.
        cache_dir: open_clip / Hugging Face download cache.

    Raises:
        UserInputError: unknown architecture or tag, or a checkpoint path that does not exist.
        WeightsUnavailableError: the weights are not cached and cannot be downloaded.
    """
    with warnings.catch_warnings():  # torch.jit deprecation warnings of open_clip's import
        warnings.simplefilter("ignore", FutureWarning)
        import open_clip

    device = torch.device(device)
    if not model.startswith("hf-hub:") and model not in open_clip.list_models():
        small = [m for m in open_clip.list_models() if m.startswith(("ViT-B", "ViT-L", "RN50", "ViT-S"))][:12]
        raise UserInputError(f"--clip-model {model!r} is not an open_clip architecture; e.g. {', '.join(small)}.")
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None)
        info = ClipInfo(model=model, pretrained=None, random_weights=True)
        return ClipEmbedder(net, preprocess, open_clip.get_tokenizer(model), device, info)

    checkpoint: str | None = None
    if model.startswith("hf-hub:"):
        pretrained = None
    elif pretrained is None or not pretrained.strip():
        raise UserInputError("--clip-pretrained is empty: pass a pretrained tag (e.g. openai) or a checkpoint path.")
    elif Path(pretrained).expanduser().exists():
        checkpoint = str(Path(pretrained).expanduser())
    elif "/" in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors")):
        raise UserInputError(f"--clip-pretrained {pretrained}: checkpoint file not found. Check the path.")
    else:
        cfg = open_clip.get_pretrained_cfg(model, pretrained)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
            raise UserInputError(
                f"--clip-pretrained {pretrained!r} is not a pretrained tag of {model} (tags: {tags}); or pass a local "
                "checkpoint path."
            )
        try:  # resolve the file first: fail before building a large model
            checkpoint = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
        except Exception as err:  # network, cache and hub errors all mean "not available here"
            raise WeightsUnavailableError("clip", _missing_message(model, pretrained, cfg, err)) from None
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained, cache_dir=cache_dir)
    except Exception as err:
        if model.startswith("hf-hub:"):
            raise WeightsUnavailableError(
                "clip",
                f"CLIP metrics: could not load {model} ({type(err).__name__}: {str(err)[:200]}); make it available in "
                "the Hugging Face cache (HF_HOME) or pass --skip-missing / --random-weights.",
            ) from None
        raise UserInputError(
            f"--clip-pretrained {pretrained}: open_clip could not load it into {model} ({type(err).__name__}: "
            f"{str(err)[:300]}). Check that the checkpoint matches the architecture."
        ) from None
    info = ClipInfo(model=model, pretrained=pretrained, random_weights=False, checkpoint=checkpoint)
    return ClipEmbedder(net, preprocess, open_clip.get_tokenizer(model), device, info)

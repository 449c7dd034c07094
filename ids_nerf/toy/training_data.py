"""Training data of the toy prior: the captioned scene streams (training and held-out) and the tensors made of them.

The training stream is :func:`ids_nerf.toy.generation.generate_one` of the training seed; the held-out images of
:mod:`ids_nerf.toy.quality` come from another stream, :data:`HOLDOUT_SEED`, which training refuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ids_nerf.toy.generation import GenerationConfig, generate_one

HOLDOUT_SEED: int = 1_000_003
"""Scene stream of the held-out images (evaluation only; training refuses this seed)."""
SINGLE_OBJECT_FRACTION: float = 0.5
"""Default share of single-object scenes in the training (and held-out) data; the rest have 1-3 objects."""
_GOLDEN = 0.6180339887498949


def generation_config(index: int, single_object_fraction: float) -> GenerationConfig:
    """Scene options of image ``index``: one object for a ``single_object_fraction`` of the indices."""
    single = (index * _GOLDEN) % 1.0 < single_object_fraction  # evenly interleaved, deterministic
    return GenerationConfig(n_objects=1 if single else None)


def _render_range(args: tuple[int, int, int, int, float]) -> tuple[np.ndarray, list[str]]:
    """Images ``start..stop-1`` of a stream (worker function)."""
    start, stop, size, seed, fraction = args
    images, captions = [], []
    for i in range(start, stop):
        img, cap, _ = generate_one(i, size, seed, generation_config(i, fraction))
        images.append(img)
        captions.append(cap)
    return np.stack(images), captions


def generate_dataset(
    n: int,
    size: int,
    seed: int,
    single_object_fraction: float = SINGLE_OBJECT_FRACTION,
    workers: int = 1,
    desc: str = "scenes",
) -> tuple[np.ndarray, list[str]]:
    """``n`` captioned scenes as uint8 (n, size, size, 3) and captions; the same for any ``workers``."""
    chunk = 250
    jobs = [(s, min(s + chunk, n), size, seed, single_object_fraction) for s in range(0, n, chunk)]
    images: list[np.ndarray] = []
    captions: list[str] = []
    bar = tqdm(total=n, desc=desc, unit="img", leave=False)
    if workers <= 1 or len(jobs) <= 1:
        results: Iterable[tuple[np.ndarray, list[str]]] = map(_render_range, jobs)
        for imgs, caps in results:
            images.append(imgs)
            captions.extend(caps)
            bar.update(len(caps))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for imgs, caps in pool.map(_render_range, jobs):
                images.append(imgs)
                captions.extend(caps)
                bar.update(len(caps))
    bar.close()
    arr = np.concatenate(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    return arr, captions


def to_model_range(images: Tensor) -> Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_crops(x: Tensor, size: int, gen: torch.Generator) -> Tensor:
    """One random ``size`` x ``size`` crop of every image of a batch (B, C, H, W)."""
    b, _, h, w = x.shape
    if size <= 0 or size >= min(h, w):
        return x
    top = torch.randint(0, h - size + 1, (b,), generator=gen)
    left = torch.randint(0, w - size + 1, (b,), generator=gen)
    rows = (top[:, None] + torch.arange(size))[:, None, :, None]
    cols = (left[:, None] + torch.arange(size))[:, None, None, :]
    return x[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]


@torch.no_grad()
def encode_images(vae: nn.Module, images: Tensor, batch_size: int = 128, desc: str = "encode") -> tuple[Tensor, Tensor]:
    """Posterior means and stds (unscaled) of uint8 images (N, H, W, 3) and of their mirror images (2N, ...)."""
    means, stds = [], []
    for flip in (False, True):
        for s in tqdm(range(0, images.shape[0], batch_size), desc=desc + (" (mirrored)" if flip else ""), leave=False):
            x = to_model_range(images[s : s + batch_size])
            dist = vae.encode(x.flip(-1) if flip else x).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def latent_scaling_factor(means: Tensor) -> float:
    """1 / std of the latents, rounded to 5 significant digits (SD's 0.18215 was measured this way)."""
    return float(f"{1.0 / float(means.float().std()):.5g}")


def tokenize(tokenizer: Any, prompts: list[str]) -> Tensor:
    """Token ids (N, 77), padded with ``<|endoftext|>`` as SD 1.x does."""
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids

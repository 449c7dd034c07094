"""Fit the shape classifier of :func:`ids_nerf.toy.detectors.shape_class` (a multinomial logistic regression).

Why a fitted rule: the first, hand-tuned rule read exact pixel equalities (flat cube faces) and a tight ellipse fit
(spheres); it scored 0.97-0.99 on crisp renders but 0.67 on the *toy VAE's round trips of the same images*
(spheres called cubes), i.e. it could not score anything a diffusion model outputs. The classifier here uses
silhouette features that survive blur (:func:`~ids_nerf.toy.detectors.shape_features`) and is fitted on crisp
renders plus copies degraded by a Gaussian blur and pixel noise, never on model outputs, so it does not depend
on any trained network. Its accuracy on VAE round trips is measured, not fitted (module docstring of
:mod:`ids_nerf.toy.detectors`).

Reproduce the shipped ``ids_nerf/toy/shape_classifier.json``::

    python -m ids_nerf.toy.shape_fit --out ids_nerf/toy/shape_classifier.json
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ids_nerf.console import run_console
from ids_nerf.toy.detectors import SHAPE_CLASSIFIER_PATH, SHAPE_FEATURE_NAMES, shape_feature_vector
from ids_nerf.toy.generation import GenerationConfig, generate_one
from ids_nerf.toy.scene_spec import SHAPES, SceneSpec


@dataclass
class ShapeFitConfig:
    """Data and regularisation of the fit."""

    out: Path = SHAPE_CLASSIFIER_PATH
    """Where to write the classifier (JSON)."""
    seeds: tuple[int, ...] = (11, 12)
    """Scene streams of the fitting images (the accuracy of the detectors module is measured on others)."""
    n_per_seed: int = 1000
    """Single-object 64x64 images per seed."""
    blur_sigma: tuple[float, float] = (0.4, 1.2)
    """Range of the Gaussian blur (pixels) of the degraded copy of each image."""
    noise_std: float = 0.02
    """Std of the pixel noise added to the degraded copies (images in [0, 1])."""
    l2: float = 1e-3
    """L2 penalty on the standardised weights."""
    iterations: int = 3000
    """Full-batch gradient steps."""
    learning_rate: float = 0.5
    """Step size of the gradient descent."""


def degrade(image: np.ndarray, sigma: float, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur (edge padding, kernel radius ``ceil(3 sigma)``) plus Gaussian pixel noise of a uint8 image
    (H, W, 3); returns uint8."""
    r = max(1, int(np.ceil(3.0 * sigma)))
    x = ndimage.gaussian_filter(image.astype(np.float64), (sigma, sigma, 0.0), mode="nearest", radius=(r, r, 0))
    x = x + rng.normal(0.0, 255.0 * noise_std, x.shape)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def fitting_data(cfg: ShapeFitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and shape labels of the crisp and degraded fitting images (objects the colour detector
    finds; the others carry no shape information)."""
    gen_cfg = GenerationConfig(n_objects=1)
    feats, labels = [], []
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        for i in tqdm(range(cfg.n_per_seed), desc=f"features (seed {seed})", leave=False):
            image, _, meta = generate_one(i, 64, seed, gen_cfg)
            label = SHAPES.index(SceneSpec.from_dict(meta["scene"]).objects[0].shape)
            blurred = degrade(image, float(rng.uniform(*cfg.blur_sigma)), cfg.noise_std, rng)
            for img in (image, blurred):
                f = shape_feature_vector(img)
                if f is not None:
                    feats.append(f)
                    labels.append(label)
    return np.stack(feats), np.array(labels)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, iterations: int, learning_rate: float
) -> dict[str, Any]:
    """Multinomial logistic regression on standardised features by full-batch gradient descent.

    Hand-written on purpose: this exact optimiser produced the shipped ``shape_classifier.json``; a library solver
    (e.g. scikit-learn's L-BFGS) converges to other weights, so refitting would not reproduce the file.
    """
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / std
    onehot = np.eye(n_classes)[y]
    weights, bias = np.zeros((z.shape[1], n_classes)), np.zeros(n_classes)
    for _ in range(iterations):
        logits = z @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        weights -= learning_rate * (z.T @ (prob - onehot) / len(z) + l2 * weights)
        bias -= learning_rate * (prob - onehot).mean(axis=0)
    accuracy = float(((z @ weights + bias).argmax(axis=1) == y).mean())
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "weights": weights.tolist(),
        "bias": bias.tolist(),
        "fit_accuracy": accuracy,
    }


def main(cfg: ShapeFitConfig) -> dict[str, Any]:
    """Fit and write the classifier; returns what was written."""
    x, y = fitting_data(cfg)
    model = fit_logistic(x, y, len(SHAPES), cfg.l2, cfg.iterations, cfg.learning_rate)
    out: dict[str, Any] = {
        "classes": list(SHAPES),
        "features": list(SHAPE_FEATURE_NAMES),
        **model,
        "n_fit": int(len(y)),
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
    }
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(out, indent=1))
    print(f"fitted on {len(y)} images: accuracy {model['fit_accuracy']:.3f}; wrote {cfg.out}")
    return out


def entrypoint() -> None:
    """Console entry point (``python -m ids_nerf.toy.shape_fit``)."""
    run_console("ids_nerf.toy.shape_fit", ShapeFitConfig, main, __doc__)


if __name__ == "__main__":
    entrypoint()

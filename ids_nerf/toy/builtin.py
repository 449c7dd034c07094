"""The named priors this project provides (registered as ``ids_nerf.named_priors`` entry points in pyproject.toml):
``toy`` (the bundled offline model) and ``tiny`` (random weights, built on first use; plumbing tests only)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ids_nerf.guidance.named_priors import NamedPrior

#: Folder of the bundled toy prior (trained by ``python -m ids_nerf.toy.train_prior``), shipped inside the package.
TOY_PRIOR_DIR = Path(__file__).parent / "weights" / "toy-prior"


def cache_dir() -> Path:
    """Where built artefacts go: ``$IDS_NERF_CACHE`` or ``~/.cache/ids_nerf``."""
    return Path(os.environ.get("IDS_NERF_CACHE", Path.home() / ".cache" / "ids_nerf"))


def tiny_prior_path() -> Path:
    """The tiny random-weight pipeline (seed 0), built into the cache on first use (safe under concurrency)."""
    path = cache_dir() / "tiny-prior-seed0"
    if not (path / "model_index.json").is_file():
        from ids_nerf.toy.tiny import build_tiny_pipeline  # diffusers: only when it must be built

        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        build_tiny_pipeline(tmp, seed=0)
        if (path / "model_index.json").is_file():  # built concurrently by another process
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(path, ignore_errors=True)
            tmp.replace(path)
    return path


def _toy_unavailable() -> str | None:
    if (TOY_PRIOR_DIR / "model_index.json").is_file():
        return None
    return f"the bundled toy prior is not present in this installation ({TOY_PRIOR_DIR}); reinstall from a checkout"


TOY = NamedPrior(
    name="toy",
    description="the offline toy-world model bundled with ids_nerf (64x64 images)",
    path=lambda: TOY_PRIOR_DIR,
    unavailable=_toy_unavailable,
)
TINY = NamedPrior(
    name="tiny",
    description="a random-weight model of Stable Diffusion's architecture (plumbing tests only)",
    path=tiny_prior_path,
    unavailable=lambda: None,
)

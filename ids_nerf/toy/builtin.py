"""Resolution of the built-in prior names: ``tiny`` (random weights, built on first use) and ``toy`` (bundled)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ids_nerf.errors import PriorLoadError

#: Folder of the bundled toy prior (trained by ``ids_nerf/toy/train_prior.py``), shipped inside the package.
TOY_PRIOR_DIR = Path(__file__).parent / "weights" / "toy-prior"


def cache_dir() -> Path:
    """Where built artefacts go: ``$IDS_NERF_CACHE`` or ``~/.cache/ids_nerf``."""
    return Path(os.environ.get("IDS_NERF_CACHE", Path.home() / ".cache" / "ids_nerf"))


def builtin_prior_path(name: str) -> Path:
    """Local diffusers folder for a built-in prior name."""
    if name == "tiny":
        path = cache_dir() / "tiny-prior-seed0"
        if not (path / "model_index.json").is_file():
            from ids_nerf.toy.tiny import build_tiny_pipeline

            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            build_tiny_pipeline(tmp, seed=0)
            if (path / "model_index.json").is_file():  # built concurrently by another process
                shutil.rmtree(tmp)
            else:
                shutil.rmtree(path, ignore_errors=True)
                tmp.replace(path)
        return path
    if name == "toy":
        if not (TOY_PRIOR_DIR / "model_index.json").is_file():
            raise PriorLoadError(
                f"The bundled toy prior is not present in this installation ({TOY_PRIOR_DIR}). Reinstall ids_nerf "
                "from a full checkout, or use `--prior tiny` (random weights, for smoke tests only) or a hub id."
            )
        return TOY_PRIOR_DIR
    raise PriorLoadError(f"Unknown built-in prior {name!r}; built-ins are: toy, tiny.")

"""The edit state saved next to each checkpoint of an editing run, so that an interrupted edit resumes exactly.

nerfstudio's checkpoint (``step-<n>.ckpt``) holds the scene, optimizers and schedulers. The edit's random streams
(view draws, the distiller's t/noise draws; see :meth:`IDSEditPipeline.random_state`) live outside the model, so
they are saved in the run folder as ``edit_state/step-<n>.pt``, outside ``nerfstudio_models/`` (nerfstudio's
``eval_setup`` parses the step of every file name there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ids_nerf.nerf.checkpoints import checkpoint_step

FOLDER = "edit_state"


def state_path(checkpoint_dir: Path, step: int) -> Path:
    """Where the edit state of the checkpoint of ``step`` in ``checkpoint_dir`` (a run's models folder) lives."""
    return Path(checkpoint_dir).parent / FOLDER / f"step-{step:09d}.pt"


def save_edit_state(checkpoint_dir: Path, step: int, state: dict[str, Any], only_latest: bool = False) -> Path:
    """Write the edit state of ``step`` (atomically); with ``only_latest`` remove the others, as nerfstudio does
    with ``--save-only-latest-checkpoint``."""
    path = state_path(checkpoint_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"step": step, **state}, tmp)
    os.replace(tmp, path)
    if only_latest:
        for other in path.parent.glob("step-*.pt"):
            if other != path:
                other.unlink()
    return path


def load_edit_state(checkpoint: Path) -> dict[str, Any] | None:
    """The edit state saved with ``checkpoint`` (``step-<n>.ckpt``), or None when there is none (a checkpoint
    written by an older version, or copied without it)."""
    step = checkpoint_step(checkpoint)
    path = state_path(Path(checkpoint).parent, step)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if int(state.get("step", -1)) == step else None

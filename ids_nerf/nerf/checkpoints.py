"""Let torch >= 2.6 load nerfstudio 1.1.5 checkpoints with its default ``torch.load(weights_only=True)``.

nerfstudio's trainer saves ``{"step", "pipeline", "optimizers", "schedulers", "scalers"}``. The scheduler
state dicts hold numpy scalars (``_last_lr`` is computed with ``np.exp``: ``np.float64``), and step counters
may be numpy integers. Pickle stores a numpy scalar as a call of ``numpy.core.multiarray.scalar`` (numpy 1.x;
``numpy._core.multiarray.scalar`` in 2.x) on a ``numpy.dtype`` whose state is then set on the dtype's class
(``numpy.dtypes.Float64DType``), none of which torch's weights-only unpickler allows by default, hence
``Weights only load failed ... Unsupported global: numpy.core.multiarray.scalar`` in ``ns-train --load-dir``,
``ns-eval``, ``ns-render`` and ``ns-viewer``.

:func:`register_safe_globals` allow-lists exactly those globals with ``torch.serialization.add_safe_globals``
(no monkey-patching, no environment variables); numpy arrays and arbitrary objects still fail to load.

:func:`check_checkpoint` verifies a checkpoint file (complete, checksums intact) without loading it, and
:func:`load_checkpoint` loads one; both raise :class:`~ids_nerf.errors.UserInputError` naming the file (and the flag
it came from) for a missing, truncated or damaged file, so that every command can refuse it before writing anything.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ids_nerf.errors import UserInputError

SCALAR_RECONSTRUCT_NAMES: tuple[str, ...] = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
"""Pickle names of numpy's scalar reconstructor (numpy 1.x, numpy 2.x); both are registered so a checkpoint
written under either numpy major version loads under the other."""

SCALAR_TYPES: tuple[type, ...] = (np.float64, np.float32, np.int64, np.int32, np.bool_)
"""numpy scalar types whose dtype classes are allowed: float64 (nerfstudio's scheduler learning rates), int64
(numpy step counters) and their 32-bit and boolean siblings."""


def _scalar_reconstructor() -> Callable[..., Any]:
    """numpy's ``multiarray.scalar``, imported without numpy 2's ``numpy.core`` deprecation warning."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module).scalar
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy's multiarray.scalar was not found")


def nerfstudio_safe_globals() -> list[Any]:
    """The globals nerfstudio checkpoints need, in the form ``torch.serialization.add_safe_globals`` takes.

    Also usable with the ``torch.serialization.safe_globals(...)`` context manager for a scoped load.
    """
    scalar = _scalar_reconstructor()
    items: list[Any] = [(scalar, name) for name in SCALAR_RECONSTRUCT_NAMES]
    items.append(np.dtype)
    items.extend(type(np.dtype(t)) for t in SCALAR_TYPES)
    return items


def checkpoint_step(checkpoint: str | Path) -> int:
    """The step of a nerfstudio checkpoint file, from its name (``step-000001234.ckpt`` -> 1234); ValueError for
    another name."""
    return int(Path(checkpoint).stem.split("-")[-1])


def register_safe_globals() -> bool:
    """Allow-list :func:`nerfstudio_safe_globals` for ``torch.load(weights_only=True)``. Idempotent.

    Returns:
        True if the globals are registered (now or before), False on a torch without ``add_safe_globals``
        (< 2.4, whose ``torch.load`` does not default to ``weights_only=True`` anyway).
    """
    serialization = torch.serialization
    if not hasattr(serialization, "add_safe_globals"):
        return False
    registered = serialization.get_safe_globals() if hasattr(serialization, "get_safe_globals") else []
    missing = [item for item in nerfstudio_safe_globals() if item not in registered]
    if missing:
        serialization.add_safe_globals(missing)
    return True


CHECKPOINT_HINT = (
    "The file is damaged (e.g. a copy or download that stopped early, or a run killed while saving): copy it again "
    "from where it was written, or use another checkpoint of the run (moving this one away makes the newest "
    "remaining one the one used)."
)
"""What to do about a damaged checkpoint (the end of every message of :func:`check_checkpoint`)."""


def _named(path: Path, flag: str | None) -> str:
    return f"{flag}: checkpoint {path}" if flag else f"checkpoint {path}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def check_checkpoint(path: str | Path, flag: str | None = None) -> Path:
    """Check that ``path`` is a complete, undamaged PyTorch checkpoint file, without unpickling it.

    torch writes checkpoints as zip archives whose members carry CRC-32 checksums; every member is read and its
    checksum compared (a truncated file has no zip directory; a damaged one fails its checksum, which ``torch.load``
    itself does not check). Files in torch's legacy (pre-1.6, non-zip) format are left to :func:`load_checkpoint`.
    Costs one read of the file (~0.1 s per 100 MB from the page cache).

    Args:
        path: the ``.ckpt`` file.
        flag: the flag (or "<flag> <value>") the user gave it with, named in the error.

    Returns:
        ``path`` as a Path.

    Raises:
        UserInputError: missing, unreadable, truncated or damaged; the message names the file and ``flag``.
    """
    path = Path(path)
    what = _named(path, flag)
    if not path.exists():
        raise UserInputError(f"{what} does not exist.")
    if not path.is_file():
        raise UserInputError(f"{what} is not a file (a nerfstudio checkpoint is a step-<n>.ckpt file).")
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
        if head[:1] == b"\x80":  # torch's legacy pickle format: no checksums to verify
            return path
        if head != b"PK\x03\x04":
            raise UserInputError(
                f"{what} is not a PyTorch checkpoint ({path.stat().st_size} bytes, does not start like one). "
                + CHECKPOINT_HINT
            )
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except UserInputError:
        raise
    except (zipfile.BadZipFile, EOFError) as err:
        raise UserInputError(
            f"{what} is truncated or damaged ({path.stat().st_size} bytes; {err}). " + CHECKPOINT_HINT
        ) from None
    except OSError as err:
        raise UserInputError(f"{what} cannot be read ({err.strerror or err}).") from None
    if bad is not None:
        raise UserInputError(f"{what} is damaged: its part {bad} fails its checksum. " + CHECKPOINT_HINT)
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise UserInputError(f"{what} is a zip archive but not a PyTorch checkpoint (no data.pkl inside).")
    return path


def load_checkpoint(path: str | Path, flag: str | None = None) -> dict[str, Any]:
    """A nerfstudio checkpoint (``step-<n>.ckpt``) on the CPU, checked by :func:`check_checkpoint`, then loaded
    through torch's weights-only loader with :func:`register_safe_globals` applied.

    Raises:
        UserInputError: the file is missing, truncated, damaged, holds objects the weights-only loader refuses, or
            is not a nerfstudio checkpoint (a dict with "step" and "pipeline"); the message names the file and
            ``flag``.
    """
    path = check_checkpoint(path, flag)
    register_safe_globals()
    what = _named(path, flag)
    try:
        state = torch.load(path, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise UserInputError(
            f"{what} cannot be loaded safely ({_first_line(err)}). It holds objects other than tensors and "
            "numbers, so it was not written by nerfstudio's trainer (or was written by an incompatible version)."
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, AttributeError, ImportError, OSError) as err:
        raise UserInputError(f"{what} cannot be loaded ({_first_line(err)}). " + CHECKPOINT_HINT) from None
    if not isinstance(state, dict) or "pipeline" not in state or "step" not in state:
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise UserInputError(
            f"{what} is not a nerfstudio checkpoint (expected a dict with 'step' and 'pipeline', got {keys})."
        )
    return state

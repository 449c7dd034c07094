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
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

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


def load_checkpoint(path: Any) -> dict[str, Any]:
    """A nerfstudio checkpoint (``step-<n>.ckpt``) on the CPU, through torch's weights-only loader with
    :func:`register_safe_globals` applied."""
    register_safe_globals()
    return torch.load(path, map_location="cpu")

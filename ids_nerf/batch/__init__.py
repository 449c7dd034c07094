"""``ids-batch``: compare editing methods on presets, as the IDS paper's Table 3 does.

For every preset (``configs/*.yaml``), method and seed: reconstruct the scene if no finished reconstruction of it is
under ``--output-dir`` (one per scene) -> edit it (``ns-train <method>``) -> ``ids-eval render`` against the
reconstruction -> one comparison: per method the mean over scenes and seeds with a 95% bootstrap interval, paired
differences to ``--reference`` (dds-edit by default), and a table with a column group per scene (CLIP text, CLIP
direction, LPIPS, background PSNR, depth change). Finished runs are reused; an interrupted edit resumes from its
last checkpoint (``--save-every``) when the batch runs again::

    ids-batch --presets configs/llff/leaves-autumn.yaml configs/llff/fern-autumn.yaml \\
        --methods ids-edit dds-edit cds-edit --seeds 0 1 2

``--executor ray`` runs each reconstruction and each edit as a Ray task, several at once: on this machine's GPUs
(``--ray.gpus-per-edit 0.5``: two edits per GPU) or on a cluster (``--ray.address auto``); a task whose worker dies
is retried and the edit resumes from its checkpoint. A row that fails (bad preset, missing scene, an error in its
edit) fails alone: the others finish, the table lists it with its reason, run folder and log, and the exit code is
1. Writes ``<output-dir>/comparison.md`` and ``comparison.json``; each run's console output is in its
``batch.log``. See docs/batch.md.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "BatchConfig": "ids_nerf.batch.config",
    "BatchEvalConfig": "ids_nerf.batch.config",
    "RayConfig": "ids_nerf.batch.config",
    "COLUMNS": "ids_nerf.batch.report",
    "reconstruction_kind": "ids_nerf.batch.tasks",
    "make_plan": "ids_nerf.batch.driver",
    "run": "ids_nerf.batch.driver",
    "entrypoint": "ids_nerf.batch.driver",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The package's names, imported on first use: a Ray process that only needs a light submodule (the progress
    board actor) never loads torch through this package."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

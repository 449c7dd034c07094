"""nerfstudio run folders: run ``ns-train`` in this process, find the reconstruction to edit, reconstruct first.

``ns-train ids-edit --data <scene> ...`` (or ``ids-splat-edit``) without ``--load-dir`` edits the newest *finished*
reconstruction of the same data folder and the method's scene kind under ``--output-dir``
(:func:`find_reconstruction`); when there is none, :func:`reconstruction_config` describes the warm-up of that kind
(``ids-recon``: nerfacto, ``ids-splat-recon``: splatfacto; ``--recon-steps`` steps) that the editing command runs
first, in its own run folder, kept as the source run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from nerfstudio.engine.trainer import TrainerConfig

from ids_nerf.scenes.kinds import SCENE_KINDS, SceneKind, kind_of_model


def train_run(config: TrainerConfig) -> Path:
    """Run ``ns-train`` in this process and close its event writers, so that a later run in the same process does
    not append to this run's tensorboard file (nerfstudio keeps its writers in a module-global list). Returns the
    run's ``config.yml``."""
    from nerfstudio.scripts.train import main as ns_train
    from nerfstudio.utils import writer

    try:
        ns_train(config)
    finally:
        for event_writer in writer.EVENT_WRITERS:
            tb = getattr(event_writer, "tb_writer", None)
            if tb is not None:
                tb.close()
        writer.EVENT_WRITERS.clear()
    return config.get_base_dir() / "config.yml"


def read_run_config(config_yml: Path) -> Any | None:
    """A run's saved ``config.yml`` (nerfstudio's YAML of its TrainerConfig), or None if it cannot be read."""
    try:
        return yaml.load(config_yml.read_text(), Loader=yaml.Loader)
    except Exception:  # a folder of another nerfstudio version or plugin: not ours to judge, skip it
        return None


def final_checkpoint(run: Path, config: Any) -> Path | None:
    """The checkpoint a finished run saved at its last step (``max_num_iterations - 1``), or None."""
    models = run / getattr(config, "relative_model_dir", Path("nerfstudio_models"))
    path = models / f"step-{int(config.max_num_iterations) - 1:09d}.ckpt"
    return path if path.is_file() else None


@dataclass(frozen=True)
class Reconstruction:
    """A finished reconstruction run found for a data folder."""

    run: Path
    """Its run folder (``<output-dir>/<experiment>/<method>/<timestamp>``)."""
    checkpoint: Path
    """Its last checkpoint."""
    others: int
    """How many other finished reconstructions of the same data were found (older ones)."""


def find_reconstruction(
    output_dir: Path, data: Path, kind: SceneKind = SCENE_KINDS["nerfacto"]
) -> Reconstruction | None:
    """The newest finished reconstruction of ``data`` of scene ``kind`` (nerfacto: nerfacto/ids-recon runs; splat:
    splatfacto/ids-splat-recon runs) under ``output_dir`` (any experiment name), by the time its last checkpoint was
    written; None if there is none."""
    found: list[tuple[float, Path, Path]] = []
    target = Path(data).resolve()
    for config_yml in Path(output_dir).glob("*/*/*/config.yml"):
        run = config_yml.parent
        if run.parent.name not in kind.source_methods:
            continue
        config = read_run_config(config_yml)
        if config is None or kind_of_model(getattr(config.pipeline, "model", None)) is not kind:
            continue
        run_data = config.pipeline.datamanager.data or getattr(config.pipeline.datamanager.dataparser, "data", None)
        if run_data is None or Path(run_data).resolve() != target:
            continue
        checkpoint = final_checkpoint(run, config)
        if checkpoint is not None:
            found.append((checkpoint.stat().st_mtime, run, checkpoint))
    if not found:
        return None
    found.sort()
    _, run, checkpoint = found[-1]
    return Reconstruction(run=run, checkpoint=checkpoint, others=len(found) - 1)


def reconstruction_config(edit: TrainerConfig, steps: int) -> TrainerConfig:
    """The reconstruction an editing command without ``--load-dir`` runs first (the warm-up of the edit's scene kind:
    ``ids-recon`` or ``ids-splat-recon``): the edit's data, dataparser, output folder, experiment name, machine and
    viewer, ``steps`` steps, a checkpoint at the end."""
    kind = kind_of_model(edit.pipeline.model)
    if kind is None:
        raise ValueError(f"{type(edit.pipeline.model).__name__} is not a scene model of {', '.join(SCENE_KINDS)}")
    config = kind.recon()
    data = edit.data or edit.pipeline.datamanager.data
    config.data = config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser = copy.deepcopy(edit.pipeline.datamanager.dataparser)
    config.output_dir, config.experiment_name = edit.output_dir, edit.experiment_name
    config.machine, config.vis = copy.deepcopy(edit.machine), edit.vis
    config.viewer = copy.deepcopy(edit.viewer)
    config.viewer.quit_on_train_completion = True  # go on to the edit instead of waiting for Ctrl-C
    config.logging = copy.deepcopy(edit.logging)
    config.max_num_iterations = config.steps_per_save = steps
    return config

"""nerfstudio run folders: run ``ns-train`` in this process, find the reconstruction to edit, reconstruct first.

``ns-train ids-edit --data <scene> ...`` (or ``ids-splat-edit``) without ``--load-dir`` edits the newest *finished*
reconstruction of the same data folder and the method's scene kind under ``--output-dir``
(:func:`find_reconstruction`); when there is none, :func:`reconstruction_config` describes the warm-up of that kind
(``ids-recon``: nerfacto, ``ids-splat-recon``: splatfacto; ``--recon-steps`` steps) that the editing command runs
first, in its own run folder, kept as the source run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from nerfstudio.engine.trainer import TrainerConfig

from ids_nerf.errors import UserError
from ids_nerf.nerf.checkpoints import check_checkpoint, checkpoint_step
from ids_nerf.scenes.kinds import SCENE_KINDS, SceneKind, kind_of_model


def train_run(config: TrainerConfig) -> Path:
    """Run ``ns-train`` in this process and close its event writers, so that a later run in the same process does
    not append to this run's tensorboard file (nerfstudio keeps its writers in a module-global list). Returns the
    run's ``config.yml``.

    A single-device run goes through nerfstudio's own steps (``--data`` alias, timestamp, config printed and saved,
    seed, ``train_loop``) but not its launcher, which would swallow a KeyboardInterrupt (traceback, return as if the
    run had finished): an interruption reaches the caller (and our trainers end it with exit code 130/143)."""
    from nerfstudio.scripts import train as ns
    from nerfstudio.utils import profiler, writer

    try:
        if config.machine.num_devices * config.machine.num_machines != 1:
            ns.main(config)  # several devices: nerfstudio's launcher spawns the workers
        else:
            if config.data:
                config.pipeline.datamanager.data = config.data
            config.set_timestamp()
            config.print_to_terminal()
            config.save_config()
            try:
                ns.train_loop(local_rank=0, world_size=1, config=config)
            finally:
                profiler.flush_profiler(config.logging)
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


def last_step(config: Any) -> int | None:
    """The last step of a run (None: unknown). It is ``max_num_iterations - 1``; for a run that continued another
    one with --load-dir (nerfstudio's resume, e.g. the command an interrupted reconstruction prints, or ids-batch
    continuing a killed reconstruction), nerfstudio runs ``max_num_iterations`` more steps after the loaded one
    (editing runs count their steps from the edit's start instead, a resumed edit included)."""
    last = int(config.max_num_iterations) - 1
    load_dir = getattr(config, "load_dir", None)
    if load_dir is not None and not hasattr(getattr(config, "pipeline", None), "guidance"):
        loaded = config.load_step
        if loaded is None:
            loaded = max((checkpoint_step(p) for p in Path(load_dir).glob("step-*.ckpt")), default=None)
        if loaded is None:
            return None
        last = int(loaded) + int(config.max_num_iterations)
    return last


def _models(run: Path, config: Any) -> Path:
    return run / getattr(config, "relative_model_dir", Path("nerfstudio_models"))


def final_checkpoint(run: Path, config: Any) -> Path | None:
    """The checkpoint a finished run saved at its last step (:func:`last_step`), or None."""
    last = last_step(config)
    if last is None:
        return None
    path = _models(run, config) / f"step-{last:09d}.ckpt"
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
    for run, config in _reconstruction_runs(output_dir, data, kind):
        checkpoint = final_checkpoint(run, config)
        if checkpoint is not None:
            found.append((checkpoint.stat().st_mtime, run, checkpoint))
    if not found:
        return None
    found.sort()
    _, run, checkpoint = found[-1]
    return Reconstruction(run=run, checkpoint=checkpoint, others=len(found) - 1)


def _reconstruction_runs(output_dir: Path, data: Path, kind: SceneKind) -> Iterator[tuple[Path, Any]]:
    """``(run folder, saved config)`` of every reconstruction run of ``data`` of scene ``kind`` under
    ``output_dir``, finished or not."""
    target = Path(data).resolve()
    for config_yml in Path(output_dir).glob("*/*/*/config.yml"):
        run = config_yml.parent
        if run.parent.name not in kind.source_methods:
            continue
        config = read_run_config(config_yml)
        if config is None or kind_of_model(getattr(config.pipeline, "model", None)) is not kind:
            continue
        run_data = config.pipeline.datamanager.data or getattr(config.pipeline.datamanager.dataparser, "data", None)
        if run_data is not None and Path(run_data).resolve() == target:
            yield run, config


def unfinished_reconstruction(output_dir: Path, data: Path, kind: SceneKind, steps: int) -> Path | None:
    """The furthest complete checkpoint of the unfinished reconstructions of ``data`` of ``kind`` under
    ``output_dir`` that were to run ``steps`` steps in all (a run killed mid-way, or its continuation killed in
    turn), or None. A checkpoint cut short by the kill (no zip directory, a bad checksum) does not count."""
    candidates: list[tuple[int, Path]] = []
    for run, config in _reconstruction_runs(output_dir, data, kind):
        last = last_step(config)
        if last is None or last + 1 != steps or final_checkpoint(run, config) is not None:
            continue
        candidates += [(checkpoint_step(p), p) for p in _models(run, config).glob("step-*.ckpt")]
    for _, checkpoint in sorted(candidates, reverse=True):
        try:
            return check_checkpoint(checkpoint)
        except UserError:
            continue
    return None


def continue_reconstruction(config: TrainerConfig, checkpoint: Path, steps: int) -> None:
    """Make ``config`` (a new reconstruction run of ``steps`` steps in all) continue from ``checkpoint`` of an
    unfinished one instead (nerfstudio's --load-dir resume: the scene, optimizers and schedulers of that step, then
    the steps left; its checkpoints keep the step numbers of the whole run)."""
    step = checkpoint_step(checkpoint)
    config.load_dir, config.load_step = checkpoint.parent, step
    config.max_num_iterations = steps - (step + 1)


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

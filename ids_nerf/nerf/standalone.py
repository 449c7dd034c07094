"""An editing run built in-process, without ``ns-train``: the same :class:`IDSEditPipeline`, Adam optimizers, LR
schedule and scene callbacks (proposal sampler, splat culling) as ``ns-train <method>``, for benchmarks and tests that
need to drive single editing steps (and, for timing, a freshly initialised scene instead of a trained one).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.base_model import ModelConfig

from ids_nerf.nerf.pipeline import IDSEditPipeline
from ids_nerf.profiling import phase


@dataclass
class StandaloneEdit:
    """A built editing run: call :meth:`step` with increasing step numbers, as nerfstudio's Trainer does."""

    pipeline: IDSEditPipeline
    """The editing pipeline (scene, data, guidance)."""
    optimizers: Optimizers
    """nerfstudio optimizers of the edited parameter groups (nerfacto: fields, proposal networks; splat: the six
    per-Gaussian groups)."""
    callbacks: list[TrainingCallback]
    """The pipeline's training callbacks (the proposal sampler's step counter; splat culling)."""

    def step(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One editing step: zero grads, :meth:`IDSEditPipeline.edit_step`, optimizer and scheduler step,
        after-iteration callbacks. Returns (loss_dict, metrics_dict)."""
        self.optimizers.zero_grad_all()
        loss_dict, metrics = self.pipeline.edit_step(step)
        with phase("optimizer step"):
            self.optimizers.optimizer_step_all()
            self.optimizers.scheduler_step_all(step)
        for callback in self.callbacks:
            callback.run_callback_at_location(step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        return loss_dict, metrics


def build_edit(
    method: str,
    data: Path,
    device: str,
    *,
    load_dir: Path | None = None,
    model: Callable[[ModelConfig], None] | None = None,
    prior: Any = None,
    guidance: Callable[[Any], None] | None = None,
    seed: int = 42,
) -> StandaloneEdit:
    """Build ``method`` (an ``ns-train`` editing method name, e.g. ``ids-edit`` or ``ids-splat-edit``) on the scene
    in ``data``.

    Args:
        load_dir: a reconstruction's ``nerfstudio_models/`` to edit (its config.yml is adopted as by ``ns-train``);
            None edits a freshly initialised scene (enough for timing and gradient checks).
        model: edits the scene's model config in place before the model is built (e.g. a CPU-sized nerfacto, or the
            number of random Gaussians).
        prior: an already built :class:`~ids_nerf.guidance.prior.DiffusionPrior`; None loads the configured one.
        guidance: edits the pipeline config (prompts, prior, render chunk size, ...) in place before it is built.
        seed: the run's seed (ns-train's --machine.seed).
    """
    from ids_nerf.method_configs import EDIT_METHODS
    from ids_nerf.nerf.trainer import adopt_source_config, find_checkpoint, load_source_scene, span_schedules

    if method not in EDIT_METHODS:
        raise ValueError(f"Unknown editing method {method!r}; choose from {', '.join(EDIT_METHODS)}.")
    config = copy.deepcopy(EDIT_METHODS[method].config)
    config.data = data
    config.pipeline.datamanager.data = data
    config.machine.device_type, config.machine.seed = device.split(":")[0], seed
    checkpoint = None
    if load_dir is not None:
        config.load_dir = load_dir
        checkpoint = find_checkpoint(config)
        adopt_source_config(config, checkpoint)
    if model is not None:
        model(config.pipeline.model)
    if torch.device(device).type != "cuda" and hasattr(config.pipeline.model, "implementation"):
        config.pipeline.model.implementation = "torch"  # tinycudann is CUDA-only
    if guidance is not None:
        guidance(config.pipeline)
    pipeline: IDSEditPipeline = config.pipeline.setup(device=device, test_mode="val")
    if checkpoint is not None:
        load_source_scene(pipeline, checkpoint, method)
    pipeline.train()
    pipeline.set_seed(config.machine.seed)
    if prior is not None:
        pipeline.set_prior(prior)
    span_schedules(config)
    optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
    callbacks = pipeline.get_training_callbacks(TrainingCallbackAttributes(optimizers, None, pipeline, None))
    return StandaloneEdit(pipeline, optimizers, callbacks)

"""The one resumable training loop of the toy prior's stages (VAE, decoder fine-tuning, text encoder + UNet).

A stage hands :func:`run_training` its models, the parameters to optimise and a ``step_fn`` that draws a batch
from the loop's generator and returns the loss. The loop owns everything else, the same for every stage: AdamW
(no weight decay), the learning-rate schedule :func:`lr_factor`, gradient clipping, an optional EMA of the
parameters (diffusers' ``EMAModel``, see :func:`make_ema`), a progress bar, in-training evaluations and
checkpoints. Checkpoints are ``accelerate`` states (``Accelerator.save_state``: models, optimiser, schedule, RNG
states, plus the EMA and the loop's position and generator as registered objects), written to a temporary folder
and swapped in, so an interrupted run resumes from the last complete one; a resumed run continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch import Tensor, nn
from tqdm import tqdm

StepFn = Callable[[torch.Generator], tuple[Tensor, dict[str, Tensor]]]
"""Draws one batch with the generator and returns the loss and (detached) values to show in the progress bar."""


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0.1 at ``total``.

    Hand-written because no library schedule gives these numbers: after the warm-up they equal transformers'
    ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1)`` at every step, but the library's warm-up
    starts at 0 (``step / warmup``, a lost first step) and ours at ``1 / warmup`` (``(step + 1) / warmup``);
    diffusers' ``get_cosine_schedule_with_warmup`` has the same warm-up and decays to 0. The shipped weights were
    trained with this one (``tests/test_toy_prior.py`` checks both relations step by step).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_ema(params: list[nn.Parameter], decay: float) -> EMAModel:
    """diffusers' EMA of ``params`` with the decay ``min(decay, (1 + n) / (10 + n))`` at its ``n``-th update.

    ``update_after_step=-1`` makes diffusers' step count ``n - update_after_step - 1`` equal to ``n`` (the default
    0 would start one update later, with a first decay of 0), which reproduces the hand-written EMA the shipped
    weights were trained with; ``foreach`` updates all tensors at once. The averages agree with that EMA to float
    rounding (``tests/test_toy_prior.py``).
    """
    return EMAModel(params, decay=decay, min_decay=0.0, update_after_step=-1, use_ema_warmup=False, foreach=True)


class Stopwatch:
    """Wall-clock and CPU seconds (all threads of this process and of its finished children); pausable."""

    def __init__(self, times: dict[str, float] | None = None) -> None:
        self.wall = float((times or {}).get("wall", 0.0))
        self.cpu = float((times or {}).get("cpu", 0.0))
        self._since: tuple[float, float] | None = None

    @staticmethod
    def _cpu_now() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> Stopwatch:
        """Start (or resume) counting."""
        self._since = (time.perf_counter(), self._cpu_now())
        return self

    def stop(self) -> Stopwatch:
        """Pause counting."""
        self.wall, self.cpu = self.read()["wall"], self.read()["cpu"]
        self._since = None
        return self

    def read(self) -> dict[str, float]:
        """``{"wall": s, "cpu": s}`` so far."""
        if self._since is None:
            return {"wall": self.wall, "cpu": self.cpu}
        return {
            "wall": self.wall + time.perf_counter() - self._since[0],
            "cpu": self.cpu + self._cpu_now() - self._since[1],
        }


@dataclass
class LoopConfig:
    """What differs between the stages' loops."""

    desc: str
    """Progress-bar label."""
    steps: int
    """Optimisation steps."""
    lr: float
    """Peak learning rate (AdamW, schedule :func:`lr_factor`)."""
    warmup: int
    """Warm-up steps of the schedule."""
    grad_clip: float
    """Gradient-norm clipping."""
    seed: int
    """Seed of the generator handed to ``step_fn`` (batches, noise, augmentation)."""
    checkpoint_every: int
    """Checkpoint interval in steps (none after the last step)."""
    resume: bool = True
    """Continue from the checkpoint folder if there is one."""
    eval_every: int = 0
    """Call ``evaluate`` every this many steps (0: never); its time is not counted."""


@dataclass
class LoopResult:
    """What :func:`run_training` returns."""

    seconds: dict[str, float]
    """Wall/CPU seconds of training summed over resumed sessions, without the evaluations."""
    avg_loss: float | None
    """Exponential moving average (0.98) of the loss at the end."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Results of the evaluations, each with its ``step`` and ``loss``."""


class _Progress:
    """The loop's own resumable state (an ``accelerate`` custom checkpoint object): position, loss, clock, RNG."""

    def __init__(self, generator: torch.Generator, clock: Stopwatch) -> None:
        self.generator, self.clock = generator, clock
        self.step, self.avg_loss, self.history = 0, None, []

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "avg_loss": self.avg_loss,
            "history": self.history,
            "seconds": self.clock.read(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.avg_loss, self.history = int(state["step"]), state["avg_loss"], list(state["history"])
        self.clock.wall, self.clock.cpu = float(state["seconds"]["wall"]), float(state["seconds"]["cpu"])
        self.generator.set_state(state["generator"])


def run_training(
    cfg: LoopConfig,
    models: list[nn.Module],
    params: list[nn.Parameter],
    step_fn: StepFn,
    checkpoint: Path,
    ema: EMAModel | None = None,
    evaluate: Callable[[int], dict[str, Any]] | None = None,
) -> LoopResult:
    """Optimise ``params`` for ``cfg.steps`` steps of ``step_fn``'s loss; resumable from ``checkpoint``.

    ``models`` (put in train mode during the loop, eval mode after it) hold ``params`` and are saved with each
    checkpoint; ``ema`` is updated after every step and checkpointed too. ``evaluate(step)`` runs every
    ``cfg.eval_every`` steps with the clock paused. The caller saves its result, then calls
    :func:`remove_checkpoint`.
    """
    accelerator = Accelerator(cpu=True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup))
    *_, opt, sched = accelerator.prepare(*models, opt, sched)
    gen = torch.Generator().manual_seed(cfg.seed)
    clock = Stopwatch()
    progress = _Progress(gen, clock)
    accelerator.register_for_checkpointing(progress, *([ema] if ema is not None else []))
    found = _complete_checkpoint(checkpoint)
    if cfg.resume and found is not None:
        accelerator.load_state(str(found))
    clock.start()
    for m in models:
        m.train()
    bar = tqdm(range(progress.step, cfg.steps), desc=cfg.desc, initial=progress.step, total=cfg.steps)
    for step in bar:
        loss, shown = step_fn(gen)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.step(params)
        value = loss.item()
        progress.avg_loss = value if progress.avg_loss is None else 0.98 * progress.avg_loss + 0.02 * value
        progress.step = done = step + 1
        if step % 10 == 0:
            extra = {k: f"{float(v):.4g}" for k, v in shown.items()}
            bar.set_postfix(loss=f"{progress.avg_loss:.4f}", lr=f"{sched.get_last_lr()[0]:.1e}", **extra)
        if evaluate is not None and cfg.eval_every > 0 and done % cfg.eval_every == 0:
            clock.stop()
            result = {"step": done, "loss": progress.avg_loss, **evaluate(done)}
            progress.history.append(result)
            tqdm.write(f"[eval step {done}] " + json.dumps(result))
            clock.start()
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _save_checkpoint(accelerator, checkpoint)
    bar.close()
    for m in models:
        m.eval()
    return LoopResult(clock.stop().read(), progress.avg_loss, progress.history)


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _save_checkpoint(accelerator: Accelerator, path: Path) -> None:
    """``accelerator.save_state`` to ``path`` without ever leaving it half written (the previous one is kept
    under ``<path>.old`` until the new one is in place)."""
    tmp, old = _sibling(path, ".tmp"), _sibling(path, ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp))
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _complete_checkpoint(path: Path) -> Path | None:
    """The last completely written checkpoint folder, if any."""
    return next((p for p in (path, _sibling(path, ".old")) if p.is_dir()), None)


def remove_checkpoint(path: Path) -> None:
    """Delete a stage's checkpoint folders (once its result is saved)."""
    for p in (path, _sibling(path, ".tmp"), _sibling(path, ".old")):
        shutil.rmtree(p, ignore_errors=True)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file, so ``path`` is complete or absent."""
    tmp = _sibling(path, ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path) -> Any:
    """What :func:`save_atomic` wrote (on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=False)

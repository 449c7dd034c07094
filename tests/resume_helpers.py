"""Interrupt an editing run inside a given step and resume it, as the resume tests of every scene kind do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ids_nerf.nerf.runs import train_run


def run_whole_and_cut(base: Any, monkeypatch: pytest.MonkeyPatch, stop_in: int) -> tuple[Any, Any]:
    """Run ``base`` (an editing TrainerConfig) twice: whole (timestamp ``whole``) and with Ctrl-C raised inside step
    ``stop_in`` (``cut``: exit code 130, the last periodic checkpoint stands). Returns (whole, cut) configs."""
    from ids_nerf.nerf.pipeline import IDSEditPipeline

    whole = copy.deepcopy(base)
    whole.timestamp = "whole"
    train_run(whole)
    cut = copy.deepcopy(base)
    cut.timestamp = "cut"
    real_step = IDSEditPipeline.edit_step

    def killed(self, step):
        if step == stop_in:
            raise KeyboardInterrupt
        return real_step(self, step)

    monkeypatch.setattr(IDSEditPipeline, "edit_step", killed)
    with pytest.raises(SystemExit) as stopped:  # Ctrl-C inside a step: exit 130, the last checkpoint stands
        train_run(cut)
    assert stopped.value.code == 130
    monkeypatch.setattr(IDSEditPipeline, "edit_step", real_step)
    return whole, cut


def resume(template: Any, out: Path, load_dir: Path, name: str = "resumed") -> Any:
    """Resume the interrupted edit of ``load_dir`` with only --load-dir (and where to write): prompts, settings and
    steps come from the interrupted run. Returns the resumed run's config."""
    resumed = copy.deepcopy(template)
    resumed.pipeline.guidance.src_prompt = resumed.pipeline.guidance.trg_prompt = ""
    resumed.output_dir, resumed.timestamp, resumed.load_dir = out, name, load_dir
    train_run(resumed)
    return resumed

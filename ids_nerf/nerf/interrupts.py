"""Ctrl-C and SIGTERM during ``ns-train`` runs of the plugin (edits and reconstruction warm-ups).

nerfstudio 1.1.5's launcher catches KeyboardInterrupt, prints its traceback and exits 0, so scripts (and ``ids-batch``)
took an interrupted edit for a finished one, and a run stopped before its first checkpoint left nothing to resume.
:class:`InterruptibleTraining` (a mixin of nerfstudio's ``Trainer``) instead:

- holds the first signal until the step in progress has finished (:class:`StepBoundaryStop`), then writes a
  checkpoint of that step (scene, optimizers, schedulers and, for an edit, its random streams: nothing computed is
  lost); a second signal stops at once and the last checkpoint stands;
- prints one line, ``<prog>: interrupted at step N of M; resume with: <the exact command>``, and exits with 130
  (SIGINT) or 143 (SIGTERM), without a traceback (:func:`ids_nerf.console.exit_on_interrupt`);
- removes the run's folder when no checkpoint was written (nothing to resume from: only its config and logs).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from nerfstudio.utils.rich_utils import CONSOLE

from ids_nerf.nerf.checkpoints import checkpoint_step


class StepBoundaryStop:
    """The first Ctrl-C / SIGTERM is held until :meth:`check` (called at the start of each step) raises it, so that the
    interruption's checkpoint is a whole step; a second one raises at once. A context manager (in the main thread it
    installs the signal handlers and restores the previous ones on exit)."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.requested: int | None = None
        """The signal held until the next step boundary."""
        self.at_boundary = False
        """Whether the stop happened at a step boundary (the completed steps are consistent)."""
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StepBoundaryStop:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested is None:
            self.requested = signum
            CONSOLE.print(f"{self.prog}: stopping after the current step (press Ctrl-C again to stop at once)")
            return
        self._raise(signum)

    @staticmethod
    def _raise(signum: int) -> None:
        from ids_nerf.console import Terminated

        raise Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt

    def check(self) -> None:
        """Raise the stop requested since the last check, if any."""
        if self.requested is not None:
            self.at_boundary = True
            self._raise(self.requested)


class InterruptibleTraining:
    """Mixin of nerfstudio's ``Trainer`` (put it first): interruptions end with a checkpoint, one line and exit code
    130/143. Subclasses that replace ``train_iteration`` call :meth:`stop_point` first; :meth:`resume_command` and
    :meth:`total_steps` say how to continue."""

    # nerfstudio Trainer attributes this mixin reads
    config: Any
    step: int
    _start_step: int
    base_dir: Path
    checkpoint_dir: Path
    _stop: StepBoundaryStop

    def stop_point(self) -> None:
        """Where a held stop happens: the start of a step, before anything of it changes (a no-op outside
        :meth:`train`, e.g. a step driven directly)."""
        stop = self.__dict__.get("_stop")
        if stop is not None:
            stop.check()

    def train_iteration(self, step: int):
        self.stop_point()
        return super().train_iteration(step)  # type: ignore[misc]

    def train(self) -> None:
        from ids_nerf.console import exit_on_interrupt

        self._stop = StepBoundaryStop(f"ns-train {self.config.method_name}")
        with exit_on_interrupt(self._stop.prog, self.interrupted_message), self._stop:
            try:
                super().train()  # type: ignore[misc]
            except KeyboardInterrupt:
                self._checkpoint_at_interruption()
                raise

    # ------------------------------------------------------------------ what to say and keep
    def total_steps(self) -> int:
        """Steps of the whole run."""
        return int(self.config.max_num_iterations)

    def resume_command(self) -> str:
        """The exact command that continues this run from its last checkpoint (nerfstudio's --load-dir resume: it
        runs --max-num-iterations more steps after the loaded one)."""
        done = self.last_checkpoint_step() + 1
        data = self.config.pipeline.datamanager.data
        words = ["ns-train", self.config.method_name, "--data", str(data), "--load-dir", str(self.checkpoint_dir)]
        words += ["--max-num-iterations", str(self.total_steps() - done), *self.machine_flags()]
        return shlex.join(words)

    def machine_flags(self) -> list[str]:
        """The flags that put a continued run where and on what this one ran, where they differ from ns-train's
        defaults (--output-dir, --machine.device-type)."""
        words = []
        if Path(self.config.output_dir) != Path("outputs"):
            words += ["--output-dir", str(self.config.output_dir)]
        if self.config.machine.device_type != "cuda":
            words += ["--machine.device-type", str(self.config.machine.device_type)]
        return words

    def has_checkpoint(self) -> bool:
        """Whether this run wrote a checkpoint."""
        folder: Path = self.checkpoint_dir
        return folder.is_dir() and any(folder.glob("step-*.ckpt"))

    def last_checkpoint_step(self) -> int:
        """The step of this run's newest checkpoint (-1: none)."""
        folder: Path = self.checkpoint_dir
        steps = [checkpoint_step(p) for p in folder.glob("step-*.ckpt")] if folder.is_dir() else []
        return max(steps, default=-1)

    def interrupted_message(self) -> str:
        """The one line an interrupted run prints: how far it got and the exact command that continues it."""
        total = self.total_steps()
        source = getattr(self, "source", None)
        if not self.has_checkpoint():
            if getattr(source, "resume", False):
                return f"interrupted at step {self._start_step} of {total}; resume with: {self.resume_command()}"
            return f"interrupted before the first step of {total}; nothing to resume (no run folder kept)"
        done = self.last_checkpoint_step() + 1
        if self._stop.at_boundary:
            return f"interrupted at step {done} of {total}; resume with: {self.resume_command()}"
        return (
            f"interrupted during step {self.step + 1} of {total} (last checkpoint: step {done}); resume with: "
            f"{self.resume_command()}"
        )

    def _checkpoint_at_interruption(self) -> None:
        """At a step boundary the completed steps are saved (unless the last one already was); after a second signal
        the last checkpoint stands. A run without any checkpoint leaves no run folder."""
        step: int = self.step  # the step that was about to run
        if self._stop.at_boundary and step > self._start_step and self.last_checkpoint_step() != step - 1:
            self.save_checkpoint(step - 1)  # type: ignore[attr-defined]
        if not self.has_checkpoint():
            self._remove_run_folder()

    RUN_FILES = ("config.yml", "dataparser_transforms.json", "events.out.tfevents.*", "edit_changes.jsonl")
    """The files a run writes before its first checkpoint (with the folders below): what :meth:`_remove_run_folder`
    may delete. Anything else in the folder is left alone, and then the folder too."""
    RUN_FOLDERS = ("nerfstudio_models", "edit_progress", "edit_state")

    def _remove_run_folder(self) -> None:
        """Remove what this run wrote when it wrote no checkpoint (nothing to resume from), and its folder if that
        leaves it empty; files it does not know are never touched."""
        from nerfstudio.utils import writer

        for event_writer in writer.EVENT_WRITERS:
            tb = getattr(event_writer, "tb_writer", None)
            if tb is not None:
                tb.close()
        base = Path(self.base_dir)
        if not base.is_dir():
            return
        for pattern in self.RUN_FILES:
            for path in base.glob(pattern):
                path.unlink(missing_ok=True)
        for name in self.RUN_FOLDERS:
            folder = base / name
            if folder.is_dir() and all(p.suffix in (".png", ".pt", ".tmp") for p in folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            base.rmdir()  # only when empty

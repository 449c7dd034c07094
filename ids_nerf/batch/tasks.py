"""The work of ``ids-batch``, one task at a time, the same under every executor: a scene's reconstruction, and an
edit with its ``ids-eval render`` scoring.

Tasks take and return plain data (the batch options, a task spec, dicts), so that Ray can ship them to another
process or node; each builds its nerfstudio config itself and writes its console output to ``batch.log`` in its run
folder. A task never raises for a failure of its own (bad preset, missing scene, an error in the edit): it returns
a record with ``status: "failed"`` and a one-line ``reason`` (the traceback is in the log), so one bad row never stops
the others. Ctrl-C (or a Ray cancel) is not a failure: it propagates.

Run folders of an edit, ``<output-dir>/<preset>/<method>/``: ``seed<seed>`` is its first attempt; an attempt that
stopped early (killed worker, lost node, Ctrl-C) is continued by the next one, ``seed<seed>-attempt<n>``, through the
edit-resume path (``--load-dir <attempt>/nerfstudio_models``: its steps, optimizers and random streams), from the
newest complete checkpoint of the earlier attempts (checkpoints every ``--save-every`` steps). The attempt that
reaches the last step is the edit's run; it is reused, never recomputed, by later batches. A reconstruction that
stopped early is continued the same way, in a new run folder next to it, through nerfstudio's ``--load-dir`` resume
(:func:`ids_nerf.nerf.runs.unfinished_reconstruction`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ids_nerf.batch.config import BatchConfig
from ids_nerf.errors import UserError
from ids_nerf.threads import torch_threads

LOG = "batch.log"
"""Console output of a task, in its run folder."""
TASK_FILE = "batch_task.json"
"""Written by a reconstruction or edit attempt when it starts, in its run folder: process id, host, first step,
checkpoint resumed."""


class TaskFailed(Exception):
    """A task cannot do its work; the message is the row's one-line reason."""


# ------------------------------------------------------------------------------------------------ reconstructions
def reconstruction_kind(method: str) -> str:
    """The kind of reconstruction an editing method edits (``nerfacto`` for ``ids-edit``, ``splat`` for
    ``ids-splat-edit``): the one place where the batch maps methods to scene representations. The batch finds or
    trains one reconstruction per (scene data folder, kind) and gives each edit the one of its kind."""
    from ids_nerf.scenes.kinds import editing_methods

    return editing_methods()[method][1].name


def find_reconstruction_of(output_dir: Path, data: Path, kind: str) -> Path | None:
    """The run folder of the newest finished reconstruction of ``data`` of ``kind`` under ``output_dir``, or None."""
    from ids_nerf.nerf.runs import find_reconstruction
    from ids_nerf.scenes.kinds import SCENE_KINDS

    found = find_reconstruction(output_dir, data, SCENE_KINDS[kind])
    return None if found is None else found.run


def new_reconstruction_config(cfg: BatchConfig, spec: ReconSpec) -> Any:
    """The TrainerConfig of a new reconstruction of ``spec`` (the warm-up of its kind: ids-recon, ids-splat-recon)."""
    from ids_nerf.method_configs import EDIT_METHODS
    from ids_nerf.nerf.runs import reconstruction_config

    recon = reconstruction_config(EDIT_METHODS[spec.template].config, cfg.recon_steps)  # copies, never mutates
    common_settings(recon, cfg, spec.data, cfg.recon_steps, cfg.seeds[0])
    recon.steps_per_save = min(cfg.save_every, cfg.recon_steps)  # a killed reconstruction continues from there
    recon.experiment_name = spec.data.name
    if cfg.cpu_scenes and _is_nerfacto(recon):
        recon.pipeline.datamanager.train_num_rays_per_batch = recon.pipeline.datamanager.eval_num_rays_per_batch = 512
    return recon


@dataclass(frozen=True)
class ReconSpec:
    """One reconstruction: a scene's data folder and the kind its editing methods need."""

    data: Path
    """The scene's data folder."""
    kind: str
    """Its kind (:func:`reconstruction_kind`)."""
    template: str
    """An editing method of that kind: a new reconstruction takes its dataparser settings."""
    scene: str
    """The scene as the presets name it (``llff/fern``)."""

    @property
    def key(self) -> str:
        """One reconstruction per (data folder, kind), shared by all edits of the scene."""
        return f"{self.kind}:{self.data.resolve()}"


@dataclass(frozen=True)
class EditSpec:
    """One edit: a preset, a method and a seed."""

    preset: Path
    """The preset file."""
    name: str
    """The preset's name (its file stem): the experiment folder."""
    method: str
    """ns-train editing method."""
    seed: int
    """--machine.seed."""
    recon: str
    """Key of the reconstruction it edits (:attr:`ReconSpec.key`)."""

    @property
    def key(self) -> str:
        """``<preset>/<method>/seed<seed>``."""
        return f"{self.name}/{self.method}/seed{self.seed}"

    def folder(self, output_dir: Path) -> Path:
        """Where its attempts are (``<output-dir>/<preset>/<method>``)."""
        return Path(output_dir) / self.name / self.method


@dataclass(frozen=True)
class TaskEnv:
    """How a task runs under its executor."""

    capture: Literal["tee", "file"] = "tee"
    """tee: console output goes to this console and to the run's batch.log (in-process); file: only to batch.log
    (a Ray worker; file descriptors 1 and 2 too)."""
    threads: int | None = None
    """torch CPU threads while the task runs (None: leave them)."""
    marker: str | None = None
    """A file the driver wrote in --output-dir: a worker that cannot see it fails with the shared-file-system
    message instead of writing runs the driver never sees."""
    reporter: Any = None
    """Ray actor (:class:`ids_nerf.batch.ray_executor.ProgressBoard`) told when a task starts, or None."""


def common_settings(config: Any, cfg: BatchConfig, data: Path, steps: int, seed: int) -> None:
    """Settings of every run of the batch: data, output folder, steps, a checkpoint at the end, no evaluation
    passes, tensorboard, device, seed, and the CPU-sized scene models of --cpu-scenes."""
    config.data = config.pipeline.datamanager.data = data
    config.output_dir, config.max_num_iterations, config.steps_per_save = cfg.output_dir, steps, steps
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.vis, config.machine.device_type, config.machine.seed = "tensorboard", _device(cfg.device), seed
    if cfg.cpu_scenes:
        from ids_nerf.scenes.cpu_sizes import cpu_sized

        cpu_sized(config.pipeline.model)


def _is_nerfacto(config: Any) -> bool:
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    return isinstance(config.pipeline.model, NerfactoModelConfig)


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def reconstruct_task(cfg: BatchConfig, spec: ReconSpec, env: TaskEnv) -> dict[str, Any]:
    """Find the newest finished reconstruction of ``spec`` under --output-dir, or train one. Returns its record:
    ``status``, ``config`` (its config.yml), ``run``, ``log``, ``reason``, ``reused``, ``timing``."""
    record: dict[str, Any] = {"key": spec.key, "scene": spec.scene, "kind": spec.kind, **_where(), "reused": False}
    record.update(status="failed", run=None, config=None, log=None, reason=None, timing={"start": time.time()})
    try:
        _check_shared(cfg, env)
        if not spec.data.is_dir():
            raise TaskFailed(f"the scene folder {spec.data} of {spec.scene} does not exist on {record['host']}.")
        with torch_threads(env.threads):
            found = find_reconstruction_of(cfg.output_dir, spec.data, spec.kind)
            if found is not None:
                print(f"[{spec.scene}] reconstruction: {found} (reused)")
                record.update(status="ok", run=str(found), config=str(found / "config.yml"), reused=True)
                return record
            from ids_nerf.nerf.runs import continue_reconstruction, final_checkpoint, unfinished_reconstruction
            from ids_nerf.scenes.kinds import SCENE_KINDS

            config = new_reconstruction_config(cfg, spec)
            killed = unfinished_reconstruction(cfg.output_dir, spec.data, SCENE_KINDS[spec.kind], cfg.recon_steps)
            if killed is not None:  # a worker died mid-way (Ray retries the task): go on from its last checkpoint
                continue_reconstruction(config, killed, cfg.recon_steps)
            first_step = 0 if killed is None else config.load_step + 1
            run = _claim_reconstruction_folder(config)
            log = run / LOG
            record.update(run=str(run), log=str(log), first_step=first_step)
            _write_task_file(run, first_step, killed)
            _report(env, spec.key, record)
            what = f"none found, training {cfg.recon_steps} {spec.kind} steps"
            if killed is not None:
                what = f"continuing the unfinished {killed} from step {first_step} of {cfg.recon_steps}"
            print(f"[{spec.scene}] reconstruction: {what} in {run}")
            with _capture(log, env.capture) as err:
                _train(config, err)
            if final_checkpoint(run, config) is None:
                raise KeyboardInterrupt  # nerfstudio returned early: it caught a Ctrl-C
            record.update(status="ok", config=str(run / "config.yml"))
    except Exception as exc:  # a failure of this row only: reported, never raised
        _fail(record, exc)
    finally:
        record["timing"]["end"] = time.time()
    return record


def _claim_reconstruction_folder(config: Any) -> Path:
    """Give ``config`` a timestamp whose run folder is new, and create the folder (two reconstructions started in
    the same second, e.g. of two scenes with the same folder name, never share one)."""
    config.set_timestamp()
    base = config.timestamp
    for n in range(1, 1000):
        config.timestamp = base if n == 1 else f"{base}-{n}"
        try:
            config.get_base_dir().mkdir(parents=True, exist_ok=False)
            return config.get_base_dir()
        except FileExistsError:
            continue
    raise TaskFailed(f"no free run folder name under {config.get_base_dir().parent}")


# ------------------------------------------------------------------------------------------------ edits
ATTEMPT = re.compile(r"^seed(-?\d+)(?:-attempt(\d+))?$")
"""Run folder of an edit attempt: ``seed<seed>`` (first), ``seed<seed>-attempt<n>``."""


@dataclass(frozen=True)
class Attempts:
    """The attempts of one edit found on disk."""

    numbers: tuple[int, ...]
    """Attempt numbers in use (1: ``seed<seed>``; 0: a run of the earlier layout, ``batch``)."""
    finished: Path | None
    """The newest attempt that reached the last step (the edit's run), or None."""
    resume: Path | None
    """The newest complete checkpoint of the unfinished attempts (the furthest step), or None."""


def scan_attempts(folder: Path, seed: int) -> Attempts:
    """Attempts of the edit of ``seed`` in ``folder`` (``<output-dir>/<preset>/<method>``).

    A checkpoint is complete when its edit state (``edit_state/step-<n>.pt``, written after the checkpoint) exists:
    a worker killed while writing ``step-<n>.ckpt`` leaves a truncated file without it.
    """
    from ids_nerf.nerf.checkpoints import checkpoint_step
    from ids_nerf.nerf.resume import state_path
    from ids_nerf.nerf.runs import final_checkpoint, read_run_config

    runs: list[tuple[int, Path]] = []
    for path in folder.glob(f"seed{seed}*") if folder.is_dir() else []:
        match = ATTEMPT.match(path.name)
        if match and int(match[1]) == seed and path.is_dir():
            runs.append((int(match[2] or 1), path))
    legacy = folder / "batch"  # ids-batch before --seeds: one run per (preset, method), of --seed (42 by default)
    saved_legacy = read_run_config(legacy / "config.yml") if (legacy / "config.yml").is_file() else None
    if saved_legacy is not None and int(saved_legacy.machine.seed) == seed:
        runs.append((0, legacy))
    runs.sort()
    finished, best = None, (-1, None)
    for _, run in runs:
        saved = read_run_config(run / "config.yml") if (run / "config.yml").is_file() else None
        if saved is None:
            continue
        if final_checkpoint(run, saved) is not None:
            finished = run
            continue
        models = run / getattr(saved, "relative_model_dir", Path("nerfstudio_models"))
        for ckpt in models.glob("step-*.ckpt"):
            step = checkpoint_step(ckpt)
            if state_path(models, step).is_file() and step > best[0]:
                best = (step, ckpt)
    return Attempts(numbers=tuple(n for n, _ in runs), finished=finished, resume=best[1])


def _edit_config(cfg: BatchConfig, spec: EditSpec, preset: Any, name: str, load: Path) -> Any:
    """The TrainerConfig of an edit attempt: from the reconstruction's checkpoint folder, or resuming the
    interrupted attempt whose checkpoint is ``load``."""
    from ids_nerf.method_configs import EDIT_METHODS
    from ids_nerf.nerf.checkpoints import checkpoint_step
    from ids_nerf.presets import apply_preset

    config = copy.deepcopy(EDIT_METHODS[spec.method].config)
    common_settings(config, cfg, preset.data(cfg.data_root), cfg.edit_steps, spec.seed)
    config.steps_per_save = cfg.save_every
    config.experiment_name, config.timestamp = spec.name, name
    if load.is_file():  # a checkpoint of an interrupted attempt: resume it (its step, prompts, optimizers)
        config.load_dir, config.load_step = load.parent, checkpoint_step(load)
    else:
        config.load_dir = load
    config.pipeline.guidance.prior = copy.deepcopy(cfg.prior)
    config.pipeline.render.resolution = cfg.render_resolution
    apply_preset(config, preset, cfg.data_root)
    return config


def source_of(run: Path) -> Path | None:
    """config.yml of the reconstruction an edit run started from (a resumed attempt keeps its edit's source)."""
    from ids_nerf.nerf.runs import read_run_config

    saved = read_run_config(run / "config.yml")
    checkpoint = getattr(getattr(saved, "pipeline", None), "source_checkpoint", None)
    return None if checkpoint is None else Path(checkpoint).parent.parent / "config.yml"


def finished_record(cfg: BatchConfig, spec: EditSpec) -> dict[str, Any] | None:
    """The record of an edit that is finished and scored (nothing to do), else None."""
    finished = scan_attempts(spec.folder(cfg.output_dir), spec.seed).finished
    if finished is None:
        return None
    metrics = finished / f"eval-{cfg.eval.split}" / "metrics.json"
    if not metrics.is_file():
        return None
    record = _edit_record(spec)
    log = finished / LOG
    record.update(run=str(finished), config=str(finished / "config.yml"), log=str(log) if log.is_file() else None)
    record.update(status="ok", reused=True, reconstruction=_str(source_of(finished)))
    _add_metrics(record, json.loads(metrics.read_text()))
    return record


def edit_task(cfg: BatchConfig, spec: EditSpec, recon: dict[str, Any] | None, env: TaskEnv) -> dict[str, Any]:
    """Edit (or resume, or reuse) ``spec`` and score it with ``ids-eval render``. ``recon``: the record of the
    scene's reconstruction (:func:`reconstruct_task`; needed only by an edit that starts from step 0).

    Returns the row's record: ``status`` (ok/failed), ``reason``, ``run`` (the run folder that finished, else the
    attempt that failed), ``log``, ``means`` (the scores), ``first_step`` (> 0: resumed), ``attempt``, ``reused``.
    """
    record = _edit_record(spec)
    try:
        _check_shared(cfg, env)
        from ids_nerf.presets import load_preset

        preset = load_preset(spec.preset, "--presets")
        folder = spec.folder(cfg.output_dir)
        attempts = scan_attempts(folder, spec.seed)
        run = attempts.finished
        with torch_threads(env.threads):
            if run is not None:
                print(f"[{spec.name}] {spec.method} seed {spec.seed}: {run} (reused)")
                record.update(reused=True, run=str(run), config=str(run / "config.yml"))
            else:
                run = _edit(cfg, spec, preset, attempts, recon, env, record)
            record["reconstruction"] = _str(source_of(run))
            log = run / LOG
            with _capture(log, env.capture) as err:
                metrics = _score(cfg, preset, run, err)
            record["log"] = str(log)
        _add_metrics(record, metrics)
        record["status"] = "ok"
    except Exception as exc:  # a failure of this row only: reported, never raised
        _fail(record, exc)
    finally:
        record["timing"]["end"] = time.time()
    return record


def _edit(
    cfg: BatchConfig,
    spec: EditSpec,
    preset: Any,
    attempts: Attempts,
    recon: dict[str, Any] | None,
    env: TaskEnv,
    record: dict[str, Any],
) -> Path:
    """Run a new attempt of the edit (resuming the furthest checkpoint of the earlier ones); its run folder."""
    from ids_nerf.nerf.checkpoints import checkpoint_step
    from ids_nerf.nerf.runs import final_checkpoint

    if attempts.resume is not None:
        load, first_step = attempts.resume, checkpoint_step(attempts.resume) + 1
    elif recon is not None and recon.get("status") == "ok":
        load, first_step = Path(recon["config"]).parent / "nerfstudio_models", 0
    else:
        reason, log = (recon.get("reason"), recon.get("log")) if recon else ("it did not run", None)
        raise TaskFailed(f"its reconstruction of {preset.scene} failed: {reason}" + (f" (log: {log})" if log else ""))
    folder = spec.folder(cfg.output_dir)
    first = max(attempts.numbers, default=0) + 1
    for attempt in range(first, first + 100):  # claim a new attempt folder (mkdir is atomic)
        name = f"seed{spec.seed}" if attempt == 1 else f"seed{spec.seed}-attempt{attempt}"
        try:
            (folder / name).mkdir(parents=True, exist_ok=False)
            break
        except FileExistsError:
            continue  # a concurrent duplicate of this task took it
    else:
        raise TaskFailed(f"no free attempt folder name in {folder}")
    run, log = folder / name, folder / name / LOG
    record.update(run=str(run), log=str(log), attempt=attempt, first_step=first_step)
    _write_task_file(run, first_step, load if first_step else None, attempt=attempt)
    _report(env, spec.key, record)
    what = f"resuming {load} at step {first_step}" if first_step else "editing"
    print(f"[{spec.name}] {spec.method} seed {spec.seed}: {what} ({cfg.edit_steps} steps) in {run}")
    with _capture(log, env.capture) as err:
        config = _edit_config(cfg, spec, preset, name, load)
        _train(config, err)
    if final_checkpoint(run, config) is None:
        raise KeyboardInterrupt  # nerfstudio returned early: it caught a Ctrl-C
    record["config"] = str(run / "config.yml")
    return run


def _score(cfg: BatchConfig, preset: Any, run: Path, err: _Stream) -> dict[str, Any]:
    """``ids-eval render`` of an edit against its reconstruction (reused when metrics.json exists)."""
    from ids_nerf.eval.cli import RenderOptions, evaluate

    out = run / f"eval-{cfg.eval.split}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    source = source_of(run)
    if source is None or not source.is_file():
        raise TaskFailed(f"the reconstruction this edit started from ({source}) is gone: it cannot be scored.")
    options = RenderOptions(
        load_config=run / "config.yml",
        source_config=source,
        src_prompt=preset.src_prompt,
        trg_prompt=preset.trg_prompt,
        output_dir=out,
        split=cfg.eval.split,  # type: ignore[arg-type]
        clip_model=cfg.eval.clip_model,
        clip_pretrained=cfg.eval.clip_pretrained,
        random_weights=cfg.eval.random_weights,
        skip_missing=cfg.eval.skip_missing,
        device=cfg.device,
    )
    try:
        return evaluate(options)
    except UserError as exc:
        raise TaskFailed(f"ids-eval render: {exc}") from exc


# ------------------------------------------------------------------------------------------------ plumbing
def _edit_record(spec: EditSpec) -> dict[str, Any]:
    record: dict[str, Any] = {"key": spec.key, "preset": spec.name, "method": spec.method, "seed": spec.seed}
    record.update(status="failed", reason=None, run=None, config=None, log=None, reconstruction=None, means=None)
    record.update(random_weights=False, reused=False, attempt=None, first_step=None, **_where())
    record["timing"] = {"start": time.time()}
    return record


def _add_metrics(record: dict[str, Any], metrics: dict[str, Any]) -> None:
    record["means"], record["random_weights"] = metrics["means"], bool(metrics.get("random_weights"))


def _write_task_file(run: Path, first_step: int, resumed_from: Path | None, **extra: Any) -> None:
    """:data:`TASK_FILE` of an attempt that starts in ``run`` (the pid lets a test, or a user, find its worker)."""
    task = {**_where(), **extra, "first_step": first_step, "started": time.time()}
    task["resumed_from"] = None if resumed_from is None else str(resumed_from)
    (run / TASK_FILE).write_text(json.dumps(task, indent=1))


def _where() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _check_shared(cfg: BatchConfig, env: TaskEnv) -> None:
    if env.marker is not None and not Path(env.marker).is_file():
        raise TaskFailed(
            f"this Ray worker ({socket.gethostname()}) cannot see the driver's --output-dir {cfg.output_dir} (the "
            f"driver's file {env.marker} is not there): on a cluster, --output-dir and --data-root must be on a file "
            "system shared by every node, mounted at the same path (NFS, Lustre, ...)."
        )


def _report(env: TaskEnv, key: str, record: dict[str, Any]) -> None:
    """Tell the driver's progress board that ``key`` started (and where it writes)."""
    if env.reporter is not None:
        info = {k: record.get(k) for k in ("run", "log", "host", "pid", "attempt", "first_step")}
        env.reporter.start.remote(key, info)


def _fail(record: dict[str, Any], exc: Exception) -> None:
    """Mark ``record`` failed with a one-line reason; the traceback of an unexpected error goes to its log when it
    has one (never to the console: one line per failed row there)."""
    if isinstance(exc, UserError | TaskFailed):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {str(exc).strip()}"
    record["status"], record["reason"] = "failed", " ".join(reason.split()) or type(exc).__name__
    if record.get("log"):
        with open(record["log"], "a") as f:
            f.write(f"\nids-batch: this task failed: {record['reason']}\n")
            if not isinstance(exc, UserError | TaskFailed):
                traceback.print_exception(exc, file=f)


def _train(config: Any, err: _Stream) -> None:
    """``ns-train`` in this process; its refusal of bad input (exit 2 and one line) becomes :class:`TaskFailed`."""
    from ids_nerf.nerf.runs import train_run

    try:
        train_run(config)
    except SystemExit as exc:
        raise TaskFailed(err.last_line or f"ns-train exited with code {exc.code}") from None


class _Stream(io.TextIOBase):
    """A text stream writing to several others; remembers the last non-empty line written."""

    def __init__(self, targets: list[Any], fd: int | None = None) -> None:
        super().__init__()
        self._targets, self._fd, self._tail, self.last_line = targets, fd, "", ""

    def write(self, text: str) -> int:
        for target in self._targets:
            target.write(text)
        lines = (self._tail + text).split("\n")
        self._tail = lines[-1][-2000:]
        done = [line.strip() for line in lines[:-1] if line.strip()]
        if done:
            self.last_line = done[-1]
        return len(text)

    def flush(self) -> None:
        for target in self._targets:
            target.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


@contextlib.contextmanager
def _capture(log: Path, mode: Literal["tee", "file"]) -> Iterator[_Stream]:
    """Send the console output of the block to ``log`` (appended): also to the console (tee), or instead of it
    (file: Python's streams and file descriptors 1 and 2, so that output of C code lands there too)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", buffering=1) as file:
        saved_fds: tuple[int, int] | None = None
        if mode == "file":
            sys.stdout.flush()
            sys.stderr.flush()
            saved_fds = (os.dup(1), os.dup(2))
            os.dup2(file.fileno(), 1)
            os.dup2(file.fileno(), 2)
            out, err = _Stream([file], fd=1), _Stream([file], fd=2)
        else:
            out, err = _Stream([sys.stdout, file]), _Stream([sys.stderr, file])
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            yield err
        finally:
            sys.stdout, sys.stderr = streams
            if saved_fds is not None:
                file.flush()
                os.dup2(saved_fds[0], 1)
                os.dup2(saved_fds[1], 2)
                os.close(saved_fds[0])
                os.close(saved_fds[1])

"""``ids-batch --executor ray``: every reconstruction and every edit (+ its scoring) is a Ray task.

- resources per task: ``--ray.gpus-per-edit`` (fractions share a GPU), ``--ray.cpus-per-edit``,
  ``--ray.memory-per-edit-gb``; Ray runs as many tasks at once as the cluster's resources allow;
- an edit task takes its scene's reconstruction task's result as an argument, so it starts once that one finished;
  there is one reconstruction task per (scene data folder, reconstruction kind);
- a task whose worker died (killed process, lost node, preemption, Ray's out-of-memory killer) is started again, up
  to ``--ray.max-retries`` times; the edit resumes from its last checkpoint (see :mod:`ids_nerf.batch.tasks`);
- ``--ray.address`` joins a running cluster; without it a local Ray instance starts with this machine's GPUs and
  CPUs and stops at the end;
- the driver writes a marker file in ``--output-dir``: a worker that cannot see it (no shared file system) fails its
  task with that message;
- one progress bar over the tasks (done / running / failed / left), the Ray dashboard's address printed once.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ids_nerf.errors import UserInputError

if TYPE_CHECKING:  # imported where used: the progress board's Ray process loads this module without torch
    from ids_nerf.batch.config import BatchConfig
    from ids_nerf.batch.tasks import EditSpec, ReconSpec

MARKERS = ".ids-batch"
"""Folder in --output-dir holding the driver's marker files while a batch runs."""


def import_ray() -> Any:
    """The ``ray`` module, or a one-paragraph error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserInputError(
            f"--executor ray needs the Ray package, which is not installed in this environment ({sys.executable}). "
            'Install it with `pip install "ids_nerf[ray]"` (from a checkout: `pip install -e ".[ray]"`; '
            "scripts/setup.sh installs it), on the cluster's nodes too when you join one with --ray.address. Or "
            "leave out --executor ray: the default in-process executor runs the same edits one after another in "
            "this process."
        ) from None
    return ray


class ProgressBoard:
    """Ray actor (no CPU reserved) that tasks tell when they start: the driver's progress bar counts them as
    running, and a task whose worker died names the run folder and log of its last attempt."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}

    def start(self, key: str, info: dict[str, Any]) -> None:
        """Task ``key`` started an attempt (``info``: run, log, host, pid, attempt, first_step)."""
        starts = self.started.get(key, {}).get("starts", 0) + 1
        self.started[key] = {**info, "starts": starts}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every started task's latest attempt."""
        return self.started


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """``HOST:PORT`` / ``ray://HOST:PORT``: refuse at once when nothing listens there (ray.init would wait for
    minutes). ``auto`` and other forms are left to Ray, which fails fast when it finds no cluster."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if match is None:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout).close()
    except OSError as exc:
        raise UserInputError(
            f"--ray.address {address}: nothing answers there ({exc}). Start the cluster first (`ray start --head` "
            "on the head node prints its address), check host and port (6379 for the cluster, 10001 for Ray "
            "Client's ray://), or leave out --ray.address to run on this machine."
        ) from None


def _connect(ray: Any, cfg: BatchConfig) -> tuple[bool, str]:
    """Start or join Ray; returns (started here, the dashboard's address or why there is none)."""
    if ray.is_initialized():  # e.g. a test or a notebook that already called ray.init(): use it, leave it running
        return False, "(the Ray instance this process already joined)"
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if cfg.ray.address is None:
        kwargs.update(num_cpus=cfg.ray.local_cpus, num_gpus=cfg.ray.local_gpus)
    else:
        _check_reachable(cfg.ray.address)
        kwargs["address"] = cfg.ray.address
    try:
        context = ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if cfg.ray.address is None:
            raise
        raise UserInputError(
            f"--ray.address {cfg.ray.address}: cannot join that Ray cluster ({' '.join(str(exc).split())}). Start "
            "it first (`ray start --head` on the head node), check the address, or leave out --ray.address to run "
            "on this machine."
        ) from None
    url = getattr(context, "dashboard_url", None)
    if url:
        return True, f"http://{url}" if "://" not in url else url
    return True, 'not running (the local dashboard needs `pip install "ray[default]"`)'


def _check_fits(ray: Any, cfg: BatchConfig, gpus: float, started_here: bool) -> None:
    """A task larger than every node would wait forever: refuse (our own local instance) or warn (a cluster, which
    may grow)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]

    def largest(key: str) -> float:
        return max((float(n.get(key, 0.0)) for n in nodes), default=0.0)

    need = [
        ("--ray.cpus-per-edit", cfg.ray.cpus_per_edit, largest("CPU"), "CPUs"),
        ("--ray.gpus-per-edit", gpus, largest("GPU"), "GPUs"),
    ]
    if cfg.ray.memory_per_edit_gb is not None:
        need.append(("--ray.memory-per-edit-gb", cfg.ray.memory_per_edit_gb, largest("memory") / 2**30, "GB"))
    for flag, wanted, available, unit in need:
        if wanted > available:
            text = f"{flag} {wanted:g}: the largest Ray node has {available:g} {unit}, so no task could start"
            if started_here:
                raise UserInputError(text + "; ask for less (the local instance: --ray.local-cpus/--ray.local-gpus).")
            print(f"ids-batch: warning: {text} unless the cluster grows.", file=sys.stderr)


def execute(
    cfg: BatchConfig, recons: list[ReconSpec], edits: list[EditSpec], needs: dict[str, str]
) -> list[dict[str, Any]]:
    """Run ``recons`` and ``edits`` as Ray tasks (``needs[edit key]``: the key of its reconstruction); returns the
    edits' records, in the order of ``edits``."""
    from tqdm.auto import tqdm

    from ids_nerf.batch.config import task_threads
    from ids_nerf.batch.tasks import TaskEnv, edit_task, reconstruct_task

    ray = import_ray()
    started_here, dashboard = _connect(ray, cfg)
    marker: Path | None = None
    pending: dict[Any, tuple[str, str]] = {}
    try:
        gpus = cfg.ray.gpus_per_edit
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0.0) >= 1 else 0.0
        _check_fits(ray, cfg, gpus, started_here)
        have = ray.cluster_resources()
        print(
            f"Ray: {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs "
            f"({'a local instance' if cfg.ray.address is None and started_here else 'a cluster'}); "
            f"each task reserves {cfg.ray.cpus_per_edit:g} CPU, {gpus:g} GPU; dashboard: {dashboard}",
            flush=True,
        )
        marker = Path(cfg.output_dir) / MARKERS / f"driver-{uuid.uuid4().hex}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("ids-batch driver marker: tasks check that they see it (a shared --output-dir)\n")
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        env = TaskEnv(capture="file", threads=task_threads(cfg), marker=str(marker.resolve()), reporter=board)
        options: dict[str, Any] = {
            "num_cpus": cfg.ray.cpus_per_edit,
            "num_gpus": gpus,
            "max_retries": cfg.ray.max_retries,
            "retry_exceptions": False,
        }
        if cfg.ray.memory_per_edit_gb is not None:
            options["memory"] = int(cfg.ray.memory_per_edit_gb * 2**30)
        recon_task = ray.remote(**options)(reconstruct_task)
        edit_remote = ray.remote(**options)(edit_task)
        recon_refs = {}
        submitted = time.time()
        for spec in recons:
            recon_refs[spec.key] = recon_task.options(name=f"reconstruct {spec.scene}").remote(cfg, spec, env)
            pending[recon_refs[spec.key]] = ("recon", spec.key)
        for spec in edits:
            ref = edit_remote.options(name=f"edit {spec.key}").remote(cfg, spec, recon_refs[needs[spec.key]], env)
            pending[ref] = ("edit", spec.key)
        return _collect(ray, cfg, pending, board, recons, edits, needs, submitted, tqdm)
    except KeyboardInterrupt:
        for ref in pending:  # stop the running tasks too (their checkpoints stay for the next run)
            ray.cancel(ref, force=True)
        raise
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
            try:
                marker.parent.rmdir()
            except OSError:
                pass  # another driver's marker is there
        if started_here:
            ray.shutdown()


def _collect(
    ray: Any,
    cfg: BatchConfig,
    pending: dict[Any, tuple[str, str]],
    board: Any,
    recons: list[ReconSpec],
    edits: list[EditSpec],
    needs: dict[str, str],
    submitted: float,
    tqdm: Any,
) -> list[dict[str, Any]]:
    """Wait for every task, with the progress bar; a task that raised (its worker died ``--ray.max-retries`` + 1
    times, or its reconstruction's did) becomes a failed record."""
    from ids_nerf.batch.report import failure_line

    total = len(pending)
    records: dict[str, dict[str, Any]] = {}
    scenes = {s.key: s for s in recons}
    specs = {s.key: s for s in edits}
    done = failed = 0
    shown = ""
    started: dict[str, dict[str, Any]] = {}
    with tqdm(total=total, desc="ids-batch", unit="task", dynamic_ncols=True, file=sys.stderr) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if ready:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                ready.sort(key=lambda r: pending[r][0] != "recon")  # a failed reconstruction explains its edits
            try:
                started = ray.get(board.snapshot.remote(), timeout=10)
            except Exception:  # the board is only for display: never let it stop the batch
                pass
            for ref in ready:
                kind, key = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the worker died too often, or the task was cancelled
                    record = _crashed(cfg, kind, key, exc, started.get(key, {}), scenes, specs, needs, records)
                record.setdefault("timing", {})
                record["timing"].update(submitted=submitted, collected=time.time())
                records[key] = record
                ok = record["status"] == "ok"
                done, failed = done + ok, failed + (not ok)
                if not ok:  # the summary lines (ids-batch: failed: ...) follow the table at the end
                    what = failure_line(record) if kind == "edit" else f"reconstruction of {key}: {record['reason']}"
                    bar.write(f"FAILED: {what}", file=sys.stderr)
                bar.update(1)
            running = sum(1 for _, key in pending.values() if key in started)
            counts = f"done {done}, running {running}, failed {failed}, left {total - done - failed - running}"
            if counts != shown:  # redraw on changes only: a log file gets one line per change, not per second
                bar.set_postfix_str(counts, refresh=True)
                shown = counts
    return [records[s.key] for s in edits]


def _crashed(
    cfg: BatchConfig,
    kind: str,
    key: str,
    exc: Exception,
    last: dict[str, Any],
    scenes: dict[str, ReconSpec],
    specs: dict[str, EditSpec],
    needs: dict[str, str],
    records: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The record of a task that raised instead of returning one."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    reason = f"{type(exc).__name__}: {first}".strip(": ")
    if kind == "recon":
        scene = scenes[key]
        return {"key": key, "scene": scene.scene, "status": "failed", "reason": reason, "run": last.get("run")}
    spec = specs[key]
    recon = records.get(needs[key])
    if recon is not None and recon["status"] != "ok":
        reason = f"its reconstruction of {scenes[needs[key]].scene} failed: {recon['reason']}"
    elif last.get("starts", 0) > cfg.ray.max_retries:
        reason = (
            f"its worker died {last['starts']} times (--ray.max-retries {cfg.ray.max_retries}; last on "
            f"{last.get('host')}, pid {last.get('pid')}): {reason}. Its checkpoints are kept: run ids-batch again "
            "to resume it."
        )
    record = {"key": key, "preset": spec.name, "method": spec.method, "seed": spec.seed, "status": "failed"}
    record.update(reason=reason, run=last.get("run"), log=last.get("log"), means=None, random_weights=False)
    record.update(reused=False, attempt=last.get("attempt"), first_step=last.get("first_step"), config=None)
    record.update(host=last.get("host"), pid=last.get("pid"), reconstruction=None)
    return record

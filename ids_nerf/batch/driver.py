"""The driver of ``ids-batch``: checks the options and presets (:func:`make_plan`), runs the tasks with the chosen
executor, writes the comparison (:func:`run`), and the console entry point. The user documentation is the
package's docstring (``ids-batch --help``) and docs/batch.md."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ids_nerf.batch.config import BatchConfig, check_config, task_threads
from ids_nerf.batch.report import METRICS, failure_line, markdown, summarize
from ids_nerf.batch.tasks import (
    EditSpec,
    ReconSpec,
    TaskEnv,
    edit_task,
    finished_record,
    reconstruct_task,
    reconstruction_kind,
)
from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError


@dataclass
class Plan:
    """What a batch has to do, worked out before anything runs."""

    presets: list[str] = field(default_factory=list)
    """Every preset's name, in --presets order (the scenes of the table; failed ones too)."""
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per preset name: its file and prompts, or the error that failed it."""
    failed: list[dict[str, Any]] = field(default_factory=list)
    """Rows that failed before any task (unreadable preset, missing scene folder)."""
    reused: list[dict[str, Any]] = field(default_factory=list)
    """Rows finished and scored by an earlier batch."""
    recons: list[ReconSpec] = field(default_factory=list)
    """Reconstructions to find or train (one per scene and kind), for the edits to run."""
    edits: list[EditSpec] = field(default_factory=list)
    """Edits to run (or resume, or score)."""
    needs: dict[str, str] = field(default_factory=dict)
    """Edit key -> the key of its reconstruction."""


def _row(name: str, method: str, seed: int, reason: str, file: Path) -> dict[str, Any]:
    return {
        "key": f"{name}/{method}/seed{seed}",
        "preset": name,
        "method": method,
        "seed": seed,
        "status": "failed",
        "reason": reason,
        "run": None,
        "log": None,
        "means": None,
        "preset_file": str(file),
    }


def make_plan(cfg: BatchConfig) -> Plan:
    """Check the options and the presets; raises :class:`UserInputError` when nothing could run (bad flags, or
    every preset unusable), else a preset that cannot run fails its rows only."""
    from ids_nerf.presets import load_preset

    check_config(cfg)
    files: dict[str, Path] = {}
    for path in cfg.presets:
        name = Path(path).stem
        if name in files:
            raise UserInputError(
                f"--presets {files[name]} {path}: two presets named {name}; their runs would share "
                f"{cfg.output_dir / name}. Rename one."
            )
        files[name] = Path(path)
    plan = Plan(presets=list(files))
    recons: dict[str, ReconSpec] = {}
    errors: list[str] = []
    for name, path in files.items():
        try:
            preset = load_preset(path, "--presets")
            data = preset.data(cfg.data_root)  # the scene's data checked as the dataparser will read it
        except UserInputError as err:
            reason = " ".join(str(err).split())
            errors.append(str(err))
            plan.info[name] = {"file": str(path), "error": reason}
            plan.failed += [_row(name, m, s, reason, path) for m in cfg.methods for s in cfg.seeds]
            continue
        plan.info[name] = {"file": str(path), "src_prompt": preset.src_prompt, "trg_prompt": preset.trg_prompt}
        for method in cfg.methods:
            kind = reconstruction_kind(method)
            recon = ReconSpec(data=data, kind=kind, template=method, scene=preset.scene)
            for seed in cfg.seeds:
                spec = EditSpec(preset=Path(path), name=name, method=method, seed=seed, recon=recon.key)
                done = finished_record(cfg, spec)
                if done is not None:
                    plan.reused.append(done)
                    continue
                recons.setdefault(recon.key, recon)
                plan.edits.append(spec)
                plan.needs[spec.key] = recon.key
    if len(errors) == len(files):
        raise UserInputError(" ".join(errors) if len(errors) > 1 else errors[0])
    plan.recons = list(recons.values())
    return plan


def _in_process(
    cfg: BatchConfig, recons: list[ReconSpec], edits: list[EditSpec], needs: dict[str, str]
) -> list[dict[str, Any]]:
    """Every task in this process, one after another (a scene's reconstruction right before its first edit)."""
    env = TaskEnv(capture="tee", threads=task_threads(cfg))
    specs = {r.key: r for r in recons}
    done: dict[str, dict[str, Any]] = {}
    records = []
    for spec in edits:
        key = needs[spec.key]
        if key not in done:
            done[key] = reconstruct_task(cfg, specs[key], env)
            if done[key]["status"] != "ok":
                print(f"[{specs[key].scene}] reconstruction: FAILED: {done[key]['reason']}", file=sys.stderr)
        records.append(edit_task(cfg, spec, done[key], env))
        if records[-1]["status"] != "ok":
            print(f"[{spec.name}] {spec.method} seed {spec.seed}: FAILED: {records[-1]['reason']}", file=sys.stderr)
    return records


def _finite(value: Any) -> Any:
    """NaN/inf (a metric with no finished run) as null in JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _ci_json(numbers: dict[str, dict[str, tuple[float, float, float]]]) -> dict[str, Any]:
    names = ("mean", "low", "high")
    return {m: {k: dict(zip(names, ci, strict=True)) for k, ci in d.items()} for m, d in numbers.items()}


def run(cfg: BatchConfig) -> dict[str, Any]:
    """Run the batch; returns ``{"table", "rows", "failed", "runs", "numbers", "seconds"}`` (also written as
    comparison.md / comparison.json). Raises :class:`UserInputError` (nothing written) when nothing could run."""
    plan = make_plan(cfg)
    if cfg.executor == "ray":
        from ids_nerf.batch.ray_executor import import_ray

        import_ray()  # refuse before anything is written
    t0 = time.perf_counter()
    for row in plan.reused:
        print(f"[{row['preset']}] {row['method']} seed {row['seed']}: {row['run']} (reused)")
    records: list[dict[str, Any]] = []
    if plan.edits and cfg.executor == "ray":
        from ids_nerf.batch.ray_executor import execute

        records = execute(cfg, plan.recons, plan.edits, plan.needs)  # refuses a bad --ray.* before writing
    elif plan.edits:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        records = _in_process(cfg, plan.recons, plan.edits, plan.needs)
    seconds = time.perf_counter() - t0
    keys = [(p, m, s) for p in plan.presets for m in cfg.methods for s in cfg.seeds]
    order = {key: i for i, key in enumerate(keys)}
    rows = sorted(plan.failed + plan.reused + records, key=lambda r: order[(r["preset"], r["method"], r["seed"])])
    reference = cfg.reference or ("dds-edit" if "dds-edit" in cfg.methods else None)
    numbers = summarize(rows, plan.presets, cfg.methods, cfg.seeds, reference, cfg.n_bootstrap)
    table = markdown(numbers, rows, plan.presets, cfg.methods, cfg.seeds, cfg.n_bootstrap)
    failed = [failure_line(r) for r in rows if r["status"] != "ok"]
    runs: dict[str, dict[str, Any]] = {}
    for r in rows:
        per = runs.setdefault(r["preset"], {"reconstruction": None})
        if r["status"] == "ok":
            per["reconstruction"] = per["reconstruction"] or r.get("reconstruction")
            per.setdefault(r["method"], {})[str(r["seed"])] = r["config"]
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "comparison.md").write_text(table)
    summary = {
        "executor": cfg.executor,
        "presets": plan.info,
        "methods": list(cfg.methods),
        "seeds": list(cfg.seeds),
        "metrics": list(METRICS),
        "means": {p: {m: c["means"] for m, c in per.items()} for p, per in numbers["per_scene"].items()},
        "summary": _ci_json(numbers["summary"]),
        "runs_per_method": numbers["runs"],
        "reference": reference,
        "paired": _ci_json(numbers["paired"]),
        "pairs": numbers["pairs"],
        "n_bootstrap": cfg.n_bootstrap,
        "failed": failed,
        "runs": runs,
        "rows": rows,
        "seconds": seconds,
    }
    (cfg.output_dir / "comparison.json").write_text(json.dumps(_finite(summary), indent=1, default=str))
    return {"table": table, "rows": rows, "failed": failed, "runs": runs, "numbers": numbers, "seconds": seconds}


def entrypoint() -> None:
    """Console entry point: exit code 1 when a row failed (each printed on one line), 130 on Ctrl-C."""
    try:
        import ids_nerf.batch

        cfg, result = run_console("ids-batch", BatchConfig, run, ids_nerf.batch.__doc__)
    except KeyboardInterrupt:
        print(
            "ids-batch: interrupted. Run the same command again: finished runs are reused and the interrupted edits "
            "resume from their last checkpoints.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    print(result["table"])
    print(f"wrote {cfg.output_dir / 'comparison.md'} and {cfg.output_dir / 'comparison.json'}")
    if result["failed"]:
        for line in result["failed"]:
            print(f"ids-batch: failed: {line}", file=sys.stderr)
        raise SystemExit(1)

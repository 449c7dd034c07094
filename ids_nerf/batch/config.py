"""Options of ``ids-batch`` (tyro turns each field's docstring into ``--help``) and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig


@dataclass
class BatchEvalConfig:
    """How each edit is scored (the options of `ids-eval render`)."""

    clip_model: str = "ViT-L-14"
    """open_clip architecture."""
    clip_pretrained: str = "openai"
    """open_clip pretrained tag or a local checkpoint file."""
    random_weights: bool = False
    """Random-weight CLIP and LPIPS (offline smoke tests only: the numbers are NOT meaningful)."""
    skip_missing: bool = False
    """Report a metric whose network weights are unavailable as null instead of failing."""
    split: str = "test"
    """Cameras to score: test, val, train or all."""


@dataclass
class RayConfig:
    """Where the tasks of `--executor ray` run and what each reserves (a task: a scene's reconstruction, or one
    edit and its `ids-eval render`)."""

    address: str | None = None
    """Ray cluster to join: `auto` (the cluster of this node, e.g. started with `ray start --head`), `HOST:6379`, or
    `ray://HOST:10001` (Ray Client; needs `pip install "ray[client]"`). Unset: start a local Ray instance with this
    machine's GPUs and CPUs, stopped at the end. On a cluster, --output-dir and --data-root must be on a file
    system every node mounts at the same path."""
    gpus_per_edit: float | None = None
    """GPUs each task reserves; fractions share a GPU (0.5: two edits per GPU, when both fit in its memory). Unset:
    1 when the Ray cluster has GPUs, else 0."""
    cpus_per_edit: float = 1.0
    """CPUs each task reserves; also its torch CPU threads (rounded down, at least 1) unless --threads is given."""
    memory_per_edit_gb: float | None = None
    """RAM (GB) each task reserves, so that Ray starts no more tasks on a node than fit in its memory. Unset: no
    reservation."""
    max_retries: int = 3
    """How often a task whose worker died (killed process, lost node, preemption, out of memory) is started again;
    an edit or a reconstruction then continues from its last checkpoint (--save-every). A task that fails by
    itself (bad preset, missing scene, an error in the edit) is not retried."""
    local_cpus: int | None = None
    """CPUs of the local Ray instance (without --ray.address). Unset: all of this machine's."""
    local_gpus: int | None = None
    """GPUs of the local Ray instance (without --ray.address). Unset: all of this machine's."""


@dataclass
class BatchConfig:
    """Reconstruct (if needed), edit and score every preset with every method and seed; one comparison table."""

    presets: tuple[Path, ...] = ()
    """Preset files (configs/llff/leaves-autumn.yaml ...)."""
    methods: tuple[str, ...] = ("ids-edit", "dds-edit", "cds-edit")
    """ns-train editing methods to compare."""
    seeds: tuple[int, ...] = (42,)
    """--machine.seed of the edits: each (preset, method) is edited once per seed (`--seeds 0 1 2`); the
    reconstructions use the first seed."""
    reference: str | None = None
    """Method the others are compared with, paired per scene and seed (`--reference dds-edit`). Unset: dds-edit
    when it is among --methods, else no paired comparison."""
    data_root: Path = Path("data")
    """Folder holding the preset scenes (<data-root>/<scene> of each preset)."""
    output_dir: Path = Path("outputs")
    """Run folders (<output-dir>/<preset>/<method>/seed<seed>) and the comparison table (comparison.md/.json)."""
    recon_steps: int = 30000
    """nerfacto steps of a reconstruction trained because none was found."""
    edit_steps: int = 3000
    """Editing steps of each method."""
    save_every: int = 250
    """Checkpoint every edit and reconstruction every this many steps (and at its last step): an interrupted or
    killed one continues from its last checkpoint when ids-batch runs again (or when Ray retries the task), losing
    at most this many steps."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """Diffusion prior of every edit (Stable Diffusion 1.4 from the hub by default; `toy`/`tiny` offline)."""
    device: str = "auto"
    """Device of the NeRFs (auto: CUDA when available)."""
    render_resolution: int | None = None
    """Long side of the views the prior sees (default: the prior's resolution)."""
    cpu_scenes: bool = False
    """Scene models at the CPU sizes of ids-nerf-demo (nerfacto: small hash grids and sample counts; splatfacto: a
    small random initialisation, SH degree 1), for offline checks."""
    eval: BatchEvalConfig = field(default_factory=BatchEvalConfig)
    """Scoring of each edit."""
    executor: Literal["in-process", "ray"] = "in-process"
    """in-process: every reconstruction and edit runs in this process, one after another. ray: each is a Ray task
    (--ray.*), on this machine's GPUs/CPUs or on a cluster (--ray.address); needs `pip install "ids_nerf[ray]"`."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray cluster and per-task resources of --executor ray."""
    threads: int | None = None
    """torch CPU threads of each task. Unset: in-process, torch's setting is left as it is; under Ray, the task's
    --ray.cpus-per-edit."""
    n_bootstrap: int = 2000
    """Bootstrap resamples of the 95% intervals (seeded: the same runs give the same intervals)."""


def check_config(cfg: BatchConfig) -> None:
    """Every check of the flags that needs no file: raises :class:`UserInputError` naming the flag."""
    from ids_nerf.guidance.validation import check_config as check_numbers
    from ids_nerf.method_configs import EDIT_METHODS

    check_numbers(cfg, "--")  # every number finite and in range (the one table of ids_nerf.guidance.validation)

    if not cfg.presets:
        raise UserInputError("--presets: pass at least one preset file, e.g. configs/llff/leaves-autumn.yaml.")
    unknown = [m for m in cfg.methods if m not in EDIT_METHODS]
    if unknown or not cfg.methods:
        raise UserInputError(f"--methods {' '.join(unknown)}: choose from {', '.join(EDIT_METHODS)}.")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise UserInputError(f"--methods {' '.join(cfg.methods)}: a method is named twice.")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise UserInputError(f"--seeds {' '.join(map(str, cfg.seeds))}: pass one or more different seeds.")
    if cfg.reference is not None and cfg.reference not in cfg.methods:
        raise UserInputError(
            f"--reference {cfg.reference}: not among --methods ({', '.join(cfg.methods)}); add it there or pick one "
            "of them."
        )
    for flag, value in (
        ("--recon-steps", cfg.recon_steps),
        ("--edit-steps", cfg.edit_steps),
        ("--save-every", cfg.save_every),
        ("--n-bootstrap", cfg.n_bootstrap),
    ):
        if value < 1:
            raise UserInputError(f"{flag} {value}: must be at least 1.")
    if cfg.threads is not None and cfg.threads < 1:
        raise UserInputError(f"--threads {cfg.threads}: must be at least 1.")
    r = cfg.ray
    if cfg.executor != "ray":
        given = [f"--ray.{f.name.replace('_', '-')}" for f in fields(r) if getattr(r, f.name) != f.default]
        if given:
            raise UserInputError(f"{' '.join(given)}: Ray options need --executor ray.")
        return
    if r.cpus_per_edit <= 0:
        raise UserInputError(f"--ray.cpus-per-edit {r.cpus_per_edit}: must be more than 0.")
    if r.gpus_per_edit is not None and r.gpus_per_edit < 0:
        raise UserInputError(f"--ray.gpus-per-edit {r.gpus_per_edit}: must be 0 or more (fractions share a GPU).")
    if r.gpus_per_edit is not None and r.gpus_per_edit > 1 and r.gpus_per_edit != int(r.gpus_per_edit):
        raise UserInputError(f"--ray.gpus-per-edit {r.gpus_per_edit}: above 1, Ray takes whole GPUs only.")
    if r.memory_per_edit_gb is not None and r.memory_per_edit_gb <= 0:
        raise UserInputError(f"--ray.memory-per-edit-gb {r.memory_per_edit_gb}: must be more than 0.")
    if r.max_retries < 0:
        raise UserInputError(f"--ray.max-retries {r.max_retries}: must be 0 or more.")
    if r.address is not None and (r.local_cpus is not None or r.local_gpus is not None):
        flag = "--ray.local-cpus" if r.local_cpus is not None else "--ray.local-gpus"
        raise UserInputError(f"{flag} sizes a local Ray instance: it cannot be combined with --ray.address.")
    for flag, value in (("--ray.local-cpus", r.local_cpus), ("--ray.local-gpus", r.local_gpus)):
        if value is not None and value < 0:
            raise UserInputError(f"{flag} {value}: must be 0 or more.")


def task_threads(cfg: BatchConfig) -> int | None:
    """torch CPU threads of each task: --threads, else under Ray the task's CPUs, else torch's setting (None)."""
    if cfg.threads is not None:
        return cfg.threads
    return max(1, int(cfg.ray.cpus_per_edit)) if cfg.executor == "ray" else None

"""``ids-bench-nerf``: where a scene editing step spends its time and memory, per method and scene kind, side by side
in one run.

Builds a scene (default: 20 generated forward-facing LLFF views at 504x378, the size of fern's ``images_8``; or
``--data`` for a real one), the scene model of each method (nerfacto for ``*-edit``, splatfacto for ``*-splat-edit``;
``--load-dir`` of a trained run, or freshly initialised: the cost of a step does not depend on what the scene has
learnt, only on its size: ``--gaussians`` for a fresh splat) and a prior (``--prior.model`` hub id / folder / ``toy``
/ ``tiny``, or ``--arch sd-v1`` for the SD-v1.4 architecture with random weights), then times editing steps of each
method (``dds-edit``, ``ids-edit``, ``ids-splat-edit``, ...) exactly as ``ns-train`` runs them, broken down by phase:

  render (no grad)          NeRF: the view rendered in ray chunks, to get the image the prior sees
  render (with grad)        splat: one rasterization of the view, graph kept (NeRF: a view of one chunk)
  fpr                       fixed-point regularization (IDS): N UNet forward+backward passes on the source
  source branch             the source branch's prediction, when computed ahead (--pipeline.guidance.source.*)
  vae encode                the render encoded to the target latent (forward, graph kept)
  guidance branches         the score's UNet calls (DDS: source and target branch, with CFG)
  vae backward              the guidance gradient pushed back through the VAE encoder to the image
  scene backward (chunked)  NeRF: every chunk re-rendered with grad and backpropagated (+ proposal loss)
  scene backward            splat: the image gradient through the rasterization (NeRF: a view of one chunk)
  optimizer step            Adam on the scene's groups, LR schedule
  other                     the rest of the step (data, sampling, bookkeeping, splat culling)

Times are per step, excluding nested phases; peak memory is the highest level reached while the phase was open
(``torch.cuda.max_memory_allocated`` on CUDA; the resident set size sampled every 5 ms on CPU). Writes
``bench_nerf.json`` and ``bench_nerf.md`` to ``--out``.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ids_nerf.atomic import write_text_atomic
from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.profiling import record_phases, synchronize

#: Phases in the order a step runs them (the table's rows).
PHASES = (
    "source latent (once per view)",
    "render (no grad)",
    "render (with grad)",
    "fpr",
    "source branch",
    "vae encode",
    "guidance branches",
    "vae backward",
    "scene backward (chunked)",
    "scene backward",
    "optimizer step",
)
SRC_PROMPT, TRG_PROMPT = "a photo of a fern", "a photo of a fern made of gold"


@dataclass
class NerfBenchConfig:
    """Time scene editing steps phase by phase (render, FPR, VAE, guidance, scene backward, optimizer)."""

    methods: tuple[str, ...] = ("dds-edit", "ids-edit")
    """ns-train editing methods to time, side by side (NeRF: ids-edit, dds-edit, cds-edit, pds-edit, sds-edit, ...;
    splat: ids-splat-edit, dds-splat-edit, ...), with optional source-side settings: `ids-edit-k5`
    (--pipeline.guidance.source.lookahead 5), `ids-edit-p4` (a pool of 4 source sides per view,
    --pipeline.guidance.source.pool 4), both: `ids-edit-k5-p4`."""
    data: Path | None = None
    """A scene folder (LLFF, Blender or nerfstudio data). None: generate --views forward-facing LLFF views."""
    views: int = 20
    """Views of the generated scene (ignored with --data)."""
    width: int = 504
    """Image width of the generated scene (fern's images_8: 504x378; ignored with --data)."""
    height: int = 378
    """Image height of the generated scene (ignored with --data)."""
    load_dir: Path | None = None
    """A trained run's nerfstudio_models/ to edit (with --data of that run; nerfacto for *-edit methods, splatfacto
    for *-splat-edit). None: a freshly initialised scene."""
    gaussians: int = 50000
    """Gaussians of a fresh splat scene (splatfacto's random initialisation, whose default count is 50,000)."""
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="tiny"))
    """Diffusion prior: model (hub id, local diffusers folder, `toy` or `tiny`; ignored with --arch), device (auto:
    the NeRF's), dtype (auto: float16 on CUDA, float32 on CPU)."""
    arch: str | None = None
    """Use an architecture with random weights instead of --prior: `sd-v1` (SD v1.4 from its public config)."""
    steps: int = 2
    """Timed editing steps per method."""
    warmup: int = 1
    """Untimed editing steps per method before the timed ones (the first step also encodes the prompts)."""
    render_chunk_size: int = 4096
    """Rays rendered at once (ns-train's --pipeline.render.chunk-size)."""
    small_nerfacto: bool = False
    """Use the CPU-sized nerfacto of ids-nerf-demo instead of nerfacto's defaults (quick runs only)."""
    splat_extent: float = 2.0
    """Side of the cube around the scene's origin in which a fresh splat's Gaussians are drawn."""
    device: str = "auto"
    """Device of the NeRF (and of the prior unless --prior.device): auto (CUDA when available), cpu, cuda."""
    threads: int | None = None
    """torch CPU threads (None: torch's default, all cores)."""
    seed: int = 0
    """Seed of the scene, the random weights (--arch) and the edit."""
    out: Path | None = None
    """Folder for bench_nerf.json and bench_nerf.md (created; existing files are replaced; rewritten after each
    method, so a run stopped early keeps the methods it measured, marked partial)."""


_SOURCE_SIDE = re.compile(r"^(?P<method>.+?-edit)(?:-k(?P<k>\d+))?(?:-p(?P<p>\d+))?$")


def parse_nerf_variant(name: str) -> tuple[str, int, int | None]:
    """``ids-edit-k5-p4`` -> ("ids-edit", look-ahead 5, pool 4); raises UserInputError for an unknown method."""
    from ids_nerf.scenes.kinds import editing_methods

    methods = editing_methods()
    match = _SOURCE_SIDE.match(name)
    if match is None or match["method"] not in methods:
        raise UserInputError(
            f"--methods: unknown editing method {name!r}; choose from {', '.join(methods)} (optionally with "
            "-kK look-ahead and -pP pool per view)."
        )
    k, pool = int(match["k"] or 1), (int(match["p"]) if match["p"] else None)
    if k < 1 or (pool is not None and pool < 1):
        raise UserInputError(f"--methods {name}: -kK and -pP need K >= 1 and P >= 1.")
    from ids_nerf.guidance.config import SourceSideConfig

    try:  # e.g. cds draws its patches inside each step: no look-ahead, no pool
        SourceSideConfig(lookahead=k, pool=pool).check(methods[match["method"]][0].score)
    except UserInputError as err:
        raise UserInputError(f"--methods {name}: {err}") from None
    return match["method"], k, pool


def _validate(cfg: NerfBenchConfig) -> None:
    for method in cfg.methods:
        parse_nerf_variant(method)
    if cfg.steps < 1 or cfg.warmup < 0:
        raise UserInputError(f"--steps must be >= 1 and --warmup >= 0 (got {cfg.steps}, {cfg.warmup}).")
    if cfg.data is not None and not cfg.data.is_dir():
        raise UserInputError(f"--data {cfg.data} is not a folder.")
    if cfg.load_dir is not None and cfg.data is None:
        raise UserInputError("--load-dir needs --data: the scene folder the run was trained on.")
    if cfg.gaussians < 1 or not cfg.splat_extent > 0:
        raise UserInputError(
            f"--gaussians must be >= 1 and --splat-extent > 0 (got {cfg.gaussians}, {cfg.splat_extent})."
        )
    if cfg.data is None and (cfg.views < 2 or min(cfg.width, cfg.height) < 8):
        raise UserInputError("--views must be >= 2 and --width/--height >= 8.")


def _prior(cfg: NerfBenchConfig, device: str):
    from ids_nerf.guidance.prior import DiffusionPrior

    pcfg = replace(cfg.prior, device=device) if cfg.prior.device == "auto" else cfg.prior
    if cfg.arch is None:
        return DiffusionPrior(pcfg)
    from ids_nerf.bench.architectures import ARCHITECTURES, random_components

    if cfg.arch not in ARCHITECTURES:
        raise UserInputError(f"--arch {cfg.arch!r} is unknown; choose from {', '.join(ARCHITECTURES)}.")
    return DiffusionPrior(pcfg, components=random_components(cfg.arch, cfg.seed))


def _generate_scene(cfg: NerfBenchConfig, folder: Path) -> Path:
    from ids_nerf.toy.datasets import write_llff
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    scene = SceneSpec(objects=[ObjectSpec(shape="sphere", color="green", center=(0.0, 0.0, 0.5), size=0.5)])
    write_llff(scene, folder, n_views=cfg.views, size=(cfg.width, cfg.height), seed=cfg.seed, supersample=1)
    return folder


def _time_method(cfg: NerfBenchConfig, method: str, data: Path, device: str, prior) -> dict[str, Any]:
    from ids_nerf.guidance.config import SourceSideConfig
    from ids_nerf.nerf.standalone import build_edit
    from ids_nerf.scenes.cpu_sizes import cpu_friendly_nerfacto

    base, lookahead, pool = parse_nerf_variant(method)

    def scene(model) -> None:
        if hasattr(model, "num_random"):  # a fresh splat: --gaussians in a cube of side --splat-extent
            model.random_init, model.num_random, model.random_scale = True, cfg.gaussians, cfg.splat_extent
        elif cfg.small_nerfacto:
            cpu_friendly_nerfacto(model)

    def configure(pipeline) -> None:
        pipeline.guidance.src_prompt, pipeline.guidance.trg_prompt = SRC_PROMPT, TRG_PROMPT
        pipeline.render.chunk_size, pipeline.log_every = cfg.render_chunk_size, 0
        pipeline.guidance.source = SourceSideConfig(lookahead=lookahead, pool=pool)

    run = build_edit(
        base,
        data,
        device,
        load_dir=cfg.load_dir,
        model=scene if cfg.load_dir is None else None,
        prior=prior,
        guidance=configure,
        seed=cfg.seed,
    )
    pipe = run.pipeline
    first_s = None
    for step in range(cfg.warmup):
        synchronize(device)
        t0 = time.perf_counter()
        run.step(step)
        synchronize(device)
        first_s = first_s if first_s is not None else time.perf_counter() - t0
    step_s, updates = [], []
    with record_phases(device) as recorder:
        for step in range(cfg.warmup, cfg.warmup + cfg.steps):
            sampler = getattr(pipe.model, "proposal_sampler", None)
            if sampler is not None:
                updates.append(bool(sampler._steps_since_update > sampler.update_sched(step) or step < 10))
            synchronize(device)
            t0 = time.perf_counter()
            run.step(step)
            synchronize(device)
            step_s.append(time.perf_counter() - t0)
    index = pipe._current_view
    height, width = pipe._view_size(index)
    splats = int(pipe.model.num_points) if hasattr(pipe.model, "num_points") else None
    n = cfg.steps
    phases = {
        name: {"s_per_step": s.seconds / n, "calls_per_step": s.calls / n, "peak_gb": s.peak_bytes / 2**30}
        for name, s in recorder.stats.items()
    }
    phases["other"] = {
        "s_per_step": max(0.0, statistics.mean(step_s) - sum(p["s_per_step"] for p in phases.values())),
        "calls_per_step": 1.0,
        "peak_gb": float("nan"),
    }
    peak = max((s.peak_bytes for s in recorder.stats.values()), default=0) / 2**30
    return {
        "method": method,
        "guidance": pipe.config.guidance.name,
        "step_s": step_s,
        "median_s": statistics.median(step_s),
        "total_s": sum(step_s),
        "first_step_s": first_s,
        "proposal_update_steps": updates,
        "phases": phases,
        "peak_gb": peak,
        "render_size": [width, height],
        "latent_shape": list(pipe.get_prior().latent_shape(height, width)),
        "chunks_per_view": -(-width * height // cfg.render_chunk_size) if splats is None else 1,
        "gaussians": splats,
    }


def run(cfg: NerfBenchConfig) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready result (also written to --out, after each method while some are
    left)."""
    _validate(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    prior = _prior(cfg, device)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ids-bench-nerf-") as tmp:
        data = cfg.data if cfg.data is not None else _generate_scene(cfg, Path(tmp) / "scene")
        for method in cfg.methods:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            rows.append(_time_method(cfg, method, data, device, prior))
            if len(rows) < len(cfg.methods):  # a run stopped later (a time limit) keeps the methods it measured
                _write(cfg, _result(cfg, device, prior, rows))
    result = _result(cfg, device, prior, rows)
    _write(cfg, result)
    return result


def _result(cfg: NerfBenchConfig, device: str, prior, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready result of the methods measured so far (``complete``: all of ``--methods``)."""
    import diffusers
    import nerfstudio

    info = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "prior": cfg.arch or cfg.prior.model,
        "dtype": str(prior.dtype),
        "vae_dtype": str(prior.vae_dtype),
        "threads": torch.get_num_threads(),
        "scene": str(cfg.data)
        if cfg.data is not None
        else f"generated LLFF, {cfg.views} views {cfg.width}x{cfg.height}",
        "nerfacto": "small (ids-nerf-demo)" if cfg.small_nerfacto else "nerfacto defaults",
        "splat": f"{cfg.gaussians} Gaussians in a cube of side {cfg.splat_extent}",
        "trained": cfg.load_dir is not None,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "nerfstudio": getattr(nerfstudio, "__version__", "1.1.5"),
            "python": platform.python_version(),
        },
    }
    config = json.loads(json.dumps(asdict(cfg), default=str))
    return {"info": info, "rows": list(rows), "complete": len(rows) == len(cfg.methods), "config": config}


def _write(cfg: NerfBenchConfig, result: dict[str, Any]) -> None:
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cfg.out / "bench_nerf.json", json.dumps(result, indent=1))
        write_text_atomic(cfg.out / "bench_nerf.md", markdown(result))


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: one column pair (s/step, peak GB) per method, one row per phase."""
    info, rows = result["info"], result["rows"]
    memory = "max_memory_allocated" if info["device"].startswith("cuda") else "peak RSS"
    lines = [
        f"scene: {info['scene']} ({info['nerfacto']}; splat: {info.get('splat', '-')}; "
        f"{'trained' if info['trained'] else 'fresh'}); prior "
        f"{info['prior']} UNet {info['dtype']} / VAE {info['vae_dtype']}; {info['device_name']} ({info['device']}), "
        f"{info['threads']} threads; torch {info['versions']['torch']}",
        "",
        "| phase | " + " | ".join(f"{r['method']} s/step | peak GB ({memory})" for r in rows) + " |",
        "|---|" + "---|---|" * len(rows),
    ]
    names = [p for p in (*PHASES, "other") if any(p in r["phases"] for r in rows)]
    for name in names:
        cells = []
        for r in rows:
            p = r["phases"].get(name)
            cells += ["-", "-"] if p is None else [f"{p['s_per_step']:.2f}", f"{p['peak_gb']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| **step (median)** | " + " | ".join(f"**{r['median_s']:.2f}** | **{r['peak_gb']:.2f}**" for r in rows) + " |"
    )
    lines += [
        "",
        "| method | render size | latent | chunks/view | Gaussians | first step s | proposal update steps "
        "| ratio to first | timed steps total s | total ratio to first |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base, base_total = rows[0]["median_s"], rows[0]["total_s"]
    for r in rows:
        first = f"{r['first_step_s']:.2f}" if r["first_step_s"] is not None else "-"
        lines.append(
            f"| {r['method']} | {r['render_size'][0]}x{r['render_size'][1]} | {'x'.join(map(str, r['latent_shape']))} "
            f"| {r['chunks_per_view']} | {r.get('gaussians') or '-'} | {first} "
            f"| {sum(r['proposal_update_steps'])}/{len(r['step_s'])} "
            f"| {r['median_s'] / base:.2f}x | {r['total_s']:.1f} | {r['total_s'] / base_total:.2f}x |"
        )
    if not result.get("complete", True):
        done = len(rows)
        lines += ["", f"Partial: {done} of {len(result['config']['methods'])} methods measured (the run was stopped)."]
    return "\n".join(lines) + "\n"


def entrypoint() -> None:
    """Console entry point."""
    _, result = run_console("ids-bench-nerf", NerfBenchConfig, run, __doc__)
    print(markdown(result))


if __name__ == "__main__":
    entrypoint()

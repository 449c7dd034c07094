"""``ids-bench-speed``: seconds per editing step and per whole 2D edit of every method, side by side in one run.

For each method: median and interquartile range of one editing step (guidance + backward + SGD update) after
warm-up, the time of a whole edit, peak memory (``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's
peak RSS so far, which only grows), FLOPs of one step counted by ``torch.utils.flop_counter`` and the achieved
throughput (TFLOP/s, and the fraction of the device's dense bf16/fp16 peak on CUDA), and the ratio to ``dds``.
``--reference`` also times the official formulation (:mod:`ids_nerf.bench.reference`) of dds and ids through the
same editing loop, and reports the max abs difference between the latents of a 3-step edit by both paths with the
same seed (same t and noise draws).

A method name may carry source-side run settings (:class:`~ids_nerf.bench.variants.RunVariant`, not
methods of the registry); without ``-kK`` a row runs the default ``--source.lookahead auto`` (K chosen from the
memory, reported in the row as ``lookahead_used`` with ``lookahead_reason``; its s/step times a block of that K)
as ``ids-edit-image`` does, ``-k1`` pins the per-step algorithm.
``<method>-kK`` computes the source side K steps ahead in one batch (``--source.lookahead K``, exact) and
``<method>-rR`` reuses a pool of P = edit_steps / R source sides (``--source.pool P``, reuse factor R). Their
s/step is amortised: a look-ahead row times a block of K steps (its batched FPR and source branch included) / K, a
pool row one step that reuses a pool entry (the pool's precompute is in the whole-edit time only). Whole-edit times
always include every precompute.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ids_nerf.atomic import write_text_atomic
from ids_nerf.bench.variants import RunVariant, parse_variant
from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.config import SourceSideConfig, guidance_config
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.guidance.validation import check_config
from ids_nerf.profiling import synchronize

#: Dense (no sparsity) bf16/fp16 tensor-core peaks, FLOP/s, by substring of the CUDA device name.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12, "3090": 71e12}


@dataclass
class SpeedBenchConfig:
    """Time guidance steps and whole edits of several methods on one prior."""

    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="tiny"))
    """Prior: model (`tiny` test model, `toy` bundled, a hub id or a local folder; ignored with --arch), device
    (auto: CUDA when available), dtype (auto: fp16 on CUDA, fp32 on CPU)."""
    arch: str | None = None
    """Time an architecture with random weights instead of --prior: `sd-v1` (SD v1.4 from its public config)."""
    methods: tuple[str, ...] = ("dds", "ids-n1", "ids", "sds", "cds", "pds", "pds-fpr")
    """Methods (see ids_nerf.guidance.methods); an FPR method with `-nN` runs N FPR iterations (`ids` = N 3). Run
    settings of the source side as suffixes: `-kK` look-ahead of K steps (`ids-k8`, exact), `-rR` a pool reused R
    times, P = --edit-steps / R entries (`ids-r4`, approximate); both: `ids-k8-r4` (the pool computed 8 at a
    time)."""
    reference: bool = True
    """Also time the official formulation of dds / ids (separate branch calls) and compare 3-step edits."""
    repeats: int = 10
    """Timed steps per method (after warm-up)."""
    warmup: int = 2
    """Untimed steps per method."""
    edit_steps: int = 200
    """Steps of the whole-edit timing (0 = skip; on CPU with sd-v1 use 0); also sets the pool size of `-rR` rows
    (P = edit_steps / R, at least 1)."""
    threads: int = 1
    """torch CPU threads (1 gives stable timings on small VMs)."""
    seed: int = 0
    """Seed of the latents and of every distiller."""
    out: Path | None = None
    """Also write the results as JSON here."""


def _timed(fn: Callable[[], None], repeats: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (Linux)


def _pins_lookahead(variant: RunVariant) -> bool:
    """The name carries ``-kK`` (else the row runs the default look-ahead, ``auto``)."""
    return variant.name[len(variant.method) :].startswith("-k")


def _auto_lookahead(distiller, z_src: torch.Tensor, c_src: torch.Tensor, steps: int) -> tuple[int, str | None]:
    """The K ``auto`` uses for an edit of ``steps`` steps (at least 2) with ``distiller``, and why (a throw-away
    supplier runs its first batch and chooses; the distiller's generator moves on, which timing rows do not mind)."""
    from ids_nerf.guidance.source_side import SourceSupplier

    supplier = SourceSupplier(distiller, z_src, c_src, max(steps, 2))
    supplier.next()
    supplier.next()
    choice = supplier.choice
    reason = choice.reason if choice is not None else None
    if steps < 2 and choice is not None and choice.limit == "steps left":
        reason = f"{reason} (a 2-step edit: --edit-steps {steps})"
    return supplier.lookahead or 1, reason


def _reference(prior, iterations: int, seed: int):
    """The official formulation's distiller; it draws each step's source side itself (look-ahead pinned off)."""
    from ids_nerf.bench.reference import ReferenceDistiller

    ref = ReferenceDistiller(prior, iterations, seed=seed)
    ref.config.source = SourceSideConfig(lookahead=1)
    return ref


def _flops(fn: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def load_prior(cfg: SpeedBenchConfig):
    """The prior to time: loaded from --prior, or --arch built with random weights."""
    from ids_nerf.guidance.prior import DiffusionPrior

    if cfg.arch is None:
        return DiffusionPrior(cfg.prior)
    from ids_nerf.bench.architectures import ARCHITECTURES, random_components

    if cfg.arch not in ARCHITECTURES:
        raise UserInputError(f"--arch {cfg.arch!r} is unknown; choose from {', '.join(ARCHITECTURES)}.")
    return DiffusionPrior(cfg.prior, components=random_components(cfg.arch, cfg.seed))


def run(cfg: SpeedBenchConfig) -> dict:
    """Run the benchmark and return its table rows (also printed by the CLI)."""
    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.guidance.source_side import SourceSupplier
    from ids_nerf.image.editor import OptimConfig, edit_latent

    check_config(cfg, "--")  # --repeats, --warmup, --edit-steps, --threads, --seed: finite and in range
    if not cfg.methods:
        raise UserInputError("--methods is empty; name at least one method, e.g. --methods dds ids.")
    if cfg.out is not None and cfg.out.is_dir():
        raise UserInputError(f"--out {cfg.out} is a folder; pass a file path such as {cfg.out / 'speed.json'}.")
    variants = [parse_variant(m) for m in cfg.methods]  # raises for an unknown name
    torch.set_num_threads(cfg.threads)
    prior = load_prior(cfg)
    dev = prior.device
    g = torch.Generator().manual_seed(cfg.seed)
    shape = (1, *prior.latent_shape(prior.resolution, prior.resolution))
    z_src = torch.randn(shape, generator=g).to(dev)
    c_src = prior.text_embeddings("a red sphere on a checkered floor")
    c_trg = prior.text_embeddings("a blue sphere on a checkered floor")
    peak = next((v for k, v in PEAK_FLOPS.items() if dev.type == "cuda" and k in torch.cuda.get_device_name(dev)), None)

    rows = []

    def record(name: str, step: Callable[[], None], edit: Callable[[], None] | None, steps_per_call: int = 1) -> None:
        """Time ``step`` (``steps_per_call`` editing steps) and ``edit``; per-step figures divide by the former."""
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = [t / steps_per_call for t in _timed(step, cfg.repeats, cfg.warmup, dev)]
        flops = _flops(step) / steps_per_call
        edit_s = None
        if edit is not None and cfg.edit_steps > 0:
            synchronize(dev)
            t0 = time.perf_counter()
            edit()
            synchronize(dev)
            edit_s = time.perf_counter() - t0
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        med = statistics.median(times)
        rows.append(
            {
                "method": name,
                "median_s": med,
                "q1_s": q[0],
                "q3_s": q[2],
                "edit_s": edit_s,
                "peak_mem_gb": _peak_memory_gb(dev),
                "tflop_per_step": flops / 1e12,
                "tflops": flops / med / 1e12,
                "peak_fraction": (flops / med / peak) if peak else None,
            }
        )

    for variant in variants:
        guidance = variant.guidance(cfg.edit_steps)
        if not _pins_lookahead(variant):
            guidance.source.lookahead = SourceSideConfig().lookahead  # the default, as ids-edit-image runs it
        distiller = ScoreDistiller(prior, guidance, seed=cfg.seed, flag_prefix=None)
        lookahead = guidance.source.lookahead
        auto_reason = None
        if variant.reuse is not None:
            block = 1
        else:
            block = lookahead
            if lookahead == "auto":
                block, auto_reason = _auto_lookahead(distiller, z_src, c_src, cfg.edit_steps)
        # a pool row's step reuses the pool this supplier builds once (during warm-up)
        pool = SourceSupplier(distiller, z_src, c_src, cfg.edit_steps) if variant.reuse is not None else None
        whole: dict = {}
        record(
            variant.name,
            lambda d=distiller, b=block, p=pool: edit_latent(
                d, z_src, c_src, c_trg, OptimConfig(steps=b), progress=False, sources=p
            ),
            lambda d=distiller, w=whole: w.update(
                edit_latent(d, z_src, c_src, c_trg, OptimConfig(steps=cfg.edit_steps), progress=False).source_side
            ),
            steps_per_call=block,
        )
        choice = whole.get("lookahead_choice") or {}
        rows[-1].update(
            lookahead=lookahead,
            lookahead_used=whole.get("lookahead") or block,
            lookahead_reason=choice.get("reason") or auto_reason,
            pool=variant.pool_size(cfg.edit_steps),
        )

    check = {}
    if cfg.reference:
        # the reference formulation exists for dds and exact-FPR ids (not for Jacobian-free or other variants)
        exact_ids = [g.fpr.iterations for g in (guidance_config(v.method) for v in variants) if g.name == "ids"]
        iterations = sorted({0, *exact_ids})
        for n in iterations:
            label = "dds (reference)" if n == 0 else f"ids N={n} (reference)"
            ref = _reference(prior, n, seed=cfg.seed)
            record(
                label,
                lambda d=ref: edit_latent(d, z_src, c_src, c_trg, OptimConfig(steps=1), progress=False),
                lambda d=ref: edit_latent(d, z_src, c_src, c_trg, OptimConfig(steps=cfg.edit_steps), progress=False),
            )
            # same seed -> same (t, eps) stream: a few steps of both paths must give the same latent
            steps = OptimConfig(steps=3)
            ours = edit_latent(
                ScoreDistiller(prior, guidance_config(f"ids-n{n}" if n else "dds"), seed=cfg.seed + 1),
                z_src,
                c_src,
                c_trg,
                steps,
                progress=False,
            ).latent
            theirs = edit_latent(
                _reference(prior, n, seed=cfg.seed + 1), z_src, c_src, c_trg, steps, progress=False
            ).latent
            check[label] = float((ours - theirs).abs().max())

    base = next((r for r in rows if r["method"] == "dds"), rows[0])
    for r in rows:
        r["ratio_to_dds"] = r["median_s"] / base["median_s"]
        r["edit_ratio_to_dds"] = r["edit_s"] / base["edit_s"] if r["edit_s"] and base["edit_s"] else None
    info = {
        "prior": cfg.arch or cfg.prior.model,
        "latent": list(shape),
        "device": str(dev),
        "dtype": str(prior.dtype),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "repeats": cfg.repeats,
        "edit_steps": cfg.edit_steps,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }
    result = {
        "info": info,
        "rows": rows,
        "reference_max_abs_diff": check,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    if cfg.out is not None:
        write_text_atomic(cfg.out, json.dumps(result, indent=1))  # whole or not at all, after every timing
    return result


def markdown(result: dict) -> str:
    """The result as a Markdown table."""
    i = result["info"]
    lines = [
        f"prior={i['prior']} latent={tuple(i['latent'])} device={i['device_name']} dtype={i['dtype']} "
        f"threads={i['threads']} torch={i['torch']} repeats={i['repeats']} edit_steps={i['edit_steps']}",
        "",
        "| method | median s/step | IQR | ratio to dds | s per edit | edit ratio to dds | peak mem GB | TFLOP/step "
        "| TFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        edit = f"{r['edit_s']:.2f}" if r["edit_s"] is not None else "-"
        edit_ratio = f"{r['edit_ratio_to_dds']:.2f}x" if r["edit_ratio_to_dds"] is not None else "-"
        frac = f"{100 * r['peak_fraction']:.1f}%" if r["peak_fraction"] is not None else "-"
        lines.append(
            f"| {r['method']} | {r['median_s']:.4f} | {r['q1_s']:.4f}-{r['q3_s']:.4f} | "
            f"{r['ratio_to_dds']:.2f}x | {edit} | {edit_ratio} | {r['peak_mem_gb']:.2f} | {r['tflop_per_step']:.4f} | "
            f"{r['tflops']:.3f} | {frac} |"
        )
    pools = [f"{r['method']} P={r['pool']}" for r in result["rows"] if r.get("pool")]
    autos = [r for r in result["rows"] if r.get("lookahead") == "auto"]
    if autos:
        lines += [
            "",
            "Rows without -kK run the default --source.lookahead auto (s/step: K steps as a new supplier serves them, "
            "its first step alone, / K; s per edit is the figure to compare): "
            + "; ".join(f"{r['method']} K={r['lookahead_used']}" for r in autos)
            + ". Why: "
            + "; ".join(f"{r['method']}: {r['lookahead_reason']}" for r in autos if r.get("lookahead_reason")),
        ]
    if pools or any(r.get("lookahead_used", r.get("lookahead", 1)) > 1 for r in result["rows"]):
        lines += [
            "",
            "-kK rows: s/step = a block of K steps (batched FPR and source branch included) / K. -rR rows: s/step = "
            f"one step reusing a pool entry; pool size P = edit_steps ({i['edit_steps']}) / R"
            + (f" ({', '.join(pools)})" if pools else "")
            + ". s per edit includes every precompute.",
        ]
    if result["reference_max_abs_diff"]:
        lines += [
            "",
            "max |grad ours - grad reference| (same t, noise): "
            + ", ".join(f"{k}: {v:.2e}" for k, v in result["reference_max_abs_diff"].items()),
        ]
    return "\n".join(lines) + "\n"


def entrypoint() -> None:
    """Console entry point."""
    _, result = run_console(
        "ids-bench-speed", SpeedBenchConfig, run, __doc__, interrupted=lambda: "interrupted; nothing was written"
    )
    print(markdown(result))


if __name__ == "__main__":
    entrypoint()

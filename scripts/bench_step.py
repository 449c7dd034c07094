"""Seconds per editing step of each guidance method on one prior, measured side by side in one run.

    .venv/bin/python scripts/bench_step.py --prior tiny --repeats 20

Prints a Markdown table: median and interquartile range of the step time (distiller step + backward + SGD update)
after warm-up, and each method's ratio to dds measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import tyro

from ids_nerf.guidance.distiller import ScoreDistiller, guidance_from_preset
from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig
from ids_nerf.image.editor import OptimConfig, edit_latent


@dataclass
class BenchConfig:
    """Time guidance steps of several methods on one prior."""

    prior: str = "tiny"
    """Prior to time (hub id, local folder, toy or tiny)."""
    methods: tuple[str, ...] = ("dds", "ids-n1", "ids", "sds", "cds", "pds", "pds-fpr")
    """Methods; `ids-nN` is ids with N FPR iterations (plain `ids` uses the default N = 3)."""
    repeats: int = 20
    """Timed steps per method (after warm-up)."""
    warmup: int = 3
    """Untimed steps per method."""
    threads: int = 1
    """torch CPU threads (1 gives stable timings on small VMs)."""
    device: str = "auto"
    """Device of the prior."""
    seed: int = 0
    """Seed of the latents and of every distiller."""


def _guidance(name: str):
    if name.startswith("ids-n"):
        cfg = guidance_from_preset("ids")
        cfg.fpr.iterations = int(name[len("ids-n") :])
        return cfg
    return guidance_from_preset(name)


def main(cfg: BenchConfig) -> None:
    torch.set_num_threads(cfg.threads)
    prior = DiffusionPrior(PriorConfig(model=cfg.prior, device=cfg.device))
    g = torch.Generator().manual_seed(cfg.seed)
    shape = (1, *prior.latent_shape(prior.resolution, prior.resolution))
    z_src = torch.randn(shape, generator=g).to(prior.device)
    c_src, c_trg = (
        prior.text_embeddings("a red sphere on a checkered floor"),
        prior.text_embeddings("a blue sphere on a checkered floor"),
    )
    rows = []
    for name in cfg.methods:
        distiller = ScoreDistiller(prior, _guidance(name), seed=cfg.seed)
        edit_latent(distiller, z_src, c_src, c_trg, OptimConfig(steps=cfg.warmup), progress=False)
        times = []
        for _ in range(cfg.repeats):
            if prior.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            edit_latent(distiller, z_src, c_src, c_trg, OptimConfig(steps=1), progress=False)
            if prior.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        q = statistics.quantiles(times, n=4)
        rows.append((name, statistics.median(times), q[0], q[2]))
    base = next((r[1] for r in rows if r[0] == "dds"), rows[0][1])
    print(
        f"prior={cfg.prior} latent={tuple(shape)} device={prior.device} threads={cfg.threads} "
        f"repeats={cfg.repeats} torch={torch.__version__}"
    )
    print("| method | median s/step | IQR | ratio to dds |")
    print("|---|---|---|---|")
    for name, med, q1, q3 in rows:
        print(f"| {name} | {med:.4f} | {q1:.4f}-{q3:.4f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))

"""Peak memory and time of a few 2D editing steps with a given --source.lookahead, one setting per process.

Measures what the automatic look-ahead must not raise by more than 25% (issue 20): the process's peak resident set
(``ru_maxrss``, what ``/usr/bin/time -v`` reports as "Maximum resident set size") over a whole short edit, at Stable
Diffusion size with random weights (the SD-v1.4 architecture, ``ids_nerf.bench.architectures``) or with a bundled
prior. Run each setting in its own process and compare; see docs/lookahead.md.

    python scripts/lookahead_memory.py --lookahead 1 --steps 2          # SD-v1 architecture, 512x384, fp32, CPU
    python scripts/lookahead_memory.py --lookahead auto --steps 2
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookahead", default="auto", help="auto or K (1 = the per-step algorithm)")
    parser.add_argument("--steps", type=int, default=2, help="editing steps (an SD-size step takes ~1 min on a CPU)")
    parser.add_argument("--method", default="ids")
    parser.add_argument("--arch", default="sd-v1", help="random-weight architecture, or '' to use --prior")
    parser.add_argument("--prior", default="toy", help="bundled prior when --arch is ''")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from ids_nerf.guidance.config import SourceSideConfig, guidance_config
    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig
    from ids_nerf.image.editor import OptimConfig, edit_latent
    from ids_nerf.profiling import rss_bytes

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.arch:
        from ids_nerf.bench.architectures import random_components

        prior = DiffusionPrior(
            PriorConfig(device="cpu", dtype="float32"), components=random_components(args.arch, seed=0)
        )
    else:
        prior = DiffusionPrior(PriorConfig(model=args.prior, device="cpu", dtype="float32"))
    height, width = (args.height, args.width) if args.arch else (prior.resolution, prior.resolution)
    z_src = torch.randn(1, *prior.latent_shape(height, width), generator=torch.Generator().manual_seed(0))
    c_src, c_trg = prior.text_embeddings("a photo of a cat"), prior.text_embeddings("a photo of a pig")
    load_s = time.perf_counter() - t0
    rss_loaded = rss_bytes()

    config = guidance_config(args.method)
    config.source = SourceSideConfig(lookahead=args.lookahead if args.lookahead == "auto" else int(args.lookahead))
    distiller = ScoreDistiller(prior, config, seed=0)
    t1 = time.perf_counter()
    result = edit_latent(distiller, z_src, c_src, c_trg, OptimConfig(steps=args.steps), progress=False)
    edit_s = time.perf_counter() - t1
    side = result.source_side
    print(
        json.dumps(
            {
                "arch": args.arch or args.prior,
                "latent": list(z_src.shape),
                "threads": args.threads,
                "lookahead_setting": args.lookahead,
                "lookahead_used": side["lookahead"],
                "mode": side["mode"],
                "choice": side["lookahead_choice"],
                "steps": args.steps,
                "load_s": round(load_s, 1),
                "edit_s": round(edit_s, 1),
                "rss_after_load_gb": round(rss_loaded / 2**30, 3),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                "batches": [h["lookahead"] for h in result.history],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Whole 2D edits of several (method, --source.lookahead) settings in interleaved rounds, wall and CPU seconds.

On a shared machine the load changes between one benchmark row and the next; interleaving the settings round by
round and reporting the process's CPU time next to the wall time keeps the comparison fair (docs/lookahead.md).

Every run edits the same latent with the same seed; a run whose method also runs with K = 1 is compared with it (max
absolute difference of the edited latents, same timesteps).

    python scripts/lookahead_interleaved.py --runs dds:auto ids:auto dds:1 ids:1 --steps 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["dds:auto", "ids:auto", "dds:1", "ids:1"], help="method:K")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prior", default="toy")
    args = parser.parse_args()

    from ids_nerf.guidance.config import SourceSideConfig, guidance_config
    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig
    from ids_nerf.image.editor import OptimConfig, edit_latent

    torch.set_num_threads(1)
    prior = DiffusionPrior(PriorConfig(model=args.prior, device="cpu"))
    shape = (1, *prior.latent_shape(prior.resolution, prior.resolution))
    z_src = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    c_src = prior.text_embeddings("a red sphere on a checkered floor")
    c_trg = prior.text_embeddings("a blue sphere on a checkered floor")
    runs = [(r.split(":")[0], r.split(":")[1]) for r in args.runs]
    wall: dict[str, list[float]] = {r: [] for r in args.runs}
    cpu: dict[str, list[float]] = {r: [] for r in args.runs}
    used: dict[str, int | None] = {}
    last: dict[str, tuple[torch.Tensor, list[int]]] = {}
    for _ in range(args.rounds):
        for name, (method, k) in zip(args.runs, runs, strict=True):
            config = guidance_config(method)
            config.source = SourceSideConfig(lookahead=k if k == "auto" else int(k))
            distiller = ScoreDistiller(prior, config, seed=0)
            t0, c0 = time.perf_counter(), time.process_time()
            result = edit_latent(distiller, z_src, c_src, c_trg, OptimConfig(steps=args.steps), progress=False)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            used[name] = result.source_side["lookahead"]
            last[name] = (result.latent, [h["t"] for h in result.history])
    print(f"prior={args.prior} steps={args.steps} rounds={args.rounds} threads=1 (median seconds per edit)")
    print("| run | K used | wall s | CPU s |")
    print("|---|---|---|---|")
    for name in args.runs:
        print(f"| {name} | {used[name]} | {statistics.median(wall[name]):.2f} | {statistics.median(cpu[name]):.2f} |")
    for name, (method, k) in zip(args.runs, runs, strict=True):
        reference = f"{method}:1"
        if k != "1" and reference in last:
            diff = float((last[name][0] - last[reference][0]).abs().max())
            same_t = last[name][1] == last[reference][1]
            print(f"{name} vs {reference}: max |latent difference| {diff:.2e}, same timesteps: {same_t}")
    print(json.dumps({"wall": wall, "cpu": cpu}))


if __name__ == "__main__":
    main()

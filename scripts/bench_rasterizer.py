"""Micro-benchmark of the pure-PyTorch CPU Gaussian rasterizer (ids_nerf.scenes.rasterize_cpu).

Prints measured numbers only: per configuration the wall time (min and median over repeats) and the process CPU
time per call (user + system; on a shared machine it is less inflated by other processes than wall time), for the
forward alone and forward + backward, at 1 and 2 threads; and the peak RSS of one forward + backward in a fresh
process (VmHWM of a child that imports torch, builds the scene and renders once), with its peak before the render
(imports + scene) for reference.

Scenes are random Gaussians in a slab 2.5..3.5 in front of a pinhole camera (f = 0.9 * width), quaternions random,
scales log-uniform in ``--scale`` (world units; at 504x378 a scale s gives a 2D sigma of about 151 * s pixels),
opacities uniform in 0.1..0.9, RGB colours (or SH degree ``--sh``), classic mode, loss = sum(image * weights).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_rasterizer.py
    .venv/bin/python scripts/bench_rasterizer.py --n 50000 --width 504 --height 378 --scale 0.005 0.02 --repeats 3
"""

from __future__ import annotations

import os

# as the project's CLIs (ids_nerf/__init__.py): idle OpenMP threads sleep instead of spinning; before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from ids_nerf.scenes.rasterize_cpu import rasterization  # noqa: E402


def make_scene(n: int, width: int, height: int, scale: tuple[float, float], sh: int | None, seed: int = 0):
    """Random Gaussians in front of an identity camera (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    means[:, 2] = means[:, 2] * 0.5 + 3.0
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(scale[0]), math.log(scale[1]), generator=g))
    opacities = torch.empty(n).uniform_(0.1, 0.9, generator=g)
    colors = torch.rand(n, 3, generator=g) if sh is None else torch.randn(n, (sh + 1) ** 2, 3, generator=g) * 0.3
    f = 0.9 * width
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])[None]
    return [means, quats, scales, opacities, colors], torch.eye(4)[None], K


def _step(params, V, K, args, weights, backward: bool, **kw) -> None:
    img, _, _ = rasterization(*params, V, K, args.width, args.height, sh_degree=args.sh, **kw)
    if backward:
        (img * weights).sum().backward()
        for p in params:
            p.grad = None


def _time(params, V, K, args, weights, backward: bool, **kw) -> dict[str, float]:
    _step(params, V, K, args, weights, backward, **kw)  # warm-up
    walls, cpus = [], []
    for _ in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        _step(params, V, K, args, weights, backward, **kw)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {
        "wall_min_ms": 1e3 * min(walls),
        "wall_median_ms": 1e3 * statistics.median(walls),
        "cpu_min_ms": 1e3 * min(cpus),
    }


def _peak_rss_mib() -> float:
    """This process's peak RSS in MiB: VmHWM of /proc/self/status (per address space, so unlike ``ru_maxrss`` it does
    not inherit the parent's peak across fork + exec); ``ru_maxrss`` where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_peak_rss(args) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh process doing one forward + backward of the same scene, and its peak before."""
    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.02, 0.08))
    ap.add_argument("--sh", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--chunk-pairs", type=int, default=None)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child process")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    kw = {}
    if args.block_size is not None:
        kw["block_size"] = args.block_size
    if args.chunk_pairs is not None:
        kw["chunk_pairs"] = args.chunk_pairs

    params, V, K = make_scene(args.n, args.width, args.height, tuple(args.scale), args.sh)
    params = [p.requires_grad_(True) for p in params]
    weights = torch.rand(1, args.height, args.width, 3, generator=torch.Generator().manual_seed(1))
    if args.child:
        torch.set_num_threads(1)
        before = _peak_rss_mib()
        _step(params, V, K, args, weights, True, **kw)
        print(json.dumps({"peak_rss_mib": _peak_rss_mib(), "peak_rss_before_render_mib": before}))
        return

    with torch.no_grad():
        _, alpha, meta = rasterization(*[p.detach() for p in params], V, K, args.width, args.height, sh_degree=args.sh)
    radii = meta["radii"][meta["radii"] > 0].float()
    scene = {
        "n": args.n,
        "size": f"{args.width}x{args.height}",
        "visible": int(radii.numel()),
        "radius_mean_px": round(float(radii.mean()), 2) if radii.numel() else 0.0,
        "alpha_mean": round(float(alpha.mean()), 3),
        **{k: v for k, v in kw.items()},
    }
    print(json.dumps({"scene": scene}))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for backward in (False, True):
            res = _time(params, V, K, args, weights, backward, **kw)
            row = {
                "threads": threads,
                "pass": "fwd+bwd" if backward else "fwd",
                **{k: round(v, 1) for k, v in res.items()},
            }
            print(json.dumps(row))
    if not args.no_rss:
        rss = _child_peak_rss(args)
        print(json.dumps({f"{k}_1thread": round(v, 1) for k, v in rss.items()}))


if __name__ == "__main__":
    main()

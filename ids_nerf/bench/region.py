"""``ids-bench-region``: region-restricted scene edits against whole-scene edits on the offline toy scene, NeRF and
splat side by side, paired (the same scene, reconstruction, seed, steps and views).

For each scene kind (``nerfacto``, ``splat``): generate the toy scene ("a red sphere on a checkered floor", 32 views
at 64 px, with its point cloud), reconstruct it (``ids-recon`` / ``ids-splat-recon``, CPU-sized), edit it to "a blue
sphere" twice with the same seed, once whole and once restricted to ``--box`` (``--pipeline.region.box``), then render
the test cameras of the source and both edits and score them:

  outside PSNR / SSIM   edit vs source render over the pixels whose ground-truth surface point (the toy scene's
                        depth maps, so the same mask for both scene kinds) lies outside the box, sky included
  inside success        share of test views whose dominant object colour (ids_nerf.toy.detectors) is the target's
  s/step                wall time of the editing run / its steps (the region's anchor render included)

Writes ``bench_region.json``, ``bench_region.md`` and ``region_edit.png`` (per kind: source | whole edit | region
edit | 4 x |region edit - source|) to ``--out``; finished runs there are reused.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig

SceneName = Literal["nerfacto", "splat"]
SPHERE_BOX = (0.0, 0.0, 0.15, 0.4, 0.4, 0.4)
"""A box around the toy sphere in the toy scene's coordinates (Blender parser, scale 0.3)."""


@dataclass
class RegionBenchConfig:
    """Region edits against whole-scene edits on the toy scene (NeRF and splat, paired)."""

    out: Path = Path("outputs/bench-region")
    """Folder of the data, runs, results and picture (finished runs in it are reused)."""
    scenes: tuple[SceneName, ...] = ("nerfacto", "splat")
    """Scene kinds to edit."""
    box: tuple[float, ...] = SPHERE_BOX
    """The region: centre x y z, size x y z[, roll pitch yaw] in scene coordinates (--pipeline.region.box)."""
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="toy"))
    """Diffusion prior of the edits (the bundled toy prior by default)."""
    target_color: str = "blue"
    """The edit: "a <target-color> sphere on a checkered floor" (a colour of the toy world's palette)."""
    nerf_recon_steps: int = 800
    """nerfacto reconstruction steps (ids-nerf-demo's)."""
    splat_recon_steps: int = 500
    """splatfacto reconstruction steps (ids-nerf-demo --scene splat's)."""
    edit_steps: int = 150
    """Editing steps of every edit."""
    seed: int = 0
    """Seed of the scene, the reconstructions and the edits."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the scenes and the prior (auto: CUDA when available)."""


def _check(cfg: RegionBenchConfig) -> None:
    from ids_nerf.nerf.region import check_box
    from ids_nerf.toy.scene_spec import COLORS

    check_box(cfg.box, "--box")
    if cfg.target_color not in COLORS or cfg.target_color == "red":
        raise UserInputError(f"--target-color must be one of {', '.join(c for c in COLORS if c != 'red')}.")
    for flag, value in (
        ("--nerf-recon-steps", cfg.nerf_recon_steps),
        ("--splat-recon-steps", cfg.splat_recon_steps),
        ("--edit-steps", cfg.edit_steps),
    ):
        if value < 1:
            raise UserInputError(f"{flag} must be >= 1 (got {value}).")
    if not cfg.scenes:
        raise UserInputError("--scenes: name at least one of nerfacto, splat.")


def outside_masks(data: Path, box: tuple[float, ...], scale: float = 0.3) -> list[np.ndarray]:
    """Per test view of a toy Blender dataset, the (H, W) bool mask of pixels whose ground-truth surface point (its
    depth map; sky = infinitely far) lies outside ``box`` (scene coordinates = the data's times ``scale``)."""
    import torch

    from ids_nerf.nerf.region import box_contains, oriented_box
    from ids_nerf.toy.cameras import Camera
    from ids_nerf.toy.raycast import grid_directions

    meta = json.loads((data / "transforms_test.json").read_text())
    obb = oriented_box(box)
    masks = []
    for i, frame in enumerate(meta["frames"]):
        depth = np.load(data / "test" / f"r_{i}_depth.npy").astype(np.float64)
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        camera = Camera(c2w=c2w, fov_x=float(meta["camera_angle_x"]), width=depth.shape[1], height=depth.shape[0])
        dirs = grid_directions(camera, 1).reshape(3, -1).T
        finite = np.where(np.isfinite(depth.reshape(-1, 1)), depth.reshape(-1, 1), 0.0)
        points = c2w[:3, 3][None] + finite * dirs
        inside = box_contains(obb, torch.from_numpy(points * scale).float()).numpy().reshape(depth.shape)
        masks.append(~inside | ~np.isfinite(depth))
    return masks


def _renders(config_yml: Path) -> list[np.ndarray]:
    import torch
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_yml, test_mode="test")
    cameras = pipeline.datamanager.eval_dataset.cameras
    out = []
    for i in range(len(cameras)):
        with torch.no_grad():
            rgb = pipeline.model.get_outputs_for_camera(cameras[i : i + 1].to(pipeline.device))["rgb"]
        out.append(rgb.clamp(0, 1).cpu().numpy())
    return out


def _edit(cfg: RegionBenchConfig, kind: str, data: Path, runs: Path, device: str, timings: dict) -> dict[str, Path]:
    from ids_nerf.nerf.runs import final_checkpoint, read_run_config, train_run
    from ids_nerf.nerf.toy_runs import TOY_SRC_PROMPT, edit_config, reconstruction_config

    steps = cfg.nerf_recon_steps if kind == "nerfacto" else cfg.splat_recon_steps
    recon = reconstruction_config(kind, data, runs, steps, device, cfg.seed)
    if final_checkpoint(recon.get_base_dir(), recon) is None:
        train_run(recon)
    ymls = {"source": recon.get_base_dir() / "config.yml"}
    method = "ids-edit" if kind == "nerfacto" else "ids-splat-edit"
    for variant in ("whole", "region"):
        edit = edit_config(
            method,
            data,
            runs,
            recon.get_checkpoint_dir(),
            prior=cfg.prior,
            steps=cfg.edit_steps,
            device=device,
            seed=cfg.seed,
            trg_prompt=TOY_SRC_PROMPT.replace("red", cfg.target_color),
            render_downscale=2 if kind == "nerfacto" else 1,  # ids-nerf-demo's settings
            log_every=0,
        )
        edit.timestamp = variant
        if variant == "region":
            edit.pipeline.region.box = tuple(cfg.box)
        run = edit.get_base_dir()
        saved = read_run_config(run / "config.yml") if (run / "config.yml").is_file() else None
        if saved is None or final_checkpoint(run, saved) is None:
            t0 = time.perf_counter()
            train_run(edit)
            timings[f"{kind}/{variant}"] = (time.perf_counter() - t0) / cfg.edit_steps
        ymls[variant] = run / "config.yml"
    return ymls


def _picture(rows: list[np.ndarray], path: Path) -> None:
    from PIL import Image

    grid = np.concatenate(rows, axis=0)
    img = Image.fromarray((np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8))
    img.resize((img.width * 3, img.height * 3), Image.Resampling.NEAREST).save(path)


def run(cfg: RegionBenchConfig) -> dict[str, Any]:
    """Run (or reuse) the edits, score them, write the results; returns the JSON-ready result."""
    import torch

    from ids_nerf.eval.preservation import masked_psnr, masked_ssim
    from ids_nerf.nerf.toy_runs import write_toy_scene
    from ids_nerf.toy.detectors import dominant_color

    _check(cfg)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    data, runs = cfg.out / "data", cfg.out / "runs"
    if not (data / "transforms_train.json").is_file():
        write_toy_scene(data, n_train=32, size=64, seed=cfg.seed)
    timing_file = cfg.out / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    outside = outside_masks(data, tuple(cfg.box))
    rows: list[dict[str, Any]] = []
    picture: list[np.ndarray] = []
    for kind in cfg.scenes:
        ymls = _edit(cfg, kind, data, runs, device, timings)
        timing_file.write_text(json.dumps(timings, indent=1))
        renders = {name: _renders(yml) for name, yml in ymls.items()}
        for variant in ("whole", "region"):
            pairs = list(zip(renders["source"], renders[variant], outside, strict=True))
            rows.append(
                {
                    "scene": kind,
                    "edit": variant,
                    "outside_psnr": float(np.mean([masked_psnr(s, e, m) for s, e, m in pairs])),
                    "outside_ssim": float(np.mean([masked_ssim(s, e, m) for s, e, m in pairs])),
                    "inside_success": float(np.mean([dominant_color(e) == cfg.target_color for _, e, _ in pairs])),
                    "s_per_step": timings.get(f"{kind}/{variant}"),
                    "outside_fraction": float(np.mean([m.mean() for m in outside])),
                }
            )
        for i in (0, len(outside) // 2):
            source, whole, region = renders["source"][i], renders["whole"][i], renders["region"][i]
            picture.append(np.concatenate([source, whole, region, np.clip(4 * np.abs(region - source), 0, 1)], 1))
    _picture(picture, cfg.out / "region_edit.png")
    result = {"rows": rows, "config": json.loads(json.dumps(asdict(cfg), default=str)), "device": device}
    (cfg.out / "bench_region.json").write_text(json.dumps(result, indent=1))
    (cfg.out / "bench_region.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table (one row per scene kind and edit)."""
    lines = [
        "| scene | edit | outside PSNR (dB) | outside SSIM | inside success | s/step |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        seconds = "-" if r["s_per_step"] is None else f"{r['s_per_step']:.2f}"
        psnr = "-" if math.isnan(r["outside_psnr"]) else f"{r['outside_psnr']:.2f}"
        lines.append(
            f"| {r['scene']} | {r['edit']} | {psnr} | {r['outside_ssim']:.3f} | {r['inside_success']:.2f} | {seconds} |"
        )
    return "\n".join(lines) + "\n"


def entrypoint() -> None:
    """Console entry point."""
    cfg, result = run_console("ids-bench-region", RegionBenchConfig, run, __doc__)
    print(markdown(result))
    print(f"wrote {cfg.out / 'bench_region.md'} and {cfg.out / 'region_edit.png'}")


if __name__ == "__main__":
    entrypoint()

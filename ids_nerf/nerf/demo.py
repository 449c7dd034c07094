"""``ids-nerf-demo``: the main job end to end, offline: toy scene -> nerfacto reconstruction -> IDS edit -> renders.

1. writes a procedural scene ("a red sphere on a checkered floor") as a Blender-format dataset;
2. reconstructs it with ``ids-recon`` (nerfacto, sized for a CPU);
3. edits it with ``ids-edit`` (or another method) and the bundled toy prior;
4. renders the test cameras of both runs with depth through nerfstudio's own loading path (``eval_setup``) and
   writes before/after renders, depth maps and a side-by-side picture.

On a CUDA machine the same command uses the GPU automatically.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.methods import NERF_METHODS
from ids_nerf.guidance.prior import PriorConfig


@dataclass
class NerfDemoConfig:
    """Offline NeRF editing demo on a generated toy scene."""

    out: Path = Path("outputs/nerf-demo")
    """Output folder (data, runs, renders). Must not exist yet unless --overwrite (then only renders are replaced)."""
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="toy"))
    """Diffusion prior of the edit: model `toy` (bundled, offline), `tiny` (random weights), a hub id or a local
    folder; device (auto: the NeRF's), dtype."""
    method: Literal[tuple(NERF_METHODS)] = "ids-edit"  # type: ignore[valid-type]  # the registry's NeRF methods
    """Editing method (ns-train method name)."""
    src_prompt: str = "a red sphere on a checkered floor"
    """Prompt of the generated scene."""
    trg_prompt: str = "a blue sphere on a checkered floor"
    """Prompt of the edit."""
    image_size: int = 64
    """Resolution of the generated views (the toy prior works at 64x64)."""
    n_train_views: int = 32
    """Training views of the generated scene."""
    recon_steps: int = 800
    """nerfacto reconstruction steps."""
    edit_steps: int = 150
    """Editing steps."""
    render_downscale: int = 2
    """Render edited views at 1/k of the prior's resolution, upsampled before encoding (CPU speed knob; 1 on GPU)."""
    seed: int = 0
    """Seed of the scene, the reconstruction and the edit."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the NeRF and the prior (auto: CUDA when available)."""
    overwrite: bool = False
    """Reuse an existing --out folder."""


def cpu_friendly_nerfacto(model) -> None:
    """Shrink nerfacto to CPU size (torch hash grids, 8 levels, 2^15 tables, 32/16 proposal and 16 NeRF samples)."""
    model.implementation = "torch"
    model.num_levels = 8
    model.log2_hashmap_size = 15
    model.max_res = 512
    model.hidden_dim = 32
    model.hidden_dim_color = 32
    model.num_proposal_samples_per_ray = (32, 16)
    model.num_nerf_samples_per_ray = 16
    model.proposal_net_args_list = [
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 64, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 128, "use_linear": False},
    ]
    model.eval_num_rays_per_chunk = 4096


def _toy_data(cfg: NerfDemoConfig, data_dir: Path) -> None:
    from ids_nerf.toy.datasets import write_blender
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    scene = SceneSpec(
        objects=[ObjectSpec(shape="sphere", color="red", center=(0.0, 0.0, 0.5), size=0.5)],
        floor="checkered",
        light_dir=(0.4, -0.5, 0.75),
    )
    write_blender(scene, data_dir, n_train=cfg.n_train_views, n_val=4, n_test=8, size=cfg.image_size, seed=cfg.seed)


def _blender_parser():
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    return BlenderDataParserConfig(scale_factor=0.3, alpha_color=None)


def reconstruction_config(data: Path, runs: Path, steps: int, device: str, seed: int):
    """ids-recon sized for a CPU, writing to ``runs/toy/ids-recon/recon``."""
    from ids_nerf.method_configs import ids_recon

    config = copy.deepcopy(ids_recon.config)
    config.data = data
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser = _blender_parser()
    config.pipeline.datamanager.train_num_rays_per_batch = 512
    config.pipeline.datamanager.eval_num_rays_per_batch = 512
    cpu_friendly_nerfacto(config.pipeline.model)
    config.output_dir, config.experiment_name, config.timestamp = runs, "toy", "recon"
    config.max_num_iterations, config.steps_per_save = steps, steps
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.vis, config.machine.device_type, config.machine.seed = "tensorboard", device, seed
    config.logging.local_writer.enable = True
    return config


def edit_config(method: str, data: Path, runs: Path, load_dir: Path, cfg: NerfDemoConfig, device: str):
    """An editing run of ``load_dir`` with the demo's prompts and prior, writing to ``runs/toy/<method>/edit``."""
    from ids_nerf.method_configs import EDIT_METHODS

    config = copy.deepcopy(EDIT_METHODS[method].config)
    config.data = data
    config.pipeline.datamanager.data = data
    config.load_dir = load_dir
    g = config.pipeline.guidance
    g.src_prompt, g.trg_prompt, g.prior = cfg.src_prompt, cfg.trg_prompt, copy.deepcopy(cfg.prior)
    config.pipeline.render.view_repeat, config.pipeline.render.downscale = 5, cfg.render_downscale
    config.pipeline.log_every = 25
    config.output_dir, config.experiment_name, config.timestamp = runs, "toy", "edit"
    config.max_num_iterations, config.steps_per_save = cfg.edit_steps, cfg.edit_steps
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.vis, config.machine.device_type, config.machine.seed = "tensorboard", device, cfg.seed
    return config


def render_run(config_path: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Render the test cameras of a run with nerfstudio's eval_setup: (renders, depth colormaps, photos)."""
    from nerfstudio.utils import colormaps
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    dataset = pipeline.datamanager.eval_dataset
    renders, depths, photos = [], [], []
    for i in range(len(dataset)):
        camera = dataset.cameras[i : i + 1].to(pipeline.device)
        with torch.no_grad():
            out = pipeline.model.get_outputs_for_camera(camera)
        renders.append(out["rgb"].clamp(0, 1).cpu().numpy())
        depths.append(colormaps.apply_depth_colormap(out["depth"]).cpu().numpy())
        photos.append(dataset[i]["image"][..., :3].float().numpy())
    return renders, depths, photos


def _save(arr: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def write_pictures(out: Path, before: tuple, after: tuple) -> Path:
    """Per-view PNGs and a side-by-side grid: photo | before | after | depth before | depth after."""
    renders_dir = out / "renders"
    renders_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (photo, rb, db, ra, da) in enumerate(zip(before[2], before[0], before[1], after[0], after[1], strict=True)):
        for name, arr in (("before", rb), ("after", ra), ("depth_before", db), ("depth_after", da)):
            _save(arr, renders_dir / f"view{i:02d}_{name}.png")
        rows.append(np.concatenate([photo, rb, ra, db, da], axis=1))
    grid = out / "side_by_side.png"
    _save(np.concatenate(rows, axis=0), grid)
    return grid


def run(cfg: NerfDemoConfig) -> Path:
    """Run the whole demo; returns the side-by-side picture."""
    from ids_nerf.nerf.runs import train_run  # nerfstudio's trainer: imported when the demo runs, not for --help

    if cfg.out.exists() and any(cfg.out.iterdir()) and not cfg.overwrite:
        raise UserInputError(f"--out {cfg.out} already exists and is not empty; pass --overwrite or another --out.")
    if cfg.src_prompt.strip() == cfg.trg_prompt.strip() or not cfg.trg_prompt.strip():
        raise UserInputError("--trg-prompt must be non-empty and differ from --src-prompt.")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    data, runs = cfg.out / "data", cfg.out / "runs"
    t0 = time.perf_counter()
    if not (data / "transforms_train.json").is_file():
        _toy_data(cfg, data)
    recon = reconstruction_config(data, runs, cfg.recon_steps, device, cfg.seed)
    recon_yml = recon.get_base_dir() / "config.yml"
    if not (recon.get_checkpoint_dir() / f"step-{cfg.recon_steps - 1:09d}.ckpt").is_file():
        recon_yml = train_run(recon)
    t1 = time.perf_counter()
    edit = edit_config(cfg.method, data, runs, recon.get_checkpoint_dir(), cfg, device)
    edit_yml = train_run(edit)
    t2 = time.perf_counter()
    grid = write_pictures(cfg.out, render_run(recon_yml), render_run(edit_yml))
    t3 = time.perf_counter()
    print(
        f"ids-nerf-demo: reconstruction {t1 - t0:.0f} s, edit ({cfg.method}, {cfg.edit_steps} steps) {t2 - t1:.0f} s "
        f"({(t2 - t1) / cfg.edit_steps:.2f} s/step), renders {t3 - t2:.0f} s on {device}"
    )
    print(
        f"ids-nerf-demo: wrote {grid} (photo | before | after | depth before | depth after) and {cfg.out / 'renders'}"
    )
    return grid


def entrypoint() -> None:
    """Console entry point; user errors exit with code 2."""
    run_console("ids-nerf-demo", NerfDemoConfig, run, __doc__)


if __name__ == "__main__":
    entrypoint()

"""``ids-nerf-demo``: the main job end to end, offline: toy scene -> reconstruction -> IDS edit -> renders.

1. writes a procedural scene ("a red sphere on a checkered floor") as a Blender-format dataset (with the point cloud
   a COLMAP reconstruction would give);
2. reconstructs it, sized for a CPU: ``ids-recon`` (nerfacto), or with ``--scene splat`` ``ids-splat-recon``
   (splatfacto on the CPU rasterizer, or gsplat on CUDA);
3. edits it with ``ids-edit`` / ``ids-splat-edit`` (or another method) and the bundled toy prior;
4. renders the test cameras of both runs with depth through nerfstudio's own loading path (``eval_setup``) and
   writes before/after renders, depth maps and a side-by-side picture.

On a CUDA machine the same command uses the GPU automatically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ids_nerf.console import interrupts_pass_through, run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.methods import NERF_METHODS
from ids_nerf.guidance.prior import PriorConfig, check_prior
from ids_nerf.guidance.validation import check_config
from ids_nerf.nerf.toy_runs import TOY_SRC_PROMPT, TOY_TRG_PROMPT
from ids_nerf.threads import torch_threads

#: ``--method`` choices: the registry's editing methods on both scene kinds (``ids-edit``, ``ids-splat-edit``, ...).
DEMO_METHODS = (*NERF_METHODS, *(name.replace("-edit", "-splat-edit") for name in NERF_METHODS))
#: Per scene kind: reconstruction steps and render downscale of the edit (a NeRF render is the CPU's cost).
SCENE_DEFAULTS = {
    "nerfacto": {"recon_steps": 800, "render_downscale": 2},
    "splat": {"recon_steps": 500, "render_downscale": 1},
}


@dataclass
class NerfDemoConfig:
    """Offline scene editing demo on a generated toy scene (NeRF, or a Gaussian splat with --scene splat)."""

    out: Path = Path("outputs/nerf-demo")
    """Output folder (data, runs, renders). Must not exist yet unless --overwrite (then only renders are replaced)."""
    scene: Literal["nerfacto", "splat"] = "nerfacto"
    """Scene type: a nerfacto NeRF, or a splatfacto Gaussian splat (also chosen by a *-splat-edit --method)."""
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="toy"))
    """Diffusion prior of the edit: model `toy` (bundled, offline), `tiny` (random weights), a hub id or a local
    folder; device (auto: the scene's), dtype."""
    method: Literal[DEMO_METHODS] = "ids-edit"  # type: ignore[valid-type]  # the registry's methods, both kinds
    """Editing method (ns-train method name); with --scene splat a NeRF name means its splat twin (ids-edit ->
    ids-splat-edit)."""
    src_prompt: str = TOY_SRC_PROMPT
    """Prompt of the generated scene."""
    trg_prompt: str = TOY_TRG_PROMPT
    """Prompt of the edit."""
    image_size: int = 64
    """Resolution of the generated views (the toy prior works at 64x64)."""
    n_train_views: int = 32
    """Training views of the generated scene."""
    recon_steps: int | None = None
    """Reconstruction steps; None: 800 for nerfacto, 500 for a splat."""
    edit_steps: int = 150
    """Editing steps."""
    render_downscale: int | None = None
    """Render edited views at 1/k of the prior's resolution, upsampled before encoding (CPU speed knob; 1 on GPU);
    None: 2 for nerfacto, 1 for a splat (one rasterization of the whole view is cheap)."""
    seed: int = 0
    """Seed of the scene, the reconstruction and the edit."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the scene and the prior (auto: CUDA when available)."""
    threads: int | None = 1
    """torch CPU threads when running on the CPU (None: torch's default, one per core). At the demo's 64-px sizes
    every operation is small and one thread is fastest: on a 2-core VM the NeRF demo took 3:07 and the splat demo
    1:18 with one thread, 3:41 and 2:35 with two (idle threads sleep, and waking them costs more than they add)."""
    overwrite: bool = False
    """Reuse an existing --out folder."""

    def kind(self) -> str:
        """The scene kind: ``splat`` with --scene splat or a *-splat-edit method, else ``nerfacto``."""
        return "splat" if self.scene == "splat" or self.method.endswith("-splat-edit") else "nerfacto"

    def edit_method(self) -> str:
        """The ns-train editing method of the scene kind."""
        if self.kind() == "splat" and not self.method.endswith("-splat-edit"):
            return self.method.replace("-edit", "-splat-edit")
        return self.method

    def setting(self, name: str) -> int:
        """``recon_steps`` / ``render_downscale`` as given, or the scene kind's default."""
        value = getattr(self, name)
        return SCENE_DEFAULTS[self.kind()][name] if value is None else int(value)


def render_views(config_path: Path, data: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The test cameras of a run rendered as ``ids-eval render`` renders them (its run folder's own newest
    checkpoint, the scene read from ``data``: right wherever the demo folder is now and whatever paths config.yml
    holds): (renders, depth colormaps, photos)."""
    from nerfstudio.utils import colormaps

    from ids_nerf.eval.sources import render_run

    run = render_run(config_path, "test", data, progress=False, flag="ids-nerf-demo: renders of")
    depths = [colormaps.apply_depth_colormap(torch.from_numpy(d)[..., None]).numpy() for d in run.depth]
    return run.rgb, depths, run.photos


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


def validate(cfg: NerfDemoConfig, device: str) -> None:
    """Every check that needs no model, before any data is generated or reconstructed: the counts (--edit-steps,
    --recon-steps, ...), the prompts, --out and the prior (resolvable, device/dtype; ``device``: the NeRF's)."""
    check_config(cfg, "--")
    if not cfg.src_prompt.strip():
        raise UserInputError('--src-prompt is empty: describe the generated scene, e.g. "a red sphere on a floor".')
    if not cfg.trg_prompt.strip():
        raise UserInputError('--trg-prompt is empty: describe the edit, e.g. "a blue sphere on a checkered floor".')
    if cfg.src_prompt.strip() == cfg.trg_prompt.strip():
        raise UserInputError(
            "--src-prompt and --trg-prompt are identical: the edit would do nothing. Describe the change in "
            "--trg-prompt."
        )
    if cfg.out.exists() and not cfg.out.is_dir():
        raise UserInputError(f"--out {cfg.out} is a file; pass a folder (created if missing).")
    if cfg.out.exists() and any(cfg.out.iterdir()) and not cfg.overwrite:
        raise UserInputError(f"--out {cfg.out} already exists and is not empty; pass --overwrite or another --out.")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda: CUDA is not available on this machine; use --device cpu (or auto).")
    prior = replace(cfg.prior, device=device) if cfg.prior.device == "auto" else cfg.prior
    check_prior(prior)


def run(cfg: NerfDemoConfig) -> Path:
    """Run the whole demo; returns the side-by-side picture."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    validate(cfg, device)
    with torch_threads(cfg.threads if device == "cpu" else None):
        return _run(cfg, device)


def _run(cfg: NerfDemoConfig, device: str) -> Path:
    from ids_nerf.nerf.runs import final_checkpoint, train_run  # nerfstudio's trainer: not imported for --help
    from ids_nerf.nerf.toy_runs import edit_config, reconstruction_config, write_toy_scene

    out = cfg.out.absolute()  # the runs' config.yml files then work from any folder
    data, runs = out / "data", out / "runs"
    t0 = time.perf_counter()
    if not all((data / f"transforms_{split}.json").is_file() for split in ("train", "val", "test")):
        write_toy_scene(data, cfg.n_train_views, cfg.image_size, cfg.seed)  # again after a partial write
    steps = cfg.setting("recon_steps")
    recon = reconstruction_config(cfg.kind(), data, runs, steps, device, cfg.seed)
    recon_yml = recon.get_base_dir() / "config.yml"
    if final_checkpoint(recon.get_base_dir(), recon) is None:
        with interrupts_pass_through():
            recon_yml = train_run(recon)
    t1 = time.perf_counter()
    edit = edit_config(
        cfg.edit_method(),
        data,
        runs,
        recon.get_checkpoint_dir(),
        prior=cfg.prior,
        steps=cfg.edit_steps,
        device=device,
        seed=cfg.seed,
        src_prompt=cfg.src_prompt,
        trg_prompt=cfg.trg_prompt,
        render_downscale=cfg.setting("render_downscale"),
    )
    with interrupts_pass_through():
        edit_yml = train_run(edit)
    t2 = time.perf_counter()
    grid = write_pictures(cfg.out, render_views(recon_yml, data), render_views(edit_yml, data))
    t3 = time.perf_counter()
    print(
        f"ids-nerf-demo: reconstruction {t1 - t0:.0f} s, edit ({cfg.edit_method()}, {cfg.edit_steps} steps) "
        f"{t2 - t1:.0f} s "
        f"({(t2 - t1) / cfg.edit_steps:.2f} s/step), renders {t3 - t2:.0f} s on {device}"
    )
    print(
        f"ids-nerf-demo: wrote {grid} (photo | before | after | depth before | depth after) and {cfg.out / 'renders'}"
    )
    return grid


def entrypoint() -> None:
    """Console entry point; user errors exit with code 2, Ctrl-C / SIGTERM with 130 / 143 and one line."""
    run_console(
        "ids-nerf-demo",
        NerfDemoConfig,
        run,
        __doc__,
        interrupted=lambda: (
            "interrupted; the same command with --overwrite reuses the finished parts (the generated "
            "scene, a finished reconstruction)"
        ),
    )


if __name__ == "__main__":
    entrypoint()

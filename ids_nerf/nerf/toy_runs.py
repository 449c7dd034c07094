"""The offline toy flow's run configs, for every scene kind: a generated toy scene (Blender format), a CPU-sized
reconstruction (``ids-recon``: nerfacto, ``ids-splat-recon``: splatfacto) and an edit of it with the bundled prior.

Used by ``ids-nerf-demo``, the tests and the benchmarks; the run folders are ``<runs>/toy/<method>/<name>``. Cheap
to import (the demo's ``--help``): nerfstudio is imported by the functions that build runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ids_nerf.guidance.prior import PriorConfig

TOY_SRC_PROMPT = "a red sphere on a checkered floor"
"""The generated scene's caption."""
TOY_TRG_PROMPT = "a blue sphere on a checkered floor"
"""The demo's edit."""


TOY_POINTS = 5000
"""Points of the toy scene's point cloud (``points3d.ply``), the start of a splat reconstruction."""


def write_toy_scene(data: Path, n_train: int, size: int, seed: int, n_val: int = 4, n_test: int = 8) -> None:
    """Write the toy scene "a red sphere on a checkered floor" as a Blender-format dataset in ``data``, with a point
    cloud of :data:`TOY_POINTS` points seen by its training views (what COLMAP gives a real capture)."""
    from ids_nerf.toy.datasets import write_blender
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    scene = SceneSpec(
        objects=[ObjectSpec(shape="sphere", color="red", center=(0.0, 0.0, 0.5), size=0.5)],
        floor="checkered",
        light_dir=(0.4, -0.5, 0.75),
    )
    write_blender(scene, data, n_train=n_train, n_val=n_val, n_test=n_test, size=size, seed=seed, points=TOY_POINTS)


def toy_dataparser(data: Path | None = None):
    """Blender parser of the toy scenes (scale 0.3: the scene fits nerfacto's default scene box; opaque images), with
    the scene's point cloud when ``data`` has one (splatfacto starts from it; nerfacto ignores it)."""
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    from ids_nerf.toy.datasets import POINTS_FILE

    ply = POINTS_FILE if data is not None and (Path(data) / POINTS_FILE).is_file() else None
    return BlenderDataParserConfig(scale_factor=0.3, alpha_color=None, ply_path=None if ply is None else Path(ply))


def _quiet_run(config: Any, runs: Path, name: str, steps: int, device: str, seed: int) -> None:
    config.output_dir, config.experiment_name, config.timestamp = Path(runs).absolute(), "toy", name
    config.max_num_iterations, config.steps_per_save = steps, steps
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.vis, config.machine.device_type, config.machine.seed = "tensorboard", device, seed


def reconstruction_config(kind: Any, data: Path, runs: Path, steps: int, device: str, seed: int):
    """The reconstruction warm-up of ``kind`` (a :class:`~ids_nerf.scenes.kinds.SceneKind` or its name) sized for a
    CPU, writing to ``runs/toy/<recon method>/recon``."""
    from ids_nerf.scenes.cpu_sizes import cpu_sized
    from ids_nerf.scenes.kinds import SCENE_KINDS

    kind = SCENE_KINDS[kind] if isinstance(kind, str) else kind
    config = kind.recon()
    config.data = config.pipeline.datamanager.data = Path(data).absolute()  # config.yml works from any folder
    config.pipeline.datamanager.dataparser = toy_dataparser(data if kind.name == "splat" else None)
    if hasattr(config.pipeline.datamanager, "train_num_rays_per_batch"):  # nerfacto: rays per batch
        config.pipeline.datamanager.train_num_rays_per_batch = 512
        config.pipeline.datamanager.eval_num_rays_per_batch = 512
    cpu_sized(config.pipeline.model)
    _quiet_run(config, runs, "recon", steps, device, seed)
    config.logging.local_writer.enable = True
    return config


def edit_config(
    method: str,
    data: Path,
    runs: Path,
    load_dir: Path,
    *,
    prior: PriorConfig,
    steps: int,
    device: str,
    seed: int,
    src_prompt: str = TOY_SRC_PROMPT,
    trg_prompt: str = TOY_TRG_PROMPT,
    render_downscale: int = 1,
    view_repeat: int = 5,
    log_every: int = 25,
):
    """An editing run (``ids-edit``, ``ids-splat-edit``, ...) of ``load_dir`` with the toy prompts and ``prior``,
    writing to ``runs/toy/<method>/edit``."""
    from ids_nerf.method_configs import EDIT_METHODS

    config = copy.deepcopy(EDIT_METHODS[method].config)
    config.data = config.pipeline.datamanager.data = Path(data).absolute()  # config.yml works from any folder
    config.load_dir = Path(load_dir).absolute()
    g = config.pipeline.guidance
    g.src_prompt, g.trg_prompt, g.prior = src_prompt, trg_prompt, copy.deepcopy(prior)
    config.pipeline.render.view_repeat, config.pipeline.render.downscale = view_repeat, render_downscale
    config.pipeline.log_every = log_every
    _quiet_run(config, runs, "edit", steps, device, seed)
    return config

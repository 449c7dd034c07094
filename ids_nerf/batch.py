"""``ids-batch``: compare editing methods on presets, as the IDS paper's Table 3 does.

For every preset (``configs/*.yaml``) and method: reconstruct the scene if no finished reconstruction of it is
under ``--output-dir`` -> edit it (``ns-train <method>`` in this process) -> ``ids-eval render`` against the
reconstruction -> one table with a row per method and a column group per scene (CLIP text, CLIP direction, LPIPS,
background PSNR, depth change). Finished steps are reused, so an interrupted batch continues where it stopped::

    ids-batch --presets configs/llff/leaves-autumn.yaml configs/llff/fern-autumn.yaml \\
        --methods ids-edit dds-edit cds-edit

Writes ``<output-dir>/comparison.md`` and ``comparison.json``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig

#: Table columns: (metrics.json key, header, better).
COLUMNS = (
    ("clip_text", "CLIP text", "higher"),
    ("clip_direction", "CLIP direction", "higher"),
    ("lpips", "LPIPS", "lower"),
    ("bg_psnr", "bg PSNR", "higher"),
    ("depth_change", "depth change", "lower"),
)


@dataclass
class BatchEvalConfig:
    """How each edit is scored (the options of `ids-eval render`)."""

    clip_model: str = "ViT-L-14"
    """open_clip architecture."""
    clip_pretrained: str = "openai"
    """open_clip pretrained tag or a local checkpoint file."""
    random_weights: bool = False
    """Random-weight CLIP and LPIPS (offline smoke tests only: the numbers are NOT meaningful)."""
    skip_missing: bool = False
    """Report a metric whose network weights are unavailable as null instead of failing."""
    split: str = "test"
    """Cameras to score: test, val, train or all."""


@dataclass
class BatchConfig:
    """Reconstruct (if needed), edit and score every preset with every method; one comparison table."""

    presets: tuple[Path, ...] = ()
    """Preset files (configs/llff/leaves-autumn.yaml ...)."""
    methods: tuple[str, ...] = ("ids-edit", "dds-edit", "cds-edit")
    """ns-train editing methods to compare."""
    data_root: Path = Path("data")
    """Folder holding the preset scenes (<data-root>/<scene> of each preset)."""
    output_dir: Path = Path("outputs")
    """Run folders (<output-dir>/<preset>/<method>/batch) and the comparison table."""
    recon_steps: int = 30000
    """nerfacto steps of a reconstruction trained because none was found."""
    edit_steps: int = 3000
    """Editing steps of each method."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """Diffusion prior of every edit (Stable Diffusion 1.4 from the hub by default; `toy`/`tiny` offline)."""
    device: str = "auto"
    """Device of the NeRFs (auto: CUDA when available)."""
    seed: int = 42
    """--machine.seed of every run."""
    render_resolution: int | None = None
    """Long side of the views the prior sees (default: the prior's resolution)."""
    cpu_nerfacto: bool = False
    """nerfacto at the CPU-sized settings of ids-nerf-demo (for offline checks)."""
    eval: BatchEvalConfig = field(default_factory=BatchEvalConfig)
    """Scoring of each edit."""


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _common(config: Any, cfg: BatchConfig, data: Path, steps: int) -> None:
    config.data = config.pipeline.datamanager.data = data
    config.output_dir, config.max_num_iterations, config.steps_per_save = cfg.output_dir, steps, steps
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.vis, config.machine.device_type, config.machine.seed = "tensorboard", _device(cfg.device), cfg.seed
    if cfg.cpu_nerfacto:
        from ids_nerf.nerf.demo import cpu_friendly_nerfacto

        cpu_friendly_nerfacto(config.pipeline.model)


def reconstruction(cfg: BatchConfig, preset, data: Path) -> Path:
    """config.yml of the newest finished reconstruction of ``data``; trains one first if there is none."""
    from ids_nerf.method_configs import EDIT_METHODS
    from ids_nerf.nerf.runs import find_reconstruction, reconstruction_config, train_run

    found = find_reconstruction(cfg.output_dir, data)
    if found is not None:
        print(f"[{preset.name}] reconstruction: {found.run} (reused)")
        return found.run / "config.yml"
    recon = reconstruction_config(EDIT_METHODS[cfg.methods[0]].config, cfg.recon_steps)  # copies, never mutates
    _common(recon, cfg, data, cfg.recon_steps)
    recon.experiment_name = data.name
    if cfg.cpu_nerfacto:
        recon.pipeline.datamanager.train_num_rays_per_batch = recon.pipeline.datamanager.eval_num_rays_per_batch = 512
    print(f"[{preset.name}] reconstruction: none found, training {cfg.recon_steps} nerfacto steps")
    return train_run(recon)


def edit(cfg: BatchConfig, preset, method: str, data: Path, recon_yml: Path) -> Path:
    """config.yml of ``method``'s edit of ``preset`` (reused when its last checkpoint exists)."""
    from ids_nerf.method_configs import EDIT_METHODS
    from ids_nerf.nerf.runs import final_checkpoint, read_run_config, train_run
    from ids_nerf.presets import apply_preset

    config = copy.deepcopy(EDIT_METHODS[method].config)
    _common(config, cfg, data, cfg.edit_steps)
    config.experiment_name, config.timestamp = preset.name, "batch"
    config.load_dir = recon_yml.parent / "nerfstudio_models"
    config.pipeline.guidance.prior = copy.deepcopy(cfg.prior)
    config.pipeline.render.resolution = cfg.render_resolution
    apply_preset(config, preset, cfg.data_root)
    run = config.get_base_dir()
    saved = read_run_config(run / "config.yml") if (run / "config.yml").is_file() else None
    if saved is not None and final_checkpoint(run, saved) is not None:
        print(f"[{preset.name}] {method}: {run} (reused)")
        return run / "config.yml"
    print(f"[{preset.name}] {method}: editing ({cfg.edit_steps} steps)")
    return train_run(config)


def score(cfg: BatchConfig, preset, edit_yml: Path, recon_yml: Path) -> dict[str, Any]:
    """``ids-eval render`` of an edit against its reconstruction (reused when metrics.json exists)."""
    from ids_nerf.eval.cli import RenderOptions, evaluate

    out = edit_yml.parent / f"eval-{cfg.eval.split}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    options = RenderOptions(
        load_config=edit_yml,
        source_config=recon_yml,
        src_prompt=preset.src_prompt,
        trg_prompt=preset.trg_prompt,
        output_dir=out,
        split=cfg.eval.split,  # type: ignore[arg-type]
        clip_model=cfg.eval.clip_model,
        clip_pretrained=cfg.eval.clip_pretrained,
        random_weights=cfg.eval.random_weights,
        skip_missing=cfg.eval.skip_missing,
        device=cfg.device,
    )
    return evaluate(options)


def comparison_table(results: dict[str, dict[str, dict[str, Any]]], methods: tuple[str, ...]) -> str:
    """Markdown: a row per method, a column group per preset (means over the scored views)."""
    presets = list(results)
    head = ["method"] + [f"{p}: {h} ({'↑' if b == 'higher' else '↓'})" for p in presets for _, h, b in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        cells = [method]
        for p in presets:
            means = results[p][method]["means"]
            cells += ["-" if means.get(k) is None else f"{means[k]:.4g}" for k, _, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    random = any(r["random_weights"] for p in presets for r in results[p].values())
    note = "\nRANDOM-WEIGHT CLIP/LPIPS: the CLIP and LPIPS numbers are NOT meaningful.\n" if random else ""
    return "\n".join(lines) + "\n" + note


def run(cfg: BatchConfig) -> dict[str, Any]:
    """Run the batch; returns ``{"table", "results", "runs"}`` (also written as comparison.md / .json)."""
    from ids_nerf.method_configs import EDIT_METHODS
    from ids_nerf.presets import load_preset

    if not cfg.presets:
        raise UserInputError("--presets: pass at least one preset file, e.g. configs/llff/leaves-autumn.yaml.")
    unknown = [m for m in cfg.methods if m not in EDIT_METHODS]
    if unknown or not cfg.methods:
        raise UserInputError(f"--methods {' '.join(unknown)}: choose from {', '.join(EDIT_METHODS)}.")
    presets = [load_preset(p, "--presets") for p in cfg.presets]
    for preset in presets:  # every input is checked before anything runs
        if not preset.data(cfg.data_root).is_dir():
            raise UserInputError(
                f"--presets {preset.path}: its scene folder {preset.data(cfg.data_root)} does not exist; put the "
                f"{preset.scene} data there (README: real data) or pass --data-root."
            )
    results: dict[str, dict[str, dict[str, Any]]] = {}
    runs: dict[str, dict[str, str]] = {}
    for preset in presets:
        data = preset.data(cfg.data_root)
        recon_yml = reconstruction(cfg, preset, data)
        results[preset.name], runs[preset.name] = {}, {"reconstruction": str(recon_yml)}
        for method in cfg.methods:
            edit_yml = edit(cfg, preset, method, data, recon_yml)
            results[preset.name][method] = score(cfg, preset, edit_yml, recon_yml)
            runs[preset.name][method] = str(edit_yml)
    table = comparison_table(results, cfg.methods)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "comparison.md").write_text(table)
    summary = {
        "presets": {
            p.name: {"file": str(p.path), "src_prompt": p.src_prompt, "trg_prompt": p.trg_prompt} for p in presets
        },
        "methods": list(cfg.methods),
        "means": {p: {m: r["means"] for m, r in per.items()} for p, per in results.items()},
        "runs": runs,
    }
    (cfg.output_dir / "comparison.json").write_text(json.dumps(summary, indent=1))
    return {"table": table, "results": results, "runs": runs}


def entrypoint() -> None:
    """Console entry point."""
    cfg, result = run_console("ids-batch", BatchConfig, run, __doc__)
    print(result["table"])
    print(f"wrote {cfg.output_dir / 'comparison.md'} and {cfg.output_dir / 'comparison.json'}")


if __name__ == "__main__":
    entrypoint()

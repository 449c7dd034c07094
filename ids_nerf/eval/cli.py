"""ids-eval: score edits with CLIP, LPIPS, background PSNR, IoU and depth change; compare runs.

  ids-eval render --load-config outputs/fern/ids-edit/<ts>/config.yml \\
      --source-config outputs/fern/ids-recon/<ts>/config.yml \\
      --src-prompt "a photo of a fern" --trg-prompt "a photo of a fern made of gold"
  ids-eval images --source cats/ --edited pigs/ --src-prompt "a photo of a cat" --trg-prompt "a photo of a pig"
  ids-eval compare runA/eval-test/metrics.json runB/eval-test/metrics.json

Each evaluation writes metrics.json (per view, per pair of neighbouring views, means, the options, model and
package versions), metrics.md, contact_sheet.png and, with --video, an animation of the views.
"""

from __future__ import annotations

import datetime
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

import ids_nerf.eval as eval_pkg
from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError

RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS (--random-weights): the CLIP network and the LPIPS backbone have random weights, so every CLIP "
    "and LPIPS number here is NOT meaningful; this run only checks that the pipeline works offline."
)


@dataclass(kw_only=True)
class EvalOptions:
    """Options shared by ``render`` and ``images``."""

    src_prompt: str
    """Prompt describing the source (used by clip_direction), e.g. "a photo of a cat"."""
    trg_prompt: str
    """Prompt describing the edit (clip_text, clip_direction), e.g. "a photo of a pig"."""
    output_dir: Path | None = None
    """Output folder. Default: <edited run>/eval-<split> (render) or <edited folder>-eval beside it (images).
    An existing non-empty folder is refused unless --overwrite."""
    name: str | None = None
    """Row label of this run in tables (default: the edited run's <method>/<timestamp>, or the edited folder's name)."""
    clip_model: str = "ViT-L-14"
    """open_clip architecture (open_clip.list_models()) or hf-hub:org/repo."""
    clip_pretrained: str = "openai"
    """open_clip pretrained tag, or a local checkpoint file (state dict). For OpenAI weights from a local file use
    the -quickgelu architecture, e.g. --clip-model ViT-L-14-quickgelu."""
    clip_cache_dir: Path | None = None
    """Download cache of open_clip / Hugging Face (default: HF_HOME, i.e. ~/.cache/huggingface)."""
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    """LPIPS backbone (the lpips package's v0.1 heads); its ImageNet weights come from TORCH_HOME."""
    random_weights: bool = False
    """Use random-weight CLIP and LPIPS backbones (offline smoke tests only; the output is marked NOT meaningful)."""
    skip_missing: bool = False
    """When a network's weights are unavailable, report its metrics as null (with the reason) instead of failing."""
    bg_window: int = 30
    """Window (pixels) of the per-pixel standard deviation of the residual for bg_psnr (IDS: 30)."""
    bg_threshold: Literal["mean", "median"] = "mean"
    """bg_psnr mask: sigma <= mean(sigma) (IDS Table 1) or <= its lower median."""
    bg_psnr_average: Literal["mask", "image"] = "mask"
    """bg_psnr MSE over the masked pixels (mask), or over all pixels of the masked images (image: the paper's
    PSNR(M * src, M * edit) read literally)."""
    device: str = "auto"
    """Device of the CLIP and LPIPS networks: auto (CUDA when available), cpu, cuda, cuda:N."""
    video: bool = False
    """Also write an animation of the views in evaluation order (source | edit | depth | |difference|) and, for
    `render`, orbit.mp4: a smooth camera path through the training views rendered by the source and the edited run
    side by side."""
    video_format: Literal["gif", "mp4"] = "mp4"
    """Format of the views animation: mp4 (imageio-ffmpeg, installed with ids_nerf) or gif (Pillow)."""
    video_fps: float = 4.0
    """Frames per second of the animation."""
    contact_sheet_max_views: int = 16
    """Rows of contact_sheet.png at most (views evenly spread)."""
    diff_gain: float = 4.0
    """Gain of the |edit - source| panel of the contact sheet."""
    overwrite: bool = False
    """Write into an existing non-empty output folder (replacing ids-eval's files there)."""
    progress: bool = True
    """Show progress bars."""


@dataclass(kw_only=True)
class RenderOptions(EvalOptions):
    """Render an edited nerfstudio run (and its source run) with depth, each with the newest checkpoint of the
    nerfstudio_models/ folder next to its config.yml (printed, and recorded in metrics.json), then score it.
    Metric definitions: ids-eval --help."""

    load_config: Path
    """config.yml of the edited run (outputs/<scene>/<method>/<timestamp>/config.yml); the run is scored with the
    newest checkpoint in the nerfstudio_models/ folder next to it (also for a run folder copied elsewhere)."""
    source_config: Path | None = None
    """config.yml of the source (reconstruction) run: its renders are the source views and give depth_change.
    Without it the source views are the dataset's original photos and depth_change is null."""
    split: Literal["test", "val", "train", "all"] = "test"
    """Cameras to render: the evaluation cameras (test), val, train, or all (train + test, by file name)."""
    data: Path | None = None
    """Override the runs' data folder (when the runs were trained from another working directory)."""
    orbit_keyframes: int = 8
    """--video: training views the orbit passes through (evenly spread, ordered as `ns-render interpolate` does)."""
    orbit_steps: int = 12
    """--video: interpolated frames between neighbouring keyframes of the orbit."""
    orbit_fps: float = 24.0
    """--video: frames per second of orbit.mp4."""


@dataclass(kw_only=True)
class ImagesOptions(EvalOptions):
    """Score 2D results: folders of source and edited images, paired by file name (without extension).
    Metric definitions: ids-eval --help."""

    source: Path
    """Folder of the source images."""
    edited: Path
    """Folder of the edited images (same file names; any image format; other sizes are resized to the source's)."""
    masks_source: Path | None = None
    """Folder of object masks of the source images (same names; white = object) for iou."""
    masks_edited: Path | None = None
    """Folder of object masks of the edited images for iou."""


@dataclass
class CompareOptions:
    """Print a side-by-side table of several evaluations (rows = runs, columns = metric means)."""

    metrics: tyro.conf.Positional[tuple[Path, ...]]
    """metrics.json files written by ids-eval, or the folders holding them."""
    labels: tuple[str, ...] = ()
    """Row labels, one per run (default: each run's name)."""
    out: Path | None = None
    """Also write the table to this Markdown file (refused if it exists, unless --overwrite)."""
    overwrite: bool = False
    """Replace --out if it exists."""


Command = (
    Annotated[RenderOptions, tyro.conf.subcommand("render")]
    | Annotated[ImagesOptions, tyro.conf.subcommand("images")]
    | Annotated[CompareOptions, tyro.conf.subcommand("compare")]
)


def definitions() -> str:
    """The exact metric definitions (from the docstring of :mod:`ids_nerf.eval`), as printed by --help."""
    return (eval_pkg.__doc__ or "").split("Metric definitions", 1)[-1].split("\n", 1)[-1].strip("\n")


# ------------------------------------------------------------------------------------------------------ checks


def _validate(cfg: EvalOptions) -> None:
    if not cfg.src_prompt.strip():
        raise UserInputError('--src-prompt is empty: describe the source, e.g. "a photo of a cat".')
    if not cfg.trg_prompt.strip():
        raise UserInputError('--trg-prompt is empty: describe the edit, e.g. "a photo of a pig".')
    if cfg.src_prompt.strip() == cfg.trg_prompt.strip():
        raise UserInputError("--src-prompt and --trg-prompt are identical: clip_direction would be undefined.")
    if cfg.bg_window < 1:
        raise UserInputError(f"--bg-window must be >= 1 (got {cfg.bg_window}).")
    if cfg.video_fps <= 0:
        raise UserInputError(f"--video-fps must be > 0 (got {cfg.video_fps}).")
    if cfg.contact_sheet_max_views < 1:
        raise UserInputError(f"--contact-sheet-max-views must be >= 1 (got {cfg.contact_sheet_max_views}).")
    if isinstance(cfg, RenderOptions) and (cfg.orbit_keyframes < 2 or cfg.orbit_steps < 1 or cfg.orbit_fps <= 0):
        raise UserInputError(
            f"--orbit-keyframes must be >= 2, --orbit-steps >= 1 and --orbit-fps > 0 (got {cfg.orbit_keyframes}, "
            f"{cfg.orbit_steps}, {cfg.orbit_fps})."
        )
    if cfg.video and (cfg.video_format == "mp4" or isinstance(cfg, RenderOptions)):
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise UserInputError(
                "--video needs the imageio-ffmpeg package for MP4 (pip install imageio-ffmpeg; bash scripts/setup.sh "
                "installs it); for the views animation alone, ids-eval images --video-format gif works without it."
            ) from None


def _output_dir(cfg: EvalOptions) -> Path:
    if cfg.output_dir is not None:
        out = cfg.output_dir
    elif isinstance(cfg, RenderOptions):
        out = cfg.load_config.parent / f"eval-{cfg.split}"
    else:
        assert isinstance(cfg, ImagesOptions)
        edited = cfg.edited.resolve()
        out = edited.parent / f"{edited.name}-eval"
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--output-dir {out} is a file; pass a folder.")
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise UserInputError(
            f"output folder {out} already exists and is not empty; pass --overwrite to replace ids-eval's files "
            "there, or --output-dir to choose another folder."
        )
    return out


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available here; use --device cpu.")
    return name


def _versions(render: bool) -> dict:
    names = ["ids_nerf", "torch", "open_clip_torch", "lpips", "numpy", "pillow"] + (["nerfstudio"] if render else [])
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


# ------------------------------------------------------------------------------------------------------ metrics


def _load_models(cfg: EvalOptions, device: str, unavailable: dict[str, str]):
    """(clip, lpips) networks; None for one whose weights are missing with --skip-missing (reason recorded)."""
    from ids_nerf.eval.clip_metrics import WeightsUnavailableError, load_clip
    from ids_nerf.eval.preservation import LpipsMetric

    clip = lp = None
    try:
        clip = load_clip(
            cfg.clip_model,
            cfg.clip_pretrained,
            random_weights=cfg.random_weights,
            cache_dir=str(cfg.clip_cache_dir) if cfg.clip_cache_dir else None,
            device=device,
        )
    except WeightsUnavailableError as err:
        if not cfg.skip_missing:
            raise
        for key in ("clip_text", "clip_direction", "clip_image", "clip_consistency", "clip_edit_consistency"):
            unavailable[key] = str(err)
    try:
        lp = LpipsMetric(cfg.lpips_net, random_backbone=cfg.random_weights, device=device)
    except WeightsUnavailableError as err:
        if not cfg.skip_missing:
            raise
        unavailable["lpips"] = str(err)
    return clip, lp


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def compute_metrics(views, clip, lpips_metric, cfg: EvalOptions, unavailable: dict[str, str]):
    """Per-view records, per-pair records, means and counts of every metric (None where not computable), and the
    bg_psnr masks."""
    from ids_nerf.eval import clip_metrics as cm
    from ids_nerf.eval.preservation import background_psnr, depth_change, mask_iou
    from ids_nerf.eval.report import METRICS, PAIR_METRICS
    from ids_nerf.eval.sources import progress_bar

    n = len(views.names)
    records: list[dict] = [{"name": name} for name in views.names]
    pairs: list[dict] = [{"views": [views.names[k], views.names[k + 1]]} for k in range(n - 1)]
    if clip is not None:
        e_src, e_edit = clip.encode_images(views.source), clip.encode_images(views.edit)
        t_src, t_trg = clip.encode_texts([cfg.src_prompt, cfg.trg_prompt])
        per_view = {
            "clip_text": cm.text_image_similarity(e_edit, t_trg),
            "clip_direction": cm.directional_similarity(e_src, e_edit, t_src, t_trg),
            "clip_image": cm.image_similarity(e_src, e_edit),
        }
        per_pair = {
            "clip_consistency": cm.direction_consistency(e_src, e_edit),
            "clip_edit_consistency": cm.edit_consistency(e_src, e_edit),
        }
        for key, values in per_view.items():
            for rec, v in zip(records, values.tolist(), strict=True):
                rec[key] = v
        for key, values in per_pair.items():
            for rec, v in zip(pairs, values.tolist(), strict=True):
                rec[key] = v
        if n < 2:
            for key in PAIR_METRICS:
                unavailable.setdefault(key, "needs at least 2 views")
    has_masks = views.mask_source is not None and views.mask_edit is not None
    if not has_masks:
        unavailable.setdefault("iou", "no object masks (images mode: --masks-source and --masks-edited)")
    has_depth = views.depth_source is not None and views.depth_edit is not None
    if not has_depth:
        why = "needs --source-config (renders of the source run)" if views.depth_edit else "render mode only"
        unavailable.setdefault("depth_change", why)
        unavailable.setdefault("depth_change_all", why)
    bg_masks = []
    for k in progress_bar(range(n), cfg.progress, "metrics", total=n):
        rec, src, edit = records[k], views.source[k], views.edit[k]
        if lpips_metric is not None:
            rec["lpips"] = lpips_metric(src, edit)
        bg = background_psnr(src, edit, cfg.bg_window, cfg.bg_threshold, cfg.bg_psnr_average)
        rec["bg_psnr"], rec["bg_fraction"] = bg.psnr, bg.fraction
        bg_masks.append(bg.mask)
        if has_masks and views.mask_source[k] is not None and views.mask_edit[k] is not None:
            rec["iou"] = mask_iou(views.mask_source[k], views.mask_edit[k])
        if has_depth:
            rec["depth_change"] = depth_change(views.depth_source[k], views.depth_edit[k], bg.mask)
            rec["depth_change_all"] = depth_change(views.depth_source[k], views.depth_edit[k])
    for rec in records:
        for key, _, _ in METRICS:
            if key not in PAIR_METRICS:
                rec.setdefault(key, None)
    for rec in pairs:
        for key in PAIR_METRICS:
            rec.setdefault(key, None)
    means = {key: _mean([r[key] for r in (pairs if key in PAIR_METRICS else records)]) for key, _, _ in METRICS}
    counts = {
        key: sum(r[key] is not None for r in (pairs if key in PAIR_METRICS else records)) for key, _, _ in METRICS
    }
    return records, pairs, means, counts, bg_masks


# ------------------------------------------------------------------------------------------------------ outputs


def _file_name(view: str) -> str:
    return view.replace("/", "__")


def _save_renders(views, out: Path) -> None:
    import numpy as np
    from PIL import Image

    for sub, images in (("source", views.source), ("edit", views.edit)):
        (out / "renders" / sub).mkdir(parents=True, exist_ok=True)
        for name, img in zip(views.names, images, strict=True):
            arr = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
            Image.fromarray(arr).save(out / "renders" / sub / f"{_file_name(name)}.png")
    for sub, depths in (("depth_source", views.depth_source), ("depth_edit", views.depth_edit)):
        if depths is None:
            continue
        (out / "renders" / sub).mkdir(parents=True, exist_ok=True)
        for name, d in zip(views.names, depths, strict=True):
            np.save(out / "renders" / sub / f"{_file_name(name)}.npy", d.astype(np.float32))


def evaluate(cfg: RenderOptions | ImagesOptions) -> dict:
    """Run one evaluation end to end; returns the metrics.json record (with the written paths under "outputs")."""
    from ids_nerf.eval import report, sources

    t0 = time.perf_counter()
    render = isinstance(cfg, RenderOptions)
    _validate(cfg)
    unavailable: dict[str, str] = {}
    if render:  # cheap checks, then the networks (fail fast on missing weights), then the slow renders
        sources.check_run(cfg.load_config, "--load-config", cfg.data, cfg.split)
        if cfg.source_config is not None:
            sources.check_run(cfg.source_config, "--source-config", cfg.data, cfg.split)
        elif cfg.video and (inferred := orbit_source(cfg)) is not None:
            sources.check_run(inferred, ORBIT_SOURCE_FLAG, cfg.data, "test")
        out = _output_dir(cfg)
        clip, lp = _load_models(cfg, _device(cfg.device), unavailable)
        views = sources.load_render_views(cfg.load_config, cfg.source_config, cfg.split, cfg.data, cfg.progress)
        run = views.provenance["edited_run"]
        name = cfg.name or f"{run['method']}/{Path(run['config']).parent.name}"
    else:  # reading images is cheap: every bad file is reported before a network loads
        out = _output_dir(cfg)
        views = sources.load_image_folders(cfg.source, cfg.edited, cfg.masks_source, cfg.masks_edited, cfg.progress)
        clip, lp = _load_models(cfg, _device(cfg.device), unavailable)
        name = cfg.name or cfg.edited.resolve().name
    records, pairs, means, counts, bg_masks = compute_metrics(views, clip, lp, cfg, unavailable)

    out.mkdir(parents=True, exist_ok=True)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    record = {
        "tool": "ids-eval",
        "mode": "render" if render else "images",
        "name": name,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "src_prompt": cfg.src_prompt,
        "trg_prompt": cfg.trg_prompt,
        "random_weights": cfg.random_weights,
        "warning": RANDOM_WEIGHTS_WARNING if cfg.random_weights else None,
        "source_kind": views.provenance["source"] if render else "source images (--source)",
        "models": {
            "clip": asdict(clip.info) if clip is not None else {"model": cfg.clip_model, "loaded": False},
            "lpips": {
                "net": cfg.lpips_net,
                "version": "0.1",
                "random_backbone": cfg.random_weights,
                "loaded": lp is not None,
            },
            "device": _device(cfg.device),
        },
        "means": means,
        "counts": counts,
        "unavailable": {k: v for k, v in unavailable.items() if means.get(k) is None},
        "views": records,
        "pairs": pairs,
        "notes": views.notes,
        "provenance": views.provenance,
        "options": options,
        "versions": _versions(render),
        "definitions": definitions(),
    }
    outputs = {"json": out / "metrics.json", "markdown": out / "metrics.md", "contact_sheet": out / "contact_sheet.png"}
    if render:
        _save_renders(views, out)
        outputs["renders"] = out / "renders"
    report.contact_sheet(views, outputs["contact_sheet"], records, cfg.contact_sheet_max_views, cfg.diff_gain, bg_masks)
    if cfg.video:
        outputs["video"] = out / f"views.{cfg.video_format}"
        report.write_video(views, outputs["video"], cfg.video_fps, cfg.diff_gain)
        if render:
            assert isinstance(cfg, RenderOptions)
            outputs["orbit"] = out / "orbit.mp4"
            record["orbit"] = write_orbit(cfg, outputs["orbit"])
    record["outputs"] = {k: str(v) for k, v in outputs.items()}
    record["seconds"] = time.perf_counter() - t0
    outputs["markdown"].write_text(report.markdown_report(record))
    report.write_json(outputs["json"], record)
    return record


ORBIT_SOURCE_FLAG = "--video (source run of the orbit, from the edit's source checkpoint)"
"""How errors name the orbit's source run when it was not given with --source-config."""


def orbit_source(cfg: RenderOptions) -> Path | None:
    """The source run of the orbit: --source-config, else the run of the checkpoint the edit started from (its
    ``pipeline.source_checkpoint``, which a resumed edit keeps; for runs that lack it, its --load-dir), if any."""
    if cfg.source_config is not None:
        return cfg.source_config
    from ids_nerf.nerf.runs import read_run_config

    edited = read_run_config(cfg.load_config)
    checkpoint = getattr(getattr(edited, "pipeline", None), "source_checkpoint", None)
    load_dir = getattr(edited, "load_dir", None)
    models = Path(checkpoint).parent if checkpoint is not None else Path(load_dir) if load_dir is not None else None
    candidate = models.parent / "config.yml" if models is not None else None
    return candidate if candidate is not None and candidate.is_file() else None


def write_orbit(cfg: RenderOptions, path: Path) -> dict[str, Any]:
    """Render and write orbit.mp4 (source | edit, or the edit alone when no source run is known)."""
    from ids_nerf.eval import orbit

    source = orbit_source(cfg)
    flag = "--source-config" if cfg.source_config is not None else ORBIT_SOURCE_FLAG
    edit_frames, source_frames, checkpoints = orbit.render_orbit(
        (cfg.load_config, "--load-config"),
        (source, flag) if source is not None else None,
        cfg.orbit_keyframes,
        cfg.orbit_steps,
        cfg.progress,
        cfg.data,
    )
    if source_frames is None:
        frames = [orbit.labelled_row([(e, "edit (no source run known: pass --source-config)")]) for e in edit_frames]
    else:
        pairs = zip(source_frames, edit_frames, strict=True)
        frames = [orbit.labelled_row([(s, "source"), (e, "edit")]) for s, e in pairs]
    orbit.write_mp4(frames, path, cfg.orbit_fps)
    return {
        "frames": len(frames),
        "fps": cfg.orbit_fps,
        "source_run": str(source) if source is not None else None,
        "checkpoints": checkpoints,
    }


def compare(cfg: CompareOptions) -> str:
    """The comparison table of ``cfg.metrics`` (also written to ``cfg.out``)."""
    from ids_nerf.eval.report import compare_table, load_metrics

    if not cfg.metrics:
        raise UserInputError(
            "compare: pass at least one metrics.json (ids-eval compare a/metrics.json b/metrics.json)."
        )
    if cfg.out is not None and cfg.out.exists() and not cfg.overwrite:
        raise UserInputError(f"--out {cfg.out} already exists; pass --overwrite or another path.")
    table = compare_table([load_metrics(p) for p in cfg.metrics], cfg.labels or None)
    if cfg.out is not None:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(table + "\n")
    return table


def run(cmd: Any) -> str:
    """Run a parsed ``ids-eval`` command; returns what the console shows. Raises UserError on bad input."""
    if isinstance(cmd, CompareOptions):
        return compare(cmd)
    record = evaluate(cmd)
    from ids_nerf.eval.report import compare_table

    lines = [compare_table([record])]
    grouped: dict[str, list[str]] = {}
    for key, why in record["unavailable"].items():
        grouped.setdefault(why, []).append(key)
    lines += [f"not computed: {', '.join(keys)}: {why}" for why, keys in grouped.items()]
    if record["mode"] == "render":
        for role, flag in (("edited_run", "--load-config"), ("source_run", "--source-config")):
            run_info = record["provenance"].get(role)
            if run_info:
                lines.append(f"checkpoint ({flag}): {run_info['checkpoint']} (step {run_info['step']})")
    lines.append(f"ids-eval: wrote {Path(record['outputs']['json']).parent} ({record['seconds']:.1f} s)")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> int:
    """Parse ``args`` (default: sys.argv), run, print the result; returns the exit code (2 for user errors)."""
    try:
        _, text = run_console("ids-eval", Command, run, f"{__doc__}\nMetrics:\n\n{definitions()}", args=args)
    except SystemExit as exit_:  # user errors: the one error path printed the paragraph
        return int(exit_.code or 0)
    print(text)
    return 0


def entrypoint() -> None:
    """Console script ``ids-eval``."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()

"""Reports of ids-eval: metrics.json, a Markdown table, a contact sheet PNG, an optional GIF/MP4, and the table
comparing several runs (rows = runs, columns = metrics, the shape of IDS Table 3)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ids_nerf.errors import UserInputError

METRICS: tuple[tuple[str, str, str], ...] = (
    ("clip_text", "CLIP text-image", "↑"),
    ("clip_direction", "CLIP direction", "↑"),
    ("clip_image", "CLIP image-image", "↑"),
    ("clip_consistency", "CLIP consistency", "↑"),
    ("clip_edit_consistency", "CLIP edit consistency", "↑"),
    ("lpips", "LPIPS", "↓"),
    ("bg_psnr", "BG PSNR (dB)", "↑"),
    ("bg_fraction", "BG fraction", ""),
    ("iou", "IoU", "↑"),
    ("depth_change", "depth change (bg)", "↓"),
    ("depth_change_all", "depth change (all)", ""),
)
"""(key, column title, better direction) of every metric, in table order."""

PAIR_METRICS = ("clip_consistency", "clip_edit_consistency")
"""Metrics defined on pairs of neighbouring views rather than on single views."""


def jsonable(obj: Any) -> Any:
    """Recursively convert numpy/torch scalars, Paths and tuples to JSON types; NaN and inf become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def write_json(path: Path, record: dict) -> None:
    """Write ``record`` as indented, strict JSON."""
    path.write_text(json.dumps(jsonable(record), indent=1, allow_nan=False) + "\n")


def format_value(value: float | None, key: str) -> str:
    """Table cell: n/a for None, 2 decimals for dB, 4 otherwise."""
    if value is None:
        return "n/a"
    return f"{value:.2f}" if key == "bg_psnr" else f"{value:.4f}"


def load_metrics(path: Path) -> dict:
    """Read a metrics.json written by ids-eval (or the folder holding one) for ``compare``."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise UserInputError(f"compare: {path} not found; pass metrics.json files written by ids-eval (or folders).")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise UserInputError(f"compare: {path} is not readable JSON ({err}).") from None
    if not isinstance(record, dict) or record.get("tool") != "ids-eval" or not isinstance(record.get("means"), dict):
        raise UserInputError(f"compare: {path} was not written by ids-eval (no 'tool': 'ids-eval' and 'means').")
    record.setdefault("name", path.parent.name)
    return record


def compare_table(records: Sequence[dict], labels: Sequence[str] | None = None) -> str:
    """Markdown table: one row per run (label), one column per metric any run has a value for (means)."""
    labels = list(labels) if labels else [str(r.get("name", f"run{k}")) for k, r in enumerate(records)]
    if len(labels) != len(records):
        raise UserInputError(f"compare: {len(labels)} --labels for {len(records)} runs; give one label per run.")
    keys = [m for m in METRICS if any(r["means"].get(m[0]) is not None for r in records)]
    keys += [
        (k, k, "")
        for k in sorted({k for r in records for k, v in r["means"].items() if v is not None})
        if k not in {m[0] for m in METRICS}
    ]
    header = "| run | " + " | ".join(f"{title} {arrow}".strip() for _, title, arrow in keys) + " | views |"
    lines = [header, "|" + "---|" * (len(keys) + 2)]
    random_rows = False
    for label, r in zip(labels, records, strict=True):
        mark = " †" if r.get("random_weights") else ""
        random_rows |= bool(mark)
        cells = [format_value(r["means"].get(k), k) for k, _, _ in keys]
        lines.append(f"| {label}{mark} | " + " | ".join(cells) + f" | {len(r.get('views', []))} |")
    if random_rows:
        lines.append("")
        lines.append("† random-weight networks (--random-weights): numbers are NOT meaningful (offline smoke test).")
    models = {json.dumps(r.get("models", {}).get("clip", {}).get("model")) for r in records}
    if len(models) > 1:
        lines.append("")
        lines.append(f"Note: the runs used different CLIP models ({', '.join(sorted(models))}); CLIP columns differ.")
    return "\n".join(lines)


def markdown_report(record: dict) -> str:
    """metrics.md: summary row (same columns as ``compare``), per-view and per-pair tables, unavailable metrics."""
    lines = [f"# ids-eval {record['mode']}: {record['name']}", ""]
    if record.get("random_weights"):
        lines += [f"**{record['warning']}**", ""]
    clip = record.get("models", {}).get("clip", {})
    lines += [
        f"- source prompt: `{record['src_prompt']}`; target prompt: `{record['trg_prompt']}`",
        f"- CLIP: {clip.get('model')} / {clip.get('pretrained')}; LPIPS: {record['models']['lpips'].get('net')}",
        f"- source views: {record.get('source_kind', '')}; {len(record['views'])} views",
        "",
        "## Means",
        "",
        compare_table([record]),
        "",
        "## Per view",
        "",
    ]
    keys = [m for m in METRICS if m[0] not in PAIR_METRICS and any(v.get(m[0]) is not None for v in record["views"])]
    lines.append("| view | " + " | ".join(f"{t} {a}".strip() for _, t, a in keys) + " |")
    lines.append("|" + "---|" * (len(keys) + 1))
    for v in record["views"]:
        lines.append(f"| {v['name']} | " + " | ".join(format_value(v.get(k), k) for k, _, _ in keys) + " |")
    if record.get("pairs"):
        lines += ["", "## Neighbouring views", "", "| views | CLIP consistency ↑ | CLIP edit consistency ↑ |"]
        lines.append("|---|---|---|")
        for p in record["pairs"]:
            cells = " | ".join(format_value(p.get(k), k) for k in PAIR_METRICS)
            lines.append(f"| {p['views'][0]} → {p['views'][1]} | {cells} |")
    if record.get("unavailable"):
        lines += ["", "## Not computed", ""]
        lines += [f"- {k}: {why}" for k, why in record["unavailable"].items()]
    if record.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in record["notes"]]
    lines += ["", "Definitions: `ids-eval --help` (also in metrics.json under `definitions`)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ pictures


def depth_to_rgb(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) turbo colours, ``lo`` .. ``hi`` mapped to 0 .. 1 (near = blue)."""
    from matplotlib import colormaps

    t = np.clip((depth - lo) / max(hi - lo, 1e-12), 0, 1)
    t = np.where(np.isfinite(t), t, 0.0)
    return colormaps["turbo"](t)[..., :3].astype(np.float32)


def view_panels(views, k: int, diff_gain: float, bg_mask: np.ndarray | None = None) -> list[tuple[str, np.ndarray]]:
    """(title, image) panels of view ``k``: source | edit | [depth source] | [depth edit] | |edit - source| |
    [bg_psnr mask (white = background)]."""
    panels = [("source", views.source[k]), ("edit", views.edit[k])]
    depths = [("depth source", views.depth_source), ("depth edit", views.depth_edit)]
    present = [(t, d[k]) for t, d in depths if d is not None and d[k] is not None]
    if present:
        values = np.concatenate([d[np.isfinite(d)].ravel() for _, d in present])
        lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        panels += [(t, depth_to_rgb(d, float(lo), float(hi))) for t, d in present]
    diff = np.abs(views.edit[k] - views.source[k]).mean(-1, keepdims=True)
    panels.append((f"|edit - source| x{diff_gain:g}", np.repeat(np.clip(diff * diff_gain, 0, 1), 3, -1)))
    if bg_mask is not None:
        panels.append(("bg_psnr mask", np.repeat(bg_mask[..., None].astype(np.float32), 3, -1)))
    return panels


def _to_pil(img: np.ndarray, height: int):
    from PIL import Image

    pil = Image.fromarray((np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8))
    width = max(1, round(pil.width * height / pil.height))
    resample = Image.Resampling.NEAREST if pil.height < height else Image.Resampling.LANCZOS
    return pil.resize((width, height), resample) if pil.size != (width, height) else pil


def view_row(views, k: int, diff_gain: float, height: int, caption: str = "", bg_mask: np.ndarray | None = None):
    """One row of the contact sheet (also one video frame): a caption line over the view's panels."""
    from PIL import Image, ImageDraw

    panels = [(title, _to_pil(img, height)) for title, img in view_panels(views, k, diff_gain, bg_mask)]
    text_h, gap = 14, 2
    width = sum(p.width for _, p in panels) + gap * (len(panels) - 1)
    row = Image.new("RGB", (width, 2 * text_h + height), (255, 255, 255))
    draw = ImageDraw.Draw(row)
    draw.text((2, 1), f"{views.names[k]}  {caption}".strip(), fill=(0, 0, 0))
    x = 0
    for title, pil in panels:
        draw.text((x + 2, text_h + 1), title, fill=(80, 80, 80))
        row.paste(pil, (x, 2 * text_h))
        x += pil.width + gap
    return row


def _frame_height(views) -> int:
    return int(np.clip(views.source[0].shape[0], 128, 256))


def _caption(record: dict | None) -> str:
    if not record:
        return ""
    parts = [
        f"{key}={format_value(record.get(key), key)}"
        for key in ("clip_text", "clip_direction", "lpips", "bg_psnr")
        if record.get(key) is not None
    ]
    return "  ".join(parts)


def contact_sheet(
    views,
    path: Path,
    records: Sequence[dict] | None = None,
    max_views: int = 16,
    diff_gain: float = 4.0,
    bg_masks: Sequence[np.ndarray] | None = None,
) -> list[int]:
    """Write the contact sheet PNG (one row per view, at most ``max_views`` evenly spread); returns the rows used.

    Columns: source | edit | depth source | depth edit (render mode; turbo colours, 2-98 % range of the view's
    depths) | |edit - source| (RGB mean, times ``diff_gain``) | the bg_psnr mask (white = counted as background).
    """
    from PIL import Image

    n = len(views.names)
    chosen = sorted({round(i) for i in np.linspace(0, n - 1, min(n, max(1, max_views)))})
    height = _frame_height(views)
    rows = [
        view_row(
            views, k, diff_gain, height, _caption(records[k] if records else None), bg_masks[k] if bg_masks else None
        )
        for k in chosen
    ]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height + 4 for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 4
    sheet.save(path)
    return chosen


def write_video(views, path: Path, fps: float = 4.0, diff_gain: float = 4.0) -> None:
    """The views in evaluation order as an animation: GIF (Pillow) or MP4 (imageio + imageio-ffmpeg)."""
    from PIL import Image

    height = _frame_height(views)
    frames = [view_row(views, k, diff_gain, height) for k in range(len(views.names))]
    width = max(f.width for f in frames)
    width += width % 2  # even sizes for H.264
    padded = []
    for f in frames:
        canvas = Image.new("RGB", (width, f.height + f.height % 2), (255, 255, 255))
        canvas.paste(f, (0, 0))
        padded.append(canvas)
    if path.suffix.lower() == ".gif":
        duration = max(20, round(1000.0 / fps))
        padded[0].save(path, save_all=True, append_images=padded[1:], duration=duration, loop=0)
        return
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
        for f in padded:
            writer.append_data(np.asarray(f))

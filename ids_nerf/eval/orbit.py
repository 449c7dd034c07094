"""An orbit video of an edit: a smooth camera path through the training views (as ``ns-render interpolate``), rendered
by the source and the edited run, side by side, written as MP4 (imageio + imageio-ffmpeg).

The path is built from the edited run's training cameras: ``keyframes`` of them, evenly spread, ordered by
nerfstudio's pose ordering, ``steps`` interpolated poses between neighbours
(:func:`nerfstudio.cameras.camera_paths.get_interpolated_camera_path`). Both runs render the same poses, so the
source run must share the edited run's scene frame (an edit of that reconstruction does).
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import torch

from ids_nerf.eval.sources import progress_bar


def orbit_cameras(cameras, keyframes: int, steps: int):
    """The interpolated path through ``keyframes`` evenly spread cameras of ``cameras`` (nerfstudio ``Cameras``)."""
    from nerfstudio.cameras.camera_paths import get_interpolated_camera_path

    n = len(cameras)
    index = torch.linspace(0, n - 1, min(keyframes, n)).round().long().unique()
    return get_interpolated_camera_path(cameras[index], steps=steps, order_poses=True)


def _load(config_path: Path, flag: str, data: Path | None):
    from ids_nerf.eval.sources import load_run

    _, pipeline, checkpoint, _ = load_run(Path(config_path), flag, data, "test")
    return pipeline, checkpoint


def _render(pipeline, path, progress: bool, desc: str) -> list[np.ndarray]:
    frames = []
    for i in progress_bar(range(len(path)), progress, desc, total=len(path)):
        with torch.no_grad():
            out = pipeline.model.get_outputs_for_camera(path[i : i + 1].to(pipeline.device))
        frames.append(out["rgb"].clamp(0, 1).float().cpu().numpy())
    return frames


def render_orbit(
    edited: tuple[Path, str],
    source: tuple[Path, str] | None,
    keyframes: int,
    steps: int,
    progress: bool = True,
    data: Path | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray] | None, dict[str, str]]:
    """Renders of the orbit (:func:`orbit_cameras` of the edited run's training cameras) by the edited run and, if
    given, the source run; each run is ``(config.yml, the flag it was given with)`` and is loaded with its own newest
    checkpoint (:func:`ids_nerf.eval.sources.load_run`, ``data``: --data). One pipeline is in memory at a time.

    Returns:
        the edited run's frames, the source run's (or None), and the checkpoint used of each ("edit", "source").
    """
    pipeline, checkpoint = _load(*edited, data)
    checkpoints = {"edit": str(checkpoint)}
    path = orbit_cameras(pipeline.datamanager.train_dataset.cameras, keyframes, steps)
    edit_frames = _render(pipeline, path, progress, "orbit (edited run)")
    del pipeline
    gc.collect()
    source_frames = None
    if source is not None:
        pipeline, checkpoint = _load(*source, data)
        checkpoints["source"] = str(checkpoint)
        source_frames = _render(pipeline, path, progress, "orbit (source run)")
        del pipeline
        gc.collect()
    return edit_frames, source_frames, checkpoints


def labelled_row(panels: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """One frame: the (H, W, 3) [0, 1] images side by side under their labels, uint8, padded to even sizes (H.264)."""
    from PIL import Image, ImageDraw

    caption, gap = 14, 4
    h = max(img.shape[0] for img, _ in panels)
    canvas = Image.new("RGB", (sum(img.shape[1] for img, _ in panels) + gap * (len(panels) - 1), h + caption), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for img, label in panels:
        canvas.paste(Image.fromarray((img * 255 + 0.5).astype(np.uint8)), (x, caption))
        draw.text((x + 2, 1), label, fill=(0, 0, 0))
        x += img.shape[1] + gap
    arr = np.asarray(canvas)
    return np.pad(arr, ((0, arr.shape[0] % 2), (0, arr.shape[1] % 2), (0, 0)), constant_values=255)


def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """uint8 frames (H, W, 3) as an H.264 MP4."""
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)

"""Where the views come from: folders of images (2D results), or renders of nerfstudio runs.

Runs are loaded as nerfstudio's ``eval_setup`` (``ns-eval``, ``ns-render``) loads them, the pipeline built from the
run's config.yml, so an ids-edit run never loads its diffusion prior here; but always with the newest checkpoint of
the ``nerfstudio_models/`` folder next to the given config.yml (a copied run is evaluated, not the run it was copied
from), checked first, and named on the console and in metrics.json. Views of two runs, and files of two
folders, are paired by name. Every bad input raises :class:`~ids_nerf.errors.UserInputError` with the fix.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ids_nerf.errors import UserInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
"""File extensions read from image folders (case-insensitive)."""

Split = Literal["test", "val", "train", "all"]


@dataclass
class Views:
    """Paired source/edited views (and optional depths and masks), in evaluation order."""

    names: list[str]
    """View names (file stems, or run-relative image paths without extension)."""
    source: list[np.ndarray]
    """(H, W, 3) float32 source views in [0, 1]."""
    edit: list[np.ndarray]
    """(H, W, 3) float32 edited views in [0, 1], same size as the source views."""
    depth_source: list[np.ndarray] | None = None
    """(H, W) depths of the source run (render mode with --source-config)."""
    depth_edit: list[np.ndarray] | None = None
    """(H, W) depths of the edited run (render mode)."""
    mask_source: list[np.ndarray | None] | None = None
    """(H, W) bool object masks of the source views (None for a view without a mask file)."""
    mask_edit: list[np.ndarray | None] | None = None
    """(H, W) bool object masks of the edited views."""
    notes: list[str] = field(default_factory=list)
    """Things the report should mention (resized views, unpaired files, ...)."""
    provenance: dict = field(default_factory=dict)
    """Where the views came from (folders, runs, checkpoints, steps), for the JSON."""


def natural_key(name: str) -> list:
    """Sort key ordering ``view2`` before ``view10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_images(folder: Path, flag: str) -> dict[str, Path]:
    """Image files of ``folder`` (not recursive) by stem; raises UserInputError if missing, empty or ambiguous."""
    folder = Path(folder)
    if not folder.exists():
        raise UserInputError(f"{flag} {folder}: folder not found. Check the path.")
    if not folder.is_dir():
        raise UserInputError(f"{flag} {folder} is a file; pass the folder that holds the images.")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in files:
                raise UserInputError(
                    f"{flag} {folder}: {files[p.stem].name} and {p.name} have the same name; files are paired by "
                    "name without extension, so keep only one of them."
                )
            files[p.stem] = p
    if not files:
        raise UserInputError(
            f"{flag} {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); pass the folder with the images."
        )
    return files


def read_image(path: Path, flag: str) -> np.ndarray:
    """Read an image file as (H, W, 3) float32 in [0, 1]: EXIF rotation applied, alpha composited on white."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f"{flag}: cannot read {path} as an image ({err}). Replace or remove the file.") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_mask(path: Path, size: tuple[int, int], flag: str) -> np.ndarray:
    """Read a mask file as (H, W) bool (gray value >= 128 of 255), resized (nearest) to ``size`` = (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            gray = img.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f"{flag}: cannot read {path} as a mask image ({err}).") from None
    if gray.size != (size[1], size[0]):
        gray = gray.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(gray) >= 128


def resize_like(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bicubic (antialiased) resize of an (H, W, C) image to ``shape[:2]``, clamped to [0, 1]."""
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=tuple(shape[:2]), mode="bicubic", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).clamp(0, 1).numpy()


def resize_depth(depth: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear resize of an (H, W) depth map to ``shape[:2]`` (no clamping)."""
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    return F.interpolate(x, size=tuple(shape[:2]), mode="bilinear", align_corners=False)[0, 0].numpy()


def progress_bar(items: Iterable, enabled: bool, desc: str, total: int | None = None) -> Iterable:
    """``items`` wrapped in a tqdm progress bar (unit: view) when ``enabled``."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="view")


def _read_masks(folder: Path | None, names: list[str], shapes: list[tuple], flag: str, notes: list[str]):
    if folder is None:
        return None
    files = list_images(folder, flag)
    found = [n for n in names if n in files]
    if not found:
        raise UserInputError(
            f"{flag} {folder}: no mask file matches a view name (views: {', '.join(names[:5])}; masks: "
            f"{', '.join(sorted(files)[:5])}). Name each mask like its image."
        )
    if len(found) < len(names):
        notes.append(f"{flag}: no mask for {len(names) - len(found)} of {len(names)} views (their iou is null)")
    return [read_mask(files[n], s[:2], flag) if n in files else None for n, s in zip(names, shapes, strict=True)]


def load_image_folders(
    source: Path,
    edited: Path,
    masks_source: Path | None = None,
    masks_edited: Path | None = None,
    progress: bool = True,
) -> Views:
    """Pair the images of two folders by file name (without extension) and read them."""
    src_files = list_images(source, "--source")
    edit_files = list_images(edited, "--edited")
    if (masks_source is None) != (masks_edited is None):
        raise UserInputError("pass both --masks-source and --masks-edited (IoU compares the two masks), or neither.")
    names = sorted(set(src_files) & set(edit_files), key=natural_key)
    if not names:
        raise UserInputError(
            f"no file of --edited {edited} has the name of a file of --source {source} (source: "
            f"{', '.join(sorted(src_files)[:5])}; edited: {', '.join(sorted(edit_files)[:5])}). Files are paired by "
            "name without extension: name each edit like its source image."
        )
    notes = []
    unpaired = sorted((set(src_files) | set(edit_files)) - set(names), key=natural_key)
    if unpaired:
        notes.append(f"{len(unpaired)} file(s) without a partner skipped: {', '.join(unpaired[:10])}")
    src_imgs, edit_imgs, resized = [], [], []
    for name in progress_bar(names, progress, "reading images"):
        s = read_image(src_files[name], "--source")
        e = read_image(edit_files[name], "--edited")
        if e.shape != s.shape:
            resized.append(f"{name} ({e.shape[1]}x{e.shape[0]} -> {s.shape[1]}x{s.shape[0]})")
            e = resize_like(e, s.shape)
        src_imgs.append(s)
        edit_imgs.append(e)
    if resized:
        notes.append(f"edits resized (bicubic) to their source's size: {', '.join(resized[:10])}")
    shapes = [s.shape for s in src_imgs]
    return Views(
        names=names,
        source=src_imgs,
        edit=edit_imgs,
        mask_source=_read_masks(masks_source, names, shapes, "--masks-source", notes),
        mask_edit=_read_masks(masks_edited, names, shapes, "--masks-edited", notes),
        notes=notes,
        provenance={
            "source": str(Path(source).resolve()),
            "edited": str(Path(edited).resolve()),
            "masks_source": str(Path(masks_source).resolve()) if masks_source else None,
            "masks_edited": str(Path(masks_edited).resolve()) if masks_edited else None,
        },
    )


# --------------------------------------------------------------------------------------------- nerfstudio runs


def use_data(config, data: Path | None):
    """``--data``: read the run's scene from ``data`` instead of the folder recorded in its config.yml."""
    if data is not None:
        config.data = data
        config.pipeline.datamanager.data = data
        config.pipeline.datamanager.dataparser.data = data
    return config


def _step(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def run_checkpoint(config, config_path: Path) -> tuple[Path, Path | None]:
    """``(models folder, newest step-*.ckpt or None)`` of the run whose ``config.yml`` is ``config_path``.

    Always the ``nerfstudio_models/`` folder next to the given config.yml (its ``relative_model_dir``), wherever the
    run folder now is: nerfstudio's ``eval_setup`` instead loads from the folder recorded in config.yml
    (``output_dir/experiment_name/method_name/timestamp``), so a copied run would silently score the original's
    checkpoint."""
    models = Path(config_path).parent / Path(getattr(config, "relative_model_dir", "nerfstudio_models"))
    ckpts = sorted((p for p in models.glob("step-*.ckpt") if _step(p) >= 0), key=_step) if models.is_dir() else []
    return models, (ckpts[-1] if ckpts else None)


def _data_splits(split: str) -> tuple[str, ...]:
    from ids_nerf.nerf.dataparsers.validate import SPLITS_EVAL, SPLITS_TRAIN

    return SPLITS_TRAIN if split == "val" else SPLITS_EVAL


def check_run(config_path: Path, flag: str, data: Path | None = None, split: str = "test"):
    """Validate a run before anything heavy loads: its config.yml, its own newest checkpoint (complete, checksums
    intact) and its scene data as the ``split`` evaluation reads it. Returns the TrainerConfig (with ``--data``
    applied and ``load_dir`` set to the run's own ``nerfstudio_models/``)."""
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    from ids_nerf.nerf.checkpoints import check_checkpoint, register_safe_globals
    from ids_nerf.nerf.dataparsers.validate import validate_scene_data

    register_safe_globals()
    config_path = Path(config_path)
    if not config_path.exists():
        raise UserInputError(f"{flag} {config_path}: file not found. Pass the config.yml of a nerfstudio run.")
    if config_path.is_dir():
        hint = config_path / "config.yml"
        raise UserInputError(
            f"{flag} {config_path} is a folder; pass its config.yml"
            + (f" ({hint})." if hint.is_file() else " (outputs/<scene>/<method>/<timestamp>/config.yml).")
        )
    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except Exception as err:
        raise UserInputError(
            f"{flag} {config_path}: not a readable nerfstudio config ({type(err).__name__}: {str(err)[:200]})."
        ) from None
    if not isinstance(config, TrainerConfig):
        raise UserInputError(f"{flag} {config_path} is not a nerfstudio run config (config.yml written by ns-train).")
    from nerfstudio.configs.method_configs import all_methods

    if config.method_name not in all_methods:
        raise UserInputError(
            f"{flag} {config_path}: method {config.method_name!r} is not registered with nerfstudio; install the "
            "plugin that provides it (for ids-* methods: pip install -e . in the ids_nerf repository)."
        )
    config = use_data(config, data)
    models, checkpoint = run_checkpoint(config, config_path)
    if checkpoint is None:
        recorded = config.get_checkpoint_dir()
        elsewhere = (
            f" (its config.yml records {recorded}, which is not evaluated: only the checkpoints of the run whose "
            "config.yml is given are)"
            if recorded.resolve() != models.resolve() and recorded.is_dir()
            else ""
        )
        raise UserInputError(
            f"{flag} {config_path}: no checkpoint (step-*.ckpt) in {models}{elsewhere}. Has the run saved one? "
            "A copied run folder must keep its nerfstudio_models/ next to its config.yml."
        )
    check_checkpoint(checkpoint, f"{flag} {config_path}")
    config.load_dir, config.load_step = models, _step(checkpoint)
    dm = config.pipeline.datamanager
    data_dir = Path(dm.data if dm.data is not None else dm.dataparser.data)
    if not data_dir.exists():
        raise UserInputError(
            f"{flag} {config_path}: the run's data {data_dir} was not found (relative paths are relative to the "
            "current folder). Run ids-eval from the folder you trained in, or pass --data."
        )
    label = "--data" if data is not None else f"{flag} {config_path}: the run's data (pass --data to use another copy)"
    validate_scene_data(data_dir, label, dm.dataparser, _data_splits(split))
    return config


def load_run(config_path: Path, flag: str, data: Path | None = None, split: str = "test"):
    """:func:`check_run`, then the run's pipeline with the weights of its own newest checkpoint, as nerfstudio's
    ``eval_setup`` builds it (``test_mode`` "val" for the val split, else "test"); prints the checkpoint used.

    Returns:
        ``(config, pipeline, checkpoint, step)``.
    """
    from nerfstudio.configs.method_configs import all_methods

    from ids_nerf.nerf.checkpoints import load_checkpoint

    config = check_run(config_path, flag, data, split)
    _, checkpoint = run_checkpoint(config, config_path)
    assert checkpoint is not None  # check_run refuses a run without one
    state = load_checkpoint(checkpoint, f"{flag} {config_path}")
    step = int(state["step"])
    print(f"{flag} {config_path}: checkpoint {checkpoint} (step {step})")
    config.pipeline.datamanager._target = all_methods[config.method_name].pipeline.datamanager._target
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipeline = config.pipeline.setup(device=device, test_mode="val" if split == "val" else "test")
    pipeline.eval()
    pipeline.load_pipeline(state["pipeline"], step)
    del state
    return config, pipeline, checkpoint, step


@dataclass
class RenderedRun:
    """Renders of one run's cameras."""

    names: list[str]
    """Image paths relative to the data folder, without extension."""
    rgb: list[np.ndarray]
    """(H, W, 3) renders in [0, 1]."""
    depth: list[np.ndarray]
    """(H, W) depth divided by the dataparser scale (units of the original camera poses)."""
    photos: list[np.ndarray]
    """(H, W, 3) the dataset's images of the same cameras."""
    info: dict
    """config, checkpoint, step, method."""


def _view_name(filename: Path, root: Path) -> str:
    try:
        rel = Path(filename).resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(Path(filename).name)
    return rel.with_suffix("").as_posix()


def render_run(
    config_path: Path, split: Split = "test", data: Path | None = None, progress: bool = True, flag: str = "run"
) -> RenderedRun:
    """Render the ``split`` cameras of a run (rgb + depth) with the weights of its own newest checkpoint
    (:func:`load_run`); the pipeline is freed after."""
    config, pipeline, ckpt, step = load_run(Path(config_path), flag, data, split)
    dm = pipeline.datamanager
    root = Path(dm.config.data if dm.config.data is not None else dm.dataparser.config.data)
    datasets = {"test": [dm.eval_dataset], "val": [dm.eval_dataset], "train": [dm.train_dataset]}.get(
        split, [dm.train_dataset, dm.eval_dataset]
    )
    scale = float(getattr(dm.train_dataparser_outputs, "dataparser_scale", 1.0) or 1.0)
    items = []
    for ds in datasets:
        for i, fn in enumerate(ds._dataparser_outputs.image_filenames):
            items.append((_view_name(fn, root), ds, i))
    if split == "all":
        seen: dict[str, tuple] = {}
        for item in items:
            seen.setdefault(item[0], item)
        items = sorted(seen.values(), key=lambda it: natural_key(it[0]))
    if not items:
        raise UserInputError(f"{flag} {config_path}: the {split} split has no cameras; choose another --split.")
    out = RenderedRun([], [], [], [], {"config": str(Path(config_path).resolve()), "checkpoint": str(ckpt)})
    out.info.update(step=int(step), method=config.method_name, split=split, dataparser_scale=scale)
    for name, ds, i in progress_bar(items, progress, f"rendering {config.method_name}", total=len(items)):
        camera = ds.cameras[i : i + 1].to(pipeline.device)
        with torch.no_grad():
            outputs = pipeline.model.get_outputs_for_camera(camera)
        photo = ds.get_image_float32(i)
        if photo.shape[-1] == 4:  # alpha without an alpha_color: composite on white
            photo = photo[..., :3] * photo[..., 3:] + (1.0 - photo[..., 3:])
        out.names.append(name)
        out.rgb.append(outputs["rgb"].clamp(0, 1).float().cpu().numpy())
        out.depth.append((outputs["depth"].float().cpu().numpy()[..., 0]) / scale)
        out.photos.append(photo[..., :3].float().numpy())
    del pipeline
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def load_render_views(
    edited_config: Path,
    source_config: Path | None = None,
    split: Split = "test",
    data: Path | None = None,
    progress: bool = True,
) -> Views:
    """Views of an edited run against the source run's renders (``source_config``) or the original photos."""
    edit = render_run(edited_config, split, data, progress, "--load-config")
    provenance = {"edited_run": edit.info, "source_run": None, "source": "original photos"}
    notes: list[str] = []
    if source_config is None:
        names, src_imgs, depth_src = edit.names, edit.photos, None
        edit_imgs, depth_edit = edit.rgb, edit.depth
        notes.append(
            "source views are the original photos: lpips and bg_psnr include the reconstruction error; pass "
            "--source-config for differences due to the edit alone (and depth_change)"
        )
    else:
        src = render_run(source_config, split, data, progress, "--source-config")
        provenance.update(source_run=src.info, source="renders of --source-config")
        index = {n: k for k, n in enumerate(src.names)}
        names = [n for n in edit.names if n in index]
        if not names:
            raise UserInputError(
                f"--source-config and --load-config share no camera (source views: {', '.join(src.names[:5])}; "
                f"edited views: {', '.join(edit.names[:5])}); they must be runs of the same dataset."
            )
        if len(names) < len(edit.names) or len(names) < len(src.names):
            notes.append(f"only the {len(names)} views present in both runs are evaluated")
        keep = [edit.names.index(n) for n in names]
        src_imgs = [src.rgb[index[n]] for n in names]
        depth_src = [src.depth[index[n]] for n in names]
        edit_imgs = [edit.rgb[k] for k in keep]
        depth_edit = [edit.depth[k] for k in keep]
    resized = []
    for k, (s, e) in enumerate(zip(src_imgs, edit_imgs, strict=True)):
        if s.shape != e.shape:
            resized.append(names[k])
            edit_imgs[k] = resize_like(e, s.shape)
            depth_edit[k] = resize_depth(depth_edit[k], s.shape)
    if resized:
        notes.append(f"edited renders resized (rgb bicubic, depth bilinear) to the source's size: {resized[:10]}")
    return Views(
        names=list(names),
        source=list(src_imgs),
        edit=list(edit_imgs),
        depth_source=depth_src,
        depth_edit=list(depth_edit),
        notes=notes,
        provenance=provenance,
    )

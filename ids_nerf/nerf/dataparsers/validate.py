"""Check scene data before a command writes anything: :func:`validate_scene_data`.

nerfstudio's dataparsers read the data only when the data manager is built, after ``ns-train`` has written
``<run>/config.yml``; a bad file then surfaces as a traceback (``KeyError: 'frames'``, ``JSONDecodeError``,
``FileNotFoundError``, ``AssertionError``) and leaves the run folder behind. :func:`validate_scene_data` reads what
the dataparser will read, in the way it will read it, and raises :class:`~ids_nerf.errors.UserInputError` naming the
flag, the data folder and the file at fault:

* LLFF: ``poses_bounds.npy`` loads as a finite (N, 17) array with positive image sizes, focal lengths and
  ``0 < near < far``; the image folder the parser reads for the downscale factor (or ``images/``, from which it
  writes that folder) holds exactly N readable images with the poses' aspect ratio; the evaluation hold-out leaves
  images to train on;
* Blender: ``transforms_<split>.json`` of every split the command reads parses, holds ``camera_angle_x`` and a
  non-empty ``frames`` list, each frame a ``file_path`` and a 4x4 ``transform_matrix``, and every image
  (``<file_path>.png``) exists and is readable;
* nerfstudio: ``transforms.json`` parses, holds a non-empty ``frames`` list with ``file_path`` and
  ``transform_matrix`` each, the intrinsics (``fl_x fl_y cx cy w h``) globally or in every frame, a known
  ``camera_model``; every image (in ``images_<k>/`` for a downscale factor k, chosen as nerfstudio does), mask and
  depth file exists; the train/eval split is not empty.

:class:`DataCheckedTrainerConfig` is a ``TrainerConfig`` whose ``save_config`` (the first thing ``ns-train`` writes)
runs the check, for plain nerfstudio methods of the plugin (``ids-recon``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import MAX_AUTO_RESOLUTION, NerfstudioDataParserConfig
from nerfstudio.engine.trainer import TrainerConfig

from ids_nerf.errors import UserInputError
from ids_nerf.nerf.dataparsers.auto import (
    DATAPARSER_NAMES,
    MARKERS,
    AutoDataParserConfig,
    DataFormat,
    _marker_format,
    detect_data_format,
)
from ids_nerf.nerf.dataparsers.llff import (
    LLFFDataParserConfig,
    check_aspect_ratio,
    check_image_count,
    choose_downscale_factor,
    list_images,
    read_poses_bounds,
    source_image_folder,
)

SPLITS_TRAIN: tuple[str, ...] = ("train", "val")
"""Splits ``ns-train`` reads (its data manager evaluates on ``val``)."""
SPLITS_EVAL: tuple[str, ...] = ("train", "test")
"""Splits ``ns-eval`` / ``ns-render`` / ``ids-eval render --split test`` read."""

MAX_LISTED = 3
"""Files named in a message at most (then a count)."""


class _Fault(Exception):
    """A problem found in the data; :func:`validate_scene_data` prefixes it with the flag and the folder."""


def _listing(paths: Sequence[object], total: int | None = None) -> str:
    shown = ", ".join(str(p) for p in paths[:MAX_LISTED])
    total = len(paths) if total is None else total
    return shown + (f" (and {total - MAX_LISTED} more)" if total > MAX_LISTED else "")


def _read_json(file: Path) -> dict[str, Any]:
    """A JSON object from ``file``; a :class:`_Fault` names the file, line and column."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _Fault(f"'{file}' is not UTF-8 text (is it a JSON file?).") from None
    except OSError as err:
        raise _Fault(f"'{file}' cannot be read ({err.strerror or err}).") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        detail = "the file is empty" if not text.strip() else f"line {err.lineno}, column {err.colno}: {err.msg}"
        raise _Fault(f"'{file}' is not valid JSON ({detail}).") from None
    if not isinstance(meta, dict):
        raise _Fault(f"'{file}' should hold a JSON object with a \"frames\" list, got a {type(meta).__name__}.")
    return meta


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(meta: dict, key: str, where: str, positive: bool = True) -> float:
    value = meta.get(key)
    if not _is_number(value) or (positive and value <= 0):
        got = "missing" if key not in meta else f"{value!r}"
        kind = "a positive number" if positive else "a finite number"
        raise _Fault(f'{where}: "{key}" must be {kind}, got {got}.')
    return float(value)


def _frames(meta: dict, file: Path) -> list[dict]:
    """The non-empty ``frames`` list, each frame an object with a ``file_path`` string and a 4x4 (or 3x4)
    ``transform_matrix`` of finite numbers; the first bad frame is named."""
    if "frames" not in meta:
        raise _Fault(f"'{file}' has no \"frames\" list (keys: {', '.join(sorted(meta)) or 'none'}).")
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise _Fault(f"'{file}': \"frames\" should be a list, got a {type(frames).__name__}.")
    if not frames:
        raise _Fault(f"'{file}' has no frames (\"frames\" is empty): the dataset has no images.")
    for i, frame in enumerate(frames):
        where = f"'{file}', frames[{i}]"
        if not isinstance(frame, dict):
            raise _Fault(f"{where} should be an object, got {type(frame).__name__}.")
        path = frame.get("file_path")
        if not isinstance(path, str) or not path.strip():
            got = "missing" if "file_path" not in frame else repr(path)
            raise _Fault(f'{where}: "file_path" must name the image file, got {got}.')
        matrix = frame.get("transform_matrix")
        rows_ok = isinstance(matrix, list) and len(matrix) in (3, 4)
        if not rows_ok or not all(isinstance(r, list) and len(r) == 4 and all(map(_is_number, r)) for r in matrix):
            got = "missing" if "transform_matrix" not in frame else "another shape or non-numbers"
            raise _Fault(f'{where}: "transform_matrix" must be a 4x4 camera-to-world matrix of numbers, got {got}.')
    return frames


def _check_files(files: Sequence[Path], what: str, source: Path, hint: str = "") -> None:
    """Every file of ``files`` exists (else a :class:`_Fault` naming the first ones, ``what`` they are and the file
    ``source`` that names them)."""
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise _Fault(
            f"{len(missing)} of the {len(files)} {what} named in '{source}' "
            f"{'does' if len(missing) == 1 else 'do'} not exist: {_listing(missing)}." + (f" {hint}" if hint else "")
        )


def _image_sizes(files: Sequence[Path], what: str) -> np.ndarray:
    """(N, 2) width, height of every image (headers only); unreadable ones are named."""
    from PIL import Image, UnidentifiedImageError

    sizes, bad = [], []
    for f in files:
        try:
            with Image.open(f) as img:
                sizes.append(img.size)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(f)
            sizes.append((0, 0))
    if bad:
        raise _Fault(
            f"{len(bad)} of the {len(files)} {what} cannot be read as images (damaged or not an image file): "
            f"{_listing(bad)}."
        )
    return np.array(sizes, dtype=np.float64).reshape(-1, 2)


# --------------------------------------------------------------------------------------------------- LLFF


def _check_llff(data: Path, dataparser: DataParserConfig | None) -> None:
    poses_path = data / "poses_bounds.npy"
    try:
        _, bounds, hwf = read_poses_bounds(poses_path)
    except UserInputError as err:
        raise _Fault(str(err)) from None
    n = len(hwf)
    bad = np.flatnonzero((hwf <= 0).any(axis=1))
    if len(bad):
        raise _Fault(
            f"'{poses_path}': image height, width and focal length must be positive (rows {bad[:5].tolist()})."
        )
    bad = np.flatnonzero(~((bounds[:, 0] > 0) & (bounds[:, 1] > bounds[:, 0])))
    if len(bad):
        raise _Fault(
            f"'{poses_path}': the depth bounds (last two columns) must satisfy 0 < near < far; rows "
            f"{bad[:5].tolist()} do not (e.g. near {bounds[bad[0], 0]:g}, far {bounds[bad[0], 1]:g})."
        )
    downscale = getattr(dataparser, "downscale_factor", None)
    create = getattr(dataparser, "create_downscaled", True)
    try:
        factor = choose_downscale_factor(hwf, downscale)
        folder, source = source_image_folder(data, factor, create)
        files = list_images(source)
        check_image_count(source, len(files), poses_path, n)
    except UserInputError as err:
        raise _Fault(str(err)) from None
    sizes = _image_sizes(files, f"images of '{source}'")
    try:
        check_aspect_ratio(sizes, hwf, source)
    except UserInputError as err:
        raise _Fault(str(err)) from None
    interval = getattr(dataparser, "eval_interval", 8)
    if interval > 0 and n - math.ceil(n / interval) < 1:
        raise _Fault(
            f"'{poses_path}' has {n} pose(s): with an evaluation hold-out of every {interval}th image no image is "
            "left to train on; add images, or pass eval_interval 0 to train on all of them."
        )


# ------------------------------------------------------------------------------------------------ Blender


SPLIT_USE = {
    "train": "the training images",
    "val": "ns-train evaluates on the val split",
    "test": "the test split is what ns-eval, ns-render and ids-eval render (--split test) read",
}


def _check_blender(data: Path, splits: Iterable[str]) -> None:
    for split in dict.fromkeys(splits):
        file = data / f"transforms_{split}.json"
        if not file.is_file():
            raise _Fault(f"'{file}' is missing ({SPLIT_USE.get(split, split)}).")
        meta = _read_json(file)
        frames = _frames(meta, file)
        _number(meta, "camera_angle_x", f"'{file}'")
        images = [data / (frame["file_path"].replace("./", "") + ".png") for frame in frames]
        with_suffix = [f["file_path"] for f in frames if Path(f["file_path"]).suffix.lower() in (".png", ".jpg")]
        hint = (
            f"Blender file_path values carry no extension (nerfstudio appends .png), e.g. {with_suffix[0]!r} should "
            f"be {str(Path(with_suffix[0]).with_suffix(''))!r}."
            if with_suffix
            else ""
        )
        _check_files(images, "images", file, hint)
        _image_sizes(images, f"images named in '{file}'")


# --------------------------------------------------------------------------------------------- nerfstudio

INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
"""Camera intrinsics of nerfstudio data: in transforms.json for all frames, or in every frame."""


def _nerfstudio_factor(meta_frames: list[dict], data_dir: Path, downscale: int | None, file: Path) -> int:
    """nerfstudio's downscale factor (``Nerfstudio._get_fname``): the given one, else the smallest power of two
    that brings the first frame's image to <= 1600 pixels among the ``images_<k>`` folders that hold it."""
    if downscale is not None:
        if downscale < 1:
            raise _Fault(f"downscale_factor must be >= 1, got {downscale}.")
        return int(downscale)
    first = Path(meta_frames[0]["file_path"])
    if not (data_dir / first).is_file():
        raise _Fault(f"the image '{data_dir / first}' of the first frame in '{file}' does not exist.")
    max_res, df = float(_image_sizes([data_dir / first], f"image of the first frame in '{file}'").max()), 0
    while max_res / 2**df > MAX_AUTO_RESOLUTION and (data_dir / f"images_{2 ** (df + 1)}" / first.name).exists():
        df += 1
    return 2**df


def _resolved(path: str, data_dir: Path, factor: int, prefix: str) -> Path:
    p = Path(path)
    return data_dir / f"{prefix}{factor}" / p.name if factor > 1 else data_dir / p


def _split_sizes(n: int, dataparser: DataParserConfig | None) -> tuple[int, int, str]:
    """(train, eval) image counts and the option that splits them, as the nerfstudio dataparser splits ``n``."""
    if isinstance(dataparser, NerfstudioDataParserConfig):
        mode, fraction, interval = dataparser.eval_mode, dataparser.train_split_fraction, dataparser.eval_interval
    else:  # the auto dataparser: eval_interval > 0 -> interval, 0 -> all
        interval = getattr(dataparser, "eval_interval", 8)
        mode, fraction = ("interval" if interval > 0 else "all"), 0.9
    if mode == "interval":
        held = math.ceil(n / max(int(interval), 1))
        return n - held, held, f"eval_interval {interval}"
    if mode == "fraction":
        train = math.ceil(n * fraction)
        return train, n - train, f"train_split_fraction {fraction}"
    return n, n, f"eval_mode {mode}"


def _check_nerfstudio(data: Path, dataparser: DataParserConfig | None, splits: Iterable[str]) -> None:
    from nerfstudio.cameras.cameras import CAMERA_MODEL_TO_TYPE

    file = data if data.suffix == ".json" else data / "transforms.json"
    data_dir = file.parent
    meta = _read_json(file)
    frames = _frames(meta, file)
    for key in INTRINSICS:
        if key in meta:
            _number(meta, key, f"'{file}'")
            continue
        for i, frame in enumerate(frames):
            if key not in frame:
                raise _Fault(
                    f"'{file}': \"{key}\" is neither given for all frames nor in frames[{i}] (the camera intrinsics "
                    f"{', '.join(INTRINSICS)} belong at the top level, or in every frame)."
                )
            _number(frame, key, f"'{file}', frames[{i}]")
    model = meta.get("camera_model")
    if model is not None and model not in CAMERA_MODEL_TO_TYPE:
        raise _Fault(f"'{file}': unknown \"camera_model\" {model!r}; known: {', '.join(CAMERA_MODEL_TO_TYPE)}.")
    factor = _nerfstudio_factor(frames, data_dir, getattr(dataparser, "downscale_factor", None), file)
    images = [_resolved(f["file_path"], data_dir, factor, "images_") for f in frames]
    where = f" (downscale factor {factor}: images_{factor}/)" if factor > 1 else ""
    _check_files(images, f"images{where}", file)
    _image_sizes(images, f"images named in '{file}'")
    for key, prefix, what in (("mask_path", "masks_", "masks"), ("depth_file_path", "depths_", "depth maps")):
        given = [i for i, f in enumerate(frames) if key in f]
        if not given:
            continue
        if len(given) < len(frames):
            lacking = [i for i in range(len(frames)) if i not in set(given)]
            raise _Fault(
                f"'{file}': \"{key}\" is given for some frames but not for frames {lacking[:5]}: give it "
                "for every frame or for none."
            )
        bad = [i for i in given if not isinstance(frames[i][key], str)]
        if bad:
            raise _Fault(f"'{file}', frames[{bad[0]}]: \"{key}\" must be a file name.")
        _check_files([_resolved(frames[i][key], data_dir, factor, prefix) for i in given], what, file)
    listed = [s for s in ("train", "val", "test") if f"{s}_filenames" in meta]
    if listed:
        for split in dict.fromkeys(splits):
            names = meta.get(f"{split}_filenames")
            if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
                raise _Fault(
                    f"'{file}' lists the files of the splits {', '.join(listed)} but \"{split}_filenames\" is "
                    + ("missing" if names is None else "not a list of file names")
                    + f" ({SPLIT_USE.get(split, split)})."
                )
        return
    train, held, option = _split_sizes(len(frames), dataparser)
    if train < 1 or (held < 1 and any(s != "train" for s in splits)):
        raise _Fault(
            f"'{file}' has {len(frames)} frame(s): with {option} the {'training' if train < 1 else 'evaluation'} "
            "split would be empty; add frames or choose another split option (eval_interval / eval_mode)."
        )


# ------------------------------------------------------------------------------------------------ entry


def dataparser_format(dataparser: DataParserConfig | None) -> DataFormat | None:
    """The format a dataparser config reads; None for the auto dataparser (or none): detect it."""
    if isinstance(dataparser, LLFFDataParserConfig):
        return "llff"
    if isinstance(dataparser, BlenderDataParserConfig):
        return "blender"
    if isinstance(dataparser, NerfstudioDataParserConfig):
        return "nerfstudio"
    if dataparser is None or isinstance(dataparser, AutoDataParserConfig):
        return None
    raise UserInputError(
        f"{type(dataparser).__name__} data cannot be checked; use ids-auto-data, llff-data, blender-data or "
        "nerfstudio-data."
    )


def validate_scene_data(
    path: str | Path,
    flag: str = "--data",
    dataparser: DataParserConfig | None = None,
    splits: Sequence[str] = SPLITS_TRAIN,
) -> DataFormat:
    """Check the scene data at ``path`` as the dataparser will read it; returns its format. Writes nothing.

    Args:
        path: the data folder (or a nerfstudio ``transforms.json``), as the user gave it.
        flag: how the user gave ``path`` (``--data``, or e.g. ``--load-config run/config.yml: its data``): every
            message starts with ``<flag> <path>:``.
        dataparser: the dataparser config that will read it: its format is required (``blender-data`` needs
            ``transforms_train.json``, ...) and its options are honoured (``downscale_factor``, ``eval_interval``,
            LLFF's ``create_downscaled``, nerfstudio's ``eval_mode``). None or the auto dataparser: the detected
            format with the auto dataparser's defaults.
        splits: the splits the command reads (Blender: ``transforms_<split>.json`` files; nerfstudio: split lists).
            ``ns-train``: :data:`SPLITS_TRAIN`; ``ns-eval`` / ``ids-eval render --split test``: :data:`SPLITS_EVAL`.

    Raises:
        UserInputError: the message names the flag, the folder, the file at fault and what is wrong with it.
    """
    path = Path(path)
    expected = dataparser_format(dataparser)
    if expected is None:
        fmt = detect_data_format(path, flag)
    else:
        fmt = expected
        if not path.exists():
            detect_data_format(path, flag)  # the "does not exist" message
        marker = next(m for m, f, _ in MARKERS if f == fmt)
        has_marker = (path / marker).is_file() or (fmt == "nerfstudio" and path.is_file() and path.suffix == ".json")
        if not has_marker:
            found = _marker_format(path) if path.is_dir() else None
            holds = f"it holds {found} data ({DATAPARSER_NAMES[found]})" if found else "it holds no known dataset"
            raise UserInputError(
                f"{flag} {path}: the dataparser {DATAPARSER_NAMES[fmt]} reads '{path / marker}', which does not "
                f"exist; {holds}. Pass the data folder the dataparser expects."
            )
    try:
        if fmt == "llff":
            _check_llff(path, dataparser)
        elif fmt == "blender":
            _check_blender(path, splits)
        else:
            _check_nerfstudio(path, dataparser, splits)
    except _Fault as fault:
        raise UserInputError(f"{flag} {path}: {fault}") from None
    return fmt


def trainer_data(config: TrainerConfig) -> tuple[Path | None, str]:
    """The data folder an ``ns-train`` config reads and the flag it was given with (``--data``, or
    ``--pipeline.datamanager.data``); None when none was given (the dataparser's own default)."""
    dm = config.pipeline.datamanager
    if config.data is not None:
        return Path(config.data), "--data"
    if getattr(dm, "data", None) is not None:
        return Path(dm.data), "--pipeline.datamanager.data"
    dataparser = getattr(dm, "dataparser", None)
    data = getattr(dataparser, "data", None)
    if data is None or (isinstance(dataparser, AutoDataParserConfig) and Path(data) == Path()):
        return None, "--data"
    return Path(data), "--data"


def check_trainer_data(config: TrainerConfig) -> DataFormat:
    """:func:`validate_scene_data` of an ``ns-train`` config's data (its dataparser, the training splits)."""
    data, flag = trainer_data(config)
    if data is None:
        raise UserInputError(
            f"ns-train {config.method_name} needs a scene: pass --data <scene folder> (LLFF, Blender or nerfstudio "
            "data), e.g. ns-train ids-recon --data data/nerf_llff_data/fern."
        )
    return validate_scene_data(data, flag, getattr(config.pipeline.datamanager, "dataparser", None), SPLITS_TRAIN)


@dataclass
class DataCheckedTrainerConfig(TrainerConfig):
    """A nerfstudio TrainerConfig whose data is checked (:func:`validate_scene_data`) before ns-train writes the
    run's config.yml: bad data is one paragraph naming the flag and the file, exit code 2, no run folder."""

    def save_config(self) -> None:
        """Check the data, then nerfstudio's :meth:`TrainerConfig.save_config` (the first thing ns-train writes)."""
        from ids_nerf.console import exit_on_user_error

        with exit_on_user_error(f"ns-train {self.method_name}"):
            check_trainer_data(self)
        super().save_config()

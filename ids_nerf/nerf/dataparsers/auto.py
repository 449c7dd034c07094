"""A dataparser that detects the dataset format of ``--data`` and delegates to the matching parser.

Detection, in this order (the first marker file found in the folder wins):

* ``poses_bounds.npy``      -> LLFF (:class:`~ids_nerf.nerf.dataparsers.llff.LLFFDataParserConfig`);
* ``transforms_train.json`` -> Blender / NeRF-synthetic (nerfstudio's ``BlenderDataParserConfig``);
* ``transforms.json``       -> nerfstudio data (nerfstudio's ``NerfstudioDataParserConfig``); a path to a
  ``.json`` file is nerfstudio data too.

Anything else raises :class:`~ids_nerf.errors.UserInputError` when the parser is built, i.e. in the data
manager's constructor, before any model (or diffusion prior) is loaded. Options that every format understands
are forwarded; for format-specific options name the dataparser explicitly (``llff-data``, ``blender-data``,
``nerfstudio-data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from ids_nerf.errors import UserInputError
from ids_nerf.nerf.dataparsers.llff import LLFFDataParserConfig

DataFormat = Literal["llff", "blender", "nerfstudio"]
"""Dataset formats :func:`detect_data_format` recognises."""

MARKERS: tuple[tuple[str, DataFormat, str], ...] = (
    ("poses_bounds.npy", "llff", "LLFF"),
    ("transforms_train.json", "blender", "Blender / NeRF-synthetic"),
    ("transforms.json", "nerfstudio", "nerfstudio data"),
)
"""(marker file, format, human name), in detection order."""

DATAPARSER_NAMES: dict[str, str] = {"llff": "llff-data", "blender": "blender-data", "nerfstudio": "nerfstudio-data"}
"""The ns-train dataparser subcommand of each format."""


def _marker_format(folder: Path) -> DataFormat | None:
    for marker, fmt, _ in MARKERS:
        if (folder / marker).is_file():
            return fmt
    return None


def unknown_format_message(path: Path, flag: str = "--data") -> str:
    """The error text for a folder in no known format: what was looked for, candidates, flags to use."""
    looked_for = ", ".join(f"{marker} ({name})" for marker, _, name in MARKERS)
    try:
        empty = not any(path.iterdir())
    except OSError:
        empty = False
    what = "it is empty" if empty else f"it holds none of {looked_for}"
    lines = [f"{flag} {path}: could not detect the dataset format of this folder: {what}."]
    try:
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        subdirs = []
    found = [(p, fmt) for p in subdirs if (fmt := _marker_format(p)) is not None]
    if found:
        shown = ", ".join(f"{p} ({fmt})" for p, fmt in found[:5]) + (" ..." if len(found) > 5 else "")
        lines.append(f"Its subfolders hold datasets; use one of them: {shown}.")
    if " " in flag:  # not a flag the user typed (e.g. a preset's scene): the ns-train examples do not apply
        return " ".join(lines)
    lines += [
        f"Point {flag} at a dataset folder, or name the dataparser explicitly after the method's options, e.g.:",
        "  ns-train ids-edit --data data/nerf_llff_data/fern llff-data",
        "  ns-train ids-edit --data data/blender/lego blender-data",
        "  ns-train ids-edit --data data/my-capture nerfstudio-data",
        "(COLMAP output without transforms.json: convert it with `ns-process-data images`, or use `colmap`.)",
    ]
    return "\n".join(lines)


def detect_data_format(path: str | Path, flag: str = "--data") -> DataFormat:
    """The format of the dataset at ``path`` (a folder, or a nerfstudio ``.json`` file), from its marker files only
    (:func:`ids_nerf.nerf.dataparsers.validate.validate_scene_data` also checks their content).

    Args:
        path: the dataset folder.
        flag: how the user gave ``path`` (named in errors).

    Raises:
        UserInputError: ``path`` does not exist or holds no known format; the message says what to pass.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return "nerfstudio"
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise UserInputError(f"{flag} {path}: this dataset folder does not exist{where}; check the path.")
    if not path.is_dir():
        raise UserInputError(f"{flag} {path}: this is a file; pass the dataset folder.")
    fmt = _marker_format(path)
    if fmt is None:
        raise UserInputError(unknown_format_message(path, flag))
    return fmt


@dataclass
class AutoDataParserConfig(DataParserConfig):
    """Detects LLFF, Blender or nerfstudio data in --data and uses the matching dataparser."""

    _target: type = field(default_factory=lambda: AutoDataParser)
    """Target class to instantiate."""
    data: Path = Path()
    """Dataset folder: LLFF (poses_bounds.npy), Blender (transforms_train.json) or nerfstudio (transforms.json)."""
    downscale_factor: int | None = None
    """Image downscale factor for LLFF (images_{k}/) and nerfstudio data (images_{k}/); None: the parser's
    automatic choice. Blender data has no downscaled images: use
    --pipeline.datamanager.camera-res-scale-factor instead."""
    eval_interval: int = 8
    """LLFF and nerfstudio data: every eval_interval-th image is held out for evaluation (0: none held out).
    Blender data uses its own val/test splits."""
    scale_factor: float = 1.0
    """Extra scale applied to the camera positions (all formats)."""
    load_3D_points: bool = False
    """nerfstudio data: load the point cloud of transforms.json's ply_file_path (splat scenes start from it; the
    splat methods switch this on). LLFF and Blender data have no points: splats start from splatfacto's random
    initialisation there."""


def delegate_config(config: AutoDataParserConfig, fmt: DataFormat) -> DataParserConfig:
    """The config of the dataparser that handles ``fmt``, with the auto config's options forwarded."""
    if fmt == "llff":
        return LLFFDataParserConfig(
            data=config.data,
            downscale_factor=config.downscale_factor,
            eval_interval=config.eval_interval,
            scale_factor=config.scale_factor,
        )
    if fmt == "blender":
        if config.downscale_factor not in (None, 1):
            raise UserInputError(
                f"Blender data ('{config.data}') has no downscaled image folders, so downscale_factor "
                f"{config.downscale_factor} cannot be used; render smaller cameras with "
                f"--pipeline.datamanager.camera-res-scale-factor {1 / config.downscale_factor:g} instead."
            )
        return BlenderDataParserConfig(data=config.data, scale_factor=config.scale_factor)
    if fmt == "nerfstudio":
        return NerfstudioDataParserConfig(
            data=config.data,
            downscale_factor=config.downscale_factor,
            eval_mode="interval" if config.eval_interval > 0 else "all",
            eval_interval=max(config.eval_interval, 1),
            scale_factor=config.scale_factor,
            load_3D_points=config.load_3D_points,
        )
    raise ValueError(f"Unknown data format {fmt!r}")


class AutoDataParser(DataParser):
    """Detects the format when built and forwards every call to the matching dataparser."""

    config: AutoDataParserConfig

    def __init__(self, config: AutoDataParserConfig) -> None:
        super().__init__(config=config)
        self.data_format: DataFormat = detect_data_format(config.data)
        self.delegate: DataParser = delegate_config(config, self.data_format).setup()
        self.includes_time = self.delegate.includes_time

    @property
    def downscale_factor(self) -> int | None:
        """The delegate's ``downscale_factor`` attribute (nerfstudio's data managers set it in inference mode)."""
        return getattr(self.delegate, "downscale_factor", None)

    @downscale_factor.setter
    def downscale_factor(self, value: int | None) -> None:
        if hasattr(self.delegate, "downscale_factor"):
            self.delegate.downscale_factor = value  # type: ignore[attr-defined]

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: object) -> DataparserOutputs:
        outputs = self.delegate.get_dataparser_outputs(split, **kwargs)  # type: ignore[arg-type]
        if outputs.cameras.metadata is None:
            # nerfstudio's Blender parser leaves it None, and `ns-export cameras` (nerfstudio 1.1.5) then fails with
            # `assert camera.metadata is not None` on any run with a camera optimizer (nerfacto, ids-recon)
            outputs.cameras.metadata = {}
        return outputs

"""Editing presets: YAML files under ``configs/`` naming a scene, a source and a target prompt, and optional guidance
settings. Used by ``ns-train <method>-edit --pipeline.guidance.preset <file>`` and by ``ids-batch``.

A preset file::

    # IDS paper (Kim et al., CVPR 2025), Fig. 5 and 7
    scene: llff/leaves                  # the data folder, relative to the data root (default: data/)
    src_prompt: The green leaves
    trg_prompt: Yellow and red leaves in autumn
    reference: IDS paper, Fig. 5        # where the prompt pair comes from
    guidance:                           # optional: guidance settings (finite numbers), see GUIDANCE_KEYS
      guidance_scale: 7.5
    region:                             # optional: edit only there (--pipeline.region.*), see REGION_KEYS
      box: [0.0, 0.0, 0.15, 0.4, 0.4, 0.4]   # centre x y z, size x y z[, roll pitch yaw], scene coordinates
      masks: masks                      # a folder of per-view masks, relative to the scene folder

Every key is checked for its type when the file loads (:func:`load_preset`: prompts and reference are text, scene a
relative path, guidance a mapping of known settings to numbers), and the scene folder when it is used
(:meth:`Preset.data`: the data checked as the dataparser will read it); errors name the flag, the file and the key.

Values given on the command line win: a preset fills the prompts only when ``--pipeline.guidance.src-prompt`` /
``trg-prompt`` are empty, ``--data`` only when it is not given and the region only when no ``--pipeline.region.box``
/ ``masks`` is given; ``guidance`` values replace the method's defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ids_nerf.errors import UserInputError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"
"""The presets shipped in the repository (``configs/``)."""
GUIDANCE_KEYS = ("guidance_scale", "loss_scale", "anchor_weight", "proposal_loss_mult")
"""Guidance fields a preset may set (numbers), besides the prompts."""


REGION_KEYS = ("box", "masks", "anchor_weight", "mask_vote")
"""Region settings a preset may set (``--pipeline.region.*``)."""
PRESET_KEYS = ("scene", "src_prompt", "trg_prompt", "reference", "guidance", "region")
"""Keys a preset file may hold."""
ROOT_FLAGS = {"--presets": "--data-root", "--pipeline.guidance.preset": "--pipeline.guidance.preset-data-root"}
"""The data-root flag that goes with each preset flag (named when a preset's scene folder is missing or bad)."""


@dataclass(frozen=True)
class Preset:
    """One editing preset."""

    path: Path
    """The YAML file."""
    scene: str
    """Data folder relative to the data root, e.g. ``llff/leaves`` or ``blender/lego``."""
    src_prompt: str
    """Prompt describing the scene."""
    trg_prompt: str
    """Prompt describing the edit."""
    reference: str = ""
    """Where the prompt pair comes from (a paper figure, or this project)."""
    guidance: dict[str, float] = field(default_factory=dict)
    """Guidance overrides (keys of :data:`GUIDANCE_KEYS`)."""
    region: dict[str, Any] = field(default_factory=dict)
    """The region the edit is restricted to (keys of :data:`REGION_KEYS`; masks relative to the scene folder)."""
    flag: str = "--preset"
    """The flag the file was given with (named in errors)."""

    @property
    def name(self) -> str:
        """``<scene folder>-<file stem>``-free short name: the file stem (``leaves-autumn``)."""
        return self.path.stem

    def data(self, root: Path, check: bool = True) -> Path:
        """The scene's data folder under ``root``; with ``check``, validated first
        (:func:`~ids_nerf.nerf.dataparsers.validate.validate_scene_data`: format detected, files complete and
        readable), so that a missing or broken scene is refused before anything runs.

        Raises:
            UserInputError: naming the preset flag and file, the scene folder, the file at fault and the data-root
                flag.
        """
        folder = Path(root) / self.scene
        if check:
            from ids_nerf.nerf.dataparsers.validate import validate_scene_data

            root_flag = ROOT_FLAGS.get(self.flag, "the data root")
            try:
                validate_scene_data(folder, f"{self.flag} {self.path}: its scene")
            except UserInputError as err:
                raise UserInputError(
                    f"{err} (The scene {self.scene!r} is read under {root_flag} {root}: put the {self.scene} data "
                    f"there, or pass {root_flag}.)"
                ) from None
        return folder


def _fail(flag: str, path: Path, problem: str) -> UserInputError:
    return UserInputError(f"{flag} {path}: {problem} (see configs/README.md).")


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if value is None:
        return "nothing (null)"
    return f"{value!r} ({type(value).__name__})"


def _text(raw: dict, key: str, flag: str, path: Path, required: bool) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _fail(flag, path, f"missing {key}")
        raise _fail(flag, path, f"{key} must be text, got {_describe(value)}; quote it if needed")
    return value.strip()


def _guidance(raw: object, flag: str, path: Path) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(
            flag,
            path,
            f"guidance must be a mapping of settings to numbers (e.g. guidance:\n  guidance_scale: 7.5), got "
            f"{_describe(raw)}; it may set {', '.join(GUIDANCE_KEYS)}",
        )
    bad = sorted(str(k) for k in raw if k not in GUIDANCE_KEYS)
    if bad:
        raise _fail(flag, path, f"guidance may set {', '.join(GUIDANCE_KEYS)} (got {bad})")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _fail(flag, path, f"guidance.{key} must be a finite number, got {_describe(value)}")
        out[key] = float(value)
    return out


def _region(raw: object, flag: str, path: Path) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(flag, path, f"region must be a mapping (box, masks, ...), got {_describe(raw)}")
    bad = sorted(str(k) for k in raw if k not in REGION_KEYS)
    if bad:
        raise _fail(flag, path, f"region may set {', '.join(REGION_KEYS)} (got {bad})")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "box":
            numbers = value if isinstance(value, list) else None
            if numbers is None or len(numbers) not in (6, 9) or not all(_finite(v) for v in numbers):
                raise _fail(
                    flag,
                    path,
                    f"region.box must be a list of 6 or 9 finite numbers (centre x y z, size x y z[, roll pitch "
                    f"yaw]), got {_describe(value)}",
                )
            out[key] = tuple(float(v) for v in numbers)
        elif key == "masks":
            if not isinstance(value, str) or not value.strip():
                raise _fail(flag, path, f"region.masks must be a folder (text), got {_describe(value)}")
            out[key] = value.strip()
        else:
            if not _finite(value):
                raise _fail(flag, path, f"region.{key} must be a finite number, got {_describe(value)}")
            out[key] = float(value)
    return out


def _finite(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def load_preset(path: Path, flag: str = "--preset") -> Preset:
    """Read and check a preset file: every key of a known name and type (prompts text, scene a relative path,
    guidance a mapping of known settings to finite numbers). Errors name the flag, the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(sorted(p.relative_to(PRESETS_DIR).as_posix() for p in PRESETS_DIR.rglob("*.yaml")))
        raise UserInputError(f"{flag} {path}: no such file. Presets shipped in configs/: {shipped}.")
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserInputError(f"{flag} {path}: not valid YAML ({err}).") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"{flag} {path}: cannot be read as text ({err}).") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{flag} {path}: expected a mapping with scene, src_prompt and trg_prompt.")
    missing = [k for k in ("scene", "src_prompt", "trg_prompt") if raw.get(k) is None or raw.get(k) == ""]
    if missing:
        raise UserInputError(f"{flag} {path}: missing {', '.join(missing)} (see configs/README.md).")
    unknown = sorted(str(k) for k in raw if k not in PRESET_KEYS)
    if unknown:
        raise UserInputError(f"{flag} {path}: unknown keys {unknown}; allowed: {', '.join(PRESET_KEYS)}.")
    scene = _text(raw, "scene", flag, path, required=True)
    if Path(scene).is_absolute() or Path(scene).drive:
        raise _fail(flag, path, f"scene must be a folder relative to the data root (e.g. llff/leaves), got {scene!r}")
    src_prompt = _text(raw, "src_prompt", flag, path, required=True)
    trg_prompt = _text(raw, "trg_prompt", flag, path, required=True)
    reference = _text(raw, "reference", flag, path, required=False)
    guidance = _guidance(raw.get("guidance"), flag, path)
    region = _region(raw.get("region"), flag, path)
    if src_prompt == trg_prompt:
        raise UserInputError(f"{flag} {path}: src_prompt and trg_prompt are identical.")
    return Preset(
        path=path,
        scene=scene,
        src_prompt=src_prompt,
        trg_prompt=trg_prompt,
        reference=reference,
        guidance=guidance,
        region=region,
        flag=flag,
    )


def apply_preset(config: Any, preset: Preset, data_root: Path = Path("data")) -> None:
    """Fill an editing trainer config from ``preset`` where the command line left the values empty."""
    g = config.pipeline.guidance
    if not g.src_prompt.strip():
        g.src_prompt = preset.src_prompt
    if not g.trg_prompt.strip():
        g.trg_prompt = preset.trg_prompt
    for key, value in preset.guidance.items():
        setattr(g, key, value)
    if config.data is None and config.pipeline.datamanager.data is None:
        config.data = config.pipeline.datamanager.data = preset.data(data_root)
    region = config.pipeline.region
    if preset.region and not region.enabled():  # a region given on the command line wins as a whole
        for key, value in preset.region.items():
            if key == "masks" and not Path(value).is_absolute():
                value = Path(config.data or config.pipeline.datamanager.data or preset.data(data_root)) / value
            setattr(region, key, Path(value) if key == "masks" else value)

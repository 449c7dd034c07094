"""Editing presets: YAML files under ``configs/`` naming a scene, a source and a target prompt, and optional guidance
settings. Used by ``ns-train <method>-edit --pipeline.guidance.preset <file>`` and by ``ids-batch``.

A preset file::

    # IDS paper (Kim et al., CVPR 2025), Fig. 5 and 7
    scene: llff/leaves                  # the data folder, relative to the data root (default: data/)
    src_prompt: The green leaves
    trg_prompt: Yellow and red leaves in autumn
    reference: IDS paper, Fig. 5        # where the prompt pair comes from
    guidance:                           # optional: NerfGuidanceConfig fields (numbers and strings)
      guidance_scale: 7.5

Values given on the command line win: a preset fills the prompts only when ``--pipeline.guidance.src-prompt`` /
``trg-prompt`` are empty and ``--data`` only when it is not given; ``guidance`` values replace the method's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ids_nerf.errors import UserInputError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"
"""The presets shipped in the repository (``configs/``)."""
GUIDANCE_KEYS = ("guidance_scale", "loss_scale", "anchor_weight", "proposal_loss_mult")
"""Guidance fields a preset may set (numbers), besides the prompts."""


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

    @property
    def name(self) -> str:
        """``<scene folder>-<file stem>``-free short name: the file stem (``leaves-autumn``)."""
        return self.path.stem

    def data(self, root: Path) -> Path:
        """The scene's data folder under ``root``."""
        return Path(root) / self.scene


def load_preset(path: Path, flag: str = "--preset") -> Preset:
    """Read and check a preset file; errors name the file, the flag and what to fix."""
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(sorted(p.relative_to(PRESETS_DIR).as_posix() for p in PRESETS_DIR.rglob("*.yaml")))
        raise UserInputError(f"{flag} {path}: no such file. Presets shipped in configs/: {shipped}.")
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserInputError(f"{flag} {path}: not valid YAML ({err}).") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{flag} {path}: expected a mapping with scene, src_prompt and trg_prompt.")
    missing = [k for k in ("scene", "src_prompt", "trg_prompt") if not str(raw.get(k) or "").strip()]
    if missing:
        raise UserInputError(f"{flag} {path}: missing {', '.join(missing)} (see configs/README.md).")
    unknown = sorted(set(raw) - {"scene", "src_prompt", "trg_prompt", "reference", "guidance"})
    if unknown:
        raise UserInputError(
            f"{flag} {path}: unknown keys {unknown}; allowed: scene, src_prompt, trg_prompt, reference, guidance."
        )
    guidance = raw.get("guidance") or {}
    bad = sorted(k for k in guidance if k not in GUIDANCE_KEYS)
    if not isinstance(guidance, dict) or bad:
        raise UserInputError(f"{flag} {path}: guidance may set {', '.join(GUIDANCE_KEYS)} (got {bad or guidance}).")
    if str(raw["src_prompt"]).strip() == str(raw["trg_prompt"]).strip():
        raise UserInputError(f"{flag} {path}: src_prompt and trg_prompt are identical.")
    return Preset(
        path=path,
        scene=str(raw["scene"]),
        src_prompt=str(raw["src_prompt"]).strip(),
        trg_prompt=str(raw["trg_prompt"]).strip(),
        reference=str(raw.get("reference") or ""),
        guidance={k: float(v) for k, v in guidance.items()},
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

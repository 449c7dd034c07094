"""The one table of editing methods: each name's score, FPR on/off, FPR Jacobian variant, default CFG scale and
whether it is an ``ns-train`` method (``<name>-edit``).

Everything that lists methods derives from :data:`METHODS`: the 2D editor's ``--method`` choices, the benchmarks,
the NeRF demo, the nerfstudio method configs and their entry points. Adding a method is one line here (plus, for a
NeRF method, its entry point in ``pyproject.toml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ScoreName = Literal["sds", "dds", "cds", "pds"]
#: The scores FPR can be combined with.
SCORES: tuple[ScoreName, ...] = ("sds", "dds", "cds", "pds")
#: Default CFG scale of each score's edit (the official code of each method).
DEFAULT_GUIDANCE_SCALE: dict[str, float] = {"sds": 7.5, "dds": 7.5, "cds": 7.5, "pds": 100.0}
Jacobian = Literal["exact", "free"]


@dataclass(frozen=True)
class MethodSpec:
    """One editing method."""

    name: str
    """Name used everywhere (`ids`, `dds`, `pds-fpr`, ...)."""
    score: ScoreName
    """Score-distillation loss."""
    fpr: bool
    """Fixed-point regularization on (the IDS module)."""
    description: str
    """One line for --help texts and method lists."""
    jacobian: Jacobian = "exact"
    """FPR's gradient: `exact` (through the UNet, the paper) or `free` (score held constant; opt-in, cheaper)."""
    nerf: bool = False
    """Registered with ns-train as ``<name>-edit``."""

    @property
    def default_guidance_scale(self) -> float:
        """CFG scale of the edit when the user gives none."""
        return DEFAULT_GUIDANCE_SCALE[self.score]

    @property
    def nerf_method(self) -> str:
        """Its ns-train method name."""
        return f"{self.name}-edit"


_BASE = (
    MethodSpec("ids", "dds", True, "IDS: DDS with fixed-point regularization (the paper's method)", nerf=True),
    MethodSpec("dds", "dds", False, "Delta Denoising Score (the baseline of IDS)", nerf=True),
    MethodSpec("cds", "cds", False, "Contrastive Denoising Score: DDS + PatchNCE on self-attention", nerf=True),
    MethodSpec("pds", "pds", False, "Posterior Distillation Sampling", nerf=True),
    MethodSpec("sds", "sds", False, "Score Distillation Sampling", nerf=True),
    MethodSpec("pds-fpr", "pds", True, "PDS with IDS's fixed-point regularization", nerf=True),
    MethodSpec("sds-fpr", "sds", True, "SDS with fixed-point regularization"),
    MethodSpec("cds-fpr", "cds", True, "CDS with fixed-point regularization"),
    MethodSpec("dds-fpr", "dds", True, "DDS with fixed-point regularization (the same as ids)"),
)
#: Every method by name, in a stable order: the base table, then the Jacobian-free variants of the FPR methods.
METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        *_BASE,
        *(
            MethodSpec(f"{m.name}-jf", m.score, True, f"{m.description}, Jacobian-free FPR (opt-in)", "free")
            for m in _BASE
            if m.fpr
        ),
    )
}
#: ns-train method name -> method, for the NeRF methods.
NERF_METHODS: dict[str, MethodSpec] = {m.nerf_method: m for m in METHODS.values() if m.nerf}

_ITERATIONS = re.compile(r"^(?P<base>.+)-n(?P<n>\d+)$")


def parse_method(name: str) -> tuple[MethodSpec, int | None]:
    """A method name, optionally with ``-nN`` (N FPR iterations, e.g. ``ids-n1``) -> (spec, N or None).

    Raises ``KeyError`` with the known names for an unknown one.
    """
    match = _ITERATIONS.match(name)
    if match and match["base"] in METHODS and METHODS[match["base"]].fpr:
        return METHODS[match["base"]], int(match["n"])
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)} (FPR methods also as <name>-nN)")
    return METHODS[name], None


def method_name(score: str, fpr: bool, jacobian: str = "exact") -> str:
    """The registered name of a (score, FPR, Jacobian) combination (``ids`` for dds + FPR)."""
    for m in METHODS.values():
        if (m.score, m.fpr, m.jacobian if fpr else "exact") == (score, fpr, jacobian if fpr else "exact"):
            return m.name
    raise KeyError(f"no method with score {score!r}, fpr={fpr}, jacobian={jacobian!r}")

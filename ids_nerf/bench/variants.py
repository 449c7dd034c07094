"""Method names with run settings, shared by the benchmarks: ``<method>[-kK][-rR][-region]``.

Not methods of the registry (:mod:`ids_nerf.guidance.methods`): ``-kK`` computes the source side K steps ahead in
one batch (``--source.lookahead K``, exact), ``-rR`` reuses a pool of P = steps / R source sides per source
(``--source.pool P``, reuse factor R, approximate) and ``-region`` restricts each edit to its region (the 2D
editor's ``--mask``; the benchmark says what the region of an edit is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ids_nerf.errors import UserInputError
from ids_nerf.guidance.config import GuidanceConfig, SourceSideConfig, guidance_config

_VARIANT = re.compile(r"^(?P<method>.+?)(?:-k(?P<k>\d+))?(?:-r(?P<r>\d+))?(?P<region>-region)?$")


@dataclass(frozen=True)
class RunVariant:
    """A method run with source-side settings and optionally restricted to a region: ``<method>[-kK][-rR][-region]``."""

    name: str
    """As given on the command line."""
    method: str
    """Registered method (with an optional ``-nN``)."""
    lookahead: int = 1
    """K of ``-kK`` (1: in each step)."""
    reuse: int | None = None
    """R of ``-rR`` (None: no pool)."""
    region: bool = False
    """``-region``: each edit restricted to its region."""

    @property
    def base(self) -> str:
        """The same run without ``-region`` (what a region run is compared with)."""
        return self.name.removesuffix("-region")

    def pool_size(self, edit_steps: int) -> int | None:
        """P = edit_steps / R (at least 1), None without a pool."""
        return None if self.reuse is None else max(1, round(edit_steps / self.reuse))

    def guidance(self, edit_steps: int) -> GuidanceConfig:
        """The method's configuration with these source-side settings."""
        config = guidance_config(self.method)
        config.source = SourceSideConfig(lookahead=self.lookahead, pool=self.pool_size(edit_steps))
        return config


def parse_variant(name: str) -> RunVariant:
    """``ids-k8`` -> RunVariant(method="ids", lookahead=8); raises UserInputError for an unknown method, K < 1,
    R < 1 or settings the method's score cannot use."""
    match = _VARIANT.match(name)
    assert match is not None  # the pattern matches every non-empty name
    variant = RunVariant(
        name,
        match["method"],
        int(match["k"]) if match["k"] else 1,
        int(match["r"]) if match["r"] else None,
        bool(match["region"]),
    )
    if variant.lookahead < 1 or (variant.reuse is not None and variant.reuse < 1):
        raise UserInputError(f"--methods {name}: -kK and -rR need K >= 1 and R >= 1.")
    config = variant.guidance(1)  # raises for an unknown method
    try:
        config.source.check(config.score)
    except UserInputError as err:
        raise UserInputError(f"--methods {name}: {err}") from None
    return variant

"""Named priors: short names (``toy``, ``tiny``) for diffusion models that a package builds or ships itself.

The guidance library resolves them without importing the packages that provide them: providers register a
:class:`NamedPrior` under the entry-point group ``ids_nerf.named_priors`` (this project's toy world registers
``toy`` and ``tiny`` in ``pyproject.toml``), or call :func:`register_named_prior` at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "ids_nerf.named_priors"


@dataclass(frozen=True)
class NamedPrior:
    """A diffusers Stable Diffusion folder known by a short name."""

    name: str
    """The name users pass as the prior's model."""
    description: str
    """One line for help texts."""
    path: Callable[[], Path]
    """Returns the diffusers folder, building it on first use where it is built rather than shipped."""
    unavailable: Callable[[], str | None]
    """None when :attr:`path` can succeed, else why not (e.g. weights missing from this installation)."""


_REGISTERED: dict[str, NamedPrior] = {}


def register_named_prior(prior: NamedPrior) -> None:
    """Make ``prior.name`` resolvable (overrides an entry point of the same name)."""
    _REGISTERED[prior.name] = prior


def named_priors() -> dict[str, NamedPrior]:
    """Every named prior: the entry points of :data:`ENTRY_POINT_GROUP`, then those registered at run time."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    priors = {name: ep.load() for name, ep in found.items() if name not in _REGISTERED}
    return {**priors, **_REGISTERED}


def named_prior(name: str) -> NamedPrior | None:
    """The named prior ``name``, or None when no provider registered it (entry points are loaded only on a hit)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return ep.load()
    return None

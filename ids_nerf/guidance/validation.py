"""One validation of the numeric options of every entry point, run before anything loads.

:data:`RANGES` declares, in one place, the allowed range of each numeric field of the guidance and optimisation
configs (:class:`~ids_nerf.guidance.config.GuidanceConfig` and its subclasses, FPR, CDS, PDS, the source side, the
2D editor's optimisation) and of the console scripts' own counts. :func:`check_config` walks a config dataclass and
its nested dataclasses and raises a :class:`~ids_nerf.errors.UserInputError` for the first number that is not
finite (refused everywhere, declared or not) or out of its range, naming the flag as tyro spells it under the
``prefix`` the caller gives: ``--`` for ``ids-edit-image`` (``--fpr.iterations``, ``--t-range``) and
``--pipeline.guidance.`` under ``ns-train`` (``--pipeline.guidance.fpr.iterations``). :func:`check_number` is the
same check for one value (``--max-num-iterations``, ``--edit-steps``).

Ranges are looked up by the name of the config class (or of a base class: ``NerfGuidanceConfig`` gets
``GuidanceConfig``'s ranges too) and field, so this module imports no config module, no torch and no nerfstudio.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ids_nerf.errors import UserInputError


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option (every bound inclusive unless ``*_open``); non-finite never is."""

    low: float | None = None
    """Lower bound (None: none)."""
    high: float | None = None
    """Upper bound (None: none)."""
    low_open: bool = False
    """The lower bound itself is excluded (``> low``)."""
    high_open: bool = False
    """The upper bound itself is excluded (``< high``)."""
    hint: str = ""
    """What the option means or a typical value, appended to the message."""

    def contains(self, value: float) -> bool:
        """``value`` lies in the range."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1]`` ..."""
        low = None if self.low is None else ("> " if self.low_open else ">= ") + _num(self.low)
        high = None if self.high is None else ("< " if self.high_open else "<= ") + _num(self.high)
        if low and high:
            return f"{low} and {high}"
        return low or high or "a finite number"


@dataclass(frozen=True)
class Interval(Range):
    """A pair ``lo hi`` (two values given after one flag) with ``lo < hi``, both in the range."""


@dataclass(frozen=True)
class Each(Range):
    """A tuple of values, each in the range; ``nonempty``: at least one value."""

    nonempty: bool = True
    """At least one value must be given."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def at_least(n: float, hint: str = "") -> Range:
    """``>= n``."""
    return Range(low=n, hint=hint)


def positive(hint: str = "") -> Range:
    """``> 0``."""
    return Range(low=0, low_open=True, hint=hint)


RANGES: dict[str, dict[str, Range]] = {
    "GuidanceConfig": {
        "guidance_scale": at_least(0, "the classifier-free guidance scale, e.g. 7.5 (PDS: 100)"),
        "t_range": Interval(
            low=0, high=1, hint="fractions of the prior's training timesteps, e.g. 0.05 0.95 (t from 50 to 948)"
        ),
        "max_nonfinite_steps": at_least(1),
    },
    "NerfGuidanceConfig": {
        "loss_scale": positive("e.g. 1.0"),
        "anchor_weight": at_least(0, "0 = no RGB anchoring"),
        "proposal_loss_mult": at_least(0),
    },
    "FPRConfig": {
        "iterations": at_least(0, "paper default 3; 0 leaves the noise unchanged"),
        "step_size": positive("paper default 1.0"),
        "source_guidance_scale": at_least(0, "official code: 7.5"),
    },
    "CDSConfig": {
        "weight": at_least(0, "official 3.0; 0 = no PatchNCE term"),
        "patch_sizes": Each(low=1, hint="official: 1 2"),
        "n_patches": at_least(1, "official 256"),
        "temperature": positive("official 0.07"),
    },
    "PDSConfig": {
        "num_inference_steps": Range(low=2, high=1000, hint="official 500; at most the prior's 1000 training steps"),
        "grid_range": Interval(low=0, high=1, hint="fractions of the DDIM grid, official 0.02 0.98"),
    },
    "SourceSideConfig": {
        "lookahead": at_least(1, "1 computes the source side in each step"),
        "pool": at_least(1, "or None for no reuse"),
    },
    "EditRenderConfig": {
        "resolution": at_least(8, "the long side in pixels, or None for the prior's resolution"),
        "chunk_size": at_least(1, "rays rendered at once, e.g. 4096"),
        "downscale": at_least(1, "1 = full resolution"),
        "view_repeat": at_least(1, "official PDS: 10"),
    },
    "OptimConfig": {
        "steps": at_least(0, "official 200"),
        "lr": positive("official 0.1"),
        "loss_scale": positive("official 2000/(64*64)"),
    },
    "EditImageConfig": {
        "trajectory_frames": at_least(1),
        "mask_feather": at_least(0.0),
    },
    "IdentityBenchConfig": {
        "n_per_kind": at_least(1, "20 gives the 60-edit suite"),
        "batch_size": at_least(1),
        "bg_window": at_least(1, "IDS supplementary: 30"),
        "n_bootstrap": at_least(1, "e.g. 2000"),
        "grid_edits": at_least(0),
    },
    "SpeedBenchConfig": {
        "repeats": at_least(1, "timed steps per method, e.g. 10"),
        "warmup": at_least(0),
        "edit_steps": at_least(0, "0 skips the whole-edit timing"),
        "threads": at_least(1),
    },
    "NerfDemoConfig": {
        "image_size": at_least(8, "the toy prior works at 64"),
        "n_train_views": at_least(1),
        "recon_steps": at_least(1, "e.g. 800"),
        "edit_steps": at_least(1, "e.g. 150"),
        "render_downscale": at_least(1, "1 = full resolution"),
        "threads": at_least(1, "1 is fastest at the demo's sizes"),
    },
    "BatchConfig": {
        "recon_steps": at_least(1),
        "edit_steps": at_least(1),
        "save_every": at_least(1),
        "n_bootstrap": at_least(1),
        "render_resolution": at_least(1),
        "threads": at_least(1),
    },
    "RayConfig": {
        "cpus_per_edit": positive(),
        "gpus_per_edit": at_least(0, "fractions share a GPU"),
        "memory_per_edit_gb": positive(),
        "max_retries": at_least(0),
        "local_cpus": at_least(0),
        "local_gpus": at_least(0),
    },
}
"""Per config class name: the range of each numeric field (fields of its base classes are looked up there too).
A numeric field without an entry must only be finite."""

ANY_CONFIG: dict[str, Range] = {"seed": at_least(0)}
"""Ranges of fields with these names in any config class (numpy refuses negative seeds)."""


def flag_name(prefix: str, name: str) -> str:
    """The flag tyro makes of field ``name`` under ``prefix``: ``flag_name("--fpr.", "step_size")`` is
    ``--fpr.step-size``."""
    return prefix + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value) if value else "nothing"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _refuse(flag: str, value: Any, rule: str, hint: str) -> UserInputError:
    return UserInputError(f"{flag} must be {rule} (got {_shown(value)})" + (f"; {hint}." if hint else "."))


def check_number(value: Any, flag: str, allowed: Range | None = None) -> None:
    """Raise a UserInputError naming ``flag`` unless ``value`` (a number, or a tuple of them) is finite and in
    ``allowed`` (an :class:`Interval` or :class:`Each` for a tuple; None: finite only)."""
    hint = allowed.hint if allowed is not None else ""
    values = list(value) if isinstance(value, tuple | list) else [value]
    numbers = [v for v in values if _is_number(v)]
    if any(not math.isfinite(v) for v in numbers):
        rule = allowed.describe() if allowed is not None else "a finite number"
        raise _refuse(flag, value, rule if "finite" in rule else f"finite and {rule}", hint)
    if allowed is None or (not numbers and not isinstance(allowed, Each)):
        return
    if isinstance(allowed, Interval):
        fractions = (allowed.low, allowed.high, allowed.low_open, allowed.high_open) == (0, 1, False, False)
        rule = "0 <= lo < hi <= 1" if fractions else f"two values lo < hi, each {allowed.describe()}"
        ok = len(numbers) == 2 and numbers[0] < numbers[1] and all(allowed.contains(v) for v in numbers)
        if not ok:
            raise _refuse(flag, value, rule, hint)
        return
    if isinstance(allowed, Each):
        if allowed.nonempty and not numbers:
            raise _refuse(flag, value, f"one or more values, each {allowed.describe()}", hint)
        if any(not allowed.contains(v) for v in numbers):
            raise _refuse(flag, value, f"each {allowed.describe()}", hint)
        return
    if not allowed.contains(numbers[0]):
        raise _refuse(flag, value, allowed.describe(), hint)


def field_range(config: Any, name: str) -> Range | None:
    """The declared range of field ``name`` of ``config`` (its class or a base class, then :data:`ANY_CONFIG`)."""
    for cls in type(config).__mro__:
        found = RANGES.get(cls.__name__, {}).get(name)
        if found is not None:
            return found
    return ANY_CONFIG.get(name)


def check_config(config: Any, prefix: str = "--") -> None:
    """Walk the dataclass ``config`` and its nested dataclasses; raise a UserInputError for the first number that
    is not finite or out of its :data:`RANGES` entry, naming the flag under ``prefix`` (``--``,
    ``--pipeline.guidance.``, ``--optim.``). Non-numeric fields (strings, paths, flags) are left alone."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value, flag_name(prefix, f.name) + ".")
            continue
        is_numeric = _is_number(value) or (
            isinstance(value, tuple | list) and value and all(_is_number(v) for v in value)
        )
        allowed = field_range(config, f.name)
        if is_numeric or (isinstance(allowed, Each) and isinstance(value, tuple | list)):
            check_number(value, flag_name(prefix, f.name), allowed)


def check_guidance(config: Any, prefix: str = "--") -> None:
    """:func:`check_config` of a :class:`~ids_nerf.guidance.config.GuidanceConfig` (or a subclass, e.g. the NeRF
    pipeline's ``NerfGuidanceConfig``): every option of the score, FPR, CDS, PDS and the source side."""
    check_config(config, prefix)

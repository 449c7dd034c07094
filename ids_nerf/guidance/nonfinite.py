"""Non-finite guidance: counted, warned about once, and stopped after a run of consecutive steps.

A score whose gradient holds NaN/Inf (a diverged latent, an overflowing half-precision prior, absurd guidance
scales) used to be turned into zeros silently. Now :func:`ids_nerf.guidance.scores.finite_grad` still zeroes the
gradient of each affected sample (the step is skipped for it, the edit is not poisoned) but reports which samples
it zeroed; :class:`NonFiniteMonitor` (one per :class:`~ids_nerf.guidance.distiller.ScoreDistiller`) counts them in
the step diagnostics (``nonfinite``), warns at the first such step and raises :class:`NonFiniteGuidanceError` after
``max_nonfinite_steps`` consecutive ones.
"""

from __future__ import annotations

import warnings

from ids_nerf.errors import UserError


class NonFiniteGuidanceError(UserError, FloatingPointError):
    """Too many consecutive guidance steps gave a non-finite (NaN/Inf) gradient; the message says what to try.

    A :class:`~ids_nerf.errors.UserError`: console scripts print it as ``<prog>: error: <message>`` and exit with
    code 2, and write no output."""

    def __init__(self, message: str, *, steps: int, first_step: int, last_step: int) -> None:
        super().__init__(message)
        self.steps = steps
        """Consecutive non-finite steps when it stopped."""
        self.first_step = first_step
        """Index (0-based, counting the distiller's steps) of the first of them."""
        self.last_step = last_step
        """Index of the last of them (the step that stopped the run)."""


class NonFiniteGuidanceWarning(RuntimeWarning):
    """The first guidance step with a non-finite gradient (printed once per edit)."""


class NonFiniteMonitor:
    """Counts the steps of one edit whose gradient was non-finite for some samples.

    ``flag_prefix``: how the guidance options are spelled on the command line (``--`` for ``ids-edit-image``,
    ``--pipeline.guidance.`` under ``ns-train``; None where they are not options, e.g. the benchmarks), so that the
    error names ``<prefix>guidance-scale``, ``<prefix>prior.dtype`` and ``<prefix>max-nonfinite-steps``;
    ``lr_flag``: the learning-rate flag (``--optim.lr``), if any."""

    def __init__(self, flag_prefix: str | None = "--", lr_flag: str | None = None) -> None:
        self.flag_prefix = flag_prefix
        self.lr_flag = lr_flag
        self.steps = 0
        """Steps seen."""
        self.total = 0
        """Steps with a non-finite gradient (for some sample), in all."""
        self.run = 0
        """Consecutive such steps up to the last one seen."""
        self.warned = False
        """The warning was printed."""

    def update(self, samples: int, batch: int, limit: int, scale: float, dtype: object = None) -> None:
        """Record one step in which ``samples`` of ``batch`` samples had a non-finite gradient (0: a finite step);
        warn at the first such step, raise :class:`NonFiniteGuidanceError` when ``limit`` are consecutive."""
        index = self.steps
        self.steps += 1
        if samples == 0:
            self.run = 0
            return
        self.total += 1
        self.run += 1
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"guidance step {index}: the gradient of {samples} of {batch} sample(s) was non-finite (NaN/Inf) and "
                f"was skipped (set to zero); {limit} consecutive such steps stop the edit.",
                NonFiniteGuidanceWarning,
                stacklevel=3,
            )
        if self.run >= limit:
            raise NonFiniteGuidanceError(
                self.message(limit, scale, dtype), steps=self.run, first_step=index - self.run + 1, last_step=index
            )

    def message(self, limit: int, scale: float, dtype: object = None) -> str:
        """What happened and what to try, naming the flags this monitor knows."""
        p = self.flag_prefix
        first, last = self.steps - self.run, self.steps - 1
        dtype_name = str(dtype).replace("torch.", "") if dtype is not None else None
        now = f"now {scale:g}"
        tries = [
            f"a lower guidance scale ({p}guidance-scale; {now})" if p else f"a lower guidance scale ({now})",
            f"a lower learning rate ({self.lr_flag})" if self.lr_flag else "a lower learning rate",
        ]
        if dtype_name in ("float16", "bfloat16"):
            tries.append(f"the prior in float32 ({p}prior.dtype float32)" if p else "the prior in float32")
        tries.append("another seed")
        limit_text = f"{p}max-nonfinite-steps {limit}" if p else f"limit {limit}"
        return (
            f"the guidance gradient was non-finite (NaN/Inf) in {self.run} consecutive steps (steps {first} to {last}; "
            f"{limit_text}), so the edit was stopped: the latent or the prior's prediction"
            + (f" (in {dtype_name})" if dtype_name else "")
            + f" diverged. Try {', '.join(tries[:-1])} or {tries[-1]}."
        )

"""Bootstrap intervals shared by the benchmarks: ``ids-bench-identity`` (edits of one suite) and ``ids-batch``
(edits of several scenes and seeds).

- :func:`bootstrap_ci`: mean and percentile 95% interval of independent values;
- :func:`grouped_bootstrap_ci`: the same for values in groups (runs of a scene with several seeds): the groups are
  resampled, then the values within each picked group, and the statistic is the mean of the group means (each
  scene weighs the same, whatever its number of finished seeds);
- :func:`paired_differences`: per-unit differences ``method - baseline`` (same edit, or same scene and seed), with
  either interval.

NaN marks a missing value (a failed run): it is dropped, from a pair together with its partner.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean and percentile 95% bootstrap interval (NaNs dropped)."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    means = rng.choice(v, size=(n_boot, v.size), replace=True).mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def grouped_bootstrap_ci(
    values: np.ndarray, groups: Sequence[object], n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Mean of the group means and a two-stage percentile 95% bootstrap interval (NaNs dropped).

    Each resample draws as many groups as there are, with replacement, then within each drawn group as many values
    as it has, with replacement. With one group this is :func:`bootstrap_ci` of its values; with one value per group
    it is :func:`bootstrap_ci` of the group values. The interval then covers both the spread between groups (scenes)
    and within them (seeds), as a sample of groups and seeds should.
    """
    values = np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    labels = [g for g, k in zip(groups, keep, strict=True) if k]
    v = values[keep]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    members = [v[[i for i, g in enumerate(labels) if g == label]] for label in dict.fromkeys(labels)]
    point = float(np.mean([m.mean() for m in members]))
    n = len(members)
    picks = rng.integers(0, n, size=(n_boot, n)) if n > 1 else np.zeros((n_boot, 1), dtype=int)
    means = np.empty(n_boot)
    for b in range(n_boot):
        means[b] = np.mean([rng.choice(members[g], size=members[g].size, replace=True).mean() for g in picks[b]])
    return point, float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_differences(
    rows: dict[str, list[dict]],
    baseline: str,
    metrics: Sequence[str],
    n_boot: int,
    seed: int,
    methods: Sequence[str] | None = None,
    groups: Sequence[object] | None = None,
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per-unit differences ``method - baseline`` (``rows[m][i]``: the metrics of unit ``i``, the same unit for every
    method), mean and 95% bootstrap interval per metric.

    ``methods``: those to compare (default: every other one); ``groups``: a label per unit (its scene) for
    :func:`grouped_bootstrap_ci`, else the units are resampled independently (:func:`bootstrap_ci`). Each method's
    resamples come from their own random stream, seeded by ``seed`` and the pair's names. Empty when ``baseline``
    is not in ``rows``.
    """
    if baseline not in rows:
        return {}
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for method in methods if methods is not None else list(rows):
        if method == baseline:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(f"{method}-{baseline}".encode())])
        out[method] = {}
        for name in metrics:
            diff = np.array(
                [
                    _number(m.get(name)) - _number(b.get(name))
                    for m, b in zip(rows[method], rows[baseline], strict=True)
                ],
                dtype=float,
            )
            out[method][name] = (
                bootstrap_ci(diff, n_boot, rng) if groups is None else grouped_bootstrap_ci(diff, groups, n_boot, rng)
            )
    return out


def _number(value: object) -> float:
    """A metric value as a float; None (not measured) is NaN."""
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]

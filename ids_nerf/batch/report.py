"""The comparison of ``ids-batch``: per method the mean over scenes and seeds with a bootstrap interval, paired
differences to a reference method, the per-scene table, and the failed rows."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from ids_nerf import stats

COLUMNS = (
    ("clip_text", "CLIP text", "higher"),
    ("clip_direction", "CLIP direction", "higher"),
    ("lpips", "LPIPS", "lower"),
    ("bg_psnr", "bg PSNR", "higher"),
    ("depth_change", "depth change", "lower"),
)
"""Table columns: (metrics.json key, header, better)."""
METRICS = tuple(k for k, _, _ in COLUMNS)
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap resamples (the same runs always give the same intervals)."""


def _value(row: dict[str, Any], key: str) -> float:
    means = row.get("means") if row.get("status") == "ok" else None
    value = None if means is None else means.get(key)
    return float("nan") if value is None else float(value)


def summarize(
    rows: list[dict[str, Any]],
    presets: list[str],
    methods: tuple[str, ...],
    seeds: tuple[int, ...],
    reference: str | None,
    n_boot: int,
) -> dict[str, Any]:
    """Numbers of the comparison from the rows (one per preset, method and seed; failed rows count as missing).

    - ``summary[method][metric]``: (mean, low, high): the mean of the per-scene means over seeds, with a two-stage
      bootstrap interval (scenes resampled, then seeds within each), :func:`ids_nerf.stats.grouped_bootstrap_ci`;
      ``runs[method]``: the finished runs it is over;
    - ``paired[method][metric]``: ``method - reference`` per (scene, seed) where both finished, same interval;
      ``pairs[method]``: how many pairs;
    - ``per_scene[preset][method]``: ``means`` over the finished seeds, ``finished`` and ``seeds`` counts.
    """
    by_key = {(r["preset"], r["method"], r["seed"]): r for r in rows}
    units = [(p, s) for p in presets for s in seeds]
    summary: dict[str, Any] = {}
    runs: dict[str, int] = {}
    for method in methods:
        rng = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(method.encode())])  # independent of the others
        mine = [by_key.get((p, method, s), {}) for p, s in units]
        runs[method] = sum(r.get("status") == "ok" for r in mine)
        groups = [p for p, _ in units]
        summary[method] = {
            k: stats.grouped_bootstrap_ci(np.array([_value(r, k) for r in mine]), groups, n_boot, rng) for k in METRICS
        }
    paired: dict[str, Any] = {}
    pairs: dict[str, int] = {}
    if reference is not None:
        table = {m: [{k: _value(by_key.get((p, m, s), {}), k) for k in METRICS} for p, s in units] for m in methods}
        paired = stats.paired_differences(
            table, reference, METRICS, n_boot, BOOTSTRAP_SEED, groups=[p for p, _ in units]
        )
        ok = {m: [by_key.get((p, m, s), {}).get("status") == "ok" for p, s in units] for m in methods}
        pairs = {m: sum(a and b for a, b in zip(ok[m], ok[reference], strict=True)) for m in paired}
    per_scene: dict[str, Any] = {}
    for p in presets:
        per_scene[p] = {}
        for method in methods:
            mine = [by_key.get((p, method, s), {}) for s in seeds]
            finished = [r for r in mine if r.get("status") == "ok"]
            means = {}
            for k in METRICS:
                values = [_value(r, k) for r in finished]
                values = [v for v in values if not np.isnan(v)]
                means[k] = float(np.mean(values)) if values else None
            per_scene[p][method] = {"means": means, "finished": len(finished), "seeds": len(seeds)}
    return {
        "summary": summary,
        "runs": runs,
        "reference": reference,
        "paired": paired,
        "pairs": pairs,
        "per_scene": per_scene,
    }


def _num(x: float) -> str:
    return "-" if x is None or np.isnan(x) else f"{x:.4g}"


def _ci(ci: tuple[float, float, float]) -> str:
    mean, lo, hi = ci
    return "-" if np.isnan(mean) else f"{mean:.4g} [{lo:.4g}, {hi:.4g}]"


def _arrow(better: str) -> str:
    return "↑" if better == "higher" else "↓"


def markdown(
    numbers: dict[str, Any],
    rows: list[dict[str, Any]],
    presets: list[str],
    methods: tuple[str, ...],
    seeds: tuple[int, ...],
    n_boot: int,
) -> str:
    """comparison.md: per method (interval), paired to the reference, per scene, then the failed rows."""
    failed = [r for r in rows if r["status"] != "ok"]
    n = len(presets) * len(methods) * len(seeds)
    plural = "s" if len(seeds) > 1 else ""
    lines = [
        f"{len(presets)} presets x {len(methods)} methods x {len(seeds)} seed{plural} ({' '.join(map(str, seeds))}): "
        f"{n} edits, {n - len(failed)} finished, {len(failed)} failed.",
        "",
        f"Per method: mean over scenes and seeds [95% bootstrap interval; scenes resampled, then seeds within each "
        f"scene; {n_boot} resamples].",
        "",
        "| method | runs | " + " | ".join(f"{h} ({_arrow(b)})" for _, h, b in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for m in methods:
        cells = [_ci(numbers["summary"][m][k]) for k in METRICS]
        lines.append(f"| {m} | {numbers['runs'][m]} | " + " | ".join(cells) + " |")
    ref = numbers["reference"]
    if ref is not None and numbers["paired"]:
        lines += [
            "",
            f"Paired difference to {ref} (same scene and seed; mean [95% bootstrap interval]; > 0: higher than {ref}).",
            "",
            "| method | pairs | " + " | ".join(f"{h} ({_arrow(b)})" for _, h, b in COLUMNS) + " |",
            "|---|---|" + "---|" * len(COLUMNS),
        ]
        for m, d in numbers["paired"].items():
            cells = [_ci(d[k]) for k in METRICS]
            lines.append(f"| {m} - {ref} | {numbers['pairs'][m]} | " + " | ".join(cells) + " |")
    lines += ["", "Per scene (mean over seeds; (k/n): only k of the n seeds finished).", ""]
    head = ["method"] + [f"{p}: {h} ({_arrow(b)})" for p in presets for _, h, b in COLUMNS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m]
        for p in presets:
            cell = numbers["per_scene"][p][m]
            if cell["finished"] == 0:
                cells += ["failed"] * len(COLUMNS)
                continue
            note = "" if cell["finished"] == cell["seeds"] else f" ({cell['finished']}/{cell['seeds']})"
            cells += [_num(cell["means"][k]) + note for k in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", f"Failed ({len(failed)}):", ""]
        lines += [f"- {failure_line(r)}" for r in failed]
    text = "\n".join(lines) + "\n"
    if any(r.get("random_weights") for r in rows if r["status"] == "ok"):
        text += "\nRANDOM-WEIGHT CLIP/LPIPS: the CLIP and LPIPS numbers are NOT meaningful.\n"
    return text


def failure_line(row: dict[str, Any]) -> str:
    """One line per failed row: what, why, the run folder and the log file."""
    reason = " ".join(str(row["reason"]).split())
    return (
        f"{row['preset']} {row['method']} seed {row['seed']}: {reason} "
        f"(run: {row.get('run') or '-'}; log: {row.get('log') or '-'})"
    )

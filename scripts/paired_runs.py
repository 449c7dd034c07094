"""Paired per-edit differences between two ``ids-bench-identity`` runs of the same suite (e.g. ``--optim.steps 100``
against 200): ``python scripts/paired_runs.py <run A>/results.json <run B>/results.json [methods ...]`` prints, per
method in both, the mean and 95% bootstrap interval of B - A for every metric, as Markdown rows."""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np

from ids_nerf.bench.identity_suite import METRICS, bootstrap_ci


def main(a_path: str, b_path: str, *methods: str) -> None:
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    if [(e["src_prompt"], e["trg_prompt"]) for e in a["edits"]] != [
        (e["src_prompt"], e["trg_prompt"]) for e in b["edits"]
    ]:
        raise SystemExit("the two runs edited different suites (same --seed and --n-per-kind needed)")
    common = [m for m in a["summary"] if m in b["summary"] and (not methods or m in methods)]
    print("| method (B - A) | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for m in common:
        rng = np.random.default_rng([0, zlib.crc32(m.encode())])
        cells = []
        for k in METRICS:
            diff = np.array([eb[m][k] - ea[m][k] for ea, eb in zip(a["edits"], b["edits"], strict=True)], dtype=float)
            mean, lo, hi = bootstrap_ci(diff, 2000, rng)
            cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])

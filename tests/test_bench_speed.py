"""ids-bench-speed on the tiny model: well-formed output (no timing assertions)."""

from __future__ import annotations

import json

from ids_nerf.bench.speed import SpeedBenchConfig, markdown, run
from ids_nerf.guidance.prior import PriorConfig


def test_speed_bench_produces_a_table_and_json(tmp_path, tiny_prior_dir):
    out = tmp_path / "speed.json"
    cfg = SpeedBenchConfig(
        prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
        methods=("dds", "ids-n1", "ids-jf", "pds"),
        repeats=2,
        warmup=1,
        edit_steps=2,
        out=out,
    )
    result = run(cfg)
    names = [r["method"] for r in result["rows"]]
    # ids-jf (Jacobian-free FPR) has no official counterpart: no reference row for it
    assert names == ["dds", "ids-n1", "ids-jf", "pds", "dds (reference)", "ids N=1 (reference)"]
    for r in result["rows"]:
        assert r["median_s"] > 0 and r["tflop_per_step"] > 0 and r["peak_mem_gb"] > 0
    ids_row = next(r for r in result["rows"] if r["method"] == "ids-n1")
    dds_row = next(r for r in result["rows"] if r["method"] == "dds")
    assert ids_row["tflop_per_step"] > 1.5 * dds_row["tflop_per_step"]  # FPR adds a forward+backward
    assert all(v < 1e-3 for v in result["reference_max_abs_diff"].values())  # same edit as the official form
    assert json.loads(out.read_text())["info"]["device"] == "cpu"
    table = markdown(result)
    assert "| ids-n1 |" in table and "ratio to dds" in table

"""ids-bench-speed on the tiny model: well-formed output (no timing assertions)."""

from __future__ import annotations

import json

import pytest

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


def test_source_side_variants_are_timed_side_by_side(tiny_prior_dir):
    cfg = SpeedBenchConfig(
        prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
        methods=("dds", "ids-n1", "ids-n1-k3", "ids-n1-r2", "ids-n1-k2-r4"),
        reference=False,
        repeats=2,
        warmup=1,
        edit_steps=4,
    )
    result = run(cfg)
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == list(cfg.methods)  # no reference rows
    assert [(rows[m]["lookahead"], rows[m]["pool"]) for m in cfg.methods] == [
        ("auto", None),  # a bare name runs the default, the automatic look-ahead
        ("auto", None),
        (3, None),
        ("auto", 2),  # P = edit_steps / R
        (2, 1),
    ]
    for r in rows.values():
        assert r["median_s"] > 0 and r["edit_s"] > 0 and r["edit_ratio_to_dds"] > 0 and r["tflop_per_step"] > 0
    assert rows["ids-n1-r2"]["tflop_per_step"] < rows["ids-n1"]["tflop_per_step"]  # a reused step: target only
    table = markdown(result)
    assert "| ids-n1-k3 |" in table and "edit ratio to dds" in table and "ids-n1-r2 P=2" in table


def test_variant_names():
    from ids_nerf.bench.variants import RunVariant, parse_variant
    from ids_nerf.errors import UserInputError

    assert parse_variant("ids-k8") == RunVariant("ids-k8", "ids", 8, None)
    assert parse_variant("ids-n1-r4") == RunVariant("ids-n1-r4", "ids-n1", 1, 4)
    assert parse_variant("pds-fpr-k2-r2") == RunVariant("pds-fpr-k2-r2", "pds-fpr", 2, 2)
    assert parse_variant("ids-jf") == RunVariant("ids-jf", "ids-jf", 1, None)
    assert parse_variant("ids-r8").guidance(200).source.pool == 25
    for bad, match in (("ids-k0", "K >= 1"), ("cds-k4", "not available for cds"), ("idss-k2", "Unknown method")):
        with pytest.raises(UserInputError, match=match):
            parse_variant(bad)

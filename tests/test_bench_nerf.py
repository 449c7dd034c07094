"""ids-bench-nerf on a small generated 4:3 scene with the tiny prior: phases, sizes and files (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from ids_nerf.bench.nerf import NerfBenchConfig, markdown, run
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.profiling import phase, record_phases


def test_nerf_bench_times_every_phase_of_both_methods(tmp_path, tiny_prior_dir):
    cfg = NerfBenchConfig(
        prior=PriorConfig(model=str(tiny_prior_dir)),
        views=3,
        width=80,
        height=60,
        small_nerfacto=True,
        render_chunk_size=4096,
        steps=1,
        warmup=1,
        device="cpu",
        out=tmp_path / "bench",
    )
    result = run(cfg)
    dds, ids = result["rows"]
    assert (dds["method"], ids["method"]) == ("dds-edit", "ids-edit")
    for row in (dds, ids):
        assert row["render_size"] == [128, 96] and row["latent_shape"] == [4, 12, 16]
        assert row["chunks_per_view"] == 3
        for name in ("render (no grad)", "vae encode", "guidance branches", "vae backward", "scene backward (chunked)"):
            assert row["phases"][name]["s_per_step"] > 0 and row["phases"][name]["peak_gb"] > 0
        assert row["median_s"] >= sum(p["s_per_step"] for k, p in row["phases"].items() if k != "other") * 0.999
    assert "fpr" in ids["phases"] and "fpr" not in dds["phases"]
    assert ids["phases"]["fpr"]["calls_per_step"] == 1
    saved = json.loads((tmp_path / "bench" / "bench_nerf.json").read_text())
    assert saved["info"]["device"] == "cpu" and len(saved["rows"]) == 2 and saved["complete"]
    table = (tmp_path / "bench" / "bench_nerf.md").read_text()
    assert table == markdown(result) and "| fpr |" in table and "128x96" in table


def test_nerf_bench_keeps_what_it_measured_when_stopped(tmp_path, tiny_prior_dir, monkeypatch):
    """The files are rewritten after each method: a run stopped in its second method (the GPU check's time limit)
    leaves the first method's row, marked partial."""
    import ids_nerf.bench.nerf as bench

    real, calls = bench._time_method, []

    def first_then_stop(*args, **kwargs):
        calls.append(args[1])
        if len(calls) > 1:
            raise RuntimeError("stopped")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "_time_method", first_then_stop)
    cfg = NerfBenchConfig(
        methods=("dds-splat-edit", "dds-edit"),
        prior=PriorConfig(model=str(tiny_prior_dir)),
        views=2,
        width=40,
        height=30,
        gaussians=200,
        steps=1,
        warmup=0,
        device="cpu",
        out=tmp_path / "bench",
    )
    with pytest.raises(RuntimeError, match="stopped"):
        run(cfg)
    saved = json.loads((tmp_path / "bench" / "bench_nerf.json").read_text())
    assert calls == ["dds-splat-edit", "dds-edit"] and not saved["complete"]
    assert [row["method"] for row in saved["rows"]] == ["dds-splat-edit"]
    assert "Partial: 1 of 2 methods measured" in (tmp_path / "bench" / "bench_nerf.md").read_text()


def test_nerf_bench_rejects_unknown_methods():
    with pytest.raises(UserInputError, match="--methods"):
        run(NerfBenchConfig(methods=("ids",)))
    with pytest.raises(UserInputError, match="P >= 1"):
        run(NerfBenchConfig(methods=("ids-edit-p0",)))


def test_nerf_bench_source_side_variants(tmp_path, tiny_prior_dir):
    """ids-edit-p2: the view's pool is built in the first step; the next steps run no FPR."""
    from ids_nerf.bench.nerf import parse_nerf_variant

    assert parse_nerf_variant("ids-edit-k5-p4") == ("ids-edit", 5, 4)
    assert parse_nerf_variant("pds-fpr-edit") == ("pds-fpr-edit", 1, None)
    with pytest.raises(UserInputError, match="--methods cds-edit-k2: .*not available for cds"):
        parse_nerf_variant("cds-edit-k2")  # refused while parsing, not after the reconstruction
    cfg = NerfBenchConfig(
        methods=("ids-edit-p2",),
        prior=PriorConfig(model=str(tiny_prior_dir)),
        views=2,
        width=40,
        height=30,
        small_nerfacto=True,
        steps=2,
        warmup=1,
        device="cpu",
    )
    (row,) = run(cfg)["rows"]
    assert row["method"] == "ids-edit-p2" and "fpr" not in row["phases"] and row["total_s"] == sum(row["step_s"])


def test_phases_are_exclusive_and_free_when_not_recording():
    import time

    with phase("outside"):  # no recorder: nothing happens
        pass
    with record_phases("cpu") as recorder:
        with phase("outer"):
            time.sleep(0.02)
            with phase("inner"):
                time.sleep(0.05)
        with phase("inner"):
            time.sleep(0.05)
    assert set(recorder.stats) == {"outer", "inner"}
    assert recorder.stats["inner"].calls == 2 and recorder.stats["inner"].seconds >= 0.1
    assert 0.02 <= recorder.stats["outer"].seconds < 0.05  # the nested phase's time is not counted twice
    assert recorder.stats["outer"].peak_bytes > 0 and recorder.stats["inner"].peak_bytes > 0

"""ids-bench-identity: the suite, the metrics on constructed edits, and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ids_nerf.bench.identity_suite import IdentityBenchConfig, bootstrap_ci, build_suite, edit_metrics, run
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.image.editor import OptimConfig
from ids_nerf.toy import detectors
from ids_nerf.toy.scene_spec import COLORS


def test_suite_is_seeded_and_phrased_by_substitution():
    a, b = build_suite(4, size=64, seed=3), build_suite(4, size=64, seed=3)
    assert [c.trg_prompt for c in a] == [c.trg_prompt for c in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert [c.kind for c in a] == ["color"] * 4 + ["shape"] * 4 + ["background"] * 4
    for c in a:
        assert c.src_prompt != c.trg_prompt and c.target in c.trg_prompt
        assert c.src_prompt.split(" ")[-1] == "floor" and " a a" not in c.trg_prompt
        assert not any(f"a {v}" in c.trg_prompt for v in ("orange",))  # "an orange"
    assert len(build_suite(20, size=32, seed=0)) == 60


def test_metrics_of_identity_and_of_a_perfect_colour_edit():
    case = next(c for c in build_suite(2, size=64, seed=1) if c.kind == "color")
    same = edit_metrics(case, case.image, bg_window=30)
    assert same["iou"] == 1.0 and same["bg_psnr"] == pytest.approx(100.0) and same["ssim_untouched"] > 0.999
    assert same["success"] == 0.0  # nothing was edited
    # paint the object pixels in the target colour: success, silhouette kept
    edit = case.image.copy()
    mask = detectors.object_mask(case.image)
    shade = case.image[mask].astype(float).max(axis=1, keepdims=True) / 255
    edit[mask] = (np.array(COLORS[case.target]) * 255 * shade).clip(0, 255).astype(np.uint8)
    painted = edit_metrics(case, edit, bg_window=30)
    assert painted["success"] == 1.0 and painted["iou"] > 0.8 and painted["ssim_untouched"] > 0.95


def test_bootstrap_interval_brackets_the_mean():
    rng = np.random.default_rng(0)
    mean, lo, hi = bootstrap_ci(rng.normal(5.0, 1.0, 200), 1000, rng)
    assert lo < mean < hi and hi - lo < 0.5 and abs(mean - 5.0) < 0.2


def test_tiny_end_to_end_writes_tables_and_grid(tmp_path, tiny_prior_dir):
    cfg = IdentityBenchConfig(
        out=tmp_path / "b",
        prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
        methods=("dds", "ids"),
        n_per_kind=1,
        optim=OptimConfig(steps=1),
        n_bootstrap=50,
        grid_edits=3,
    )
    result = run(cfg)
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["n_edits"] == 3 and set(saved["summary"]) == {"dds", "ids"}
    assert "ids" in saved["fpr_diagnostics"] and "dds" not in saved["fpr_diagnostics"]
    assert "| ids |" in (tmp_path / "b" / "results.md").read_text()
    assert "| ids - dds |" in (tmp_path / "b" / "results.md").read_text() and set(saved["paired_vs_dds"]) == {"ids"}
    assert (tmp_path / "b" / "grid.png").is_file() and result["n_edits"] == 3
    with pytest.raises(UserInputError, match="exists"):
        run(cfg)
    with pytest.raises(UserInputError, match=r"--methods foo: Unknown method .*\(FPR methods also as <name>-nN\)"):
        run(IdentityBenchConfig(out=tmp_path / "c", methods=("foo",)))
    # edits.npz holds every source and edit; --reuse-edits scores them again without editing
    partial = json.loads((tmp_path / "b" / "results.partial.json").read_text())
    assert set(partial["seconds_per_method"]) == {"dds", "ids"}
    edits = np.load(tmp_path / "b" / "edits.npz")
    assert set(edits.files) == {"source", "dds", "ids"} and edits["ids"].shape == edits["source"].shape
    assert edits["source"].shape[0] == 3 and edits["source"].dtype == np.uint8
    rescored = run(dataclasses.replace(cfg, reuse_edits=True, methods=("ids",)))
    assert set(np.load(tmp_path / "b" / "edits.npz").files) == {"source", "dds", "ids"}  # none lost by rescoring
    np.testing.assert_equal(json.loads(json.dumps(rescored["summary"]["ids"])), saved["summary"]["ids"])
    assert rescored["seconds_per_method"] == saved["seconds_per_method"]
    with pytest.raises(UserInputError, match="not this suite"):
        run(dataclasses.replace(cfg, reuse_edits=True, seed=1))
    with pytest.raises(UserInputError, match="no edits for"):
        run(dataclasses.replace(cfg, reuse_edits=True, methods=("sds",)))
    # methods edited in separate runs (e.g. parallel processes) are scored together with --merge
    sds = run(dataclasses.replace(cfg, out=tmp_path / "other", methods=("sds",)))
    merged = run(
        dataclasses.replace(
            cfg,
            out=tmp_path / "m",
            methods=("sds", "dds", "ids"),
            reuse_edits=True,
            merge=(tmp_path / "b", tmp_path / "other"),
        )
    )
    assert set(merged["seconds_per_method"]) == {"sds", "dds", "ids"} and set(merged["paired_vs_dds"]) == {"sds", "ids"}
    np.testing.assert_equal(
        json.loads(json.dumps(merged["summary"]["sds"])), json.loads(json.dumps(sds["summary"]["sds"]))
    )
    assert set(np.load(tmp_path / "m" / "edits.npz").files) == {"source", "sds", "dds", "ids"}
    with pytest.raises(UserInputError, match="--merge"):
        run(dataclasses.replace(cfg, out=tmp_path / "n", merge=(tmp_path / "b",)))


def test_source_side_settings_are_compared_with_their_exact_method(tmp_path, tiny_prior_dir):
    """`ids-k2` (exact look-ahead) edits like `ids`; `ids-r2` (a pool) gets a paired row with a verdict."""
    cfg = IdentityBenchConfig(
        out=tmp_path / "s",
        prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
        methods=("ids", "ids-k2", "ids-r2"),
        n_per_kind=1,
        optim=OptimConfig(steps=4),
        n_bootstrap=50,
    )
    result = run(cfg)
    vs_exact = result["source_side_vs_exact"]
    assert set(vs_exact) == {"ids-k2", "ids-r2"} and vs_exact["ids-r2"]["exact"] == "ids"
    edits = np.load(tmp_path / "s" / "edits.npz")
    assert np.abs(edits["ids-k2"].astype(int) - edits["ids"].astype(int)).max() <= 1
    assert vs_exact["ids-k2"]["non_inferior"] and "| ids-r2 - ids |" in (tmp_path / "s" / "results.md").read_text()
    with pytest.raises(UserInputError, match="--methods cds-r2"):
        run(dataclasses.replace(cfg, methods=("cds", "cds-r2")))


def test_non_inferiority_verdict_uses_the_fixed_margins():
    from ids_nerf.bench.identity_suite import source_side_comparison

    exact = [{"success": 1.0, "iou": 0.5 + i / 100, "bg_psnr": 20.0, "ssim_untouched": 0.6} for i in range(20)]
    close = [dict(r, iou=r["iou"] - 0.005, bg_psnr=r["bg_psnr"] - 0.1) for r in exact]
    worse = [dict(r, iou=r["iou"] - 0.02) for r in exact]
    fewer = [dict(r, success=float(i % 10 != 0)) for i, r in enumerate(exact)]  # success drops by 0.1
    cfg = IdentityBenchConfig(n_bootstrap=200)
    out = source_side_comparison({"ids": exact, "ids-r2": close, "ids-r4": worse, "ids-r8": fewer}, cfg)
    assert out["ids-r2"]["non_inferior"] and out["ids-r4"]["failed"] == ["iou"]
    assert out["ids-r8"]["failed"] == ["success"]


def test_cycle_mode_edits_back_and_scores_the_round_trip(tmp_path, tiny_prior_dir):
    """--cycle: every edit is edited back with the prompts swapped; round-trip PSNR/SSIM/IoU, paired with dds."""
    cfg = IdentityBenchConfig(
        out=tmp_path / "c",
        prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
        methods=("dds", "ids"),
        n_per_kind=1,
        optim=OptimConfig(steps=2),
        n_bootstrap=50,
        cycle=True,
    )
    result = run(cfg)
    cycle = result["cycle"]
    assert set(cycle["summary"]) == {"dds", "ids"} and set(cycle["paired_vs_dds"]) == {"ids"}
    edits = np.load(tmp_path / "c" / "edits.npz")
    assert {"dds@cycle", "ids@cycle"} <= set(edits.files) and "ids@cycle" in result["seconds_per_method"]
    assert not np.array_equal(edits["ids@cycle"], edits["ids"])  # the back edit moved away from the forward one
    assert "Cycle test" in (tmp_path / "c" / "results.md").read_text()
    psnr, lo, hi = cycle["summary"]["ids"]["psnr"]
    assert lo <= psnr <= hi and 5 < psnr < 60
    rescored = run(dataclasses.replace(cfg, reuse_edits=True))
    assert json.loads(json.dumps(rescored["cycle"])) == json.loads(json.dumps(cycle))
    # forward edits of a run without --cycle: --cycle --reuse-edits computes only the round trips
    plain = run(dataclasses.replace(cfg, out=tmp_path / "p", cycle=False))
    assert plain["cycle"] == {}
    later = run(dataclasses.replace(cfg, out=tmp_path / "p", reuse_edits=True))
    assert json.loads(json.dumps(later["cycle"])) == json.loads(json.dumps(cycle))


def test_cycle_metrics_of_a_perfect_round_trip():
    from ids_nerf.bench.identity_suite import build_suite, cycle_metrics

    image = build_suite(1, size=64, seed=0)[0].image
    perfect = cycle_metrics(image, image)
    assert perfect["iou"] == 1.0 and perfect["ssim"] == pytest.approx(1.0) and perfect["psnr"] >= 60
    shifted = cycle_metrics(image, np.roll(image, 6, axis=1))
    assert shifted["iou"] < 1.0 and shifted["psnr"] < perfect["psnr"] and shifted["ssim"] < 1.0


def test_region_runs_keep_the_outside_and_are_paired_with_the_whole_image(tmp_path, tiny_prior_dir):
    """``dds-region``: each edit restricted to its case's region (object for colour/shape, floor for background):
    outside it the pixels are the source's exactly; paired against ``dds`` in region_vs_whole."""
    from ids_nerf.bench.identity_suite import build_suite, region_mask

    cfg = IdentityBenchConfig(
        out=tmp_path / "r",
        prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
        methods=("dds", "dds-region"),
        n_per_kind=1,
        optim=OptimConfig(steps=2, lr=2.0),
        n_bootstrap=50,
        grid_edits=3,
    )
    result = run(cfg)
    assert set(result["region_vs_whole"]) == {"dds-region"} and "dds-region" not in result["source_side_vs_exact"]
    edits = np.load(cfg.out / "edits.npz")
    cases = build_suite(1, size=edits["source"].shape[1])  # the suite at the prior's resolution, as the run made it
    for case, edit in zip(cases, edits["dds-region"], strict=True):
        outside = region_mask(case) == 0
        assert outside.any() and (edit[outside] == case.image[outside]).all()
    assert "Region - whole image" in (cfg.out / "results.md").read_text()

"""Source side computed once: exact look-ahead batches, the per-source pool, the disk cache and their diagnostics."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from ids_nerf.errors import UserInputError
from ids_nerf.guidance import distiller as distiller_module
from ids_nerf.guidance.config import GuidanceConfig, SourceSideConfig, guidance_config
from ids_nerf.guidance.distiller import ScoreDistiller
from ids_nerf.guidance.fpr import FPRConfig
from ids_nerf.guidance.source_cache import SourceCache, cache_key
from ids_nerf.guidance.source_side import SourceSupplier
from ids_nerf.image.editor import OptimConfig, edit_latent

STEPS = 10  # K = 3: blocks of 3, 3, 3, 1; K = 8: 8, 2
METHODS = ["dds", "ids", "ids-n1", "pds", "pds-fpr", "sds", "sds-fpr"]


@pytest.fixture(scope="module")
def toy_prior():
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig

    return DiffusionPrior(PriorConfig(model="toy", device="cpu"))


def _config(method: str, lookahead: int = 1, pool: int | None = None) -> GuidanceConfig:
    config = guidance_config(method)
    config.source = SourceSideConfig(lookahead=lookahead, pool=pool)
    return config


def _inputs(prior, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z_src = torch.randn(batch, *prior.latent_shape(prior.resolution, prior.resolution), generator=g)
    prompts_src = ["a red sphere", "a green cube"][:batch]
    prompts_trg = ["a blue sphere", "a green cone"][:batch]
    cond_src = torch.cat([prior.text_embeddings(p) for p in prompts_src])
    cond_trg = torch.cat([prior.text_embeddings(p) for p in prompts_trg])
    return z_src, cond_src, cond_trg


def _edit(prior, config: GuidanceConfig, inputs, steps: int = STEPS, seed: int = 1, **kw):
    distiller = ScoreDistiller(prior, config, seed=seed)
    z_src, cond_src, cond_trg = inputs
    result = edit_latent(distiller, z_src, cond_src, cond_trg, OptimConfig(steps=steps), progress=False, **kw)
    return result, distiller.generator.get_state()


@pytest.fixture(scope="module")
def sequential_edits() -> dict:
    """(prior name, method) -> the sequential edit, computed once for the K parametrisation."""
    return {}


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("prior_name", ["tiny", "toy"])
def test_lookahead_edit_equals_the_sequential_edit(request, sequential_edits, prior_name, method, k):
    """Same draws in the same order (t, t_prev, noises; the generator ends in the same state), the same per-step
    diagnostics and the same edited latent within fp32 tolerance; K = 1 is the sequential path itself."""
    prior = request.getfixturevalue("tiny_prior" if prior_name == "tiny" else "toy_prior")
    inputs = _inputs(prior, batch=2 if prior_name == "tiny" else 1)  # the look-ahead batch is B * K
    if (prior_name, method) not in sequential_edits:
        sequential_edits[prior_name, method] = _edit(prior, _config(method), inputs)
    seq, seq_state = sequential_edits[prior_name, method]
    if k == 1:  # the default configuration: the sequential edit itself
        assert _config(method, k) == _config(method)
        assert seq.source_side["mode"] == "step" and {h["source"] for h in seq.history} == {"step"}
        return
    ahead, ahead_state = _edit(prior, _config(method, k), inputs)
    assert torch.equal(seq_state, ahead_state)
    torch.testing.assert_close(ahead.latent, seq.latent, rtol=1e-4, atol=1e-5)
    for a, s in zip(ahead.history, seq.history, strict=True):
        assert (a["t"], a.get("t_prev"), a.get("t_all")) == (s["t"], s.get("t_prev"), s.get("t_all"))
        assert a["fpr_losses"] == pytest.approx(s["fpr_losses"], rel=1e-4)
        if s["fpr_loss_final"] is None:
            assert a["fpr_loss_final"] is None
        else:
            assert a["fpr_loss_final"] == pytest.approx(s["fpr_loss_final"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(s["grad_norm"], rel=1e-4)
        assert (a["source"], s["source"], a["source_cached"]) == ("lookahead", "step", False)
    assert ahead.source_side["precomputed"] == STEPS


def test_prepare_sources_matches_draw_source(tiny_prior):
    """K source sides from one batch = K sequential draw_source calls; eps_src = the source branch's prediction."""
    z_src, cond_src, cond_trg = _inputs(tiny_prior, batch=2)
    config = _config("ids")
    sequential = ScoreDistiller(tiny_prior, config, seed=4)
    batched = ScoreDistiller(tiny_prior, config, seed=4)
    ahead = batched.prepare_sources(z_src, cond_src, 4)
    for one in ahead:
        drawn = sequential.draw_source(z_src, cond_src)
        assert torch.equal(one.t, drawn.t) and one.origin == "lookahead"
        torch.testing.assert_close(one.z_t_src, drawn.z_t_src, rtol=1e-4, atol=1e-5)
        assert one.fpr_losses == pytest.approx(drawn.fpr_losses, rel=1e-5)
        with torch.no_grad():
            eps_src = tiny_prior.eps(one.z_t_src, one.t, cond_src, config.effective_guidance_scale())
        torch.testing.assert_close(one.eps_src, eps_src, rtol=1e-4, atol=1e-5)
        z_trg = z_src + 0.1
        with_cache = batched.step(z_src=z_src, z_trg=z_trg, cond_src=cond_src, cond_trg=cond_trg, source=one)
        both = batched.step(
            z_src=z_src,
            z_trg=z_trg,
            cond_src=cond_src,
            cond_trg=cond_trg,
            source=dataclasses.replace(one, eps_src=None),
        )
        torch.testing.assert_close(with_cache.grad, both.grad, rtol=1e-4, atol=1e-5)
    assert torch.equal(sequential.generator.get_state(), batched.generator.get_state())


def test_precomputed_steps_evaluate_only_the_target_branch(make_linear_denoiser):
    """ids, 8 steps, K = 4: 2 batched FPRs (3 calls each) + 2 source-branch calls + 8 target calls of batch 1."""
    den = make_linear_denoiser(dim=18)
    z_src = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    c_src, c_trg = torch.randn(1, 1, 18, dtype=torch.float64), torch.randn(1, 1, 18, dtype=torch.float64)
    sequential = edit_latent(
        ScoreDistiller(den, _config("ids"), 0), z_src, c_src, c_trg, OptimConfig(8), progress=False
    )
    assert den.calls == 8 * (3 + 1)
    den.calls = 0
    ahead = edit_latent(ScoreDistiller(den, _config("ids", 4), 0), z_src, c_src, c_trg, OptimConfig(8), progress=False)
    assert den.calls == 2 * 3 + 2 + 8
    torch.testing.assert_close(ahead.latent, sequential.latent)


def test_pool_reuses_each_entry_r_times_in_seeded_passes(make_linear_denoiser):
    den = make_linear_denoiser(dim=18)
    z_src = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    c_src, c_trg = torch.randn(1, 1, 18, dtype=torch.float64), torch.randn(1, 1, 18, dtype=torch.float64)

    def run(seed: int):
        distiller = ScoreDistiller(den, _config("ids", lookahead=2, pool=4), seed)
        return edit_latent(distiller, z_src, c_src, c_trg, OptimConfig(steps=12), progress=False), distiller

    den.calls = 0
    result, distiller = run(0)
    assert den.calls == 2 * (3 + 1) + 12  # the pool in 2 batches of 2, then the target branch only
    picks = [h["pool_index"] for h in result.history]
    assert all(sorted(picks[i : i + 4]) == [0, 1, 2, 3] for i in (0, 4, 8))  # r = 3 passes over the pool
    assert {h["source"] for h in result.history} == {"pool"}
    summary = result.source_side
    assert summary["mode"] == "pool" and summary["reuse_factor"] == 3 and len(summary["pool_fpr_losses"]) == 4
    by_index = {h["pool_index"]: h for h in result.history}
    assert all(by_index[i]["fpr_losses"] == summary["pool_fpr_losses"][i] for i in range(4))
    # the run's generator only drew the pool: the state of 4 sequential steps' draws
    reference = ScoreDistiller(den, _config("ids"), 0)
    for _ in range(4):
        reference.draw_source(z_src, c_src)
    assert torch.equal(distiller.generator.get_state(), reference.generator.get_state())
    again, _ = run(0)
    assert [h["pool_index"] for h in again.history] == picks and torch.equal(again.latent, result.latent)
    assert [h["pool_index"] for h in run(1)[0].history] != picks


def test_cds_refuses_lookahead_pool_and_cache(tiny_prior):
    with pytest.raises(UserInputError, match="--source.lookahead > 1 and --source.pool are not available for cds"):
        SourceSideConfig(lookahead=2).check("cds")
    with pytest.raises(UserInputError, match="--source.pool are not available for cds"):
        SourceSideConfig(pool=5).check("cds")
    with pytest.raises(UserInputError, match="--cache-dir"):
        SourceSideConfig().check("cds", cache=True)
    z_src, cond_src, _ = _inputs(tiny_prior, batch=1)
    distiller = ScoreDistiller(tiny_prior, guidance_config("cds"), seed=0)
    with pytest.raises(UserInputError, match="PatchNCE patches"):
        distiller.prepare_sources(z_src, cond_src, 2)
    assert len(distiller.prepare_sources(z_src, cond_src, 1)) == 1  # one step ahead keeps CDS's draw order


@pytest.mark.parametrize(
    ("config", "flag"),
    [(SourceSideConfig(lookahead=0), "--source.lookahead must be >= 1"), (SourceSideConfig(pool=0), "--source.pool")],
)
def test_source_config_checks_name_the_flag(config, flag):
    with pytest.raises(UserInputError, match=flag):
        config.check("dds")


# ------------------------------------------------------------------------------------------------ disk cache
def _key(distiller: ScoreDistiller, z_src, cond_src, **layout) -> dict:
    return cache_key(distiller, z_src, cond_src, {"mode": "lookahead", "count": 10, "lookahead": 1, **layout})


def test_cache_key_changes_with_every_field(tiny_prior, tiny_prior_dir, tmp_path):
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig

    z_src, cond_src, _ = _inputs(tiny_prior, batch=1)
    base_config = _config("ids")
    base = _key(ScoreDistiller(tiny_prior, base_config, 0), z_src, cond_src)

    def key_with(prior=tiny_prior, config=base_config, z=z_src, cond=cond_src, seed=0, draws=0, **layout) -> dict:
        distiller = ScoreDistiller(prior, config, seed)
        for _ in range(draws):
            distiller.sample_t()
        return _key(distiller, z, cond, **layout)

    fpr = base_config.fpr
    variants = {
        "prior dtype": key_with(DiffusionPrior(PriorConfig(model=str(tiny_prior_dir), device="cpu", dtype="bfloat16"))),
        "source latent": key_with(z=z_src + 1e-3),
        "latent shape": key_with(z=z_src.reshape(1, 4, 8, 32)),
        "source prompt": key_with(cond=tiny_prior.text_embeddings("a red cube")),
        "score": key_with(config=_config("dds")),
        "guidance scale": key_with(config=dataclasses.replace(base_config, guidance_scale=5.0)),
        "t_range": key_with(config=dataclasses.replace(base_config, t_range=(0.1, 0.9))),
        "seed": key_with(seed=1),
        "generator state": key_with(draws=1),
        "layout mode": key_with(mode="pool"),
        "layout count": key_with(count=11),
        "layout lookahead": key_with(lookahead=4),
    }
    for field, value in (
        ("enabled", False),
        ("iterations", 1),
        ("step_size", 0.5),
        ("metric", "mse"),
        ("wrt", "eps"),
        ("source_guidance_scale", 5.0),
        ("jacobian", "free"),
    ):
        variants[f"fpr.{field}"] = key_with(
            config=dataclasses.replace(base_config, fpr=dataclasses.replace(fpr, **{field: value}))
        )
    pds = _config("pds")
    pds_key = key_with(config=pds)
    for field, value in (("num_inference_steps", 100), ("grid_range", (0.1, 0.9))):
        grid = dataclasses.replace(pds.pds, **{field: value})
        assert key_with(config=dataclasses.replace(pds, pds=grid)) != pds_key, field
    exact_posterior = dataclasses.replace(pds.pds, posterior="exact")  # the target side only: not in the key
    assert key_with(config=dataclasses.replace(pds, pds=exact_posterior)) == pds_key
    # a copy of the prior folder: another path; touching its UNet weights changes the files' fingerprint
    copy = Path(shutil.copytree(tiny_prior_dir, tmp_path / "prior-copy"))
    copied = DiffusionPrior(PriorConfig(model=str(copy), device="cpu"))
    before = key_with(prior=copied)
    weights = next(p for p in (copy / "unet").iterdir() if p.suffix in (".safetensors", ".bin"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    variants["prior folder"] = before
    variants["prior weights file"] = key_with(prior=copied)
    assert variants["prior weights file"] != before
    for name, key in variants.items():
        assert key != base, name
    assert key_with() == base  # deterministic
    assert "trg" not in str(base) and "target" not in str(base)


def _count_source_side(monkeypatch, prior) -> dict:
    """Count FPR runs and UNet (CFG) calls with their batch sizes."""
    counts = {"fpr": 0, "eps_batches": []}
    fpr = distiller_module.fixed_point_regularization
    eps = prior.eps

    def counting_fpr(*args, **kwargs):
        counts["fpr"] += 1
        return fpr(*args, **kwargs)

    def counting_eps(z_t, *args, **kwargs):
        counts["eps_batches"].append(z_t.shape[0])
        return eps(z_t, *args, **kwargs)

    monkeypatch.setattr(distiller_module, "fixed_point_regularization", counting_fpr)
    monkeypatch.setattr(prior, "eps", counting_eps)
    return counts


def _cached_edit(prior, inputs, cache_dir: Path, config: GuidanceConfig, steps: int = 5):
    z_src, cond_src, cond_trg = inputs
    distiller = ScoreDistiller(prior, config, seed=3)
    sources = SourceSupplier(distiller, z_src, cond_src, steps, cache_dir=cache_dir)
    result = edit_latent(
        distiller, z_src, cond_src, cond_trg, OptimConfig(steps=steps), progress=False, sources=sources
    )
    return result, distiller.generator.get_state()


@pytest.mark.parametrize(
    ("method", "lookahead", "pool"),
    [("ids", 1, None), ("ids", 3, None), ("ids", 2, 3), ("dds", 1, None), ("pds-fpr", 3, None), ("sds-fpr", 2, None)],
)
def test_second_edit_with_another_target_prompt_skips_the_source_side(
    tiny_prior, tmp_path, monkeypatch, method, lookahead, pool
):
    z_src, cond_src, cond_trg = _inputs(tiny_prior, batch=1)
    other_trg = tiny_prior.text_embeddings("a yellow pyramid")
    config = _config(method, lookahead, pool)
    uncached = _edit(tiny_prior, config, (z_src, cond_src, other_trg), steps=5, seed=3)
    counts = _count_source_side(monkeypatch, tiny_prior)
    first, _ = _cached_edit(tiny_prior, (z_src, cond_src, cond_trg), tmp_path, config)
    computed = pool or 5  # the pool, or the source side of each of the 5 steps, K per batch
    assert first.source_side["cache"] == "miss" and first.source_side["precomputed"] == computed
    assert counts["fpr"] == (0 if method == "dds" else math.ceil(computed / lookahead))
    counts.update(fpr=0, eps_batches=[])
    second, state = _cached_edit(tiny_prior, (z_src, cond_src, other_trg), tmp_path, config)
    assert counts["fpr"] == 0 and counts["eps_batches"] == [1] * 5  # the target branch of each step, nothing else
    assert second.source_side["cache"] == "hit" and second.source_side["cache_hits"] == 5
    assert all(h["source_cached"] for h in second.history) and not any(h["source_cached"] for h in first.history)
    if lookahead > 1 or pool is not None:  # the same layout without a cache: bit-identical
        assert torch.equal(second.latent, uncached[0].latent) and torch.equal(state, uncached[1])
    else:  # a cache precomputes even with K = 1: the sequential edit within fp32 tolerance
        torch.testing.assert_close(second.latent, uncached[0].latent, rtol=1e-4, atol=1e-5)
        assert torch.equal(state, uncached[1])
    assert len(list((tmp_path / "source-side").iterdir())) == 1  # atomic write: no temporary file left


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("corrupt", "reason"), [(_truncate, "unusable"), (_garbage, "unusable"), (_flip_last_byte, "checksum")]
)
def test_corrupt_cache_file_is_recomputed_with_a_warning(tiny_prior, tmp_path, corrupt, reason):
    inputs = _inputs(tiny_prior, batch=1)
    config = _config("ids", 2)
    first, _ = _cached_edit(tiny_prior, inputs, tmp_path, config)
    path = Path(first.source_side["cache_file"])
    corrupt(path)
    with pytest.warns(UserWarning, match=reason):
        again, _ = _cached_edit(tiny_prior, inputs, tmp_path, config)
    assert again.source_side["cache"] == "recomputed" and torch.equal(again.latent, first.latent)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third, _ = _cached_edit(tiny_prior, inputs, tmp_path, config)
    assert third.source_side["cache"] == "hit" and torch.equal(third.latent, first.latent)


def test_cache_file_of_another_key_is_never_reused(tiny_prior, tmp_path):
    z_src, cond_src, _ = _inputs(tiny_prior, batch=1)
    distiller = ScoreDistiller(tiny_prior, _config("ids"), 0)
    cache = SourceCache(tmp_path)
    key_a, key_b = _key(distiller, z_src, cond_src, count=2), _key(distiller, z_src, cond_src, count=3)
    path_a = cache.save(key_a, distiller.prepare_sources(z_src, cond_src, 2), distiller.generator.get_state())
    assert path_a is not None and cache.load(key_a, z_src.device) is not None
    shutil.copy(path_a, cache.path(key_b))
    with pytest.warns(UserWarning, match="another key"):
        assert cache.load(key_b, z_src.device) is None


def test_failed_cache_write_only_warns(tiny_prior, tmp_path, monkeypatch):
    from ids_nerf.guidance import source_cache

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(source_cache, "save_file", failing_save)
    with pytest.warns(UserWarning, match="disk full"):
        result, _ = _cached_edit(tiny_prior, _inputs(tiny_prior, batch=1), tmp_path, _config("ids", 2))
    assert result.source_side["cache"] == "miss" and result.source_side["cache_file"] is None
    assert list((tmp_path / "source-side").iterdir()) == []  # the temporary file is removed


def test_cache_needs_a_diffusion_prior(linear_denoiser):
    z_src = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    distiller = ScoreDistiller(linear_denoiser, GuidanceConfig(score="dds", fpr=FPRConfig(enabled=True)), 0)
    with pytest.raises(TypeError, match="needs a DiffusionPrior"):
        _key(distiller, z_src, torch.zeros(1, 1, 18, dtype=torch.float64))

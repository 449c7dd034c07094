"""Source side computed once: exact look-ahead batches, the per-source pool, the disk cache and their diagnostics."""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from ids_nerf.errors import UserInputError
from ids_nerf.guidance import distiller as distiller_module
from ids_nerf.guidance import source_side
from ids_nerf.guidance.config import GuidanceConfig, SourceSideConfig, guidance_config
from ids_nerf.guidance.distiller import ScoreDistiller
from ids_nerf.guidance.fpr import FPRConfig
from ids_nerf.guidance.source_cache import SourceCache, cache_key
from ids_nerf.guidance.source_side import MemoryProbe, SourceSupplier, choose_lookahead, measure_peak
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
    if k == 1:  # K = 1 pinned: the sequential edit itself
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
        # one batched UNet call vs. two: float32 rounding differs by up to ~1.4e-5 on these O(1) gradients
        torch.testing.assert_close(with_cache.grad, both.grad, rtol=1e-4, atol=5e-5)
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


# ------------------------------------------------------------------------------------------------ automatic K
GB = 2**30


@pytest.mark.parametrize(
    ("sample", "free", "cap", "peak", "growth", "expected"),
    [
        (10 * 2**20, 20 * GB, 199, GB, 0.2, (8, "max")),  # a toy-size step, plenty of memory
        (10 * 2**20, 20 * GB, 3, GB, 0.2, (3, "steps left")),  # the view block / steps left cap it
        (GB, 5 * GB, 199, None, None, (2, "free memory")),  # K samples within half of the free memory
        (GB, GB, 199, None, None, (1, "free memory")),  # not even one more fits: still 1
        (100 * 2**20, 20 * GB, 199, GB, 0.2, (3, "peak growth")),  # 1 + 0.2 GB / 100 MB
        (5 * GB, 22 * GB, 199, 10 * GB, 0.2, (1, "peak growth")),  # SD size on a 24 GB CPU: K = 1
        (3 * GB, 130 * GB, 199, 6 * GB, None, (8, "max")),  # SD size on a GPU: no growth limit
        (0, 0, 199, GB, 0.2, (1, "free memory")),  # no free memory: 1
        (0, 20 * GB, 5, GB, 0.2, (5, "steps left")),  # nothing measured: the caps
    ],
)
def test_choose_lookahead_on_synthetic_budgets(sample, free, cap, peak, growth, expected):
    assert choose_lookahead(sample, free, cap, peak_bytes=peak, peak_growth=growth) == expected
    k, _ = expected
    per = max(sample, 1)
    assert k == 1 or k * per <= 0.5 * free  # the batch fits in the budget ...
    assert k == 1 or growth is None or (k - 1) * per <= growth * peak  # ... and within the growth allowed
    assert choose_lookahead(sample, free, cap, peak_bytes=peak, peak_growth=growth, max_k=2)[0] == min(k, 2)


def test_measure_peak_sees_an_allocation():
    def allocate() -> int:
        # 64 MiB of fresh pages, touched: an anonymous map, not malloc, which may hand back memory already resident
        # in a long test session (the probe then rightly sees no growth)
        with mmap.mmap(-1, 64 * 2**20) as block:
            for offset in range(0, len(block), mmap.PAGESIZE):
                block[offset] = 1
            return block[-mmap.PAGESIZE]

    result, probe = measure_peak(allocate, torch.device("cpu"))
    assert result == 1 and probe.device == "cpu" and probe.sample_bytes >= 48 * 2**20


@pytest.fixture
def fake_memory(monkeypatch):
    """Memory as a test sets it: the first (K = 1) batch adds ``first`` bytes and peaks at ``peak``, each further step
    of a batch adds ``per_step`` (default: ``first``), ``free`` bytes are free; counts the batches measured."""
    state = {"first": 10 * 2**20, "per_step": None, "peak": GB, "free": 20 * GB, "measured": 0}
    monkeypatch.setattr(source_side, "_PROBES", {})

    def fake_measure(fn, device, interval_s=0.001):
        state["measured"] += 1
        sources = fn()
        extra = (len(sources) - 1) * (state["per_step"] or state["first"])
        return sources, MemoryProbe("cpu", state["peak"] - state["first"], state["peak"] + extra)

    monkeypatch.setattr(source_side, "measure_peak", fake_measure)
    monkeypatch.setattr(source_side, "free_memory", lambda device: state["free"])
    return state


def _auto(method: str, pool: int | None = None) -> GuidanceConfig:
    config = guidance_config(method)
    config.source = SourceSideConfig(pool=pool)  # the default: lookahead auto
    assert config.source.lookahead == "auto"
    return config


@pytest.mark.parametrize(("method", "plenty"), [("ids", True), ("pds-fpr", True), ("sds-fpr", True), ("ids", False)])
def test_auto_lookahead_edit_equals_the_k1_edit(tiny_prior, sequential_edits, fake_memory, method, plenty):
    """auto: a first batch of 1 (its memory probe), then K chosen from the (here synthetic) memory, spread evenly
    over the steps left, the first such batch measured too: 10 steps -> batches 1, 5, 4; with too little memory
    K = 1 and the rest in the step. The same draws, diagnostics and edit as K = 1 within fp32 tolerance."""
    inputs = _inputs(tiny_prior, batch=2)
    if ("tiny", method) not in sequential_edits:
        sequential_edits["tiny", method] = _edit(tiny_prior, _config(method), inputs)
    seq, seq_state = sequential_edits["tiny", method]
    if not plenty:
        fake_memory.update(first=5 * GB, free=22 * GB, peak=10 * GB)
    auto, auto_state = _edit(tiny_prior, _auto(method), inputs)
    assert torch.equal(seq_state, auto_state) and fake_memory["measured"] == (2 if plenty else 1)
    torch.testing.assert_close(auto.latent, seq.latent, rtol=1e-4, atol=1e-5)
    for a, s in zip(auto.history, seq.history, strict=True):
        assert (a["t"], a.get("t_prev"), a.get("t_all")) == (s["t"], s.get("t_prev"), s.get("t_all"))
        assert a["fpr_losses"] == pytest.approx(s["fpr_losses"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(s["grad_norm"], rel=1e-4)
    side = auto.source_side
    assert side["lookahead_setting"] == "auto"
    if plenty:  # 1, then K = 8 (max) for 9 steps: a measured batch of 5, then the 4 left
        assert side["mode"] == "lookahead" and side["lookahead"] == 4
        assert side["lookahead_choice"]["limit"] == "steps left"
        assert [h["lookahead"] for h in auto.history] == [1] + [5] * 5 + [4] * 4
    else:
        assert side["mode"] == "step" and side["lookahead"] == 1
        assert side["lookahead_choice"]["limit"] == "peak growth" and "5.00 GiB" in side["lookahead_choice"]["reason"]
        assert [h["source"] for h in auto.history] == ["lookahead"] + ["step"] * 9


def test_auto_lookahead_with_the_real_probe_equals_the_k1_edit(toy_prior, monkeypatch):
    """No synthetic figures: the first batch is measured on this machine; whatever K that gives, the same edit."""
    monkeypatch.setattr(source_side, "_PROBES", {})
    inputs = _inputs(toy_prior, batch=1)
    seq, seq_state = _edit(toy_prior, _config("ids"), inputs, steps=6)
    auto, auto_state = _edit(toy_prior, _auto("ids"), inputs, steps=6)
    assert torch.equal(seq_state, auto_state)
    torch.testing.assert_close(auto.latent, seq.latent, rtol=1e-4, atol=1e-5)
    choice = auto.source_side["lookahead_choice"]
    assert choice["memory_of"] == "cpu" and choice["sample_bytes"] > 0 and choice["free_bytes"] > 0
    assert 1 <= auto.source_side["lookahead"] <= 5 and choice["reason"].startswith(f"K = {choice['k']} (")


@pytest.mark.parametrize(
    ("method", "steps", "limit"),
    [("cds", 4, "cds"), ("sds", 4, "nothing to batch"), ("dds", 4, "nothing to batch"), ("ids", 1, "one step")],
)
def test_auto_means_one_where_lookahead_is_not_exact_or_gains_nothing(tiny_prior, fake_memory, method, steps, limit):
    z_src, cond_src, _ = _inputs(tiny_prior, batch=1)
    supplier = SourceSupplier(ScoreDistiller(tiny_prior, _auto(method), 0), z_src, cond_src, steps)
    assert [supplier.next() for _ in range(steps)] == [None] * steps  # every step draws its own
    summary = supplier.summary()
    assert (summary["mode"], summary["lookahead"], summary["lookahead_choice"]["limit"]) == ("step", 1, limit)
    assert fake_memory["measured"] == 0


def test_auto_never_crosses_a_view_block_and_probes_once(make_linear_denoiser, fake_memory):
    """NeRF editing makes one supplier per view block (3 steps here): K <= the block, the first batch of each block
    alone, the memory measured once for the run."""
    den = make_linear_denoiser(dim=18)
    z_src, c_src = torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, 1, 18, dtype=torch.float64)
    distiller = ScoreDistiller(den, _auto("ids"), 0)
    for _ in range(3):
        supplier = SourceSupplier(distiller, z_src, c_src, 3)
        served = [supplier.next() for _ in range(3)]
        assert [s.lookahead for s in served] == [1, 2, 2] and supplier.lookahead == 2
        assert supplier.choice is not None and supplier.choice.limit == "steps left"
    assert fake_memory["measured"] == 1 and distiller.lookahead_choice.k == 2


def test_auto_refines_k_from_its_first_lookahead_batch(make_linear_denoiser, fake_memory):
    """The first batch overstates a step's need (it holds one-time allocations): K = 3 from it (100 MB of a 1 GB
    peak, 20% growth allowed); the batch of 3 measures 30 MB per step, which allows 7, bounded by twice the batch
    measured: 6. A second edit in the process measures nothing and batches the same way."""
    fake_memory.update(first=100 * 2**20, per_step=30 * 2**20)
    den = make_linear_denoiser(dim=18)
    z_src, c_src, c_trg = (torch.randn(*s, dtype=torch.float64) for s in ((1, 2, 3, 3), (1, 1, 18), (1, 1, 18)))
    runs = []
    for _ in range(2):
        distiller = ScoreDistiller(den, _auto("ids"), 0)
        runs.append(edit_latent(distiller, z_src, c_src, c_trg, OptimConfig(steps=40), progress=False))
    for result in runs:
        assert [h["lookahead"] for h in result.history] == [1, 3, 3, 3] + [6] * 36
        choice = result.source_side["lookahead_choice"]
        assert (choice["k"], choice["limit"], choice["step_bytes"]) == (6, "twice the measured batch", 30 * 2**20)
    assert fake_memory["measured"] == 2 and torch.equal(runs[0].latent, runs[1].latent)


def test_auto_pool_is_computed_in_batches_of_the_chosen_k(make_linear_denoiser, fake_memory):
    den = make_linear_denoiser(dim=18)
    z_src, c_src, c_trg = (torch.randn(*s, dtype=torch.float64) for s in ((1, 2, 3, 3), (1, 1, 18), (1, 1, 18)))
    den.calls = 0
    result = edit_latent(
        ScoreDistiller(den, _auto("ids", pool=6), 0), z_src, c_src, c_trg, OptimConfig(steps=12), progress=False
    )
    assert den.calls == 2 * (3 + 1) + 12  # the pool in a batch of 1 (the probe) and one of 5, then target only
    side = result.source_side
    assert (side["mode"], side["lookahead"], side["lookahead_choice"]["limit"]) == ("pool", 5, "steps left")


def test_generator_between_steps_is_the_sequential_one_and_a_resumed_edit_draws_the_same(make_linear_denoiser):
    """While a look-ahead batch is served, the run's generator is where K = 1 would have left it after each step:
    a checkpoint taken between steps, continued by a new supplier, draws what the uninterrupted edit drew."""
    den = make_linear_denoiser(dim=18)
    z_src, c_src = torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, 1, 18, dtype=torch.float64)
    sequential = ScoreDistiller(den, _config("ids"), 0)
    ahead = ScoreDistiller(den, _config("ids", lookahead=4), 0)
    supplier = SourceSupplier(ahead, z_src, c_src, 8)
    served, saved = [], None
    for i in range(8):
        served.append(supplier.next())
        sequential.draw_source(z_src, c_src)
        assert torch.equal(ahead.generator.get_state(), sequential.generator.get_state()), i
        if i == 2:
            saved = ahead.generator.get_state()
    resumed = ScoreDistiller(den, _config("ids", lookahead=4), 0)
    resumed.generator.set_state(saved)
    again = SourceSupplier(resumed, z_src, c_src, 5)
    for before in served[3:]:
        one = again.next()
        assert torch.equal(one.t, before.t)
        torch.testing.assert_close(one.eps, before.eps)
        torch.testing.assert_close(one.z_t_src, before.z_t_src)


def test_an_fpr_switch_between_steps_redraws_the_rest_of_the_batch(make_linear_denoiser):
    """The viewer's FPR switch takes effect at the next step, as with K = 1: the batch's remaining steps are dropped
    and drawn again from the generator state after the last served step."""
    den = make_linear_denoiser(dim=18)
    z_src, c_src, c_trg = (torch.randn(*s, dtype=torch.float64) for s in ((1, 2, 3, 3), (1, 1, 18), (1, 1, 18)))

    def edit(lookahead: int):
        distiller = ScoreDistiller(den, _config("ids", lookahead), 0)
        supplier = SourceSupplier(distiller, z_src, c_src, 8)
        z = z_src.clone()
        history = []
        for step in range(8):
            if step == 2:
                distiller.config.fpr.enabled = False
            out = distiller.step(z_src=z_src, z_trg=z, cond_src=c_src, cond_trg=c_trg, source=supplier.next())
            z = z - 0.1 * out.grad
            history.append((out.diagnostics["t"], out.diagnostics["fpr_losses"]))
        return z, history, supplier.summary(), distiller.generator.get_state()

    z_seq, h_seq, _, state_seq = edit(1)
    z_ahead, h_ahead, summary, state_ahead = edit(4)
    assert [t for t, _ in h_ahead] == [t for t, _ in h_seq] and torch.equal(state_ahead, state_seq)
    assert [bool(losses) for _, losses in h_ahead] == [True, True] + [False] * 6
    torch.testing.assert_close(z_ahead, z_seq)
    assert summary["redrawn"] == 2


def test_auto_cache_key_holds_the_setting_not_the_k(tiny_prior, tmp_path, fake_memory):
    """A cache written by auto with one K serves a later auto edit that would choose another (same edit)."""
    inputs = _inputs(tiny_prior, batch=1)
    first, _ = _cached_edit(tiny_prior, inputs, tmp_path, _auto("ids"))
    assert first.source_side["cache"] == "miss" and first.source_side["lookahead"] == 4  # 5 steps: 1, then 4
    fake_memory.update(first=5 * GB, free=22 * GB, peak=10 * GB)  # would now choose K = 1
    second, _ = _cached_edit(tiny_prior, inputs, tmp_path, _auto("ids"))
    assert second.source_side["cache"] == "hit" and torch.equal(second.latent, first.latent)

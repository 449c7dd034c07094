"""Score functions and the ScoreDistiller: zeros, signs, shapes, presets and reproducibility."""

from __future__ import annotations

import pytest
import torch

from ids_nerf.errors import UserInputError
from ids_nerf.guidance import scores
from ids_nerf.guidance.config import GuidanceConfig, guidance_config
from ids_nerf.guidance.denoiser import add_noise
from ids_nerf.guidance.distiller import ScoreDistiller
from ids_nerf.guidance.fpr import FPRConfig


def _latents(seed: int = 0, shape=(1, 4, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("preset", ["dds", "ids", "cds", "pds", "pds-fpr", "cds-fpr"])
def test_delta_scores_are_exactly_zero_without_edit(tiny_prior, preset):
    z_src, _ = _latents()
    cond = tiny_prior.text_embeddings("a red sphere on a checkered floor")
    distiller = ScoreDistiller(tiny_prior, guidance_config(preset), seed=3)
    for _ in range(3):
        out = distiller.step(z_src=z_src, z_trg=z_src.clone(), cond_src=cond, cond_trg=cond)
        assert torch.count_nonzero(out.grad) == 0, out.diagnostics


def test_ids_gradient_nonzero_when_prompts_differ(tiny_prior):
    z_src, _ = _latents()
    distiller = ScoreDistiller(tiny_prior, guidance_config("ids"), seed=0)
    out = distiller.step(
        z_src=z_src,
        z_trg=z_src.clone(),
        cond_src=tiny_prior.text_embeddings("a red sphere"),
        cond_trg=tiny_prior.text_embeddings("a blue cube"),
    )
    assert out.grad.shape == z_src.shape
    assert float(out.grad.abs().max()) > 0
    d = out.diagnostics
    assert len(d["fpr_losses"]) == 3 and d["fpr_loss_final"] is not None
    assert d["fpr_loss_final"] < d["fpr_losses"][0]  # FPR reduced its loss over the step
    assert 50 <= d["t"] < 949 and d["grad_norm"] > 0


def test_sds_sign_and_shape_on_linear_predictor(make_linear_denoiser):
    """With eps_w(z_t) = z_t (A = I, b = 0, w = 1), SDS grad = sqrt(a) z + (sqrt(1-a) - 1) eps exactly."""
    den = make_linear_denoiser(dim=18)
    den.A_c = torch.eye(18, dtype=torch.float64)
    den.b_c = torch.zeros(18, dtype=torch.float64)
    z = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    eps = torch.randn_like(z)
    cond = torch.zeros(1, 1, 18, dtype=torch.float64)
    t = 500
    out = scores.sds(den, z, t, eps, cond, guidance_scale=1.0)
    a = den.alphas_cumprod[t]
    torch.testing.assert_close(out.grad, a.sqrt() * z + ((1 - a).sqrt() - 1) * eps)
    assert not torch.allclose(out.grad, -(a.sqrt() * z + ((1 - a).sqrt() - 1) * eps))  # sign convention


def test_dds_equals_difference_of_branch_predictions(linear_denoiser):
    z_src, z_trg = torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, 2, 3, 3, dtype=torch.float64)
    eps = torch.randn_like(z_src)
    c_src, c_trg = torch.randn(1, 1, 18, dtype=torch.float64), torch.randn(1, 1, 18, dtype=torch.float64)
    t, w = 321, 7.5
    acp = linear_denoiser.alphas_cumprod
    z_t_src = add_noise(acp, z_src, eps, t)
    out = scores.dds(linear_denoiser, z_src, z_trg, z_t_src, t, c_src, c_trg, w)
    expected = linear_denoiser.eps(add_noise(acp, z_trg, eps, t), t, c_trg, w) - linear_denoiser.eps(
        z_t_src, t, c_src, w
    )
    torch.testing.assert_close(out.grad, expected)


def test_pds_posterior_noise_difference_on_linear_predictor(linear_denoiser):
    """PDS grad = z_trg-branch minus z_src-branch posterior noise; for identical inputs but prompts it is the CFG
    difference scaled by c0 * sqrt(1-a_t) / (sqrt(a_t) sigma)."""
    z = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    eps, eps_prev = torch.randn_like(z), torch.randn_like(z)
    c_src, c_trg = torch.zeros(1, 1, 18, dtype=torch.float64), torch.ones(1, 1, 18, dtype=torch.float64)
    acp = linear_denoiser.alphas_cumprod
    t, t_prev, w = 501, 499, 2.0
    out = scores.pds(
        linear_denoiser, z, z, add_noise(acp, z, eps, t), t, t_prev, eps_prev, c_src, c_trg, w, posterior="exact"
    )
    a_t, a_p = acp[t], acp[t_prev]
    beta = 1 - a_t / a_p
    c0 = a_p.sqrt() * beta / (1 - a_t)
    sigma = ((1 - a_p) / (1 - a_t) * beta).sqrt()
    # eps_w differs by w * (c_trg - c_src) = w; mu differs by -c0 * sqrt(1-a_t)/sqrt(a_t) * w
    expected = c0 * (1 - a_t).sqrt() / a_t.sqrt() * w / sigma
    torch.testing.assert_close(out.grad, torch.full_like(z, float(expected)))
    official = scores.pds(linear_denoiser, z, z, add_noise(acp, z, eps, t), t, t_prev, eps_prev, c_src, c_trg, w)
    assert not torch.allclose(official.grad, out.grad)  # the two posteriors differ for a 2-step jump


def test_cds_patchnce_term_is_differentiable(tiny_prior):
    z_src, noise = _latents(seed=5)
    z = (z_src + 0.3 * noise).requires_grad_(True)
    distiller = ScoreDistiller(tiny_prior, guidance_config("cds"), seed=0)
    out = distiller.step(
        z_src=z_src,
        z_trg=z,
        cond_src=tiny_prior.text_embeddings("a sphere"),
        cond_trg=tiny_prior.text_embeddings("a cube"),
    )
    assert out.aux_loss is not None and torch.isfinite(out.aux_loss)
    (g,) = torch.autograd.grad(out.aux_loss, z)
    assert float(g.abs().sum()) > 0


def test_patch_nce_prefers_matching_patches():
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=1)
    shuffled = ref[torch.randperm(64, generator=g)]
    assert float(scores.patch_nce(ref, ref, 0.07)) < float(scores.patch_nce(ref, shuffled, 0.07))


def test_same_seed_same_steps_different_seed_differs(tiny_prior):
    z_src, noise = _latents(seed=2)
    z = z_src + 0.1 * noise
    c1, c2 = tiny_prior.text_embeddings("a red sphere"), tiny_prior.text_embeddings("a green cone")
    runs = []
    for seed in (7, 7, 8):
        d = ScoreDistiller(tiny_prior, guidance_config("ids"), seed=seed)
        runs.append([d.step(z_src=z_src, z_trg=z, cond_src=c1, cond_trg=c2) for _ in range(2)])
    for a, b in zip(runs[0], runs[1], strict=True):
        assert torch.equal(a.grad, b.grad) and a.diagnostics == b.diagnostics
    assert not torch.equal(runs[0][0].grad, runs[2][0].grad)


def test_timestep_ranges(linear_denoiser):
    d = ScoreDistiller(linear_denoiser, GuidanceConfig(score="dds"), seed=0)
    ts = d.sample_t(3000).tolist()
    assert min(ts) == 50 and max(ts) == 948  # official randint(50, 949)
    pds = ScoreDistiller(linear_denoiser, GuidanceConfig(score="pds"), seed=0)
    pairs = list(zip(*(x.tolist() for x in pds.sample_pds_t(2000)), strict=True))
    assert all(t - tp == 2 for t, tp in pairs)  # 500-step DDIM grid over 1000 steps
    assert min(t for t, _ in pairs) >= 20 and max(t for t, _ in pairs) <= 980


def test_presets_and_errors(make_linear_denoiser):
    assert guidance_config("ids").fpr.enabled and guidance_config("ids").score == "dds"
    assert guidance_config("pds-fpr").name == "pds-fpr"
    assert guidance_config("pds").effective_guidance_scale() == 100.0
    assert guidance_config("dds").effective_guidance_scale() == 7.5
    with pytest.raises(UserInputError, match="Unknown method"):
        guidance_config("ddss")
    with pytest.raises(ValueError, match="CDS needs"):
        ScoreDistiller(make_linear_denoiser(dim=4), GuidanceConfig(score="cds"))
    cfg = GuidanceConfig(score="dds", fpr=FPRConfig(enabled=True))
    assert cfg.name == "ids"


def test_v_prediction_is_converted_to_epsilon(tmp_path):
    """A v-prediction model's output is turned into eps = sqrt(a) v + sqrt(1-a) z_t."""
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig
    from ids_nerf.toy.tiny import build_tiny_pipeline

    path = build_tiny_pipeline(tmp_path / "vpred", seed=0, prediction_type="v_prediction")
    prior = DiffusionPrior(PriorConfig(model=str(path), device="cpu"))
    assert prior.prediction_type == "v_prediction"
    z_t = torch.randn(1, 4, 16, 16)
    cond = prior.text_embeddings("x")
    t = torch.tensor([300])
    with torch.no_grad():
        v = prior.unet(z_t, t, encoder_hidden_states=cond).sample
        eps = prior.eps(z_t, 300, cond, 1.0)
    a = prior.alphas_cumprod[300]
    torch.testing.assert_close(eps, a.sqrt() * v + (1 - a).sqrt() * z_t)


@pytest.mark.parametrize("preset", ["ids", "pds-fpr", "cds"])
def test_batched_step_matches_per_sample_computation(tiny_prior, preset):
    """A batch of edits with per-sample timesteps gives each element the gradient it would get alone."""
    from ids_nerf.guidance.fpr import fixed_point_regularization

    g = torch.Generator().manual_seed(11)
    z_src = torch.randn(3, 4, 16, 16, generator=g)
    z_trg = z_src + 0.2 * torch.randn(3, 4, 16, 16, generator=g)
    c_src = torch.cat([tiny_prior.text_embeddings(p) for p in ("a red sphere", "a green cube", "a blue cone")])
    c_trg = torch.cat([tiny_prior.text_embeddings(p) for p in ("a blue sphere", "a green cone", "a red cone")])
    eps = torch.randn(3, 4, 16, 16, generator=g)
    t = torch.tensor([120, 480, 860])
    cfg = guidance_config(preset)
    fpr = fixed_point_regularization(tiny_prior, z_src, c_src, t, eps, cfg.fpr)
    whole = scores.dds(tiny_prior, z_src, z_trg, fpr.z_t, t, c_src, c_trg, 7.5).grad
    for i in range(3):
        one = fixed_point_regularization(
            tiny_prior, z_src[i : i + 1], c_src[i : i + 1], t[i : i + 1], eps[i : i + 1], cfg.fpr
        )
        torch.testing.assert_close(one.z_t, fpr.z_t[i : i + 1], atol=2e-4, rtol=1e-4)
        single = scores.dds(
            tiny_prior,
            z_src[i : i + 1],
            z_trg[i : i + 1],
            one.z_t,
            t[i : i + 1],
            c_src[i : i + 1],
            c_trg[i : i + 1],
            7.5,
        ).grad
        torch.testing.assert_close(single, whole[i : i + 1], atol=2e-4, rtol=1e-4)
    d = ScoreDistiller(tiny_prior, cfg, seed=0)
    out = d.step(z_src=z_src, z_trg=z_trg.requires_grad_(True), cond_src=c_src, cond_trg=c_trg)
    assert out.grad.shape == z_src.shape and len(out.diagnostics["t_all"]) == 3
    assert all(float(out.grad[i].abs().max()) > 0 for i in range(3))


def test_pds_grid_leaves_the_prior_scheduler_untouched(tiny_prior_dir):
    """The PDS grid is computed on a copy: a sampler's timesteps on the shared scheduler survive a PDS step."""
    from diffusers import DDIMScheduler

    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig

    prior = DiffusionPrior(PriorConfig(model=str(tiny_prior_dir), device="cpu"))
    prior.scheduler.set_timesteps(50)  # e.g. a sampler sharing the prior
    before = prior.scheduler.timesteps.clone()
    z_src, noise = _latents(seed=4)
    d = ScoreDistiller(prior, guidance_config("pds"), seed=0)
    d.step(
        z_src=z_src,
        z_trg=z_src + 0.1 * noise,
        cond_src=prior.text_embeddings("a sphere"),
        cond_trg=prior.text_embeddings("a cube"),
    )
    assert prior.scheduler.num_inference_steps == 50 and torch.equal(prior.scheduler.timesteps, before)
    reference = DDIMScheduler.from_config(prior.scheduler.config)
    reference.set_timesteps(500)  # what the grid was computed from (on the shared scheduler) before
    assert torch.equal(d.pds_grid(), reference.timesteps.flip(0).long())
    assert torch.equal(d.pds_grid(), torch.arange(500) * 2 + 1)  # SD's "leading" spacing, steps_offset = 1


@pytest.mark.parametrize("score", ["dds", "pds"])
def test_precomputed_source_branch_gives_the_same_gradient_from_the_target_branch_alone(linear_denoiser, score):
    """With eps_src given, dds/pds evaluate only the target branch (one call of batch B) and return the gradient of
    the two-branch call."""
    z_src, z_trg = torch.randn(2, 2, 3, 3, dtype=torch.float64), torch.randn(2, 2, 3, 3, dtype=torch.float64)
    eps, eps_prev = torch.randn_like(z_src), torch.randn_like(z_src)
    c_src, c_trg = torch.randn(1, 1, 18, dtype=torch.float64), torch.randn(1, 1, 18, dtype=torch.float64)
    t, t_prev, w = torch.tensor([321, 700]), torch.tensor([319, 698]), 7.5
    z_t_src = add_noise(linear_denoiser.alphas_cumprod, z_src, eps, t)

    def grad(eps_src=None) -> torch.Tensor:
        if score == "dds":
            return scores.dds(linear_denoiser, z_src, z_trg, z_t_src, t, c_src, c_trg, w, eps_src).grad
        args = (linear_denoiser, z_src, z_trg, z_t_src, t, t_prev, eps_prev, c_src, c_trg, w)
        return scores.pds(*args, eps_src=eps_src).grad

    both = grad()
    eps_src = linear_denoiser.eps(z_t_src, t, c_src, w)
    linear_denoiser.calls = 0
    torch.testing.assert_close(grad(eps_src), both)
    assert linear_denoiser.calls == 1

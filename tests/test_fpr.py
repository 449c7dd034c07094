"""Fixed-point regularization: Algorithm 1 against closed forms, finite differences and its own loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ids_nerf.guidance.denoiser import add_noise, tweedie_x0
from ids_nerf.guidance.fpr import FPRConfig, fixed_point_regularization, fpr_distance

SHAPE = (1, 2, 3, 3)


def _inputs(seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z_src = torch.randn(SHAPE, generator=g, dtype=dtype)
    eps = torch.randn(SHAPE, generator=g, dtype=dtype)
    cond = 0.1 * torch.randn(1, 1, z_src[0].numel(), generator=g, dtype=dtype)
    return z_src, eps, cond


def test_zero_iterations_returns_injected_noise(linear_denoiser):
    z_src, eps, cond = _inputs()
    out = fixed_point_regularization(linear_denoiser, z_src, cond, 500, eps, FPRConfig(enabled=True, iterations=0))
    assert torch.equal(out.eps, eps)
    assert torch.equal(out.z_t, add_noise(linear_denoiser.alphas_cumprod, z_src, eps, 500))
    assert out.losses == []


@pytest.mark.parametrize("wrt", ["z_t", "eps"])
def test_guided_noise_reproduces_refined_latent(linear_denoiser, wrt: str):
    z_src, eps, cond = _inputs()
    out = fixed_point_regularization(linear_denoiser, z_src, cond, 700, eps, FPRConfig(iterations=3, wrt=wrt))
    rebuilt = add_noise(linear_denoiser.alphas_cumprod, z_src, out.eps, 700)
    torch.testing.assert_close(rebuilt, out.z_t, rtol=0, atol=1e-12)
    assert not torch.allclose(out.eps, eps)  # the noise was actually moved


def _algorithm1_numpy(den, z_src, eps, cond, t, w, lam, n, metric):
    """Algorithm 1 transcribed as a plain loop, with the closed-form gradient of the affine predictor."""
    a = float(den.alphas_cumprod[t])
    sa, so = np.sqrt(a), np.sqrt(1 - a)
    A_w = den.A_u.numpy() + w * (den.A_c.numpy() - den.A_u.numpy())
    b_w = den.b_u.numpy() + w * (den.b_c.numpy() + cond.numpy().ravel() - den.b_u.numpy())
    zs = z_src.numpy().ravel()
    z = sa * zs + so * eps.numpy().ravel()
    jac = (np.eye(len(z)) - so * A_w) / sa  # d z0_hat / d z_t
    losses = []
    for _ in range(n):
        e = A_w @ z + b_w
        z0 = (z - so * e) / sa
        r = z0 - zs
        if metric == "norm":
            losses.append(np.linalg.norm(r))
            g = jac.T @ r / np.linalg.norm(r)
        else:  # mse
            losses.append(np.mean(r**2))
            g = jac.T @ (2 * r / len(r))
        z = z - lam * g
    eps_star = (z - sa * zs) / so
    return z, eps_star, losses


@pytest.mark.parametrize("metric", ["norm", "mse"])
@pytest.mark.parametrize(("t", "w", "lam", "n"), [(300, 7.5, 1.0, 3), (900, 3.0, 0.4, 5)])
def test_matches_plain_transcription_on_linear_predictor(make_linear_denoiser, metric, t, w, lam, n):
    den = make_linear_denoiser(dim=18, seed=3)
    z_src, eps, cond = _inputs(seed=4)
    cfg = FPRConfig(iterations=n, step_size=lam, metric=metric, source_guidance_scale=w)
    out = fixed_point_regularization(den, z_src, cond, t, eps, cfg)
    z_ref, eps_ref, losses_ref = _algorithm1_numpy(den, z_src, eps, cond, t, w, lam, n, metric)
    np.testing.assert_allclose(out.z_t.numpy().ravel(), z_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.eps.numpy().ravel(), eps_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.losses, losses_ref, rtol=1e-9)
    assert den.calls == n  # one CFG evaluation per iteration


def test_fpr_gradient_matches_finite_differences_through_unet(tiny_prior_dir):
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig

    prior = DiffusionPrior(PriorConfig(model=str(tiny_prior_dir), device="cpu", dtype="float64"))
    g = torch.Generator().manual_seed(0)
    z_src = torch.randn(1, 4, 16, 16, generator=g, dtype=torch.float64)
    eps = torch.randn(1, 4, 16, 16, generator=g, dtype=torch.float64)
    cond = prior.text_embeddings("a red sphere")
    t, lam = 400, 1e-3
    cfg = FPRConfig(iterations=1, step_size=lam, metric="norm", source_guidance_scale=7.5)
    out = fixed_point_regularization(prior, z_src, cond, t, eps, cfg)
    z_t0 = add_noise(prior.alphas_cumprod.double(), z_src, eps, t)
    grad = (z_t0 - out.z_t) / lam  # the library's step is z_t - lambda * grad

    def loss(z):
        with torch.no_grad():
            e = prior.eps(z, t, cond, 7.5)
            return float(fpr_distance(tweedie_x0(prior.alphas_cumprod.double(), z, e, t), z_src, "norm"))

    for k in range(3):
        v = torch.randn(z_t0.shape, generator=g, dtype=torch.float64)
        h = 1e-5
        fd = (loss(z_t0 + h * v) - loss(z_t0 - h * v)) / (2 * h)
        assert float((grad * v).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-8), f"direction {k}"


@pytest.mark.parametrize("metric", ["norm", "mse", "l1", "ssim"])
def test_fpr_lowers_its_own_loss_on_tiny_unet(tiny_prior, metric):
    g = torch.Generator().manual_seed(1)
    z_src = torch.randn(1, 4, 16, 16, generator=g)
    eps = torch.randn(1, 4, 16, 16, generator=g)
    cond = tiny_prior.text_embeddings("a blue cube on a wooden floor")
    scale = {"norm": 0.5, "mse": 20.0, "l1": 20.0, "ssim": 5.0}[metric]
    cfg = FPRConfig(iterations=4, step_size=scale, metric=metric)
    out = fixed_point_regularization(tiny_prior, z_src, cond, 600, eps, cfg)
    with torch.no_grad():
        e = tiny_prior.eps(out.z_t, 600, cond, 7.5)
        final = float(fpr_distance(tweedie_x0(tiny_prior.alphas_cumprod, out.z_t, e, 600), z_src, metric))
    assert final < out.losses[0]
    assert all(b <= a + 1e-6 for a, b in zip(out.losses, out.losses[1:], strict=False))


def test_metrics_are_zero_at_equality_and_positive_otherwise():
    x = torch.randn(2, 4, 16, 16)
    for metric in ("norm", "mse", "l1", "ssim"):
        assert float(fpr_distance(x, x, metric)) == pytest.approx(0.0, abs=1e-5)
        assert float(fpr_distance(x + 0.3 * torch.randn_like(x), x, metric)) > 1e-3
    # "norm" is the unsquared Frobenius norm per sample (official code), summed over the batch
    y = x + 1.0
    assert float(fpr_distance(y, x, "norm")) == pytest.approx(2 * (4 * 16 * 16) ** 0.5, rel=1e-6)
    assert float(fpr_distance(y, x, "mse")) == pytest.approx(2.0, rel=1e-6)


def test_jacobian_free_variant_equals_exact_for_a_score_independent_of_z(make_linear_denoiser):
    """With A = 0 the predictor ignores z_t, so the Jacobian-free step is the exact step."""
    den = make_linear_denoiser(dim=18, seed=5)
    den.A_c = torch.zeros(18, 18, dtype=torch.float64)
    den.A_u = torch.zeros(18, 18, dtype=torch.float64)
    z_src, eps, cond = _inputs(seed=6)
    for wrt in ("z_t", "eps"):
        exact = fixed_point_regularization(den, z_src, cond, 400, eps, FPRConfig(iterations=3, wrt=wrt))
        free = fixed_point_regularization(den, z_src, cond, 400, eps, FPRConfig(iterations=3, wrt=wrt, jacobian="free"))
        torch.testing.assert_close(free.z_t, exact.z_t)
        torch.testing.assert_close(free.eps, exact.eps)


def test_jacobian_free_variant_lowers_the_loss_on_tiny_unet(tiny_prior):
    g = torch.Generator().manual_seed(2)
    z_src, eps = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    cond = tiny_prior.text_embeddings("a red cube")
    out = fixed_point_regularization(tiny_prior, z_src, cond, 500, eps, FPRConfig(iterations=4, jacobian="free"))
    assert out.losses[-1] < out.losses[0]

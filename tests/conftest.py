"""Shared fixtures: a tiny SD-architecture pipeline built offline, and a hand-written linear noise predictor."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_prior_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StableDiffusionPipeline folder written with save_pretrained (random weights, seed 0)."""
    from ids_nerf.toy.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-prior"), seed=0)


@pytest.fixture(scope="session")
def tiny_prior(tiny_prior_dir: Path):
    """The tiny pipeline loaded through the same DiffusionPrior code path as Stable Diffusion."""
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig

    return DiffusionPrior(PriorConfig(model=str(tiny_prior_dir), device="cpu"))


class LinearDenoiser:
    """eps(z, y) = A_c z + b_c + y (conditional), eps(z, Ø) = A_u z + b_u (unconditional), per flattened sample.

    Its CFG prediction is affine in z, so one FPR step has a closed form (see tests/test_fpr.py).
    """

    def __init__(self, dim: int, seed: int = 0, num_timesteps: int = 1000, dtype: torch.dtype = torch.float64):
        g = torch.Generator().manual_seed(seed)
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).to(dtype)
        self.A_c = (0.1 * torch.randn(dim, dim, generator=g, dtype=torch.float64)).to(dtype)
        self.A_u = (0.1 * torch.randn(dim, dim, generator=g, dtype=torch.float64)).to(dtype)
        self.b_c = (0.1 * torch.randn(dim, generator=g, dtype=torch.float64)).to(dtype)
        self.b_u = (0.1 * torch.randn(dim, generator=g, dtype=torch.float64)).to(dtype)
        self.calls = 0

    def eps(self, z_t: torch.Tensor, t, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        self.calls += 1
        flat = z_t.flatten(1)
        cond = cond.expand(flat.shape[0], -1, -1).reshape(flat.shape[0], -1)
        e_u = flat @ self.A_u.T + self.b_u
        e_c = flat @ self.A_c.T + self.b_c + cond
        return (e_u + guidance_scale * (e_c - e_u)).reshape(z_t.shape)


@pytest.fixture
def linear_denoiser() -> LinearDenoiser:
    return LinearDenoiser(dim=2 * 3 * 3)


@pytest.fixture
def make_linear_denoiser() -> type[LinearDenoiser]:
    """The LinearDenoiser class, for tests that need other sizes or seeds."""
    return LinearDenoiser


EDIT_STEPS = 3


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file below ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _toy_run(root: Path, prior_dir: Path, kind: str, recon_steps: int, edit_steps: int, **edit_options) -> dict:
    """Toy scene (32x32 views, 6 for training) -> ``recon_steps`` steps of ``kind``'s reconstruction warm-up ->
    ``edit_steps`` steps of its ids edit with the tiny prior (64 px; ``edit_options`` for toy_runs.edit_config)."""
    from ids_nerf.guidance.prior import PriorConfig
    from ids_nerf.nerf.runs import train_run
    from ids_nerf.nerf.toy_runs import edit_config, reconstruction_config, write_toy_scene

    data, runs = root / "data", root / "runs"
    write_toy_scene(data, n_train=6, size=32, seed=0, n_val=2, n_test=3)
    recon = reconstruction_config(kind, data, runs, recon_steps, "cpu", seed=0)
    train_run(recon)
    before = _snapshot(recon.get_base_dir())
    method = "ids-edit" if kind == "nerfacto" else "ids-splat-edit"
    edit = edit_config(
        method,
        data,
        runs,
        recon.get_checkpoint_dir(),
        prior=PriorConfig(model=str(prior_dir)),
        steps=edit_steps,
        device="cpu",
        seed=0,
        view_repeat=2,
        log_every=1,
        **edit_options,
    )
    edit.pipeline.render.resolution = 64
    if kind == "splat":
        edit.pipeline.model.edit_cull.every = 2
    train_run(edit)
    return {
        "root": root,
        "recon": recon,
        "edit": edit,
        "source_run": recon.get_base_dir(),
        "source_before": before,
        "data": data,
        "runs": runs,
        "prior": prior_dir,
        "edit_steps": edit_steps,
    }


@pytest.fixture(scope="session")
def toy_nerf_run(tmp_path_factory: pytest.TempPathFactory, tiny_prior_dir: Path) -> dict:
    """Toy scene -> 20 ids-recon steps -> EDIT_STEPS ids-edit steps with the tiny prior (render at 1/2, 64 px)."""
    return _toy_run(tmp_path_factory.mktemp("nerf"), tiny_prior_dir, "nerfacto", 20, EDIT_STEPS, render_downscale=2)


@pytest.fixture
def snapshot():
    """(size, mtime) of every file below a folder: ``snapshot(folder)``."""
    return _snapshot


SPLAT_EDIT_STEPS = 3


@pytest.fixture(scope="session")
def toy_splat_run(tmp_path_factory: pytest.TempPathFactory, tiny_prior_dir: Path) -> dict:
    """Toy scene -> 40 ids-splat-recon steps (from the scene's 5,000-point cloud, CPU rasterizer) ->
    SPLAT_EDIT_STEPS ids-splat-edit steps with the tiny prior (64 px), culling every 2 steps."""
    return _toy_run(tmp_path_factory.mktemp("splat"), tiny_prior_dir, "splat", 40, SPLAT_EDIT_STEPS)

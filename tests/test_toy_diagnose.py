"""``python -m ids_nerf.toy.diagnose``: the noise-mean gain against hand-written denoisers whose gain is known, the
mean-start noise, and a whole run on the tiny prior."""

from __future__ import annotations

import json

import pytest
import torch

from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.toy.diagnose import DiagnoseConfig, mean_start_noise, noise_mean_gain, other_shape_caption, run_diagnose
from ids_nerf.toy.tiny import SCHEDULER_CONFIG


class _Denoiser:
    """A hand-written epsilon predictor on SD's schedule: ``blind`` predicts noise without its channel means (what a
    UNet that cannot see them does); otherwise it calls the whole input noise."""

    def __init__(self, blind: bool) -> None:
        from diffusers import DDIMScheduler

        self.alphas_cumprod = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod
        self.device, self.dtype, self.blind = torch.device("cpu"), torch.float32, blind

    def eps(self, z: torch.Tensor, t: int, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        return z - z.mean(dim=(2, 3), keepdim=True) if self.blind else z


@pytest.mark.parametrize("blind", [True, False])
def test_noise_mean_gain_measures_what_the_denoiser_does_with_the_mean(blind):
    denoiser = _Denoiser(blind)
    rows = noise_mean_gain(denoiser, torch.zeros(64, 1), [981, 601], (4, 16, 16), torch.full((4,), 0.5))
    for row in rows:
        a = float(denoiser.alphas_cumprod[row["t"]].sqrt())
        expected = 1 / a if blind else (1 - (1 - a**2) ** 0.5) / a
        assert row["slope"] == pytest.approx([expected] * 4, abs=2e-3)
        assert row["blind"] == pytest.approx(1 / a, abs=1e-3)
        assert all(b < row["blind"] for b in row["bayes"])  # the optimum trusts the noisy mean less than a blind UNet


def test_mean_start_noise_sets_the_channel_means_and_keeps_the_rest():
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    means = torch.tensor([-0.7, 0.0, 0.1, 0.7])
    out = mean_start_noise(noise, means, 0.0058)
    assert torch.allclose(out.mean(dim=(2, 3)), (0.0058**0.5 * means / (1 - 0.0058) ** 0.5).expand(3, 4), atol=1e-6)
    assert torch.allclose(out - out.mean((2, 3), keepdim=True), noise - noise.mean((2, 3), keepdim=True), atol=1e-6)


def test_other_shape_caption_names_another_shape():
    assert other_shape_caption("a red cone on a wooden floor", "cone") == "a red sphere on a wooden floor"


def test_diagnose_runs_on_the_tiny_prior(tmp_path, capsys):
    cfg = DiagnoseConfig(
        prior=PriorConfig(model="tiny", device="cpu", dtype="float32"),
        n_images=8,
        timesteps=(100, 900),
        n_samples=4,
        steps=2,
        batch_size=4,
        json_out=tmp_path / "diag.json",
        threads=1,
    )
    out = run_diagnose(cfg)
    assert out["detector_ceiling"]["real"]["color_accuracy"] == 1.0  # the detectors read rendered scenes exactly
    assert [r["t"] for r in out["loss_by_timestep"]] == [100, 900]
    assert all(r["own"] > 0 and r["empty"] > 0 for r in out["loss_by_timestep"])
    assert [r["t"] for r in out["noise_mean_gain"]] == [501, 1] and set(out["mean_start_counterfactual"]) == {
        "plain",
        "mean_start",
    }
    assert json.loads(cfg.json_out.read_text())["prior"] == "tiny"
    assert "Bayes" in capsys.readouterr().out

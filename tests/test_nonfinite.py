"""Non-finite guidance: zeroed per sample and counted, warned once, stopped after a run; and the pds-fpr "NaN".

The identity benchmark reported pds-fpr's mean final FPR loss as NaN at 200 steps. No step went non-finite (the
counter below sees none, the edits are unchanged): the final FPR loss is only measured when it is free, when the
edit's guidance scale equals FPR's source scale (7.5), which PDS's 100 never does, and the suite turned the mean of
no values into a NaN placeholder. It now reports None for it and the loss before the last FPR iteration, which every
FPR method measures.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from ids_nerf.errors import UserError
from ids_nerf.guidance import scores
from ids_nerf.guidance.config import guidance_config
from ids_nerf.guidance.distiller import ScoreDistiller
from ids_nerf.guidance.nonfinite import NonFiniteGuidanceError, NonFiniteGuidanceWarning

sys.path.insert(0, str(Path(__file__).parent))
from refusals import assert_refused, in_process, snapshot  # noqa: E402


def test_finite_grad_zeroes_only_the_non_finite_samples_and_keeps_finite_ones_bit_for_bit():
    g = torch.randn(3, 4, 5, 5)
    clean = scores.finite_grad(g.clone())
    assert torch.equal(clean.grad, g) and not clean.nonfinite.any()
    g[1, 2, 3, 4] = float("nan")
    g[2, 0, 0, 0] = float("-inf")
    out = scores.finite_grad(g.clone())
    assert out.nonfinite.tolist() == [False, True, True]
    assert torch.equal(out.grad[0], g[0]) and torch.count_nonzero(out.grad[1:]) == 0


class _Poisoned:
    """A denoiser whose predictions are NaN while ``poison`` is set (a diverged prior)."""

    def __init__(self, den) -> None:
        self.den = den
        self.alphas_cumprod = den.alphas_cumprod
        self.poison = False

    def eps(self, z_t, t, cond, guidance_scale):
        e = self.den.eps(z_t, t, cond, guidance_scale)
        return e * float("nan") if self.poison else e


def _step(distiller, z_src, cond):
    return distiller.step(z_src=z_src, z_trg=z_src + 0.1, cond_src=cond, cond_trg=cond + 0.5)


def test_nonfinite_steps_are_counted_warned_once_and_stop_the_edit(make_linear_denoiser):
    den = _Poisoned(make_linear_denoiser(dim=18))
    config = guidance_config("ids")
    config.max_nonfinite_steps = 3
    distiller = ScoreDistiller(den, config, seed=0, flag_prefix="--pipeline.guidance.")
    z_src = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    cond = torch.zeros(1, 1, 18, dtype=torch.float64)
    assert _step(distiller, z_src, cond).diagnostics["nonfinite"] == 0
    den.poison = True
    with pytest.warns(NonFiniteGuidanceWarning, match="step 1: the gradient of 2 of 2 sample"):
        out = _step(distiller, z_src, cond)
    assert out.diagnostics["nonfinite"] == 2 and torch.count_nonzero(out.grad) == 0  # skipped, not poisoned
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning is printed once per edit
        _step(distiller, z_src, cond)
        den.poison = False
        assert _step(distiller, z_src, cond).diagnostics["nonfinite"] == 0  # a finite step ends the run
        den.poison = True
        _step(distiller, z_src, cond)
        _step(distiller, z_src, cond)
        with pytest.raises(NonFiniteGuidanceError) as err:
            _step(distiller, z_src, cond)
    assert isinstance(err.value, UserError)  # console scripts: exit code 2, no traceback
    assert (err.value.steps, err.value.first_step, err.value.last_step) == (3, 4, 6)
    text = str(err.value)
    assert "--pipeline.guidance.max-nonfinite-steps 3" in text and "--pipeline.guidance.guidance-scale" in text
    assert distiller.nonfinite.total == 5


def test_edit_image_stops_a_diverging_edit_with_exit_2_and_writes_nothing(tmp_path, tiny_prior_dir):
    """--optim.lr 1e30 sends the latent to Inf after one step: the UNet's prediction is NaN from then on."""
    from PIL import Image

    from ids_nerf.image.cli import entrypoint

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "in.png")
    out = tmp_path / "new" / "o.png"
    argv = ["ids-edit-image", "--image", str(tmp_path / "in.png"), "--src-prompt", "a red sphere"]
    argv += ["--trg-prompt", "a blue sphere", "--out", str(out), "--prior.model", str(tiny_prior_dir)]
    argv += ["--prior.device", "cpu", "--optim.steps", "20", "--optim.lr", "1e30", "--max-nonfinite-steps", "4"]
    argv += ["--save-trajectory", str(tmp_path / "new" / "t.gif"), "--no-progress"]
    before = snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteGuidanceWarning)
        outcome = in_process(entrypoint, argv)
    assert_refused(outcome, ["--max-nonfinite-steps 4", "--optim.lr", "--guidance-scale"], before, snapshot(tmp_path))
    assert "non-finite (NaN/Inf) in 4 consecutive steps" in outcome.err


def test_pds_fpr_final_fpr_loss_is_not_a_nan_placeholder(tmp_path, tiny_prior_dir):
    """Regression: pds-fpr's fpr_loss_final_mean was NaN (the mean of no measurements); results are strict JSON."""
    from ids_nerf.bench.identity_suite import IdentityBenchConfig, run
    from ids_nerf.guidance.prior import PriorConfig
    from ids_nerf.image.editor import OptimConfig

    cfg = IdentityBenchConfig(
        out=tmp_path / "b",
        prior=PriorConfig(model=str(tiny_prior_dir), device="cpu"),
        methods=("ids", "pds-fpr"),
        n_per_kind=1,
        optim=OptimConfig(steps=2),
        n_bootstrap=20,
        grid_edits=3,
    )
    run(cfg)

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in the results (not JSON)")

    for name in ("results.json", "results.partial.json"):
        saved = json.loads((tmp_path / "b" / name).read_text(), parse_constant=no_constants)
        diag = saved["fpr_diagnostics"]
        assert diag["pds-fpr"]["fpr_loss_final_mean"] is None  # PDS's CFG 100 != FPR's 7.5: not measured
        assert diag["ids"]["fpr_loss_final_mean"] > 0  # measured for free at CFG 7.5
        for method in ("ids", "pds-fpr"):
            d = diag[method]
            assert 0 < d["fpr_loss_last_mean"] < d["fpr_loss_first_mean"]  # FPR lowers its loss

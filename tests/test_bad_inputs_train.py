"""`ns-train <method>-edit` with bad input, run as a user runs it (nerfstudio's own entry point, in this process): every
case ends with exit code 2, one error naming the flag as typed, no traceback, no config dump before it, and nothing
written or changed (the output folder, the source run and the data are the same before and after)."""

from __future__ import annotations

from pathlib import Path

import pytest
from refusals import assert_refused, in_process, snapshot

SRC, TRG = "a red sphere on a checkered floor", "a blue sphere on a checkered floor"

# (id, extra argv, names the message must contain)
CASES = [
    ("guidance-scale-nan", ["--pipeline.guidance.guidance-scale", "nan"], ["--pipeline.guidance.guidance-scale"]),
    ("fpr-iterations-negative", ["--pipeline.guidance.fpr.iterations", "-1"], ["--pipeline.guidance.fpr.iterations"]),
    ("t-range-reversed", ["--pipeline.guidance.t-range", "900", "100"], ["--pipeline.guidance.t-range"]),
    ("t-range-inf", ["--pipeline.guidance.t-range", "0.1", "inf"], ["--pipeline.guidance.t-range"]),
    ("max-iterations-zero", ["--max-num-iterations", "0"], ["--max-num-iterations"]),
    ("loss-scale-nan", ["--pipeline.guidance.loss-scale", "nan"], ["--pipeline.guidance.loss-scale"]),
    ("view-repeat-zero", ["--pipeline.render.view-repeat", "0"], ["--pipeline.render.view-repeat"]),
    ("chunk-size-zero", ["--pipeline.render.chunk-size", "0"], ["--pipeline.render.chunk-size"]),
    ("empty-target", ["--pipeline.guidance.trg-prompt", " "], ["--pipeline.guidance.trg-prompt"]),
    ("same-prompts", ["--pipeline.guidance.trg-prompt", SRC], ["--pipeline.guidance.src-prompt"]),
    ("region-box-short", ["--pipeline.region.box", "0", "0", "0", "1"], ["--pipeline.region.box"]),
    ("region-box-outside", ["--pipeline.region.box", "9", "9", "9", "0.1", "0.1", "0.1"], ["--pipeline.region.box"]),
    ("region-masks-missing", ["--pipeline.region.masks", "/nonexistent/masks"], ["--pipeline.region.masks"]),
    ("mixed-precision", ["--mixed-precision", "True"], ["--mixed-precision"]),
    ("cds-lookahead", ["--pipeline.guidance.score", "cds", "--pipeline.guidance.source.lookahead", "4"], ["lookahead"]),
    ("preset-missing", ["--pipeline.guidance.preset", "/nonexistent.yaml"], ["--pipeline.guidance.preset"]),
]


def _ns_train(argv: list[str]):
    from nerfstudio.scripts.train import entrypoint

    return in_process(entrypoint, ["ns-train", *argv])


def _argv(run: dict, out: Path, method: str = "ids-edit") -> list[str]:
    return [
        method,
        "--load-dir",
        str(run["recon"].get_checkpoint_dir()),
        "--output-dir",
        str(out),
        "--vis",
        "tensorboard",
        "--machine.device-type",
        "cpu",
        "--pipeline.guidance.src-prompt",
        SRC,
        "--pipeline.guidance.trg-prompt",
        TRG,
        "--pipeline.guidance.prior.model",
        str(run["prior"]),
    ]


@pytest.mark.parametrize(("extra", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ns_train_edit_refuses_bad_input(toy_nerf_run, tmp_path, extra, names):
    out = tmp_path / "outputs"
    watched = (out, toy_nerf_run["source_run"], toy_nerf_run["data"])
    before = snapshot(*watched)
    outcome = _ns_train([*_argv(toy_nerf_run, out), *extra])
    assert_refused(outcome, ["ns-train ids-edit: error:", *names], before, snapshot(*watched))
    assert "Config" not in outcome.out  # refused before nerfstudio prints the config


def test_non_finite_guidance_stops_the_edit_with_exit_2(toy_nerf_run, tmp_path):
    """Guidance that stays non-finite (a CFG scale of 1e39 overflows float32) stops the edit after
    --pipeline.guidance.max-nonfinite-steps steps with one paragraph naming what to lower, exit 2."""
    out = tmp_path / "outputs"
    argv = [*_argv(toy_nerf_run, out), "--pipeline.guidance.guidance-scale", "1e39"]
    argv += [
        "--pipeline.guidance.max-nonfinite-steps",
        "2",
        "--max-num-iterations",
        "6",
        "--pipeline.render.resolution",
    ]
    outcome = _ns_train([*argv, "64"])
    assert outcome.code == 2 and "Traceback" not in outcome.err, outcome.err[-3000:]
    assert "--pipeline.guidance.guidance-scale" in outcome.text

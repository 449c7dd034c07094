"""Bad numbers and counts, refused cleanly by every 2D / benchmark / demo entry point (issue 20, classes 4 and 10).

One table: the entry point, the flags given, and the flag(s) the message must name as typed. Each case runs the
console script in this process (:mod:`tests.refusals`) and must exit with code 2, without a traceback, naming the
flag, and must write, create or change nothing (the output folder and the input image are snapshot before and
after). All refusals come from :mod:`ids_nerf.guidance.validation` (or the prompt / prior checks) before any model
loads, so the whole table takes a few seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from refusals import assert_refused, in_process, snapshot  # noqa: E402

NAN, INF = "nan", "inf"

# (entry point, extra flags, names the message must contain)
CASES: list[tuple[str, list[str], list[str]]] = [
    # ids-edit-image: optimisation
    ("ids-edit-image", ["--optim.lr", NAN], ["--optim.lr", "finite"]),
    ("ids-edit-image", ["--optim.lr", "-0.1"], ["--optim.lr", "> 0"]),
    ("ids-edit-image", ["--optim.steps", "-1"], ["--optim.steps", ">= 0"]),
    ("ids-edit-image", ["--optim.loss-scale", INF], ["--optim.loss-scale"]),
    # ids-edit-image: guidance (one validation of GuidanceConfig, flags named under the prefix --)
    ("ids-edit-image", ["--guidance-scale", NAN], ["--guidance-scale", "finite"]),
    ("ids-edit-image", ["--guidance-scale", "-1"], ["--guidance-scale", ">= 0"]),
    ("ids-edit-image", ["--t-range", "900", "100"], ["--t-range", "0 <= lo < hi <= 1", "900.0 100.0"]),
    ("ids-edit-image", ["--t-range", "0.5", NAN], ["--t-range"]),
    ("ids-edit-image", ["--fpr.iterations", "-1"], ["--fpr.iterations", ">= 0"]),
    ("ids-edit-image", ["--fpr.step-size", NAN], ["--fpr.step-size"]),
    ("ids-edit-image", ["--fpr.source-guidance-scale", "-" + INF], ["--fpr.source-guidance-scale"]),
    ("ids-edit-image", ["--method", "cds", "--cds.temperature", "0"], ["--cds.temperature", "> 0"]),
    ("ids-edit-image", ["--cds.patch-sizes"], ["--cds.patch-sizes", "one or more"]),
    ("ids-edit-image", ["--cds.n-patches", "0"], ["--cds.n-patches"]),
    ("ids-edit-image", ["--method", "pds", "--pds.num-inference-steps", "1"], ["--pds.num-inference-steps"]),
    ("ids-edit-image", ["--pds.grid-range", "0.9", "0.1"], ["--pds.grid-range"]),
    ("ids-edit-image", ["--source.pool", "0"], ["--source.pool", ">= 1"]),
    ("ids-edit-image", ["--max-nonfinite-steps", "0"], ["--max-nonfinite-steps"]),
    ("ids-edit-image", ["--seed", "-1"], ["--seed"]),
    ("ids-edit-image", ["--trajectory-frames", "0"], ["--trajectory-frames"]),
    # ids-bench-identity (zero counts used to crash after creating --out)
    ("ids-bench-identity", ["--n-per-kind", "0"], ["--n-per-kind", ">= 1"]),
    ("ids-bench-identity", ["--optim.lr", NAN], ["--optim.lr"]),
    ("ids-bench-identity", ["--batch-size", "0"], ["--batch-size"]),
    ("ids-bench-identity", ["--n-bootstrap", "0"], ["--n-bootstrap"]),
    ("ids-bench-identity", ["--methods"], ["--methods"]),
    # ids-bench-speed
    ("ids-bench-speed", ["--repeats", "0"], ["--repeats", ">= 1"]),
    ("ids-bench-speed", ["--warmup", "-1"], ["--warmup"]),
    ("ids-bench-speed", ["--edit-steps", "-5"], ["--edit-steps"]),
    ("ids-bench-speed", ["--methods"], ["--methods"]),
    # ids-nerf-demo: refused before the scene is generated or reconstructed
    ("ids-nerf-demo", ["--edit-steps", "0"], ["--edit-steps", ">= 1"]),
    ("ids-nerf-demo", ["--recon-steps", "0"], ["--recon-steps"]),
    ("ids-nerf-demo", ["--render-downscale", "0"], ["--render-downscale"]),
    ("ids-nerf-demo", ["--threads", "0"], ["--threads", ">= 1"]),
    ("ids-nerf-demo", ["--src-prompt", " "], ["--src-prompt"]),
    ("ids-nerf-demo", ["--trg-prompt", "a red sphere on a checkered floor"], ["--src-prompt", "--trg-prompt"]),
    ("ids-nerf-demo", ["--prior.device", "cpu", "--prior.dtype", "float16"], ["--prior.dtype"]),
]


def _entrypoint(name: str):
    if name == "ids-edit-image":
        from ids_nerf.image.cli import entrypoint
    elif name == "ids-bench-identity":
        from ids_nerf.bench.identity_suite import entrypoint
    elif name == "ids-bench-speed":
        from ids_nerf.bench.speed import entrypoint
    else:
        from ids_nerf.nerf.demo import entrypoint
    return entrypoint


def _argv(name: str, tmp_path: Path, extra: list[str]) -> list[str]:
    """The command as a user types it: every output inside ``tmp_path/out`` (which must never appear)."""
    out = tmp_path / "out"
    if name == "ids-edit-image":
        base = ["--image", str(tmp_path / "in.png"), "--src-prompt", "a red sphere", "--trg-prompt", "a blue sphere"]
        base += ["--out", str(out / "edit.png"), "--prior.model", "tiny", "--no-progress"]
    elif name == "ids-bench-speed":
        base = ["--out", str(out / "speed.json"), "--prior.model", "tiny"]
    else:  # ids-bench-identity, ids-nerf-demo
        base = ["--out", str(out), "--prior.model", "tiny"]
    return [name, *base, *extra]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    Image.new("RGB", (48, 32), (200, 30, 30)).save(tmp_path / "in.png")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "extra", "names"), CASES, ids=[f"{c[0]}{' ' if c[1] else ''}{' '.join(c[1])}" for c in CASES]
)
def test_bad_number_is_refused_before_anything_loads(inputs, monkeypatch, name, extra, names):
    monkeypatch.setenv("IDS_NERF_CACHE", str(inputs / "cache"))  # the named prior `tiny` must not be built either
    monkeypatch.chdir(inputs)
    before = snapshot(inputs)
    outcome = in_process(_entrypoint(name), _argv(name, inputs, extra))
    assert_refused(outcome, names, before, snapshot(inputs))
    assert len(outcome.err.strip().splitlines()) == 1, outcome.err  # one line: `<prog>: error: <message>`
    assert outcome.err.startswith(f"{name}: error: ")


def test_table_covers_every_entry_point():
    assert len(CASES) >= 15
    assert {c[0] for c in CASES} == {"ids-edit-image", "ids-bench-identity", "ids-bench-speed", "ids-nerf-demo"}

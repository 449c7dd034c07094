"""scripts/gpu_wheels.sh and scripts/gpu_check.sh: syntax, and the wheel list that travels to the GPU machine (pinned to
this environment, never the machine's torch / CUDA stack nor heavy extras). The real dry run is marked slow."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELS_SH = ROOT / "scripts" / "gpu_wheels.sh"
CHECK_SH = ROOT / "scripts" / "gpu_check.sh"
NEVER = re.compile(r"^(torch|torchaudio|triton|nvidia-.*|cuda-.*|open3d|pymeshlab|tinycudann)$")
KINDS = {"pin", "fill", "build", "machine"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_list(python_version: str, via_env: bool = False) -> list[tuple[str, str, str | None]]:
    """(kind, name, version) lines of `gpu_wheels.sh --list` for a target Python, versions from this environment."""
    env = {**os.environ, "GPU_PY": python_version, "VENV_PY": sys.executable}
    args = ["bash", str(WHEELS_SH)]
    if via_env:
        env["GPU_WHEELS_LIST"] = "1"
    else:
        args.append("--list")
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = []
    for line in out.splitlines():
        kind, req = line.split()
        name, _, version = req.partition("==")
        rows.append((kind, _norm(name), version or None))
    return rows


@pytest.mark.parametrize("script", [WHEELS_SH, CHECK_SH], ids=lambda p: p.name)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


@pytest.fixture(scope="module")
def gpu_list():
    return _wheel_list("3.12")


def test_list_mode_downloads_nothing_and_env_switch_matches(gpu_list):
    assert _wheel_list("3.12", via_env=True) == gpu_list
    assert {kind for kind, _, _ in gpu_list} <= KINDS


def test_carried_wheels_are_pinned_and_never_the_machines_cuda_stack(gpu_list):
    carried = [(kind, name, version) for kind, name, version in gpu_list if kind != "machine"]
    names = [name for _, name, _ in carried]
    assert len(names) == len(set(names)), "one version of each: two stop the whole install"
    for kind, name, version in carried:
        assert not NEVER.match(name), f"{name} must never be carried"
        assert version, f"{kind} {name} is not pinned"
    pins = {name: version for kind, name, version in carried if kind == "pin"}
    for needed in ("nerfstudio", "diffusers", "tyro", "viser", "nerfacc", "gsplat", "open-clip-torch"):
        assert needed in pins
    assert pins["nerfstudio"] == "1.1.5"
    for name in ("nerfstudio", "diffusers", "tyro", "viser"):  # pinned to this environment (.venv)
        assert pins[name] == md.version(name)


def test_torchvision_is_only_a_fill_in_matching_each_targets_torch(gpu_list):
    tv = [(kind, version) for kind, name, version in gpu_list if name == "torchvision"]
    assert tv == [("fill", "0.26.0")]  # the build for the GPU machine's torch 2.11.0
    dry = [(kind, version) for kind, name, version in _wheel_list("3.11") if name == "torchvision"]
    assert dry == [("fill", md.version("torchvision"))]  # the dry run's torch is this environment's


def test_machine_packages_are_not_carried(gpu_list):
    machine = {name for kind, name, _ in gpu_list if kind == "machine"}
    carried = {name for kind, name, _ in gpu_list if kind != "machine"}
    assert {"transformers", "accelerate", "numpy"} <= machine
    assert not machine & carried


@pytest.mark.parametrize("variable", ["SPEED_GPU", "SPEED_DRY", "NERF_GPU", "NERF_DRY"])
def test_benchmark_flags_parse(variable, tmp_path):
    """The flags gpu_check.sh passes to ids-bench-speed / ids-bench-nerf are accepted by their configs (a renamed
    flag must fail here, not on the GPU machine's time)."""
    import tyro

    from ids_nerf.bench.nerf import NerfBenchConfig
    from ids_nerf.bench.speed import SpeedBenchConfig

    match = re.search(rf'^{variable}="([^"]*)"$', CHECK_SH.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"{variable} is not set in gpu_check.sh"
    config_type = SpeedBenchConfig if variable.startswith("SPEED") else NerfBenchConfig
    args = shlex.split(match.group(1).replace("\\\n", " "))
    cfg = tyro.cli(config_type, args=[*args, "--out", str(tmp_path / "out")])
    methods = re.search(r'^NERF_METHODS="([^"]*)"$', CHECK_SH.read_text(), re.MULTILINE)
    splats = re.search(r'^SPLAT_METHODS="([^"]*)"$', CHECK_SH.read_text(), re.MULTILINE)
    if variable.startswith("NERF"):  # the nerf stage appends --methods [$SPLAT_METHODS] $NERF_METHODS
        full = [*args, "--methods", *splats.group(1).split(), *methods.group(1).split()]
        assert tyro.cli(config_type, args=full).methods[0].endswith("-splat-edit")
    if variable.endswith("GPU"):
        assert cfg.arch == "sd-v1" and cfg.prior.device == "auto"
    else:
        assert cfg.arch is None and cfg.prior.model == "tiny" and cfg.prior.dtype == "float32"


@pytest.mark.slow
def test_dry_run(tmp_path):
    """Downloads the cp311 wheels, builds the stand-in venv (torch + the machine's packages, from the registry) and runs
    every stage of gpu_check.sh on the CPU at tiny size. Several minutes; needs the registry."""
    wheels, result = tmp_path / "wheels", tmp_path / "result"
    env = {**os.environ, "GPU_PY": "3.11", "VENV_PY": sys.executable, "GPU_WHEELS_DEST": str(wheels)}
    subprocess.run(["bash", str(WHEELS_SH)], env=env, cwd=ROOT, check=True, timeout=900)
    env = {**os.environ, "GPU_CHECK_DRY": "1", "GPU_CHECK_WHEELS": str(wheels), "GPU_CHECK_RESULT": str(result)}
    run = subprocess.run(["bash", str(CHECK_SH)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = json.loads((result / "summary.json").read_text())
    assert summary["ok"] and [s["stage"] for s in summary["stages"]] == [
        "install",
        "versions",
        "nvidia-smi",
        "speed",
        "gsplat",
        "nerf",
        "pytest",
    ]
    methods = [row["method"] for row in json.loads((result / "bench_nerf.json").read_text())["rows"]]
    assert methods == ["dds-splat-edit", "ids-splat-edit", "dds-edit", "ids-edit"]  # splats on the CPU rasterizer
    files = [p for p in result.rglob("*") if p.is_file()]
    assert len(files) <= 8, files  # the run tool brings back at most 8 files
    assert summary["versions"]["packages"]["diffusers"]["from"] == "carried"

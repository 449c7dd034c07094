"""check_prior: the pre-flight of the prior options (no weights loaded); error messages name the caller's flags."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from ids_nerf.errors import PriorLoadError, UserInputError
from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig, PriorFlags, check_prior

#: The spelling under ns-train; messages must use it and never the 2D CLI's bare flags.
NS_FLAGS = PriorFlags.nested("--pipeline.guidance.prior")  # as ns-train spells them
BARE_FLAG = re.compile(r"(?<![\w.-])--(prior|device|dtype)\b")


def _assert_names_flag(err: Exception, flag: str) -> None:
    msg = str(err)
    assert flag in msg, msg
    assert not BARE_FLAG.search(msg), msg
    assert "\n" not in msg


def test_builtins_and_local_folder_pass_without_loading(tiny_prior_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IDS_NERF_CACHE", str(tmp_path / "cache"))
    check_prior(PriorConfig(model="tiny", device="cpu"), NS_FLAGS)
    check_prior(PriorConfig(model="toy", device="cpu", dtype="bfloat16"), NS_FLAGS)
    check_prior(PriorConfig(model=str(tiny_prior_dir), device="cpu", dtype="float32"), NS_FLAGS)
    assert not (tmp_path / "cache").exists()  # `tiny` is not built by the check


@pytest.mark.parametrize(
    ("device", "dtype", "flag", "match"),
    [
        ("cpu", "float16", NS_FLAGS.dtype, "float16 is not supported on the CPU"),
        ("cpu", "fp8", NS_FLAGS.dtype, "Unknown dtype"),
        ("gpu", "auto", NS_FLAGS.device, "Unknown device"),
    ],
)
def test_device_and_dtype_errors_name_the_flags(device, dtype, flag, match):
    with pytest.raises(UserInputError, match=match) as info:
        check_prior(PriorConfig(model="tiny", device=device, dtype=dtype), NS_FLAGS)
    _assert_names_flag(info.value, flag)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_refused():
    with pytest.raises(UserInputError, match="CUDA is not available") as info:
        check_prior(PriorConfig(model="tiny", device="cuda"), NS_FLAGS)
    _assert_names_flag(info.value, NS_FLAGS.device)


def test_default_flags_are_the_2d_cli_ones():
    with pytest.raises(UserInputError, match="use --prior.dtype float32"):
        check_prior(PriorConfig(model="tiny", device="cpu", dtype="float16"))


def test_hub_id_not_in_the_cache_names_the_custom_flag(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PriorLoadError) as info:
        check_prior(PriorConfig(model="CompVis/stable-diffusion-v1-4", device="cpu"), NS_FLAGS)
    _assert_names_flag(info.value, "--pipeline.guidance.prior.model /path/to/folder")
    assert "CompVis/stable-diffusion-v1-4" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)
    assert info.value.__cause__ is None


def test_loading_errors_name_the_custom_flag(tmp_path):
    with pytest.raises(PriorLoadError) as info:
        DiffusionPrior(PriorConfig(model="org/not-in-any-cache", device="cpu"), flags=NS_FLAGS)
    _assert_names_flag(info.value, NS_FLAGS.model)
    with pytest.raises(UserInputError) as info:
        DiffusionPrior(PriorConfig(model="tiny", device="cpu", dtype="float16"), flags=NS_FLAGS)
    _assert_names_flag(info.value, NS_FLAGS.dtype)


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_folder_without_unet_or_missing_is_refused(tmp_path, folder):
    path = tmp_path / folder
    if folder == "empty":
        path.mkdir()
    with pytest.raises(PriorLoadError, match="no unet/ subfolder" if folder == "empty" else "does not exist") as info:
        check_prior(PriorConfig(model=str(path), device="cpu"), NS_FLAGS)
    _assert_names_flag(info.value, NS_FLAGS.model)


def test_missing_bundled_toy_prior_names_the_flag(tmp_path, monkeypatch):
    from ids_nerf.toy import builtin

    monkeypatch.setattr(builtin, "TOY_PRIOR_DIR", tmp_path)
    with pytest.raises(PriorLoadError, match="toy prior is not present") as info:
        check_prior(PriorConfig(model="toy", device="cpu"), NS_FLAGS)
    _assert_names_flag(info.value, f"{NS_FLAGS.model} tiny")


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hub_id_in_the_local_cache_passes_offline(tmp_path, variable):
    """A cache laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>/), found via the env var."""
    root = tmp_path / "hf"
    cache = root if variable == "HF_HUB_CACHE" else root / "hub"
    repo = cache / "models--org--name"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME")}
    env.update({variable: str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    script = (
        "from ids_nerf.errors import PriorLoadError\n"
        "from ids_nerf.guidance.prior import PriorConfig, check_prior\n"
        "check_prior(PriorConfig(model='org/name', device='cpu'))\n"
        "try:\n"
        "    check_prior(PriorConfig(model='org/other', device='cpu'))\n"
        "except PriorLoadError:\n"
        "    print('cached: ok, uncached: refused')\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "cached: ok, uncached: refused"

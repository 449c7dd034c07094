"""DiffusionPrior loading (local folder, built-ins, hub errors), tokenizer, text cache, VAE round trip."""

from __future__ import annotations

import warnings

import pytest
import torch

from ids_nerf.errors import PriorLoadError, UserInputError
from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig, resolve_dtype


def test_offline_tokenizer_matches_clip_ids(tiny_prior):
    ids = tiny_prior.tokenizer("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tiny_prior.tokenizer) == 49408
    assert tiny_prior.tokenizer.pad_token == "<|endoftext|>"


def test_loaded_from_local_folder_with_sd_layout(tiny_prior, tiny_prior_dir):
    assert (tiny_prior_dir / "model_index.json").is_file()
    assert tiny_prior.resolution == 128 and tiny_prior.vae_scale_factor == 8
    assert tiny_prior.scaling_factor == pytest.approx(0.18215)
    assert tiny_prior.dtype == torch.float32 and tiny_prior.device.type == "cpu"
    # SD's scaled_linear schedule
    assert float(tiny_prior.alphas_cumprod[-1]) == pytest.approx(0.004660, rel=1e-3)
    assert not any(p.requires_grad for p in tiny_prior.unet.parameters())


def test_text_embeddings_are_cached_and_distinct(tiny_prior):
    a = tiny_prior.text_embeddings("a red sphere")
    assert tiny_prior.text_embeddings("a red sphere") is a
    b = tiny_prior.text_embeddings("a blue sphere")
    assert a.shape == (1, 77, 32) and not torch.equal(a, b)


def test_long_prompt_is_truncated_with_warning(tiny_prior):
    long = " ".join(["red sphere"] * 60)
    with pytest.warns(UserWarning, match="truncated"):
        emb = tiny_prior.text_embeddings(long)
    assert emb.shape == (1, 77, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_prior.text_embeddings("a short prompt")


def test_cfg_is_uncond_plus_scale_times_difference(tiny_prior):
    z = torch.randn(2, 4, 16, 16)
    cond = tiny_prior.text_embeddings("a green cone")
    with torch.no_grad():
        e_c = tiny_prior.eps(z, 500, cond, 1.0)
        e_u = tiny_prior.eps(z, 500, tiny_prior.text_embeddings(""), 1.0)
        e_w = tiny_prior.eps(z, 500, cond, 7.5)
    torch.testing.assert_close(e_w, e_u + 7.5 * (e_c - e_u), atol=1e-4, rtol=1e-4)


def test_encode_decode_shapes_and_modes(tiny_prior_dir):
    img = torch.rand(1, 3, 128, 128)
    mean_prior = DiffusionPrior(PriorConfig(model=str(tiny_prior_dir), device="cpu"))
    z1, z2 = mean_prior.encode(img), mean_prior.encode(img)
    assert z1.shape == (1, 4, 16, 16) and torch.equal(z1, z2)  # posterior mean is deterministic
    sample_prior = DiffusionPrior(PriorConfig(model=str(tiny_prior_dir), device="cpu", encode_mode="sample"))
    s1 = sample_prior.encode(img, generator=torch.Generator().manual_seed(0))
    s2 = sample_prior.encode(img, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.equal(s1, z1)
    out = mean_prior.decode(z1)
    assert out.shape == (1, 3, 128, 128) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_builtin_tiny_prior_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("IDS_NERF_CACHE", str(tmp_path))
    prior = DiffusionPrior(PriorConfig(model="tiny", device="cpu"))
    assert (tmp_path / "tiny-prior-seed0" / "model_index.json").is_file()
    assert prior.resolution == 128


def test_missing_local_folder_is_a_clear_error():
    with pytest.raises(PriorLoadError, match="does not exist"):
        DiffusionPrior(PriorConfig(model="./no/such/folder", device="cpu"))


def test_folder_without_unet_is_a_clear_error(tmp_path):
    with pytest.raises(PriorLoadError, match="no unet/ subfolder"):
        DiffusionPrior(PriorConfig(model=str(tmp_path), device="cpu"))


def test_hub_id_offline_is_one_paragraph(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PriorLoadError) as info:
        DiffusionPrior(PriorConfig(model="CompVis/stable-diffusion-v1-4", device="cpu"))
    msg = str(info.value)
    assert "CompVis/stable-diffusion-v1-4" in msg and "HF_HUB_OFFLINE" in msg and "--prior" in msg
    assert "\n" not in msg and info.value.__cause__ is None


def test_dtype_and_device_strings():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(UserInputError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", torch.device("cpu"))
    with pytest.raises(UserInputError, match="Unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))


def _params_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


def test_force_upcast_vae_runs_in_float32_under_a_half_dtype(tiny_prior_dir):
    """diffusers' convention: a VAE with `force_upcast` (AutoencoderKL's default, SD 1.x) stays float32."""
    import json

    assert json.loads((tiny_prior_dir / "vae" / "config.json").read_text())["force_upcast"] is True
    prior = DiffusionPrior(PriorConfig(model=str(tiny_prior_dir), device="cpu", dtype="bfloat16"))
    assert prior.dtype == torch.bfloat16 and prior.vae_dtype == torch.float32
    assert _params_dtypes(prior.vae) == {torch.float32} and _params_dtypes(prior.unet) == {torch.bfloat16}
    z = prior.encode(torch.rand(1, 3, 128, 128))  # inputs are cast to the VAE's dtype, not the UNet's
    assert z.dtype == torch.float32 and z.shape == (1, 4, 16, 16)
    assert prior.decode(z).dtype == torch.float32
    assert prior.eps(z, 500, prior.text_embeddings("a cube"), 7.5).dtype == torch.float32


@pytest.mark.parametrize(
    ("force_upcast", "dtype", "vae_dtype"),
    [(True, "bfloat16", torch.float32), (False, "bfloat16", torch.bfloat16), (True, "float32", torch.float32)],
)
def test_in_memory_components_follow_the_force_upcast_rule(tmp_path, force_upcast, dtype, vae_dtype):
    from ids_nerf.toy.tiny import SCHEDULER_CONFIG, TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG, build_components

    vae_config = {**VAE_CONFIG, "force_upcast": force_upcast}
    parts = build_components(UNET_CONFIG, vae_config, TEXT_CONFIG, SCHEDULER_CONFIG, 0, tmp_path / "tok")
    prior = DiffusionPrior(PriorConfig(model="tiny", device="cpu", dtype=dtype), components=parts)
    assert prior.vae_dtype == vae_dtype and _params_dtypes(prior.vae) == {vae_dtype}
    assert _params_dtypes(prior.unet) == {prior.dtype}
    assert prior.decode(prior.encode(torch.rand(1, 3, 32, 48))).shape == (1, 3, 32, 48)

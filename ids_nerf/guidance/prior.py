"""DiffusionPrior: a Stable-Diffusion-family latent diffusion model loaded with diffusers.

It is the one place that touches diffusers. The score functions only need its :class:`Denoiser` face
(``alphas_cumprod`` and :meth:`DiffusionPrior.eps`), so tests can swap in hand-written predictors.
:func:`check_prior` validates the prior options without loading any weights.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ids_nerf.errors import PriorLoadError, UserInputError
from ids_nerf.guidance.denoiser import cfg_combine, per_sample
from ids_nerf.guidance.named_priors import named_prior

#: Half-precision dtypes; with one of them a VAE whose config sets ``force_upcast`` runs in float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class PriorConfig:
    """Which diffusion model to load and how to run it."""

    model: str = "CompVis/stable-diffusion-v1-4"
    """Diffusion prior: a Hugging Face hub id, a local diffusers folder (with model_index.json, unet/, vae/,
    text_encoder/, tokenizer/, scheduler/), `toy` (the bundled offline model) or `tiny` (random-weight test model)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of `model`; ignored for local folders."""
    device: str = "auto"
    """Device of the prior: `auto` (cuda if available, else cpu), `cpu`, `cuda`, `cuda:1`, ..."""
    dtype: str = "auto"
    """Weights dtype: `auto` (float16 on CUDA, float32 on CPU), `float32`, `float16`, `bfloat16` (or `float64`
    for gradient checks). A VAE with `force_upcast` in its config (SD 1.x) runs in float32 under a half dtype."""
    encode_mode: Literal["mean", "sample"] = "mean"
    """VAE encoding: posterior `mean` (as the official DDS/CDS/IDS code) or a `sample` of the posterior."""
    gradient_checkpointing: bool = False
    """Recompute VAE-encoder activations in the backward pass (saves memory when backpropagating into renders)."""


@dataclass(frozen=True)
class PriorFlags:
    """How the user spells the prior options on the command line (error messages name these). The defaults are
    those of a :class:`PriorConfig` nested as ``prior`` in a tyro CLI (``--prior.model``); callers that nest it
    elsewhere pass :meth:`nested` of their prefix."""

    model: str = "--prior.model"
    """Flag of :attr:`PriorConfig.model`."""
    device: str = "--prior.device"
    """Flag of :attr:`PriorConfig.device`."""
    dtype: str = "--prior.dtype"
    """Flag of :attr:`PriorConfig.dtype`."""

    @classmethod
    def nested(cls, prefix: str) -> PriorFlags:
        """The flags of a :class:`PriorConfig` nested under ``prefix`` by tyro, e.g. ``--pipeline.guidance.prior``."""
        return cls(model=f"{prefix}.model", device=f"{prefix}.device", dtype=f"{prefix}.dtype")


def resolve_device(spec: str, flags: PriorFlags = PriorFlags()) -> torch.device:
    """Parse a device string; `auto` picks CUDA when available."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise UserInputError(f"Unknown device {spec!r} for {flags.device}: use auto, cpu, cuda or cuda:N.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            f"{flags.device} {spec} was requested but CUDA is not available on this machine; "
            f"use {flags.device} cpu (or auto)."
        )
    return device


def resolve_dtype(spec: str, device: torch.device, flags: PriorFlags = PriorFlags()) -> torch.dtype:
    """Parse a dtype string; `auto` is float16 on CUDA and float32 elsewhere."""
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float64": torch.float64,
    }
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if spec not in table:
        raise UserInputError(f"Unknown dtype {spec!r} for {flags.dtype}: use auto, float32, float16 or bfloat16.")
    dtype = table[spec]
    if device.type == "cpu" and dtype == torch.float16:
        raise UserInputError(
            f"float16 is not supported on the CPU; use {flags.dtype} float32 (or bfloat16), or a CUDA device."
        )
    return dtype


def _offline_help(model: str, reason: str, flags: PriorFlags = PriorFlags()) -> str:
    """One paragraph for a hub model that cannot be fetched: ``reason``, then what to do (naming ``flags.model``)."""
    return (
        f"Could not load the diffusion prior {model!r}: {reason}. "
        "The model is fetched from the Hugging Face Hub unless it is already in the local cache "
        "(with HF_HUB_OFFLINE=1 only the cache is used); this machine may be offline, or the id may be wrong. "
        f"Either download it once on a machine with internet (`huggingface-cli download {model}`) and copy the "
        "cache (~/.cache/huggingface) here, or pass a local diffusers folder (containing model_index.json, unet/, "
        f"vae/, text_encoder/, tokenizer/, scheduler/) with {flags.model} /path/to/folder. "
        f"`{flags.model} toy` uses the model bundled with ids_nerf and needs no network."
    )


def _network_errors() -> tuple[type[Exception], ...]:
    """Base errors of the HTTP clients huggingface_hub versions use that do not subclass OSError (requests' do)."""
    errors: list[type[Exception]] = []
    for module in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(module).HTTPError)
    return tuple(errors)


def _check_named(name: str, flags: PriorFlags) -> None:
    """A named prior (``toy``, ``tiny``, ...) must be available in this installation."""
    prior = named_prior(name)
    reason = prior.unavailable() if prior is not None else None
    if reason is not None:
        raise PriorLoadError(
            f"The prior {name!r} given with {flags.model} is not available: {reason}. Pass another one, e.g. "
            f"`{flags.model} tiny` (random weights, for smoke tests only), a hub id or a local diffusers folder."
        )


def resolve_model_path(model: str, flags: PriorFlags = PriorFlags()) -> tuple[str, bool]:
    """Map ``model`` to (path-or-hub-id, is_local). Built-in names are materialised on first use."""
    prior = named_prior(model)
    if prior is not None:
        _check_named(model, flags)
        return str(prior.path()), True
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "unet").is_dir():
            raise PriorLoadError(
                f"The folder {path} is not a diffusers Stable Diffusion folder: it has no unet/ subfolder. "
                f"Give {flags.model} a folder written by `StableDiffusionPipeline.save_pretrained` "
                "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), a hub id such as "
                "CompVis/stable-diffusion-v1-4, or `toy`."
            )
        return str(path), True
    looks_like_path = model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or path.suffix != ""
    if looks_like_path:
        raise PriorLoadError(
            f"The prior folder {model!r} given with {flags.model} does not exist. Pass an existing diffusers folder, "
            "a hub id such as CompVis/stable-diffusion-v1-4, or `toy` for the bundled offline model."
        )
    return model, False


def _first_line(err: BaseException) -> str:
    """First line of an exception's message without its final period (its type name when empty), for one-paragraph
    errors."""
    text = str(err).strip()
    return text.splitlines()[0].rstrip(".") if text else type(err).__name__


def _check_hub(model: str, revision: str | None, flags: PriorFlags) -> None:
    """The hub id's model_index.json is in the local cache or downloadable (HF_HUB_OFFLINE=1: the cache only)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        hf_hub_download(model, "model_index.json", revision=revision)
    except RevisionNotFoundError:
        raise PriorLoadError(
            f"The Hugging Face Hub model {model!r} (given with {flags.model}) has no revision {revision!r}: pass an "
            "existing branch, tag or commit, or none for the main branch."
        ) from None
    except RepositoryNotFoundError:
        raise PriorLoadError(
            f"The Hugging Face Hub has no model {model!r} (given with {flags.model}), or it is private or gated "
            "(accept its licence on huggingface.co, then `huggingface-cli login`). Check the id, pass a local "
            f"diffusers folder with {flags.model} /path/to/folder, or use `{flags.model} toy` (bundled, no network)."
        ) from None
    except (OSError, ValueError, *_network_errors()) as err:  # LocalEntryNotFoundError, OfflineModeIsEnabled: OSError
        raise PriorLoadError(_offline_help(model, _first_line(err), flags)) from None


def check_prior(config: PriorConfig, flags: PriorFlags = PriorFlags()) -> None:
    """Cheap pre-flight, no weights loaded: device and dtype parse and fit together (float16 on CPU refused, CUDA
    device without CUDA refused), and the model resolves: a built-in name (`toy`, `tiny`), a local diffusers folder
    with unet/, or a hub id whose model_index.json is in the local Hugging Face cache or downloadable.

    Raises :class:`UserInputError` (device, dtype) or :class:`PriorLoadError` (model), naming the flags in ``flags``.
    """
    resolve_dtype(config.dtype, resolve_device(config.device, flags), flags)
    if named_prior(config.model) is not None:
        _check_named(config.model, flags)
        return
    source, local = resolve_model_path(config.model, flags)
    if not local:
        _check_hub(source, config.revision, flags)


class DiffusionPrior:
    """A frozen latent diffusion model: text encoding (cached), VAE encode/decode, CFG noise prediction.

    Implements the :class:`ids_nerf.guidance.denoiser.Denoiser` protocol used by the score functions.
    """

    def __init__(
        self, config: PriorConfig, components: dict | None = None, *, flags: PriorFlags = PriorFlags()
    ) -> None:
        """Load ``config.model``, or use in-memory ``components`` (tokenizer, text_encoder, vae, unet, scheduler).

        The UNet runs in ``dtype``; the VAE in ``vae_dtype`` (float32 under a half dtype when its config sets
        ``force_upcast``). Errors name the command-line ``flags``.
        """
        self.config = config
        self.flags = flags
        self.device = resolve_device(config.device, flags)
        self.dtype = resolve_dtype(config.dtype, self.device, flags)
        #: Latents and images handed to callers are float32 (float64 for a float64 prior).
        self.latent_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        if components is None:
            self._load()
        else:
            self.tokenizer, self.text_encoder = components["tokenizer"], components["text_encoder"]
            self.vae, self.unet = components["vae"], components["unet"]
            self.scheduler = components["scheduler"]
        self._setup()
        self._text_cache: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        source, local = resolve_model_path(self.config.model, self.flags)
        kwargs = {"local_files_only": True} if local else {"revision": self.config.revision}
        # A half-precision prior may keep its VAE in float32 (force_upcast, read from the config): load it in float32.
        vae_load_dtype = torch.float32 if self.dtype in HALF_DTYPES else self.dtype
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
            self.text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
            self.vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=vae_load_dtype, **kwargs)
            self.unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=self.dtype, **kwargs)
            self.scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
        except PriorLoadError:
            raise
        except (OSError, ValueError, *_network_errors()) as err:  # hub errors subclass OSError / ValueError
            raise PriorLoadError(_offline_help(self.config.model, _first_line(err), self.flags)) from None

    def _setup(self) -> None:
        for module in (self.text_encoder, self.vae, self.unet):
            module.requires_grad_(False)
            module.eval()
        upcast_vae = self.dtype in HALF_DTYPES and bool(getattr(self.vae.config, "force_upcast", False))
        #: dtype of the VAE's weights and inputs: float32 for a half-precision prior whose VAE config sets
        #: ``force_upcast`` (diffusers' convention: SD 1.x VAEs overflow in float16), else the prior's dtype.
        self.vae_dtype: torch.dtype = torch.float32 if upcast_vae else self.dtype
        self.text_encoder.to(self.device, torch.float32)  # fp32 whatever the stored dtype: it runs once per prompt
        for module, dtype in ((self.vae, self.vae_dtype), (self.unet, self.dtype)):
            if module.dtype != dtype:  # diffusers warns on every dtype cast through to(), even a no-op one
                module.to(dtype=dtype)
            module.to(self.device)
        if self.config.gradient_checkpointing:
            self.vae.enable_gradient_checkpointing()
        self.prediction_type: str = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise PriorLoadError(
                f"Scheduler prediction_type {self.prediction_type!r} of {self.config.model!r} is not supported; "
                f"pass with {self.flags.model} a model predicting `epsilon` or `v_prediction`."
            )
        self.alphas_cumprod: Tensor = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.num_train_timesteps: int = int(self.scheduler.config.num_train_timesteps)
        self.scaling_factor: float = float(self.vae.config.scaling_factor)
        self.vae_scale_factor: int = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution: int = int(self.unet.config.sample_size) * self.vae_scale_factor
        self.latent_channels: int = int(self.unet.config.in_channels)
        #: Image sizes must be multiples of this (VAE downsampling x UNet downsampling), e.g. 64 for SD 1.x.
        self.size_multiple: int = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ text
    def text_embeddings(self, prompt: str) -> Tensor:
        """CLIP hidden states (1, L, D) for ``prompt``, cached; the empty prompt is the unconditional one."""
        if prompt not in self._text_cache:
            max_len = self.tokenizer.model_max_length
            ids = self.tokenizer(prompt, truncation=False).input_ids
            if len(ids) > max_len:
                kept = self.tokenizer.decode(ids[1 : max_len - 1])
                dropped = self.tokenizer.decode(ids[max_len - 1 : -1])
                warnings.warn(
                    f"Prompt is {len(ids)} tokens, longer than the text encoder's limit of {max_len}: it was "
                    f"truncated to {kept!r}; dropped {dropped!r}.",
                    stacklevel=2,
                )
            tokens = self.tokenizer(
                prompt, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
            ).input_ids.to(self.device)
            with torch.no_grad():
                hidden = self.text_encoder(tokens)[0]
            self._text_cache[prompt] = hidden.to(self.dtype)
        return self._text_cache[prompt]

    # ------------------------------------------------------------------ noise prediction
    def eps(self, z_t: Tensor, t: Tensor | int, cond: Tensor, guidance_scale: float) -> Tensor:
        """Classifier-free-guided noise prediction ``uncond + w * (cond - uncond)`` for a batch.

        ``t`` is one timestep for all or one per element (B,); ``cond`` holds one text embedding per batch element
        (B, L, D) or one for all (1, L, D). Both CFG branches
        of every element go through the UNet in a single batched call. Differentiable w.r.t. ``z_t``.
        """
        batch = z_t.shape[0]
        cond = cond.expand(batch, -1, -1) if cond.shape[0] == 1 else cond
        t_batch = per_sample(t, batch).to(self.device)
        if guidance_scale == 1.0:
            return self._predict_eps(z_t, t_batch, cond)
        uncond = self.text_embeddings("").expand(batch, -1, -1)
        both = self._predict_eps(torch.cat([z_t, z_t]), torch.cat([t_batch, t_batch]), torch.cat([uncond, cond]))
        e_uncond, e_cond = both.chunk(2)
        return cfg_combine(e_uncond, e_cond, guidance_scale)

    def _predict_eps(self, z_t: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        """Raw UNet call returning an epsilon prediction in the dtype of ``z_t`` (v-predictions are converted)."""
        out = self.unet(z_t.to(self.dtype), t, encoder_hidden_states=embeddings.to(self.dtype)).sample.to(z_t.dtype)
        if self.prediction_type == "v_prediction":
            a = self.alphas_cumprod[t].to(z_t.dtype).view(-1, *([1] * (z_t.dim() - 1)))
            out = a.sqrt() * out + (1 - a).sqrt() * z_t
        return out

    # ------------------------------------------------------------------ VAE
    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] -> scaled latents. Differentiable w.r.t. ``images``."""
        posterior = self.vae.encode(images.to(self.device, self.vae_dtype) * 2 - 1).latent_dist
        if self.config.encode_mode == "sample":
            noise = torch.randn(posterior.mean.shape, generator=generator, device="cpu").to(posterior.mean)
            latents = posterior.mean + posterior.std * noise
        else:
            latents = posterior.mean
        return latents.to(self.latent_dtype) * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> images (B, 3, H, W) in [0, 1]."""
        images = self.vae.decode((latents / self.scaling_factor).to(self.device, self.vae_dtype)).sample
        return (images.to(self.latent_dtype) / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ features (CDS)
    @contextlib.contextmanager
    def capture_self_attention(self) -> Iterator[list[Tensor]]:
        """Collect the outputs of every self-attention (``attn1``) layer of the UNet up-blocks during the block.

        Each entry is (B, H*W, C), in the order the layers run. Used by CDS's PatchNCE loss.
        """
        features: list[Tensor] = []
        handles = [
            module.register_forward_hook(lambda _m, _i, out: features.append(out if torch.is_tensor(out) else out[0]))
            for name, module in self.unet.named_modules()
            if name.startswith("up_blocks") and name.endswith("attn1")
        ]
        try:
            yield features
        finally:
            for handle in handles:
                handle.remove()

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Latent (C, h, w) for an image of height x width pixels."""
        return self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor

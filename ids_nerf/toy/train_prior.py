"""Train the bundled toy prior from scratch on the toy world: a tiny Stable-Diffusion-architecture pipeline.

One command reproduces ``ids_nerf/toy/weights/toy-prior/``::

    python -m ids_nerf.toy.train_prior --out ids_nerf/toy/weights/toy-prior --seed 0

The shipped weights took 2 h 29 min of wall-clock time on the 2-core development VM, which other jobs shared
(stage times in ``train_log.json``: data 332 s, vae 1,798 s, encode 350 s, decoder 406 s, unet 6,081 s; the UNet
stage alone is ~1.24 s/step when it has both cores, 72 min for its 3,500 steps). That is over the 90-minute
target; no GPU was available to train on.

Stages (wall times are printed and written to ``<out>/train_log.json``):

1. **data**: ``n_train`` captioned 64x64 scenes from :func:`ids_nerf.toy.scenes.generate_one` (seed ``seed``;
   a ``single_object_fraction`` of them hold one object, the rest 1-3), rendered by ``workers`` processes.
   The held-out images of :mod:`ids_nerf.toy.quality` come from another stream (:data:`HOLDOUT_SEED`).
2. **vae**: an ``AutoencoderKL`` (64x64x3 -> 4x16x16, no mid-block attention) trained on random crops with
   L1 + L2 reconstruction and a small KL term (no perceptual or adversarial loss offline).
3. **encode**: posterior means and stds of every training image and of its mirror image (augmentation); the
   ``scaling_factor`` is set to 1 / std of these latents (SD's 0.18215 was measured the same way).
   **decoder**: the decoder is then fine-tuned on whole images with the encoder frozen (GroupNorm statistics
   and borders of whole images differ from those of crops), which leaves the latents of stage 4 unchanged.
4. **unet**: ``CLIPTextModel`` (CLIP's 49,408-token BPE vocabulary, see :mod:`ids_nerf.toy.tokenizer`) and
   ``UNet2DConditionModel`` trained jointly with the epsilon-prediction DDPM loss on SD's ``scaled_linear``
   schedule, timesteps weighted by Min-SNR-gamma (``snr_gamma``; 0 gives the plain, unweighted loss), captions
   dropped to ``""`` with probability ``caption_dropout`` (classifier-free guidance). EMA weights are saved.
5. **save**: ``StableDiffusionPipeline.save_pretrained`` (DDIM scheduler, fp16 safetensors by default) and,
   with ``final_eval``, the quality gates of :mod:`ids_nerf.toy.quality`.

Every random draw comes from ``seed``. Intermediate results live in ``work_dir`` (default:
``$IDS_NERF_CACHE/train-prior``), each stage's files named after a hash of the options the stage depends on: an
interrupted run started again with the same arguments resumes from the last finished stage or checkpoint, and a
change of, say, the UNet options reuses the data and the VAE.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall on shared CPUs

import torch  # noqa: E402
import tyro  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ids_nerf.toy.scenes import GenerationConfig, generate_one  # noqa: E402
from ids_nerf.toy.tiny import SCHEDULER_CONFIG  # noqa: E402

HOLDOUT_SEED: int = 1_000_003
"""Scene stream of the held-out images (evaluation only; training refuses this seed)."""
SINGLE_OBJECT_FRACTION: float = 0.5
"""Default share of single-object scenes in the training (and held-out) data; the rest have 1-3 objects."""
_GOLDEN = 0.6180339887498949


@dataclass
class TrainPriorConfig:
    """Training of the toy prior (all stages, from scratch)."""

    out: Path = Path("ids_nerf/toy/weights/toy-prior")
    """Output folder, written with ``StableDiffusionPipeline.save_pretrained`` (replaced if it exists)."""
    seed: int = 0
    """Seed of everything: training scenes, initial weights, batches, noise."""
    work_dir: Path | None = None
    """Folder for stage results and checkpoints, named after hashes of the options they depend on (default:
    ``$IDS_NERF_CACHE/train-prior``)."""
    resume: bool = True
    """Reuse finished stages and the last checkpoint found in ``work_dir``."""
    threads: int = 2
    """Torch CPU threads."""
    workers: int = 2
    """Processes rendering the training scenes."""

    image_size: int = 64
    """Image resolution (square)."""
    n_train: int = 24_000
    """Number of training scenes (each is also used mirrored)."""
    single_object_fraction: float = SINGLE_OBJECT_FRACTION
    """Share of training scenes with exactly one object; the others have 1-3 (uniform)."""

    vae_channels: tuple[int, ...] = (16, 32, 64)
    """AutoencoderKL ``block_out_channels``; n blocks downsample by 2^(n-1)."""
    vae_layers_per_block: int = 1
    """ResNet layers per VAE block."""
    vae_steps: int = 2000
    """VAE optimisation steps."""
    vae_batch_size: int = 64
    """VAE batch size."""
    vae_crop: int = 32
    """VAE training on random square crops of this size (0: whole images); the VAE is fully convolutional (no
    mid-block attention), so crops train it for whole images at a quarter of the cost."""
    vae_lr: float = 2e-3
    """VAE peak learning rate (AdamW, linear warm-up then cosine decay to 10%)."""
    vae_kl_weight: float = 1e-5
    """Weight of the KL term (mean per latent element) against L1 + L2 (means per pixel, images in [-1, 1])."""
    decoder_steps: int = 600
    """Then fine-tune the decoder on whole images with the encoder frozen (the latents stay those the UNet is
    trained on; GroupNorm statistics and image borders of whole images differ from those of crops)."""
    decoder_batch_size: int = 16
    """Batch size of the decoder fine-tuning."""
    decoder_lr: float = 5e-4
    """Peak learning rate of the decoder fine-tuning."""

    text_hidden_size: int = 64
    """CLIPTextModel hidden size (= UNet ``cross_attention_dim``)."""
    text_layers: int = 2
    """CLIPTextModel transformer layers."""
    text_heads: int = 4
    """CLIPTextModel attention heads."""
    text_intermediate_size: int = 256
    """CLIPTextModel MLP width."""

    unet_channels: tuple[int, ...] = (32, 64, 128)
    """UNet ``block_out_channels`` (cross-attention in every block but the lowest-resolution one, as in SD)."""
    unet_layers_per_block: int = 2
    """ResNet (+ transformer) layers per UNet block."""
    unet_head_dim: int = 32
    """Channels per attention head in the UNet."""
    unet_steps: int = 3500
    """Steps of the joint text-encoder + UNet training."""
    unet_batch_size: int = 32
    """Batch size of the UNet stage."""
    unet_lr: float = 8e-4
    """Peak learning rate of the UNet stage (AdamW, warm-up then cosine decay to 10%)."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up steps (both stages)."""
    caption_dropout: float = 0.1
    """Probability of replacing a caption by the empty prompt (classifier-free guidance)."""
    snr_gamma: float = 5.0
    """Min-SNR-gamma loss weighting of the timesteps (``min(SNR, gamma) / SNR``); 0 gives the plain DDPM loss."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the text-encoder and UNet weights (the saved weights)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (both stages)."""
    checkpoint_every: int = 500
    """Checkpoint interval in steps (both stages)."""
    eval_every: int = 1000
    """Run a small sampling evaluation every this many UNet steps (0: never); it does not change training."""
    eval_samples: int = 56
    """Samples of that evaluation (one per colour/shape/floor combination)."""

    save_dtype: Literal["float16", "float32"] = "float16"
    """Dtype of the saved weights (float16 halves the size; DiffusionPrior upcasts UNet and VAE on the CPU)."""
    final_eval: bool = True
    """After saving, run the quality gates of :mod:`ids_nerf.toy.quality` on the saved folder."""


# ----------------------------------------------------------------------------------------------- data


def generation_config(index: int, single_object_fraction: float) -> GenerationConfig:
    """Scene options of image ``index``: one object for a ``single_object_fraction`` of the indices."""
    single = (index * _GOLDEN) % 1.0 < single_object_fraction  # evenly interleaved, deterministic
    return GenerationConfig(n_objects=1 if single else None)


def _render_range(args: tuple[int, int, int, int, float]) -> tuple[np.ndarray, list[str]]:
    """Images ``start..stop-1`` of a stream (worker function)."""
    start, stop, size, seed, fraction = args
    images, captions = [], []
    for i in range(start, stop):
        img, cap, _ = generate_one(i, size, seed, generation_config(i, fraction))
        images.append(img)
        captions.append(cap)
    return np.stack(images), captions


def generate_dataset(
    n: int,
    size: int,
    seed: int,
    single_object_fraction: float = SINGLE_OBJECT_FRACTION,
    workers: int = 1,
    desc: str = "scenes",
) -> tuple[np.ndarray, list[str]]:
    """``n`` captioned scenes as uint8 (n, size, size, 3) and captions; the same for any ``workers``."""
    chunk = 250
    jobs = [(s, min(s + chunk, n), size, seed, single_object_fraction) for s in range(0, n, chunk)]
    images: list[np.ndarray] = []
    captions: list[str] = []
    bar = tqdm(total=n, desc=desc, unit="img", leave=False)
    if workers <= 1 or len(jobs) <= 1:
        results: Iterable[tuple[np.ndarray, list[str]]] = map(_render_range, jobs)
        for imgs, caps in results:
            images.append(imgs)
            captions.extend(caps)
            bar.update(len(caps))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for imgs, caps in pool.map(_render_range, jobs):
                images.append(imgs)
                captions.extend(caps)
                bar.update(len(caps))
    bar.close()
    arr = np.concatenate(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    return arr, captions


def to_model_range(images: Tensor) -> Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------- models


def _groups(channels: Iterable[int]) -> int:
    """GroupNorm groups dividing every width (at most 32)."""
    return min(32, math.gcd(*channels))


def build_vae(cfg: TrainPriorConfig) -> nn.Module:
    """The AutoencoderKL of ``cfg`` with fresh weights."""
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=tuple(cfg.vae_channels),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=cfg.vae_layers_per_block,
        norm_num_groups=_groups(cfg.vae_channels),
        sample_size=cfg.image_size,
        mid_block_add_attention=False,
    )


def build_text_encoder(cfg: TrainPriorConfig) -> nn.Module:
    """A CLIPTextModel over CLIP's 49,408-token vocabulary with fresh weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=cfg.text_hidden_size,
            intermediate_size=cfg.text_intermediate_size,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def build_unet(cfg: TrainPriorConfig) -> nn.Module:
    """SD-layout UNet2DConditionModel: CrossAttnDownBlock2D ... DownBlock2D / UpBlock2D, CrossAttnUpBlock2D ..."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    latent = cfg.image_size // 2 ** (len(cfg.vae_channels) - 1)
    heads = tuple(max(1, c // cfg.unet_head_dim) for c in cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=latent,
        in_channels=4,
        out_channels=4,
        layers_per_block=cfg.unet_layers_per_block,
        block_out_channels=tuple(cfg.unet_channels),
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cfg.text_hidden_size,
        attention_head_dim=heads,  # diffusers' legacy name: the number of heads per block
        norm_num_groups=_groups(cfg.unet_channels),
    )


def build_tokenizer(tmp_dir: Path) -> Any:
    """CLIPTokenizer with the offline CLIP BPE vocabulary (files written to ``tmp_dir``)."""
    from transformers import CLIPTokenizer

    from ids_nerf.toy.tokenizer import write_clip_tokenizer_files

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp_dir))


def build_scheduler() -> Any:
    """DDIM with SD 1.x's ``scaled_linear`` betas (0.00085 -> 0.012, 1000 steps, epsilon prediction)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def n_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------- helpers


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class Stopwatch:
    """Wall-clock and CPU seconds (all threads of this process and of its finished children); pausable."""

    def __init__(self, times: dict[str, float] | None = None) -> None:
        self.wall = float((times or {}).get("wall", 0.0))
        self.cpu = float((times or {}).get("cpu", 0.0))
        self._since: tuple[float, float] | None = None

    @staticmethod
    def _cpu_now() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> Stopwatch:
        """Start (or resume) counting."""
        self._since = (time.perf_counter(), self._cpu_now())
        return self

    def stop(self) -> Stopwatch:
        """Pause counting."""
        self.wall, self.cpu = self.read()["wall"], self.read()["cpu"]
        self._since = None
        return self

    def read(self) -> dict[str, float]:
        """``{"wall": s, "cpu": s}`` so far."""
        if self._since is None:
            return {"wall": self.wall, "cpu": self.cpu}
        return {
            "wall": self.wall + time.perf_counter() - self._since[0],
            "cpu": self.cpu + self._cpu_now() - self._since[1],
        }


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


class Ema:
    """Exponential moving average of parameters with diffusers' warm-up ``min(decay, (1 + n) / (10 + n))``."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        self.shadow = [p.detach().clone() for p in params]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, params: list[nn.Parameter]) -> None:
        """Blend the current parameters in."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in params], 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, params: list[nn.Parameter]) -> None:
        """Overwrite ``params`` with the averages."""
        for p, s in zip(params, self.shadow, strict=True):
            p.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        """Serializable state."""
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.shadow = [s.clone() for s in state["shadow"]]
        self.updates = int(state["updates"])


_DATA_FIELDS = ("seed", "image_size", "n_train", "single_object_fraction")
_VAE_FIELDS = _DATA_FIELDS + (
    "vae_channels",
    "vae_layers_per_block",
    "vae_steps",
    "vae_batch_size",
    "vae_crop",
    "vae_lr",
    "vae_kl_weight",
    "warmup_steps",
    "grad_clip",
)
_DECODER_FIELDS = ("decoder_steps", "decoder_batch_size", "decoder_lr")
_NOT_TRAINING = (
    "out",
    "work_dir",
    "resume",
    "threads",
    "workers",
    "eval_every",
    "eval_samples",
    "save_dtype",
    "final_eval",
    "checkpoint_every",
)


def stage_key(cfg: TrainPriorConfig, stage: Literal["data", "vae", "decoder", "unet"]) -> str:
    """Hash of the options a stage's result depends on (names its files in the work dir).

    The UNet stage does not depend on the decoder fine-tuning (it trains on the frozen encoder's latents).
    """
    values = asdict(cfg)
    if stage == "data":
        fields = {k: values[k] for k in _DATA_FIELDS}
    elif stage == "vae":
        fields = {k: values[k] for k in _VAE_FIELDS}
    elif stage == "decoder":
        fields = {k: values[k] for k in _VAE_FIELDS + _DECODER_FIELDS}
    else:
        fields = {k: v for k, v in values.items() if k not in _NOT_TRAINING + _DECODER_FIELDS}
    text = json.dumps({"stage": stage, **fields}, sort_keys=True, default=str)
    return f"{stage}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


# ----------------------------------------------------------------------------------------------- stages


def random_crops(x: Tensor, size: int, gen: torch.Generator) -> Tensor:
    """One random ``size`` x ``size`` crop of every image of a batch (B, C, H, W)."""
    b, _, h, w = x.shape
    if size <= 0 or size >= min(h, w):
        return x
    top = torch.randint(0, h - size + 1, (b,), generator=gen)
    left = torch.randint(0, w - size + 1, (b,), generator=gen)
    rows = (top[:, None] + torch.arange(size))[:, None, :, None]
    cols = (left[:, None] + torch.arange(size))[:, None, None, :]
    return x[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]


def train_vae(cfg: TrainPriorConfig, images: Tensor, work: Path) -> tuple[nn.Module, dict[str, float]]:
    """Stage 2: the AutoencoderKL on uint8 images (N, H, W, 3) and mirror images; resumable.

    Returns the VAE and the wall/CPU seconds its training took (summed over resumed sessions).
    """
    key = stage_key(cfg, "vae")
    final, ckpt = work / f"{key}.pt", work / f"{key}.ckpt"
    if cfg.resume and final.is_file():
        state = _load(final)
        vae = build_vae(cfg)
        vae.load_state_dict(state["vae"])
        return vae.eval(), dict(state["seconds"])
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg)  # weights drawn from the seed
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.vae_steps, cfg.warmup_steps))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start, clock = 0, Stopwatch()
    if cfg.resume and ckpt.is_file():
        state = _load(ckpt)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start, clock = int(state["step"]), Stopwatch(state["seconds"])
    clock.start()
    vae.train()
    bar = tqdm(range(start, cfg.vae_steps), desc="vae", initial=start, total=cfg.vae_steps)
    for step in bar:
        idx = torch.randint(0, images.shape[0], (cfg.vae_batch_size,), generator=gen)
        x = random_crops(to_model_range(images[idx]), cfg.vae_crop, gen)
        flip = torch.rand(cfg.vae_batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(generator=gen)).sample
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).pow(2).mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = l1 + l2 + cfg.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step % 10 == 0:
            psnr = 10 * math.log10(4.0 / max(l2.item(), 1e-12))  # images span 2 in [-1, 1]
            bar.set_postfix(l1=f"{l1.item():.4f}", psnr=f"{psnr:.1f}", kl=f"{kl.item():.2f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.vae_steps:
            _save_atomic(
                {
                    "vae": vae.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "gen": gen.get_state(),
                    "step": step + 1,
                    "seconds": clock.read(),
                },
                ckpt,
            )
    bar.close()
    vae.eval()
    seconds = clock.stop().read()
    _save_atomic({"vae": vae.state_dict(), "seconds": seconds}, final)
    ckpt.unlink(missing_ok=True)
    return vae, seconds


def finetune_decoder(
    cfg: TrainPriorConfig, vae: nn.Module, images: Tensor, means: Tensor, stds: Tensor, work: Path
) -> dict[str, float]:
    """Stage 3b: fine-tune ``post_quant_conv`` + decoder in place on whole images; resumable.

    ``means``/``stds`` are the cached posteriors of ``images`` followed by those of the mirror images (see
    :func:`encode_images`); the encoder is not touched. Returns the wall/CPU seconds it took.
    """
    key = stage_key(cfg, "decoder")
    final, ckpt = work / f"{key}.pt", work / f"{key}.ckpt"
    modules = nn.ModuleDict({"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv})
    if cfg.resume and final.is_file():
        state = _load(final)
        modules.load_state_dict(state["modules"])
        return dict(state["seconds"])
    if cfg.decoder_steps <= 0:
        return {"wall": 0.0, "cpu": 0.0}
    warmup = min(cfg.warmup_steps, max(1, cfg.decoder_steps // 10))
    opt = torch.optim.AdamW(modules.parameters(), lr=cfg.decoder_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.decoder_steps, warmup))
    gen = torch.Generator().manual_seed(cfg.seed + 4)
    start, clock = 0, Stopwatch()
    if cfg.resume and ckpt.is_file():
        state = _load(ckpt)
        modules.load_state_dict(state["modules"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start, clock = int(state["step"]), Stopwatch(state["seconds"])
    clock.start()
    n = images.shape[0]
    vae.requires_grad_(False)
    modules.requires_grad_(True)
    modules.train()
    bar = tqdm(range(start, cfg.decoder_steps), desc="vae decoder", initial=start, total=cfg.decoder_steps)
    for step in bar:
        idx = torch.randint(0, means.shape[0], (cfg.decoder_batch_size,), generator=gen)
        x = to_model_range(images[idx % n])
        x = torch.where((idx >= n)[:, None, None, None], x.flip(-1), x)
        z = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).pow(2).mean()
        loss = l1 + l2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step % 10 == 0:
            bar.set_postfix(l1=f"{l1.item():.4f}", psnr=f"{10 * math.log10(4.0 / max(l2.item(), 1e-12)):.1f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.decoder_steps:
            _save_atomic(
                {
                    "modules": modules.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "gen": gen.get_state(),
                    "step": step + 1,
                    "seconds": clock.read(),
                },
                ckpt,
            )
    bar.close()
    vae.requires_grad_(True)
    vae.eval()
    seconds = clock.stop().read()
    _save_atomic({"modules": modules.state_dict(), "seconds": seconds}, final)
    ckpt.unlink(missing_ok=True)
    return seconds


@torch.no_grad()
def encode_images(vae: nn.Module, images: Tensor, batch_size: int = 128, desc: str = "encode") -> tuple[Tensor, Tensor]:
    """Posterior means and stds (unscaled) of uint8 images (N, H, W, 3) and of their mirror images (2N, ...)."""
    means, stds = [], []
    for flip in (False, True):
        for s in tqdm(range(0, images.shape[0], batch_size), desc=desc + (" (mirrored)" if flip else ""), leave=False):
            x = to_model_range(images[s : s + batch_size])
            dist = vae.encode(x.flip(-1) if flip else x).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def latent_scaling_factor(means: Tensor) -> float:
    """1 / std of the latents, rounded to 5 significant digits (SD's 0.18215 was measured this way)."""
    return float(f"{1.0 / float(means.float().std()):.5g}")


def tokenize(tokenizer: Any, prompts: list[str]) -> Tensor:
    """Token ids (N, 77), padded with ``<|endoftext|>`` as SD 1.x does."""
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def train_unet(
    cfg: TrainPriorConfig,
    means: Tensor,
    stds: Tensor,
    caption_ids: Tensor,
    tokens: Tensor,
    empty_id: int,
    scaling_factor: float,
    work: Path,
    evaluate: Callable[[nn.Module, nn.Module, int], dict[str, Any]] | None = None,
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Stage 4: text encoder + UNet on (latent, caption) pairs; resumable.

    ``caption_ids[i]`` indexes ``tokens`` for latent ``i``; ``tokens[empty_id]`` is the empty prompt. Returns
    copies of both models holding the EMA weights, and ``{"seconds", "history", "final_loss"}`` (wall/CPU seconds
    of training summed over resumed sessions, without the in-training evaluations; evaluation results).
    """
    key = stage_key(cfg, "unet")
    final, ckpt = work / f"{key}.pt", work / f"{key}.ckpt"
    if cfg.resume and final.is_file():
        state = _load(final)
        text_encoder, unet = build_text_encoder(cfg), build_unet(cfg)
        text_encoder.load_state_dict(state.pop("text_encoder"))
        unet.load_state_dict(state.pop("unet"))
        return text_encoder.eval(), unet.eval(), state
    torch.manual_seed(cfg.seed + 2)
    text_encoder, unet = build_text_encoder(cfg), build_unet(cfg)
    scheduler = build_scheduler()
    alphas = scheduler.alphas_cumprod.float()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.unet_steps, cfg.warmup_steps))
    ema = Ema(params, cfg.ema_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    start, history, clock = 0, [], Stopwatch()
    if cfg.resume and ckpt.is_file():
        state = _load(ckpt)
        text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        start, history, clock = int(state["step"]), list(state["history"]), Stopwatch(state["seconds"])
    clock.start()
    text_encoder.train()
    unet.train()
    n = means.shape[0]
    bar = tqdm(range(start, cfg.unet_steps), desc="unet", initial=start, total=cfg.unet_steps)
    avg = None
    for step in bar:
        b = cfg.unet_batch_size
        idx = torch.randint(0, n, (b,), generator=gen)
        z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scaling_factor
        caps = caption_ids[idx].clone()
        caps[torch.rand(b, generator=gen) < cfg.caption_dropout] = empty_id
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen)
        z_t = scheduler.add_noise(z0, noise, t)
        hidden = text_encoder(tokens[caps])[0]
        pred = unet(z_t, t, encoder_hidden_states=hidden).sample
        mse = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        if cfg.snr_gamma > 0:
            snr = alphas[t] / (1 - alphas[t])
            mse = mse * snr.clamp(max=cfg.snr_gamma) / snr
        loss = mse.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        ema.update(params)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{avg:.4f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        done = step + 1
        if evaluate is not None and cfg.eval_every > 0 and done % cfg.eval_every == 0:
            clock.stop()
            te, un = _ema_copies(text_encoder, unet, ema)
            result = {"step": done, "loss": avg, **evaluate(te, un, done)}
            history.append(result)
            tqdm.write(f"[eval step {done}] " + json.dumps(result))
            clock.start()
        if done % cfg.checkpoint_every == 0 and done < cfg.unet_steps:
            spent = clock.read()
            _save_atomic(
                {
                    "text_encoder": text_encoder.state_dict(),
                    "unet": unet.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "ema": ema.state_dict(),
                    "gen": gen.get_state(),
                    "step": done,
                    "history": history,
                    "seconds": spent,
                },
                ckpt,
            )
    bar.close()
    te, un = _ema_copies(text_encoder, unet, ema)
    info = {"seconds": clock.stop().read(), "history": history, "final_loss": avg}
    _save_atomic({"text_encoder": te.state_dict(), "unet": un.state_dict(), **info}, final)
    ckpt.unlink(missing_ok=True)
    return te, un, info


def _ema_copies(text_encoder: nn.Module, unet: nn.Module, ema: Ema) -> tuple[nn.Module, nn.Module]:
    """Eval-mode copies of both models holding the EMA weights."""
    te, un = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    ema.copy_to(list(te.parameters()) + list(un.parameters()))
    return te.eval(), un.eval()


def save_pipeline(
    out: Path, vae: nn.Module, text_encoder: nn.Module, unet: nn.Module, dtype: torch.dtype = torch.float16
) -> Path:
    """Write a StableDiffusionPipeline folder (DDIM scheduler, offline CLIP tokenizer) to ``out``, replacing it."""
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = build_tokenizer(tmp / "_tokenizer_build")
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).to(dtype),
        text_encoder=copy.deepcopy(text_encoder).to(dtype),
        tokenizer=tokenizer,
        unet=copy.deepcopy(unet).to(dtype),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(tmp / "_tokenizer_build")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def folder_size_mb(path: Path) -> float:
    """Total size of the files under ``path`` in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


# ----------------------------------------------------------------------------------------------- main


def _in_training_evaluator(
    cfg: TrainPriorConfig, vae: nn.Module, work: Path
) -> Callable[[nn.Module, nn.Module, int], dict[str, Any]]:
    """A small sampling evaluation of EMA weights through the real loading path (fp32 folder in ``work``)."""
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig
    from ids_nerf.toy.quality import evaluate_samples, single_object_prompts

    def run(text_encoder: nn.Module, unet: nn.Module, step: int) -> dict[str, Any]:
        folder = save_pipeline(work / "eval-pipeline", vae, text_encoder, unet, torch.float32)
        prior = DiffusionPrior(PriorConfig(model=str(folder), device="cpu", dtype="float32"))
        prompts = single_object_prompts(cfg.eval_samples)
        res = evaluate_samples(prior, prompts, steps=25, guidance_scale=7.5, seed=123)
        return {k: res[k] for k in ("color_accuracy", "shape_accuracy")}

    return run


def load_data(cfg: TrainPriorConfig, work: Path) -> tuple[np.ndarray, list[str], dict[str, float]]:
    """Stage 1 (cached in ``work``): training images, captions, and the wall/CPU seconds their rendering took."""
    path = work / f"{stage_key(cfg, 'data')}.npz"
    if cfg.resume and path.is_file():
        with np.load(path) as d:
            seconds = {"wall": float(d["seconds"]), "cpu": float(d["cpu_seconds"]) if "cpu_seconds" in d else -1.0}
            return d["images"], [str(c) for c in d["captions"]], seconds
    clock = Stopwatch().start()
    images, captions = generate_dataset(
        cfg.n_train, cfg.image_size, cfg.seed, cfg.single_object_fraction, cfg.workers, desc="training scenes"
    )
    seconds = clock.stop().read()
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, images=images, captions=np.array(captions), seconds=seconds["wall"], cpu_seconds=seconds["cpu"])
    os.replace(tmp, path)
    return images, captions, seconds


def load_latents(cfg: TrainPriorConfig, vae: nn.Module, images: Tensor, work: Path) -> dict[str, Any]:
    """Stage 3 (cached in ``work``): posterior means/stds of the images and mirror images, the scaling factor."""
    path = work / f"{stage_key(cfg, 'vae')}-latents.pt"
    if cfg.resume and path.is_file():
        return _load(path)
    clock = Stopwatch().start()
    means, stds = encode_images(vae, images)
    lat = {"means": means, "stds": stds, "scaling_factor": latent_scaling_factor(means), "seconds": clock.stop().read()}
    _save_atomic(lat, path)
    return lat


def main(cfg: TrainPriorConfig) -> dict[str, Any]:
    """Run every stage; returns (and writes to ``<out>/train_log.json``) timings, sizes and metrics.

    Stage times (wall-clock and CPU seconds) are those recorded when each stage ran, summed over resumed sessions,
    so a run that reuses cached stages still reports what they cost.
    """
    if cfg.seed == HOLDOUT_SEED:
        raise ValueError(f"seed {HOLDOUT_SEED} is reserved for the held-out images")
    torch.set_num_threads(cfg.threads)
    session = Stopwatch().start()
    work = cfg.work_dir or _default_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}")
    timings: dict[str, dict[str, float]] = {}

    images_np, captions, timings["data"] = load_data(cfg, work)
    images = torch.from_numpy(images_np)
    print(f"data: {len(captions)} scenes ({timings['data']['wall']:.0f} s)")

    vae, timings["vae"] = train_vae(cfg, images, work)

    lat = load_latents(cfg, vae, images, work)
    means, stds, scaling_factor = lat["means"], lat["stds"], float(lat["scaling_factor"])
    timings["encode"] = dict(lat["seconds"])
    timings["decoder"] = finetune_decoder(cfg, vae, images, means, stds, work)
    vae.register_to_config(scaling_factor=scaling_factor)
    scaled = means * scaling_factor
    latent_stats = {
        "scaling_factor": scaling_factor,
        "scaled_mean": float(scaled.mean()),
        "scaled_std": float(scaled.std()),
        "channel_means": scaled.mean(dim=(0, 2, 3)).tolist(),
        "channel_stds": scaled.std(dim=(0, 2, 3)).tolist(),
        "posterior_std_mean": float(stds.mean() * scaling_factor),
    }
    print(f"latents: {tuple(means.shape)}, {json.dumps(latent_stats)}")

    with _quiet_tmp(work / "_tok") as tok_dir:
        tokenizer = build_tokenizer(tok_dir)
    unique = sorted(set(captions))
    tokens = tokenize(tokenizer, [*unique, ""])
    lookup = {c: i for i, c in enumerate(unique)}
    caption_ids = torch.tensor([lookup[c] for c in captions] * 2)  # the mirrored copies share captions
    evaluate = _in_training_evaluator(cfg, vae, work) if cfg.eval_every > 0 else None
    text_encoder, unet, unet_info = train_unet(
        cfg, means, stds, caption_ids, tokens, len(unique), scaling_factor, work, evaluate
    )
    timings["unet"] = dict(unet_info["seconds"])

    clock = Stopwatch().start()
    dtype = torch.float16 if cfg.save_dtype == "float16" else torch.float32
    save_pipeline(cfg.out, vae, text_encoder, unet, dtype)
    timings["save"] = clock.stop().read()
    timings["training_total"] = {k: sum(t[k] for t in timings.values()) for k in ("wall", "cpu")}
    log: dict[str, Any] = {
        "command": "python -m ids_nerf.toy.train_prior " + " ".join(_cli_args(cfg)),
        "config": asdict(cfg),
        "seconds": timings,
        "params": {"vae": n_params(vae), "text_encoder": n_params(text_encoder), "unet": n_params(unet)},
        "size_mb": folder_size_mb(cfg.out),
        "latents": latent_stats,
        "unet_final_loss": unet_info["final_loss"],
        "eval_history": unet_info["history"],
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    if cfg.final_eval:
        from ids_nerf.toy.quality import QualityConfig, run_quality

        clock = Stopwatch().start()
        log["quality"] = run_quality(QualityConfig(prior=str(cfg.out), threads=cfg.threads))
        timings["final_eval"] = clock.stop().read()
    timings["this_session"] = session.stop().read()
    (Path(cfg.out) / "train_log.json").write_text(json.dumps(log, indent=2, default=str))
    print("seconds (wall / cpu): " + ", ".join(f"{k} {v['wall']:.0f} / {v['cpu']:.0f}" for k, v in timings.items()))
    print(f"params: {log['params']}, size: {log['size_mb']:.2f} MB")
    return log


def _cli_args(cfg: TrainPriorConfig) -> list[str]:
    """The options of ``cfg`` that differ from the defaults, as CLI arguments."""
    default = asdict(TrainPriorConfig())
    args = []
    for k, v in asdict(cfg).items():
        if v != default[k] or k in ("out", "seed"):
            flag = "--" + k.replace("_", "-")
            if isinstance(v, bool):
                args.append(flag if v else "--no-" + k.replace("_", "-"))
            elif isinstance(v, tuple):
                args.extend([flag, *map(str, v)])
            else:
                args.extend([flag, str(v)])
    return args


class _quiet_tmp:
    """Context manager yielding a scratch folder that is removed afterwards."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _default_work_dir() -> Path:
    from ids_nerf.toy.builtin import cache_dir

    return cache_dir() / "train-prior"


def entrypoint() -> None:
    """CLI entry point."""
    main(tyro.cli(TrainPriorConfig))


if __name__ == "__main__":
    entrypoint()

"""Train the bundled toy prior from scratch on the toy world: a tiny Stable-Diffusion-architecture pipeline.

One command trains a prior from scratch (the first of the three runs behind ``ids_nerf/toy/weights/toy-prior/``,
listed below)::

    python -m ids_nerf.toy.train_prior --out ids_nerf/toy/weights/toy-prior --seed 0

From scratch, the first shipped weights took 2 h 29 min of wall-clock time on the 2-core development VM, which
other jobs shared (stage times in ``train_log.json``: data 332 s, vae 1,798 s, encode 350 s, decoder 406 s, unet
6,081 s; the UNet stage alone is ~0.75-1.2 s/step when it has both cores). No GPU was available to train on.

To train the shipped weights further (the VAE kept, text encoder + UNet for more steps with a fresh warm-up; the
new ``train_log.json`` lists every run's command and stage times in order, so the weights are reproducible from it)::

    python -m ids_nerf.toy.train_prior --init-from ids_nerf/toy/weights/toy-prior --unet-steps 5000 \
        --out ids_nerf/toy/weights/toy-prior --seed 0

The shipped weights are three runs (``runs`` in ``train_log.json``): 3,500 UNet steps from scratch and 5,000 more,
both with one channel per GroupNorm group (run them with ``--unet-norm-groups 32``, the option came later and its
default is now 8), then 1,000 steps regrouped to ``--unet-norm-groups 8``, the run that made the samples follow
their prompts (see :mod:`ids_nerf.toy.diagnose` and the README).

Stages (wall times are printed and written to ``<out>/train_log.json``):

1. **data**: ``n_train`` captioned 64x64 scenes from :func:`ids_nerf.toy.generation.generate_one` (seed ``seed``;
   a ``single_object_fraction`` of them hold one object, the rest 1-3), rendered by ``workers`` processes.
   The held-out images of :mod:`ids_nerf.toy.quality` come from another stream
   (:data:`~ids_nerf.toy.training_data.HOLDOUT_SEED`).
2. **vae**: an ``AutoencoderKL`` (64x64x3 -> 4x16x16, no mid-block attention) trained on random crops with
   L1 + L2 reconstruction and a small KL term (no perceptual or adversarial loss offline).
3. **encode**: posterior means and stds of every training image and of its mirror image (augmentation); the
   ``scaling_factor`` is set to 1 / std of these latents (SD's 0.18215 was measured the same way).
   **decoder**: the decoder is then fine-tuned on whole images with the encoder frozen (GroupNorm statistics
   and borders of whole images differ from those of crops), which leaves the latents of stage 4 unchanged.
4. **unet**: ``CLIPTextModel`` (CLIP's 49,408-token BPE vocabulary, see :mod:`ids_nerf.toy.tokenizer`) and
   ``UNet2DConditionModel`` trained jointly with the epsilon-prediction DDPM loss on SD's ``scaled_linear``
   schedule, timesteps weighted by Min-SNR-gamma (``snr_gamma``; 0 gives the plain, unweighted loss), captions
   dropped to ``""`` with probability ``caption_dropout`` (classifier-free guidance). EMA weights (diffusers'
   ``EMAModel``) are saved.
5. **save**: ``StableDiffusionPipeline.save_pretrained`` (DDIM scheduler, fp16 safetensors by default) and,
   with ``final_eval``, the quality gates of :mod:`ids_nerf.toy.quality`.

Every random draw comes from ``seed``. Intermediate results live in ``work_dir`` (default: ``train-prior`` in
the cache folder, ``$IDS_NERF_CACHE`` or ``~/.cache/ids_nerf``), each stage's files named after a hash of the
options the stage depends on: an interrupted run started again with the same arguments resumes from the last
finished stage or checkpoint, and a change of, say, the UNet options reuses the data and the VAE.

Modules: :mod:`~ids_nerf.toy.train_config` (options, stage keys), :mod:`~ids_nerf.toy.training_data` (scenes,
tensors), :mod:`~ids_nerf.toy.models` (builders, pipeline folder), :mod:`~ids_nerf.toy.train_loop` (the one
resumable loop), :mod:`~ids_nerf.toy.train_stages` (the stages); this one runs them in order and is the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.toy.builtin import cache_dir
from ids_nerf.toy.quality import QualityConfig, evaluate_samples, run_quality, single_object_prompts
from ids_nerf.toy.train_config import TrainPriorConfig
from ids_nerf.toy.training_data import HOLDOUT_SEED, tokenize

__all__ = ["TrainPriorConfig", "entrypoint", "main"]


def _in_training_evaluator(
    cfg: TrainPriorConfig, vae: nn.Module, work: Path
) -> Callable[[nn.Module, nn.Module, int], dict[str, Any]]:
    """A small sampling evaluation of EMA weights through the real loading path (fp32 folder in ``work``)."""
    # diffusers-heavy modules, imported when training starts so that `--help` stays fast
    from ids_nerf.guidance.prior import DiffusionPrior
    from ids_nerf.toy.models import save_pipeline

    def run(text_encoder: nn.Module, unet: nn.Module, step: int) -> dict[str, Any]:
        folder = save_pipeline(work / "eval-pipeline", vae, text_encoder, unet, torch.float32)
        prior = DiffusionPrior(PriorConfig(model=str(folder), device="cpu", dtype="float32"))
        prompts = single_object_prompts(cfg.eval_samples)
        res = evaluate_samples(prior, prompts, steps=25, guidance_scale=7.5, seed=123)
        return {k: res[k] for k in ("color_accuracy", "shape_accuracy")}

    return run


def main(cfg: TrainPriorConfig) -> dict[str, Any]:
    """Run every stage; returns (and writes to ``<out>/train_log.json``) timings, sizes and metrics.

    Stage times (wall-clock and CPU seconds) are those recorded when each stage ran, summed over resumed sessions,
    so a run that reuses cached stages still reports what they cost.
    """
    if cfg.seed == HOLDOUT_SEED:
        raise UserInputError(f"seed {HOLDOUT_SEED} is reserved for the held-out images; choose another seed.")
    if cfg.unet_norm_groups < 1 or any(c % cfg.unet_norm_groups for c in cfg.unet_channels):
        raise UserInputError(
            f"--unet-norm-groups {cfg.unet_norm_groups} must divide every --unet-channels width "
            f"{' '.join(map(str, cfg.unet_channels))}; e.g. 8."
        )
    # diffusers, transformers and accelerate take ~10 s to import: only when training starts, not for `--help`
    from ids_nerf.toy import train_stages as stages
    from ids_nerf.toy.models import build_tokenizer, n_params, save_pipeline
    from ids_nerf.toy.train_loop import Stopwatch

    torch.set_num_threads(cfg.threads)
    session = Stopwatch().start()
    work = cfg.work_dir or cache_dir() / "train-prior"
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}")
    timings: dict[str, dict[str, float]] = {}

    init, previous_runs = _load_init(cfg)
    images_np, captions, timings["data"] = stages.load_data(cfg, work)
    images = torch.from_numpy(images_np)
    print(f"data: {len(captions)} scenes ({timings['data']['wall']:.0f} s)")

    if init is None:
        vae, timings["vae"] = stages.train_vae(cfg, images, work)
    else:
        vae, timings["vae"] = init.vae, {"wall": 0.0, "cpu": 0.0}
        print(f"continuing from {cfg.init_from} (weights {init.fingerprint}, run {init.round + 1})")

    lat = stages.load_latents(cfg, vae, images, work, init)
    means, stds, scaling_factor = lat["means"], lat["stds"], float(lat["scaling_factor"])
    timings["encode"] = dict(lat["seconds"])
    if init is None:
        timings["decoder"] = stages.finetune_decoder(cfg, vae, images, means, stds, work)
    else:
        timings["decoder"] = {"wall": 0.0, "cpu": 0.0}
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

    unique = sorted(set(captions))
    tokens = tokenize(build_tokenizer(), [*unique, ""])
    lookup = {c: i for i, c in enumerate(unique)}
    caption_ids = torch.tensor([lookup[c] for c in captions] * 2)  # the mirrored copies share captions
    evaluate = _in_training_evaluator(cfg, vae, work) if cfg.eval_every > 0 else None
    text_encoder, unet, unet_info = stages.train_unet(
        cfg, means, stds, caption_ids, tokens, len(unique), scaling_factor, work, evaluate, init
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
        "size_mb": _folder_size_mb(cfg.out),
        "latents": latent_stats,
        "unet_final_loss": unet_info["final_loss"],
        "eval_history": unet_info["history"],
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    if cfg.final_eval:
        clock = Stopwatch().start()
        quality = QualityConfig(
            prior=PriorConfig(model=str(cfg.out), device="cpu", dtype="float32"),
            threads=cfg.threads,
            grid=work / "quality-samples.png",
        )
        log["quality"] = run_quality(quality)
        timings["final_eval"] = clock.stop().read()
    timings["this_session"] = session.stop().read()
    this_run = {k: log[k] for k in _RUN_FIELDS if k in log}
    log["runs"] = [*previous_runs, this_run]
    log["total_compute"] = {k: sum(r["seconds"]["training_total"][k] for r in log["runs"]) for k in ("wall", "cpu")}
    (Path(cfg.out) / "train_log.json").write_text(json.dumps(log, indent=2, default=str))
    print("seconds (wall / cpu): " + ", ".join(f"{k} {v['wall']:.0f} / {v['cpu']:.0f}" for k, v in timings.items()))
    print(f"params: {log['params']}, size: {log['size_mb']:.2f} MB")
    return log


_RUN_FIELDS = ("command", "config", "seconds", "unet_final_loss", "eval_history", "torch_threads", "torch_version")
"""What ``train_log.json`` keeps of every training run, in its ``runs`` list (oldest first)."""


def _load_init(cfg: TrainPriorConfig) -> tuple[Any, list[dict[str, Any]]]:
    """With ``--init-from``: the folder's :class:`~ids_nerf.toy.train_stages.InitWeights` and the runs of its
    ``train_log.json`` (read before ``--out``, which may be the same folder, is replaced); else (None, [])."""
    if cfg.init_from is None:
        return None, []
    from ids_nerf.toy.models import load_pipeline, regroup_unet, weights_fingerprint
    from ids_nerf.toy.train_stages import InitWeights

    folder = Path(cfg.init_from)
    if not (folder / "unet").is_dir() or not (folder / "text_encoder").is_dir() or not (folder / "vae").is_dir():
        raise UserInputError(
            f"--init-from {folder}: not a pipeline folder (needs vae/, text_encoder/ and unet/); pass the shipped "
            "ids_nerf/toy/weights/toy-prior or the --out of an earlier training."
        )
    log_file = folder / "train_log.json"
    previous: list[dict[str, Any]] = []
    if log_file.is_file():
        old = json.loads(log_file.read_text())
        previous = old.get("runs") or [{k: old[k] for k in _RUN_FIELDS if k in old}]
        for run in previous:  # runs older than the option had the one-channel-per-group default
            run.get("config", {}).setdefault("unet_norm_groups", 32)
    vae, text_encoder, unet = load_pipeline(folder)
    expected = {
        "--vae-channels": (tuple(vae.config.block_out_channels), cfg.vae_channels),
        "--text-hidden-size": (text_encoder.config.hidden_size, cfg.text_hidden_size),
        "--text-layers": (text_encoder.config.num_hidden_layers, cfg.text_layers),
        "--unet-channels": (tuple(unet.config.block_out_channels), cfg.unet_channels),
        "--unet-layers-per-block": (unet.config.layers_per_block, cfg.unet_layers_per_block),
    }
    wrong = [f"{flag} {mine} (the folder's: {theirs})" for flag, (theirs, mine) in expected.items() if theirs != mine]
    if wrong:
        raise UserInputError(f"--init-from {folder}: architecture options differ from the folder's: {'; '.join(wrong)}")
    unet = regroup_unet(unet, cfg.unet_norm_groups)
    return InitWeights(vae, text_encoder, unet, weights_fingerprint(folder), max(1, len(previous))), previous


def _folder_size_mb(path: Path) -> float:
    """Total size of the files under ``path`` in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


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


def entrypoint() -> None:
    """Console entry point (``python -m ids_nerf.toy.train_prior``)."""
    run_console("ids_nerf.toy.train_prior", TrainPriorConfig, main, __doc__)


if __name__ == "__main__":
    entrypoint()

"""``ids-bench-identity``: does IDS preserve identity better than DDS? Measured on a fixed, seeded suite of edits.

The suite: single-object toy scenes with three kinds of edit, each phrased by substituting words in the caption:
colour ("a red sphere" -> "a blue sphere"), shape ("sphere" -> "cube") and background ("checkered floor" ->
"wooden floor"). Every method edits every source image with the 2D editor (the same ScoreDistiller as the NeRF
pipeline), with the official settings (200 SGD steps, lr 0.1, CFG 7.5 / PDS 100, FPR N = 3, lambda = 1).

Per edit and method:
- ``success``: the analytic detector sees the target attribute (dominant colour / shape class / floor type);
- ``iou``: IoU of the object masks (pixels of any object colour) of source and edit, the analogue of the IDS
  paper's Cat-to-Others IoU (the object may change, its silhouette and pose should not);
- ``bg_psnr``: background PSNR exactly as the IDS supplementary: residual std in a 30x30 window, mask = std below
  its mean, PSNR(M * src, M * edit) over the whole image (:func:`ids_nerf.eval.preservation.background_psnr`);
- ``ssim_untouched``: mean SSIM between source and edit over the region the edit should not touch (outside the
  dilated object masks for colour/shape edits, the object itself for background edits).

Reported: mean and 95% bootstrap interval per method, the paired per-edit difference of every method to dds (same
edits, so the spread between edits cancels), a Markdown and JSON table, a PNG grid (source | each method), the FPR
loss diagnostics of the FPR methods, and ``edits.npz`` (every source and edit; ``--reuse-edits`` scores them again).
"""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ids_nerf import stats
from ids_nerf.atomic import StagedOutputs
from ids_nerf.console import run_console
from ids_nerf.errors import UserInputError
from ids_nerf.guidance.prior import PriorConfig
from ids_nerf.guidance.validation import check_config
from ids_nerf.image.editor import OptimConfig
from ids_nerf.stats import bootstrap_ci

EditKind = Literal["color", "shape", "background"]
METRICS = ("success", "iou", "bg_psnr", "ssim_untouched")
"""Per-edit metrics, in table order."""
METRICS_HEADER = ["| method | success | object IoU | background PSNR (dB) | SSIM untouched |", "|---|---|---|---|---|"]
"""Markdown header of a table with one column per metric of :data:`METRICS`."""
FLOOR_SWAP = {"checkered": "wooden", "wooden": "checkered"}


@dataclass
class EditCase:
    """One edit of the suite."""

    kind: EditKind
    """color, shape or background."""
    src_prompt: str
    """Caption of the source image."""
    trg_prompt: str
    """Caption with the edited attribute substituted."""
    target: str
    """The attribute the edit should produce (colour name, shape name or floor type)."""
    image: np.ndarray = field(repr=False)
    """Source image, uint8 (H, W, 3)."""


def build_suite(n_per_kind: int = 20, size: int = 64, seed: int = 0) -> list[EditCase]:
    """The fixed, seeded suite: ``n_per_kind`` colour, shape and background edits of single-object scenes."""
    from ids_nerf.toy import detectors
    from ids_nerf.toy.cameras import sample_camera_for_scene
    from ids_nerf.toy.raycast import render, to_uint8
    from ids_nerf.toy.scene_spec import COLORS, SHAPES, caption, sample_scene

    rng = np.random.default_rng(seed)
    colors, cases = list(COLORS), []
    for kind in ("color", "shape", "background"):
        made = 0
        while made < n_per_kind:
            scene = sample_scene(rng, n_objects=1)
            obj = scene.objects[0]
            image = to_uint8(render(scene, sample_camera_for_scene(rng, scene, size, size)).rgb)
            if detectors.object_mask(image).mean() < 0.02:  # object (nearly) out of view: not a usable source
                continue
            src = caption(scene)
            if kind == "color":
                target = str(rng.choice([c for c in colors if c != obj.color]))
                trg = src.replace(f"{obj.color} {obj.shape}", f"{target} {obj.shape}")  # articles fixed below
            elif kind == "shape":
                target = str(rng.choice([s for s in SHAPES if s != obj.shape]))
                trg = src.replace(f"{obj.color} {obj.shape}", f"{obj.color} {target}")
            else:
                target = FLOOR_SWAP[scene.floor]
                trg = src.replace(f"{scene.floor} floor", f"{target} floor")
            cases.append(EditCase(kind=kind, src_prompt=src, trg_prompt=_article(trg), target=target, image=image))
            made += 1
    return cases


def _article(text: str) -> str:
    """Fix "a"/"an" before colour words after a substitution."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = "an" if words[i + 1][0] in "aeiou" else "a"
    return " ".join(words)


# ----------------------------------------------------------------------------------------------- editing
def edit_batch(prior, cases: list[EditCase], method: str, optim: OptimConfig, seed: int) -> tuple[np.ndarray, list]:
    """Edit all ``cases`` with ``method`` (a method name, optionally with source-side settings ``-kK``/``-rR`` of
    :mod:`ids_nerf.bench.variants`) as one batch (per-sample timesteps); returns uint8 edits and histories."""
    from ids_nerf.bench.variants import parse_variant
    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.image.editor import edit_latent

    res = prior.resolution
    images = torch.stack([torch.from_numpy(c.image).permute(2, 0, 1).float() / 255 for c in cases])
    if images.shape[-1] != res:
        images = torch.nn.functional.interpolate(images, size=(res, res), mode="bilinear", antialias=True)
    with torch.no_grad():
        z_src = prior.encode(images.to(prior.device))
    cond_src = torch.cat([prior.text_embeddings(c.src_prompt) for c in cases])
    cond_trg = torch.cat([prior.text_embeddings(c.trg_prompt) for c in cases])
    variant = parse_variant(method)
    distiller = ScoreDistiller(prior, variant.guidance(optim.steps), seed=seed, flag_prefix=None, lr_flag="--optim.lr")
    masks = [region_mask(c) for c in cases] if variant.region else None
    region = None
    if masks is not None:
        from ids_nerf.image.region import latent_mask

        region = torch.cat([latent_mask(m, tuple(z_src.shape[-2:]), z_src.device) for m in masks])
    result = edit_latent(distiller, z_src, cond_src, cond_trg, optim, progress=False, region=region)
    with torch.no_grad():
        out = prior.decode(result.latent)
    size = cases[0].image.shape[0]
    if out.shape[-1] != size:
        out = torch.nn.functional.interpolate(out, size=(size, size), mode="bilinear", antialias=True)
    arr = (out.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    if masks is not None:  # as ids-edit-image --mask: the input's pixels outside the region
        from PIL import Image

        from ids_nerf.image.region import composite

        arr = np.stack(
            [
                np.asarray(composite(Image.fromarray(a), Image.fromarray(c.image), m))
                for a, c, m in zip(arr, cases, masks, strict=True)
            ]
        )
    return arr, result.history


#: Dilation (pixels, at 64 px) of the object mask that makes the region of a colour / shape edit (a shape edit
#: needs room for the new silhouette), and of the object excluded from a background edit's region.
REGION_DILATION = {"color": 3, "shape": 8, "background": 2}


def region_mask(case: EditCase) -> np.ndarray:
    """The region a ``-region`` run edits: the source's object mask (dilated) for colour and shape edits, everything
    but the (dilated) object for background edits; (H, W) float in {0, 1}."""
    from ids_nerf.toy import detectors

    objects = _dilate(detectors.object_mask(case.image), REGION_DILATION[case.kind])
    return (~objects if case.kind == "background" else objects).astype(np.float32)


def edit_suite(
    prior, cases: list[EditCase], method: str, cfg: IdentityBenchConfig, seed: int
) -> tuple[np.ndarray, float, dict[str, float]]:
    """Edit ``cases`` in batches of ``cfg.batch_size`` (batch starting at ``i`` seeded ``seed + i``); returns the
    uint8 edits, the seconds it took and the FPR loss diagnostics (empty without FPR): the mean loss before the first
    and before the last FPR iteration (``fpr_loss_first_mean``, ``fpr_loss_last_mean``, every FPR method) and after
    the last one (``fpr_loss_final_mean``; None where it was not measured: the distiller measures it only for free,
    when the edit's guidance scale is FPR's source scale, which PDS's 100 is not)."""
    t0 = time.perf_counter()
    parts, histories = [], []
    for start in range(0, len(cases), cfg.batch_size):
        arr, hist = edit_batch(prior, cases[start : start + cfg.batch_size], method, cfg.optim, seed + start)
        parts.append(arr)
        histories.extend(hist)
    seconds = time.perf_counter() - t0
    first = [h["fpr_losses"][0] for h in histories if h.get("fpr_losses")]
    last = [h["fpr_losses"][-1] for h in histories if h.get("fpr_losses")]
    final = [h["fpr_loss_final"] for h in histories if h.get("fpr_loss_final") is not None]
    diag: dict[str, float | None] = {}
    if first:
        diag = {
            "fpr_loss_first_mean": float(np.mean(first)),
            "fpr_loss_last_mean": float(np.mean(last)),
            "fpr_loss_final_mean": float(np.mean(final)) if final else None,  # not measured: no NaN placeholder
        }
    return np.concatenate(parts), seconds, diag


def cycle_name(method: str) -> str:
    """Key of a method's round-trip (B -> A) edits in ``edits.npz`` and ``seconds_per_method``."""
    return f"{method}@cycle"


# ----------------------------------------------------------------------------------------------- metrics
def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (torch.nn.functional.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0).numpy()


def edit_metrics(case: EditCase, edit: np.ndarray, bg_window: int) -> dict[str, float]:
    """success, iou, bg_psnr, ssim_untouched of one edit (see the module docstring)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    from ids_nerf.eval.preservation import background_psnr, mask_iou
    from ids_nerf.toy import detectors

    src_mask, edit_mask = detectors.object_mask(case.image), detectors.object_mask(edit)
    if case.kind == "color":
        success = detectors.dominant_color(edit) == case.target
    elif case.kind == "shape":
        success = detectors.shape_class(edit) == case.target
    else:
        success = detectors.floor_type(edit, edit_mask) == case.target
    src_f, edit_f = case.image.astype(np.float64) / 255, edit.astype(np.float64) / 255
    bg = background_psnr(src_f, edit_f, window=bg_window, threshold="mean", average="image")
    objects = _dilate(src_mask | edit_mask, 2)
    untouched = objects if case.kind == "background" else ~objects
    _, ssim_map = ssim(
        torch.from_numpy(edit_f).permute(2, 0, 1)[None],
        torch.from_numpy(src_f).permute(2, 0, 1)[None],
        data_range=1.0,
        return_full_image=True,
    )
    ssim_px = ssim_map[0].mean(0).numpy()
    ssim_untouched = float(ssim_px[untouched].mean()) if untouched.any() else float("nan")
    return {
        "success": float(success),
        "iou": mask_iou(src_mask, edit_mask),
        "bg_psnr": bg.psnr,
        "ssim_untouched": ssim_untouched,
    }


CYCLE_METRICS = ("psnr", "ssim", "iou")
"""Round-trip metrics of the cycle test, in table order."""


def cycle_metrics(source: np.ndarray, back: np.ndarray) -> dict[str, float]:
    """How close a round trip A -> B -> A (``back``) comes to ``source``: PSNR and mean SSIM of the whole image,
    IoU of the object masks."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    from ids_nerf.eval.preservation import mask_iou, psnr_from_mse
    from ids_nerf.toy import detectors

    src_f, back_f = source.astype(np.float64) / 255, back.astype(np.float64) / 255
    value = ssim(
        torch.from_numpy(back_f).permute(2, 0, 1)[None], torch.from_numpy(src_f).permute(2, 0, 1)[None], data_range=1.0
    )
    return {
        "psnr": psnr_from_mse(float(((src_f - back_f) ** 2).mean())),
        "ssim": float(value),
        "iou": mask_iou(detectors.object_mask(source), detectors.object_mask(back)),
    }


def cycle_results(cases: list[EditCase], edits: dict[str, np.ndarray], cfg: IdentityBenchConfig) -> dict:
    """Per method: mean and 95% bootstrap interval of each :data:`CYCLE_METRICS`, and paired differences to dds."""
    rows = {
        cycle_name(m): [cycle_metrics(c.image, b) for c, b in zip(cases, edits[cycle_name(m)], strict=True)]
        for m in cfg.methods
    }
    summary = {}
    for name, metrics in rows.items():
        rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
        values = {k: np.array([r[k] for r in metrics], dtype=float) for k in CYCLE_METRICS}
        summary[name] = {k: bootstrap_ci(v, cfg.n_bootstrap, rng) for k, v in values.items()}
    paired = paired_differences(rows, cfg, baseline=cycle_name("dds"), metrics=CYCLE_METRICS)
    strip = len(cycle_name(""))
    return {
        "summary": {k[:-strip]: v for k, v in summary.items()},
        "paired_vs_dds": {k[:-strip]: v for k, v in paired.items()},
    }


def cycle_table(cycle: dict) -> str:
    """Markdown of :func:`cycle_results`."""
    header = ["| method | PSNR to source (dB) | SSIM to source | object IoU |", "|---|---|---|---|"]
    lines = ["Cycle test (A -> B -> A, prompts swapped; mean [95% bootstrap CI]).", "", *header]
    lines += [f"| {m} | " + " | ".join(_fmt(d[k]) for k in CYCLE_METRICS) + " |" for m, d in cycle["summary"].items()]
    if cycle["paired_vs_dds"]:
        lines += [
            "",
            "Cycle test, paired difference to dds per edit (> 0: closer to the source than dds).",
            "",
            *header,
        ]
        lines += [
            f"| {m} - dds | " + " | ".join(_fmt(d[k]) for k in CYCLE_METRICS) + " |"
            for m, d in cycle["paired_vs_dds"].items()
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- CLI
@dataclass
class IdentityBenchConfig:
    """Identity-preservation benchmark of the score methods on the toy world."""

    out: Path = Path("outputs/bench-identity")
    """Output folder: results.json, results.md, grid.png and edits.npz (every source and edited image)."""
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="toy"))
    """Diffusion prior (the bundled toy model by default): model, device, dtype."""
    methods: tuple[str, ...] = ("sds", "dds", "cds", "pds", "ids", "pds-fpr")
    """Methods to compare (names of ids_nerf.guidance.methods). Source-side settings as suffixes: `ids-r4` reuses
    a pool of --optim.steps / 4 source sides per edit, `ids-k8` computes them 8 steps ahead (exact); such a
    variant is also compared, paired, with its exact method (`ids`) when that is in the list, against the
    non-inferiority margins of issue 12 (see NON_INFERIORITY_MARGINS)."""
    n_per_kind: int = 20
    """Edits per kind (colour, shape, background): 20 gives the 60-edit suite."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimisation of each edit's latent (official: 200 SGD steps, lr 0.1)."""
    batch_size: int = 30
    """Edits optimised together in one batch (per-sample timesteps and noises)."""
    seed: int = 0
    """Seed of the suite and of every method's random draws."""
    bg_window: int = 30
    """Background-PSNR window (IDS supplementary: 30)."""
    n_bootstrap: int = 2000
    """Bootstrap resamples of the 95% intervals."""
    grid_edits: int = 6
    """Edits shown in grid.png (evenly over the three kinds)."""
    overwrite: bool = False
    """Replace the results of an earlier run in --out."""
    cycle: bool = False
    """Also run the cycle test of the IDS paper (Fig. 3): edit every result back with the prompts swapped (B -> A,
    same method and settings) and measure how close the round trip comes to the source: PSNR and SSIM of the whole
    image and the IoU of the object masks, per method, paired against dds. With --reuse-edits, missing round trips
    of the saved forward edits are computed."""
    reuse_edits: bool = False
    """Score the edits saved in ``--out/edits.npz`` by an earlier run (same suite options) instead of editing
    again, e.g. after a detector change; implies --overwrite of the tables."""
    merge: tuple[Path, ...] = ()
    """With --reuse-edits: also take the edits (and their timings) saved in these other --out folders of the same
    suite, e.g. of methods run in parallel processes; --out/edits.npz then holds them all."""


def run(cfg: IdentityBenchConfig) -> dict:
    """Run the benchmark; returns the summary written to results.json."""
    from ids_nerf.bench.variants import parse_variant
    from ids_nerf.guidance.prior import DiffusionPrior

    check_config(cfg, "--")  # counts, --optim.*, --seed: finite and in range, before any folder or model
    if not cfg.methods:
        raise UserInputError("--methods is empty; name at least one method, e.g. --methods dds ids.")
    for name in cfg.methods:
        try:
            parse_variant(name)
        except UserInputError as err:
            text = str(err)
            raise UserInputError(text if text.startswith("--methods") else f"--methods {name}: {text}") from None
    if cfg.merge and not cfg.reuse_edits:
        raise UserInputError("--merge takes the edits of earlier runs: pass it with --reuse-edits.")
    earlier = [f for f in ("results.json", "edits.npz") if (cfg.out / f).exists()]
    if earlier and not (cfg.overwrite or cfg.reuse_edits):
        raise UserInputError(
            f"{cfg.out / earlier[0]} exists (an earlier run); pass --overwrite, --reuse-edits to "
            "score its edits again, or another --out."
        )
    prior = DiffusionPrior(cfg.prior)  # --out is created by the first write (an early interruption leaves none)
    cases = build_suite(cfg.n_per_kind, size=prior.resolution, seed=cfg.seed)
    sources = np.stack([c.image for c in cases])
    timing: dict[str, float] = {}
    fpr_diag: dict[str, dict[str, float]] = {}

    def save_progress() -> None:
        """After every method: an interrupted run keeps what it finished (score it with --reuse-edits); both files
        are replaced whole, together, so an interruption never leaves them half-written or out of step."""
        with StagedOutputs() as staged:
            np.savez_compressed(staged.path(cfg.out / "edits.npz"), source=sources, **edits)
            staged.path(cfg.out / "results.partial.json").write_text(
                json.dumps({"seconds_per_method": timing, "fpr_diagnostics": fpr_diag}, indent=1)
            )
            staged.commit()
        _saved.update(out=cfg.out, methods=list(edits))

    _saved.update(out=None, methods=[])
    if cfg.reuse_edits:
        edits, timing, fpr_diag = load_edits(cfg, sources)
        save_progress()
    else:
        edits = {}
        for method in tqdm(cfg.methods, desc="methods"):
            edits[method], timing[method], diag = edit_suite(prior, cases, method, cfg, cfg.seed)
            if diag:
                fpr_diag[method] = diag
            save_progress()
    for method in [m for m in cfg.methods if cfg.cycle and cycle_name(m) not in edits]:
        # the round trip B -> A: also computed for forward edits reused from an earlier run (--reuse-edits)
        back = [
            dataclasses.replace(c, src_prompt=c.trg_prompt, trg_prompt=c.src_prompt, image=e)
            for c, e in zip(cases, edits[method], strict=True)
        ]
        name = cycle_name(method)
        edits[name], timing[name], _ = edit_suite(prior, back, method, cfg, cfg.seed + len(cases))
        save_progress()
    rows = {m: [edit_metrics(c, e, cfg.bg_window) for c, e in zip(cases, edits[m], strict=True)] for m in cfg.methods}
    summary = summarize(cases, rows, cfg)
    paired = paired_differences(rows, cfg)
    vs_exact = source_side_comparison(rows, cfg)
    vs_whole = region_comparison(rows, cfg)
    cycle = cycle_results(cases, edits, cfg) if cfg.cycle else {}
    result = {
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "n_edits": len(cases),
        "seconds_per_method": timing,
        "fpr_diagnostics": fpr_diag,
        "summary": summary,
        "paired_vs_dds": paired,
        "source_side_vs_exact": vs_exact,
        "region_vs_whole": vs_whole,
        "cycle": cycle,
        "edits": [
            {
                "kind": c.kind,
                "src_prompt": c.src_prompt,
                "trg_prompt": c.trg_prompt,
                **{m: rows[m][i] for m in cfg.methods},
            }
            for i, c in enumerate(cases)
        ],
    }
    with StagedOutputs() as staged:  # the three tables appear together, whole, or not at all
        staged.path(cfg.out / "results.json").write_text(json.dumps(result, indent=1))
        staged.path(cfg.out / "results.md").write_text(
            markdown_table(summary, cfg.methods, len(cases))
            + "\n"
            + paired_table(paired)
            + "\n"
            + vs_exact_table(vs_exact)
            + ("\n" + region_table(vs_whole) if vs_whole else "")
            + ("\n" + cycle_table(cycle) if cycle else "")
        )
        write_grid(cases, edits, cfg.methods, cfg.grid_edits, staged.path(cfg.out / "grid.png"))
        staged.commit()
    return result


def load_edits(
    cfg: IdentityBenchConfig, sources: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, dict[str, float]]]:
    """Every edit saved in ``cfg.out`` and the ``--merge`` folders by earlier runs of this suite (their sources are
    checked against ``sources``; a later folder's edits of a method replace an earlier one's), with their seconds
    per method and FPR diagnostics. Saved back to ``cfg.out`` whole, so rescoring a subset of methods loses none."""
    edits: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}
    fpr_diag: dict[str, dict[str, float]] = {}
    for folder in [cfg.out, *cfg.merge]:
        path = folder / "edits.npz"
        if not path.is_file():
            if folder == cfg.out and cfg.merge:
                continue  # a fresh --out for the merged results
            flag = "--reuse-edits" if folder == cfg.out else f"--merge {folder}"
            raise UserInputError(f"{flag}: {path} not found; run once without --reuse-edits first.")
        saved = np.load(path)
        if not np.array_equal(saved["source"], sources):
            raise UserInputError(
                f"--reuse-edits: the sources in {path} are not this suite's; use the same --seed, "
                "--n-per-kind and --prior as the run that wrote it."
            )
        edits.update({m: saved[m] for m in saved.files if m != "source"})
        results = next((f for f in (folder / "results.json", folder / "results.partial.json") if f.is_file()), None)
        previous = json.loads(results.read_text()) if results is not None else {}
        timing.update(previous.get("seconds_per_method", {}))
        fpr_diag.update(previous.get("fpr_diagnostics", {}))
    missing = [m for m in cfg.methods if m not in edits]
    if missing:
        raise UserInputError(f"--reuse-edits: no edits for {missing} in {cfg.out} or --merge; found {sorted(edits)}.")
    return edits, timing, fpr_diag


def summarize(cases: list[EditCase], rows: dict[str, list[dict]], cfg: IdentityBenchConfig) -> dict:
    """Mean and 95% bootstrap interval of each metric, per method, over all edits and per kind."""
    out: dict[str, dict] = {}
    for method, metrics in rows.items():
        out[method] = {}
        rng = np.random.default_rng([cfg.seed, zlib.crc32(method.encode())])  # independent of the other methods
        for kind in ("all", "color", "shape", "background"):
            idx = [i for i, c in enumerate(cases) if kind == "all" or c.kind == kind]
            out[method][kind] = {
                name: bootstrap_ci(np.array([metrics[i][name] for i in idx], dtype=float), cfg.n_bootstrap, rng)
                for name in METRICS
            }
    return out


def paired_differences(
    rows: dict[str, list[dict]],
    cfg: IdentityBenchConfig,
    baseline: str = "dds",
    methods: list[str] | None = None,
    metrics: tuple[str, ...] = METRICS,
) -> dict:
    """Per-edit differences ``method - baseline`` (same source, same edit), mean and 95% bootstrap interval.

    The per-method intervals of :func:`summarize` include how much the edits differ from one another; the paired
    ones compare the methods on the same edits. ``methods``: those to compare (default: every other one); ``metrics``:
    the keys of each row to compare. Empty when ``baseline`` was not run.
    """
    return stats.paired_differences(rows, baseline, metrics, cfg.n_bootstrap, cfg.seed, methods)


NON_INFERIORITY_MARGINS: dict[str, float] = {"success": -0.05, "iou": -0.01, "bg_psnr": -0.3, "ssim_untouched": -0.01}
"""Issue 12's margins, fixed before measuring: a source-side setting (a pool) may become the default only if, paired
with exact IDS on the same edits, the lower end of the 95% interval of (setting - exact) is at least the margin for
object IoU, background PSNR (dB) and SSIM of the untouched region, and mean edit success drops by at most 0.05."""


def source_side_comparison(rows: dict[str, list[dict]], cfg: IdentityBenchConfig) -> dict:
    """Paired differences (variant - exact) of every run with source-side settings whose exact method was also run
    (``ids-r4`` - ``ids``), with the non-inferiority verdict of :data:`NON_INFERIORITY_MARGINS`."""
    from ids_nerf.bench.variants import parse_variant

    out: dict[str, dict] = {}
    for name in rows:
        variant = parse_variant(name)
        if variant.region or variant.method == name or variant.method not in rows:
            continue
        diff = paired_differences(rows, cfg, baseline=variant.method, methods=[name])[name]
        failed = [
            k
            for k, margin in NON_INFERIORITY_MARGINS.items()
            if not (diff[k][0] if k == "success" else diff[k][1]) >= margin
        ]
        out[name] = {"exact": variant.method, **diff, "non_inferior": not failed, "failed": failed}
    return out


def region_comparison(rows: dict[str, list[dict]], cfg: IdentityBenchConfig) -> dict:
    """Paired differences (region - whole image) of every ``-region`` run whose whole-image run was also made
    (``ids-region`` - ``ids``)."""
    from ids_nerf.bench.variants import parse_variant

    out: dict[str, dict] = {}
    for name in rows:
        variant = parse_variant(name)
        if variant.region and variant.base in rows:
            out[name] = {
                "whole": variant.base,
                **paired_differences(rows, cfg, baseline=variant.base, methods=[name])[name],
            }
    return out


def region_table(comparison: dict) -> str:
    """Markdown of :func:`region_comparison`."""
    lines = ["Region - whole image (paired per edit, mean [95% bootstrap CI]):", "", *METRICS_HEADER]
    for name, row in comparison.items():
        lines.append(f"| {name} - {row['whole']} | " + " | ".join(_fmt(row[k]) for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


def vs_exact_table(comparison: dict) -> str:
    """Markdown of :func:`source_side_comparison`."""
    if not comparison:
        return ""
    margins = ", ".join(f"{k} {v:+g}" for k, v in NON_INFERIORITY_MARGINS.items())
    lines = [
        "Source-side settings against their exact method, paired per edit (mean [95% bootstrap CI]); non-inferior "
        f"when every lower CI end (success: the mean) is at least its margin ({margins}).",
        "",
        METRICS_HEADER[0] + " non-inferior |",
        METRICS_HEADER[1] + "---|",
    ]
    for name, d in comparison.items():
        verdict = "yes" if d["non_inferior"] else "no (" + ", ".join(d["failed"]) + ")"
        lines.append(f"| {name} - {d['exact']} | " + " | ".join(_fmt(d[k]) for k in METRICS) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def paired_table(paired: dict, baseline: str = "dds") -> str:
    """Markdown of :func:`paired_differences`."""
    if not paired:
        return ""
    lines = [
        f"Paired difference to {baseline}, per edit (mean [95% bootstrap CI]; > 0: higher than {baseline}).",
        "",
        *METRICS_HEADER,
    ]
    lines += [f"| {m} - {baseline} | " + " | ".join(_fmt(d[k]) for k in METRICS) + " |" for m, d in paired.items()]
    return "\n".join(lines) + "\n"


def markdown_table(summary: dict, methods: tuple[str, ...], n: int) -> str:
    """Mean [95% CI] per method and metric over all edits, then success per kind."""
    lines = [
        f"Identity benchmark, {n} edits (mean [95% bootstrap CI]).",
        "",
        *METRICS_HEADER,
    ]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_fmt(summary[m]["all"][k]) for k in METRICS) + " |")
    lines += ["", "| method | success colour | success shape | success background |", "|---|---|---|---|"]
    for m in methods:
        lines.append(
            f"| {m} | " + " | ".join(_fmt(summary[m][k]["success"]) for k in ("color", "shape", "background")) + " |"
        )
    return "\n".join(lines) + "\n"


def _fmt(ci: tuple[float, float, float]) -> str:
    mean, lo, hi = ci
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if abs(mean) < 10 else f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def write_grid(
    cases: list[EditCase], edits: dict[str, np.ndarray], methods: tuple[str, ...], n: int, path: Path
) -> None:
    """PNG grid: one row per shown edit, columns source | each method, with a header row of names."""
    from PIL import Image, ImageDraw

    kinds = ("color", "shape", "background")
    shown = [next(i for i, c in enumerate(cases) if c.kind == k) + j for j in range(max(1, n // 3)) for k in kinds]
    shown = [i for i in shown if i < len(cases)][:n]
    size = cases[0].image.shape[0]
    scale = max(1, 128 // size)
    cell = size * scale
    header, label_w = 14, 230
    grid = Image.new("RGB", (label_w + cell * (1 + len(methods)), header + cell * len(shown)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, name in enumerate(("source", *methods)):
        draw.text((label_w + j * cell + 3, 1), name, fill=(0, 0, 0))
    for r, i in enumerate(shown):
        y = header + r * cell
        draw.text((3, y + 3), cases[i].src_prompt, fill=(0, 0, 0))
        draw.text((3, y + 16), "-> " + cases[i].trg_prompt, fill=(0, 0, 120))
        for j, img in enumerate([cases[i].image] + [edits[m][i] for m in methods]):
            grid.paste(Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST), (label_w + j * cell, y))
    grid.save(path)


_saved: dict[str, object] = {"out": None, "methods": []}
"""What :func:`run` has saved so far (for the line printed when it is interrupted)."""


def _interrupted() -> str:
    """The line of an interrupted run: which methods' edits were kept, and how to score them."""
    methods = [m for m in _saved["methods"] if not m.endswith("@cycle")]  # type: ignore[union-attr]
    if not methods:
        return "interrupted before any method finished; nothing was written"
    return (
        f"interrupted; the edits of {', '.join(methods)} are kept in {_saved['out']}/edits.npz (score them with "
        f"--reuse-edits --methods {' '.join(methods)})"
    )


def entrypoint() -> None:
    """Console entry point."""
    cfg, result = run_console(
        "ids-bench-identity",
        IdentityBenchConfig,
        run,
        __doc__,
        interrupted=_interrupted,
    )
    print(markdown_table(result["summary"], cfg.methods, result["n_edits"]))
    print(paired_table(result["paired_vs_dds"]))
    print(vs_exact_table(result["source_side_vs_exact"]))
    if result.get("region_vs_whole"):
        print(region_table(result["region_vs_whole"]))
    if result["cycle"]:
        print(cycle_table(result["cycle"]))
    print("seconds per method:", {k: round(v, 1) for k, v in result["seconds_per_method"].items()})
    print("FPR diagnostics:", result["fpr_diagnostics"])
    print(f"wrote {cfg.out / 'results.json'}, {cfg.out / 'results.md'}, {cfg.out / 'grid.png'}")


if __name__ == "__main__":
    entrypoint()

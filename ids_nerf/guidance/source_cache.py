"""Disk cache of precomputed source sides (:class:`SourceDraw` lists), keyed by everything they depend on.

A source side depends on the prior, the source latent, the source prompt, the score's source-side options (FPR,
the CFG scale of the source branch, the timestep range or the PDS grid), the generator it was drawn from (seed and
state) and the layout (how many entries, look-ahead batch size) -- never on the target prompt or latent, so a
second edit of the same image with another target prompt loads them instead of recomputing them.

One file per key, ``<root>/source-side/<digest>.safetensors``: the stacked tensors of the entries and the
generator's state after drawing them, with a small JSON header in the safetensors metadata (format, the full key,
the number of entries and a SHA-256 checksum of the tensors). Files are written atomically (temporary file in the
same folder, then rename). A file that cannot be read, fails its checksum or carries another key is reported with a
warning and recomputed, never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ids_nerf.guidance.distiller import ScoreDistiller, SourceDraw

#: Version of the file layout; part of every key.
CACHE_FORMAT = 1
_FORMAT_NAME = "ids-nerf-source-side"


def tensor_digest(tensor: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (any dtype, any device)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    h = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _folder_files(folder: Path) -> list[list]:
    """(name, size, mtime_ns) of every file below ``folder`` (links followed), sorted."""
    return sorted(
        [str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in folder.rglob("*") if p.is_file()
    )


def _unet_folder(model: str, revision: str | None) -> Path | None:
    """The UNet folder of a local diffusers folder, a named prior or a hub snapshot in the local cache (None when
    the hub cache has no snapshot for it)."""
    from huggingface_hub import try_to_load_from_cache

    from ids_nerf.guidance.prior import resolve_model_path

    source, local = resolve_model_path(model)
    if local:
        return Path(source) / "unet"
    found = try_to_load_from_cache(source, "unet/config.json", revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def prior_identity(den) -> dict:
    """What identifies a :class:`~ids_nerf.guidance.prior.DiffusionPrior` for the cache: model, revision, dtype,
    device type, prediction type, digests of the UNet and scheduler configs, of the UNet's input and output
    convolutions (catches random-weight priors), of ``alphas_cumprod`` and of the unconditional text embedding, and
    (name, size, mtime) of the UNet folder's files (local folders, named priors, hub snapshots)."""
    config, unet, scheduler = (getattr(den, name, None) for name in ("config", "unet", "scheduler"))
    if config is None or unet is None or scheduler is None:
        raise TypeError("The source-side disk cache needs a DiffusionPrior (its identity is part of the key).")
    folder = _unet_folder(config.model, config.revision)
    return {
        "model": config.model,
        "revision": config.revision,
        "dtype": str(den.dtype),
        "device": den.device.type,
        "prediction_type": den.prediction_type,
        "unet_config": _text_digest(json.dumps(dict(unet.config), sort_keys=True, default=str)),
        "scheduler_config": _text_digest(json.dumps(dict(scheduler.config), sort_keys=True, default=str)),
        "weights_probe": [tensor_digest(unet.conv_in.weight), tensor_digest(unet.conv_out.weight)],
        "alphas_cumprod": tensor_digest(den.alphas_cumprod),
        "uncond_embedding": tensor_digest(den.text_embeddings("")),
        "unet_files": _folder_files(folder) if folder is not None and folder.is_dir() else None,
    }


def cache_key(distiller: ScoreDistiller, z_src: Tensor, cond_src: Tensor, layout: dict) -> dict:
    """The key of the source sides ``distiller`` would draw next for ``z_src`` / ``cond_src`` (the source prompt's
    text embedding) with ``layout`` (mode, number of entries, look-ahead batch size). Call it before drawing: it
    includes the generator's current state. The target prompt is not part of it."""
    cfg = distiller.config
    options: dict = {"score": cfg.score, "fpr": asdict(cfg.fpr)}
    if cfg.score == "pds":
        options["pds_grid"] = {"num_inference_steps": cfg.pds.num_inference_steps, "grid_range": cfg.pds.grid_range}
    else:
        options["t_range"] = cfg.t_range
    if cfg.score != "sds":  # the source branch's prediction is cached
        options["source_guidance_scale"] = cfg.effective_guidance_scale()
    return json.loads(
        json.dumps(
            {
                "format": CACHE_FORMAT,
                "torch": torch.__version__,
                "prior": prior_identity(distiller.den),
                "source_latent": {"sha256": tensor_digest(z_src), "shape": list(z_src.shape)},
                "source_prompt": {"sha256": tensor_digest(cond_src), "shape": list(cond_src.shape)},
                "options": options,
                "seed": distiller.seed,
                "generator_state": tensor_digest(distiller.generator.get_state()),
                "layout": layout,
            }
        )
    )


@dataclass
class CachedSources:
    """What a cache file holds."""

    sources: list[SourceDraw]
    """The entries, in order (``cached`` set)."""
    generator_state: Tensor
    """The run generator's state after drawing them (restore it to continue the random stream)."""


def _checksum(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensor_digest(tensors[name]).encode())
    return h.hexdigest()


def _pack(sources: list[SourceDraw], generator_state: Tensor) -> dict[str, Tensor]:
    """Stack the entries' tensors (entry = first dim) on the CPU; optional fields only when present."""
    tensors = {
        "t": torch.stack([s.t for s in sources]),
        "eps": torch.stack([s.eps for s in sources]),
        "z_t_src": torch.stack([s.z_t_src for s in sources]),
        "fpr_losses": torch.tensor([s.fpr_losses for s in sources], dtype=torch.float64),  # (entries, N)
        "generator_state": generator_state,
    }
    for name in ("t_prev", "eps_prev", "eps_src"):
        if getattr(sources[0], name) is not None:
            tensors[name] = torch.stack([getattr(s, name) for s in sources])
    return {name: t.detach().cpu().contiguous() for name, t in tensors.items()}


def _unpack(tensors: dict[str, Tensor], device: torch.device) -> CachedSources:
    def entry(name: str, i: int) -> Tensor | None:
        return tensors[name][i].to(device) if name in tensors else None

    sources = [
        SourceDraw(
            t=tensors["t"][i].to(device),
            t_prev=entry("t_prev", i),
            eps=tensors["eps"][i].to(device),
            eps_prev=entry("eps_prev", i),
            z_t_src=tensors["z_t_src"][i].to(device),
            fpr_losses=tensors["fpr_losses"][i].tolist(),
            eps_src=entry("eps_src", i),
            cached=True,
        )
        for i in range(tensors["t"].shape[0])
    ]
    return CachedSources(sources, tensors["generator_state"])


class SourceCache:
    """Source sides on disk under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.folder = Path(root).expanduser() / "source-side"

    def path(self, key: dict) -> Path:
        """The file of ``key``."""
        digest = _text_digest(json.dumps(key, sort_keys=True))
        return self.folder / f"{digest[:40]}.safetensors"

    def load(self, key: dict, device: torch.device) -> CachedSources | None:
        """The entries stored under ``key`` (on ``device``), or None when there is no file; a file that is
        unreadable, fails its checksum or holds another key gives a warning and None (the caller recomputes)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if header.get("format") != _FORMAT_NAME:
                raise ValueError("not a source-side cache file")
            if json.loads(header["key"]) != key:
                raise ValueError("it was written for another key")
            if header.get("checksum") != _checksum(tensors):
                raise ValueError("checksum mismatch")
            cached = _unpack(tensors, device)
            if len(cached.sources) != int(header["count"]):
                raise ValueError("entry count mismatch")
        except (OSError, SafetensorError, ValueError, KeyError, RuntimeError, IndexError) as err:
            warnings.warn(f"Source-side cache file {path} is unusable ({err}); recomputing it.", stacklevel=2)
            return None
        return cached

    def save(self, key: dict, sources: list[SourceDraw], generator_state: Tensor) -> Path | None:
        """Write the entries atomically; a failure (disk full, read-only folder) only warns. Returns the path."""
        path = self.path(key)
        tensors = _pack(sources, generator_state)
        header = {
            "format": _FORMAT_NAME,
            "key": json.dumps(key, sort_keys=True),
            "count": str(len(sources)),
            "checksum": _checksum(tensors),
        }
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".safetensors")
            os.close(fd)
            save_file(tensors, tmp, metadata=header)
            os.replace(tmp, path)
        except (OSError, SafetensorError) as err:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            warnings.warn(f"Could not write the source-side cache file {path} ({err}).", stacklevel=2)
            return None
        return path

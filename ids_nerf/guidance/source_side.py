"""Which source side each step of one edit gets (:class:`SourceSupplier`), as ``GuidanceConfig.source`` says.

- ``step`` (default, the paper's exact algorithm): none; :meth:`ScoreDistiller.step` draws and computes it.
- ``lookahead`` (``--source.lookahead K``, K > 1): the next K steps' source sides from
  :meth:`ScoreDistiller.prepare_sources`, one batch of K times the source batch. Exact: the same draws in the same
  order, the same edit within float tolerance.
- ``pool`` (``--source.pool P``): P source sides computed once (K per batch), each step reusing one of them, in
  random passes over the pool drawn from a generator of its own (seeded by the run's seed; the run's generator only
  draws the pool). Approximate, reuse factor r = steps / P. For a batch of sources an entry holds one source side
  per source (each with its own t); a step reuses the same entry index for all of them.

With a cache folder, the precomputed source sides (all steps' for ``lookahead``, the pool's for ``pool``; a cache
with K = 1 precomputes each step's in its own batch) are stored in and loaded from
:class:`~ids_nerf.guidance.source_cache.SourceCache`, and the run's generator continues from the stored state, so an
edit that loads them is the edit that computed them.

A supplier serves one source (batch) for a known number of steps: the 2D editor. A caller whose source changes
every few steps (the NeRF pipeline: one view per block of ``view_repeat`` steps) calls
:meth:`ScoreDistiller.prepare_sources` once per block.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ids_nerf.guidance.distiller import ScoreDistiller, SourceDraw
from ids_nerf.guidance.source_cache import SourceCache, cache_key

#: The pool's pick generator is seeded with the run's seed plus this: a stream of its own.
POOL_SEED_OFFSET = 104_729


class SourceSupplier:
    """Source sides of the ``steps`` steps of one edit of ``z_src`` (B, ...) with source text embedding
    ``cond_src``; ``cache_dir`` (None: no disk cache) keeps the precomputed ones on disk."""

    def __init__(
        self,
        distiller: ScoreDistiller,
        z_src: Tensor,
        cond_src: Tensor,
        steps: int,
        cache_dir: Path | None = None,
    ) -> None:
        config = distiller.config.source
        config.check(distiller.config.score, cache=cache_dir is not None)
        self.distiller = distiller
        self.z_src = z_src.detach()
        self.cond_src = cond_src
        self.steps = steps
        self.lookahead = config.lookahead
        self.pool_size = config.pool
        self.cache = SourceCache(cache_dir) if cache_dir is not None else None
        self.mode: Literal["step", "lookahead", "pool"] = (
            "pool" if config.pool is not None else "lookahead" if config.lookahead > 1 or self.cache else "step"
        )
        self._queue: deque[SourceDraw] = deque()
        self._pool: list[SourceDraw] = []
        self._order: list[int] = []
        self._pick = torch.Generator().manual_seed(distiller.seed + POOL_SEED_OFFSET)
        self._served = 0
        self._stats: dict = {
            "cache": "off" if self.cache is None else "unused",
            "cache_file": None,
            "cache_hits": 0,
            "precomputed": 0,
        }

    def next(self) -> SourceDraw | None:
        """The next step's source side; None in ``step`` mode (the step draws its own)."""
        if self.mode == "step":
            return None
        if self.mode == "pool":
            source = self._from_pool()
        else:
            if not self._queue:
                remaining = self.steps - self._served
                self._queue.extend(self._precompute(remaining if self.cache else min(self.lookahead, remaining)))
            source = self._queue.popleft()
        self._served += 1
        self._stats["cache_hits"] += int(source.cached)
        return source

    def summary(self) -> dict:
        """Mode, K, P, reuse factor, cache status (off, unused, hit, miss, recomputed), cache file, steps served
        from the cache, source sides computed here, and for a pool each entry's t and FPR losses."""
        out = {
            "mode": self.mode,
            "lookahead": self.lookahead,
            "pool": self.pool_size,
            "reuse_factor": self.steps / self.pool_size if self.pool_size else None,
            **self._stats,
        }
        if self._pool:
            out["pool_t"] = [s.t.tolist() for s in self._pool]
            out["pool_fpr_losses"] = [s.fpr_losses for s in self._pool]
        return out

    def _from_pool(self) -> SourceDraw:
        if not self._pool:
            assert self.pool_size is not None
            self._pool = self._precompute(self.pool_size)
        if not self._order:
            self._order = torch.randperm(len(self._pool), generator=self._pick).tolist()
        index = self._order.pop(0)
        return replace(self._pool[index], origin="pool", pool_index=index)

    def _compute(self, count: int) -> list[SourceDraw]:
        """``count`` source sides from the run's generator, K per batch."""
        sources: list[SourceDraw] = []
        while len(sources) < count:
            k = min(self.lookahead, count - len(sources))
            sources += self.distiller.prepare_sources(self.z_src, self.cond_src, k)
        self._stats["precomputed"] += count
        return sources

    def _precompute(self, count: int) -> list[SourceDraw]:
        """``count`` source sides: loaded from the disk cache when it holds them (the run's generator then
        continues from the stored state), else computed (and stored when there is a cache)."""
        if self.cache is None:
            return self._compute(count)
        layout = {"mode": self.mode, "count": count, "lookahead": self.lookahead}
        key = cache_key(self.distiller, self.z_src, self.cond_src, layout)
        path = self.cache.path(key)
        existed = path.is_file()
        loaded = self.cache.load(key, self.z_src.device)
        if loaded is not None:
            self.distiller.generator.set_state(loaded.generator_state)
            self._stats.update(cache="hit", cache_file=str(path))
            scale = self.distiller.config.effective_guidance_scale()  # part of the cache key
            return [replace(s, origin="lookahead", guidance_scale=scale) for s in loaded.sources]
        sources = self._compute(count)
        written = self.cache.save(key, sources, self.distiller.generator.get_state())
        self._stats["cache"] = "recomputed" if existed else "miss"
        self._stats["cache_file"] = None if written is None else str(written)
        return sources

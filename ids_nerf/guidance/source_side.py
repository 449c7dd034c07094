"""Which source side each step of one edit gets (:class:`SourceSupplier`), as ``GuidanceConfig.source`` says.

- ``step`` (the paper's algorithm; ``--source.lookahead 1`` pins it): none; :meth:`ScoreDistiller.step` draws and
  computes it.
- ``lookahead`` (``--source.lookahead K`` or ``auto``, the default): the next K steps' source sides from
  :meth:`ScoreDistiller.prepare_sources`, one batch of K times the source batch. Exact: the same draws in the same
  order, the same edit within float tolerance. While it serves a step, the run's generator is set to the state the
  sequential algorithm would have after that step's draws, so whatever reads or saves it between steps (a
  checkpoint, a resumed edit, the next block) sees the sequential stream; a change of the source-side options
  between steps (the viewer's FPR switch) drops the rest of the batch and draws it again from there.
- ``pool`` (``--source.pool P``): P source sides computed once (K per batch), each step reusing one of them, in
  random passes over the pool drawn from a generator of its own (seeded by the run's seed; the run's generator only
  draws the pool). Approximate, reuse factor r = steps / P. For a batch of sources an entry holds one source side
  per source (each with its own t); a step reuses the same entry index for all of them.

``--source.lookahead auto`` chooses K once per supplier (:func:`choose_lookahead`): the first batch runs with K = 1
under a memory probe (:func:`measure_peak`: the batch's peak over the memory in use before it, on CUDA from the
allocator, on the CPU from the resident set size), kept per latent shape on the distiller for the rest of the run;
K is then the largest that fits in ``FREE_FRACTION`` of the free memory (:func:`free_memory`: CUDA free + cached,
or the CPU's available RAM within the cgroup limit), on the CPU also raising the K = 1 batch's peak by at most
``CPU_PEAK_GROWTH``, never above the steps left (a NeRF view block), nor ``MAX_AUTO_LOOKAHEAD``. Auto means K = 1
where look-ahead is not exact or gains nothing (:func:`auto_unavailable`: cds, any score without FPR, a single step,
a device whose free memory is unknown). The choice and why are in :meth:`SourceSupplier.summary` and on the
distiller (``lookahead_choice``).

With a cache folder, the precomputed source sides (all steps' for ``lookahead``, the pool's for ``pool``; a cache
with K = 1 precomputes each step's in its own batch) are stored in and loaded from
:class:`~ids_nerf.guidance.source_cache.SourceCache`, and the run's generator continues from the stored state, so an
edit that loads them is the edit that computed them. The key holds the look-ahead setting (``auto`` or K), not the K
auto chose: any exact K gives the same edit within float tolerance, and a file written with one is served whatever
the free memory is the next time.

A supplier serves one source (batch) for a known number of steps: the 2D editor. A caller whose source changes
every few steps (the NeRF pipeline: one view per block of ``view_repeat`` steps) makes one supplier per block.
"""

from __future__ import annotations

import contextlib
import resource
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import Tensor

from ids_nerf.guidance.config import GuidanceConfig
from ids_nerf.guidance.distiller import ScoreDistiller, SourceDraw
from ids_nerf.guidance.source_cache import SourceCache, cache_key
from ids_nerf.profiling import rss_bytes

#: The pool's pick generator is seeded with the run's seed plus this: a stream of its own.
POOL_SEED_OFFSET = 104_729
#: The largest K ``auto`` chooses: on the CPU larger batches were no faster (toy prior, docs/lookahead.md).
MAX_AUTO_LOOKAHEAD = 8
#: ``auto``: the look-ahead batch may take this fraction of the free memory (the rest stays for the other phases
#: of a step and for other processes).
FREE_FRACTION = 0.5
#: ``auto`` on the CPU: a look-ahead batch may raise the K = 1 batch's peak (the process's resident set) by at most
#: this fraction. RAM is shared with the system and other jobs, and a compute-bound (large) model gains nothing
#: from batching on a CPU; a small model, whose per-call overhead batching saves, stays far below it.
CPU_PEAK_GROWTH = 0.2

T = TypeVar("T")


@dataclass(frozen=True)
class MemoryProbe:
    """Memory of one batch, measured by :func:`measure_peak`."""

    device: str
    """Device type: `cuda` (allocator figures) or `cpu` (resident set size of the process)."""
    before_bytes: int
    """Memory in use just before the batch."""
    peak_bytes: int
    """Highest memory in use during the batch."""

    @property
    def sample_bytes(self) -> int:
        """What the batch added at its peak: the memory one more look-ahead step needs."""
        return max(self.peak_bytes - self.before_bytes, 0)


@dataclass(frozen=True)
class LookaheadChoice:
    """The K a supplier uses and why."""

    k: int
    """Steps per look-ahead batch."""
    limit: str
    """What set K: `setting` (pinned), `steps left`, `max` (MAX_AUTO_LOOKAHEAD), `free memory`, `peak growth`, or
    why auto means 1 (`cds`, `nothing to batch`, `one step`, `device`)."""
    reason: str
    """One line for people: the figures behind K."""
    probe: MemoryProbe | None = None
    """The K = 1 batch's memory (auto)."""
    free_bytes: int | None = None
    """Free memory when K was chosen (auto)."""
    step_bytes: int | None = None
    """What one more look-ahead step was taken to need (auto)."""

    def as_dict(self) -> dict:
        """JSON-ready: K, limit, reason, the probe's bytes, free bytes."""
        probe = self.probe
        return {
            "k": self.k,
            "limit": self.limit,
            "reason": self.reason,
            "sample_bytes": None if probe is None else probe.sample_bytes,
            "peak_bytes": None if probe is None else probe.peak_bytes,
            "free_bytes": self.free_bytes,
            "step_bytes": self.step_bytes,
            "memory_of": None if probe is None else probe.device,
        }


def choose_lookahead(
    sample_bytes: int,
    free_bytes: int,
    cap: int,
    *,
    peak_bytes: int | None = None,
    free_fraction: float = FREE_FRACTION,
    peak_growth: float | None = None,
    max_k: int = MAX_AUTO_LOOKAHEAD,
) -> tuple[int, str]:
    """The largest K <= ``cap`` (the steps left) and <= ``max_k`` whose batch of K look-ahead steps, each needing
    ``sample_bytes``, fits in ``free_fraction`` of ``free_bytes`` and (``peak_growth`` and ``peak_bytes`` given: the
    K = 1 batch's peak) adds at most ``peak_growth * peak_bytes`` to that peak. At least 1. Returns K and the limit
    that set it (`steps left`, `max`, `free memory`, `peak growth`; the first of equals)."""
    per_step = max(int(sample_bytes), 1)
    limits = {"steps left": cap, "max": max_k, "free memory": int(free_fraction * max(free_bytes, 0)) // per_step}
    if peak_growth is not None and peak_bytes is not None:
        limits["peak growth"] = 1 + int(peak_growth * max(peak_bytes, 0)) // per_step
    limit = min(limits, key=lambda name: limits[name])
    return max(1, limits[limit]), limit


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cgroup_headroom() -> int | None:
    """Bytes left below this process's cgroup memory limit (v2 or v1), None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            folder, limit_file, usage_file = Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit_file, usage_file = "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
        if limit is not None and usage is not None and limit < 2**60:
            return max(limit - usage, 0)
    return None


def free_memory(device: torch.device) -> int | None:
    """Memory a batch on ``device`` can still take: CUDA's free memory plus what torch's allocator holds unused;
    the CPU's available RAM (``MemAvailable``), within the cgroup limit if there is one. None: unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    available = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    headroom = _cgroup_headroom()
    known = [b for b in (available, headroom) if b is not None]
    return min(known) if known else None


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def measure_peak(fn: Callable[[], T], device: torch.device, interval_s: float = 0.001) -> tuple[T, MemoryProbe]:
    """Run ``fn`` and measure the memory it takes. CUDA: allocated bytes before and the allocator's peak during it
    (this resets the peak statistics). CPU: the resident set size before and its peak during it, sampled every
    ``interval_s`` by a thread and, when ``fn`` sets a new high for the process, the exact ``ru_maxrss``. On CPU it
    is what the batch added to the process's resident memory: memory the process freed but still holds is reused
    without showing, so a batch that fits in it measures (correctly, for K) as almost nothing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, MemoryProbe("cuda", before, torch.cuda.max_memory_allocated(device))
    before, high_before = rss_bytes(), _max_rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, name="lookahead-memory-probe", daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        stop.set()
        sampler.join()
    high_after = _max_rss_bytes()
    top = max(peak[0], rss_bytes(), high_after if high_after > high_before else 0)
    return result, MemoryProbe("cpu", before, top)


def auto_unavailable(config: GuidanceConfig, device: torch.device, steps: int) -> tuple[str, str] | None:
    """Why ``auto`` means K = 1 for ``config`` on ``device`` over ``steps`` source sides, as (limit, reason), or
    None when it may choose more."""
    if config.score == "cds":
        return "cds", "cds draws its PatchNCE patches inside each step: look-ahead is not exact for it"
    if not config.fpr.enabled or config.fpr.iterations == 0:
        return "nothing to batch", (
            "without FPR the source side is at most one forward pass, which the step shares with the target branch: "
            "batching it ahead gained nothing (docs/lookahead.md)"
        )
    if steps <= 1:
        return "one step", "one step: nothing to look ahead to"
    if device.type not in ("cpu", "cuda"):
        return "device", f"the free memory of {device.type} is unknown"
    return None


@dataclass
class Measured:
    """What ``auto`` measured for one prior, latent shape and FPR setting."""

    first: MemoryProbe
    """The first step's batch (K = 1). Its growth over the memory in use is an upper bound of one step's need: it
    also holds what the first backward pass allocates once (about twice one step's need with the toy prior)."""
    second: MemoryProbe | None = None
    """The first look-ahead batch (``second_k`` steps), chosen from ``first``."""
    second_k: int = 0
    """Steps in that batch."""

    def per_step(self) -> int:
        """Bytes one more look-ahead step adds: the second batch's peak over the first's per extra step, or the
        first batch's growth when there is no second."""
        if self.second is None or self.second_k < 2:
            return self.first.sample_bytes
        return max(self.second.peak_bytes - self.first.peak_bytes, 0) // (self.second_k - 1)


#: Memory of ``auto``'s first batches, per prior, latent and FPR setting (:func:`_probe_key`), measured once per
#: process: later edits choose from the same figures, so the same conditions give the same K (and the same edit).
_PROBES: dict[tuple, Measured] = {}


def _spread(k: int, remaining: int) -> int:
    """The batch size that covers ``remaining`` steps in as few batches of at most ``k`` as possible, evenly."""
    return -(-remaining // -(-remaining // k))


def _probe_key(distiller: ScoreDistiller, z_src: Tensor) -> tuple:
    den, config = distiller.den, distiller.config
    model = getattr(getattr(den, "config", None), "model", None)
    return (
        type(den).__qualname__,
        id(den) if model is None else model,
        str(getattr(den, "dtype", "")),
        tuple(z_src.shape),
        str(z_src.dtype),
        str(z_src.device),
        config.score,
        repr(config.fpr),
    )


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB"


def _source_options(config: GuidanceConfig) -> tuple:
    """What a source side depends on among the options a viewer may change between steps."""
    return (
        config.score,
        replace(config.fpr),
        tuple(config.t_range),
        config.pds.num_inference_steps,
        tuple(config.pds.grid_range),
    )


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
        self.setting: int | Literal["auto"] = config.lookahead
        self.pool_size = config.pool
        self.cache = SourceCache(cache_dir) if cache_dir is not None else None
        self.choice: LookaheadChoice | None = None
        """How K was chosen (None until ``auto`` chose it)."""
        self.lookahead: int | None = None
        """K: the setting, or what ``auto`` chose (None until it has)."""
        if self.setting != "auto":
            self.lookahead = int(self.setting)
            self.choice = LookaheadChoice(
                self.lookahead, "setting", f"K = {self.lookahead}: set by the look-ahead option"
            )
        else:
            why_not = auto_unavailable(distiller.config, self.z_src.device, self.pool_size or steps)
            if why_not is not None:
                self.lookahead = 1
                self.choice = LookaheadChoice(1, *why_not)
        batched = self.lookahead is None or self.lookahead > 1
        self.mode: Literal["step", "lookahead", "pool"] = (
            "pool" if config.pool is not None else "lookahead" if batched or self.cache else "step"
        )
        self._queue: deque[SourceDraw] = deque()
        self._queue_options: tuple | None = None
        self._first_done = self.lookahead is not None  # auto: its first batch (K = 1) is still to come
        self._second_k: int | None = None  # auto: the size of its first look-ahead batch, once chosen
        self._rewind: Tensor | None = None
        self._pool: list[SourceDraw] = []
        self._order: list[int] = []
        self._pick = torch.Generator().manual_seed(distiller.seed + POOL_SEED_OFFSET)
        self._served = 0
        self._stats: dict = {
            "cache": "off" if self.cache is None else "unused",
            "cache_file": None,
            "cache_hits": 0,
            "precomputed": 0,
            "redrawn": 0,
        }

    def next(self) -> SourceDraw | None:
        """The next step's source side; None in ``step`` mode (the step draws its own)."""
        if self.mode == "step":
            return None
        if self.mode == "pool":
            source = self._from_pool()
        else:
            if self._queue and self._options_changed():
                self.distiller.generator.set_state(self._rewind)  # as if the dropped steps had not been drawn
                self._stats["redrawn"] += len(self._queue)
                self._queue.clear()
            if not self._queue:
                self._refill()
            if not self._queue:  # auto chose K = 1 after its probe: the rest in the step
                return None
            source = self._queue.popleft()
            if source.generator_after is not None:
                self.distiller.generator.set_state(source.generator_after)
            self._rewind = source.generator_after
        self._served += 1
        self._stats["cache_hits"] += int(source.cached)
        return source

    def summary(self) -> dict:
        """Mode, K (``lookahead``: used; ``lookahead_setting``: given; ``lookahead_choice``: limit, reason, memory
        figures), P, reuse factor, cache status (off, unused, hit, miss, recomputed), cache file, steps served from
        the cache, source sides computed here, those dropped and drawn again after an option changed, and for a
        pool each entry's t and FPR losses."""
        out = {
            "mode": self.mode,
            "lookahead": self.lookahead,
            "lookahead_setting": self.setting,
            "lookahead_choice": None if self.choice is None else self.choice.as_dict(),
            "pool": self.pool_size,
            "reuse_factor": self.steps / self.pool_size if self.pool_size else None,
            **self._stats,
        }
        if self._pool:
            out["pool_t"] = [s.t.tolist() for s in self._pool]
            out["pool_fpr_losses"] = [s.fpr_losses for s in self._pool]
        return out

    # ------------------------------------------------------------------ look-ahead
    def _options_changed(self) -> bool:
        return self._rewind is not None and self._queue_options != _source_options(self.distiller.config)

    def _refill(self) -> None:
        remaining = max(self.steps - self._served, 1)  # a caller asking past ``steps`` gets one more at a time
        self._rewind = self.distiller.generator.get_state()
        self._queue_options = _source_options(self.distiller.config)
        if self.cache is not None:
            self._queue.extend(self._precompute(remaining))
            return
        k = self._next_k(remaining)
        if self.mode == "step":
            return
        self._queue.extend(self._batch(k))
        self._stats["precomputed"] += k

    def _next_k(self, remaining: int) -> int:
        """K of the next batch (at most ``remaining``). ``auto``: 1 for its first batch (the memory probe), then a
        first choice from that batch's memory, which the next batch measures again (:class:`Measured`), then the
        final choice; each spread evenly over the batches the remaining steps need."""
        if self.setting != "auto":
            return min(self.lookahead or 1, remaining)
        if not self._first_done:
            return 1
        if self.lookahead is None:
            if self._second_k is None:
                first = self._choose(remaining, refined=False)
                if self.lookahead is None:  # not final: a batch of about that size is measured first
                    self._second_k = _spread(first, remaining)
                    return self._second_k
            else:
                self._choose(remaining, refined=True)
        return _spread(self.lookahead or 1, remaining)

    def _choose(self, remaining: int, refined: bool) -> int:
        """``auto``: K from the measured memory (:data:`_PROBES`; ``refined``: also the first look-ahead batch's, and
        at most twice its size) and the free memory now. Final (K set, the reason recorded) when refined, 1, or
        covering every step left; otherwise the size of the batch to measure next."""
        measured = _PROBES[_probe_key(self.distiller, self.z_src)]
        device = self.z_src.device
        free = free_memory(device)
        growth = CPU_PEAK_GROWTH if device.type == "cpu" else None
        per_step = measured.per_step() if refined else measured.first.sample_bytes
        if free is None:
            k, limit = 1, "device"
        else:
            k, limit = choose_lookahead(
                per_step, free, remaining, peak_bytes=measured.first.peak_bytes, peak_growth=growth
            )
        if refined and measured.second_k and k > 2 * measured.second_k:
            k, limit = 2 * measured.second_k, "twice the measured batch"
        if not refined and 1 < k < remaining:
            return k
        second = (
            f"; a batch of {measured.second_k} measured {_gb(per_step)} per step" if refined and measured.second else ""
        )
        reason = (
            f"K = {k} ({limit}): the first step's batch peaked at {_gb(measured.first.peak_bytes)} "
            f"({measured.first.device}), {_gb(measured.first.sample_bytes)} above what was in use{second}; free "
            f"{_gb(free)} (a batch may use {FREE_FRACTION:.0%})"
            + (f", peak growth allowed {growth:.0%}" if growth is not None else "")
            + f"; {remaining} steps left, max {MAX_AUTO_LOOKAHEAD}"
        )
        self.lookahead = k
        self.choice = LookaheadChoice(k, limit, reason, measured.first, free, per_step)
        self.distiller.lookahead_choice = self.choice
        if k == 1 and self.mode == "lookahead" and self.cache is None:
            self.mode = "step"
        return k

    def _batch(self, k: int) -> list[SourceDraw]:
        """One batch of ``k`` source sides. ``auto`` measures (:func:`measure_peak`) its first batch (K = 1) and its
        first look-ahead batch when this process has not measured them for this prior, latent shape and FPR setting
        yet (:data:`_PROBES`)."""
        prepare = self.distiller.prepare_sources
        if self.setting != "auto":
            return prepare(self.z_src, self.cond_src, k)
        key = _probe_key(self.distiller, self.z_src)
        device = self.z_src.device
        if not self._first_done:
            self._first_done = True
            if key not in _PROBES:
                sources, first = measure_peak(lambda: prepare(self.z_src, self.cond_src, 1), device)
                _PROBES[key] = Measured(first)
                return sources
        elif self.lookahead is None and k == self._second_k and _PROBES[key].second is None:
            sources, _PROBES[key].second = measure_peak(lambda: prepare(self.z_src, self.cond_src, k), device)
            _PROBES[key].second_k = k
            return sources
        return prepare(self.z_src, self.cond_src, k)

    def _compute(self, count: int) -> list[SourceDraw]:
        """``count`` source sides from the run's generator, K per batch."""
        sources: list[SourceDraw] = []
        while len(sources) < count:
            sources += self._batch(self._next_k(count - len(sources)))
        self._stats["precomputed"] += count
        return sources

    # ------------------------------------------------------------------ pool and cache
    def _from_pool(self) -> SourceDraw:
        if not self._pool:
            assert self.pool_size is not None
            self._pool = self._precompute(self.pool_size)
        if not self._order:
            self._order = torch.randperm(len(self._pool), generator=self._pick).tolist()
        index = self._order.pop(0)
        return replace(self._pool[index], origin="pool", pool_index=index, generator_after=None)

    def _precompute(self, count: int) -> list[SourceDraw]:
        """``count`` source sides: loaded from the disk cache when it holds them (the run's generator then
        continues from the stored state), else computed (and stored when there is a cache)."""
        if self.cache is None:
            return self._compute(count)
        layout = {"mode": self.mode, "count": count, "lookahead": self.setting}
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

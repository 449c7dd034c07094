"""Named phases of an editing step, timed (exclusive of nested phases) and with their peak memory, on demand.

Library code marks its phases with ``with phase("fpr"):``; that costs one global lookup unless a benchmark opened
:func:`record_phases`, which then syncs CUDA at every phase boundary, accumulates the seconds spent in each phase
(time in a nested phase counts for the nested one only) and the peak memory while the phase was open (CUDA:
``torch.cuda.max_memory_allocated``; CPU: resident set size sampled every few milliseconds by a thread, since the
process's ``ru_maxrss`` only ever grows).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere. Timers call it before reading the clock."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PhaseStats:
    """Accumulated figures of one phase."""

    seconds: float = 0.0
    """Wall time spent in the phase itself (nested phases excluded), summed over its calls."""
    calls: int = 0
    """How many times the phase was entered."""
    peak_bytes: int = 0
    """Highest memory seen while the phase (or a phase nested in it) was open."""


@dataclass
class _Frame:
    name: str
    start: float
    child_seconds: float = 0.0
    peak: int = 0


@dataclass
class PhaseRecorder:
    """Collects :class:`PhaseStats` per phase name; see :func:`record_phases`."""

    device: torch.device
    stats: dict[str, PhaseStats] = field(default_factory=dict)
    _stack: list[_Frame] = field(default_factory=list)
    _cpu_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------ memory
    def _memory_peak_and_reset(self) -> int:
        """Peak memory since the last reset, then reset the peak to the current level."""
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return peak
        now = rss_bytes()
        peak, self._cpu_peak = max(self._cpu_peak, now), now
        return peak

    def _sample_rss(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._cpu_peak = max(self._cpu_peak, rss_bytes())

    # ------------------------------------------------------------ phases
    def enter(self, name: str) -> None:
        synchronize(self.device)
        peak = self._memory_peak_and_reset()
        if self._stack:
            self._stack[-1].peak = max(self._stack[-1].peak, peak)
        self._stack.append(_Frame(name, time.perf_counter()))

    def exit(self) -> None:
        synchronize(self.device)
        frame = self._stack.pop()
        elapsed = time.perf_counter() - frame.start
        frame.peak = max(frame.peak, self._memory_peak_and_reset())
        stats = self.stats.setdefault(frame.name, PhaseStats())
        stats.seconds += elapsed - frame.child_seconds
        stats.calls += 1
        stats.peak_bytes = max(stats.peak_bytes, frame.peak)
        if self._stack:
            parent = self._stack[-1]
            parent.child_seconds += elapsed
            parent.peak = max(parent.peak, frame.peak)

    def reset(self) -> None:
        """Forget what was recorded so far (e.g. after warm-up steps)."""
        self.stats.clear()


_ACTIVE: PhaseRecorder | None = None


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark a phase of the editing step; free unless :func:`record_phases` is open."""
    recorder = _ACTIVE
    if recorder is None:
        yield
        return
    recorder.enter(name)
    try:
        yield
    finally:
        recorder.exit()


@contextlib.contextmanager
def record_phases(device: torch.device | str, rss_interval_s: float = 0.005) -> Iterator[PhaseRecorder]:
    """Record every :func:`phase` opened inside the block (one recorder at a time)."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("record_phases() is already open")
    recorder = PhaseRecorder(torch.device(device))
    sampler = None
    if recorder.device.type != "cuda":
        recorder._cpu_peak = rss_bytes()
        sampler = threading.Thread(target=recorder._sample_rss, args=(rss_interval_s,), daemon=True)
        sampler.start()
    _ACTIVE = recorder
    try:
        yield recorder
    finally:
        _ACTIVE = None
        recorder._stop.set()
        if sampler is not None:
            sampler.join()

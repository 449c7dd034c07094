"""Outputs that appear whole or not at all: written to temporary files beside their targets, then moved into place.

An interrupted or failed command (Ctrl-C, SIGTERM, an error) must leave no half-written output and no empty output
folder behind. :class:`StagedOutputs` hands out a temporary path beside each target (same folder, so the final
``os.replace`` is atomic; same extension, so writers that pick the format from it still do); :meth:`commit` moves
them all into place with SIGINT/SIGTERM held back for the few renames, so a set of outputs (an image, its JSON
sidecar and its trajectory) appears together; leaving the block without committing deletes the temporary files and
the folders the staging created.

    with StagedOutputs() as staged:
        image.save(staged.path(out))
        staged.path(out.with_suffix(".json")).write_text(text)
        staged.commit()
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back inside the block (main thread; delivered, and handled, when it ends)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StagedOutputs:
    """Temporary files for a set of outputs, moved into place together by :meth:`commit` (see the module)."""

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []
        self._created: list[Path] = []
        self.committed = False
        """:meth:`commit` ran."""

    def path(self, target: Path | str) -> Path:
        """A temporary path beside ``target`` (its folder is created if missing, and removed again if nothing is
        committed into it), with ``target``'s extension; :meth:`commit` renames it to ``target``."""
        target = Path(target)
        self._make_folder(target.parent)
        temp = target.with_name(f".{target.stem}.partial-{os.getpid()}-{len(self._pairs)}{target.suffix}")
        self._pairs.append((temp, target))
        return temp

    def _make_folder(self, folder: Path) -> None:
        missing = []
        for parent in [folder, *folder.parents]:
            if parent.exists():
                break
            missing.append(parent)
        folder.mkdir(parents=True, exist_ok=True)
        self._created.extend(reversed(missing))  # outermost first

    def commit(self) -> None:
        """Move every staged file to its target (replacing an existing one), signals held for the renames."""
        with signals_held():
            for temp, target in self._pairs:
                os.replace(temp, target)
            self.committed = True

    def discard(self) -> None:
        """Delete the temporary files not committed and the folders staging created that are now empty."""
        if not self.committed:
            for temp, _ in self._pairs:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        for folder in reversed(self._created):  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` as one atomic replacement (a reader sees the old file or the new one)."""
    with StagedOutputs() as staged:
        staged.path(path).write_text(text)
        staged.commit()

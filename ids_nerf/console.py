"""Shared console-script plumbing for every entry point (console scripts and ``ns-train`` methods).

- A :class:`~ids_nerf.errors.UserError` prints ``<prog>: error: <message>`` on stderr and exits with code 2, without
  a traceback (:func:`exit_on_user_error`).
- Ctrl-C (SIGINT) or SIGTERM prints one line ``<prog>: interrupted ...`` on stderr and exits with 130 (SIGINT) or
  143 (SIGTERM), as shells report a process killed by those signals, without a traceback
  (:func:`exit_on_interrupt`): a script never takes an interrupted run for a finished one. Outputs are written
  with :mod:`ids_nerf.atomic`, so an interrupted command leaves none of them half-written.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import tyro

from ids_nerf.errors import UserError
from ids_nerf.quiet import quiet_third_party_warnings

C = TypeVar("C")


@contextlib.contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Turn a :class:`UserError` raised inside the block into one paragraph on stderr and exit code 2."""
    try:
        yield
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


#: Exit codes of an interrupted command: 128 + the signal's number, as shells report a process the signal killed.
INTERRUPT_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a KeyboardInterrupt would be so that one path (``finally`` blocks, cleanup of staged
    outputs) handles both; :func:`exit_on_interrupt` exits with 143 for it."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


class Interrupted(BaseException):
    """SIGINT or SIGTERM inside :func:`interrupts_pass_through`: neither an Exception nor a KeyboardInterrupt, so
    no third-party ``except KeyboardInterrupt`` swallows it (nerfstudio's ``launch`` prints a traceback and returns
    normally, so the caller would carry on with a run that never finished)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_pass_through() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise :class:`Interrupted` (through third-party code that catches
    KeyboardInterrupt); leaving the block it becomes a KeyboardInterrupt (SIGINT) or :class:`Terminated` (SIGTERM)
    again, for :func:`exit_on_interrupt`. Main thread only (elsewhere the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in INTERRUPT_EXIT_CODES}
    try:
        yield
    except Interrupted as exc:
        raise (Terminated(exc.signum) if exc.signum == signal.SIGTERM else KeyboardInterrupt()) from None
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be restored from here
                signal.signal(signum, handler)


@contextlib.contextmanager
def exit_on_interrupt(prog: str, message: Callable[[], str] | None = None) -> Iterator[None]:
    """Turn Ctrl-C (KeyboardInterrupt) or SIGTERM inside the block into one line on stderr, ``<prog>: <message()>``
    (default ``interrupted``), and exit code 130 (SIGINT) or 143 (SIGTERM), without a traceback.

    ``message`` is called when the interruption happens, so it can say how far the run got and how to resume, e.g.
    ``lambda: f"interrupted at step {step} of {total}; resume with: {command}"``; it must not raise (if it does, the
    line says ``interrupted`` only). SIGTERM is mapped to a :class:`Terminated` KeyboardInterrupt while the block
    runs, and both signals are ignored while the line is made and printed (a second Ctrl-C must not end in a
    traceback); main thread only, the previous handlers are restored after."""
    main = threading.current_thread() is threading.main_thread()
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT)} if main else {}
    if main:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as exc:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        signum = exc.signum if isinstance(exc, Terminated | Interrupted) else signal.SIGINT
        text = "interrupted"
        if message is not None:
            with contextlib.suppress(Exception):
                text = message()
        _close_progress_bars()
        _quiet_finalizers_of_interrupted_objects()
        print(f"{prog}: {text}", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPT_EXIT_CODES.get(signum, 128 + int(signum))) from None
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be restored from here
                signal.signal(signum, handler)


def _ignore_unraisable(_unraisable: Any) -> None:
    """An unraisable exception (a finalizer's) after an interruption: not printed."""


def _quiet_finalizers_of_interrupted_objects() -> None:
    """After an interruption the process is ending, and objects the signal left half-built (e.g. imageio's
    ``PillowPlugin`` interrupted inside its ``__init__``, whose ``__del__`` then raises ``AttributeError``) would
    print ``Exception ignored in ... Traceback`` while the interpreter collects them: noise under the one line that
    matters. Such finalizer errors are dropped from here on (``sys.unraisablehook``)."""
    sys.unraisablehook = _ignore_unraisable


def _close_progress_bars() -> None:
    """Close the progress bars an interrupted loop left open (tqdm), so that the line printed next is a line of its
    own and no bar is redrawn after it."""
    with contextlib.suppress(Exception):
        from tqdm import tqdm

        for bar in list(tqdm._instances):
            bar.close()


def run_console(
    prog: str,
    config_type: Any,
    run: Callable[[C], Any],
    description: str | None,
    args: list[str] | None = None,
    interrupted: Callable[[], str] | None = None,
) -> tuple[C, Any]:
    """Parse ``config_type`` (a config dataclass, or a union of them for subcommands) from ``args`` (default: the
    command line) and call ``run`` inside :func:`exit_on_user_error`, all inside :func:`exit_on_interrupt` with
    ``interrupted`` as its message; known third-party warnings are filtered (:mod:`ids_nerf.quiet`)."""
    quiet_third_party_warnings()
    with exit_on_interrupt(prog, interrupted):
        cfg = tyro.cli(config_type, args=args, description=description)
        with exit_on_user_error(prog):
            return cfg, run(cfg)

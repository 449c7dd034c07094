"""Shared console-script plumbing: one error path for every entry point (console scripts and ``ns-train``
methods): a :class:`~ids_nerf.errors.UserError` prints ``<prog>: error: <message>`` on stderr and exits with code 2,
without a traceback."""

from __future__ import annotations

import contextlib
import sys
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


def run_console(
    prog: str,
    config_type: Any,
    run: Callable[[C], Any],
    description: str | None,
    args: list[str] | None = None,
) -> tuple[C, Any]:
    """Parse ``config_type`` (a config dataclass, or a union of them for subcommands) from ``args`` (default: the
    command line) and call ``run`` inside :func:`exit_on_user_error`; known third-party warnings are filtered
    (:mod:`ids_nerf.quiet`)."""
    quiet_third_party_warnings()
    cfg = tyro.cli(config_type, args=args, description=description)
    with exit_on_user_error(prog):
        return cfg, run(cfg)

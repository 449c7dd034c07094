"""Shared console-script plumbing: parse a config with tyro, run, turn user errors into one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import tyro

from ids_nerf.errors import UserError

C = TypeVar("C")


def run_console(prog: str, config_type: type[C], run: Callable[[C], Any], description: str | None) -> tuple[C, Any]:
    """Parse ``config_type`` from the command line and call ``run``; a :class:`UserError` prints
    ``<prog>: error: <message>`` on stderr and exits with code 2 (no traceback)."""
    cfg = tyro.cli(config_type, description=description)
    try:
        return cfg, run(cfg)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None

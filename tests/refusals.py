"""Shared harness of the bad-input suites: run an entry point as a user does, then check that it refused cleanly.

A clean refusal (the project's promise for bad input): exit code 2, no traceback, one message naming the flag or file
as the user typed it, and nothing written or changed (the output folder and the inputs are the same before and after).

Two ways to run an entry point:
- :func:`in_process`: call a console-script ``entrypoint`` (or nerfstudio's ``ns-train`` entry point) with ``argv``
  in this process (fast: no interpreter start, no re-import of torch/nerfstudio);
- :func:`subprocess_run`: the installed console script in a child process (for signals, or where the process exit
  itself is under test).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

BIN = Path(sys.executable).parent
"""The virtual environment's scripts folder (ids-edit-image, ns-train, ...)."""


@dataclass(frozen=True)
class Outcome:
    """How an entry point ended."""

    code: int
    """Exit code (0 when it returned normally)."""
    out: str
    """What it printed on stdout."""
    err: str
    """What it printed on stderr."""

    @property
    def text(self) -> str:
        """stdout + stderr with line breaks and repeated spaces folded (rich wraps long lines)."""
        return " ".join((self.out + "\n" + self.err).split())


def in_process(entrypoint: Callable[[], object], argv: list[str]) -> Outcome:
    """Run ``entrypoint`` with ``sys.argv = argv`` in this process; stdout/stderr captured, SystemExit caught.

    Any other exception propagates (the test then fails with it: a traceback is what the suite forbids)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", list(argv)), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            entrypoint()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Outcome(code, out.getvalue(), err.getvalue())


def subprocess_run(argv: list[str], cwd: Path | None = None, timeout: float = 600, **env: str) -> Outcome:
    """Run the console script ``argv[0]`` of this environment in a child process (offline, one thread)."""
    command = [str(BIN / argv[0]), *argv[1:]]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    res = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)
    return Outcome(res.returncode, res.stdout, res.stderr)


def snapshot(*paths: Path) -> dict[str, tuple[str, int, str]]:
    """Every file and folder below ``paths`` (and the paths themselves): kind, size and content hash. Equal before
    and after a refused command = nothing was written, created, changed or removed."""
    state: dict[str, tuple[str, int, str]] = {}
    for root in paths:
        root = Path(root)
        if not root.exists():
            state[str(root)] = ("missing", 0, "")
            continue
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            if p.is_dir():
                state[str(p)] = ("dir", 0, "")
            elif p.is_file():
                state[str(p)] = ("file", p.stat().st_size, hashlib.sha1(p.read_bytes()).hexdigest())
    return state


def assert_refused(outcome: Outcome, names: Iterable[str], before: dict | None = None, after: dict | None = None):
    """Exit code 2, no traceback, every one of ``names`` (flags or files as the user typed them) in the message, and
    (given both snapshots) nothing changed on disk."""
    assert outcome.code == 2, f"exit code {outcome.code}, expected 2\n{outcome.out[-2000:]}\n{outcome.err[-3000:]}"
    assert "Traceback" not in outcome.out + outcome.err, outcome.err[-3000:]
    for name in names:
        assert name in outcome.text, f"{name!r} not named in the message:\n{outcome.err[-2000:]}"
    if before is not None and after is not None:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"a refused command changed: {changed[:10]}"

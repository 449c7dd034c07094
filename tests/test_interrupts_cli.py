"""Interruptions (issue 20, class 1): Ctrl-C or SIGTERM ends a command with 130 / 143 and one line, no traceback,
and no output at all (nothing half-written, no empty folder); the identity benchmark keeps the methods it finished.

The signals are real: sent to a running ``ids-edit-image`` subprocess (tiny prior) once its editing loop has drawn
its progress bar. The other checks run in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ids_nerf.console import exit_on_interrupt, interrupts_pass_through

sys.path.insert(0, str(Path(__file__).parent))
from refusals import BIN, in_process, snapshot  # noqa: E402


def _start(argv: list[str]) -> tuple[subprocess.Popen, list[bytes], threading.Thread]:
    """Start a console script of this environment; its stderr is collected by a thread (the harness's
    subprocess_run waits for the end: no signal can be sent in between)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    chunks: list[bytes] = []

    def read() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, chunks, reader


def _wait_for(chunks: list[bytes], marker: bytes, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while marker not in b"".join(chunks):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{marker!r} never appeared:\n{b''.join(chunks).decode(errors='replace')[-2000:]}")
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_during_an_edit_exits_130_or_143_with_one_line_and_no_output(tmp_path, tiny_prior_dir, signum, code):
    Image.new("RGB", (48, 32), (200, 30, 30)).save(tmp_path / "in.png")
    out = tmp_path / "new" / "edit.png"
    argv = ["ids-edit-image", "--image", str(tmp_path / "in.png"), "--src-prompt", "a red sphere"]
    argv += ["--trg-prompt", "a blue sphere", "--out", str(out), "--prior.model", str(tiny_prior_dir)]
    argv += ["--prior.device", "cpu", "--optim.steps", "100000", "--save-trajectory", str(tmp_path / "new" / "t.gif")]
    before = snapshot(tmp_path)
    proc, chunks, reader = _start(argv)
    _wait_for(chunks, b"edit (ids)", proc)  # the progress bar of the editing loop is drawn
    time.sleep(0.5)  # some steps in
    proc.send_signal(signum)
    try:
        proc.wait(timeout=120)  # not communicate(): it would read stderr too, racing the reader thread
    finally:
        proc.kill()
    reader.join(timeout=10)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    err = b"".join(chunks).decode()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert not stdout.strip()  # no "wrote ..." line
    segments = [s.strip() for s in err.replace("\r", "\n").splitlines() if s.strip()]
    ours = [s for s in segments if s.startswith("ids-edit-image:")]
    assert ours == ["ids-edit-image: interrupted; nothing was written"], segments[-5:]
    assert segments[-1] == ours[0]  # the last line, after the progress bar (closed)
    others = [s for s in segments if s is not ours[0] and not ("%|" in s or s.startswith("edit ("))]
    assert not others, others  # nothing but progress bars besides the one line
    assert snapshot(tmp_path) == before  # no image, sidecar, trajectory, temporary file or folder


def test_sigterm_inside_exit_on_interrupt_exits_143_with_the_given_line(capsys):
    """The mechanism the ns-train trainer reuses: SIGTERM -> the same path as Ctrl-C; the message is computed when
    the interruption happens."""
    step = {"n": 0}
    with pytest.raises(SystemExit) as exit_info, exit_on_interrupt("ns-train ids-edit", lambda: f"at {step['n']}"):
        step["n"] = 7
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
    assert exit_info.value.code == 143
    assert capsys.readouterr().err == "ns-train ids-edit: at 7\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handler is back
    with pytest.raises(SystemExit) as exit_info, exit_on_interrupt("prog"):
        raise KeyboardInterrupt
    assert exit_info.value.code == 130 and capsys.readouterr().err == "prog: interrupted\n"


_HALF_BUILT = """
from ids_nerf.console import exit_on_interrupt


class HalfBuilt:  # as imageio's PillowPlugin: __del__ reads what __init__ had not set when Ctrl-C came
    def __init__(self):
        raise KeyboardInterrupt

    def __del__(self):
        self.images_to_write.clear()


def load():
    plugin = HalfBuilt.__new__(HalfBuilt)
    plugin.__init__()


with exit_on_interrupt("prog"):
    load()
"""


def test_an_object_left_half_built_by_the_interruption_prints_no_traceback_when_collected():
    """The CI failure of 2026-12-04: Ctrl-C inside a third-party constructor, whose finalizer then raised while the
    interpreter exited ('Exception ignored in ... Traceback') under the one line."""
    proc = subprocess.run([sys.executable, "-c", _HALF_BUILT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["prog: interrupted"], proc.stderr


def test_interrupts_pass_through_code_that_swallows_keyboard_interrupt(capsys):
    """nerfstudio's launch catches KeyboardInterrupt, prints a traceback and returns normally: inside
    interrupts_pass_through (the demo's reconstruction and edit) Ctrl-C still ends the command with 130."""
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def third_party() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises at the next bytecode; never reached
        except KeyboardInterrupt:
            print("swallowed")

    with pytest.raises(SystemExit) as exit_info, exit_on_interrupt("ids-nerf-demo"), interrupts_pass_through():
        third_party()
    assert exit_info.value.code == 130
    assert capsys.readouterr() == ("", "ids-nerf-demo: interrupted\n")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_identity_bench_interrupted_keeps_the_finished_methods_whole(tmp_path, tiny_prior_dir, monkeypatch):
    """Ctrl-C during the second method: exit 130, one line naming what was kept; edits.npz holds the first method
    (loadable, no temporary file next to it) and no results table was written."""
    from ids_nerf.bench import identity_suite

    real = identity_suite.edit_suite
    calls = {"n": 0}

    def interrupted_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(identity_suite, "edit_suite", interrupted_second)
    out = tmp_path / "b"
    argv = ["ids-bench-identity", "--out", str(out), "--prior.model", str(tiny_prior_dir), "--prior.device", "cpu"]
    argv += ["--methods", "dds", "ids", "--n-per-kind", "1", "--optim.steps", "1"]
    outcome = in_process(identity_suite.entrypoint, argv)
    assert outcome.code == 130 and "Traceback" not in outcome.err
    lines = [line for line in outcome.err.splitlines() if line.startswith("ids-bench-identity:")]
    assert lines == [
        f"ids-bench-identity: interrupted; the edits of dds are kept in {out}/edits.npz (score them with "
        "--reuse-edits --methods dds)"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["edits.npz", "results.partial.json"]
    assert set(np.load(out / "edits.npz").files) == {"source", "dds"}
    assert set(json.loads((out / "results.partial.json").read_text())["seconds_per_method"]) == {"dds"}


def test_identity_bench_interrupted_before_any_method_leaves_no_folder(tmp_path, tiny_prior_dir, monkeypatch):
    from ids_nerf.bench import identity_suite

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(identity_suite, "edit_suite", interrupt)
    argv = ["ids-bench-identity", "--out", str(tmp_path / "b"), "--prior.model", str(tiny_prior_dir)]
    argv += ["--prior.device", "cpu", "--n-per-kind", "1"]
    outcome = in_process(identity_suite.entrypoint, argv)
    assert outcome.code == 130
    assert "ids-bench-identity: interrupted before any method finished; nothing was written" in outcome.err
    assert not (tmp_path / "b").exists()


def test_staged_outputs_leave_nothing_unless_committed(tmp_path):
    from ids_nerf.atomic import StagedOutputs

    target = tmp_path / "a" / "b" / "x.png"
    with pytest.raises(KeyboardInterrupt), StagedOutputs() as staged:
        Image.new("RGB", (4, 4)).save(staged.path(target))  # the format follows the target's extension
        staged.path(tmp_path / "a" / "x.json").write_text("{}")
        raise KeyboardInterrupt
    assert not (tmp_path / "a").exists()  # temporary files and the folders made for them are gone
    (tmp_path / "keep").mkdir()
    with StagedOutputs() as staged:
        staged.path(tmp_path / "keep" / "y.json").write_text("1")
        staged.commit()
    assert [p.name for p in (tmp_path / "keep").iterdir()] == ["y.json"]

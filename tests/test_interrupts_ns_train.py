"""Ctrl-C / SIGTERM sent to a running `ns-train ids-edit` (a real signal to a real process): the step in progress
finishes and is saved, one line says where the edit stopped and the exact command that resumes it, exit code 130 /
143, no traceback; the printed command resumes and finishes the edit."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from refusals import subprocess_run

STEPS = 12


def _edit_command(run: dict, out: Path, name: str, data: Path | None = None) -> list[str]:
    g = run["edit"].pipeline.guidance
    command = [
        "ns-train",
        "ids-edit",
        "--load-dir",
        str(run["recon"].get_checkpoint_dir()),
        "--output-dir",
        str(out),
        "--experiment-name",
        "e",
        "--timestamp",
        name,
        "--max-num-iterations",
        str(STEPS),
        "--steps-per-save",
        "1000",
        "--vis",
        "tensorboard",
        "--machine.device-type",
        "cpu",
        "--pipeline.guidance.src-prompt",
        g.src_prompt,
        "--pipeline.guidance.trg-prompt",
        g.trg_prompt,
        "--pipeline.guidance.prior.model",
        str(run["prior"]),
        "--pipeline.render.resolution",
        "64",
        "--pipeline.log-every",
        "1",
    ]
    return command


def _start(argv: list[str]) -> subprocess.Popen:
    """The console script ``argv[0]`` of this environment, running in a child process (offline, one thread)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_edit_at_a_step_with_a_checkpoint_and_the_resume_command(
    toy_nerf_run, tmp_path, signum, code
):
    run_dir = tmp_path / "e" / "ids-edit" / "sig"
    argv = _edit_command(toy_nerf_run, tmp_path, "sig")
    proc = _start(argv)
    deadline = time.monotonic() + 300
    while len(list((run_dir / "edit_progress").glob("*.png"))) < 2:  # two steps done
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the edit did not start in time"
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("ns-train ids-edit: interrupted at step "), last
    done = int(last.split("interrupted at step ")[1].split()[0])
    assert 2 <= done < STEPS
    assert (run_dir / "nerfstudio_models" / f"step-{done - 1:09d}.ckpt").is_file()  # the last whole step
    assert (run_dir / "edit_state" / f"step-{done - 1:09d}.pt").is_file()  # with its random streams
    resume = shlex.split(last.split("resume with: ", 1)[1])
    assert resume[:4] == ["ns-train", "ids-edit", "--load-dir", str(run_dir / "nerfstudio_models")]
    assert "--machine.device-type" in resume and "--output-dir" in resume
    if signum == signal.SIGINT:  # the printed command finishes the edit
        resumed = subprocess_run([*resume, "--timestamp", "resumed", "--vis", "tensorboard"], timeout=600)
        assert resumed.code == 0, resumed.err[-3000:]
        assert (tmp_path / "e" / "ids-edit" / "resumed" / "nerfstudio_models" / f"step-{STEPS - 1:09d}.ckpt").is_file()


def test_a_signal_before_the_first_step_leaves_no_run_folder(toy_nerf_run, tmp_path):
    """Interrupted while the prior loads (before any step): exit 130, one line, and no run folder without a
    checkpoint to resume from."""
    argv = _edit_command(toy_nerf_run, tmp_path, "early")
    proc = _start(argv)
    run_dir = tmp_path / "e" / "ids-edit" / "early"
    deadline = time.monotonic() + 300
    while not (run_dir / "config.yml").is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "interrupted" in [line for line in err.splitlines() if line.strip()][-1]
    assert not any(run_dir.glob("nerfstudio_models/*.ckpt")) and not run_dir.exists()

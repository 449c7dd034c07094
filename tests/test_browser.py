"""nerfstudio's viewer on our runs, driven in headless Chromium the way a user uses it (Playwright + Debian's
chromium; optional set-up: ``bash scripts/setup_browser_test.sh``; skipped when either is missing).

- ``ns-viewer`` on a finished toy edit: the scene renders, depth is an output, the run's method and prompts are
  shown read-only, no live edit controls, and the before/after switch adds source_rgb / depth_change, selectable
  in the split screen.
- ``ns-train ids-edit`` with the viewer: the live controls and the editing status line (step N of M) appear.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # optional: scripts/setup_browser_test.sh
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or sync_playwright is None, reason="needs chromium + playwright"),
]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _served(args: list[str], port: int, cwd: Path, log: Path):
    """Run a viewer-serving command until its websocket port answers; stop it afterwards."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{args[0]} exited early:\n{log.read_text()[-3000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"{args[0]} never served port {port}:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def _page(port: int):
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://localhost:{port}")
        page.get_by_text("Resolution:").wait_for(timeout=60_000)
        try:
            yield page
        finally:
            browser.close()


def _wait(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _output_options(page, current: str = "rgb") -> list[str]:
    """Open the Output type dropdown and read its options (then close it)."""
    page.mouse.move(500, 450)  # a camera move makes the viewer render again (new outputs update the list)
    page.mouse.down()
    page.mouse.move(520, 460, steps=4)
    page.mouse.up()
    time.sleep(4)
    page.locator(f"input[value='{current}']").first.click()
    time.sleep(1)
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def test_ns_viewer_on_a_finished_edit(toy_nerf_run, tmp_path):
    port = _free_port()
    config = toy_nerf_run["edit"].get_base_dir() / "config.yml"
    args = [str(BIN / "ns-viewer"), "--load-config", str(config), "--viewer.websocket-port", str(port)]
    with _served(args, port, Path.cwd(), tmp_path / "viewer.log"), _page(port) as page:
        _wait(lambda: "0×0px" not in page.inner_text("body"), what="a first render (Resolution: WxH)")
        body = page.inner_text("body")
        assert "Before/after: source scene" in body and "Method" in body
        assert "Pause editing" not in body and "Guidance scale" not in body  # live controls only in a live edit
        disabled = page.locator("input[disabled]").evaluate_all("els => els.map(e => e.value)")
        assert "ids" in disabled and "a blue sphere on a checkered floor" in disabled
        options = _output_options(page)
        assert "depth" in options and "source_rgb" not in options  # the source scene is loaded only when asked for
        page.get_by_label("Before/after: source scene").check(force=True)
        _wait(
            lambda: (
                "source scene shown"
                in " ".join(page.locator("input[disabled]").evaluate_all("els => els.map(e => e.value)"))
            ),
            what="the source scene to load",
        )
        options = _output_options(page)
        assert {"source_rgb", "source_depth", "depth_change"} <= set(options), options
        page.get_by_text("Enable").first.click()  # Split Screen
        time.sleep(2)
        assert "Output render split" in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "ns-viewer.png"))


def test_live_edit_shows_controls_and_progress(toy_nerf_run, tmp_path):
    port = _free_port()
    recon = toy_nerf_run["recon"].get_checkpoint_dir()
    args = [
        str(BIN / "ns-train"), "ids-edit", "--data", str(toy_nerf_run["data"]), "--load-dir", str(recon),
        "--pipeline.guidance.src-prompt", "a red sphere on a checkered floor",
        "--pipeline.guidance.trg-prompt", "a blue sphere on a checkered floor",
        "--pipeline.guidance.prior.model", str(toy_nerf_run["prior"]), "--pipeline.render.resolution", "64",
        "--machine.device-type", "cpu", "--max-num-iterations", "2000", "--output-dir", str(tmp_path / "out"),
        "--viewer.websocket-port", str(port), "--vis", "viewer",
    ]  # fmt: skip
    with _served(args, port, tmp_path, tmp_path / "train.log"), _page(port) as page:
        body = page.inner_text("body")
        for label in ("Target prompt", "Guidance scale", "FPR (identity preservation)", "Pause editing", "Editing"):
            assert label in body, label
        _wait(
            lambda: any(
                "of 2000" in v for v in page.locator("input[disabled]").evaluate_all("els => els.map(e => e.value)")
            ),
            timeout=180,
            what="the editing status line",
        )
        status = [
            v for v in page.locator("input[disabled]").evaluate_all("els => els.map(e => e.value)") if "of 2000" in v
        ]
        assert status and status[0].startswith("step ") and "left)" in status[0]
        prompt = page.locator("input[value='a blue sphere on a checkered floor']")
        assert prompt.count() == 1 and prompt.is_enabled()  # editable while the edit runs
        page.screenshot(path=str(tmp_path / "live-edit.png"))

"""Bad image inputs and output locations, refused cleanly by ids-edit-image (issue 20, classes 5 and 6).

One table: how the case is set up, the flags given, and the flag(s) the message must name. Each case runs
``ids-edit-image`` in this process (:mod:`tests.refusals`) and must exit with code 2, without a traceback, naming the
flag, before any model loads, and must write, create or change nothing: the whole working folder (input image,
outputs, links) is snapshot before and after. Output locations are checked in ``validate``; an image whose pixel
mode cannot be read faithfully is refused when it is opened, which is also before the prior loads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from refusals import assert_refused, in_process, snapshot  # noqa: E402
from test_image_io import read_only  # noqa: E402


def _link(name: str, to: str) -> Callable[[Path], None]:
    return lambda root: (root / name).symlink_to(root / to)


def _hard_link(name: str, to: str) -> Callable[[Path], None]:
    return lambda root: os.link(root / to, root / name)


def _file(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text("not a folder")


def _folder(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir()


def _image(name: str, array: np.ndarray, mode: str) -> Callable[[Path], None]:
    return lambda root: Image.fromarray(array, mode).save(root / name)


# (case id, setup of the working folder, flags after the base command, names the message must contain,
#  a folder made read-only while the command runs)
CASES: list[tuple[str, Callable[[Path], None] | None, list[str], list[str], str | None]] = [
    ("out is the image", None, ["--out", "in.png", "--overwrite"], ["--out", "--image", "in.png"], None),
    ("out is the image, absolute", None, ["--out", "{root}/in.png", "--overwrite"], ["--out", "input image"], None),
    ("out is the image via ..", _folder("sub"), ["--out", "sub/../in.png", "--overwrite"], ["--out", "--image"], None),
    ("out is a link to the image", _link("l.png", "in.png"), ["--out", "l.png", "--overwrite"], ["--out"], None),
    ("out is a hard link", _hard_link("h.png", "in.png"), ["--out", "h.png", "--overwrite"], ["--out"], None),
    (
        "image via a link is out",
        _link("l.png", "in.png"),
        ["--image", "l.png", "--out", "in.png", "--overwrite"],
        ["--out", "l.png"],
        None,
    ),  # fmt: skip
    ("trajectory is the image", None, ["--save-trajectory", "in.png", "--overwrite"], ["--save-trajectory"], None),
    ("trajectory is out", None, ["--save-trajectory", "out/edit.png"], ["--out", "--save-trajectory"], None),
    ("out under a file", _file("f.txt"), ["--out", "f.txt/edit.png"], ["--out", "f.txt"], None),
    ("out two levels under a file", _file("f.txt"), ["--out", "f.txt/a/b.png"], ["--out", "not a folder"], None),
    ("out in a read-only folder", _folder("ro"), ["--out", "ro/edit.png"], ["--out", "ro"], "ro"),
    ("out below a read-only folder", _folder("ro"), ["--out", "ro/new/edit.png"], ["--out"], "ro"),
    ("out in /proc", None, ["--out", "/proc/ids-edit.png"], ["--out", "/proc"], None),
    ("sidecar is a folder", _folder("edit.json"), ["--out", "edit.png"], ["--out", "edit.json", "folder"], None),
    ("trajectory under a file", _file("f.txt"), ["--save-trajectory", "f.txt/t.gif"], ["--save-trajectory"], None),
    ("trajectory read-only", _folder("ro"), ["--save-trajectory", "ro/t.gif"], ["--save-trajectory", "ro"], "ro"),
    ("cache dir is a file", _file("c"), ["--cache-dir", "c"], ["--cache-dir", "not a folder"], None),
    ("cache dir under a file", _file("f.txt"), ["--cache-dir", "f.txt/cache"], ["--cache-dir", "f.txt"], None),
    ("cache dir read-only", _folder("ro"), ["--cache-dir", "ro"], ["--cache-dir", "ro"], "ro"),
    ("cache dir below read-only", _folder("ro"), ["--cache-dir", "ro/cache"], ["--cache-dir"], "ro"),
    (
        "image: 32-bit ints out of 16-bit range",
        _image("i.tif", np.array([[0, 70000]], dtype=np.int32), "I"),
        ["--image", "i.tif"],
        ["--image", "i.tif", "mode I", "Convert it"],
        None,
    ),  # fmt: skip
    (
        "image: floats 0-255",
        _image("f.tif", np.array([[0, 255]], dtype=np.float32), "F"),
        ["--image", "f.tif"],
        ["--image", "f.tif", "mode F", "0 to 255"],
        None,
    ),  # fmt: skip
    (
        "image: float NaN",
        _image("n.tif", np.array([[0.5, np.nan]], dtype=np.float32), "F"),
        ["--image", "n.tif"],
        ["--image", "mode F", "NaN"],
        None,
    ),  # fmt: skip
]


@pytest.fixture
def root(tmp_path: Path, monkeypatch) -> Path:
    """The working folder: in.png, the user's cwd."""
    Image.new("RGB", (48, 32), (200, 30, 30)).save(tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("case", "setup", "extra", "names", "locked"), CASES, ids=[c[0] for c in CASES])
def test_bad_image_or_output_location_is_refused_before_anything_loads(
    root, tiny_prior_dir, case, setup, extra, names, locked
):
    from ids_nerf.image.cli import entrypoint

    if setup is not None:
        setup(root)
    extra = [a.replace("{root}", str(root)) for a in extra]
    argv = ["ids-edit-image", "--image", "in.png", "--src-prompt", "a red sphere", "--trg-prompt", "a blue sphere"]
    argv += ["--out", "out/edit.png", "--prior.model", str(tiny_prior_dir), "--no-progress", *extra]
    prior_files = snapshot(tiny_prior_dir)
    with read_only(root / locked) if locked else nullcontext():
        before = snapshot(root)
        outcome = in_process(entrypoint, argv)
        after = snapshot(root)
    assert_refused(outcome, names, before, after)
    assert len(outcome.err.strip().splitlines()) == 1 and outcome.err.startswith("ids-edit-image: error: ")
    assert snapshot(tiny_prior_dir) == prior_files
    assert not list(root.rglob(".ids-write-check-*"))  # the writability probe leaves nothing


def test_the_same_cases_work_with_a_good_location(root, tiny_prior_dir):
    """Control: the base command with a fresh --out in a folder to create runs (1 step) and writes the pair."""
    from ids_nerf.image.cli import entrypoint

    argv = ["ids-edit-image", "--image", "in.png", "--src-prompt", "a red sphere", "--trg-prompt", "a blue sphere"]
    argv += ["--out", "new/edit.png", "--prior.model", str(tiny_prior_dir), "--no-progress", "--optim.steps", "1"]
    argv += ["--save-trajectory", "new/t.gif", "--cache-dir", "new/cache"]
    outcome = in_process(entrypoint, argv)
    assert outcome.code == 0, outcome.err
    assert (root / "new" / "edit.png").is_file() and (root / "new" / "edit.json").is_file()
    assert (root / "new" / "t.gif").is_file() and Image.open(root / "in.png").getpixel((0, 0)) == (200, 30, 30)

"""Bad scene data, damaged checkpoints and badly typed presets, refused cleanly by every entry point that reads them
(issue 20, classes 2, 3 and 7).

Each case runs the entry point in this process (:mod:`tests.refusals`) as a user types it and must exit with code 2,
without a traceback, naming the flag and the file at fault, and must write, create or change nothing (the output
folder and every input are snapshot before and after):

* ``ns-train ids-recon --data <bad data>``: every fault that
  :func:`ids_nerf.nerf.dataparsers.validate.validate_scene_data` finds (invalid JSON, missing images, no frames, a
  wrong poses_bounds.npy, fewer images than poses, an empty folder, ...);
* ``ns-train ids-edit --load-dir <folder with a truncated checkpoint>``;
* ``ids-eval render`` of a run with a truncated or damaged checkpoint, of a copied run folder (its own checkpoint is
  the one checked), of runs whose data vanished or broke;
* ``ids-batch --presets`` and ``ns-train ids-edit --pipeline.guidance.preset`` with badly typed presets, or presets
  whose scene data is broken.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from refusals import Outcome, assert_refused, in_process, snapshot  # noqa: E402

from ids_nerf.errors import UserInputError  # noqa: E402

# ------------------------------------------------------------------------------------------------ small datasets


def _png(path: Path, size: tuple[int, int] = (8, 8), value: int = 100, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 4 if mode == "RGBA" else 3
    Image.fromarray(np.full((size[1], size[0], channels), value, dtype=np.uint8), mode).save(path)


def _pose(i: int) -> list[list[float]]:
    angle = 0.5 * i
    c2w = np.eye(4)
    c2w[:3, 3] = [3.0 * np.cos(angle), 3.0 * np.sin(angle), 1.0]
    return c2w.tolist()


def write_blender(root: Path) -> Path:
    """transforms_{train,val,test}.json (3, 1, 1 frames) + 8x8 RGBA PNGs."""
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        frames = []
        for i in range(n):
            _png(root / split / f"r_{i}.png", mode="RGBA")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": _pose(i)})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    return root


def write_nerfstudio(root: Path, n: int = 4) -> Path:
    """transforms.json with shared intrinsics + images/."""
    frames = []
    for i in range(n):
        _png(root / "images" / f"frame_{i:05d}.png", (16, 12))
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": _pose(i)})
    meta = {"fl_x": 14.0, "fl_y": 14.0, "cx": 8.0, "cy": 6.0, "w": 16, "h": 12, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def write_llff(root: Path, n: int = 4) -> Path:
    """poses_bounds.npy (n, 17) + images/ at the poses' size (16x12)."""
    rows = []
    for i in range(n):
        pose = np.concatenate([np.eye(3), [[0.1 * i], [0.0], [0.0]], [[12.0], [16.0], [14.0]]], axis=1)
        rows.append(np.concatenate([pose.ravel(), [2.0, 8.0]]))
        _png(root / "images" / f"IMG_{i:04d}.png", (16, 12))
    np.save(root / "poses_bounds.npy", np.stack(rows))
    return root


def _edit_json(file: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(file.read_text())
    change(meta)
    file.write_text(json.dumps(meta))


def _first_frame(key: str, value: object = None) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        if value is None:
            del meta["frames"][0][key]
        else:
            meta["frames"][0][key] = value

    return change


# (id, writer, fault applied to the folder, names the message must contain besides --data and the folder)
DATA_CASES: list[tuple[str, Callable[[Path], Path], Callable[[Path], None], list[str]]] = [
    (
        "blender-invalid-json",
        write_blender,
        lambda d: (d / "transforms_train.json").write_text('{"camera_angle_x": 0.69, "frames": [}'),
        ["transforms_train.json", "not valid JSON", "line 1"],
    ),
    (
        "blender-image-missing",
        write_blender,
        lambda d: (d / "train" / "r_1.png").unlink(),
        ["transforms_train.json", "r_1.png", "does not exist"],
    ),
    (
        "blender-file-path-with-extension",
        write_blender,
        lambda d: _edit_json(d / "transforms_train.json", _first_frame("file_path", "./train/r_0.png")),
        ["r_0.png.png", "no extension"],
    ),
    (
        "blender-no-frames",
        write_blender,
        lambda d: _edit_json(d / "transforms_train.json", lambda m: m.update(frames=[])),
        ["transforms_train.json", "no frames"],
    ),
    (
        "blender-no-transform-matrix",
        write_blender,
        lambda d: _edit_json(d / "transforms_train.json", _first_frame("transform_matrix")),
        ["transforms_train.json", "frames[0]", "transform_matrix"],
    ),
    (
        "blender-no-camera-angle",
        write_blender,
        lambda d: _edit_json(d / "transforms_train.json", lambda m: m.pop("camera_angle_x")),
        ["transforms_train.json", "camera_angle_x"],
    ),
    (
        "blender-val-split-missing",
        write_blender,
        lambda d: (d / "transforms_val.json").unlink(),
        ["transforms_val.json", "missing", "val split"],
    ),
    (
        "blender-image-not-an-image",
        write_blender,
        lambda d: (d / "train" / "r_2.png").write_bytes(b""),
        ["r_2.png", "cannot be read as images"],
    ),
    (
        "nerfstudio-without-frames",
        write_nerfstudio,
        lambda d: _edit_json(d / "transforms.json", lambda m: m.pop("frames")),
        ["transforms.json", 'no "frames" list'],
    ),
    (
        "nerfstudio-no-intrinsics",
        write_nerfstudio,
        lambda d: _edit_json(d / "transforms.json", lambda m: m.pop("fl_x")),
        ["transforms.json", '"fl_x"', "frames[0]"],
    ),
    (
        "nerfstudio-image-missing",
        write_nerfstudio,
        lambda d: (d / "images" / "frame_00003.png").unlink(),
        ["transforms.json", "frame_00003.png", "does not exist"],
    ),
    (
        "nerfstudio-not-an-object",
        write_nerfstudio,
        lambda d: (d / "transforms.json").write_text("[1, 2]"),
        ["transforms.json", "JSON object"],
    ),
    (
        "llff-poses-wrong-shape",
        write_llff,
        lambda d: np.save(d / "poses_bounds.npy", np.zeros((4, 15))),
        ["poses_bounds.npy", "(N, 17)", "(4, 15)"],
    ),
    (
        "llff-fewer-images-than-poses",
        write_llff,
        lambda d: (d / "images" / "IMG_0003.png").unlink(),
        ["poses_bounds.npy", "holds 3 images", "4 poses"],
    ),
    (
        "llff-poses-not-npy",
        write_llff,
        lambda d: (d / "poses_bounds.npy").write_text("not numpy"),
        ["poses_bounds.npy", "Cannot read"],
    ),
    (
        "llff-bad-bounds",
        write_llff,
        lambda d: np.save(d / "poses_bounds.npy", np.load(d / "poses_bounds.npy") * np.r_[np.ones(15), -1, 1]),
        ["poses_bounds.npy", "0 < near < far"],
    ),
    (
        "llff-no-image-folder",
        write_llff,
        lambda d: shutil.rmtree(d / "images"),
        ["images", "does not exist"],
    ),
    (
        "empty-folder",
        lambda d: (d.mkdir(parents=True), d)[1],
        lambda d: None,
        ["it is empty"],
    ),
    (
        "missing-folder",
        lambda d: d,
        lambda d: None,
        ["does not exist"],
    ),
]


RECON_ARGS = ["--vis", "tensorboard", "--machine.device-type", "cpu", "--max-num-iterations", "1"]
"""Were a case not refused, it would end after one step (on the CPU) instead of 30,000."""


def _ns_train(argv: list[str]) -> Outcome:
    from nerfstudio.scripts.train import entrypoint

    return in_process(entrypoint, ["ns-train", *argv])


@pytest.mark.parametrize(("writer", "fault", "names"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_ns_train_ids_recon_refuses_bad_data(tmp_path, writer, fault, names):
    data = writer(tmp_path / "scene")
    fault(data)
    out = tmp_path / "outputs"
    before = snapshot(out, tmp_path / "scene")
    outcome = _ns_train(["ids-recon", "--data", str(data), "--output-dir", str(out), *RECON_ARGS])
    assert_refused(outcome, ["ns-train ids-recon: error:", "--data", str(data), *names], before, snapshot(out, data))


def test_ns_train_ids_recon_without_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the auto dataparser's default folder is "."
    before = snapshot(tmp_path)
    outcome = _ns_train(["ids-recon", "--output-dir", str(tmp_path / "outputs"), *RECON_ARGS])
    assert_refused(outcome, ["--data", "needs a scene"], before, snapshot(tmp_path))


@pytest.mark.parametrize(
    ("writer", "fault", "names"), [DATA_CASES[0][1:], DATA_CASES[1][1:]], ids=[DATA_CASES[0][0], DATA_CASES[1][0]]
)
def test_ns_train_ids_edit_refuses_bad_data(tmp_path, tiny_prior_dir, writer, fault, names):
    data = writer(tmp_path / "scene")
    fault(data)
    out = tmp_path / "outputs"
    before = snapshot(out, data)
    prompts = ["--pipeline.guidance.src-prompt", "a red sphere", "--pipeline.guidance.trg-prompt", "a blue sphere"]
    prior = ["--pipeline.guidance.prior.model", str(tiny_prior_dir), "--recon-steps", "1"]
    outcome = _ns_train(["ids-edit", "--data", str(data), "--output-dir", str(out), *prompts, *prior, *RECON_ARGS])
    assert_refused(outcome, ["ns-train ids-edit: error:", "--data", str(data), *names], before, snapshot(out, data))


def test_valid_data_passes(tmp_path):
    from ids_nerf.nerf.dataparsers.validate import SPLITS_EVAL, validate_scene_data

    assert validate_scene_data(write_blender(tmp_path / "b"), splits=SPLITS_EVAL) == "blender"
    assert validate_scene_data(write_nerfstudio(tmp_path / "n")) == "nerfstudio"
    assert validate_scene_data(write_llff(tmp_path / "l")) == "llff"


# -------------------------------------------------------------------------------------------------- checkpoints


def _copy_run(run: Path, dest: Path) -> Path:
    """A copy of a run folder without its evaluations; returns the copy's config.yml."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval-*", "events.out.*"))
    return dest / "config.yml"


def _checkpoint(run_config: Path) -> Path:
    return sorted((run_config.parent / "nerfstudio_models").glob("step-*.ckpt"))[-1]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_load_checkpoint_refuses_a_truncated_or_damaged_real_checkpoint(toy_nerf_run, tmp_path):
    from ids_nerf.nerf.checkpoints import check_checkpoint, load_checkpoint

    real = _checkpoint(toy_nerf_run["source_run"] / "config.yml")
    state = load_checkpoint(real, "--load-dir x")
    assert {"step", "pipeline"} <= set(state) and check_checkpoint(real) == real
    for damage, expected in ((_truncate, "truncated"), (_flip_a_byte, "fails its checksum")):
        bad = tmp_path / damage.__name__ / real.name
        bad.parent.mkdir()
        shutil.copy(real, bad)
        damage(bad)
        with pytest.raises(UserInputError, match=expected) as err:
            load_checkpoint(bad, f"--load-dir {bad.parent}")
        assert str(err.value).startswith(f"--load-dir {bad.parent}: checkpoint {bad} ")
    with pytest.raises(UserInputError, match="does not exist"):
        load_checkpoint(tmp_path / "none.ckpt")
    not_ckpt = tmp_path / "step-000000001.ckpt"
    not_ckpt.write_text("hello")
    with pytest.raises(UserInputError, match="not a PyTorch checkpoint"):
        load_checkpoint(not_ckpt)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(UserInputError, match="not a nerfstudio checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_ns_train_ids_edit_refuses_a_truncated_load_dir(toy_nerf_run, tiny_prior_dir, tmp_path):
    config = _copy_run(toy_nerf_run["source_run"], tmp_path / "recon")
    _truncate(_checkpoint(config))
    load_dir, out = config.parent / "nerfstudio_models", tmp_path / "outputs"
    before = snapshot(out, config.parent, toy_nerf_run["data"])
    outcome = _ns_train(
        [
            "ids-edit",
            "--load-dir",
            str(load_dir),
            "--data",
            str(toy_nerf_run["data"]),
            "--output-dir",
            str(out),
            "--pipeline.guidance.src-prompt",
            "a red sphere",
            "--pipeline.guidance.trg-prompt",
            "a blue sphere",
            "--pipeline.guidance.prior.model",
            str(tiny_prior_dir),
            "--machine.device-type",
            "cpu",
            "--vis",
            "tensorboard",
        ]
    )
    names = ["--load-dir", str(_checkpoint(config)), "truncated"]
    assert_refused(outcome, names, before, snapshot(out, config.parent, toy_nerf_run["data"]))


# ------------------------------------------------------------------------------------------------------ ids-eval

EVAL_ARGS = ["--src-prompt", "a red sphere", "--trg-prompt", "a blue sphere", "--random-weights"]


def _ids_eval(argv: list[str]) -> Outcome:
    from ids_nerf.eval.cli import entrypoint

    return in_process(entrypoint, ["ids-eval", "render", *argv, *EVAL_ARGS])


def _with_data(config_yml: Path, data: Path) -> None:
    """Point a copied run's config.yml at another data folder (as if its data had moved)."""
    config = yaml.load(config_yml.read_text(), Loader=yaml.Loader)
    config.data = config.pipeline.datamanager.data = data
    config_yml.write_text(yaml.dump(config))


def _eval_case_truncated(run: dict, tmp: Path) -> tuple[list[str], list[str], list[Path]]:
    edit = _copy_run(run["edit"].get_base_dir(), tmp / "runs" / "toy" / "ids-edit" / "copy")
    _truncate(_checkpoint(edit))
    return ["--load-config", str(edit)], ["--load-config", str(_checkpoint(edit)), "truncated"], [edit.parent]


def _eval_case_damaged_copy(run: dict, tmp: Path) -> tuple[list[str], list[str], list[Path]]:
    """A run folder copied to a flat folder: its own (damaged) checkpoint is checked, not the original's."""
    edit = _copy_run(run["edit"].get_base_dir(), tmp / "copied-edit")
    _flip_a_byte(_checkpoint(edit))
    return ["--load-config", str(edit)], [str(_checkpoint(edit)), "fails its checksum"], [edit.parent]


def _eval_case_copy_without_checkpoints(run: dict, tmp: Path) -> tuple[list[str], list[str], list[Path]]:
    """Only config.yml copied: the original's checkpoints (which it records) are not silently scored."""
    (tmp / "lone").mkdir()
    edit = tmp / "lone" / "config.yml"
    shutil.copy(run["edit"].get_base_dir() / "config.yml", edit)
    return ["--load-config", str(edit)], ["no checkpoint", str(tmp / "lone" / "nerfstudio_models")], [edit.parent]


def _eval_case_source_data_vanished(run: dict, tmp: Path) -> tuple[list[str], list[str], list[Path]]:
    source = _copy_run(run["source_run"], tmp / "recon")
    _with_data(source, tmp / "moved-away")
    args = ["--load-config", str(run["edit"].get_base_dir() / "config.yml"), "--source-config", str(source)]
    return args, ["--source-config", str(source), str(tmp / "moved-away"), "not found", "--data"], [source.parent]


def _eval_case_broken_data(run: dict, tmp: Path) -> tuple[list[str], list[str], list[Path]]:
    data = tmp / "data"
    shutil.copytree(run["data"], data)
    (data / "transforms_test.json").write_text("{")
    args = ["--load-config", str(run["edit"].get_base_dir() / "config.yml"), "--data", str(data)]
    return args, ["--data", str(data / "transforms_test.json"), "not valid JSON"], [data]


def _eval_case_run_data_broken(run: dict, tmp: Path) -> tuple[list[str], list[str], list[Path]]:
    data = tmp / "data"
    shutil.copytree(run["data"], data)
    (data / "test" / "r_1.png").unlink()
    edit = _copy_run(run["edit"].get_base_dir(), tmp / "edit")
    _with_data(edit, data)
    return ["--load-config", str(edit)], ["--load-config", str(edit), "r_1.png", "does not exist"], [data, edit.parent]


EVAL_CASES = [
    _eval_case_truncated,
    _eval_case_damaged_copy,
    _eval_case_copy_without_checkpoints,
    _eval_case_source_data_vanished,
    _eval_case_broken_data,
    _eval_case_run_data_broken,
]


@pytest.mark.parametrize("case", EVAL_CASES, ids=[c.__name__.removeprefix("_eval_case_") for c in EVAL_CASES])
def test_ids_eval_render_refuses(toy_nerf_run, tmp_path, case):
    args, names, inputs = case(toy_nerf_run, tmp_path)
    out = tmp_path / "eval-out"
    watched = [out, *inputs, toy_nerf_run["edit"].get_base_dir(), toy_nerf_run["source_run"]]
    before = snapshot(*watched)
    outcome = _ids_eval([*args, "--output-dir", str(out)])
    assert_refused(outcome, ["ids-eval: error:", *names], before, snapshot(*watched))


# -------------------------------------------------------------------------------------------------------- presets

GOOD_PRESET = {"scene": "toy/sphere", "src_prompt": "a red sphere", "trg_prompt": "a blue sphere"}

# (id, preset changes, names the message must contain besides the flag and the file)
PRESET_CASES: list[tuple[str, dict, list[str]]] = [
    ("guidance-scale-text", {"guidance": {"guidance_scale": "very high"}}, ["guidance.guidance_scale", "very high"]),
    ("guidance-a-number", {"guidance": 5}, ["guidance must be a mapping", "guidance_scale"]),
    ("guidance-bool", {"guidance": {"loss_scale": True}}, ["guidance.loss_scale", "finite number"]),
    ("guidance-nan", {"guidance": {"anchor_weight": float("nan")}}, ["guidance.anchor_weight", "finite number"]),
    ("prompt-a-number", {"src_prompt": 5}, ["src_prompt must be text"]),
    ("prompt-a-list", {"trg_prompt": ["a", "b"]}, ["trg_prompt must be text"]),
    ("scene-absolute", {"scene": "/data/toy/sphere"}, ["scene must be a folder relative"]),
    ("scene-a-number", {"scene": 3}, ["scene must be text"]),
    ("reference-a-mapping", {"reference": {"paper": "IDS"}}, ["reference must be text"]),
]


def _write_preset(path: Path, changes: dict) -> Path:
    path.write_text(yaml.safe_dump({**GOOD_PRESET, **changes}, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def preset_root(tmp_path_factory) -> Path:
    """A data root holding a valid toy/sphere scene (so that only the preset itself is at fault)."""
    root = tmp_path_factory.mktemp("preset-data")
    write_blender(root / "toy" / "sphere")
    return root


def _ids_batch(argv: list[str]) -> Outcome:
    from ids_nerf.batch import entrypoint

    return in_process(entrypoint, ["ids-batch", *argv])


@pytest.mark.parametrize(("changes", "names"), [c[1:] for c in PRESET_CASES], ids=[c[0] for c in PRESET_CASES])
def test_ids_batch_refuses_badly_typed_presets(tmp_path, preset_root, changes, names):
    preset = _write_preset(tmp_path / "bad.yaml", changes)
    out = tmp_path / "outputs"
    before = snapshot(out, preset, preset_root)
    outcome = _ids_batch(["--presets", str(preset), "--data-root", str(preset_root), "--output-dir", str(out)])
    assert_refused(
        outcome, ["ids-batch: error:", f"--presets {preset}", *names], before, snapshot(out, preset, preset_root)
    )


@pytest.mark.parametrize(("changes", "names"), [c[1:] for c in PRESET_CASES[:3]], ids=[c[0] for c in PRESET_CASES[:3]])
def test_ns_train_refuses_badly_typed_presets(tmp_path, preset_root, changes, names):
    preset = _write_preset(tmp_path / "bad.yaml", changes)
    out = tmp_path / "outputs"
    before = snapshot(out, preset, preset_root)
    argv = ["ids-edit", "--pipeline.guidance.preset", str(preset), "--output-dir", str(out), "--vis", "tensorboard"]
    outcome = _ns_train([*argv, "--pipeline.guidance.preset-data-root", str(preset_root)])
    flag = f"--pipeline.guidance.preset {preset}"
    assert_refused(outcome, ["ns-train ids-edit: error:", flag, *names], before, snapshot(out, preset, preset_root))


def test_presets_with_broken_scene_data_are_refused(tmp_path):
    """ids-batch and ns-train --pipeline.guidance.preset both check the preset's scene folder before anything runs,
    naming the preset, the file at fault and the data-root flag."""
    root = tmp_path / "data"
    scene = write_blender(root / "toy" / "sphere")
    (scene / "transforms_train.json").write_text("not json")
    preset = _write_preset(tmp_path / "sphere.yaml", {})
    out = tmp_path / "outputs"
    before = snapshot(out, preset, root)
    outcome = _ids_batch(["--presets", str(preset), "--data-root", str(root), "--output-dir", str(out)])
    names = [f"--presets {preset}", str(scene / "transforms_train.json"), "not valid JSON", "--data-root"]
    assert_refused(outcome, names, before, snapshot(out, preset, root))
    argv = ["ids-edit", "--pipeline.guidance.preset", str(preset), "--output-dir", str(out), "--vis", "tensorboard"]
    outcome = _ns_train([*argv, "--pipeline.guidance.preset-data-root", str(root)])
    names = [f"--pipeline.guidance.preset {preset}", "transforms_train.json", "--pipeline.guidance.preset-data-root"]
    assert_refused(outcome, names, before, snapshot(out, preset, root))

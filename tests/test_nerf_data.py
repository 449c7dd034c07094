"""nerfstudio glue: the LLFF dataparser, format auto-detection, and the torch >= 2.6 checkpoint loading fix."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from PIL import Image

from ids_nerf.errors import UserInputError
from ids_nerf.nerf.dataparsers import (
    AutoDataParser,
    AutoDataParserConfig,
    LLFFDataParserConfig,
    auto_dataparser,
    detect_data_format,
    llff_dataparser,
)

REPO = Path(__file__).resolve().parents[1]
H, W, FOCAL = 48, 64, 55.0  # full resolution of the generated LLFF scenes
N_VIEWS = 11


# ----------------------------------------------------------------------------------------------- data writers


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (4, 4): the camera looks down -z at ``target``, +y towards ``up``."""
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    c2w[:3, 3] = eye
    return c2w


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _forward_facing_cameras(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Jittered forward-facing cameras in an arbitrarily rotated and shifted world (as COLMAP's), and bounds."""
    rng = np.random.default_rng(seed)
    world_r, world_t, world_s = _random_rotation(rng), rng.normal(size=3) * 3.0, 7.3
    c2w = []
    for i in range(N_VIEWS):
        eye = np.array([(i % 4) * 0.3 - 0.45, 0.0, (i // 4) * 0.25 - 0.25]) + rng.normal(size=3) * 0.03
        target = np.array([0.0, 4.0, 0.0]) + rng.normal(size=3) * 0.1
        local = _look_at(eye, target, np.array([0.0, 0.0, 1.0]))
        world = np.eye(4)
        world[:3, :3] = world_r @ local[:3, :3]
        world[:3, 3] = world_s * (world_r @ local[:3, 3]) + world_t
        c2w.append(world)
    bounds = np.stack([rng.uniform(2.5, 3.0, N_VIEWS), rng.uniform(8.0, 10.0, N_VIEWS)], axis=1) * world_s
    return np.stack(c2w), bounds


def _write_image(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 4 if mode == "RGBA" else 3
    Image.fromarray(np.full((size[1], size[0], channels), value, dtype=np.uint8), mode).save(path)


def write_llff(root: Path, c2w: np.ndarray, bounds: np.ndarray, factors: tuple[int, ...] = (4,)) -> Path:
    """An LLFF folder: poses_bounds.npy ([down, right, backwards] columns) + images/ and images_{k}/."""
    rows = []
    for pose, bound in zip(c2w, bounds, strict=True):
        r = pose[:3, :3]
        r_llff = np.stack([-r[:, 1], r[:, 0], r[:, 2]], axis=1)  # [down, right, backwards]
        p = np.concatenate([r_llff, pose[:3, 3:4], np.array([[H], [W], [FOCAL]])], axis=1)
        rows.append(np.concatenate([p.ravel(), bound]))
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", np.stack(rows))
    for i in range(len(c2w)):
        _write_image(root / "images" / f"IMG_{i:04d}.JPG", (W, H), 10 * i)
        for k in factors:
            _write_image(root / f"images_{k}" / f"IMG_{i:04d}.png", (W // k, H // k), 10 * i)
    return root


def write_blender(root: Path, size: int = 8, angle: float = 0.69) -> Path:
    """A tiny NeRF-synthetic set: transforms_{train,val,test}.json + RGBA PNGs (3, 2, 2 frames)."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        frames = []
        for i in range(n):
            eye = rng.normal(size=3)
            eye = 4.0 * eye / np.linalg.norm(eye)
            c2w = _look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]))
            _write_image(root / split / f"r_{i}.png", (size, size), 40 * i, "RGBA")
            frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0, "transform_matrix": c2w.tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return root


def write_nerfstudio(root: Path, n: int = 10) -> Path:
    """A tiny nerfstudio-data folder: transforms.json with shared intrinsics + images/."""
    c2w, _ = _forward_facing_cameras(seed=3)
    frames = []
    for i in range(n):
        _write_image(root / "images" / f"frame_{i:05d}.png", (16, 12), 20 * i)
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": c2w[i % len(c2w)].tolist()})
    meta = {"fl_x": 14.0, "fl_y": 14.0, "cx": 8.0, "cy": 6.0, "w": 16, "h": 12, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def llff_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(folder, generating OpenGL camera-to-world matrices, bounds) of a generated LLFF scene."""
    c2w, bounds = _forward_facing_cameras()
    return write_llff(tmp_path_factory.mktemp("llff") / "scene", c2w, bounds), c2w, bounds


def _parse(data: Path, split: str = "train", **options: object):
    return LLFFDataParserConfig(data=data, **options).setup().get_dataparser_outputs(split)


# ----------------------------------------------------------------------------------------------- LLFF


@pytest.mark.parametrize("orientation", ["average", "up", "none"])
@pytest.mark.parametrize("center", ["content", "poses", "none"])
def test_llff_poses_round_trip_to_original_opengl_poses(llff_scene, orientation: str, center: str) -> None:
    data, c2w, _ = llff_scene
    for split in ("train", "val"):
        out = _parse(data, split, downscale_factor=1, orientation_method=orientation, center_method=center)
        idx = [int(p.stem.split("_")[1]) for p in out.image_filenames]
        poses = out.cameras.camera_to_worlds.double()
        transform, scale = out.dataparser_transform.double(), out.dataparser_scale
        # undo by hand: x_ns = scale * (R x + t)  =>  x = R^T (x_ns / scale - t)
        centres = (poses[:, :, 3] / scale - transform[:, 3]) @ transform[:, :3]
        np.testing.assert_allclose(centres.numpy(), c2w[idx, :3, 3], atol=1e-4)
        # and through nerfstudio's helper (what ns-export and friends use)
        back = out.transform_poses_to_original_space(out.cameras.camera_to_worlds, camera_convention="opengl")
        np.testing.assert_allclose(back.double().numpy(), c2w[idx, :3, :4], atol=1e-4)


def test_llff_normalisation_is_forward_facing_in_nerfstudio_axes(llff_scene) -> None:
    data, c2w, bounds = llff_scene
    out = _parse(data, downscale_factor=1, eval_interval=0)
    poses = out.cameras.camera_to_worlds.double()
    # bd_factor: the nearest bound is 1 / 0.75 after scaling
    assert out.dataparser_scale == pytest.approx(1.0 / (bounds[:, 0].min() * 0.75))
    near_far = out.metadata["near_far"]
    assert float(near_far[:, 0].min()) == pytest.approx(1.0 / 0.75, rel=1e-5)
    # average camera: up -> +z, viewing direction (-z camera axis) -> +y
    up = poses[:, :, 1].mean(0)
    view = -poses[:, :, 2].mean(0)
    assert float(up[2]) > 0.99 * float(up.norm()) and float(view[1]) > 0.99 * float(view.norm())
    # content centring: the cameras sit on the -y side, the disparity midpoint of the bounds at the origin
    depth = 2.0 / (1.0 / bounds[:, 0].mean() + 1.0 / bounds[:, 1].mean()) * out.dataparser_scale
    np.testing.assert_allclose(poses[:, :, 3].mean(0).numpy(), [0.0, -depth, 0.0], atol=1e-4)
    # NeRF's recentring: the mean camera centre at the origin
    recentred = _parse(data, downscale_factor=1, eval_interval=0, center_method="poses")
    np.testing.assert_allclose(recentred.cameras.camera_to_worlds[:, :, 3].mean(0).numpy(), 0.0, atol=1e-5)
    assert torch.equal(out.scene_box.aabb, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    assert torch.all(out.cameras.camera_type == CameraType.PERSPECTIVE.value)


def test_llff_downscale_factor_scales_focal_and_size(llff_scene) -> None:
    data, _, _ = llff_scene
    full = _parse(data, downscale_factor=1)
    quarter = _parse(data, downscale_factor=4)
    assert {p.parent.name for p in full.image_filenames} == {"images"}
    assert {p.parent.name for p in quarter.image_filenames} == {"images_4"}
    for out, k in ((full, 1), (quarter, 4)):
        cams = out.cameras
        assert torch.allclose(cams.fx, torch.tensor(FOCAL / k)) and torch.allclose(cams.fy, torch.tensor(FOCAL / k))
        assert torch.all(cams.width == W // k) and torch.all(cams.height == H // k)
        assert torch.allclose(cams.cx, torch.tensor(W / k / 2)) and torch.allclose(cams.cy, torch.tensor(H / k / 2))
    # the scene normalisation does not depend on the image resolution
    assert torch.allclose(full.cameras.camera_to_worlds, quarter.cameras.camera_to_worlds)
    # automatic choice: the full-resolution images fit in 1600 px
    assert {p.parent.name for p in _parse(data).image_filenames} == {"images"}


def test_llff_missing_downscaled_folder(tmp_path: Path) -> None:
    c2w, bounds = _forward_facing_cameras()
    data = write_llff(tmp_path / "scene", c2w, bounds, factors=())
    with pytest.raises(UserInputError, match="images_8"):
        _parse(data, downscale_factor=8, create_downscaled=False)
    assert not (data / "images_8").exists()
    out = _parse(data, downscale_factor=2)  # written on the fly, like NeRF's _minify
    assert (data / "images_2").is_dir() and len(list((data / "images_2").iterdir())) == N_VIEWS
    assert torch.allclose(out.cameras.fx, torch.tensor(FOCAL / 2)) and torch.all(out.cameras.width == W // 2)
    with Image.open(out.image_filenames[0]) as img:
        assert img.size == (W // 2, H // 2)


def test_llff_eval_split_every_8th(llff_scene) -> None:
    data, _, _ = llff_scene
    names = [f"IMG_{i:04d}" for i in range(N_VIEWS)]
    train = [p.stem for p in _parse(data, "train", downscale_factor=4).image_filenames]
    for split in ("val", "test"):
        held_out = [p.stem for p in _parse(data, split, downscale_factor=4).image_filenames]
        assert held_out == [names[0], names[8]]
    assert train == [n for i, n in enumerate(names) if i % 8 != 0]
    assert len(_parse(data, "train", downscale_factor=4, eval_interval=3).image_filenames) == N_VIEWS - 4
    everything = [p.stem for p in _parse(data, "val", downscale_factor=4, eval_interval=0).image_filenames]
    assert everything == names


def test_llff_errors_are_actionable(tmp_path: Path) -> None:
    c2w, bounds = _forward_facing_cameras()
    data = write_llff(tmp_path / "scene", c2w, bounds, factors=())
    (data / "images" / "IMG_0000.JPG").unlink()
    with pytest.raises(UserInputError, match=r"10 images but .*11 poses"):
        _parse(data, downscale_factor=1)
    with pytest.raises(UserInputError, match="poses_bounds.npy"):
        _parse(tmp_path, downscale_factor=1)


def test_llff_feeds_a_nerfstudio_datamanager(llff_scene) -> None:
    """nerfstudio's own data manager loads the parsed images and cameras (sizes agree, eval split held out)."""
    from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig

    data, _, _ = llff_scene
    config = FullImageDatamanagerConfig(data=data, dataparser=LLFFDataParserConfig(downscale_factor=4))
    datamanager = config.setup(device="cpu", test_mode="val")
    camera, batch = datamanager.next_train(0)
    assert batch["image"].shape == (H // 4, W // 4, 3)
    assert (int(camera.height), int(camera.width)) == (H // 4, W // 4)
    assert len(datamanager.train_dataset) == N_VIEWS - 2 and len(datamanager.eval_dataset) == 2


def test_llff_toy_scene_lands_in_the_scene_box(tmp_path: Path) -> None:
    """With the bundled toy world's LLFF writer: poses match its reader, the scene sits around the origin."""
    toy_scenes = pytest.importorskip("ids_nerf.toy.scene_spec")
    toy_datasets = pytest.importorskip("ids_nerf.toy.datasets")
    if not hasattr(toy_datasets, "write_llff"):
        pytest.skip("ids_nerf.toy.datasets.write_llff is not available")
    scene = toy_scenes.sample_scene(np.random.default_rng(0))
    toy_datasets.write_llff(scene, tmp_path, n_views=12, size=(32, 24), seed=0, supersample=1)
    out = _parse(tmp_path, "val")
    back = out.transform_poses_to_original_space(out.cameras.camera_to_worlds, camera_convention="opengl")
    np.testing.assert_allclose(back.numpy(), toy_datasets.read_llff_poses(tmp_path)[[0, 8], :3], atol=1e-4)
    centre, _ = toy_scenes.scene_extent(scene)
    transform = out.dataparser_transform.double().numpy()
    centre_ns = out.dataparser_scale * (transform[:, :3] @ centre + transform[:, 3])
    assert np.abs(centre_ns).max() < 0.5, centre_ns


# ----------------------------------------------------------------------------------------------- auto-detection


def test_detect_data_format(tmp_path: Path, llff_scene) -> None:
    assert detect_data_format(llff_scene[0]) == "llff"
    assert detect_data_format(write_blender(tmp_path / "lego")) == "blender"
    capture = write_nerfstudio(tmp_path / "capture")
    assert detect_data_format(capture) == "nerfstudio"
    assert detect_data_format(str(capture / "transforms.json")) == "nerfstudio"

    unknown = tmp_path / "holiday-photos"
    (unknown / "images").mkdir(parents=True)
    with pytest.raises(UserInputError) as err:
        detect_data_format(unknown)
    message = str(err.value)
    assert str(unknown) in message
    for expected in ("poses_bounds.npy", "transforms_train.json", "transforms.json", "--data", "llff-data"):
        assert expected in message
    with pytest.raises(UserInputError, match="does not exist"):
        detect_data_format(tmp_path / "missing")
    # pointing at the parent of datasets names them
    with pytest.raises(UserInputError, match=r"lego \(blender\)"):
        detect_data_format(tmp_path)


def test_auto_parser_fails_on_setup_for_unknown_data(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=str(tmp_path)):
        AutoDataParserConfig(data=tmp_path).setup()


def test_auto_parser_delegates_blender(tmp_path: Path) -> None:
    data = write_blender(tmp_path / "lego", size=8, angle=0.69)
    parser = AutoDataParserConfig(data=data).setup()
    assert isinstance(parser, AutoDataParser) and parser.data_format == "blender"
    train, val = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("val")
    assert len(train.image_filenames) == 3 and len(val.image_filenames) == 2
    np.testing.assert_allclose(train.cameras.fx.double().numpy(), 0.5 * 8 / math.tan(0.5 * 0.69), rtol=1e-6)
    assert torch.all(train.cameras.width == 8)
    with pytest.raises(UserInputError, match="camera-res-scale-factor"):
        AutoDataParserConfig(data=data, downscale_factor=2).setup()


def test_auto_parser_delegates_llff_with_forwarded_options(llff_scene) -> None:
    data, c2w, _ = llff_scene
    parser = AutoDataParserConfig(data=data, downscale_factor=4, eval_interval=5).setup()
    assert parser.data_format == "llff"
    out = parser.get_dataparser_outputs("val")
    assert [p.stem for p in out.image_filenames] == ["IMG_0000", "IMG_0005", "IMG_0010"]
    assert torch.allclose(out.cameras.fx, torch.tensor(FOCAL / 4))
    back = out.transform_poses_to_original_space(out.cameras.camera_to_worlds, camera_convention="opengl")
    np.testing.assert_allclose(back.numpy(), c2w[[0, 5, 10], :3], atol=1e-4)


def test_auto_parser_delegates_nerfstudio_data(tmp_path: Path) -> None:
    parser = AutoDataParserConfig(data=write_nerfstudio(tmp_path / "capture", n=10)).setup()
    assert parser.data_format == "nerfstudio"
    assert len(parser.get_dataparser_outputs("train").image_filenames) == 8  # every 8th held out: 0 and 8
    assert len(parser.get_dataparser_outputs("val").image_filenames) == 2
    parser.downscale_factor = 1  # what nerfstudio's data managers do in inference mode
    assert parser.delegate.downscale_factor == 1


# ----------------------------------------------------------------------------------------------- validate_scene_data


def test_validate_scene_data_follows_the_dataparser(tmp_path: Path) -> None:
    """The dataparser's format is required and its options honoured; nothing is written."""
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    from ids_nerf.nerf.dataparsers.validate import SPLITS_EVAL, validate_scene_data

    c2w, bounds = _forward_facing_cameras()
    llff = write_llff(tmp_path / "scene", c2w, bounds, factors=())
    with pytest.raises(UserInputError, match=r"blender-data reads .*transforms_train.json.* holds llff data"):
        validate_scene_data(llff, "--data", BlenderDataParserConfig())
    # images_2 would be written from images/ by the parser: valid, and not written by the check
    assert validate_scene_data(llff, "--data", LLFFDataParserConfig(downscale_factor=2)) == "llff"
    assert not (llff / "images_2").exists()
    with pytest.raises(UserInputError, match="images_2"):
        validate_scene_data(llff, "--data", LLFFDataParserConfig(downscale_factor=2, create_downscaled=False))
    for image in (llff / "images").iterdir():  # rotated: H x W where poses_bounds.npy says W x H
        Image.new("RGB", (H, W)).save(image, format="PNG")
    with pytest.raises(UserInputError, match="aspect ratio"):
        validate_scene_data(llff)

    blender = write_blender(tmp_path / "lego")
    (blender / "transforms_test.json").unlink()
    assert validate_scene_data(blender) == "blender"  # ns-train reads train and val only
    with pytest.raises(UserInputError, match=r"transforms_test.json' is missing \(the test split"):
        validate_scene_data(blender, "--load-config x: the run's data", splits=SPLITS_EVAL)

    one = write_nerfstudio(tmp_path / "one", n=1)
    with pytest.raises(UserInputError, match="training split would be empty"):
        validate_scene_data(one, "--data", AutoDataParserConfig(eval_interval=8))
    assert validate_scene_data(one, "--data", AutoDataParserConfig(eval_interval=0)) == "nerfstudio"
    capture = write_nerfstudio(tmp_path / "capture")
    with pytest.raises(UserInputError, match="images_2"):  # downscale factor 2 reads images_2/, which is missing
        validate_scene_data(capture, "--data", AutoDataParserConfig(downscale_factor=2))


def test_auto_parser_cameras_have_metadata(tmp_path: Path) -> None:
    """`ns-export cameras` (nerfstudio 1.1.5) asserts camera.metadata is not None on runs with a camera optimizer;
    nerfstudio's Blender parser leaves it None, the auto dataparser sets it."""
    outputs = AutoDataParserConfig(data=write_blender(tmp_path / "lego")).setup().get_dataparser_outputs("train")
    assert outputs.cameras.metadata == {}
    assert outputs.cameras[0:1].metadata == {}


def test_dataparser_specifications() -> None:
    assert isinstance(llff_dataparser, DataParserSpecification)
    assert isinstance(auto_dataparser, DataParserSpecification)
    assert isinstance(llff_dataparser.config, LLFFDataParserConfig) and "LLFF" in llff_dataparser.description
    assert isinstance(auto_dataparser.config, AutoDataParserConfig) and "Blender" in auto_dataparser.description
    for spec in (llff_dataparser, auto_dataparser):  # nerfstudio saves configs as YAML and reloads them
        assert yaml.load(yaml.dump(spec.config), Loader=yaml.Loader) == spec.config


# ----------------------------------------------------------------------------------------------- checkpoints

_CHECKPOINT_SCRIPT = textwrap.dedent(
    """
    import io, pickle, sys
    import numpy as np, torch
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param], lr=1e-2)
    scheduler = ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=10).setup().get_scheduler(optimizer, 1e-2)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    state = {  # what nerfstudio's Trainer.save_checkpoint writes, with a numpy step counter
        "step": np.int64(5),
        "pipeline": {"_model.field.weight": param.detach().clone()},
        "optimizers": {"fields": optimizer.state_dict()},
        "schedulers": {"fields": scheduler.state_dict()},
        "scalers": {},
    }
    assert isinstance(state["schedulers"]["fields"]["_last_lr"][0], np.float64)
    buf = io.BytesIO()
    torch.save(state, buf)

    def load():
        return torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)

    try:
        load()
        sys.exit("loaded before register_safe_globals")
    except pickle.UnpicklingError as exc:
        assert "multiarray.scalar" in str(exc), exc

    from ids_nerf.nerf.checkpoints import register_safe_globals

    assert register_safe_globals()
    count = len(torch.serialization.get_safe_globals())
    assert register_safe_globals() and len(torch.serialization.get_safe_globals()) == count  # idempotent
    loaded = load()
    assert loaded["step"] == 5
    assert loaded["schedulers"]["fields"]["_last_lr"] == state["schedulers"]["fields"]["_last_lr"]
    assert torch.equal(loaded["pipeline"]["_model.field.weight"], param.detach())

    # a checkpoint written under the other numpy major version (numpy._core vs numpy.core) loads too
    legacy = io.BytesIO()
    torch.save({"step": np.int64(7)}, legacy, _use_new_zipfile_serialization=False)
    raw = legacy.getvalue()
    for a, b in ((b"numpy.core.", b"numpy._core."), (b"numpy._core.", b"numpy.core.")):
        if a + b"multiarray" in raw:
            raw = raw.replace(a + b"multiarray\\nscalar", b + b"multiarray\\nscalar")
            break
    assert torch.load(io.BytesIO(raw), weights_only=True)["step"] == 7

    # still weights-only: numpy arrays (and anything else) are refused
    arr = io.BytesIO()
    torch.save({"array": np.zeros(3)}, arr)
    try:
        torch.load(io.BytesIO(arr.getvalue()), weights_only=True)
        sys.exit("a numpy array loaded with weights_only=True")
    except pickle.UnpicklingError:
        pass
    print("OK")
    """
)


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_register_safe_globals_makes_nerfstudio_checkpoints_load() -> None:
    """In a subprocess: the global allow-list of torch.load must not leak into other tests."""
    result = _run_python(_CHECKPOINT_SCRIPT)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr


def test_nerf_modules_do_not_import_diffusion_libraries() -> None:
    code = (
        "import sys\n"
        "import ids_nerf.nerf, ids_nerf.nerf.dataparsers, ids_nerf.nerf.checkpoints\n"
        "heavy = [m for m in ('diffusers', 'transformers', 'open_clip', 'ids_nerf.guidance') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('OK')\n"
    )
    result = _run_python(code)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr

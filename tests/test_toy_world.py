"""Tests of the numpy toy world: scenes, captions, ray-cast geometry, dataset writers and detectors."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ids_nerf.toy import cameras
from ids_nerf.toy import datasets as ds
from ids_nerf.toy import detectors as det
from ids_nerf.toy import generation as gen
from ids_nerf.toy import raycast as rc
from ids_nerf.toy import scene_spec as spec
from ids_nerf.toy.shape_fit import degrade, fit_logistic

NP = r"an? (?:" + "|".join(spec.COLORS) + r") (?:" + "|".join(spec.SHAPES) + r")"
CAPTION_RE = re.compile(rf"^(?:{NP}|{NP} and {NP}|{NP}, {NP} and {NP}) on a (?:checkered|wooden) floor$")


def _unproject(camera: cameras.Camera, depth: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of pixel centres at the given z-depth (independent of the renderer's rays).

    Infinite depths (sky) are unprojected at depth 0.
    """
    depth = np.where(np.isfinite(depth), depth, 0.0)
    h, w = depth.shape
    j, i = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = (j - 0.5 * w) / camera.focal * depth
    y = -(i - 0.5 * h) / camera.focal * depth
    cam_pts = np.stack([x, y, -depth, np.ones_like(depth)], axis=-1)
    return (cam_pts @ np.asarray(camera.c2w).T)[..., :3]


# ----------------------------------------------------------------------------------------------- generation


def test_generation_is_deterministic_and_seed_dependent() -> None:
    a_img, a_cap, a_meta = gen.generate_arrays(6, size=32, seed=7)
    b_img, b_cap, b_meta = gen.generate_arrays(6, size=32, seed=7)
    c_img, _, _ = gen.generate_arrays(6, size=32, seed=8)
    assert a_img.dtype == np.uint8 and a_img.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(a_img, b_img)
    assert a_cap == b_cap and a_meta == b_meta
    assert not np.array_equal(a_img, c_img)
    # random access gives the same image as the stream, whatever the stream's length
    img3, cap3, meta3 = gen.generate_one(3, size=32, seed=7)
    np.testing.assert_array_equal(img3, a_img[3])
    assert cap3 == a_cap[3] and meta3 == a_meta[3]
    # images are not blank: several distinct colours and some object pixels
    for img, meta in zip(a_img, a_meta, strict=True):
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
        assert sum(meta["object_pixels"]) > 0


def test_sample_scene_constraints() -> None:
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(200):
        scene = spec.sample_scene(rng)
        counts.add(len(scene.objects))
        assert scene.floor in spec.FLOORS
        assert abs(np.linalg.norm(scene.light_dir) - 1.0) < 1e-9 and scene.light_dir[2] > 0
        colors = [o.color for o in scene.objects]
        assert len(set(colors)) == len(colors)
        for o in scene.objects:
            assert o.shape in spec.SHAPES and o.color in spec.COLORS
            assert o.center[2] == pytest.approx(o.size)  # resting on the floor
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                gap = math.dist(a.center[:2], b.center[:2])
                assert gap >= spec.footprint_radius(a.shape, a.size) + spec.footprint_radius(b.shape, b.size)
    assert counts == {1, 2, 3}
    restricted = spec.sample_scene(
        np.random.default_rng(1), 2, shapes=("cone",), colors=("red", "blue"), floors=("wooden",)
    )
    assert {o.shape for o in restricted.objects} == {"cone"} and restricted.floor == "wooden"
    assert {o.color for o in restricted.objects} == {"red", "blue"}
    with pytest.raises(ValueError):
        spec.sample_scene(np.random.default_rng(1), 3, colors=("red", "blue"))
    with pytest.raises(ValueError):
        spec.sample_scene(np.random.default_rng(1), 1, shapes=("torus",))


def test_scene_and_camera_json_round_trip() -> None:
    rng = np.random.default_rng(3)
    scene = spec.sample_scene(rng, 3)
    cam = cameras.sample_camera_for_scene(rng, scene, 40, 30)
    assert spec.SceneSpec.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
    cam2 = cameras.Camera.from_dict(json.loads(json.dumps(cam.to_dict())))
    np.testing.assert_array_equal(cam2.c2w, cam.c2w)
    assert (cam2.fov_x, cam2.width, cam2.height) == (cam.fov_x, cam.width, cam.height)


# ----------------------------------------------------------------------------------------------- captions


def test_caption_grammar_and_substitution() -> None:
    red_sphere = spec.ObjectSpec("sphere", "red", (0.0, 0.0, 0.4), 0.4)
    blue_cube = spec.ObjectSpec("cube", "blue", (1.0, 0.0, 0.3), 0.3)
    orange_cone = spec.ObjectSpec("cone", "orange", (-1.0, 0.0, 0.3), 0.3)
    one = spec.SceneSpec((red_sphere,), floor="checkered")
    assert spec.caption(one) == "a red sphere on a checkered floor"
    two = spec.SceneSpec((red_sphere, blue_cube), floor="wooden")
    assert spec.caption(two) == "a red sphere and a blue cube on a wooden floor"
    three = spec.SceneSpec((orange_cone, red_sphere, blue_cube), floor="checkered")
    assert spec.caption(three) == "an orange cone, a red sphere and a blue cube on a checkered floor"
    # edits phrased as word substitutions match re-captioned edited scenes
    recolored = dataclasses.replace(two, objects=(dataclasses.replace(red_sphere, color="green"), blue_cube))
    assert spec.caption(recolored) == spec.caption(two).replace("red sphere", "green sphere")
    reshaped = dataclasses.replace(two, objects=(dataclasses.replace(red_sphere, shape="cylinder"), blue_cube))
    assert spec.caption(reshaped) == spec.caption(two).replace("sphere", "cylinder")
    refloored = dataclasses.replace(two, floor="checkered")
    assert spec.caption(refloored) == spec.caption(two).replace("wooden floor", "checkered floor")
    for _, cap, meta in gen.generate_images(40, size=16, seed=2, config=gen.GenerationConfig(supersample=1)):
        assert CAPTION_RE.match(cap), cap
        assert cap == spec.caption(spec.SceneSpec.from_dict(meta["scene"]))


# ----------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("shape", spec.SHAPES)
def test_center_pixel_depth_matches_geometry(shape: str) -> None:
    obj = spec.ObjectSpec(shape, "red", (0.3, -0.2, 0.5), 0.5)
    scene = spec.SceneSpec((obj,), floor="checkered")
    eye = np.array([0.3, -4.2, 0.5])  # level with the centre: the centre ray hits the middle of the near side
    cam = cameras.Camera(cameras.look_at(eye, obj.center), math.radians(40.0), 65, 65)
    out = rc.render(scene, cam, supersample=1)
    dist = float(np.linalg.norm(eye - np.asarray(obj.center)))
    # sphere/cube/cylinder: the near surface is ``size`` in front of the centre; cone: at half height the
    # surface is at radius size / 2
    expected = dist - (0.5 * obj.size if shape == "cone" else obj.size)
    assert out.depth[32, 32] == pytest.approx(expected, abs=1e-4)
    assert out.object_ids[32, 32] == 0 and not out.floor_mask[32, 32]


def test_depth_unprojects_onto_the_surfaces() -> None:
    rng = np.random.default_rng(11)
    for _ in range(4):
        scene = spec.sample_scene(rng, 3)
        cam = cameras.sample_camera_for_scene(rng, scene, 48, 40)
        out = rc.render(scene, cam, supersample=1)
        assert out.rgb.shape == (40, 48, 3) and out.rgb.dtype == np.float32
        assert out.depth.dtype == np.float32 and out.object_ids.dtype == np.int32
        assert 0.0 <= out.rgb.min() and out.rgb.max() <= 1.0
        pts = _unproject(cam, out.depth.astype(np.float64))
        # floor pixels lie on z = 0 inside the floor disk; sky pixels have infinite depth
        assert out.floor_mask.any()
        np.testing.assert_allclose(pts[out.floor_mask][:, 2], 0.0, atol=1e-3)
        assert np.all(np.hypot(pts[out.floor_mask][:, 0], pts[out.floor_mask][:, 1]) <= scene.floor_radius + 1e-3)
        sky = (out.object_ids < 0) & ~out.floor_mask
        assert np.all(np.isinf(out.depth[sky])) and np.all(np.isfinite(out.depth[~sky]))
        assert not np.any(out.floor_mask & (out.object_ids >= 0))
        for k, obj in enumerate(scene.objects):
            p = pts[out.object_ids == k] - np.asarray(obj.center)
            if obj.shape == "sphere":
                np.testing.assert_allclose(np.linalg.norm(p, axis=1), obj.size, atol=1e-3)
            elif obj.shape == "cube":
                c, s_ = math.cos(obj.yaw), math.sin(obj.yaw)
                local = p @ np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])  # world -> cube frame
                np.testing.assert_allclose(np.abs(local).max(axis=1), obj.size, atol=1e-3)
            elif obj.shape == "cylinder":
                on_side = np.abs(np.hypot(p[:, 0], p[:, 1]) - obj.size) < 1e-3
                on_cap = np.abs(p[:, 2] - obj.size) < 1e-3
                assert np.all(on_side | on_cap)
            else:  # cone: radius shrinks linearly from size at the base to 0 at the apex
                expected_r = obj.size * (obj.size - p[:, 2]) / (2.0 * obj.size)
                np.testing.assert_allclose(np.hypot(p[:, 0], p[:, 1]), expected_r, atol=1e-3)


def test_objects_cast_shadows_on_the_floor() -> None:
    cube = spec.ObjectSpec("cube", "white", (0.0, 0.0, 0.5), 0.5)
    light = (0.0, 0.8, 0.6)  # from +Y, 36.9 degrees up: the shadow falls on -Y, 1.33 units beyond the cube
    with_cube = spec.SceneSpec((cube,), floor="checkered", light_dir=light)
    without = dataclasses.replace(with_cube, objects=())
    cam = cameras.Camera(cameras.look_at((0.0, -0.01, 6.0), (0.0, 0.0, 0.0)), math.radians(50.0), 41, 41)
    out_with, out_without = rc.render(with_cube, cam, 1), rc.render(without, cam, 1)
    pts = _unproject(cam, out_with.depth.astype(np.float64))
    x, y = pts[..., 0], pts[..., 1]
    floor = out_with.floor_mask
    in_shadow = floor & (np.abs(x) < 0.4) & (y < -0.6) & (y > -1.7)
    in_light = floor & ((y > 0.6) | (np.abs(x) > 0.6))
    assert in_shadow.sum() > 10 and in_light.sum() > 100
    # shadowed floor gets ambient light only: 0.3 vs 0.3 + 0.7 * 0.6 when lit
    ratio = out_with.rgb[in_shadow].sum(-1) / out_without.rgb[in_shadow].sum(-1)
    np.testing.assert_allclose(ratio, 0.3 / (0.3 + 0.7 * 0.6), rtol=1e-3)
    np.testing.assert_array_equal(out_with.rgb[in_light], out_without.rgb[in_light])


# ----------------------------------------------------------------------------------------------- datasets


def test_blender_writer_round_trips_cameras(tmp_path: Path) -> None:
    scene = spec.sample_scene(np.random.default_rng(4), 2)
    cams = ds.write_blender(scene, tmp_path, n_train=3, n_val=1, n_test=2, size=24, seed=5)
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        meta = json.loads((tmp_path / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == pytest.approx(cams[split][0].fov_x)
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{i}" for i in range(n)]
        c2w = ds.read_blender_poses(tmp_path, split)
        assert c2w.shape == (n, 4, 4)
        np.testing.assert_allclose(c2w[:, :3, 3], [c.center for c in cams[split]], atol=1e-5)
        np.testing.assert_allclose(c2w, [c.c2w for c in cams[split]], atol=1e-9)
        for i, cam in enumerate(cams[split]):
            img = np.array(Image.open(tmp_path / split / f"r_{i}.png"))
            assert img.shape == (24, 24, 3) and img.dtype == np.uint8
            out = rc.render(scene, cam)
            np.testing.assert_array_equal(img, rc.to_uint8(out.rgb))
            mask = np.array(Image.open(tmp_path / split / f"r_{i}_mask.png"))
            np.testing.assert_array_equal(mask, out.object_ids + 1)
            np.testing.assert_array_equal(np.load(tmp_path / split / f"r_{i}_depth.npy"), out.depth)
    # the cameras look at the scene: the camera's -Z axis points at the scene centre's side
    center, _ = spec.scene_extent(scene)
    for cam in cams["train"] + cams["test"]:
        to_center = center - cam.center
        assert np.dot(-cam.c2w[:3, 2], to_center) / np.linalg.norm(to_center) > 0.98
    # test cameras are an evenly spaced ring
    test_c = np.array([c.center for c in cams["test"]])
    assert np.linalg.norm(test_c[0, :2] - center[:2]) == pytest.approx(np.linalg.norm(test_c[1, :2] - center[:2]))
    loaded_scene, cap = ds.read_scene_json(tmp_path)
    assert loaded_scene == scene and cap == spec.caption(scene)


def test_llff_writer_round_trips_cameras(tmp_path: Path) -> None:
    scene = spec.sample_scene(np.random.default_rng(6), 3)
    cams = ds.write_llff(scene, tmp_path, n_views=6, size=(32, 24), seed=2)
    arr = np.load(tmp_path / "poses_bounds.npy")
    assert arr.shape == (6, 17)
    near, far = arr[:, 15], arr[:, 16]
    assert np.all(near > 0) and np.all(near < far)
    # the original NeRF loader's conversion recovers the OpenGL camera-to-world matrices
    poses = arr[:, :-2].reshape([-1, 3, 5]).transpose([1, 2, 0])
    poses = np.concatenate([poses[:, 1:2, :], -poses[:, 0:1, :], poses[:, 2:, :]], 1)
    poses = np.moveaxis(poses, -1, 0)
    np.testing.assert_allclose(poses[:, :, :4], [c.c2w[:3, :4] for c in cams], atol=1e-9)
    np.testing.assert_allclose(poses[:, :, 4], [[24, 32, c.focal] for c in cams], atol=1e-9)
    c2w = ds.read_llff_poses(tmp_path)
    np.testing.assert_allclose(c2w[:, :3, 3], [c.center for c in cams], atol=1e-5)
    np.testing.assert_allclose(c2w, [c.c2w for c in cams], atol=1e-9)
    np.testing.assert_allclose(ds.read_llff_bounds(tmp_path), arr[:, 15:])
    # forward-facing: all views look within a few degrees of their mean direction
    fwd = -c2w[:, :3, 2]
    mean = fwd.mean(axis=0) / np.linalg.norm(fwd.mean(axis=0))
    assert np.degrees(np.arccos(np.clip(fwd @ mean, -1, 1))).max() < 20.0
    for i, cam in enumerate(cams):
        assert np.array(Image.open(tmp_path / "images" / f"IMG_{i:04d}.png")).shape == (24, 32, 3)
        depth = np.load(tmp_path / "gt" / f"IMG_{i:04d}_depth.npy")
        out = rc.render(scene, cam)
        np.testing.assert_array_equal(depth, out.depth)
        np.testing.assert_array_equal(
            np.array(Image.open(tmp_path / "gt" / f"IMG_{i:04d}_mask.png")), out.object_ids + 1
        )
        finite = depth[np.isfinite(depth)]
        assert near[i] == pytest.approx(np.percentile(finite, 1)) and far[i] == pytest.approx(np.percentile(finite, 99))
    assert ds.read_scene_json(tmp_path)[0] == scene


# ----------------------------------------------------------------------------------------------- detectors


def test_color_mask_is_invariant_to_shading_and_ignores_background() -> None:
    for name, rgb in spec.COLORS.items():
        for brightness in (0.2, 0.5, 1.0):
            patch = np.broadcast_to(np.asarray(rgb) * brightness, (8, 8, 3))
            assert det.color_mask(patch, name).all(), (name, brightness)
            assert det.dominant_color(rc.to_uint8(patch)) == name
    background_colors = [*spec.CHECKER_COLORS, *spec.WOOD_COLORS, spec.SKY_HORIZON, spec.SKY_ZENITH]
    for rgb in background_colors:
        for brightness in (0.3, 0.7, 1.0):
            patch = np.broadcast_to(np.asarray(rgb) * brightness, (8, 8, 3))
            assert not det.object_mask(patch).any(), (rgb, brightness)
    with pytest.raises(ValueError):
        det.color_mask(np.zeros((4, 4, 3)), "magenta")


def test_detectors_on_empty_scenes_and_floors() -> None:
    rng = np.random.default_rng(12)
    for floor in spec.FLOORS:
        for _ in range(3):
            scene = spec.SceneSpec((), floor=floor, light_dir=(0.3, 0.2, 0.93))
            cam = cameras.sample_camera(rng, 64, 64)
            img = rc.to_uint8(rc.render(scene, cam).rgb)
            assert det.object_mask(img).sum() <= 3
            assert det.dominant_color(img) is None
            assert det.shape_class(img) == "unknown"
            assert det.floor_type(img) == floor


def test_detector_accuracy_on_generated_images() -> None:
    report = det.measure_detector_accuracy(n=100, seed=1234)
    # measured on 500 images: colour 1.000, shape 0.996, floor 1.000, mask IoU 0.96
    assert report["color_accuracy"] >= 0.9
    assert report["shape_accuracy"] >= 0.9
    assert report["floor_accuracy"] >= 0.9
    assert report["mask_iou"] >= 0.85
    assert min(report["shape_accuracy_by_shape"].values()) >= 0.75


def test_detectors_follow_an_edit() -> None:
    """Recolouring / reshaping one object in the spec changes what the detectors report."""
    obj = spec.ObjectSpec("sphere", "red", (0.0, 0.0, 0.5), 0.5)
    scene = spec.SceneSpec((obj,), floor="wooden", light_dir=(0.5, -0.5, 0.707))
    cam = cameras.Camera(
        cameras.look_at(cameras.orbit_position(-1.2, math.radians(25.0), 3.2, (0, 0, 0.5)), (0, 0, 0.5)),
        math.radians(45.0),
        64,
        64,
    )
    before = rc.to_uint8(rc.render(scene, cam).rgb)
    edited = dataclasses.replace(scene, objects=(dataclasses.replace(obj, color="blue", shape="cube", yaw=0.4),))
    after = rc.to_uint8(rc.render(edited, cam).rgb)
    assert det.dominant_color(before) == "red" and det.shape_class(before) == "sphere"
    assert det.dominant_color(after) == "blue" and det.shape_class(after) == "cube"
    assert not det.color_mask(after, "red").any()
    truth = rc.render(edited, cam, supersample=1).object_ids == 0
    found = det.color_mask(after, "blue")
    assert (truth & found).sum() / (truth | found).sum() > 0.85


def test_shape_classifier_survives_blur() -> None:
    """The shape detector must score blurry images (what a VAE decodes), not only crisp renders."""
    rng = np.random.default_rng(0)
    cfg = gen.GenerationConfig(n_objects=1)
    hits, n = 0, 60
    for i in range(n):
        img, _, meta = gen.generate_one(i, 64, 4321, cfg)
        truth = spec.SceneSpec.from_dict(meta["scene"]).objects[0].shape
        hits += det.shape_class(degrade(img, 1.0, 0.02, rng)) == truth
    assert hits / n >= 0.8, hits  # measured: 0.94 on VAE round trips of 300 renders (detectors docstring)


def test_dominant_color_ignores_scattered_speckles() -> None:
    img = np.full((64, 64, 3), 128, dtype=np.uint8)
    img[..., 0], img[..., 1] = 110, 150  # desaturated greenish background: no object colour
    img[20:36, 24:40] = rc.to_uint8(np.asarray(spec.COLORS["blue"]))  # one 16x16 blue object (256 px)
    rng = np.random.default_rng(1)
    for y, x in rng.integers(0, 60, size=(80, 2)):  # 80 green 2x2 speckles (up to 320 px) away from the object
        if not (16 <= y <= 38 and 20 <= x <= 42):
            img[y : y + 2, x : x + 2] = rc.to_uint8(np.asarray(spec.COLORS["green"]))
    fractions = det.color_fractions(img)
    assert fractions["green"] > fractions["blue"]  # more green pixels in total ...
    assert det.dominant_color(img) == "blue"  # ... but the blue region is the object


def test_fill_holes_and_feature_names() -> None:
    ring = np.zeros((9, 9), dtype=bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    filled = det.fill_holes(ring)
    assert filled[4, 4] and filled.sum() == 25
    open_ring = ring.copy()
    open_ring[4, 2:5] = False  # a notch to the outside is not a hole
    assert not det.fill_holes(open_ring)[4, 3]
    img, _, _ = gen.generate_one(0, 64, 5, gen.GenerationConfig(n_objects=1))
    feats = det.shape_features(img, det.largest_component(det.color_mask(img, det.dominant_color(img))))
    assert tuple(feats) == det.SHAPE_FEATURE_NAMES and all(np.isfinite(list(feats.values())))
    probs = det.shape_probabilities(np.array(list(feats.values())))
    assert probs.shape == (4,) and abs(probs.sum() - 1.0) < 1e-9


def test_logistic_fit_separates_classes() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    x = rng.normal(size=(300, 4)) + 3.0 * np.eye(3, 4)[y]
    model = fit_logistic(x, y, 3, l2=1e-3, iterations=500, learning_rate=0.5)
    assert model["fit_accuracy"] >= 0.95
    assert np.asarray(model["weights"]).shape == (4, 3)


# ----------------------------------------------------------------------------------------------- scipy.ndimage
# The detectors and the blur of the classifier's fitting data use scipy.ndimage; these hand-written references are
# what they replaced (numpy only, as written when shape_classifier.json was fitted): the results must not change.


def _reference_largest_component(mask: np.ndarray) -> np.ndarray:
    """Depth-first 4-connected labelling; ties go to the component found first in raster order."""
    h, w = mask.shape
    flat = mask.ravel()
    comp = np.zeros(flat.shape, dtype=np.int32)
    best_id, best_size, next_id = 0, 0, 0
    for start in np.flatnonzero(flat):
        if comp[start]:
            continue
        next_id += 1
        comp[start] = next_id
        stack, size = [int(start)], 0
        while stack:
            i = stack.pop()
            size += 1
            r, c = divmod(i, w)
            for j, inside in ((i - w, r > 0), (i + w, r < h - 1), (i - 1, c > 0), (i + 1, c < w - 1)):
                if inside and flat[j] and not comp[j]:
                    comp[j] = next_id
                    stack.append(j)
        if size > best_size:
            best_id, best_size = next_id, size
    return (comp == best_id).reshape(h, w) if best_size else np.zeros_like(mask)


def _reference_fill_holes(mask: np.ndarray) -> np.ndarray:
    """Grow the background from a padded border (4-connected) until it stops; the rest is filled."""
    free = ~np.pad(mask, 1)
    outside = np.zeros_like(free)
    outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = True
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= free
        if np.array_equal(grown, outside):
            return ~outside[1:-1, 1:-1]
        outside = grown


def _reference_erode(mask: np.ndarray) -> np.ndarray:
    """3x3 square erosion, outside the image counting as background."""
    p, (h, w) = np.pad(mask, 1), mask.shape
    return np.logical_and.reduce([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


def _reference_dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 square dilation."""
    p, (h, w) = np.pad(mask, 1), mask.shape
    return np.logical_or.reduce([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


def _reference_degrade(image: np.ndarray, sigma: float, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Separable Gaussian blur by shifted sums (edge padding, radius ceil(3 sigma)) plus pixel noise."""
    x = image.astype(np.float64)
    r = max(1, int(np.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    h, w = x.shape[:2]
    p = np.pad(x, ((r, r), (0, 0), (0, 0)), mode="edge")
    x = sum(k[i] * p[i : i + h] for i in range(2 * r + 1))
    p = np.pad(x, ((0, 0), (r, r), (0, 0)), mode="edge")
    x = sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1))
    x = x + rng.normal(0.0, 255.0 * noise_std, x.shape)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _masks_to_check() -> list[np.ndarray]:
    """Random masks of many sizes and densities (ties, holes, specks) and the colour masks of generated images."""
    rng = np.random.default_rng(0)
    masks = [rng.random(tuple(rng.integers(1, 24, size=2))) < rng.uniform(0.05, 0.8) for _ in range(400)]
    tie = np.zeros((10, 10), dtype=bool)
    tie[6:8, 1:3] = tie[1:3, 6:8] = True  # two equal components: the first in raster order wins
    masks.append(tie)
    for i in range(30):
        img, _, _ = gen.generate_one(i, 64, 99)
        labels = det.color_labels(degrade(img, 1.0, 0.02, rng) if i % 2 else img)
        masks.extend(labels == k for k in np.unique(labels[labels >= 0]))
    return masks


def test_scipy_labelling_and_morphology_match_the_hand_written_reference() -> None:
    square = np.ones((3, 3), dtype=bool)
    for mask in _masks_to_check():
        np.testing.assert_array_equal(det.largest_component(mask), _reference_largest_component(mask))
        np.testing.assert_array_equal(det.fill_holes(mask), _reference_fill_holes(mask))
        eroded = _reference_erode(mask)
        np.testing.assert_array_equal(ndimage.binary_erosion(mask, square), eroded)
        np.testing.assert_array_equal(ndimage.binary_opening(mask, square), _reference_dilate(eroded))


def test_scipy_blur_matches_the_hand_written_reference() -> None:
    for i in range(20):
        img, _, _ = gen.generate_one(i, 64, 11, gen.GenerationConfig(n_objects=1))
        sigma = 0.4 + 0.04 * i
        a = degrade(img, sigma, 0.02, np.random.default_rng(i))
        b = _reference_degrade(img, sigma, 0.02, np.random.default_rng(i))
        np.testing.assert_array_equal(a, b)

"""The pure-PyTorch CPU Gaussian rasterizer (ids_nerf.scenes.rasterize_cpu) against closed forms, an independent
per-Gaussian reference of gsplat's CUDA semantics, finite differences, and (on a GPU) gsplat itself."""

from __future__ import annotations

import math

import pytest
import torch

from ids_nerf.scenes import rasterize_cpu as rc
from ids_nerf.scenes.rasterize import rasterization as dispatch_rasterization
from ids_nerf.scenes.rasterize_cpu import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN, rasterization

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _camera(width: int, height: int, f: float, dtype=F64, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity world-to-camera matrices (OpenCV) and pinhole intrinsics with the principal point at the centre."""
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype).expand(n, 4, 4).clone(), K.expand(n, 3, 3).clone()


def _identity_quats(n: int, dtype=F64) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype).repeat(n, 1)


def _random_scene(n: int, seed: int, dtype=F64, scale=(0.03, 0.12), opac=(0.2, 0.95), sh: int | None = None):
    """Gaussians in a slab 2.5..3.5 in front of an identity camera."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g, dtype=dtype) * 2 - 1
    means[:, 2] = means[:, 2] * 0.5 + 3.0
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    log_s = torch.empty(n, 3, dtype=dtype).uniform_(math.log(scale[0]), math.log(scale[1]), generator=g)
    opacities = torch.empty(n, dtype=dtype).uniform_(*opac, generator=g)
    if sh is None:
        colors = torch.rand(n, 3, generator=g, dtype=dtype)
    else:
        colors = torch.randn(n, (sh + 1) ** 2, 3, generator=g, dtype=dtype) * 0.3
    return means, quats, torch.exp(log_s), opacities, colors


def _second_camera(width: int, height: int, f: float, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two cameras: the identity one and one rotated a little about y and shifted (world-to-camera)."""
    V, K = _camera(width, height, f, dtype, n=2)
    a = 0.15
    R = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=dtype)
    V[1, :3, :3] = R
    V[1, :3, 3] = torch.tensor([0.2, -0.1, 0.3], dtype=dtype)
    return V, K


def _reference(means2d, conics, colors, opacities, radii, depths, width, height, tile_size=16, backgrounds=None):
    """gsplat's rasterize_to_pixels semantics, one Gaussian at a time over all pixels (independent of the blocks,
    chunks and segments of rasterize_cpu): a pixel evaluates a Gaussian iff its tile is in the Gaussian's tile
    rectangle (isect_tiles.cu), front to back by depth (ties by index), with the CUDA kernel's skip/stop rules.

    Returns (colours [C, H, W, D], alphas [C, H, W, 1], number of pixels that stopped early)."""
    C, N = radii.shape
    D = colors.shape[-1]
    jj, ii = torch.meshgrid(torch.arange(width), torch.arange(height), indexing="xy")
    px, py = jj.to(F64) + 0.5, ii.to(F64) + 0.5
    tile_x, tile_y = jj // tile_size, ii // tile_size
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    out = torch.zeros(C, height, width, D, dtype=F64)
    alphas = torch.zeros(C, height, width, 1, dtype=F64)
    n_stopped = 0
    for c in range(C):
        T = torch.ones(height, width, dtype=F64)
        done = torch.zeros(height, width, dtype=torch.bool)
        acc = torch.zeros(height, width, D, dtype=F64)
        for g in torch.sort(depths[c].detach(), stable=True).indices.tolist():
            r = float(radii[c, g])
            if r <= 0:
                continue
            mx, my = (float(v) for v in means2d[c, g])
            x0 = min(max(math.floor(mx / tile_size - r / tile_size), 0), tw)
            x1 = min(max(math.ceil(mx / tile_size + r / tile_size), 0), tw)
            y0 = min(max(math.floor(my / tile_size - r / tile_size), 0), th)
            y1 = min(max(math.ceil(my / tile_size + r / tile_size), 0), th)
            in_rect = (tile_x >= x0) & (tile_x < x1) & (tile_y >= y0) & (tile_y < y1)
            a, b, cc = (float(v) for v in conics[c, g])
            dx, dy = mx - px, my - py
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp(float(opacities[c, g]) * torch.exp(-sigma), max=ALPHA_MAX)
            use = in_rect & ~done & (sigma >= 0) & (alpha >= ALPHA_MIN)
            next_T = T * (1 - alpha)
            stop = use & (next_T <= TRANSMITTANCE_MIN)
            done |= stop
            use &= ~stop
            acc += torch.where(use, alpha * T, 0.0)[..., None] * colors[c, g].to(F64)
            T = torch.where(use, next_T, T)
        out[c] = acc if backgrounds is None else acc + T[..., None] * backgrounds[c].to(F64)
        alphas[c, ..., 0] = 1 - T
        n_stopped += int(done.sum())
    return out, alphas, n_stopped


def _render(params: dict, V, K, width, height, **kw):
    return rasterization(
        params["means"], params["quats"], params["scales"], params["opacities"], params["colors"], V, K, width,
        height, **kw,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# closed forms
# ----------------------------------------------------------------------------------------------------------------


def _cov2d_by_hand(mean_c: torch.Tensor, s: float, f: float, eps2d: float) -> torch.Tensor:
    """J (s^2 I) J^T + eps2d I for a camera-space mean (inside the frustum, so no clamping of x/z, y/z)."""
    x, y, z = (float(v) for v in mean_c)
    J = torch.tensor([[f / z, 0.0, -f * x / z**2], [0.0, f / z, -f * y / z**2]], dtype=F64)
    return J @ (s**2 * torch.eye(3, dtype=F64)) @ J.T + eps2d * torch.eye(2, dtype=F64)


def _gauss_alpha(mean_c, s, f, opacity, width, height, eps2d=0.3) -> torch.Tensor:
    """Per-pixel opacity * exp(-0.5 d^T cov2d^-1 d), clamped and thresholded as the rasterizer does."""
    cov = _cov2d_by_hand(mean_c, s, f, eps2d)
    x, y, z = (float(v) for v in mean_c)
    u, v = f * x / z + width / 2, f * y / z + height / 2
    jj, ii = torch.meshgrid(torch.arange(width), torch.arange(height), indexing="xy")
    d = torch.stack([jj.to(F64) + 0.5 - u, ii.to(F64) + 0.5 - v], -1)
    sigma = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d)
    alpha = torch.clamp(opacity * torch.exp(-sigma), max=ALPHA_MAX)
    return torch.where(alpha >= ALPHA_MIN, alpha, 0.0)


def test_single_gaussian_closed_form():
    W, H, f, s, opacity = 32, 24, 30.0, 0.08, 0.8
    V, K = _camera(W, H, f)
    mean = torch.tensor([[0.11, -0.07, 2.0]], dtype=F64)
    colour = torch.tensor([[0.9, 0.2, 0.4]], dtype=F64)
    bg = torch.tensor([[0.1, 0.5, 0.3]], dtype=F64)
    img, alpha, meta = rasterization(
        mean, _identity_quats(1), torch.full((1, 3), s, dtype=F64), torch.tensor([opacity], dtype=F64), colour,
        V, K, W, H, backgrounds=bg,
    )  # fmt: skip
    a = _gauss_alpha(mean[0], s, f, opacity, W, H)
    assert (a == 0).any() and (a > 0.5).any()  # the 1/255 cut and the bright centre are both in the image
    expected = a[..., None] * colour[0] + (1 - a[..., None]) * bg[0]
    torch.testing.assert_close(img[0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha[0, ..., 0], a, rtol=1e-12, atol=1e-12)
    assert int(meta["radii"][0, 0]) > 0
    torch.testing.assert_close(meta["depths"][0, 0], torch.tensor(2.0, dtype=F64))


def test_two_gaussians_front_to_back_and_swap():
    W, H, f, s = 24, 20, 25.0, 0.1
    V, K = _camera(W, H, f)
    c1, c2 = torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    o1, o2 = 0.7, 0.6
    bg = torch.tensor([[0.2, 0.3, 0.4]], dtype=F64)
    for z1, z2 in [(2.0, 2.5), (2.5, 2.0)]:
        means = torch.tensor([[0.05, 0.0, z1], [-0.04, 0.03, z2]], dtype=F64)
        img, alpha, _ = rasterization(
            means, _identity_quats(2), torch.full((2, 3), s, dtype=F64), torch.tensor([o1, o2], dtype=F64),
            torch.stack([c1, c2]), V, K, W, H, backgrounds=bg, render_mode="RGB+D",
        )  # fmt: skip
        a1 = _gauss_alpha(means[0], s, f, o1, W, H)[..., None]
        a2 = _gauss_alpha(means[1], s, f, o2, W, H)[..., None]
        if z1 < z2:  # Gaussian 1 in front
            w1, w2 = a1, (1 - a1) * a2
        else:
            w1, w2 = (1 - a2) * a1, a2
        T = (1 - a1) * (1 - a2)
        torch.testing.assert_close(img[0, ..., :3], w1 * c1 + w2 * c2 + T * bg[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(img[0, ..., 3:], w1 * z1 + w2 * z2, rtol=1e-12, atol=1e-12)  # "D": no bg
        torch.testing.assert_close(alpha[0], 1 - T, rtol=1e-12, atol=1e-12)


def test_expected_depth_closed_form():
    W, H, f, s = 24, 20, 25.0, 0.1
    V, K = _camera(W, H, f)
    means = torch.tensor([[0.05, 0.0, 2.0], [-0.04, 0.03, 2.6]], dtype=F64)
    img, alpha, _ = rasterization(
        means, _identity_quats(2), torch.full((2, 3), s, dtype=F64), torch.tensor([0.5, 0.8], dtype=F64),
        torch.rand(2, 3, dtype=F64), V, K, W, H, render_mode="RGB+ED",
    )  # fmt: skip
    a1 = _gauss_alpha(means[0], s, f, 0.5, W, H)
    a2 = _gauss_alpha(means[1], s, f, 0.8, W, H)
    w1, w2 = a1, (1 - a1) * a2
    expected = (w1 * 2.0 + w2 * 2.6) / torch.clamp(w1 + w2, min=1e-10)
    torch.testing.assert_close(img[0, ..., 3], expected, rtol=1e-12, atol=1e-12)
    img_ed, _, _ = rasterization(
        means, _identity_quats(2), torch.full((2, 3), s, dtype=F64), torch.tensor([0.5, 0.8], dtype=F64),
        torch.rand(2, 3, dtype=F64), V, K, W, H, render_mode="ED", backgrounds=torch.ones(1, 3, dtype=F64),
    )  # fmt: skip
    assert img_ed.shape == (1, H, W, 1)
    torch.testing.assert_close(img_ed[0, ..., 0], expected, rtol=1e-12, atol=1e-12)


def test_alpha_clamp_threshold_and_termination():
    W, H, f = 16, 16, 20.0
    V, K = _camera(W, H, f)
    # centred exactly on pixel (8, 8)'s centre: sigma = 0 there, so alpha = min(ALPHA_MAX, 1.0) = ALPHA_MAX
    mean = torch.tensor([[0.5 * 2.0 / f, 0.5 * 2.0 / f, 2.0]], dtype=F64)
    _, alpha, _ = rasterization(
        mean, _identity_quats(1), torch.full((1, 3), 0.05, dtype=F64), torch.ones(1, dtype=F64),
        torch.ones(1, 3, dtype=F64), V, K, W, H,
    )  # fmt: skip
    assert float(alpha[0, 8, 8, 0]) == pytest.approx(ALPHA_MAX, abs=1e-15)
    # far corner: opacity * exp(-sigma) is positive but below 1/255 -> nothing at all
    a_raw = _gauss_alpha(mean[0], 0.05, f, 1.0, W, H)
    assert float(a_raw[0, 0]) == 0.0 and float(alpha[0, 0, 0, 0]) == 0.0

    # four identical Gaussians with alpha 0.95 at the centre pixel, different colours, front to back: T goes
    # 0.05, 0.0025, 1.25e-4, then 6.25e-6 <= 1e-4, so the 4th is dropped ("exclusive") and T_final = 1.25e-4
    o = 0.95
    means = torch.tensor([[0.5 * 2.0 / f, 0.5 * 2.0 / f, z] for z in (2.0, 2.0001, 2.0002, 2.0003)], dtype=F64)
    means[:, :2] *= means[:, 2:3] / 2.0  # keep every mean projected exactly onto the pixel centre
    cols = torch.eye(4, dtype=F64)
    img, alpha, _ = rasterization(
        means, _identity_quats(4), torch.full((4, 3), 0.05, dtype=F64), torch.full((4,), o, dtype=F64), cols,
        V, K, W, H,
    )  # fmt: skip
    px = img[0, 8, 8]
    expected = torch.tensor([o, (1 - o) * o, (1 - o) ** 2 * o, 0.0], dtype=F64)
    torch.testing.assert_close(px, expected, rtol=1e-12, atol=1e-15)
    assert float(alpha[0, 8, 8, 0]) == pytest.approx(1 - (1 - o) ** 3, abs=1e-14)

    # alpha exactly 1/255 is kept (the kernel skips alpha < 1/255), the next float below is not
    for opacity, kept in [(ALPHA_MIN, True), (math.nextafter(ALPHA_MIN, 0.0), False)]:
        _, alpha, _ = rasterization(
            mean, _identity_quats(1), torch.full((1, 3), 0.05, dtype=F64), torch.tensor([opacity], dtype=F64),
            torch.ones(1, 3, dtype=F64), V, K, W, H,
        )  # fmt: skip
        assert float(alpha[0, 8, 8, 0]) == (pytest.approx(opacity, rel=1e-12) if kept else 0.0)
        assert float(alpha.sum()) == float(alpha[0, 8, 8, 0])  # no other pixel reaches 1/255


def test_culled_gaussians_contribute_nothing_and_have_radius_zero():
    W, H, f = 20, 16, 20.0
    V, K = _camera(W, H, f)
    means = torch.tensor(
        [
            [0.0, 0.0, 0.005],  # in front of the camera but before the near plane (0.01)
            [0.0, 0.0, -2.0],  # behind the camera
            [50.0, 0.0, 2.0],  # far off-screen
            [0.0, 0.0, 2.0],  # visible
        ],
        dtype=F64,
    )
    bg = torch.tensor([[0.3, 0.6, 0.9]], dtype=F64)
    scales = torch.full((4, 3), 0.1, dtype=F64)
    img, alpha, meta = rasterization(
        means, _identity_quats(4), scales, torch.full((4,), 0.9, dtype=F64), torch.rand(4, 3, dtype=F64), V, K, W,
        H, backgrounds=bg,
    )  # fmt: skip
    assert meta["radii"].dtype == torch.int32 and meta["radii"].shape == (1, 4)
    assert meta["radii"][0, :3].tolist() == [0, 0, 0] and int(meta["radii"][0, 3]) > 0
    # only the visible Gaussian: same image as rendering it alone
    img1, alpha1, _ = rasterization(
        means[3:], _identity_quats(1), scales[3:], torch.full((1,), 0.9, dtype=F64), torch.rand(1, 3, dtype=F64),
        V, K, W, H, backgrounds=bg,
    )  # fmt: skip
    torch.testing.assert_close(alpha, alpha1, rtol=0, atol=0)
    # with only culled Gaussians the image is the background
    img0, alpha0, _ = rasterization(
        means[:3], _identity_quats(3), scales[:3], torch.full((3,), 0.9, dtype=F64), torch.rand(3, 3, dtype=F64),
        V, K, W, H, backgrounds=bg,
    )  # fmt: skip
    assert float(alpha0.abs().max()) == 0.0
    torch.testing.assert_close(img0[0], bg[0].expand(H, W, 3), rtol=0, atol=0)
    # radius_clip culls small Gaussians (gsplat: radius <= radius_clip)
    r = int(meta["radii"][0, 3])
    _, alpha_c, meta_c = rasterization(
        means[3:], _identity_quats(1), scales[3:], torch.full((1,), 0.9, dtype=F64), torch.rand(1, 3, dtype=F64),
        V, K, W, H, radius_clip=float(r),
    )  # fmt: skip
    assert int(meta_c["radii"][0, 0]) == 0 and float(alpha_c.max()) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# against the independent reference; binning, blocks and chunks change nothing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_matches_reference_two_cameras(mode):
    W, H, f = 45, 37, 40.0
    V, K = _second_camera(W, H, f)
    # small Gaussians (radius a few pixels: the tile rectangles matter) and high opacities (pixels saturate)
    means, quats, scales, opac, colors = _random_scene(200, seed=1, scale=(0.01, 0.08), opac=(0.5, 1.0))
    # plus a stack of 12 nearly opaque Gaussians, so that many pixels reach T <= 1e-4 and stop early
    jitter = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    means[:12, :2] = torch.tensor([0.3, -0.2], dtype=F64) + 0.05 * jitter
    scales[:12] = 0.2
    opac[:12] = 0.99
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], dtype=F64)
    img, alpha, meta = rasterization(
        means, quats, scales, opac, colors, V, K, W, H, backgrounds=bg, rasterize_mode=mode, render_mode="RGB+D"
    )
    feats = torch.cat([colors.expand(2, -1, -1), meta["depths"][..., None]], -1)
    ref, ref_a, n_stopped = _reference(
        meta["means2d"], meta["conics"], feats, meta["opacities"], meta["radii"], meta["depths"], W, H,
        backgrounds=torch.cat([bg, torch.zeros(2, 1, dtype=F64)], -1),
    )  # fmt: skip
    assert n_stopped > 30  # some pixels stop early (the termination rule is exercised)
    torch.testing.assert_close(img, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(alpha, ref_a, rtol=1e-10, atol=1e-12)


def test_blocks_chunks_and_segments_change_nothing():
    W, H, f = 45, 37, 40.0
    V, K = _second_camera(W, H, f)
    means, quats, scales, opac, colors = _random_scene(60, seed=2, scale=(0.01, 0.08), opac=(0.5, 0.99))
    params = {
        k: v.clone().requires_grad_(True)
        for k, v in dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors).items()
    }
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], dtype=F64, requires_grad=True)
    configs = [
        dict(),  # default: 8x8 blocks, one chunk
        dict(block_size=16),  # gsplat's own tile size: no ellipse pruning inside a tile
        dict(block_size=2, chunk_pairs=4 * 7, segment=3),  # tiny chunks: one block, 3-entry segments
        dict(chunk_pairs=64 * 5, segment=5),  # one 8x8 block per chunk, 5-entry segments
    ]
    outs = []
    for cfg in configs:
        img, alpha, meta = rasterization(**params, viewmats=V, Ks=K, width=W, height=H, backgrounds=bg, **cfg)
        loss = (img * torch.linspace(0.2, 1.0, 3, dtype=F64)).sum() + (alpha**2).sum()
        grads = torch.autograd.grad(loss, [*params.values(), bg])
        outs.append((img.detach(), alpha.detach(), grads))
    for img, alpha, grads in outs[1:]:
        torch.testing.assert_close(img, outs[0][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alpha, outs[0][1], rtol=1e-12, atol=1e-12)
        for g, g0 in zip(grads, outs[0][2], strict=True):
            torch.testing.assert_close(g, g0, rtol=1e-9, atol=1e-11)


def test_block_pruning_keeps_thin_long_gaussians_float32():
    """The sub-tile binning prunes by each Gaussian's alpha >= 1/255 ellipse; long, thin Gaussians (ill-conditioned
    float32 conics) must lose no pair: the image equals the one binned by gsplat's tile rectangles alone."""
    W, H, f = 64, 48, 60.0
    V, K = _camera(W, H, f, dtype=torch.float32)
    g = torch.Generator().manual_seed(13)
    n = 40
    means = torch.rand(n, 3, generator=g) * 2 - 1
    means[:, 2] = means[:, 2] * 0.5 + 3.0
    scales = torch.full((n, 3), 0.002)
    scales[:, 0] = torch.rand(n, generator=g) * 3 + 0.5  # up to ~60x the image width long, sub-pixel thin
    quats = torch.randn(n, 4, generator=g)
    opac = torch.rand(n, generator=g) * 0.9 + 0.1
    colors = torch.rand(n, 3, generator=g)
    ref, ref_a, _ = rasterization(means, quats, scales, opac, colors, V, K, W, H, block_size=16, eps2d=0.0)
    for block in (8, 4, 2):
        img, alpha, _ = rasterization(means, quats, scales, opac, colors, V, K, W, H, block_size=block, eps2d=0.0)
        torch.testing.assert_close(img, ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(alpha, ref_a, rtol=0, atol=1e-5)
    assert int((ref_a > ALPHA_MIN).sum()) > 300  # the lines cover a good part of the image


# ----------------------------------------------------------------------------------------------------------------
# gradients against finite differences
# ----------------------------------------------------------------------------------------------------------------


def _fd_scene(sh: int | None):
    """4 large, semi-transparent Gaussians on a 12x10 image (one 16x16 tile).

    Chosen away from every discontinuity of the rasterizer, which the test asserts: every (pixel, Gaussian) pair
    has ``1/255 < alpha < ALPHA_MAX`` with a wide margin (so no pair crosses the skip threshold or the clamp under a
    1e-6 perturbation), the transmittance stays far above 1e-4 (no early stop), all Gaussians lie inside the
    frustum clamp of the projection, and the image is a single tile (the tile binning cannot change).
    """
    g = torch.Generator().manual_seed(3)
    W, H, f = 12, 10, 14.0
    V, K = _camera(W, H, f)
    V[0, :3, 3] = torch.tensor([0.02, -0.03, 0.1], dtype=F64)  # not the identity: camera centre enters SH dirs
    means = torch.tensor([[-0.2, 0.1, 2.0], [0.25, -0.15, 2.3], [0.0, 0.2, 2.6], [0.1, 0.0, 2.9]], dtype=F64)
    quats = torch.randn(4, 4, generator=g, dtype=F64)
    scales = torch.tensor([[0.8, 0.64, 0.72], [0.72, 0.96, 0.8], [0.88, 0.8, 0.96], [0.96, 0.88, 0.8]], dtype=F64)
    opac = torch.tensor([0.45, 0.3, 0.5, 0.35], dtype=F64)
    if sh is None:
        colors = torch.rand(4, 3, generator=g, dtype=F64)
    else:
        colors = torch.randn(4, (sh + 1) ** 2, 3, generator=g, dtype=F64) * 0.3
    bg = torch.tensor([[0.2, 0.4, 0.6]], dtype=F64)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors), bg, V, K, W, H


def _pair_alphas(meta, W, H) -> torch.Tensor:
    jj, ii = torch.meshgrid(torch.arange(W), torch.arange(H), indexing="xy")
    px, py = jj.to(F64) + 0.5, ii.to(F64) + 0.5
    m, c, o = meta["means2d"][0].detach(), meta["conics"][0].detach(), meta["opacities"][0].detach()
    dx, dy = m[:, 0, None, None] - px, m[:, 1, None, None] - py
    sigma = 0.5 * (c[:, 0, None, None] * dx**2 + c[:, 2, None, None] * dy**2) + c[:, 1, None, None] * dx * dy
    return o[:, None, None] * torch.exp(-sigma)


@pytest.mark.parametrize(
    "sh,mode,render_mode",
    [(None, "classic", "RGB+ED"), (1, "classic", "RGB"), (None, "antialiased", "RGB+D"), (1, "antialiased", "RGB")],
)
def test_gradients_match_finite_differences(sh, mode, render_mode):
    params, bg, V, K, W, H = _fd_scene(sh)
    kw = dict(sh_degree=sh, rasterize_mode=mode, render_mode=render_mode)
    if render_mode == "RGB":
        params["bg"] = bg
    D = 3 + (render_mode != "RGB")
    gen = torch.Generator().manual_seed(11)
    wi = torch.rand(1, H, W, D, generator=gen, dtype=F64)
    wa = torch.rand(1, H, W, 1, generator=gen, dtype=F64)

    def loss_fn(p: dict) -> torch.Tensor:
        bgs = p.get("bg")
        img, alpha, meta = rasterization(
            p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], V, K, W, H, backgrounds=bgs, **kw
        )
        return (img * wi).sum() + (alpha * wa).sum(), meta

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss, meta = loss_fn(leaves)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    a = _pair_alphas(meta, W, H)
    assert float(a.min()) > 3 * ALPHA_MIN and float(a.max()) < 0.8 * ALPHA_MAX
    assert float(torch.prod(1 - a, dim=0).min()) > 100 * TRANSMITTANCE_MIN
    assert (meta["radii"] > 0).all()

    eps = 1e-6

    def central(name: str, direction: torch.Tensor) -> float:
        hi = {k: v.clone() for k, v in params.items()}
        lo = {k: v.clone() for k, v in params.items()}
        hi[name] += eps * direction
        lo[name] -= eps * direction
        with torch.no_grad():
            return float((loss_fn(hi)[0] - loss_fn(lo)[0]) / (2 * eps))

    for (name, value), grad in zip(params.items(), grads, strict=True):
        if name != "colors":  # every coordinate
            fd = torch.zeros_like(value)
            for i in range(value.numel()):
                e_i = torch.zeros(value.numel(), dtype=F64)
                e_i[i] = 1.0
                fd.view(-1)[i] = central(name, e_i.view_as(value))
            torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
        else:  # colours / SH coefficients enter linearly (up to the clamp): 4 random directions
            for _ in range(4):
                v = torch.randn(value.shape, generator=gen, dtype=F64)
                assert float((grad * v).sum()) == pytest.approx(central(name, v), rel=1e-6, abs=1e-7), name


def test_gradients_at_the_clamp_and_with_early_stop():
    """Finite differences where the kernel clamps alpha at ALPHA_MAX (no gradient through the clamped pixel) and
    where pixels stop early (Gaussians behind the stop get nothing). The scene keeps every pair away from the
    discontinuities, which the test asserts: the clamped pixel sits exactly on a Gaussian's centre (sigma = 0, far
    inside the clamped region sigma < 1e-3), every other pair is away from the clamp and 1/255, and every running
    transmittance is away from 1e-4."""
    W, H, f = 12, 10, 14.0
    V, K = _camera(W, H, f)
    # Gaussian 0 projects exactly onto the centre of pixel (6, 5): principal point (6, 5) + (0.5, 0.5) = f * x / z
    c = 0.5 * 2.0 / f
    means = torch.tensor([[c, c, 2.0], [0.05, 0.02, 2.2], [-0.04, 0.03, 2.4], [0.3, -0.2, 2.6]], dtype=F64)
    quats = [[1.0, 0.1, 0.0, 0.0], [0.9, 0.0, 0.2, 0.1], [1.0, 0.0, 0.0, 0.3], [0.8, 0.1, 0.1, 0.0]]
    params = dict(
        means=means,
        quats=torch.tensor(quats, dtype=F64),
        scales=torch.tensor([[0.45, 0.4, 0.4], [0.65, 0.6, 0.5], [0.7, 0.8, 0.65], [0.9, 0.8, 0.85]], dtype=F64),
        opacities=torch.tensor([1.0, 0.99, 0.98, 0.8], dtype=F64),
        colors=torch.rand(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64),
    )
    gen = torch.Generator().manual_seed(12)
    wi = torch.rand(1, H, W, 3, generator=gen, dtype=F64)
    wa = torch.rand(1, H, W, 1, generator=gen, dtype=F64)

    def loss_fn(p):
        img, alpha, meta = _render(p, V, K, W, H)
        return (img * wi).sum() + (alpha * wa).sum(), meta

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss, meta = loss_fn(leaves)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    a = _pair_alphas(meta, W, H)  # [4, H, W] opacity * exp(-sigma), Gaussians already in depth order
    assert float(a[0, 5, 6]) == 1.0  # exactly on the centre: clamped to ALPHA_MAX
    others = torch.ones_like(a, dtype=torch.bool)
    others[0, 5, 6] = False
    assert float(a[others].max()) < 0.99 * ALPHA_MAX and float(a.min()) > 2 * ALPHA_MIN
    T = torch.cumprod(1 - a.clamp(max=ALPHA_MAX), dim=0)
    assert float(((T / TRANSMITTANCE_MIN).log().abs()).min()) > 0.1  # no running T within 10% of 1e-4
    assert int((T <= TRANSMITTANCE_MIN).any(0).sum()) >= 3  # some pixels stop early

    eps = 1e-6
    for (name, value), grad in zip(params.items(), grads, strict=True):
        fd = torch.zeros_like(value)
        for i in range(value.numel()):
            hi = {k: v.clone() for k, v in params.items()}
            lo = {k: v.clone() for k, v in params.items()}
            hi[name].view(-1)[i] += eps
            lo[name].view(-1)[i] -= eps
            with torch.no_grad():
                fd.view(-1)[i] = (loss_fn(hi)[0] - loss_fn(lo)[0]) / (2 * eps)
        torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")


# ----------------------------------------------------------------------------------------------------------------
# meta: means2d gradient, absgrad, gsplat's DefaultStrategy
# ----------------------------------------------------------------------------------------------------------------


def test_means2d_grad_and_absgrad():
    params, bg, V, K, W, H = _fd_scene(None)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    img, alpha, meta = _render(leaves, V, K, W, H, absgrad=True)
    for key in ("means2d", "conics", "opacities"):
        meta[key].retain_grad()
    weights = torch.rand(img.shape, generator=torch.Generator().manual_seed(5), dtype=F64) - 0.5
    (img * weights).sum().backward(retain_graph=True)
    g2d = meta["means2d"].grad
    assert g2d is not None and g2d.shape == (1, 4, 2)
    # the retained grads are d loss / d (projection outputs): pushing them through the projection gives means.grad
    # (plain colours, classic mode, RGB: means reach the image only through means2d, conics and the depth order)
    chain = torch.autograd.grad(
        [meta["means2d"], meta["conics"]], leaves["means"], [g2d, meta["conics"].grad], retain_graph=True
    )[0]
    torch.testing.assert_close(chain, leaves["means"].grad, rtol=1e-10, atol=1e-12)

    # absgrad = sum over pixels of |per-pixel d loss_p / d means2d|, per component (gsplat's CUDA backward)
    absgrad = meta["means2d"].absgrad
    assert absgrad.shape == (1, 4, 2)
    m2d = meta["means2d"].detach().clone().requires_grad_(True)
    plan_img, _ = _rasterize_from_projection(meta, m2d, leaves, W, H)
    expected = torch.zeros_like(absgrad)
    for i in range(H):
        for j in range(W):
            (gp,) = torch.autograd.grad((plan_img[0, i, j] * weights[0, i, j]).sum(), m2d, retain_graph=True)
            expected += gp.abs()
    torch.testing.assert_close(absgrad, expected, rtol=1e-10, atol=1e-12)
    assert (absgrad >= g2d.abs() - 1e-12).all() and (absgrad > g2d.abs() + 1e-6).any()

    # without absgrad=True no attribute is set
    img2, _, meta2 = _render(leaves, V, K, W, H)
    meta2["means2d"].retain_grad()
    img2.sum().backward()
    assert meta2["means2d"].grad is not None and not hasattr(meta2["means2d"], "absgrad")


def _rasterize_from_projection(meta, means2d, leaves, W, H):
    """Composite the projected Gaussians of ``meta`` with ``means2d`` replaced (a leaf), other inputs detached."""
    colors = leaves["colors"].detach().expand(1, -1, -1)
    conics = meta["conics"].detach()
    plan = rc._build_plan(
        means2d.detach(), conics, meta["radii"], meta["depths"].detach(), meta["opacities"].detach(),
        _cov_diag_from_conics(conics), W, H, 16, 8, rc._DEFAULT_CHUNK_PAIRS, rc._DEFAULT_SEGMENT,
    )  # fmt: skip
    return rc._RasterizeToPixels.apply(
        means2d, meta["conics"].detach(), colors, meta["opacities"].detach(), None, plan, False
    )


def _cov_diag_from_conics(conics: torch.Tensor) -> torch.Tensor:
    a, b, c = conics.unbind(-1)
    det = a * c - b * b
    return torch.stack([c / det, a / det], -1)


@pytest.mark.parametrize("absgrad", [False, True])
def test_gsplat_default_strategy_runs_on_cpu(absgrad):
    from gsplat.strategy import DefaultStrategy

    torch.manual_seed(0)
    W, H, f = 32, 24, 30.0
    V, K = _camera(W, H, f, dtype=torch.float32)
    means, quats, scales, opac, _ = _random_scene(50, seed=4, dtype=torch.float32, scale=(0.02, 0.1))
    means[0] = torch.tensor([0.0, 0.0, -1.0])  # one behind the camera: radius 0, never counted
    sh = torch.randn(50, 4, 3) * 0.2
    params = torch.nn.ParameterDict(
        {
            "means": means,
            "scales": torch.log(scales),
            "quats": quats,
            "opacities": torch.logit(opac),
            "sh0": sh[:, :1],
            "shN": sh[:, 1:],
        }
    )
    optimizers = {k: torch.optim.Adam([{"params": p, "lr": 1e-3, "name": k}]) for k, p in params.items()}
    strategy = DefaultStrategy(refine_start_iter=1, refine_every=2, reset_every=1000, absgrad=absgrad)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.rand(1, H, W, 3)
    for step in range(3):
        img, _, info = dispatch_rasterization(
            means=params["means"], quats=params["quats"], scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]), colors=torch.cat([params["sh0"], params["shN"]], 1),
            viewmats=V, Ks=K, width=W, height=H, packed=False, sh_degree=1, absgrad=absgrad,
        )  # fmt: skip
        strategy.step_pre_backward(params, optimizers, state, step, info)
        ((img - target) ** 2).mean().backward()
        if step == 0:
            visible = info["radii"][0] > 0
            assert not bool(visible[0]) and int(visible.sum()) > 10
            grad = info["means2d"].absgrad if absgrad else info["means2d"].grad
            assert grad.shape == (1, 50, 2) and float(grad[0, visible].abs().sum()) > 0
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        if step == 0:
            assert state["count"].tolist() == visible.float().tolist()
            assert float(state["grad2d"][visible].min()) > 0 and float(state["grad2d"][~visible].abs().max()) == 0
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
    assert len(params["means"]) > 0  # the refine step at step 2 (grow + prune) ran on CPU tensors


# ----------------------------------------------------------------------------------------------------------------
# options, dtype, dispatcher
# ----------------------------------------------------------------------------------------------------------------


def test_float32_matches_float64_and_meta_keys():
    W, H, f = 40, 30, 35.0
    V, K = _camera(W, H, f)
    scene = _random_scene(80, seed=5)
    img64, a64, meta = rasterization(*scene, V, K, W, H)
    img32, a32, _ = rasterization(*(t.float() for t in scene), V.float(), K.float(), W, H)
    assert img32.dtype == torch.float32 and a32.dtype == torch.float32
    torch.testing.assert_close(img32.double(), img64, rtol=0, atol=1e-4)
    expected_keys = {
        "camera_ids", "gaussian_ids", "radii", "means2d", "depths", "conics", "opacities", "tile_width",
        "tile_height", "tiles_per_gauss", "width", "height", "tile_size", "n_cameras",
    }  # fmt: skip
    assert expected_keys <= set(meta)
    assert meta["camera_ids"] is None and meta["gaussian_ids"] is None
    assert meta["n_cameras"] == 1 and meta["tile_width"] == 3 and meta["tile_height"] == 2
    assert meta["tiles_per_gauss"].dtype == torch.int32 and meta["tiles_per_gauss"].shape == (1, 80)


def test_unsupported_options_raise_value_error():
    W, H, f = 16, 16, 20.0
    V, K = _camera(W, H, f, dtype=torch.float32)
    scene = _random_scene(5, seed=6, dtype=torch.float32)
    for kw in (dict(packed=True), dict(sparse_grad=True), dict(camera_model="fisheye"), dict(distributed=True)):
        with pytest.raises(ValueError):
            dispatch_rasterization(*scene, V, K, W, H, **{"packed": False, **kw})
    with pytest.raises(ValueError):
        dispatch_rasterization(*scene, V, K, W, H)  # gsplat's default packed=True is not available on CPU
    img, alpha, meta = dispatch_rasterization(*scene, V, K, W, H, packed=False, channel_chunk=1)
    assert img.shape == (1, H, W, 3) and alpha.shape == (1, H, W, 1)


# ----------------------------------------------------------------------------------------------------------------
# GPU: the same scene through gsplat's CUDA kernels
# ----------------------------------------------------------------------------------------------------------------


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "mode,sh,render_mode", [("classic", 1, "RGB"), ("antialiased", 1, "RGB"), ("classic", None, "RGB+ED")]
)
def test_matches_gsplat_cuda(mode, sh, render_mode):
    """The same float32 scene (300 Gaussians, 2 cameras, 64x48) through this rasterizer on CPU and gsplat on CUDA.

    Tolerances: CUDA evaluates ``__expf`` and float32 sequential products, so a pair sitting right at the 1/255 cut
    or a running transmittance right at 1e-4 can fall the other way (one flipped pair moves a pixel by about 1/255).
    Hence: radii equal for >= 99% of (camera, Gaussian) and off by at most 1; colour channels and alpha: mean |diff|
    <= 2e-4, >= 99.5% of values within 1e-3, all within 2e-2; expected depth (RGB+ED): relative diff <= 1e-3 on >= 99%
    of the pixels with alpha > 0.05; gradients: cosine similarity > 0.99 per parameter tensor, for means2d.grad and
    for means2d.absgrad."""
    import gsplat

    W, H, f = 64, 48, 60.0
    means, quats, scales, opac, colors = _random_scene(300, seed=8, dtype=torch.float32, sh=sh)
    V, K = _second_camera(W, H, f, dtype=torch.float32)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], dtype=torch.float32)
    w = torch.rand(2, H, W, 3 + (render_mode == "RGB+ED"), generator=torch.Generator().manual_seed(9))
    results = []
    for device in ("cpu", "cuda"):
        leaves = [t.detach().clone().to(device).requires_grad_(True) for t in (means, quats, scales, opac, colors)]
        fn = rasterization if device == "cpu" else gsplat.rasterization
        img, alpha, meta = fn(
            *leaves, V.to(device), K.to(device), W, H, sh_degree=sh, packed=False, rasterize_mode=mode,
            render_mode=render_mode, backgrounds=bg.to(device), absgrad=True,
        )  # fmt: skip
        meta["means2d"].retain_grad()
        ((img * w.to(device)).sum() + alpha.sum()).backward()
        grads = [t.grad.cpu() for t in leaves] + [meta["means2d"].grad.cpu(), meta["means2d"].absgrad.cpu()]
        results.append((img.detach().cpu(), alpha.detach().cpu(), meta["radii"].cpu(), grads))
    (img_c, a_c, r_c, g_c), (img_g, a_g, r_g, g_g) = results
    assert float((r_c == r_g).float().mean()) >= 0.99 and int((r_c - r_g).abs().max()) <= 1
    for x_c, x_g in ((img_c[..., :3], img_g[..., :3]), (a_c, a_g)):
        diff = (x_c - x_g).abs()
        assert float(diff.mean()) <= 2e-4 and float((diff <= 1e-3).float().mean()) >= 0.995, float(diff.max())
        assert float(diff.max()) <= 2e-2
    if render_mode == "RGB+ED":
        covered = (a_c[..., 0] > 0.05) & (a_g[..., 0] > 0.05)
        rel = ((img_c[..., 3] - img_g[..., 3]).abs() / img_g[..., 3].abs().clamp(min=1e-6))[covered]
        assert covered.sum() > 100 and float((rel <= 1e-3).float().mean()) >= 0.99
    names = ["means", "quats", "scales", "opacities", "colors", "means2d", "absgrad"]
    for name, gc, gg in zip(names, g_c, g_g, strict=True):
        assert _cosine(gc, gg) > 0.99, name

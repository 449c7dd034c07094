"""A differentiable pure-PyTorch 3D Gaussian-splat rasterizer for CPU with gsplat 1.4.0's conventions.

gsplat has no CPU path (even ``gsplat.rendering._rasterization`` calls CUDA kernels for tile binning), so
:func:`rasterization` here re-implements ``gsplat.rasterization(..., packed=False)`` for CPU tensors:

- **Projection** reuses gsplat's own pure-torch functions (``_quat_scale_to_covar_preci``, ``_world_to_cam``,
  ``_persp_proj``, ``_spherical_harmonics`` from ``gsplat/cuda/_torch_impl.py``) and follows
  ``cuda/csrc/fully_fused_projection_fwd.cu`` for the rest (eps2d blur, ``det <= 0`` culling, compensation, the
  3-sigma radius, ``radius_clip``, near/far and off-screen culling), differentiated by autograd.
- **Binning** reproduces ``cuda/csrc/isect_tiles.cu``: a Gaussian is evaluated at a pixel only if the pixel's
  ``tile_size`` tile lies in the Gaussian's tile rectangle, in front-to-back depth order (ties by Gaussian index,
  as gsplat's stable radix sort). Internally pixels are processed in smaller ``block_size`` blocks, and a Gaussian is
  binned to a block only if the block also meets the bounding box of the ellipse where its alpha can reach 1/255.
  Pairs left out that way are exactly pairs the CUDA kernel skips (``alpha < 1/255``), so every pixel sees the same
  sequence of contributing Gaussians as gsplat, for less work.
- **Compositing** follows ``cuda/csrc/rasterize_to_pixels_fwd.cu``/``_bwd.cu``: ``alpha = min(ALPHA_MAX,
  opacity * exp(-sigma))``, skip if ``sigma < 0`` or ``alpha < 1/255``, stop *before* the Gaussian that would take
  the transmittance to ``<= 1e-4``, colour ``+ T_final * background``. It is a :class:`torch.autograd.Function`
  with a hand-written backward (the same formulas as gsplat's CUDA backward, which also give ``absgrad``).

Memory is bounded: pixels are processed in chunks of blocks and each block's depth-sorted list in segments
(carrying the transmittance; a chunk stops as soon as all its pixels have reached ``T <= 1e-4``), each step
evaluating at most ``chunk_pairs`` (pixel, Gaussian) pairs. The forward keeps no pair quantities: it saves the
per-Gaussian projected inputs, the binning (one int64 per block intersection, plus the padded per-chunk index
lists), the transmittance entering each segment and each pixel's final transmittance. The backward recomputes each
segment's pair quantities back to front and reduces them straight into per-Gaussian gradients (and ``absgrad``,
the per-pixel absolute 2D-mean gradients summed over pixels, as gsplat's CUDA backward accumulates them).

Deviations from gsplat, all below float rounding or outside what the kernels define: the kernel's ``__expf`` and
float32 sequential products are replaced by ``exp`` and ``cumprod`` (which accumulates float32 in float64), so pairs
that sit exactly at the 1/255 cut, the ``ALPHA_MAX`` clamp or the ``1e-4`` stop can fall the other way; ``sigma`` is
capped at 80 before ``exp`` (such pairs are skipped either way); "skip ``sigma < 0``" is "skip ``sigma < -tiny``"
(the smallest normal float). Culled Gaussians get finite (meaningless) ``means2d``/``conics`` where gsplat leaves
uninitialised memory, and meta has no ``isect_ids``/``flatten_ids``/``isect_offsets`` (CUDA-kernel buffers).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from gsplat.cuda._torch_impl import _persp_proj, _quat_scale_to_covar_preci, _spherical_harmonics, _world_to_cam
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "TRANSMITTANCE_MIN",
    "RenderMode",
    "RasterizeMode",
    "project_gaussians",
    "rasterization",
]

# gsplat 1.4.0 cuda/csrc/rasterize_to_pixels_fwd.cu: ``S alpha = min(0.999f, opac * __expf(-sigma));`` (the same
# constant in rasterize_to_pixels_bwd.cu, where ``opac * vis <= 0.999f`` gates the opacity/conic/mean gradients).
# The original 3DGS CUDA rasterizer used 0.99.
ALPHA_MAX = 0.999
# rasterize_to_pixels_fwd.cu: ``if (sigma < 0.f || alpha < 1.f / 255.f) continue;``
ALPHA_MIN = 1.0 / 255.0
# rasterize_to_pixels_fwd.cu: ``if (next_T <= 1e-4) { done = true; break; }`` (exclusive: that Gaussian is dropped)
TRANSMITTANCE_MIN = 1e-4

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RasterizeMode = Literal["classic", "antialiased"]

# Defaults measured on a 2-core Xeon (scripts/bench_rasterizer.py): 64k pairs keep each float32 temporary at
# 256 KB (cache-resident); 256-entry segments let chunks whose pixels are all saturated stop early.
_DEFAULT_CHUNK_PAIRS = 1 << 16  # (pixel, Gaussian) pairs evaluated at once
_DEFAULT_SEGMENT = 256  # depth-sorted list entries per step
_SMALL_RADIUS = 12.0  # mean pixel radius below which 4x4 blocks beat 8x8 ones (tighter fit vs. more intersections)
_SIGMA_CAP = 80.0


# ----------------------------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Projection:
    """Per-camera projected Gaussians, all ``[C, N, ...]`` (values of culled Gaussians are finite but meaningless).

    Attributes:
        radii: int32 pixel radius (3 sigma), 0 for culled Gaussians (as gsplat).
        means2d: pixel-space centres (differentiable).
        depths: camera-space z (differentiable).
        conics: inverse of the blurred 2D covariance, upper triangle (a, b, c) (differentiable).
        compensations: ``sqrt(det(cov2d) / det(cov2d + eps2d I))`` or None (differentiable).
        cov_diag: diagonal of the blurred 2D covariance (detached; used only for binning).
    """

    radii: Tensor
    means2d: Tensor
    depths: Tensor
    conics: Tensor
    compensations: Tensor | None
    cov_diag: Tensor


def project_gaussians(
    means: Tensor,
    quats: Tensor | None,
    scales: Tensor | None,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
    covars: Tensor | None = None,
) -> Projection:
    """EWA projection of 3D Gaussians for pinhole cameras, as gsplat's ``fully_fused_projection`` (non-packed).

    Uses gsplat's pure-torch ``_quat_scale_to_covar_preci``/``_world_to_cam``/``_persp_proj`` and reproduces the rest
    of ``fully_fused_projection_fwd.cu``: ``det`` of the blurred covariance without gsplat-torch's ``1e-10`` clamp
    (``det <= 0`` culls), ``z < near_plane`` or ``z > far_plane`` culls, ``radius <= radius_clip`` culls, off-screen
    culls. Culled Gaussians are evaluated at safe stand-in values so that their (unused) outputs and gradients stay
    finite.

    Args:
        means: [N, 3] world-space centres.
        quats: [N, 4] quaternions (wxyz, normalised inside); ignored if ``covars`` is given.
        scales: [N, 3] scales (already exponentiated); ignored if ``covars`` is given.
        viewmats: [C, 4, 4] world-to-camera matrices (OpenCV convention).
        Ks: [C, 3, 3] intrinsics.
        width: image width in pixels.
        height: image height in pixels.
        eps2d: added to the diagonal of the 2D covariance.
        near_plane: Gaussians with camera z below this are culled.
        far_plane: Gaussians with camera z above this are culled.
        radius_clip: Gaussians with pixel radius ``<=`` this are culled.
        calc_compensations: also return the antialiasing compensation factors.
        covars: optional [N, 3, 3] world covariances used instead of quats/scales.

    Returns:
        A :class:`Projection`.
    """
    if covars is None:
        if quats is None or scales is None:
            raise ValueError("project_gaussians needs quats and scales, or covars")
        covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False, triu=False)
    means_c, covars_c = _world_to_cam(means, covars, viewmats)  # [C, N, 3], [C, N, 3, 3]
    depths = means_c[..., 2]
    with torch.no_grad():
        # fully_fused_projection_fwd.cu: ``if (mean_c.z < near_plane || mean_c.z > far_plane) radii = 0``
        depth_ok = (depths >= near_plane) & (depths <= far_plane)
    stand_in = torch.tensor([0.0, 0.0, 1.0], dtype=means_c.dtype, device=means_c.device)
    means_c_safe = torch.where(depth_ok[..., None], means_c, stand_in)
    means2d, cov2d = _persp_proj(means_c_safe, covars_c, Ks, width, height)  # [C, N, 2], [C, N, 2, 2]

    c00, c01, c10, c11 = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 0], cov2d[..., 1, 1]
    det_orig = c00 * c11 - c01 * c10
    c00 = c00 + eps2d
    c11 = c11 + eps2d
    det = c00 * c11 - c01 * c10  # add_blur() in utils.cuh
    with torch.no_grad():
        det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c11 / det_safe, -(c01 + c10) / 2.0 / det_safe, c00 / det_safe], dim=-1)

    compensations = None
    if calc_compensations:
        ratio = det_orig / det_safe
        positive = ratio > 0
        # sqrt(max(0, det_orig / det_blur)) with a zero (not NaN) gradient where the ratio is clamped
        compensations = torch.where(positive, torch.sqrt(torch.where(positive, ratio, torch.ones_like(ratio))), 0.0)

    with torch.no_grad():
        b = 0.5 * (c00 + c11)
        v1 = b + torch.sqrt(torch.clamp(b * b - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        valid = depth_ok & det_ok & (radius > radius_clip) & inside
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)
        cov_diag = torch.stack([c00, c11], dim=-1).detach()
    return Projection(radii, means2d, depths, conics, compensations, cov_diag)


# ----------------------------------------------------------------------------------------------------------------
# Binning
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """Blocks rendered together, their lists padded to ``length`` and walked ``segment`` entries at a time.

    The forward fills ``xs``/``ys`` (pixel centres of the block columns/rows), ``ids`` (the attribute-table row of
    every padded list entry, per segment processed) and ``carries`` (the transmittance entering each of those
    segments); the backward reuses them.
    """

    blocks: Tensor  # [nb] flat block ids
    length: int
    segment: int
    xs: Tensor | None = None
    ys: Tensor | None = None
    ids: list[Tensor] = field(default_factory=list)
    carries: list[Tensor] = field(default_factory=list)


@dataclass
class _Plan:
    """Which Gaussians each pixel block evaluates, in depth order, and how blocks are grouped into chunks."""

    C: int
    N: int
    width: int
    height: int
    block: int
    n_bx: int
    n_by: int
    sorted_ids: Tensor  # [n_isects + 1] int64 flat Gaussian index (c * N + g) by block, front to back; + dummy C * N
    block_offsets: Tensor  # [C * n_by * n_bx] int64 start of each block's run in sorted_ids
    block_counts: Tensor  # [C * n_by * n_bx] int64
    chunks: list[_Chunk]
    tiles_per_gauss: Tensor  # [C, N] int32, gsplat's count of tiles per Gaussian

    @property
    def n_blocks(self) -> int:
        return self.C * self.n_by * self.n_bx

    @property
    def pixels_per_block(self) -> int:
        return self.block * self.block


@torch.no_grad()
def _build_plan(
    means2d: Tensor,
    conics: Tensor,
    radii: Tensor,
    depths: Tensor,
    opacities: Tensor,
    cov_diag: Tensor,
    width: int,
    height: int,
    tile_size: int,
    block: int,
    chunk_pairs: int,
    segment: int,
) -> _Plan:
    """Bin Gaussians to pixel blocks (vectorised; no Python loop over Gaussians).

    A Gaussian goes to block ``s`` iff ``s`` lies inside its gsplat tile rectangle (``isect_tiles.cu``: ``floor`` /
    ``ceil`` of ``(mean2d -/+ radius) / tile_size`` clamped to the tile grid) and ``s`` meets the bounding box (with
    slack) of the ellipse ``sigma <= ln(255 * opacity)`` outside which ``alpha < 1/255``.
    """
    C, N = radii.shape
    device = means2d.device
    dtype = means2d.dtype
    tile_w = math.ceil(width / tile_size)
    tile_h = math.ceil(height / tile_size)
    n_bx = math.ceil(width / block)
    n_by = math.ceil(height / block)
    per_tile = tile_size // block

    m2d = means2d.detach()
    mx, my = m2d[..., 0], m2d[..., 1]
    visible = radii > 0
    r = radii.to(dtype)
    # gsplat's tile rectangle [min, max) in tile units
    tx, ty, tr = mx / tile_size, my / tile_size, r / tile_size
    t_x0 = torch.floor(tx - tr).clamp(0, tile_w).to(torch.int64)
    t_x1 = torch.ceil(tx + tr).clamp(0, tile_w).to(torch.int64)
    t_y0 = torch.floor(ty - tr).clamp(0, tile_h).to(torch.int64)
    t_y1 = torch.ceil(ty + tr).clamp(0, tile_h).to(torch.int64)
    tiles_per_gauss = ((t_x1 - t_x0) * (t_y1 - t_y0) * visible).to(torch.int32)

    # ellipse where alpha can reach 1/255: sigma = 0.5 d^T Q d <= ln(255 * opacity), Q the conic; its half-extents are
    # sqrt(2 thr Sigma_xx), sqrt(2 thr Sigma_yy) with Sigma = Q^-1. Sigma is taken as the larger of the blurred 2D
    # covariance and the inverse of the (rounded) conic the compositing actually uses (in float64: for thin, long
    # Gaussians the float32 conic can be ill-conditioned), plus slack against the rounding of sigma.
    opa = opacities.detach().to(torch.float64)
    can_show = visible & (opa * 255.0 >= 0.999)
    thr = torch.log(torch.clamp(opa * 255.0, min=1.0)) * 1.01 + 1e-3
    q = conics.detach().to(torch.float64)
    det_q = q[..., 0] * q[..., 2] - q[..., 1] * q[..., 1]
    inv_ok = det_q > 0
    det_q = torch.where(inv_ok, det_q, 1.0)
    huge = torch.full_like(det_q, float("inf"))
    s_xx = torch.maximum(cov_diag[..., 0].double(), torch.where(inv_ok, q[..., 2] / det_q, huge))
    s_yy = torch.maximum(cov_diag[..., 1].double(), torch.where(inv_ok, q[..., 0] / det_q, huge))
    ex = (torch.sqrt(2.0 * thr * s_xx.clamp(min=0)) * 1.01 + 1.0).to(dtype)
    ey = (torch.sqrt(2.0 * thr * s_yy.clamp(min=0)) * 1.01 + 1.0).to(dtype)
    big = float(max(n_bx, n_by) + 2) * block
    # pixel j's centre is j + 0.5: j in [mx - ex - 0.5, mx + ex - 0.5]; block = floor(j / block)
    e_x0 = torch.floor(((mx - ex - 0.5).clamp(-big, big)) / block).to(torch.int64)
    e_x1 = torch.floor(((mx + ex - 0.5).clamp(-big, big)) / block).to(torch.int64) + 1
    e_y0 = torch.floor(((my - ey - 0.5).clamp(-big, big)) / block).to(torch.int64)
    e_y1 = torch.floor(((my + ey - 0.5).clamp(-big, big)) / block).to(torch.int64) + 1

    b_x0 = torch.maximum(e_x0, t_x0 * per_tile).clamp(0, n_bx)
    b_x1 = torch.minimum(e_x1, t_x1 * per_tile).clamp(0, n_bx)
    b_y0 = torch.maximum(e_y0, t_y0 * per_tile).clamp(0, n_by)
    b_y1 = torch.minimum(e_y1, t_y1 * per_tile).clamp(0, n_by)
    wx = (b_x1 - b_x0).clamp(min=0)
    wy = (b_y1 - b_y0).clamp(min=0)
    counts = (wx * wy * can_show).reshape(-1)  # [C * N]

    # front-to-back rank per camera; ties broken by Gaussian index (gsplat's radix sort is stable)
    order = torch.sort(depths.detach(), dim=1, stable=True).indices  # [C, N]: Gaussian of each rank
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=device).expand(C, N).contiguous())
    order_flat = (order + N * torch.arange(C, device=device)[:, None]).reshape(-1)

    total = int(counts.sum())
    n_blocks = C * n_by * n_bx
    if total > 0:
        # one key per (Gaussian, block) pair: key = block * N + rank, block = (cam * n_by + by) * n_bx + bx. Keys are
        # unique, so sorting the keys alone (numpy's vectorised sort; no argsort) orders the pairs by block, then
        # front to back, and the Gaussian is recovered from the rank.
        cam_ids = torch.arange(C, device=device)[:, None]
        base = ((cam_ids * n_by + b_y0) * n_bx + b_x0) * N + rank  # [C, N]: key of each Gaussian's first block
        flat_ids = torch.repeat_interleave(torch.arange(C * N, device=device), counts)
        local = torch.arange(total, device=device)
        local -= torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)  # index within the rectangle
        w_rep = wx.reshape(-1)[flat_ids]
        row = torch.div(local, w_rep, rounding_mode="floor")
        local -= row * w_rep  # column within the rectangle
        keys = base.reshape(-1)[flat_ids]
        del flat_ids, w_rep
        keys += (row * n_bx + local) * N
        del row, local
        keys = torch.from_numpy(np.sort(keys.cpu().numpy())).to(device)
        blk = torch.div(keys, N, rounding_mode="floor")
        keys -= blk * N  # rank
        block_counts = torch.bincount(blk, minlength=n_blocks)
        keys += torch.div(blk, n_by * n_bx, rounding_mode="floor") * N  # cam * N + rank
        del blk
        sorted_ids = order_flat[keys]
        del keys
    else:
        sorted_ids = torch.zeros(0, dtype=torch.int64, device=device)
        block_counts = torch.zeros(n_blocks, dtype=torch.int64, device=device)
    block_offsets = torch.cumsum(block_counts, 0) - block_counts

    # chunks: busiest blocks first, each padded to its first (longest) list; a chunk takes blocks while it stays
    # within chunk_pairs and, unless it is small anyway, while lists are at least half the padded length
    P = block * block
    active = torch.nonzero(block_counts > 0).flatten()
    lengths, idx = torch.sort(block_counts[active], descending=True)
    active = active[idx]
    lengths_list = lengths.tolist()
    chunks: list[_Chunk] = []
    i, n_active = 0, len(lengths_list)
    small = chunk_pairs // 8
    while i < n_active:
        l_max = int(lengths_list[i])
        seg = max(1, min(l_max, segment, chunk_pairs // P))
        nb = max(1, chunk_pairs // (P * seg))
        j = min(n_active, i + nb)
        k = i + 1
        while k < j and (lengths_list[k] * 2 >= l_max or (k + 1 - i) * P * l_max <= small):
            k += 1
        chunks.append(_Chunk(active[i:k], l_max, seg))
        i = k
    return _Plan(
        C=C,
        N=N,
        width=width,
        height=height,
        block=block,
        n_bx=n_bx,
        n_by=n_by,
        sorted_ids=torch.cat([sorted_ids, sorted_ids.new_full((1,), C * N)]),
        block_offsets=block_offsets,
        block_counts=block_counts,
        chunks=chunks,
        tiles_per_gauss=tiles_per_gauss,
    )


def _block_axes(plan: _Plan, blocks: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Pixel-centre x of each block column and y of each block row, ([nb, B], [nb, B]), for flat block ids."""
    B = plan.block
    local = blocks % (plan.n_by * plan.n_bx)
    by = torch.div(local, plan.n_bx, rounding_mode="floor")
    bx = local % plan.n_bx
    r = torch.arange(B, device=blocks.device)
    return (bx[:, None] * B + r).to(dtype) + 0.5, (by[:, None] * B + r).to(dtype) + 0.5


def _segment_ids(plan: _Plan, blocks: Tensor, start: int, length: int) -> Tensor:
    """Attribute-table rows of list entries ``[start, start + length)`` of each block: [nb, length] int64.

    Entries past a block's list point at the dummy row ``C * N`` (opacity 0: always skipped as ``alpha < 1/255``).
    """
    pos = torch.arange(start, start + length, device=blocks.device)
    where = plan.block_offsets[blocks][:, None] + pos
    where = torch.where(pos < plan.block_counts[blocks][:, None], where, plan.sorted_ids.numel() - 1)
    return plan.sorted_ids[where]


def _rows(table: Tensor, ids: Tensor) -> Tensor:
    """``table[ids]`` ([nb, L, K]) via ``index_select`` (about 3x faster than advanced indexing on CPU)."""
    return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[1])


# ----------------------------------------------------------------------------------------------------------------
# Compositing (one segment of one chunk)
# ----------------------------------------------------------------------------------------------------------------


class _Cuts(NamedTuple):
    """Thresholds for ``F.threshold`` (keeps ``x > threshold``) that reproduce the kernel's comparisons in a dtype."""

    sigma: float  # keep sigma > -tiny, i.e. sigma >= 0 (the kernel skips sigma < 0)
    alpha_min: float  # keep alpha > prev(1/255), i.e. alpha >= 1/255 (the kernel skips alpha < 1/255)
    neg_alpha_max: float  # keep -alpha_raw > prev(-ALPHA_MAX), i.e. alpha_raw <= ALPHA_MAX (unclamped)


@functools.lru_cache(maxsize=8)
def _cuts(dtype: torch.dtype) -> _Cuts:
    def prev(x: float, toward: float) -> float:
        return float(torch.nextafter(torch.tensor(x, dtype=dtype), torch.tensor(toward, dtype=dtype)))

    return _Cuts(-torch.finfo(dtype).tiny, prev(ALPHA_MIN, 0.0), prev(-ALPHA_MAX, -1.0))


def _sigma(g: Tensor, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``sigma`` for every (pixel, Gaussian) pair of a chunk: [nb, B*B, L] (pixel index = row * B + column).

    ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` with ``delta = mean - pixel centre`` (the CUDA kernel's). Within a
    block ``dx`` depends only on the column and ``dy`` only on the row, so the quadratic terms are computed per
    column/row ([nb, B, L]) and only their sum and the cross term per pixel.

    Returns:
        (dx [nb, B, L] per column, dy [nb, B, L] per row, sigma [nb, B*B, L]).
    """
    mx, my, ca, cb, cc = (g[..., k][:, None, :] for k in range(5))
    dx = mx - xs[:, :, None]
    dy = my - ys[:, :, None]
    qx = (ca * dx * dx).mul_(0.5)
    qy = (cc * dy * dy).mul_(0.5)
    bdx = cb * dx
    sigma = qy[:, :, None, :] + qx[:, None, :, :]  # [nb, B(rows), B(cols), L]
    sigma.addcmul_(dy[:, :, None, :], bdx[:, None, :, :])
    nb, B, _, L = sigma.shape
    return dx, dy, sigma.view(nb, B * B, L)


def _alphas(sigma: Tensor, opac: Tensor, keep_raw: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """From ``sigma`` (consumed: becomes ``vis``): (vis = exp(-sigma), alpha_raw = opacity * vis, alpha).

    ``alpha = min(ALPHA_MAX, alpha_raw)``, set to 0 where the CUDA kernel skips the pair (``sigma < 0`` or
    ``alpha < 1/255``); a skipped pair then multiplies the transmittance by exactly 1. Masks are applied with
    ``F.threshold`` (fused, ~30x faster on CPU than ``masked_fill``/``where`` with a bool mask). ``sigma`` is capped at
    ``_SIGMA_CAP``: exp(-80) ~ 1.8e-35, so such pairs are skipped anyway (alpha < 1/255 for any opacity below 4e32)
    and float32 stays out of denormals, which make ``exp`` ~30x slower on x86. With ``keep_raw=False`` (forward)
    ``vis`` is overwritten by alpha and ``alpha_raw`` is None.
    """
    cuts = _cuts(sigma.dtype)
    F.threshold_(sigma, cuts.sigma, _SIGMA_CAP)  # sigma < 0: skipped, like a far pair
    vis = sigma.clamp_(max=_SIGMA_CAP).neg_().exp_()
    if keep_raw:
        alpha_raw = vis * opac[:, None, :]
        alpha = alpha_raw.clamp(max=ALPHA_MAX)
    else:
        alpha_raw, alpha = None, vis.mul_(opac[:, None, :]).clamp_(max=ALPHA_MAX)
    return vis, alpha_raw, F.threshold_(alpha, cuts.alpha_min, 0.0)


def _transmittance(alpha: Tensor, carry: Tensor) -> tuple[Tensor, Tensor]:
    """Front-to-back transmittance of one segment; zeroes ``alpha`` (in place) where the pixel has stopped.

    ``t[..., k + 1]`` = ``carry`` times the product of ``1 - alpha`` up to and including entry ``k``, ``t[..., 0]`` =
    ``carry`` (the same product over earlier segments), as one cumulative product over ``[carry, 1 - alpha_0, ...]``
    (PyTorch accumulates a float32 ``cumprod`` in float64, so this is at least as accurate as the kernel's sequential
    float32 product; forward and backward compute the identical values). Entry ``k`` contributes iff it is not
    skipped and ``t[..., k + 1] > 1e-4``: the product is non-increasing, so this is gsplat's "stop before the
    Gaussian that takes T to <= 1e-4", and the transmittance in front of a contributing entry is ``t[..., k]``.

    Returns:
        (one_minus_alpha [nb, P, L] = ``1 - alpha`` before the stop mask, t [nb, P, L + 1]).
    """
    nb, P, L = alpha.shape
    ext = torch.empty(nb, P, L + 1, dtype=alpha.dtype, device=alpha.device)
    ext[..., 0] = carry
    om = ext[..., 1:]
    torch.sub(1.0, alpha, out=om)
    t = torch.cumprod(ext, dim=-1)
    alpha.mul_(F.threshold(t[..., 1:], TRANSMITTANCE_MIN, 0.0).sign_())  # 1 while T > 1e-4, then 0
    return om, t


def _to_blocks(img: Tensor, plan: _Plan) -> Tensor:
    """[C, H, W, K] image -> [C * n_by * n_bx, P, K] blocks (zero-padded to whole blocks)."""
    C, H, W, K = img.shape
    B = plan.block
    pad_h, pad_w = plan.n_by * B - H, plan.n_bx * B - W
    if pad_h or pad_w:
        img = torch.nn.functional.pad(img, (0, 0, 0, pad_w, 0, pad_h))
    img = img.reshape(C, plan.n_by, B, plan.n_bx, B, K).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(C * plan.n_by * plan.n_bx, B * B, K)


def _from_blocks(blocks: Tensor, plan: _Plan) -> Tensor:
    """Inverse of :func:`_to_blocks`, cropped to the image: [C, H, W, K]."""
    B, K = plan.block, blocks.shape[-1]
    img = blocks.reshape(plan.C, plan.n_by, plan.n_bx, B, B, K).permute(0, 1, 3, 2, 4, 5)
    img = img.reshape(plan.C, plan.n_by * B, plan.n_bx * B, K)
    return img[:, : plan.height, : plan.width].contiguous()


def _attribute_table(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor) -> Tensor:
    """[C * N + 1, 6 + D] rows (mean x, mean y, a, b, c, opacity, colour...), last row a zero dummy."""
    C, N = opacities.shape
    D = colors.shape[-1]
    table = torch.zeros(C * N + 1, 6 + D, dtype=means2d.dtype, device=means2d.device)
    table[:-1, 0:2] = means2d.reshape(C * N, 2)
    table[:-1, 2:5] = conics.reshape(C * N, 3)
    table[:-1, 5] = opacities.reshape(C * N)
    table[:-1, 6:] = colors.reshape(C * N, D)
    return table


class _RasterizeToPixels(torch.autograd.Function):
    """Differentiable compositing of projected Gaussians; gradients as gsplat's ``rasterize_to_pixels_bwd.cu``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        backgrounds: Tensor | None,
        plan: _Plan,
        absgrad: bool,
    ) -> tuple[Tensor, Tensor]:
        table = _attribute_table(means2d.detach(), conics.detach(), opacities.detach(), colors.detach())
        D, P = colors.shape[-1], plan.pixels_per_block
        dtype, device = means2d.dtype, means2d.device
        out = torch.zeros(plan.n_blocks, P, D, dtype=dtype, device=device)
        t_final = torch.ones(plan.n_blocks, P, dtype=dtype, device=device)
        keep = any(ctx.needs_input_grad[:5])  # the backward reuses each chunk's index lists and carries
        for ch in plan.chunks:
            ch.xs, ch.ys = _block_axes(plan, ch.blocks, dtype)
            ch.ids, ch.carries = [], []
            carry = torch.ones(ch.blocks.numel(), P, dtype=dtype, device=device)
            acc = torch.zeros(ch.blocks.numel(), P, D, dtype=dtype, device=device)
            tf = torch.ones_like(carry)
            for start in range(0, ch.length, ch.segment):
                ids = _segment_ids(plan, ch.blocks, start, min(ch.segment, ch.length - start))
                if keep:
                    ch.ids.append(ids)
                    ch.carries.append(carry)
                g = _rows(table, ids)
                _, _, sigma = _sigma(g, ch.xs, ch.ys)
                _, _, alpha = _alphas(sigma, g[..., 5], keep_raw=False)
                _, t = _transmittance(alpha, carry)
                # T after the last contributing entry: the smallest t above 1e-4 (t is non-increasing; t[..., 0] is
                # the carry); none (2.0) if the pixel stopped in an earlier segment
                last = F.threshold(t, TRANSMITTANCE_MIN, 2.0).amin(-1)
                tf = torch.where(last <= 1.0, last, tf)
                acc.baddbmm_(alpha.mul_(t[..., :-1]), g[..., 6:])  # weights w_k = alpha_k * T_k
                carry = t[..., -1].contiguous()
                if bool((carry <= TRANSMITTANCE_MIN).all()):
                    break  # every pixel of the chunk has stopped: the rest of the lists cannot contribute
            out.index_copy_(0, ch.blocks, acc)
            t_final.index_copy_(0, ch.blocks, tf)
        if backgrounds is not None:
            cam = torch.div(torch.arange(plan.n_blocks, device=device), plan.n_by * plan.n_bx, rounding_mode="floor")
            out += t_final[..., None] * backgrounds.detach()[cam][:, None, :]
        render_colors = _from_blocks(out, plan)
        render_alphas = _from_blocks((1.0 - t_final)[..., None], plan)
        ctx.save_for_backward(means2d, conics, colors, opacities, backgrounds, t_final)
        ctx.plan = plan
        ctx.absgrad = absgrad
        return render_colors, render_alphas

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v_colors_img: Tensor, v_alphas_img: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        means2d, conics, colors, opacities, backgrounds, t_final = ctx.saved_tensors
        plan: _Plan = ctx.plan
        absgrad: bool = ctx.absgrad
        C, N, D, P, B = plan.C, plan.N, colors.shape[-1], plan.pixels_per_block, plan.block
        dtype, device = means2d.dtype, means2d.device
        table = _attribute_table(means2d.detach(), conics.detach(), opacities.detach(), colors.detach())
        g_col = _to_blocks(v_colors_img.to(dtype), plan)  # [n_blocks, P, D]
        g_a = _to_blocks(v_alphas_img.to(dtype), plan)[..., 0]  # [n_blocks, P]
        if backgrounds is not None:
            cam = torch.div(torch.arange(plan.n_blocks, device=device), plan.n_by * plan.n_bx, rounding_mode="floor")
            bg_dot = (g_col * backgrounds.detach()[cam][:, None, :]).sum(-1)
        else:
            bg_dot = torch.zeros_like(g_a)
        # per-Gaussian gradients, one row each: mean x, mean y, a, b, c, opacity, colour..., |mean x|, |mean y|
        grads = torch.zeros(8 + D, C * N + 1, dtype=dtype, device=device)
        for ch in plan.chunks:
            assert ch.xs is not None and ch.ys is not None
            gc = g_col.index_select(0, ch.blocks)
            # dL/dalpha_k gets T_final / (1 - alpha_k) * (dL/dalpha_pix - background . dL/dcolour_pix)
            back = (g_a.index_select(0, ch.blocks) - bg_dot.index_select(0, ch.blocks)) * t_final.index_select(
                0, ch.blocks
            )
            behind = torch.zeros(ch.blocks.numel(), P, dtype=dtype, device=device)  # sum over later segments
            for ids, carry in zip(reversed(ch.ids), reversed(ch.carries), strict=True):
                g = _rows(table, ids)
                nb, L = ids.shape
                dx, dy, sigma = _sigma(g, ch.xs, ch.ys)
                vis, alpha_raw, alpha = _alphas(sigma, g[..., 5], keep_raw=True)
                assert alpha_raw is not None
                om, t = _transmittance(alpha, carry)
                t_excl = t[..., :-1]  # transmittance in front of each entry
                w = alpha * t_excl  # alpha is 0 on pairs that do not contribute
                cg = torch.bmm(gc, g[..., 6:].transpose(1, 2))  # [nb, P, L]: colour_k . dL/dcolour_p
                wcg = w * cg
                # sum_{j > k} w_j c_j . g, plus the later segments, minus the T_final terms
                after = torch.flip(torch.cumsum(torch.flip(wcg, [-1]), -1), [-1])
                seg_total = after[..., 0].clone()
                after.sub_(wcg).add_((behind - back)[..., None]).div_(om)
                behind += seg_total
                v_alpha = t_excl.mul_(cg).sub_(after)  # dL/dalpha_k (valid where alpha > 0)
                # dalpha/dsigma = -alpha_raw, dalpha/dopacity = vis, both 0 where clamped (opac * vis > ALPHA_MAX) and
                # on pairs that do not contribute (alpha = 0). gate = -1 on the others, 0 elsewhere.
                gate = F.threshold(torch.neg(alpha_raw), _cuts(dtype).neg_alpha_max, 0.0).mul_(alpha).sign_()
                q = vis.mul_(v_alpha).mul_(gate)  # = -dL/dopacity per pair; dL/dsigma per pair = opacity * q
                q4 = q.view(nb, B, B, L)  # [nb, rows, cols, L]
                rx = q4.sum(1)  # [nb, cols, L]
                ry = q4.sum(2)  # [nb, rows, L]
                qxy = (q4 * dx[:, None]).sum(2)  # [nb, rows, L]: sum over columns of q dx
                sx, sxx = (rx * dx).sum(1), (rx * dx * dx).sum(1)
                sy, syy = (ry * dy).sum(1), (ry * dy * dy).sum(1)
                sxy = (qxy * dy).sum(1)
                ca, cb, cc, op = g[..., 2], g[..., 3], g[..., 4], g[..., 5]
                rows = [
                    op * (ca * sx + cb * sy),
                    op * (cb * sx + cc * sy),
                    0.5 * op * sxx,
                    op * sxy,
                    0.5 * op * syy,
                    -rx.sum(1),
                ]
                v_rgb = torch.bmm(gc.transpose(1, 2), w).transpose(0, 1)  # [D, nb, L]
                if absgrad:  # sum over pixels of |dL/dmean2d| per pixel, as the CUDA backward accumulates it
                    gx = (ca[:, None, :] * dx)[:, None] + (cb[:, None, :] * dy)[:, :, None]
                    gy = (cb[:, None, :] * dx)[:, None] + (cc[:, None, :] * dy)[:, :, None]
                    rows += [gx.mul_(q4).abs_().sum((1, 2)).mul_(op), gy.mul_(q4).abs_().sum((1, 2)).mul_(op)]
                else:
                    rows += [torch.zeros_like(op), torch.zeros_like(op)]
                stacked = torch.cat([torch.stack(rows[:6]), v_rgb, torch.stack(rows[6:])])  # [8 + D, nb, L]
                grads.index_add_(1, ids.reshape(-1), stacked.reshape(8 + D, nb * L))
        grads = grads[:, :-1].T  # [C * N, 8 + D]
        v_means2d = grads[:, 0:2].reshape(C, N, 2)
        v_conics = grads[:, 2:5].reshape(C, N, 3)
        v_opacities = grads[:, 5].reshape(C, N)
        v_colors = grads[:, 6 : 6 + D].reshape(C, N, D)
        if absgrad:
            means2d.absgrad = grads[:, 6 + D :].reshape(C, N, 2).contiguous()
        v_backgrounds = None
        if backgrounds is not None and ctx.needs_input_grad[4]:
            # gsplat: (v_render_colors * (1 - render_alphas)).sum(dim=(1, 2)), i.e. sum_pixels dL/dcolour * T_final
            v_backgrounds = (v_colors_img.to(dtype) * _from_blocks(t_final[..., None], plan)).sum(dim=(1, 2))
        return v_means2d, v_conics, v_colors, v_opacities, v_backgrounds, None, None


# ----------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------


def _auto_block_size(radii: Tensor, tile_size: int) -> int:
    """4x4 blocks for small Gaussians (tighter fit), 8x8 for large ones (fewer intersections); must divide the tile."""
    visible = radii[radii > 0]
    small = visible.numel() == 0 or float(visible.float().mean()) < _SMALL_RADIUS
    for block in (4, 8) if small else (8, 4):
        if tile_size % block == 0:
            return block
    return tile_size


def rasterization(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    packed: bool = False,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,
    render_mode: RenderMode = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: RasterizeMode = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Tensor | None = None,
    *,
    block_size: int | None = None,
    chunk_pairs: int = _DEFAULT_CHUNK_PAIRS,
    segment: int = _DEFAULT_SEGMENT,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """CPU drop-in for ``gsplat.rasterization(..., packed=False)``: same arguments, outputs and meta layout.

    Supported: pinhole cameras, ``packed=False``, colours ``[N, D]``/``[C, N, D]`` or SH coefficients
    ``[N, K, 3]``/``[C, N, K, 3]`` with ``sh_degree``, all ``render_mode`` values, both ``rasterize_mode`` values,
    ``absgrad``, ``backgrounds``, ``radius_clip``, ``covars``. ``channel_chunk`` is accepted and has no effect (the
    CPU path renders all channels at once; gsplat's chunking does not change its result). Unsupported options raise
    ``ValueError``: ``packed=True``, ``sparse_grad=True``, ``distributed=True``, ``camera_model != "pinhole"``.

    Args:
        means: [N, 3] centres.
        quats: [N, 4] quaternions (wxyz, not necessarily normalised).
        scales: [N, 3] scales (already exponentiated).
        opacities: [N] opacities (already through the sigmoid).
        colors: [(C,) N, D] colours, or [(C,) N, K, 3] SH coefficients when ``sh_degree`` is set.
        viewmats: [C, 4, 4] world-to-camera matrices (OpenCV: x right, y down, z forward).
        Ks: [C, 3, 3] pinhole intrinsics.
        width: image width.
        height: image height.
        near_plane: cull Gaussians with camera z < near_plane.
        far_plane: cull Gaussians with camera z > far_plane.
        radius_clip: cull Gaussians whose pixel radius is <= this.
        eps2d: 2D covariance blur.
        sh_degree: active SH degree, or None for plain colours.
        packed: must be False on CPU.
        tile_size: gsplat's tile size; it decides which Gaussians a pixel evaluates (see the module docstring).
        backgrounds: [C, D] background colours.
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth), "RGB+D", "RGB+ED".
        sparse_grad: must be False on CPU.
        absgrad: also set ``meta["means2d"].absgrad`` in the backward.
        rasterize_mode: "classic" or "antialiased" (opacities times the compensation factor).
        channel_chunk: accepted for compatibility; unused.
        distributed: must be False on CPU.
        camera_model: must be "pinhole" on CPU.
        covars: optional [N, 3, 3] covariances used instead of quats/scales.
        block_size: pixel block edge for internal binning; must divide ``tile_size``. Default: 4 when the mean
            radius of the visible Gaussians is below 12 pixels, else 8 (falling back to ``tile_size`` when neither
            divides it). Does not change the result.
        chunk_pairs: at most this many (pixel, Gaussian) pairs are evaluated at once (bounds memory). Does not
            change the result beyond float rounding of the per-pixel sums.
        segment: depth-sorted list entries evaluated per step; a chunk stops once every one of its pixels has
            reached ``T <= 1e-4``. Does not change the result beyond float rounding of the per-pixel sums.

    Returns:
        ``(render_colors [C, H, W, X], render_alphas [C, H, W, 1], meta)``; meta has gsplat's non-packed keys
        ``camera_ids`` (None), ``gaussian_ids`` (None), ``radii`` [C, N] int32, ``means2d`` [C, N, 2], ``depths``,
        ``conics``, ``opacities`` [C, N], ``tile_width``, ``tile_height``, ``tiles_per_gauss`` [C, N] int32,
        ``width``, ``height``, ``tile_size``, ``n_cameras``. gsplat's CUDA-kernel intersection buffers
        (``isect_ids``, ``flatten_ids``, ``isect_offsets``) are not produced.
    """
    if packed:
        raise ValueError("rasterize_cpu supports packed=False only (pass packed=False on CPU)")
    if sparse_grad:
        raise ValueError("rasterize_cpu does not support sparse_grad=True")
    if distributed:
        raise ValueError("rasterize_cpu does not support distributed=True")
    if camera_model != "pinhole":
        raise ValueError(f"rasterize_cpu supports camera_model='pinhole' only, got {camera_model!r}")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if block_size is not None and (block_size <= 0 or tile_size % block_size):
        raise ValueError(f"block_size ({block_size}) must divide tile_size ({tile_size})")
    if chunk_pairs < 1 or segment < 1:
        raise ValueError("chunk_pairs and segment must be positive")

    N = means.shape[0]
    C = viewmats.shape[0]
    if means.shape != (N, 3):
        raise ValueError(f"means must be [N, 3], got {tuple(means.shape)}")
    if covars is None and (quats.shape != (N, 4) or scales.shape != (N, 3)):
        raise ValueError(f"quats/scales must be [N, 4]/[N, 3], got {tuple(quats.shape)}/{tuple(scales.shape)}")
    if covars is not None and covars.shape != (N, 3, 3):
        raise ValueError(f"covars must be [N, 3, 3], got {tuple(covars.shape)}")
    if opacities.shape != (N,):
        raise ValueError(f"opacities must be [N], got {tuple(opacities.shape)}")
    if viewmats.shape != (C, 4, 4) or Ks.shape != (C, 3, 3):
        raise ValueError(f"viewmats/Ks must be [C, 4, 4]/[C, 3, 3], got {tuple(viewmats.shape)}/{tuple(Ks.shape)}")
    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))):
            raise ValueError(f"colors must be [N, D] or [C, N, D] without sh_degree, got {tuple(colors.shape)}")
    else:
        ok = (colors.dim() == 3 and colors.shape[0] == N and colors.shape[2] == 3) or (
            colors.dim() == 4 and colors.shape[:2] == (C, N) and colors.shape[3] == 3
        )
        if not ok or (sh_degree + 1) ** 2 > colors.shape[-2]:
            raise ValueError(f"colors must be [(C,) N, K>={(sh_degree + 1) ** 2}, 3] SH, got {tuple(colors.shape)}")
    if backgrounds is not None and backgrounds.dim() != 2:
        raise ValueError(f"backgrounds must be [C, D], got {tuple(backgrounds.shape)}")
    floats = {"means": means, "opacities": opacities, "colors": colors, "viewmats": viewmats, "Ks": Ks}
    floats.update({"quats": quats, "scales": scales} if covars is None else {"covars": covars})
    if backgrounds is not None:
        floats["backgrounds"] = backgrounds
    if len({t.dtype for t in floats.values()}) > 1:
        raise ValueError(f"all inputs must share one dtype, got { ({k: str(t.dtype) for k, t in floats.items()}) }")

    proj = project_gaussians(
        means,
        None if covars is not None else quats,
        None if covars is not None else scales,
        viewmats,
        Ks,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        calc_compensations=rasterize_mode == "antialiased",
        covars=covars,
    )
    radii, means2d, depths, conics = proj.radii, proj.means2d, proj.depths, proj.conics
    opacities_c = opacities.repeat(C, 1)  # [C, N]
    if proj.compensations is not None:
        opacities_c = opacities_c * proj.compensations

    meta: dict[str, Any] = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities_c,
    }

    if sh_degree is None:
        feats = colors.expand(C, -1, -1) if colors.dim() == 2 else colors
    else:
        camtoworlds = torch.inverse(viewmats)
        dirs = means[None, :, :] - camtoworlds[:, None, :3, 3]  # [C, N, 3]
        shs = colors.expand(C, -1, -1, -1) if colors.dim() == 3 else colors
        feats = torch.clamp_min(_spherical_harmonics(sh_degree, dirs, shs) + 0.5, 0.0)

    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat((feats, depths[..., None]), dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)
    if backgrounds is not None and backgrounds.shape != (C, feats.shape[-1]):
        raise ValueError(f"backgrounds must be [C, {feats.shape[-1]}], got {tuple(backgrounds.shape)}")

    if block_size is None:
        block_size = _auto_block_size(radii, tile_size)
    plan = _build_plan(
        means2d,
        conics,
        radii,
        depths,
        opacities_c,
        proj.cov_diag,
        width,
        height,
        tile_size,
        block_size,
        chunk_pairs,
        segment,
    )
    meta.update(
        {
            "tile_width": math.ceil(width / float(tile_size)),
            "tile_height": math.ceil(height / float(tile_size)),
            "tiles_per_gauss": plan.tiles_per_gauss,
            "width": width,
            "height": height,
            "tile_size": tile_size,
            "n_cameras": C,
        }
    )
    render_colors, render_alphas = _RasterizeToPixels.apply(
        means2d, conics, feats, opacities_c, backgrounds, plan, absgrad
    )
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )
    return render_colors, render_alphas, meta

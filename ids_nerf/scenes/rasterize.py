"""One rasterizer call for every device: gsplat's CUDA kernels on a GPU, :mod:`ids_nerf.scenes.rasterize_cpu` on CPU.

:func:`rasterization` has ``gsplat.rasterization``'s signature and return value. On CUDA tensors it *is*
``gsplat.rasterization`` (every option passes through unchanged). On CPU tensors it calls the pure-PyTorch rasterizer,
which supports the subset splatfacto uses (pinhole cameras, ``packed=False``) and raises ``ValueError`` for the
rest (``packed=True``, ``sparse_grad=True``, ``distributed=True``, other camera models). Note that gsplat's default
is ``packed=True``: CPU callers must pass ``packed=False`` (as nerfstudio's splatfacto does).
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

__all__ = ["rasterization"]


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
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Tensor | None = None,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """``gsplat.rasterization`` on CUDA tensors, :func:`ids_nerf.scenes.rasterize_cpu.rasterization` otherwise.

    Arguments and return value as ``gsplat.rasterization`` (gsplat 1.4.0): ``(render_colors [C, H, W, X],
    render_alphas [C, H, W, 1], meta)``. The device is taken from ``means``.

    Raises:
        ValueError: on CPU, for options the CPU rasterizer does not support (see the module docstring).
    """
    kwargs: dict[str, Any] = dict(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=packed,
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode=render_mode,
        sparse_grad=sparse_grad,
        absgrad=absgrad,
        rasterize_mode=rasterize_mode,
        channel_chunk=channel_chunk,
        distributed=distributed,
        camera_model=camera_model,
        covars=covars,
    )
    if means.is_cuda:
        import gsplat

        return gsplat.rasterization(**kwargs)
    if means.device.type != "cpu":
        raise ValueError(f"no rasterizer for device {means.device} (CUDA uses gsplat, CPU the pure-PyTorch one)")
    from ids_nerf.scenes.rasterize_cpu import rasterization as rasterization_cpu

    return rasterization_cpu(**kwargs)

"""Rendering a training view at the prior's resolution, and backpropagating an image gradient into the NeRF.

Memory: the guidance gradient is computed w.r.t. the *image* first (one no-grad render + the VAE encoder's
backward), then the image gradient is pushed into the NeRF chunk by chunk (each chunk re-rendered with grad and
released). Peak memory is one ray chunk's activations, whatever the resolution (PDS keeps the whole 512x512 graph
and needs ~40 GB).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.model_components.losses import interlevel_loss
from nerfstudio.models.base_model import Model
from torch import Tensor


def view_camera(cameras: Cameras, index: int, height: int, width: int) -> Cameras:
    """Camera ``index`` with its intrinsics rescaled to ``height`` x ``width`` (aspect may change slightly)."""
    cam = cameras[index : index + 1]
    sx, sy = width / float(cam.width[0, 0]), height / float(cam.height[0, 0])
    return Cameras(
        camera_to_worlds=cam.camera_to_worlds,
        fx=cam.fx * sx,
        fy=cam.fy * sy,
        cx=cam.cx * sx,
        cy=cam.cy * sy,
        width=torch.full_like(cam.width, width),
        height=torch.full_like(cam.height, height),
        camera_type=cam.camera_type,
        distortion_params=cam.distortion_params,
        times=cam.times,
    )


def view_rays(camera: Cameras, train_index: int, device: torch.device | str) -> RayBundle:
    """Flattened rays of a one-camera ``Cameras`` tagged with the training index (for the appearance embedding)."""
    rays = camera.to(device).generate_rays(camera_indices=0, keep_shape=True)
    rays = rays.flatten()
    rays.camera_indices = torch.full_like(rays.camera_indices, train_index)
    return rays


@contextlib.contextmanager
def seeded_sampling(seed: int, device: torch.device | str) -> Iterator[None]:
    """Fork the global RNG and seed it, so two passes over the same rays draw the same sampler jitter."""
    device = torch.device(device)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def one_sampler_step(model: Model) -> Iterator[None]:
    """Make every forward pass inside the block see the proposal sampler's state of one training step.

    nerfstudio's ``ProposalNetworkSampler`` decides on each call whether the proposal networks run with grad (an
    "update step": ``_steps_since_update > update_sched(step)`` or ``step < 10``) and resets its counter after an
    update call. A view rendered in several ray chunks, and twice (no-grad pass, then the chunked backward), calls it
    many times in one editing step: without this block only the first chunk would update the proposal networks.
    Here the counter is restored before every call, so all chunks of both passes take the decision of the step's
    first call; after the block the sampler is left as one call would leave it. Models without a proposal sampler
    are untouched.
    """
    sampler = getattr(model, "proposal_sampler", None)
    if sampler is None or not hasattr(sampler, "_steps_since_update"):
        yield
        return
    counter = sampler._steps_since_update

    def restore(_module, _args) -> None:
        sampler._steps_since_update = counter

    handle = sampler.register_forward_pre_hook(restore)
    try:
        yield
    finally:
        handle.remove()


def _chunks(rays: RayBundle, chunk: int):
    for start in range(0, len(rays), chunk):
        yield start, rays[start : start + chunk]


@torch.no_grad()
def render_view(model: Model, rays: RayBundle, height: int, width: int, chunk: int, seed: int) -> dict[str, Tensor]:
    """No-grad render of ``rays`` in chunks with training-mode sampling seeded by ``seed``, so that
    :func:`backpropagate_image_gradient` with the same seed re-renders exactly this image.

    Returns ``rgb`` (H, W, 3) and ``depth`` (H, W, 1).
    """
    parts: dict[str, list[Tensor]] = {"rgb": [], "depth": []}
    with seeded_sampling(seed, rays.origins.device):
        for _, sub in _chunks(rays, chunk):
            out = model(sub)  # forward() applies the collider (near/far) before get_outputs
            parts["rgb"].append(out["rgb"])
            parts["depth"].append(out["depth"])
    return {k: torch.cat(v).reshape(height, width, -1) for k, v in parts.items()}


def proposal_loss(outputs: dict, mult: float) -> Tensor:
    """nerfacto's interlevel loss of a render (0 when disabled or when the model has no proposal networks)."""
    if mult <= 0 or "weights_list" not in outputs:
        return torch.zeros((), device=outputs["rgb"].device)
    return interlevel_loss(outputs["weights_list"], outputs["ray_samples_list"])


def backpropagate_image_gradient(
    model: Model,
    rays: RayBundle,
    image_grad: Tensor,
    chunk: int,
    seed: int,
    proposal_loss_mult: float,
    on_chunk: Callable[[int], None] | None = None,
) -> float:
    """Re-render ``rays`` chunk by chunk with grad (same sampling seed as :func:`render_view`) and accumulate
    ``d loss / d params`` for the image gradient ``image_grad`` (H, W, 3). Adds nerfacto's interlevel (proposal) loss
    of each chunk with ``proposal_loss_mult`` so the proposal networks follow the edited density. Returns the summed
    proposal loss."""
    grad = image_grad.reshape(-1, 3)
    n_rays = len(rays)
    total_prop = 0.0
    with seeded_sampling(seed, rays.origins.device):
        for start, sub in _chunks(rays, chunk):
            out = model(sub)  # forward() applies the collider (near/far) before get_outputs
            loss = (out["rgb"] * grad[start : start + len(sub)]).sum()
            if proposal_loss_mult > 0:
                prop = proposal_loss(out, proposal_loss_mult) * len(sub) / n_rays
                loss = loss + proposal_loss_mult * prop
                total_prop += float(prop.detach())
            loss.backward()
            if on_chunk is not None:
                on_chunk(start)
    return total_prop

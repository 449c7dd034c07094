"""nerfacto as an editable scene: a view is rendered in ray chunks, and an image gradient goes back in ray chunks.

Memory: :meth:`IDSNerfactoModel.render_for_edit` renders a view without grad (chunk by chunk); ``push`` re-renders
it chunk by chunk with grad and the same sampling seed and backpropagates each chunk's share of the image gradient
(plus nerfacto's interlevel loss, so the proposal networks follow the edited density). Peak memory is one ray
chunk's activations whatever the resolution (PDS keeps the whole 512x512 graph and needs ~40 GB). A view with at
most ``chunk_size`` rays is rendered once with grad instead.

The model is nerfacto's own (fields, proposal networks, camera optimiser, appearance embedding, state-dict keys), so
stock ``nerfacto`` checkpoints load into it and its checkpoints load into nerfacto. Its LPIPS metric is built only
when the AlexNet weights are cached (:func:`~ids_nerf.scenes.base.lpips_without_download`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.losses import interlevel_loss
from nerfstudio.models.base_model import Model
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch import Tensor
from torch.nn import Parameter

from ids_nerf.profiling import phase
from ids_nerf.scenes.base import EditView, OptionalLPIPS, RenderedView, SourceComparison, lpips_without_download


@dataclass
class IDSNerfactoModelConfig(NerfactoModelConfig):
    """Nerfacto with an optional LPIPS metric (built only when its AlexNet weights are cached; never downloads)."""

    _target: type = field(default_factory=lambda: IDSNerfactoModel)


class IDSNerfactoModel(SourceComparison, OptionalLPIPS, NerfactoModel):
    """Nerfacto, editable (:class:`~ids_nerf.scenes.base.EditableScene`); without cached AlexNet weights, evaluation
    reports PSNR/SSIM without LPIPS."""

    config: IDSNerfactoModelConfig
    region_mode = "image"
    """One hash grid holds the whole scene: a region edit masks the image gradient and anchors the outside
    (:mod:`ids_nerf.nerf.region`)."""

    def populate_modules(self) -> None:
        with lpips_without_download():
            super().populate_modules()

    # ------------------------------------------------------------------ EditableScene
    def render_for_edit(self, view: EditView) -> RenderedView:
        """The view's rays in chunks (no grad) with training-mode sampling seeded by ``view.seed``; ``push``
        re-renders them chunk by chunk with grad. A view that fits in one chunk is rendered once, with grad."""
        height, width = int(view.camera.height[0, 0]), int(view.camera.width[0, 0])
        rays = view_rays(view.camera, view.index, self.device)
        if len(rays) <= view.chunk_size:
            return self._render_once_with_grad(rays, view, height, width)
        with phase("render (no grad)"), one_sampler_step(self) as counter:
            rendered = render_rays(self, rays, height, width, view.chunk_size, view.seed)

        def push(image_grad: Tensor) -> dict[str, float]:
            with phase("scene backward (chunked)"), one_sampler_step(self, counter):
                prop = backpropagate_image_gradient(
                    self, rays, image_grad, view.chunk_size, view.seed, view.proposal_loss_mult
                )
            return {"proposal_loss": prop}

        return RenderedView(rgb=rendered["rgb"], depth=rendered["depth"], push=push)

    def _render_once_with_grad(self, rays: RayBundle, view: EditView, height: int, width: int) -> RenderedView:
        with phase("render (with grad)"), one_sampler_step(self), seeded_sampling(view.seed, self.device):
            out = self(rays)  # with grad unless the caller disabled it (a frozen source render)

        def push(image_grad: Tensor) -> dict[str, float]:
            with phase("scene backward"):
                loss = (out["rgb"] * image_grad.reshape(-1, 3)).sum()
                prop = proposal_loss(out, view.proposal_loss_mult)
                (loss + view.proposal_loss_mult * prop).backward()
            return {"proposal_loss": float(prop.detach())}

        return RenderedView(
            rgb=out["rgb"].detach().reshape(height, width, 3),
            depth=out["depth"].detach().reshape(height, width, 1),
            push=push,
        )

    def edit_param_groups(self) -> dict[str, list[Parameter]]:
        """Fields and proposal networks are edited; the camera poses learned by the source run stay fixed."""
        self.camera_optimizer.requires_grad_(False)
        groups = self.get_param_groups()
        return {k: v for k, v in groups.items() if k in ("fields", "proposal_networks")}

    def edit_callbacks(self, attrs: TrainingCallbackAttributes) -> list[TrainingCallback]:
        """The proposal sampler stays fully annealed (the scene is pretrained) and counts its steps as in training."""
        sampler = self.proposal_sampler
        sampler.set_anneal(1.0)
        return [
            TrainingCallback(
                [TrainingCallbackLocation.AFTER_TRAIN_ITERATION], sampler.step_cb, update_every_num_iters=1
            )
        ]


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
def one_sampler_step(model: Model, counter: int | None = None) -> Iterator[int | None]:
    """Make every forward pass inside the block see the proposal sampler's state of one training step.

    nerfstudio's ``ProposalNetworkSampler`` decides on each call whether the proposal networks run with grad (an
    "update step": ``_steps_since_update > update_sched(step)`` or ``step < 10``) and resets its counter after an
    update call. A view rendered in several ray chunks, and twice (no-grad pass, then the chunked backward), calls it
    many times in one editing step: without this block only the first chunk would update the proposal networks.
    Here the counter is restored before every call, so all chunks of both passes take the decision of the step's
    first call; after the block the sampler is left as one call would leave it. The block yields the counter it
    restores: pass it as ``counter`` to a later block of the same step (the chunked backward) so that both passes
    take the same decision. Models without a proposal sampler are untouched (the block yields None).
    """
    sampler = getattr(model, "proposal_sampler", None)
    if sampler is None or not hasattr(sampler, "_steps_since_update"):
        yield None
        return
    if counter is None:
        counter = sampler._steps_since_update

    def restore(_module, _args) -> None:
        sampler._steps_since_update = counter

    handle = sampler.register_forward_pre_hook(restore)
    try:
        yield counter
    finally:
        handle.remove()


def _chunks(rays: RayBundle, chunk: int):
    for start in range(0, len(rays), chunk):
        yield start, rays[start : start + chunk]


@torch.no_grad()
def render_rays(model: Model, rays: RayBundle, height: int, width: int, chunk: int, seed: int) -> dict[str, Tensor]:
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
    model: Model, rays: RayBundle, image_grad: Tensor, chunk: int, seed: int, proposal_loss_mult: float
) -> float:
    """Re-render ``rays`` chunk by chunk with grad (same sampling seed as :func:`render_rays`) and accumulate
    ``d loss / d params`` for the image gradient ``image_grad`` (H, W, 3). Adds nerfacto's interlevel (proposal) loss
    of each chunk with ``proposal_loss_mult``. Returns the summed proposal loss."""
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
    return total_prop

"""GPU checks, run on the GPU machine by scripts/gpu_check.sh (``pytest -m gpu tests/test_gpu.py``).

One 2D editing step of every method (ids_nerf.guidance.methods.METHODS; the ``-jf`` Jacobian-free variants left
out) on the Stable Diffusion v1 architecture with random weights in float16 on CUDA, at 512x384 pixels (latent
64x48): the gradient reaching the latent is finite and non-zero; and one NeRF editing step of dds-edit and ids-edit
on 504x378 views (render 512x384).
Skipped without CUDA; ``IDS_GPU_TEST_CPU=1`` (gpu_check.sh's dry run) runs the same code on the CPU with the tiny
SD-architecture model in float32 (128x96, small nerfacto at 96x72) instead, which checks the test itself.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from ids_nerf.guidance.methods import METHODS

CPU_SMOKE = os.environ.get("IDS_GPU_TEST_CPU") == "1"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() and not CPU_SMOKE, reason="needs a CUDA device"),
]
#: (width, height) of the edited image: 512x384 -> latent 64x48 on SD v1; the tiny model (CPU smoke run) at 128x96.
SIZE = (128, 96) if CPU_SMOKE else (512, 384)
PRESETS = [name for name, spec in METHODS.items() if spec.jacobian == "exact"]  # the -jf variants left out


@pytest.fixture(scope="module")
def prior():
    """SD-v1 architecture, random weights, fp16 on CUDA (tiny model, fp32 on CPU with IDS_GPU_TEST_CPU=1)."""
    from ids_nerf.guidance.prior import DiffusionPrior, PriorConfig

    if CPU_SMOKE:
        from ids_nerf.toy.tiny import SCHEDULER_CONFIG, TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG, build_components

        with tempfile.TemporaryDirectory() as tok_dir:
            components = build_components(UNET_CONFIG, VAE_CONFIG, TEXT_CONFIG, SCHEDULER_CONFIG, 0, tok_dir)
        return DiffusionPrior(PriorConfig(device="cpu", dtype="float32"), components=components)
    from ids_nerf.bench.architectures import random_components

    return DiffusionPrior(PriorConfig(device="cuda", dtype="float16"), components=random_components("sd-v1"))


@pytest.fixture(scope="module")
def source(prior):
    """(source latent encoded by the VAE from a random image, source and target text embeddings)."""
    width, height = SIZE
    image = torch.rand((1, 3, height, width), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z_src = prior.encode(image)
    assert z_src.shape == (1, *prior.latent_shape(height, width))
    assert torch.isfinite(z_src).all()
    return (
        z_src,
        prior.text_embeddings("a red sphere on a checkered floor"),
        prior.text_embeddings("a blue sphere on a checkered floor"),
    )


def test_sizes(prior, source):
    z_src = source[0]
    if not CPU_SMOKE:
        assert z_src.shape == (1, 4, 48, 64) and z_src.device.type == "cuda" and prior.dtype == torch.float16


@pytest.mark.parametrize("preset", PRESETS)
def test_one_editing_step(prior, source, preset):
    """distiller.step + backward of the editor's surrogate loss, as ids_nerf.image.editor.edit_latent does it."""
    from ids_nerf.guidance.config import guidance_config
    from ids_nerf.guidance.distiller import ScoreDistiller
    from ids_nerf.image.editor import OptimConfig

    z_src, c_src, c_trg = source
    distiller = ScoreDistiller(prior, guidance_config(preset), seed=0)
    z = z_src.detach().clone().requires_grad_(True)
    out = distiller.step(z_src=z_src, z_trg=z, cond_src=c_src, cond_trg=c_trg)
    loss = OptimConfig().loss_scale * (z * out.grad).sum()
    if out.aux_loss is not None:
        assert torch.isfinite(out.aux_loss)
        loss = loss + out.aux_loss
    loss.backward()
    assert out.grad.shape == z.shape and torch.isfinite(out.grad).all()
    assert z.grad is not None and torch.isfinite(z.grad).all(), f"{preset}: non-finite gradient"
    assert z.grad.abs().max() > 0, f"{preset}: zero gradient"
    if distiller.config.fpr.enabled:
        assert out.diagnostics["fpr_losses"], f"{preset}: FPR did not run"


@pytest.mark.parametrize("method", ["dds-edit", "ids-edit"])
def test_one_nerf_editing_step(prior, tmp_path, method):
    """One NeRF editing step through IDSEditPipeline, built as ids-bench-nerf builds it (standalone.build_edit: the
    ns-train method config, fresh nerfacto) on 3 generated 504x378 views (render 512x384, latent 64x48): the NeRF's
    gradients are finite and non-zero and the parameters stay finite after the optimizer step."""
    from ids_nerf.guidance.sizes import render_size
    from ids_nerf.nerf.standalone import build_edit
    from ids_nerf.scenes.cpu_sizes import cpu_friendly_nerfacto
    from ids_nerf.toy.datasets import write_llff
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    width, height = (96, 72) if CPU_SMOKE else (504, 378)
    if not CPU_SMOKE:
        assert render_size(width, height, prior.resolution, prior.size_multiple) == (512, 384)
    scene = SceneSpec(objects=[ObjectSpec(shape="sphere", color="green", center=(0.0, 0.0, 0.5), size=0.5)])
    write_llff(scene, tmp_path / "scene", n_views=3, size=(width, height), seed=0, supersample=1)

    def guidance(g) -> None:
        g.src_prompt, g.trg_prompt = "a photo of a sphere", "a photo of a golden sphere"
        g.log_every, g.seed = 0, 0

    run = build_edit(
        method,
        tmp_path / "scene",
        str(prior.device),
        model=cpu_friendly_nerfacto if CPU_SMOKE else None,
        prior=prior,
        guidance=guidance,
    )
    run.optimizers.zero_grad_all()
    loss_dict, metrics = run.pipeline.edit_step(0)
    params = [p for group in run.pipeline.get_param_groups().values() for p in group]
    grads = [p.grad for p in params if p.grad is not None]
    assert grads, f"{method}: no NeRF parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads), f"{method}: non-finite NeRF gradient"
    assert any(g.abs().max() > 0 for g in grads), f"{method}: zero NeRF gradient"
    assert torch.isfinite(loss_dict["guidance_loss"])
    if method == "ids-edit":
        assert "fpr_loss_first" in metrics, "FPR did not run"
    run.optimizers.optimizer_step_all()
    assert all(torch.isfinite(p).all() for p in params)

"""The editing step on the paths that only Stable-Diffusion-size runs take, at a size CPU CI affords.

A generated 4:3 LLFF scene rendered at 128x96 with 1024-ray chunks (12 chunks per view), the tiny prior, steps
past nerfstudio's proposal-sampler warm-up (step >= 10), on update and non-update steps of the proposal networks:
the two-pass gradient (no-grad render, image gradient, chunked re-render) equals one full-graph backward for every
parameter group, render and latent sizes follow the aspect, and the prior may be given another device string.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ids_nerf.nerf.standalone import StandaloneEdit, build_edit
from ids_nerf.scenes import nerfacto as render
from ids_nerf.scenes.base import view_camera
from ids_nerf.scenes.cpu_sizes import cpu_friendly_nerfacto

CHUNK = 1024
SRC, TRG = "a red sphere on a checkered floor", "a blue sphere on a checkered floor"


@pytest.fixture(scope="module")
def llff_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forward-facing 4:3 scene: 5 views at 160x120 (4 for training, 1 held out)."""
    from ids_nerf.toy.datasets import write_llff
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    data = tmp_path_factory.mktemp("llff43")
    scene = SceneSpec(objects=[ObjectSpec(shape="sphere", color="red", center=(0.0, 0.0, 0.5), size=0.5)])
    write_llff(scene, data, n_views=5, size=(160, 120), seed=0, supersample=1)
    return data


def _edit(scene: Path, prior, method: str = "ids-edit", prior_device: str = "auto") -> StandaloneEdit:
    def configure(pipeline) -> None:
        pipeline.guidance.src_prompt, pipeline.guidance.trg_prompt = SRC, TRG
        pipeline.guidance.prior.device, pipeline.render.chunk_size, pipeline.log_every = prior_device, CHUNK, 0

    return build_edit(method, scene, "cpu", model=cpu_friendly_nerfacto, prior=prior, guidance=configure)


@pytest.fixture(scope="module")
def edit(llff_scene: Path, tiny_prior) -> StandaloneEdit:
    return _edit(llff_scene, tiny_prior)


def test_render_and_latent_sizes_follow_the_aspect(edit: StandaloneEdit, tiny_prior):
    pipe = edit.pipeline
    assert pipe.get_prior().resolution == 128
    height, width = pipe._view_size(0)
    assert (height, width) == (96, 128)  # 4:3, long side = the prior's resolution, multiple of 16
    camera = view_camera(pipe.datamanager.train_dataset.cameras, 0, height, width)
    assert len(render.view_rays(camera, 0, pipe.device)) == 128 * 96 > 10 * CHUNK
    assert tuple(pipe._source_latent(0, height, width).shape) == (1, 4, 12, 16)


def _set_sampler(pipe, step: int, since_update: int) -> bool:
    """Put the proposal sampler in the state of training step ``step``; returns whether it is an update step."""
    sampler = pipe.model.proposal_sampler
    sampler._step, sampler._steps_since_update = step, since_update
    return since_update > sampler.update_sched(step) or step < 10


def _grads(pipe) -> dict[str, list[torch.Tensor]]:
    return {
        name: [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        for name, params in pipe.get_param_groups().items()
    }


def _full_graph_grads(pipe, step: int, since_update: int) -> dict[str, list[torch.Tensor]]:
    """Reference: every chunk rendered with grad (sampler state of ``step`` before each call), one backward."""
    g = pipe.config.guidance
    pipe.zero_grad(set_to_none=True)
    index = pipe._current_view
    height, width = pipe._view_size(index)
    camera = view_camera(pipe.datamanager.train_dataset.cameras, index, height, width)
    rays = render.view_rays(camera, index, pipe.device)
    outs = []
    with render.seeded_sampling(pipe.derived_seed(2) + step, pipe.device), torch.enable_grad():
        for start in range(0, len(rays), CHUNK):
            _set_sampler(pipe, step, since_update)
            outs.append(pipe.model(rays[start : start + CHUNK]))
        rgb = torch.cat([o["rgb"] for o in outs]).reshape(height, width, 3)
        loss, _ = pipe._guidance_loss(rgb, index, height, width)
        prop = sum(render.proposal_loss(o, 1.0) * len(o["rgb"]) / len(rays) for o in outs)
        (loss + g.proposal_loss_mult * prop).backward()
    return _grads(pipe)


@pytest.mark.parametrize(("step", "since_update"), [(12, 3), (13, 0)], ids=["update-step", "non-update-step"])
def test_two_pass_gradient_equals_full_graph_for_every_group(edit: StandaloneEdit, step: int, since_update: int):
    pipe = edit.pipeline
    assert _set_sampler(pipe, step, since_update) == (since_update > 0)
    pipe.reset_random_streams()
    pipe.zero_grad(set_to_none=True)
    pipe.edit_step(step)  # view 0: reset_random_streams() sets it, and no view is drawn at a step % 10 != 0
    two_pass = _grads(pipe)
    # the sampler is left as one forward call leaves it: reset on an update step, untouched otherwise
    assert pipe.model.proposal_sampler._steps_since_update == (0 if since_update > 0 else since_update)

    pipe.reset_random_streams()
    direct = _full_graph_grads(pipe, step, since_update)
    assert set(two_pass) == {"fields", "proposal_networks"}
    for group in two_pass:
        for a, b in zip(two_pass[group], direct[group], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7, msg=f"group {group}")
    field_norm = max(float(g.abs().max()) for g in direct["fields"])
    proposal_norm = max(float(g.abs().max()) for g in direct["proposal_networks"])
    assert field_norm > 0
    if since_update > 0:  # every chunk updates the proposal networks, not only the first
        assert proposal_norm > 0
    else:
        assert proposal_norm == 0


def test_optimizer_steps_past_the_warm_up(edit: StandaloneEdit):
    """Steps 10..13 of a real edit: finite losses, and the proposal networks change on update steps."""
    pipe = edit.pipeline
    before = [p.detach().clone() for p in pipe.get_param_groups()["proposal_networks"]]
    pipe.model.proposal_sampler._steps_since_update = 0
    for step in range(10, 14):
        loss_dict, metrics = edit.step(step)
        assert all(torch.isfinite(v).all() for v in loss_dict.values())
        assert metrics["image_grad_norm"] > 0
    after = pipe.get_param_groups()["proposal_networks"]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_prior_on_another_device_string(llff_scene: Path, tiny_prior):
    """--pipeline.guidance.device cpu while the NeRF runs on "cpu" through the single-pass and two-pass paths;
    the guidance loss comes back on the NeRF's device."""
    run = _edit(llff_scene, None, prior_device="cpu")
    run.pipeline.config.guidance.prior.model = str(tiny_prior.config.model)
    prior = run.pipeline.get_prior()
    assert str(prior.device) == "cpu"
    run.step(10)  # 12 chunks: two-pass
    run.pipeline.config.render.chunk_size = 128 * 96  # one chunk: single pass
    loss_dict, _ = run.step(11)
    assert loss_dict["guidance_loss"].device == run.pipeline.device


def test_fpr_runs_before_the_render_is_encoded(edit: StandaloneEdit, monkeypatch):
    """Peak memory: FPR's UNet passes must not coexist with the VAE encoder's graph of the render."""
    from ids_nerf.guidance import distiller as distiller_module

    pipe = edit.pipeline
    prior = pipe.get_prior()
    events: list[str] = []
    encode, fpr = prior.encode, distiller_module.fixed_point_regularization

    def recording_encode(images, *args, **kwargs):
        events.append("encode (grad)" if images.requires_grad else "encode")
        return encode(images, *args, **kwargs)

    def recording_fpr(*args, **kwargs):
        events.append("fpr")
        return fpr(*args, **kwargs)

    monkeypatch.setattr(prior, "encode", recording_encode)
    monkeypatch.setattr(distiller_module, "fixed_point_regularization", recording_fpr)
    pipe._source_latent(pipe._current_view, *pipe._view_size(pipe._current_view))  # cached before the step
    edit.step(20)  # a view block's first step (a new view: its photo is encoded first), FPR runs in the step
    assert events.count("encode (grad)") == 1 and "fpr" in events
    assert events.index("fpr") < events.index("encode (grad)")


def test_lookahead_over_a_view_block_equals_the_sequential_steps(edit: StandaloneEdit):
    """--pipeline.guidance.source.lookahead 3: the block's source sides are computed at once, with the same draws;
    the gradients of steps 0..2 equal the sequential ones within float tolerance."""
    pipe = edit.pipeline
    source = pipe.config.guidance.source

    def gradients(lookahead: int) -> list[tuple[dict, dict[str, list[torch.Tensor]]]]:
        source.lookahead = lookahead
        pipe.reset_random_streams()
        out = []
        for step in range(3):
            pipe.zero_grad(set_to_none=True)
            _, metrics = pipe.edit_step(step)
            out.append((metrics, _grads(pipe)))
        return out

    try:
        sequential, ahead = gradients(1), gradients(3)
    finally:
        source.lookahead = 1
    for (m_seq, g_seq), (m_ahead, g_ahead) in zip(sequential, ahead, strict=True):
        assert m_seq["t"] == m_ahead["t"] and m_seq["view"] == m_ahead["view"]
        assert (m_seq["source_precomputed"], m_ahead["source_precomputed"]) == (0, 1)
        assert m_ahead["fpr_loss_first"] == pytest.approx(m_seq["fpr_loss_first"], rel=1e-4)
        for group in g_seq:  # batched UNet calls round differently: compare each group's gradient as a whole
            a, b = torch.cat([x.flatten() for x in g_seq[group]]), torch.cat([x.flatten() for x in g_ahead[group]])
            assert float((a - b).norm()) <= 1e-3 * float(a.norm()), group


def test_source_side_cache_serves_a_second_edit_with_another_target_prompt(edit: StandaloneEdit, tmp_path):
    """--pipeline.guidance.cache-dir with look-ahead: the second run of the view block loads the block's source
    sides (no FPR) although the target prompt changed."""
    pipe = edit.pipeline
    g = pipe.config.guidance
    g.cache_dir, g.source.lookahead = tmp_path, 2
    try:
        pipe.reset_random_streams()
        _, first = pipe.edit_step(0)
        pipe.controls.target_prompt = "a green sphere on a checkered floor"
        pipe.reset_random_streams()
        _, second = pipe.edit_step(0)
    finally:
        g.cache_dir, g.source.lookahead, pipe.controls.target_prompt = None, 1, TRG
    assert (first["source_cached"], second["source_cached"]) == (0, 1)
    assert second["t"] == first["t"] and second["fpr_loss_first"] == pytest.approx(first["fpr_loss_first"])
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1

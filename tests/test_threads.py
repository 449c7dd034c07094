"""torch_threads: the thread count inside a block, restored after it; ids-nerf-demo runs with --threads on a CPU."""

from __future__ import annotations

import pytest
import torch

from ids_nerf.threads import torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [1, None])
def test_demo_runs_with_its_threads_on_the_cpu(tmp_path, monkeypatch, threads):
    import ids_nerf.nerf.demo as demo

    before, seen = torch.get_num_threads(), []
    monkeypatch.setattr(demo, "_run", lambda cfg, device: seen.append((torch.get_num_threads(), device)))
    demo.run(demo.NerfDemoConfig(out=tmp_path / "demo", device="cpu", threads=threads))
    assert seen == [(1 if threads == 1 else before, "cpu")] and torch.get_num_threads() == before

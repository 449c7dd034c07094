"""Scene models sized for a CPU: the toy demo, the tests, ``ids-batch --cpu-scenes`` and the benchmarks use them.

Each function edits a model config in place (it is applied to a reconstruction's config; an edit adopts it from the
reconstruction's config.yml). :func:`cpu_sized` applies the one of the config's scene kind.
"""

from __future__ import annotations

from nerfstudio.models.base_model import ModelConfig
from nerfstudio.models.nerfacto import NerfactoModelConfig
from nerfstudio.models.splatfacto import SplatfactoModelConfig


def cpu_friendly_nerfacto(model: NerfactoModelConfig) -> None:
    """Shrink nerfacto to CPU size (torch hash grids, 8 levels, 2^15 tables, 32/16 proposal and 16 NeRF samples)."""
    model.implementation = "torch"
    model.num_levels = 8
    model.log2_hashmap_size = 15
    model.max_res = 512
    model.hidden_dim = 32
    model.hidden_dim_color = 32
    model.num_proposal_samples_per_ray = (32, 16)
    model.num_nerf_samples_per_ray = 16
    model.proposal_net_args_list = [
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 64, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 128, "use_linear": False},
    ]
    model.eval_num_rays_per_chunk = 4096


def cpu_friendly_splatfacto(model: SplatfactoModelConfig, gaussians: int = 4000, extent: float = 2.0) -> None:
    """Splatfacto for a CPU: without seed points, a random initialisation of ``gaussians`` Gaussians in a cube of
    side ``extent`` around the origin (a toy scene at the demo's scale_factor 0.3 fits in it); SH degree 1; one
    densification, at step 300 (warm-up 200, refine every 100, splitting stops at 350), full resolution from the
    start (the toy views are 64 px). Measured on the toy scene with its point cloud (5,000 points, 32 views at 64
    px, 2-core CPU under load): 500 steps reach 27.9 dB test PSNR with 8,421 Gaussians in 97 s; 600 steps with two
    more densifications 28.4 dB but 26,682 Gaussians in 202 s."""
    model.num_random = gaussians
    model.random_scale = extent
    model.sh_degree = 1
    model.sh_degree_interval = 200
    model.warmup_length = 200
    model.refine_every = 100
    model.reset_alpha_every = 10
    model.stop_split_at = 350
    model.num_downscales = 0
    model.resolution_schedule = 1000


def cpu_sized(model: ModelConfig) -> None:
    """Apply the CPU sizes of ``model``'s scene kind (nerfacto or splatfacto) in place."""
    if isinstance(model, NerfactoModelConfig):
        cpu_friendly_nerfacto(model)
    elif isinstance(model, SplatfactoModelConfig):
        cpu_friendly_splatfacto(model)
    else:
        raise TypeError(f"no CPU sizes for {type(model).__name__}")

"""Benchmarks: identity preservation (ids-bench-identity), 2D step speed (ids-bench-speed) and NeRF step phases
(ids-bench-nerf)."""

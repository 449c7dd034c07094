"""Benchmarks: identity preservation (ids-bench-identity) and speed (ids-bench-speed)."""

"""Working sizes for the prior: the input's aspect ratio kept, sides fitting the UNet (no torch, no nerfstudio)."""

from __future__ import annotations


def render_size(width: int, height: int, long_side: int, multiple: int) -> tuple[int, int]:
    """(width, height) with the long side = ``long_side`` and the short side rounded to a multiple of ``multiple``."""
    if width >= height:
        w, h = long_side, max(multiple, round(long_side * height / width / multiple) * multiple)
    else:
        w, h = max(multiple, round(long_side * width / height / multiple) * multiple), long_side
    return w, h

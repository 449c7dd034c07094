"""Working sizes for the prior: the input's aspect ratio kept, sides fitting the UNet (no torch, no nerfstudio)."""

from __future__ import annotations


def render_size(height: int, width: int, long_side: int, multiple: int) -> tuple[int, int]:
    """(height, width) with the long side = ``long_side`` and the short side rounded to a multiple of ``multiple``
    (at least one multiple)."""
    if width >= height:
        return max(multiple, round(long_side * height / width / multiple) * multiple), long_side
    return long_side, max(multiple, round(long_side * width / height / multiple) * multiple)

"""ids_nerf: identity-preserving score-distillation editing (IDS) for images and NeRF scenes."""

__version__ = "0.1.0"

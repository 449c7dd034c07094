"""Where runs saved by earlier versions find their model classes: their ``config.yml`` names
``ids_nerf.nerf.model.IDSNerfactoModelConfig`` / ``IDSNerfactoModel``, which now live in
:mod:`ids_nerf.scenes.nerfacto` (one module per scene type)."""

from ids_nerf.scenes.nerfacto import IDSNerfactoModel, IDSNerfactoModelConfig

__all__ = ["IDSNerfactoModel", "IDSNerfactoModelConfig"]

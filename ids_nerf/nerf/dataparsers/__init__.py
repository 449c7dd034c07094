"""nerfstudio dataparsers of the plugin, registered as ``nerfstudio.dataparser_configs`` entry points.

* ``llff_dataparser`` (``llff-data``): LLFF forward-facing scenes (:mod:`ids_nerf.nerf.dataparsers.llff`);
* ``auto_dataparser`` (``ids-auto-data``): detects LLFF, Blender or nerfstudio data
  (:mod:`ids_nerf.nerf.dataparsers.auto`).

:func:`ids_nerf.nerf.dataparsers.validate.validate_scene_data` checks a data folder as these parsers will read it,
before a command writes anything. It is not imported here: it subclasses nerfstudio's ``TrainerConfig``, whose import
chain reads nerfstudio's dataparser registry, which imports this package while it is being built.
"""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from ids_nerf.nerf.dataparsers.auto import AutoDataParser, AutoDataParserConfig, detect_data_format
from ids_nerf.nerf.dataparsers.llff import LLFFDataParser, LLFFDataParserConfig

llff_dataparser = DataParserSpecification(
    config=LLFFDataParserConfig(),
    description="LLFF forward-facing scenes: poses_bounds.npy + images/ (or images_4/, images_8/), "
    "e.g. nerf_llff_data/fern",
)
"""Entry point ``llff-data``."""

auto_dataparser = DataParserSpecification(
    config=AutoDataParserConfig(),
    description="Detects the format of --data: LLFF (poses_bounds.npy), Blender (transforms_train.json) or "
    "nerfstudio (transforms.json)",
)
"""Entry point ``ids-auto-data``."""

__all__ = [
    "AutoDataParser",
    "AutoDataParserConfig",
    "LLFFDataParser",
    "LLFFDataParserConfig",
    "auto_dataparser",
    "detect_data_format",
    "llff_dataparser",
]

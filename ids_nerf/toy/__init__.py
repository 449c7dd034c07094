"""The bundled offline toy world, one job per module.

Scenes (numpy only): :mod:`~ids_nerf.toy.scene_spec` (palette, object and scene specs, random scenes, captions),
:mod:`~ids_nerf.toy.cameras` (pinhole cameras and their placements), :mod:`~ids_nerf.toy.raycast` (the analytic
ray caster: images with exact depth and object masks), :mod:`~ids_nerf.toy.generation` (streams of captioned
images).

Uses: :mod:`~ids_nerf.toy.datasets` (NeRF datasets with ground truth), :mod:`~ids_nerf.toy.detectors` (analytic
colour/shape/floor detectors that measure whether an edit happened; classifier fitted by
:mod:`~ids_nerf.toy.shape_fit`).

Priors: :mod:`~ids_nerf.toy.builtin` (the named priors ``toy`` and ``tiny``), :mod:`~ids_nerf.toy.tiny`
(random-weight SD-architecture pipeline), :mod:`~ids_nerf.toy.tokenizer` (offline CLIP vocabulary), and the
training of the bundled toy prior: :mod:`~ids_nerf.toy.train_prior` (CLI) with :mod:`~ids_nerf.toy.train_config`,
:mod:`~ids_nerf.toy.training_data`, :mod:`~ids_nerf.toy.models`, :mod:`~ids_nerf.toy.train_loop`,
:mod:`~ids_nerf.toy.train_stages`; its quality gates: :mod:`~ids_nerf.toy.quality` (CLI).

Import the submodules directly; this package imports nothing.
"""

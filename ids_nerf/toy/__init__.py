"""The bundled offline toy world.

Numpy-only procedural scenes (a few coloured primitives on a textured floor under a sky), an analytic
ray caster that renders them with exact depth and object masks (:mod:`ids_nerf.toy.scenes`), writers for
NeRF datasets with ground truth (:mod:`ids_nerf.toy.datasets`), and analytic colour/shape detectors that
measure whether an edit happened (:mod:`ids_nerf.toy.detectors`). Import the submodules directly; this
package imports nothing heavy.
"""

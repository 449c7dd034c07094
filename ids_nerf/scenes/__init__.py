"""Editable scene types behind one seam.

The editing loop talks to every scene type (nerfacto radiance fields, Gaussian splats) through the same small
interface, so the pipeline, trainer, viewer controls, evaluation and the score distiller are written once. The
modules of this package hold that seam and the scene-specific pieces behind it, e.g. a pure-PyTorch CPU Gaussian
rasterizer with gsplat's conventions (:mod:`ids_nerf.scenes.rasterize_cpu`) and the dispatcher that picks it or
gsplat's CUDA kernels (:mod:`ids_nerf.scenes.rasterize`). This file deliberately imports nothing.
"""

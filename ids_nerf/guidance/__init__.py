"""Guidance library: the diffusion prior, score functions (SDS/DDS/CDS/PDS), FPR and the ScoreDistiller.

Imports torch (and diffusers lazily, when a prior is loaded); never nerfstudio.
"""

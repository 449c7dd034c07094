"""nerfstudio glue: dataparsers (LLFF, format auto-detection), the checkpoint loading fix, model and pipeline.

Keep this package cheap to import: ``ns-*`` commands import the plugin's entry points at every start, so the
modules here import nerfstudio and torch but never diffusers or transformers at module level. Import the
submodules directly; this package imports nothing.
"""

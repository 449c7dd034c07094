#!/usr/bin/env bash
# One set-up: builds ./.venv with ids_nerf (editable), nerfstudio, diffusers and the test tools.
# torch/torchvision are pinned by constraints.txt (CUDA builds from PyPI; they also run on CPU-only machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
.venv/bin/python -c "import torch, torchvision, diffusers, nerfstudio, ids_nerf; print('ids_nerf set-up OK: torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"

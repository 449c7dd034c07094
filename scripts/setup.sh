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
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,ray]"
# open3d (what ns-export loads) needs the system library libusb-1.0 (Debian: libusb-1.0-0), absent on a fresh Debian.
if ! open3d_error="$(.venv/bin/python -c "import open3d" 2>&1)"; then
  if grep -q "libusb-1.0" <<<"$open3d_error"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "Installing Debian's libusb-1.0-0 (needed by open3d, i.e. ns-export) with apt-get ..."
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null; }
    else
      sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo "
      echo "error: ns-export needs the system library libusb-1.0, which is missing (open3d: ${open3d_error##*$'\n'})." >&2
      echo "Install it, then run this set-up again:  ${sudo}apt-get install -y libusb-1.0-0" >&2
      echo "(not Debian/Ubuntu: install your distribution's libusb 1.0 package, e.g. ${sudo}dnf install libusb1)" >&2
      exit 1
    fi
  fi
  if ! open3d_error="$(.venv/bin/python -c "import open3d" 2>&1)"; then
    echo "error: open3d (used by ns-export) does not import: ${open3d_error##*$'\n'}" >&2
    exit 1
  fi
fi
.venv/bin/python -c "import torch, torchvision, diffusers, nerfstudio, ids_nerf; print('ids_nerf set-up OK: torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"

#!/usr/bin/env bash
# Downloads the wheels that scripts/gpu_check.sh installs on the GPU machine (H200, Python 3.12, its own torch 2.11
# + CUDA 13, transformers 5, accelerate; no diffusers / nerfstudio / tyro / this project; no package registry).
#
#   bash scripts/gpu_wheels.sh            -> .whl/gpu/        (cp312, manylinux x86_64: what the `run` tool carries)
#   GPU_PY=3.11 bash scripts/gpu_wheels.sh -> .whl/gpu-py311/ (the same set for this machine's Python: dry run)
#   bash scripts/gpu_wheels.sh --list      -> prints the requirement lines, downloads nothing (GPU_WHEELS_LIST=1 too)
#
# Versions are pinned to .venv (pip freeze), except torchvision for the GPU (0.26.0: the build for torch 2.11.0)
# and fpsample (0.3.3: 1.0.2 has no wheels).
# The folder holds pin/ (always installed), fill/ (installed only where the machine lacks that distribution),
# build/ (setuptools, to build this project from the carried source tree) and manifest.txt. The project itself is
# NOT a wheel: the working tree travels anyway (~21 MiB, mostly the bundled toy prior), and gpu_check.sh installs it
# from that copy, so a wheel would carry the same bytes twice and go stale while ids_nerf/ is being edited.
#
# What was measured here (nerfstudio 1.1.5, diffusers 0.42.1, tyro 1.0.17; import tracing in .venv, Python 3.11):
# - The training import chain (ids_nerf.method_configs, nerfstudio.engine.trainer / models.nerfacto /
#   pipelines.base_pipeline / scripts.train / configs.method_configs, diffusers UNet/VAE/DDIM, tyro, ids_nerf.bench.*)
#   loads these distributions that the GPU machine does not have (KINDS.md package list, 2026-11-17): nerfstudio,
#   diffusers, tyro (+ docstring-parser, typeguard), viser (+ msgspec, websockets; nerfstudio.utils.math -> viser),
#   nerfacc (model_components/renderers.py imports it at top), gsplat + pytorch-msssim + tensorly (splatfacto, imported
#   by nerfstudio/viewer/viewer.py <- engine/trainer.py), splines (viewer/render_panel.py), pyquaternion (nuscenes
#   dataparser), appdirs + rawpy (colmap dataparser -> process_data), fpsample (full_images_datamanager), pathos
#   (+ dill, multiprocess, ppft; parallel_datamanager).
# - open_clip_torch is never imported: ids_nerf.toy.tokenizer only reads the CLIP BPE file inside the package (the
#   random SD-v1 components need it), so it is carried --no-deps (no timm/ftfy).
# - torchvision IS needed: nerfstudio/pipelines/base_pipeline.py:30 `import torchvision.utils` (module top, reached
#   from the trainer and from ids_nerf.nerf.pipeline), and torchmetrics' LPIPS in nerfacto builds a torchvision
#   AlexNet. KINDS.md lists torchvision 0.26.0 on the machine; the `run` notes only name PyTorch/transformers/
#   accelerate. So it is carried as a fill-in: PyPI's torchvision-0.26.0-cp312 manylinux wheel is 7.5 MB and requires
#   torch==2.11.0, whose PyPI build is CUDA 13.0 (cuda-toolkit 13.0.2, triton 3.6.0) like the machine's 2.11.0+cu130;
#   gpu_check.sh installs it only if `torchvision` is missing there, never over the machine's own.
# - gsplat 1.4.0 / nerfacc 0.5.2 are pure-Python wheels that JIT-compile CUDA on first use of their ops; nerfacto
#   with `implementation torch` calls neither (import only), so nothing is compiled and tinycudann is not needed.
#   Splat editing on CUDA does call gsplat's kernels: gpu_check.sh builds them (torch.utils.cpp_extension, which
#   needs nvcc and ninja; ninja is carried as a fill-in in case the machine's PATH lacks it).
# - Not needed by training: open3d (ns-export), pymeshlab, trimesh/yourdfpy/plyfile (viser meshes), comet-ml, wandb,
#   jupyterlab, timm, lpips, mediapy, av, nuscenes-devkit, gdown, opencv (on the machine). Never carried: torch,
#   torchaudio, triton, nvidia-*, cuda-* (the machine's CUDA stack must stay untouched).
# - On the machine already (KINDS.md) and used by the chain, NOT carried: see MACHINE below (the dry run installs
#   these from the registry into its stand-in venv; gpu_check.sh records their versions there).
#   scikit-learn among them: splatfacto's populate_modules imports sklearn (k_nearest_sklearn) to size the Gaussians
#   it initialises (the dry run found it missing, 2026-12-04).
# Sizes (printed at the end of a download; wheels + the travelling working tree must stay < 64 MiB): measured
# 2026-12-02, 26 wheels = 38.1 MiB (torchvision 7.2, tensorly 7.1 of which 6.8 is its unused datasets/data, gsplat 6.2
# of which 5.7 is CUDA sources, diffusers 6.1, viser 4.4, rawpy 2.8, open-clip-torch 1.5, setuptools 0.8, the other
# 18 under 0.6 together with nerfstudio 0.55) + working tree 20.9 MiB = 59.0 MiB: about 5 MiB of headroom.
set -euo pipefail
cd "$(dirname "$0")/.."

GPU_PY="${GPU_PY:-3.12}"
if [ "$GPU_PY" = "3.12" ]; then DEFAULT_DEST=.whl/gpu; else DEFAULT_DEST=".whl/gpu-py${GPU_PY//./}"; fi
DEST="${GPU_WHEELS_DEST:-$DEFAULT_DEST}"
VENV_PY="${VENV_PY:-.venv/bin/python}"
LIMIT_MIB="${GPU_WHEELS_LIMIT_MIB:-64}"
LIST=0
[ "${1:-}" = "--list" ] && LIST=1
[ "${GPU_WHEELS_LIST:-0}" = "1" ] && LIST=1

# Always installed into the check's site folder (none of these is on the machine).
PIN=(
  nerfstudio diffusers tyro docstring-parser typeguard viser msgspec websockets nerfacc gsplat pytorch-msssim
  tensorly splines pyquaternion appdirs rawpy fpsample pathos dill multiprocess ppft open-clip-torch
)
# Installed only where the machine lacks the distribution (never over the machine's own copy).
FILL=(torchvision jaxtyping wadler-lindig ninja)
# Used only to build this project from source on the machine (--no-build-isolation).
BUILD=(setuptools)
# On the machine (KINDS.md) and used by the chain; versions where KINDS.md gives them. Not carried.
MACHINE=(
  transformers==5.17.0 accelerate==1.15.0 huggingface-hub==1.33.0 safetensors==0.8.0 tokenizers==0.23.2
  torchmetrics==1.9.0 numpy pillow opencv-python-headless matplotlib imageio rich tqdm pyyaml requests scipy
  tensorboard packaging typing-extensions regex filelock fsspec jinja2 pytest scikit-learn
)
# GPU torchvision: the build that pairs with the machine's torch 2.11.0.
GPU_TORCHVISION=0.26.0
# Versions other than .venv's: fpsample 1.0.2 (in .venv, built here from its sdist) has no wheels at all; 0.3.3 is
# the newest with cp311/cp312 manylinux wheels, and nerfstudio only calls it in splatfacto's FullImageDatamanager.
declare -A OVERRIDE=([fpsample]=0.3.3)
NEVER='^(torch|torchaudio|triton|nvidia-.*|cuda-.*|open3d|pymeshlab|tinycudann)$'

norm() { echo "$1" | tr 'A-Z_.' 'a-z--'; }

declare -A VER
while IFS= read -r line; do
  case "$line" in *==*) VER["$(norm "${line%%==*}")"]="${line#*==}" ;; esac
done < <("$VENV_PY" -m pip freeze --all 2>/dev/null)

pinned() { # NAME -> NAME==VERSION (from .venv, but for OVERRIDE and the GPU's torchvision)
  local n
  n="$(norm "$1")"
  if [ "$n" = torchvision ] && [ "$GPU_PY" = "3.12" ]; then echo "torchvision==$GPU_TORCHVISION"; return; fi
  if [ -n "${OVERRIDE[$n]:-}" ]; then echo "$n==${OVERRIDE[$n]}"; return; fi
  if [ -z "${VER[$n]:-}" ]; then echo "gpu_wheels.sh: $n is not installed in $VENV_PY's environment" >&2; exit 1; fi
  echo "$n==${VER[$n]}"
}

LINES=()
for kind in pin fill build; do
  case $kind in pin) names=("${PIN[@]}") ;; fill) names=("${FILL[@]}") ;; build) names=("${BUILD[@]}") ;; esac
  for name in "${names[@]}"; do
    if [[ "$(norm "$name")" =~ $NEVER ]]; then echo "gpu_wheels.sh: $name must never be carried" >&2; exit 1; fi
    LINES+=("$kind $(pinned "$name")")
  done
done
for req in "${MACHINE[@]}"; do LINES+=("machine $req"); done

if [ "$LIST" = 1 ]; then
  printf '%s\n' "${LINES[@]}"
  exit 0
fi

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
rm -rf "$DEST"
mkdir -p "$DEST"
for kind in pin fill build; do
  reqs=()
  for line in "${LINES[@]}"; do [ "${line%% *}" = "$kind" ] && reqs+=("${line#* }"); done
  echo "== $kind (${#reqs[@]}): ${reqs[*]}"
  "$VENV_PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PY" --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST/$kind" "${reqs[@]}" 2>&1 | sed '/^WARNING: Location .* is ignored/d'
  n=$(find "$DEST/$kind" -name '*.whl' | wc -l)
  if [ "$n" != "${#reqs[@]}" ]; then echo "gpu_wheels.sh: $kind: $n wheels for ${#reqs[@]} requirements" >&2; exit 1; fi
done
printf '%s\n' "${LINES[@]}" > "$DEST/manifest.txt"

echo
echo "Wheels in $DEST (Python $GPU_PY):"
(cd "$DEST" && find . -name '*.whl' -printf '%s %P\n' | sort -k2 | awk '{printf "  %8.2f MiB  %s\n", $1 / 1048576, $2}')
wheels_bytes=$(find "$DEST" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
total=$((wheels_bytes + tree_bytes))
awk -v w="$wheels_bytes" -v t="$tree_bytes" -v s="$total" -v l="$LIMIT_MIB" 'BEGIN {
  printf "Total: wheels %.2f MiB + working tree %.2f MiB = %.2f MiB (limit %d MiB per run call)\n",
    w / 1048576, t / 1048576, s / 1048576, l }'
if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels.sh: over the ${LIMIT_MIB} MiB that one run call carries" >&2
  exit 1
fi

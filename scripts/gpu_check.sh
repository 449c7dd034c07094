#!/usr/bin/env bash
# GPU check of ids_nerf, run on the GPU machine (H200, Python 3.12, its own torch 2.11 + CUDA 13; no registry) from the
# root of the copy of the working tree that the `run` tool sends. Within GPU_CHECK_BUDGET_S (570 s) it:
#   install   pip-installs the carried wheels (scripts/gpu_wheels.sh -> .whl/gpu) with --no-index --no-deps into a
#             fresh --target folder put first on PYTHONPATH (the machine's torch is never touched): pin/ always,
#             fill/ only where the machine lacks that distribution; then this project from the tree copy (its
#             entry points included), built with the carried setuptools; then imports the training chain
#   versions  python/torch/CUDA/GPU and every carried or machine-provided package, and where each comes from
#   nvidia-smi
#   gsplat    gsplat's CUDA kernels built (JIT, torch.utils.cpp_extension) IN THE BACKGROUND while the next stages use
#             the GPU: checks nvcc (version) and ninja first, times the build, and says plainly when it cannot build
#             (dry run: skipped, the CPU rasterizer is used); its row is written when the nerf stage waits for it
#   speed     ids-bench-speed, SD-v1 architecture (random weights), fp16: dds, ids-n1, ids + their reference forms
#   nerf      ids-bench-nerf, SD-v1 architecture, on a 20-view 504x378 scene, 3 steps: when gsplat built,
#             dds-splat-edit and ids-splat-edit (50,000 Gaussians), then dds-edit and ids-edit (nerfacto); what was
#             measured comes back also when the stage runs out of time
#   pytest    pytest -m gpu tests/test_gpu.py tests/test_rasterize_cpu.py (every method preset at 512x384 on SD-v1,
#             fp16; a NeRF editing step; the CPU rasterizer against gsplat's on one scene)
# Each stage runs under `timeout` (its own cap, clipped to what is left of the budget); a failing stage does not stop
# the next; the exit status is 1 if any stage failed or was skipped. Outputs go to $OUT/gpu-check (else
# outputs/gpu-check), at most 8 files, as the `run` tool brings back no more: summary.md, summary.json (stages with
# rc and seconds, versions, nvidia-smi), speed.json, speed.md, bench_nerf.json, bench_nerf.md, pytest.log and
# logs.tar.gz (every stage's log). Outbound HTTP is pointed at a closed local port (HF_HUB_OFFLINE too), so a
# download attempt (nerfacto's LPIPS AlexNet) fails at once instead of hanging on the offline machine.
#
# From the developer machine (wheels first; they and the tree must stay < 64 MiB, gpu_wheels.sh checks):
#   bash scripts/gpu_wheels.sh
#   run(command="bash scripts/gpu_check.sh", carry=[".whl/gpu"], timeout_s=600)
#
# GPU_CHECK_DRY=1: the same stages on this CPU at tiny size (--prior tiny, float32, 1 step, 96x72 px, 3 views;
# tests/test_gpu.py with IDS_GPU_TEST_CPU=1), against a stand-in for the bare machine: a throwaway venv
# (GPU_DRY_VENV, default /tmp/gpu-dry-venv, reused while its requirements are unchanged) holding only torch (as
# constraints.txt pins it) and the packages the wheel manifest lists as the machine's own (transformers, accelerate,
# numpy, ...), all from the registry; the cp311 wheels (GPU_PY=3.11 bash scripts/gpu_wheels.sh -> .whl/gpu-py311)
# are installed exactly as on the machine, in a copy of the working tree made as the `run` tool makes it.
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 2
DRY="${GPU_CHECK_DRY:-0}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-570}"
RESERVE_S=15
if [ -n "${OUT:-}" ]; then RESULT="$OUT/gpu-check"; else RESULT="$REPO/outputs/gpu-check"; fi
RESULT="${GPU_CHECK_RESULT:-$RESULT}"
ORIG_PYTHONPATH="${PYTHONPATH:-}"
WORK="$(mktemp -d /tmp/gpu-check.XXXXXX)"
TREE=""
cleanup() { # GPU_CHECK_KEEP=1 keeps the site folder, the logs and the dry run's tree copy
  [ "${GPU_CHECK_KEEP:-0}" = 1 ] && return
  rm -rf "$WORK"
  [ -z "$TREE" ] || rm -rf "$TREE"
}
trap cleanup EXIT

if [ "$DRY" = 1 ]; then
  WHEELS_SRC="${GPU_CHECK_WHEELS:-.whl/gpu-py311}"
  if [ ! -f "$WHEELS_SRC/manifest.txt" ]; then
    echo "gpu_check.sh: no $WHEELS_SRC/manifest.txt; run: GPU_PY=3.11 bash scripts/gpu_wheels.sh" >&2
    exit 2
  fi
  DRY_VENV="${GPU_DRY_VENV:-/tmp/gpu-dry-venv}"
  mapfile -t REQS < <(grep -E '^torch==' constraints.txt; awk '$1 == "machine" {print $2}' "$WHEELS_SRC/manifest.txt")
  if [ -x "$DRY_VENV/bin/python" ] && [ "$(cat "$DRY_VENV/.gpu-check-reqs" 2>/dev/null)" = "${REQS[*]}" ]; then
    echo "dry run: reusing the stand-in venv $DRY_VENV"
  else
    echo "dry run: building the stand-in venv $DRY_VENV: ${REQS[*]}"
    t=$SECONDS
    rm -rf "$DRY_VENV"
    if ! "${GPU_DRY_BASE_PYTHON:-python3}" -m venv "$DRY_VENV" ||
      ! "$DRY_VENV/bin/python" -m pip install --quiet "${REQS[@]}" 2>&1 | sed '/^WARNING: Location .* is ignored/d'
    then
      echo "gpu_check.sh: could not build $DRY_VENV" >&2
      exit 2
    fi
    echo "${REQS[*]}" >"$DRY_VENV/.gpu-check-reqs"
    echo "dry run: stand-in venv built in $((SECONDS - t)) s"
  fi
  PY="$DRY_VENV/bin/python"
  # the copy of the working tree that the run tool would send (tracked + untracked-not-ignored), wheels carried
  TREE="$(mktemp -d /tmp/gpu-check-tree.XXXXXX)"
  git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$TREE"
  mkdir -p "$TREE/.whl/gpu" && cp -r "$WHEELS_SRC"/. "$TREE/.whl/gpu/"
  cd "$TREE" || exit 2
  export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES="" IDS_GPU_TEST_CPU=1
else
  PY="${GPU_CHECK_PYTHON:-python3}"
  if [ ! -f .whl/gpu/manifest.txt ]; then
    echo "gpu_check.sh: no .whl/gpu/manifest.txt: run scripts/gpu_wheels.sh here and carry [\".whl/gpu\"]" >&2
    exit 2
  fi
fi
# Benchmark flags, GPU and dry run (tests/test_gpu_scripts.py parses each line with the benchmark's own config).
# The nerf stage adds --methods: NERF_METHODS, plus SPLAT_METHODS when gsplat's kernels built (or on the dry run).
SPEED_GPU="--arch sd-v1 --prior.dtype float16 --methods dds ids-n1 ids --reference --repeats 5 --warmup 2 --edit-steps 0"
SPEED_DRY="--prior.model tiny --prior.dtype float32 --methods dds ids-n1 ids --reference --repeats 1 --warmup 0 \
--edit-steps 0"
NERF_GPU="--arch sd-v1 --steps 3 --warmup 1 --gaussians 50000"
NERF_DRY="--prior.model tiny --prior.dtype float32 --steps 1 --warmup 0 --width 96 --height 72 --views 3 \
--gaussians 2000"
NERF_METHODS="dds-edit ids-edit"
SPLAT_METHODS="dds-splat-edit ids-splat-edit"
if [ "$DRY" = 1 ]; then SPEED_ARGS=$SPEED_DRY NERF_ARGS=$NERF_DRY; else SPEED_ARGS=$SPEED_GPU NERF_ARGS=$NERF_GPU; fi
WHEELS=.whl/gpu
SITE="$WORK/site"
BUILD_SITE="$WORK/build-site"
LOGS="$WORK/logs"
rm -rf "$RESULT"
mkdir -p "$RESULT" "$LOGS"
export PY WHEELS SITE BUILD_SITE LOGS RESULT WORK DRY ORIG_PYTHONPATH SPEED_ARGS NERF_ARGS NERF_METHODS SPLAT_METHODS
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
export HTTPS_PROXY=http://127.0.0.1:9 no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
export TORCH_EXTENSIONS_DIR="$WORK/torch_extensions"
# gsplat's kernels are built (and re-validated by torch.utils.cpp_extension in every later process) with nvcc and
# ninja: the carried ninja wheel's script folder and the CUDA toolkit's bin/ go on PATH for every stage
export PATH="$SITE/bin:$PATH"
if ! command -v nvcc >/dev/null && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  export PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH"
fi
if command -v nvcc >/dev/null && [ -z "${CUDA_HOME:-}" ]; then
  CUDA_HOME="$(dirname "$(dirname "$(command -v nvcc)")")"
  export CUDA_HOME
fi

# ------------------------------------------------------------------------------------------------ stages
st_install() {
  set -e
  "$PY" -m pip --version
  pipi() { "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir "$@"; }
  pipi --target "$BUILD_SITE" "$WHEELS"/build/*.whl
  # the pinned wheels and this project, from the copy of the working tree (entry points included), built by the
  # carried setuptools without build isolation (no registry there)
  PYTHONPATH="$BUILD_SITE" pipi --no-build-isolation --target "$SITE" "$WHEELS"/pin/*.whl .
  local fill=() w dist have
  for w in "$WHEELS"/fill/*.whl; do
    dist="$(basename "$w")"
    dist="${dist%%-*}"
    if have="$(PYTHONPATH="$ORIG_PYTHONPATH" "$PY" -c \
      'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$dist" 2>/dev/null)"; then
      echo "fill: the machine has $dist $have: kept, $(basename "$w") not installed"
    else
      fill+=("$w")
    fi
  done
  if [ "${#fill[@]}" -gt 0 ]; then
    echo "fill: installing ${fill[*]##*/}"
    pipi --target "$SITE" "${fill[@]}"
  fi
  find "$SITE" -maxdepth 1 -name '*.dist-info' -printf '%f\n' | sed 's/\.dist-info$//' | sort >"$WORK/installed.txt"
  echo "installed into $SITE: $(tr '\n' ' ' <"$WORK/installed.txt")"
  local mods="ids_nerf.method_configs, nerfstudio.engine.trainer, nerfstudio.models.nerfacto"
  mods="$mods, nerfstudio.pipelines.base_pipeline, nerfstudio.scripts.train, diffusers, tyro, torchvision"
  mods="$mods, ids_nerf.bench.speed, ids_nerf.bench.nerf, ids_nerf.nerf.standalone"
  PYTHONPATH="$SITE${ORIG_PYTHONPATH:+:$ORIG_PYTHONPATH}" "$PY" -c "import $mods; print('imports OK: $mods')"
}

st_versions() {
  "$PY" - "$WHEELS/manifest.txt" "$WORK/installed.txt" "$SITE" "$LOGS/versions.json" <<'EOF'
import importlib.metadata as md
import json
import platform
import sys

manifest, installed, site, out = sys.argv[1:5]
carried = {line.rsplit("-", 1)[0].lower().replace("_", "-") for line in open(installed).read().split()}
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
try:
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cudnn"] = torch.backends.cudnn.version()
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = props.name
        info["capability"] = f"{props.major}.{props.minor}"
        info["memory_gib"] = round(props.total_memory / 2**30, 1)
except Exception as err:  # report, do not fail the listing
    info["torch_error"] = repr(err)
packages = {}
names = [line.split()[1].split("==")[0] for line in open(manifest) if line.strip()] + ["ids-nerf", "torch"]
for name in dict.fromkeys(names):
    try:
        dist = md.distribution(name)
        where = "carried" if name.lower() in carried else "machine"
        packages[name] = {"version": dist.version, "from": where}
    except md.PackageNotFoundError:
        packages[name] = {"version": None, "from": "missing"}
info["packages"] = packages
json.dump(info, open(out, "w"), indent=1)
print(json.dumps(info, indent=1))
EOF
}

st_nvidia_smi() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
  elif [ "$DRY" = 1 ]; then
    echo "nvidia-smi: not on this machine (dry run)"
  else
    echo "nvidia-smi: not found"
    return 1
  fi
}

st_gsplat() { # builds gsplat's CUDA kernels (the JIT build splatfacto's first CUDA render would trigger), timed
  if [ "$DRY" = 1 ]; then
    echo "dry run (CPU): gsplat's CUDA build skipped; splat methods run on ids_nerf's CPU rasterizer"
    return 0
  fi
  if ! command -v nvcc >/dev/null; then
    echo "CANNOT BUILD gsplat: no CUDA toolkit (nvcc not on PATH nor in \$CUDA_HOME/bin); splat editing on this GPU" \
      "needs it (gsplat 1.4.0 compiles its kernels on first use). Install the CUDA toolkit matching the driver."
    return 3
  fi
  echo "nvcc: $(command -v nvcc): $(nvcc --version | tail -n 2 | tr '\n' ' ')"
  if ! command -v ninja >/dev/null; then
    echo "CANNOT BUILD gsplat: ninja not found (torch.utils.cpp_extension needs it; the carried wheel did not install)"
    return 4
  fi
  echo "ninja: $(command -v ninja) ($(ninja --version)); CUDA_HOME=${CUDA_HOME:-unset}; MAX_JOBS=${MAX_JOBS:-10};" \
    "TORCH_EXTENSIONS_DIR=$TORCH_EXTENSIONS_DIR"
  "$PY" - <<'PYEOF'
import time

t0 = time.perf_counter()
from gsplat.cuda._backend import _C  # noqa: E402  (the JIT build happens at this import)

seconds = time.perf_counter() - t0
if _C is None:
    raise SystemExit(f"CANNOT BUILD gsplat: the JIT build produced no module after {seconds:.0f} s (log above)")
print(f"gsplat CUDA kernels built and loaded in {seconds:.1f} s")
PYEOF
}

st_speed() {
  # shellcheck disable=SC2086 # SPEED_ARGS is a list of plain words
  "$PY" -m ids_nerf.bench.speed $SPEED_ARGS --out "$RESULT/speed.json" >"$RESULT/speed.md"
}

st_nerf() {
  # the splat methods first: seconds each, where nerfacto's SD-size steps without tinycudann take minutes (the
  # 2026-12-04 check ran out of this stage's time inside the first nerfacto method); the benchmark rewrites its files
  # after each method, and they are copied after the stage, also when it ran out of time
  local methods="$NERF_METHODS"
  if [ "$(cat "$WORK/gsplat.ok" 2>/dev/null)" = 1 ]; then
    methods="$SPLAT_METHODS $methods"
  else
    echo "splat methods SKIPPED: gsplat's CUDA kernels did not build (see the gsplat stage)"
  fi
  # shellcheck disable=SC2086 # NERF_ARGS and methods are lists of plain words
  "$PY" -m ids_nerf.bench.nerf $NERF_ARGS --methods $methods --out "$WORK/nerf"
}

st_pytest() {
  "$PY" -m pytest -m gpu tests/test_gpu.py tests/test_rasterize_cpu.py -p no:cacheprovider -rA -v --durations=0 2>&1 |
    tee "$RESULT/pytest.log"
}
export -f st_install st_versions st_nvidia_smi st_gsplat st_speed st_nerf st_pytest

T0=$SECONDS
printf 'stage\trc\tseconds\tlimit_s\n' >"$WORK/stages.tsv"
FAILED=0
stage() { # NAME MAX_SECONDS FUNCTION
  local name=$1 max=$2 fn=$3 left limit rc t
  left=$((BUDGET_S - RESERVE_S - (SECONDS - T0)))
  limit=$((max < left ? max : left))
  if [ "$limit" -lt 5 ]; then
    echo "[$name] SKIPPED: the ${BUDGET_S} s budget is spent"
    printf '%s\tskipped\t0\t0\n' "$name" >>"$WORK/stages.tsv"
    FAILED=1
    return
  fi
  echo "[$name] start (limit ${limit} s, $((SECONDS - T0)) s used)"
  t=$(date +%s.%N)
  if [ "$name" = install ]; then
    timeout --kill-after=10 "$limit" bash -c "$fn" >"$LOGS/$name.log" 2>&1
  else
    PYTHONPATH="$SITE${ORIG_PYTHONPATH:+:$ORIG_PYTHONPATH}" timeout --kill-after=10 "$limit" bash -c "$fn" \
      >"$LOGS/$name.log" 2>&1
  fi
  rc=$?
  t=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$t" "$limit" >>"$WORK/stages.tsv"
  if [ "$rc" = 0 ]; then
    echo "[$name] ok in ${t} s"
  else
    FAILED=1
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "[$name] TIMED OUT after ${t} s"
    echo "[$name] FAILED (rc $rc) in ${t} s; last lines of its log:"
    tail -n 25 "$LOGS/$name.log" | sed 's/^/    /'
  fi
}

background() { # NAME MAX_SECONDS FUNCTION: start a stage in the background; `wait_stage NAME` records its row
  local limit=$2
  echo "[$1] start in the background (limit ${limit} s, $((SECONDS - T0)) s used)"
  date +%s.%N >"$WORK/$1.t0"
  (
    PYTHONPATH="$SITE${ORIG_PYTHONPATH:+:$ORIG_PYTHONPATH}" timeout --kill-after=10 "$limit" bash -c "$3" \
      >"$LOGS/$1.log" 2>&1
    echo $? >"$WORK/$1.rc"
  ) &
  echo $! >"$WORK/$1.pid"
}
wait_stage() { # NAME LIMIT
  local name=$1 rc t
  wait "$(cat "$WORK/$name.pid")" 2>/dev/null
  rc="$(cat "$WORK/$name.rc" 2>/dev/null || echo 1)"
  t=$(awk -v a="$(cat "$WORK/$name.t0")" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$t" "$2" >>"$WORK/stages.tsv"
  if [ "$rc" = 0 ]; then
    echo 1 >"$WORK/$name.ok"
    echo "[$name] ok in ${t} s (waited for): $(tail -n 1 "$LOGS/$name.log")"
  else
    FAILED=1
    echo "[$name] FAILED (rc $rc) in ${t} s; last lines of its log:"
    tail -n 25 "$LOGS/$name.log" | sed 's/^/    /'
  fi
}

stage install 150 st_install
GSPLAT_LIMIT=360
[ -f "$WORK/installed.txt" ] && background gsplat "$GSPLAT_LIMIT" st_gsplat
stage versions 60 st_versions
stage nvidia-smi 30 st_nvidia_smi
stage speed 150 st_speed
if [ -f "$WORK/gsplat.pid" ]; then wait_stage gsplat "$GSPLAT_LIMIT"; else
  printf 'gsplat\tskipped\t0\t0\n' >>"$WORK/stages.tsv"
  FAILED=1
fi
stage nerf 240 st_nerf
[ -f "$WORK/nerf/bench_nerf.json" ] && cp "$WORK/nerf/bench_nerf.json" "$WORK/nerf/bench_nerf.md" "$RESULT/"
stage pytest 150 st_pytest

# ------------------------------------------------------------------------------------------------ summary
"$PY" - "$WORK/stages.tsv" "$LOGS" "$RESULT" "$DRY" "$((SECONDS - T0))" <<'EOF'
import json
import sys
from pathlib import Path

tsv, logs, result, dry, total = sys.argv[1:6]
logs, result = Path(logs), Path(result)
rows = [line.split("\t") for line in Path(tsv).read_text().splitlines()[1:]]
stages = [{"stage": n, "rc": None if rc == "skipped" else int(rc), "seconds": float(s), "limit_s": int(lim),
           "ok": rc == "0"} for n, rc, s, lim in rows]
versions_file = logs / "versions.json"
versions = json.loads(versions_file.read_text()) if versions_file.is_file() else None
smi = (logs / "nvidia-smi.log").read_text() if (logs / "nvidia-smi.log").is_file() else ""
summary = {"ok": all(s["ok"] for s in stages), "dry_run": dry == "1", "total_s": int(total), "stages": stages,
           "versions": versions, "nvidia_smi": smi}
(result / "summary.json").write_text(json.dumps(summary, indent=1))

def read(path: Path, tail: int | None = None) -> str:
    if not path.is_file():
        return "(missing)\n"
    text = path.read_text(errors="replace")
    return "\n".join(text.splitlines()[-tail:]) + "\n" if tail else text

md = [f"# GPU check: {'OK' if summary['ok'] else 'FAILED'}{' (dry run, CPU)' if dry == '1' else ''}", "",
      f"total {total} s", "", "| stage | ok | rc | seconds | limit s |", "|---|---|---|---|---|"]
md += [f"| {s['stage']} | {'yes' if s['ok'] else 'NO'} | {s['rc']} | {s['seconds']} | {s['limit_s']} |" for s in stages]
if versions:
    pk = versions.get("packages", {})
    md += ["", "## Versions", "", f"python {versions.get('python')}, torch {versions.get('torch')} (CUDA "
           f"{versions.get('torch_cuda')}), device {versions.get('device', 'cpu')}", "",
           ", ".join(f"{k} {v['version']} ({v['from']})" for k, v in pk.items())]
md += ["", "## ids-bench-speed", "", read(result / "speed.md"), "## ids-bench-nerf", "", read(result / "bench_nerf.md"),
       "## pytest -m gpu (tail)", "", "```", read(result / "pytest.log", 30), "```"]
for s in stages:
    if not s["ok"]:
        md += ["", f"## {s['stage']} log (tail)", "", "```", read(logs / f"{s['stage']}.log", 40), "```"]
md += ["", "## nvidia-smi", "", "```", smi, "```"]
(result / "summary.md").write_text("\n".join(md) + "\n")
EOF
# small text files the nerf benchmark wrote besides its json/md go into the logs (not its checkpoints)
[ -d "$WORK/nerf" ] && (cd "$WORK" && find nerf -maxdepth 3 -type f -size -1M \( -name '*.json' -o -name '*.md' \
  -o -name '*.txt' -o -name '*.log' -o -name '*.yml' \) -exec cp --parents {} logs/ \;)
cp "$WORK/stages.tsv" "$LOGS/"
tar -czf "$RESULT/logs.tar.gz" -C "$WORK" logs

echo
column -t -s $'\t' "$WORK/stages.tsv" 2>/dev/null || cat "$WORK/stages.tsv"
echo "total $((SECONDS - T0)) s of ${BUDGET_S}; results in $RESULT:"
find "$RESULT" -type f -printf '  %8s  %P\n' | sort -k2
if [ "$FAILED" != 0 ]; then
  echo "GPU check: FAILED"
  exit 1
fi
echo "GPU check: OK"

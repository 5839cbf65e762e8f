"""CUDA libraries and what the machine offers, for the GPU path.

The stages come from three builds that need different CUDA libraries in one process:

- CTranslate2 (faster-whisper) 4.x is built against CUDA 12 and opens ``libcublas.so.12`` when a
  model first runs on the GPU (``get_cuda_device_count()`` succeeds without it, so only a real
  decode shows it is missing);
- llama.cpp built with ``-DGGML_CUDA=on`` links the ``libcudart``/``libcublas`` of the toolkit
  it was built with (12 or 13);
- torch 2.13.0 from PyPI brings CUDA 13 (``nvidia-*`` wheels in site-packages).

NVIDIA's pip wheels put those libraries under ``site-packages/nvidia/*/lib``, which the dynamic
linker does not search. :func:`preload` loads the ones that are there, by full path and
``RTLD_GLOBAL``, so a later ``dlopen("libcublas.so.12")`` (CTranslate2) or a ``NEEDED`` entry
(llama.cpp's ``libggml-cuda.so``) finds them already loaded. Different major versions have
different sonames, so CUDA 12 and 13 libraries sit side by side.
"""

from __future__ import annotations

import ctypes
import shutil
import site
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Load order matters: cudart before cuBLASLt before cuBLAS (each needs the one before).
SONAMES = ("libcudart.so.12", "libcublasLt.so.12", "libcublas.so.12",
           "libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13")

_loaded: dict[str, str | None] = {}


def _site_dirs() -> list[Path]:
    dirs = [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages()) if p]
    dirs += [Path(p) for p in sys.path if p.endswith("site-packages")]
    seen: list[Path] = []
    for d in dirs:
        if d not in seen and d.is_dir():
            seen.append(d)
    return seen


def find_library(soname: str, roots: Iterable[Path] | None = None) -> Path | None:
    """Where a pip-installed NVIDIA library with this soname is (``nvidia/<pkg>/lib`` for CUDA 12
    wheels, ``nvidia/cu13/lib`` for CUDA 13 ones), or None."""
    for root in (_site_dirs() if roots is None else roots):
        nvidia = Path(root) / "nvidia"
        if not nvidia.is_dir():
            continue
        for candidate in sorted(nvidia.glob(f"*/lib/{soname}")) + sorted(nvidia.glob(f"*/lib64/{soname}")):
            if candidate.is_file():
                return candidate
    return None


def preload(sonames: Iterable[str] = SONAMES, roots: Iterable[Path] | None = None,
            loader: Any = None) -> dict[str, str | None]:
    """Make each CUDA library loadable by its soname. Returns soname -> where it came from:
    ``"system"`` (the linker already finds it), a path (loaded from a pip wheel), or None
    (not on this machine). Idempotent and cheap after the first call."""
    loader = loader or (lambda name: ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL))
    out: dict[str, str | None] = {}
    for soname in sonames:
        if soname in _loaded and roots is None:
            out[soname] = _loaded[soname]
            continue
        where: str | None = None
        try:
            loader(soname)
            where = "system"
        except OSError:
            path = find_library(soname, roots)
            if path is not None:
                try:
                    loader(str(path))
                    where = str(path)
                except OSError:
                    where = None
        out[soname] = where
        if roots is None:
            _loaded[soname] = where
    return out


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed NVIDIA driver supports (e.g. (12, 8)), or None
    where there is no driver (no ``libcuda.so.1``)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return version.value // 1000, (version.value % 1000) // 10


def gpus() -> list[dict[str, Any]]:
    """The GPUs nvidia-smi lists (name, memory, compute capability, driver); [] without one."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,compute_cap,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            found.append({"name": parts[0], "memory_mb": parts[1], "compute_capability": parts[2],
                          "driver": parts[3]})
    return found

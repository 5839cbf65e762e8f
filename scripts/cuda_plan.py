#!/usr/bin/env python3
"""The CUDA plan of ``scripts/setup.sh --cuda``: what it will install on this GPU machine, decided
before anything is installed. ``--cuda --plan`` prints it; the real install reads its decisions
from here too (``--shell``), so the two cannot disagree.

    python3 scripts/cuda_plan.py                       # the plan for people (setup.sh --cuda --plan)
    python3 scripts/cuda_plan.py --shell               # the plan on stderr, shell variables on stdout
    python3 scripts/cuda_plan.py --doc docs/gpu.md     # regenerate the GPU x driver table of docs/gpu.md

Exit status: 0 the plan works, 1 it does not (one line on stderr says what to change), 2 usage.

What it reads: ``nvidia-smi`` (GPU name, compute capability, driver version, and the CUDA version the
driver supports), with ``S2S_DRIVER_CUDA`` (e.g. 12.8), ``S2S_CUDA_ARCH`` (e.g. 89) and
``S2S_TORCH_INDEX`` taking precedence; ``scripts/cuda_toolkit.sh --plan`` for where nvcc comes from;
``engine/profiles/gpu.toml`` for the models the pod fetches next; the free space of each disk.

Standard library only: setup.sh runs it with the interpreter it found in its step 0, before .venv
exists, so it imports nothing from the project or from PyPI.

Every rule below names its source. Three CUDA builds meet in one process on the pod:

- torch 2.13.0, a CUDA 12.6 or 13.0 build from download.pytorch.org;
- CTranslate2 4.x (faster-whisper's ASR), one wheel built with CUDA 12.8;
- llama.cpp, built here with ``-DGGML_CUDA=on`` for this GPU's architecture only.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "setup.sh --cuda: "
GB = 1e9

# --- what each driver runs ------------------------------------------------------------------

# Driver branch -> the newest CUDA it supports (what nvidia-smi prints as "CUDA Version"). NVIDIA's
# CUDA Toolkit release notes, Table 3 "CUDA Toolkit and Corresponding Driver Versions"
# (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html): 12.0 GA >= 525.60.13,
# 12.2 >= 535, 12.4 >= 550, 12.6 >= 560, 12.8 >= 570, 12.9 >= 575, 13.0 GA >= 580.65.06.
DRIVER_CUDA: dict[int, tuple[int, int]] = {
    525: (12, 0), 535: (12, 2), 550: (12, 4), 560: (12, 6), 570: (12, 8), 575: (12, 9), 580: (13, 0),
}


def min_driver(cuda: tuple[int, int]) -> int | None:
    """The oldest driver branch that supports this CUDA version (None past the table)."""
    fits = [branch for branch, c in DRIVER_CUDA.items() if c >= cuda]
    return min(fits) if fits else None


# --- torch 2.13.0 ---------------------------------------------------------------------------

TORCH_VERSION = "2.13.0"


@dataclass(frozen=True)
class TorchBuild:
    """One CUDA build of torch: the CUDA it was built with and the architectures it carries."""

    tag: str                 # cu126: the index .../whl/cu126, and the local version +cu126
    cuda: tuple[int, int]    # a driver must support this CUDA version (checked conservatively, below)
    sass: tuple[int, ...]    # compiled kernels (sm_XX)
    ptx: int | None = None   # PTX the driver can JIT for newer architectures

    @property
    def index(self) -> str:
        return f"https://download.pytorch.org/whl/{self.tag}"

    def runs_on(self, arch: int) -> bool:
        return any(sass_runs(a, arch) for a in self.sass) or (self.ptx is not None and arch >= self.ptx)


def sass_runs(built: int, arch: int) -> bool:
    """Compiled code for sm_XY runs on sm_XZ with Z >= Y, never across major versions (CUDA C++
    Programming Guide, "Binary Compatibility":
    https://docs.nvidia.com/cuda/cuda-c-programming-guide/#binary-compatibility)."""
    return built // 10 == arch // 10 and built % 10 <= arch % 10


# torch 2.13's CUDA builds are 12.6 and 13.0 (stable) and 13.2 (experimental): pytorch/pytorch PR
# #187075 (the 2.13 row of RELEASE.md's Release Compatibility Matrix). There is no 12.8 or 12.9
# build since 2.12: RFC pytorch/pytorch#178665 ("Deprecate CUDA 12.8"), and pytorch/FBGEMM PR #5976
# counted 0 cu128 wheels for 2.13. The architectures are RELEASE.md's "PyTorch CUDA Support
# Matrix" for 2.12 (PR #182849), the same for 2.13 (PR #197555): 12.6.3 Maxwell(5.0) .. Hopper(9.0),
# no Blackwell; 13.0.2 Turing(7.5) .. Blackwell(10.0, 12.0+PTX). 13.2 is left out: experimental,
# and it runs on nothing that 13.0 does not. The newer build comes first (preferred).
TORCH_BUILDS = (
    TorchBuild("cu130", (13, 0), (75, 80, 86, 90, 100, 120), ptx=120),
    TorchBuild("cu126", (12, 6), (50, 60, 70, 75, 80, 86, 90)),
)
# A build needs a driver of its CUDA version or newer. CUDA's minor-version compatibility would
# let the 12.6 build start on any driver >= 525.60.13, without the features that need a newer
# driver (https://docs.nvidia.com/deploy/cuda-compatibility/#minor-version-compatibility); the
# plan does not count on it. S2S_TORCH_INDEX=https://download.pytorch.org/whl/cu126 tries anyway.

# --- CTranslate2 (faster-whisper, the ASR) --------------------------------------------------

# The ctranslate2 4.8.5 wheel (what faster-whisper 1.2.1 resolves to): `cuobjdump --list-elf` and
# `--list-ptx` on its libctranslate2 show kernels for sm_53, 60, 61, 70, 75, 80, 86 and PTX for
# sm_86 at `.version 8.7`, the PTX ISA of CUDA 12.8 (PTX ISA release notes:
# https://docs.nvidia.com/cuda/parallel-thread-execution/#release-notes). A GPU newer than the
# kernels (sm_90 and up) makes the driver JIT-compile that PTX when the library loads, and a driver
# older than CUDA 12.8 (570) cannot read ISA 8.7: the first decode fails with
# cudaErrorUnsupportedPtxVersion (OpenNMT/CTranslate2#1978, which appeared when 4.6.3's wheel
# moved to a newer toolkit). It links cudart statically (CUDA 12, so a 525+ driver) and dlopens
# libcublas.so.12 and libcuda.so.1 (engine/cuda.py preloads cuBLAS 12 from its pip wheel).
CT2_SASS = (53, 60, 61, 70, 75, 80, 86)
CT2_PTX = 86
CT2_PTX_CUDA = (12, 8)
CT2_CUDA = (12, 0)

# --- the machine ----------------------------------------------------------------------------


class NoGpu(Exception):
    """nvidia-smi is missing or failed, and no override stands in for it."""


@dataclass(frozen=True)
class Machine:
    """What nvidia-smi says about GPU 0 (or what the S2S_* overrides say instead)."""

    gpu: str                  # "NVIDIA L4"; "" when only S2S_CUDA_ARCH says
    arch: int                 # 89 for compute capability 8.9
    cuda: tuple[int, int]     # the newest CUDA the driver supports (nvidia-smi's "CUDA Version")
    driver: str | None        # "570.172.08"; None when S2S_DRIVER_CUDA stands in for nvidia-smi
    notes: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        return re.sub(r"^NVIDIA (GeForce )?", "", self.gpu) or "this GPU"

    @property
    def driver_text(self) -> str:
        cuda = f"CUDA {self.cuda[0]}.{self.cuda[1]}"
        return f"driver {self.driver}, {cuda}" if self.driver else f"a driver for {cuda}"


def family(arch: int) -> str:
    """The architecture's name (https://developer.nvidia.com/cuda-gpus)."""
    major = arch // 10
    if major == 7:
        return "Turing" if arch >= 75 else "Volta"
    if major == 8:
        return "Ada Lovelace" if arch >= 89 else "Ampere"
    names = {5: "Maxwell", 6: "Pascal", 9: "Hopper", 10: "Blackwell", 11: "Blackwell", 12: "Blackwell"}
    return names.get(major, "?")


def parse_arch(text: str) -> int:
    """'8.9', '89', 'sm_89', '12.0', '120', '9.0a' -> 89, 89, 89, 120, 120, 90."""
    t = text.strip().lower().removeprefix("sm_").rstrip("af")
    if "." in t:
        major, minor = t.split(".", 1)
        return int(major) * 10 + int(minor)
    return int(t)


def parse_cuda(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", text)
    if not m:
        raise ValueError(f"not a CUDA version: {text!r}")
    return int(m.group(1)), int(m.group(2))


def _smi(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    try:
        p = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=60, env=env)
    except FileNotFoundError:
        return 127, ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return p.returncode, (p.stdout if p.returncode == 0 else (p.stdout + p.stderr)).strip()


def probe(env: dict[str, str]) -> Machine:
    """Ask nvidia-smi (each S2S_* override, when set and not empty, wins over its answer)."""
    cuda_env, arch_env = env.get("S2S_DRIVER_CUDA", "").strip(), env.get("S2S_CUDA_ARCH", "").strip()
    notes: list[str] = []
    gpu = driver = None
    arch: int | None = None
    cuda: tuple[int, int] | None = None
    failure = ""
    # `--query-gpu=...,compute_cap,...` needs driver 510 or newer; one CSV line per GPU, e.g.
    # "NVIDIA L4, 8.9, 570.172.08" (nvidia-smi --help-query-gpu).
    rc, out = _smi(["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"], env)
    if rc == 0 and out:
        rows = [[c.strip() for c in line.rsplit(",", 2)] for line in out.splitlines() if line.count(",") >= 2]
        if rows:
            gpu, cap, driver = rows[0]
            try:
                arch = parse_arch(cap)
            except ValueError:
                failure = f"compute capability {cap!r}"
            others = {r[0] + " " + r[1] for r in rows[1:]} - {gpu + " " + cap}
            if len(rows) > 1:
                also = f" (also: {', '.join(sorted(others))})" if others else ""
                notes.append(f"{len(rows)} GPUs; the plan is for GPU 0{also}")
        # The CUDA version is only in the plain table's header:
        # "| NVIDIA-SMI 570.172.08   Driver Version: 570.172.08   CUDA Version: 12.8 |"
        rc2, table = _smi([], env)
        m = re.search(r"CUDA Version:\s*(\d+\.\d+)", table) if rc2 == 0 else None
        if m:
            cuda = parse_cuda(m.group(1))
        else:
            failure = "no 'CUDA Version' in the output of plain nvidia-smi"
    elif rc != 127:
        failure = (out.splitlines() or ["no output"])[0]
    if cuda_env:
        cuda = parse_cuda(cuda_env)
    if arch_env:
        arch = parse_arch(arch_env)
    if cuda is None or arch is None:
        why = f"nvidia-smi failed: {failure}" if failure else "nvidia-smi failed"
        raise NoGpu(f"no NVIDIA GPU or driver visible ({why}); run it on the GPU machine")
    if arch_env:
        gpu = ""  # the name nvidia-smi gave (if any) may not be the GPU S2S_CUDA_ARCH describes
    return Machine(gpu or "", arch, cuda, driver if not cuda_env else None, tuple(notes))


# --- the decisions --------------------------------------------------------------------------


@dataclass
class Problem:
    """Something that stops the plan."""

    part: str                             # "torch", "ASR" or "toolkit"
    text: str
    cuda: tuple[int, int] | None = None   # the driver CUDA version that fixes it (None: no driver does)


@dataclass
class Plan:
    machine: Machine
    torch: TorchBuild | None = None
    torch_ok: bool = False        # this driver runs that build on this GPU
    torch_index: str = ""
    torch_cuda: str = ""          # "12.6": setup.sh checks torch.version.cuda's major against it
    torch_why: str = ""
    asr: str = ""                 # how CTranslate2 runs here
    toolkit: str = ""             # the CUDA toolkit version asked of scripts/cuda_toolkit.sh
    toolkit_source: str = ""      # what scripts/cuda_toolkit.sh --plan answered
    toolkit_assemble: bool = False
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    disk: list[DiskUse] = field(default_factory=list)
    disks: list[tuple[Path, float, float, list[DiskUse]]] = field(default_factory=list)  # check_disk()
    disk_problem: str = ""

    @property
    def llama_arch(self) -> str:
        return str(self.machine.arch)

    def refusal(self) -> str | None:
        """The one line that says what to change, or None when the plan works."""
        if self.problems:
            reasons = "; ".join(p.text for p in self.problems)
            fixes = [p.cuda for p in self.problems]
            if None in fixes:
                return f"{PREFIX}{reasons}"
            need = max(f for f in fixes if f is not None)
            branch = min_driver(need)
            upd = f"{branch} or newer" if branch else f"one for CUDA {need[0]}.{need[1]}"
            return f"{PREFIX}update the NVIDIA driver to {upd} (this is {self.machine.driver_text}): {reasons}"
        if self.disk_problem:
            return f"{PREFIX}{self.disk_problem}"
        return None


def decide(m: Machine, torch_index: str = "") -> Plan:
    """The decisions for one GPU and driver, from the rules above alone (no I/O)."""
    plan = Plan(m)
    _torch(plan, torch_index)
    _asr(plan)
    # llama.cpp's toolkit: the driver's CUDA major version; CUDA 13's nvcc has no target before
    # Turing (CUDA 13.0 release notes, "Deprecated or Dropped Architectures").
    if m.cuda >= (13, 0):
        plan.toolkit = "13.0" if m.arch >= 75 else "12.9"
    else:
        plan.toolkit = f"12.{m.cuda[1]}"
    return plan


def _cuda(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def _torch(plan: Plan, torch_index: str) -> None:
    """The newest torch build that runs on this GPU and that this driver runs."""
    m = plan.machine
    gpu = f"{m.short} (sm_{m.arch})"
    builds = [b for b in TORCH_BUILDS if b.runs_on(m.arch)]
    usable = [b for b in builds if m.cuda >= b.cuda]
    if usable:
        plan.torch, plan.torch_ok = usable[0], True
        plan.torch_why = f"CUDA {_cuda(usable[0].cuda)} build"
        newest = TORCH_BUILDS[0]
        if usable[0] != newest and newest.runs_on(m.arch):
            plan.torch_why += f"; the CUDA {_cuda(newest.cuda)} build needs driver {min_driver(newest.cuda)} or newer"
    elif not builds:
        plan.problems.append(Problem("torch", f"torch {TORCH_VERSION} has no CUDA build for {gpu}"))
    else:
        need = min(b.cuda for b in builds)
        plan.torch = builds[0]  # what a new enough driver gets
        if len(builds) < len(TORCH_BUILDS):
            others = ", ".join(f"{_cuda(b.cuda)} build stops at sm_{max(b.sass)}"
                               for b in TORCH_BUILDS if b not in builds)
            text = (f"torch {TORCH_VERSION} runs on {gpu}, a {family(m.arch)} GPU, only in its CUDA "
                    f"{_cuda(builds[0].cuda)} build (its CUDA {others}), which needs driver {min_driver(need)} or newer")
        else:
            text = (f"torch {TORCH_VERSION}'s oldest CUDA build ({_cuda(need)}) needs driver "
                    f"{min_driver(need)} or newer")
        plan.problems.append(Problem("torch", text, need))
    if torch_index:
        # S2S_TORCH_INDEX: the user's index wins, and torch's driver check becomes a warning.
        plan.warnings += [f"{p.text} (S2S_TORCH_INDEX given: going on)" for p in plan.problems]
        plan.problems = []
        t = re.search(r"/cu(\d+)(\d)/?$", torch_index)
        plan.torch_index, plan.torch_ok, plan.torch_why = torch_index, True, "S2S_TORCH_INDEX"
        plan.torch_cuda = f"{t.group(1)}.{t.group(2)}" if t else _cuda(plan.torch.cuda if plan.torch else m.cuda)
    elif plan.torch:
        plan.torch_index, plan.torch_cuda = plan.torch.index, _cuda(plan.torch.cuda)


def _asr(plan: Plan) -> None:
    """CTranslate2: its own kernels, or the driver's JIT of its PTX."""
    m = plan.machine
    gpu = f"{m.short} (sm_{m.arch})"
    native = [a for a in CT2_SASS if sass_runs(a, m.arch)]
    if m.cuda < CT2_CUDA:
        plan.problems.append(Problem("ASR", f"the ASR (CTranslate2 4.x, CUDA 12) needs driver "
                                            f"{min_driver(CT2_CUDA)} or newer", CT2_CUDA))
    if native:
        same = "" if max(native) == m.arch else f"; sm_{m.arch} runs sm_{max(native)} code"
        plan.asr = f"runs on this GPU: the wheel's own sm_{max(native)} kernels{same}"
    elif m.arch > CT2_PTX and m.cuda >= CT2_PTX_CUDA:
        plan.asr = (f"runs on this GPU by PTX JIT: the wheel has kernels up to sm_{max(CT2_SASS)}, so the driver "
                    f"compiles its compute_{CT2_PTX} PTX (ISA 8.7, CUDA {_cuda(CT2_PTX_CUDA)}) for sm_{m.arch} when "
                    f"the library loads (once; the driver caches it in ~/.nv/ComputeCache)")
        if m.arch >= 100:
            plan.warnings.append(
                "the ASR on Blackwell is not seen working yet: OpenNMT/CTranslate2#1933 reports ctranslate2 "
                "4.7.1 finding no device on an sm_120 with driver 580; the set-up's closing "
                "`s2s-engine doctor --require-gpu` tells (asr.device=cpu is the way out)")
    elif m.arch > CT2_PTX:
        need = min_driver(CT2_PTX_CUDA)
        plan.asr = f"cannot run on this GPU with this driver (its PTX JIT needs driver {need}+)"
        plan.problems.append(Problem(
            "ASR", f"the ASR (CTranslate2) on {gpu} needs driver {need} or newer: it JIT-compiles PTX of CUDA "
                   f"{_cuda(CT2_PTX_CUDA)} there (else cudaErrorUnsupportedPtxVersion, OpenNMT/CTranslate2#1978)",
            CT2_PTX_CUDA))
    else:
        plan.asr = "cannot run on this GPU"
        plan.problems.append(Problem(
            "ASR", f"the ASR (CTranslate2 4.x) has no kernels for {gpu} (sm_53 or newer): use a newer GPU, "
                   "or set asr.device=cpu in a profile of your own"))
    plan.asr += ("; cuBLAS 12 (libcublas.so.12) from nvidia-cublas-cu12, installed by the set-up"
                 if plan.torch_cuda.startswith("13")
                 else "; cuBLAS 12 (libcublas.so.12) comes with torch's CUDA 12 build")


# --- where nvcc comes from ------------------------------------------------------------------


def find_toolkit(plan: Plan, env: dict[str, str], scripts: Path) -> None:
    """Ask scripts/cuda_toolkit.sh --plan (it looks, it installs nothing)."""
    p = subprocess.run(["bash", str(scripts / "cuda_toolkit.sh"), "--plan", plan.toolkit],
                       capture_output=True, text=True, env=env, timeout=120)
    lines = p.stdout.strip().splitlines()
    if p.returncode == 0 and lines and lines[-1].count("\t") >= 2:
        kind, _path, desc = lines[-1].split("\t", 2)
        plan.toolkit_source = desc
        plan.toolkit_assemble = kind == "assemble"
        return
    err = (p.stderr.strip().splitlines() or ["cuda_toolkit.sh --plan failed"])[-1]
    err = err.removeprefix("cuda_toolkit.sh: ")
    plan.toolkit_source = "none found (see the result)"
    if "no nvcc for CUDA" in err:
        # PyPI's nvidia-cuda-nvcc-cu12 wheels hold ptxas only; CUDA 13's hold a whole nvcc.
        pkg = "cuda-nvcc-" + plan.toolkit.replace(".", "-")
        plan.problems.append(Problem(
            "toolkit",
            f"llama.cpp's CUDA build needs a CUDA 12 nvcc (this driver runs CUDA 12), and there is none on this "
            f"machine nor on PyPI (nvidia-cuda-nvcc-cu12 ships ptxas only): install NVIDIA's apt package {pkg} "
            f"(scripts/cuda_toolkit.sh completes the rest from PyPI), or update the NVIDIA driver to "
            f"{min_driver((13, 0))} or newer (CUDA 13's toolkit comes from PyPI whole)"))
    else:
        plan.problems.append(Problem("toolkit", f"llama.cpp's CUDA toolkit: {err}"))


# --- disk -----------------------------------------------------------------------------------

# Estimates, in bytes. Hub files: their sizes on the Hugging Face hub (shared/DEPENDENCIES.md,
# "GPU pod facts"). The rest: estimates, marked so in the plan.
VENV_REST = 1.8 * GB          # .venv less torch on this project's CPU machine: 2.5 GB - 0.75 GB (du, 2026-12)
TORCH_CUDA_INSTALLED = 7.5 * GB  # torch's CUDA build, its nvidia-* wheels and triton, unpacked (estimate)
TORCH_CUDA_WHEELS = 4.5 * GB  # the same as downloaded wheels, kept in pip's cache (estimate)
CUBLAS12 = 0.9 * GB           # nvidia-cublas-cu12, unpacked (estimate)
LLAMA_BUILD = 1.5 * GB        # the llama.cpp CUDA build tree in TMPDIR, removed after the build (estimate)
LLAMA_WHEEL = 0.1 * GB
TOOLKIT_PYPI = 1.5 * GB       # cuda-toolkit[...] wheels unpacked by cuda_toolkit.sh ("about 1 GB", plus margin)

# Hub models by reference (engine/profiles/gpu.toml, its @REVISION left out), as
# `s2s-engine models fetch --profile gpu` stores them: (what, where, bytes, a glob under that place
# that exists once it is there). The fetch takes one copy of the weights (engine/models.py:
# select_files), so of Whisper's pytorch_model.bin and flax_model.msgpack only the first.
MODELS: dict[str, list[tuple[str, str, float, str]]] = {
    "hf+ct2:vasista22/whisper-telugu-large-v2": [
        ("Whisper large-v2 Telugu, pytorch_model.bin", "hub", 6.17 * GB,
         "models--vasista22--whisper-telugu-large-v2/snapshots/*/pytorch_model.bin"),
        ("its CTranslate2 float16 conversion (estimate)", "s2s", 3.1 * GB, "ct2/*whisper-telugu-large-v2*/model.bin"),
    ],
    "hf:bartowski/google_gemma-3-1b-it-GGUF/google_gemma-3-1b-it-Q4_K_M.gguf": [
        ("Gemma 3 1B it Q4_K_M GGUF", "hub", 806_058_496,
         "models--bartowski--google_gemma-3-1b-it-GGUF/snapshots/*/google_gemma-3-1b-it-Q4_K_M.gguf"),
    ],
    "hf:facebook/mms-tts-tel": [
        ("MMS TTS Telugu (~145 MB)", "hub", 145e6, "models--facebook--mms-tts-tel/snapshots/*/*.safetensors"),
    ],
    "hf:facebook/encodec_24khz": [
        ("Encodec 24 kHz (~93 MB)", "hub", 93e6, "models--facebook--encodec_24khz/snapshots/*/*.safetensors"),
    ],
}


def model_key(ref: str) -> str:
    """'hf:ORG/REPO@REV/FILE' -> 'hf:ORG/REPO/FILE' (the revision does not change the size much)."""
    scheme, _, rest = ref.partition(":")
    parts = rest.split("/")
    if len(parts) > 1:
        parts[1] = parts[1].partition("@")[0]
    return f"{scheme}:{'/'.join(parts)}"


@dataclass
class DiskUse:
    what: str
    path: Path
    size: float
    present: bool = False


def _cache_home(env: dict[str, str]) -> Path:
    return Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME", str(Path.home()))) / ".cache")


def hub_cache(env: dict[str, str]) -> Path:
    """huggingface_hub's cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub
    (https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables)."""
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return _cache_home(env) / "huggingface" / "hub"


def _profile_models(root: Path) -> tuple[list[str], str]:
    try:
        prof = tomllib.loads((root / "engine" / "profiles" / "gpu.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return [], f"engine/profiles/gpu.toml unreadable ({exc.__class__.__name__}): models not counted"
    refs = [prof.get(s, {}).get("model", "") for s in ("asr", "llm", "tts")]
    refs.append(prof.get("session", {}).get("codec_model", ""))
    return [r for r in refs if r.startswith("hf")], ""


def disk_uses(plan: Plan, env: dict[str, str], root: Path) -> tuple[list[DiskUse], list[str]]:
    home = Path(env.get("HOME", str(Path.home())))
    venv = root / ".venv"
    site = sorted(venv.glob("lib/python3*/site-packages"))
    torch_cuda = any((s / "torch" / "lib" / "libtorch_cuda.so").exists() for s in site)
    cublas = any((s / "nvidia" / "cublas" / "lib" / "libcublas.so.12").exists() for s in site)
    pip_cache = Path(env.get("PIP_CACHE_DIR") or _cache_home(env) / "pip")
    cache = Path(env.get("S2S_CACHE") or home / ".cache" / "s2s")
    s2s_models = Path(env.get("S2S_HOME") or home / ".cache" / "s2s") / "models"
    tmp = Path(env.get("TMPDIR") or "/tmp")
    tag = plan.torch.tag if plan.torch else "cu"
    wheels = cache / "wheels" / f"llama-cpp-python-*-cuda*-sm{plan.machine.arch}-*" / "*.whl"
    llama_built = bool(glob.glob(str(wheels)))
    uses = [
        DiskUse(f"torch {TORCH_VERSION}+{tag} with its NVIDIA libraries (estimate)", venv,
                TORCH_CUDA_INSTALLED, torch_cuda),
        DiskUse("the other packages of .venv (measured on the CPU set-up)", venv,
                VENV_REST, (venv / ".s2s-installed").exists()),
    ]
    if plan.torch_cuda.startswith("13"):
        uses.append(DiskUse("nvidia-cublas-cu12 for CTranslate2 (estimate)", venv, CUBLAS12, cublas))
    if not env.get("PIP_NO_CACHE_DIR"):
        uses.append(DiskUse("pip's cache of the torch wheels (PIP_NO_CACHE_DIR=1 skips it; estimate)", pip_cache,
                            TORCH_CUDA_WHEELS, torch_cuda))
    uses += [
        DiskUse("the llama.cpp CUDA build, while it builds (estimate)", tmp, LLAMA_BUILD, llama_built),
        DiskUse("the llama-cpp-python CUDA wheel", cache / "wheels", LLAMA_WHEEL, llama_built),
    ]
    if plan.toolkit_assemble:
        uses.append(DiskUse(f"the CUDA {plan.toolkit} toolkit from PyPI (estimate)", cache, TOOLKIT_PYPI))
    if env.get("S2S_NO_GPU_CHECK"):  # an image build (deploy/Dockerfile): the models go to a volume
        return uses, ["the gpu profile's models are not counted (S2S_NO_GPU_CHECK: an image build)"]
    refs, note = _profile_models(root)
    notes = [note] if note else []
    hub = hub_cache(env)
    for ref in refs:
        if model_key(ref) not in MODELS:
            notes.append(f"no size known for {ref}: not counted")
            continue
        for what, where, size, marker in MODELS[model_key(ref)]:
            base = hub if where == "hub" else s2s_models
            present = bool(glob.glob(str(base / marker)))
            uses.append(DiskUse(what, base, size, present))
    return uses, notes


def _anchor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _mount(path: Path) -> Path:
    p = path.resolve()
    dev = os.stat(p).st_dev
    while p != p.parent and os.stat(p.parent).st_dev == dev:
        p = p.parent
    return p


def check_disk(uses: list[DiskUse], statvfs=None) -> list[tuple[Path, float, float, list[DiskUse]]]:
    """(mount point, bytes needed, bytes free, uses) for each disk something goes to."""
    statvfs = statvfs or os.statvfs
    disks: dict[int, tuple[Path, float, float, list[DiskUse]]] = {}
    for u in uses:
        a = _anchor(u.path)
        dev = os.stat(a).st_dev
        if dev not in disks:
            st = statvfs(a)
            disks[dev] = (_mount(a), 0.0, float(st.f_bavail * st.f_frsize), [])
        mount, need, free, lst = disks[dev]
        lst.append(u)
        disks[dev] = (mount, need + (0 if u.present else u.size), free, lst)
    return list(disks.values())


# --- output ---------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def make_plan(env: dict[str, str], root: Path = ROOT, statvfs=None) -> Plan:
    m = probe(env)
    plan = decide(m, env.get("S2S_TORCH_INDEX", "").strip())
    if plan.problems:  # a driver to change first: the toolkit to look for depends on it
        plan.toolkit_source = "not looked for until the driver is right"
    else:
        find_toolkit(plan, env, root / "scripts")
    uses, notes = disk_uses(plan, env, root)
    plan.disk = uses
    plan.warnings += notes
    plan.disks = check_disk(uses, statvfs)
    short = [(mount, need, free) for mount, need, free, _ in plan.disks if need > free]
    if short and env.get("S2S_DISK_CHECK", "1") != "0":
        mount, need, free = short[0]
        plan.disk_problem = (f"not enough disk: {mount} has {_gb(free)} free and the set-up plus the gpu profile's "
                             f"models need {_gb(need)} there; free space, or put .venv, HF_HOME, S2S_HOME, "
                             f"S2S_CACHE or TMPDIR on a bigger disk (S2S_DISK_CHECK=0 goes on anyway)")
    elif short:
        plan.warnings.append("not enough disk by the estimates below (S2S_DISK_CHECK=0: going on)")
    return plan


def render(plan: Plan) -> str:
    m = plan.machine
    row = "  {:<11} {}".format
    out = ["CUDA plan of scripts/setup.sh --cuda (nothing installed by --plan)"]
    name = m.gpu or "name not asked (S2S_CUDA_ARCH)"
    cap = f"{m.arch // 10}.{m.arch % 10}"
    out.append(row("GPU", f"{name}, compute capability {cap} (sm_{m.arch}, {family(m.arch)})"))
    drv = m.driver or "version not asked (S2S_DRIVER_CUDA)"
    out.append(row("driver", f"{drv}, supports CUDA {m.cuda[0]}.{m.cuda[1]}"))
    for n in m.notes:
        out.append(row("", n))
    if plan.torch_ok:
        tag = f"+{plan.torch.tag}" if plan.torch and plan.torch_why != "S2S_TORCH_INDEX" else ""
        out.append(row("torch", f"{TORCH_VERSION}{tag} from {plan.torch_index} ({plan.torch_why})"))
    else:
        out.append(row("torch", f"no {TORCH_VERSION} build runs on this GPU with this driver (see the result)"))
    major = plan.toolkit.split(".")[0]
    out.append(row("llama.cpp", f"CMAKE_CUDA_ARCHITECTURES={plan.llama_arch} (this GPU only), CUDA {major} toolkit"))
    out.append(row("toolkit", f"{plan.toolkit_source}; scripts/cuda_toolkit.sh {plan.toolkit}"))
    out.append(row("ASR", f"CTranslate2 {plan.asr}"))
    for i, (mount, need, free, uses) in enumerate(plan.disks):
        verdict = "fits" if need <= free else "does NOT fit"
        out.append(row("disk" if i == 0 else "", f"{mount}: {_gb(need)} needed, {_gb(free)} free: {verdict}"))
        for u in uses:
            size = "present" if u.present else _gb(u.size)
            out.append(row("", f"  {size:>9}  {u.what}: {u.path}"))
    for w in plan.warnings:
        out.append(row("warning", w))
    line = plan.refusal()
    out.append(row("result", "the plan works: scripts/setup.sh --cuda installs this" if line is None
                   else "refused: " + line.removeprefix(PREFIX)))
    return "\n".join(out)


def shell(plan: Plan) -> str:
    m = plan.machine
    pairs = {
        "GPU_NAME": m.gpu, "GPU_ARCH": str(m.arch), "DRIVER_CUDA": f"{m.cuda[0]}.{m.cuda[1]}",
        "TORCH_CUDA": plan.torch_cuda, "TORCH_INDEX_URL": plan.torch_index, "TOOLKIT": plan.toolkit,
    }
    return "\n".join(f"{k}={shlex.quote(v)}" for k, v in pairs.items())


# --- docs/gpu.md ----------------------------------------------------------------------------

TABLE_GPUS = [("NVIDIA L4", 89), ("NVIDIA A10", 86), ("NVIDIA A100-SXM4-80GB", 80),
              ("NVIDIA GeForce RTX 4090", 89), ("NVIDIA H100 80GB HBM3", 90), ("NVIDIA B200", 100)]
TABLE_DRIVERS = [535, 550, 560, 570, 575, 580]
BEGIN, END = "<!-- cuda_plan.py --doc: begin -->", "<!-- cuda_plan.py --doc: end -->"


def cell(plan: Plan) -> str:
    if plan.problems:
        need = max((p.cuda for p in plan.problems if p.cuda), default=None)
        what = [w for w in ("torch", "ASR") if any(p.part == w for p in plan.problems)]
        return f"✗ driver {min_driver(need)}+ ({' + '.join(what)})" if need else "✗ " + " + ".join(what)
    how = "native" if "own sm_" in plan.asr else "PTX JIT"
    warn = " ⚠" if plan.warnings else ""
    return f"{plan.torch.tag if plan.torch else '?'} · ASR {how}{warn}"


def table() -> str:
    head = "| GPU | llama.cpp arch | " + " | ".join(f"{d} (CUDA {_cuda(DRIVER_CUDA[d])})" for d in TABLE_DRIVERS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_DRIVERS) + 2)]
    examples = []
    for name, arch in TABLE_GPUS:
        cells = []
        for d in TABLE_DRIVERS:
            plan = decide(Machine(name, arch, DRIVER_CUDA[d], f"{d}.xx"))
            cells.append(cell(plan))
            line = plan.refusal()
            if line and (name, d) in {("NVIDIA L4", 550), ("NVIDIA H100 80GB HBM3", 560), ("NVIDIA B200", 575)}:
                examples.append(f"- {name.removeprefix('NVIDIA ')} on {d}: `{line}`")
        lines.append(f"| {name.removeprefix('NVIDIA ')} (sm_{arch}) | `{arch}` | " + " | ".join(cells) + " |")
    kits = []
    for d in TABLE_DRIVERS:
        kit = decide(Machine("", 89, DRIVER_CUDA[d], None)).toolkit
        kits.append(f"system nvcc {kit.split('.')[0]}.x (none on PyPI)" if kit.startswith("12") else
                    f"system {kit}, else PyPI wheels")
    lines.append("| *llama.cpp's CUDA toolkit* | | " + " | ".join(kits) + " |")
    return "\n".join(lines + ["", "The one line of a refusal, for example:", ""] + examples)


def disk_table() -> str:
    """What takes disk on a fresh pod, by default location (the plan checks the real ones)."""
    rows = [
        (f"torch {TORCH_VERSION} CUDA build with its NVIDIA libraries (estimate)", "`.venv/`", TORCH_CUDA_INSTALLED),
        ("the other packages of `.venv` (measured on the CPU set-up)", "`.venv/`", VENV_REST),
        ("nvidia-cublas-cu12 for CTranslate2, with the CUDA 13.0 torch only (estimate)", "`.venv/`", CUBLAS12),
        ("pip's cache of the torch wheels (`PIP_NO_CACHE_DIR=1` skips it; estimate)", "`~/.cache/pip`", TORCH_CUDA_WHEELS),
        ("the llama.cpp CUDA build tree, while it builds (estimate)", "`$TMPDIR` (`/tmp`)", LLAMA_BUILD),
        ("the llama-cpp-python CUDA wheel", "`~/.cache/s2s/wheels`", LLAMA_WHEEL),
        ("the CUDA 13.0 toolkit from PyPI, when the system's is not complete (estimate)", "`~/.cache/s2s`", TOOLKIT_PYPI),
    ]
    places = {"hub": "`~/.cache/huggingface/hub` (`HF_HOME`)", "s2s": "`~/.cache/s2s/models` (`S2S_HOME`)"}
    for items in MODELS.values():
        rows += [(what, places[where], size) for what, where, size, _ in items]
    out = ["| what | where (default) | size |", "|---|---|---|"]
    out += [f"| {w} | {where} | {_gb(n)} |" for w, where, n in rows]
    out.append(f"| **all of it, at most** | | **{_gb(sum(n for *_, n in rows))}** |")
    return "\n".join(out)


def write_doc(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + doc_block() + "\n" + text[end:], encoding="utf-8")


def doc_block() -> str:
    return table() + "\n\nWhat takes disk:\n\n" + disk_table()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shell", action="store_true", help="plan on stderr, shell variables on stdout")
    ap.add_argument("--doc", type=Path, help="rewrite the generated table of this markdown file")
    args = ap.parse_args(argv)
    if args.doc:
        write_doc(args.doc)
        return 0
    env = dict(os.environ)
    try:
        plan = make_plan(env)
    except NoGpu as exc:
        print(PREFIX + str(exc), file=sys.stderr)
        return 1
    except ValueError as exc:  # a malformed S2S_DRIVER_CUDA / S2S_CUDA_ARCH
        print(f"{PREFIX}{exc} (S2S_DRIVER_CUDA is like 12.8, S2S_CUDA_ARCH like 89)", file=sys.stderr)
        return 2
    print(render(plan), file=sys.stderr if args.shell else sys.stdout, flush=True)
    line = plan.refusal()
    if line:
        print(line, file=sys.stderr)
        return 1
    if args.shell:
        print(shell(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())

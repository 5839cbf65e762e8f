"""``s2s-engine doctor``: what this machine offers and where each stage really runs.

    s2s-engine doctor [--profile P] [--set k=v]... [--require-gpu] [--json OUT]

It reads the driver, torch, CTranslate2, llama.cpp and the CUDA libraries, then loads the
profile's engine, which runs every stage once on its device (ASR decodes the bundled sample,
the LLM generates, the TTS speaks, each as its warm-up), and reports each stage's device, load
time and the GPU memory in use. A stage that only *claims* a GPU fails here: CTranslate2 finds
its missing cuBLAS at the first decode, not when the device is counted.

``--require-gpu`` exits 1 unless every stage the profile puts on a GPU runs there, and torch
sees CUDA (Encodec on the wire, the neural voices and training need it). ``scripts/setup.sh
--cuda`` ends with it.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

TORCH_TTS = ("vits", "speecht5")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Driver, GPUs, each runtime's view of CUDA, and where the CUDA libraries come from."""
    from engine import cuda

    libs = cuda.preload()
    driver = cuda.driver_cuda_version()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpus": cuda.gpus(),
        "driver_cuda": f"{driver[0]}.{driver[1]}" if driver else None,
        "cuda_libraries": libs,
    }
    torch_info: dict[str, Any] = {"version": _version("torch")}
    try:
        import torch

        torch_info.update(cuda_build=torch.version.cuda, cuda_available=bool(torch.cuda.is_available()))
        if torch_info["cuda_available"]:
            torch_info["device"] = torch.cuda.get_device_name(0)
            x = torch.ones(256, 256, device="cuda")
            torch_info["matmul_ok"] = bool(torch.allclose((x @ x)[0, 0].cpu(), torch.tensor(256.0)))
    except Exception as exc:  # noqa: BLE001 - a broken torch is a finding, not a crash
        torch_info["error"] = str(exc)[:300]
    env["torch"] = torch_info
    ct2: dict[str, Any] = {"version": _version("ctranslate2")}
    try:
        import ctranslate2

        ct2["cuda_devices"] = ctranslate2.get_cuda_device_count()
    except Exception as exc:  # noqa: BLE001
        ct2["error"] = str(exc)[:300]
    env["ctranslate2"] = ct2
    llama: dict[str, Any] = {"version": _version("llama_cpp_python")}
    try:
        import llama_cpp

        llama["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception as exc:  # noqa: BLE001 - e.g. a CUDA build whose libcudart is missing
        llama["error"] = str(exc)[:300]
    env["llama_cpp"] = llama
    return env


def wants_gpu(profile: Any) -> dict[str, bool]:
    """Which stages the profile asks to put on a GPU."""
    return {
        "asr": profile.asr.device != "cpu",
        "llm": profile.llm.n_gpu_layers != 0,
        "tts": profile.tts.backend in TORCH_TTS and profile.tts.device != "cpu",
    }


def check(profile: Any) -> dict[str, Any]:
    """Load the engine (every stage runs once on its device) and report where each runs."""
    from engine.engine import Engine
    from engine.errors import S2SError

    report: dict[str, Any] = {"profile": profile.name, "wants_gpu": wants_gpu(profile)}
    t0 = time.perf_counter()
    try:
        engine = Engine.load(profile)
    except S2SError as exc:
        report["error"] = str(exc)
        return report
    try:
        report["load_s"] = round(time.perf_counter() - t0, 2)
        d = engine.describe()
        report["stages"] = {
            stage: {"backend": info.get("backend"), "model": info.get("model"),
                    "device": str(info.get("device", "cpu")), "load_ms": d["load_ms"].get(stage)}
            for stage, info in d["models"].items()
        }
        report["notes"] = d["notes"]
        report["gpu_memory"] = engine.gpu_memory()
    finally:
        engine.close()
    return report


def problems(env: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """Why the GPU path is not complete (empty when every wanted stage runs on a GPU)."""
    out: list[str] = []
    if not env["gpus"] and env["driver_cuda"] is None:
        out.append("no NVIDIA driver or GPU is visible (nvidia-smi / libcuda.so.1 missing)")
    torch_info = env["torch"]
    if not torch_info.get("cuda_available"):
        why = torch_info.get("error") or (
            f"torch {torch_info.get('version')} is a CPU build" if not torch_info.get("cuda_build")
            else f"torch built for CUDA {torch_info['cuda_build']} sees no GPU"
                 + (f" (the driver supports CUDA {env['driver_cuda']})" if env["driver_cuda"] else ""))
        out.append(f"torch: {why}")
    if "error" in report:
        out.append(f"engine: {report['error']}")
        return out
    for stage, wanted in report["wants_gpu"].items():
        device = report["stages"][stage]["device"]
        if wanted and not device.startswith("cuda"):
            extra = ""
            if stage == "llm" and not env["llama_cpp"].get("gpu_offload"):
                extra = " (llama-cpp-python is a CPU build: scripts/setup.sh --cuda builds one with CUDA)"
            out.append(f"{stage}: runs on {device}{extra}")
    return out


def render(env: dict[str, Any], report: dict[str, Any], issues: list[str], require_gpu: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    gpu = ", ".join(f"{g['name']} ({g['memory_mb']} MB, sm {g['compute_capability']}, driver {g['driver']})"
                    for g in env["gpus"]) or "none"
    console.print(f"[bold]machine[/]  Python {env['python']}, {env['platform']}")
    console.print(f"  GPU: {gpu}; driver supports CUDA {env['driver_cuda'] or '-'}")
    t = env["torch"]
    console.print(f"  torch {t.get('version')} (CUDA build {t.get('cuda_build') or 'none'}): "
                  f"{'GPU ' + t['device'] if t.get('cuda_available') else 'CPU only'}")
    c = env["ctranslate2"]
    console.print(f"  ctranslate2 {c.get('version')}: {c.get('cuda_devices', 0)} CUDA device(s)")
    ll = env["llama_cpp"]
    state = (f"failed to load — {ll['error']}" if "error" in ll
             else "GPU offload" if ll.get("gpu_offload") else "CPU build")
    console.print(f"  llama-cpp-python {ll.get('version')}: {state}")
    libs = ", ".join(f"{k} ({'system' if v == 'system' else 'pip'})" for k, v in env["cuda_libraries"].items() if v)
    console.print(f"  CUDA libraries: {libs or 'none'}")
    if "stages" in report:
        table = Table(title=f"profile {report['profile']!r}: every stage ran once on its device "
                            f"({report['load_s']} s)", title_justify="left")
        for col in ("stage", "backend", "model", "device", "wants GPU", "load ms"):
            table.add_column(col)
        for stage, s in report["stages"].items():
            table.add_row(stage, str(s["backend"]), str(s["model"])[:48], s["device"],
                          "yes" if report["wants_gpu"].get(stage) else "-",
                          f"{s['load_ms']:.0f}" if s["load_ms"] is not None else "-")
        console.print(table)
        mem = report["gpu_memory"]
        if mem.get("used_mb") is not None:
            console.print(f"  GPU memory in use: {mem['used_mb']:.0f} / {mem['total_mb']:.0f} MB")
        for note in report["notes"]:
            console.print(f"  [yellow]note: {note}[/]")
    for line in issues:
        console.print(f"  [{'red' if require_gpu else 'yellow'}]{'NO ' if require_gpu else ''}{line}[/]")
    if not issues:
        console.print("  [green]every stage runs where the profile asks[/]")


def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.config import load_profile

    profile = load_profile(args.profile, args.set)
    env = environment()
    report = check(profile)
    issues = problems(env, report)
    render(env, report, issues, args.require_gpu)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"environment": env, "engine": report, "problems": issues},
                                                   indent=2, ensure_ascii=False), encoding="utf-8")
    # without --require-gpu, only an engine that failed to load is a failure
    if args.require_gpu and issues:
        print("s2s-engine doctor: some stage is not on the GPU", file=sys.stderr)
        return 1
    if "error" in report:
        print("s2s-engine doctor: the engine failed to load", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any, common: Any) -> None:
    dp = subparsers.add_parser("doctor", help="check the machine and where each stage runs (GPU or CPU)")
    dp.add_argument("--require-gpu", action="store_true",
                    help="exit 1 unless every stage the profile puts on a GPU runs there, and torch sees CUDA")
    dp.add_argument("--json", dest="json_path", metavar="OUT.json", help="write the findings as JSON")
    common(dp)
    dp.set_defaults(func=cmd_doctor)

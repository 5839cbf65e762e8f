"""The GPU path without a GPU: CUDA library preloading, ``s2s-engine doctor``, and what the
ASR stage does when CUDA is asked for and cannot run (real CTranslate2, real models).

On a GPU machine, ``s2s-engine doctor --require-gpu`` (the end of ``scripts/setup.sh --cuda``)
is the check that each stage really runs there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import cuda, doctor
from engine.cli import main
from engine.config import load_profile
from engine.errors import ModelError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF")
    return path


def test_find_library_looks_in_cuda12_and_cuda13_wheel_layouts(tmp_path):
    cublas12 = _touch(tmp_path / "nvidia" / "cublas" / "lib" / "libcublas.so.12")
    cublas13 = _touch(tmp_path / "nvidia" / "cu13" / "lib" / "libcublas.so.13")
    assert cuda.find_library("libcublas.so.12", [tmp_path]) == cublas12
    assert cuda.find_library("libcublas.so.13", [tmp_path]) == cublas13
    assert cuda.find_library("libcudart.so.12", [tmp_path]) is None
    assert cuda.find_library("libcublas.so.12", [tmp_path / "missing"]) is None


def test_preload_prefers_the_system_library_then_the_wheel_in_dependency_order(tmp_path):
    cudart = _touch(tmp_path / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12")
    lt = _touch(tmp_path / "nvidia" / "cublas" / "lib" / "libcublasLt.so.12")
    blas = _touch(tmp_path / "nvidia" / "cublas" / "lib" / "libcublas.so.12")
    system = {"libcudart.so.13"}
    calls: list[str] = []

    def loader(name: str):
        calls.append(name)
        if name in system or name.startswith(str(tmp_path)):
            return object()
        raise OSError(f"{name}: cannot open shared object file")

    found = cuda.preload(cuda.SONAMES, roots=[tmp_path], loader=loader)
    assert found == {"libcudart.so.12": str(cudart), "libcublasLt.so.12": str(lt), "libcublas.so.12": str(blas),
                     "libcudart.so.13": "system", "libcublasLt.so.13": None, "libcublas.so.13": None}
    loaded_paths = [c for c in calls if c.startswith(str(tmp_path))]
    assert loaded_paths == [str(cudart), str(lt), str(blas)]  # cudart, then cuBLASLt, then cuBLAS


def test_preload_survives_a_library_that_will_not_load(tmp_path):
    _touch(tmp_path / "nvidia" / "cublas" / "lib" / "libcublas.so.12")

    def loader(name: str):
        raise OSError("wrong ELF class")

    assert cuda.preload(["libcublas.so.12"], roots=[tmp_path], loader=loader) == {"libcublas.so.12": None}


def test_real_preload_reports_every_soname():
    found = cuda.preload()
    assert set(found) == set(cuda.SONAMES)
    for soname, where in found.items():
        assert where in (None, "system") or Path(where).name == soname


def test_wants_gpu_follows_the_profile():
    assert doctor.wants_gpu(load_profile("offline")) == {"asr": False, "llm": False, "tts": False}
    assert doctor.wants_gpu(load_profile("gpu")) == {"asr": True, "llm": True, "tts": True}
    espeak = load_profile("gpu", ["tts.backend=espeak-ng"])
    assert doctor.wants_gpu(espeak)["tts"] is False


def _env(**kw):
    env = {"gpus": [{"name": "NVIDIA L4"}], "driver_cuda": "12.8",
           "torch": {"version": "2.13.0", "cuda_build": "12.8", "cuda_available": True},
           "llama_cpp": {"gpu_offload": True}}
    env.update(kw)
    return env


def _report(**devices):
    return {"wants_gpu": {"asr": True, "llm": True, "tts": True},
            "stages": {s: {"device": devices.get(s, "cuda")} for s in ("vad", "asr", "llm", "tts")}}


def test_problems_is_empty_when_every_wanted_stage_runs_on_the_gpu():
    assert doctor.problems(_env(), _report()) == []


def test_problems_names_each_stage_off_the_gpu_and_why():
    issues = doctor.problems(_env(llama_cpp={"gpu_offload": False}), _report(llm="cpu", tts="cpu"))
    assert issues == ["llm: runs on cpu (llama-cpp-python is a CPU build: scripts/setup.sh --cuda builds one "
                      "with CUDA)", "tts: runs on cpu"]
    torch13 = {"version": "2.13.0", "cuda_build": "13.0", "cuda_available": False}
    issues = doctor.problems(_env(torch=torch13), _report())
    assert issues == ["torch: torch built for CUDA 13.0 sees no GPU (the driver supports CUDA 12.8)"]
    issues = doctor.problems(_env(gpus=[], driver_cuda=None), {"wants_gpu": {}, "error": "asr model x: failed"})
    assert issues[0].startswith("no NVIDIA driver") and issues[-1] == "engine: asr model x: failed"


@pytest.mark.slow
def test_doctor_on_the_offline_profile_runs_every_stage_and_reports_devices(tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    stages = report["engine"]["stages"]
    assert set(stages) == {"vad", "turn", "asr", "llm", "tts"}  # the offline profile's combined policy loads Smart Turn
    assert all(s["device"] == "cpu" and s["load_ms"] > 0 for s in stages.values())
    assert report["engine"]["wants_gpu"] == {"asr": False, "llm": False, "tts": False}
    assert set(report["environment"]["cuda_libraries"]) == set(cuda.SONAMES)
    assert "every stage ran once on its device" in capsys.readouterr().out


@pytest.mark.slow
def test_doctor_require_gpu_fails_with_the_reasons_on_a_cpu_machine(tmp_path, capsys):
    env = doctor.environment()
    if env["torch"].get("cuda_available") or env["llama_cpp"].get("gpu_offload"):
        pytest.skip("this machine has a GPU path")
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--require-gpu", "--set", "llm.n_gpu_layers=-1", "--json", str(out)]) == 1
    problems = json.loads(out.read_text(encoding="utf-8"))["problems"]
    # whichever torch build is installed (CPU-only, or PyPI's CUDA build on a machine without a GPU)
    torch_problem = "is a CPU build" if not env["torch"].get("cuda_build") else "sees no GPU"
    assert any(p.startswith("torch: torch ") and torch_problem in p for p in problems), problems
    assert any(p.startswith("llm: runs on cpu (llama-cpp-python is a CPU build") for p in problems)
    assert "some stage is not on the GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_asr_asked_for_cuda_without_a_usable_gpu_is_a_clear_model_error():
    from engine.models import resolve
    from engine.stages.asr_whisper import FasterWhisperASR

    profile = load_profile("offline", ["asr.device=cuda", "asr.compute_type=float16"])
    if cuda.driver_cuda_version() is not None:
        pytest.skip("this machine has an NVIDIA driver")
    path = resolve("asr", profile.asr.model, profile.name, profile.asr.compute_type)
    asr = FasterWhisperASR(profile.asr, path)
    with pytest.raises(ModelError, match="failed to load on cuda") as info:
        asr.setup()
    assert info.value.stage == "asr"


@pytest.mark.slow
def test_asr_auto_falls_back_to_the_cpu_when_the_gpu_it_found_cannot_run(monkeypatch):
    """``device = "auto"`` on a machine where CTranslate2 counts a GPU it cannot use (a driver
    too old, a missing cuBLAS): the real CUDA load fails here, and the stage runs on the CPU."""
    from engine.models import resolve
    from engine.stages import asr_whisper

    if cuda.driver_cuda_version() is not None:
        pytest.skip("this machine has an NVIDIA driver")
    monkeypatch.setattr(asr_whisper, "_cuda_available", lambda: True)
    profile = load_profile("offline", ["asr.device=auto", "asr.compute_type=float16"])
    path = resolve("asr", profile.asr.model, profile.name, profile.asr.compute_type)
    asr = asr_whisper.FasterWhisperASR(profile.asr, path)
    asr.setup()
    try:
        assert asr.device == "cpu" and asr.note and "running on the CPU" in asr.note
        assert asr.decode_cost_ms and asr.decode_cost_ms > 0
    finally:
        asr.close()


REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **env):
    import os
    import subprocess

    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_setup_cuda_without_a_gpu_stops_first_with_one_line():
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    r = _run(["bash", "scripts/setup.sh", "--cuda"], S2S_DRIVER_CUDA="", S2S_CUDA_ARCH="")
    assert r.returncode == 1
    assert r.stderr.strip() == ("setup.sh --cuda: no NVIDIA GPU or driver visible (nvidia-smi failed); "
                                "run it on the GPU machine")
    assert "==>" not in r.stdout  # nothing was installed


def test_setup_cuda_refuses_a_driver_too_old_for_torch():
    # the plan (scripts/cuda_plan.py; every GPU x driver in tests/test_setup_plan.py) stops it first
    r = _run(["bash", "scripts/setup.sh", "--cuda"], S2S_DRIVER_CUDA="12.2", S2S_CUDA_ARCH="89")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "setup.sh --cuda: update the NVIDIA driver to 560 or newer (this is a driver for CUDA 12.2): "
        "torch 2.13.0's oldest CUDA build (12.6) needs driver 560 or newer")
    assert "==>" not in r.stdout  # nothing was installed


def test_cuda_toolkit_script_rejects_bad_versions_and_cuda12_without_a_system_nvcc(tmp_path):
    r = _run(["bash", "scripts/cuda_toolkit.sh", "12"])
    assert r.returncode == 1 and "version must be MAJOR.MINOR" in r.stderr
    # PyPI's -cu12 nvcc wheels hold ptxas only: CUDA 12 needs the pod's own nvcc
    r = _run(["bash", "scripts/cuda_toolkit.sh", "12.8"], S2S_CUDA_NO_SYSTEM="1", S2S_CACHE=str(tmp_path))
    assert r.returncode == 1
    assert "no nvcc for CUDA 12.8 on PyPI" in r.stderr and "cuda-nvcc-12-8" in r.stderr
    assert r.stdout == ""  # no toolkit root printed


def test_doctor_fails_when_the_engine_cannot_load_and_says_why(tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--set", f"asr.model={tmp_path / 'no-such-model'}", "--json", str(out)]) == 1
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["engine"]["error"].startswith("asr model")
    assert any(p.startswith("engine: asr model") for p in report["problems"])
    assert "the engine failed to load" in capsys.readouterr().err

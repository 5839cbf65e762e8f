"""``scripts/setup.sh --cuda --plan`` on every GPU x driver of docs/gpu.md, with a stand-in ``nvidia-smi``.

The real script runs from a copy of ``scripts/`` in a temporary folder (it works on the folder it
sits in), with ``HOME`` there too, and stand-ins for pip, apt-get, sudo and dpkg that only record a
call: the plan must install nothing and create nothing. The expected outcomes below are written from
the published matrices (PyTorch RELEASE.md for 2.12/2.13, CTranslate2 4.8.5's kernels and PTX, NVIDIA's
driver table), not read back from ``scripts/cuda_plan.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # no venv: the plan runs before .venv exists

GPUS = {  # name as nvidia-smi prints it, compute capability
    "L4": ("NVIDIA L4", "8.9"),
    "A10": ("NVIDIA A10", "8.6"),
    "A100": ("NVIDIA A100-SXM4-80GB", "8.0"),
    "RTX 4090": ("NVIDIA GeForce RTX 4090", "8.9"),
    "H100": ("NVIDIA H100 80GB HBM3", "9.0"),
    "B200": ("NVIDIA B200", "10.0"),
}
DRIVERS = {  # a real release of each branch, and the CUDA version its nvidia-smi reports
    "535": ("535.230.02", "12.2"),
    "550": ("550.144.03", "12.4"),
    "560": ("560.35.05", "12.6"),
    "570": ("570.172.08", "12.8"),
    "575": ("575.57.08", "12.9"),
    "580": ("580.95.05", "13.0"),
}
# Per GPU, per driver (535 550 560 570 575 580): the torch build, or the driver that fixes the plan.
# torch 2.13: cu126 (sm_50-90, driver 560+) and cu130 (sm_75-120, driver 580+), never cu128.
# CTranslate2: sm_86 kernels up to Ada; sm_90+ JIT-compiles ISA 8.7 PTX, driver 570+.
EXPECTED = {
    "L4": ["560", "560", "cu126", "cu126", "cu126", "cu130"],
    "A10": ["560", "560", "cu126", "cu126", "cu126", "cu130"],
    "A100": ["560", "560", "cu126", "cu126", "cu126", "cu130"],
    "RTX 4090": ["560", "560", "cu126", "cu126", "cu126", "cu130"],
    "H100": ["570", "570", "570", "cu126", "cu126", "cu130"],
    "B200": ["580", "580", "580", "580", "580", "cu130"],
}
CELLS = [(g, d, EXPECTED[g][i]) for g in GPUS for i, d in enumerate(DRIVERS)]


def _nvidia_smi_table(name: str, driver: str, cuda: str) -> str:
    """What plain `nvidia-smi` prints (the layout of drivers 545 and newer), one GPU, idle."""
    return (
        "Mon Dec  7 10:00:00 2026       \n"
        "+-----------------------------------------------------------------------------------------+\n"
        f"| NVIDIA-SMI {driver:<22} Driver Version: {driver:<14} CUDA Version: {cuda:<9}|\n"
        "|-----------------------------------------+------------------------+----------------------+\n"
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n"
        "|                                         |                        |               MIG M. |\n"
        "|=========================================+========================+======================|\n"
        f"|   0  {name:<34} On  |   00000000:00:03.0 Off |                    0 |\n"
        "| N/A   34C    P8             16W /   72W |       0MiB /  23034MiB |      0%      Default |\n"
        "|                                         |                        |                  N/A |\n"
        "+-----------------------------------------+------------------------+----------------------+\n"
    )


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def pod(tmp_path):
    """A copy of the repository's scripts and gpu profile, a bin/ of stand-ins, an empty HOME and a
    fake CUDA 12.8 toolkit (nvcc reports its release; the files cuda_toolkit.sh looks for exist)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for f in ("setup.sh", "cuda_plan.py", "cuda_toolkit.sh"):
        shutil.copy2(ROOT / "scripts" / f, repo / "scripts" / f)
    (repo / "engine" / "profiles").mkdir(parents=True)
    shutil.copy2(ROOT / "engine" / "profiles" / "gpu.toml", repo / "engine" / "profiles" / "gpu.toml")
    home = tmp_path / "home"
    home.mkdir()
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ("pip", "pip3", "apt-get", "apt", "sudo", "dpkg", "curl", "wget"):
        _script(bin_ / tool, f'echo "{tool} $*" >> {calls}\nexit 1\n')
    kit = tmp_path / "cuda-12.8"
    for f in ("bin/nvcc.profile", "nvvm/bin/cicc", "include/crt/host_config.h", "include/cuda_runtime.h",
              "include/cublas_v2.h", "include/cublasLt.h", "include/cub/cub.cuh", "include/thrust/version.h",
              "lib64/libcudart.so", "lib64/libcudart_static.a", "lib64/libcublas.so", "lib64/libcublasLt.so",
              "lib64/stubs/libcuda.so"):
        (kit / f).parent.mkdir(parents=True, exist_ok=True)
        (kit / f).touch()
    (kit / "nvvm/bin/cicc").chmod(0o755)
    _script(kit / "bin" / "nvcc", 'echo "Cuda compilation tools, release 12.8, V12.8.93"\n')

    class Pod:
        root, path, log, toolkit = repo, bin_, calls, kit

        def files(self):
            return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))

        def gpu(self, name, cap, driver, cuda):
            (tmp_path / "smi.txt").write_text(_nvidia_smi_table(name, driver, cuda))
            _script(bin_ / "nvidia-smi",
                    'if [ "$*" = "--query-gpu=name,compute_cap,driver_version --format=csv,noheader" ]; then\n'
                    f'  echo "{name}, {cap}, {driver}"; exit 0\nfi\n'
                    f'[ $# -eq 0 ] && {{ cat {tmp_path / "smi.txt"}; exit 0; }}\n'
                    'echo "stand-in nvidia-smi: unexpected arguments: $*" >&2; exit 2\n')

        def run(self, *args, script="scripts/setup.sh", **env):
            e = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(home), "PYTHON": BASE_PYTHON,
                 "CUDA_HOME": str(kit), "S2S_DISK_CHECK": "0", "LANG": "C.UTF-8", **env}
            cmd = ["bash", script] if script.endswith(".sh") else [BASE_PYTHON, script]
            return subprocess.run([*cmd, *args], cwd=repo, env={k: v for k, v in e.items() if v is not None},
                                  capture_output=True, text=True, timeout=120)

    return Pod()


def _field(out: str, name: str) -> str:
    """The text of one line of the plan (`  torch       2.13.0+cu126 from ...`)."""
    for line in out.splitlines():
        if line.startswith(f"  {name} "):
            return line[len(name) + 2:].strip()
    raise AssertionError(f"no {name!r} line in:\n{out}")


@pytest.mark.parametrize(("gpu", "driver", "want"), CELLS, ids=[f"{g}-{d}" for g, d, _ in CELLS])
def test_plan_for_each_gpu_and_driver(pod, gpu, driver, want):
    name, cap = GPUS[gpu]
    version, cuda = DRIVERS[driver]
    pod.gpu(name, cap, version, cuda)
    before = pod.files()
    r = pod.run("--cuda", "--plan")

    arch = cap.replace(".", "")
    assert _field(r.stdout, "GPU").startswith(f"{name}, compute capability {cap} (sm_{arch}")
    assert _field(r.stdout, "driver") == f"{version}, supports CUDA {cuda}"
    assert f"CMAKE_CUDA_ARCHITECTURES={arch} " in _field(r.stdout, "llama.cpp")
    assert "cu128" not in r.stdout + r.stderr and "cu129" not in r.stdout + r.stderr
    asr = _field(r.stdout, "ASR")
    if int(arch) < 90:
        assert "the wheel's own sm_86 kernels" in asr or "the wheel's own sm_80 kernels" in asr
    elif want.startswith("cu"):
        assert "PTX JIT" in asr and f"sm_{arch}" in asr

    if want.startswith("cu"):
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert _field(r.stdout, "torch").startswith(f"2.13.0+{want} from https://download.pytorch.org/whl/{want} ")
        assert _field(r.stdout, "result").startswith("the plan works")
        toolkit = _field(r.stdout, "toolkit")
        if cuda.startswith("12"):  # PyPI has no CUDA 12 nvcc: the pod's own (here the fake 12.8)
            assert toolkit.startswith(f"the system CUDA 12.8 toolkit {pod.toolkit}")
        else:  # this machine's own CUDA 13 toolkit, or PyPI's
            assert "13.0" in toolkit and ("system" in toolkit or "PyPI cuda-toolkit" in toolkit)
        assert "disk" in r.stdout and " GB needed, " in _field(r.stdout, "disk")
    else:
        assert r.returncode == 1
        line = r.stderr.strip()
        assert "\n" not in line  # one line says what to change
        assert line.startswith(f"setup.sh --cuda: update the NVIDIA driver to {want} or newer "
                               f"(this is driver {version}, CUDA {cuda}): ")
        assert _field(r.stdout, "result") == "refused: " + line.removeprefix("setup.sh --cuda: ")
    assert pod.files() == before  # nothing created: no .venv, no cache, no build
    assert not pod.log.exists()  # no pip, apt-get, sudo or dpkg


def test_the_specific_refusals_name_the_part_that_needs_the_driver(pod):
    pod.gpu("NVIDIA H100 80GB HBM3", "9.0", "560.35.05", "12.6")
    r = pod.run("--cuda", "--plan")
    assert r.returncode == 1
    assert "the ASR (CTranslate2) on H100 80GB HBM3 (sm_90) needs driver 570 or newer" in r.stderr
    assert "cudaErrorUnsupportedPtxVersion" in r.stderr
    assert _field(r.stdout, "torch").startswith("2.13.0+cu126")  # torch alone would have worked

    pod.gpu("NVIDIA B200", "10.0", "575.57.08", "12.9")
    r = pod.run("--cuda", "--plan")
    assert r.returncode == 1
    assert "torch 2.13.0 runs on B200 (sm_100), a Blackwell GPU, only in its CUDA 13.0 build" in r.stderr
    assert "needs driver 580 or newer" in r.stderr and "ASR" not in r.stderr  # the ASR's JIT is fine on 575

    pod.gpu("NVIDIA B200", "10.0", "580.95.05", "13.0")
    r = pod.run("--cuda", "--plan")
    assert r.returncode == 0
    assert "OpenNMT/CTranslate2#1933" in _field(r.stdout, "warning")  # Blackwell's ASR: not seen working yet
    assert "nvidia-cublas-cu12" in _field(r.stdout, "ASR")  # torch's CUDA 13 build brings no cuBLAS 12


def test_without_nvidia_smi_one_line_says_no_gpu_is_visible(pod):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this machine has nvidia-smi")
    r = pod.run("--cuda", "--plan")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == ("setup.sh --cuda: no NVIDIA GPU or driver visible (nvidia-smi failed); "
                        "run it on the GPU machine\n")
    assert not pod.log.exists()


def test_an_nvidia_smi_without_a_driver_is_one_line_with_its_reason(pod):
    msg = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
           "Make sure that the latest NVIDIA driver is installed and running.")
    _script(pod.path / "nvidia-smi", f'echo "{msg}"; exit 9\n')
    r = pod.run("--cuda", "--plan")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == (f"setup.sh --cuda: no NVIDIA GPU or driver visible (nvidia-smi failed: {msg}); "
                                "run it on the GPU machine")


def test_the_overrides_stand_in_for_nvidia_smi(pod):
    # deploy/Dockerfile: no GPU while the image builds
    r = pod.run("--cuda", "--plan", S2S_DRIVER_CUDA="12.8", S2S_CUDA_ARCH="90")
    assert r.returncode == 0, r.stderr
    assert _field(r.stdout, "GPU").startswith("name not asked (S2S_CUDA_ARCH), compute capability 9.0 (sm_90, Hopper)")
    assert _field(r.stdout, "driver") == "version not asked (S2S_DRIVER_CUDA), supports CUDA 12.8"
    assert _field(r.stdout, "torch").startswith("2.13.0+cu126 ")
    assert "PTX JIT" in _field(r.stdout, "ASR")
    # S2S_DRIVER_CUDA wins over nvidia-smi; S2S_TORCH_INDEX turns the torch refusal into a warning
    pod.gpu("NVIDIA L4", "8.9", "550.144.03", "12.4")
    r = pod.run("--cuda", "--plan")
    assert r.returncode == 1 and "to 560 or newer" in r.stderr
    r = pod.run("--cuda", "--plan", S2S_TORCH_INDEX="https://download.pytorch.org/whl/cu126")
    assert r.returncode == 0, r.stderr
    assert _field(r.stdout, "torch") == "2.13.0 from https://download.pytorch.org/whl/cu126 (S2S_TORCH_INDEX)"
    assert "S2S_TORCH_INDEX given: going on" in _field(r.stdout, "warning")
    r = pod.run("--cuda", "--plan", S2S_DRIVER_CUDA="13.0")
    assert r.returncode == 0 and _field(r.stdout, "torch").startswith("2.13.0+cu130 ")
    r = pod.run("--cuda", "--plan", S2S_DRIVER_CUDA="twelve")
    assert r.returncode == 2 and "S2S_DRIVER_CUDA is like 12.8" in r.stderr


def test_a_cuda12_driver_without_a_system_nvcc_is_refused_with_what_to_install(pod):
    pod.gpu("NVIDIA L4", "8.9", "570.172.08", "12.8")
    r = pod.run("--cuda", "--plan", CUDA_HOME=None, S2S_CUDA_NO_SYSTEM="1")
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "\n" not in line and "llama.cpp's CUDA build needs a CUDA 12 nvcc" in line
    assert "cuda-nvcc-12-8" in line and "update the NVIDIA driver to 580 or newer" in line
    assert not pod.log.exists()


def test_the_real_install_reads_the_same_plan_and_stops_before_installing(pod):
    pod.gpu("NVIDIA L4", "8.9", "570.172.08", "12.8")
    r = pod.run("--shell", script="scripts/cuda_plan.py")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "GPU_NAME='NVIDIA L4'", "GPU_ARCH=89", "DRIVER_CUDA=12.8", "TORCH_CUDA=12.6",
        "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126", "TOOLKIT=12.8"]
    assert "the plan works" in r.stderr  # the plan itself, for the person watching the install
    # a plan that works: setup.sh takes its decisions and goes on to its first step (the stand-in
    # apt-get fails there, so nothing is installed)
    r = pod.run("--cuda")
    assert r.returncode != 0
    assert "the plan works" in r.stderr and "==> apt-get install" in r.stdout
    assert "apt-get install" in pod.log.read_text()
    pod.log.unlink()
    # a plan that does not work stops `setup.sh --cuda` before its first step
    pod.gpu("NVIDIA B200", "10.0", "575.57.08", "12.9")
    before = pod.files()
    r = pod.run("--cuda")
    assert r.returncode == 1
    assert "==>" not in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("setup.sh --cuda: update the NVIDIA driver to 580 or newer")
    assert pod.files() == before and not pod.log.exists()


def test_plan_alone_is_for_the_gpu_setup(pod):
    r = pod.run("--plan")
    assert r.returncode == 2 and "scripts/setup.sh --cuda --plan" in r.stderr


def test_two_gpus_plan_for_the_first_and_say_so(pod):
    pod.gpu("NVIDIA L4", "8.9", "580.95.05", "13.0")
    _script(pod.path / "nvidia-smi",
            'if [ "$*" = "--query-gpu=name,compute_cap,driver_version --format=csv,noheader" ]; then\n'
            '  echo "NVIDIA L4, 8.9, 580.95.05"; echo "NVIDIA H100 80GB HBM3, 9.0, 580.95.05"; exit 0\nfi\n'
            f'cat {pod.root.parent / "smi.txt"}\n')
    r = pod.run("--cuda", "--plan")
    assert r.returncode == 0, r.stderr
    assert "2 GPUs; the plan is for GPU 0 (also: NVIDIA H100 80GB HBM3 9.0)" in r.stdout
    assert "CMAKE_CUDA_ARCHITECTURES=89 " in r.stdout


# --- the module itself --------------------------------------------------------------------


def _module(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in scripts/
    spec = importlib.util.spec_from_file_location("cuda_plan", ROOT / "scripts" / "cuda_plan.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "cuda_plan", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_the_plan_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "scripts" / "cuda_plan.py").read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names - set(sys.stdlib_module_names)


def test_not_enough_disk_is_one_line_naming_the_disk_and_the_sizes(pod, monkeypatch):
    mod = _module(monkeypatch)
    pod.gpu("NVIDIA L4", "8.9", "570.172.08", "12.8")
    env = {"PATH": f"{pod.path}:/usr/bin:/bin", "HOME": str(pod.root.parent / "home"), "CUDA_HOME": str(pod.toolkit)}

    class Small:
        f_bavail, f_frsize = 5 * 10**9 // 4096, 4096

    plan = mod.make_plan(env, pod.root, statvfs=lambda _path: Small)
    line = plan.refusal()
    assert line.startswith("setup.sh --cuda: not enough disk: ") and "5.0 GB free" in line
    assert "S2S_DISK_CHECK=0 goes on anyway" in line
    plan = mod.make_plan({**env, "S2S_DISK_CHECK": "0"}, pod.root, statvfs=lambda _path: Small)
    assert plan.refusal() is None and any("not enough disk" in w for w in plan.warnings)
    # what is there already is not counted again (a pinned snapshot of the hub cache)
    gguf = (pod.root.parent / "home/.cache/huggingface/hub/models--bartowski--google_gemma-3-1b-it-GGUF"
            / "snapshots/0123456789abcdef0123456789abcdef01234567/google_gemma-3-1b-it-Q4_K_M.gguf")
    gguf.parent.mkdir(parents=True)
    gguf.touch()
    uses = {u.what: u.present for u in mod.make_plan(env, pod.root).disk}
    assert uses["Gemma 3 1B it Q4_K_M GGUF"]
    assert not uses["Whisper large-v2 Telugu, pytorch_model.bin"]
    assert not any(w.startswith("no size known") for w in mod.make_plan(env, pod.root).warnings)


def test_docs_gpu_md_holds_the_table_the_rules_make(monkeypatch):
    mod = _module(monkeypatch)
    text = (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8")
    block = text[text.index(mod.BEGIN) + len(mod.BEGIN):text.index(mod.END)].strip()
    assert block == mod.doc_block().strip(), "docs/gpu.md is out of date: python3 scripts/cuda_plan.py --doc docs/gpu.md"
    for gpu, row in EXPECTED.items():  # and the table says what this test expects
        line = next(ln for ln in block.splitlines() if ln.startswith(f"| {GPUS[gpu][0].removeprefix('NVIDIA ')} "))
        cells = [c.strip() for c in line.strip("|").split("|")][2:]
        for cell_text, want in zip(cells, row, strict=True):
            assert cell_text.startswith(want if want.startswith("cu") else f"✗ driver {want}+"), (gpu, cell_text)

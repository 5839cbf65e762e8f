"""Backend registry: stage + backend name -> the class that implements it, imported lazily.

Heavy libraries are imported only when their backend is chosen, so a missing library is
reported with the exact install command instead of an ImportError at start-up.
Every backend class is constructed as ``Backend(options, model_path)`` where ``options``
is the stage's options dataclass (``engine.config``) and ``model_path`` the resolved
model (``engine.models.resolve``); it loads in ``setup()``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from engine.errors import BackendUnavailable, ConfigError


@dataclass(frozen=True)
class BackendSpec:
    target: str  # "module:Class"
    requires: tuple[str, ...]  # importable top-level modules it needs
    install: str  # what to run when they are missing


_PIP = ".venv/bin/pip install -c constraints.txt"

BACKENDS: dict[str, dict[str, BackendSpec]] = {
    "vad": {
        "silero": BackendSpec("engine.stages.vad_silero:SileroVAD", ("onnxruntime",), f"{_PIP} onnxruntime"),
    },
    "turn": {
        "smart-turn": BackendSpec("engine.stages.turn_smart:SmartTurn", ("onnxruntime",), f"{_PIP} onnxruntime"),
    },
    "asr": {
        "faster-whisper": BackendSpec(
            "engine.stages.asr_whisper:FasterWhisperASR", ("faster_whisper",), f"{_PIP} faster-whisper"
        ),
    },
    "llm": {
        "llama-cpp": BackendSpec(
            "engine.stages.llm_llamacpp:LlamaCppLLM", ("llama_cpp",), "scripts/setup.sh (builds llama-cpp-python)"
        ),
    },
    "tts": {
        "espeak-ng": BackendSpec("engine.stages.tts_espeak:EspeakTTS", (), "apt-get install -y espeak-ng"),
        "vits": BackendSpec("engine.stages.tts_vits:VitsTTS", ("torch", "transformers"), f"{_PIP} -e '.[gpu]'"),
        "speecht5": BackendSpec(
            "engine.stages.tts_speecht5:SpeechT5TTS", ("torch", "transformers"), f"{_PIP} -e '.[train]'"
        ),
    },
}


def backend_class(stage: str, name: str) -> type:
    """The class for ``stage``/``name``; a clear error if unknown or not installed."""
    try:
        spec = BACKENDS[stage][name]
    except KeyError:
        known = ", ".join(BACKENDS.get(stage, {})) or "none"
        raise ConfigError(f"unknown {stage} backend {name!r} (known: {known})") from None
    for module in spec.requires:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BackendUnavailable(
                f"the {stage} backend {name!r} needs the {module!r} package ({exc}); install it: {spec.install}"
            ) from None
    module_name, cls_name = spec.target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)

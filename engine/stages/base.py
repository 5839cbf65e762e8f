"""The five stage interfaces of the cascade, with their named input and output types.

=====  ==========================================  ===========================
stage  input                                       output
=====  ==========================================  ===========================
VAD    ``np.ndarray`` frames (16 kHz mono float)   speech probability per frame
turn   ``np.ndarray`` the turn so far (16 kHz)     ``float`` P(the user's turn is complete)
ASR    ``np.ndarray`` utterance (16 kHz mono)      :class:`Transcript`
LLM    ``list[ChatMessage]``                       ``Iterator[str]`` (token texts)
TTS    ``str`` (a sentence)                        ``np.ndarray`` at ``sample_rate``
=====  ==========================================  ===========================

Every method here is blocking and is called from a worker thread, never from the event
loop. A backend is constructed with its options dataclass (``engine.config``) and a
resolved model path, loads in ``setup()`` and frees in ``close()``.
"""

from __future__ import annotations

import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np


class ChatMessage(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


def default_cpu_threads() -> int:
    """CPU threads of a model stage whose profile says 0 (``asr.cpu_threads``,
    ``llm.n_threads``): one per core, up to 8.

    llama-cpp-python's own default is half the logical CPUs (it assumes two hyperthreads a core):
    one thread on a 2-vCPU machine, where two generate 1.5-1.8x faster (21-24 -> 35-42 tokens/s
    for Gemma 3 270M Q4_K_M, 2026-12-01, docs/benchmarks.md). The stages of one turn mostly run
    one after the other (ASR, then the LLM, then TTS), so each can have the cores to itself.
    """
    return min(os.cpu_count() or 4, 8)


@dataclass(frozen=True)
class Transcript:
    """ASR output.

    Fields:
        text: what was recognised ("" for nothing).
        language: what was used or detected.
        script_ok: the text is in the language's script (False: mostly another script, so the
            model did not understand; None: cannot be told, see ``engine.script``).
        stop: why the decode stopped before its end-of-text token: "loop" (it repeated itself),
            "script" (it wrote another script), "cap" (the token cap), "no_speech"; None otherwise.
        tokens: text tokens the decode wrote.
    """

    text: str
    language: str | None = None
    script_ok: bool | None = None
    stop: str | None = None
    tokens: int = 0


class Stage:
    """Lifecycle shared by every backend."""

    name: str = "stage"

    def setup(self) -> None:
        """Load the model. Raise :class:`engine.errors.ModelError` on failure."""

    def close(self) -> None:
        """Free the model."""

    def describe(self) -> dict[str, Any]:
        """What is loaded, for ``/healthz``, stats and the TUI."""
        return {"backend": self.name}


class VADBackend(Stage, ABC):
    """Gives a speech probability for each fixed-size frame; the state machine lives in
    ``engine.vad.TurnDetector``, not in backends."""

    frame_samples: int = 512

    @abstractmethod
    def new_state(self) -> Any:
        """Fresh per-stream state (recurrent state, context samples)."""

    @abstractmethod
    def probabilities(self, state: Any, frames: np.ndarray) -> np.ndarray:
        """``frames`` is (n, frame_samples) float32; returns n probabilities, updating ``state``."""


class TurnBackend(Stage, ABC):
    """An audio end-of-turn model: given the user's turn up to a silence, how likely is it
    that they are done? The policy that combines it with the transcript lives in
    ``engine.turn``, not in backends."""

    @abstractmethod
    def predict(self, audio: np.ndarray) -> float:
        """P(complete) for ``audio``, the turn so far (16 kHz mono float32, any length)."""


class ASRBackend(Stage, ABC):
    @abstractmethod
    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        """Transcribe one utterance (16 kHz mono float32). ``language=None`` detects it."""


class LLMBackend(Stage, ABC):
    context_size: int = 2048

    @abstractmethod
    def stream(
        self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
        threads: int | None = None,
    ) -> Iterator[str]:
        """Yield token texts as they are generated; stop early once ``cancel`` is set.
        ``threads``: CPU threads for this reply, at most the configured count (the session
        passes one per idle core, ``engine.cpu.threads_for``); None: the configured count.
        A backend without CPU threads ignores it."""

    def stream_turn(
        self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
        turn_end: Callable[[float | None], None], threads: int | None = None,
    ) -> Iterator[str]:
        """``stream``, but first tell ``turn_end`` how likely the user's last message is a
        finished sentence (the end-of-turn policy's text signal, ``engine.turn``); ``None``
        when the backend cannot tell, which is the default."""
        turn_end(None)
        yield from self.stream(messages, max_tokens, cancel, threads)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the prompt (used to trim history). Rough by default."""
        return max(1, len(text.encode("utf-8")) // 3)


class TTSBackend(Stage, ABC):
    sample_rate: int = 22_050

    @abstractmethod
    def synthesize(self, text: str) -> np.ndarray:
        """Speak ``text``; mono float32 at ``self.sample_rate``."""

    def stream(self, text: str) -> Iterator[np.ndarray]:
        """Speak ``text`` in chunks as they are ready; by default one chunk."""
        yield self.synthesize(text)


class ChunkedTTSBackend(TTSBackend):
    """A neural voice that speaks at most ``max_chunk_chars`` at a time: ``stream`` speaks
    ``text`` piece by piece (:func:`split_text`) through ``_speak``; ``synthesize`` joins them."""

    max_chunk_chars: int = 400
    sample_rate = 16_000  # until setup() reads the model's own (MMS VITS and SpeechT5 speak at 16 kHz)
    fix: str = ""  # what to do when the voice's folder is missing or broken
    _model: Any = None

    def __init__(self, options: Any, model_path: str):
        """``options``: the profile's ``TTSOptions``; ``model_path``: the voice's resolved folder."""
        self.options, self.model_path = options, model_path
        self.device = options.device
        self._model = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.options.model, "path": self.model_path,
                "device": str(self.device), "sample_rate": self.sample_rate}

    def _error(self, problem: str, fix: str | None = None) -> Exception:
        """A :class:`~engine.errors.ModelError` about this voice's folder."""
        from engine.errors import ModelError

        return ModelError("tts", self.options.model, self.model_path, problem, fix or self.fix)

    @abstractmethod
    def _speak(self, text: str) -> np.ndarray:
        """Speak one piece of at most ``max_chunk_chars``."""

    def stream(self, text: str) -> Iterator[np.ndarray]:
        if self._model is None:
            from engine.errors import StageError

            raise StageError("tts", f"{self.name} voice used before setup()")
        for chunk in split_text(text, self.max_chunk_chars):
            audio = self._speak(chunk)
            if audio.size:
                yield audio

    def synthesize(self, text: str) -> np.ndarray:
        parts = list(self.stream(text))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def split_text(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` at sentence ends, then clause marks, then spaces, into pieces <= max_chars."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    for sentence in re.split(r"(?<=[.?!।])\s+", text):
        while len(sentence) > max_chars:
            cut = max(sentence.rfind(", ", 0, max_chars), sentence.rfind(" ", 0, max_chars))
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut].strip(" ,"))
            sentence = sentence[cut:].strip(" ,")
        if sentence:
            pieces.append(sentence)
    return pieces


def torch_device(name: str, torch: Any) -> str | None:
    """The torch device for a stage's ``device`` option ("auto": cuda when there is one);
    None when cuda is asked for and torch sees no GPU. ``torch`` is passed in so this module
    never imports it."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return None
    return name

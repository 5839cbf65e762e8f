"""Fake stage backends that subclass the real interfaces, for stage-logic tests.

They stand in for the models whose output we need to control (what the user said, how long
the reply is, how fast tokens come); VAD stays the real Silero model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from engine.config import load_profile
from engine.cpu import IdleCores
from engine.engine import Engine
from engine.models import resolve
from engine.stages.base import ASRBackend, ChatMessage, LLMBackend, Transcript, TTSBackend, TurnBackend
from engine.stages.vad_silero import SileroVAD

REPLY = "నమస్కారం! నేను బాగున్నాను. మీకు ఎలా సహాయం చేయగలను? ఈ రోజు వాతావరణం చాలా బాగుంది."


class FakeASR(ASRBackend):
    name = "fake-asr"

    def __init__(self, text: str = "నమస్కారం, మీరు ఎలా ఉన్నారు?"):
        self.text = text
        self.calls = 0

    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        self.calls += 1
        return Transcript(self.text, language)


class FakeLLM(LLMBackend):
    """Streams ``reply`` word by word, ``delay`` seconds a token, honouring cancel."""

    name = "fake-llm"

    def __init__(self, reply: str = REPLY, delay: float = 0.02, fail: bool = False, eou: float | None = None):
        self.reply, self.delay, self.fail = reply, delay, fail
        self.eou = eou  # what stream_turn reports as P(the user's sentence is finished)
        self.yielded = 0
        self.prompts: list[list[ChatMessage]] = []
        self.turn_reads = 0
        self.threads: list[int | None] = []  # the thread count each reply was given
        self.cancelled = threading.Event()

    def stream_turn(self, messages, max_tokens, cancel, turn_end, threads=None):  # noqa: ANN001, ANN201
        self.turn_reads += 1
        turn_end(self.eou)
        yield from self.stream(messages, max_tokens, cancel, threads)

    def stream(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
               threads: int | None = None) -> Iterator[str]:
        self.prompts.append(list(messages))
        self.threads.append(threads)
        if self.fail:
            raise RuntimeError("the model fell over")
        words = self.reply.split(" ")
        for i, w in enumerate(words[:max_tokens]):
            if cancel.is_set():
                self.cancelled.set()
                return
            time.sleep(self.delay)
            self.yielded += 1
            yield w if i == 0 else " " + w


class FakeTTS(TTSBackend):
    """A tone of ``ms_per_char`` milliseconds per character, at 24 kHz."""

    name = "fake-tts"
    sample_rate = 24_000

    def __init__(self, ms_per_char: float = 40.0):
        self.ms_per_char = ms_per_char
        self.texts: list[str] = []

    def synthesize(self, text: str) -> np.ndarray:
        self.texts.append(text)
        n = int(self.sample_rate * self.ms_per_char * len(text) / 1000)
        return (0.3 * np.sin(np.arange(n) * 2 * np.pi * 220 / self.sample_rate)).astype(np.float32)


class FakeTurnModel(TurnBackend):
    """An audio turn model that says ``p`` (after ``delay`` seconds), or fails."""

    name = "fake-turn"

    def __init__(self, p: float = 0.9, delay: float = 0.0, fail: bool = False):
        self.p, self.delay, self.fail = p, delay, fail
        self.calls: list[int] = []  # audio lengths it was asked about

    def predict(self, audio: np.ndarray) -> float:
        self.calls.append(len(audio))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the turn model fell over")
        return self.p


def fake_engine(asr: ASRBackend | None = None, llm: LLMBackend | None = None, tts: TTSBackend | None = None,
                overrides: list[str] | None = None, turn_model: TurnBackend | None = None,
                cpu: IdleCores | None = None) -> Engine:
    """An Engine with the real Silero VAD and fake ASR/LLM/TTS (and audio turn model); ``cpu``:
    the machine's idle cores as the sessions read them (the real ``/proc/stat`` by default)."""
    profile = load_profile("offline", overrides)
    vad = SileroVAD(profile.vad, resolve("vad", profile.vad.model))
    vad.setup()
    return Engine(profile, vad, asr or FakeASR(), llm or FakeLLM(), tts or FakeTTS(), turn_model=turn_model,
                  cpu=cpu)

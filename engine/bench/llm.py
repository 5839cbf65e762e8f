"""The benchmarks' model wrappers: every LLM call reproducible and comparable, every ASR call's audio kept.

:class:`BenchLLM` empties the KV cache and reseeds the sampler before each call and decides what
the LLM writes (``--reply scripted|natural|N``, see :mod:`engine.bench.latency`); :class:`BenchASR`
keeps the audio of each call so the cascade and the floor transcribe exactly the utterance the
streaming Session transcribed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.stages.base import ASRBackend, ChatMessage, LLMBackend, Transcript

SCRIPTED_REPLY = (
    "నమస్కారం! ఈ రోజు హైదరాబాద్‌లో వాతావరణం ఎండగా ఉంది. "
    "సాయంత్రం కొంచెం వర్షం పడే అవకాశం ఉంది. "
    "బయటకు వెళ్ళేటప్పుడు గొడుగు తీసుకెళ్ళండి."
)
"""The fixed reply of ``--reply scripted``: four sentences, four speakable chunks."""

class BenchLLM(LLMBackend):
    """Wraps the engine's LLM so every call of a benchmark is reproducible and comparable.

    Before each call the KV cache is emptied and the sampler reseeded. ``reply`` is
    ``"natural"``, ``"scripted"`` or a token count (see the module docstring). The fixed modes
    need the llama.cpp backend (its ``Llama`` object) and raise :class:`ConfigError` otherwise.
    """

    name = "bench"

    def __init__(self, inner: LLMBackend, reply: str | int = "scripted", seed: int = 1234,
                 script: str = SCRIPTED_REPLY):
        self.inner, self.reply, self.seed = inner, reply, seed
        self.context_size = inner.context_size
        self._llama = getattr(inner, "llama", None)  # llama_cpp.Llama of LlamaCppLLM
        self._lock = threading.Lock()
        self.script_pieces: list[str] = []
        self.last_tokens = 0
        self.keep_cache = False  # True: llama.cpp's prompt cache is kept between calls, as in the engine
        self._last_messages: list[ChatMessage] = []  # the last call's (its system prompt: forget_turns)
        if reply != "natural":
            if self._llama is None:
                raise ConfigError(f"--reply {reply} needs the llama-cpp LLM backend; use --reply natural")
            if reply == "scripted":
                self.script_pieces = _pieces(self._llama, script)
            elif not isinstance(reply, int) or reply < 1:
                raise ConfigError(f"--reply must be scripted, natural or a token count, got {reply!r}")

    @property
    def reply_tokens(self) -> int | None:
        """Tokens every reply has (None in natural mode)."""
        if self.reply == "scripted":
            return len(self.script_pieces)
        return self.reply if isinstance(self.reply, int) else None

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "bench_reply": self.reply, "bench_reply_tokens": self.reply_tokens}

    def _use_threads(self, threads: int | None) -> None:
        """The session's thread count for this call, on the wrapped instance (as the backend does)."""
        use = getattr(self.inner, "use_threads", None)
        if use is not None and self._llama is not None:
            use(self._llama, threads)

    def stream(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
               threads: int | None = None) -> Iterator[str]:
        with self._lock:  # one Llama: the engine also serialises calls, this guards the bench's own
            self._last_messages = list(messages)
            self._use_threads(threads)
            if self._llama is not None:
                if not self.keep_cache:
                    self._llama.reset()  # no prefix reuse: every call pays the whole prefill
                self._llama.set_seed(self.seed)
            self.last_tokens = 0
            if self.reply == "natural":
                for text in self.inner.stream(messages, max_tokens, cancel, threads):
                    self.last_tokens += 1
                    yield text
                return
            yield from self._fixed(messages, cancel)

    def stream_turn(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
                    turn_end: Callable[[float | None], None], threads: int | None = None) -> Iterator[str]:
        """As :meth:`stream`, reading the end-of-turn probability first on the same (emptied)
        context, as the engine's backend does: the reply then reuses that prefill."""
        probe = getattr(self.inner, "sentence_end_probability", None)
        if probe is None or self._llama is None:
            turn_end(None)
            yield from self.stream(messages, max_tokens, cancel, threads)
            return
        with self._lock:
            self._last_messages = list(messages)
            self._use_threads(threads)
            if not self.keep_cache:
                self._llama.reset()
            self._llama.set_seed(self.seed)
            self.last_tokens = 0
            turn_end(probe(self._llama, messages))
            if self.reply == "natural":
                for text in self.inner._reply(self._llama, messages, max_tokens, cancel):
                    self.last_tokens += 1
                    yield text
                return
            yield from self._fixed(messages, cancel)

    def forget_turns(self) -> int | None:
        """Keep in llama.cpp's prompt cache only what every conversation's prompt starts with
        (the system prompt), as a new session finds it, and forget the turns read since; returns
        the tokens kept (None without the llama.cpp backend).

        With :attr:`keep_cache` a run of the same file under a second policy would otherwise find
        the first policy's transcript already read: a prefill that a new utterance never skips
        (``engine.bench.turn.compare_policies``)."""
        if self._llama is None:
            return None
        from engine.stages.llm_llamacpp import keep_prefix

        with self._lock:
            if not self._last_messages:  # nothing read through this bench yet: no system prompt known
                return self._llama.n_tokens
            system = [m for m in self._last_messages if m["role"] == "system"]
            other = self._prompt_tokens([*system, {"role": "user", "content": "\ue001"}])  # no user says this
            return keep_prefix(self._llama, other)

    def _fixed(self, messages: list[ChatMessage], cancel: threading.Event) -> Iterator[str]:
        llama = self._llama
        n = self.reply_tokens or 0
        prompt = self._prompt_tokens(messages)
        scripted = self.reply == "scripted"
        raw = b""
        said = 0
        gen = llama.generate(prompt, temp=0.0, repeat_penalty=getattr(self.inner.options, "repeat_penalty", 1.0))
        try:
            for i, token in enumerate(gen):
                if cancel.is_set():
                    break
                self.last_tokens = i + 1
                if scripted:
                    text = self.script_pieces[i]
                else:  # the model's own text; bytes of a split character wait for the rest
                    raw += llama.detokenize([token], special=False)
                    decoded = raw.decode("utf-8", errors="ignore")
                    text, said = decoded[said:], len(decoded)
                if text:
                    yield text
                if i + 1 >= n:
                    break
        finally:
            gen.close()

    def _prompt_tokens(self, messages: list[ChatMessage]) -> list[int]:
        o = self.inner.options
        llama = self._llama
        from engine.stages.llm_llamacpp import chat_prompt, dialogue_prompt

        if getattr(o, "prompt_format", "chat") == "dialogue":
            text = dialogue_prompt(messages)
        else:
            text = chat_prompt(llama, getattr(o, "chat_format", ""), messages)
        return llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def setup(self) -> None:
        self.inner.setup()

    def close(self) -> None:
        self.inner.close()


def _pieces(llama: Any, text: str) -> list[str]:
    """``text`` split the way the model's tokenizer splits it: one piece of text per token
    (a character split over tokens is given whole with its last token)."""
    ids = llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    pieces, raw, said = [], b"", 0
    for t in ids:
        raw += llama.detokenize([t], special=False)
        decoded = raw.decode("utf-8", errors="ignore")
        pieces.append(decoded[said:])
        said = len(decoded)
    return pieces


class BenchASR(ASRBackend):
    """Wraps the engine's ASR to keep the audio of each call, so (b) and (c) transcribe exactly
    the utterance the streaming Session transcribed."""

    name = "bench"

    def __init__(self, inner: ASRBackend):
        self.inner = inner
        self.device = getattr(inner, "device", "cpu")
        self.decode_cost_ms = getattr(inner, "decode_cost_ms", None)
        self._lock = threading.Lock()
        self.calls: list[tuple[np.ndarray, str]] = []

    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        tr = self.inner.transcribe(audio, language)
        with self._lock:
            self.calls.append((np.array(audio, np.float32, copy=True), tr.text.strip()))
            del self.calls[:-16]  # a turn's final call stays until its TranscriptFinal is read
        return tr

    def audio_for(self, text: str) -> np.ndarray | None:
        """The audio of the latest call that gave ``text``."""
        with self._lock:
            for audio, t in reversed(self.calls):
                if t == text.strip():
                    return audio
        return None

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


__all__ = ["SCRIPTED_REPLY", "BenchASR", "BenchLLM"]

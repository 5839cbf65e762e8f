"""``s2s-engine bench``: how close the engine gets to what the models need, and what it saves.

    s2s-engine bench latency [--profile P] [--set k=v]... [--turns N] [--reply MODE] [--json OUT] FILES...
    s2s-engine bench wire [--profile P] [--turns N] [--seconds S] [--json OUT] [FILE]
    s2s-engine bench make-models --out DIR [--small] [--asr-tokens N]
    s2s-engine bench asr SET... / bench asr-set OUT   (engine.bench_asr)

``bench latency`` loads one engine and, for every turn of every WAV, measures in one run:

(a) **streaming**: the real :class:`engine.session.Session` fed the WAV in 20 ms chunks (paced in
    real time by default; ``--fast`` feeds it as fast as VAD takes it). Voice-to-voice is the
    Session's own metric, first reply audio out minus end of speech; the end-of-turn silence wait
    (end of speech to the end-of-turn decision) is reported on its own, and so is the time after
    the decision (``after_eot_ms``), which is what the models and the engine spend.
(b) **sequential cascade** (the seed's sketch): full ASR of the utterance, then the whole LLM
    reply, then TTS of the whole reply; "playback" starts when that TTS returns.
(c) **compute floor**: each stage alone on the same input, nothing overlapping: ASR of the
    utterance, LLM prefill plus the tokens up to the first speakable chunk (the same
    :class:`engine.sentences.SentenceChunker`), TTS of that first chunk.

Ratios use the time after the end-of-turn decision, which all three share: (a)/(c) is what the
engine adds to the models; (b)/(a) is what streaming saves over the cascade.

Fairness: the three runs see the same utterance audio (the span the Session's VAD cut), the same
system prompt and history, the same ``max_tokens``, and the same LLM output. Every LLM call starts
from an empty KV cache (no prefix reuse) and reseeds the sampler with ``llm.seed``. ``--reply``
decides what the LLM writes:

- ``scripted`` (default): the LLM runs greedy for exactly as many tokens as a fixed four-sentence
  Telugu reply has in its tokenizer, and the text handed on is that reply, piece by piece as the
  tokens come. The compute is the model's own (prefill and one decode step per token); only the
  text is fixed, so sentence boundaries, TTS input and reply length are the same in (a), (b) and
  (c), and random-weight (shape-true) models give speakable Telugu to the TTS.
- ``N`` (an integer): the LLM's own greedy text, exactly N tokens (end-of-generation ignored).
- ``natural``: the backend unchanged (its sampling and stop strings, up to ``llm.max_tokens``).

``bench wire`` runs one text turn in-process and through :mod:`remote.server` /
:mod:`remote.client` on 127.0.0.1 (same engine) and reports the WebSocket overhead on time to first
audio, and Encodec encode/decode real-time factors and bytes per second per bandwidth against PCM
(random weights unless ``--codec-model`` names real ones; figures are labelled).

``bench make-models`` writes shape-true random-weight models of the gpu profile
(:mod:`engine.shape_models`).

Every time comes from :func:`engine.clock.now_ns` (``perf_counter_ns``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.audio import ENGINE_RATE, load_wav, resample
from engine.clock import ms, now_ns
from engine.errors import ConfigError, S2SError
from engine.history import ChatHistory
from engine.sentences import SentenceChunker
from engine.stages.base import ASRBackend, ChatMessage, LLMBackend, Transcript

if TYPE_CHECKING:
    from engine.engine import Engine

SCRIPTED_REPLY = (
    "నమస్కారం! ఈ రోజు హైదరాబాద్‌లో వాతావరణం ఎండగా ఉంది. "
    "సాయంత్రం కొంచెం వర్షం పడే అవకాశం ఉంది. "
    "బయటకు వెళ్ళేటప్పుడు గొడుగు తీసుకెళ్ళండి."
)
"""The fixed reply of ``--reply scripted``: four sentences, four speakable chunks."""

CHUNK_MS = 20
TRAILING_PAD_MS = 200  # engine.session.TRAILING_PAD_MS: the Session cuts the utterance this far past the end

# --------------------------------------------------------------------------- the LLM wrapper


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

    def stream(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        with self._lock:  # one Llama: the engine also serialises calls, this guards the bench's own
            if self._llama is not None:
                self._llama.reset()  # no prefix reuse: every call pays the whole prefill
                self._llama.set_seed(self.seed)
            self.last_tokens = 0
            if self.reply == "natural":
                for text in self.inner.stream(messages, max_tokens, cancel):
                    self.last_tokens += 1
                    yield text
                return
            yield from self._fixed(messages, cancel)

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
        if getattr(o, "prompt_format", "chat") == "dialogue":
            from engine.stages.llm_llamacpp import dialogue_prompt

            text = dialogue_prompt(messages)
        else:
            text = _chat_prompt(llama, getattr(o, "chat_format", ""), messages)
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


def _chat_prompt(llama: Any, chat_format: str, messages: list[ChatMessage]) -> str:
    """The prompt a chat completion would send: the GGUF's own template, or Gemma's turns."""
    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    if template and not chat_format:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", errors="ignore")
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", errors="ignore")
        prompt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=messages).prompt
        return prompt[len(bos):] if bos and prompt.startswith(bos) else prompt
    if chat_format in ("gemma", ""):
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        out = []
        for m in messages:
            if m["role"] == "system":
                continue
            role = "user" if m["role"] == "user" else "model"
            content = m["content"]
            if role == "user" and system:
                content, system = f"{system}\n\n{content}", ""
            out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
        return "".join(out) + "<start_of_turn>model\n"
    raise ConfigError(f"--reply scripted/N supports prompt_format=dialogue or the gemma/GGUF chat template, "
                      f"not chat_format={chat_format!r}; use --reply natural")


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
            del self.calls[:-8]
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


# --------------------------------------------------------------------------- measurements


@dataclass
class StreamTurn:
    """One user turn as the streaming Session ran it."""

    turn_id: str
    utterance: np.ndarray = field(repr=False)
    transcript: str = ""
    reply_text: str = ""
    chunks: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


async def stream_file(engine: Engine, audio: np.ndarray, paced: bool = True) -> list[StreamTurn]:
    """Feed ``audio`` to a fresh Session like a microphone (as ``engine.replay`` does) and
    return each turn with the utterance the Session transcribed (exact with :class:`BenchASR`,
    else cut from the speech start/stop positions the Session reports)."""
    from engine.events import (
        ErrorEvent,
        ReplySegment,
        ResponseDone,
        ResponseStarted,
        SpeechStarted,
        SpeechStopped,
        TranscriptFinal,
        TurnMetricsEvent,
    )

    eot = engine.profile.vad.end_of_turn_silence_ms
    stream = np.concatenate([audio, np.zeros(int(ENGINE_RATE * (eot + 1000) / 1000), np.float32)])
    session = engine.new_session()
    await session.start()
    turns: dict[str, StreamTurn] = {}
    starts: dict[str, int] = {}
    by_response: dict[str, StreamTurn] = {}
    pre = int(ENGINE_RATE * session.vad_options.pre_roll_ms / 1000)

    def turn(turn_id: str | None) -> StreamTurn:
        key = turn_id or "turn_?"
        if key not in turns:
            turns[key] = StreamTurn(key, np.zeros(0, np.float32))
        return turns[key]

    async def collect() -> None:
        async for ev in session.stream():
            if isinstance(ev, SpeechStarted):
                starts[ev.turn_id] = ev.audio_start_ms * ENGINE_RATE // 1000
            elif isinstance(ev, SpeechStopped):
                start = max(0, starts.get(ev.turn_id, 0) - pre)
                stop = (ev.audio_end_ms + TRAILING_PAD_MS) * ENGINE_RATE // 1000
                turn(ev.turn_id).utterance = stream[start:stop].copy()
            elif isinstance(ev, TranscriptFinal):
                t = turn(ev.turn_id)
                t.transcript = ev.text
                exact = engine.asr.audio_for(ev.text) if isinstance(engine.asr, BenchASR) else None
                if exact is not None:
                    t.utterance = exact
            elif isinstance(ev, ResponseStarted):
                by_response[ev.response_id] = turn(ev.turn_id)
            elif isinstance(ev, ReplySegment) and ev.response_id in by_response:
                by_response[ev.response_id].chunks += 1
            elif isinstance(ev, ResponseDone) and ev.response_id in by_response:
                by_response[ev.response_id].reply_text = ev.text
            elif isinstance(ev, TurnMetricsEvent):
                t = by_response.get(ev.metrics.response_id or "")
                if t is not None:
                    t.metrics = ev.metrics.to_dict()
                    t.metrics["after_eot_ms"] = _r(ms(ev.metrics.turn_end_ns, ev.metrics.first_audio_out_ns))
            elif isinstance(ev, ErrorEvent):
                turn(ev.turn_id).errors.append(f"{ev.stage or 'engine'}: {ev.message}")

    collector = asyncio.create_task(collect())
    step = ENGINE_RATE * CHUNK_MS // 1000
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        for i, start in enumerate(range(0, len(stream), step)):
            session.push_audio(stream[start: start + step])
            if paced:
                delay = t0 + (i + 1) * CHUNK_MS / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await session.input_processed()
                if session.busy:
                    await session.wait_idle()
        await session.input_processed()
        await session.wait_idle()
    finally:
        await session.close()
        await collector
    return [t for t in turns.values() if t.metrics]


def _synth(engine: Engine, text: str) -> np.ndarray:
    """TTS as the Session does it: synthesise, then resample to the session's output rate."""
    audio = engine.tts.synthesize(text)
    return resample(audio, engine.tts.sample_rate, engine.profile.session.output_sample_rate)


def _language(engine: Engine) -> str | None:
    lang = engine.profile.asr.language
    return None if lang in ("", "auto") else lang


def _messages(engine: Engine, history: ChatHistory) -> list[ChatMessage]:
    o = engine.profile.llm
    return history.build(o.system_prompt, engine.llm.count_tokens, engine.llm.context_size - o.max_tokens,
                         o.history_turns)


def cascade_turn(engine: Engine, utterance: np.ndarray, history: ChatHistory) -> dict[str, Any]:
    """(b): full ASR, then the whole reply, then TTS of the whole reply. Adds the exchange to
    ``history``. Times in ms from the moment the utterance is ready (the end-of-turn decision)."""
    t0 = now_ns()
    transcript = engine.asr.transcribe(utterance, _language(engine)).text.strip()
    t1 = now_ns()
    history.add("user", transcript)
    messages = _messages(engine, history)
    reply = "".join(engine.llm.stream(messages, engine.profile.llm.max_tokens, threading.Event())).strip()
    t2 = now_ns()
    audio = _synth(engine, reply) if reply else np.zeros(0, np.float32)
    t3 = now_ns()
    history.add("assistant", reply)
    return {
        "transcript": transcript, "reply_text": reply, "reply_tokens": getattr(engine.llm, "last_tokens", None),
        "asr_ms": _r(ms(t0, t1)), "llm_ms": _r(ms(t1, t2)), "tts_ms": _r(ms(t2, t3)),
        "after_eot_ms": _r(ms(t0, t3)),
        "reply_audio_s": round(len(audio) / engine.profile.session.output_sample_rate, 3),
    }


def floor_turn(engine: Engine, utterance: np.ndarray, messages: list[ChatMessage]) -> dict[str, Any]:
    """(c): each stage alone on the same input; the floor is the sum of the three."""
    t0 = now_ns()
    engine.asr.transcribe(utterance, _language(engine))
    t1 = now_ns()
    chunker = SentenceChunker(engine.profile.sentences)
    cancel = threading.Event()
    first: str | None = None
    t2 = now_ns()
    gen = engine.llm.stream(messages, engine.profile.llm.max_tokens, cancel)
    try:
        for text in gen:
            t = now_ns()
            ready = chunker.push(text, t) or chunker.poll(t)
            if ready:
                first = ready[0]
                break
    finally:
        cancel.set()
        close = getattr(gen, "close", None)
        if close:
            close()
    if first is None:
        rest = chunker.flush()
        first = rest[0] if rest else ""
    t3 = now_ns()
    _synth(engine, first) if first else None
    t4 = now_ns()
    asr, llm, tts = ms(t0, t1), ms(t2, t3), ms(t3, t4)
    return {"first_chunk": first, "asr_ms": _r(asr), "llm_first_chunk_ms": _r(llm), "tts_first_chunk_ms": _r(tts),
            "total_ms": _r((asr or 0) + (llm or 0) + (tts or 0))}


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    return None if not values else float(np.percentile(np.asarray(values, float), q))


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def _dist(values: list[float | None]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    return {"n": len(vals), "p50": _r(percentile(vals, 50)), "p95": _r(percentile(vals, 95)),
            "min": _r(min(vals) if vals else None), "max": _r(max(vals) if vals else None)}


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    gpu = None
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=5)
        gpu = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


async def run_latency(engine: Engine, files: list[str], turns: int = 3, paced: bool = True,
                      min_sentences: int = 3) -> dict[str, Any]:
    """Measure (a), (b) and (c) for every turn of every file, ``turns`` times; the JSON report."""
    if not isinstance(engine.llm, BenchLLM):
        raise ConfigError("run_latency needs the engine's LLM wrapped in BenchLLM (see bench_engine)")
    loop = asyncio.get_running_loop()
    rows: list[dict[str, Any]] = []
    for path in files:
        audio, _info = load_wav(path)
        for rep in range(turns):
            streamed = await stream_file(engine, audio, paced=paced)
            if not streamed:
                raise S2SError(f"{path}: no turn was answered (no speech detected, or every turn failed)")
            history = ChatHistory()
            for st in streamed:
                before = ChatHistory(list(history.messages))
                cascade = await loop.run_in_executor(None, cascade_turn, engine, st.utterance, history)
                before.add("user", cascade["transcript"])
                floor = await loop.run_in_executor(None, floor_turn, engine, st.utterance,
                                                   _messages(engine, before))
                m = st.metrics
                eot = m.get("eot_wait_ms")
                rows.append({
                    "file": str(path), "repeat": rep + 1, "turn_id": st.turn_id,
                    "transcript": st.transcript, "reply_text": st.reply_text, "reply_chunks": st.chunks,
                    "errors": st.errors,
                    "same_transcript": st.transcript == cascade["transcript"],
                    "same_reply": st.reply_text.strip() == cascade["reply_text"],
                    "streaming": {k: v for k, v in m.items() if k != "stamps_ns"},
                    "cascade": {**cascade, "voice_to_voice_ms": _r(None if eot is None or cascade["after_eot_ms"] is None
                                                                   else eot + cascade["after_eot_ms"])},
                    "floor": floor,
                })
    a = [r["streaming"].get("after_eot_ms") for r in rows]
    b = [r["cascade"]["after_eot_ms"] for r in rows]
    c = [r["floor"]["total_ms"] for r in rows]
    sa, sb, sc = _dist(a), _dist(b), _dist(c)
    chunks = [r["reply_chunks"] for r in rows]
    ratio_ac = sa["p50"] / sc["p50"] if sa["p50"] and sc["p50"] else None
    ratio_ba = sb["p50"] / sa["p50"] if sb["p50"] and sa["p50"] else None
    sentences_p50 = percentile([float(x) for x in chunks], 50) or 0
    stage_keys = ("asr_ms", "llm_first_token_ms", "first_sentence_ms", "tts_ms", "out_ms")
    return {
        "schema": "s2s.bench.latency/1",
        "machine": machine(),
        "profile": engine.profile.name,
        "engine": engine.describe(),
        "options": {"turns": turns, "paced": paced, "reply": engine.llm.reply,
                    "reply_tokens": engine.llm.reply_tokens, "max_tokens": engine.profile.llm.max_tokens,
                    "end_of_turn_silence_ms": engine.profile.vad.end_of_turn_silence_ms, "files": files},
        "summary": {
            "streaming": {"after_eot_ms": sa,
                          "voice_to_voice_ms": _dist([r["streaming"].get("voice_to_voice_ms") for r in rows]),
                          "eot_wait_ms": _dist([r["streaming"].get("eot_wait_ms") for r in rows]),
                          "stages_ms": {k: _dist([r["streaming"].get(k) for r in rows]) for k in stage_keys}},
            "cascade": {"after_eot_ms": sb,
                        "voice_to_voice_ms": _dist([r["cascade"]["voice_to_voice_ms"] for r in rows]),
                        "stages_ms": {k: _dist([r["cascade"][k] for r in rows]) for k in ("asr_ms", "llm_ms", "tts_ms")}},
            "floor": {"total_ms": sc,
                      "stages_ms": {k: _dist([r["floor"][k] for r in rows])
                                    for k in ("asr_ms", "llm_first_chunk_ms", "tts_first_chunk_ms")}},
            "ratios": {"streaming_over_floor": _r(ratio_ac, 3), "cascade_over_streaming": _r(ratio_ba, 3)},
            "reply_chunks_p50": sentences_p50,
            "multi_sentence": sentences_p50 >= min_sentences,
            "targets": {
                "streaming_over_floor_max": 1.15,
                "streaming_over_floor_met": None if ratio_ac is None else ratio_ac <= 1.15,
                "cascade_over_streaming_min": 3.0,
                "cascade_over_streaming_met": None if ratio_ba is None or sentences_p50 < min_sentences
                else ratio_ba >= 3.0,
            },
        },
        "turns": rows,
    }


def bench_engine(profile: str, overrides: list[str], reply: str | int) -> Engine:
    """Load the profile's engine with its LLM wrapped in :class:`BenchLLM`."""
    from engine.config import load_profile
    from engine.engine import Engine

    p = load_profile(profile, overrides)
    engine = Engine.load(p)
    try:
        engine.llm = BenchLLM(engine.llm, reply, seed=p.llm.seed)
        engine.asr = BenchASR(engine.asr)
    except S2SError:
        engine.close()
        raise
    if engine.llm.reply_tokens is not None:
        p.llm.max_tokens = engine.llm.reply_tokens  # one budget for history trimming in all three
    return engine


def render_latency(report: dict[str, Any], console: Any) -> None:
    """The summary as a rich table."""
    from rich.table import Table

    s = report["summary"]
    o = report["options"]
    table = Table(title=f"voice-to-voice latency, profile {report['profile']!r} "
                        f"({s['streaming']['after_eot_ms']['n']} turns, reply {o['reply']}, "
                        f"{o['reply_tokens'] or '≤' + str(o['max_tokens'])} tokens)")
    for col, just in (("measurement", "left"), ("p50 ms", "right"), ("p95 ms", "right"), ("note", "left")):
        table.add_column(col, justify=just)

    def row(label: str, d: dict[str, Any], note: str = "") -> None:
        def f(v: float | None) -> str:
            return "—" if v is None else f"{v:.0f}"

        table.add_row(label, f(d["p50"]), f(d["p95"]), note)

    row("(a) streaming, after end of turn", s["streaming"]["after_eot_ms"], "first audio out − end-of-turn decision")
    row("(a) streaming, voice-to-voice", s["streaming"]["voice_to_voice_ms"], "first audio out − end of speech")
    row("    end-of-turn silence wait", s["streaming"]["eot_wait_ms"],
        "measured" if o["paced"] else "not real with --fast (audio fed faster than real time)")
    for k, d in s["streaming"]["stages_ms"].items():
        row(f"    {k}", d)
    row("(b) sequential cascade, after end of turn", s["cascade"]["after_eot_ms"], "ASR + whole reply + whole TTS")
    row("(b) sequential cascade, voice-to-voice", s["cascade"]["voice_to_voice_ms"], "+ the same end-of-turn wait")
    for k, d in s["cascade"]["stages_ms"].items():
        row(f"    {k}", d)
    row("(c) compute floor", s["floor"]["total_ms"], "ASR + LLM to first chunk + TTS of it, alone")
    for k, d in s["floor"]["stages_ms"].items():
        row(f"    {k}", d)
    console.print(table)
    r, t = s["ratios"], s["targets"]

    def verdict(ok: bool | None) -> str:
        return "[dim]n/a[/]" if ok is None else ("[green]met[/]" if ok else "[red]missed[/]")

    console.print(f"(a)/(c) = {r['streaming_over_floor']}  (target ≤ 1.15: {verdict(t['streaming_over_floor_met'])})")
    console.print(f"(b)/(a) = {r['cascade_over_streaming']}  (target ≥ 3 on replies of 3+ sentences: "
                  f"{verdict(t['cascade_over_streaming_met'])}; replies had {s['reply_chunks_p50']:.0f} chunks)")


# --------------------------------------------------------------------------- CLI


def _reply_arg(value: str) -> str | int:
    if value in ("scripted", "natural"):
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected scripted, natural or a token count") from None
    if n < 1:
        raise argparse.ArgumentTypeError("the token count must be at least 1")
    return n


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=os.environ.get("S2S_PROFILE", "offline"),
                   help="profile name (offline, gpu) or path to a .toml file (default: offline)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one profile value, e.g. --set asr.model=/path (repeatable)")
    p.add_argument("--json", dest="json_path", metavar="OUT.json", help="also write the report as JSON")


def register(subparsers: Any) -> None:
    """Add ``bench`` (latency, wire, make-models) to the ``s2s-engine`` subcommands."""
    bp = subparsers.add_parser("bench", help="latency against the compute floor and the cascade; wire; models")
    bsub = bp.add_subparsers(dest="bench_command", required=True)

    lp = bsub.add_parser("latency", help="(a) streaming vs (b) sequential cascade vs (c) compute floor")
    lp.add_argument("files", nargs="*", help="WAV files (default: the bundled Telugu sample)")
    lp.add_argument("--turns", type=int, default=5, help="runs of each file (default 5)")
    lp.add_argument("--reply", type=_reply_arg, default="scripted", metavar="MODE",
                    help="scripted (default: a fixed 4-sentence reply over real compute), natural, or N tokens")
    lp.add_argument("--fast", action="store_true",
                    help="feed audio as fast as VAD takes it (the end-of-turn wait is then not measured)")
    lp.add_argument("--min-sentences", type=int, default=3,
                    help="the (b)/(a) target applies to replies of at least this many chunks (default 3)")
    _common(lp)
    lp.set_defaults(func=cmd_latency)

    wp = bsub.add_parser("wire", help="in-process vs WebSocket on 127.0.0.1; Encodec RTF and bytes/s")
    wp.add_argument("--turns", type=int, default=5, help="text turns each way (default 5)")
    wp.add_argument("--seconds", type=float, default=5.0, help="audio clip for the codec figures (default 5)")
    wp.add_argument("--codec-model", help="real Encodec weights (folder or cached hub id); default random")
    wp.add_argument("--small-codec", action="store_true", help="random narrow Encodec (tests)")
    wp.add_argument("--no-codec", action="store_true", help="skip the codec figures")
    wp.add_argument("--reply", type=_reply_arg, default="scripted", metavar="MODE", help="as for latency")
    _common(wp)
    wp.set_defaults(func=cmd_wire)

    mp = bsub.add_parser("make-models", help="shape-true random-weight models of the gpu profile")
    mp.add_argument("--out", required=True, help="output folder")
    mp.add_argument("--small", action="store_true", help="tiny variants with the same structure (tests)")
    mp.add_argument("--only", choices=("asr", "llm", "tts"), action="append", help="build only these (repeatable)")
    mp.add_argument("--asr-tokens", type=int, default=None, help="tokens every transcript has (default 48)")
    mp.add_argument("--llm-type", default=None, help="GGUF weight type: q4_k_m (default; f16 with --small), f16, q8_0")
    mp.add_argument("--asr-arch", default="large-v3-turbo", choices=("large-v3-turbo", "large-v2"),
                    help="Whisper architecture (default large-v3-turbo; large-v2 is the gpu profile's Telugu model)")
    mp.add_argument("--asr-quantization", default="float16", choices=("float16", "int8", "int8_float16"),
                    help="CTranslate2 weights (default float16)")
    mp.add_argument("--json", dest="json_path", metavar="OUT.json", help="also write the summary as JSON")
    mp.set_defaults(func=cmd_make_models)

    from engine.bench_asr import register as register_asr

    register_asr(bsub)  # bench asr, bench asr-set


def _write_json(path: str | None, data: dict[str, Any], console: Any) -> None:
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"report: {p}")


def cmd_latency(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.cli import sample_wav

    console = Console(highlight=False)
    if args.turns < 1:
        raise ConfigError("--turns must be at least 1")
    files = args.files or [str(sample_wav())]
    console.print(f"[dim]loading profile {args.profile!r} ...[/]")
    engine = bench_engine(args.profile, args.set, args.reply)
    try:
        for stage, info in engine.describe()["models"].items():
            console.print(f"[dim]  {stage}: {info.get('model')} ({info.get('device', 'cpu')})[/]")
        report = asyncio.run(run_latency(engine, files, args.turns, paced=not args.fast,
                                         min_sentences=args.min_sentences))
    finally:
        engine.close()
    render_latency(report, console)
    _write_json(args.json_path, report, console)
    return 0


def cmd_wire(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    report = run_wire(args)
    render_wire(report, console)
    _write_json(args.json_path, report, console)
    return 0


def cmd_make_models(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.shape_models import make_models

    console = Console(highlight=False)
    summary = make_models(args.out, small=args.small, only=args.only, asr_tokens=args.asr_tokens,
                          llm_type=args.llm_type, asr_arch=args.asr_arch, asr_quantization=args.asr_quantization,
                          log=lambda s: console.print(f"[dim]{s}[/]"))
    for stage, info in summary["models"].items():
        console.print(f"{stage}: {info['path']}  ({info['description']})")
    console.print("use them with:  s2s-engine bench latency --profile gpu " + " ".join(
        f"--set {k}" for k in summary["overrides"]))
    _write_json(args.json_path, summary, console)
    return 0


# --------------------------------------------------------------------------- wire


def run_wire(args: argparse.Namespace) -> dict[str, Any]:
    """In-process vs WebSocket time to first audio of one text turn; Encodec figures."""
    report: dict[str, Any] = {"schema": "s2s.bench.wire/1", "machine": machine(), "profile": args.profile}
    engine = bench_engine(args.profile, args.set, args.reply)
    try:
        report["engine"] = engine.describe()
        report["turn"] = asyncio.run(_wire_turns(engine, args.turns))
    finally:
        engine.close()
    if not args.no_codec:
        report["codec"] = codec_figures(args.codec_model, args.seconds, small=args.small_codec)
    return report


WIRE_TEXT = "ఈ రోజు వాతావరణం ఎలా ఉంది?"


async def _inprocess_turn(engine: Engine) -> float:
    """Ms from sending a text turn to the first reply audio, in-process."""
    from engine.events import ReplyAudio, ResponseDone

    session = engine.new_session()
    await session.start()
    first: float | None = None
    try:
        t0 = now_ns()
        session.add_user_text(WIRE_TEXT)
        session.create_response()
        async for ev in session.stream():
            if isinstance(ev, ReplyAudio) and first is None:
                first = ms(t0, now_ns())
            if isinstance(ev, ResponseDone):
                break
        await session.wait_idle()
    finally:
        await session.close()
    if first is None:
        raise S2SError("the in-process turn gave no audio")
    return first


async def _websocket_turn(url: str, token: str | None) -> float:
    """Ms from sending a text turn to the first reply audio delta, over the WebSocket."""
    from remote import protocol as p
    from remote.client import RealtimeClient

    client = RealtimeClient(url, token=token, reconnect=False, ping_interval_s=0)
    await client.connect()
    try:
        await client.wait_for(p.SessionCreated, limit_s=30)
        t0 = now_ns()
        await client.send_text(WIRE_TEXT)
        await client.create_response()
        first: float | None = None
        async with asyncio.timeout(120):
            while True:
                e = await client.recv()
                if isinstance(e, p.ResponseAudioDelta) and first is None:
                    first = ms(t0, now_ns())
                if getattr(e, "type", "") == "response.done":
                    break
        if first is None:
            raise S2SError("the WebSocket turn gave no audio")
        return first
    finally:
        await client.close()


async def _wire_turns(engine: Engine, turns: int) -> dict[str, Any]:
    from remote.server import serve

    inproc, ws = [], []
    async with await serve(engine, "127.0.0.1", 0, stats_interval_s=0, ping_interval_s=None) as server:
        url = server.url
        await _inprocess_turn(engine)  # warm-up, both ways
        await _websocket_turn(url, None)
        for _ in range(turns):  # interleaved so drift hits both alike
            inproc.append(await _inprocess_turn(engine))
            ws.append(await _websocket_turn(url, None))
    overhead = [w - i for w, i in zip(ws, inproc, strict=True)]
    return {"text": WIRE_TEXT, "in_process_ms": _dist(inproc), "websocket_ms": _dist(ws),
            "overhead_ms": _dist(overhead), "transport": "PCM16 base64 (Realtime default) on 127.0.0.1"}


def codec_figures(model: str | None, seconds: float, small: bool = False) -> dict[str, Any]:
    """Encodec RTFs and bytes/s per bandwidth (``engine.codec.benchmark``), against PCM16/24 kHz."""
    from engine import codec as c

    codec = c.EncodecCodec.load(model) if model else c.EncodecCodec.random(small=small)
    rows = c.benchmark(codec, seconds)
    pcm = c.SAMPLE_RATE * 2
    for r in rows:
        r["vs_pcm16"] = round(pcm / r["stream_bps"], 1) if r["stream_bps"] else None
    return {"model": codec.name, "random_weights": codec.random_weights, "device": codec.device,
            "seconds": seconds, "pcm16_bps": pcm, "rows": rows}


def render_wire(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    t = report.get("turn")
    if t:
        table = Table(title=f"one text turn, time to first audio ({t['in_process_ms']['n']} runs)")
        for col in ("path", "p50 ms", "p95 ms"):
            table.add_column(col, justify="left" if col == "path" else "right")
        for label, key in (("in-process Session", "in_process_ms"), ("WebSocket 127.0.0.1", "websocket_ms"),
                           ("overhead (paired)", "overhead_ms")):
            d = t[key]
            table.add_row(label, f"{d['p50']:.1f}", f"{d['p95']:.1f}")
        console.print(table)
    cf = report.get("codec")
    if cf:
        label = " [yellow](RANDOM WEIGHTS: timings only)[/]" if cf["random_weights"] else ""
        table = Table(title=f"Encodec 24 kHz, {cf['model']}, {cf['seconds']:g} s clip{label}")
        for col in ("kbps", "encode RTF", "decode RTF", "stream RTF", "bytes/s", f"vs PCM16 {cf['pcm16_bps']} B/s"):
            table.add_column(col, justify="right")
        for r in cf["rows"]:
            table.add_row(f"{r['bandwidth']:g}", f"{r['encode_rtf']:.3f}", f"{r['decode_rtf']:.3f}",
                          f"{r['stream_rtf']:.3f}", f"{r['stream_bps']:.0f}", f"{r['vs_pcm16']}x smaller")
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.bench ...`` (the same as ``s2s-engine bench ...``)."""
    import sys

    parser = argparse.ArgumentParser(prog="s2s-engine")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except S2SError as exc:
        print(f"s2s-engine: error: {exc}", file=sys.stderr)
        return 1


__all__ = ["BenchLLM", "SCRIPTED_REPLY", "register", "run_latency", "stream_file", "cascade_turn", "floor_turn",
           "percentile"]

if __name__ == "__main__":
    raise SystemExit(main())

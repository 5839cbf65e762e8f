"""``bench latency``: the streaming engine against the sequential cascade and the compute floor.

For every turn of every WAV, in one run:

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
decides what the LLM writes (:class:`engine.bench.llm.BenchLLM`):

- ``scripted`` (default): the LLM runs greedy for exactly as many tokens as a fixed four-sentence
  Telugu reply has in its tokenizer, and the text handed on is that reply, piece by piece as the
  tokens come. The compute is the model's own (prefill and one decode step per token); only the
  text is fixed, so sentence boundaries, TTS input and reply length are the same in (a), (b) and
  (c), and random-weight (shape-true) models give speakable Telugu to the TTS.
- ``N`` (an integer): the LLM's own greedy text, exactly N tokens (end-of-generation ignored).
- ``natural``: the backend unchanged (its sampling and stop strings, up to ``llm.max_tokens``).

Every time comes from :func:`engine.clock.now_ns` (``perf_counter_ns``).

``--cpu-load N`` (:func:`cpu_load`) keeps N cores busy for the whole run, so that the end-of-turn
policies can be compared on a loaded machine side by side: N child processes spin in a Python
loop (no dependency, one core each at normal priority, like ``yes > /dev/null``). They are
started and running before the first file and stopped after the last, also on an error or
Ctrl-C; each also stops by itself when its time limit runs out or its parent is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import events
from engine.audio import ENGINE_RATE, load_wav, resample
from engine.bench.llm import BenchASR, BenchLLM
from engine.bench.stats import dist, machine, percentile, rounded
from engine.clock import ms, now_ns
from engine.errors import ConfigError, S2SError
from engine.history import ChatHistory
from engine.sentences import SentenceChunker
from engine.stages.base import ChatMessage

if TYPE_CHECKING:
    from engine.engine import Engine

CHUNK_MS = 20
TRAILING_PAD_MS = 200  # engine.session.TRAILING_PAD_MS: the Session cuts the utterance this far past the end


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


async def stream_file(engine: Engine, audio: np.ndarray, paced: bool = True,
                      turn_policy: str | None = None) -> list[StreamTurn]:
    """Feed ``audio`` to a fresh Session like a microphone (as ``engine.replay`` does) and
    return each turn with the utterance the Session transcribed (exact with :class:`BenchASR`,
    else cut from the speech start/stop positions the Session reports). ``turn_policy``
    overrides the profile's end-of-turn policy for this session."""
    session = engine.new_session()
    if turn_policy is not None:
        session.update(turn_policy=turn_policy)
    eot = session.max_turn_wait_ms
    stream = np.concatenate([audio, np.zeros(int(ENGINE_RATE * (eot + 1000) / 1000), np.float32)])
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
            if isinstance(ev, events.SpeechStarted):
                starts[ev.turn_id] = ev.audio_start_ms * ENGINE_RATE // 1000
            elif isinstance(ev, events.SpeechStopped):
                start = max(0, starts.get(ev.turn_id, 0) - pre)
                stop = (ev.audio_end_ms + TRAILING_PAD_MS) * ENGINE_RATE // 1000
                turn(ev.turn_id).utterance = stream[start:stop].copy()
            elif isinstance(ev, events.TranscriptFinal):
                t = turn(ev.turn_id)
                t.transcript = ev.text
                exact = engine.asr.audio_for(ev.text) if isinstance(engine.asr, BenchASR) else None
                if exact is not None:
                    t.utterance = exact
            elif isinstance(ev, events.ResponseStarted):
                by_response[ev.response_id] = turn(ev.turn_id)
            elif isinstance(ev, events.ReplySegment) and ev.response_id in by_response:
                by_response[ev.response_id].chunks += 1
            elif isinstance(ev, events.ResponseDone) and ev.response_id in by_response:
                by_response[ev.response_id].reply_text = ev.text
            elif isinstance(ev, events.TurnMetricsEvent):
                t = by_response.get(ev.metrics.response_id or "")
                if t is not None:
                    t.metrics = ev.metrics.to_dict()
                    t.metrics["after_eot_ms"] = rounded(ms(ev.metrics.turn_end_ns, ev.metrics.first_audio_out_ns))
            elif isinstance(ev, events.ErrorEvent):
                turn(ev.turn_id).errors.append(f"{ev.stage or 'engine'}: {ev.message}")

    collector = asyncio.create_task(collect())
    try:
        await feed(session, stream, paced=paced)
    finally:
        await session.close()
        await collector
    return [t for t in turns.values() if t.metrics]


async def feed(session: Any, stream: np.ndarray, rate: int = ENGINE_RATE, paced: bool = True) -> None:
    """Push ``stream`` (at ``rate``) into ``session`` in 20 ms chunks: paced in real time like a
    microphone, or as fast as the Session takes them (each turn's work awaited before more audio
    goes in); then wait until the Session is idle."""
    step = rate * CHUNK_MS // 1000
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, start in enumerate(range(0, len(stream), step)):
        session.push_audio(stream[start: start + step], rate)
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
        "asr_ms": rounded(ms(t0, t1)), "llm_ms": rounded(ms(t1, t2)), "tts_ms": rounded(ms(t2, t3)),
        "after_eot_ms": rounded(ms(t0, t3)),
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
    return {"first_chunk": first, "asr_ms": rounded(asr), "llm_first_chunk_ms": rounded(llm), "tts_first_chunk_ms": rounded(tts),
            "total_ms": rounded((asr or 0) + (llm or 0) + (tts or 0))}


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
                    "cascade": {**cascade, "voice_to_voice_ms": rounded(
                        None if eot is None or cascade["after_eot_ms"] is None else eot + cascade["after_eot_ms"])},
                    "floor": floor,
                })
    return {
        "schema": "s2s.bench.latency/1",
        "machine": machine(),
        "profile": engine.profile.name,
        "engine": engine.describe(),
        "options": {"turns": turns, "paced": paced, "reply": engine.llm.reply,
                    "reply_tokens": engine.llm.reply_tokens, "max_tokens": engine.profile.llm.max_tokens,
                    "end_of_turn_silence_ms": engine.profile.vad.end_of_turn_silence_ms,
                    "turn": dataclasses.asdict(engine.profile.turn), "files": files},
        "summary": summarize(rows, min_sentences),
        "turns": rows,
    }


def summarize(rows: list[dict[str, Any]], min_sentences: int = 3) -> dict[str, Any]:
    """The report's summary of measured turns: distributions, the ratios, and the verdicts on the
    targets ((a)/(c) at most 1.15; (b)/(a) at least 3, judged only when replies had at least
    ``min_sentences`` chunks, else None). Pure: the rows are all it reads."""
    a = [r["streaming"].get("after_eot_ms") for r in rows]
    b = [r["cascade"]["after_eot_ms"] for r in rows]
    c = [r["floor"]["total_ms"] for r in rows]
    sa, sb, sc = dist(a), dist(b), dist(c)
    chunks = [r["reply_chunks"] for r in rows]
    ratio_ac = sa["p50"] / sc["p50"] if sa["p50"] and sc["p50"] else None
    ratio_ba = sb["p50"] / sa["p50"] if sb["p50"] and sa["p50"] else None
    sentences_p50 = percentile([float(x) for x in chunks], 50) or 0
    stage_keys = ("asr_ms", "llm_first_token_ms", "first_sentence_ms", "tts_ms", "out_ms")
    return {
        "streaming": {"after_eot_ms": sa,
                      "voice_to_voice_ms": dist([r["streaming"].get("voice_to_voice_ms") for r in rows]),
                      "eot_wait_ms": dist([r["streaming"].get("eot_wait_ms") for r in rows]),
                      "stages_ms": {k: dist([r["streaming"].get(k) for r in rows]) for k in stage_keys}},
        "cascade": {"after_eot_ms": sb,
                    "voice_to_voice_ms": dist([r["cascade"]["voice_to_voice_ms"] for r in rows]),
                    "stages_ms": {k: dist([r["cascade"][k] for r in rows]) for k in ("asr_ms", "llm_ms", "tts_ms")}},
        "floor": {"total_ms": sc,
                  "stages_ms": {k: dist([r["floor"][k] for r in rows])
                                for k in ("asr_ms", "llm_first_chunk_ms", "tts_first_chunk_ms")}},
        "ratios": {"streaming_over_floor": rounded(ratio_ac, 3), "cascade_over_streaming": rounded(ratio_ba, 3)},
        "reply_chunks_p50": sentences_p50,
        "multi_sentence": sentences_p50 >= min_sentences,
        "targets": {
            "streaming_over_floor_max": 1.15,
            "streaming_over_floor_met": None if ratio_ac is None else ratio_ac <= 1.15,
            "cascade_over_streaming_min": 3.0,
            "cascade_over_streaming_met": None if ratio_ba is None or sentences_p50 < min_sentences
            else ratio_ba >= 3.0,
        },
    }


CPU_LOAD_LIMIT_S = 4 * 3600  # a load process stops by itself after this long, whatever happens
_SPIN = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
parent, end = os.getppid(), time.monotonic() + float(sys.argv[1])
sys.stdout.write("spinning\\n")
sys.stdout.flush()
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


@contextlib.contextmanager
def cpu_load(n: int, limit_s: float = CPU_LOAD_LIMIT_S) -> Iterator[list[subprocess.Popen]]:
    """Keep ``n`` cores busy inside the ``with`` block: ``n`` processes spinning at normal
    priority, each running before the block starts (it said so on its stdout) and stopped
    (terminated, then killed, and reaped) when the block ends, however it ends. A process left
    behind anyway (the parent killed with SIGKILL) stops when it sees its parent gone, or after
    ``limit_s``. Yields the processes (none for ``n`` = 0)."""
    if n < 0:
        raise ConfigError(f"--cpu-load must be 0 or more busy cores, got {n}")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _SPIN, str(limit_s)], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, text=True))
        for p in procs:
            if p.stdout is None or p.stdout.readline().strip() != "spinning":
                raise S2SError(f"a --cpu-load process (pid {p.pid}) did not start (exit status {p.poll()})")
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS does not tell)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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


__all__ = ["CHUNK_MS", "StreamTurn", "bench_engine", "cascade_turn", "cpu_load", "floor_turn", "load_average",
           "run_latency", "stream_file", "summarize"]

"""One reply: the language model's tokens cut into sentences, each spoken as soon as it is whole.

:class:`ReplyMaker` is the response part of a :class:`~engine.session.Session`. It runs the
LLM in the engine's LLM worker (tokens come back to the event loop through a queue), cuts
the stream into sentences with :class:`~engine.sentences.SentenceChunker`, and hands each
sentence to TTS at once, so the first sentence is heard while the LLM still writes the
rest. What it makes goes out through one callback (``out(turn, event)``), which holds the
events of a held turn back; it knows nothing of history, barge-in or turns ending.

:class:`Reply` is the book-keeping of one response while it runs and while its audio
plays: what was said, what was sent, and how much of it the client has played.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.audio import resample
from engine.clock import now_ns
from engine.cpu import threads_for
from engine.events import ErrorEvent, ReplyAudio, ReplySegment, ReplyTextDelta, SessionEvent
from engine.metrics import TurnMetrics
from engine.sentences import SentenceChunker
from engine.stages.base import default_cpu_threads
from engine.text import speakable

if TYPE_CHECKING:
    from engine.config import SessionOptions
    from engine.engine import Engine
    from engine.session.turns import Turn

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting sentence is checked for its time limit while no token comes


@dataclass
class Reply:
    """Book-keeping of one response while it runs and while its audio plays."""

    id: str
    turn_id: str | None
    metrics: TurnMetrics
    cancel: threading.Event = field(default_factory=threading.Event)
    text: str = ""
    segments: list[tuple[str, int]] = field(default_factory=list)  # (text, samples) in order
    samples_out: int = 0
    first_out_ns: int | None = None
    task: asyncio.Task | None = None
    done: bool = False
    status: str = "in_progress"
    played_override_ms: int | None = None
    turn: Turn | None = None

    def audio_ms(self, rate: int) -> int:
        return int(1000 * self.samples_out / rate)

    def played_ms(self, rate: int, at_ns: int | None = None) -> int:
        """How much the client has played: what it said (truncate), else real time since the
        first chunk went out, at most what was sent."""
        if self.played_override_ms is not None:
            return min(self.played_override_ms, self.audio_ms(rate))
        if self.first_out_ns is None:
            return 0
        elapsed = ((at_ns or now_ns()) - self.first_out_ns) / 1e6
        return int(max(0.0, min(elapsed, self.audio_ms(rate))))

    def heard_text(self, played_samples: int) -> str:
        """Whole segments that were played, plus the played share of the one cut."""
        heard, left = [], played_samples
        for text, n in self.segments:
            if left >= n:
                heard.append(text)
                left -= n
            else:
                if n > 0 and left > 0:
                    words = text.split()
                    keep = int(len(words) * left / n)
                    if keep:
                        heard.append(" ".join(words[:keep]))
                break
        return " ".join(heard).strip()

    @property
    def held(self) -> bool:
        """Made for a turn whose end is not confirmed yet: its audio is not out."""
        return self.turn is not None and self.turn.held


Out = Callable[["Turn | None", SessionEvent], None]
TextEvidence = Callable[["Turn", "float | None", int], None]


@dataclass
class Made:
    """How :meth:`ReplyMaker.make` ended: ``error`` from the LLM, or how many sentences it spoke
    (pieces with nothing to say aloud, punctuation alone, are not spoken and not counted)."""

    error: BaseException | None
    sentences: int


class ReplyMaker:
    """LLM → sentences → TTS for the replies of one session (see the module docstring)."""

    def __init__(self, engine: Engine, options: SessionOptions, out: Out):
        self.engine = engine
        self.options = options  # the session's own copy: output rate and chunk size
        self.out = out

    async def make(self, r: Reply, messages: list, read_turn: bool = False,
                   on_text_evidence: TextEvidence | None = None) -> Made:
        """Write and speak the reply to ``messages``. ``read_turn``: the LLM first reads whether
        the (held) user turn is a finished sentence, for the end-of-turn policy, on the prefill
        the reply then reuses; ``on_text_evidence(turn, p, at_ns)`` gets its answer on the loop."""
        loop = asyncio.get_running_loop()
        eng, m = self.engine, r.metrics
        o = eng.profile.llm
        tokens: asyncio.Queue = asyncio.Queue()  # bounded by max_tokens
        turn = r.turn
        reported = threading.Event()

        def turn_end(p: float | None) -> None:
            reported.set()
            if turn is not None and on_text_evidence is not None:
                loop.call_soon_threadsafe(on_text_evidence, turn, p, now_ns())

        # One LLM thread per core that was idle at the pause (all configured when not known):
        # a thread without a core of its own stalls the others (engine.cpu).
        threads = None
        if m.cpu_idle_cores is not None:
            threads = m.llm_threads = threads_for(m.cpu_idle_cores, o.n_threads or default_cpu_threads())

        def generate() -> None:
            t0, n = time.perf_counter(), 0
            try:
                if not r.cancel.is_set():
                    it = (eng.llm.stream_turn(messages, o.max_tokens, r.cancel, turn_end, threads) if read_turn
                          else eng.llm.stream(messages, o.max_tokens, r.cancel, threads))
                    for text in it:
                        n += 1
                        loop.call_soon_threadsafe(tokens.put_nowait, (now_ns(), text))
                loop.call_soon_threadsafe(tokens.put_nowait, (now_ns(), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                loop.call_soon_threadsafe(tokens.put_nowait, (now_ns(), exc))
            finally:
                if read_turn and not reported.is_set():
                    turn_end(None)  # the policy must not wait for a signal that will not come
                m.llm_tokens, m.llm_seconds = n, time.perf_counter() - t0

        speak: asyncio.Queue = asyncio.Queue()  # bounded by the sentences of max_tokens
        tts_task = asyncio.create_task(self._speak(r, speak))
        llm_future = loop.run_in_executor(eng.llm_pool, generate)
        chunker = SentenceChunker(eng.profile.sentences)
        n_chunks = 0
        error: BaseException | None = None

        def say(chunks: list[str]) -> None:
            nonlocal n_chunks
            for chunk in chunks:
                if not speakable(chunk):
                    continue  # "...", "?!": a voice says nothing (espeak: 0.3 s of silence) or makes noise
                if n_chunks == 0:
                    m.first_sentence_ns = now_ns()
                n_chunks += 1
                speak.put_nowait(chunk)

        # One pending get() lives across the polls (cancelling a get() on a timeout could lose
        # a token that arrived at the same moment).
        getter: asyncio.Future = asyncio.ensure_future(tokens.get())
        try:
            while True:
                done, _ = await asyncio.wait({getter}, timeout=POLL_S)
                if not done:
                    say(chunker.poll(now_ns()))
                    continue
                t, item = getter.result()
                getter = asyncio.ensure_future(tokens.get())
                if item is None:
                    break
                if isinstance(item, BaseException):
                    error = item
                    break
                if m.llm_first_token_ns is None:
                    m.llm_first_token_ns = t
                r.text += item
                self.out(r.turn, ReplyTextDelta(r.id, item))
                t_now = now_ns()
                # a waiting chunk may be due (first_max_wait_ms): tokens can come faster than
                # the poll, so the timer is checked on every token too
                say(chunker.push(item, t_now) or chunker.poll(t_now))
            if error is None and not r.cancel.is_set():
                say(chunker.flush())
                if n_chunks == 0 and o.empty_reply:
                    # nothing a voice can say, after the backend's own retries: ask the user to
                    # say it again rather than stay silent (llm.empty_reply; "" reports llm_failed)
                    log.warning("%s: the language model wrote nothing to say aloud (%r): saying %r",
                                r.id, r.text.strip(), o.empty_reply)
                    fallback = (" " if r.text.strip() and not r.text[-1].isspace() else "") + o.empty_reply
                    r.text += fallback
                    self.out(r.turn, ReplyTextDelta(r.id, fallback))
                    say([o.empty_reply])
            speak.put_nowait(None)
            getter.cancel()
            await tts_task
        except asyncio.CancelledError:
            getter.cancel()
            r.cancel.set()
            tts_task.cancel()
            with contextlib.suppress(BaseException):
                await llm_future  # the LLM thread sees cancel and stops within a token
            raise
        try:
            await llm_future  # generate() reports its own errors through the queue
        except asyncio.CancelledError:
            r.cancel.set()  # cancelled here: the LLM thread stops within a token, and so do we
            raise
        except Exception:  # noqa: BLE001 - already handed over as ``error``
            pass
        return Made(error, n_chunks)

    async def _speak(self, r: Reply, speak: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        m, rate = r.metrics, self.options.output_sample_rate
        step = max(1, int(rate * self.options.audio_chunk_ms / 1000))
        index = 0
        while True:
            chunk = await speak.get()
            if chunk is None or r.cancel.is_set():
                return
            self.out(r.turn, ReplySegment(r.id, index, chunk))
            t0 = time.perf_counter()
            try:
                audio = await loop.run_in_executor(self.engine.tts_pool, self.synthesize, chunk)
            except Exception as exc:  # noqa: BLE001 - one bad sentence must not end the reply
                log.exception("TTS")
                self.out(r.turn, ErrorEvent(getattr(exc, "code", "tts_failed"),
                                            f"speech synthesis failed: {exc}", "tts", r.turn_id))
                index += 1
                continue
            m.tts_compute_s += time.perf_counter() - t0
            m.tts_audio_s += len(audio) / rate
            if r.cancel.is_set():
                return
            if m.tts_first_audio_ns is None:
                m.tts_first_audio_ns = now_ns()
            r.segments.append((chunk, len(audio)))
            for i in range(0, len(audio), step):
                piece = audio[i: i + step]
                if r.first_out_ns is None and not r.held:
                    r.first_out_ns = m.first_audio_out_ns = now_ns()
                r.samples_out += len(piece)
                self.out(r.turn, ReplyAudio(r.id, index, piece, rate))
            index += 1

    def synthesize(self, text: str) -> np.ndarray:
        """One sentence as audio at the session's output rate (in the TTS worker)."""
        tts = self.engine.tts
        return resample(tts.synthesize(text), tts.sample_rate, self.options.output_sample_rate)

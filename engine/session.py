"""A conversation with one user: audio chunks in, typed events out.

The in-process TUI and the WebSocket server both drive this object. Inside, three kinds of
asyncio task move small messages while the engine's worker pools do the model work:

- the input task runs VAD over incoming audio, detects speech start and end of turn,
  schedules partial transcripts, and handles barge-in;
- a turn task per user turn: final ASR, then the response;
- a response runs the LLM (tokens stream back from the LLM thread), cuts the stream into
  sentences and hands each to TTS at once, so the first sentence speaks while the LLM is
  still writing the rest.

Playback is modelled on the client's side: reply audio is handed out as soon as it is
synthesised, and a client is assumed to play it in real time from the first chunk on
(or tells the session where it really is with :meth:`Session.truncate`). Barge-in while
the reply is being played cancels what is left, reports how much was played, and the
history keeps only the heard part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from engine.audio import ENGINE_RATE, StreamResampler, resample, to_float32
from engine.clock import now_ns
from engine.errors import ResponseInProgress, S2SError, StageError
from engine.events import (
    ErrorEvent,
    Interruption,
    ReplyAudio,
    ReplySegment,
    ReplyTextDelta,
    ResponseDone,
    ResponseStarted,
    SessionEvent,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
    TurnMetricsEvent,
)
from engine.history import ChatHistory
from engine.metrics import TurnMetrics
from engine.sentences import SentenceChunker
from engine.stages.base import Transcript
from engine.turn import TurnDecision, TurnEvidence, TurnPolicy, text_usable
from engine.vad import TurnDetector, VADState

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)

_END = object()
TRAILING_PAD_MS = 200
MAX_BUFFER_S = 600  # the longest user turn kept (10 minutes)
_BULK = (ReplyAudio, ReplyTextDelta, TranscriptPartial)  # what a stalled consumer loses first


@dataclass
class _Response:
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
    turn: _Turn | None = None

    def audio_ms(self, rate: int) -> int:
        return int(1000 * self.samples_out / rate)

    def played_ms(self, rate: int, at_ns: int | None = None) -> int:
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


@dataclass
class _Turn:
    """One user turn. A *held* turn was started speculatively at a pause: its transcript,
    response and audio are produced but kept back until the end of turn is confirmed
    (released), or thrown away silently if the user goes on speaking (dropped)."""

    id: str
    end_sample: int
    metrics: TurnMetrics
    held: bool = False
    speculative: bool = False
    held_events: list = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    user_text: str | None = None
    response: _Response | None = None
    task: asyncio.Task | None = None
    evidence: TurnEvidence = field(default_factory=TurnEvidence)
    predict_task: asyncio.Task | None = None  # the audio turn model, for a held turn
    audio_clip: np.ndarray | None = None  # what the audio model will hear, until it runs
    known_text: str | None = None  # a partial transcript that already covers the turn's audio


@dataclass
class _Ended:
    """The last ended turn, kept while the user may still go on with it (``turn.resume_ms``)."""

    turn: _Turn
    start_sample: int  # where the turn's audio starts in the stream (pre-roll included)
    end_sample: int  # the sample after its last voiced frame
    speech_start_ns: int | None
    history_mark: int  # the history's position before the turn's user text joined it
    parts: int  # 1 + the parts it already continued


class Session:
    def __init__(self, engine: Engine, session_id: str):
        self.engine = engine
        self.id = session_id
        p = engine.profile
        self.options = replace(p.session)
        self.vad_options = replace(p.vad)
        self.turn_options = replace(p.turn)
        self._policy = TurnPolicy(self.turn_options, self.vad_options.end_of_turn_silence_ms)
        self.language: str | None = None if p.asr.language in ("", "auto") else p.asr.language
        self.instructions = p.llm.system_prompt
        self.history = ChatHistory()
        self.partials = engine.partials_enabled()
        # Both queues are bounded by policy rather than maxsize (put_nowait must not raise where
        # events are made): input past session.max_input_backlog_s of audio is refused in
        # push_audio, and a consumer session.max_events behind gets the reply cancelled and
        # bulk events dropped (_put).
        self._events: asyncio.Queue[SessionEvent | object] = asyncio.Queue()
        self._input: asyncio.Queue = asyncio.Queue()
        self._input_samples = 0  # audio samples queued for VAD
        self._overflowing = False
        self._resamplers: dict[int, StreamResampler] = {}
        self._detector = self._new_detector()
        self._vad_state = engine.vad.new_state()
        self._pending = np.zeros(0, np.float32)  # samples not yet in a full VAD frame
        self._frames_seen = 0
        self._buf = np.zeros(0, np.float32)  # recent input audio
        self._buf_start = 0  # stream sample index of _buf[0]
        self._turn_start: int | None = None
        self._speech_start_ns: int | None = None
        self._n_turns = 0
        self._n_responses = 0
        self._turn_id: str | None = None
        self._turn_tasks: set[asyncio.Task] = set()
        self._partial_task: asyncio.Task | None = None
        self._spec: _Turn | None = None  # a held turn started at a pause
        self._ended: _Ended | None = None  # the last ended turn, while the user may go on with it
        self._parts = 0  # earlier parts of the turn now being spoken (resumed turns)
        self._half_replies = 0  # replies to those parts whose audio had gone out
        self._last_partial: tuple[str, int, str] | None = None  # (turn id, audio end sample, text)
        self._last_partial_ns = 0
        self._response: _Response | None = None  # running, or last one while it may still play
        self._input_task: asyncio.Task | None = None
        self._closed = False
        self.started_ns = now_ns()

    # --- public API -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._input_task is None:
            self._input_task = asyncio.create_task(self._input_loop(), name=f"{self.id}-input")

    @property
    def output_sample_rate(self) -> int:
        return self.options.output_sample_rate

    def push_audio(self, samples: np.ndarray, sample_rate: int = ENGINE_RATE) -> None:
        """Queue a chunk of microphone audio (mono float32 or int16). Never blocks."""
        if self._closed:
            raise S2SError("session is closed")
        if not 8_000 <= int(sample_rate) <= 48_000:
            raise S2SError(f"input sample rate {sample_rate} Hz is outside 8-48 kHz")
        backlog = self.options.max_input_backlog_s
        if self._input_samples > backlog * ENGINE_RATE:
            raise S2SError(f"the engine is more than {backlog} s of audio behind the microphone: "
                           "this chunk was dropped")
        x = to_float32(samples)
        if sample_rate != ENGINE_RATE:
            rs = self._resamplers.get(sample_rate)
            if rs is None:
                rs = self._resamplers[sample_rate] = StreamResampler(sample_rate, ENGINE_RATE)
            x = rs.process(x)
        self._input_samples += len(x)
        self._input.put_nowait((x, now_ns()))

    async def input_processed(self) -> None:
        """Wait until every queued chunk went through VAD."""
        await self._input.join()

    def commit(self) -> str:
        """End the user's turn now with the buffered audio (manual turn detection)."""
        self._input.put_nowait(("commit", now_ns()))
        return f"turn_{self._n_turns + 1}"

    def clear_input(self) -> None:
        self._input.put_nowait(("clear", now_ns()))

    def add_user_text(self, text: str) -> str:
        """A typed user message: joins the history and emits its final transcript."""
        if not text.strip():
            raise S2SError("the message is empty")
        self._n_turns += 1
        turn_id = f"turn_{self._n_turns}"
        self._ended = None  # a typed message closes whatever the user was saying before
        self.history.add("user", text)
        self._emit(TranscriptFinal(turn_id, text.strip(), None))
        self._turn_id = turn_id
        return turn_id

    def create_response(self, metrics: TurnMetrics | None = None) -> str:
        """Respond to the history now. Raises S2SError if a response is running."""
        if self._closed:
            raise S2SError("session is closed")
        if self._response is not None and not self._response.done:
            raise ResponseInProgress(f"a response is already in progress ({self._response.id})")
        if not any(m["role"] == "user" for m in self.history.messages):
            raise S2SError("nothing to respond to: the conversation has no user message")
        if metrics is None:
            t = now_ns()
            metrics = TurnMetrics(turn_id=self._turn_id, turn_end_ns=t, asr_final_ns=t)
        return self._start_response(metrics)

    def cancel_response(self) -> bool:
        """Cancel the running response (or the playback of the last one)."""
        return self._interrupt(barge_in=False)

    def truncate(self, response_id: str, played_ms: int) -> None:
        """The client says how much of a response it really played; fix the history."""
        r = self._response
        if r is None or r.id != response_id:
            raise S2SError(f"unknown or old response {response_id!r}")
        r.played_override_ms = max(0, int(played_ms))
        if r.done:
            self.history.replace_last_assistant(r.heard_text(self._samples(r.played_ms(self.output_sample_rate))))

    def update(self, *, turn_detection: bool | None = None, auto_response: bool | None = None,
               instructions: str | None = None, language: str | None = None,
               eot_silence_ms: int | None = None, turn_policy: str | None = None,
               turn_max_silence_ms: int | None = None) -> None:
        if turn_detection is not None:
            self.options.turn_detection = turn_detection
        if auto_response is not None:
            self.options.auto_response = auto_response
        if instructions is not None:
            self.instructions = instructions
        if language is not None:
            self.language = None if language in ("", "auto") else language
        if (turn_policy is not None and turn_policy != self._policy.policy) or turn_max_silence_ms is not None:
            from engine.config import check_turn

            trial = replace(self.turn_options, policy=turn_policy or self.turn_options.policy)
            if turn_max_silence_ms is not None:
                trial.max_silence_ms = int(turn_max_silence_ms)
            check_turn(trial, self.vad_options)
            if TurnPolicy(trial, 0).needs_audio and self.engine.turn_model is None:
                raise S2SError(f"turn policy {turn_policy!r} needs the audio turn model, which this engine did not "
                               "load (start it with --set turn.policy=combined)")
            self.turn_options = trial
        if eot_silence_ms is not None:
            self.vad_options.end_of_turn_silence_ms = int(eot_silence_ms)
        if turn_policy is not None or eot_silence_ms is not None or turn_max_silence_ms is not None:
            self._policy = TurnPolicy(self.turn_options, self.vad_options.end_of_turn_silence_ms)
            self._detector = self._new_detector()

    @property
    def turn_policy(self) -> str:
        return self._policy.policy

    @property
    def max_turn_wait_ms(self) -> int:
        """The longest silence before a turn ends, whatever the evidence."""
        return self._policy.max_wait_ms

    def _new_detector(self) -> TurnDetector:
        """The VAD state machine for the policy: it ends the turn at the policy's longest wait
        and reports the first short silence, where the turn runs speculatively and the
        policy's evidence is gathered (adaptive policies always run it there)."""
        pol, spec = self._policy, self.vad_options.speculative_asr_ms
        pause = (min(spec, pol.earliest_ms) if spec > 0 else pol.earliest_ms) if pol.adaptive else spec
        return TurnDetector(self.vad_options, self.engine.vad.frame_samples, end_ms=pol.max_wait_ms, pause_ms=pause)

    def reset(self) -> None:
        """Forget the conversation: cancel any reply and any turn still being transcribed."""
        self._drop_spec()
        self._ended = None
        self._interrupt(barge_in=False)
        for task in list(self._turn_tasks):
            task.cancel()
        if self._partial_task is not None:
            self._partial_task.cancel()
        self.history.clear()

    async def stream(self) -> AsyncIterator[SessionEvent]:
        while True:
            ev = await self._events.get()
            if ev is _END:
                return
            yield ev  # type: ignore[misc]

    def next_event_nowait(self) -> SessionEvent | None:
        try:
            ev = self._events.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return None if ev is _END else ev  # type: ignore[return-value]

    @property
    def busy(self) -> bool:
        """A turn or response is being worked on (not counting playback)."""
        return bool(self._turn_tasks) or (self._response is not None and not self._response.done)

    async def wait_idle(self) -> None:
        """Wait until no turn or response is being worked on (bound it with asyncio.timeout)."""
        while self.busy:
            tasks = set(self._turn_tasks)
            if self._response is not None and self._response.task is not None and not self._response.done:
                tasks.add(self._response.task)
            if tasks:
                await asyncio.wait(tasks)
            else:
                await asyncio.sleep(0.005)

    @property
    def state(self) -> str:
        """listening | user_speaking | thinking | speaking."""
        if self._detector.in_speech:
            return "user_speaking"
        r = self._response
        rate = self.output_sample_rate
        if (r is not None and r.first_out_ns is not None and r.status != "cancelled"
                and r.played_override_ms is None and (not r.done or r.played_ms(rate) < r.audio_ms(rate))):
            return "speaking"
        if self.busy:
            return "thinking"
        return "listening"

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_spec()
        self._interrupt(barge_in=False)
        tasks = [t for t in (self._input_task, self._partial_task, *self._turn_tasks) if t is not None]
        if self._response is not None and self._response.task is not None:
            tasks.append(self._response.task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.engine.forget(self)
        self._events.put_nowait(_END)

    # --- input: VAD, turns, partials ------------------------------------------------------

    def _emit(self, ev: SessionEvent) -> None:
        if self._closed and not isinstance(ev, ResponseDone | Interruption):
            return
        self._put(ev)

    def _put(self, ev: SessionEvent) -> None:
        """Queue an event for the consumer. A consumer ``session.max_events`` behind (stalled:
        a frozen client, a full socket) does not grow memory without bound: the running reply
        is cancelled once, with an error saying why, and bulk events (audio, text deltas,
        partials) are dropped until it has caught up to half; control events always go."""
        n, limit = self._events.qsize(), self.options.max_events
        if n >= limit and not self._overflowing:
            self._overflowing = True
            log.warning("%s: the event consumer is %d events behind; cancelling the reply", self.id, n)
            self._events.put_nowait(ErrorEvent("consumer_too_slow", f"the client is {n} events behind: "
                                               "the reply was cancelled and its audio dropped", "session"))
            self._interrupt(barge_in=False)
        elif self._overflowing and n <= limit // 2:
            self._overflowing = False
        if self._overflowing and isinstance(ev, _BULK):
            return
        self._events.put_nowait(ev)

    async def _input_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._input.get()
            items = [item]
            while not self._input.empty():  # batch what is already waiting
                items.append(self._input.get_nowait())
            try:
                audio, arrivals = [], []
                for data, t in items:
                    if isinstance(data, str):
                        await self._run_vad(loop, audio, arrivals)
                        audio, arrivals = [], []
                        self._control(data, t)
                    else:
                        audio.append(data)
                        arrivals.append((len(data), t))
                await self._run_vad(loop, audio, arrivals)
            except Exception as exc:  # noqa: BLE001 - the input task must survive anything
                log.exception("input loop")
                self._emit(ErrorEvent("vad_failed", f"voice activity detection failed: {exc}", "vad"))
            finally:
                for data, _ in items:
                    if not isinstance(data, str):
                        self._input_samples -= len(data)
                    self._input.task_done()

    async def _run_vad(self, loop: asyncio.AbstractEventLoop, audio: list[np.ndarray],
                       arrivals: list[tuple[int, int]]) -> None:
        if not audio:
            return
        chunk = np.concatenate(audio)
        self._buf = np.concatenate([self._buf, chunk])
        if len(self._buf) > MAX_BUFFER_S * ENGINE_RATE:  # bound memory: keep the newest audio
            drop = len(self._buf) - MAX_BUFFER_S * ENGINE_RATE
            self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
            if self._turn_start is not None:
                self._turn_start = max(self._turn_start, self._buf_start)
        if not self.options.turn_detection:
            return
        fs = self.engine.vad.frame_samples
        data = np.concatenate([self._pending, chunk])
        n = len(data) // fs
        self._pending = data[n * fs:]
        if n == 0:
            return
        frames = data[: n * fs].reshape(n, fs)
        # arrival time of each frame = arrival of the chunk that completed it
        ends = np.cumsum([a for a, _ in arrivals]) + (len(data) - len(chunk))
        times = [t for _, t in arrivals]
        frame_arrivals = [times[min(int(np.searchsorted(ends, (i + 1) * fs)), len(times) - 1)] for i in range(n)]
        probs = await loop.run_in_executor(self.engine.vad_pool, self.engine.vad.probabilities, self._vad_state, frames)
        for i, prob in enumerate(probs):
            silence = self._detector.eot_frames * self._detector.frame_ms
            ev = self._detector.update(self._frames_seen + i, float(prob), frame_arrivals[i])
            if ev is None:
                if self._policy.adaptive and self._detector.state is VADState.STOPPING:
                    self._check_turn_end()  # one more frame of silence: enough for the evidence?
                continue
            if ev.kind == "start":
                self._on_speech_start(ev.sample, ev.arrival_ns)
            elif ev.kind == "pause":
                self._on_pause(ev.sample)
            elif ev.kind == "resume":
                self._drop_spec()
            else:  # the longest wait: the policy's fixed silence, or its maximum
                spec = self._spec
                decision = self._policy.decide(silence, spec.evidence if spec else TurnEvidence(text_usable=False))
                self._on_turn_end(ev.sample, ev.arrival_ns, now_ns(),
                                  decision or TurnDecision("max-silence", None, silence))
        self._frames_seen += n
        if not self._detector.in_speech and self._detector.state.value == "quiet":
            self._trim_buffer()
        elif self.partials and self._detector.state is VADState.SPEAKING:
            self._maybe_partial()  # not in a silence: the speculative/final decode may start there

    def _trim_buffer(self) -> None:
        keep = int(ENGINE_RATE * self.vad_options.pre_roll_ms / 1000)
        e = self._ended
        if e is not None:
            if self._buf_start + len(self._buf) - e.end_sample <= self._resume_samples():
                keep = max(keep, self._buf_start + len(self._buf) - e.start_sample)  # the user may go on
            else:
                self._ended = None
        if len(self._buf) > keep and self._turn_start is None:
            drop = len(self._buf) - keep
            self._buf = self._buf[drop:]
            self._buf_start += drop

    def _control(self, what: str, t: int) -> None:
        if what == "clear":
            self._buf_start += len(self._buf)
            self._buf = np.zeros(0, np.float32)
            self._turn_start = None
            self._ended = None
            self._detector.reset()
        elif what == "commit":
            audio = self._buf if self._turn_start is None else self._buf[self._turn_start - self._buf_start:]
            if len(audio) < ENGINE_RATE // 10:
                self._emit(ErrorEvent("input_audio_buffer_commit_empty",
                                      "the input audio buffer holds less than 100 ms of audio", "vad"))
                return
            if self._turn_start is None:
                self._turn_id = f"turn_{self._n_turns + 1}"
                self._n_turns += 1
            metrics = TurnMetrics(turn_id=self._turn_id, speech_start_ns=self._speech_start_ns or t,
                                  speech_end_ns=t, turn_end_ns=t, turn_policy="commit")
            self._ended = None
            self._begin_turn(self._turn_id or "turn_?", audio.copy(), metrics)
            self._buf_start += len(self._buf)  # a commit empties the input buffer
            self._buf = np.zeros(0, np.float32)
            self._detector.reset()

    def _on_speech_start(self, sample: int, arrival_ns: int) -> None:
        self._last_partial_ns = now_ns()
        if self._resumable(sample):
            self._resume(sample)
            return
        self._ended = None
        self._parts = self._half_replies = 0
        self._n_turns += 1
        self._turn_id = f"turn_{self._n_turns}"
        pre = int(ENGINE_RATE * self.vad_options.pre_roll_ms / 1000)
        self._turn_start = max(self._buf_start, sample - pre)
        self._speech_start_ns = arrival_ns
        self._emit(SpeechStarted(self._turn_id, int(1000 * sample / ENGINE_RATE)))
        if self.options.barge_in:
            self._interrupt(barge_in=True)

    def _resume_samples(self) -> int:
        return int(ENGINE_RATE * self.turn_options.resume_ms / 1000)

    def _resumable(self, sample: int) -> bool:
        """Does speech starting at ``sample`` go on with the last ended turn? Yes while it
        starts within ``turn.resume_ms`` of that turn's end of speech and the reply to it is
        still being made or played (once the agent has finished speaking, it is a new turn)."""
        e = self._ended
        if (e is None or not self.turn_options.resume_ms or not self.options.turn_detection
                or not self.options.barge_in):
            return False
        if sample - e.end_sample > self._resume_samples() or e.start_sample < self._buf_start:
            return False
        r = e.turn.response
        if r is None or not r.done:
            return True
        rate = self.output_sample_rate
        return r.status != "cancelled" and r.played_ms(rate) < r.audio_ms(rate)

    def _resume(self, sample: int) -> None:
        """The user went on after their turn was ended: cancel the reply to the first part,
        take both out of the history, and carry on with the same turn from its first sample."""
        e, self._ended = self._ended, None
        assert e is not None
        turn, r = e.turn, e.turn.response
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()  # still transcribing (or holding) the first part
        half = r is not None and r.first_out_ns is not None and r.status != "cancelled"
        self._emit(SpeechStarted(turn.id, int(1000 * sample / ENGINE_RATE), resumed=True))
        if r is not None and r is self._response:
            self._interrupt(barge_in=True)
        elif r is not None and not r.done:
            r.cancel.set()
            if r.task is not None:
                r.task.cancel()
        self.history.drop_since(e.history_mark)  # the half utterance, and what was heard of its reply
        self._turn_id = turn.id
        self._turn_start = e.start_sample
        self._speech_start_ns = e.speech_start_ns
        self._parts = e.parts
        self._half_replies += int(half)

    def _turn_audio(self, end_sample: int) -> np.ndarray:
        start = (self._turn_start if self._turn_start is not None else self._buf_start) - self._buf_start
        stop = end_sample + int(ENGINE_RATE * TRAILING_PAD_MS / 1000) - self._buf_start
        return self._buf[max(0, start): max(0, stop)].copy()

    def _on_pause(self, end_sample: int) -> None:
        """The first short silence: run the turn now, held back, in case the pause is its end,
        and gather the end-of-turn policy's evidence (the audio model, the transcript)."""
        turn = self._speculate(end_sample)
        if not self._policy.needs_text:
            turn.evidence.text_usable = False
        turn.evidence.text_expected = self.engine.text_evidence.get(self.language or "", False)
        if self._policy.needs_audio and self.engine.turn_model is not None:
            start = self._turn_start if self._turn_start is not None else self._buf_start
            turn.audio_clip = self._buf[max(0, start - self._buf_start):].copy()
            self._maybe_predict(turn)  # now, or once the transcript leaves the answer open
        else:
            turn.evidence.audio_usable = False

    def _maybe_predict(self, turn: _Turn) -> None:
        """Start the audio turn model on the held turn's audio if the policy wants it now."""
        if turn.audio_clip is None or turn.predict_task is not None or self._spec is not turn:
            return
        if not self._policy.audio_needed(turn.evidence):
            return
        audio, turn.audio_clip = turn.audio_clip, None
        turn.predict_task = asyncio.create_task(self._predict_turn(turn, audio),
                                                name=f"{self.id}-{turn.id}-turn-model")

    def _speculate(self, end_sample: int) -> _Turn:
        self._drop_spec()
        metrics = TurnMetrics(turn_id=self._turn_id, speech_start_ns=self._speech_start_ns,
                              spec_start_ns=now_ns(), resumed=self._parts, half_replies=self._half_replies)
        turn = _Turn(self._turn_id or "turn_?", end_sample, metrics, held=True, speculative=True)
        lp = self._last_partial
        if lp is not None and lp[0] == turn.id and lp[1] >= end_sample:
            turn.known_text = lp[2]  # the latest partial already heard all of it
        turn.task = asyncio.create_task(self._run_turn(turn, self._turn_audio(end_sample)),
                                        name=f"{self.id}-{turn.id}-early")
        self._spec = turn
        return turn

    async def _predict_turn(self, turn: _Turn, audio: np.ndarray) -> None:
        loop = asyncio.get_running_loop()
        m, model = turn.metrics, self.engine.turn_model

        def predict() -> float:
            # stamped in the worker: a turn that ended without it (turn.deadline_ms) cancels this
            # task, but the model runs to its end, and the metrics show how late it came
            t0 = time.perf_counter()
            p = model.predict(audio)
            m.turn_audio_ms, m.turn_audio_ns = (time.perf_counter() - t0) * 1000, now_ns()
            m.turn_audio_probability = p
            return p

        try:
            p = await loop.run_in_executor(self.engine.turn_pool, predict)
        except Exception as exc:  # noqa: BLE001 - without the audio model, the transcript decides
            log.exception("turn model")
            self._emit(ErrorEvent(getattr(exc, "code", "turn_failed"), f"the turn model failed: {exc}", "turn",
                                  turn.id))
            p = None
        if self._spec is turn:
            turn.evidence.audio, turn.evidence.audio_usable = p, p is not None
            self._check_turn_end()

    def _on_text_evidence(self, turn: _Turn, p: float | None, at_ns: int | None = None) -> None:
        """The language model read the speculative transcript (on the event loop; ``at_ns``:
        when it did, in the LLM's thread)."""
        turn.metrics.turn_text_probability = p
        if p is None:
            turn.evidence.text_usable = False
        else:
            turn.evidence.text = p
            turn.metrics.turn_text_ns = at_ns or now_ns()
        if self._spec is turn:
            self._maybe_predict(turn)
            self._check_turn_end()

    def _check_turn_end(self) -> None:
        """Ask the policy whether the pause so far, with the evidence in, ends the turn."""
        if self._detector.state is not VADState.STOPPING:
            return
        spec = self._spec
        decision = self._policy.decide(self._detector.silence_ms,
                                       spec.evidence if spec is not None else TurnEvidence(text_usable=False))
        if decision is None:
            return
        ev = self._detector.end_now()
        if ev is not None:
            self._on_turn_end(ev.sample, ev.arrival_ns, now_ns(), decision)

    def _drop_spec(self) -> None:
        """The user went on speaking: throw the held turn away (it emitted nothing)."""
        turn, self._spec = self._spec, None
        if turn is None:
            return
        if turn.predict_task is not None:
            turn.predict_task.cancel()
        if turn.response is not None:
            turn.response.cancel.set()
            if turn.response.task is not None:
                turn.response.task.cancel()
        if turn.task is not None:
            turn.task.cancel()

    def _release(self, turn: _Turn) -> None:
        """The end of turn is confirmed: what the held turn produced goes out now."""
        turn.held = False
        if turn.user_text:
            self.history.add("user", turn.user_text)
        if turn.response is not None:
            self._response = turn.response
        t = now_ns()
        for ev in turn.held_events:
            if isinstance(ev, ReplyAudio) and turn.response is not None and turn.response.first_out_ns is None:
                turn.response.first_out_ns = turn.metrics.first_audio_out_ns = t
            self._put(ev)
        turn.held_events.clear()
        turn.released.set()

    def _emit_for(self, turn: _Turn | None, ev: SessionEvent) -> None:
        if turn is not None and turn.held:
            turn.held_events.append(ev)
        else:
            self._emit(ev)

    def _on_turn_end(self, end_sample: int, speech_end_ns: int, decided_ns: int, decision: TurnDecision) -> None:
        turn_id = self._turn_id or "turn_?"
        self._emit(SpeechStopped(turn_id, int(1000 * end_sample / ENGINE_RATE)))
        start = self._turn_start if self._turn_start is not None else self._buf_start
        ended = _Ended(_Turn(turn_id, end_sample, TurnMetrics()), start, end_sample, self._speech_start_ns,
                       self.history.mark(), self._parts + 1)
        self._ended = ended if self.turn_options.resume_ms > 0 else None  # before the buffer is trimmed
        spec = self._spec
        if spec is not None and spec.id == turn_id and spec.end_sample == end_sample and spec.task is not None:
            self._spec = None
            if spec.predict_task is not None and not spec.predict_task.done():
                spec.predict_task.cancel()  # decided without it (a fixed or maximum wait, the deadline)
            spec.metrics.speech_end_ns, spec.metrics.turn_end_ns = speech_end_ns, decided_ns
            spec.metrics.speech_start_ns = spec.metrics.speech_start_ns or self._speech_start_ns
            self._record_decision(spec.metrics, decision)
            self._start_turn_bookkeeping()
            self._turn_tasks.add(spec.task)
            spec.task.add_done_callback(self._turn_tasks.discard)
            ended.turn = spec
            self._release(spec)
        else:
            self._drop_spec()
            metrics = TurnMetrics(turn_id=turn_id, speech_start_ns=self._speech_start_ns,
                                  speech_end_ns=speech_end_ns, turn_end_ns=decided_ns,
                                  resumed=self._parts, half_replies=self._half_replies)
            self._record_decision(metrics, decision)
            ended.turn = self._begin_turn(turn_id, self._turn_audio(end_sample), metrics, end_sample)

    def _record_decision(self, m: TurnMetrics, d: TurnDecision) -> None:
        m.turn_policy = d.by
        m.turn_probability = d.probability
        m.turn_missing = ",".join(d.missing) or None

    def _start_turn_bookkeeping(self) -> None:
        self._turn_start = None
        self._speech_start_ns = None
        self._partial_task = None  # a partial's result is dropped: the final one is here
        self._last_partial = None
        self._trim_buffer()

    def _begin_turn(self, turn_id: str, audio: np.ndarray, metrics: TurnMetrics, end_sample: int = 0) -> _Turn:
        self._drop_spec()
        turn = _Turn(turn_id, end_sample, metrics)
        lp = self._last_partial
        if end_sample and lp is not None and lp[0] == turn_id and lp[1] >= end_sample:
            turn.known_text = lp[2]
        self._start_turn_bookkeeping()
        turn.task = asyncio.create_task(self._run_turn(turn, audio), name=f"{self.id}-{turn_id}")
        self._turn_tasks.add(turn.task)
        turn.task.add_done_callback(self._turn_tasks.discard)
        return turn

    def _maybe_partial(self) -> None:
        if self._turn_start is None or (self._partial_task is not None and not self._partial_task.done()):
            return
        if self.engine.asr_turns_in_flight:
            return  # a turn's decode (this session's or another's) is running: it goes first
        t = now_ns()
        if (t - self._last_partial_ns) / 1e6 < self.engine.profile.asr.partial_interval_ms:
            return
        self._last_partial_ns = t
        audio = self._buf[self._turn_start - self._buf_start:].copy()
        end = self._buf_start + len(self._buf)
        self._partial_task = asyncio.create_task(self._partial(self._turn_id, audio, end))

    async def _partial(self, turn_id: str | None, audio: np.ndarray, end_sample: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            tr = await loop.run_in_executor(self.engine.asr_pool, self.engine.asr.transcribe, audio, self.language)
        except Exception:  # noqa: BLE001 - a failed partial is not worth a user-facing error
            log.exception("partial transcript")
            return
        if turn_id == self._turn_id and self._turn_start is not None and tr.text:
            self._last_partial = (turn_id, end_sample, tr.text.strip())
            self._emit(TranscriptPartial(turn_id, tr.text))

    # --- a turn: final ASR, then the response -------------------------------------------

    async def _run_turn(self, turn: _Turn, audio: np.ndarray) -> None:
        loop = asyncio.get_running_loop()
        metrics = turn.metrics
        metrics.asr_audio_s = len(audio) / ENGINE_RATE
        try:
            t0 = time.perf_counter()
            if turn.known_text:  # a partial transcript already covers all of this audio
                tr = Transcript(turn.known_text, self.language)
                metrics.extra["asr_reused_partial"] = 1.0
            else:
                self.engine.asr_turns_in_flight += 1
                try:
                    tr = await loop.run_in_executor(self.engine.asr_pool, self.engine.asr.transcribe, audio,
                                                    self.language)
                finally:
                    self.engine.asr_turns_in_flight -= 1
            metrics.extra["asr_decode_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        except Exception as exc:  # noqa: BLE001 - report, keep the session alive
            log.exception("ASR")
            if turn.held:
                self._no_text_evidence(turn)
                await turn.released.wait()
            self._emit(ErrorEvent(getattr(exc, "code", "asr_failed"), f"speech recognition failed: {exc}",
                                  "asr", turn.id))
            return
        metrics.asr_final_ns = now_ns()
        metrics.script_ok, metrics.asr_stop = tr.script_ok, tr.stop
        if turn.speculative:
            metrics.extra["asr_speculative"] = 1.0
        text = tr.text.strip()
        self._emit_for(turn, TranscriptFinal(turn.id, text, tr.language, tr.script_ok))
        usable = text_usable(text, self.language)
        if text:  # what the next pause may expect of the ASR in this language (audio_when "auto")
            self.engine.text_evidence[self.language or ""] = usable
        if not usable:
            self._no_text_evidence(turn)  # noise, or a transcript the ASR did not understand
        if not text:
            return  # noise or a cough: nothing to answer
        if turn.held:
            turn.user_text = text  # joins the history when the turn is released
        else:
            self.history.add("user", text)
            if self._turn_id != turn.id or self._detector.in_speech:
                return  # the user is speaking again: their next turn continues this one
        if self.options.auto_response and (self._response is None or self._response.done):
            self._start_response(metrics, turn)
        else:
            self._no_text_evidence(turn)

    def _no_text_evidence(self, turn: _Turn) -> None:
        """The held turn will not give the policy a text signal: stop waiting for one."""
        if turn.held and turn.evidence.text_usable and turn.evidence.text is None:
            turn.evidence.text_usable = False
            if self._spec is turn:
                self._maybe_predict(turn)
                self._check_turn_end()

    def _start_response(self, metrics: TurnMetrics, turn: _Turn | None = None) -> str:
        self._n_responses += 1
        r = _Response(id=f"resp_{self._n_responses}", turn_id=metrics.turn_id, metrics=metrics, turn=turn)
        metrics.response_id = r.id
        o = self.engine.profile.llm
        history = self.history
        if turn is not None and turn.held and turn.user_text:
            history = ChatHistory(list(self.history.messages))
            history.add("user", turn.user_text)
        messages = history.build(self.instructions, self.engine.llm.count_tokens,
                                 self.engine.llm.context_size - o.max_tokens, o.history_turns)
        if turn is not None:
            turn.response = r
        if turn is None or not turn.held:
            self._response = r
        self._emit_for(turn, ResponseStarted(r.id, r.turn_id))
        read_turn = turn is not None and turn.held and turn.evidence.text_usable and turn.evidence.text is None
        r.task = asyncio.create_task(self._run_response(r, messages, read_turn), name=f"{self.id}-{r.id}")
        return r.id

    async def _run_response(self, r: _Response, messages: list, read_turn: bool = False) -> None:
        """``read_turn``: the LLM first reads whether the (held) user turn is a finished
        sentence, for the end-of-turn policy, on the prefill the reply then reuses."""
        loop = asyncio.get_running_loop()
        eng, m = self.engine, r.metrics
        o = eng.profile.llm
        tokens: asyncio.Queue = asyncio.Queue()
        turn = r.turn
        reported = threading.Event()

        def turn_end(p: float | None) -> None:
            reported.set()
            if turn is not None:
                loop.call_soon_threadsafe(self._on_text_evidence, turn, p, now_ns())

        def generate() -> None:
            t0, n = time.perf_counter(), 0
            try:
                if not r.cancel.is_set():
                    it = (eng.llm.stream_turn(messages, o.max_tokens, r.cancel, turn_end) if read_turn
                          else eng.llm.stream(messages, o.max_tokens, r.cancel))
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

        speak: asyncio.Queue = asyncio.Queue()
        tts_task = asyncio.create_task(self._speak(r, speak))
        llm_future = loop.run_in_executor(eng.llm_pool, generate)
        chunker = SentenceChunker(eng.profile.sentences)
        n_chunks = 0
        error: BaseException | None = None
        # One pending get() lives across the 50 ms polls (cancelling a get() on a timeout
        # could lose a token that arrived at the same moment).
        getter: asyncio.Future = asyncio.ensure_future(tokens.get())
        try:
            while True:
                done, _ = await asyncio.wait({getter}, timeout=0.05)
                if not done:
                    ready = chunker.poll(now_ns())
                else:
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
                    self._emit_for(r.turn, ReplyTextDelta(r.id, item))
                    t_now = now_ns()
                    # a waiting chunk may be due (first_max_wait_ms): tokens can come faster than
                    # the 50 ms poll, so the timer is checked on every token too
                    ready = chunker.push(item, t_now) or chunker.poll(t_now)
                for chunk in ready:
                    if n_chunks == 0:
                        m.first_sentence_ns = now_ns()
                    n_chunks += 1
                    speak.put_nowait(chunk)
            if error is None and not r.cancel.is_set():
                for chunk in chunker.flush():
                    if n_chunks == 0:
                        m.first_sentence_ns = now_ns()
                    n_chunks += 1
                    speak.put_nowait(chunk)
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
        if r.status == "cancelled":
            return
        if error is not None or (r.text.strip() == "" and n_chunks == 0):
            msg = f"the language model failed: {error}" if error else "the language model returned an empty reply"
            await self._released(r)
            self._emit(ErrorEvent(getattr(error, "code", "llm_failed"), msg, "llm", r.turn_id))
            self._finish(r, "failed")
            return
        await self._released(r)
        self._finish(r, "completed")

    async def _released(self, r: _Response) -> None:
        """A held response finishes only once its turn is confirmed (a dropped turn cancels
        this task, so the wait cannot outlive it)."""
        if r.turn is not None and r.turn.held:
            await r.turn.released.wait()

    async def _speak(self, r: _Response, speak: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        eng, m, rate = self.engine, r.metrics, self.output_sample_rate
        step = max(1, int(rate * self.options.audio_chunk_ms / 1000))
        index = 0
        while True:
            chunk = await speak.get()
            if chunk is None or r.cancel.is_set():
                return
            self._emit_for(r.turn, ReplySegment(r.id, index, chunk))
            t0 = time.perf_counter()
            try:
                audio = await loop.run_in_executor(eng.tts_pool, self._synthesize, chunk)
            except Exception as exc:  # noqa: BLE001 - one bad sentence must not end the reply
                log.exception("TTS")
                self._emit_for(r.turn, ErrorEvent(getattr(exc, "code", "tts_failed"),
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
                held = r.turn is not None and r.turn.held
                if r.first_out_ns is None and not held:
                    r.first_out_ns = m.first_audio_out_ns = now_ns()
                r.samples_out += len(piece)
                self._emit_for(r.turn, ReplyAudio(r.id, index, piece, rate))
            index += 1

    def _synthesize(self, text: str) -> np.ndarray:
        tts = self.engine.tts
        audio = tts.synthesize(text)
        return resample(audio, tts.sample_rate, self.output_sample_rate)

    def _finish(self, r: _Response, status: str) -> None:
        if r.done:
            return
        r.done, r.status = True, status
        rate = self.output_sample_rate
        if status == "completed":
            self.history.add("assistant", r.text)
        elif status == "cancelled":
            heard = r.heard_text(self._samples(r.played_ms(rate)))
            self.history.add("assistant", heard)
        played = r.played_ms(rate) if status == "cancelled" else r.audio_ms(rate)
        heard_text = r.heard_text(self._samples(played)) if status == "cancelled" else r.text.strip()
        self._emit(ResponseDone(r.id, status, r.text.strip(), heard_text, r.audio_ms(rate), played))
        r.metrics.interrupted = status == "cancelled"
        gpu = self.engine.gpu_memory_cached()  # measuring may run nvidia-smi: never on the loop
        r.metrics.gpu_mem_used_mb, r.metrics.gpu_mem_total_mb = gpu["used_mb"], gpu["total_mb"]
        self.engine.refresh_gpu_memory()  # fresh for next time, in the engine's own worker
        self._emit(TurnMetricsEvent(r.metrics))

    def _samples(self, ms: int) -> int:
        return int(ms * self.output_sample_rate / 1000)

    def _interrupt(self, barge_in: bool) -> bool:
        """Cancel the running response, or cut the playback of the last one."""
        r = self._response
        if r is None:
            return False
        rate = self.output_sample_rate
        t = now_ns()
        if not r.done:
            r.cancel.set()
            played = r.played_ms(rate, t)
            if barge_in:
                self._emit(Interruption(r.id, played, r.heard_text(self._samples(played))))
            r.status = "cancelled"
            if r.task is not None:
                r.task.cancel()
            r.played_override_ms = played
            r.done = False
            self._finish(r, "cancelled")
            return True
        # finished generating, but the client may still be playing it
        played = r.played_ms(rate, t)
        if r.first_out_ns is not None and played < r.audio_ms(rate) and r.status == "completed":
            r.played_override_ms = played
            heard = r.heard_text(self._samples(played))
            if barge_in:
                self._emit(Interruption(r.id, played, heard))
            self.history.replace_last_assistant(heard)
            r.status = "cancelled"
            r.metrics.interrupted = True
            return True
        return False


__all__ = ["Session", "StageError"]

"""A conversation with one user: audio chunks in, typed events out.

The in-process TUI and the WebSocket server both drive :class:`Session`. It is the
coordinator: the turn flow reads top-down here (speech starts, a pause, the end of turn,
a resumed turn), and each job is a part of its own in this package:

- ``input``: the microphone audio, resampled once to 16 kHz, bounded, cut into VAD frames;
- ``asr``: the final transcript of a turn, and partial ones on the way;
- ``eot``: the turn held at a pause, and the evidence the end-of-turn policy decides on;
- ``turns``: a user turn, held while its end is not confirmed, and the last ended one;
- ``reply``: LLM → sentences → TTS, so the first sentence speaks while the LLM still writes;
- ``playback``: what the user has heard, barge-in, and what the history keeps of a cut reply;
- ``outbox``: the events to the consumer, bounded for a consumer that stalls.

Asyncio tasks move small messages; the engine's worker pools do the model work: the input
task runs VAD and the end-of-turn policy, a turn task runs ASR and starts the response, a
response task runs the reply. At the first pause the turn already runs, *held*: if the
policy then ends the turn, what it made goes out at once; if the user goes on, it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from engine.audio import ENGINE_RATE
from engine.clock import now_ns
from engine.config import check_turn
from engine.errors import ResponseInProgress, S2SError
from engine.events import (
    ErrorEvent,
    Interruption,
    ReplyAudio,
    ResponseDone,
    ResponseStarted,
    SessionEvent,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
)
from engine.history import ChatHistory
from engine.metrics import TurnMetrics
from engine.session.asr import Transcriber
from engine.session.eot import EndOfTurn
from engine.session.input import InputAudio
from engine.session.outbox import Outbox
from engine.session.playback import Playback
from engine.session.reply import Reply, ReplyMaker
from engine.session.turns import Ended, Speech, Turn
from engine.turn import TurnDecision, TurnPolicy, text_usable
from engine.vad import TurnDetector, VADState

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)

TRAILING_PAD_MS = 200  # the turn's audio goes this far past its last voiced frame


class Session:
    def __init__(self, engine: Engine, session_id: str):
        self.engine = engine
        self.id = session_id
        p = engine.profile
        self.options = replace(p.session)
        self.vad_options = replace(p.vad)
        self.turn_options = replace(p.turn)
        self.language: str | None = None if p.asr.language in ("", "auto") else p.asr.language
        self.instructions = p.llm.system_prompt
        self.history = ChatHistory()
        self.partials = engine.partials_enabled()
        # The parts (engine/session/): each queue is bounded by policy rather than maxsize
        # (put_nowait must not raise where events are made): input past
        # session.max_input_backlog_s of audio is refused in push_audio, and the outbox cancels
        # the reply of a consumer session.max_events behind and drops its bulk events.
        self._events = Outbox(session_id, self.options, lambda: self._interrupt(barge_in=False))
        self._input: asyncio.Queue = asyncio.Queue()
        self._input_samples = 0  # audio samples queued for VAD
        self._audio = InputAudio()
        self._asr = Transcriber(engine)
        self._playback = Playback(engine, self.options, self.history, self._emit)
        self._maker = ReplyMaker(engine, self.options, self._emit_for)
        self._eot = EndOfTurn(session_id, engine, self.turn_options, self.vad_options.end_of_turn_silence_ms,
                              self._emit, self._pause_ms, self._end_turn_now)
        self._detector = self._new_detector()
        self._vad_state = engine.vad.new_state()
        self._frames_seen = 0
        self._speech = Speech()  # the turn being spoken, and the last ended one
        self._n_responses = 0
        self._turn_tasks: set[asyncio.Task] = set()
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
        x = self._audio.convert(samples, sample_rate)
        self._input_samples += len(x)
        self._input.put_nowait((x, now_ns()))

    async def input_processed(self) -> None:
        """Wait until every queued chunk went through VAD."""
        await self._input.join()

    def commit(self) -> str:
        """End the user's turn now with the buffered audio (manual turn detection)."""
        self._input.put_nowait(("commit", now_ns()))
        return self._speech.next_id

    def clear_input(self) -> None:
        self._input.put_nowait(("clear", now_ns()))

    def add_user_text(self, text: str) -> str:
        """A typed user message: joins the history and emits its final transcript."""
        if not text.strip():
            raise S2SError("the message is empty")
        turn_id = self._speech.new_id()
        self._speech.ended = None  # a typed message closes whatever the user was saying before
        self.history.add("user", text)
        self._emit(TranscriptFinal(turn_id, text.strip(), None))
        return turn_id

    def create_response(self, metrics: TurnMetrics | None = None) -> str:
        """Respond to the history now. Raises S2SError if a response is running."""
        if self._closed:
            raise S2SError("session is closed")
        if self._playback.running:
            raise ResponseInProgress(f"a response is already in progress ({self._playback.current.id})")
        if not any(m["role"] == "user" for m in self.history.messages):
            raise S2SError("nothing to respond to: the conversation has no user message")
        if metrics is None:
            t = now_ns()
            metrics = TurnMetrics(turn_id=self._speech.turn_id, turn_end_ns=t, asr_final_ns=t)
        return self._start_response(metrics)

    def cancel_response(self) -> bool:
        """Cancel the running response (or the playback of the last one)."""
        return self._interrupt(barge_in=False)

    def truncate(self, response_id: str, played_ms: int) -> None:
        """The client says how much of a response it really played; fix the history."""
        self._playback.truncate(response_id, played_ms)

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
        if (turn_policy is not None and turn_policy != self._eot.policy.policy) or turn_max_silence_ms is not None:
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
            self._eot.use(self.turn_options, self.vad_options.end_of_turn_silence_ms)
            self._detector = self._new_detector()

    @property
    def turn_policy(self) -> str:
        return self._eot.policy.policy

    @property
    def max_turn_wait_ms(self) -> int:
        """The longest silence before a turn ends, whatever the evidence."""
        return self._eot.policy.max_wait_ms

    def _new_detector(self) -> TurnDetector:
        """The VAD state machine for the policy: it ends the turn at the policy's longest wait
        and reports the first short silence, where the turn runs speculatively and the
        policy's evidence is gathered (adaptive policies always run it there)."""
        pol, spec = self._eot.policy, self.vad_options.speculative_asr_ms
        pause = (min(spec, pol.earliest_ms) if spec > 0 else pol.earliest_ms) if pol.adaptive else spec
        return TurnDetector(self.vad_options, self.engine.vad.frame_samples, end_ms=pol.max_wait_ms, pause_ms=pause)

    def reset(self) -> None:
        """Forget the conversation: cancel any reply and any turn still being transcribed."""
        self._eot.drop()
        self._speech.ended = None
        self._interrupt(barge_in=False)
        for task in list(self._turn_tasks):
            task.cancel()
        self._asr.cancel()
        self.history.clear()

    def stream(self) -> AsyncIterator[SessionEvent]:
        return self._events.stream()

    def next_event_nowait(self) -> SessionEvent | None:
        return self._events.get_nowait()

    @property
    def busy(self) -> bool:
        """A turn or response is being worked on (not counting playback)."""
        return bool(self._turn_tasks) or self._playback.running

    async def wait_idle(self) -> None:
        """Wait until no turn or response is being worked on (bound it with asyncio.timeout)."""
        while self.busy:
            tasks = set(self._turn_tasks)
            r = self._playback.current
            if r is not None and r.task is not None and not r.done:
                tasks.add(r.task)
            if tasks:
                await asyncio.wait(tasks)
            else:
                await asyncio.sleep(0.005)

    @property
    def state(self) -> str:
        """listening | user_speaking | thinking | speaking."""
        if self._detector.in_speech:
            return "user_speaking"
        if self._playback.speaking:
            return "speaking"
        if self.busy:
            return "thinking"
        return "listening"

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._eot.drop()
        self._interrupt(barge_in=False)
        tasks = [t for t in (self._input_task, *self._asr.cancel(), *self._turn_tasks) if t is not None]
        if self._playback.current is not None and self._playback.current.task is not None:
            tasks.append(self._playback.current.task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.engine.forget(self)
        self._events.end()

    # --- input: VAD, turns, partials ------------------------------------------------------

    def _emit(self, ev: SessionEvent) -> None:
        if self._closed and not isinstance(ev, ResponseDone | Interruption):
            return
        self._events.put(ev)

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
        self._audio.append(chunk)
        if self._speech.start is not None:  # the bound may have dropped the turn's oldest audio
            self._speech.start = max(self._speech.start, self._audio.start)
        if not self.options.turn_detection:
            return
        self.engine.cpu.sample()  # at most every 200 ms: how idle the cores are when a pause comes
        frames, frame_arrivals = self._audio.frames(chunk, arrivals, self.engine.vad.frame_samples)
        n = len(frames)
        if n == 0:
            return
        probs = await loop.run_in_executor(self.engine.vad_pool, self.engine.vad.probabilities, self._vad_state, frames)
        for i, prob in enumerate(probs):
            silence = self._detector.eot_frames * self._detector.frame_ms
            ev = self._detector.update(self._frames_seen + i, float(prob), frame_arrivals[i])
            if ev is None:
                if self._eot.policy.adaptive and self._detector.state is VADState.STOPPING:
                    self._eot.check()  # one more frame of silence: enough for the evidence?
                continue
            if ev.kind == "start":
                self._on_speech_start(ev.sample, ev.arrival_ns)
            elif ev.kind == "pause":
                self._on_pause(ev.sample)
            elif ev.kind == "resume":
                self._eot.drop()
            else:  # the longest wait: the policy's fixed silence, or its maximum
                self._on_turn_end(ev.sample, ev.arrival_ns, now_ns(), self._eot.decide_at_most(silence))
        self._frames_seen += n
        if not self._detector.in_speech and self._detector.state.value == "quiet":
            self._trim_buffer()
        elif self.partials and self._detector.state is VADState.SPEAKING:
            self._maybe_partial()  # not in a silence: the speculative/final decode may start there

    def _trim_buffer(self) -> None:
        keep = int(ENGINE_RATE * self.vad_options.pre_roll_ms / 1000)
        e, end = self._speech.ended, self._audio.end
        if e is not None:
            if end - e.end_sample <= self._resume_samples():
                keep = max(keep, end - e.start_sample)  # the user may go on
            else:
                self._speech.ended = None
        if self._speech.start is None:
            self._audio.keep_last(keep)

    def _control(self, what: str, t: int) -> None:
        if what == "clear":
            self._audio.clear()
            self._speech.end()
            self._speech.ended = None
            self._detector.reset()
        elif what == "commit":
            audio = self._audio.between(self._turn_start_sample())
            if len(audio) < ENGINE_RATE // 10:
                self._emit(ErrorEvent("input_audio_buffer_commit_empty",
                                      "the input audio buffer holds less than 100 ms of audio", "vad"))
                return
            sp = self._speech
            if sp.start is None:
                sp.new_id()
            metrics = TurnMetrics(turn_id=sp.turn_id, speech_start_ns=sp.start_ns or t,
                                  speech_end_ns=t, turn_end_ns=t, turn_policy="commit")
            sp.ended = None
            self._begin_turn(sp.turn_id or "turn_?", audio, metrics)
            self._audio.clear()  # a commit empties the input buffer
            self._detector.reset()

    def _on_speech_start(self, sample: int, arrival_ns: int) -> None:
        self._asr.last_ns = now_ns()
        if self._resume(sample):
            return
        pre = int(ENGINE_RATE * self.vad_options.pre_roll_ms / 1000)
        turn_id = self._speech.begin(max(self._audio.start, sample - pre), arrival_ns)
        self._emit(SpeechStarted(turn_id, int(1000 * sample / ENGINE_RATE)))
        if self.options.barge_in:
            self._interrupt(barge_in=True)

    def _resume_samples(self) -> int:
        return int(ENGINE_RATE * self.turn_options.resume_ms / 1000)

    def _resume(self, sample: int) -> bool:
        """Does speech starting at ``sample`` go on with the last ended turn (``turn.resume_ms``)?
        If so, cancel the reply to the first part, take both out of the history, and carry on
        with the same turn from its first sample."""
        if not self.turn_options.resume_ms or not self.options.turn_detection or not self.options.barge_in:
            return False
        e = self._speech.go_on(sample, self._resume_samples(), self.output_sample_rate, self._audio.start)
        if e is None:
            return False
        turn, r = e.turn, e.turn.response
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()  # still transcribing (or holding) the first part
        self._emit(SpeechStarted(turn.id, int(1000 * sample / ENGINE_RATE), resumed=True))
        if r is not None and r is self._playback.current:
            self._interrupt(barge_in=True)
        elif r is not None and not r.done:
            r.cancel.set()
            if r.task is not None:
                r.task.cancel()
        self.history.drop_since(e.history_mark)  # the half utterance, and what was heard of its reply
        return True

    def _turn_start_sample(self) -> int:
        """Where the turn being spoken starts in the buffer (all of it, between turns)."""
        return self._speech.start if self._speech.start is not None else self._audio.start

    def _turn_audio(self, end_sample: int) -> np.ndarray:
        return self._audio.between(self._turn_start_sample(), end_sample + int(ENGINE_RATE * TRAILING_PAD_MS / 1000))

    def _on_pause(self, end_sample: int) -> None:
        """The first short silence: run the turn now, held back, in case the pause is its end;
        :class:`EndOfTurn` gathers the policy's evidence meanwhile."""
        idle = self.engine.cpu.idle()  # before the turn's own work: what others leave of the cores
        metrics = self._speech.metrics(spec_start_ns=now_ns())
        turn = Turn(self._speech.turn_id or "turn_?", end_sample, metrics, held=True, speculative=True)
        turn.known_text = self._asr.covering(turn.id, end_sample)  # the latest partial heard all of it?
        turn.task = asyncio.create_task(self._run_turn(turn, self._turn_audio(end_sample)),
                                        name=f"{self.id}-{turn.id}-early")
        start = self._turn_start_sample()
        self._eot.hold(turn, idle, self.language or "", lambda: self._audio.between(start))

    def _pause_ms(self) -> int | None:
        """How long the current pause has lasted (None: not in a pause)."""
        return self._detector.silence_ms if self._detector.state is VADState.STOPPING else None

    def _end_turn_now(self, decision: TurnDecision) -> None:
        """The policy ended the turn in its pause, before the longest wait."""
        ev = self._detector.end_now()
        if ev is not None:
            self._on_turn_end(ev.sample, ev.arrival_ns, now_ns(), decision)

    def _release(self, turn: Turn) -> None:
        """The end of turn is confirmed: what the held turn produced goes out now."""
        turn.held = False
        if turn.user_text:
            self.history.add("user", turn.user_text)
        if turn.response is not None:
            self._playback.current = turn.response
        t = now_ns()
        for ev in turn.held_events:
            if isinstance(ev, ReplyAudio) and turn.response is not None and turn.response.first_out_ns is None:
                turn.response.first_out_ns = turn.metrics.first_audio_out_ns = t
            self._events.put(ev)
        turn.held_events.clear()
        turn.released.set()

    def _emit_for(self, turn: Turn | None, ev: SessionEvent) -> None:
        if turn is not None and turn.held:
            turn.held_events.append(ev)
            if isinstance(ev, ReplyAudio):
                self._eot.on_reply_audio(turn)
        else:
            self._emit(ev)

    def _on_turn_end(self, end_sample: int, speech_end_ns: int, decided_ns: int, decision: TurnDecision) -> None:
        sp = self._speech
        turn_id = sp.turn_id or "turn_?"
        self._emit(SpeechStopped(turn_id, int(1000 * end_sample / ENGINE_RATE)))
        ended = Ended(Turn(turn_id, end_sample, TurnMetrics()), self._turn_start_sample(), end_sample, sp.start_ns,
                      self.history.mark(), sp.parts + 1)
        sp.ended = ended if self.turn_options.resume_ms > 0 else None  # before the buffer is trimmed
        spec = self._eot.claim(turn_id, end_sample)
        if spec is not None:
            spec.metrics.speech_end_ns, spec.metrics.turn_end_ns = speech_end_ns, decided_ns
            spec.metrics.speech_start_ns = spec.metrics.speech_start_ns or sp.start_ns
            self._record_decision(spec.metrics, decision)
            self._start_turn_bookkeeping()
            self._turn_tasks.add(spec.task)
            spec.task.add_done_callback(self._turn_tasks.discard)
            ended.turn = spec
            self._release(spec)
        else:
            metrics = sp.metrics(speech_end_ns=speech_end_ns, turn_end_ns=decided_ns)
            self._record_decision(metrics, decision)
            ended.turn = self._begin_turn(turn_id, self._turn_audio(end_sample), metrics, end_sample)

    def _record_decision(self, m: TurnMetrics, d: TurnDecision) -> None:
        m.turn_policy = d.by
        m.turn_probability = d.probability
        m.turn_missing = ",".join(d.missing) or None

    def _start_turn_bookkeeping(self) -> None:
        self._speech.end()
        self._asr.turn_ended()
        self._trim_buffer()

    def _begin_turn(self, turn_id: str, audio: np.ndarray, metrics: TurnMetrics, end_sample: int = 0) -> Turn:
        self._eot.drop()
        turn = Turn(turn_id, end_sample, metrics)
        if end_sample:
            turn.known_text = self._asr.covering(turn_id, end_sample)
        self._start_turn_bookkeeping()
        turn.task = asyncio.create_task(self._run_turn(turn, audio), name=f"{self.id}-{turn_id}")
        self._turn_tasks.add(turn.task)
        turn.task.add_done_callback(self._turn_tasks.discard)
        return turn

    def _maybe_partial(self) -> None:
        sp = self._speech
        if sp.start is not None:
            self._asr.maybe_partial(sp.turn_id, lambda: (self._audio.between(self._turn_start_sample()), self._audio.end),
                                    self.language, self._on_partial)

    def _on_partial(self, turn_id: str, text: str) -> bool:
        if turn_id != self._speech.turn_id or self._speech.start is None:
            return False  # that turn has ended: its final transcript is on the way
        self._emit(TranscriptPartial(turn_id, text))
        return True

    # --- a turn: final ASR, then the response -------------------------------------------

    async def _run_turn(self, turn: Turn, audio: np.ndarray) -> None:
        metrics = turn.metrics
        try:
            tr = await self._asr.final(audio, self.language, metrics, turn.known_text)
        except Exception as exc:  # noqa: BLE001 - report, keep the session alive
            log.exception("ASR")
            if turn.held:
                self._eot.no_text(turn)
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
            self._eot.no_text(turn)  # noise, or a transcript the ASR did not understand
        if not text:
            return  # noise or a cough: nothing to answer
        if turn.held:
            turn.user_text = text  # joins the history when the turn is released
        else:
            self.history.add("user", text)
            if self._speech.turn_id != turn.id or self._detector.in_speech:
                return  # the user is speaking again: their next turn continues this one
        if self.options.auto_response and not self._playback.running:
            self._start_response(metrics, turn)
        else:
            self._eot.no_text(turn)

    def _start_response(self, metrics: TurnMetrics, turn: Turn | None = None) -> str:
        self._n_responses += 1
        r = Reply(id=f"resp_{self._n_responses}", turn_id=metrics.turn_id, metrics=metrics, turn=turn)
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
            self._playback.current = r
        self._emit_for(turn, ResponseStarted(r.id, r.turn_id))
        read_turn = turn is not None and turn.held and turn.evidence.text_usable and turn.evidence.text is None
        r.task = asyncio.create_task(self._run_response(r, messages, read_turn), name=f"{self.id}-{r.id}")
        return r.id

    async def _run_response(self, r: Reply, messages: list, read_turn: bool = False) -> None:
        made = await self._maker.make(r, messages, read_turn, self._eot.on_text)
        if r.status == "cancelled":
            return
        await self._released(r)
        if made.error is not None or made.sentences == 0:
            msg = (f"the language model failed: {made.error}" if made.error
                   else f"the language model returned nothing to say aloud ({r.text.strip()!r})")
            self._emit(ErrorEvent(getattr(made.error, "code", "llm_failed"), msg, "llm", r.turn_id))
            self._playback.finish(r, "failed")
            return
        self._playback.finish(r, "completed")

    async def _released(self, r: Reply) -> None:
        """A held response finishes only once its turn is confirmed (a dropped turn cancels
        this task, so the wait cannot outlive it)."""
        if r.turn is not None and r.turn.held:
            await r.turn.released.wait()

    def _interrupt(self, barge_in: bool) -> bool:
        """Cancel the running response, or cut the playback of the last one."""
        return self._playback.interrupt(barge_in)


__all__ = ["Session"]

"""The Realtime session rules, sans I/O: :class:`SessionRules`.

One object per connection, between the parsed client events and the engine's
:class:`~engine.session.Session` (any object with its methods, :class:`EngineSession`). Feed it:

- :meth:`SessionRules.receive` with each parsed client event; it drives the session and returns the
  server events to send (an ``error`` among them when the event is refused);
- :meth:`SessionRules.engine_event` with each engine event; it returns the server events to send.

It holds what the Realtime protocol says about a session beyond single events: an empty commit is
refused; a ``response.create`` that arrives while a manual commit is still being transcribed waits
for its transcript; cancelling needs a running response; a truncate names a known assistant item;
a WAV file is not PCM; a ``session.update`` changes everything it asks for or nothing; the engine's
"commit was empty" goes back to the commit that caused it; ``s2s.session.reset`` is answered after
the cancelled ``response.done``. It does no I/O and starts no thread: the audio coding that may
belong on a worker thread comes as a :class:`~remote.protocol.formats.Job` (:meth:`decode_job`,
:meth:`encode_job`) that the I/O layer runs where it likes and hands back. A format whose coder
needs a model (Encodec) is loaded by the I/O layer first (:meth:`models_needed`), and read through
``models``. ``tests/test_rules.py`` drives it with a fake session, without a socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine import events as ev
from engine.clock import now_ns
from engine.config import TurnOptions, VADOptions
from engine.errors import ResponseInProgress, S2SError
from remote.protocol.base import ErrorCode, ProtocolError
from remote.protocol.client_events import (
    ClientEvent,
    ConversationItemCreate,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    ResponseCancel,
    ResponseCreate,
    S2SPing,
    S2SSessionReset,
    SessionUpdate,
)
from remote.protocol.formats import FORMATS, AudioFormat, Decoder, Job, offered
from remote.protocol.mapper import EventMapper
from remote.protocol.server_events import (
    ConversationItemTruncated,
    Error,
    InputAudioBufferCleared,
    S2SPong,
    S2SSessionResetDone,
    ServerEvent,
    SessionCreated,
    SessionUpdated,
)
from remote.protocol.session import SessionConfig, TurnDetection


class EngineSession(Protocol):
    """What the rules use of :class:`engine.session.Session`."""

    id: str
    instructions: str
    language: str | None
    options: Any  # .turn_detection, .auto_response

    @property
    def turn_policy(self) -> str: ...
    def push_audio(self, samples: np.ndarray, sample_rate: int) -> None: ...
    def commit(self) -> str: ...
    def clear_input(self) -> None: ...
    def add_user_text(self, text: str) -> str: ...
    def create_response(self) -> str: ...
    def cancel_response(self) -> bool: ...
    def truncate(self, response_id: str, played_ms: int) -> None: ...
    def update(self, **settings: Any) -> None: ...
    def reset(self) -> None: ...


@dataclass(frozen=True)
class EngineDefaults:
    """What the rules need from the engine's profile (:meth:`from_engine`).

    Fields:
        vad / turn: the profile's VAD options (end-of-turn silence, pre-roll and threshold, reported
            in ``turn_detection``) and end-of-turn policy.
        system_prompt: ``instructions: null`` restores it.
        has_turn_model: whether the engine runs the audio turn model now.
    """

    vad: VADOptions = field(default_factory=VADOptions)
    turn: TurnOptions = field(default_factory=TurnOptions)
    system_prompt: str = ""
    has_turn_model: Callable[[], bool] = field(default=lambda: False)

    @classmethod
    def from_engine(cls, engine: Any) -> EngineDefaults:
        prof = engine.profile
        return cls(prof.vad, prof.turn, prof.llm.system_prompt, lambda: engine.turn_model is not None)

    def turn_detection(self, td: TurnDetection) -> tuple[TurnDetection, dict[str, Any]]:
        """What a client's ``turn_detection`` means: the object to report back, and the session's
        ``update`` keywords. ``semantic_vad``: an adaptive end-of-turn policy (the profile's, or one
        this engine can run), its longest wait scaled by ``eagerness``; ``server_vad`` with
        ``silence_duration_ms``: a fixed silence; ``server_vad`` alone: the profile's policy (what
        our own clients send when they turn server VAD back on)."""
        kw: dict[str, Any] = {}
        vad, turn = self.vad, self.turn
        if td.type == "semantic_vad":
            policy = turn.policy
            if policy == "silence":
                policy = "combined" if self.has_turn_model() else "transcript"
            longest = turn.max_silence_ms
            scaled = {"low": 2 * longest, "high": max(turn.min_silence_ms, longest // 2)}.get(td.eagerness or "", longest)
            kw.update(turn_policy=policy, turn_max_silence_ms=scaled)
            silence = vad.end_of_turn_silence_ms
        else:
            silence = td.silence_duration_ms or vad.end_of_turn_silence_ms
            kw.update(turn_policy="silence" if td.silence_duration_ms else turn.policy, eot_silence_ms=silence,
                      turn_max_silence_ms=turn.max_silence_ms)
        reported = TurnDetection(type=td.type, create_response=td.create_response, silence_duration_ms=silence,
                                 prefix_padding_ms=vad.pre_roll_ms, threshold=vad.threshold,
                                 eagerness=(td.eagerness or "auto") if td.type == "semantic_vad" else None)
        return reported, kw


class SessionRules:
    """The Realtime rules of one session (see the module docstring).

    Attributes:
        config: the session as reported (``session.created`` / ``session.updated``).
        mapper: the :class:`EventMapper` that numbers items and codes reply audio.

    ``models`` gives a format's loaded model by format name (the server's Encodec codec);
    ``clock`` the server's monotonic clock in ms (``s2s.pong``).
    """

    def __init__(self, session: EngineSession, defaults: EngineDefaults | None = None, *, model: str = "s2s",
                 asr_model: str = "", tts_voice: str = "", profile: str = "",
                 models: Callable[[str], Any] | None = None, clock: Callable[[], float] | None = None):
        self.session = session
        self.defaults = defaults = defaults or EngineDefaults()
        self.models = models or (lambda name: None)
        self.clock = clock or (lambda: now_ns() / 1e6)
        self.mapper = EventMapper(self.models)
        adaptive = session.turn_policy != "silence"
        td = TurnDetection(type="semantic_vad" if adaptive else "server_vad",
                           create_response=session.options.auto_response,
                           silence_duration_ms=defaults.vad.end_of_turn_silence_ms,
                           prefix_padding_ms=defaults.vad.pre_roll_ms, threshold=defaults.vad.threshold,
                           eagerness="auto" if adaptive else None)
        self.config = SessionConfig(id=session.id, model=model[:64], instructions=session.instructions,
                                    turn_detection=td if session.options.turn_detection else None,
                                    language=session.language or "auto", asr_model=asr_model, tts_voice=tts_voice,
                                    profile=profile, formats=offered())
        self._decoder = self._new_decoder(self.config.input_format)
        self._uncommitted = 0  # samples appended since the last commit or clear
        self._pending_commits: deque[str | None] = deque()  # manual commits not transcribed yet: event ids
        self._deferred: list[str | None] = []  # response.create waiting for those transcripts
        self._resets = 0  # s2s.session.reset waiting for the cancelled response.done of ...
        self._reset_response: str | None = None
        self._handlers: dict[type[ClientEvent], Callable[[Any, Any], list[ServerEvent]]] = {
            SessionUpdate: self._update, InputAudioBufferAppend: self._append, InputAudioBufferCommit: self._commit,
            InputAudioBufferClear: self._clear, ConversationItemCreate: self._item, ResponseCreate: self._respond,
            ResponseCancel: self._cancel, ConversationItemTruncate: self._truncate, S2SPing: self._ping,
            S2SSessionReset: self._reset,
        }

    def created(self) -> list[ServerEvent]:
        """The first event of the connection."""
        return [SessionCreated(session=self.config.to_dict())]

    # ---- client events in

    def models_needed(self, e: ClientEvent) -> list[tuple[AudioFormat, str]]:
        """The formats a ``session.update`` asks for whose model must be loaded before
        :meth:`receive` (with the ``param`` to name if it cannot be)."""
        if not isinstance(e, SessionUpdate):
            return []
        changes = e.session.changes()
        return [(changes[k], f"session.audio.{side}.format") for k, side in (("input_format", "input"),
                                                                               ("output_format", "output"))
                if k in changes and changes[k].spec.needs_model]

    def decode_job(self, e: ClientEvent) -> Job[np.ndarray] | None:
        """The decoding of an ``append``'s audio (None for other events)."""
        if not isinstance(e, InputAudioBufferAppend) or not e.audio:
            return None
        decoder, data = self._decoder, e.audio
        return Job(lambda: decoder.push(data), decoder.offload)

    def receive(self, e: ClientEvent, job: Job[Any] | None = None) -> list[ServerEvent]:
        """Apply one client event; the server events to send (an ``error`` if it was refused).
        ``job``: its :meth:`decode_job`, when the caller ran it."""
        try:
            return self._handlers[type(e)](e, job)
        except ProtocolError as err:
            if err.event_id is None:
                err.event_id = e.event_id
            return [err.to_event()]
        except S2SError as exc:
            return [ProtocolError(exc.code, str(exc), event_id=e.event_id).to_event()]

    def _update(self, e: SessionUpdate, _job: Any) -> list[ServerEvent]:
        changes = e.session.changes()
        kw: dict[str, Any] = {}
        if "turn_detection" in changes:
            td = changes["turn_detection"]
            kw.update(turn_detection=td is not None, auto_response=td is not None and td.create_response)
            if td is not None:
                changes["turn_detection"], turn = self.defaults.turn_detection(td)
                kw.update(turn)
        if "instructions" in changes:
            if changes["instructions"] is None:
                changes["instructions"] = self.defaults.system_prompt
            kw["instructions"] = changes["instructions"]
        if "language" in changes:
            kw["language"] = changes["language"]
        fmt = changes.get("input_format")
        decoder = self._new_decoder(fmt) if fmt is not None and fmt != self.config.input_format else self._decoder
        self.session.update(**kw)  # a refusal (S2SError) changes nothing
        self.config = self.config.updated(**changes)
        self._decoder = decoder
        self.mapper.output_format = self.config.output_format  # from the next response on
        return [SessionUpdated(session=self.config.to_dict())]

    def _new_decoder(self, fmt: AudioFormat) -> Decoder:
        return FORMATS[fmt.type].decoder(fmt, self.models(fmt.type))

    def _append(self, e: InputAudioBufferAppend, job: Job[np.ndarray] | None) -> list[ServerEvent]:
        job = job or self.decode_job(e)
        if job is None:
            return []
        samples = job.result()
        if not len(samples):  # an Opus packet still filling its decoder
            return []
        self.session.push_audio(samples, sample_rate=self._decoder.rate)
        self._uncommitted += len(samples)
        return []

    def _commit(self, e: InputAudioBufferCommit, _job: Any) -> list[ServerEvent]:
        if self._uncommitted == 0:
            raise ProtocolError(ErrorCode.COMMIT_EMPTY, "the input audio buffer is empty: append audio before committing")
        self.session.commit()
        self._uncommitted = 0
        self._pending_commits.append(e.event_id)
        return []

    def _clear(self, e: InputAudioBufferClear, _job: Any) -> list[ServerEvent]:
        self.session.clear_input()
        self._uncommitted = 0
        self._decoder.reset()
        return [InputAudioBufferCleared()]

    def _item(self, e: ConversationItemCreate, _job: Any) -> list[ServerEvent]:
        turn_id = self.session.add_user_text(e.text)
        return self.mapper.text_item(turn_id, e.text, e.item_id)

    def _respond(self, e: ResponseCreate, _job: Any) -> list[ServerEvent]:
        if self._pending_commits and self.config.turn_detection is None:
            # the committed audio is still being transcribed: respond once it is in the history
            self._deferred.append(e.event_id)
            return []
        self._create_response(e.event_id)
        return []

    def _create_response(self, event_id: str | None) -> None:
        try:
            self.session.create_response()
        except S2SError as exc:
            code = ErrorCode.ACTIVE_RESPONSE if isinstance(exc, ResponseInProgress) else ErrorCode.INVALID_STATE
            raise ProtocolError(code, str(exc), event_id=event_id) from None

    def _cancel(self, e: ResponseCancel, _job: Any) -> list[ServerEvent]:
        active = self.mapper.active_response()
        if e.response_id is not None and e.response_id != active:
            raise ProtocolError(ErrorCode.CANCEL_NOT_ACTIVE, f"response {e.response_id!r} is not in progress",
                                param="response_id")
        if active is not None:
            self.mapper.cancel_requested(active)
        if self._deferred:
            self._deferred.clear()
            return []
        if not self.session.cancel_response():
            raise ProtocolError(ErrorCode.CANCEL_NOT_ACTIVE, "there is no response in progress to cancel")
        return []

    def _truncate(self, e: ConversationItemTruncate, _job: Any) -> list[ServerEvent]:
        rid = self.mapper.response_for_item(e.item_id)
        if rid is None:
            raise ProtocolError(ErrorCode.ITEM_NOT_FOUND, f"no assistant audio item {e.item_id!r} in this session",
                                param="item_id")
        try:
            self.session.truncate(rid, e.audio_end_ms)
        except S2SError as exc:
            raise ProtocolError(ErrorCode.ITEM_NOT_FOUND, str(exc), param="item_id") from None
        return [ConversationItemTruncated(item_id=e.item_id, content_index=0, audio_end_ms=e.audio_end_ms)]

    def _ping(self, e: S2SPing, _job: Any) -> list[ServerEvent]:
        return [S2SPong(client_time_ms=e.client_time_ms, server_time_ms=self.clock())]

    def _reset(self, e: S2SSessionReset, _job: Any) -> list[ServerEvent]:
        """Forget the history and cancel the reply. ``Session.reset`` ends a running reply at once
        (its ``response.done`` is queued before it returns); ``reset_done`` follows that event, so
        a client sees the cancelled ``response.done`` first. A user turn already being transcribed
        is not stopped by the engine."""
        active = self.mapper.active_response()
        if active is not None:
            self.mapper.cancel_requested(active)
        self._deferred.clear()  # a response.create waiting for a transcript is dropped
        self.session.reset()
        self._resets += 1
        if active is None:
            return self._reset_done()
        self._reset_response = active
        return []

    @property
    def reset_pending(self) -> bool:
        """An ``s2s.session.reset`` waits for its reply's cancelled ``response.done``."""
        return self._resets > 0

    def reset_expired(self) -> list[ServerEvent]:
        """The answer to a reset whose ``response.done`` never came (the I/O layer's timeout)."""
        return self._reset_done() if self._resets else []

    def _reset_done(self) -> list[ServerEvent]:
        n, self._resets = self._resets, 0
        rid, self._reset_response = self._reset_response, None
        self.mapper.last_item_id = None  # the conversation is empty again
        return [S2SSessionResetDone(session_id=self.session.id, cancelled_response_id=rid) for _ in range(n)]

    # ---- engine events in

    def encode_job(self, e: Any) -> Job[list[bytes]] | None:
        """The coding of reply audio an engine event carries (None for most events)."""
        return self.mapper.encode_job(e)

    def engine_event(self, e: Any, job: Job[list[bytes]] | None = None) -> list[ServerEvent]:
        """The server events for one engine event. ``job``: its :meth:`encode_job`, when the
        caller ran it."""
        if isinstance(e, ev.SpeechStopped):
            self._uncommitted = 0  # the VAD committed the turn
        if isinstance(e, ev.ErrorEvent) and e.code == ErrorCode.COMMIT_EMPTY:
            client_id = self._pending_commits.popleft() if self._pending_commits else None
            return [Error(code=e.code, message=e.message, client_event_id=client_id),
                    *self._resolve_deferred(cancel=True)]
        out = self.mapper.map(e, job)
        transcribed = isinstance(e, ev.TranscriptFinal) and not self.mapper.is_text_turn(e.turn_id)
        asr_failed = isinstance(e, ev.ErrorEvent) and e.stage == "asr"
        if (transcribed or asr_failed) and self._pending_commits:
            self._pending_commits.popleft()
            out += self._resolve_deferred(cancel=asr_failed or not e.text.strip())
        if isinstance(e, ev.ResponseDone) and self._resets and e.response_id == self._reset_response:
            out += self._reset_done()
        return out

    def _resolve_deferred(self, cancel: bool) -> list[ServerEvent]:
        if self._pending_commits or not self._deferred:
            return []
        ids, self._deferred = self._deferred, []
        if cancel:
            return []
        try:
            self._create_response(ids[0])
        except ProtocolError as err:
            return [err.to_event()]
        return []


__all__ = ["EngineDefaults", "EngineSession", "SessionRules"]

"""Engine events (:mod:`engine.events`) to server events: :class:`EventMapper`.

Pure and stateful: it numbers items, keeps their order, remembers partial transcripts and which
responses run, and codes reply audio in each response's output format (resampled to the format's
rate by one soxr stream per response, so chunk edges do not click).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import events as ev
from engine.audio import StreamResampler
from engine.bounded import remember
from remote.protocol.base import MAX_TRACKED, ErrorType
from remote.protocol.formats import FORMATS, PCM, AudioFormat, Encoder, Job
from remote.protocol.server_events import (
    ConversationItemAdded,
    ConversationItemDone,
    ConversationItemTruncated,
    Error,
    InputAudioBufferCommitted,
    InputTranscriptionCompleted,
    InputTranscriptionDelta,
    ResponseAudioDelta,
    ResponseAudioDone,
    ResponseCreated,
    ResponseDone,
    ResponseTranscriptDelta,
    ResponseTranscriptDone,
    S2STurnMetrics,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
)


def user_item(item_id: str, *, text: str | None = None, transcript: str | None = None, status: str = "completed") -> dict[str, Any]:
    """A Realtime user message item: ``input_text`` when ``text`` is given, else ``input_audio``."""
    part = {"type": "input_text", "text": text} if text is not None else {"type": "input_audio", "transcript": transcript}
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": status, "content": [part]}


def assistant_item(item_id: str, transcript: str | None = None, status: str = "in_progress") -> dict[str, Any]:
    content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": status,
            "content": content}


def _response_object(response_id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {"id": response_id, "object": "realtime.response", "status": status, "status_details": None,
            "output": [], "conversation_id": "conv_default", "output_modalities": ["audio"], **fields}


@dataclass
class _Resp:
    response_id: str
    item_id: str
    turn_item_id: str | None
    format: AudioFormat
    text: str = ""
    audio_bytes: int = 0
    interrupted: dict[str, Any] | None = None
    cancel_requested: bool = False
    done: bool = False


class EventMapper:
    """Maps one session's engine events to server events.

    Item ids: a user turn ``turn_N`` becomes item ``item_turn_N`` (or the client's ``item.id`` for a
    text message); response ``resp_N`` writes assistant item ``item_resp_N``.

    Reply audio is coded in the :attr:`output_format` that was current when its response started.
    :meth:`map` does the coding in place; a caller that wants it elsewhere (Encodec on a worker
    thread) takes :meth:`encode_job` of a ``ReplyAudio`` / ``ResponseDone``, runs it, and passes it
    to :meth:`map` with the event. Reply audio at another rate than the format's goes through one
    soxr stream resampler per response; the samples it still holds come out as a last audio delta
    before ``response.output_audio.done`` of a completed response, and are dropped for a
    cancelled one.

    Memory is bounded: the mapper remembers the last :data:`MAX_TRACKED` turns and responses (ids,
    items, partial text, resamplers, encoders) and forgets older ones first. Events only refer to
    recent ones; an event for a forgotten turn still gets the same ``item_<turn>`` id.

    ``models`` gives a format's shared model (Encodec's weights) by format name.
    """

    def __init__(self, models: Callable[[str], Any] | None = None) -> None:
        self.models = models or (lambda name: None)
        self.output_format: AudioFormat = PCM
        self.last_item_id: str | None = None
        self._turn_items: dict[str, str] = {}
        self._added: dict[str, None] = {}  # an ordered set
        self._text_turns: dict[str, None] = {}
        self._partials: dict[str, str] = {}
        self._responses: dict[str, _Resp] = {}
        self._item_to_response: dict[str, str] = {}
        self._resamplers: dict[str, StreamResampler] = {}
        self._encoders: dict[str, Encoder] = {}

    # ---- ids

    def item_for_turn(self, turn_id: str) -> str:
        iid = self._turn_items.get(turn_id)
        if iid is None:
            iid = remember(self._turn_items, turn_id, f"item_{turn_id}", MAX_TRACKED)
        return iid

    def item_for_response(self, response_id: str) -> str:
        r = self._responses.get(response_id)
        return r.item_id if r else f"item_{response_id}"

    def response_for_item(self, item_id: str) -> str | None:
        return self._item_to_response.get(item_id)

    def active_response(self) -> str | None:
        for r in reversed(self._responses.values()):
            if not r.done:
                return r.response_id
        return None

    def is_text_turn(self, turn_id: str) -> bool:
        return turn_id in self._text_turns

    # ---- things the server reports (not engine events)

    def text_item(self, turn_id: str, text: str, item_id: str | None = None) -> list[ServerEvent]:
        """A ``conversation.item.create`` became turn ``turn_id``: added + done events."""
        iid = item_id or f"item_{turn_id}"
        remember(self._turn_items, turn_id, iid, MAX_TRACKED)
        remember(self._text_turns, turn_id, None, MAX_TRACKED)
        remember(self._added, iid, None, MAX_TRACKED)
        prev, self.last_item_id = self.last_item_id, iid
        item = user_item(iid, text=text)
        return [ConversationItemAdded(item=item, previous_item_id=prev), ConversationItemDone(item=item, previous_item_id=prev)]

    def committed(self, turn_id: str) -> list[ServerEvent]:
        """A manual ``input_audio_buffer.commit`` became turn ``turn_id``."""
        return self._commit(turn_id)

    def cancel_requested(self, response_id: str) -> None:
        """The client sent ``response.cancel`` (the cancelled ``response.done`` says ``client_cancelled``)."""
        r = self._responses.get(response_id)
        if r is not None:
            r.cancel_requested = True

    # ---- reply audio

    def encode_job(self, e: Any) -> Job[list[bytes]] | None:
        """The coding work of a ``ReplyAudio`` (a chunk) or a ``ResponseDone`` (the tail of a
        completed response); None for other events, or when there is nothing to code."""
        if isinstance(e, ev.ReplyAudio):
            r = self._response(e.response_id, None)
            x = np.asarray(e.samples, dtype=np.float32).reshape(-1)
            rs = self._resamplers.get(e.response_id)
            if rs is None or rs.rate_in != e.sample_rate:
                rs = None if e.sample_rate == r.format.rate else remember(
                    self._resamplers, e.response_id, StreamResampler(int(e.sample_rate), r.format.rate), MAX_TRACKED)
            pcm = x if rs is None else rs.process(x)
            enc = self._encoders.get(e.response_id) or remember(self._encoders, e.response_id,
                                                                self._new_encoder(r.format), MAX_TRACKED)
            return Job(lambda: enc.push(pcm), enc.offload)
        if isinstance(e, ev.ResponseDone):
            completed = e.status == "completed"
            rs = self._resamplers.pop(e.response_id, None)
            enc = self._encoders.pop(e.response_id, None)
            if not completed or (rs is None and enc is None):
                return None
            r = self._response(e.response_id, None)
            tail = np.zeros(0, np.float32) if rs is None else rs.process(np.zeros(0, np.float32), last=True)
            last = enc or self._new_encoder(r.format)
            return Job(lambda: [*last.push(tail), *last.flush()], last.offload)
        return None

    def _new_encoder(self, fmt: AudioFormat) -> Encoder:
        return FORMATS[fmt.type].encoder(fmt, self.models(fmt.type), reply=True)

    def audio_delta(self, response_id: str, payload: bytes) -> ServerEvent:
        """An already-encoded chunk of reply audio."""
        r = self._response(response_id, None)
        r.audio_bytes += len(payload)
        return ResponseAudioDelta(response_id=response_id, item_id=r.item_id, audio=payload)

    def _deltas(self, e: Any, job: Job[list[bytes]] | None) -> list[ServerEvent]:
        job = job or self.encode_job(e)
        return [] if job is None else [self.audio_delta(e.response_id, p) for p in job.result()]

    # ---- engine events

    def map(self, e: Any, job: Job[list[bytes]] | None = None) -> list[ServerEvent]:
        """Server events for one engine event (in order); unknown objects map to nothing.
        ``job``: the :meth:`encode_job` of this event, when the caller ran it."""
        if isinstance(e, ev.SpeechStarted):
            return [SpeechStarted(item_id=self.item_for_turn(e.turn_id), audio_start_ms=int(e.audio_start_ms))]
        if isinstance(e, ev.SpeechStopped):
            out: list[ServerEvent] = [SpeechStopped(item_id=self.item_for_turn(e.turn_id), audio_end_ms=int(e.audio_end_ms))]
            return out + self._commit(e.turn_id)
        if isinstance(e, ev.TranscriptPartial):
            return self._partial(e)
        if isinstance(e, ev.TranscriptFinal):
            return self._final(e)
        if isinstance(e, ev.ResponseStarted):
            return self._started(e)
        if isinstance(e, ev.ReplyTextDelta):
            r = self._response(e.response_id, None)
            r.text += e.delta
            return [ResponseTranscriptDelta(response_id=r.response_id, item_id=r.item_id, delta=e.delta)]
        if isinstance(e, ev.ReplyAudio):
            return self._deltas(e, job)
        if isinstance(e, ev.Interruption):
            r = self._response(e.response_id, None)
            r.interrupted = {"played_ms": int(e.played_ms), "heard_text": e.heard_text}
            if r.done:  # generated in full, cut while the client played it: the item is truncated
                return [ConversationItemTruncated(item_id=r.item_id, content_index=0, audio_end_ms=int(e.played_ms))]
            return []
        if isinstance(e, ev.ResponseDone):
            return self._done(e, self._deltas(e, job))
        if isinstance(e, ev.TurnMetricsEvent):
            m = e.metrics
            iid = self._turn_items.get(m.turn_id) if m.turn_id else None
            return [S2STurnMetrics(item_id=iid, response_id=m.response_id, metrics=m.to_dict())]
        if isinstance(e, ev.ErrorEvent):
            details: dict[str, Any] = {}
            if e.stage:
                details["s2s_stage"] = e.stage
            if e.turn_id:
                details["s2s_turn_id"] = e.turn_id
            return [Error(code=e.code, message=e.message, error_type=ErrorType.SERVER, details=details)]
        return []

    def _commit(self, turn_id: str) -> list[ServerEvent]:
        iid = self.item_for_turn(turn_id)
        if iid in self._added:
            return []
        remember(self._added, iid, None, MAX_TRACKED)
        prev, self.last_item_id = self.last_item_id, iid
        return [
            InputAudioBufferCommitted(item_id=iid, previous_item_id=prev),
            ConversationItemAdded(item=user_item(iid, transcript=None, status="completed"), previous_item_id=prev),
        ]

    def _partial(self, e: ev.TranscriptPartial) -> list[ServerEvent]:
        if e.turn_id in self._text_turns:
            return []
        iid = self.item_for_turn(e.turn_id)
        before = self._partials.get(e.turn_id, "")
        delta = e.text[len(before) :] if e.text.startswith(before) else ""
        if e.text.startswith(before):
            remember(self._partials, e.turn_id, e.text, MAX_TRACKED)
        return [InputTranscriptionDelta(item_id=iid, delta=delta, s2s_partial=e.text)]

    def _final(self, e: ev.TranscriptFinal) -> list[ServerEvent]:
        if e.turn_id in self._text_turns:
            return []
        out = self._commit(e.turn_id)
        iid = self.item_for_turn(e.turn_id)
        self._partials.pop(e.turn_id, None)
        out.append(InputTranscriptionCompleted(item_id=iid, transcript=e.text, s2s_language=e.language,
                                               s2s_script_ok=e.script_ok))
        out.append(ConversationItemDone(item=user_item(iid, transcript=e.text)))
        return out

    def _response(self, response_id: str, turn_id: str | None) -> _Resp:
        r = self._responses.get(response_id)
        if r is None:
            iid = f"item_{response_id}"
            r = _Resp(response_id, iid, self._turn_items.get(turn_id) if turn_id else None, self.output_format)
            remember(self._responses, response_id, r, MAX_TRACKED, self._forget)  # bounded over long sessions
            self._item_to_response[iid] = response_id
        return r

    def _forget(self, response_id: str, r: _Resp) -> None:
        self._item_to_response.pop(r.item_id, None)
        self._resamplers.pop(response_id, None)
        self._encoders.pop(response_id, None)

    def _started(self, e: ev.ResponseStarted) -> list[ServerEvent]:
        r = self._response(e.response_id, e.turn_id)
        prev, self.last_item_id = self.last_item_id, r.item_id
        resp = _response_object(r.response_id, "in_progress", audio={"output": {"format": None}}, usage=None,
                                metadata=None)
        return [
            ResponseCreated(response=resp),
            ConversationItemAdded(item=assistant_item(r.item_id), previous_item_id=prev),
        ]

    def _done(self, e: ev.ResponseDone, last: list[ServerEvent]) -> list[ServerEvent]:
        r = self._response(e.response_id, None)
        r.done = True
        status = e.status
        heard = e.heard_text if status == "cancelled" else e.text
        item_status = "completed" if status == "completed" else "incomplete"
        item = assistant_item(r.item_id, transcript=heard, status=item_status)
        part = {"response_id": r.response_id, "item_id": r.item_id}
        details: dict[str, Any] | None = None
        if status == "cancelled":
            reason = "turn_detected" if r.interrupted is not None and not r.cancel_requested else "client_cancelled"
            details = {"type": "cancelled", "reason": reason}
        elif status == "failed":
            details = {"type": "failed", "error": {"type": "server_error", "code": "response_failed"}}
        played = e.played_ms
        if r.interrupted is not None:
            played = r.interrupted["played_ms"]
        resp = _response_object(r.response_id, status, usage=None, metadata=None, s2s={
            "text": e.text,
            "heard_text": e.heard_text,
            "audio_ms": int(e.audio_ms),
            "played_ms": int(played),
            "audio_bytes": r.audio_bytes,
        })
        resp.update(status_details=details, output=[item])
        return [
            *last,
            ResponseAudioDone(**part),
            ResponseTranscriptDone(**part, transcript=heard),
            ConversationItemDone(item=item, previous_item_id=None),
            ResponseDone(response=resp),
        ]


__all__ = ["EventMapper", "assistant_item", "user_item"]

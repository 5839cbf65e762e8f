"""The events the server sends, each one pydantic model of its JSON, and :func:`parse_server_event`.

Every field is written, nulls included (as Realtime does). A client reads a server message back
through the same model (lax types, unknown fields ignored), so a field of the wrong type is a
:class:`~remote.protocol.base.ProtocolError` it can skip, and an event type it does not know
stays an :class:`UnknownServerEvent`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from remote.protocol.base import AudioBytes, ErrorCode, ErrorType, ProtocolError, WireModel


class ServerEvent(WireModel):
    """Base of the events the server sends. ``event_id`` is set as it is sent (``event_N``)."""

    model_config = ConfigDict(strict=False)
    type: str = ""
    event_id: str = ""


class SessionCreated(ServerEvent):
    """``session.created``: the first event on every connection; ``session`` as in
    :class:`~remote.protocol.session.SessionConfig`."""

    type: Literal["session.created"] = "session.created"
    session: dict[str, Any] = {}


class SessionUpdated(ServerEvent):
    """``session.updated``: the whole session after a ``session.update``."""

    type: Literal["session.updated"] = "session.updated"
    session: dict[str, Any] = {}


class SpeechStarted(ServerEvent):
    """``input_audio_buffer.speech_started``: VAD heard speech start (barge-in starts here)."""

    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    item_id: str = ""
    audio_start_ms: int = 0


class SpeechStopped(ServerEvent):
    """``input_audio_buffer.speech_stopped``: VAD decided the turn ended."""

    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    item_id: str = ""
    audio_end_ms: int = 0


class InputAudioBufferCommitted(ServerEvent):
    """``input_audio_buffer.committed``: the turn's audio became user item ``item_id``."""

    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str = ""
    previous_item_id: str | None = None


class InputAudioBufferCleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputTranscriptionDelta(ServerEvent):
    """``conversation.item.input_audio_transcription.delta``: text appended to the provisional transcript.

    ``s2s_partial`` (extension) is the whole provisional transcript: partials can be revised, and a
    revision that is not an extension of what was sent has an empty ``delta``.
    """

    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta")
    item_id: str = ""
    content_index: int = 0
    delta: str = ""
    s2s_partial: str = ""


class InputTranscriptionCompleted(ServerEvent):
    """``conversation.item.input_audio_transcription.completed``: the final transcript of a user turn.

    Extensions: ``s2s_language``, the language used or detected; ``s2s_script_ok``, False when the
    transcript is mostly in another script than that language's (the model did not understand),
    null when that cannot be told.
    """

    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed")
    item_id: str = ""
    content_index: int = 0
    transcript: str = ""
    usage: dict[str, Any] = {"type": "duration", "seconds": 0.0}
    s2s_language: str | None = None
    s2s_script_ok: bool | None = None


class ConversationItemAdded(ServerEvent):
    """``conversation.item.added``: an item entered the conversation (``item`` is a Realtime item)."""

    type: Literal["conversation.item.added"] = "conversation.item.added"
    item: dict[str, Any] = {}
    previous_item_id: str | None = None


class ConversationItemDone(ServerEvent):
    """``conversation.item.done``: an item is final."""

    type: Literal["conversation.item.done"] = "conversation.item.done"
    item: dict[str, Any] = {}
    previous_item_id: str | None = None


class ConversationItemTruncated(ServerEvent):
    """``conversation.item.truncated``: answer to ``conversation.item.truncate``."""

    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0


class ResponseCreated(ServerEvent):
    """``response.created``: ``response`` is a Realtime response object, status ``in_progress``."""

    type: Literal["response.created"] = "response.created"
    response: dict[str, Any] = {}


class _OutputPart(ServerEvent):
    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0


class ResponseAudioDelta(_OutputPart):
    """``response.output_audio.delta``: ``audio`` is sent as base64 ``delta`` in the output format."""

    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    audio: AudioBytes = Field(b"", alias="delta")


class ResponseAudioDone(_OutputPart):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"


class ResponseTranscriptDelta(_OutputPart):
    """``response.output_audio_transcript.delta``: reply text as the LLM writes it."""

    type: Literal["response.output_audio_transcript.delta"] = "response.output_audio_transcript.delta"
    delta: str = ""


class ResponseTranscriptDone(_OutputPart):
    """``response.output_audio_transcript.done``: the reply text (only the heard part if cut off)."""

    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    transcript: str = ""


class ResponseDone(ServerEvent):
    """``response.done``: ``response.status`` is completed, cancelled or failed; ``response.s2s`` says
    how much audio was made and played and what text was heard."""

    type: Literal["response.done"] = "response.done"
    response: dict[str, Any] = {}


class ErrorDetail(WireModel):
    """``error`` of an ``error`` event; more fields (``s2s_stage``, ``s2s_turn_id``) follow the five."""

    model_config = ConfigDict(strict=False, extra="allow")
    type: str = ErrorType.INVALID_REQUEST
    code: str | None = None
    message: str = ""
    param: str | None = None
    event_id: str | None = None


class Error(ServerEvent):
    """``error`` in Realtime's shape.

    ``Error(code=, message=, param=, client_event_id=, error_type=, details=)`` builds one (the
    client's event id is ``error.event_id`` on the wire; ``details`` are more fields of ``error``),
    and the same names read one.
    """

    type: Literal["error"] = "error"
    error: ErrorDetail = Field(default_factory=ErrorDetail)

    def __init__(self, /, *, code: str = ErrorCode.SERVER_ERROR, message: str = "", param: str | None = None,
                 client_event_id: str | None = None, error_type: str = ErrorType.INVALID_REQUEST,
                 details: dict[str, Any] | None = None, **fields: Any) -> None:
        if "error" not in fields:
            fields["error"] = ErrorDetail(type=str(error_type), code=str(code), message=message, param=param,
                                          event_id=client_event_id, **(details or {}))
        super().__init__(**fields)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    code = property(lambda self: str(self.error.code or ""))
    message = property(lambda self: self.error.message)
    param = property(lambda self: self.error.param)
    client_event_id = property(lambda self: self.error.event_id)
    error_type = property(lambda self: self.error.type)
    details = property(lambda self: dict(self.error.__pydantic_extra__ or {}))


class S2STurnMetrics(ServerEvent):
    """``s2s.turn.metrics`` (extension): the engine's stage breakdown of one turn.

    ``metrics`` is :meth:`engine.metrics.TurnMetrics.to_dict` (stage ms, ``voice_to_voice_ms``,
    rates, raw ``stamps_ns`` on the server's monotonic clock).

    ``network`` (stamped by the server, not the engine; null when there is nothing to stamp) holds,
    in ms on the server's monotonic clock (the clock of ``s2s.pong.server_time_ms``):

    - ``first_audio_sent_server_ms``: when the first ``response.output_audio.delta`` of this
      response was handed to the socket (null: no audio was sent), and ``first_audio_event_id``,
      that delta's ``event_id``;
    - ``turn_end_message``: the 1-based index, among the WebSocket messages the client sent on this
      connection, of the message that ended the user's turn (the ``append`` that carried the end of
      speech, the ``commit``, or the ``response.create`` of a text turn), its type in
      ``turn_end_message_type``, and ``turn_end_received_server_ms``, when the server read it
      (all null when the turn did not end with a client message).

    A client that timed its own sends and receives turns these into one-way network times with the
    clock offset from ``s2s.ping``/``s2s.pong`` (``RealtimeClient.network_timing``).
    """

    type: Literal["s2s.turn.metrics"] = "s2s.turn.metrics"
    item_id: str | None = None
    response_id: str | None = None
    metrics: dict[str, Any] = {}
    network: dict[str, Any] | None = None


class S2SStats(ServerEvent):
    """``s2s.stats`` (extension), sent periodically.

    Fields:
        gpu: ``{"used_mb", "total_mb"}`` (null on CPU).
        models: per stage, what is loaded.
        sessions: ``{"active", "max"}``.
        session: this connection: ``id``, ``state``, ``uptime_s``, bytes and events in/out.
        server_time_ms: the server's monotonic clock (the clock of ``stamps_ns``), in ms.
    """

    type: Literal["s2s.stats"] = "s2s.stats"
    gpu: dict[str, Any] = {}
    models: dict[str, Any] = {}
    sessions: dict[str, Any] = {}
    session: dict[str, Any] = {}
    profile: str = ""
    device: str = ""
    server_time_ms: float = 0.0


class S2SPong(ServerEvent):
    """``s2s.pong`` (extension): ``client_time_ms`` echoed, plus the server's monotonic clock in ms."""

    type: Literal["s2s.pong"] = "s2s.pong"
    client_time_ms: float = 0.0
    server_time_ms: float = 0.0


class S2SSessionResetDone(ServerEvent):
    """``s2s.session.reset_done`` (extension): the answer to ``s2s.session.reset``.

    Fields:
        session_id: the session (unchanged by a reset).
        cancelled_response_id: the reply the reset cancelled (its cancelled ``response.done`` was
            sent before this event), or null.
    """

    type: Literal["s2s.session.reset_done"] = "s2s.session.reset_done"
    session_id: str = ""
    cancelled_response_id: str | None = None


class UnknownServerEvent(ServerEvent):
    """A server event this module does not know (a client stays forward-compatible)."""

    data: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    @property
    def event_type(self) -> str:
        return str(self.data.get("type", ""))


SERVER_EVENTS: dict[str, type[ServerEvent]] = {
    c.model_fields["type"].default: c
    for c in (
        SessionCreated,
        SessionUpdated,
        SpeechStarted,
        SpeechStopped,
        InputAudioBufferCommitted,
        InputAudioBufferCleared,
        InputTranscriptionDelta,
        InputTranscriptionCompleted,
        ConversationItemAdded,
        ConversationItemDone,
        ConversationItemTruncated,
        ResponseCreated,
        ResponseAudioDelta,
        ResponseAudioDone,
        ResponseTranscriptDelta,
        ResponseTranscriptDone,
        ResponseDone,
        Error,
        S2STurnMetrics,
        S2SStats,
        S2SPong,
        S2SSessionResetDone,
    )
}


def parse_server_event(data: str | bytes) -> ServerEvent:
    """A server message to a typed event (unknown types become :class:`UnknownServerEvent`).

    Raises :class:`ProtocolError` when the message is not a JSON object with a ``type``, or when
    a field of a known event has the wrong type.
    """
    try:
        d = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"server message is not JSON: {exc}") from None
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise ProtocolError(ErrorCode.INVALID_EVENT, "server message is not an event object")
    cls = SERVER_EVENTS.get(d["type"])
    if cls is None:
        return UnknownServerEvent(event_id=str(d.get("event_id", "")), data=d)
    try:
        return cls.model_validate(d)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_EVENT, f"bad '{d['type']}' event: {exc}") from None


__all__ = ["SERVER_EVENTS", "ConversationItemAdded", "ConversationItemDone", "ConversationItemTruncated", "Error",
           "ErrorDetail", "InputAudioBufferCleared", "InputAudioBufferCommitted", "InputTranscriptionCompleted",
           "InputTranscriptionDelta", "ResponseAudioDelta", "ResponseAudioDone", "ResponseCreated", "ResponseDone",
           "ResponseTranscriptDelta", "ResponseTranscriptDone", "S2SPong", "S2SSessionResetDone", "S2SStats",
           "S2STurnMetrics", "ServerEvent", "SessionCreated", "SessionUpdated", "SpeechStarted", "SpeechStopped",
           "UnknownServerEvent", "parse_server_event"]

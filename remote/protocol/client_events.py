"""The events a client sends, each one pydantic model of its JSON, and :func:`parse_client_event`.

Parsing checks the envelope first (size, UTF-8, JSON, an object, ``event_id``, a known ``type``),
then validates the body against the event's model through a discriminated union on ``type``; any
failure is one :class:`~remote.protocol.base.ProtocolError` naming the field as a dotted path.
Nothing else escapes :func:`parse_client_event`, for any input.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from remote.protocol.base import (
    MAX_MESSAGE_BYTES,
    MAX_TEXT_CHARS,
    AudioBytes,
    ErrorCode,
    ProtocolError,
    WireInt,
    WireModel,
    must_be,
    protocol_error,
    refuse,
    type_name,
)
from remote.protocol.session import SessionPatch


class ClientEvent(WireModel):
    """Base of the events a client sends. ``event_id`` is the client's own (optional); fields
    that are None are left out of the JSON."""

    type: str = ""
    event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SessionUpdate(ClientEvent):
    """``session.update``: change formats, turn detection, instructions, language."""

    type: Literal["session.update"] = "session.update"
    session: SessionPatch

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "session": self.session.to_dict()}  # its nulls mean something


class InputAudioBufferAppend(ClientEvent):
    """``input_audio_buffer.append``: ``audio`` holds the decoded bytes (PCM or one Encodec packet)."""

    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: AudioBytes


class InputAudioBufferCommit(ClientEvent):
    """``input_audio_buffer.commit``: end the user turn now (needed when turn detection is off)."""

    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"


class InputAudioBufferClear(ClientEvent):
    """``input_audio_buffer.clear``: drop the audio not yet committed."""

    type: Literal["input_audio_buffer.clear"] = "input_audio_buffer.clear"


class TextPart(WireModel):
    type: Annotated[str, must_be("input_text", ErrorCode.INVALID_VALUE, "only 'input_text' content is supported, "
                                 "got {v!r} (send speech with input_audio_buffer.append)")]
    text: str


class UserMessage(WireModel):
    """The ``item`` of a ``conversation.item.create``: a user message of ``input_text`` parts."""

    type: Annotated[str, must_be("message", ErrorCode.UNSUPPORTED_EVENT, "only 'message' items are supported, "
                                 "got {v!r} (there are no tools)")] = "message"
    role: Annotated[str, must_be("user", ErrorCode.INVALID_VALUE, "only 'user' messages can be added, got {v!r} "
                                 "(set the system prompt with session.update instructions)")]
    content: list[TextPart]
    id: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @field_validator("content")
    @classmethod
    def _some_text(cls, v: list[TextPart]) -> list[TextPart]:
        text = _joined(v)
        if not text:
            raise refuse(ErrorCode.INVALID_VALUE, "the message has no text")
        if len(text) > MAX_TEXT_CHARS:
            raise refuse(ErrorCode.INVALID_VALUE, f"the message is {len(text)} characters long; the limit is "
                                                  f"{MAX_TEXT_CHARS}")
        return v


def _joined(parts: list[TextPart]) -> str:
    return "\n".join(p.text for p in parts if p.text).strip()


class ConversationItemCreate(ClientEvent):
    """``conversation.item.create`` with a user message (its parts are joined by newlines).

    Fields:
        item: the message; ``text`` is its text, ``item_id`` the client's id for it (``item.id``),
            or None to let the server choose.
        previous_item_id: accepted; items are always appended at the end.
    """

    type: Literal["conversation.item.create"] = "conversation.item.create"
    item: UserMessage
    previous_item_id: str | None = None

    @classmethod
    def of_text(cls, text: str, item_id: str | None = None, **fields: Any) -> ConversationItemCreate:
        part = TextPart(type="input_text", text=text)
        return cls(item=UserMessage(type="message", role="user", content=[part], id=item_id), **fields)

    @property
    def text(self) -> str:
        return _joined(self.item.content)

    @property
    def item_id(self) -> str | None:
        return self.item.id


class ResponseParams(WireModel):
    """``response`` of a ``response.create``: per-response overrides, read and ignored."""

    model_config = ConfigDict(extra="allow")
    instructions: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None


class ResponseCreate(ClientEvent):
    """``response.create``: respond now."""

    type: Literal["response.create"] = "response.create"
    response: ResponseParams | None = None


class ResponseCancel(ClientEvent):
    """``response.cancel``: stop the active response (``response.done`` status cancelled follows)."""

    type: Literal["response.cancel"] = "response.cancel"
    response_id: str | None = None


class ConversationItemTruncate(ClientEvent):
    """``conversation.item.truncate``: the client played only ``audio_end_ms`` of an assistant item.

    The history then keeps only the text that audio covered.
    """

    type: Literal["conversation.item.truncate"] = "conversation.item.truncate"
    item_id: str
    content_index: Annotated[WireInt, Field(ge=0, le=0)] = 0
    audio_end_ms: Annotated[WireInt, Field(ge=0, le=24 * 3_600_000)]


class S2SPing(ClientEvent):
    """``s2s.ping`` (extension): ``client_time_ms`` on the client's clock; answered by ``s2s.pong``."""

    type: Literal["s2s.ping"] = "s2s.ping"
    client_time_ms: float


class S2SSessionReset(ClientEvent):
    """``s2s.session.reset`` (extension): forget the conversation and cancel any reply.

    The connection, the session id and its settings stay; the history is emptied, a running reply
    ends with ``response.done`` (cancelled), and ``s2s.session.reset_done`` answers.
    """

    type: Literal["s2s.session.reset"] = "s2s.session.reset"


_CLIENT_EVENTS = (SessionUpdate, InputAudioBufferAppend, InputAudioBufferCommit, InputAudioBufferClear,
                  ConversationItemCreate, ResponseCreate, ResponseCancel, ConversationItemTruncate, S2SPing,
                  S2SSessionReset)
CLIENT_EVENTS: dict[str, type[ClientEvent]] = {c.model_fields["type"].default: c for c in _CLIENT_EVENTS}
_ANY_CLIENT_EVENT: TypeAdapter[ClientEvent] = TypeAdapter(
    Annotated[SessionUpdate | InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear
              | ConversationItemCreate | ResponseCreate | ResponseCancel | ConversationItemTruncate | S2SPing
              | S2SSessionReset, Field(discriminator="type")])

# Realtime GA client events this server does not implement: they get ``unsupported_event``.
UNSUPPORTED_CLIENT_EVENTS = frozenset(
    {
        "conversation.item.retrieve",
        "conversation.item.delete",
        "output_audio_buffer.clear",
        "transcription_session.update",
        "session.close",
    }
)


def parse_client_event(data: str | bytes | bytearray, *, max_bytes: int = MAX_MESSAGE_BYTES) -> ClientEvent:
    """One client message to a typed event; any problem raises :class:`ProtocolError`."""
    d = _envelope(data, max_bytes)
    event_id = d.get("event_id")
    try:
        return _ANY_CLIENT_EVENT.validate_python(d)
    except ValidationError as exc:
        err = protocol_error(exc, drop=1)  # the location starts with the union's tag, the type
        err.event_id = event_id
        raise err from None


def _envelope(data: str | bytes | bytearray, max_bytes: int) -> dict[str, Any]:
    """The message as a JSON object with a known ``type`` and a usable ``event_id``."""
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"message is {size} bytes; the limit is {max_bytes} (send audio in smaller chunks, "
            "about 20-100 ms each)",
        )
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.INVALID_JSON, "message is not UTF-8 text (events are JSON)") from None
    try:
        d = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"message is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(d, dict):
        raise ProtocolError(ErrorCode.INVALID_EVENT, f"an event must be a JSON object, got {type_name(d)}")
    event_id = d.get("event_id")
    if event_id is not None and not (isinstance(event_id, str) and len(event_id) <= 128):
        raise ProtocolError(
            ErrorCode.INVALID_VALUE, "'event_id' must be a string of at most 128 characters", param="event_id"
        )
    kind = d.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(ErrorCode.INVALID_EVENT, "an event needs a string 'type'", param="type", event_id=event_id)
    if kind not in CLIENT_EVENTS:
        if kind in UNSUPPORTED_CLIENT_EVENTS:
            raise ProtocolError(ErrorCode.UNSUPPORTED_EVENT, f"'{kind}' is a Realtime event this server does not "
                                "support", param="type", event_id=event_id)
        raise ProtocolError(ErrorCode.UNKNOWN_EVENT, f"unknown event type '{kind[:80]}'", param="type",
                            event_id=event_id)
    return d


__all__ = ["CLIENT_EVENTS", "UNSUPPORTED_CLIENT_EVENTS", "ClientEvent", "ConversationItemCreate",
           "ConversationItemTruncate", "InputAudioBufferAppend", "InputAudioBufferClear", "InputAudioBufferCommit",
           "ResponseCancel", "ResponseCreate", "ResponseParams", "S2SPing", "S2SSessionReset", "SessionUpdate", "TextPart",
           "UserMessage", "parse_client_event"]

"""The wire protocol: a compatible subset of the OpenAI Realtime API (GA) plus ``s2s.`` extensions.

A pure module, no I/O. It turns JSON text into typed client events (or a :class:`ProtocolError`
shaped like a Realtime ``error``), typed server events into JSON text, and engine
:mod:`engine.events` into server events (:class:`EventMapper`). The WebSocket server
(:mod:`remote.server`) and client (:mod:`remote.client`) are thin asyncio layers over it, so every
rule here is tested without a socket (``tests/test_protocol.py``). The whole protocol is written
down in ``docs/protocol.md``.

Why these choices:

- The event names and shapes are Realtime GA's (``session.update``, ``input_audio_buffer.append``,
  ``response.output_audio.delta``...), so stock Realtime clients and SDKs talk to the engine.
- Our own events live in the ``s2s.`` namespace (``s2s.turn.metrics``, ``s2s.stats``,
  ``s2s.ping``/``s2s.pong``); extra fields inside Realtime objects start with ``s2s`` too. Stock
  clients ignore both.
- Client events are checked against pydantic schemas of their JSON (``_Wire`` models: strict JSON
  types, constraints, our error codes), which :func:`parse_client_event` turns into the typed
  events below; a failure becomes one :class:`ProtocolError` naming the field as a dotted path.
  Server events are checked against their own field types too (pydantic over the dataclasses).
- Besides pydantic, only numpy and the standard library are imported (plus the light
  :mod:`engine.events`, :mod:`engine.audio` for its soxr stream resampler, and
  :mod:`engine.codec_format`, the Encodec packet format); the Encodec model is loaded by the server.

Errors: every failure to parse or validate raises :class:`ProtocolError`; nothing else escapes
:func:`parse_client_event` for any input.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum, StrEnum
from functools import cache
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from engine import events as ev
from engine.audio import StreamResampler
from engine.codec_format import BANDWIDTHS

# --------------------------------------------------------------------------- constants

PCM_RATE = 24_000
"""The only PCM rate on the wire (as in Realtime): 24 kHz, 16-bit little-endian, mono."""
PCM_BYTES_PER_SECOND = PCM_RATE * 2

MAX_MESSAGE_BYTES = 1 << 20
"""Largest client message that is parsed (1 MiB, about 16 s of base64 PCM). A larger one gets an
``error`` (``message_too_large``) and the connection stays open."""
HARD_MAX_MESSAGE_BYTES = 16 << 20
"""Largest frame the WebSocket layer reads at all; a larger one closes the connection (1009)."""
MAX_TEXT_CHARS = 8_000
"""Longest text in ``conversation.item.create`` or ``instructions``."""
MAX_TRACKED = 64
"""Turns and responses one :class:`EventMapper` remembers; older ones are forgotten first."""

ENCODEC_FORMAT = "s2s.encodec"
PCM_FORMAT = "audio/pcm"
ENCODEC_BANDWIDTHS = BANDWIDTHS  # kbps (engine.codec_format: the packet format, no torch)
DEFAULT_ENCODEC_BANDWIDTH = 6.0

SUBPROTOCOL = "realtime"
API_KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


class CloseCode(IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000  # the client or server ended the session normally
    GOING_AWAY = 1001  # the server is shutting down (SIGTERM/SIGINT)
    POLICY_VIOLATION = 1008  # reserved: a policy the handshake could not check
    MESSAGE_TOO_BIG = 1009  # a frame over HARD_MAX_MESSAGE_BYTES
    INTERNAL_ERROR = 1011  # a bug in the server; the session is gone
    TRY_AGAIN_LATER = 1013  # --max-sessions reached
    IDLE_TIMEOUT = 4000  # no client event for --idle-timeout seconds while nothing ran


class ErrorType(StrEnum):
    """``error.type`` values, as in Realtime."""

    INVALID_REQUEST = "invalid_request_error"
    SERVER = "server_error"


class ErrorCode(StrEnum):
    """``error.code`` values. Engine failures pass the engine's own code (``stage_error``...)."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_EVENT = "unknown_event_type"
    UNSUPPORTED_EVENT = "unsupported_event"
    MISSING_FIELD = "missing_required_parameter"
    INVALID_VALUE = "invalid_value"
    INVALID_BASE64 = "invalid_base64"
    MESSAGE_TOO_LARGE = "message_too_large"
    INVALID_AUDIO = "invalid_audio"
    UNSUPPORTED_FORMAT = "unsupported_audio_format"
    CODEC_UNAVAILABLE = "codec_unavailable"
    COMMIT_EMPTY = "input_audio_buffer_commit_empty"
    ACTIVE_RESPONSE = "conversation_already_has_active_response"
    CANCEL_NOT_ACTIVE = "response_cancel_not_active"
    ITEM_NOT_FOUND = "item_not_found"
    INVALID_STATE = "invalid_state"
    SESSION_LIMIT = "session_limit_reached"
    IDLE_TIMEOUT = "idle_timeout"
    SHUTTING_DOWN = "server_shutting_down"
    LOADING = "server_loading"
    SERVER_ERROR = "server_error"


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


# --------------------------------------------------------------------------- errors


class ProtocolError(Exception):
    """A client event that cannot be used. :meth:`to_event` is the ``error`` event to send back.

    Fields:
        code: one of :class:`ErrorCode` (or an engine code).
        message: what is wrong and, where there is one, what to send instead.
        param: the offending field as a dotted path (``session.audio.input.format.rate``), or None.
        event_id: the client's ``event_id`` of the offending event, when it could be read.
        error_type: ``invalid_request_error`` (the client's fault) or ``server_error``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = ErrorType.INVALID_REQUEST,
    ):
        super().__init__(message)
        self.code, self.message, self.param = str(code), message, param
        self.event_id, self.error_type = event_id, str(error_type)

    def to_event(self) -> Error:
        return Error(
            code=self.code,
            message=self.message,
            param=self.param,
            client_event_id=self.event_id,
            error_type=self.error_type,
        )


class _Unset:
    """Marks a field that a ``session.update`` did not mention (different from ``null``)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


# --------------------------------------------------------------------------- wire schemas


def _integral(v: Any) -> Any:
    """JSON numbers like ``1500.0`` count as integers (a Python client's ``json.dumps`` writes them)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


WireInt = Annotated[int, BeforeValidator(_integral)]


class _Wire(BaseModel):
    """Base of the wire schemas: JSON types as they are (no coercion: ``"24000"`` is not a number,
    ``"yes"`` not a boolean), unknown fields ignored (Realtime clients send more than we read),
    no NaN or infinity."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)


def _refuse(code: str, message: str) -> PydanticCustomError:
    """A validation failure with our own error code (the schema's location becomes ``param``)."""
    return PydanticCustomError(str(code), message)


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _protocol_error(exc: ValidationError, prefix: tuple[str, ...] = ()) -> ProtocolError:
    """The first problem of a validation failure as a :class:`ProtocolError` (code, dotted param)."""
    e = exc.errors(include_url=False)[0]
    param = _param(prefix + tuple(e["loc"]))
    kind = e["type"]
    if kind == "missing":
        return ProtocolError(ErrorCode.MISSING_FIELD, f"missing required parameter '{param}'", param=param)
    if kind in _OUR_CODES:
        return ProtocolError(kind, f"'{param}': {e['msg']}", param=param)
    want = _WANTS.get(kind)
    if want is not None:
        return ProtocolError(ErrorCode.INVALID_VALUE, f"'{param}' must be {want}, got {_type_name(e.get('input'))}",
                             param=param)
    return ProtocolError(ErrorCode.INVALID_VALUE, f"'{param}': {e['msg'][0].lower()}{e['msg'][1:]}", param=param)


_OUR_CODES = frozenset(str(c) for c in ErrorCode)
_WANTS = {"model_type": "an object", "dict_type": "an object", "list_type": "an array", "string_type": "a string",
          "int_type": "an integer", "bool_type": "a boolean", "float_type": "a number", "finite_number": "a finite number"}


def _type_name(v: Any) -> str:
    return {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(v), type(v).__name__)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, path: str = "audio") -> bytes:
    """Strict base64 (standard alphabet, padding required); :class:`ProtocolError` otherwise."""
    try:
        return _b64(text)
    except PydanticCustomError as exc:
        raise ProtocolError(ErrorCode.INVALID_BASE64, exc.message(), param=path) from None


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _refuse(ErrorCode.INVALID_BASE64, "not valid base64") from None


Base64Bytes = Annotated[str, AfterValidator(_b64)]
"""A base64 string on the wire, bytes once validated."""


# --------------------------------------------------------------------------- audio formats


@dataclass(frozen=True)
class AudioFormat:
    """An audio format on the wire.

    Fields:
        type: ``audio/pcm`` (16-bit little-endian mono, the default) or ``s2s.encodec``
            (Encodec 24 kHz packets, see ``docs/codec.md``).
        rate: always 24000.
        bandwidth: Encodec kbps (1.5, 3, 6, 12 or 24); None for PCM.
    """

    type: str = PCM_FORMAT
    rate: int = PCM_RATE
    bandwidth: float | None = None

    @property
    def is_encodec(self) -> bool:
        return self.type == ENCODEC_FORMAT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "rate": self.rate}
        if self.is_encodec:
            out["bandwidth"] = self.bandwidth
        return out


PCM = AudioFormat()


class _Format(_Wire):
    type: str = PCM_FORMAT
    rate: WireInt = PCM_RATE
    bandwidth: float = DEFAULT_ENCODEC_BANDWIDTH

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in (PCM_FORMAT, ENCODEC_FORMAT):
            what = "not supported" if v in ("audio/pcmu", "audio/pcma") else "unknown"
            raise _refuse(ErrorCode.UNSUPPORTED_FORMAT,
                          f"audio format {v!r} is {what}; use 'audio/pcm' (24 kHz) or '{ENCODEC_FORMAT}'")
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: int) -> int:
        if v != PCM_RATE:
            raise _refuse(ErrorCode.UNSUPPORTED_FORMAT, f"only rate 24000 is supported, got {v}")
        return v

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, v: float, info: ValidationInfo) -> float:
        if info.data.get("type") == ENCODEC_FORMAT and v not in ENCODEC_BANDWIDTHS:
            raise _refuse(ErrorCode.UNSUPPORTED_FORMAT, f"Encodec bandwidth {v:g} kbps is not supported; use one of "
                                                        f"{', '.join(f'{b:g}' for b in ENCODEC_BANDWIDTHS)}")
        return v

    def domain(self) -> AudioFormat:
        return AudioFormat(ENCODEC_FORMAT, PCM_RATE, self.bandwidth) if self.type == ENCODEC_FORMAT else PCM


def pcm16_decode(data: bytes, path: str = "audio") -> np.ndarray:
    """``audio/pcm`` bytes to int16 samples; an odd byte count is :class:`ProtocolError`."""
    if len(data) % 2:
        raise ProtocolError(ErrorCode.INVALID_AUDIO,
                            f"audio/pcm needs whole 16-bit samples; got {len(data)} bytes (an odd count)", param=path)
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def pcm16_encode(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (or int16) to ``audio/pcm`` bytes (int16 little-endian)."""
    x = np.asarray(samples)
    if x.dtype != np.int16:
        x = np.clip(np.nan_to_num(x.astype(np.float32)), -1.0, 1.0)
        x = np.round(x * 32767.0).astype(np.int16)
    return x.astype("<i2").tobytes()


# --------------------------------------------------------------------------- session config


@dataclass(frozen=True)
class TurnDetection:
    """``audio.input.turn_detection``: server VAD (on by default).

    Fields:
        type: ``server_vad``: the end of turn is decided by the engine's profile policy, or by a
            fixed silence when ``silence_duration_ms`` is given; ``semantic_vad``: by the
            evidence (the audio turn model and the transcript, ``engine.turn``).
        eagerness: ``semantic_vad`` only: ``low`` waits up to twice the profile's longest
            silence for an unfinished sentence, ``high`` half of it; ``medium``/``auto`` as the profile.
        create_response: respond automatically at the end of each turn (default true).
        interrupt_response: barge-in cancels the response (always true here; false is refused).
        silence_duration_ms: the silence that ends a turn (default: the profile's).
        prefix_padding_ms / threshold: reported from the profile; values sent by a client are
            checked and ignored (the VAD is tuned in the profile).
    """

    type: str = "server_vad"
    create_response: bool = True
    interrupt_response: bool = True
    silence_duration_ms: int | None = None
    prefix_padding_ms: int | None = None
    threshold: float | None = None
    eagerness: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }
        for k in ("silence_duration_ms", "prefix_padding_ms", "threshold", "eagerness"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


Milliseconds = Annotated[WireInt, Field(ge=0, le=3_600_000)]


class _TurnDetection(_Wire):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    create_response: bool = True
    interrupt_response: bool = True
    silence_duration_ms: Milliseconds | None = None
    prefix_padding_ms: Milliseconds | None = None
    idle_timeout_ms: Milliseconds | None = None
    threshold: float | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None

    @field_validator("interrupt_response")
    @classmethod
    def _always(cls, v: bool) -> bool:
        if not v:
            raise _refuse(ErrorCode.INVALID_VALUE,
                          "interrupt_response=false is not supported: barge-in always cancels the response")
        return v

    def domain(self) -> TurnDetection:
        return TurnDetection(type=self.type, create_response=self.create_response,
                             silence_duration_ms=self.silence_duration_ms,
                             eagerness=self.eagerness if self.type == "semantic_vad" else None)


class _Transcription(_Wire):
    language: str | None = None
    model: str | None = None  # reported by the server; what a client sends is ignored

    @field_validator("language")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        if v is not None and not (1 < len(v) <= 12 and v.replace("-", "").isalpha()):
            raise _refuse(ErrorCode.INVALID_VALUE, f"not a language code: {v!r}")
        return v


class _AudioIn(_Wire):
    format: _Format | None = None
    turn_detection: _TurnDetection | None = None
    transcription: _Transcription | None = None


class _AudioOut(_Wire):
    format: _Format | None = None
    speed: float | None = None
    voice: str | None = None  # reported by the server; what a client sends is ignored


class _Audio(_Wire):
    input: _AudioIn | None = None
    output: _AudioOut | None = None


class _Session(_Wire):
    type: Literal["realtime"] = "realtime"
    instructions: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None
    output_modalities: list[str] | None = None
    audio: _Audio | None = None

    @field_validator("output_modalities")
    @classmethod
    def _audio_only(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and sorted(v) not in (["audio"], ["audio", "text"]):
            raise _refuse(ErrorCode.INVALID_VALUE, f"only ['audio'] is supported (audio with its transcript), got {v!r}")
        return v

    def patch(self) -> SessionPatch:
        changes: dict[str, Any] = {}
        if "instructions" in self.model_fields_set:
            changes["instructions"] = self.instructions
        a_in = self.audio.input if self.audio else None
        a_out = self.audio.output if self.audio else None
        if a_in is not None and a_in.format is not None:
            changes["input_format"] = a_in.format.domain()
        if a_out is not None and a_out.format is not None:
            changes["output_format"] = a_out.format.domain()
        if a_in is not None and "turn_detection" in a_in.model_fields_set:
            changes["turn_detection"] = a_in.turn_detection.domain() if a_in.turn_detection else None
        if a_in is not None and a_in.transcription is not None and a_in.transcription.language is not None:
            changes["language"] = a_in.transcription.language
        return SessionPatch(**changes)


@dataclass(frozen=True)
class SessionPatch:
    """What one ``session.update`` changes; fields left :data:`UNSET` keep their value.

    Fields:
        instructions: the system prompt (None restores the profile's).
        input_format / output_format: :class:`AudioFormat`.
        turn_detection: :class:`TurnDetection`, or None for manual turns (commit + response.create).
        language: ``audio.input.transcription.language`` (an ISO code such as ``te``).
    """

    instructions: Any = UNSET
    input_format: Any = UNSET
    output_format: Any = UNSET
    turn_detection: Any = UNSET
    language: Any = UNSET

    def to_dict(self) -> dict[str, Any]:
        """The ``session`` object of a ``session.update`` that makes exactly these changes."""
        out: dict[str, Any] = {"type": "realtime"}
        if self.instructions is not UNSET:
            out["instructions"] = self.instructions
        audio_in: dict[str, Any] = {}
        if self.input_format is not UNSET:
            audio_in["format"] = self.input_format.to_dict()
        if self.turn_detection is not UNSET:
            audio_in["turn_detection"] = None if self.turn_detection is None else self.turn_detection.to_dict()
        if self.language is not UNSET:
            audio_in["transcription"] = {"language": self.language}
        audio: dict[str, Any] = {}
        if audio_in:
            audio["input"] = audio_in
        if self.output_format is not UNSET:
            audio["output"] = {"format": self.output_format.to_dict()}
        if audio:
            out["audio"] = audio
        return out

    @classmethod
    def parse(cls, v: Any, path: str = "session") -> SessionPatch:
        """The ``session`` object of a ``session.update``; :class:`ProtocolError` when invalid."""
        try:
            return _Session.model_validate(v).patch()
        except ValidationError as exc:
            raise _protocol_error(exc, (path,)) from None


@dataclass(frozen=True)
class SessionConfig:
    """The whole session as the server reports it in ``session.created`` / ``session.updated``.

    Fields:
        id: the session id (``sess_...``).
        model: the ``model`` query parameter the client connected with (informational).
        instructions: the system prompt in use.
        input_format / output_format: :class:`AudioFormat` of ``input_audio_buffer.append`` and
            ``response.output_audio.delta``.
        turn_detection: :class:`TurnDetection`, or None for manual turns.
        language: the ASR language.
        asr_model / tts_voice: what the engine runs (shown as ``transcription.model`` and ``voice``).
        profile: the engine profile name (``s2s.profile``).
    """

    id: str
    model: str = "s2s"
    instructions: str = ""
    input_format: AudioFormat = PCM
    output_format: AudioFormat = PCM
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    language: str = "te"
    asr_model: str = ""
    tts_voice: str = ""
    profile: str = ""

    def apply(self, patch: SessionPatch) -> SessionConfig:
        """A copy with ``patch``'s fields applied (``instructions=None`` keeps the current text)."""
        changes = {f.name: getattr(patch, f.name) for f in fields(patch) if getattr(patch, f.name) is not UNSET}
        if "instructions" in changes and changes["instructions"] is None:
            del changes["instructions"]
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": self.input_format.to_dict(),
                    "transcription": {"model": self.asr_model, "language": self.language},
                    "noise_reduction": None,
                    "turn_detection": None if self.turn_detection is None else self.turn_detection.to_dict(),
                },
                "output": {"format": self.output_format.to_dict(), "voice": self.tts_voice, "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "s2s": {"profile": self.profile},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionConfig:
        """Read back what :meth:`to_dict` wrote (lenient: missing parts take defaults);
        :class:`ProtocolError` for a session this client cannot use (formats, turn detection)."""
        try:
            w = _SessionReport.model_validate(d)
        except ValidationError as exc:
            raise _protocol_error(exc, ("session",)) from None
        a_in, a_out = (w.audio.input, w.audio.output) if w.audio else (None, None)
        tr = a_in.transcription if a_in else None
        base = cls(id=w.id, model=w.model, instructions=w.instructions or "", language="",
                   asr_model=(tr.model if tr else None) or "", tts_voice=(a_out.voice if a_out else None) or "",
                   profile=str((w.s2s or {}).get("profile", "")))
        return base.apply(w.patch())  # formats, turn detection and language, as a session.update reads them


class _SessionReport(_Session):
    """A server's session object as this client reads it (the rest is ignored)."""

    id: str = ""
    model: str = ""
    s2s: dict[str, Any] | None = None


# --------------------------------------------------------------------------- client events


@dataclass(kw_only=True)
class ClientEvent:
    """Base of the events a client sends. ``event_id`` is the client's own (optional).

    Each event class names its wire schema (``_wire``, a pydantic model of the JSON body) and
    builds itself from a validated one (``_from_wire``); the events without a body need neither.
    """

    type: ClassVar[str] = ""
    _wire: ClassVar[type[_Wire]]
    event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        out.update(self._body())
        return out

    def _body(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_wire(cls, w: Any, event_id: str | None) -> ClientEvent:
        return cls(event_id=event_id)


class _Empty(_Wire):
    pass


ClientEvent._wire = _Empty


class _SessionUpdateWire(_Wire):
    session: _Session


@dataclass(kw_only=True)
class SessionUpdate(ClientEvent):
    """``session.update``: change formats, turn detection, instructions, language."""

    type: ClassVar[str] = "session.update"
    _wire: ClassVar[type[_Wire]] = _SessionUpdateWire
    session: SessionPatch = field(default_factory=SessionPatch)

    def _body(self) -> dict[str, Any]:
        return {"session": self.session.to_dict()}

    @classmethod
    def _from_wire(cls, w: _SessionUpdateWire, event_id: str | None) -> ClientEvent:
        return cls(event_id=event_id, session=w.session.patch())


class _AppendWire(_Wire):
    audio: Base64Bytes


@dataclass(kw_only=True)
class InputAudioBufferAppend(ClientEvent):
    """``input_audio_buffer.append``: ``audio`` holds the decoded bytes (PCM or one Encodec packet)."""

    type: ClassVar[str] = "input_audio_buffer.append"
    _wire: ClassVar[type[_Wire]] = _AppendWire
    audio: bytes = b""

    def _body(self) -> dict[str, Any]:
        return {"audio": b64encode(self.audio)}

    @classmethod
    def _from_wire(cls, w: _AppendWire, event_id: str | None) -> ClientEvent:
        return cls(event_id=event_id, audio=w.audio)  # type: ignore[arg-type]  # bytes once validated


@dataclass(kw_only=True)
class InputAudioBufferCommit(ClientEvent):
    """``input_audio_buffer.commit``: end the user turn now (needed when turn detection is off)."""

    type: ClassVar[str] = "input_audio_buffer.commit"


@dataclass(kw_only=True)
class InputAudioBufferClear(ClientEvent):
    """``input_audio_buffer.clear``: drop the audio not yet committed."""

    type: ClassVar[str] = "input_audio_buffer.clear"


class _TextPart(_Wire):
    type: str
    text: str

    @field_validator("type")
    @classmethod
    def _text_only(cls, v: str) -> str:
        if v != "input_text":
            raise _refuse(ErrorCode.INVALID_VALUE, f"only 'input_text' content is supported, got {v!r} "
                                                   "(send speech with input_audio_buffer.append)")
        return v


class _Message(_Wire):
    type: str = "message"
    role: str
    content: list[_TextPart]
    id: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @field_validator("type")
    @classmethod
    def _message(cls, v: str) -> str:
        if v != "message":
            raise _refuse(ErrorCode.UNSUPPORTED_EVENT, f"only 'message' items are supported, got {v!r} (there are no tools)")
        return v

    @field_validator("role")
    @classmethod
    def _user(cls, v: str) -> str:
        if v != "user":
            raise _refuse(ErrorCode.INVALID_VALUE, f"only 'user' messages can be added, got {v!r} (set the system "
                                                   "prompt with session.update instructions)")
        return v

    @field_validator("content")
    @classmethod
    def _some_text(cls, v: list[_TextPart]) -> list[_TextPart]:
        text = "\n".join(p.text for p in v if p.text).strip()
        if not text:
            raise _refuse(ErrorCode.INVALID_VALUE, "the message has no text")
        if len(text) > MAX_TEXT_CHARS:
            raise _refuse(ErrorCode.INVALID_VALUE, f"the message is {len(text)} characters long; the limit is "
                                                   f"{MAX_TEXT_CHARS}")
        return v


class _ItemCreateWire(_Wire):
    item: _Message
    previous_item_id: str | None = None


@dataclass(kw_only=True)
class ConversationItemCreate(ClientEvent):
    """``conversation.item.create`` with a user message of ``input_text`` parts (joined by newlines).

    Fields:
        text: the user's message.
        item_id: the client's id for the item (``item.id``), or None to let the server choose.
        previous_item_id: accepted; items are always appended at the end.
    """

    type: ClassVar[str] = "conversation.item.create"
    _wire: ClassVar[type[_Wire]] = _ItemCreateWire
    text: str = ""
    item_id: str | None = None
    previous_item_id: str | None = None

    def _body(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": self.text}],
        }
        if self.item_id is not None:
            item["id"] = self.item_id
        out: dict[str, Any] = {"item": item}
        if self.previous_item_id is not None:
            out["previous_item_id"] = self.previous_item_id
        return out

    @classmethod
    def _from_wire(cls, w: _ItemCreateWire, event_id: str | None) -> ClientEvent:
        text = "\n".join(p.text for p in w.item.content if p.text).strip()
        return cls(event_id=event_id, text=text, item_id=w.item.id, previous_item_id=w.previous_item_id)


class _ResponseParams(_Wire):
    model_config = ConfigDict(extra="allow")
    instructions: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None


class _ResponseCreateWire(_Wire):
    response: _ResponseParams | None = None


@dataclass(kw_only=True)
class ResponseCreate(ClientEvent):
    """``response.create``: respond now. Per-response overrides in ``response`` are read and ignored."""

    type: ClassVar[str] = "response.create"
    _wire: ClassVar[type[_Wire]] = _ResponseCreateWire
    response: dict[str, Any] | None = None

    def _body(self) -> dict[str, Any]:
        return {} if self.response is None else {"response": self.response}

    @classmethod
    def _from_wire(cls, w: _ResponseCreateWire, event_id: str | None) -> ClientEvent:
        return cls(event_id=event_id, response=None if w.response is None else w.response.model_dump(exclude_unset=True))


class _ResponseCancelWire(_Wire):
    response_id: str | None = None


@dataclass(kw_only=True)
class ResponseCancel(ClientEvent):
    """``response.cancel``: stop the active response (``response.done`` status cancelled follows)."""

    type: ClassVar[str] = "response.cancel"
    _wire: ClassVar[type[_Wire]] = _ResponseCancelWire
    response_id: str | None = None

    def _body(self) -> dict[str, Any]:
        return {} if self.response_id is None else {"response_id": self.response_id}

    @classmethod
    def _from_wire(cls, w: _ResponseCancelWire, event_id: str | None) -> ClientEvent:
        return cls(event_id=event_id, response_id=w.response_id)


class _TruncateWire(_Wire):
    item_id: str
    content_index: Annotated[WireInt, Field(ge=0, le=0)] = 0
    audio_end_ms: Annotated[WireInt, Field(ge=0, le=24 * 3_600_000)]


@dataclass(kw_only=True)
class ConversationItemTruncate(ClientEvent):
    """``conversation.item.truncate``: the client played only ``audio_end_ms`` of an assistant item.

    The history then keeps only the text that audio covered.
    """

    type: ClassVar[str] = "conversation.item.truncate"
    _wire: ClassVar[type[_Wire]] = _TruncateWire
    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0

    def _body(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "content_index": self.content_index, "audio_end_ms": self.audio_end_ms}

    @classmethod
    def _from_wire(cls, w: _TruncateWire, event_id: str | None) -> ClientEvent:
        return cls(event_id=event_id, item_id=w.item_id, content_index=w.content_index, audio_end_ms=w.audio_end_ms)


class _PingWire(_Wire):
    client_time_ms: float


@dataclass(kw_only=True)
class S2SPing(ClientEvent):
    """``s2s.ping`` (extension): ``client_time_ms`` on the client's clock; answered by ``s2s.pong``."""

    type: ClassVar[str] = "s2s.ping"
    _wire: ClassVar[type[_Wire]] = _PingWire
    client_time_ms: float = 0.0

    def _body(self) -> dict[str, Any]:
        return {"client_time_ms": self.client_time_ms}

    @classmethod
    def _from_wire(cls, w: _PingWire, event_id: str | None) -> ClientEvent:
        return cls(event_id=event_id, client_time_ms=w.client_time_ms)


@dataclass(kw_only=True)
class S2SSessionReset(ClientEvent):
    """``s2s.session.reset`` (extension): forget the conversation and cancel any reply.

    The connection, the session id and its settings stay; the history is emptied, a running reply
    ends with ``response.done`` (cancelled), and ``s2s.session.reset_done`` answers.
    """

    type: ClassVar[str] = "s2s.session.reset"


CLIENT_EVENTS: dict[str, type[ClientEvent]] = {
    c.type: c
    for c in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ConversationItemCreate,
        ResponseCreate,
        ResponseCancel,
        ConversationItemTruncate,
        S2SPing,
        S2SSessionReset,
    )
}


def parse_client_event(data: str | bytes | bytearray, *, max_bytes: int = MAX_MESSAGE_BYTES) -> ClientEvent:
    """One client message to a typed event; any problem raises :class:`ProtocolError`."""
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
        raise ProtocolError(ErrorCode.INVALID_EVENT, f"an event must be a JSON object, got {_type_name(d)}")
    event_id = d.get("event_id")
    if event_id is not None and not (isinstance(event_id, str) and len(event_id) <= 128):
        raise ProtocolError(
            ErrorCode.INVALID_VALUE, "'event_id' must be a string of at most 128 characters", param="event_id"
        )
    kind = d.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(
            ErrorCode.INVALID_EVENT, "an event needs a string 'type'", param="type", event_id=event_id
        )
    cls = CLIENT_EVENTS.get(kind)
    if cls is None:
        if kind in UNSUPPORTED_CLIENT_EVENTS:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_EVENT,
                f"'{kind}' is a Realtime event this server does not support",
                param="type",
                event_id=event_id,
            )
        raise ProtocolError(
            ErrorCode.UNKNOWN_EVENT, f"unknown event type '{kind[:80]}'", param="type", event_id=event_id
        )
    try:
        return cls._from_wire(cls._wire.model_validate(d), event_id)
    except ValidationError as exc:
        err = _protocol_error(exc)
        err.event_id = event_id
        raise err from None


# --------------------------------------------------------------------------- server events


@dataclass(kw_only=True)
class ServerEvent:
    """Base of the events the server sends. ``event_id`` is set when serialised (``event_N``)."""

    type: ClassVar[str] = ""
    event_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "event_id": self.event_id}
        for f in fields(self):
            if f.name != "event_id":
                out[f.metadata.get("wire", f.name)] = _wire_value(getattr(self, f.name), f.metadata)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServerEvent:
        """The event of a server message's dict; its fields' types are checked (``ValueError``)."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            key = f.metadata.get("wire", f.name)
            if key in d:
                v = d[key]
                if f.metadata.get("b64") and isinstance(v, str):
                    v = b64decode(v, key)
                kwargs[f.name] = v
        return _adapter(cls).validate_python(kwargs)


@cache
def _adapter(cls: type[ServerEvent]) -> TypeAdapter[Any]:
    """Validation of a server event's fields against their annotations (pydantic, over the dataclass)."""
    return TypeAdapter(cls)


def _wire_value(v: Any, meta: Mapping[str, Any]) -> Any:
    if meta.get("b64"):
        return b64encode(v)
    return v


def _b64field() -> Any:
    return field(default=b"", metadata={"wire": "delta", "b64": True})


@dataclass(kw_only=True)
class SessionCreated(ServerEvent):
    """``session.created``: the first event on every connection; ``session`` as in :class:`SessionConfig`."""

    type: ClassVar[str] = "session.created"
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class SessionUpdated(ServerEvent):
    """``session.updated``: the whole session after a ``session.update``."""

    type: ClassVar[str] = "session.updated"
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class SpeechStarted(ServerEvent):
    """``input_audio_buffer.speech_started``: VAD heard speech start (barge-in starts here)."""

    type: ClassVar[str] = "input_audio_buffer.speech_started"
    item_id: str = ""
    audio_start_ms: int = 0


@dataclass(kw_only=True)
class SpeechStopped(ServerEvent):
    """``input_audio_buffer.speech_stopped``: VAD decided the turn ended."""

    type: ClassVar[str] = "input_audio_buffer.speech_stopped"
    item_id: str = ""
    audio_end_ms: int = 0


@dataclass(kw_only=True)
class InputAudioBufferCommitted(ServerEvent):
    """``input_audio_buffer.committed``: the turn's audio became user item ``item_id``."""

    type: ClassVar[str] = "input_audio_buffer.committed"
    item_id: str = ""
    previous_item_id: str | None = None


@dataclass(kw_only=True)
class InputAudioBufferCleared(ServerEvent):
    type: ClassVar[str] = "input_audio_buffer.cleared"


@dataclass(kw_only=True)
class InputTranscriptionDelta(ServerEvent):
    """``conversation.item.input_audio_transcription.delta``: text appended to the provisional transcript.

    ``s2s_partial`` (extension) is the whole provisional transcript: partials can be revised, and a
    revision that is not an extension of what was sent has an empty ``delta``.
    """

    type: ClassVar[str] = "conversation.item.input_audio_transcription.delta"
    item_id: str = ""
    content_index: int = 0
    delta: str = ""
    s2s_partial: str = ""


@dataclass(kw_only=True)
class InputTranscriptionCompleted(ServerEvent):
    """``conversation.item.input_audio_transcription.completed``: the final transcript of a user turn.

    Extensions: ``s2s_language``, the language used or detected; ``s2s_script_ok``, False when the
    transcript is mostly in another script than that language's (the model did not understand),
    null when that cannot be told.
    """

    type: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    item_id: str = ""
    content_index: int = 0
    transcript: str = ""
    usage: dict[str, Any] = field(default_factory=lambda: {"type": "duration", "seconds": 0.0})
    s2s_language: str | None = None
    s2s_script_ok: bool | None = None


@dataclass(kw_only=True)
class ConversationItemAdded(ServerEvent):
    """``conversation.item.added``: an item entered the conversation (``item`` is a Realtime item)."""

    type: ClassVar[str] = "conversation.item.added"
    item: dict[str, Any] = field(default_factory=dict)
    previous_item_id: str | None = None


@dataclass(kw_only=True)
class ConversationItemDone(ServerEvent):
    """``conversation.item.done``: an item is final."""

    type: ClassVar[str] = "conversation.item.done"
    item: dict[str, Any] = field(default_factory=dict)
    previous_item_id: str | None = None


@dataclass(kw_only=True)
class ConversationItemTruncated(ServerEvent):
    """``conversation.item.truncated``: answer to ``conversation.item.truncate``."""

    type: ClassVar[str] = "conversation.item.truncated"
    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0


@dataclass(kw_only=True)
class ResponseCreated(ServerEvent):
    """``response.created``: ``response`` is a Realtime response object, status ``in_progress``."""

    type: ClassVar[str] = "response.created"
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class _OutputPart(ServerEvent):
    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0


@dataclass(kw_only=True)
class ResponseAudioDelta(_OutputPart):
    """``response.output_audio.delta``: ``audio`` is sent as base64 ``delta`` in the output format."""

    type: ClassVar[str] = "response.output_audio.delta"
    audio: bytes = _b64field()


@dataclass(kw_only=True)
class ResponseAudioDone(_OutputPart):
    type: ClassVar[str] = "response.output_audio.done"


@dataclass(kw_only=True)
class ResponseTranscriptDelta(_OutputPart):
    """``response.output_audio_transcript.delta``: reply text as the LLM writes it."""

    type: ClassVar[str] = "response.output_audio_transcript.delta"
    delta: str = ""


@dataclass(kw_only=True)
class ResponseTranscriptDone(_OutputPart):
    """``response.output_audio_transcript.done``: the reply text (only the heard part if cut off)."""

    type: ClassVar[str] = "response.output_audio_transcript.done"
    transcript: str = ""


@dataclass(kw_only=True)
class ResponseDone(ServerEvent):
    """``response.done``: ``response.status`` is completed, cancelled or failed; ``response.s2s`` says
    how much audio was made and played and what text was heard."""

    type: ClassVar[str] = "response.done"
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Error(ServerEvent):
    """``error`` in Realtime's shape. ``client_event_id`` is ``error.event_id`` on the wire."""

    type: ClassVar[str] = "error"
    code: str = ErrorCode.SERVER_ERROR
    message: str = ""
    param: str | None = None
    client_event_id: str | None = None
    error_type: str = ErrorType.INVALID_REQUEST
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "type": str(self.error_type),
            "code": str(self.code),
            "message": self.message,
            "param": self.param,
            "event_id": self.client_event_id,
        }
        err.update(self.details)
        return {"type": self.type, "event_id": self.event_id, "error": err}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServerEvent:
        err = dict(d.get("error") or {})
        known = {"type", "code", "message", "param", "event_id"}
        return cls(
            event_id=str(d.get("event_id", "")),
            code=str(err.get("code") or ""),
            message=str(err.get("message") or ""),
            param=err.get("param"),
            client_event_id=err.get("event_id"),
            error_type=str(err.get("type") or ErrorType.INVALID_REQUEST),
            details={k: v for k, v in err.items() if k not in known},
        )


@dataclass(kw_only=True)
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

    type: ClassVar[str] = "s2s.turn.metrics"
    item_id: str | None = None
    response_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] | None = None


@dataclass(kw_only=True)
class S2SStats(ServerEvent):
    """``s2s.stats`` (extension), sent periodically.

    Fields:
        gpu: ``{"used_mb", "total_mb"}`` (null on CPU).
        models: per stage, what is loaded.
        sessions: ``{"active", "max"}``.
        session: this connection: ``id``, ``state``, ``uptime_s``, bytes and events in/out.
        server_time_ms: the server's monotonic clock (the clock of ``stamps_ns``), in ms.
    """

    type: ClassVar[str] = "s2s.stats"
    gpu: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)
    session: dict[str, Any] = field(default_factory=dict)
    profile: str = ""
    device: str = ""
    server_time_ms: float = 0.0


@dataclass(kw_only=True)
class S2SPong(ServerEvent):
    """``s2s.pong`` (extension): ``client_time_ms`` echoed, plus the server's monotonic clock in ms."""

    type: ClassVar[str] = "s2s.pong"
    client_time_ms: float = 0.0
    server_time_ms: float = 0.0


@dataclass(kw_only=True)
class S2SSessionResetDone(ServerEvent):
    """``s2s.session.reset_done`` (extension): the answer to ``s2s.session.reset``.

    Fields:
        session_id: the session (unchanged by a reset).
        cancelled_response_id: the reply the reset cancelled (its cancelled ``response.done`` was
            sent before this event), or null.
    """

    type: ClassVar[str] = "s2s.session.reset_done"
    session_id: str = ""
    cancelled_response_id: str | None = None


@dataclass(kw_only=True)
class UnknownServerEvent(ServerEvent):
    """A server event this module does not know (a client stays forward-compatible)."""

    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    @property
    def event_type(self) -> str:
        return str(self.data.get("type", ""))


SERVER_EVENTS: dict[str, type[ServerEvent]] = {
    c.type: c
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


def serialize(event: ServerEvent | ClientEvent) -> str:
    """An event as compact JSON text (UTF-8 kept as is, so Telugu stays readable)."""
    return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))


def parse_server_event(data: str | bytes) -> ServerEvent:
    """A server message to a typed event (unknown types become :class:`UnknownServerEvent`).

    Raises :class:`ProtocolError` only when the message is not a JSON object with a ``type``.
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
        return cls.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(ErrorCode.INVALID_EVENT, f"bad '{d['type']}' event: {exc}") from None


# --------------------------------------------------------------------------- engine -> wire


def user_item(item_id: str, *, text: str | None = None, transcript: str | None = None, status: str = "completed") -> dict[str, Any]:
    """A Realtime user message item: ``input_text`` when ``text`` is given, else ``input_audio``."""
    part = {"type": "input_text", "text": text} if text is not None else {"type": "input_audio", "transcript": transcript}
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": status, "content": [part]}


def assistant_item(item_id: str, transcript: str | None = None, status: str = "in_progress") -> dict[str, Any]:
    content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


@dataclass
class _Resp:
    response_id: str
    item_id: str
    turn_item_id: str | None
    text: str = ""
    audio_bytes: int = 0
    interrupted: dict[str, Any] | None = None
    cancel_requested: bool = False
    done: bool = False


class EventMapper:
    """Maps one session's engine events to server events; pure and stateful (ids, item order).

    Item ids: a user turn ``turn_N`` becomes item ``item_turn_N`` (or the client's ``item.id`` for a
    text message); response ``resp_N`` writes assistant item ``item_resp_N``.

    The server calls :meth:`map` for every :class:`engine.events.SessionEvent`, except that it may
    encode reply audio itself (Encodec, off the event loop): it then takes the 24 kHz samples from
    :meth:`reply_pcm` / :meth:`reply_tail` and calls :meth:`audio_delta`.

    Reply audio at another rate than 24 kHz goes through one soxr stream resampler per response,
    which keeps its filter state between chunks (no clicks at chunk edges); the samples it still
    holds come out as a last audio delta before ``response.output_audio.done`` of a completed
    response, and are dropped for a cancelled one.

    Memory is bounded: the mapper remembers the last :data:`MAX_TRACKED` turns and responses (ids,
    items, partial text, resamplers) and forgets older ones first. Events only refer to recent ones;
    an event for a forgotten turn still gets the same ``item_<turn>`` id.
    """

    def __init__(self) -> None:
        self.last_item_id: str | None = None
        self._turn_items: dict[str, str] = {}
        self._added: dict[str, None] = {}  # an ordered set
        self._text_turns: dict[str, None] = {}
        self._partials: dict[str, str] = {}
        self._responses: dict[str, _Resp] = {}
        self._item_to_response: dict[str, str] = {}
        self._resamplers: dict[str, StreamResampler] = {}

    # ---- ids

    def item_for_turn(self, turn_id: str) -> str:
        iid = self._turn_items.get(turn_id)
        if iid is None:
            iid = _remember(self._turn_items, turn_id, f"item_{turn_id}")
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

    # ---- things the server reports (not engine events)

    def text_item(self, turn_id: str, text: str, item_id: str | None = None) -> list[ServerEvent]:
        """A ``conversation.item.create`` became turn ``turn_id``: added + done events."""
        iid = item_id or f"item_{turn_id}"
        _remember(self._turn_items, turn_id, iid)
        _remember(self._text_turns, turn_id, None)
        _remember(self._added, iid, None)
        prev, self.last_item_id = self.last_item_id, iid
        item = user_item(iid, text=text)
        return [ConversationItemAdded(item=item, previous_item_id=prev), ConversationItemDone(item=item, previous_item_id=prev)]

    def cancel_requested(self, response_id: str) -> None:
        """The client sent ``response.cancel`` (the cancelled ``response.done`` says ``client_cancelled``)."""
        r = self._responses.get(response_id)
        if r is not None:
            r.cancel_requested = True

    def reply_pcm(self, e: ev.ReplyAudio) -> np.ndarray:
        """A chunk of reply audio as float32 at 24 kHz (stream-resampled when it is not)."""
        x = np.asarray(e.samples, dtype=np.float32).reshape(-1)
        rs = self._resamplers.get(e.response_id)
        if rs is None or rs.rate_in != e.sample_rate:
            if e.sample_rate == PCM_RATE:
                return x
            rs = _remember(self._resamplers, e.response_id, StreamResampler(int(e.sample_rate), PCM_RATE))
        return rs.process(x)

    def reply_tail(self, response_id: str, keep: bool = True) -> np.ndarray:
        """What the response's resampler still holds (empty at 24 kHz); ``keep=False`` drops it."""
        rs = self._resamplers.pop(response_id, None)
        if rs is None or not keep:
            return np.zeros(0, np.float32)
        return rs.process(np.zeros(0, np.float32), last=True)

    def audio_delta(self, response_id: str, payload: bytes) -> ServerEvent:
        """An already-encoded chunk of reply audio."""
        r = self._response(response_id, None)
        r.audio_bytes += len(payload)
        return ResponseAudioDelta(response_id=response_id, item_id=r.item_id, audio=payload)

    # ---- engine events

    def map(self, e: Any) -> list[ServerEvent]:
        """Server events for one engine event (in order); unknown objects map to nothing."""
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
            pcm = self.reply_pcm(e)
            return [self.audio_delta(e.response_id, pcm16_encode(pcm))] if pcm.size else []
        if isinstance(e, ev.Interruption):
            r = self._response(e.response_id, None)
            r.interrupted = {"played_ms": int(e.played_ms), "heard_text": e.heard_text}
            if r.done:  # generated in full, cut while the client played it: the item is truncated
                return [ConversationItemTruncated(item_id=r.item_id, content_index=0, audio_end_ms=int(e.played_ms))]
            return []
        if isinstance(e, ev.ResponseDone):
            return self._done(e)
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

    def committed(self, turn_id: str) -> list[ServerEvent]:
        """A manual ``input_audio_buffer.commit`` became turn ``turn_id``."""
        return self._commit(turn_id)

    def _commit(self, turn_id: str) -> list[ServerEvent]:
        iid = self.item_for_turn(turn_id)
        if iid in self._added:
            return []
        _remember(self._added, iid, None)
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
            _remember(self._partials, e.turn_id, e.text)
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
            r = _Resp(response_id, iid, self._turn_items.get(turn_id) if turn_id else None)
            self._responses[response_id] = r
            self._item_to_response[iid] = response_id
            while len(self._responses) > MAX_TRACKED:  # keep memory bounded over long sessions
                old = next(iter(self._responses))
                self._item_to_response.pop(self._responses.pop(old).item_id, None)
                self._resamplers.pop(old, None)
        return r

    def _started(self, e: ev.ResponseStarted) -> list[ServerEvent]:
        r = self._response(e.response_id, e.turn_id)
        prev, self.last_item_id = self.last_item_id, r.item_id
        resp = {
            "id": r.response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": "conv_default",
            "output_modalities": ["audio"],
            "audio": {"output": {"format": None}},
            "usage": None,
            "metadata": None,
        }
        return [
            ResponseCreated(response=resp),
            ConversationItemAdded(item=assistant_item(r.item_id), previous_item_id=prev),
        ]

    def _done(self, e: ev.ResponseDone) -> list[ServerEvent]:
        r = self._response(e.response_id, None)
        tail = self.reply_tail(e.response_id, keep=e.status == "completed")
        last = [self.audio_delta(r.response_id, pcm16_encode(tail))] if tail.size else []
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
        resp = {
            "id": r.response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [item],
            "conversation_id": "conv_default",
            "output_modalities": ["audio"],
            "usage": None,
            "metadata": None,
            "s2s": {
                "text": e.text,
                "heard_text": e.heard_text,
                "audio_ms": int(e.audio_ms),
                "played_ms": int(played),
                "audio_bytes": r.audio_bytes,
            },
        }
        return [
            *last,
            ResponseAudioDone(**part),
            ResponseTranscriptDone(**part, transcript=heard),
            ConversationItemDone(item=item, previous_item_id=None),
            ResponseDone(response=resp),
        ]


def _remember(d: dict[str, Any], key: str, value: Any) -> Any:
    """``d[key] = value`` as the newest entry; the oldest go while ``d`` holds over :data:`MAX_TRACKED`."""
    d.pop(key, None)
    d[key] = value
    while len(d) > MAX_TRACKED:
        del d[next(iter(d))]
    return value

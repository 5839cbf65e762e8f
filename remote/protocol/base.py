"""What every part of the wire protocol shares: limits, the wire's enums, the error, the model base.

- Limits and names: :data:`MAX_MESSAGE_BYTES`, :data:`SUBPROTOCOL`...
- Enums of the wire's codes: :class:`CloseCode` (WebSocket close codes), :class:`ErrorType` and
  :class:`ErrorCode` (``error.type`` / ``error.code``).
- :class:`ProtocolError`, the one exception of the protocol: a client event (or a server message,
  read by a client) that cannot be used. :meth:`ProtocolError.to_event` is the ``error`` to send.
- :class:`WireModel`, the pydantic base of every event and object on the wire: its fields are the
  JSON's fields, so the model validates what arrives (:meth:`pydantic.BaseModel.model_validate`,
  strict JSON types) and writes what leaves (:meth:`WireModel.to_dict`). :func:`protocol_error`
  turns a validation failure into the Realtime ``error`` (code, dotted ``param``).

Why pydantic: one class per shape says its JSON types, limits and error codes; the same class
parses, validates and serialises, so a shape is never written twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import IntEnum, StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from engine.errors import S2SError

MAX_MESSAGE_BYTES = 1 << 20
"""Largest client message that is parsed (1 MiB, about 16 s of base64 PCM). A larger one gets an
``error`` (``message_too_large``) and the connection stays open."""
HARD_MAX_MESSAGE_BYTES = 16 << 20
"""Largest frame the WebSocket layer reads at all; a larger one closes the connection (1009)."""
MAX_TEXT_CHARS = 8_000
"""Longest text in ``conversation.item.create`` or ``instructions``."""
MAX_TRACKED = 64
"""Turns and responses one event mapper remembers; older ones are forgotten first."""

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


# --------------------------------------------------------------------------- the error


class ProtocolError(S2SError):
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

    def to_event(self) -> Any:
        """The ``error`` server event (:class:`remote.protocol.server_events.Error`)."""
        from remote.protocol.server_events import Error

        return Error(code=self.code, message=self.message, param=self.param, client_event_id=self.event_id,
                     error_type=self.error_type)


class _Unset:
    """Marks a setting that a ``session.update`` did not mention (different from ``null``)."""

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


# --------------------------------------------------------------------------- the model base


class WireModel(BaseModel):
    """Base of every event and object on the wire.

    Reading (``model_validate``) takes JSON types as they are: no coercion (``"24000"`` is not a
    number, ``"yes"`` not a boolean), unknown fields ignored (Realtime clients send more than we
    read), no NaN or infinity. Building one in Python (``Cls(field=...)``) trusts its caller, as a
    dataclass would: the fields are taken as given, without validation, so a program can send what
    it likes and the peer's validation answers (and the server's own events cost nothing to make).
    """

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, validate_by_name=True,
                              validate_by_alias=True)

    def __init__(self, /, **data: Any) -> None:
        built = type(self).model_construct(**data)
        for slot in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
            object.__setattr__(self, slot, getattr(built, slot))

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # validation never calls it

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this event or object."""
        return self.model_dump(mode="json", by_alias=True)


class WireValue(WireModel):
    """A value object (an audio format, a turn-detection setting): always written whole, less the
    options it does not have (None), whatever the enclosing object leaves out."""

    @model_serializer
    def _whole(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def serialize(event: WireModel) -> str:
    """An event as compact JSON text (UTF-8 kept as is, so Telugu stays readable)."""
    return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- wire types and errors


def _integral(v: Any) -> Any:
    """JSON numbers like ``1500.0`` count as integers (a Python client's ``json.dumps`` writes them)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


WireInt = Annotated[int, BeforeValidator(_integral)]


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64(text: Any) -> Any:
    if not isinstance(text, str):
        return text  # bytes from Python; anything else fails as "must be a string"
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise refuse(ErrorCode.INVALID_BASE64, "not valid base64") from None


def b64decode(text: str, path: str = "audio") -> bytes:
    """Strict base64 (standard alphabet, padding required); :class:`ProtocolError` otherwise."""
    try:
        return _b64(str(text))
    except PydanticCustomError as exc:
        raise ProtocolError(ErrorCode.INVALID_BASE64, exc.message(), param=path) from None


AudioBytes = Annotated[bytes, BeforeValidator(_b64), PlainSerializer(b64encode, when_used="json")]
"""Bytes in Python, standard base64 (padding required) on the wire."""


def refuse(code: str, message: str) -> PydanticCustomError:
    """A validation failure with our own error code (the field's location becomes ``param``)."""
    return PydanticCustomError(str(code), message)


def must_be(value: Any, code: str, message: str) -> AfterValidator:
    """A field that only ``value`` passes (``Annotated[str, must_be(...)]``); anything else is refused
    with ``code`` and ``message``, where ``{v!r}`` names what was sent."""

    def check(v: Any) -> Any:
        if v != value:
            raise refuse(code, message.format(v=v))
        return v

    return AfterValidator(check)


def protocol_error(exc: ValidationError, prefix: tuple[str, ...] = (), *, drop: int = 0) -> ProtocolError:
    """The first problem of a validation failure as a :class:`ProtocolError` (code, dotted param):
    ``prefix`` goes before the failing field's location, ``drop`` leading parts are left out (the
    tag of a discriminated union)."""
    e = exc.errors(include_url=False)[0]
    param = _param(prefix + tuple(e["loc"])[drop:])
    kind = e["type"]
    if kind == "missing":
        return ProtocolError(ErrorCode.MISSING_FIELD, f"missing required parameter '{param}'", param=param)
    if kind in _OUR_CODES:
        return ProtocolError(kind, f"'{param}': {e['msg']}", param=param)
    want = _WANTS.get(kind)
    if want is not None:
        return ProtocolError(ErrorCode.INVALID_VALUE, f"'{param}' must be {want}, got {type_name(e.get('input'))}",
                             param=param)
    return ProtocolError(ErrorCode.INVALID_VALUE, f"'{param}': {e['msg'][0].lower()}{e['msg'][1:]}", param=param)


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_OUR_CODES = frozenset(str(c) for c in ErrorCode)
_WANTS = {"model_type": "an object", "dict_type": "an object", "list_type": "an array", "string_type": "a string",
          "bytes_type": "a string", "int_type": "an integer", "bool_type": "a boolean", "float_type": "a number",
          "finite_number": "a finite number"}


def type_name(v: Any) -> str:
    """The JSON name of a value's type (``null``, ``boolean``, ``array``...)."""
    return {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), type(v).__name__)


__all__ = ["API_KEY_SUBPROTOCOL_PREFIX", "HARD_MAX_MESSAGE_BYTES", "MAX_MESSAGE_BYTES", "MAX_TEXT_CHARS", "MAX_TRACKED",
           "SUBPROTOCOL", "UNSET", "AudioBytes", "CloseCode", "ErrorCode", "ErrorType", "ProtocolError", "WireInt",
           "WireModel", "WireValue", "b64decode", "b64encode", "must_be", "protocol_error", "refuse", "serialize",
           "type_name"]

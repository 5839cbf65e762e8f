"""The Realtime session object: what a ``session.update`` asks for, and what the server reports.

Both are the same JSON tree (``session.audio.input.format``...), so both are built from the same
models: :class:`TurnDetection`, :class:`Transcription`, :class:`AudioInput`, :class:`AudioOutput`,
:class:`SessionAudio` and :class:`~remote.protocol.formats.AudioFormat`.

- :class:`SessionPatch` is the ``session`` of a ``session.update``: what it mentions changes, the
  rest keeps its value (pydantic's "fields set" is that distinction, so ``null`` and "not sent"
  differ without a sentinel on the wire). :meth:`SessionPatch.changes` reads it as settings.
- :class:`SessionConfig` is the whole session as ``session.created`` / ``session.updated`` report it.

A *setting* is one named place in the tree (:data:`SETTINGS`: ``input_format`` is
``audio.input.format``); both classes take settings as keywords (``SessionPatch(language="te")``)
and a config reads them as attributes (``config.input_format``).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from remote.protocol.base import (
    MAX_TEXT_CHARS,
    UNSET,
    ErrorCode,
    WireInt,
    WireModel,
    WireValue,
    must_be,
    protocol_error,
    refuse,
)
from remote.protocol.formats import PCM, AudioFormat

Milliseconds = Annotated[WireInt, Field(ge=0, le=3_600_000)]


class TurnDetection(WireValue):
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
            checked and ignored (the VAD is tuned in the profile), as is ``idle_timeout_ms``.
    """

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    create_response: bool = True
    interrupt_response: Annotated[bool, must_be(True, ErrorCode.INVALID_VALUE, "interrupt_response=false is not "
                                                "supported: barge-in always cancels the response")] = True
    silence_duration_ms: Milliseconds | None = None
    prefix_padding_ms: Milliseconds | None = None
    idle_timeout_ms: Milliseconds | None = None
    threshold: float | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class Transcription(WireModel):
    """``audio.input.transcription``: ``language`` (an ISO code, or ``auto``); ``model`` is reported
    by the server (the ASR model), what a client sends is ignored."""

    model: str | None = None
    language: str | None = None

    @field_validator("language")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        if v is not None and not (1 < len(v) <= 12 and v.replace("-", "").isalpha()):
            raise refuse(ErrorCode.INVALID_VALUE, f"not a language code: {v!r}")
        return v


class AudioInput(WireModel):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    noise_reduction: Any = None  # reported as null; what a client sends is ignored
    turn_detection: TurnDetection | None = None


class AudioOutput(WireModel):
    format: AudioFormat | None = None
    voice: str | None = None  # reported by the server (the TTS model); what a client sends is ignored
    speed: float | None = None


class SessionAudio(WireModel):
    input: AudioInput | None = None
    output: AudioOutput | None = None


SETTINGS: dict[str, tuple[str, ...]] = {
    "instructions": ("instructions",),
    "input_format": ("audio", "input", "format"),
    "output_format": ("audio", "output", "format"),
    "turn_detection": ("audio", "input", "turn_detection"),
    "language": ("audio", "input", "transcription", "language"),
}
"""What a ``session.update`` can change, by name, and where it is in the session object."""
REPORTED: dict[str, tuple[str, ...]] = {
    **SETTINGS,
    "asr_model": ("audio", "input", "transcription", "model"),
    "tts_voice": ("audio", "output", "voice"),
    "profile": ("s2s", "profile"),
    "formats": ("s2s", "formats"),
}
"""The settings plus what only the server reports."""
_NULL_MEANS_SOMETHING = ("instructions", "turn_detection")  # the profile's prompt; manual turns


class SessionPatch(WireModel):
    """The ``session`` object of a ``session.update``; only what it mentions changes.

    ``SessionPatch(turn_detection=None, language="te")`` builds one from settings (:data:`UNSET`
    values are left out); :meth:`changes` reads one back.
    """

    type: Literal["realtime"] = "realtime"
    instructions: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None
    output_modalities: list[str] | None = None
    audio: SessionAudio | None = None

    def __init__(self, /, **data: Any) -> None:
        settings = {k: data.pop(k) for k in list(data) if k in SETTINGS}
        super().__init__(**data)
        for name, value in settings.items():
            if value is not UNSET:
                _set(self, SETTINGS[name], value)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def model_post_init(self, context: Any) -> None:
        self.__pydantic_fields_set__.add("type")  # always written: Realtime needs session.type

    @field_validator("output_modalities")
    @classmethod
    def _audio_only(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and sorted(v) not in (["audio"], ["audio", "text"]):
            raise refuse(ErrorCode.INVALID_VALUE, f"only ['audio'] is supported (audio with its transcript), got {v!r}")
        return v

    def changes(self) -> dict[str, Any]:
        """The settings this update changes (``instructions``/``turn_detection`` may be None: the
        profile's prompt, manual turns; a null format or language changes nothing)."""
        return {name: _get(self, path) for name, path in SETTINGS.items()
                if _mentioned(self, path) and (_get(self, path) is not None or name in _NULL_MEANS_SOMETHING)}

    def merge(self, later: SessionPatch) -> SessionPatch:
        """One patch with what both change (``later`` wins)."""
        return SessionPatch(**{**self.changes(), **later.changes()})

    def to_dict(self) -> dict[str, Any]:
        """What it mentions, nulls included."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def parse(cls, v: Any, path: str = "session") -> SessionPatch:
        """The ``session`` object of a ``session.update``; :class:`ProtocolError` when invalid."""
        try:
            return cls.model_validate(v)
        except ValidationError as exc:
            raise protocol_error(exc, (path,)) from None


def _default_audio() -> SessionAudio:
    return SessionAudio(
        input=AudioInput(format=PCM, transcription=Transcription(model="", language="te"), noise_reduction=None,
                         turn_detection=TurnDetection()),
        output=AudioOutput(format=PCM, voice="", speed=1.0),
    )


class SessionConfig(WireModel):
    """The whole session as the server reports it in ``session.created`` / ``session.updated``.

    Settings (keywords and attributes, see :data:`REPORTED`):
        id: the session id (``sess_...``); model: the ``model`` query parameter the client
            connected with (informational); instructions: the system prompt in use.
        input_format / output_format: :class:`AudioFormat` of ``input_audio_buffer.append`` and
            ``response.output_audio.delta``.
        turn_detection: :class:`TurnDetection`, or None for manual turns.
        language: the ASR language.
        asr_model / tts_voice: what the engine runs (shown as ``transcription.model`` and ``voice``).
        profile: the engine profile name (``s2s.profile``).
        formats: the audio formats this server codes (``s2s.formats``, names of
            :data:`~remote.protocol.formats.FORMATS`); None from a server that does not say
            (another Realtime server: a client then keeps ``audio/pcm``).
    """

    type: Literal["realtime"] = "realtime"
    object: str = "realtime.session"
    id: str = ""
    model: str = "s2s"
    output_modalities: list[str] = ["audio"]
    instructions: str = ""
    audio: SessionAudio = Field(default_factory=_default_audio)
    tools: list[Any] = []
    tool_choice: Any = "auto"
    max_output_tokens: Any = "inf"
    s2s: dict[str, Any] = Field(default_factory=lambda: {"profile": ""})

    def __init__(self, /, **data: Any) -> None:
        settings = {k: data.pop(k) for k in list(data) if k in REPORTED and k not in type(self).model_fields}
        super().__init__(**data)
        for name, value in settings.items():
            _set(self, REPORTED[name], value)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    input_format = property(lambda self: _get(self, REPORTED["input_format"]))
    output_format = property(lambda self: _get(self, REPORTED["output_format"]))
    turn_detection = property(lambda self: _get(self, REPORTED["turn_detection"]))
    language = property(lambda self: _get(self, REPORTED["language"]))
    asr_model = property(lambda self: _get(self, REPORTED["asr_model"]))
    tts_voice = property(lambda self: _get(self, REPORTED["tts_voice"]))
    profile = property(lambda self: _get(self, REPORTED["profile"]))
    formats = property(lambda self: _get(self, REPORTED["formats"]))

    def updated(self, **settings: Any) -> SessionConfig:
        """A copy with these settings (names of :data:`REPORTED`) changed."""
        new = self.model_copy(deep=True)
        for name, value in settings.items():
            _set(new, REPORTED[name], value)
        return new

    def apply(self, patch: SessionPatch) -> SessionConfig:
        """A copy with ``patch``'s changes applied (``instructions=None`` keeps the current text)."""
        changes = patch.changes()
        if changes.get("instructions", "") is None:
            del changes["instructions"]
        return self.updated(**changes)

    @classmethod
    def from_dict(cls, d: Any) -> SessionConfig:
        """Read back what :meth:`to_dict` wrote (lenient: missing settings take defaults);
        :class:`ProtocolError` for a session this client cannot use (formats, turn detection)."""
        try:
            config = cls.model_validate(d)
        except ValidationError as exc:
            raise protocol_error(exc, ("session",)) from None
        defaults = cls()
        missing = {name: _get(defaults, path) for name, path in REPORTED.items()
                   if not _mentioned(config, path) and _get(defaults, path) is not None}
        return config.updated(**missing) if missing else config


# --------------------------------------------------------------------------- paths in the tree


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        node = node.get(name) if isinstance(node, dict) else getattr(node, name, None)
        if node is None:
            return None
    return node


def _mentioned(node: Any, path: tuple[str, ...]) -> bool:
    for name in path:
        if node is None or name not in (node if isinstance(node, dict) else node.model_fields_set):
            return False
        node = node[name] if isinstance(node, dict) else getattr(node, name)
    return True


def _set(node: Any, path: tuple[str, ...], value: Any) -> None:
    """Set the value at ``path``, making the objects on the way (they count as set)."""
    *parents, leaf = path
    for name in parents:
        child = node.get(name) if isinstance(node, dict) else getattr(node, name)
        if child is None:
            child = {} if isinstance(node, dict) else _model_of(type(node), name)()
            _put(node, name, child)
        node = child
    _put(node, leaf, value)


def _put(node: Any, name: str, value: Any) -> None:
    if isinstance(node, dict):
        node[name] = value
    else:
        setattr(node, name, value)


def _model_of(cls: type[BaseModel], name: str) -> type:
    """The model class (or ``dict``) a field holds, from its annotation (``X | None``)."""
    for t in (cls.model_fields[name].annotation, *typing.get_args(cls.model_fields[name].annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return dict


__all__ = ["REPORTED", "SETTINGS", "AudioInput", "AudioOutput", "SessionAudio", "SessionConfig", "SessionPatch",
           "Transcription", "TurnDetection"]

"""Audio formats on the wire: their JSON object, their negotiation and the server's coding, in one place.

A format is a :class:`FormatSpec` in :data:`FORMATS`: its wire name (``audio/pcm``, ``s2s.encodec``),
the rates and parameters a ``session.update`` may ask for (checked when :class:`AudioFormat` is
read, with the Realtime error), whether the server must load a shared model first (Encodec's
weights), and the server's stream decoder (``input_audio_buffer.append`` bytes to samples) and
encoder (reply samples to ``response.output_audio.delta`` payloads). The formats: ``audio/pcm``
(24 kHz), G.711 ``audio/pcmu``/``audio/pcma`` (8 kHz, :mod:`remote.protocol.g711`), ``s2s.opus``
(20 ms Opus packets with a ``bitrate``, :mod:`remote.protocol.opus`) and ``s2s.encodec`` (with a
``bandwidth``). A new format is one more spec here, plus its parameter on :class:`AudioFormat`;
nothing else in the server names a format. A client uses the same specs the other way round: a
spec's encoder codes its microphone, its decoder the reply.

The coders run where the I/O layer puts them: a :class:`Job` wraps the work of one event and says
whether it belongs off the event loop (:attr:`Job.offload`: a neural codec), so the rules stay
free of threads. Only numpy is imported here (and :mod:`remote.codec_format`'s bandwidth table);
the Encodec model comes from the server, PyAV (Opus) is imported when a session asks for Opus.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_serializer

from remote.codec_format import BANDWIDTHS
from remote.protocol import g711, opus
from remote.protocol.base import ErrorCode, ProtocolError, WireInt, WireValue, refuse
from remote.protocol.opus import DEFAULT_OPUS_BITRATE, OPUS_BITRATES, OPUS_FORMAT

PCM_FORMAT = "audio/pcm"
PCMU_FORMAT = "audio/pcmu"
PCMA_FORMAT = "audio/pcma"
ENCODEC_FORMAT = "s2s.encodec"
PCM_RATE = 24_000
"""The only PCM rate on the wire (as in Realtime): 24 kHz, 16-bit little-endian, mono."""
PCM_BYTES_PER_SECOND = PCM_RATE * 2
ENCODEC_BANDWIDTHS = BANDWIDTHS  # kbps (remote.codec_format: the packet format, no torch)
DEFAULT_ENCODEC_BANDWIDTH = 6.0
REALTIME_FORMATS_NOT_SUPPORTED: tuple[str, ...] = ()
"""Realtime formats a client may ask for that this server does not speak (none now)."""


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


# --------------------------------------------------------------------------- coding work

T = TypeVar("T")


class Job(Generic[T]):
    """The audio work of one event: decoding an append's bytes, or encoding a chunk of reply audio.

    The I/O layer runs it (``job()``), on a worker thread when :attr:`offload` is true (a neural
    codec), and hands it back with its event; :meth:`result` runs it in place when nobody did. A
    :class:`ProtocolError` of the work (a malformed packet) comes out of :meth:`result`.
    """

    def __init__(self, work: Callable[[], T], offload: bool = False):
        self.offload = offload
        self._work: Callable[[], T] | None = work
        self._value: Any = None
        self._error: ProtocolError | None = None

    def __call__(self) -> None:
        work, self._work = self._work, None
        if work is not None:
            try:
                self._value = work()
            except ProtocolError as err:
                self._error = err

    def result(self) -> T:
        self()
        if self._error is not None:
            raise self._error
        return self._value


class Decoder(Protocol):
    """Client audio in: one ``append``'s bytes to samples at :attr:`rate` (the format's rate, or
    the rate its codec gives: Opus decodes at 48 kHz, and the engine resamples once)."""

    offload: bool
    rate: int

    def push(self, data: bytes) -> np.ndarray: ...
    def reset(self) -> None: ...


class Encoder(Protocol):
    """Reply audio out: float samples at the format's rate to delta payloads."""

    offload: bool

    def push(self, pcm: np.ndarray) -> list[bytes]: ...
    def flush(self) -> list[bytes]: ...


class PcmDecoder:
    offload = False
    rate = PCM_RATE

    def push(self, data: bytes) -> np.ndarray:
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            raise ProtocolError(ErrorCode.INVALID_AUDIO,
                                "this is a WAV file; send raw audio/pcm (24 kHz 16-bit mono) without its header",
                                param="audio")
        return pcm16_decode(data)

    def reset(self) -> None:
        pass


class PcmEncoder:
    offload = False

    def push(self, pcm: np.ndarray) -> list[bytes]:
        return [pcm16_encode(pcm)] if len(pcm) else []

    def flush(self) -> list[bytes]:
        return []


class EncodecDecoder:
    """One :class:`remote.codec.EncodecStreamDecoder` per session: packets join smoothly."""

    offload = True
    rate = PCM_RATE

    def __init__(self, codec: Any):
        self.stream = codec.stream_decoder()

    def push(self, data: bytes) -> np.ndarray:
        from engine.errors import AudioError

        try:
            return self.stream.push(data)
        except AudioError as exc:
            raise ProtocolError(ErrorCode.INVALID_AUDIO, f"not a valid {ENCODEC_FORMAT} packet: {exc}",
                                param="audio") from None

    def reset(self) -> None:
        self.stream.reset()


class EncodecEncoder:
    """One :class:`remote.codec.EncodecStreamEncoder` per response."""

    offload = True

    def __init__(self, codec: Any, bandwidth: float):
        self.stream = codec.stream_encoder(bandwidth)

    def push(self, pcm: np.ndarray) -> list[bytes]:
        return self.stream.push(pcm)

    def flush(self) -> list[bytes]:
        packet = self.stream.flush()
        return [] if packet is None else [packet]


class G711Decoder:
    """``audio/pcmu`` / ``audio/pcma`` bytes (one per sample, any count) to int16 at 8 kHz."""

    offload = False
    rate = g711.G711_RATE

    def __init__(self, law: str):
        self.law = law

    def push(self, data: bytes) -> np.ndarray:
        return g711.decode(data, self.law)

    def reset(self) -> None:
        pass


class G711Encoder:
    offload = False

    def __init__(self, law: str):
        self.law = law

    def push(self, pcm: np.ndarray) -> list[bytes]:
        return [g711.encode(pcm, self.law)] if len(pcm) else []

    def flush(self) -> list[bytes]:
        return []


# --------------------------------------------------------------------------- the formats


class FormatSpec:
    """One audio format: its wire name, what negotiation accepts, and the server's coders.

    Fields:
        type: the wire name (``format.type``).
        rates: the sample rates it may be asked for (the first is the default).
        hint: how an error message names it.
        needs_model: the server loads a shared model before a session may use it (``model`` below).
        rate_on_wire: the format object carries ``rate`` (G.711's has none in Realtime).
        param: its one parameter's field name (``bandwidth``, ``bitrate``), or None.
        param_default / param_choices: what the parameter is when not given, and what it may be.
        param_label: how a refusal names it, ``{}`` standing for the value ("Opus bitrate {} kbit/s").
    """

    type: ClassVar[str]
    rates: ClassVar[tuple[int, ...]] = (PCM_RATE,)
    hint: ClassVar[str]
    needs_model: ClassVar[bool] = False
    rate_on_wire: ClassVar[bool] = True
    param: ClassVar[str | None] = None
    param_default: ClassVar[float] = 0
    param_choices: ClassVar[tuple[float, ...]] = ()
    param_label: ClassVar[str] = "{}"

    def unavailable(self) -> str | None:
        """Why this server cannot code the format (a library missing), or None."""
        return None

    def check(self, name: str, value: Any) -> Any:
        """A format parameter (``bandwidth``...) as the session keeps it; ``refuse`` when it is
        not supported. Parameters of other formats are dropped (None)."""
        if name != self.param:
            return None
        if value is None:
            return self.param_default
        if value not in self.param_choices:
            raise refuse(ErrorCode.UNSUPPORTED_FORMAT, f"{self.param_label.format(f'{value:g}')} is not supported; "
                                                       f"use one of {', '.join(f'{c:g}' for c in self.param_choices)}")
        return value

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        raise NotImplementedError

    def encoder(self, fmt: AudioFormat, model: Any, reply: bool = False) -> Encoder:
        """A stream encoder; ``reply``: for the server's reply audio, which is ready faster than
        real time (a format may then pack more per message, see ``s2s.opus``)."""
        raise NotImplementedError


class _Pcm(FormatSpec):
    type = PCM_FORMAT
    hint = "'audio/pcm' (24 kHz)"

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        return PcmDecoder()

    def encoder(self, fmt: AudioFormat, model: Any, reply: bool = False) -> Encoder:
        return PcmEncoder()


class _Encodec(FormatSpec):
    type = ENCODEC_FORMAT
    hint = f"'{ENCODEC_FORMAT}'"
    needs_model = True
    param, param_default, param_choices = "bandwidth", DEFAULT_ENCODEC_BANDWIDTH, ENCODEC_BANDWIDTHS
    param_label = "Encodec bandwidth {} kbps"

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        return EncodecDecoder(model)

    def encoder(self, fmt: AudioFormat, model: Any, reply: bool = False) -> Encoder:
        return EncodecEncoder(model, fmt.bandwidth or DEFAULT_ENCODEC_BANDWIDTH)


class _G711(FormatSpec):
    rates = (g711.G711_RATE,)
    rate_on_wire = False
    law: ClassVar[str]

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        return G711Decoder(self.law)

    def encoder(self, fmt: AudioFormat, model: Any, reply: bool = False) -> Encoder:
        return G711Encoder(self.law)


class _Pcmu(_G711):
    type = PCMU_FORMAT
    hint = "'audio/pcmu' (G.711 μ-law, 8 kHz)"
    law = "ulaw"


class _Pcma(_G711):
    type = PCMA_FORMAT
    hint = "'audio/pcma' (G.711 A-law, 8 kHz)"
    law = "alaw"


class _Opus(FormatSpec):
    type = OPUS_FORMAT
    rates = opus.OPUS_RATES
    hint = f"'{OPUS_FORMAT}' (bitrate {', '.join(map(str, OPUS_BITRATES))} kbit/s)"

    def unavailable(self) -> str | None:
        return _opus_unavailable()

    param, param_default, param_choices = "bitrate", DEFAULT_OPUS_BITRATE, OPUS_BITRATES
    param_label = "Opus bitrate {} kbit/s"

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        return opus.OpusStreamDecoder()

    def encoder(self, fmt: AudioFormat, model: Any, reply: bool = False) -> Encoder:
        if reply:  # ready faster than real time: five frames a packet
            return opus.OpusStreamEncoder(fmt.rate, fmt.bitrate or DEFAULT_OPUS_BITRATE, opus.OPUS_REPLY_PACKET_MS)
        # the microphone: a frame of speech waits for the next, a quiet one goes at once
        return opus.OpusStreamEncoder(fmt.rate, fmt.bitrate or DEFAULT_OPUS_BITRATE, pair_voiced=True)


@functools.cache
def _opus_unavailable() -> str | None:
    return opus.unavailable()


FORMATS: dict[str, FormatSpec] = {s.type: s for s in (_Pcm(), _Pcmu(), _Pcma(), _Opus(), _Encodec())}
"""Every format this server speaks, by wire name."""


_PARAMETERS = ("bandwidth", "bitrate")
"""The format parameters on :class:`AudioFormat` (each spec's ``check`` reads its own)."""


class AudioFormat(WireValue):
    """An audio format on the wire (``audio.input.format`` / ``audio.output.format``).

    Fields:
        type: a name in :data:`FORMATS`: ``audio/pcm`` (16-bit little-endian mono, the default),
            ``audio/pcmu`` / ``audio/pcma`` (G.711 at 8 kHz), ``s2s.opus`` (one Opus packet per
            message: one or two 20 ms frames up, five down) or ``s2s.encodec`` (Encodec 24 kHz packets, see ``docs/codec.md``).
        rate: the sample rate: 24000 for PCM and Encodec; 24000 (default), 16000 or 48000 for
            Opus; 8000 for G.711 (not written: Realtime's G.711 object has no rate).
        bandwidth: Encodec kbps (1.5, 3, 6, 12 or 24; 6 when not given); None for other formats.
        bitrate: Opus kbit/s (12, 16, 24 or 32; 16 when not given); None for other formats.

    ``AudioFormat(type, rate, bandwidth)`` also works positionally; a parameter not given takes
    the format's default.
    """

    type: str = PCM_FORMAT
    rate: WireInt | None = Field(None, validate_default=True)
    bandwidth: float | None = Field(None, validate_default=True)
    bitrate: WireInt | None = Field(None, validate_default=True)

    def __init__(self, type: str = PCM_FORMAT, rate: int | None = None, bandwidth: float | None = None, /,
                 **fields: Any) -> None:
        fields["bandwidth"] = bandwidth if bandwidth is not None else fields.get("bandwidth")
        spec = FORMATS.get(type)
        if spec is not None:  # what a session.update without them means
            rate = spec.rates[0] if rate is None else rate
            for name in _PARAMETERS:
                if fields.get(name) is None:
                    fields[name] = spec.check(name, None)
        super().__init__(type=type, rate=rate, **fields)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.type]

    @property
    def is_encodec(self) -> bool:
        return self.type == ENCODEC_FORMAT

    @property
    def label(self) -> str:
        """A short human name: ``audio/pcm``, ``s2s.opus 16 kbit/s``, ``s2s.encodec 6 kbps``."""
        if self.type == OPUS_FORMAT:
            return f"{self.type} {self.bitrate or DEFAULT_OPUS_BITRATE} kbit/s"
        if self.type == ENCODEC_FORMAT:
            return f"{self.type} {self.bandwidth or DEFAULT_ENCODEC_BANDWIDTH:g} kbps"
        return self.type

    @model_serializer
    def _whole(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        spec = FORMATS.get(self.type)
        if spec is not None and not spec.rate_on_wire:
            d.pop("rate", None)
        return d

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FORMATS:
            what = "not supported" if v in REALTIME_FORMATS_NOT_SUPPORTED else "unknown"
            use = ", ".join(s.hint for s in FORMATS.values())
            raise refuse(ErrorCode.UNSUPPORTED_FORMAT, f"audio format {v!r} is {what}; use {use}")
        why = FORMATS[v].unavailable()
        if why:
            raise refuse(ErrorCode.CODEC_UNAVAILABLE, f"the {v} format is not available on this server: {why}")
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: int | None, info: ValidationInfo) -> int | None:
        spec = FORMATS.get(info.data.get("type", ""))
        if spec is None:
            return v
        if v is None:
            return spec.rates[0]
        if v not in spec.rates:
            rates = " or ".join(str(r) for r in spec.rates)
            raise refuse(ErrorCode.UNSUPPORTED_FORMAT, f"{spec.type}: only rate {rates} is supported, got {v}")
        return v

    @field_validator(*_PARAMETERS)  # each format parameter: its spec decides
    @classmethod
    def _parameter(cls, v: Any, info: ValidationInfo) -> Any:
        spec = FORMATS.get(info.data.get("type", ""))
        return None if spec is None else spec.check(str(info.field_name), v)


PCM = AudioFormat()


def offered() -> list[str]:
    """The formats this server can code now (``session.s2s.formats``: a client picks from them)."""
    return [name for name, spec in FORMATS.items() if not spec.unavailable()]


__all__ = ["DEFAULT_ENCODEC_BANDWIDTH", "DEFAULT_OPUS_BITRATE", "ENCODEC_BANDWIDTHS", "ENCODEC_FORMAT", "FORMATS",
           "OPUS_BITRATES", "OPUS_FORMAT", "PCM", "PCMA_FORMAT", "PCMU_FORMAT", "PCM_BYTES_PER_SECOND", "PCM_FORMAT",
           "PCM_RATE", "REALTIME_FORMATS_NOT_SUPPORTED", "AudioFormat", "Decoder", "Encoder", "EncodecDecoder",
           "EncodecEncoder", "FormatSpec", "G711Decoder", "G711Encoder", "Job", "PcmDecoder", "PcmEncoder", "offered",
           "pcm16_decode", "pcm16_encode"]

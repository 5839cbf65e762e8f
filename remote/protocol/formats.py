"""Audio formats on the wire: their JSON object, their negotiation and the server's coding, in one place.

A format is a :class:`FormatSpec` in :data:`FORMATS`: its wire name (``audio/pcm``, ``s2s.encodec``),
the rates and parameters a ``session.update`` may ask for (checked when :class:`AudioFormat` is
read, with the Realtime error), whether the server must load a shared model first (Encodec's
weights), and the server's stream decoder (``input_audio_buffer.append`` bytes to samples) and
encoder (reply samples to ``response.output_audio.delta`` payloads). A new format (Opus with a
bitrate, G.711 ``audio/pcmu``/``audio/pcma`` at 8 kHz) is one more spec here, plus its parameter on
:class:`AudioFormat`; nothing else in the server names a format.

The coders run where the I/O layer puts them: a :class:`Job` wraps the work of one event and says
whether it belongs off the event loop (:attr:`Job.offload`: a neural codec), so the rules stay
free of threads. Only numpy is imported here (and :mod:`engine.codec_format`'s bandwidth table);
the Encodec model comes from the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from engine.codec_format import BANDWIDTHS
from remote.protocol.base import ErrorCode, ProtocolError, WireInt, WireValue, refuse

PCM_FORMAT = "audio/pcm"
ENCODEC_FORMAT = "s2s.encodec"
PCM_RATE = 24_000
"""The only PCM rate on the wire (as in Realtime): 24 kHz, 16-bit little-endian, mono."""
PCM_BYTES_PER_SECOND = PCM_RATE * 2
ENCODEC_BANDWIDTHS = BANDWIDTHS  # kbps (engine.codec_format: the packet format, no torch)
DEFAULT_ENCODEC_BANDWIDTH = 6.0
REALTIME_FORMATS_NOT_SUPPORTED = ("audio/pcmu", "audio/pcma")
"""Realtime formats a client may ask for that this server does not speak (yet)."""


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
    """Client audio in: one ``append``'s bytes to samples at the format's rate."""

    offload: bool

    def push(self, data: bytes) -> np.ndarray: ...
    def reset(self) -> None: ...


class Encoder(Protocol):
    """Reply audio out: float samples at the format's rate to delta payloads."""

    offload: bool

    def push(self, pcm: np.ndarray) -> list[bytes]: ...
    def flush(self) -> list[bytes]: ...


class PcmDecoder:
    offload = False

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
    """One :class:`engine.codec.EncodecStreamDecoder` per session: packets join smoothly."""

    offload = True

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
    """One :class:`engine.codec.EncodecStreamEncoder` per response."""

    offload = True

    def __init__(self, codec: Any, bandwidth: float):
        self.stream = codec.stream_encoder(bandwidth)

    def push(self, pcm: np.ndarray) -> list[bytes]:
        return self.stream.push(pcm)

    def flush(self) -> list[bytes]:
        packet = self.stream.flush()
        return [] if packet is None else [packet]


# --------------------------------------------------------------------------- the formats


class FormatSpec:
    """One audio format: its wire name, what negotiation accepts, and the server's coders.

    Fields:
        type: the wire name (``format.type``).
        rates: the sample rates it may be asked for (the first is the default).
        hint: how an error message names it.
        needs_model: the server loads a shared model before a session may use it (``model`` below).
    """

    type: ClassVar[str]
    rates: ClassVar[tuple[int, ...]] = (PCM_RATE,)
    hint: ClassVar[str]
    needs_model: ClassVar[bool] = False

    def check(self, name: str, value: Any) -> Any:
        """A format parameter (``bandwidth``...) as the session keeps it; ``refuse`` when it is
        not supported. Parameters of other formats are dropped (None)."""
        return None

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        raise NotImplementedError

    def encoder(self, fmt: AudioFormat, model: Any) -> Encoder:
        raise NotImplementedError


class _Pcm(FormatSpec):
    type = PCM_FORMAT
    hint = "'audio/pcm' (24 kHz)"

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        return PcmDecoder()

    def encoder(self, fmt: AudioFormat, model: Any) -> Encoder:
        return PcmEncoder()


class _Encodec(FormatSpec):
    type = ENCODEC_FORMAT
    hint = f"'{ENCODEC_FORMAT}'"
    needs_model = True

    def check(self, name: str, value: Any) -> Any:
        if name != "bandwidth":
            return None
        if value is None:
            return DEFAULT_ENCODEC_BANDWIDTH
        if value not in ENCODEC_BANDWIDTHS:
            raise refuse(ErrorCode.UNSUPPORTED_FORMAT, f"Encodec bandwidth {value:g} kbps is not supported; use one of "
                                                       f"{', '.join(f'{b:g}' for b in ENCODEC_BANDWIDTHS)}")
        return value

    def decoder(self, fmt: AudioFormat, model: Any) -> Decoder:
        return EncodecDecoder(model)

    def encoder(self, fmt: AudioFormat, model: Any) -> Encoder:
        return EncodecEncoder(model, fmt.bandwidth or DEFAULT_ENCODEC_BANDWIDTH)


FORMATS: dict[str, FormatSpec] = {s.type: s for s in (_Pcm(), _Encodec())}
"""Every format this server speaks, by wire name."""


class AudioFormat(WireValue):
    """An audio format on the wire (``audio.input.format`` / ``audio.output.format``).

    Fields:
        type: a name in :data:`FORMATS`: ``audio/pcm`` (16-bit little-endian mono, the default) or
            ``s2s.encodec`` (Encodec 24 kHz packets, see ``docs/codec.md``).
        rate: always 24000.
        bandwidth: Encodec kbps (1.5, 3, 6, 12 or 24; 6 when not given); None for PCM.

    ``AudioFormat(type, rate, bandwidth)`` also works positionally.
    """

    type: str = PCM_FORMAT
    rate: WireInt = PCM_RATE
    bandwidth: float | None = Field(None, validate_default=True)

    def __init__(self, type: str = PCM_FORMAT, rate: int = PCM_RATE, bandwidth: float | None = None, /,
                 **fields: Any) -> None:
        super().__init__(**{"type": type, "rate": rate, "bandwidth": bandwidth, **fields})

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.type]

    @property
    def is_encodec(self) -> bool:
        return self.type == ENCODEC_FORMAT

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FORMATS:
            what = "not supported" if v in REALTIME_FORMATS_NOT_SUPPORTED else "unknown"
            use = " or ".join(s.hint for s in FORMATS.values())
            raise refuse(ErrorCode.UNSUPPORTED_FORMAT, f"audio format {v!r} is {what}; use {use}")
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: int, info: ValidationInfo) -> int:
        spec = FORMATS.get(info.data.get("type", ""))
        if spec is not None and v not in spec.rates:
            rates = " or ".join(str(r) for r in spec.rates)
            raise refuse(ErrorCode.UNSUPPORTED_FORMAT, f"only rate {rates} is supported, got {v}")
        return v

    @field_validator("bandwidth")  # each format parameter: its spec decides
    @classmethod
    def _parameter(cls, v: Any, info: ValidationInfo) -> Any:
        spec = FORMATS.get(info.data.get("type", ""))
        return None if spec is None else spec.check(str(info.field_name), v)


PCM = AudioFormat()


__all__ = ["DEFAULT_ENCODEC_BANDWIDTH", "ENCODEC_BANDWIDTHS", "ENCODEC_FORMAT", "FORMATS", "PCM", "PCM_BYTES_PER_SECOND",
           "PCM_FORMAT", "PCM_RATE", "REALTIME_FORMATS_NOT_SUPPORTED", "AudioFormat", "Decoder", "Encoder",
           "EncodecDecoder", "EncodecEncoder", "FormatSpec", "Job", "PcmDecoder", "PcmEncoder", "pcm16_decode",
           "pcm16_encode"]

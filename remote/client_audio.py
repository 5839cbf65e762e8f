"""The client's audio coding: microphone samples to ``append`` payloads, reply payloads to samples.

:class:`ClientAudio` uses the server's own format specs (:data:`remote.protocol.FORMATS`) the
other way round: a spec's encoder codes the microphone in the session's input format, its decoder
the reply in the format its response started with. Around them it resamples once (the
microphone's rate to the format's; a decoder's rate to :data:`PLAY_RATE`), cuts stream formats
(PCM, G.711) to fit the message limit, and loads Encodec's weights when a format needs them.

:func:`parse_choice` reads what a user asks for (``--audio-format opus:24``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bounded import remember
from remote import protocol as p

if TYPE_CHECKING:  # pragma: no cover
    from remote.codec import EncodecCodec

PLAY_RATE = p.PCM_RATE
"""The rate of the samples :meth:`ClientAudio.decode` gives (24 kHz, as PCM)."""
CHOICES = ("opus", "opus:12", "opus:16", "opus:24", "opus:32", "pcm", "pcmu", "pcma", "encodec")
"""What ``--audio-format`` takes (``encodec:BANDWIDTH`` too)."""
_STREAM_FORMATS = (p.PCM_FORMAT, p.PCMU_FORMAT, p.PCMA_FORMAT)  # any cut of their bytes is valid


def parse_choice(text: str, mic_rate: int | None = None) -> p.AudioFormat:
    """``pcm``, ``pcmu``, ``pcma``, ``opus`` / ``opus:KBPS``, ``encodec`` / ``encodec:KBPS`` (or a wire
    name) to a format. Opus takes the microphone's rate when it can code it (no resampling)."""
    name, _, param = text.strip().lower().partition(":")
    name = {"pcm": p.PCM_FORMAT, "pcmu": p.PCMU_FORMAT, "ulaw": p.PCMU_FORMAT, "pcma": p.PCMA_FORMAT,
            "alaw": p.PCMA_FORMAT, "opus": p.OPUS_FORMAT, "encodec": p.ENCODEC_FORMAT}.get(name, name)
    try:
        value = float(param) if param else None
    except ValueError:
        raise ValueError(f"{text!r}: the part after ':' must be a number (opus:24)") from None
    d: dict[str, Any] = {"type": name}
    if name == p.OPUS_FORMAT:
        d["bitrate"] = int(value) if value is not None else None
        if mic_rate in p.FORMATS[name].rates:
            d["rate"] = mic_rate
    elif name == p.ENCODEC_FORMAT:
        d["bandwidth"] = value
    try:
        return p.AudioFormat.model_validate({k: v for k, v in d.items() if v is not None})
    except Exception as exc:  # noqa: BLE001 - a ProtocolError from the validator, said plainly
        raise ValueError(f"{text!r} is not an audio format this client knows: {exc}") from None


class ClientAudio:
    """One client's audio coding (see the module docstring).

    Attributes:
        input_format: the format appends are coded in: the last one this client asked for (a
            ``session.update`` applies before the appends that follow it), set back when the
            server refuses it.
    """

    def __init__(self, codec_factory: Callable[[], EncodecCodec] | None = None):
        self.codec_factory = codec_factory
        self.input_format: p.AudioFormat = p.PCM
        self._codec: EncodecCodec | None = None
        self._resamplers: dict[int, Any] = {}
        self._encoder: p.Encoder | None = None
        self._formats: dict[str, p.AudioFormat] = {}  # response id -> the output format it started with
        self._decoders: dict[str, tuple[p.Decoder, Any]] = {}

    def _models(self, name: str) -> Any:
        if name == p.ENCODEC_FORMAT and self._codec is None:
            raise RuntimeError("Encodec negotiated but the codec is not loaded (update_session loads it)")
        return self._codec if name == p.ENCODEC_FORMAT else None

    async def prepare(self, fmt: p.AudioFormat) -> None:
        """Load what ``fmt`` needs here (Encodec's weights, off the event loop)."""
        if fmt.spec.needs_model and self._codec is None:
            def load() -> EncodecCodec:
                if self.codec_factory is not None:
                    return self.codec_factory()
                from remote.codec import EncodecCodec

                return EncodecCodec.load()

            self._codec = await asyncio.to_thread(load)

    # ---- microphone -> appends

    def set_input(self, fmt: p.AudioFormat) -> None:
        if fmt != self.input_format:
            self.input_format, self._encoder = fmt, None
            self._resamplers.clear()

    def _resample(self, x: np.ndarray, rate: int) -> np.ndarray:
        target = self.input_format.rate
        if rate == target:
            return x
        rs = self._resamplers.get(rate)
        if rs is None:
            from engine.audio import StreamResampler

            rs = self._resamplers[rate] = StreamResampler(int(rate), int(target))
        return rs.process(x)

    async def encode(self, x: np.ndarray, rate: int, max_payload: int) -> list[bytes]:
        """Float samples at ``rate`` to append payloads (each at most ``max_payload`` bytes)."""
        return self._cut(await self._push(self._resample(x, rate)), max_payload)

    async def flush(self, max_payload: int) -> list[bytes]:
        """What the resamplers and the encoder still hold (before a commit)."""
        resamplers, self._resamplers = self._resamplers, {}
        out: list[bytes] = []
        for rs in resamplers.values():
            tail = rs.process(np.zeros(0, np.float32), last=True)
            if len(tail):
                out += await self._push(tail)
        if self._encoder is not None:
            enc = self._encoder
            out += await asyncio.to_thread(enc.flush) if enc.offload else enc.flush()
        return self._cut(out, max_payload)

    def clear(self) -> None:
        """Drop what the encoder holds (``input_audio_buffer.clear``)."""
        self._encoder = None
        self._resamplers.clear()

    async def _push(self, x: np.ndarray) -> list[bytes]:
        if not len(x):
            return []
        enc = self._encoder
        if enc is None:
            enc = self._encoder = self.input_format.spec.encoder(self.input_format, self._models(self.input_format.type))
        return await asyncio.to_thread(enc.push, x) if enc.offload else enc.push(x)

    def _cut(self, payloads: list[bytes], limit: int) -> list[bytes]:
        if self.input_format.type not in _STREAM_FORMATS:
            return payloads  # packets are small and must stay whole
        step = max(2, limit // 2 * 2)
        return [b[i : i + step] for b in payloads for i in range(0, len(b), step)]

    # ---- reply deltas -> samples

    def response_started(self, response_id: str, fmt: p.AudioFormat) -> None:
        """A response's audio comes in the output format current when it started."""
        remember(self._formats, response_id, fmt, 64)

    def decode(self, response_id: str, payload: bytes, fmt: p.AudioFormat) -> np.ndarray:
        """One delta to float32 mono samples at :data:`PLAY_RATE`. ``fmt``: the session's output
        format, for a response this client did not see start."""
        fmt = self._formats.get(response_id, fmt)
        if fmt.type == p.PCM_FORMAT:
            return p.pcm16_decode(payload).astype(np.float32) / 32768.0
        entry = self._decoders.get(response_id)
        if entry is None:
            if len(self._decoders) > 8:
                self._decoders.clear()
            dec = fmt.spec.decoder(fmt, self._models(fmt.type))
            from engine.audio import StreamResampler

            rs = None if dec.rate == PLAY_RATE else StreamResampler(int(dec.rate), PLAY_RATE)
            entry = self._decoders[response_id] = (dec, rs)
        dec, rs = entry
        y = np.asarray(dec.push(payload)).reshape(-1)
        y = y.astype(np.float32) / 32768.0 if y.dtype == np.int16 else y.astype(np.float32)
        return y if rs is None else rs.process(y)

    def reset(self) -> None:
        """A new connection: a new session in PCM until negotiated again."""
        self.set_input(p.PCM)
        self._encoder = None
        self._decoders.clear()
        self._formats.clear()


__all__ = ["CHOICES", "PLAY_RATE", "ClientAudio", "parse_choice"]

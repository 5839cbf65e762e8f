"""Opus stream coding for ``s2s.opus``: one raw Opus packet per message, through PyAV's libopus.

Frames are 20 ms both ways. The client's microphone goes up one frame per packet, so speech
reaches the server 20 ms at a time. Reply audio is ready faster than real time (TTS makes a
sentence at once), so the server packs five frames into one packet of 100 ms (RFC 6716's
code 3), one per ``response.output_audio.delta``: the message's JSON envelope (about 160
bytes) then costs a fifth as much, with no wait the client can hear. Any Opus decoder plays
such packets.

Why PyAV: it is already installed (faster-whisper decodes audio with it) and carries libopus, so
Opus costs no new dependency; it is imported here only, when a session asks for Opus. libopus
encodes at 8, 12, 16, 24 or 48 kHz; FFmpeg's libopus decoder always gives 48 kHz, so a
:class:`OpusStreamDecoder` reports its samples at 48 kHz (:attr:`rate`) and whoever consumes
them resamples once (the engine to its own rate, a client to its player's).

A packet that libopus rejects is :class:`~remote.protocol.base.ProtocolError` (``invalid_audio``)
and the decoder goes on with the next one. Packets are not lost on a WebSocket (TCP delivers
them in order), so there is no packet-loss concealment: PyAV sends an empty packet as "end of
stream", not as "conceal this frame".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from remote.protocol.base import ErrorCode, ProtocolError

OPUS_FORMAT = "s2s.opus"
OPUS_RATES = (24_000, 16_000, 48_000)
"""Sample rates a session may ask for (the first is the default); the codec runs at 48 kHz inside."""
OPUS_BITRATES = (12, 16, 24, 32)
"""kbit/s a session may ask for (``bitrate``)."""
DEFAULT_OPUS_BITRATE = 16
OPUS_FRAME_MS = 20
OPUS_REPLY_PACKET_MS = 100
"""Reply audio per packet: five 20 ms frames (libopus packs them in one code-3 packet)."""
OPUS_DECODED_RATE = 48_000
MAX_OPUS_PACKET = 1275
"""The largest Opus packet of one frame (RFC 6716, 3.2.1); an append larger than this is not one
20 ms packet (PCM sent to an Opus session, say)."""


def unavailable() -> str | None:
    """Why Opus cannot be used here (PyAV or its libopus missing), or None."""
    try:
        import av

        av.codec.Codec("libopus", "w")
        av.codec.Codec("libopus", "r")
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"; the reason is shown
        return f"Opus needs PyAV with libopus (pip install av): {type(exc).__name__}: {exc}"
    return None


class OpusStreamEncoder:
    """Float or int16 mono samples at ``rate`` to Opus packets, one per ``packet_ms`` of 20 ms
    frames (one encoder per response or per client input stream: its state joins frames smoothly)."""

    offload = True  # a reply chunk can hold seconds of audio: about 1-2 % of its length in CPU

    def __init__(self, rate: int = OPUS_RATES[0], bitrate_kbps: int = DEFAULT_OPUS_BITRATE,
                 packet_ms: int = OPUS_FRAME_MS):
        import av

        if packet_ms % OPUS_FRAME_MS or not OPUS_FRAME_MS <= packet_ms <= 120:
            raise ValueError(f"an Opus packet holds 20 to 120 ms of 20 ms frames, not {packet_ms} ms")
        self.rate, self.bitrate_kbps, self.packet_ms = rate, bitrate_kbps, packet_ms
        self.frame = rate * packet_ms // 1000  # samples per packet
        ctx: Any = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = bitrate_kbps * 1000
        # frame_duration is the packet's length: libopus codes 20 ms frames and, past 20 ms,
        # packs them into one packet (in SILK mode at 100 ms: five 20 ms frames, TOC code 3)
        ctx.options = {"frame_duration": str(packet_ms), "application": "voip"}
        ctx.open()
        self._ctx, self._av = ctx, av
        self._held = np.zeros(0, np.int16)
        self._pts = 0

    def push(self, pcm: np.ndarray) -> list[bytes]:
        x = np.asarray(pcm).reshape(-1)
        if x.dtype != np.int16:
            x = np.round(np.clip(np.nan_to_num(x.astype(np.float32)), -1.0, 1.0) * 32767.0).astype(np.int16)
        held = np.concatenate([self._held, x]) if len(self._held) else x
        n = len(held) // self.frame * self.frame
        self._held = held[n:].copy()
        out: list[bytes] = []
        for i in range(0, n, self.frame):
            out += self._encode(held[i : i + self.frame])
        return out

    def flush(self) -> list[bytes]:
        """The last partial packet, padded with silence (nothing when none is held)."""
        if not len(self._held):
            return []
        last = np.zeros(self.frame, np.int16)
        last[: len(self._held)] = self._held
        self._held = np.zeros(0, np.int16)
        return self._encode(last)

    def reset(self) -> None:
        self._held = np.zeros(0, np.int16)

    def _encode(self, frame: np.ndarray) -> list[bytes]:
        f = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(frame).reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts = self.rate, self._pts
        self._pts += len(frame)
        return [bytes(p) for p in self._ctx.encode(f)]


class OpusStreamDecoder:
    """Opus packets to int16 mono samples at :attr:`rate` (48 kHz); one per input stream."""

    offload = False  # one 20 ms packet: well under a millisecond
    rate = OPUS_DECODED_RATE

    def __init__(self) -> None:
        import av

        self._av = av
        self._ctx = self._new()

    def _new(self) -> Any:
        ctx: Any = self._av.CodecContext.create("libopus", "r")
        ctx.sample_rate = OPUS_DECODED_RATE
        ctx.layout = "mono"
        return ctx

    def push(self, data: bytes) -> np.ndarray:
        if not data:
            return np.zeros(0, np.int16)
        if len(data) > MAX_OPUS_PACKET or data[:4] == b"RIFF":
            raise ProtocolError(ErrorCode.INVALID_AUDIO, f"{len(data)} bytes is not one {OPUS_FORMAT} packet (at most "
                                f"{MAX_OPUS_PACKET} bytes, one 20 ms frame per append): is this PCM?", param="audio")
        try:
            frames = self._ctx.decode(self._av.Packet(data))
        except self._av.error.FFmpegError as exc:
            raise ProtocolError(ErrorCode.INVALID_AUDIO, f"not a valid {OPUS_FORMAT} packet ({len(data)} bytes): "
                                f"libopus says {exc.strerror or exc}", param="audio") from None
        parts = [_mono_int16(f.to_ndarray()) for f in frames]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def reset(self) -> None:
        self._ctx = self._new()


def _mono_int16(a: np.ndarray) -> np.ndarray:
    x = a.reshape(a.shape[0], -1)[0] if a.ndim > 1 else a
    if x.dtype == np.int16:
        return x
    return np.round(np.clip(x.astype(np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)


__all__ = ["DEFAULT_OPUS_BITRATE", "OPUS_BITRATES", "OPUS_DECODED_RATE", "OPUS_FORMAT", "OPUS_FRAME_MS", "OPUS_RATES", "OPUS_REPLY_PACKET_MS",
           "MAX_OPUS_PACKET",
           "OpusStreamDecoder", "OpusStreamEncoder", "unavailable"]

"""Opus stream coding for ``s2s.opus``: one raw Opus packet per message, through PyAV's libopus.

Frames are 20 ms both ways; a message carries one Opus packet of one or more frames, as RFC
6716 allows, and any Opus decoder plays such packets.

- **Reply audio** is ready faster than real time (TTS makes a sentence at once), so the server
  packs five frames into one packet of 100 ms (code 3), one per ``response.output_audio.delta``:
  the message's JSON envelope (about 160 bytes) then costs a fifth as much, with no wait the
  client can hear.
- **The microphone** (``pair_voiced``) sends a frame that holds speech together with the next one
  (two frames, code 1 or 2), and a quiet frame at once. An append's envelope (47 bytes) is as
  large as its 20 ms packet, so pairing the frames of speech cuts the uplink by about a quarter.
  What it costs is 20 ms on a frame of speech, which nothing waits for: the end of turn is
  counted in the silence after the speech, and those frames still go one by one, the held
  last frame of speech with the first quiet one. "Speech" is a frame 12 dB above the noise floor
  (followed down at once, up at 5 dB/s) and above -55 dBFS; a loud room that never reads as
  quiet pairs every frame and then adds up to 20 ms to the end of turn.

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
MAX_OPUS_FRAME = 1275
"""The largest Opus frame (RFC 6716, 3.2.1)."""
MAX_OPUS_PACKET = 2 * MAX_OPUS_FRAME + 3
"""The largest append: a packet of two frames (TOC byte, a frame length, two frames). A larger
one is not an Opus packet of the microphone's (PCM sent to an Opus session, say)."""
VOICED_OVER_FLOOR_DB = 12.0
VOICED_MIN_DB = -55.0
FLOOR_RISE_DB = 0.1
"""How fast the noise floor follows louder frames, per 20 ms frame (5 dB/s)."""


def join_packets(a: bytes, b: bytes) -> bytes | None:
    """Two one-frame Opus packets as one packet of two frames (RFC 6716, 3.2.2 and 3.2.3: code 1
    when the frames are the same size, else code 2 with the first frame's length), or None when
    they cannot share one (not one frame each, or another mode, bandwidth or frame size)."""
    if not a or not b or a[0] & 3 or b[0] & 3 or a[0] != b[0]:
        return None
    fa, fb = a[1:], b[1:]
    if len(fa) == len(fb):
        return bytes([a[0] | 1]) + fa + fb
    n = len(fa)
    size = bytes([n]) if n < 252 else bytes([252 + (n & 3), (n - 252 - (n & 3)) >> 2])
    return bytes([a[0] | 2]) + size + fa + fb


class VoicedPairs:
    """The microphone's one-frame packets, a frame of speech held for the next one and sent with it
    as one packet, a quiet frame at once (see the module docstring)."""

    def __init__(self) -> None:
        self.held: bytes | None = None
        self.floor_db = -60.0

    def voiced(self, frame: np.ndarray) -> bool:
        x = frame.astype(np.float32) / 32768.0
        db = 10.0 * float(np.log10(float(np.mean(x * x)) + 1e-12))
        self.floor_db = min(db, self.floor_db + FLOOR_RISE_DB)
        return db >= max(self.floor_db + VOICED_OVER_FLOOR_DB, VOICED_MIN_DB)

    def add(self, packet: bytes, voiced: bool) -> list[bytes]:
        if self.held is not None:
            held, self.held = self.held, None
            joined = join_packets(held, packet)
            return [held, packet] if joined is None else [joined]
        if voiced:
            self.held = packet
            return []
        return [packet]

    def flush(self) -> list[bytes]:
        held, self.held = self.held, None
        return [held] if held is not None else []


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
                 packet_ms: int = OPUS_FRAME_MS, pair_voiced: bool = False):
        import av

        if packet_ms % OPUS_FRAME_MS or not OPUS_FRAME_MS <= packet_ms <= 120:
            raise ValueError(f"an Opus packet holds 20 to 120 ms of 20 ms frames, not {packet_ms} ms")
        if pair_voiced and packet_ms != OPUS_FRAME_MS:
            raise ValueError("pair_voiced pairs 20 ms packets")
        self.pairs = VoicedPairs() if pair_voiced else None
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
        """The last partial packet, padded with silence, and a held frame of speech (nothing when
        none is held)."""
        out: list[bytes] = []
        if len(self._held):
            last = np.zeros(self.frame, np.int16)
            last[: len(self._held)] = self._held
            self._held = np.zeros(0, np.int16)
            out = self._encode(last)
        return out + (self.pairs.flush() if self.pairs is not None else [])

    def reset(self) -> None:
        self._held = np.zeros(0, np.int16)
        if self.pairs is not None:
            self.pairs.flush()  # a held frame of speech goes with the cleared input

    def _encode(self, frame: np.ndarray) -> list[bytes]:
        f = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(frame).reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts = self.rate, self._pts
        self._pts += len(frame)
        packets = [bytes(p) for p in self._ctx.encode(f)]
        if self.pairs is None:
            return packets
        voiced = self.pairs.voiced(frame)
        return [q for p in packets for q in self.pairs.add(p, voiced)]


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
                                f"{MAX_OPUS_PACKET} bytes, one or two 20 ms frames per append): is this PCM?",
                                param="audio")
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
           "MAX_OPUS_FRAME", "MAX_OPUS_PACKET",
           "OpusStreamDecoder", "OpusStreamEncoder", "VoicedPairs", "join_packets", "unavailable"]

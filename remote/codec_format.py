"""The Encodec wire format: packets of 10-bit codes with an 11-byte header. Pure numpy, no torch.

:func:`pack_codes` / :func:`unpack_codes` bit-pack 10-bit codes, :func:`build_packet` /
:func:`parse_packet` add and check the header. A bad packet raises
:class:`~engine.errors.AudioError`, never ``IndexError`` or ``struct.error``. The model that
makes and reads the codes is :mod:`remote.codec` (torch); this module is all a relay, a test or
the protocol layer needs to check a packet, and importing it loads no model library.

Packet layout (all integers little-endian), see ``docs/codec.md``::

    0-1   magic  b"EC"
    2     version (1)
    3     bandwidth code: index into BANDWIDTHS (0 = 1.5 kbps ... 4 = 24 kbps)
    4     number of codebooks (2, 4, 8, 16, 32: fixed by the bandwidth)
    5-6   number of frames, uint16 (1..MAX_PACKET_FRAMES = 150: 2 s; the field could say 65535)
    7-10  number of PCM samples, uint32 ((frames-1)*320 < samples <= frames*320)
    11-   codes, codebook-major, 10 bits each, most significant bit first, zero-padded to a byte
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from engine.errors import AudioError, ConfigError

SAMPLE_RATE = 24_000
FRAME_RATE = 75  # Encodec 24 kHz frames per second
HOP = SAMPLE_RATE // FRAME_RATE  # 320 samples per frame
BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)  # kbps
CODEBOOK_SIZE = 1024
CODE_BITS = 10  # log2(CODEBOOK_SIZE)
# 1.5 kbps = 2 codebooks x 10 bits x 75 frames/s; each doubling of the bandwidth doubles the codebooks.
CODEBOOKS = {bw: int(bw * 1000) // (FRAME_RATE * CODE_BITS) for bw in BANDWIDTHS}

MAGIC = b"EC"
VERSION = 1
_HEADER = struct.Struct("<2sBBBHI")
HEADER_SIZE = _HEADER.size  # 11
MAX_FRAMES = 0xFFFF  # what the header's frame count can say: about 874 s
MAX_PACKET_FRAMES = 2 * FRAME_RATE
"""The most frames a packet may hold (2 s of audio). Every packet is decoded as one message; the
header could announce 874 s, which a peer would then decode in one go. Streams send packets of
about 100 ms; the stream encoder cuts longer stretches into packets of at most this size."""


# --------------------------------------------------------------------------- bandwidth


def check_bandwidth(bandwidth: float) -> float:
    """Return ``bandwidth`` as one of :data:`BANDWIDTHS`, or raise :class:`ConfigError`."""
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | float | np.floating | np.integer):
        raise ConfigError(f"codec bandwidth must be a number in kbps, one of {BANDWIDTHS}; got {bandwidth!r}")
    for bw in BANDWIDTHS:
        if float(bandwidth) == bw:
            return bw
    raise ConfigError(f"codec bandwidth {bandwidth!r} kbps is not supported; use one of {BANDWIDTHS}")


def num_codebooks(bandwidth: float) -> int:
    """Codebooks used at ``bandwidth`` kbps: 2, 4, 8, 16 or 32."""
    return CODEBOOKS[check_bandwidth(bandwidth)]


# --------------------------------------------------------------------------- bit packing


def pack_codes(codes: np.ndarray, bits: int = CODE_BITS) -> bytes:
    """Bit-pack non-negative integer codes, ``bits`` each, most significant bit first.

    The array is flattened in C order; the last byte is padded with zero bits. The result holds
    ``ceil(codes.size * bits / 8)`` bytes. Raises ``ValueError`` for codes that do not fit.
    """
    flat = np.asarray(codes).reshape(-1)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be 1..16, got {bits}")
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {flat.dtype}")
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << bits)):
        raise ValueError(f"codes must lie in 0..{(1 << bits) - 1}, got {flat.min()}..{flat.max()}")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    bitmat = ((flat.astype(np.uint32)[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bitmat.reshape(-1)).tobytes()


def packed_size(count: int, bits: int = CODE_BITS) -> int:
    """Bytes that :func:`pack_codes` produces for ``count`` codes."""
    return (count * bits + 7) // 8


def unpack_codes(data: bytes, shape: int | tuple[int, ...], bits: int = CODE_BITS) -> np.ndarray:
    """Inverse of :func:`pack_codes`: read ``prod(shape)`` codes from ``data`` as ``uint16``.

    Raises :class:`AudioError` when ``data`` is not exactly the size the shape needs or its padding
    bits are not zero (a sign of a corrupt or mis-framed packet).
    """
    shape = (shape,) if isinstance(shape, int | np.integer) else tuple(shape)
    count = math.prod(shape)
    need = packed_size(count, bits)
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size != need:
        raise AudioError(f"codec payload holds {buf.size} bytes; {count} codes of {bits} bits need {need}")
    allbits = np.unpackbits(buf)
    if allbits[count * bits :].any():
        raise AudioError("codec payload is corrupt: its padding bits are not zero")
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint32)
    values = allbits[: count * bits].reshape(count, bits).astype(np.uint32) @ weights
    return values.astype(np.uint16).reshape(shape)


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class CodecPacket:
    """One parsed packet.

    Fields:
        bandwidth: kbps, one of :data:`BANDWIDTHS`.
        codes: ``uint16`` array of shape ``(num_codebooks, num_frames)``.
        num_samples: PCM samples the packet decodes to (the last frame may be partly padding).
    """

    bandwidth: float
    codes: np.ndarray
    num_samples: int

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE


def packet_size(bandwidth: float, num_frames: int) -> int:
    """Bytes of a packet: ``11 + ceil(num_codebooks * num_frames * 10 / 8)``."""
    return HEADER_SIZE + packed_size(num_codebooks(bandwidth) * num_frames)


def build_packet(codes: np.ndarray, bandwidth: float, num_samples: int, *,
                 max_frames: int = MAX_PACKET_FRAMES) -> bytes:
    """Header plus bit-packed ``codes`` (shape ``(num_codebooks, num_frames)``, at most
    ``max_frames`` frames; tests raise it to build what a hostile peer could send)."""
    bw = check_bandwidth(bandwidth)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != CODEBOOKS[bw]:
        raise ValueError(f"{bw} kbps needs codes of shape ({CODEBOOKS[bw]}, frames), got {codes.shape}")
    frames = codes.shape[1]
    if not 1 <= frames <= min(max_frames, MAX_FRAMES):
        raise AudioError(f"a codec packet holds 1..{min(max_frames, MAX_FRAMES)} frames, got {frames}")
    if not (frames - 1) * HOP < num_samples <= frames * HOP:
        raise ValueError(f"{num_samples} samples do not fit {frames} frames of {HOP}")
    header = _HEADER.pack(MAGIC, VERSION, BANDWIDTHS.index(bw), CODEBOOKS[bw], frames, num_samples)
    return header + pack_codes(codes)


def parse_packet(data: bytes | bytearray | memoryview) -> CodecPacket:
    """Check and split a packet; every malformation raises :class:`AudioError` with what is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AudioError(f"a codec packet must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise AudioError(f"codec packet truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    magic, version, bw_code, n_q, frames, samples = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise AudioError(f"not an Encodec packet: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise AudioError(f"unsupported codec packet version {version} (this build reads version {VERSION})")
    if bw_code >= len(BANDWIDTHS):
        raise AudioError(f"codec packet has unknown bandwidth code {bw_code} (0..{len(BANDWIDTHS) - 1})")
    bw = BANDWIDTHS[bw_code]
    if n_q != CODEBOOKS[bw]:
        raise AudioError(f"codec packet says {n_q} codebooks, but {bw} kbps uses {CODEBOOKS[bw]}")
    if frames == 0:
        raise AudioError("codec packet holds no frames")
    if frames > MAX_PACKET_FRAMES:
        raise AudioError(f"codec packet holds {frames} frames ({frames / FRAME_RATE:.1f} s); at most "
                         f"{MAX_PACKET_FRAMES} ({MAX_PACKET_FRAMES / FRAME_RATE:g} s) are accepted: send shorter packets")
    if not (frames - 1) * HOP < samples <= frames * HOP:
        raise AudioError(f"codec packet says {samples} samples, which does not fit {frames} frames of {HOP}")
    expected = HEADER_SIZE + packed_size(n_q * frames)
    if len(data) < expected:
        raise AudioError(f"codec packet truncated: {len(data)} bytes, its header promises {expected}")
    if len(data) > expected:
        raise AudioError(f"codec packet has {len(data) - expected} stray bytes after its {expected}")
    codes = unpack_codes(data[HEADER_SIZE:], (n_q, frames))
    return CodecPacket(bandwidth=bw, codes=codes, num_samples=samples)


def bytes_per_second(bandwidth: float, packet_ms: float = 100.0) -> float:
    """Wire bytes per second, headers included, when audio arrives in ``packet_ms`` chunks.

    This is what :class:`EncodecStreamEncoder` sends: each chunk yields one packet holding every
    whole frame buffered so far (100 ms chunks alternate 7 and 8 frames).
    """
    n_q = num_codebooks(bandwidth)
    chunk = round(packet_ms * SAMPLE_RATE / 1000)
    if chunk <= 0:
        raise ConfigError(f"packet_ms must be positive, got {packet_ms}")
    period = math.lcm(chunk, HOP)  # the packet pattern repeats after this many samples
    total, done = 0, 0
    for k in range(1, period // chunk + 1):
        frames = k * chunk // HOP - done
        done += frames
        if frames:
            total += HEADER_SIZE + packed_size(n_q * frames)
    return total * SAMPLE_RATE / period


__all__ = ["BANDWIDTHS", "CODEBOOKS", "CODEBOOK_SIZE", "CODE_BITS", "FRAME_RATE", "HEADER_SIZE", "HOP", "MAGIC",
           "MAX_FRAMES", "MAX_PACKET_FRAMES", "SAMPLE_RATE", "VERSION", "CodecPacket", "build_packet",
           "bytes_per_second", "check_bandwidth", "num_codebooks", "pack_codes", "packed_size", "packet_size",
           "parse_packet", "unpack_codes"]

"""G.711 μ-law and A-law (ITU-T G.711), the Realtime API's ``audio/pcmu`` and ``audio/pcma``.

One byte per sample at 8 kHz. Coding is a table look-up: the 256 codes decode through a table
built from the standard's segment formula (as in the reference ``g711.c``), and every 16-bit
sample encodes through a 65,536-entry table built once from the same formula. Only numpy: the
standard library's ``audioop`` is gone since Python 3.13.
"""

from __future__ import annotations

import functools

import numpy as np

G711_RATE = 8_000
"""The only G.711 rate (as in Realtime: ``{"type": "audio/pcmu"}`` has no rate field)."""

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude limit


def _segment(mag: np.ndarray, ends: tuple[int, ...]) -> np.ndarray:
    """The segment (0..8) of each magnitude: the first end it does not exceed (8: above all)."""
    return np.searchsorted(np.asarray(ends), mag, side="left")


def _ulaw_from_linear(x: np.ndarray) -> np.ndarray:
    v = x.astype(np.int32) >> 2  # 14-bit
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(v, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0xF))
    return (code ^ mask).astype(np.uint8)


def _alaw_from_linear(x: np.ndarray) -> np.ndarray:
    v = x.astype(np.int32) >> 3  # 13-bit
    mask = np.where(v >= 0, 0xD5, 0x55)
    v = np.where(v >= 0, v, -v - 1)
    seg = _segment(v, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    low = np.where(seg < 2, (v >> 1) & 0xF, (v >> np.maximum(seg, 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | low)
    return (code ^ mask).astype(np.uint8)


def _ulaw_to_linear(codes: np.ndarray) -> np.ndarray:
    u = ~codes.astype(np.int32) & 0xFF
    t = (((u & 0xF) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_to_linear(codes: np.ndarray) -> np.ndarray:
    a = codes.astype(np.int32) ^ 0x55
    t = (a & 0xF) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


@functools.cache
def _tables(law: str) -> tuple[np.ndarray, np.ndarray]:
    """(encode table indexed by ``int16 + 32768``, decode table indexed by code)."""
    every = np.arange(-32768, 32768, dtype=np.int32)
    codes = np.arange(256)
    if law == "ulaw":
        return _ulaw_from_linear(every), _ulaw_to_linear(codes)
    return _alaw_from_linear(every), _alaw_to_linear(codes)


def encode(samples: np.ndarray, law: str) -> bytes:
    """int16 samples (or float in [-1, 1]) to G.711 bytes; ``law`` is ``ulaw`` or ``alaw``."""
    x = np.asarray(samples).reshape(-1)
    if x.dtype != np.int16:
        x = np.round(np.clip(np.nan_to_num(x.astype(np.float32)), -1.0, 1.0) * 32767.0).astype(np.int16)
    return _tables(law)[0][x.astype(np.int32) + 32768].tobytes()


def decode(data: bytes, law: str) -> np.ndarray:
    """G.711 bytes to int16 samples (every byte is a valid code)."""
    return _tables(law)[1][np.frombuffer(data, dtype=np.uint8)]


__all__ = ["G711_RATE", "decode", "encode"]

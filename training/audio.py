"""Audio helpers for training: the engine's reader, resampler and writer (``engine.audio``:
soundfile + soxr, every libsndfile format, clear errors for broken files), plus silence
trimming and peak level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.audio import load_wav, resample, write_wav

__all__ = ["SAMPLE_RATE", "load_audio", "peak_dbfs", "resample", "trim_silence", "write_wav"]

SAMPLE_RATE = 16_000


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate`` (any source rate). Raises
    :class:`engine.errors.AudioError` with the reason for a broken file."""
    return load_wav(path, sample_rate, any_rate=True)[0]


def trim_silence(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold_db: float = -40.0, margin_ms: int = 100
) -> np.ndarray:
    """Cut leading and trailing stretches quieter than ``threshold_db`` below the peak.

    Frame energy in 20 ms windows; ``margin_ms`` of the quiet part is kept at both ends so
    that onsets and releases survive. Returns ``audio`` unchanged when nothing is voiced.
    """
    frame = max(1, sample_rate // 50)
    n = audio.size // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    level = 20 * np.log10(rms / (rms.max() + 1e-12) + 1e-12)
    voiced = np.flatnonzero(level > threshold_db)
    if voiced.size == 0:
        return audio
    margin = int(sample_rate * margin_ms / 1000)
    start = max(0, voiced[0] * frame - margin)
    end = min(audio.size, (voiced[-1] + 1) * frame + margin)
    return audio[start:end]


def peak_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return -120.0 if peak <= 1e-6 else 20 * float(np.log10(peak))

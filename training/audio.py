"""Audio file helpers for training: read any libsndfile format, mono, resample, trim, write.

soundfile (libsndfile) reads WAV/FLAC/OGG/MP3 without ffmpeg; soxr is a fast, high quality
resampler with wheels for every platform. Both are already engine dependencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``. Raises whatever soundfile raises."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = data.mean(axis=1)
    return resample(audio, rate, sample_rate)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if rate == target or audio.size == 0:
        return audio
    import soxr

    return soxr.resample(audio, rate, target).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")


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

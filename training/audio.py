"""Audio helpers for training: the engine's reader, resampler and writer (``engine.audio``:
soundfile + soxr, every libsndfile format, clear errors for broken files), plus silence
trimming and peak level, and the decoding of in-memory audio from ``datasets`` rows
(:func:`decode_audio`: soundfile first, then PyAV through faster-whisper for what libsndfile
cannot read, e.g. M4A/Opus).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from engine.audio import ENGINE_RATE, load_wav, resample, write_wav
from engine.errors import AudioError

__all__ = [
    "SAMPLE_RATE", "array_audio", "decode_audio", "load_audio", "peak_dbfs", "resample", "trim_bounds",
    "trim_silence", "write_wav",
]

SAMPLE_RATE = ENGINE_RATE  # training audio is the engine's input: 16 kHz mono float32


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate`` (any source rate). Raises
    :class:`engine.errors.AudioError` with the reason for a broken file."""
    return load_wav(path, sample_rate, any_rate=True)[0]


def trim_silence(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold_db: float = -40.0, margin_ms: int = 100
) -> np.ndarray:
    """Cut leading and trailing stretches quieter than ``threshold_db`` below the peak
    (:func:`trim_bounds`). Returns ``audio`` unchanged when nothing is voiced."""
    start, end = trim_bounds(audio, sample_rate, threshold_db, margin_ms)
    return audio[start:end]


def trim_bounds(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold_db: float = -40.0, margin_ms: int = 100
) -> tuple[int, int]:
    """The (start, end) samples :func:`trim_silence` keeps.

    Frame energy in 20 ms windows; ``margin_ms`` of the quiet part is kept at both ends so
    that onsets and releases survive. The whole clip when nothing is voiced.
    """
    frame = max(1, sample_rate // 50)
    n = audio.size // frame
    if n == 0:
        return 0, audio.size
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    level = 20 * np.log10(rms / (rms.max() + 1e-12) + 1e-12)
    voiced = np.flatnonzero(level > threshold_db)
    if voiced.size == 0:
        return 0, audio.size
    margin = int(sample_rate * margin_ms / 1000)
    return max(0, voiced[0] * frame - margin), min(audio.size, (voiced[-1] + 1) * frame + margin)


def peak_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return -120.0 if peak <= 1e-6 else 20 * float(np.log10(peak))


def decode_audio(data: bytes, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Encoded audio bytes (WAV, FLAC, OGG, MP3, or anything FFmpeg reads) -> mono float32 at
    ``sample_rate``. Raises :class:`AudioError` with the reason when it cannot be decoded."""
    import soundfile as sf

    if not data:
        raise AudioError("empty audio (0 bytes)")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        try:  # libsndfile lacks some containers (M4A, WebM/Opus): PyAV, bundled with faster-whisper
            from faster_whisper.audio import decode_audio as av_decode

            audio = av_decode(io.BytesIO(data), sampling_rate=sample_rate)
        except Exception:  # noqa: BLE001 - PyAV raises many types; soundfile's reason is the clearer one
            raise AudioError(f"not a readable audio file ({str(exc).strip().splitlines()[0][:160]})") from None
        return array_audio(audio, sample_rate, sample_rate)
    return array_audio(samples, rate, sample_rate)


def array_audio(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decoded samples ((n,), or (n, channels)) at ``rate`` -> mono float32 at ``sample_rate``,
    with the same checks as a file: some samples, all finite, a plausible rate."""
    a = np.asarray(samples, dtype=np.float32)
    if a.ndim == 2:
        a = a.mean(axis=1) if a.shape[1] <= 8 else a.mean(axis=0)
    if a.ndim != 1:
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {a.shape}")
    if a.size == 0:
        raise AudioError("holds no audio samples")
    if not np.all(np.isfinite(a)):
        raise AudioError("holds NaN or infinite samples")
    if not 1000 <= int(rate) <= 384_000:
        raise AudioError(f"implausible sample rate {rate} Hz")
    return resample(np.clip(a, -1.0, 1.0), int(rate), sample_rate)

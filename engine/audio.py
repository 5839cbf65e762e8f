"""Audio in and out: WAV loading, conversion to the engine's 16 kHz mono float32, resampling.

soundfile (libsndfile, bundled in its wheel) reads every PCM WAV flavour (8/16/24/32-bit int,
32/64-bit float, mono or multi-channel) and tells a broken file apart from a good one;
soxr is a real band-limited resampler (the SoX engine), and has a streaming mode for
microphone-sized chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from engine.errors import AudioError

ENGINE_RATE = 16_000
"""The rate of speech inside the engine: VAD, ASR, the turn model and every microphone input."""
REPLY_RATE = 24_000
"""The rate of reply audio a session hands out (``session.output_sample_rate``): the Realtime API's PCM rate."""
MIN_RATE, MAX_RATE = 8_000, 48_000


@dataclass(frozen=True)
class AudioInfo:
    """What a loaded file was before conversion."""

    path: str
    sample_rate: int
    channels: int
    subtype: str
    duration_s: float


def load_wav(path: str | Path, target_rate: int = ENGINE_RATE, any_rate: bool = False) -> tuple[np.ndarray, AudioInfo]:
    """Read an audio file and return mono float32 at ``target_rate`` plus what it was.

    Raises :class:`AudioError` for a missing, empty, truncated or non-audio file, or (unless
    ``any_rate``, as for training data) a sample rate outside the microphone range 8-48 kHz.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    _check_riff_length(p)
    try:
        with sf.SoundFile(str(p)) as f:
            rate, channels, subtype, frames = f.samplerate, f.channels, f.subtype, f.frames
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{p}: not a readable audio file ({_short(exc)})") from None
    if frames == 0 or data.shape[0] == 0:
        raise AudioError(f"{p}: the file holds no audio samples")
    if data.shape[0] < frames:
        raise AudioError(f"{p}: truncated: the header promises {frames} frames, the file holds {data.shape[0]}")
    if not any_rate and not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{p}: sample rate {rate} Hz is outside the supported 8-48 kHz")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{p}: holds NaN or infinite samples")
    mono = data.mean(axis=1) if channels > 1 else data[:, 0]
    mono = np.clip(mono, -1.0, 1.0).astype(np.float32)
    info = AudioInfo(str(p), int(rate), int(channels), str(subtype), data.shape[0] / rate)
    return resample(mono, rate, target_rate), info


def _check_riff_length(p: Path) -> None:
    """libsndfile quietly reads what is left of a cut WAV; say it is truncated instead."""
    import struct

    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_len == 0 or chunk_len >= 0x7FFF0000:  # streamed writers (espeak-ng, sox -) leave it open
                    return
                have = size - pos - 8
                if have < chunk_len:
                    raise AudioError(f"{p}: truncated: the header promises {chunk_len} bytes of audio, "
                                     f"the file holds {have}")
                return
            pos += 8 + chunk_len + (chunk_len & 1)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a whole mono signal (soxr, high quality)."""
    x = np.asarray(x, dtype=np.float32)
    if rate_in == rate_out or len(x) == 0:
        return x
    import soxr

    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16/int32 PCM or float to mono float32 in [-1, 1]."""
    a = np.asarray(samples)
    if a.ndim == 2:
        a = a.mean(axis=1) if a.shape[1] <= 8 else a.mean(axis=0)
    elif a.ndim != 1:
        raise AudioError(f"audio must be mono (1-D), got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if a.dtype == np.int32:
        return (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    if a.dtype.kind == "f":
        return np.clip(np.nan_to_num(a.astype(np.float32)), -1.0, 1.0)
    raise AudioError(f"unsupported sample type {a.dtype}")


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")


class StreamResampler:
    """Chunk-by-chunk resampling that keeps filter state between chunks (soxr stream)."""

    def __init__(self, rate_in: int, rate_out: int):
        self.rate_in, self.rate_out = rate_in, rate_out
        self._stream = None
        if rate_in != rate_out:
            import soxr

            self._stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")

    def process(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return np.asarray(x, dtype=np.float32)
        return self._stream.resample_chunk(np.asarray(x, dtype=np.float32), last=last)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio as 16-bit PCM WAV."""
    import soundfile as sf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(p), np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16")
    return p


def sample_wav() -> Path:
    """The bundled Telugu sample (espeak-ng Telugu, two sentences)."""
    return Path(str(files("engine") / "assets" / "sample_te.wav"))

"""Audio input: every WAV flavour converts to 16 kHz mono float32; broken files are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from engine.audio import StreamResampler, load_wav, resample, to_float32
from engine.errors import AudioError
from tests.conftest import SAMPLE_TE


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    "rate,channels,subtype",
    [(8_000, 1, "PCM_16"), (16_000, 1, "PCM_16"), (22_050, 1, "PCM_24"), (44_100, 2, "PCM_16"),
     (48_000, 2, "FLOAT"), (24_000, 1, "PCM_32"), (32_000, 1, "DOUBLE"), (11_025, 2, "PCM_U8")],
)
def test_wav_flavours_convert_to_16k_mono_float(tmp_path, rate, channels, subtype):
    x = tone(rate)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    p = tmp_path / f"t_{rate}_{channels}_{subtype}.wav"
    sf.write(str(p), data, rate, subtype=subtype)
    audio, info = load_wav(p)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16_000) <= 2
    assert (info.sample_rate, info.channels, info.subtype) == (rate, channels, subtype)
    # the 440 Hz tone survives the resampler: its spectral peak stays at 440 Hz
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert abs(np.argmax(spectrum) * 16_000 / 12_000 - 440) < 3
    assert 0.3 < np.abs(audio[2000:14000]).max() <= 0.51


def test_stereo_is_mixed_down(tmp_path):
    left, right = tone(16_000), np.zeros(16_000, np.float32)
    p = tmp_path / "lr.wav"
    sf.write(str(p), np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    audio, _ = load_wav(p)
    np.testing.assert_allclose(audio, left / 2, atol=1e-6)


@pytest.mark.parametrize("case", ["empty", "header_only", "truncated", "text", "random", "missing", "folder",
                                  "rate_4k", "rate_96k"])
def test_bad_files_are_clear_errors(tmp_path, case):
    p = tmp_path / f"{case}.wav"
    good = SAMPLE_TE.read_bytes()
    if case == "empty":
        p.write_bytes(b"")
    elif case == "header_only":
        p.write_bytes(good[:44])
    elif case == "truncated":
        p.write_bytes(good[: len(good) // 3])
    elif case == "text":
        p.write_text("this is not audio\n" * 50)
    elif case == "random":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif case == "folder":
        p.mkdir()
    elif case == "rate_4k":
        sf.write(str(p), tone(4_000), 4_000)
    elif case == "rate_96k":
        sf.write(str(p), tone(96_000), 96_000)
    with pytest.raises(AudioError) as err:
        load_wav(p)
    assert str(p) in str(err.value)
    assert "Traceback" not in str(err.value)


def test_truncated_wav_names_the_shortfall(tmp_path):
    p = tmp_path / "cut.wav"
    good = SAMPLE_TE.read_bytes()
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(AudioError, match="truncated|no audio|not a readable"):
        load_wav(p)


def test_to_float32_and_stream_resampler_match_whole_resampling():
    pcm = (tone(24_000) * 32767).astype(np.int16)
    x = to_float32(pcm)
    assert x.dtype == np.float32 and np.abs(x).max() <= 0.5 + 1e-4
    whole = resample(x, 24_000, 16_000)
    rs = StreamResampler(24_000, 16_000)
    parts = [rs.process(x[i: i + 480]) for i in range(0, len(x), 480)] + [rs.process(np.zeros(0, np.float32), last=True)]
    streamed = np.concatenate(parts)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole)) - 200
    np.testing.assert_allclose(streamed[200:n], whole[200:n], atol=2e-3)

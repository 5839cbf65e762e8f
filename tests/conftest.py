"""Shared fixtures: the real offline engine (loaded once), and Telugu/English test audio
made with espeak-ng (a real synthesiser; no recordings ship in any package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ASSETS = Path(__file__).resolve().parents[1] / "engine" / "assets"
SAMPLE_TE = ASSETS / "sample_te.wav"


def speak(text: str, path: Path, voice: str = "te", rate: int | None = None, speed: int = 150) -> Path:
    """Synthesise ``text`` with espeak-ng into ``path`` (resampled to ``rate`` if given)."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required (scripts/setup.sh installs it)"
    wav = subprocess.run([exe, "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True,
                         check=True).stdout
    path.write_bytes(wav)
    if rate is not None:
        from engine.audio import load_wav, write_wav

        audio, _ = load_wav(path, target_rate=rate)
        write_wav(path, audio, rate)
    return path


def silence(seconds: float, rate: int = 16_000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def concat_wav(path: Path, parts: list[np.ndarray], rate: int = 16_000) -> Path:
    sf.write(str(path), np.concatenate(parts), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def offline_engine():
    """The real offline engine (Silero, Whisper base, Gemma 3 270M, espeak-ng), loaded once."""
    from engine.engine import Engine

    engine = Engine.load("offline")
    yield engine
    engine.close()

"""The shortened Whisper encoder window (``asr.window_s``), on the real Whisper base model:
the same words as Whisper's own 30 s window on English speech (espeak-ng), for utterances
shorter and longer than the window."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import load_wav
from engine.config import ASROptions, load_profile
from engine.errors import ConfigError
from engine.models import resolve
from engine.stages.asr_whisper import FasterWhisperASR, window_for
from tests.conftest import silence, speak


def test_window_for():
    assert window_for(2.4, 30) == 30  # 30: Whisper's own behaviour
    assert window_for(2.4, 10) == 10
    assert window_for(7.9, 10) == 10
    assert window_for(8.1, 10) == 11  # the utterance plus 2 s of silence
    assert window_for(12.0, 10) == 14
    assert window_for(29.0, 10) == 30
    assert window_for(45.0, 10) == 30  # past 30 s: faster-whisper's own 30 s chunks


def test_profiles_choose_their_window():
    assert load_profile("offline").asr.window_s == 10
    assert load_profile("gpu").asr.window_s == 30
    assert load_profile("offline", ["asr.window_s=30"]).asr.window_s == 30
    with pytest.raises(ConfigError, match="asr.window_s must be at least 1 second"):
        load_profile("offline", ["asr.window_s=0"])


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c == " ").split()


@pytest.fixture(scope="module")
def asr_pair():
    profile = load_profile("offline")
    path = resolve("asr", profile.asr.model, profile.name, profile.asr.compute_type)
    made = []
    for window in (30, 10):
        asr = FasterWhisperASR(ASROptions(model=profile.asr.model, language="en", window_s=window), path)
        asr.setup()
        made.append(asr)
    yield made
    for asr in made:
        asr.close()


@pytest.mark.slow
def test_short_window_writes_the_same_words_as_whispers_own(asr_pair, tmp_path):
    whole, short = asr_pair
    texts = ["Please turn off the lights before you leave the room.", "What is the capital of India?"]
    for i, text in enumerate(texts):
        audio, _ = load_wav(speak(text, tmp_path / f"en{i}.wav", voice="en-us", rate=16_000))
        assert window_for(len(audio) / 16_000, 10) == 10
        a, b = whole.transcribe(audio, "en"), short.transcribe(audio, "en")
        assert _words(b.text) == _words(a.text) and len(_words(b.text)) >= 5
        assert b.language == "en"


@pytest.mark.slow
def test_an_utterance_longer_than_the_window_gets_a_longer_window(asr_pair, tmp_path):
    whole, short = asr_pair
    parts = [load_wav(speak(t, tmp_path / f"p{i}.wav", voice="en-us", rate=16_000))[0] for i, t in enumerate(
        ["The meeting has been moved to Thursday afternoon.", "My brother bought a new phone last week.",
         "The children are playing football in the park."])]
    audio = np.concatenate([parts[0], silence(0.8), parts[1], silence(0.8), parts[2]])
    assert 9 < len(audio) / 16_000 < 28 and window_for(len(audio) / 16_000, 10) > 10
    words = _words(short.transcribe(audio, "en").text)
    assert words[:3] == ["the", "meeting", "has"] and words[-3:] == ["in", "the", "park"]
    assert words == _words(whole.transcribe(audio, "en").text)

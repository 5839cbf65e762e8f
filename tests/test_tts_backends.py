"""The neural TTS backends (``vits``, ``speecht5``) on tiny random models built offline.

The voices say nothing (random weights); these tests check loading, the Telugu text front
ends, the output contract (float32 mono at ``sample_rate``) and the errors for bad folders.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import TTSOptions
from engine.errors import ModelError
from engine.registry import backend_class

TELUGU = "నమస్కారం, మీరు ఎలా ఉన్నారు? ఈ రోజు 25 డిగ్రీలు."


@pytest.fixture(scope="module")
def vits_dir(tmp_path_factory):
    from training.tiny import build_tiny_vits

    return build_tiny_vits(tmp_path_factory.mktemp("vits") / "vits")


@pytest.fixture(scope="module")
def speecht5_export(tmp_path_factory):
    """A SpeechT5 export written straight from the tiny base (no training steps)."""
    from transformers import SpeechT5FeatureExtractor, SpeechT5ForTextToSpeech, SpeechT5HifiGan

    from engine.text import tts_model_text
    from training.tiny import build_tiny_speecht5
    from training.tts import TTSOptions as TrainTTSOptions
    from training.tts import base_char_vocab, extend_vocab, write_export

    root = tmp_path_factory.mktemp("speecht5")
    base, voc = build_tiny_speecht5(root / "base", root / "hifigan")
    model = SpeechT5ForTextToSpeech.from_pretrained(str(base))
    vocab, added = extend_vocab(model, base_char_vocab(str(base)), [tts_model_text(TELUGU)])
    assert "ā" in added
    spk = np.ones(512, np.float32) / np.sqrt(512)
    return write_export(
        root / "export",
        model,
        SpeechT5HifiGan.from_pretrained(str(voc)),
        SpeechT5FeatureExtractor.from_pretrained(str(base)),
        vocab,
        {"a": spk},
        "a",
        TrainTTSOptions(base=str(base)),
        0,
    )


def make(backend: str, path, **kw):
    cls = backend_class("tts", backend)
    tts = cls(TTSOptions(backend=backend, model=str(path), **kw), str(path))
    tts.setup()
    return tts


def test_vits_speaks_telugu(vits_dir):
    tts = make("vits", vits_dir)
    try:
        audio = tts.synthesize(TELUGU)
        assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 1000
        assert np.isfinite(audio).all() and tts.sample_rate == 16000
        chunks = list(tts.stream(TELUGU))
        assert chunks and all(c.dtype == np.float32 for c in chunks)
        assert tts.describe()["backend"] == "vits"
    finally:
        tts.close()


def test_vits_drops_unknown_characters_and_maps_speed(vits_dir):
    tts = make("vits", vits_dir, speed=350)
    try:
        assert tts.clean_text("నమస్కారం, hello 😀 12!") == "నమస్కారం పన్నెండు"
        assert tts.synthesize("hello 😀 !!").size == 0  # nothing it can say: silence, not a crash
        assert tts.synthesize("").size == 0
        assert tts.describe()["speaking_rate"] == pytest.approx(2.0)
    finally:
        tts.close()


def test_vits_longer_speed_is_slower(vits_dir):
    slow, fast = make("vits", vits_dir, speed=100), make("vits", vits_dir, speed=300)
    import torch

    torch.manual_seed(0)
    n_slow = slow.synthesize("తెలుగు భాష చాలా మధురమైనది").size
    torch.manual_seed(0)
    n_fast = fast.synthesize("తెలుగు భాష చాలా మధురమైనది").size
    assert n_slow > n_fast


@pytest.mark.parametrize("backend", ["vits", "speecht5"])
def test_missing_or_wrong_folder_is_a_model_error(backend, tmp_path, vits_dir):
    with pytest.raises(ModelError, match="folder not found"):
        make(backend, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="missing"):
        make(backend, tmp_path / "empty")


def test_speecht5_rejects_a_vits_folder(vits_dir):
    with pytest.raises(ModelError, match="not a SpeechT5 export"):
        make("speecht5", vits_dir)


def test_speecht5_export_speaks_telugu_through_iso15919(speecht5_export):
    tts = make("speecht5", speecht5_export)
    try:
        assert tts.model_text("నమస్కారం 2") == "namaskāraṁ reṁḍu"
        audio = tts.synthesize(TELUGU)
        assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
        assert np.isfinite(audio).all() and tts.sample_rate == 16000
        assert tts.synthesize("😀").size == 0
        assert tts.describe()["transliteration"] == "iso15919"
    finally:
        tts.close()


def test_speecht5_long_text_is_spoken_in_pieces():
    from engine.stages.base import split_text

    text = "ఇది ఒక వాక్యం. " * 40
    pieces = split_text(text, 200)
    assert len(pieces) > 1 and all(len(p) <= 200 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_speecht5_export_config_names_the_front_end(speecht5_export):
    config = json.loads((speecht5_export / "s2s_tts.json").read_text())
    assert config["text"]["transliteration"] == "iso15919"
    assert config["text"]["normalizer"] == "engine.text.normalize_telugu"


def test_cuda_without_a_gpu_is_a_model_error(vits_dir, speecht5_export):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        make("vits", vits_dir, device="cuda")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        make("speecht5", speecht5_export, device="cuda")

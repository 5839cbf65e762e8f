"""SpeechT5 Telugu voice, from a folder exported by ``s2s-train tts``.

SpeechT5 (transformers) with its HiFi-GAN vocoder, 16 kHz. Its character vocabulary is
Latin, so the export says how text reaches it (``s2s_tts.json``): Telugu is normalised and
transliterated to ISO 15919 by ``engine.text.tts_model_text``, the very function training
used, then mapped to ids with the export's ``text_vocab.json`` (no sentencepiece needed);
characters outside that vocabulary are dropped. The speaker embedding is the export's
``speaker_embedding.npy``, computed from the speaker's audio at training time.

torch and transformers are imported in ``setup()`` only (the registry imports this module
lazily as well).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from engine.config import TTSOptions
from engine.errors import StageError
from engine.models import model_folder
from engine.stages.base import ChunkedTTSBackend, torch_device
from engine.text import char_ids, tts_model_text

TTS_CONFIG = "s2s_tts.json"
MAX_CHUNK_CHARS = 200  # SpeechT5 attends over at most 450 characters; long replies are spoken in pieces


FIX = "train and export a voice with `s2s-train tts PREPARED --out DIR`, then set tts.model=DIR/export"


class SpeechT5TTS(ChunkedTTSBackend):
    name = "speecht5"
    max_chunk_chars = MAX_CHUNK_CHARS
    fix = FIX

    def __init__(self, options: TTSOptions, model_path: str):
        super().__init__(options, model_path)
        self._vocoder: Any = None
        self._speaker: Any = None
        self._vocab: dict[str, int] = {}
        self._eos = 2
        self._config: dict[str, Any] = {}


    def setup(self) -> None:
        path = model_folder("tts", self.options.model, self.model_path, "SpeechT5 export",
                            (TTS_CONFIG, "config.json", "text_vocab.json", "speaker_embedding.npy"), FIX)
        try:
            self._config = json.loads((path / TTS_CONFIG).read_text(encoding="utf-8"))
            vocab_file = json.loads(
                (path / self._config.get("vocab", "text_vocab.json")).read_text(encoding="utf-8")
            )
            self._vocab = vocab_file["vocab"]
            self._eos = int(self._config.get("eos_id", self._vocab.get("</s>", 2)))
            speaker = np.load(path / "speaker_embedding.npy").astype(np.float32).reshape(1, -1)
        except (OSError, ValueError, KeyError) as exc:
            raise self._error(f"export files unreadable ({exc})") from None
        if self._config.get("backend") != "speecht5":
            raise self._error(f"{TTS_CONFIG} is for backend {self._config.get('backend')!r}, not speecht5")
        try:
            tts_model_text("తెలుగు", self._config.get("text", {}).get("transliteration", "iso15919"))
        except ImportError as exc:
            raise self._error(
                f"text front end unavailable ({exc})",
                ".venv/bin/pip install -c constraints.txt -e '.[gpu]'",
            ) from None
        except ValueError as exc:
            raise self._error(f"{TTS_CONFIG}: {exc}") from None

        import torch
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan

        self.device = torch_device(self.options.device, torch)
        if self.device is None:
            raise self._error("tts.device is cuda but torch sees no CUDA GPU", "set tts.device=cpu (or auto)")
        try:
            model = SpeechT5ForTextToSpeech.from_pretrained(str(path))
            vocoder = SpeechT5HifiGan.from_pretrained(str(path / self._config.get("vocoder", "vocoder")))
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._error(f"failed to load ({str(exc)[:300]})") from None
        self._model = model.to(self.device).eval()
        self._vocoder = vocoder.to(self.device).eval()
        self._speaker = torch.from_numpy(speaker).to(self.device)
        self.sample_rate = int(
            self._config.get("sample_rate", getattr(vocoder.config, "sampling_rate", 16_000))
        )
        self.synthesize("నమస్కారం")  # warm up

    def model_text(self, text: str) -> str:
        """The Latin text the model reads for ``text`` (exactly as in training)."""
        return tts_model_text(text, self._config.get("text", {}).get("transliteration", "iso15919"))

    def _ids(self, text: str) -> list[int]:
        ids = char_ids(self.model_text(text), self._vocab, self._eos)
        # the word mark and </s> alone say nothing
        return ids if len([i for i in ids if i != self._eos]) > 1 else []

    def _speak(self, text: str) -> np.ndarray:
        import torch

        ids = self._ids(text)
        if not ids:
            return np.zeros(0, np.float32)
        gen = self._config.get("generation", {})
        try:
            with torch.inference_mode():
                wave = self._model.generate_speech(
                    torch.tensor([ids], device=self.device),
                    self._speaker,
                    vocoder=self._vocoder,
                    threshold=float(gen.get("threshold", 0.5)),
                    minlenratio=float(gen.get("minlenratio", 0.0)),
                    maxlenratio=float(gen.get("maxlenratio", 20.0)),
                )
        except RuntimeError as exc:
            raise StageError("tts", f"SpeechT5 failed: {str(exc)[:200]}") from None
        return wave.float().cpu().numpy().astype(np.float32).reshape(-1)

    def close(self) -> None:
        self._model = self._vocoder = self._speaker = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "speaker": self._config.get("speaker"),
                "transliteration": self._config.get("text", {}).get("transliteration")}


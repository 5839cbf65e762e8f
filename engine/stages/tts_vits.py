"""MMS VITS voice (transformers ``VitsModel``), e.g. facebook/mms-tts-tel, from a local folder.

VITS is non-autoregressive: one forward pass speaks a whole sentence (about 0.1-0.3 s on a
CPU for a short sentence with the 36M-parameter MMS model, milliseconds on a GPU). MMS-TTS
Telugu reads Telugu script directly (no romanisation, no phonemiser); its vocabulary is
the characters it was trained on, so text is normalised (NFC, numbers as Telugu words:
:func:`engine.text.normalize_telugu`, always, so what is spoken does not depend on an optional
package) and characters outside the vocabulary are dropped instead of failing. Licence of facebook/mms-tts-tel: CC-BY-NC-4.0.

torch and transformers are imported in ``setup()`` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.config import TTSOptions
from engine.errors import StageError
from engine.models import model_folder
from engine.stages.base import ChunkedTTSBackend, torch_device
from engine.text import normalize_telugu

NORMAL_SPEED = 175  # TTSOptions.speed is espeak-ng words per minute; 175 is VITS speaking_rate 1.0
FIX = ("fetch it with `s2s-engine models fetch --profile gpu`, or point tts.model "
       "at a folder with a VITS config.json, vocab.json and weights")


class VitsTTS(ChunkedTTSBackend):
    name = "vits"  # speaks at most ChunkedTTSBackend.max_chunk_chars (400) at a time
    fix = FIX

    def __init__(self, options: TTSOptions, model_path: str):
        super().__init__(options, model_path)
        self._tokenizer: Any = None
        self._chars: set[str] = set()

    def setup(self) -> None:
        path = model_folder("tts", self.options.model, self.model_path, "VITS folder", ("config.json", "vocab.json"),
                            FIX)

        import torch
        from transformers import VitsModel, VitsTokenizer

        self.device = torch_device(self.options.device, torch)
        if self.device is None:
            raise self._error("tts.device is cuda but torch sees no CUDA GPU", "set tts.device=cpu (or auto)")
        try:
            self._tokenizer = VitsTokenizer.from_pretrained(str(path))
            model = VitsModel.from_pretrained(str(path))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise self._error(f"failed to load ({str(exc)[:300]})") from None
        if getattr(model.config, "model_type", "") != "vits":
            raise self._error(f"config.json is a {model.config.model_type!r} model, not vits")
        model.speaking_rate = max(0.25, min(4.0, self.options.speed / NORMAL_SPEED))
        self._model = model.to(self.device).eval()
        self._chars = {t for t in self._tokenizer.get_vocab() if len(t) == 1}
        self.sample_rate = int(model.config.sampling_rate)
        self.synthesize("నమస్కారం")  # warm up

    def clean_text(self, text: str) -> str:
        """Text reduced to what the tokenizer knows: NFC, numbers spelt out, lower case, unknown chars dropped."""
        text = normalize_telugu(text).lower()
        if getattr(self._tokenizer, "is_uroman", False):
            return " ".join(text.split())  # the tokenizer romanises; leave the script alone
        kept = "".join(c if c in self._chars else (" " if c.isspace() else "") for c in text)
        if " " not in self._chars:
            kept = kept.replace(" ", "")
        return " ".join(kept.split())

    def _speak(self, text: str) -> np.ndarray:
        import torch

        clean = self.clean_text(text)
        if not clean.strip():
            return np.zeros(0, np.float32)
        inputs = self._tokenizer(clean, return_tensors="pt")
        if inputs["input_ids"].shape[1] == 0:
            return np.zeros(0, np.float32)
        try:
            with torch.inference_mode():
                wave = self._model(**{k: v.to(self.device) for k, v in inputs.items()}).waveform
        except RuntimeError as exc:
            raise StageError("tts", f"VITS failed: {str(exc)[:200]}") from None
        return wave[0].float().cpu().numpy().astype(np.float32)

    def close(self) -> None:
        self._model = self._tokenizer = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "speaking_rate": getattr(self._model, "speaking_rate", None)}


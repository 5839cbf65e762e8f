"""faster-whisper (CTranslate2) speech recognition.

CTranslate2 runs Whisper int8 on CPU and float16 on CUDA, several times faster than the
reference implementation; faster-whisper adds the decoding loop and tokenizer. The
``transcribe()`` generator is consumed here, inside the worker thread, never on the event
loop. ``num_workers=2`` lets a final decode start while a partial one is still running.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from engine.config import ASROptions
from engine.errors import ModelError
from engine.models import model_folder
from engine.stages.base import ASRBackend, Transcript

MAX_NEW_TOKENS = 440  # Whisper's decoder holds 448 positions, a few go to the prompt
TOKENS_PER_SECOND = 40
log = logging.getLogger(__name__)


def collapse_repeats(text: str, keep: int = 2) -> str:
    """Cut a run of the same word repeated more than ``keep`` times (a decoding loop) to one."""
    words, out, run = text.split(), [], 0
    for w in words:
        run = run + 1 if out and w == out[-1] else 1
        if run <= keep:
            out.append(w)
    if len(out) < len(words):  # a loop happened: keep one copy of the looping word
        cleaned: list[str] = []
        for w in out:
            if not (cleaned and w == cleaned[-1]):
                cleaned.append(w)
        out = cleaned
    return " ".join(out)


class FasterWhisperASR(ASRBackend):
    name = "faster-whisper"

    def __init__(self, options: ASROptions, model_path: str):
        self.options, self.model_path = options, model_path
        self._model = None
        self.device = options.device
        self.decode_cost_ms: float | None = None  # measured at setup on 3 s of audio
        self.note: str | None = None  # set when "auto" had to fall back to the CPU

    def setup(self) -> None:
        path = model_folder("asr", self.options.model, self.model_path, "CTranslate2 Whisper folder",
                            ("model.bin", "config.json", "tokenizer.json"),
                            "point asr.model at a converted model (s2s-train asr exports one)")
        device = self.options.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        try:
            self._load(path, device)
        except ModelError:
            if self.options.device != "auto" or device == "cpu":
                raise
            # "auto" found a GPU that cannot run the model (e.g. no cuBLAS 12): say so, use the CPU
            self.note = "ASR: CUDA device found but unusable, running on the CPU"
            log.warning(self.note)
            self._load(path, "cpu", compute_type="int8")

    def _load(self, path: Path, device: str, compute_type: str | None = None) -> None:
        from faster_whisper import WhisperModel

        self.device = device
        if device.startswith("cuda"):
            from engine.cuda import preload

            preload()  # CTranslate2 opens libcublas.so.12 at the first GPU decode
        compute_type = compute_type or self.options.compute_type
        try:
            self._model = WhisperModel(
                str(path), device=device, compute_type=compute_type,
                cpu_threads=self.options.cpu_threads or min(os.cpu_count() or 4, 8), num_workers=2,
                local_files_only=True,
            )
            # Warm up and measure what one decode costs on this hardware (for adaptive
            # partials). The first decode pays one-off costs (and is where a missing CUDA
            # library shows); the second is what a partial would cost.
            probe = _probe_audio()
            self.transcribe(probe, self._language())
            t0 = time.perf_counter()
            self.transcribe(probe, self._language())
            self.decode_cost_ms = (time.perf_counter() - t0) * 1000
        except Exception as exc:  # noqa: BLE001 - ctranslate2 raises RuntimeError/ValueError/etc.
            self._model = None
            fix = None
            if "libcublas" in str(exc) or "libcudnn" in str(exc):
                fix = ("CTranslate2 needs CUDA 12 cuBLAS: pip install nvidia-cublas-cu12 "
                       "(scripts/setup.sh --cuda does), or set asr.device=cpu")
            raise ModelError("asr", self.options.model, str(path), f"failed to load on {device} ({exc})",
                             fix) from None

    def _language(self) -> str | None:
        lang = self.options.language
        return None if lang in ("", "auto", None) else lang

    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        seconds = len(audio) / 16_000
        window = window_for(seconds, self.options.window_s)
        if window < WHISPER_WINDOW_S and language:
            return self._transcribe_window(np.asarray(audio, np.float32), language, window)
        segments, info = self._model.transcribe(
            np.asarray(audio, np.float32),
            language=language,
            task="transcribe",
            beam_size=self.options.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            temperature=0.0,
            max_new_tokens=max_new_tokens(seconds),
        )
        text = " ".join(s.text.strip() for s in segments).strip()  # consumes the generator here
        text = text.replace("\ufffd", "").strip()  # bytes of a character cut by the token limit
        return Transcript(text=collapse_repeats(text), language=info.language)

    def _transcribe_window(self, audio: np.ndarray, language: str, window: int) -> Transcript:
        text = transcribe_window(self._model, audio, language, window, self.options.beam_size)
        return Transcript(text=collapse_repeats(text), language=language)

    def close(self) -> None:
        self._model = None

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.options.model, "path": self.model_path,
                "device": self.device, "compute_type": self.options.compute_type,
                "window_s": self.options.window_s,
                "decode_cost_ms": round(self.decode_cost_ms or 0, 1)}


WHISPER_WINDOW_S = 30
WINDOW_MARGIN_S = 2


def window_for(seconds: float, window_s: int) -> int:
    """The encoder window for an utterance, in whole seconds: Whisper's 30, or (``window_s``
    < 30) the larger of ``window_s`` and the utterance plus 2 s of silence, at most 30."""
    if window_s >= WHISPER_WINDOW_S:
        return WHISPER_WINDOW_S
    return min(WHISPER_WINDOW_S, max(window_s, math.ceil(seconds + WINDOW_MARGIN_S)))


def max_new_tokens(seconds: float) -> int:
    """Whisper can loop on one token ("... ... ...") for seconds; no real speech needs more than
    ~40 tokens a second (Telugu letters take several byte-level tokens)."""
    return min(MAX_NEW_TOKENS, 16 + int(TOKENS_PER_SECOND * seconds))


def transcribe_window(model, audio: np.ndarray, language: str, window: int, beam_size: int = 1) -> str:  # noqa: ANN001
    """Transcribe one utterance (at most ``window`` seconds) with a faster-whisper ``WhisperModel``,
    encoding ``window`` seconds instead of 30, then decoding as ``transcribe()`` would with no
    timestamps, temperature 0 and no previous text."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    samples = window * 16_000
    # Pad the audio with silence to the window first, as Whisper pads to 30 s, so the log-Mel
    # normalisation (relative to the loudest bin) sees the same signal.
    padded = np.zeros(samples, np.float32)
    padded[: min(len(audio), samples)] = np.asarray(audio, np.float32)[:samples]
    features = model.feature_extractor(padded)[:, : samples // 160]
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    result = model.model.generate(
        model.encode(features), [prompt], beam_size=beam_size,
        max_length=len(prompt) + max_new_tokens(len(audio) / 16_000),
        suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
    )[0]
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    return tokenizer.decode(tokens).replace("\ufffd", "").strip()


def _probe_audio() -> np.ndarray:
    """Real speech to time a decode with (the bundled Telugu sample), else quiet noise."""
    sample = Path(__file__).resolve().parents[1] / "assets" / "sample_te.wav"
    try:
        from engine.audio import load_wav

        return load_wav(sample)[0]
    except Exception:  # noqa: BLE001 - the probe is best effort
        return np.random.default_rng(0).normal(0, 0.01, 48_000).astype(np.float32)


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001
        return False

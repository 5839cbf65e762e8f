"""faster-whisper (CTranslate2) speech recognition, with bounded decodes.

CTranslate2 runs Whisper int8 on CPU and float16 on CUDA, several times faster than the
reference implementation; faster-whisper adds the tokenizer, the feature extractor and its
``transcribe()`` loop. A turn (at most 30 s) is decoded here with CTranslate2's ``generate``
directly, exactly as ``transcribe()`` decodes one 30 s chunk (same features, prompt, suppressed
tokens and no-speech rule), with three differences:

- the encoder window can be shorter than 30 s (``asr.window_s``);
- the token cap follows the audio length and the language's script, and really is the cap:
  CTranslate2 decodes at most ``max_length / 2`` tokens, so ``transcribe(max_new_tokens=N)``
  stops at about N/2;
- the decode runs in steps (16 tokens, then 32, 64, ...) and stops after a step that loops or
  writes another script than the language's. CTranslate2's ``generate`` takes no logits
  processor or stopping callback, so steps are the only way to look at the output mid-decode;
  a greedy decode continued from its own tokens gives exactly the tokens of one long decode.

Everything runs in the caller's thread (a worker of the engine's ASR pool), never on the event
loop. ``num_workers=2`` lets a final decode start while a partial one is still running.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.audio import ENGINE_RATE
from engine.config import ASROptions
from engine.errors import ModelError
from engine.models import model_folder
from engine.script import script_of, script_ok
from engine.stages.base import ASRBackend, Transcript, default_cpu_threads

log = logging.getLogger(__name__)


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
        if self._language() is None:
            _check_detects(self.options.model, path)
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
                cpu_threads=self.options.cpu_threads or default_cpu_threads(), num_workers=2,
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
        o = self.options
        return transcribe(self._model, audio, language, o.window_s, o.beam_size,
                          tokens_per_s=o.max_tokens_per_s, step=o.decode_step_tokens,
                          stop_on_wrong_script=o.stop_on_wrong_script, no_speech_threshold=o.no_speech_threshold)

    def variant(self, **changes: object) -> FasterWhisperASR:
        """The same loaded model with other decode options (``beam_size``, ``window_s``, ...):
        for benchmarks that compare settings without loading the model again."""
        other = FasterWhisperASR(replace(self.options, **changes), self.model_path)
        other._model, other.device, other.decode_cost_ms = self._model, self.device, self.decode_cost_ms
        return other

    def close(self) -> None:
        self._model = None

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.options.model, "path": self.model_path,
                "device": self.device, "compute_type": self.options.compute_type,
                "beam_size": self.options.beam_size, "window_s": self.options.window_s,
                "decode_step_tokens": self.options.decode_step_tokens,
                "decode_cost_ms": round(self.decode_cost_ms or 0, 1)}


WHISPER_WINDOW_S = 30
WINDOW_MARGIN_S = 2
MAX_TOKENS = 224
"""CTranslate2 decodes at most half of Whisper's 448 text positions (``max_length / 2``)."""
CAP_BASE_TOKENS = 8
LATIN_TOKENS_PER_S = 12.0
OTHER_TOKENS_PER_S = 30.0
NO_SPEECH_LOGPROB = -1.0
"""faster-whisper's ``log_prob_threshold``: a decode whose first step is probably not speech
(``no_speech_threshold``, 0.6 in faster-whisper) and not confidently worded is dropped, as
``transcribe()`` drops it."""


def window_for(seconds: float, window_s: int) -> int:
    """The encoder window for an utterance, in whole seconds: Whisper's 30, or (``window_s``
    < 30) the larger of ``window_s`` and the utterance plus 2 s of silence, at most 30."""
    if window_s >= WHISPER_WINDOW_S:
        return WHISPER_WINDOW_S
    return min(WHISPER_WINDOW_S, max(window_s, math.ceil(seconds + WINDOW_MARGIN_S)))


def max_new_tokens(seconds: float, language: str | None = None, tokens_per_s: float = 0.0) -> int:
    """The token cap of one decode. Real speech needs a few tokens a second in a Latin-script
    language and 20-26 in Telugu (byte-level pieces); a decode past that is looping."""
    if tokens_per_s <= 0:
        tokens_per_s = LATIN_TOKENS_PER_S if script_of(language) == "latin" else OTHER_TOKENS_PER_S
    return min(MAX_TOKENS, CAP_BASE_TOKENS + int(tokens_per_s * seconds))


def find_loop(tokens: list[int], max_period: int = 24, min_repeats: int = 3, min_span: int = 6) -> int | None:
    """Whether ``tokens`` end in a loop: the same block of 1..``max_period`` tokens at least
    ``min_repeats`` times in a row (``min_span`` tokens at least) up to the end, the last copy
    possibly cut short. Returns how many tokens to keep (the text before the loop plus one copy
    of the block), or None when the end does not loop."""
    n = len(tokens)
    for period in range(1, min(max_period, n // min_repeats) + 1):
        start = n - period  # extend the periodic tail back as far as it goes
        while start > 0 and tokens[start - 1] == tokens[start - 1 + period]:
            start -= 1
        if n - start >= max(min_repeats * period, min_span):
            return start + period
    return None


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


def features(model, audio: np.ndarray, window: int) -> np.ndarray:  # noqa: ANN001
    """Log-Mel features of one utterance for a ``window``-second encoder input.

    At 30 s exactly as faster-whisper's ``transcribe()`` makes them (the utterance's own
    spectrogram, normalised to its loudest bin, zero-padded to 3000 frames), so the engine's
    decode of a turn equals ``transcribe()`` on the same audio. Below 30 s the audio is padded
    with silence to the window first: a shorter encoder input is further from what Whisper was
    trained on, and real silence (rather than zero features) keeps it closer."""
    audio = np.asarray(audio, np.float32)
    frames = window * 100
    if window >= WHISPER_WINDOW_S:
        feats = model.feature_extractor(audio[: window * ENGINE_RATE])[:, :-1]
        return np.pad(feats, ((0, 0), (0, max(0, frames - feats.shape[1]))))[:, :frames]
    padded = np.zeros(window * ENGINE_RATE, np.float32)
    padded[: min(len(audio), len(padded))] = audio[: len(padded)]
    return model.feature_extractor(padded)[:, :frames]


def transcribe(model, audio: np.ndarray, language: str | None, window_s: int = WHISPER_WINDOW_S,  # noqa: ANN001
               beam_size: int = 1, *, tokens_per_s: float = 0.0, step: int = 16,
               stop_on_wrong_script: bool = True, no_speech_threshold: float = 0.6) -> Transcript:
    """Transcribe one utterance with a faster-whisper ``WhisperModel`` as ``transcribe()`` does
    (no timestamps, temperature 0, no previous text, its suppressed tokens and no-speech rule),
    encoding a ``window_for`` window, and decoding in bounded steps (see ``ASROptions``).
    Longer than 30 s: faster-whisper's own ``transcribe()`` (its 30 s chunks)."""
    audio = np.asarray(audio, np.float32)
    seconds = len(audio) / ENGINE_RATE
    if seconds > WHISPER_WINDOW_S:
        return _transcribe_long(model, audio, language, beam_size)
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    window = window_for(seconds, window_s) if language else WHISPER_WINDOW_S
    encoded = model.encode(features(model, audio, window))
    if not language:  # detect it on Whisper's own 30 s window, as transcribe() does
        language = model.model.detect_language(encoded)[0][0][0][2:-2]
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    suppress = get_suppressed_tokens(tokenizer, (-1,))
    cap = max_new_tokens(seconds, language, tokens_per_s)
    check_script = stop_on_wrong_script and script_of(language) is not None
    tokens: list[int] = []
    stop, size = None, (step if step > 0 else cap)
    while True:
        n = min(size, cap - len(tokens))
        limit = len(tokens) + n  # CTranslate2 returns at most max_length // 2 tokens (prefix included)
        first = not tokens
        result = model.model.generate(
            encoded, [prompt + tokens], beam_size=beam_size, max_length=2 * limit,
            suppress_blank=first, suppress_tokens=suppress, return_scores=first, return_no_speech_prob=first,
        )[0]
        out = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        ended = len(result.sequences_ids[0]) < limit
        if first and result.no_speech_prob > no_speech_threshold and _avg_logprob(result) < NO_SPEECH_LOGPROB:
            return Transcript("", language, None, "no_speech", 0)
        tokens = out
        if step > 0:
            keep = find_loop(tokens)
            if keep is not None:
                tokens, stop = tokens[:keep], "loop"
                break
        if ended:
            break
        if step > 0 and check_script and script_ok(_text(tokenizer, tokens), language) is False:
            stop = "script"
            break
        if len(tokens) >= cap:
            stop = "cap"
            break
        size *= 2
    text = collapse_repeats(_text(tokenizer, tokens))
    return Transcript(text, language, script_ok(text, language), stop, len(tokens))


def transcribe_window(model, audio: np.ndarray, language: str, window: int, beam_size: int = 1) -> str:  # noqa: ANN001
    """The text of :func:`transcribe` at a ``window``-second encoder window (``s2s-train eval``)."""
    return transcribe(model, audio, language, window, beam_size).text


def _text(tokenizer, tokens: list[int]) -> str:  # noqa: ANN001
    # U+FFFD: the bytes of a character cut by a step or the cap
    return tokenizer.decode(tokens).replace("\ufffd", "").strip()


def _avg_logprob(result) -> float:  # noqa: ANN001
    """faster-whisper's average log probability of a result (length penalty 1)."""
    n = len(result.sequences_ids[0])
    return result.scores[0] * n / (n + 1)


def _transcribe_long(model, audio: np.ndarray, language: str | None, beam_size: int) -> Transcript:  # noqa: ANN001
    segments, info = model.transcribe(
        audio, language=language, task="transcribe", beam_size=beam_size, vad_filter=False,
        condition_on_previous_text=False, without_timestamps=True, temperature=0.0,
    )
    text = " ".join(s.text.strip() for s in segments).replace("\ufffd", "").strip()  # consumes the generator
    text = collapse_repeats(text)
    return Transcript(text, info.language, script_ok(text, info.language))


def _check_detects(ref: str, path: Path) -> None:
    """``asr.language = "auto"`` needs the model's language list (CTranslate2's ``lang_ids``):
    without it every detection raises IndexError. A Whisper converted from a 2022 checkpoint by
    an older converter has an empty one."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # the load reports an unreadable folder
    if not config.get("lang_ids"):
        raise ModelError("asr", ref, str(path), 'asr.language is "auto" but this model has no language list '
                         '(config.json "lang_ids" is empty), so it cannot detect the language',
                         "set asr.language to the spoken language (--set asr.language=te), or convert the "
                         "Transformers checkpoint again: point asr.model at its folder, the engine fills the list")


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

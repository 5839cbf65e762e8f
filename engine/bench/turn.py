"""End-of-turn benchmarks: fixed silence against the adaptive policies, and the turn signals'
accuracy, on WAVs made here.

    s2s-engine bench make-wavs --out DIR           # labelled speech: complete, paused, cut-off
    s2s-engine bench latency --turn-policies silence,combined DIR/en/complete/*.wav --paused DIR/en/paused/*.wav
    s2s-engine bench turn DIR [--language en]       # accuracy of the audio model, the transcript, both

``make-wavs`` speaks a fixed set of English and Telugu sentences with espeak-ng (every voice
this machine has for the language; festival's Telugu voice too when ``text2wave`` and
``festvox-te-nsk`` are installed). Each sentence is cut where a speaker might pause, so every
sentence gives three clips: ``complete/`` (said whole), ``paused/`` (the first part, 700-800 ms
of silence, the rest: one utterance with a pause mid-sentence) and ``incomplete/`` (the first
part alone: a labelled cut-off). ``manifest.json`` lists them.

What synthetic speech cannot show: espeak-ng's prosody is flat, so an audio model hears a
cut-off phrase end the same way as a finished sentence; real speakers trail off, hold their
pitch or draw out the last syllable before a pause, which is what the audio model reads. Whisper
closes a cut-off sentence by itself ("... a table for" becomes "... a table for you."), so the
transcript signal is tested against that on purpose. The paused utterances are clean: no
breath, hesitation ("um") or filled pause, which real users make.

The policies are compared as the engine runs: llama.cpp's prompt cache is kept between calls (the
system prompt is prefilled once), unlike ``bench latency``'s (a)/(b)/(c), which empty it so that all
three pay the same prefill. Before each file under each policy the cache is cut back to the system
prompt, as a new session finds it: the same file under the policy before had left its transcript
read, and the next policy's reply skipped that prefill (with one core busy, the first token 22-37 ms
after the transcript instead of 94-123: docs/benchmarks.md).

Counting, per policy (``--turn-policies``), over the paused utterances:

- **resumed**: turns that were ended, then continued by the user within ``turn.resume_ms``
  (answered as one utterance);
- **replies to half an utterance**: replies whose audio had already gone out when the user went
  on (resumed turns whose reply had started, plus a first part answered as a turn of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import shutil
import statistics
import subprocess
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.audio import ENGINE_RATE, AudioError, load_wav, write_wav
from engine.bench.common import write_json
from engine.bench.latency import stream_file
from engine.bench.stats import dist
from engine.errors import ConfigError, S2SError
from engine.turn import TurnEvidence, TurnPolicy

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)

# (a first part that is not a finished sentence, the rest)
SENTENCES: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("I would like to book a table for", "two people tonight at eight."),
        ("What is the weather like in", "Hyderabad today?"),
        ("Can you tell me how to get to the", "railway station from here?"),
        ("Please remind me to call my", "mother tomorrow morning."),
        ("I want to buy a new phone with a", "good camera and a long battery life."),
        ("How long does it take to", "cook rice in a pressure cooker?"),
    ],
    "te": [
        ("నేను రేపు ఉదయం హైదరాబాద్", "వెళ్తున్నాను."),
        ("ఈ రోజు మా ఊరిలో వాతావరణం", "ఎలా ఉంది?"),
        ("నాకు చదవడానికి ఒక మంచి", "పుస్తకం చెప్పండి."),
        ("రేపు ఉదయం మా అమ్మకు ఫోన్ చేయమని", "నాకు గుర్తు చేయండి."),
        ("ఇక్కడి నుండి రైల్వే స్టేషన్‌కి", "ఎలా వెళ్ళాలి?"),
        ("ఈ సాయంత్రం సినిమాకి రెండు", "టికెట్లు బుక్ చేయండి."),
    ],
}
ESPEAK_VOICES = {"en": ("en-us", "en-gb"), "te": ("te",)}
PAUSES_MS = (700, 750, 800)
LEAD_S, TAIL_S = 0.3, 0.3


def _espeak(text: str, voice: str, speed: int = 150) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise S2SError("espeak-ng is not installed (scripts/setup.sh installs it)")
    wav = subprocess.run([exe, "-v", voice, "-s", str(speed), "--stdout"], input=text.encode("utf-8"),
                         capture_output=True, check=True, timeout=60).stdout
    return _decode(wav)


def _festival_te(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "in.txt", Path(d) / "out.wav"
        src.write_text(text, encoding="utf-8")
        subprocess.run(["text2wave", "-eval", "(voice_telugu_NSK_diphone)", str(src), "-o", str(out)],
                       capture_output=True, check=True, timeout=120)
        return load_wav(out)[0]


def _decode(wav: bytes) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        f.write(wav)
        f.flush()
        return load_wav(f.name)[0]


def _trim(audio: np.ndarray) -> np.ndarray:
    voiced = np.nonzero(np.abs(audio) > 1e-3)[0]
    return audio[voiced[0]: voiced[-1] + 1] if len(voiced) else audio


@functools.cache
def _has_festival_te() -> bool:
    """festival's Telugu voice is installed *and* speaks: without a default English voice
    (festvox-kallpc16k) festival lacks an intonation method and writes an empty file."""
    if shutil.which("text2wave") is None or not Path("/usr/share/festival/voices/telugu").exists():
        return False
    try:
        return len(_festival_te("నమస్కారం")) > 0
    except (subprocess.SubprocessError, OSError, AudioError) as exc:
        log.warning("festival's Telugu voice does not speak here, skipped: %s", exc)
        return False


def voices() -> dict[str, list[tuple[str, Any]]]:
    """(voice name, speak(text) -> 16 kHz audio) per language, as installed here."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for lang, names in ESPEAK_VOICES.items():
        out[lang] = [(f"espeak-{v}", lambda t, v=v: _espeak(t, v)) for v in names]
    if _has_festival_te():
        out["te"].append(("festival-te-nsk", _festival_te))
    return out


def make_wavs(out: str | Path, languages: tuple[str, ...] = ("en", "te")) -> dict[str, Any]:
    """Write the labelled set under ``out`` (see the module docstring); the manifest."""
    root = Path(out)
    rows: list[dict[str, Any]] = []
    silence = lambda s: np.zeros(int(ENGINE_RATE * s), np.float32)  # noqa: E731
    for lang in languages:
        for voice, speak in voices()[lang]:
            for i, (first, rest) in enumerate(SENTENCES[lang]):
                whole = _trim(speak(f"{first} {rest}"))
                head, tail = _trim(speak(first)), _trim(speak(rest))
                pause = PAUSES_MS[i % len(PAUSES_MS)]
                clips = {
                    "complete": (np.concatenate([silence(LEAD_S), whole, silence(TAIL_S)]), f"{first} {rest}"),
                    "paused": (np.concatenate([silence(LEAD_S), head, silence(pause / 1000), tail, silence(TAIL_S)]),
                               f"{first} … {rest}"),
                    "incomplete": (np.concatenate([silence(LEAD_S), head, silence(TAIL_S)]), first),
                }
                for kind, (audio, text) in clips.items():
                    path = root / lang / kind / f"{voice}_{i + 1:02d}.wav"
                    write_wav(path, audio, ENGINE_RATE)
                    rows.append({"path": str(path.relative_to(root)), "language": lang, "voice": voice,
                                 "kind": kind, "text": text, "pause_ms": pause if kind == "paused" else None})
    manifest = {"schema": "s2s.turn-wavs/1", "files": rows}
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------- policies compared


async def compare_policies(engine: Engine, complete: list[str], paused: list[str], policies: list[str],
                           turns: int = 1, paced: bool = True) -> dict[str, Any]:
    """Stream every file under every policy; voice-to-voice on complete utterances, and the
    early ends, resumes and replies to half an utterance on paused ones.

    The policies take turns file by file (the first file under each policy in the given order,
    the next in the reverse order, ...), so that the machine's drift over the run falls on all
    of them alike: run one after the other, the two halves of a run differed by 9-50 ms of ASR
    decode on a shared VM, as much as the policies did (docs/benchmarks.md). Each policy after the
    first also gets ``paired``: its voice-to-voice against the first policy's on the same complete
    file and repeat (the median difference, and on how many it was faster)."""
    runs = {policy: _PolicyRuns() for policy in policies}
    kept = getattr(engine.llm, "keep_cache", None)
    if kept is not None:  # as the engine runs: the system prompt's prefill stays cached
        engine.llm.keep_cache = True
    order = 0
    try:
        n = 0
        for kind, files in (("complete", complete), ("paused", paused)):
            for path in files:
                audio, _ = load_wav(path)
                for rep in range(turns):
                    for policy in policies if n % 2 == 0 else policies[::-1]:
                        if kept is not None:  # each policy reads the file's transcript afresh
                            await asyncio.to_thread(engine.llm.forget_turns)  # waits for a reply still writing
                        streamed = await stream_file(engine, audio, paced=paced, turn_policy=policy)
                        runs[policy].add(kind, path, rep, streamed, order)
                        order += 1
                    n += 1
    finally:
        if kept is not None:
            engine.llm.keep_cache = kept
    out = {policy: r.report() for policy, r in runs.items()}
    first = policies[0]
    for policy in policies[1:]:
        out[policy]["paired"] = _paired(runs[first], runs[policy], first)
    return out


def _paired(base: _PolicyRuns, other: _PolicyRuns, name: str) -> dict[str, Any]:
    """``other``'s voice-to-voice against ``base``'s on the same complete file and repeat."""
    diffs = [b - a for (key, a) in base.v2v_by_file.items() if (b := other.v2v_by_file.get(key)) is not None]
    return {"against": name, "files": len(diffs), "faster": sum(1 for d in diffs if d < 0),
            "median_diff_ms": round(statistics.median(diffs), 1) if diffs else None}


class _PolicyRuns:
    """What one policy gave over the files of :func:`compare_policies`."""

    def __init__(self) -> None:
        self.v2v: list[float | None] = []
        self.eot: list[float | None] = []
        self.after: list[float | None] = []
        self.ready: list[float | None] = []  # the reply's first audio made, held or not
        self.per_file: list[dict[str, Any]] = []
        self.v2v_by_file: dict[tuple[str, int], float] = {}  # (file, repeat) -> the first turn's, complete files
        self.resumed = self.half = self.answered = 0

    def add(self, kind: str, path: str, rep: int, streamed: list[Any], order: int) -> None:
        n_resumed = sum(int(t.metrics.get("resumed") or 0) for t in streamed)
        n_half = sum(int(t.metrics.get("half_replies") or 0) for t in streamed)
        if kind == "paused":
            n_half += max(0, len(streamed) - 1)  # the first part answered as a turn of its own
            self.resumed, self.half, self.answered = self.resumed + n_resumed, self.half + n_half, self.answered + 1
        else:
            for t in streamed:
                self.v2v.append(t.metrics.get("voice_to_voice_ms"))
                self.eot.append(t.metrics.get("eot_wait_ms"))
                self.after.append(t.metrics.get("after_eot_ms"))
                self.ready.append(t.metrics.get("reply_made_at_ms"))
            if streamed and streamed[0].metrics.get("voice_to_voice_ms") is not None:
                self.v2v_by_file[(path, rep)] = streamed[0].metrics["voice_to_voice_ms"]
        self.per_file.append({
            "file": path, "kind": kind, "repeat": rep + 1, "order": order, "turns": len(streamed),
            "resumed": n_resumed, "half_replies": n_half,
            "transcripts": [t.transcript for t in streamed],
            **{key: [t.metrics.get(key) for t in streamed] for key in PER_TURN},
            "probabilities": [(t.metrics.get("turn_audio_probability"),
                               t.metrics.get("turn_text_probability")) for t in streamed],
        })

    def report(self) -> dict[str, Any]:
        return {
            "complete": {"voice_to_voice_ms": dist(self.v2v), "eot_wait_ms": dist(self.eot),
                         "after_eot_ms": dist(self.after), "reply_ready_ms": dist(self.ready)},
            "paused": {"utterances": self.answered, "resumed": self.resumed, "replies_to_half": self.half},
            "files": self.per_file,
        }


PER_TURN = ("turn_policy", "voice_to_voice_ms", "eot_wait_ms", "asr_decode_ms", "turn_missing",
            "turn_audio_after_reply", "cpu_idle_cores", "llm_threads", "turn_audio_ms", "turn_audio_at_ms",
            "turn_text_at_ms", "spec_start_ms", "asr_final_at_ms", "llm_first_token_at_ms", "reply_made_at_ms")
"""The turn metrics each file's row lists, one value per turn."""


def render_compare(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="end of turn: policies compared (voice-to-voice on complete utterances; "
                        "paused utterances: a 700-800 ms pause mid-sentence)",
                  caption="reply ready: its first audio made, from the end of speech; the first audio goes "
                          "out at the later of that and the end of turn")
    for col in ("policy", "v2v p50", "v2v p95", "eot wait p50", "reply ready p50", "after eot p50", "n", "paused",
                "resumed", "replies to half"):
        table.add_column(col, justify="left" if col == "policy" else "right")

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.0f}"

    for policy, r in report.items():
        c, p = r["complete"], r["paused"]
        table.add_row(policy, f(c["voice_to_voice_ms"]["p50"]), f(c["voice_to_voice_ms"]["p95"]),
                      f(c["eot_wait_ms"]["p50"]), f(c.get("reply_ready_ms", {}).get("p50")), f(c["after_eot_ms"]["p50"]),
                      str(c["voice_to_voice_ms"]["n"]),
                      str(p["utterances"]), str(p["resumed"]), str(p["replies_to_half"]))
    console.print(table)


# --------------------------------------------------------------------------- accuracy


def turn_signals(engine: Engine, audio: np.ndarray, language: str | None) -> dict[str, Any]:
    """The audio model's and the transcript's P(complete) for one clip, as the Session would
    get them at the first short silence (the clip up to 150 ms after its last voiced sample)."""
    from engine.turn import text_usable

    voiced = np.nonzero(np.abs(audio) > 1e-3)[0]
    clip = audio[: (voiced[-1] + int(0.15 * ENGINE_RATE)) if len(voiced) else len(audio)]
    audio_p = engine.turn_model.predict(clip) if engine.turn_model is not None else None
    text = engine.asr.transcribe(clip, language).text.strip()
    text_p = None
    if text_usable(text, language):
        got: list[float | None] = []
        messages = [{"role": "system", "content": engine.profile.llm.system_prompt}, {"role": "user", "content": text}]
        for _ in engine.llm.stream_turn(messages, 1, threading.Event(), got.append):
            break
        text_p = got[0] if got else None
    return {"transcript": text, "audio": audio_p, "text": text_p}


def turn_accuracy(engine: Engine, root: str | Path, language: str | None = None) -> dict[str, Any]:
    """Accuracy of each signal (and both together) on the labelled complete/incomplete clips."""
    manifest = json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8"))
    o = engine.profile.turn
    rows = []
    for f in manifest["files"]:
        if f["kind"] not in ("complete", "incomplete") or (language and f["language"] != language):
            continue
        audio, _ = load_wav(Path(root) / f["path"])
        sig = turn_signals(engine, audio, f["language"])
        rows.append({**f, **sig})
    out: dict[str, Any] = {"thresholds": {"audio": o.audio_threshold, "text": o.text_threshold,
                                          "audio_weight": o.audio_weight}, "by_language": {}}

    def audio_v(r: dict[str, Any]) -> bool | None:
        return None if r["audio"] is None else r["audio"] >= o.audio_threshold

    def text_v(r: dict[str, Any]) -> bool | None:
        return None if r["text"] is None else r["text"] >= o.text_threshold

    fused = TurnPolicy(replace(o, policy="combined"), engine.profile.vad.end_of_turn_silence_ms)

    def both(r: dict[str, Any]) -> bool | None:  # as the combined policy: an unusable signal is left out
        z = fused.score(TurnEvidence(audio=r["audio"], text=r["text"], audio_usable=r["audio"] is not None,
                                     text_usable=r["text"] is not None))
        return None if z is None else z >= 0

    for lang in sorted({r["language"] for r in rows}):
        rs = [r for r in rows if r["language"] == lang]

        def acc(pred: Any, rs: list[dict[str, Any]] = rs) -> dict[str, Any]:
            judged = [(pred(r), r["kind"] == "complete") for r in rs]
            judged = [(p, truth) for p, truth in judged if p is not None]
            if not judged:
                return {"n": 0, "accuracy": None}
            right = sum(p == truth for p, truth in judged)
            cut = [(p, t) for p, t in judged if not t]
            return {"n": len(judged), "accuracy": round(right / len(judged), 3),
                    "cut_off_caught": round(sum(not p for p, _ in cut) / len(cut), 3) if cut else None}

        out["by_language"][lang] = {"audio": acc(audio_v), "text": acc(text_v), "combined": acc(both),
                                    "clips": len(rs)}
    out["clips"] = rows
    return out


def render_accuracy(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"end-of-turn signals on labelled clips (thresholds: audio {report['thresholds']['audio']}, "
                        f"text {report['thresholds']['text']})")
    for col in ("language", "signal", "clips judged", "accuracy", "cut-offs caught"):
        table.add_column(col, justify="left" if col in ("language", "signal") else "right")
    for lang, r in report["by_language"].items():
        for sig in ("audio", "text", "combined"):
            a = r[sig]
            table.add_row(lang, sig, str(a["n"]), "—" if a["accuracy"] is None else f"{a['accuracy']:.0%}",
                          "—" if a.get("cut_off_caught") is None else f"{a['cut_off_caught']:.0%}")
    console.print(table)


# --------------------------------------------------------------------------- CLI


def register(bsub: Any, common: Any) -> None:
    mp = bsub.add_parser("make-wavs", help="labelled speech for the end-of-turn benchmarks (espeak-ng)")
    mp.add_argument("--out", required=True, help="output folder")
    mp.add_argument("--languages", default="en,te", help="comma-separated (default en,te)")
    mp.set_defaults(func=cmd_make_wavs)

    tp = bsub.add_parser("turn", help="accuracy of the end-of-turn signals on a make-wavs folder")
    tp.add_argument("folder", help="a folder written by `bench make-wavs`")
    tp.add_argument("--language", help="only this language's clips")
    common(tp)
    tp.set_defaults(func=cmd_turn)


def cmd_make_wavs(args: argparse.Namespace) -> int:
    langs = tuple(x.strip() for x in args.languages.split(",") if x.strip())
    unknown = [x for x in langs if x not in SENTENCES]
    if unknown:
        raise ConfigError(f"no sentences for {', '.join(unknown)} (known: {', '.join(SENTENCES)})")
    m = make_wavs(args.out, langs)
    counts: dict[str, int] = {}
    for f in m["files"]:
        counts[f"{f['language']}/{f['kind']}"] = counts.get(f"{f['language']}/{f['kind']}", 0) + 1
    print(f"wrote {len(m['files'])} WAVs under {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def cmd_turn(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.config import load_profile
    from engine.engine import Engine

    console = Console(highlight=False)
    if not (Path(args.folder) / "manifest.json").exists():
        raise S2SError(f"{args.folder} has no manifest.json: make one with `s2s-engine bench make-wavs --out DIR`")
    profile = load_profile(args.profile, args.set)
    if profile.turn.policy == "silence":
        profile.turn.policy = "combined"  # load the audio model: its accuracy is what is asked
    overrides = [f"asr.language={args.language}"] if args.language else []
    for o in overrides:
        profile.set(o)
    engine = Engine.load(profile)
    try:
        report = turn_accuracy(engine, args.folder, args.language)
    finally:
        engine.close()
    render_accuracy(report, console)
    write_json(args.json_path, report, console)
    return 0

"""``s2s-train synth-data``: a small synthetic Telugu dataset spoken by espeak-ng.

No Telugu recordings ship in any package, so tests and demos make their own: espeak-ng's
rule-based Telugu voice reads a list of everyday sentences at a few rates and pitches
(two "speakers": the default voice and a variant), giving WAVs at 22.05 kHz and a
``metadata.csv`` (``file,text,speaker``) in the format ``prepare`` reads. ``with_bad``
adds rows ``prepare`` must drop (a missing file, empty text, a too-short and a silent clip).
``words`` speaks each word on its own, joined by short gaps, and writes ``metadata.jsonl``
with every word's start and end: exact word boundaries for ``s2s-train turn`` to cut at.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SENTENCES = [
    "నమస్కారం, మీరు ఎలా ఉన్నారు?",
    "ఈ రోజు వాతావరణం చాలా బాగుంది.",
    "నేను హైదరాబాద్ లో ఉంటాను.",
    "దయచేసి నెమ్మదిగా మాట్లాడండి.",
    "నాకు తెలుగు పాటలు అంటే ఇష్టం.",
    "రేపు ఉదయం పది గంటలకు కలుద్దాం.",
    "ఈ పుస్తకం చాలా ఆసక్తికరంగా ఉంది.",
    "మీ పేరు ఏమిటి?",
    "భోజనం సిద్ధంగా ఉంది.",
    "రైలు సమయానికి వచ్చింది.",
    "పిల్లలు బడికి వెళ్ళారు.",
    "నాకు ఒక కప్పు కాఫీ కావాలి.",
    "ఆ దుకాణం ఆదివారం మూసి ఉంటుంది.",
    "మేము 2 రోజుల్లో తిరిగి వస్తాము.",
    "ధన్యవాదాలు, మళ్ళీ కలుద్దాం.",
    "వర్షం పడుతోంది, గొడుగు తీసుకెళ్ళండి.",
]
VOICES = [("te", "spk_a"), ("te+f3", "spk_b")]


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError("espeak-ng not found: apt-get install -y espeak-ng")
    return path


def speak(text: str, path: Path, voice: str = "te", rate: int = 160, pitch: int = 50) -> None:
    with open(path, "wb") as fh:
        subprocess.run(
            [espeak_binary(), "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
            stdout=fh,
            stderr=subprocess.PIPE,
            check=True,
            timeout=60,
        )


def speak_words(text: str, path: Path, voice: str = "te", rate: int = 160, pitch: int = 50,
                gap_s: float = 0.08) -> list[dict]:
    """Speak ``text`` one word at a time into ``path`` (0.2 s lead-in, ``gap_s`` between words,
    0.3 s after); returns ``[{"word", "start", "end"}, ...]`` in seconds."""
    import soundfile as sf

    from training.audio import trim_silence

    parts, words, sr = [], [], 22050
    with tempfile.TemporaryDirectory(prefix="s2s-words-") as tmp:
        for i, word in enumerate(text.split()):
            speak(word, Path(tmp) / f"{i}.wav", voice, rate, pitch)
            audio, sr = sf.read(str(Path(tmp) / f"{i}.wav"), dtype="float32")
            parts.append(trim_silence(audio, sr, margin_ms=0))
    t, pieces = 0.2, [np.zeros(int(0.2 * sr), np.float32)]
    for word, audio in zip(text.split(), parts, strict=True):
        words.append({"word": word, "start": round(t, 3), "end": round(t + len(audio) / sr, 3)})
        pieces += [audio, np.zeros(int(gap_s * sr), np.float32)]
        t += len(audio) / sr + gap_s
    sf.write(str(path), np.concatenate(pieces + [np.zeros(int(0.3 * sr), np.float32)]), sr, subtype="PCM_16")
    return words


def make_dataset(out: str | Path, n: int = 12, with_bad: bool = False, seed: int = 0, words: bool = False) -> Path:
    """Write ``n`` clips (+ bad rows if asked) and ``metadata.csv`` to ``out`` (``metadata.jsonl``
    with word times if ``words``); returns ``out``."""
    import soundfile as sf

    out = Path(out).expanduser()
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, alignments = [], []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        voice, speaker = VOICES[i % len(VOICES)]
        name = f"wavs/{speaker}_{i:03d}.wav"
        rate, pitch = int(rng.integers(140, 181)), int(rng.integers(40, 61))
        if words:
            alignments.append(speak_words(text, out / name, voice, rate, pitch))
        else:
            speak(text, out / name, voice, rate=rate, pitch=pitch)
        rows.append((name, text, speaker))
    if with_bad:
        sf.write(
            str(out / "wavs" / "short.wav"), np.zeros(1600, np.float32) + 0.1 * np.sin(np.arange(1600)), 22050
        )
        sf.write(str(out / "wavs" / "silent.wav"), np.zeros(22050 * 2, np.float32), 22050)
        (out / "wavs" / "broken.wav").write_bytes(b"RIFF not really a wav")
        rows += [
            ("wavs/missing.wav", "ఈ ఫైల్ లేదు.", "spk_a"),
            ("wavs/short.wav", "చాలా చిన్నది.", "spk_a"),
            ("wavs/silent.wav", "నిశ్శబ్దం.", "spk_b"),
            ("wavs/broken.wav", "పాడైన ఫైల్.", "spk_b"),
            (rows[0][0], "", "spk_a"),
        ]
    if words:
        lines = [{"audio": a, "text": t, "speaker": s, **({"words": alignments[i]} if i < len(alignments) else {})}
                 for i, (a, t, s) in enumerate(rows)]
        (out / "metadata.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                            encoding="utf-8")
        return out
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "text", "speaker"])
        writer.writerows(rows)
    return out

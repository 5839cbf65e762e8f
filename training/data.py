"""``s2s-train prepare``: turn a folder of recordings into a clean, split training set.

Input: ``DATA_DIR/metadata.csv`` (``file,text``; a header row naming the columns, e.g.
``file,text,speaker``, is needed for a speaker column, since without one everything after the
first comma is the text;
``|`` or tab separated files such as LJSpeech's are accepted too) or a JSONL manifest
(``{"audio": ..., "text": ..., "speaker": ...}`` per line; ``file``/``path`` work for
``audio``; an optional ``words`` alignment, ``[{"word", "start", "end"}, ...]`` in seconds, is
kept, shifted by the trimmed silence: ``s2s-train turn`` cuts clips at those word ends).
Audio paths are relative to DATA_DIR; a name without an extension gets ``.wav``.

Output (``PREPARED``)::

    wavs/<id>.wav        16 kHz mono PCM16, silence trimmed at both ends
    train.jsonl          {"id", "audio" (relative), "text", "speaker", "duration"[, "words"]}
    validation.jsonl
    report.json          counts, hours, speakers, and every dropped clip with its reason

Every clip that cannot be used is dropped with a reason, never silently and never with a
traceback: missing or unreadable file, empty text, too short, too long, silent, or more
text than the audio could hold.
"""

from __future__ import annotations

import csv
import functools
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import S2SError
from training.audio import SAMPLE_RATE, load_audio, peak_dbfs, trim_bounds, write_wav
from training.text import has_letters, normalize_telugu, telugu_fraction


class DataError(S2SError):
    """The dataset folder cannot be read at all (no metadata, bad manifest)."""


@dataclass
class PrepareOptions:
    """Options of ``prepare``.

    Fields:
        min_seconds / max_seconds: clips outside this range are dropped (Whisper sees 30 s at most).
        max_chars_per_second: more text than this per second of audio means a wrong transcript.
        silence_dbfs: a clip whose peak is below this is silent.
        trim: trim leading and trailing silence (helps TTS learn where speech stops).
        val_fraction: share of clips for validation (at least one when there are two or more).
        seed: the split's shuffle.
        spell_numbers: write numbers as Telugu words.
    """

    min_seconds: float = 0.5
    max_seconds: float = 30.0
    max_chars_per_second: float = 30.0
    silence_dbfs: float = -50.0
    trim: bool = True
    val_fraction: float = 0.1
    seed: int = 1234
    spell_numbers: bool = True


@dataclass
class Row:
    audio: str
    text: str
    speaker: str = "default"
    line: int = 0
    words: list[Any] | None = None


@dataclass
class PrepareReport:
    data_dir: str
    out_dir: str
    clips_in: int = 0
    clips_kept: int = 0
    train: int = 0
    validation: int = 0
    hours: float = 0.0
    train_hours: float = 0.0
    speakers: dict[str, int] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    drop_reasons: dict[str, int] = field(default_factory=dict)
    mostly_not_telugu: int = 0
    earlier: int = 0
    sources: list[str] = field(default_factory=list)

    def summary(self, max_dropped: int = 20) -> str:
        folder = f" (with {self.earlier} earlier clips: the folder's totals)" if self.earlier else ""
        lines = [
            f"prepared {self.clips_kept} of {self.clips_in} clips; {self.hours * 60:.1f} min "
            f"({self.hours:.3f} h), {len(self.speakers)} speaker(s): "
            + ", ".join(f"{k} ({v})" for k, v in sorted(self.speakers.items())) + folder,
            f"split: {self.train} train, {self.validation} validation",
        ]
        if self.dropped:
            lines.append(f"dropped {len(self.dropped)}: " + ", ".join(f"{k} {v}" for k, v in self.drop_reasons.items()))
            for d in self.dropped[:max_dropped]:
                lines.append(f"  {d['audio'] or '(line ' + str(d['line']) + ')'}: {d['reason']}")
            if len(self.dropped) > max_dropped:
                lines.append(f"  ... and {len(self.dropped) - max_dropped} more (report.json)")
        if self.mostly_not_telugu:
            lines.append(f"note: {self.mostly_not_telugu} kept clip(s) have mostly non-Telugu text")
        lines.append(f"written to {self.out_dir}")
        return "\n".join(lines)


def read_metadata(data_dir: Path, manifest: Path | None = None) -> list[Row]:
    """Rows from ``manifest`` or from DATA_DIR's metadata.csv / *.jsonl."""
    if manifest is None:
        for name in ("metadata.csv", "metadata.tsv", "metadata.jsonl", "manifest.jsonl"):
            if (data_dir / name).exists():
                manifest = data_dir / name
                break
        else:
            raise DataError(
                f"no metadata.csv or manifest.jsonl in {data_dir}: write one with a line per clip, "
                "'file,text' (optionally ',speaker')"
            )
    if manifest.suffix == ".jsonl":
        return _read_jsonl(manifest)
    return _read_csv(manifest)


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i}: not JSON ({exc})") from None
        audio = obj.get("audio") or obj.get("file") or obj.get("path") or obj.get("audio_filepath") or ""
        words = obj.get("words") if isinstance(obj.get("words"), list) else None
        rows.append(Row(str(audio), str(obj.get("text", "")), str(obj.get("speaker") or "default"), i, words))
    return rows


def _read_csv(path: Path) -> list[Row]:
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = "|" if "|" in first and "," not in first else ("\t" if "\t" in first else ",")
    reader = csv.reader(text.splitlines(), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    rows: list[Row] = []
    columns = {"audio": 0, "text": 1, "speaker": 2}
    header = False
    for i, rec in enumerate(reader, 1):
        if not rec or all(not c.strip() for c in rec):
            continue
        if i == 1 and rec[0].strip().lower() in {
            "file",
            "file_name",
            "filename",
            "audio",
            "path",
            "id",
            "wav",
        }:
            names = [c.strip().lower() for c in rec]
            for key, aliases in (
                ("audio", ("file", "file_name", "filename", "audio", "path", "id", "wav")),
                ("text", ("text", "transcript", "transcription", "sentence")),
                ("speaker", ("speaker", "speaker_id", "client_id")),
            ):
                columns[key] = next((names.index(a) for a in aliases if a in names), -1)
            header = True
            continue
        if not header and delimiter == ",":  # file,text: the text may hold unquoted commas
            rows.append(Row(rec[0].strip(), delimiter.join(rec[1:]).strip(), "default", i))
            continue
        audio, text_, speaker = (_cell(rec, columns[k]) for k in ("audio", "text", "speaker"))
        rows.append(Row(audio, text_, speaker or "default", i))
    return rows


def _cell(rec: list[str], index: int) -> str:
    return rec[index].strip() if 0 <= index < len(rec) else ""


def _resolve(data_dir: Path, audio: str) -> Path:
    path = Path(audio).expanduser()
    if not path.is_absolute():
        path = data_dir / path
    if not path.exists() and not path.suffix:
        for ext in (".wav", ".flac", ".ogg", ".mp3"):
            if path.with_suffix(ext).exists():
                return path.with_suffix(ext)
        return path.with_suffix(".wav")
    return path


def _clip_id(path: Path, used: set[str]) -> str:
    base = re.sub(r"[^0-9A-Za-z_.-]+", "_", path.stem) or "clip"
    cid, n = base, 1
    while cid in used:
        n += 1
        cid = f"{base}-{n}"
    used.add(cid)
    return cid


class Drop(Exception):
    """A clip that cannot be used; the message is the reason shown to the user."""


@dataclass
class Clip:
    """One candidate clip from any source (a folder's metadata row, a ``datasets`` row).

    Fields:
        row: where it came from (``audio`` names it in the report, ``line`` is its row number).
        load: reads the audio as 16 kHz mono float32; raises :class:`Drop`, or
            :class:`engine.errors.AudioError` (reported as unreadable audio).
        key: two clips with the same non-empty key are duplicates (the folder path: the file).
        stem: the name the output id is made from.
        trim_start: samples :func:`check_audio` trimmed from the start (word times move by it).
    """

    row: Row
    load: Callable[[], np.ndarray]
    key: str = ""
    stem: str = "clip"
    trim_start: int = 0


def check_clip(clip: Clip, opts: PrepareOptions) -> tuple[np.ndarray, str]:
    """The checks every clip passes, whatever its source: :func:`check_text`, then
    :func:`check_audio`. Returns (16 kHz audio, normalised text); raises :class:`Drop`."""
    text = check_text(clip.row, opts)
    return check_audio(clip, text, opts), text


def check_text(row: Row, opts: PrepareOptions) -> str:
    """The normalised text; :class:`Drop` when no letters are left."""
    text = normalize_telugu(row.text, spell_numbers=opts.spell_numbers)
    if not text or not has_letters(text):
        raise Drop("empty text")
    return text


def check_audio(clip: Clip, text: str, opts: PrepareOptions) -> np.ndarray:
    """Readable, not silent (then trimmed), a duration in range and a plausible amount of
    ``text`` for it; returns the 16 kHz audio or raises :class:`Drop` with the reason."""
    try:
        audio = clip.load()
    except S2SError as exc:
        raise Drop(f"unreadable audio ({str(exc)[:120]})") from None
    if audio.size == 0 or peak_dbfs(audio) < opts.silence_dbfs:
        raise Drop(f"silent (peak {peak_dbfs(audio):.0f} dBFS < {opts.silence_dbfs:.0f})")
    if opts.trim:
        clip.trim_start, end = trim_bounds(audio, SAMPLE_RATE)
        audio = audio[clip.trim_start : end]
    seconds = audio.size / SAMPLE_RATE
    if seconds < opts.min_seconds:
        raise Drop(f"too short ({seconds:.2f} s < {opts.min_seconds} s)")
    if seconds > opts.max_seconds:
        raise Drop(f"too long ({seconds:.1f} s > {opts.max_seconds} s)")
    if len(text) / seconds > opts.max_chars_per_second:
        raise Drop(f"text too long for the audio ({len(text)} chars in {seconds:.1f} s)")
    return audio


def folder_clips(data_dir: Path, rows: list[Row]) -> Iterator[Clip]:
    """Clips for the rows of a folder's metadata: audio paths relative to ``data_dir``."""
    for row in rows:
        if not row.audio:
            yield Clip(row, _raiser(Drop("no audio file named")))
            continue
        path = _resolve(data_dir, row.audio)
        yield Clip(row, functools.partial(_load_file, path), key=str(path), stem=path.stem)


def _raiser(exc: Exception) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        raise exc

    return load


def _load_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise Drop(f"missing file ({path})")
    try:
        return load_audio(path, SAMPLE_RATE)
    except S2SError as exc:
        raise Drop(f"unreadable audio ({str(exc).removeprefix(f'{path}: ')[:120]})") from None


def prepare(
    data_dir: str | Path,
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    manifest: str | Path | None = None,
    progress: bool = False,
    add: bool = False,
) -> PrepareReport:
    """Read, check, resample and split a dataset folder; returns (and writes) the report
    (``add``: see :func:`prepare_clips`)."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"dataset folder not found: {data_dir}")
    rows = read_metadata(data_dir, Path(manifest) if manifest else None)
    return prepare_clips(folder_clips(data_dir, rows), out_dir, options, str(data_dir), len(rows), progress, add)


def prepare_clips(
    clips: Iterable[Clip],
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    source: str = "",
    total: int | None = None,
    progress: bool = False,
    add: bool = False,
) -> PrepareReport:
    """Check every clip (:func:`check_clip`), write the kept ones as 16 kHz WAVs, split them and
    write ``train.jsonl``, ``validation.jsonl`` and ``report.json``. ``total`` sizes the progress bar.

    ``add``: keep the clips already prepared in ``out_dir`` (each stays in its split, so nothing
    trained on moves to validation) and add these, split by ``val_fraction`` among themselves:
    one folder from several sources (FLEURS + IndicTTS)."""
    from tqdm import tqdm

    opts = options or PrepareOptions()
    out_dir = Path(out_dir).expanduser()
    report = PrepareReport(source, str(out_dir))
    earlier = {split: _read_prepared(out_dir, split) for split in ("train", "validation")} if add else {}
    report.earlier = sum(len(v) for v in earlier.values())
    if report.earlier:
        old = json.loads((out_dir / "report.json").read_text(encoding="utf-8")) if (out_dir / "report.json").exists() else {}
        report.sources = list(old.get("sources") or [old.get("data_dir", "")])
    report.sources.append(source)
    kept: list[dict[str, Any]] = []
    used_ids: set[str] = {c["id"] for items in earlier.values() for c in items}
    seen: set[str] = set()

    def drop(row: Row, reason: str) -> None:
        report.dropped.append({"audio": row.audio, "line": row.line, "text": row.text[:80], "reason": reason})
        report.drop_reasons[reason.split(" (")[0]] = report.drop_reasons.get(reason.split(" (")[0], 0) + 1

    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    bar = tqdm(clips, total=total, disable=not progress, unit="clip", desc="prepare", dynamic_ncols=True)
    for clip in bar:
        report.clips_in += 1
        row = clip.row
        try:
            text = check_text(row, opts)
            if clip.key in seen:
                raise Drop("duplicate (the same file is listed twice)")
            if clip.key:
                seen.add(clip.key)
            audio = check_audio(clip, text, opts)
        except Drop as exc:
            drop(row, str(exc))
            continue
        cid = _clip_id(Path(clip.stem), used_ids)
        write_wav(out_dir / "wavs" / f"{cid}.wav", audio, SAMPLE_RATE)
        seconds = audio.size / SAMPLE_RATE
        if telugu_fraction(text) < 0.5:
            report.mostly_not_telugu += 1
        kept.append(
            {
                "id": cid,
                "audio": f"wavs/{cid}.wav",
                "text": text,
                "speaker": row.speaker,
                "duration": round(seconds, 3),
            }
        )
        if row.words is not None:
            kept[-1]["words"] = shift_words(row.words, clip.trim_start / SAMPLE_RATE, seconds)
        bar.set_postfix(kept=len(kept), dropped=len(report.dropped), refresh=False)
    bar.close()

    rng = random.Random(opts.seed)
    order = list(range(len(kept)))
    rng.shuffle(order)
    n_val = 0
    if len(kept) >= 2:
        n_val = min(len(kept) - 1, max(1, round(len(kept) * opts.val_fraction)))
    val_idx = set(order[:n_val])
    train = earlier.get("train", []) + [c for i, c in enumerate(kept) if i not in val_idx]
    val = earlier.get("validation", []) + [c for i, c in enumerate(kept) if i in val_idx]
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "validation.jsonl", val)

    report.clips_kept, report.train, report.validation = len(kept), len(train), len(val)
    report.hours = round(sum(c["duration"] for c in train + val) / 3600, 5)
    report.train_hours = round(sum(c["duration"] for c in train) / 3600, 5)
    report.speakers = dict(Counter(c["speaker"] for c in train + val))
    report_dict = asdict(report)
    report_dict["options"] = asdict(opts)
    (out_dir / "report.json").write_text(
        json.dumps(report_dict, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return report


def shift_words(words: list[Any], offset: float, seconds: float) -> list[dict[str, Any]]:
    """Word times moved ``offset`` s earlier (the trimmed lead) and kept inside the clip; entries
    without numeric ``start``/``end`` are left out."""
    out = []
    for w in words:
        try:
            start, end = float(w["start"]) - offset, float(w["end"]) - offset
        except (KeyError, TypeError, ValueError):
            continue
        start, end = max(0.0, start), min(seconds, end)
        if end > start:
            out.append({**({"word": w["word"]} if "word" in w else {}), "start": round(start, 3), "end": round(end, 3)})
    return out


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")


def _read_prepared(out_dir: Path, split: str) -> list[dict[str, Any]]:
    path = out_dir / f"{split}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_split(prepared: str | Path, split: str) -> list[dict[str, Any]]:
    """Clips of ``train`` or ``validation`` with ``audio`` made absolute."""
    prepared = Path(prepared).expanduser()
    path = prepared / f"{split}.jsonl"
    if not path.exists():
        raise DataError(f"{path} not found: run `s2s-train prepare DATA_DIR --out {prepared}` first")
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for item in items:
        item["audio"] = str(prepared / item["audio"])
    return items

"""Rows from the ``datasets`` library: a Hub id (config, split), a ``save_to_disk`` folder or
parquet files, read as :class:`training.data.Clip` so that ``prepare`` and ``scorecard`` run
the same checks on them as on a folder of WAVs.

Why ``datasets``: it is how the public Telugu sets are published (FLEURS ``google/fleurs``
``te_in``, IndicTTS ``SPRINGLab/IndicTTS_Telugu``, Kathbath, IndicVoices), and it does the Hub
side (auth, gated terms, caching, streaming, parquet). Audio is *not* decoded by it: since
``datasets`` 4 its ``Audio`` feature decodes through torchcodec, which is built for one torch
release at a time and needs FFmpeg's shared libraries. The audio column is read undecoded
(``Audio(decode=False)``: the stored file bytes, or a path) and decoded here by soundfile,
with PyAV as the fallback (:func:`training.audio.decode_audio`), the reader the folder path
uses, with the same reasons for a broken clip.

Columns are found by name unless given (``--audio-column`` etc.): audio is the column typed
``Audio`` (else ``audio``/``file``/``path``), text the first of :data:`TEXT_COLUMNS`, speaker
the first of :data:`SPEAKER_COLUMNS` (none: every clip is ``default``). A ``ClassLabel``
speaker column (IndicTTS's ``gender``) gives its names, not numbers.

Hub problems become one :class:`training.data.DataError` line that says what to do (log in,
accept the terms, check the id, go online), never a traceback.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.audio import SAMPLE_RATE, array_audio, decode_audio, load_audio
from training.data import Clip, DataError, Drop, Row

TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "raw_transcription", "normalized_text")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id", "spk_id")
AUDIO_COLUMNS = ("audio", "file", "path", "audio_filepath", "wav")
PARQUET_EXPORT = "refs/convert/parquet"  # the Hub's own parquet copy of every public dataset


@dataclass
class DatasetSource:
    """Where the rows come from: ``hub_id`` or ``path`` (one of them).

    Fields:
        hub_id: a Hugging Face dataset id (``google/fleurs``).
        config: the configuration (``te_in``); "" for the default.
        split: the split to read (``train``, ``validation``, ``test``).
        revision: a branch, tag or commit of the Hub repo ("" for main).
        path: a ``save_to_disk`` folder, a ``.parquet`` file, a folder of them or a glob.
        audio_column / text_column / speaker_column: column names ("" finds them by name).
        streaming: read rows as they download (nothing is cached whole; for large sets).
        limit: at most this many rows (0: all).
        cache_dir: the ``datasets`` cache ("" for its default, ``~/.cache/huggingface``).
    """

    hub_id: str = ""
    config: str = ""
    split: str = "train"
    revision: str = ""
    path: str = ""
    audio_column: str = ""
    text_column: str = ""
    speaker_column: str = ""
    streaming: bool = False
    limit: int = 0
    cache_dir: str = ""

    def describe(self) -> str:
        if self.hub_id:
            return f"{self.hub_id}" + (f" ({self.config})" if self.config else "") + f" [{self.split}]"
        return f"{self.path} [{self.split}]"


def is_dataset_path(path: str | Path) -> bool:
    """Whether ``path`` is a ``datasets`` source rather than a folder of WAVs with metadata:
    a ``save_to_disk`` folder, a parquet file, a glob, or a folder holding only parquet files."""
    p = Path(path).expanduser()
    if any(c in str(path) for c in "*?[") or p.suffix == ".parquet":
        return True
    if not p.is_dir():
        return False
    if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        return True
    has_metadata = any((p / n).exists() for n in ("metadata.csv", "metadata.tsv", "metadata.jsonl", "manifest.jsonl"))
    return not has_metadata and any(p.rglob("*.parquet"))


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(
            "reading Hugging Face datasets needs the datasets package: "
            ".venv/bin/pip install -c constraints.txt 'datasets>=4'"
        ) from None
    return datasets


def open_dataset(src: DatasetSource) -> Any:
    """The ``datasets`` split ``src`` names (a ``Dataset``, or an ``IterableDataset`` when
    streaming). Raises :class:`DataError` with the fix for anything the user can fix."""
    datasets = _datasets()
    cache = src.cache_dir or None
    if src.hub_id:
        return _open_hub(datasets, src, cache)
    p = Path(src.path).expanduser()
    if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
        try:
            ds = datasets.load_from_disk(str(p))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DataError(f"{p}: not a readable saved dataset ({_first_line(exc)})") from None
        if isinstance(ds, datasets.DatasetDict):
            if src.split not in ds:
                raise DataError(f"{p} has no split {src.split!r}: use --split with one of {', '.join(ds)}")
            ds = ds[src.split]
        return ds.to_iterable_dataset() if src.streaming else ds
    files = _parquet_files(p, src.path)
    try:
        return datasets.load_dataset(
            "parquet", data_files=files, split="train", streaming=src.streaming, cache_dir=cache
        )
    except Exception as exc:  # noqa: BLE001 - pyarrow and datasets raise many types for a bad file
        raise DataError(f"cannot read the parquet files {src.path} ({type(exc).__name__}: {_first_line(exc)})") from None


def _parquet_files(p: Path, spec: str) -> list[str]:
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*.parquet"))
    elif p.suffix == ".parquet" and p.exists():
        files = [str(p)]
    else:
        files = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
    if not files:
        raise DataError(
            f"no dataset at {spec}: give a save_to_disk folder, parquet files, a folder with "
            "metadata.csv, or --hf-dataset ID"
        )
    return files


def _open_hub(datasets: Any, src: DatasetSource, cache: str | None) -> Any:
    kwargs = {"split": src.split, "streaming": src.streaming, "cache_dir": cache}
    try:
        try:
            return datasets.load_dataset(
                src.hub_id, src.config or None, revision=src.revision or None, **kwargs
            )
        except RuntimeError as exc:
            if "scripts are no longer supported" not in str(exc) or src.revision:
                raise
            # A script dataset (FLEURS is one): read the Hub's parquet export of it, where each
            # config is a folder holding its splits.
            return datasets.load_dataset(
                src.hub_id, revision=PARQUET_EXPORT, data_dir=src.config or None, **kwargs
            )
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line (S2S_DEBUG=1: the traceback)
        if os.environ.get("S2S_DEBUG"):
            raise
        raise _hub_error(src, exc) from None


def _hub_error(src: DatasetSource, exc: Exception) -> DataError:
    """One line that says what went wrong on the Hub and what to do about it."""
    from datasets.exceptions import DatasetNotFoundError

    name, page = src.hub_id, f"https://huggingface.co/datasets/{src.hub_id}"
    message = _first_line(exc)
    login = "log in with `hf auth login` (older installs: `huggingface-cli login`) or set HF_TOKEN"
    if isinstance(exc, DatasetNotFoundError) and "gated" in message:
        return DataError(f"{name} is gated: accept its terms at {page} with your account, then {login}")
    if isinstance(exc, DatasetNotFoundError):
        return DataError(
            f"{name} was not found on the Hub: check the id at {page}; if it is private or gated, {login}"
        )
    if isinstance(exc, ConnectionError) or "offline" in message.lower():
        why = "HF_HUB_OFFLINE=1 is set" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else message
        return DataError(
            f"cannot reach the Hugging Face Hub for {name} ({why}) and it is not in the local cache: "
            "run once online, or pass a save_to_disk folder or parquet files instead"
        )
    if isinstance(exc, ValueError) and ("split" in message.lower() or "config" in message.lower()):
        return DataError(f"{name}: {message} (--hf-config / --split)")
    if isinstance(exc, RuntimeError) and "scripts are no longer supported" in message:
        return DataError(f"{name} is a script dataset, which datasets>=4 cannot run: try --hf-revision {PARQUET_EXPORT}")
    return DataError(f"{name} could not be loaded ({type(exc).__name__}: {message}); S2S_DEBUG=1 shows the traceback")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# --------------------------------------------------------------------------- columns and rows
def _column_names(ds: Any) -> list[str]:
    names = getattr(ds, "column_names", None)
    if names:
        return list(names)
    first = next(iter(ds.take(1)), None) if hasattr(ds, "take") else None
    return list(first or {})


def _pick(names: list[str], given: str, candidates: tuple[str, ...], what: str, flag: str) -> str:
    if given:
        if given not in names:
            raise DataError(f"no {what} column {given!r}: the columns are {', '.join(names)} ({flag})")
        return given
    return next((c for c in candidates if c in names), "")


def columns(ds: Any, src: DatasetSource) -> tuple[str, str, str]:
    """(audio, text, speaker) column names; speaker is "" when there is none."""
    names = _column_names(ds)
    features = getattr(ds, "features", None) or {}
    typed_audio = [n for n, f in features.items() if type(f).__name__ == "Audio"]
    audio = _pick(names, src.audio_column, tuple(typed_audio) + AUDIO_COLUMNS, "audio", "--audio-column")
    text = _pick(names, src.text_column, TEXT_COLUMNS, "text", "--text-column")
    speaker = _pick(names, src.speaker_column, SPEAKER_COLUMNS, "speaker", "--speaker-column")
    if not audio or not text:
        missing = " and ".join(w for w, c in (("audio", audio), ("text", text)) if not c)
        raise DataError(
            f"cannot tell which column holds the {missing}: the columns are {', '.join(names)}; "
            "name them with --audio-column / --text-column"
        )
    return audio, text, speaker


def dataset_clips(src: DatasetSource) -> tuple[Iterator[Clip], int | None]:
    """The rows of ``src`` as clips, and how many there are (None when streaming)."""
    datasets = _datasets()
    ds = open_dataset(src)
    audio_col, text_col, speaker_col = columns(ds, src)
    features = getattr(ds, "features", None) or {}
    if type(features.get(audio_col)).__name__ == "Audio":
        ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
    speaker_feature = features.get(speaker_col)
    label_names = speaker_feature.int2str if type(speaker_feature).__name__ == "ClassLabel" else None
    base = Path(src.path).expanduser() if src.path else None
    base = base if base is not None and base.is_dir() else (base.parent if base is not None else None)
    total = None if src.streaming else len(ds)
    if src.limit:
        total = min(total, src.limit) if total is not None else None

    def clips() -> Iterator[Clip]:
        rows = iter(ds) if not src.limit else itertools.islice(iter(ds), src.limit)
        for i, rec in enumerate(rows):
            cell = rec.get(audio_col)
            label = _label(cell, i)
            spk = rec.get(speaker_col) if speaker_col else None
            if spk is not None and label_names is not None and isinstance(spk, int) and spk >= 0:
                spk = label_names(spk)
            row = Row(label, str(rec.get(text_col) or ""), str(spk) if spk not in (None, "") else "default", i)
            yield Clip(row, _cell_loader(cell, base), stem=Path(label).stem or f"row{i:06d}")

    return clips(), total


def _label(cell: Any, index: int) -> str:
    path = cell.get("path") if isinstance(cell, dict) else (cell if isinstance(cell, str) else None)
    name = Path(str(path)).name if path else ""
    return name or f"row{index:06d}"


def _cell_loader(cell: Any, base: Path | None):
    """How to read one audio cell: stored bytes, a decoded array, or a path to a file."""

    def load() -> np.ndarray:
        if cell is None:
            raise Drop("no audio in this row")
        if isinstance(cell, dict) and cell.get("bytes"):
            return decode_audio(cell["bytes"], SAMPLE_RATE)
        if isinstance(cell, dict) and cell.get("array") is not None:
            if not cell.get("sampling_rate"):
                raise Drop("audio array without a sampling_rate")
            return array_audio(np.asarray(cell["array"]), int(cell["sampling_rate"]), SAMPLE_RATE)
        path = cell.get("path") if isinstance(cell, dict) else cell
        if not isinstance(path, str) or not path:
            raise Drop("no audio in this row")
        p = Path(path).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
        if not p.exists():
            raise Drop(f"missing file ({p})")
        return load_audio(p, SAMPLE_RATE)

    return load

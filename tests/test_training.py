"""``s2s-train`` end to end on CPU with tiny random models and an espeak-ng Telugu dataset.

Everything expensive is built once per session: tiny models (seconds), a 10-clip synthetic
dataset with bad rows, the prepared split, one short ASR run and one short TTS run. The
commands are driven through ``training.cli.main`` exactly as the console script runs them.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.cli import main
from training.text import (
    char_ids,
    from_iso15919,
    normalize_telugu,
    number_to_telugu,
    read_spm_pieces,
    scoring_text,
    to_iso15919,
    tts_model_text,
    write_spm_pieces,
)

TRAIN_FAST = [
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--grad-accum",
    "1",
    "--warmup-steps",
    "1",
    "--no-progress",
    "--eval-every",
    "0",
]


def run(*argv: str) -> int:
    return main([str(a) for a in argv])


def loss_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "loss.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="session")
def tiny(work) -> Path:
    assert run("tiny-models", "--out", work / "tiny") == 0
    return work / "tiny"


@pytest.fixture(scope="session")
def dataset(work) -> Path:
    assert run("synth-data", "--out", work / "data", "-n", "10", "--with-bad") == 0
    return work / "data"


@pytest.fixture(scope="session")
def prepared(work, dataset) -> Path:
    assert run("prepare", dataset, "--out", work / "prep", "--val-fraction", "0.2") == 0
    return work / "prep"


def train_asr(prepared: Path, tiny: Path, out: Path, steps: int, *more: str) -> int:
    """``s2s-train asr`` on the tiny Whisper, a checkpoint every 3 steps."""
    return run("asr", prepared, "--base", tiny / "whisper", "--out", out, "--steps", str(steps), "--lr", "3e-3",
               "--save-every", "3", *more, *TRAIN_FAST)


@pytest.fixture(scope="session")
def asr_run(work, tiny, prepared) -> Path:
    out = work / "asr"
    assert (
        train_asr(prepared, tiny, out, 6)
        == 0
    )
    return out


@pytest.fixture(scope="session")
def tts_run(work, tiny, prepared) -> Path:
    out = work / "tts"
    assert (
        run(
            "tts",
            prepared,
            "--base",
            tiny / "speecht5",
            "--vocoder",
            tiny / "speecht5-hifigan",
            "--out",
            out,
            "--steps",
            "8",
            "--lr",
            "1e-3",
            "--save-every",
            "4",
            *TRAIN_FAST,
        )
        == 0
    )
    return out


# --------------------------------------------------------------------------- text
def test_normalize_telugu_spells_numbers_and_folds_punctuation():
    assert number_to_telugu(25) == "ఇరవై ఐదు"
    assert number_to_telugu(100) == "వంద"
    assert number_to_telugu(105) == "నూట ఐదు"
    assert number_to_telugu(2500) == "రెండు వేల ఐదు వందలు"
    assert number_to_telugu(100000) == "లక్ష"
    text = normalize_telugu("మేము ౨ రోజుల్లో “తిరిగి”  వస్తాము।\u200c")
    assert text == 'మేము రెండు రోజుల్లో "తిరిగి" వస్తాము.'
    assert scoring_text("నమస్కారం, మీరు!") == "నమస్కారం మీరు"


def test_iso15919_is_reversible_and_char_ids_drop_unknowns():
    te = "ధన్యవాదాలు, మళ్ళీ కలుద్దాం."
    latin = to_iso15919(te)
    assert latin == "dhanyavādālu, maḷḷī kaluddāṁ."
    assert from_iso15919(latin) == te
    assert tts_model_text("నమస్కారం 2") == "namaskāraṁ reṁḍu"
    vocab = {"</s>": 2, "\u2581": 4, "a": 5, "b": 6}
    assert char_ids("ab x", vocab, 2) == [4, 5, 6, 4, 2]


def test_spm_piece_reader_round_trips(tmp_path):
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "e", "t", "ā"]
    write_spm_pieces(str(tmp_path / "spm.model"), pieces)
    assert read_spm_pieces(str(tmp_path / "spm.model")) == pieces


# --------------------------------------------------------------------------- prepare
def test_prepare_drops_bad_clips_with_reasons_and_splits(prepared, capsys):
    report = json.loads((prepared / "report.json").read_text())
    reasons = {Path(d["audio"]).name: d["reason"] for d in report["dropped"]}
    assert reasons["missing.wav"].startswith("missing file")
    assert reasons["short.wav"].startswith("too short")
    assert reasons["silent.wav"].startswith("silent")
    assert reasons["broken.wav"].startswith("unreadable audio")
    assert "empty text" in reasons.values()
    assert report["clips_in"] == 15 and report["clips_kept"] == 10
    assert report["train"] + report["validation"] == 10 and report["validation"] == 2
    assert set(report["speakers"]) == {"spk_a", "spk_b"} and report["hours"] > 0
    train = [json.loads(x) for x in (prepared / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (prepared / "validation.jsonl").read_text().splitlines()]
    assert not {c["id"] for c in train} & {c["id"] for c in val}
    info = sf.info(str(prepared / train[0]["audio"]))
    assert (info.samplerate, info.channels) == (16000, 1)
    assert all("2" not in c["text"] for c in train + val)  # numbers spelt out


def test_prepare_reads_jsonl_and_reports_missing_metadata(tmp_path, dataset, capsys):
    rows = [
        {"audio": "wavs/spk_b_001.wav", "text": "మీ పేరు ఏమిటి?", "speaker": "x"},
        {"file": "wavs/spk_a_002", "text": "భోజనం సిద్ధంగా ఉంది."},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    assert run("prepare", dataset, "--out", tmp_path / "p", "--manifest", manifest) == 0
    assert "prepared 2 of 2 clips" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert run("prepare", tmp_path / "empty", "--out", tmp_path / "q") == 2
    assert "no metadata.csv" in capsys.readouterr().err


def test_prepare_reads_ljspeech_style_pipe_metadata(tmp_path, dataset, capsys):
    data = tmp_path / "lj"
    shutil.copytree(dataset / "wavs", data / "wavs")
    (data / "metadata.csv").write_text(
        "wavs/spk_a_002|ఈ రోజు వాతావరణం చాలా బాగుంది.\nwavs/spk_b_003|మీ పేరు ఏమిటి?\n", encoding="utf-8"
    )
    assert run("prepare", data, "--out", tmp_path / "p") == 0
    assert "prepared 2 of 2 clips" in capsys.readouterr().out


# --------------------------------------------------------------------------- ASR
def test_asr_steps_lower_the_loss(asr_run):
    rows = loss_rows(asr_run)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0] - 0.5, losses
    summary = json.loads((asr_run / "summary.json").read_text())
    assert summary["val_loss"] is not None and summary["last_loss"] < summary["first_loss"]
    assert (asr_run / "checkpoints" / "step-000006" / "state.pt").exists()


def test_asr_resume_continues_the_step_count(asr_run, work, prepared, tiny, capsys):
    out = work / "asr-resumed"
    shutil.copytree(asr_run, out)
    assert (
        train_asr(prepared, tiny, out, 9, "--quantizations", "int8", "--resume")
        == 0
    )
    assert "resumed at 6" in capsys.readouterr().out
    rows = loss_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000006", "step-000009"]


class _Planted:
    """What a planted checkpoint could hold: unpickling it creates a file (it could do anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_checkpoint_that_would_run_code(asr_run, work, prepared, tiny, capsys):
    import torch

    out = work / "asr-planted"
    shutil.copytree(asr_run, out)
    marker = work / "planted-code-ran"
    ckpt = out / "checkpoints" / "step-000006"
    torch.save({"module": _Planted(marker)}, ckpt / "state.pt")
    code = run("asr", prepared, "--base", tiny / "whisper", "--out", out, "--steps", "9", "--resume", *TRAIN_FAST)
    assert code == 2 and not marker.exists()
    err = capsys.readouterr().err
    assert "state.pt holds more than tensors and plain values" in err and "--resume" in err


def test_ct2_export_loads_in_faster_whisper_and_the_engine(asr_run, prepared):
    from faster_whisper import WhisperModel

    for quant in ("int8", "float16"):
        folder = asr_run / f"ct2-{quant}"
        for name in ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"):
            assert (folder / name).exists(), name
    audio = np.zeros(16000, np.float32)
    model = WhisperModel(str(asr_run / "ct2-int8"), device="cpu", compute_type="int8", local_files_only=True)
    assert model.model.is_multilingual
    segments, info = model.transcribe(
        audio, language="te", beam_size=1, temperature=0.0, without_timestamps=True
    )
    assert isinstance(" ".join(s.text for s in segments), str) and info.language == "te"

    from engine.config import ASROptions
    from engine.stages import asr_whisper

    folder = str(asr_run / "ct2-float16")
    asr = asr_whisper.FasterWhisperASR(ASROptions(model=folder, compute_type="int8"), folder)
    asr.setup()
    try:
        assert isinstance(asr.transcribe(audio, "te").text, str)
    finally:
        asr.close()


def test_convert_whisper_to_ct2_writes_missing_processor_files(tiny, tmp_path):
    from engine.ct2_convert import convert_whisper_to_ct2

    src = tmp_path / "hf"
    shutil.copytree(tiny / "whisper", src)
    (src / "preprocessor_config.json").unlink()  # transformers 5 may write only processor_config.json
    (src / "processor_config.json").write_text(json.dumps({"feature_extractor": {"feature_size": 80}}))
    out = convert_whisper_to_ct2(src, tmp_path / "ct2", "int8")
    assert json.loads((out / "preprocessor_config.json").read_text())["feature_size"] == 80
    assert not (src / "preprocessor_config.json").exists()  # the source folder is left alone


# --------------------------------------------------------------------------- TTS
def test_tts_steps_lower_the_loss_and_export_is_complete(tts_run):
    rows = loss_rows(tts_run)
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    export = tts_run / "export"
    config = json.loads((export / "s2s_tts.json").read_text())
    assert config["backend"] == "speecht5" and config["text"]["transliteration"] == "iso15919"
    vocab = json.loads((export / "text_vocab.json").read_text())["vocab"]
    assert {"ā", "ī", "ṁ"} <= set(vocab)  # ISO 15919 letters added to the English character set
    model_config = json.loads((export / "config.json").read_text())
    assert model_config["vocab_size"] > max(vocab.values())
    spk = np.load(export / "speaker_embedding.npy")
    assert spk.shape == (512,) and np.linalg.norm(spk) > 0.1
    assert set(np.load(export / "speaker_embeddings.npz").files) == {"spk_a", "spk_b"}
    assert (export / "vocoder" / "config.json").exists()


def test_tts_export_speaks_through_the_engine_backend(tts_run):
    from engine.config import TTSOptions
    from engine.registry import backend_class

    cls = backend_class("tts", "speecht5")
    folder = str(tts_run / "export")
    tts = cls(TTSOptions(backend="speecht5", model=folder), folder)
    tts.setup()
    try:
        audio = tts.synthesize("నమస్కారం, మీరు ఎలా ఉన్నారు?")
        assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
        assert np.isfinite(audio).all() and tts.sample_rate == 16000
    finally:
        tts.close()


# --------------------------------------------------------------------------- eval and replay
def test_eval_reports_asr_and_roundtrip_numbers(asr_run, tts_run, prepared, tmp_path, capsys):
    report_path = tmp_path / "eval.json"
    assert (
        run(
            "eval",
            prepared,
            "--asr",
            asr_run / "ct2-int8",
            "--tts",
            tts_run / "export",
            "--out",
            report_path,
            "--device",
            "cpu",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ASR CER" in out and "TTS round-trip CER" in out
    report = json.loads(report_path.read_text())
    assert report["clips"] == 2
    for value in (report["asr"]["cer"], report["asr"]["wer"], report["tts"]["roundtrip_cer"]):
        assert isinstance(value, float) and value >= 0
    assert report["tts"]["backend"] == "speecht5"


def test_replay_runs_with_the_exported_models(asr_run, tts_run, prepared, tmp_path):
    """The exports drive the real engine (Silero, Gemma 3 270M) through `s2s-engine replay`."""
    wav = sorted((prepared / "wavs").glob("*.wav"))[0]
    cmd = [
        sys.executable,
        "-m",
        "remote.cli",
        "replay",
        str(wav),
        "--fast",
        "--set",
        f"asr.model={asr_run / 'ct2-int8'}",
        "--set",
        "tts.backend=speecht5",
        "--set",
        f"tts.model={tts_run / 'export'}",
        "--out",
        str(tmp_path / "replies"),
        "--json",
        str(tmp_path / "replay.json"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "replay.json").read_text())
    models = report["engine"]["models"]
    assert models["asr"]["path"] == str(asr_run / "ct2-int8")
    assert models["tts"]["backend"] == "speecht5"
    assert report["files"][0]["ok"] and report["files"][0]["turns"]


def test_csv_without_header_keeps_commas_in_the_text(tmp_path):
    from training.data import read_metadata

    (tmp_path / "metadata.csv").write_text("a.wav,వర్షం పడుతోంది, గొడుగు తీసుకో\nb.wav,సరే\n", encoding="utf-8")
    rows = read_metadata(tmp_path)
    assert [(r.audio, r.text, r.speaker) for r in rows] == [
        ("a.wav", "వర్షం పడుతోంది, గొడుగు తీసుకో", "default"), ("b.wav", "సరే", "default")]
    (tmp_path / "metadata.csv").write_text("file,text,speaker\na.wav,సరే,ravi\n", encoding="utf-8")
    assert [(r.text, r.speaker) for r in read_metadata(tmp_path)] == [("సరే", "ravi")]


def test_eval_with_a_short_asr_window_reports_it(asr_run, prepared, tmp_path):
    report_path = tmp_path / "eval-window.json"
    assert run("eval", prepared, "--asr", asr_run / "ct2-int8", "--out", report_path, "--device", "cpu",
               "--window-s", "10") == 0
    report = json.loads(report_path.read_text())
    assert report["asr"]["window_s"] == 10 and isinstance(report["asr"]["cer"], float)

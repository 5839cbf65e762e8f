"""Public-dataset sources for ``s2s-train prepare`` and the Telugu ``scorecard``, offline.

The tests build their own small Hugging Face dataset, shaped like FLEURS (an ``Audio`` column,
``transcription``, a ``ClassLabel`` ``gender``, a ``path`` string column), from real espeak-ng
Telugu speech, and save it with ``save_to_disk`` and as parquet. Hub failures go through the
real ``datasets``/``huggingface_hub`` code: HF_HUB_OFFLINE=1, and a stand-in Hub on 127.0.0.1
that answers as the Hub does for a gated and for a missing dataset.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speak
from datasets import Audio, ClassLabel, Dataset, DatasetDict

from training.cli import main
from training.synth import SENTENCES

ROOT = Path(__file__).resolve().parents[1]
GOOD = 6  # espeak-ng clips; then three rows prepare must drop


def run(*argv: object) -> int:
    return main([str(a) for a in argv])


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory) -> Path:
    """``saved/`` (a DatasetDict, train + test), ``parquet/train-0.parquet`` and ``arrays/``."""
    root = tmp_path_factory.mktemp("hfdata")
    rows: dict[str, list] = {"audio": [], "transcription": [], "gender": [], "path": []}
    for i in range(GOOD):
        wav = speak(SENTENCES[i + 8], root / f"c{i}.wav", voice="te+f3" if i % 2 else "te")  # 22.05 kHz
        name = f"te_{i:03d}.wav"
        rows["audio"].append({"bytes": wav.read_bytes(), "path": name})
        rows["transcription"].append(SENTENCES[i + 8])
        rows["gender"].append(i % 2)
        rows["path"].append(name)
    bad = [
        (b"RIFF not really a wav", "పాడైన ఫైల్."),
        (wav_bytes(np.zeros(22050, np.float32), 22050), "నిశ్శబ్దం."),
        (rows["audio"][0]["bytes"], "  "),
    ]
    for j, (data, text) in enumerate(bad):
        rows["audio"].append({"bytes": data, "path": f"bad_{j}.wav"})
        rows["transcription"].append(text)
        rows["gender"].append(0)
        rows["path"].append(f"bad_{j}.wav")
    ds = Dataset.from_dict(rows).cast_column("audio", Audio())
    ds = ds.cast_column("gender", ClassLabel(names=["female", "male"]))
    DatasetDict({"train": ds, "test": ds.select(range(3, len(ds)))}).save_to_disk(str(root / "saved"))
    (root / "parquet").mkdir()
    ds.to_parquet(str(root / "parquet" / "train-0.parquet"))
    # decoded arrays, as after a map(): {"array", "sampling_rate"}, under other column names
    audio, rate = sf.read(str(root / "c1.wav"), dtype="float32")
    Dataset.from_dict(
        {"speech": [{"array": audio, "sampling_rate": rate}], "words": ["మేము 2 రోజుల్లో తిరిగి వస్తాము."]}
    ).save_to_disk(str(root / "arrays"))
    return root


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_prepare_from_a_saved_dataset_checks_like_a_folder(hf_data, tmp_path, capsys):
    out = tmp_path / "prep"
    assert run("prepare", hf_data / "saved", "--out", out, "--speaker-column", "gender", "--no-progress") == 0
    assert f"prepared {GOOD} of {GOOD + 3} clips" in capsys.readouterr().out
    report = report_of(out)
    reasons = {d["audio"]: d["reason"] for d in report["dropped"]}
    assert reasons["bad_0.wav"].startswith("unreadable audio")
    assert reasons["bad_1.wav"].startswith("silent")
    assert reasons["bad_2.wav"] == "empty text"
    assert report["speakers"] == {"female": 3, "male": 3}  # ClassLabel names, not 0/1
    assert report["train"] + report["validation"] == GOOD and report["validation"] >= 1
    items = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert {i["id"] for i in items} <= {f"te_{k:03d}" for k in range(GOOD)}  # ids from the audio paths
    info = sf.info(str(out / items[0]["audio"]))
    assert (info.samplerate, info.channels) == (16000, 1)  # 22.05 kHz espeak-ng resampled


def test_prepare_from_parquet_streaming_matches_and_stops_at_max_rows(hf_data, tmp_path, capsys):
    glob = str(hf_data / "parquet" / "*.parquet")
    assert run("prepare", glob, "--out", tmp_path / "all", "--streaming", "--no-progress",
               "--cache-dir", tmp_path / "cache") == 0
    assert report_of(tmp_path / "all")["clips_kept"] == GOOD
    assert report_of(tmp_path / "all")["speakers"] == {"default": GOOD}  # no speaker column named
    assert run("prepare", hf_data / "parquet", "--out", tmp_path / "some", "--max-rows", "2",
               "--cache-dir", tmp_path / "cache", "--no-progress") == 0
    report = report_of(tmp_path / "some")
    assert report["clips_in"] == 2 and report["clips_kept"] == 2


def test_prepare_maps_columns_and_says_which_exist(hf_data, tmp_path, capsys):
    arrays = hf_data / "arrays"
    assert run("prepare", arrays, "--out", tmp_path / "a", "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot tell which column holds the audio and text" in err and "speech, words" in err
    assert len(err.splitlines()) == 1
    assert run("prepare", arrays, "--out", tmp_path / "a", "--audio-column", "speech", "--text-column",
               "words", "--no-progress") == 0
    kept = json.loads((tmp_path / "a" / "train.jsonl").read_text().splitlines()[0])
    assert kept["text"].startswith("మేము రెండు రోజుల్లో")  # normalised as a folder's text is
    assert run("prepare", hf_data / "saved", "--out", tmp_path / "b", "--text-column", "nope") == 2
    assert "no text column 'nope': the columns are audio, transcription, gender, path" in capsys.readouterr().err
    assert run("prepare", hf_data / "saved", "--out", tmp_path / "b", "--split", "dev") == 2
    assert "has no split 'dev': use --split with one of train, test" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="give DATA_DIR .* or --hf-dataset ID"):
        run("prepare", "--out", tmp_path / "c")


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers as the Hub does: 401 GatedRepo for org/gated, 404 RepoNotFound for anything else."""

    def _reply(self) -> None:
        gated = "/datasets/org/gated/" in self.path
        code, error = (401, "GatedRepo") if gated else (404, "RepoNotFound")
        message = "Access to dataset org/gated is restricted." if gated else "Repository not found"
        body = json.dumps({"error": message}).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def prepare_hub(dataset_id: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: the Hub's endpoint and offline mode are read at import."""
    environ = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT), **env}
    environ.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "training.cli", "prepare", "--hf-dataset", dataset_id, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=environ, cwd=ROOT, timeout=120,
    )


def test_hub_gated_missing_and_offline_give_one_line_with_the_fix(fake_hub, tmp_path):
    gated = prepare_hub("org/gated", tmp_path, HF_ENDPOINT=fake_hub)
    assert gated.returncode == 2, gated.stderr[-2000:]
    line = gated.stderr.strip().splitlines()[-1]
    assert "org/gated is gated: accept its terms at https://huggingface.co/datasets/org/gated" in line
    assert "hf auth login" in line and "Traceback" not in gated.stderr

    missing = prepare_hub("org/missing", tmp_path, HF_ENDPOINT=fake_hub)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "org/missing was not found on the Hub: check the id" in missing.stderr.strip().splitlines()[-1]

    offline = prepare_hub("google/fleurs", tmp_path, HF_HUB_OFFLINE="1")
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert offline.stderr.strip().splitlines() == [
        "s2s-train prepare: cannot reach the Hugging Face Hub for google/fleurs (HF_HUB_OFFLINE=1 is set) and "
        "it is not in the local cache: run once online, or pass a save_to_disk folder or parquet files instead"
    ]


# --------------------------------------------------------------------------- scorecard
def test_normalisers_differ_where_telugu_vowel_signs_differ():
    from training.scorecard import error_rates, script_rate, whisper_basic

    ref, hyp = "మీరు ఎలా ఉన్నారు?", "మిరూ ఎలే ఉన్నెరి"  # every vowel sign wrong, consonants right
    assert whisper_basic(ref) == "మ ర ఎల ఉన న ర"
    rates = error_rates([ref], [hyp])
    assert rates["indic"]["wer"] == 1.0 and rates["whisper_basic"]["wer"] == 0.0
    assert script_rate(["నమస్కారం", "namaskaram", ""]) == {
        "telugu_script_rate": 0.5, "telugu_of_all": 0.3333, "empty": 1, "telugu_letter_share": 0.4444
    }


@pytest.mark.slow
def test_scorecard_runs_the_offline_profile_end_to_end(hf_data, tmp_path, capsys):
    out = tmp_path / "scorecard.json"
    assert run("scorecard", hf_data / "saved", "--split", "test", "--profile", "offline",
               "--tts-limit", "1", "--llm-prompts", "2", "--out", out, "--no-progress") == 0
    table = capsys.readouterr().out
    for label in ("WER, indic normaliser", "WER, Whisper BasicTextNormalizer (model-card way)",
                  "transcripts in Telugu script", "round-trip CER via the profile's ASR",
                  "replies in Telugu script (2 prompts)"):
        assert label in table
    report = json.loads(out.read_text())
    assert report["profile"] == "offline" and report["dataset"].endswith("saved [test]")
    assert report["clips"]["dropped"] == 3 and report["clips"]["usable"] == GOOD - 3
    assert report["asr"]["clips"] == GOOD - 3 and report["tts"]["texts"] == 1 and report["llm"]["prompts"] == 2
    for rates in (report["asr"]["indic"], report["asr"]["whisper_basic"], report["tts"]["roundtrip"]["indic"]):
        assert rates["wer"] >= 0 and rates["cer"] >= 0
    assert 0 <= report["asr"]["telugu_script_rate"] <= 1
    assert report["models"]["asr"]["backend"] == "faster-whisper" and report["models"]["tts"]["backend"] == "espeak-ng"
    # Gemma 3 270M continues a written Telugu dialogue in Telugu (the offline profile's prompt format)
    assert report["llm"]["telugu_reply_rate"] > 0
    assert report["asr"]["examples"][0]["ref"] == SENTENCES[3 + 8]


def test_scorecard_rejects_unknown_stages(capsys):
    with pytest.raises(SystemExit, match="--stages takes a comma separated subset of asr,tts,llm"):
        run("scorecard", "--stages", "asr,vad")


def test_scorecard_clips_stop_reading_at_the_limit(hf_data):
    from training.hfdata import DatasetSource, dataset_clips
    from training.scorecard import load_test_clips

    source = DatasetSource(path=str(hf_data / "saved"), split="test")
    kept, dropped = load_test_clips(dataset_clips(source)[0], limit=1)
    assert len(kept) == 1 and not dropped and kept[0][1].dtype == np.float32
    kept, dropped = load_test_clips(dataset_clips(source)[0])
    assert len(kept) == GOOD - 3 and sorted(d["reason"].split(" (")[0] for d in dropped) == [
        "empty text", "silent", "unreadable audio"]


def test_prepare_add_joins_sources_and_keeps_earlier_splits(hf_data, tmp_path, capsys):
    out = tmp_path / "joined"
    assert run("prepare", hf_data / "saved", "--out", out, "--val-fraction", "0.34", "--no-progress") == 0
    val_before = (out / "validation.jsonl").read_text()
    assert run("prepare", hf_data / "arrays", "--out", out, "--add", "--audio-column", "speech",
               "--text-column", "words", "--no-progress") == 0
    assert f"with {GOOD} earlier clips" in capsys.readouterr().out
    assert (out / "validation.jsonl").read_text() == val_before  # one new clip: it goes to train
    report = report_of(out)
    assert report["train"] + report["validation"] == GOOD + 1 and report["earlier"] == GOOD
    assert [Path(s.split(" [")[0]).name for s in report["sources"]] == ["saved", "arrays"]
    ids = [json.loads(x)["id"] for x in (out / "train.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and all((out / "wavs" / f"{i}.wav").exists() for i in ids)

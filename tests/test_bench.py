"""``s2s-engine bench``: latency on the real offline models, and the shape-true model builder.

Integration tests with the packaged offline models (Whisper base, Gemma 3 270M, espeak-ng);
the shape models are built small. No timing thresholds except one that holds by a wide margin:
the sequential cascade waits for a whole 49-token reply that the streaming engine does not.
"""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from engine import bench
from engine.config import SentenceOptions
from engine.sentences import SentenceChunker

pytestmark = pytest.mark.slow


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s-engine")
    sub = parser.add_subparsers(dest="command", required=True)
    bench.register(sub)
    return parser


def test_register_adds_the_bench_commands():
    parser = _parser()
    args = parser.parse_args(["bench", "latency", "--turns", "2", "--reply", "40", "a.wav"])
    assert args.func is bench.cmd_latency and args.turns == 2 and args.reply == 40 and args.files == ["a.wav"]
    assert parser.parse_args(["bench", "latency"]).reply == "scripted"
    assert parser.parse_args(["bench", "wire"]).func is bench.cmd_wire
    args = parser.parse_args(["bench", "make-models", "--out", "x", "--small"])
    assert args.func is bench.cmd_make_models and args.small
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "latency", "--reply", "lots"])


def test_scripted_reply_is_four_chunks():
    chunker = SentenceChunker(SentenceOptions())
    chunks = chunker.push(bench.SCRIPTED_REPLY, 0) + chunker.flush()
    assert len(chunks) == 4


def test_percentile():
    assert bench.percentile([], 50) is None
    assert bench.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert bench.percentile([0.0, 10.0], 95) == pytest.approx(9.5)


@pytest.fixture(scope="module")
def latency_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "latency.json"
    args = _parser().parse_args(["bench", "latency", "--turns", "1", "--json", str(out)])
    assert args.func(args) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def test_latency_reports_all_three_measurements(latency_report):
    r = latency_report
    assert r["schema"] == "s2s.bench.latency/1" and r["profile"] == "offline"
    s = r["summary"]
    for d in (s["streaming"]["after_eot_ms"], s["streaming"]["voice_to_voice_ms"], s["cascade"]["after_eot_ms"],
              s["cascade"]["voice_to_voice_ms"], s["floor"]["total_ms"]):
        assert d["n"] == 1 and d["p50"] > 0 and d["p95"] > 0
    assert s["streaming"]["eot_wait_ms"]["p50"] > 0  # paced: the real end-of-turn wait
    assert s["ratios"]["streaming_over_floor"] > 0 and s["ratios"]["cascade_over_streaming"] > 0
    assert set(s["targets"]) >= {"streaming_over_floor_met", "cascade_over_streaming_met"}
    (turn,) = r["turns"]
    for part in ("asr_ms", "llm_first_chunk_ms", "tts_first_chunk_ms"):
        assert turn["floor"][part] > 0
    # Fairness: the same utterance and the same reply in (a), (b) and (c).
    assert turn["same_transcript"] and turn["same_reply"]
    assert turn["reply_text"] == bench.SCRIPTED_REPLY
    assert turn["reply_chunks"] == 4 and s["multi_sentence"]
    assert turn["cascade"]["reply_tokens"] == r["options"]["reply_tokens"] > 20
    assert turn["floor"]["first_chunk"] == "నమస్కారం!"


def test_cascade_waits_longer_than_streaming_on_a_multi_sentence_reply(latency_report):
    (turn,) = latency_report["turns"]
    # The cascade generates all ~49 tokens and speaks all four sentences before any audio;
    # streaming speaks after the first few tokens. The gap is hundreds of ms on any machine.
    assert turn["cascade"]["after_eot_ms"] >= turn["streaming"]["after_eot_ms"]
    assert turn["cascade"]["voice_to_voice_ms"] >= turn["streaming"]["voice_to_voice_ms"]


def test_make_models_small_builds_and_loads(tmp_path):
    from engine.shape_models import make_models

    summary = make_models(tmp_path / "shape", small=True, asr_tokens=12, log=lambda s: None)
    m = summary["models"]
    assert m["asr"]["check_tokens"] == 12  # loaded in faster-whisper; the fixed length holds
    assert m["llm"]["check"] == {"n_vocab": 262144, "n_embd": 64, "tokens": 8}  # llama.cpp, in a subprocess
    assert m["tts"]["check_seconds"] > 0.5
    cfg = json.loads((tmp_path / "shape" / "asr" / "preprocessor_config.json").read_text())
    assert cfg["feature_size"] == 128
    tok = json.loads((tmp_path / "shape" / "asr" / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert ids["<|yue|>"] == 50358 and ids["<|notimestamps|>"] == 50364 and ids["<|nospeech|>"] == 50363
    assert any(o.startswith("llm.model=") for o in summary["overrides"])
    shutil.rmtree(tmp_path / "shape")

"""``s2s-train turn`` and ``eval --turn`` on CPU: a tiny Telugu set spoken by espeak-ng, cut at
word boundaries, a tiny random Whisper encoder trained a few steps, exported to ONNX and run
through the engine's own Smart Turn backend; the stock Smart Turn v3.2 scored on the same set.

``synth-data --words`` has espeak-ng speak each word on its own, joined with short gaps, so
the word times are known exactly; they travel through ``prepare`` in the JSONL manifest.
What this proves is the plumbing and the numbers' consistency, not Telugu accuracy: espeak's
prosody is flat, and a few steps of a random model learn nothing worth a figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import speak
from training.audio import SAMPLE_RATE, load_audio, write_wav
from training.cli import main
from training.synth import speak_words

# one batch holds the 16 training examples: every step is a full-batch step, so the loss can be compared
TRAIN_FAST = ["--device", "cpu", "--batch-size", "16", "--warmup-steps", "1", "--no-progress", "--eval-every", "0",
              "--save-every", "0"]


def run(*argv: object) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("turn")


@pytest.fixture(scope="module")
def prepared(work) -> Path:
    """10 clips (8 train, 2 validation) spoken word by word, their word times in metadata.jsonl."""
    assert run("synth-data", "--out", work / "data", "-n", "10", "--words") == 0
    assert run("prepare", work / "data", "--out", work / "prep", "--val-fraction", "0.2") == 0
    return work / "prep"


@pytest.fixture(scope="module")
def tiny_whisper(work) -> Path:
    from training.tiny import build_tiny_whisper

    return build_tiny_whisper(work / "tiny-whisper")


@pytest.fixture(scope="module")
def trained(work, prepared, tiny_whisper) -> tuple[Path, dict]:
    import torch

    out, threads = work / "run", torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model: on a busy 2-core machine, a second thread only waits
    try:
        assert run("turn", prepared, "--base", tiny_whisper, "--out", out, "--steps", "8", "--lr", "1e-3", "--int8",
                   *TRAIN_FAST) == 0
    finally:
        torch.set_num_threads(threads)
    return out, json.loads((out / "summary.json").read_text())


def test_prepare_keeps_the_word_alignment_shifted_by_the_trim(prepared, work):
    rows = [json.loads(line) for line in (prepared / "train.jsonl").read_text().splitlines()]
    first = json.loads((work / "data" / "metadata.jsonl").read_text().splitlines()[0])
    assert all(len(r["words"]) >= 3 for r in rows)
    for r in rows:
        starts = [w["start"] for w in r["words"]]
        assert starts == sorted(starts) and r["words"][-1]["end"] <= r["duration"]
        assert r["words"][0]["start"] < 0.15  # synth-data's 0.2 s lead-in, trimmed to prepare's 0.1 s margin
    kept = next(r for r in rows + [json.loads(x) for x in (prepared / "validation.jsonl").read_text().splitlines()]
                if r["text"] == first["text"])
    lead = first["words"][0]["start"] - kept["words"][0]["start"]
    assert lead == pytest.approx(first["words"][-1]["end"] - kept["words"][-1]["end"], abs=2e-3)


def test_turn_trains_exports_and_the_engine_runs_the_export(trained, prepared):
    out, summary = trained
    assert summary["word_times"] == "data" and summary["base_kind"] == "whisper"
    assert summary["examples"] == {"train": {"complete": 8, "incomplete": 8},
                                   "validation": {"complete": 2, "incomplete": 2}}
    assert summary["steps"] == 8 and summary["last_loss"] < summary["first_loss"]
    held = summary["heldout"]
    assert set(held) == {"before", "after", "after_onnx_fp32", "after_onnx_int8"}
    for m in held.values():
        assert m["n"] == 4 and 0 <= m["accuracy"] <= 1 and m["threshold"] == 0.5
    # the float export through the engine's backend gives the torch model's own numbers
    assert held["after_onnx_fp32"]["mean_p_complete"] == pytest.approx(held["after"]["mean_p_complete"], abs=1e-3)

    import torch

    from engine.stages.turn_smart import features
    from training.turn import INCOMPLETE, TurnExample, engine_model, example_audio
    from training.turn_model import load_saved

    model = load_saved(out / "model").eval()
    clip = json.loads((prepared / "validation.jsonl").read_text().splitlines()[0])
    ex = TurnExample(str(prepared / clip["audio"]), INCOMPLETE, clip["words"][1]["end"])
    audio = example_audio(ex, 200)
    with torch.no_grad():
        want = torch.sigmoid(model(torch.from_numpy(features(audio)[None]))).item()
    for name in ("smart-turn-te.onnx", "smart-turn-te-int8.onnx"):
        backend = engine_model(out / name)
        assert backend.describe()["path"] == str(out / name)
        got = backend.predict(audio)
        backend.close()
        assert 0.0 <= got <= 1.0
        if "int8" not in name:
            assert got == pytest.approx(want, abs=1e-4)


def test_training_lowers_the_loss_on_the_training_examples(trained, prepared, tiny_whisper):
    """Dropout off, all 16 examples: the trained model fits them better than its start (the
    same seed rebuilds the start: the random head is drawn after ``torch.manual_seed(1234)``)."""
    import torch

    from engine.stages.turn_smart import features
    from training.data import load_split
    from training.turn import TurnExamplesOptions, example_audio, make_examples, word_times
    from training.turn_model import load_base, load_saved

    items = load_split(prepared, "train")
    examples, _ = make_examples(items, word_times(prepared, items, TurnExamplesOptions())[0], TurnExamplesOptions())
    x = torch.from_numpy(np.stack([features(example_audio(e, 200)) for e in examples]))
    y = torch.tensor([float(e.label) for e in examples])
    torch.manual_seed(1234)
    losses = []
    for model in (load_base(str(tiny_whisper))[0], load_saved(trained[0] / "model")):
        with torch.no_grad():
            losses.append(torch.nn.functional.binary_cross_entropy_with_logits(model.eval()(x), y).item())
    assert losses[1] < losses[0] - 0.02, losses


def test_eval_reports_turn_accuracy_of_the_export_and_of_the_stock_model(trained, prepared, tmp_path, capsys):
    out, summary = trained
    assert run("eval", prepared, "--turn", out / "smart-turn-te.onnx", "--out", tmp_path / "e.json") == 0
    table = capsys.readouterr().out
    assert "turn accuracy (P(complete) >= 0.5)" in table and "turn incomplete precision / recall" in table
    turn = json.loads((tmp_path / "e.json").read_text())["turn"]
    assert turn["examples"] == {"complete": 2, "incomplete": 2} and turn["word_times"] == "data"
    assert turn["accuracy"] == summary["heldout"]["after_onnx_fp32"]["accuracy"]  # same clips, same engine
    assert {"precision_incomplete", "recall_incomplete", "threshold"} <= set(turn)
    assert 0 < turn["predict_ms"]["median"] <= turn["predict_ms"]["max"]

    assert run("eval", prepared, "--turn", "--out", tmp_path / "stock.json", "--turn-threshold", "0.6") == 0
    stock = json.loads((tmp_path / "stock.json").read_text())["turn"]
    assert stock["model"] == "pkg:smart-turn-v3.2" and stock["threshold"] == 0.6 and stock["n"] == 4
    assert stock["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_eval_reads_a_labelled_folder(trained, prepared, tmp_path):
    clip = json.loads((prepared / "train.jsonl").read_text().splitlines()[0])
    audio = load_audio(prepared / clip["audio"], SAMPLE_RATE)
    for label, part in (("complete", audio), ("incomplete", audio[: int(clip["words"][1]["end"] * SAMPLE_RATE)])):
        (tmp_path / label).mkdir()
        write_wav(tmp_path / label / "a.wav", part, SAMPLE_RATE)
    assert run("eval", tmp_path, "--turn", trained[0] / "smart-turn-te.onnx") == 0
    turn = json.loads((tmp_path / "eval.json").read_text())["turn"]
    assert turn["source"] == "labelled folder" and turn["examples"] == {"complete": 1, "incomplete": 1}


def test_stock_weights_are_read_back_exactly():
    """The stock int8 file with its activation quantisation stripped is the float model the
    weights describe: ONNX Runtime on that graph and torch on the read-back weights agree."""
    import onnx
    import onnxruntime as ort
    import torch

    from engine.models import resolve
    from engine.stages.turn_smart import features
    from training.turn_model import load_base

    path = resolve("turn", "pkg:smart-turn-v3.2")
    graph = onnx.load(path)
    weights = {i.name for i in graph.graph.initializer}
    producer = {o: n for n in graph.graph.node for o in n.output}
    skip = {}  # activation DequantizeLinear output -> the tensor before its QuantizeLinear
    for n in graph.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in weights:
            skip[n.output[0]] = producer[n.input[0]].input[0]
    kept = [n for n in graph.graph.node
            if n.op_type != "QuantizeLinear" and not (n.op_type == "DequantizeLinear" and n.output[0] in skip)]
    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = skip.get(name, name)
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no int8 kernel fusion
    so.log_severity_level = 3
    float_graph = ort.InferenceSession(graph.SerializeToString(), so)

    model, kind = load_base("pkg:smart-turn-v3.2")
    assert kind == "smart-turn-onnx" and model.config.d_model == 384 and model.config.encoder_layers == 4
    rng = np.random.default_rng(0)
    x = np.stack([features(rng.normal(0, 0.1, n).astype(np.float32)) for n in (8000, 40000)])
    with torch.no_grad():
        mine = torch.sigmoid(model.eval()(torch.from_numpy(x))).numpy()
    theirs = float_graph.run(None, {"input_features": x})[0][:, 0]
    assert mine == pytest.approx(theirs, abs=1e-4)


def test_turn_errors_are_one_line_with_the_fix(prepared, tiny_whisper, work, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    (empty / "validation.jsonl").write_text("")
    assert run("turn", empty, "--out", tmp_path / "o", "--base", tiny_whisper, *TRAIN_FAST) == 2
    assert "no training clips" in capsys.readouterr().err

    one_word = tmp_path / "one"  # every clip a single word: nothing to cut, one class only
    (one_word / "wavs").mkdir(parents=True)
    rows = []
    for i, word in enumerate(["నమస్కారం", "ధన్యవాదాలు"]):
        words = speak_words(word, one_word / "wavs" / f"{i}.wav")
        rows.append({"audio": f"wavs/{i}.wav", "text": word, "words": words})
    (one_word / "m.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    assert run("prepare", one_word, "--out", tmp_path / "one-prep", "--manifest", one_word / "m.jsonl") == 0
    capsys.readouterr()
    assert run("turn", tmp_path / "one-prep", "--out", tmp_path / "o", "--base", tiny_whisper, *TRAIN_FAST) == 2
    err = capsys.readouterr().err  # (above it: transformers' weight-loading bar)
    assert "only complete examples" in err.strip().splitlines()[-1] and "Traceback" not in err

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run("turn", prepared, "--out", tmp_path / "o", "--base", "openai/whisper-tiny", *TRAIN_FAST) == 2
    err = capsys.readouterr().err
    assert "openai/whisper-tiny" in err and "--base pkg:smart-turn-v3.2" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_asr_word_times_from_the_offline_whisper_are_cached(work, tmp_path):
    """The ``asr`` word times with the offline profile's Whisper base, on English it can hear."""
    from training.turn import WORDS_CACHE, TurnExamplesOptions, word_times

    wav = tmp_path / "wavs" / "en.wav"
    wav.parent.mkdir()
    speak("I would like to book a table for two people tonight", wav, voice="en", rate=SAMPLE_RATE)
    items = [{"id": "en", "audio": str(wav), "duration": len(load_audio(wav)) / SAMPLE_RATE}]
    opts = TurnExamplesOptions(words="asr")
    words, source = word_times(tmp_path, items, opts)
    assert source == "asr:pkg:whisper-base"
    ws = words["en"]
    assert len(ws) >= 6 and all(e > s for s, e in ws) and ws[-1][1] <= items[0]["duration"] + 0.05
    assert [s for s, _ in ws] == sorted(s for s, _ in ws)
    cache = json.loads((tmp_path / WORDS_CACHE).read_text())
    assert cache["asr"] == "pkg:whisper-base" and len(cache["clips"]["en"]) == len(ws)
    assert word_times(tmp_path, items, opts) == (words, source)

"""The whole cascade on the real offline models (Silero, Whisper base, Gemma 3 270M, espeak-ng)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.audio import load_wav
from engine.clock import now_ns
from engine.events import Interruption, ReplyAudio, ResponseDone
from engine.replay import replay_file
from tests.conftest import SAMPLE_TE, concat_wav, silence, speak

ROOT = Path(__file__).resolve().parents[1]


async def test_telugu_wav_gives_transcript_reply_text_and_audio(offline_engine, tmp_path):
    report = await replay_file(offline_engine, SAMPLE_TE, tmp_path, fast=True)
    assert report.ok and len(report.turns) == 1
    t = report.turns[0]
    assert t.transcript.strip(), "empty transcript"
    assert t.reply_text.strip(), "empty reply"
    assert t.status == "completed" and not t.interrupted
    audio, rate = sf.read(t.reply_wav)
    assert rate == 24_000 and len(audio) / rate > 0.3 and np.abs(audio).max() > 0.05
    m = t.metrics
    for key in ("eot_wait_ms", "asr_ms", "llm_first_token_ms", "first_sentence_ms", "tts_ms", "out_ms"):
        assert m[key] is not None and m[key] >= 0, key
    assert m["voice_to_voice_ms"] > m["asr_ms"] > 0
    # Whisper base does not write Telugu for this sample: flagged. Whether its decode also stopped at
    # the script check depends on the host's int8 kernels: on some (an AMD EPYC with AVX-512,
    # 2026-12-07) the wrong-script text ends within the first 16-token step, before the check has
    # anything to stop; the stop itself is tested in tests/test_asr_decode.py.
    assert t.script_ok is False and m["script_ok"] is False and m["asr_stop"] in ("script", None)


async def test_english_wav_is_transcribed_with_language_en(offline_engine, tmp_path):
    wav = speak("Hello, how are you today? The weather is very nice.", tmp_path / "en.wav", voice="en-us",
                rate=22_050, speed=140)
    report = await replay_file(offline_engine, wav, tmp_path, fast=True, language="en")
    assert len(report.turns) == 1
    text = report.turns[0].transcript.lower()
    assert "how are you today" in text and "weather is very nice" in text
    assert report.turns[0].language == "en" and report.turns[0].script_ok is True


async def test_multi_turn_wav_gives_one_turn_per_utterance(offline_engine, tmp_path):
    speech, _ = load_wav(SAMPLE_TE)
    wav = concat_wav(tmp_path / "two.wav", [speech, silence(1.5), speech])
    report = await replay_file(offline_engine, wav, tmp_path, fast=True)
    assert [t.turn_id for t in report.turns] == ["turn_1", "turn_2"]
    assert all(t.transcript and t.reply_text and t.reply_wav for t in report.turns)
    assert Path(report.turns[1].reply_wav).name == "two_turn_2.wav"


async def test_silence_and_noise_give_no_turn_and_no_error(offline_engine, tmp_path):
    quiet = concat_wav(tmp_path / "quiet.wav", [silence(3.0)])
    noise = concat_wav(tmp_path / "noise.wav",
                       [np.random.default_rng(1).normal(0, 0.02, 48_000).astype(np.float32)])
    for wav in (quiet, noise):
        report = await replay_file(offline_engine, wav, tmp_path, fast=True)
        assert report.ok
        assert all(not t.reply_text for t in report.turns)


async def test_barge_in_on_real_models(offline_engine):
    speech, _ = load_wav(SAMPLE_TE)
    s = offline_engine.new_session()
    await s.start()
    stream = np.concatenate([speech, silence(1.0)])
    for i in range(0, len(stream), 320):
        s.push_audio(stream[i: i + 320])
    events = []

    async def until(pred):
        async for ev in s.stream():
            events.append(ev)
            if pred(ev):
                return

    await asyncio.wait_for(until(lambda e: isinstance(e, ReplyAudio)), 60)
    heard_from = now_ns()  # the reply's first audio went out before this
    await asyncio.sleep(0.15)
    talked_at = now_ns()  # the barge-in is measured after this
    for i in range(0, 16_000, 320):
        s.push_audio(speech[i: i + 320])
    await asyncio.wait_for(until(lambda e: isinstance(e, Interruption)), 10)
    cut = events[-1]
    # played_ms is the playback position at the barge-in: the time since the first audio went out,
    # capped by the audio sent before the cut (it cannot have been heard before it was sent)
    sent = [e for e in events[:-1] if isinstance(e, ReplyAudio) and e.response_id == cut.response_id]
    sent_ms = int(1000 * sum(len(e.samples) for e in sent) / sent[0].sample_rate)
    assert 0 < int(min((talked_at - heard_from) / 1e6, sent_ms)) <= cut.played_ms <= sent_ms
    done = [e for e in events if isinstance(e, ResponseDone) and e.response_id == cut.response_id]
    if done:  # the reply was synthesised in full before the cut: its playback was cut
        assert done[-1].status == "completed" and cut.played_ms < done[-1].audio_ms
    else:  # cut while still generating: the response ends cancelled, with what was heard
        await asyncio.wait_for(until(lambda e: isinstance(e, ResponseDone)), 10)
        end = events[-1]
        assert (end.response_id, end.status, end.heard_text) == (cut.response_id, "cancelled", cut.heard_text)
    # the history keeps what was heard; nothing when no word was (the user's turn is then last)
    last = s.history.messages[-1]
    assert (last["role"], last["content"]) == (("assistant", cut.heard_text.strip()) if cut.heard_text.strip()
                                               else ("user", last["content"]))
    await s.close()


def test_replay_cli_reports_each_file_and_fails_only_the_bad_one(tmp_path):
    good48 = tmp_path / "stereo48k.wav"
    speech, _ = load_wav(SAMPLE_TE, target_rate=48_000)
    sf.write(str(good48), np.stack([speech, speech], axis=1), 48_000, subtype="FLOAT")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "remote.cli", "replay", str(good48), str(bad), "--fast",
         "--out", str(tmp_path / "out"), "--json", str(report)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr
    assert f"✗ {bad}" in out and out.count("✗") == 1
    assert "voice-to-voice" in out and "turn_1 user" in out
    assert "⚠ not in Telugu script: the speech recogniser did not understand" in " ".join(out.split())
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["schema"] == "s2s.replay/1"
    files = {Path(f["path"]).name: f for f in data["files"]}
    assert files["broken.wav"]["ok"] is False and "broken.wav" in files["broken.wav"]["error"]
    turn = files["stereo48k.wav"]["turns"][0]
    assert files["stereo48k.wav"]["audio"]["sample_rate"] == 48_000
    assert turn["reply_text"] and Path(turn["reply_wav"]).exists()
    # the base model's dialogue reply ends at the next speaker label, its own included
    assert not any(label in turn["reply_text"] for label in ("సహాయకుడు", "వినియోగదారు"))
    assert turn["metrics"]["voice_to_voice_ms"] > 0
    assert turn["script_ok"] is False and turn["metrics"]["script_ok"] is False


def test_cli_errors_are_one_line_not_tracebacks(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cases = {
        ("replay", "--profile", "nope"): "no profile named 'nope'",
        ("replay", "--set", "asr.model=/does/not/exist", "--fast"): "/does/not/exist: no such file",
        ("models", "list", "--profile", "gpu"): "s2s-engine models fetch --profile gpu",
    }
    for args, expected in cases.items():
        proc = subprocess.run([sys.executable, "-m", "remote.cli", *args], capture_output=True, text=True,
                              timeout=120, env=env, cwd=ROOT)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
        assert expected in " ".join((proc.stdout + proc.stderr).split()), (args, proc.stdout, proc.stderr)


def test_parallel_llm_instances_generate_for_two_sessions_at_once():
    import threading
    import time

    from engine.config import load_profile
    from engine.models import resolve
    from engine.stages.llm_llamacpp import LlamaCppLLM

    p = load_profile("offline", ["llm.parallel=2", "llm.max_tokens=24"])
    llm = LlamaCppLLM(p.llm, resolve("llm", p.llm.model))
    llm.setup()
    try:
        assert llm.describe()["parallel"] == 2
        spans: dict[int, list[float]] = {0: [], 1: []}
        msgs = [{"role": "user", "content": "నమస్కారం, మీరు ఎలా ఉన్నారు?"}]

        def run(i: int) -> None:
            for _ in llm.stream(msgs, 24, threading.Event()):
                spans[i].append(time.perf_counter())

        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert spans[0] and spans[1]
        # the two generations overlapped in time: neither waited for the other to finish
        assert spans[0][0] < spans[1][-1] and spans[1][0] < spans[0][-1]
    finally:
        llm.close()


def test_each_generation_frees_its_sampler_when_it_ends():
    """llama-cpp-python frees a generation's sampler chain (a buffer of one entry per vocabulary
    token: 3 MiB for Gemma 3) only through Python's cyclic collector; the backend frees it as the
    generation ends, so six replies leave no more memory in use than one."""
    import gc
    import threading

    from llama_cpp._internals import LlamaSampler

    from engine.config import load_profile
    from engine.models import resolve
    from engine.stages.llm_llamacpp import LlamaCppLLM
    from remote.memory import malloc_stats

    def in_use_mib() -> float:
        m = malloc_stats()
        assert m is not None  # glibc's mallinfo2 (or jemalloc) on Linux
        return m["in_use_mib"] + m["mmapped_mib"]

    p = load_profile("offline", ["llm.max_tokens=4"])
    llm = LlamaCppLLM(p.llm, resolve("llm", p.llm.model))
    llm.setup()
    msgs = [{"role": "user", "content": "నమస్కారం, మీరు ఎలా ఉన్నారు?"}]
    gc.collect()
    gc.disable()  # what a busy server sees between its rare full collections
    try:
        "".join(llm.stream(msgs, 4, threading.Event()))
        before = in_use_mib()
        for _ in range(6):
            "".join(llm.stream(msgs, 4, threading.Event()))
        grew = in_use_mib() - before
        alive = [s for s in gc.get_objects() if type(s) is LlamaSampler and s.sampler is not None]
        assert alive == [], f"{len(alive)} sampler chains left for the cyclic collector"
        assert grew < 6, f"six replies left {grew:.1f} MiB in use (3 MiB per chain not freed)"
    finally:
        gc.enable()
        llm.close()


async def test_gpu_profile_runs_end_to_end_on_shape_true_models_on_cpu(tmp_path):
    """Everything of the gpu profile but CUDA: chat-template prompts, two LLM instances,
    the MMS VITS backend, a large-v3-turbo-shaped Whisper (random weights, built locally)."""
    from engine.engine import Engine
    from engine.shape_models import make_models

    summary = make_models(tmp_path / "shape", small=True, asr_tokens=12, log=lambda s: None)
    overrides = [*summary["overrides"], "asr.device=cpu", "asr.compute_type=int8", "llm.n_gpu_layers=0",
                 "tts.device=cpu", "llm.max_tokens=24"]
    engine = Engine.load("gpu", overrides)
    try:
        d = engine.describe()
        assert d["profile"] == "gpu" and d["models"]["tts"]["backend"] == "vits"
        assert d["models"]["llm"]["prompt_format"] == "chat" and d["models"]["llm"]["parallel"] == 2
        assert engine.notes == []  # VITS loaded: no fallback to espeak-ng
        report = await replay_file(engine, SAMPLE_TE, tmp_path, fast=True)
        t = report.turns[0]
        assert t.transcript and t.reply_text and t.status == "completed"
        assert t.metrics["asr_ms"] is not None and t.metrics["llm_first_token_ms"] is not None
        # random weights write no Telugu for the voice to read; the voice itself speaks Telugu:
        assert len(engine.tts.synthesize("నమస్కారం, మీరు ఎలా ఉన్నారు?")) > 0.3 * engine.tts.sample_rate
    finally:
        engine.close()

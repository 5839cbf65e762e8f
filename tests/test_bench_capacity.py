"""``s2s-engine bench capacity``: concurrent sessions on the real offline engine, and its verdict.

One real run: two users at once, one short spoken English turn each (espeak-ng), paced in real
time. Assertions are about structure, counts and orderings, never about how fast this machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import threading

import pytest
from rich.console import Console

from engine.bench import capacity as bench_capacity
from engine.bench import llm as bench_llm
from tests.conftest import speak

pytestmark = pytest.mark.slow


def _parser() -> argparse.ArgumentParser:
    from remote.cli import build_parser

    return build_parser()  # the s2s-engine command line


def test_capacity_is_a_bench_command():
    args = _parser().parse_args(["bench", "capacity", "--sessions", "4,1,2,2", "--bound-ms", "800", "a.wav"])
    assert args.func is bench_capacity.cmd_capacity
    assert args.sessions == [1, 2, 4] and args.bound_ms == 800 and args.files == ["a.wav"]
    assert args.turns == 3 and args.stagger == "even" and args.warmup and args.profile == "offline"
    assert args.reply == "scripted" and _parser().parse_args(["bench", "capacity", "--reply", "24"]).reply == 24
    for bad in (["--sessions", "0,1"], ["--sessions", "two"], ["--sessions", ""], ["--reply", "0"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(["bench", "capacity", *bad])


def _row(n: int, p95: float | None, unanswered: int = 0) -> dict:
    return {"sessions": n, "unanswered": unanswered, "voice_to_voice_ms": {"p95": p95}}


def test_capacity_is_the_largest_n_that_kept_the_bound_as_did_every_smaller_one():
    assert bench_capacity.judge([_row(1, 700), _row(2, 900), _row(3, 1100), _row(4, 1500)], 1000) == 2
    rows = [_row(4, 900), _row(1, 700), _row(2, 1200), _row(3, 950)]  # a bad 2 caps it at 1
    assert bench_capacity.judge(rows, 1000) == 1
    assert [r["within_bound"] for r in rows] == [True, True, False, True]
    assert bench_capacity.judge([_row(1, 500, unanswered=1)], 1000) == 0  # a missed turn fails the level
    assert bench_capacity.judge([_row(1, None)], 1000) == 0


def test_two_concurrent_users_on_the_real_engine(offline_engine, tmp_path):
    wav = speak("Please open the window.", tmp_path / "window.wav", voice="en", rate=16000)
    report = asyncio.run(bench_capacity.run_capacity(offline_engine, [str(wav)], [2], turns=1, bound_ms=60_000,
                                                     warmup=False))
    json.dumps(report)  # the --json report is plain JSON
    (row,) = report["levels"]
    assert row["sessions"] == 2 and row["utterances"] == 2
    assert row["answered"] == 2 and row["unanswered"] == 0 and row["interrupted"] == 0, row["errors"]
    v2v, eot = row["voice_to_voice_ms"], row["stages_ms"]["eot_wait_ms"]
    assert v2v["n"] == 2 and v2v["p50"] <= v2v["p95"] <= v2v["max"]
    # voice-to-voice holds the end-of-turn silence wait (never shorter than the policy's earliest
    # end of turn) and the time after it
    prof = offline_engine.profile
    earliest = prof.vad.end_of_turn_silence_ms if prof.turn.policy == "silence" else prof.turn.min_silence_ms
    assert v2v["p50"] >= eot["p50"] >= 0.5 * earliest
    assert row["after_eot_ms"]["n"] == 2
    mem = row["memory"]
    assert mem["rss_idle_mb"] > 100 and mem["rss_peak_mb"] >= mem["rss_idle_mb"]  # the models are loaded
    assert mem["rss_per_session_mb"] == pytest.approx(max(0.0, mem["rss_peak_mb"] - mem["rss_idle_mb"]) / 2, abs=0.1)
    assert mem["gpu_per_session_mb"] is None  # no GPU here
    assert report["capacity"] == 2 and row["within_bound"]
    assert not offline_engine.sessions  # every session was closed
    out = io.StringIO()
    bench_capacity.render(report, Console(file=out, width=120))
    assert "capacity: 2 concurrent session(s)" in out.getvalue()


def test_fixed_replies_keep_every_model_instance_generating_at_once():
    """With llm.parallel = 2 two fixed-reply calls run together: each waits, after its first
    piece, until the other has started (one instance for both would never get there)."""
    from engine.config import load_profile
    from engine.models import resolve
    from engine.registry import backend_class

    profile = load_profile("offline", ["llm.parallel=2"])
    inner = backend_class("llm", profile.llm.backend)(profile.llm, resolve("llm", profile.llm.model, "offline"))
    inner.setup()
    try:
        fixed = bench_capacity.FixedReplies(inner, "scripted", seed=1)
        started = {"a": threading.Event(), "b": threading.Event()}
        replies: dict[str, str] = {}
        failures: list[str] = []

        def user(name: str, other: str) -> None:
            pieces: list[str] = []
            for piece in fixed.stream([{"role": "user", "content": "నమస్కారం"}], 64, threading.Event()):
                if not pieces:
                    started[name].set()
                    if not started[other].wait(60):
                        failures.append(f"{other} never started while {name} was generating")
                pieces.append(piece)
            replies[name] = "".join(pieces)

        threads = [threading.Thread(target=user, args=("a", "b")), threading.Thread(target=user, args=("b", "a"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures and not any(t.is_alive() for t in threads)
        assert replies == {"a": bench_llm.SCRIPTED_REPLY, "b": bench_llm.SCRIPTED_REPLY}
        assert fixed.reply_tokens == len(bench_llm._pieces(inner.llama, bench_llm.SCRIPTED_REPLY))
        # the end-of-turn text signal is read first, as the engine's backend does
        signals: list[float | None] = []
        reply = "".join(fixed.stream_turn([{"role": "user", "content": "మీరు ఎలా ఉన్నారు?"}], 64,
                                          threading.Event(), signals.append))
        assert reply == bench_llm.SCRIPTED_REPLY and len(signals) == 1 and 0.0 <= signals[0] <= 1.0
    finally:
        inner.close()

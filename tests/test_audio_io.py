"""Audio plumbing without a sound card: the jitter buffer, the mic ring, the WAV replay
source's real-time pacing, and the pump (gate in front of the link)."""

from __future__ import annotations

import time

import numpy as np

from s2s_tui.audio import ChunkRing, ClockSink, JitterBuffer, ReplaySource, level_db
from tests.conftest import SAMPLE_TE


def test_jitter_buffer_prebuffers_plays_and_counts():
    jb = JitterBuffer(24_000, prebuffer_ms=100)
    jb.push("r1", np.ones(1200, np.float32))  # 50 ms: below the prebuffer
    assert not jb.read(480).any() and not jb.playing
    jb.push("r1", np.ones(2400, np.float32))
    out = jb.read(480)
    assert out.all() and jb.playing and jb.current == "r1"
    assert jb.played_ms("r1") == 20


def test_jitter_buffer_plays_a_short_complete_reply_and_flushes():
    jb = JitterBuffer(24_000, prebuffer_ms=500)
    jb.push("r1", np.ones(480, np.float32))
    jb.complete("r1")
    assert jb.read(960)[:480].all()
    jb.push("r2", np.ones(24_000, np.float32))
    jb.complete("r2")
    jb.read(480)
    jb.flush()
    assert not jb.read(480).any() and not jb.playing and jb.queued_ms == 0


def test_ring_never_blocks_and_drops_oldest():
    ring = ChunkRing(max_chunks=3)
    for i in range(5):
        ring.put(np.full(2, i, np.float32))
    assert ring.dropped == 2
    assert ring.drain().tolist() == [2, 2, 3, 3, 4, 4]
    assert len(ring.drain()) == 0


def test_replay_source_is_real_time():
    src = ReplaySource(str(SAMPLE_TE), lead_in_ms=0)
    src.start()
    time.sleep(0.5)
    src.stop()
    got = len(src.ring.drain()) / 16_000
    assert 0.35 < got < 0.65


def test_clock_sink_writes_reference_in_real_time():
    sink = ClockSink(24_000)
    sink.buffer.push("r", np.full(24_000, 0.5, np.float32))
    sink.buffer.complete("r")
    sink.start()
    time.sleep(0.3)
    sink.stop()
    ref = sink.reference.drain()
    assert 0.2 < len(ref) / 16_000 < 0.45
    assert level_db(ref) > -10
    assert 150 < sink.buffer.played_ms("r") < 450


def test_replay_source_plays_several_files_one_after_another():
    from engine.audio import load_wav
    from s2s_tui.audio import ReplaySource
    from tests.conftest import SAMPLE_TE

    one = len(load_wav(SAMPLE_TE)[0])
    src = ReplaySource([str(SAMPLE_TE), str(SAMPLE_TE)], lead_in_ms=300, gap_ms=1000)
    assert len(src.audio) == 2 * one + 16_000 + 4_800
    assert "2 files" in src.description

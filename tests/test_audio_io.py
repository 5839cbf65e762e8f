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


def test_a_new_reply_after_an_interrupt_plays_even_before_the_audio_thread_noticed():
    """flush() (barge-in) drops what was queued and late chunks of the cut reply; a new reply
    pushed right after it plays. The old buffer dropped the new reply too when it came before the
    next read, and its counters were written from both threads."""
    jb = JitterBuffer(24_000, prebuffer_ms=0)
    jb.push("r1", np.full(2400, 0.1, np.float32))
    assert jb.read(480).all()
    jb.flush()  # on the event loop; the audio thread has not read since
    jb.push("r1", np.full(2400, 0.1, np.float32))  # a late chunk of the cut reply
    jb.push("r2", np.full(960, 0.5, np.float32))
    assert not jb.read(480).any()  # the read that notices the flush plays silence
    out = jb.read(960)
    assert np.all(out == 0.5) and jb.current == "r2" and jb.played_ms("r1") == 20
    assert jb.queued_ms == 0
    jb.complete("r1")  # r1 is over: an id is muted only until then
    jb.push("r1", np.full(480, 0.2, np.float32))
    assert jb.queued_ms == 20


def test_jitter_buffer_keeps_a_bounded_record_of_responses():
    jb = JitterBuffer(24_000, prebuffer_ms=0)
    for i in range(500):
        jb.push(f"r{i}", np.ones(24, np.float32))
        jb.read(24)
        jb.complete(f"r{i}")
        if i % 2:
            jb.flush()
    assert max(len(jb._played), len(jb._complete), len(jb._muted), len(jb._ids)) <= JitterBuffer.MAX_RESPONSES
    assert max(jb.played_ms(f"r{i}") for i in range(490, 500)) == 1  # recent ones are still known


def test_ring_never_blocks_and_drops_oldest():
    ring = ChunkRing(max_chunks=3)
    for i in range(5):
        ring.put(np.full(2, i, np.float32))
    assert ring.dropped == 2
    assert ring.drain().tolist() == [2, 2, 3, 3, 4, 4]
    assert len(ring.drain()) == 0


def test_replay_source_is_real_time():
    """Never faster than real time (the file is 5 s; all of it at once would be a mic that is not
    one), and it keeps up: bounds around the time that really passed, not a fixed window."""
    src = ReplaySource(str(SAMPLE_TE), lead_in_ms=0)
    t0 = time.monotonic()
    src.start()
    time.sleep(0.5)
    src.stop()
    elapsed = time.monotonic() - t0
    got = len(src.ring.drain()) / 16_000
    assert 0.25 <= got <= elapsed + 0.05  # + one block of slack


def test_clock_sink_writes_reference_in_real_time():
    sink = ClockSink(24_000)
    sink.buffer.push("r", np.full(24_000, 0.5, np.float32))
    sink.buffer.complete("r")
    t0 = time.monotonic()
    sink.start()
    time.sleep(0.3)
    sink.stop()
    elapsed_ms = (time.monotonic() - t0) * 1000
    ref = sink.reference.drain()
    assert 0.15 <= len(ref) / 16_000 <= elapsed_ms / 1000 + 0.05  # real time: never ahead of the clock
    assert level_db(ref) > -10
    assert 150 <= sink.buffer.played_ms("r") <= elapsed_ms + 50


def test_replay_source_plays_several_files_one_after_another():
    from engine.audio import load_wav
    from s2s_tui.audio import ReplaySource
    from tests.conftest import SAMPLE_TE

    one = len(load_wav(SAMPLE_TE)[0])
    src = ReplaySource([str(SAMPLE_TE), str(SAMPLE_TE)], lead_in_ms=300, gap_ms=1000)
    assert len(src.audio) == 2 * one + 16_000 + 4_800
    assert "2 files" in src.description

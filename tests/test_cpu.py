"""Idle cores (``engine.cpu``): with no spare core at the pause, the audio end-of-turn model
waits until the turn's reply is made, so it takes no CPU from the reply (issue 23)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from engine import events as ev
from engine.cpu import IdleCores, parse_stat, threads_for
from tests.fakes import FakeASR, FakeLLM, FakeTTS, FakeTurnModel, fake_engine
from tests.test_session import CORE, collect_until, push_fast, tail_silence
from tests.test_turn import metrics_of, paced

LINUX = sys.platform.startswith("linux")

def stat(u0: int, i0: int, w0: int, u1: int, i1: int) -> str:
    """A /proc/stat with two CPUs: user, system 0, idle and iowait jiffies of each."""
    return (f"cpu  {u0 + u1} 0 0 {i0 + i1} {w0} 0 0 0 0 0\n"
            f"cpu0 {u0} 0 0 {i0} {w0} 0 0 0 0 0\n"
            f"cpu1 {u1} 0 0 {i1} 0 0 0 0 0 0\n"
            "intr 12345\nctxt 678\n")


def test_proc_stat_sums_idle_and_iowait_of_the_cpus_asked_for():
    text = stat(u0=60, i0=30, w0=10, u1=100, i1=900)
    assert parse_stat(text, {0}) == (40, 100)  # idle 30 + iowait 10 of 100
    assert parse_stat(text, {1}) == (900, 1000)
    assert parse_stat(text, None) == (940, 1100)  # the "cpu " total line is not counted twice
    assert parse_stat(text, {7}) is None  # none of ours listed


def test_idle_cores_over_the_last_second_from_successive_readings(tmp_path):
    path = tmp_path / "stat"
    path.write_text(stat(0, 0, 0, 0, 0))
    cores = IdleCores(str(path), window_s=1.0)
    cores.cpus = {0, 1}
    assert cores.idle(now=0.0) is None  # one reading: no span yet
    path.write_text(stat(u0=100, i0=0, w0=0, u1=0, i1=100))  # a second: cpu0 busy, cpu1 idle
    assert cores.idle(now=0.05) is None  # within STEP_S: not read again, still no span
    assert cores.idle(now=1.0) == pytest.approx(1.0)
    path.write_text(stat(u0=100, i0=50, w0=0, u1=0, i1=150))  # half a second more, both idle
    # the span reaches back a second, to the reading at 0.0: idle 200 of 300 jiffies on 2 cores
    assert cores.idle(now=1.5) == pytest.approx(2 * 200 / 300)
    path.write_text(stat(u0=200, i0=50, w0=0, u1=100, i1=150))  # 0.7 s more, both busy
    # now from the reading at 1.0 (the newest one at least a second old): idle 100 of 300
    # (from 0.0 it would be 200 of 500, from 1.5 nothing idle)
    assert cores.idle(now=2.2) == pytest.approx(2 * 100 / 300)


def test_no_proc_stat_means_unknown_not_busy(tmp_path):
    cores = IdleCores(str(tmp_path / "missing"))
    cores.sample(0.0)
    assert cores.idle(now=2.0) is None


@pytest.mark.skipif(not LINUX, reason="/proc/stat and SCHED_IDLE are Linux")
def test_cores_kept_busy_read_as_not_idle():
    cores = IdleCores()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores.cores)]
    try:
        time.sleep(0.3)  # running
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.3:
            cores.sample()
            time.sleep(0.05)
        idle = cores.idle()
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert idle is not None and 0.0 <= idle < 0.5 * cores.cores  # every core spun: most of them busy


class SlowASR(FakeASR):
    def transcribe(self, audio, language):  # noqa: ANN001, ANN201
        time.sleep(0.3)  # the turn's own work, still running when the audio model would start
        return super().transcribe(audio, language)


class WatchingTurnModel(FakeTurnModel):
    """Records how much the TTS had made when it was asked."""

    def __init__(self, tts: FakeTTS):
        super().__init__(0.9)
        self.tts, self.tts_done = tts, []

    def predict(self, audio):  # noqa: ANN001, ANN201
        self.tts_done.append(len(self.tts.texts))
        return super().predict(audio)


@pytest.mark.skipif(not LINUX, reason="/proc/stat is Linux")
@pytest.mark.parametrize("spare, after", [(0, False), (64, True)])
async def test_without_a_spare_core_the_audio_model_waits_for_the_reply(spare, after):
    """``turn.audio_spare_cores``: with fewer idle cores than that at the pause (64: no machine here
    has them), the audio model starts once the held reply's first audio is made, not beside the
    turn's ASR; 0 starts it at the pause. The metrics say which, with the idle cores read."""
    tts = FakeTTS()
    turn_model = WatchingTurnModel(tts)
    engine = fake_engine(asr=SlowASR(), llm=FakeLLM(delay=0.0, eou=0.5), tts=tts, turn_model=turn_model,
                         overrides=["turn.policy=combined", "turn.audio_when=always", "turn.deadline_ms=-1",
                                    f"turn.audio_spare_cores={spare}"])
    s = engine.new_session()
    await s.start()
    try:
        await paced(s, np.concatenate([tail_silence(0.3), CORE, tail_silence(1.0)]))  # real time: readings span it
        events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
        m = metrics_of(events)[0]
        assert turn_model.tts_done and (turn_model.tts_done[0] > 0) is after  # before or after the reply's audio
        assert m.turn_audio_after_reply is after and m.to_dict()["turn_audio_after_reply"] is after
        assert m.cpu_idle_cores is not None and 0.0 <= m.cpu_idle_cores <= engine.cpu.cores + 0.01
        assert m.turn_audio_probability == 0.9 and m.turn_policy == "combined"  # it decided either way
    finally:
        await s.close()
        engine.close()


@pytest.mark.parametrize("eou, waits", [(0.05, False), (0.5, True)])
async def test_an_incomplete_transcript_starts_the_audio_model_at_once_on_a_busy_cpu(eou, waits):
    """No spare core at the pause, and the transcript's reading comes first. Where it says
    "incomplete" (0.05), the turn cannot end before the audio model answers (the deadline heeds an
    "incomplete"), so deferring the model behind the reply's audio would only put the reply on its
    path: it starts at once, before the TTS has made anything. Where the reading leans "complete"
    but leaves the answer open (0.5), the reply's compute still goes first."""
    tts = FakeTTS()
    turn_model = WatchingTurnModel(tts)
    engine = fake_engine(llm=FakeLLM(delay=0.1, eou=eou), tts=tts, turn_model=turn_model, cpu=FixedIdle(0.5),
                         overrides=["turn.policy=combined", "turn.audio_when=undecided", "turn.deadline_ms=-1"])
    s = engine.new_session()
    await s.start()
    try:
        await push_fast(s, np.concatenate([tail_silence(0.2), CORE]))
        await paced(s, tail_silence(2.0))  # the silence runs in real time, as live: the evidence comes within it
        events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
        m = metrics_of(events)[0]
        assert m.cpu_idle_cores == 0.5 and m.turn_text_probability == eou
        assert turn_model.tts_done and (turn_model.tts_done[0] > 0) is waits
        assert m.turn_audio_after_reply is waits and m.turn_audio_probability == 0.9
    finally:
        await s.close()
        engine.close()


def test_threads_one_per_idle_core_within_the_configured_count():
    assert threads_for(None, 2) == 2  # unknown: as configured
    assert [threads_for(i, 2) for i in (0.0, 0.41, 0.98, 1.24, 1.5, 2.0)] == [1, 1, 1, 1, 2, 2]
    assert threads_for(7.6, 4) == 4 and threads_for(3.4, 8) == 3 and threads_for(5.0, 0) == 1


class FixedIdle(IdleCores):
    """The machine's idle cores as a fixed reading (the boundary: ``/proc/stat``)."""

    def __init__(self, idle: float | None):
        super().__init__()
        self.reading = idle

    def idle(self, now: float | None = None) -> float | None:
        return self.reading


@pytest.mark.parametrize("idle, threads", [(0.7, 1), (1.9, 2), (None, None)])
async def test_the_replys_llm_runs_one_thread_per_idle_core(idle, threads):
    """With a core of two busy at the pause the reply's LLM gets one thread (a second would wait
    on the busy core at every operation); with both idle, the two configured; not known, the
    configured count (None: the backend's own). The metrics say which."""
    llm = FakeLLM(delay=0.0, eou=0.9)
    engine = fake_engine(llm=llm, overrides=["llm.n_threads=2", "turn.policy=combined"], cpu=FixedIdle(idle))
    s = engine.new_session()
    await s.start()
    try:
        await push_fast(s, np.concatenate([tail_silence(0.2), CORE, tail_silence(1.0)]))
        events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
        m = metrics_of(events)[0]
        assert llm.threads == [threads]
        assert m.llm_threads == threads and m.to_dict()["llm_threads"] == threads
        assert m.cpu_idle_cores == idle
    finally:
        await s.close()
        engine.close()

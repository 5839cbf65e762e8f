"""The Session's parts on their own, with fakes: the reply maker (LLM → sentences → TTS), the
playback model (barge-in and what the history keeps), the input audio and the outbox.

The Session's own tests (test_session.py, test_turn.py) drive them together through the
real Silero VAD; these pin down each part's contract without a microphone stream."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import numpy as np
import pytest

from engine import events as ev
from engine.audio import ENGINE_RATE
from engine.clock import now_ns
from engine.config import SessionOptions
from engine.history import ChatHistory
from engine.metrics import TurnMetrics
from engine.session.input import InputAudio
from engine.session.outbox import Outbox
from engine.session.playback import Playback
from engine.session.reply import Reply, ReplyMaker
from engine.session.turns import Ended, Speech, Turn
from tests.fakes import FakeLLM, FakeTTS, fake_engine


class GatedLLM(FakeLLM):
    """Writes two whole sentences, then waits for ``gate`` before the last one."""

    def __init__(self):
        super().__init__(reply="")
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def stream(self, messages, max_tokens, cancel, threads=None):  # noqa: ANN001, ANN201
        yield from ("నమస్కారం!", " నేను బాగున్నాను.", " ఇంకా")
        self.waiting.set()
        self.gate.wait(10)
        if not cancel.is_set():
            yield " ఒక వాక్యం."


@pytest.fixture
def engine():
    llm = GatedLLM()
    e = fake_engine(llm=llm, tts=FakeTTS())
    yield e
    llm.gate.set()
    e.close()


def reply_of(turn: Turn | None = None) -> Reply:
    return Reply(id="resp_1", turn_id="turn_1", metrics=TurnMetrics(turn_id="turn_1"), turn=turn)


async def test_the_first_sentence_is_heard_while_the_llm_still_writes(engine):
    out: list = []
    maker = ReplyMaker(engine, SessionOptions(), lambda turn, e: out.append(e))
    r = reply_of()
    task = asyncio.create_task(maker.make(r, [{"role": "user", "content": "హలో"}]))
    while not any(isinstance(e, ev.ReplyAudio) for e in out):
        assert not task.done()
        await asyncio.sleep(0.01)
    assert not engine.llm.gate.is_set()  # audio is out, and the LLM has not finished its reply
    assert [e.text for e in out if isinstance(e, ev.ReplySegment)][0] == "నమస్కారం!"
    engine.llm.gate.set()
    made = await asyncio.wait_for(task, 10)
    assert made.error is None and made.sentences == 3
    assert r.text == "నమస్కారం! నేను బాగున్నాను. ఇంకా ఒక వాక్యం."
    assert "".join(e.delta for e in out if isinstance(e, ev.ReplyTextDelta)) == r.text
    assert r.samples_out == sum(len(e.samples) for e in out if isinstance(e, ev.ReplyAudio)) > 0
    assert r.first_out_ns is not None and r.metrics.first_sentence_ns <= r.metrics.tts_first_audio_ns


async def test_a_held_turns_reply_is_made_but_not_counted_as_heard(engine):
    turn = Turn("turn_1", 0, TurnMetrics(), held=True)
    seen: list = []
    maker = ReplyMaker(engine, SessionOptions(), lambda t, e: seen.append((t, e)))
    r = reply_of(turn)
    engine.llm.gate.set()
    await asyncio.wait_for(maker.make(r, [{"role": "user", "content": "హలో"}]), 10)
    assert all(t is turn for t, _ in seen) and any(isinstance(e, ev.ReplyAudio) for _, e in seen)
    assert r.first_out_ns is None and r.played_ms(24_000) == 0  # nothing played before it is released


async def test_a_failing_llm_is_reported_not_spoken(engine):
    engine.llm = FakeLLM(fail=True)
    out: list = []
    made = await ReplyMaker(engine, SessionOptions(), lambda t, e: out.append(e)).make(reply_of(), [])
    assert isinstance(made.error, RuntimeError) and made.sentences == 0
    assert not any(isinstance(e, ev.ReplyAudio) for e in out)


def played_reply(seconds_ago: float, sentences: list[tuple[str, float]], rate: int = 24_000) -> Reply:
    r = reply_of()
    r.text = " ".join(t for t, _ in sentences)
    r.segments = [(t, int(s * rate)) for t, s in sentences]
    r.samples_out = sum(n for _, n in r.segments)
    r.first_out_ns = now_ns() - int(seconds_ago * 1e9)
    return r


def test_barge_in_keeps_what_was_heard_in_the_history(engine):
    history, out = ChatHistory(), []
    pb = Playback(engine, SessionOptions(), history, out.append)
    r = pb.current = played_reply(1.5, [("one two three four", 1.0), ("five six seven eight", 1.0)])
    assert pb.speaking
    assert pb.interrupt(barge_in=True)
    cut = next(e for e in out if isinstance(e, ev.Interruption))
    done = next(e for e in out if isinstance(e, ev.ResponseDone))
    assert 1400 <= cut.played_ms < 2000 and cut.heard_text.startswith("one two three four five")
    assert done.status == "cancelled" and done.heard_text == cut.heard_text
    assert history.messages[-1] == {"role": "assistant", "content": cut.heard_text}
    assert r.cancel.is_set() and not pb.speaking and isinstance(out[-1], ev.TurnMetricsEvent)
    assert not pb.interrupt(barge_in=True)  # nothing left to cut


def test_a_reply_that_finished_but_still_plays_is_cut_in_the_history(engine):
    history, out = ChatHistory(), []
    pb = Playback(engine, SessionOptions(), history, out.append)
    r = pb.current = played_reply(0.5, [("one two", 1.0), ("three four", 1.0)])
    history.add("user", "hi")
    pb.finish(r, "completed")
    assert history.messages[-1]["content"] == "one two three four" and pb.speaking
    assert pb.interrupt(barge_in=False)
    assert history.messages[-1]["content"] == "one" and not any(isinstance(e, ev.Interruption) for e in out)
    pb.truncate("resp_1", 2000)  # the client says it played it all after all
    assert history.messages[-1]["content"] == "one two three four"


def test_input_audio_stays_within_its_bound_and_keeps_stream_positions():
    a = InputAudio(max_s=1.0)
    for i in range(30):
        a.append(np.full(1600, i, np.float32))  # 100 ms each, 3 s in all
    assert len(a.buf) == ENGINE_RATE and a.end == 30 * 1600 and a.start == 20 * 1600
    assert a.between(0).shape == (ENGINE_RATE,)  # what was dropped is gone, not an error
    assert a.between(25 * 1600, 26 * 1600).tolist() == [25.0] * 1600
    a.keep_last(800)
    assert a.start == a.end - 800
    a.clear()
    assert len(a.buf) == 0 and a.start == a.end == 30 * 1600


def test_frames_carry_the_arrival_of_the_piece_that_completed_them():
    a = InputAudio()
    frames, at = a.frames(np.ones(700, np.float32), [(300, 10), (400, 20)], 512)
    assert frames.shape == (1, 512) and at == [20] and len(a.pending) == 188
    frames, at = a.frames(np.ones(900, np.float32), [(324, 30), (576, 40)], 512)
    assert frames.shape == (2, 512) and at == [30, 40] and len(a.pending) == 64


def test_input_from_any_rate_is_resampled_as_one_stream_to_the_engines_rate():
    a = InputAudio()
    chunks = [a.convert((np.sin(np.arange(i, i + 4800) * 0.1) * 8000).astype(np.int16), 48_000)
              for i in range(0, 48_000, 4800)]  # 1 s in 100 ms chunks
    assert all(x.dtype == np.float32 for x in chunks) and max(np.abs(x).max() for x in chunks) < 0.3
    assert ENGINE_RATE - 480 <= sum(map(len, chunks)) <= ENGINE_RATE  # a stream: its filter delay (< 30 ms) held back
    assert a.convert(np.zeros(160, np.float32), ENGINE_RATE).shape == (160,)


async def test_a_stalled_consumer_cancels_the_reply_once_and_loses_only_bulk_events():
    cancelled = []
    box = Outbox("s", replace(SessionOptions(), max_events=10), lambda: cancelled.append(1))
    for i in range(30):
        box.put(ev.ReplyAudio("resp_1", 0, np.zeros(10, np.float32), 24_000))
        box.put(ev.SpeechStarted("turn_1", i))
    assert cancelled == [1]
    got = [box.get_nowait() for _ in range(box.qsize())]
    assert sum(isinstance(e, ev.SpeechStarted) for e in got) == 30  # control events all went
    assert sum(isinstance(e, ev.ReplyAudio) for e in got) < 10
    assert sum(isinstance(e, ev.ErrorEvent) and e.code == "consumer_too_slow" for e in got) == 1
    box.put(ev.ReplyAudio("resp_2", 0, np.zeros(10, np.float32), 24_000))  # caught up: bulk flows again
    assert isinstance(box.get_nowait(), ev.ReplyAudio)
    box.end()
    assert [e async for e in box.stream()] == []


async def test_pieces_with_nothing_to_say_are_not_spoken(engine):
    engine.llm = FakeLLM(reply="నమస్కారం! మీరు ఎలా ఉన్నారు? ...", delay=0.0)
    spoken: list = []
    r = reply_of()
    made = await ReplyMaker(engine, SessionOptions(), lambda t, e: spoken.append(e)).make(r, [])
    texts = [e.text for e in spoken if isinstance(e, ev.ReplySegment)]
    assert r.text.endswith("...") and texts and texts[-1].endswith("ఉన్నారు?")  # the last piece, "...", stays text
    assert made.sentences == len(texts) and engine.tts.texts == texts  # the voice never got it


async def reply_events(engine) -> list:
    """One session, one user text, one response: its events until ``ResponseDone``."""
    s = engine.new_session()
    try:
        await s.start()
        s.add_user_text("హలో")
        s.create_response()
        events = []
        async with asyncio.timeout(20):
            async for e in s.stream():
                events.append(e)
                if isinstance(e, ev.ResponseDone):
                    return events
    finally:
        await s.close()
    raise AssertionError("the stream ended before ResponseDone")


@pytest.mark.parametrize("reply", ["", "...", " ?! "])
async def test_a_reply_with_nothing_to_say_aloud_asks_the_user_to_say_it_again(reply):
    """``llm.empty_reply`` (the default): what the model wrote stays in the text, and the agent
    says the fallback, as a reply that completes: for any backend, after its own retries."""
    llm, tts = FakeLLM(reply=reply, delay=0.0), FakeTTS()
    engine = fake_engine(llm=llm, tts=tts)
    fallback = engine.profile.llm.empty_reply
    try:
        events = await reply_events(engine)
        assert fallback and not any(isinstance(e, ev.ErrorEvent) for e in events)
        assert events[-1].status == "completed" and tts.texts == [fallback]
        text = "".join(e.delta for e in events if isinstance(e, ev.ReplyTextDelta))
        assert text.endswith(fallback) and text.strip().startswith(reply.strip()) and "  " not in text.strip()
        assert any(isinstance(e, ev.ReplyAudio) for e in events)
    finally:
        engine.close()


@pytest.mark.parametrize("reply", ["...", " ?! "])
async def test_a_reply_with_nothing_to_say_aloud_is_an_error_not_silence(reply):
    """With ``llm.empty_reply`` set to "": the error, not silence."""
    llm, tts = FakeLLM(reply=reply, delay=0.0), FakeTTS()
    engine = fake_engine(llm=llm, tts=tts, overrides=['llm.empty_reply=""'])
    try:
        events = await reply_events(engine)
        err = next(e for e in events if isinstance(e, ev.ErrorEvent))
        assert err.code == "llm_failed" and "nothing to say aloud" in err.message and reply.strip() in err.message
        assert events[-1].status == "failed" and tts.texts == []
        assert not any(isinstance(e, ev.ReplyAudio) for e in events)
    finally:
        engine.close()


def test_speech_goes_on_with_the_last_turn_only_within_the_window_and_counts_heard_replies():
    sp = Speech()
    assert sp.begin(1000, 5) == "turn_1" and sp.next_id == "turn_2"
    sp.end()

    def ended(reply: Reply | None) -> Ended:
        t = Turn("turn_1", 9000, TurnMetrics(turn_id="turn_1"))
        t.response = reply
        return Ended(t, start_sample=1000, end_sample=9000, speech_start_ns=5, history_mark=0, parts=1)

    # the reply to the first part went out: going on with it counts a half reply
    r = reply_of()
    r.first_out_ns = now_ns()
    sp.ended = ended(r)
    assert sp.go_on(9000 + 1600, within=8000, output_rate=24_000, audio_start=0) is not None
    assert (sp.turn_id, sp.start, sp.start_ns, sp.parts, sp.half_replies, sp.ended) == ("turn_1", 1000, 5, 1, 1, None)
    assert sp.metrics(turn_end_ns=7).resumed == 1 and sp.metrics().half_replies == 1
    sp.end()

    # too late, or the first part's audio already left the buffer: a new turn
    sp.ended = ended(None)
    assert sp.go_on(9000 + 8001, within=8000, output_rate=24_000, audio_start=0) is None
    assert sp.go_on(9000 + 100, within=8000, output_rate=24_000, audio_start=1001) is None
    assert sp.start is None and sp.parts == 1
    # a reply not yet out when the user goes on is no half reply
    assert sp.go_on(9000 + 100, within=8000, output_rate=24_000, audio_start=0) is not None
    assert sp.half_replies == 1
    # a new turn starts its own count
    assert sp.begin(20_000, 9) == "turn_2" and (sp.parts, sp.half_replies, sp.ended) == (0, 0, None)

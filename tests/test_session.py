"""Session logic on the real Silero VAD with fake ASR/LLM/TTS (subclasses of the real interfaces):
turn flow, streaming order, metrics, barge-in, cancellation, failures, text turns."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import numpy as np
import pytest

from engine.audio import load_wav
from engine.clock import now_ns
from engine.errors import S2SError
from engine.events import (
    ErrorEvent,
    Interruption,
    ReplyAudio,
    ReplySegment,
    ReplyTextDelta,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TurnMetricsEvent,
)
from engine.stages.base import Transcript
from tests.conftest import SAMPLE_TE
from tests.fakes import REPLY, FakeASR, FakeLLM, FakeTTS, fake_engine

SPEECH, _ = load_wav(SAMPLE_TE)  # 0.5 s silence, ~2.9 s of speech, 1.5 s silence
_voiced = np.nonzero(np.abs(SPEECH) > 1e-3)[0]
CORE = SPEECH[_voiced[0]: _voiced[-1] + 1]  # the speech alone


async def push_fast(session, audio: np.ndarray, chunk: int = 320) -> None:
    for i in range(0, len(audio), chunk):
        session.push_audio(audio[i: i + chunk])
    await session.input_processed()


async def collect_until(session, predicate, limit: float = 20.0) -> list:
    events = []

    async def run():
        async for ev in session.stream():
            events.append(ev)
            if predicate(ev):
                return

    await asyncio.wait_for(run(), limit)
    return events


def tail_silence(seconds: float = 1.0) -> np.ndarray:
    return np.zeros(int(16_000 * seconds), np.float32)


def audio_ms_before(events: list, ev) -> int:
    """Milliseconds of reply audio the session had sent before ``ev`` (as ``_Response.audio_ms``
    counts them): a barge-in cannot have heard more than that."""
    pieces = [e for e in events[: events.index(ev)] if isinstance(e, ReplyAudio)]
    return int(1000 * sum(len(e.samples) for e in pieces) / pieces[0].sample_rate) if pieces else 0


async def wait_for_condition(cond, limit: float = 20.0) -> None:
    async def poll():
        while not cond():  # noqa: ASYNC110 - polls state that a worker thread sets
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), limit)


async def one_turn(engine):
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    events = await collect_until(s, lambda e: isinstance(e, TurnMetricsEvent))
    return s, events


async def test_one_turn_streams_events_in_order():
    engine = fake_engine()
    s, events = await one_turn(engine)
    kinds = [type(e).__name__ for e in events]
    assert kinds[:4] == ["SpeechStarted", "SpeechStopped", "TranscriptFinal", "ResponseStarted"]
    assert kinds[-2:] == ["ResponseDone", "TurnMetricsEvent"]
    done = next(e for e in events if isinstance(e, ResponseDone))
    assert done.status == "completed" and done.text == REPLY
    assert "".join(e.delta for e in events if isinstance(e, ReplyTextDelta)) == REPLY
    segments = [e.text for e in events if isinstance(e, ReplySegment)]
    assert segments == ["నమస్కారం!", "నేను బాగున్నాను.", "మీకు ఎలా సహాయం చేయగలను?", "ఈ రోజు వాతావరణం చాలా బాగుంది."]
    audio = [e for e in events if isinstance(e, ReplyAudio)]
    assert all(a.sample_rate == 24_000 and len(a.samples) <= 2400 for a in audio)
    assert sum(len(a.samples) for a in audio) == sum(int(24_000 * 40 * len(t) / 1000) for t in segments)
    assert s.history.messages == [{"role": "user", "content": "నమస్కారం, మీరు ఎలా ఉన్నారు?"},
                                  {"role": "assistant", "content": REPLY}]
    await s.close()
    engine.close()


async def test_first_sentence_is_spoken_while_the_llm_still_writes():
    engine = fake_engine(llm=FakeLLM(delay=0.05))
    s, events = await one_turn(engine)
    first_audio = next(i for i, e in enumerate(events) if isinstance(e, ReplyAudio))
    later_text = [i for i, e in enumerate(events) if isinstance(e, ReplyTextDelta) and i > first_audio]
    assert later_text, "all text was written before the first audio: the cascade is not streaming"
    await s.close()
    engine.close()


async def test_metrics_stamps_are_present_ordered_and_voice_to_voice_is_derived():
    engine = fake_engine()
    s, events = await one_turn(engine)
    m = next(e for e in events if isinstance(e, TurnMetricsEvent)).metrics
    stamps = [m.speech_start_ns, m.speech_end_ns, m.turn_end_ns, m.asr_final_ns, m.llm_first_token_ns,
              m.first_sentence_ns, m.tts_first_audio_ns, m.first_audio_out_ns]
    assert all(isinstance(t, int) for t in stamps)
    assert stamps == sorted(stamps)
    assert all(v is not None and v >= 0 for v in m.stages_ms().values())
    assert m.voice_to_voice_ms == (m.first_audio_out_ns - m.speech_end_ns) / 1e6
    d = m.to_dict()
    assert d["voice_to_voice_ms"] == pytest.approx(m.voice_to_voice_ms, abs=0.06)
    assert d["llm_tokens"] == len(REPLY.split(" ")) and d["llm_tokens_per_s"] > 0
    assert d["tts_rtf"] is not None and d["gpu_mem_used_mb"] is None  # no GPU here
    await s.close()
    engine.close()


async def test_barge_in_cancels_reply_and_history_keeps_only_what_was_heard():
    # baseline: the whole reply without interruption
    engine = fake_engine(llm=FakeLLM(delay=0.01), tts=FakeTTS(ms_per_char=60))
    _, full = await one_turn(engine)
    full_samples = sum(len(e.samples) for e in full if isinstance(e, ReplyAudio))
    engine.close()

    llm = FakeLLM(delay=0.15)  # still writing when the user cuts in
    engine = fake_engine(llm=llm, tts=FakeTTS(ms_per_char=60))
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    events = await collect_until(s, lambda e: isinstance(e, ReplyAudio))
    heard_from = now_ns()  # the reply's first audio went out before this
    await asyncio.sleep(0.4)  # the user hears ~400 ms, then talks over the agent
    talked_at = now_ns()  # the barge-in is measured after this
    await push_fast(s, SPEECH[: 16_000])
    events += await collect_until(s, lambda e: isinstance(e, Interruption))
    cut_seen = now_ns()  # ... and before this
    events += await collect_until(s, lambda e: isinstance(e, TurnMetricsEvent))
    assert any(isinstance(e, SpeechStarted) and e.turn_id == "turn_2" for e in events)
    cut = next(e for e in events if isinstance(e, Interruption))
    done = next(e for e in events if isinstance(e, ResponseDone))
    assert done.status == "cancelled"
    m = events[-1].metrics
    assert m.response_id == cut.response_id == done.response_id
    # played_ms is the playback position at the barge-in: the time since the first audio went out
    # (at least what passed from the first audio seen here to the user talking, at most until the cut
    # was seen), capped by the audio sent before the cut
    sent_ms = audio_ms_before(events, cut)
    assert 0 < int(min((talked_at - heard_from) / 1e6, sent_ms)) <= cut.played_ms
    assert cut.played_ms <= min(sent_ms, (cut_seen - m.first_audio_out_ns) / 1e6, done.audio_ms)
    got = sum(len(e.samples) for e in events if isinstance(e, ReplyAudio))
    assert got < full_samples
    assert llm.cancelled.wait(2.0), "the LLM generation was not stopped"
    assert llm.yielded < len(REPLY.split(" "))
    heard = [m for m in s.history.messages if m["role"] == "assistant"]
    assert heard == ([{"role": "assistant", "content": cut.heard_text}] if cut.heard_text else [])
    assert cut.heard_text != REPLY and REPLY.startswith(cut.heard_text.split(" ")[0])
    await s.close()
    engine.close()


async def test_barge_in_during_playback_of_a_finished_reply_truncates_history():
    engine = fake_engine(llm=FakeLLM(delay=0.0), tts=FakeTTS(ms_per_char=80))  # ~5 s of audio, made at once
    s, events = await one_turn(engine)
    done = next(e for e in events if isinstance(e, ResponseDone))
    assert done.status == "completed" and done.audio_ms > 3000
    first_out = next(e for e in events if isinstance(e, TurnMetricsEvent)).metrics.first_audio_out_ns
    await asyncio.sleep(1.2)  # the first sentence (~0.7 s) was heard whole
    talked_at = now_ns()
    await push_fast(s, SPEECH[: 16_000])
    ev = await collect_until(s, lambda e: isinstance(e, Interruption), limit=5)
    cut_seen = now_ns()
    cut = ev[-1]
    # the playback position at the barge-in: the time since the first audio went out, measured
    # between the user starting to talk and the cut being seen (past the 1.2 s waited above)
    assert int((talked_at - first_out) / 1e6) <= cut.played_ms <= (cut_seen - first_out) / 1e6
    assert cut.played_ms < done.audio_ms
    assert cut.heard_text.startswith("నమస్కారం!")
    assert s.history.messages[1]["content"] == cut.heard_text
    assert len(cut.heard_text) < len(REPLY)
    await s.close()
    engine.close()


async def test_cancel_response_and_the_next_turn_still_works():
    llm = FakeLLM(delay=0.1)
    engine = fake_engine(llm=llm)
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    await collect_until(s, lambda e: isinstance(e, ResponseStarted))
    assert s.cancel_response()
    ev = await collect_until(s, lambda e: isinstance(e, ResponseDone))
    assert ev[-1].status == "cancelled"
    assert not any(isinstance(e, Interruption) for e in ev)  # a cancel is not a barge-in
    llm.delay = 0.0
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    ev = await collect_until(s, lambda e: isinstance(e, ResponseDone))
    assert ev[-1].status == "completed"
    await s.close()
    engine.close()


async def test_llm_failure_gives_an_error_event_and_the_next_turn_works():
    llm = FakeLLM(fail=True)
    engine = fake_engine(llm=llm)
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    ev = await collect_until(s, lambda e: isinstance(e, ResponseDone))
    err = next(e for e in ev if isinstance(e, ErrorEvent))
    assert err.stage == "llm" and "fell over" in err.message
    assert ev[-1].status == "failed"
    llm.fail = False
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    ev = await collect_until(s, lambda e: isinstance(e, ResponseDone))
    assert ev[-1].status == "completed"
    await s.close()
    engine.close()


async def test_empty_transcript_gets_no_response():
    engine = fake_engine(asr=FakeASR(text=""))
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    ev = await collect_until(s, lambda e: isinstance(e, TranscriptFinal))
    async with asyncio.timeout(5):
        await s.wait_idle()
    assert ev[-1].text == "" and not s.history.messages
    assert s.next_event_nowait() is None
    await s.close()
    engine.close()


async def test_text_turn_manual_commit_and_input_rates():
    engine = fake_engine(llm=FakeLLM(delay=0.0))
    s = engine.new_session()
    await s.start()
    turn = s.add_user_text("హలో")
    s.create_response()
    ev = await collect_until(s, lambda e: isinstance(e, ResponseDone))
    assert isinstance(ev[0], TranscriptFinal) and ev[0].turn_id == turn and ev[-1].status == "completed"
    # manual turn detection: no VAD events, the client commits; input at 24 kHz int16
    s.update(turn_detection=False)
    pcm24 = (load_wav(SAMPLE_TE, target_rate=24_000)[0] * 32767).astype(np.int16)
    s.push_audio(pcm24, sample_rate=24_000)
    await s.input_processed()
    s.commit()
    ev = await collect_until(s, lambda e: isinstance(e, ResponseDone))
    assert not any(isinstance(e, SpeechStarted | SpeechStopped) for e in ev)
    assert any(isinstance(e, TranscriptFinal) for e in ev) and ev[-1].status == "completed"
    with pytest.raises(Exception, match="outside 8-48 kHz"):
        s.push_audio(np.zeros(10, np.float32), sample_rate=96_000)
    await s.close()
    engine.close()


async def test_sessions_are_isolated():
    engine = fake_engine(llm=FakeLLM(delay=0.0))
    a, b = engine.new_session(), engine.new_session()
    await a.start()
    await b.start()
    a.add_user_text("ఒకటి")
    assert b.history.messages == [] and a.id != b.id
    await a.close()
    await b.close()
    assert engine.sessions == {}
    engine.close()


async def test_partial_transcripts_while_speaking_then_final():
    engine = fake_engine(overrides=["asr.partials=on", "asr.partial_interval_ms=250"])
    assert engine.partials_enabled()
    s = engine.new_session()
    await s.start()
    stream = np.concatenate([SPEECH[:40_000], tail_silence()])
    for i in range(0, len(stream), 640):  # real-time pacing: 40 ms chunks
        s.push_audio(stream[i: i + 640])
        await asyncio.sleep(0.04)
    events = await collect_until(s, lambda e: isinstance(e, TranscriptFinal))
    kinds = [type(e).__name__ for e in events]
    assert "TranscriptPartial" in kinds
    assert kinds.index("TranscriptPartial") < kinds.index("SpeechStopped") < kinds.index("TranscriptFinal")
    await s.close()
    engine.close()


def test_partials_auto_follow_the_measured_decode_cost():
    engine = fake_engine(overrides=["asr.partials=auto", "asr.partial_max_cost_ms=300"])
    engine.asr.decode_cost_ms = 2900.0  # Whisper base on this 2-core CPU
    assert not engine.partials_enabled()
    engine.asr.decode_cost_ms = 60.0  # a GPU
    assert engine.partials_enabled()
    engine.close()


async def test_no_reply_while_the_user_is_speaking_again():
    # the user pauses long enough to end a turn, then speaks again before ASR is done:
    # the agent must not answer over them; both parts form the next turn's context.
    class SlowASR(FakeASR):
        """Busy until the test lets it finish (the user is talking again by then)."""

        def __init__(self):
            super().__init__()
            self.gate = threading.Event()

        def transcribe(self, audio, language):
            assert self.gate.wait(20), "the test never let the ASR finish"
            return super().transcribe(audio, language)

    asr, llm = SlowASR(), FakeLLM(delay=0.0)
    engine = fake_engine(asr=asr, llm=llm)
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence(0.8)]))  # turn 1 ends; ASR is busy
    await push_fast(s, SPEECH[:16_000])  # the user talks again at once
    events = await collect_until(s, lambda e: isinstance(e, SpeechStarted) and e.turn_id == "turn_2")
    asr.gate.set()  # turn 1's transcript arrives while turn 2 is in progress
    events += await collect_until(s, lambda e: isinstance(e, TranscriptFinal) and e.turn_id == "turn_1")
    await push_fast(s, tail_silence(1.0))
    events += await collect_until(s, lambda e: isinstance(e, ResponseDone))
    started = [e for e in events if isinstance(e, ResponseStarted)]
    assert [e.turn_id for e in started] == ["turn_2"]
    assert s.history.messages[0]["role"] == "user" and len(llm.prompts) == 1
    users = [m for m in llm.prompts[0] if m["role"] == "user"]
    assert len(users) == 1 and users[0]["content"].count("నమస్కారం") == 2  # both parts, merged
    await s.close()
    engine.close()


async def test_final_transcript_is_decoded_during_the_end_of_turn_silence():
    asr = FakeASR()
    engine = fake_engine(asr=asr)
    s, events = await one_turn(engine)
    m = next(e for e in events if isinstance(e, TurnMetricsEvent)).metrics
    assert asr.calls == 1 and m.extra["asr_speculative"] == 1.0  # decoded once, during the silence
    assert m.to_dict()["asr_speculative"] is True and m.to_dict()["asr_decode_ms"] >= 0
    await s.close()
    engine.close()


async def test_a_pause_that_is_not_the_end_drops_the_speculative_turn():
    class LengthASR(FakeASR):
        def transcribe(self, audio, language):
            self.calls += 1
            return Transcript(f"{len(audio)} నమూనాలు", language)

    llm = FakeLLM(delay=0.0)
    engine = fake_engine(asr=LengthASR(), llm=llm, overrides=["vad.end_of_turn_silence_ms=800"])
    s = engine.new_session()
    await s.start()
    # speech, a 400 ms pause (past the 200 ms speculation point), more speech, then the end
    first = np.concatenate([tail_silence(0.3), CORE, tail_silence(0.4)])
    for i in range(0, len(first), 320):  # paced, so the early turn really runs during the pause
        s.push_audio(first[i: i + 320])
        await asyncio.sleep(0.02 if i > len(first) - 8000 else 0)
    await push_fast(s, np.concatenate([CORE, tail_silence(1.2)]))
    events = await collect_until(s, lambda e: isinstance(e, TurnMetricsEvent))
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("SpeechStopped") == 1 and kinds.count("TranscriptFinal") == 1
    assert kinds.count("ResponseStarted") == 1 and kinds.count("ResponseDone") == 1
    final = next(e for e in events if isinstance(e, TranscriptFinal))
    assert int(final.text.split()[0]) > 2 * len(CORE)  # the whole turn, not the early guess
    assert len(llm.prompts[-1]) == 2 and llm.prompts[-1][-1]["content"] == final.text
    assert s.history.messages[0]["content"] == final.text and len(s.history.messages) == 2
    assert events[-1].metrics.extra.get("asr_speculative") == 1.0
    await s.close()
    engine.close()


async def test_speculative_turn_is_held_until_the_end_of_turn():
    # a fast "model": the whole reply is ready during the silence, but nothing comes out
    # before the end of turn is decided, and then voice-to-voice is only the release time.
    engine = fake_engine(llm=FakeLLM(delay=0.0), overrides=["vad.end_of_turn_silence_ms=900"])
    s = engine.new_session()
    await s.start()
    stream = np.concatenate([CORE, tail_silence(1.2)])
    events: list = []
    for i in range(0, len(stream), 640):  # real time: 40 ms chunks
        s.push_audio(stream[i: i + 640])
        await asyncio.sleep(0.04)
        while (ev := s.next_event_nowait()) is not None:
            events.append(ev)
    if not isinstance(events[-1], TurnMetricsEvent):
        events += await collect_until(s, lambda e: isinstance(e, TurnMetricsEvent))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["SpeechStarted", "SpeechStopped"]  # nothing of the reply came out before
    assert kinds[-1] == "TurnMetricsEvent"
    m = events[-1].metrics
    assert m.extra["asr_speculative"] == 1.0
    assert m.llm_first_token_ns < m.turn_end_ns  # the reply was written during the silence
    stages = m.stages_ms()
    assert stages["asr_ms"] == 0 and stages["llm_first_token_ms"] == 0
    assert abs(sum(stages.values()) - m.voice_to_voice_ms) < 0.01
    await s.close()
    engine.close()


async def test_state_follows_the_conversation():
    engine = fake_engine(llm=FakeLLM(delay=0.0), tts=FakeTTS(ms_per_char=80))
    s = engine.new_session()
    await s.start()
    assert s.state == "listening"
    s.add_user_text("హలో")
    s.create_response()
    await collect_until(s, lambda e: isinstance(e, ReplyAudio))
    assert s.state == "speaking"  # seconds of reply audio are playing
    assert s.cancel_response()
    assert s.state == "listening"  # cancelled at once: nothing is worked on, nothing plays
    await s.wait_idle()
    assert s.state == "listening"
    s.reset()
    assert s.history.messages == []
    await s.close()
    engine.close()


async def test_reset_drops_a_turn_still_being_transcribed():
    class SlowASR(FakeASR):
        """Transcribes only once the test lets it (after the reset)."""

        def __init__(self):
            super().__init__()
            self.started, self.gate = threading.Event(), threading.Event()

        def transcribe(self, audio, language):
            self.started.set()
            assert self.gate.wait(20), "the test never let the ASR finish"
            return super().transcribe(audio, language)

    asr, llm = SlowASR(), FakeLLM(delay=0.0)
    engine = fake_engine(asr=asr, llm=llm, overrides=["vad.speculative_asr_ms=0"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    await collect_until(s, lambda e: isinstance(e, SpeechStopped))
    await wait_for_condition(asr.started.is_set)
    s.reset()  # while ASR runs
    asr.gate.set()
    await wait_for_condition(lambda: asr.calls == 1)  # the decode ran to its end: its transcript came back
    await asyncio.wait_for(s.wait_idle(), 20)
    assert s.history.messages == [] and llm.prompts == []
    # the next turn is answered, and only it: the dropped transcript never reaches the LLM or the history
    # (this turn's reply coming also shows the session had every chance to use the dropped one)
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    events = await collect_until(s, lambda e: isinstance(e, ResponseDone))
    assert events[-1].status == "completed" and asr.calls == 2
    assert sum(isinstance(e, TranscriptFinal) for e in events) == 1  # the dropped turn's never came out
    assert len(llm.prompts) == 1
    users = [m["content"] for m in llm.prompts[0] if m["role"] == "user"]
    assert users == ["నమస్కారం, మీరు ఎలా ఉన్నారు?"]
    assert [m["role"] for m in s.history.messages] == ["user", "assistant"]
    await s.close()
    engine.close()


async def test_no_partial_starts_while_a_turn_decode_is_running():
    """Partials never compete with a final (or speculative) decode, of any session."""
    engine = fake_engine(overrides=["asr.partials=on", "asr.partial_interval_ms=100"])
    s = engine.new_session()
    await s.start()

    async def speak_for(seconds: float) -> None:
        chunk = SPEECH[: int(16_000 * seconds)]
        for i in range(0, len(chunk), 640):
            s.push_audio(chunk[i: i + 640])
            await asyncio.sleep(0.04)

    engine.asr_turns_in_flight = 1  # another session's turn is being transcribed
    await speak_for(1.0)
    assert engine.asr.calls == 0  # no partial was started
    engine.asr_turns_in_flight = 0
    await speak_for(1.0)
    assert engine.asr.calls > 0  # partials again once the decode is done
    await s.close()
    engine.close()


# --- bounds (every queue and buffer has one, with a defined behaviour at the limit) ---------


async def test_input_backlog_is_bounded_and_the_session_goes_on():
    engine = fake_engine(overrides=["session.max_input_backlog_s=2"])
    s = engine.new_session()  # not started: nothing consumes the input yet
    chunk = np.zeros(1600, np.float32)
    for _ in range(20):  # 2 s of audio
        s.push_audio(chunk)
    s.push_audio(chunk)  # at the limit: still taken
    with pytest.raises(S2SError, match="behind the microphone"):
        s.push_audio(chunk)
    await s.start()
    await s.input_processed()  # the backlog drains ...
    s.push_audio(chunk)  # ... and audio is taken again
    await s.input_processed()
    await s.close()
    engine.close()


async def test_a_stalled_consumer_gets_the_reply_cancelled_not_unbounded_memory():
    # a long reply (about 60 s of audio = 600 chunks) and a consumer that reads nothing
    engine = fake_engine(llm=FakeLLM(reply=" ".join(["ఒకటి."] * 200), delay=0.0), tts=FakeTTS(ms_per_char=50),
                         overrides=["session.max_events=200"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([SPEECH, tail_silence()]))
    await asyncio.wait_for(s.wait_idle(), 30)
    assert s._events.qsize() <= 200 + 20  # bounded: the bulk stopped at the limit
    events = []
    while (e := s.next_event_nowait()) is not None:
        events.append(e)
    assert any(isinstance(e, ErrorEvent) and e.code == "consumer_too_slow" for e in events)
    done = [e for e in events if isinstance(e, ResponseDone)]
    assert done and done[-1].status == "cancelled"
    await s.close()
    engine.close()


def test_chat_history_is_bounded_and_merged_messages_are_capped():
    from engine.history import MAX_MERGED_CHARS, MAX_MESSAGES, ChatHistory

    h = ChatHistory()
    mark = h.mark()
    for i in range(MAX_MESSAGES + 50):
        h.add("user", f"message {i} " + "పదం " * 40)
    assert len(h.messages) == MAX_MESSAGES and h.messages[-1]["content"].startswith(f"message {MAX_MESSAGES + 49}")
    built = h.build("system", lambda t: 1, 10**9, 10**6)
    assert len(built) == 2 and len(built[1]["content"]) <= MAX_MERGED_CHARS
    assert built[1]["content"].rstrip().endswith("పదం")  # the newest words are the ones kept
    later = h.mark()
    h.add("assistant", "reply")
    h.drop_since(later)
    assert h.messages[-1]["role"] == "user" and h.mark() == later
    h.drop_since(mark)  # a mark from before the trim: everything after it goes
    assert h.messages == []


async def test_gpu_memory_refresh_is_owned_and_single():
    engine = fake_engine()
    engine.refresh_gpu_memory()
    first = engine._gpu_refresh
    engine.refresh_gpu_memory()  # one at a time: no second measurement while the first runs
    assert first is not None and (engine._gpu_refresh is first or first.done())
    assert first.result(timeout=10) == {"used_mb": None, "total_mb": None}  # no GPU here
    engine.close()


async def test_a_dropped_speculative_turn_leaves_no_task_behind():
    llm = FakeLLM(delay=0.0)
    engine = fake_engine(llm=llm, overrides=["vad.end_of_turn_silence_ms=900"])
    s = engine.new_session()
    await s.start()
    first = np.concatenate([tail_silence(0.3), CORE, tail_silence(0.5)])  # a pause: a speculative turn runs
    await push_fast(s, first)
    await wait_for_condition(lambda: len(llm.prompts) == 1)  # it got as far as writing its (held) reply
    await push_fast(s, np.concatenate([CORE, tail_silence(1.5)]))  # the user went on: it is dropped
    events = await collect_until(s, lambda e: isinstance(e, TurnMetricsEvent))
    await asyncio.wait_for(s.wait_idle(), 20)
    # the speculative turn did run (and was dropped): one reply came out, but two were written
    assert [type(e).__name__ for e in events].count("ResponseStarted") == 1
    assert len(llm.prompts) == 2

    def left() -> list:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith(s.id)
                and not t.get_name().endswith("input") and not t.done()]

    with contextlib.suppress(TimeoutError):
        await wait_for_condition(lambda: not left(), limit=5)  # cancelled tasks finish at their next step
    assert left() == []
    await s.close()
    engine.close()

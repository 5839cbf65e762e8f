"""End of turn: the policies (pure), the Session deciding with evidence from a fake audio model
and a fake LLM at the stage interfaces (real Silero VAD), resumed turns, and the real Smart
Turn model and the real Gemma's sentence-end probability."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import numpy as np
import pytest

from engine import events as ev
from engine.config import TurnOptions, load_profile
from engine.errors import ConfigError, ModelError, S2SError
from engine.script import script_ok
from engine.stages.base import Transcript
from engine.turn import TurnEvidence, TurnPolicy, text_usable
from tests.fakes import FakeASR, FakeLLM, FakeTTS, FakeTurnModel, fake_engine
from tests.test_session import CORE, collect_until, push_fast, tail_silence

# --- the policy alone -----------------------------------------------------------------------


def policy(name: str, **kw) -> TurnPolicy:
    return TurnPolicy(TurnOptions(policy=name, **kw), fixed_silence_ms=600)


def test_silence_policy_is_the_fixed_wait_whatever_the_evidence():
    p = policy("silence")
    sure = TurnEvidence(audio=1.0, text=1.0)
    assert p.decide(590, sure) is None
    d = p.decide(600, TurnEvidence())
    assert d is not None and d.by == "silence" and p.max_wait_ms == 600


def test_combined_fuses_both_signals_and_waits_for_them():
    p = policy("combined", min_silence_ms=200, max_silence_ms=1500, audio_threshold=0.5, text_threshold=0.2,
               audio_weight=0.5)
    assert p.decide(150, TurnEvidence(audio=0.9, text=0.9)) is None  # too early
    d = p.decide(200, TurnEvidence(audio=0.9, text=0.6))
    assert d is not None and d.by == "combined" and d.probability > 0.5
    assert p.decide(400, TurnEvidence(audio=0.9, text=None)) is None  # the transcript is still coming
    assert p.decide(400, TurnEvidence(audio=None, text=0.5)) is None  # the audio model is still running
    # a transcript that clearly stops mid-sentence outweighs an audio model that hears an end
    assert p.decide(1000, TurnEvidence(audio=0.9, text=0.002)) is None
    # both unsure the same way: incomplete
    assert p.decide(1000, TurnEvidence(audio=0.2, text=0.1)) is None
    # a clear sentence end outweighs an audio model that is unsure (flat synthetic prosody)
    assert p.decide(300, TurnEvidence(audio=0.2, text=0.97)).by == "combined"
    d = p.decide(1500, TurnEvidence(audio=0.9, text=0.002))
    assert d is not None and d.by == "max-silence" and d.probability < 0.5
    # each signal counts from its own threshold: at both thresholds the score is 0 (complete)
    at = TurnEvidence(audio=0.5, text=0.2)
    assert p.score(at) == pytest.approx(0.0, abs=1e-9) and p.decide(200, at) is not None


def test_a_transcript_that_settles_it_alone_does_not_wait_for_the_audio_model():
    p = policy("combined", min_silence_ms=200, audio_threshold=0.5, text_threshold=0.2, audio_weight=0.5)
    # 0.97: complete whatever the audio model could say (its P is held within 0.02..0.98)
    assert p.text_decides(TurnEvidence(text=0.97))
    assert p.decide(150, TurnEvidence(text=0.97)) is None  # still not before min_silence_ms
    assert p.decide(250, TurnEvidence(text=0.97)).by == "combined"
    assert p.decide(250, TurnEvidence(audio=0.0, text=0.97)).by == "combined"  # the worst audio cannot turn it
    # 0.002: incomplete whatever the audio; 0.5: the audio model decides which way, so it is waited for
    assert p.text_decides(TurnEvidence(text=0.002)) and p.decide(250, TurnEvidence(text=0.002)) is None
    assert not p.text_decides(TurnEvidence(text=0.5)) and p.decide(250, TurnEvidence(text=0.5)) is None
    assert p.decide(250, TurnEvidence(audio=0.9, text=0.5)).by == "combined"
    assert p.decide(250, TurnEvidence(audio=0.05, text=0.5)) is None
    # the clamp: a certain audio model counts as 0.98
    assert p.score(TurnEvidence(audio=1.0, text=0.5)) == pytest.approx(p.score(TurnEvidence(audio=0.98, text=0.5)))
    # only combined reads it so; a single-signal policy waits for its one signal
    assert not policy("smart-turn").text_decides(TurnEvidence(text=0.97))


def test_audio_when_undecided_asks_for_the_audio_model_only_when_it_can_matter():
    always = policy("combined")
    assert always.audio_needed(TurnEvidence())  # at the pause, beside the ASR
    lazy = policy("combined", audio_when="undecided")
    assert not lazy.audio_needed(TurnEvidence())  # the transcript's reading is not in yet
    assert not lazy.audio_needed(TurnEvidence(text=0.97))
    assert lazy.audio_needed(TurnEvidence(text=0.5))
    assert lazy.audio_needed(TurnEvidence(text_usable=False))  # the transcript will not help
    assert policy("smart-turn", audio_when="undecided").audio_needed(TurnEvidence())
    assert not policy("transcript").audio_needed(TurnEvidence())
    auto = policy("combined", audio_when="auto")
    assert auto.audio_needed(TurnEvidence())  # no usable transcript expected: at the pause
    assert not auto.audio_needed(TurnEvidence(text_expected=True))  # one is: as "undecided"
    assert not auto.audio_needed(TurnEvidence(text_expected=True, text=0.97))
    assert auto.audio_needed(TurnEvidence(text_expected=True, text=0.5))
    assert auto.audio_needed(TurnEvidence(text_expected=True, text_usable=False))
    with pytest.raises(ConfigError):
        load_profile("offline", ["turn.audio_when=sometimes"])


@pytest.mark.parametrize("text_p, runs_audio", [(0.97, False), (0.5, True)])
async def test_undecided_runs_the_audio_model_only_when_the_transcript_leaves_it_open(text_p, runs_audio):
    llm, turn_model = FakeLLM(delay=0.0, eou=text_p), FakeTurnModel(0.9)
    engine = fake_engine(llm=llm, turn_model=turn_model,
                         overrides=["turn.policy=combined", "turn.audio_when=undecided", "turn.min_silence_ms=200",
                                    "turn.max_silence_ms=1200"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
    await paced(s, tail_silence(1.6))
    m = metrics_of(await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent)))[0]
    assert m.turn_policy == "combined" and m.turn_text_probability == text_p
    assert len(turn_model.calls) == int(runs_audio)
    assert (m.turn_audio_probability == 0.9) is runs_audio
    assert m.stages_ms()["eot_wait_ms"] < 600
    await s.close()
    engine.close()


def test_unusable_evidence_is_not_waited_for():
    p = policy("combined", min_silence_ms=200)
    # the transcript is in the wrong script: the audio model alone decides
    d = p.decide(250, TurnEvidence(audio=0.8, text_usable=False))
    assert d is not None and d.by == "combined" and d.probability > 0.5
    assert p.decide(250, TurnEvidence(audio=0.3, text_usable=False)) is None
    # a text-only policy with no usable transcript falls back to the fixed silence
    t = policy("transcript", min_silence_ms=200)
    assert t.decide(590, TurnEvidence(text_usable=False)) is None
    d = t.decide(600, TurnEvidence(text_usable=False))
    assert d is not None and d.by == "fallback-silence"
    # the audio model failed and the transcript is unusable: the fixed silence
    assert p.decide(590, TurnEvidence(audio_usable=False, text_usable=False)) is None
    assert p.decide(600, TurnEvidence(audio_usable=False, text_usable=False)).by == "fallback-silence"


def test_evidence_that_misses_the_deadline_is_not_waited_for():
    """``turn.deadline_ms`` (0: the fixed silence, 600 here): evidence still missing then is not
    waited for, unless what did arrive says "incomplete"."""
    p = policy("combined", min_silence_ms=200, max_silence_ms=1500)
    assert p.deadline_ms == 600
    assert p.decide(590, TurnEvidence()) is None  # before the deadline: wait for both
    d = p.decide(600, TurnEvidence())
    assert d is not None and d.by == "deadline" and d.missing == ("audio", "transcript") and d.probability is None
    d = p.decide(600, TurnEvidence(text=0.5))  # the transcript leaves it open; the audio model is late
    assert d.by == "deadline" and d.missing == ("audio",) and d.probability > 0.5
    d = p.decide(600, TurnEvidence(audio=0.9))  # the reading is late (the LLM is slow)
    assert d.by == "deadline" and d.missing == ("transcript",)
    # what did arrive says "incomplete": still heeded, the turn waits (for the rest, or its longest)
    assert p.decide(600, TurnEvidence(text=0.1)) is None
    assert p.decide(1000, TurnEvidence(audio=0.2)) is None
    d = p.decide(1500, TurnEvidence(text=0.1))
    assert d.by == "max-silence" and d.missing == ("audio",)
    # all evidence in: no deadline involved, nothing missing
    assert p.decide(250, TurnEvidence(audio=0.9, text=0.9)).missing == ()
    assert p.decide(250, TurnEvidence(text=0.97)).missing == ()  # settled by the transcript alone
    # single-signal policies; a deadline of its own; none; the fixed policy has none to miss
    assert policy("smart-turn").decide(600, TurnEvidence()).missing == ("audio",)
    assert policy("transcript").decide(600, TurnEvidence()).missing == ("transcript",)
    own = policy("combined", deadline_ms=400)
    assert own.decide(390, TurnEvidence()) is None and own.decide(400, TurnEvidence()).by == "deadline"
    off = policy("combined", deadline_ms=-1, max_silence_ms=1500)
    assert off.deadline_ms is None and off.decide(1400, TurnEvidence(text=0.5)) is None
    assert policy("silence").deadline_ms is None
    assert load_profile("offline", ["turn.deadline_ms=-1"]).turn.deadline_ms == -1
    with pytest.raises(ConfigError):
        load_profile("offline", ["turn.deadline_ms=-2"])


def test_thresholds_come_from_the_profile_and_bad_values_are_refused():
    p = policy("smart-turn", audio_threshold=0.95)
    assert p.decide(300, TurnEvidence(audio=0.9)) is None
    assert p.decide(300, TurnEvidence(audio=0.96)).by == "smart-turn"
    for bad in (["turn.policy=psychic"], ["turn.min_silence_ms=900", "turn.max_silence_ms=800"],
                ["turn.text_threshold=1.5"], ["turn.audio_threshold=0"], ["turn.resume_ms=-1"],
                ["turn.audio_weight=-1"]):
        with pytest.raises(ConfigError):
            load_profile("offline", bad)


def test_only_a_transcript_in_the_right_script_is_text_evidence():
    assert script_ok("నమస్కారం, మీరు ఎలా ఉన్నారు?", "te")
    assert text_usable("నమస్కారం, మీరు ఎలా ఉన్నారు?", "te")
    assert not text_usable("じゃまさら、みんえらんはる", "te")  # the bundled sample through Whisper base
    assert not text_usable("Namaskaram, meeru ela unnaru", "te")
    assert text_usable("What is the weather like?", "en") and not text_usable("नमस्ते नमस्ते", "en")
    assert not text_usable("2. 2", "en") and not text_usable("", None) and text_usable("bonjour", None)


# --- the Session with evidence at the stage interfaces --------------------------------------


async def paced(session, audio: np.ndarray, chunk: int = 320) -> None:
    """Push like a microphone (20 ms chunks in real time): the policy's evidence arrives while
    the silence is still running, as it does live."""
    for i in range(0, len(audio), chunk):
        session.push_audio(audio[i: i + chunk])
        await asyncio.sleep(chunk / 16_000)
    await session.input_processed()


def metrics_of(events) -> list:
    return [e.metrics for e in events if isinstance(e, ev.TurnMetricsEvent)]


class LengthASR(FakeASR):
    """The transcript says how much audio it was given, so joined turns are visible."""

    def transcribe(self, audio, language):  # noqa: ANN001, ANN201
        self.calls += 1
        return Transcript(f"{len(audio) // 1600} పదాలు విన్నాను", language)


@pytest.mark.parametrize("text_p, audio_p, by", [(0.9, 0.9, "combined"), (0.01, 0.9, "max-silence"),
                                                  (0.3, 0.02, "max-silence")])
async def test_the_policy_ends_the_turn_early_on_complete_and_waits_on_incomplete(text_p, audio_p, by):
    llm, turn_model = FakeLLM(delay=0.0, eou=text_p), FakeTurnModel(audio_p)
    engine = fake_engine(llm=llm, turn_model=turn_model,
                         overrides=["turn.policy=combined", "turn.min_silence_ms=200", "turn.max_silence_ms=1200"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
    await paced(s, tail_silence(1.6))
    events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
    m = metrics_of(events)[0]
    assert m.turn_policy == by
    assert m.turn_audio_probability == audio_p and m.turn_text_probability == text_p
    assert turn_model.calls and llm.turn_reads == 1
    if by == "combined":
        assert m.turn_probability > 0.5
        assert m.stages_ms()["eot_wait_ms"] < 600  # under the fixed silence it replaces
    else:
        assert m.stages_ms()["eot_wait_ms"] >= 1100  # waited (about) the maximum, in real time
    assert m.spec_start_ns is not None and m.to_dict()["turn_policy"] == by
    await s.close()
    engine.close()


async def test_a_pause_judged_incomplete_gets_no_reply_and_one_turn_holds_both_parts():
    asr = LengthASR()
    engine = fake_engine(asr=asr, llm=FakeLLM(delay=0.0, eou=0.01), turn_model=FakeTurnModel(0.9),
                         overrides=["turn.policy=combined", "turn.max_silence_ms=1500"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
    await paced(s, tail_silence(0.8))  # a pause mid-sentence, longer than the fixed 600 ms
    await push_fast(s, CORE)
    await paced(s, tail_silence(1.8))
    events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
    starts = [e for e in events if isinstance(e, ev.ResponseStarted)]
    stops = [e for e in events if isinstance(e, ev.SpeechStopped)]
    assert len(starts) == 1 and len(stops) == 1, "the pause must not end the turn"
    assert starts[0].turn_id == stops[0].turn_id == "turn_1"
    finals = [e.text for e in events if isinstance(e, ev.TranscriptFinal)]
    assert len(finals) == 1 and int(finals[0].split()[0]) >= 2 * len(CORE) // 1600  # both parts in one
    await s.close()
    engine.close()


async def test_speech_right_after_an_early_end_resumes_the_same_turn():
    asr = LengthASR()
    llm = FakeLLM(delay=0.03, eou=0.9)  # "complete": the turn ends at the first short silence
    engine = fake_engine(asr=asr, llm=llm, tts=FakeTTS(ms_per_char=60), turn_model=FakeTurnModel(0.9),
                         overrides=["turn.policy=combined", "turn.resume_ms=1500"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
    await paced(s, tail_silence(0.8))  # the turn ends early, the reply starts ...
    await push_fast(s, CORE)  # ... and the user goes on
    await paced(s, tail_silence(1.8))
    events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent) and e.metrics.resumed)
    starts = [e for e in events if isinstance(e, ev.SpeechStarted)]
    assert [(e.turn_id, e.resumed) for e in starts] == [("turn_1", False), ("turn_1", True)]
    done = [e for e in events if isinstance(e, ev.ResponseDone)]
    cut = {e.response_id for e in events if isinstance(e, ev.Interruption)}
    # the reply to the first part: cancelled while it was written, or cut while it played
    assert done[0].status == "cancelled" or done[0].response_id in cut
    assert done[-1].status == "completed" and done[-1].response_id not in cut
    finals = [e.text for e in events if isinstance(e, ev.TranscriptFinal)]
    assert len(finals) == 2 and int(finals[1].split()[0]) > int(finals[0].split()[0]) + len(CORE) // 1600 - 2
    last = metrics_of(events)[-1]
    assert last.turn_id == "turn_1" and last.resumed == 1 and last.to_dict()["resumed"] == 1
    assert last.half_replies == int(any(isinstance(e, ev.ReplyAudio) and e.response_id == done[0].response_id
                                        for e in events))
    # the history holds the whole utterance once and the reply to it, nothing of the first try
    assert s.history.messages == [{"role": "user", "content": finals[1]},
                                  {"role": "assistant", "content": done[-1].text}]
    await s.close()
    engine.close()


async def test_speech_after_the_resume_window_is_a_new_turn():
    engine = fake_engine(llm=FakeLLM(delay=0.0, eou=0.9), turn_model=FakeTurnModel(0.9),
                         tts=FakeTTS(ms_per_char=200),  # a long reply: still playing when the user speaks
                         overrides=["turn.policy=combined", "turn.resume_ms=300"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
    await paced(s, tail_silence(0.8))
    await push_fast(s, CORE)
    await paced(s, tail_silence(1.5))
    events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent) and e.metrics.turn_id == "turn_2")
    starts = [(e.turn_id, e.resumed) for e in events if isinstance(e, ev.SpeechStarted)]
    assert starts == [("turn_1", False), ("turn_2", False)]
    await s.close()
    engine.close()


async def test_a_failing_turn_model_leaves_the_transcript_to_decide():
    engine = fake_engine(llm=FakeLLM(delay=0.0, eou=0.9), turn_model=FakeTurnModel(fail=True),
                         overrides=["turn.policy=combined"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
    await paced(s, tail_silence(1.6))
    events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
    assert any(isinstance(e, ev.ErrorEvent) and e.stage == "turn" for e in events)
    m = metrics_of(events)[0]
    assert m.turn_policy == "combined" and m.turn_text_probability == 0.9 and m.turn_audio_probability is None
    await s.close()
    engine.close()


@pytest.mark.parametrize("audio_when", ["always", "undecided", "auto"])
async def test_wrong_script_transcript_is_no_text_evidence(audio_when):
    turn_model = FakeTurnModel(0.9)
    engine = fake_engine(asr=FakeASR("じゃまさら、みんえらんはる"), llm=FakeLLM(delay=0.0, eou=0.01),
                         turn_model=turn_model, overrides=["turn.policy=combined", f"turn.audio_when={audio_when}"])
    s = engine.new_session()
    await s.start()
    await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
    await paced(s, tail_silence(1.6))
    m = metrics_of(await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent)))[0]
    assert m.turn_policy == "combined" and m.turn_text_probability is None  # the audio model decided alone
    assert engine.llm.turn_reads == 0  # the language model was not asked
    assert len(turn_model.calls) == 1 and m.turn_audio_probability == 0.9  # "undecided": run once the text was no use
    await s.close()
    engine.close()


async def test_auto_runs_the_audio_model_at_the_pause_until_a_transcript_is_evidence():
    """``audio_when = "auto"``: the first turn (nothing known) and any turn after one whose
    transcript was in the wrong script run the audio model at the pause; after a usable
    transcript in that language (any session of the engine) a decisive reading spares it."""
    asr, turn_model = FakeASR("ఈ రోజు వాతావరణం ఎలా ఉంది?"), FakeTurnModel(0.9)
    engine = fake_engine(asr=asr, llm=FakeLLM(delay=0.0, eou=0.97), turn_model=turn_model,
                         overrides=["turn.policy=combined", "turn.audio_when=auto", "turn.min_silence_ms=200",
                                    "turn.max_silence_ms=1200"])

    async def one_turn():  # noqa: ANN202
        s = engine.new_session()
        await s.start()
        await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
        await paced(s, tail_silence(1.6))
        m = metrics_of(await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent)))[0]
        await s.close()
        return m

    first = await one_turn()
    assert len(turn_model.calls) == 1 and first.turn_audio_probability == 0.9  # nothing known yet
    assert engine.text_evidence == {"te": True}
    second = await one_turn()  # a new session: the engine remembers the language
    assert len(turn_model.calls) == 1 and second.turn_audio_probability is None
    assert second.turn_policy == "combined" and second.turn_text_probability == 0.97
    asr.text = "じゃまさら、みんえらんはる"  # the ASR stops writing Telugu script
    await one_turn()
    assert engine.text_evidence == {"te": False} and len(turn_model.calls) == 2
    await one_turn()  # expected unusable: the audio model starts at the pause again
    assert len(turn_model.calls) == 3
    engine.close()


class GatedTurnModel(FakeTurnModel):
    """An audio turn model that answers ``p`` only once ``gate`` is set (``started``: it was asked)."""

    def __init__(self, p: float, gate: threading.Event):
        super().__init__(p)
        self.gate, self.started = gate, threading.Event()

    def predict(self, audio: np.ndarray) -> float:
        self.started.set()
        assert self.gate.wait(30), "the test never let the audio model answer"
        return super().predict(audio)


class GatedReadLLM(FakeLLM):
    """A language model whose reading of the turn (and so its reply) waits for ``gate``."""

    def __init__(self, eou: float, gate: threading.Event):
        super().__init__(delay=0.0, eou=eou)
        self.gate, self.reading = gate, threading.Event()

    def stream_turn(self, messages, max_tokens, cancel, turn_end, threads=None):  # noqa: ANN001, ANN201
        self.reading.set()
        assert self.gate.wait(30), "the test never let the language model read the turn"
        yield from super().stream_turn(messages, max_tokens, cancel, turn_end, threads)


def deadline_engine(llm, turn_model, *overrides: str):  # noqa: ANN001, ANN201
    return fake_engine(llm=llm, turn_model=turn_model,
                       overrides=["turn.policy=combined", "turn.audio_when=always", "turn.min_silence_ms=200",
                                  "turn.max_silence_ms=1200", "vad.end_of_turn_silence_ms=600", *overrides])


@contextlib.asynccontextmanager
async def gated_session(engine, gate: threading.Event):  # noqa: ANN001, ANN201
    """A started session of ``engine``; on the way out the gate opens (a stuck fake returns), then
    the session and the engine close."""
    s = engine.new_session()
    await s.start()
    try:
        yield s
    finally:
        gate.set()
        await s.close()
        engine.close()


@pytest.mark.parametrize("late", [True, False])
async def test_an_audio_model_later_than_the_fixed_timer_does_not_hold_the_turn(late):
    """The transcript leaves the answer open (0.5), so the audio model is waited for: up to the
    fixed 600 ms. Late, the turn ends there ("deadline", audio missing) and the reply goes out
    while the model is still busy; in time, it ends the turn early as before."""
    gate = threading.Event()
    if not late:
        gate.set()
    turn_model = GatedTurnModel(0.9, gate)
    engine = deadline_engine(FakeLLM(delay=0.0, eou=0.5), turn_model)
    async with gated_session(engine, gate) as s:
        await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
        feed = asyncio.create_task(paced(s, tail_silence(1.6)))
        events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
        assert turn_model.started.is_set()  # it was asked at the pause: late, not skipped
        m = metrics_of(events)[0]
        done = next(e for e in events if isinstance(e, ev.ResponseDone))
        if late:
            assert not gate.is_set()  # the whole reply went out while the audio model had not answered
            assert done.status == "completed" and any(isinstance(e, ev.ReplyAudio) for e in events)
            assert m.turn_policy == "deadline" and m.turn_missing == "audio"
            assert m.turn_text_probability == 0.5 and m.turn_probability > 0.5
            assert m.stages_ms()["eot_wait_ms"] >= 600  # the fixed timer's point ("deadline": before the maximum)
            d = m.to_dict()
            assert d["turn_policy"] == "deadline" and d["turn_missing"] == "audio" and d["turn_audio_at_ms"] is None
        else:
            assert m.turn_policy == "combined" and m.turn_missing is None
            assert m.stages_ms()["eot_wait_ms"] < 600
            assert m.turn_audio_probability == 0.9 and m.to_dict()["turn_audio_at_ms"] is not None
        await feed


async def test_a_transcript_reading_later_than_the_fixed_timer_does_not_hold_the_turn():
    """The audio model says complete at once; the LLM's reading of the transcript is stuck. At
    the fixed 600 ms the turn ends without it; the reading (and the reply) come after."""
    gate = threading.Event()
    llm = GatedReadLLM(0.9, gate)
    engine = deadline_engine(llm, FakeTurnModel(0.9))
    async with gated_session(engine, gate) as s:
        await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
        feed = asyncio.create_task(paced(s, tail_silence(1.6)))
        before = await collect_until(s, lambda e: isinstance(e, ev.SpeechStopped))
        assert llm.reading.is_set() and not gate.is_set()  # the turn ended while the reading was stuck
        gate.set()
        after = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
        m = metrics_of(after)[0]
        assert m.turn_policy == "deadline" and m.turn_missing == "transcript"
        assert m.turn_audio_probability == 0.9 and m.turn_text_probability == 0.9  # it came, too late
        assert m.turn_text_ns > m.turn_end_ns
        assert m.stages_ms()["eot_wait_ms"] >= 600
        assert [type(e).__name__ for e in before].count("SpeechStopped") == 1
        assert next(e for e in after if isinstance(e, ev.ResponseDone)).status == "completed"
        await feed


@pytest.mark.parametrize("text_p, missing", [(0.1, "audio"), (0.01, None)])
async def test_a_reading_of_incomplete_still_waits_past_the_deadline(text_p, missing):
    """The deadline only drops evidence that has not arrived: the transcript read as unfinished
    keeps the turn open up to max_silence_ms even with the audio model stuck (0.1: the audio
    model could still turn it, so it is waited for; 0.01: it could not, so it is not missing)."""
    gate = threading.Event()
    engine = deadline_engine(FakeLLM(delay=0.0, eou=text_p), GatedTurnModel(0.9, gate))
    async with gated_session(engine, gate) as s:
        await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
        feed = asyncio.create_task(paced(s, tail_silence(1.6)))
        events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
        m = metrics_of(events)[0]
        assert not gate.is_set()
        assert m.turn_policy == "max-silence" and m.turn_missing == missing
        assert m.stages_ms()["eot_wait_ms"] >= 1100  # waited (about) the maximum, in real time
        await feed


async def test_a_pause_read_as_incomplete_with_a_stuck_audio_model_gets_no_half_reply():
    """A 800 ms pause mid-sentence, longer than the fixed 600 ms: the fixed timer would answer
    the first half; the transcript's "incomplete" holds the turn though the audio model never
    answers, so both parts are answered as one turn."""
    gate = threading.Event()
    asr = LengthASR()
    engine = fake_engine(asr=asr, llm=FakeLLM(delay=0.0, eou=0.1), turn_model=GatedTurnModel(0.9, gate),
                         overrides=["turn.policy=combined", "turn.audio_when=always", "turn.max_silence_ms=1500"])
    async with gated_session(engine, gate) as s:
        await push_fast(s, np.concatenate([tail_silence(0.3), CORE]))
        await paced(s, tail_silence(0.8))
        await push_fast(s, CORE)
        gate.set()  # the second pause's audio model answers at once
        await paced(s, tail_silence(1.8))
        events = await collect_until(s, lambda e: isinstance(e, ev.TurnMetricsEvent))
        assert len([e for e in events if isinstance(e, ev.ResponseStarted)]) == 1
        assert len([e for e in events if isinstance(e, ev.SpeechStopped)]) == 1
        assert not any(isinstance(e, ev.SpeechStarted) and e.resumed for e in events)
        m = metrics_of(events)[0]
        assert m.half_replies == 0 and m.resumed == 0


async def test_session_can_switch_policy_and_refuses_one_it_cannot_run():
    engine = fake_engine(overrides=["turn.policy=silence"])
    s = engine.new_session()
    s.update(turn_policy="transcript")
    assert s.turn_policy == "transcript"
    with pytest.raises(S2SError, match="audio turn model"):
        s.update(turn_policy="combined")  # no audio model loaded
    with pytest.raises(ConfigError):
        s.update(turn_policy="psychic")
    assert s.turn_policy == "transcript"
    await s.close()
    engine.close()


# --- the real models --------------------------------------------------------------------------


def test_smart_turn_from_the_package_hears_a_finished_sentence_and_a_cut_one():
    from engine.audio import load_wav
    from engine.models import resolve
    from engine.registry import backend_class
    from tests.conftest import SAMPLE_TE

    o = TurnOptions(policy="combined")
    model = backend_class("turn", "smart-turn")(o, resolve("turn", o.model))
    model.setup()
    audio, _ = load_wav(SAMPLE_TE)
    voiced = np.nonzero(np.abs(audio) > 1e-3)[0]
    whole = audio[: voiced[-1] + 1600]
    cut = audio[: (voiced[0] + voiced[-1]) // 2]  # cut mid-word, half way through
    p_whole, p_cut = model.predict(whole), model.predict(cut)
    assert 0.0 <= p_cut < p_whole <= 1.0 and p_whole > 0.5
    assert model.predict(whole) == p_whole  # deterministic
    assert model.predict(np.zeros(20 * 16_000, np.float32)) <= 1.0  # longer than 8 s: the end is kept
    model.close()


def test_a_broken_turn_model_file_is_one_clear_error(tmp_path):
    from engine.registry import backend_class

    bad = tmp_path / "turn.onnx"
    bad.write_bytes(b"not an onnx graph")
    cls = backend_class("turn", "smart-turn")
    with pytest.raises(ModelError, match="turn.*not a loadable ONNX model"):
        cls(TurnOptions(), str(bad)).setup()
    with pytest.raises(ModelError, match="file not found"):
        cls(TurnOptions(), str(tmp_path / "missing.onnx")).setup()


@pytest.mark.slow
def test_gemma_reads_whether_a_sentence_is_finished(offline_engine):
    """The offline LLM's sentence-end probability, without the final punctuation Whisper adds."""
    llm = offline_engine.llm

    def p(text: str) -> float:
        got: list[float | None] = []
        msgs = [{"role": "system", "content": offline_engine.profile.llm.system_prompt},
                {"role": "user", "content": text}]
        reply = "".join(llm.stream_turn(msgs, 4, threading.Event(), got.append))
        assert reply.strip(), "the reply after the reading must still come"
        assert len(got) == 1 and got[0] is not None
        return got[0]

    complete = [p("What is the weather like in Hyderabad today?"), p("Can you tell me the time."),
                p("ఈ రోజు వాతావరణం ఎలా ఉంది?")]
    cut = [p("What is the weather like in."), p("Can you tell me"), p("ఈ రోజు వాతావరణం")]
    assert min(complete) > 0.3 > 0.1 > max(cut)


@pytest.fixture(scope="module")
def greedy_gemma(offline_engine):
    """A second Gemma 3 270M of the offline profile, sampling greedily (reproducible replies)."""
    from dataclasses import replace

    from engine.models import resolve
    from engine.registry import backend_class

    o = replace(offline_engine.profile.llm, temperature=0.0)
    llm = backend_class("llm", o.backend)(o, resolve("llm", o.model))
    llm.setup()
    yield llm
    llm.close()


def test_with_its_end_banned_gemma_writes_on_where_it_would_have_stopped(greedy_gemma):
    """The empty-reply fallback's last try (``no_end``): the end and line-break tokens are banned
    through llama.cpp's logit bias, so the reply goes on past the point where it stopped."""
    msgs = [{"role": "user", "content": "హలో"}]
    free = "".join(greedy_gemma._generate(greedy_gemma.llama, msgs, 40, threading.Event()))
    banned = "".join(greedy_gemma._generate(greedy_gemma.llama, msgs, 40, threading.Event(), no_end=True))
    n_free, n_banned = greedy_gemma.count_tokens(free), greedy_gemma.count_tokens(banned)
    assert free.strip() and n_free < 35, free  # it ended by itself (else this proves nothing)
    assert "\n" not in banned and n_banned > n_free, (free, banned)


@pytest.mark.slow
def test_the_turn_is_read_in_the_decode_of_the_replys_prompt(greedy_gemma, offline_engine):
    """The sentence-end probability is one more logit row of the reply's prompt decode: the
    prompt is left cached with its logits live (llama-cpp-python then samples the reply's first
    token without a decode of its own), and the reply is the one the model gives unread."""
    llm, llama = greedy_gemma, greedy_gemma.llama
    system = {"role": "system", "content": offline_engine.profile.llm.system_prompt}
    for text in ("What is the weather like in Hyderabad today?", "ఈ రోజు వాతావరణం"):
        msgs = [system, {"role": "user", "content": text}]
        prompt = llama.tokenize(llm.prompt_text(llama, msgs).encode("utf-8"), add_bos=True, special=True)
        llama.reset()
        p = llm.sentence_end_probability(llama, msgs)
        assert p is not None and 0.0 <= p <= 1.0
        assert llama.n_tokens == len(prompt) and llama.input_ids[: llama.n_tokens].tolist() == prompt
        assert llama._requires_eval is False  # llama-cpp-python's condition for sampling at once

        got: list[float | None] = []
        read = "".join(llm.stream_turn(msgs, 12, threading.Event(), got.append))
        unread = "".join(llm.stream(msgs, 12, threading.Event()))
        assert got == [pytest.approx(p, abs=1e-3)]
        # Greedy both ways; the prompt's last token is decoded in batches of other shapes on the
        # two paths, so a near tie further on may go either way (seen once in twelve tokens)
        assert read.strip() and read.split()[0] == unread.split()[0]


@pytest.mark.slow
def test_logit_rows_of_one_decode_equal_those_of_separate_decodes(greedy_gemma):
    from engine.stages.llm_llamacpp import eval_logits

    llama = greedy_gemma.llama
    tokens = llama.tokenize("వినియోగదారు: ఈ రోజు వాతావరణం ఎలా ఉంది?\nసహాయకుడు:".encode(), add_bos=True, special=True)
    mid, last = len(tokens) // 2, len(tokens) - 1

    def probs(logits: np.ndarray) -> np.ndarray:
        z = np.exp(logits - logits.max())
        return z / z.sum()

    llama.reset()
    a, b = eval_logits(llama, tokens, [mid, last])
    llama.reset()
    (a2,) = eval_logits(llama, tokens[: mid + 1], [mid])
    (b2,) = eval_logits(llama, tokens, [last])  # reuses the cached half, decodes the rest
    assert np.abs(probs(a) - probs(a2)).max() < 1e-3 and a.argmax() == a2.argmax()
    assert np.abs(probs(b) - probs(b2)).max() < 1e-3 and b.argmax() == b2.argmax()
    assert np.abs(probs(a) - probs(b)).max() > 1e-2  # two different positions, really
    (a3,) = eval_logits(llama, tokens, [mid])  # a row inside the cache is decoded again
    assert np.abs(probs(a3) - probs(a)).max() < 1e-3 and llama.n_tokens == len(tokens)
    with pytest.raises(ValueError, match="outside"):
        eval_logits(llama, tokens, [len(tokens)])


@pytest.mark.slow
def test_the_policy_benchmark_forgets_the_last_transcript_but_keeps_the_system_prompt(greedy_gemma, offline_engine):
    """``bench latency --turn-policies`` runs each file under each policy in turn on one model
    with its prompt cache kept, as the engine runs. Before each run the cache goes back to what a
    new session finds (the system prompt), else the second policy's reply skips the prefill of a
    transcript the first policy's turn already read, which no new utterance does."""
    from engine.bench.llm import BenchLLM

    bench = BenchLLM(greedy_gemma, "scripted")
    bench.keep_cache = True
    llama = greedy_gemma.llama
    system = {"role": "system", "content": offline_engine.profile.llm.system_prompt}
    msgs = [system, {"role": "user", "content": "What is the weather like in Hyderabad today?"}]
    prompt = llama.tokenize(greedy_gemma.prompt_text(llama, msgs).encode("utf-8"), add_bos=True, special=True)
    llama.reset()
    llama.eval(prompt[:5])
    assert bench.forget_turns() == 5 and llama.n_tokens == 5  # nothing read through it yet: left as it is
    llama.reset()
    first = "".join(bench.stream(msgs, 4, threading.Event()))
    assert first and llama.n_tokens > len(prompt) and llama.input_ids[: len(prompt)].tolist() == prompt

    kept = bench.forget_turns()
    assert kept is not None and 0 < kept < len(prompt) and llama.n_tokens == kept
    assert llama.input_ids[:kept].tolist() == prompt[:kept]
    left = llama.detokenize(prompt[:kept]).decode("utf-8", errors="ignore")
    assert system["content"].strip()[:40] in left and "Hyderabad" not in left and "weather" not in left
    assert bench.forget_turns() == kept  # nothing more to forget

    assert "".join(bench.stream(msgs, 4, threading.Event())) == first  # read again, the same reply
    assert llama.input_ids[: len(prompt)].tolist() == prompt


@pytest.mark.slow
def test_logit_rows_across_batches_of_a_long_prompt(greedy_gemma):
    """A prompt longer than llama.cpp's batch is decoded batch by batch; the rows asked for
    come from whichever batch holds them."""
    import llama_cpp

    from engine.models import resolve
    from engine.stages.llm_llamacpp import eval_logits

    small = llama_cpp.Llama(resolve("llm", "pkg:gemma3-270m"), n_ctx=256, n_batch=8, n_ubatch=8,
                            n_threads=2, verbose=False)
    llama = greedy_gemma.llama
    tokens = llama.tokenize("వినియోగదారు: ఈ రోజు వాతావరణం ఎలా ఉంది? హైదరాబాద్‌లో వర్షం పడుతుందా?".encode(),
                            add_bos=True, special=True)
    assert len(tokens) > 2 * 8
    rows = [3, 8, len(tokens) - 1]  # in the first, the second and the last batch
    llama.reset()
    want = eval_logits(llama, tokens, rows)
    got = eval_logits(small, tokens, rows)
    assert small.n_tokens == len(tokens)

    def probs(logits: np.ndarray) -> np.ndarray:
        z = np.exp(logits - logits.max())
        return z / z.sum()

    # Other batch sizes take other kernels: the same distribution to a few per cent, the same top token
    for a, b in zip(want, got, strict=True):
        assert a.argmax() == b.argmax() and np.abs(probs(a) - probs(b)).max() < 0.05
    assert len({int(a.argmax()) for a in want}) == len(rows)  # three positions, three different next tokens
    small.close()


def test_a_reply_on_fewer_threads_runs_on_that_many_and_back(greedy_gemma):
    """``threads`` (one per idle core at the pause, ``engine.cpu.threads_for``): the instance
    prefills and generates on that many threads, never more than configured, and a reply
    without a count goes back to the configured number."""
    import llama_cpp

    llm, llama = greedy_gemma, greedy_gemma.llama
    most = llm.max_threads
    msgs = [{"role": "user", "content": "హలో"}]

    def on(threads):  # noqa: ANN001, ANN202
        text = "".join(llm.stream(msgs, 8, threading.Event(), threads))
        return text, llama_cpp.llama_n_threads(llama.ctx), llama_cpp.llama_n_threads_batch(llama.ctx)

    text, n, nb = on(1)
    assert text.strip() and (n, nb) == (1, 1) and llm.threads_in_use() == [1]
    assert on(most + 5)[1:] == (most, most)  # the configured count is the most
    assert on(1)[1:] == (1, 1) and on(None)[1:] == (most, most)

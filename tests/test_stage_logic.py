"""Stage logic without models: sentence cutting, history trimming, turn detection, profiles."""

from __future__ import annotations

import threading

import pytest

from engine.config import SentenceOptions, VADOptions, load_profile
from engine.errors import ConfigError, ModelError
from engine.history import ChatHistory
from engine.models import resolve, status
from engine.sentences import SentenceChunker
from engine.vad import TurnDetector
from tests.fakes import FakeLLM, fake_engine

MS = 1_000_000


def feed(chunker: SentenceChunker, text: str, every_ms: int = 10) -> list[str]:
    out, t = [], 0
    for ch in text:  # one character per "token"
        out += chunker.push(ch, t)
        t += every_ms * MS
    return out + chunker.flush()


def test_chunker_cuts_telugu_sentences_at_danda_and_question_marks():
    text = "నమస్కారం! నేను బాగున్నాను। మీకు ఎలా సహాయం చేయగలను? సరే."
    chunks = feed(SentenceChunker(SentenceOptions(min_chars=4)), text)
    assert chunks == ["నమస్కారం!", "నేను బాగున్నాను।", "మీకు ఎలా సహాయం చేయగలను?", "సరే."]


def test_chunker_first_chunk_is_ready_before_the_stream_ends():
    c = SentenceChunker(SentenceOptions(min_chars=4))
    ready = c.push("నమస్కారం! ", 0)
    assert ready == ["నమస్కారం!"]
    assert c.push("నేను ఇంకా రాస్తున్నాను", MS) == []


def test_chunker_merges_too_short_sentences():
    # "అవును." (6) and "అవును. సరే." (11) are under 12 characters: they wait for the next sentence
    chunks = feed(SentenceChunker(SentenceOptions(min_chars=12)), "అవును. సరే. ఇది ఒక పొడవైన వాక్యం.")
    assert chunks == ["అవును. సరే. ఇది ఒక పొడవైన వాక్యం."]
    chunks = feed(SentenceChunker(SentenceOptions(min_chars=8)), "అవును. సరే. ఇది ఒక పొడవైన వాక్యం.")
    assert chunks == ["అవును. సరే.", "ఇది ఒక పొడవైన వాక్యం."]


def test_chunker_cuts_at_a_space_after_max_wait():
    c = SentenceChunker(SentenceOptions(min_chars=4, max_wait_ms=300))
    c.push("ఈ వాక్యం ఇంకా ముగియలేదు కానీ", 0)
    assert c.poll(100 * MS) == []
    cut = c.poll(400 * MS)
    assert cut == ["ఈ వాక్యం ఇంకా ముగియలేదు"]
    assert c.flush() == ["కానీ"]


def test_chunker_first_chunk_has_its_own_shorter_wait():
    c = SentenceChunker(SentenceOptions(min_chars=4, max_wait_ms=600, first_max_wait_ms=150))
    ms = 1_000_000
    assert c.push("ఈ రోజు వాతావరణం", 0) == []
    assert c.poll(100 * ms) == []  # not yet
    assert c.poll(160 * ms) == ["ఈ రోజు"]  # the user is waiting: cut at the last space
    c.push(" చాలా బాగుంది ఇంకా", 170 * ms)
    assert c.poll(400 * ms) == []  # later chunks wait the full max_wait_ms
    assert c.poll(800 * ms) == ["వాతావరణం చాలా బాగుంది"]


def test_chunker_never_exceeds_max_chars():
    c = SentenceChunker(SentenceOptions(min_chars=4, max_chars=30))
    chunks = c.push("పదం " * 40, 0) + c.flush()
    assert all(len(x) <= 30 for x in chunks)
    assert " ".join(chunks).split() == ["పదం"] * 40


def test_chunker_handles_newlines_and_decimal_numbers():
    chunks = feed(SentenceChunker(SentenceOptions(min_chars=2)), "ధర 3.5 రూపాయలు\nసరే")
    assert chunks == ["ధర 3.5 రూపాయలు", "సరే"]


def count(text: str) -> int:
    return len(text.split())


def test_history_trims_oldest_exchanges_to_fit_and_keeps_newest_user():
    h = ChatHistory()
    for i in range(10):
        h.add("user", f"ప్రశ్న {i} " + "పదం " * 20)
        h.add("assistant", f"జవాబు {i} " + "పదం " * 20)
    h.add("user", "చివరి ప్రశ్న")
    msgs = h.build("సిస్టమ్", count, max_prompt_tokens=100, max_turns=8)
    assert msgs[0] == {"role": "system", "content": "సిస్టమ్"}
    assert msgs[1]["role"] == "user"
    assert msgs[-1]["content"] == "చివరి ప్రశ్న"
    assert count("సిస్టమ్") + sum(count(m["content"]) + 4 for m in msgs[1:]) <= 100
    assert "ప్రశ్న 0" not in " ".join(m["content"] for m in msgs)


def test_history_max_turns_and_role_merging():
    h = ChatHistory()
    h.add("user", "ఒకటి")
    h.add("user", "రెండు")  # user spoke again before a reply (barge-in before audio)
    h.add("assistant", "సరే")
    h.add("user", "మూడు")
    msgs = h.build("", count, 10_000, max_turns=8)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"] == "ఒకటి రెండు"
    assert [m["content"] for m in h.build("", count, 10_000, max_turns=1)] == ["మూడు"]


def test_history_replace_last_assistant_keeps_only_heard_text():
    h = ChatHistory()
    h.add("user", "హలో")
    h.add("assistant", "మొదటి వాక్యం. రెండవ వాక్యం.")
    h.replace_last_assistant("మొదటి వాక్యం.")
    assert h.messages[-1] == {"role": "assistant", "content": "మొదటి వాక్యం."}
    h.replace_last_assistant("")
    assert h.messages == [{"role": "user", "content": "హలో"}]


def run_detector(probs: list[float], pauses: bool = False, **kw) -> list[tuple[str, int]]:
    d = TurnDetector(VADOptions(**kw), frame_samples=512)
    out = []
    for i, p in enumerate(probs):
        ev = d.update(i, p, i)
        if ev and (pauses or ev.kind not in ("pause", "resume")):
            out.append((ev.kind, ev.sample // 512))
    return out


def test_turn_detector_pause_comes_before_end_and_again_after_resumed_speech():
    probs = [0.9] * 10 + [0.0] * 10 + [0.9] * 10 + [0.0] * 30
    events = run_detector(probs, pauses=True, min_speech_ms=200, end_of_turn_silence_ms=600,
                          speculative_asr_ms=200)
    assert events == [("start", 0), ("pause", 10), ("resume", 20), ("pause", 30), ("end", 30)]
    assert run_detector(probs, pauses=True, speculative_asr_ms=0) == [("start", 0), ("end", 30)]


def test_turn_detector_start_and_end_of_turn():
    # 32 ms frames: 10 voiced frames, then 25 silent (800 ms) -> end after 600 ms of silence
    probs = [0.0] * 5 + [0.9] * 10 + [0.0] * 25
    events = run_detector(probs, min_speech_ms=200, end_of_turn_silence_ms=600)
    assert events == [("start", 5), ("end", 15)]


def test_turn_detector_ignores_blips_and_short_pauses():
    blip = [0.9] * 3 + [0.0] * 30  # 96 ms of speech is below min_speech_ms
    assert run_detector(blip, min_speech_ms=200) == []
    pause = [0.9] * 10 + [0.0] * 10 + [0.9] * 10 + [0.0] * 30  # a 320 ms pause inside the turn
    assert run_detector(pause, min_speech_ms=200, end_of_turn_silence_ms=600) == [("start", 0), ("end", 30)]


def test_turn_detector_hysteresis_keeps_speech_between_thresholds():
    probs = [0.9] * 10 + [0.4] * 30 + [0.0] * 25
    assert run_detector(probs, threshold=0.5, neg_threshold=0.35, end_of_turn_silence_ms=600) == [
        ("start", 0), ("end", 40)]


def test_profiles_load_and_override():
    p = load_profile("offline", ["asr.model=/tmp/x", "llm.max_tokens=12", "session.barge_in=false",
                                 "vad.threshold=0.6"])
    assert (p.asr.model, p.llm.max_tokens, p.session.barge_in, p.vad.threshold) == ("/tmp/x", 12, False, 0.6)
    assert load_profile("gpu").llm.n_gpu_layers == -1


@pytest.mark.parametrize("bad", ["asr.nope=1", "nosection.x=1", "llm.max_tokens=many", "novalue", "asr=1"])
def test_bad_overrides_are_clear_errors(bad):
    with pytest.raises(ConfigError):
        load_profile("offline", [bad])


def test_unknown_profile_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no profile named"):
        load_profile("nonexistent")
    bad = tmp_path / "bad.toml"
    bad.write_text("[asr\nmodel=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(str(bad))


def test_edited_profile_copy_is_used(tmp_path):
    from engine.config import PROFILE_DIR

    mine = tmp_path / "mine.toml"
    mine.write_text((PROFILE_DIR / "offline.toml").read_text(encoding="utf-8").replace(
        "max_tokens = 64", "max_tokens = 7"), encoding="utf-8")
    assert load_profile(str(mine)).llm.max_tokens == 7


def test_missing_models_name_model_path_and_fix(tmp_path):
    with pytest.raises(ModelError) as err:
        resolve("asr", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value)
    rows = {r.stage: r for r in status(load_profile("gpu"))}
    assert not rows["llm"].present
    assert "s2s-engine models fetch --profile gpu" in rows["llm"].problem
    assert "google_gemma-3-1b-it" in rows["llm"].problem


def test_offline_models_are_present():
    rows = status(load_profile("offline"))
    assert all(r.present for r in rows), [r.problem for r in rows if not r.present]


def test_asr_decoding_loops_are_collapsed():
    from engine.stages.asr_whisper import collapse_repeats

    assert collapse_repeats("మీ పేరు ... ... ... ... ... ...") == "మీ పేరు ..."
    assert collapse_repeats("చాలా చాలా బాగుంది") == "చాలా చాలా బాగుంది"  # real speech repeats a word
    assert collapse_repeats("") == ""


def test_llm_samples_again_when_the_reply_is_empty():
    import queue
    import threading

    from engine.config import LLMOptions
    from engine.stages.llm_llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(LLMOptions(), "unused.gguf")
    llm._slots = queue.Queue()
    llm._slots.put(object())  # a stand-in model instance: _generate is replaced below
    calls: list[bool] = []

    def generate(instance, messages, max_tokens, cancel, hotter=False, no_end=False):
        calls.append(hotter)
        if len(calls) < 2:
            return iter(())  # the model stopped at once
        return iter(["సరే", "."])

    llm._generate = generate
    assert "".join(llm.stream([{"role": "user", "content": "హలో"}], 8, threading.Event())) == "సరే."
    assert calls == [False, True]  # retried once, hotter
    assert llm._slots.qsize() == 1  # the instance went back


def test_the_last_try_may_not_end_before_it_says_something():
    """Three empty replies in a row (Gemma 270M did so in 3 of 930 soak turns): the last try is
    sampled with the end and line-break tokens banned; only when that too says nothing is the
    reply an error."""
    import queue
    import threading

    from engine.config import LLMOptions
    from engine.stages.llm_llamacpp import EMPTY_RETRIES, LlamaCppLLM

    llm = LlamaCppLLM(LLMOptions(), "unused.gguf")
    llm._slots = queue.Queue()
    llm._slots.put(object())
    calls: list[tuple[bool, bool]] = []

    def generate(instance, messages, max_tokens, cancel, hotter=False, no_end=False):
        calls.append((hotter, no_end))
        return iter(["సరే", "."] if no_end else [])

    llm._generate = generate
    assert "".join(llm.stream([{"role": "user", "content": "హలో"}], 8, threading.Event())) == "సరే."
    assert calls == [(False, False)] + [(True, False)] * (EMPTY_RETRIES - 1) + [(True, True)]


@pytest.mark.parametrize("fallback", ["క్షమించండి, మళ్ళీ చెప్పగలరా?", ""])
def test_when_every_try_is_empty_the_backend_gives_up_and_leaves_it_to_the_session(fallback):
    """A model that writes nothing to say aloud in every try (the last one included: a stop
    string needs no end token) is tried EMPTY_RETRIES + 1 times, then the backend yields
    nothing, whatever ``llm.empty_reply`` says: the session says it (tests/test_session_parts.py)."""
    import queue
    import threading

    from engine.config import LLMOptions
    from engine.stages.llm_llamacpp import EMPTY_RETRIES, LlamaCppLLM

    llm = LlamaCppLLM(LLMOptions(empty_reply=fallback), "unused.gguf")
    llm._slots = queue.Queue()
    llm._slots.put(object())
    calls = []

    def generate(instance, messages, max_tokens, cancel, hotter=False, no_end=False):
        calls.append(no_end)
        return iter(["¿"])  # nothing a voice says

    llm._generate = generate
    assert "".join(llm.stream([{"role": "user", "content": "హలో"}], 8, threading.Event())) == ""
    assert len(calls) == EMPTY_RETRIES + 1 and calls[-1] is True
    assert llm._slots.qsize() == 1


def test_what_a_voice_can_say_aloud():
    from engine.text import speakable

    assert speakable("నమస్కారం") and speakable("5") and speakable("¿Qué?")
    assert not speakable("¿") and not speakable(" ... ?! ") and not speakable("")


def test_llm_samples_again_when_the_reply_has_nothing_to_say_aloud():
    """Gemma 270M can answer "¿" alone (seen in the suite): nothing of it goes out, and the reply
    is sampled again; leading punctuation before a word is kept, joined to the word."""
    import queue
    import threading

    from engine.config import LLMOptions
    from engine.stages.llm_llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(LLMOptions(), "unused.gguf")
    llm._slots = queue.Queue()
    llm._slots.put(object())
    replies = iter([["¿"], ["...", " ¿", "సరే", "!"]])
    calls: list[bool] = []

    def generate(instance, messages, max_tokens, cancel, hotter=False, no_end=False):
        calls.append(hotter)
        return iter(next(replies))

    llm._generate = generate
    pieces = list(llm.stream([{"role": "user", "content": "హలో"}], 8, threading.Event()))
    assert pieces == ["... ¿సరే", "!"] and calls == [False, True]


def test_espeak_speaks_text_that_looks_like_an_option():
    from engine.config import TTSOptions
    from engine.stages.tts_espeak import EspeakTTS

    tts = EspeakTTS(TTSOptions())
    tts.setup()
    same_words = tts.synthesize("హలో")
    for text in ("- హలో", "--help", "-v en హలో"):  # an LLM reply may start with a dash
        audio = tts.synthesize(text)
        assert len(audio) / tts.sample_rate > 0.3, text
    assert len(tts.synthesize("- హలో")) >= 0.8 * len(same_words)


class ClosingLLM(FakeLLM):
    """A fake LLM that records whether it was closed while its worker thread was still busy."""

    def __init__(self) -> None:
        super().__init__()
        self.busy, self.release = threading.Event(), threading.Event()
        self.closed_while_busy: bool | None = None

    def work(self, hold_s: float) -> None:  # stands in for a generation on the llm pool
        self.busy.set()
        self.release.wait(hold_s)
        self.busy.clear()

    def close(self) -> None:
        self.closed_while_busy = self.busy.is_set()


def test_engine_close_frees_a_stage_only_after_its_running_work_ends():
    """Freeing a llama.cpp context under a running worker thread crashes the process: close()
    waits for the work that is running, and leaves a stage that is still busy after the wait."""
    llm = ClosingLLM()
    engine = fake_engine(llm=llm)
    engine.llm_pool.submit(llm.work, 0.3)
    assert llm.busy.wait(5)
    engine.close()
    assert llm.closed_while_busy is False  # closed, after the work ended

    stuck = ClosingLLM()
    engine = fake_engine(llm=stuck)
    engine.llm_pool.submit(stuck.work, 30)
    assert stuck.busy.wait(5)
    engine.close(wait_s=0.2)
    assert stuck.closed_while_busy is None  # still running: not closed at all
    stuck.release.set()

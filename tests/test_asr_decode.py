"""Bounded ASR decodes (engine.stages.asr_whisper) and the script check (engine.script): the rules
alone, then on the real Whisper base model with espeak-ng speech."""

from __future__ import annotations

import pytest

from engine.audio import load_wav
from engine.config import load_profile
from engine.errors import ConfigError
from engine.metrics import TurnMetrics
from engine.models import resolve
from engine.script import script_ok, script_share, script_warning
from engine.stages.asr_whisper import MAX_TOKENS, find_loop, max_new_tokens, transcribe
from tests.conftest import SAMPLE_TE, speak


def test_script_of_a_transcript_for_its_language():
    assert script_ok("నమస్కారం, మీరు ఎలా ఉన్నారు?", "te") is True
    assert script_ok("ہمسکارا مینھے گاملہ رو", "te") is False  # Whisper base on Telugu speech: Urdu letters
    assert script_ok("Namaskaram, meeru ela unnaru", "te") is False
    assert script_ok("Hello, how are you?", "en") is True
    assert script_ok("నమస్కారం", "en") is False
    assert script_share("నమస్కారం OK", "te") == pytest.approx(8 / 10)  # letters, vowel signs, virama
    assert script_ok("OK", "te") is None  # too few letters to tell
    assert script_ok("1, 2, 3...", "te") is None
    assert script_ok("", "te") is None
    assert script_ok("你好吗你好吗", "zh") is None  # a language whose script is not checked
    assert script_ok("anything at all", None) is None
    assert "Telugu script" in script_warning("te") and "did not understand" in script_warning("te")


def test_loops_are_found_at_the_end_of_the_tokens():
    assert find_loop([5, 6, 7, 8]) is None
    assert find_loop([1, 2] + [9] * 6) == 3  # one token six times: keep one copy
    assert find_loop([1, 2] + [9] * 5) is None  # too short to call a loop
    assert find_loop([1] + [4, 5, 6] * 3) == 4
    assert find_loop([1] + [4, 5, 6] * 3 + [4, 5]) == 4  # the last copy cut short by the step
    assert find_loop([1] + [4, 5, 6] * 2) is None  # twice is speech ("thank you, thank you")
    assert find_loop([3, 4] * 3 + [7, 8, 9]) is None  # a repeat that ended is not a loop running


def test_the_token_cap_follows_the_audio_and_the_script():
    assert max_new_tokens(3.0, "en") == 8 + 36  # Latin script: 12 tokens a second
    assert max_new_tokens(3.0, "te") == 8 + 90  # Telugu: byte-level pieces, 30 a second
    assert max_new_tokens(3.0, None) == 8 + 90
    assert max_new_tokens(3.0, "en", tokens_per_s=20) == 8 + 60
    assert max_new_tokens(29.0, "te") == MAX_TOKENS == 224


def test_decode_options_are_checked():
    assert load_profile("offline").asr.decode_step_tokens == 16
    with pytest.raises(ConfigError, match="decode_step_tokens"):
        load_profile("offline", ["asr.decode_step_tokens=-1"])


def test_turn_metrics_carry_the_script_flag_and_the_stop():
    d = TurnMetrics(turn_id="turn_1", script_ok=False, asr_stop="script").to_dict()
    assert d["script_ok"] is False and d["asr_stop"] == "script"
    assert TurnMetrics().to_dict()["script_ok"] is None


@pytest.fixture(scope="module")
def whisper_base():
    from faster_whisper import WhisperModel

    p = load_profile("offline")
    return WhisperModel(str(resolve("asr", p.asr.model, p.name, p.asr.compute_type)), device="cpu",
                        compute_type="int8", local_files_only=True)


@pytest.mark.slow
def test_a_decode_in_the_wrong_script_stops_after_its_first_step(whisper_base):
    audio, _ = load_wav(SAMPLE_TE)
    bounded = transcribe(whisper_base, audio, "te", 10)
    whole = transcribe(whisper_base, audio, "te", 10, step=0)
    assert bounded.stop == "script" and bounded.script_ok is False and bounded.tokens <= 16
    assert whole.stop is None and whole.tokens > bounded.tokens and whole.script_ok is False
    assert whole.text.startswith(bounded.text[:4])  # the same decode, cut short


@pytest.mark.slow
def test_a_looping_decode_stops_early_and_keeps_one_copy(whisper_base, tmp_path):
    audio, _ = load_wav(speak("హ హ హ హ హ హ హ హ హ హ హ హ హ హ", tmp_path / "ha.wav", voice="te"))
    runaway = transcribe(whisper_base, audio, "te", 10, step=0, stop_on_wrong_script=False)
    bounded = transcribe(whisper_base, audio, "te", 10, stop_on_wrong_script=False)
    assert runaway.stop == "cap" and runaway.tokens == max_new_tokens(len(audio) / 16_000, "te")
    assert bounded.stop == "loop" and bounded.tokens <= 16 < runaway.tokens
    assert runaway.text.startswith(bounded.text)


@pytest.mark.slow
def test_a_greedy_decode_in_steps_writes_what_one_call_writes(whisper_base, tmp_path):
    text = "She has been learning to play the violin for three years, and she practises every evening."
    audio, _ = load_wav(speak(text, tmp_path / "en.wav", voice="en-gb", rate=16_000))
    stepped = transcribe(whisper_base, audio, "en", 10, step=4)  # 4, 8, 16: three continued steps
    single = transcribe(whisper_base, audio, "en", 10, step=0)
    assert stepped.text == single.text and stepped.tokens == single.tokens > 12
    assert stepped.stop is None and stepped.script_ok is True


@pytest.mark.slow
def test_at_30_s_the_decode_is_faster_whispers_own_until_it_loops(whisper_base, tmp_path):
    """Same features, prompt, suppressed tokens and no-speech rule as ``WhisperModel.transcribe``;
    where that runs a loop to its 224-token limit, the engine stops at the loop."""
    en, _ = load_wav(speak("Please turn off the lights before you leave the room.", tmp_path / "en.wav",
                           voice="en-us", rate=8_000))
    te, _ = load_wav(SAMPLE_TE)
    hum, _ = load_wav(speak("na na na na na na na na na na na na", tmp_path / "na.wav", voice="en-us"))

    def faster_whisper(audio, lang):
        segments, _ = whisper_base.transcribe(audio, language=lang, beam_size=1, without_timestamps=True,
                                              temperature=0.0, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()

    assert transcribe(whisper_base, en, "en", 30).text == faster_whisper(en, "en") != ""
    assert transcribe(whisper_base, te, "te", 30, step=0).text == faster_whisper(te, "te") != ""
    ours, theirs = transcribe(whisper_base, hum, "en", 30), faster_whisper(hum, "en")
    assert ours.stop == "loop" and ours.tokens <= 16 and theirs.startswith(ours.text)
    assert len(theirs) > 10 * len(ours.text)

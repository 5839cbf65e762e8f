"""The Realtime session rules (``remote.protocol.rules``), without a socket or an engine.

A fake engine session records what the rules ask of it; client events go in as parsed events,
engine events as :mod:`engine.events`; what comes out is the server events the server would send.
"""

from __future__ import annotations

import base64
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from engine import events as ev
from engine.config import TurnOptions, VADOptions
from engine.errors import AudioError, ResponseInProgress, S2SError
from remote import protocol as p


class FakeSession:
    """The methods of ``engine.session.Session`` the rules call, recorded in ``calls``."""

    def __init__(self, *, turn_detection: bool = True, turn_policy: str = "combined"):
        self.id = "sess_1"
        self.instructions = "be brief"
        self.language: str | None = "te"
        self.options = SimpleNamespace(turn_detection=turn_detection, auto_response=True)
        self.turn_policy = turn_policy
        self.calls: list[tuple] = []
        self.pushed: list[tuple[np.ndarray, int]] = []
        self.fail: dict[str, Exception] = {}  # method -> the error it raises
        self.cancel_result = True
        self._turns = 0

    def _call(self, name: str, *args) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def push_audio(self, samples, sample_rate):
        self._call("push_audio", sample_rate)
        self.pushed.append((samples, sample_rate))

    def commit(self):
        self._call("commit")
        return f"turn_{self._turns + 1}"

    def clear_input(self):
        self._call("clear_input")

    def add_user_text(self, text):
        self._call("add_user_text", text)
        self._turns += 1
        return f"turn_{self._turns}"

    def create_response(self):
        self._call("create_response")
        return "resp_1"

    def cancel_response(self):
        self._call("cancel_response")
        return self.cancel_result

    def truncate(self, response_id, played_ms):
        self._call("truncate", response_id, played_ms)

    def update(self, **settings):
        self._call("update", settings)

    def reset(self):
        self._call("reset")


DEFAULTS = p.EngineDefaults(VADOptions(end_of_turn_silence_ms=600, pre_roll_ms=300, threshold=0.5),
                            TurnOptions(policy="combined", min_silence_ms=200, max_silence_ms=1500),
                            system_prompt="the profile's prompt")


def rules_for(session: FakeSession | None = None, **kw) -> p.SessionRules:
    return p.SessionRules(session or FakeSession(), DEFAULTS, profile="offline", clock=lambda: 42.0, **kw)


def client(**d) -> p.ClientEvent:
    import json

    return p.parse_client_event(json.dumps(d))


def append(data: bytes, event_id: str | None = None) -> p.ClientEvent:
    return client(type="input_audio_buffer.append", audio=base64.b64encode(data).decode(), event_id=event_id)


def types(events) -> list[str]:
    return [e.type for e in events]


def the_error(events) -> p.Error:
    (err,) = events
    assert isinstance(err, p.Error), events
    return err


PCM_20MS = (np.sin(np.arange(480) / 5) * 8000).astype("<i2").tobytes()


# --------------------------------------------------------------------------- the session object


def test_the_first_event_reports_the_session():
    (created,) = rules_for().created()
    assert created.type == "session.created"
    td = created.session["audio"]["input"]["turn_detection"]
    assert td == {"type": "semantic_vad", "create_response": True, "interrupt_response": True,
                  "silence_duration_ms": 600, "prefix_padding_ms": 300, "threshold": 0.5, "eagerness": "auto"}
    assert created.session["instructions"] == "be brief" and created.session["s2s"] == {
        "profile": "offline", "formats": ["audio/pcm", "audio/pcmu", "audio/pcma", "s2s.opus", "s2s.encodec"]}
    manual = rules_for(FakeSession(turn_detection=False, turn_policy="silence")).config
    assert manual.turn_detection is None and manual.input_format == p.PCM


def test_session_update_maps_turn_detection_to_the_engine():
    s = FakeSession()
    rules = rules_for(s)
    out = rules.receive(client(type="session.update", session={"audio": {"input": {"turn_detection": {
        "type": "server_vad", "silence_duration_ms": 700, "create_response": False, "threshold": 0.9}}}}))
    assert types(out) == ["session.updated"]
    assert s.calls[-1] == ("update", {"turn_detection": True, "auto_response": False, "turn_policy": "silence",
                                      "eot_silence_ms": 700, "turn_max_silence_ms": 1500})
    td = out[0].session["audio"]["input"]["turn_detection"]
    assert td["silence_duration_ms"] == 700 and td["threshold"] == 0.5  # the profile's, not the client's
    assert "eagerness" not in td
    rules.receive(client(type="session.update", session={"audio": {"input": {"turn_detection": {
        "type": "semantic_vad", "eagerness": "high"}}}}))
    assert s.calls[-1][1]["turn_policy"] == "combined" and s.calls[-1][1]["turn_max_silence_ms"] == 750
    assert rules.config.turn_detection.eagerness == "high"


def test_session_update_instructions_null_restores_the_profile_prompt():
    s = FakeSession()
    rules = rules_for(s)
    rules.receive(client(type="session.update", session={"instructions": "short", "audio": {"input": {
        "transcription": {"language": "en"}}}}))
    assert s.calls[-1] == ("update", {"instructions": "short", "language": "en"})
    assert rules.config.instructions == "short" and rules.config.language == "en"
    rules.receive(client(type="session.update", session={"instructions": None}))
    assert s.calls[-1] == ("update", {"instructions": "the profile's prompt"})
    assert rules.config.instructions == "the profile's prompt"


def test_a_refused_session_update_changes_nothing():
    s = FakeSession()
    rules = rules_for(s)
    before = rules.config
    s.fail["update"] = S2SError("turn policy 'combined' needs the audio turn model")
    err = the_error(rules.receive(client(type="session.update", event_id="u1", session={
        "instructions": "x", "audio": {"input": {"turn_detection": None}}})))
    assert err.code == "s2s_error" and err.client_event_id == "u1"
    assert rules.config == before


# --------------------------------------------------------------------------- input audio


def test_pcm_audio_is_pushed_and_a_wav_file_is_refused():
    s = FakeSession()
    rules = rules_for(s)
    assert rules.receive(append(PCM_20MS)) == []
    samples, rate = s.pushed[-1]
    assert rate == 24_000 and samples.dtype == np.int16 and len(samples) == 480
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32
    err = the_error(rules.receive(append(wav, "w1")))
    assert (err.code, err.param, err.client_event_id) == ("invalid_audio", "audio", "w1")
    assert "WAV" in err.message
    assert the_error(rules.receive(append(b"\x00\x01\x02"))).code == "invalid_audio"  # an odd byte count
    assert rules.receive(append(b"")) == [] and len(s.pushed) == 1  # an empty append does nothing


def test_an_empty_commit_is_refused():
    s = FakeSession()
    rules = rules_for(s)
    err = the_error(rules.receive(client(type="input_audio_buffer.commit", event_id="c0")))
    assert (err.code, err.client_event_id) == ("input_audio_buffer_commit_empty", "c0")
    assert "commit" not in s.names()
    rules.receive(append(PCM_20MS))
    assert rules.receive(client(type="input_audio_buffer.commit")) == []
    assert s.names()[-1] == "commit"
    assert the_error(rules.receive(client(type="input_audio_buffer.commit"))).code == "input_audio_buffer_commit_empty"
    rules.receive(append(PCM_20MS))
    assert types(rules.receive(client(type="input_audio_buffer.clear"))) == ["input_audio_buffer.cleared"]
    assert the_error(rules.receive(client(type="input_audio_buffer.commit"))).code == "input_audio_buffer_commit_empty"
    rules.receive(append(PCM_20MS))
    rules.engine_event(ev.SpeechStopped("turn_1", 500))  # the VAD committed it
    assert the_error(rules.receive(client(type="input_audio_buffer.commit"))).code == "input_audio_buffer_commit_empty"


def manual_turn(rules: p.SessionRules, commit_id: str = "c1") -> None:
    rules.receive(client(type="session.update", session={"audio": {"input": {"turn_detection": None}}}))
    rules.receive(append(PCM_20MS))
    rules.receive(client(type="input_audio_buffer.commit", event_id=commit_id))


def test_response_create_waits_for_the_committed_transcript():
    s = FakeSession()
    rules = rules_for(s)
    manual_turn(rules)
    assert rules.receive(client(type="response.create", event_id="r1")) == []
    assert "create_response" not in s.names()
    out = rules.engine_event(ev.TranscriptFinal("turn_1", "నమస్తే", "te", True))
    assert "conversation.item.input_audio_transcription.completed" in types(out)
    assert s.names()[-1] == "create_response"


@pytest.mark.parametrize("end", [ev.TranscriptFinal("turn_1", "  ", "te", None),
                                 ev.ErrorEvent("stage_error", "asr: boom", "asr", "turn_1")])
def test_a_deferred_response_is_dropped_when_nothing_was_heard(end):
    s = FakeSession()
    rules = rules_for(s)
    manual_turn(rules)
    rules.receive(client(type="response.create"))
    rules.engine_event(end)
    assert "create_response" not in s.names()


def test_the_engine_s_empty_commit_goes_back_to_that_commit():
    s = FakeSession()
    rules = rules_for(s)
    manual_turn(rules, commit_id="c7")
    rules.receive(client(type="response.create"))
    err = the_error(rules.engine_event(ev.ErrorEvent("input_audio_buffer_commit_empty", "only silence", None, None)))
    assert err.client_event_id == "c7" and err.error_type == "invalid_request_error"
    assert "create_response" not in s.names()  # its response.create went with it


def test_a_deferred_response_that_cannot_start_is_an_error_for_its_event():
    s = FakeSession()
    rules = rules_for(s)
    manual_turn(rules)
    rules.receive(client(type="response.create", event_id="r2"))
    s.fail["create_response"] = ResponseInProgress("a response is already in progress (resp_0)")
    out = rules.engine_event(ev.TranscriptFinal("turn_1", "హలో", "te", True))
    assert (out[-1].code, out[-1].client_event_id) == ("conversation_already_has_active_response", "r2")


def test_response_create_errors():
    s = FakeSession()
    rules = rules_for(s)
    s.fail["create_response"] = ResponseInProgress("busy")
    err = the_error(rules.receive(client(type="response.create", event_id="a")))
    assert (err.code, err.client_event_id) == ("conversation_already_has_active_response", "a")
    s.fail["create_response"] = S2SError("nothing to respond to")
    assert the_error(rules.receive(client(type="response.create"))).code == "invalid_state"


# --------------------------------------------------------------------------- cancel, truncate, text


def test_cancel_needs_a_running_response():
    s = FakeSession()
    rules = rules_for(s)
    s.cancel_result = False
    err = the_error(rules.receive(client(type="response.cancel", event_id="x")))
    assert (err.code, err.param, err.client_event_id) == ("response_cancel_not_active", None, "x")
    rules.engine_event(ev.ResponseStarted("resp_1", None))
    err = the_error(rules.receive(client(type="response.cancel", response_id="resp_9")))
    assert (err.code, err.param) == ("response_cancel_not_active", "response_id")
    s.cancel_result = True
    assert rules.receive(client(type="response.cancel", response_id="resp_1")) == []
    done = rules.engine_event(ev.ResponseDone("resp_1", "cancelled", "a b", "a", 100, 50))[-1]
    assert done.response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}


def test_cancel_drops_a_deferred_response():
    s = FakeSession()
    rules = rules_for(s)
    manual_turn(rules)
    rules.receive(client(type="response.create"))
    assert rules.receive(client(type="response.cancel")) == []
    assert "cancel_response" not in s.names()
    rules.engine_event(ev.TranscriptFinal("turn_1", "హలో", "te", True))
    assert "create_response" not in s.names()


def test_truncate_names_a_known_assistant_item():
    s = FakeSession()
    rules = rules_for(s)
    err = the_error(rules.receive(client(type="conversation.item.truncate", item_id="item_resp_1", audio_end_ms=5)))
    assert (err.code, err.param) == ("item_not_found", "item_id")
    rules.engine_event(ev.ResponseStarted("resp_1", None))
    out = rules.receive(client(type="conversation.item.truncate", item_id="item_resp_1", audio_end_ms=700))
    assert types(out) == ["conversation.item.truncated"] and out[0].audio_end_ms == 700
    assert s.calls[-1] == ("truncate", "resp_1", 700)
    s.fail["truncate"] = S2SError("unknown or old response 'resp_1'")
    err = the_error(rules.receive(client(type="conversation.item.truncate", item_id="item_resp_1", audio_end_ms=1)))
    assert (err.code, err.param) == ("item_not_found", "item_id")


def test_a_text_message_becomes_items_and_engine_errors_become_its_error():
    s = FakeSession()
    rules = rules_for(s)
    out = rules.receive(p.ConversationItemCreate.of_text("నమస్కారం", "mine"))
    assert types(out) == ["conversation.item.added", "conversation.item.done"] and out[0].item["id"] == "mine"
    assert s.calls[-1] == ("add_user_text", "నమస్కారం")
    s.fail["add_user_text"] = S2SError("the message is empty")
    err = the_error(rules.receive(p.ConversationItemCreate.of_text("x", event_id="t2")))
    assert (err.code, err.client_event_id) == ("s2s_error", "t2")


def test_ping_is_answered_on_the_server_clock():
    (pong,) = rules_for().receive(client(type="s2s.ping", client_time_ms=7.5))
    assert (pong.client_time_ms, pong.server_time_ms) == (7.5, 42.0)


# --------------------------------------------------------------------------- reset


def test_reset_is_answered_after_the_cancelled_response_done():
    s = FakeSession()
    rules = rules_for(s)
    rules.engine_event(ev.ResponseStarted("resp_1", None))
    assert rules.receive(client(type="s2s.session.reset")) == []
    assert s.names()[-1] == "reset" and rules.reset_pending
    out = rules.engine_event(ev.ResponseDone("resp_1", "cancelled", "a", "", 10, 0))
    assert types(out)[-2:] == ["response.done", "s2s.session.reset_done"]
    assert out[-2].response["status_details"]["reason"] == "client_cancelled"
    assert out[-1].cancelled_response_id == "resp_1" and out[-1].session_id == "sess_1"
    assert not rules.reset_pending and rules.mapper.last_item_id is None
    (done,) = rules.receive(client(type="s2s.session.reset"))  # nothing runs: answered at once
    assert done.type == "s2s.session.reset_done" and done.cancelled_response_id is None


def test_a_reset_whose_response_done_never_comes_is_answered_by_the_timeout():
    rules = rules_for()
    rules.engine_event(ev.ResponseStarted("resp_1", None))
    rules.receive(client(type="s2s.session.reset"))
    assert types(rules.reset_expired()) == ["s2s.session.reset_done"]
    assert rules.reset_expired() == []


# --------------------------------------------------------------------------- formats


class FakeCodec:
    """Stands in for ``remote.codec.EncodecCodec``: a packet is b"EC" + int16 samples."""

    def stream_decoder(self):
        def push(packet: bytes) -> np.ndarray:
            if not packet.startswith(b"EC"):
                raise AudioError("bad magic")
            return np.frombuffer(packet[2:], "<i2").astype(np.float32) / 32768

        return SimpleNamespace(push=push, reset=lambda: None)

    def stream_encoder(self, bandwidth: float):
        held: list[np.ndarray] = []
        return SimpleNamespace(push=lambda x: held.append(x) or [], flush=lambda: b"EC" + b"".join(
            p.pcm16_encode(x) for x in held) if held else None, bandwidth=bandwidth)


def encodec_update(side: str = "input") -> p.ClientEvent:
    return client(type="session.update", session={"audio": {side: {"format": {"type": "s2s.encodec",
                                                                              "bandwidth": 3.0}}}})


def test_encodec_needs_its_model_and_decodes_off_the_loop():
    s = FakeSession()
    rules = rules_for(s, models=lambda name: FakeCodec() if name == p.ENCODEC_FORMAT else None)
    update = encodec_update()
    (fmt, param), = rules.models_needed(update)
    assert fmt.is_encodec and fmt.bandwidth == 3.0 and param == "session.audio.input.format"
    assert rules.models_needed(client(type="response.create")) == []
    assert types(rules.receive(update)) == ["session.updated"]
    assert rules.config.input_format == p.AudioFormat(p.ENCODEC_FORMAT, 24000, 3.0)
    packet = b"EC" + PCM_20MS
    job = rules.decode_job(p.InputAudioBufferAppend(audio=packet))
    assert job is not None and job.offload  # a neural codec: the I/O layer runs it on a thread
    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert rules.receive(p.InputAudioBufferAppend(audio=packet), job) == []
    samples, rate = s.pushed[-1]
    assert rate == 24_000 and samples.dtype == np.float32 and len(samples) == 480
    err = the_error(rules.receive(p.InputAudioBufferAppend(audio=b"XX\x00\x00", event_id="bad")))
    assert (err.code, err.param, err.client_event_id) == ("invalid_audio", "audio", "bad")
    assert err.message.startswith("not a valid s2s.encodec packet")


def test_the_output_format_applies_from_the_next_response():
    rules = rules_for(models=lambda name: FakeCodec())
    x = np.full(2400, 0.25, np.float32)
    rules.engine_event(ev.ResponseStarted("resp_1", None))
    rules.receive(encodec_update("output"))
    pcm = rules.engine_event(ev.ReplyAudio("resp_1", 0, x, 24_000))
    assert types(pcm) == ["response.output_audio.delta"] and len(pcm[0].audio) == 4800  # still PCM
    rules.engine_event(ev.ResponseDone("resp_1", "completed", "a", "a", 100, 100))
    rules.engine_event(ev.ResponseStarted("resp_2", None))
    e = ev.ReplyAudio("resp_2", 0, x, 24_000)
    job = rules.encode_job(e)
    assert job is not None and job.offload
    assert rules.engine_event(e, job) == []  # the fake encoder holds everything until the end
    out = rules.engine_event(ev.ResponseDone("resp_2", "completed", "a", "a", 100, 100))
    assert types(out)[:2] == ["response.output_audio.delta", "response.output_audio.done"]
    assert out[0].audio.startswith(b"EC") and out[-1].response["s2s"]["audio_bytes"] == len(out[0].audio)


def test_every_format_names_its_spec_and_unknown_ones_are_refused():
    assert set(p.FORMATS) == {p.PCM_FORMAT, p.PCMU_FORMAT, p.PCMA_FORMAT, p.OPUS_FORMAT, p.ENCODEC_FORMAT}
    assert [name for name, spec in p.FORMATS.items() if spec.needs_model] == [p.ENCODEC_FORMAT]
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_event('{"type": "session.update", "session": {"audio": {"input": {"format": '
                             '{"type": "audio/opus"}}}}}')
    assert info.value.code == "unsupported_audio_format"
    assert "'audio/pcm' (24 kHz), 'audio/pcmu' (G.711 μ-law, 8 kHz)" in info.value.message

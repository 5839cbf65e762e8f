"""The wire protocol, without a socket: parsing, validation, serialisation, engine-event mapping."""

from __future__ import annotations

import base64
import json
import random

import numpy as np
import pytest

from engine import events as ev
from engine.metrics import TurnMetrics
from remote import protocol as p

# --------------------------------------------------------------------------- helpers


def err_of(message: str | bytes, **kw) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_event(message, **kw)
    return info.value


def msg(**d) -> str:
    return json.dumps(d)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD_CLIENT_EVENTS = [
    {"type": "session.update", "event_id": "c1", "session": {"type": "realtime", "instructions": "చిన్నగా చెప్పు"}},
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "turn_detection": {"type": "server_vad", "create_response": False, "silence_duration_ms": 500,
                                       "threshold": 0.5, "prefix_padding_ms": 300},
                    "transcription": {"model": "whisper-1", "language": "te"},
                    "noise_reduction": None,
                },
                "output": {"format": {"type": "s2s.encodec", "rate": 24000, "bandwidth": 3.0}, "voice": "alloy",
                           "speed": 1.0},
            },
            "tools": [],
            "model": "gpt-realtime",
        },
    },
    {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}},
    {"type": "input_audio_buffer.append", "event_id": "a", "audio": b64(b"\x01\x00\x02\x00")},
    {"type": "input_audio_buffer.append", "audio": ""},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear", "event_id": "x"},
    {"type": "conversation.item.create",
     "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "నమస్కారం"}]}},
    {"type": "conversation.item.create", "previous_item_id": None,
     "item": {"id": "my_item", "type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "ఒకటి"}, {"type": "input_text", "text": "రెండు"}]}},
    {"type": "response.create"},
    {"type": "response.create", "response": {"instructions": "x", "output_modalities": ["audio"]}},
    {"type": "response.cancel"},
    {"type": "response.cancel", "response_id": "resp_1"},
    {"type": "conversation.item.truncate", "item_id": "item_resp_1", "content_index": 0, "audio_end_ms": 1500},
    {"type": "s2s.ping", "client_time_ms": 1234.5},
    {"type": "s2s.session.reset"},
    {"type": "s2s.session.reset", "event_id": "reset-1"},
]


# --------------------------------------------------------------------------- client events: good


@pytest.mark.parametrize("d", GOOD_CLIENT_EVENTS, ids=lambda d: d["type"])
def test_every_client_event_parses_and_round_trips(d):
    e = p.parse_client_event(json.dumps(d, ensure_ascii=False))
    assert type(e) is p.CLIENT_EVENTS[d["type"]]
    assert e.event_id == d.get("event_id")
    again = p.parse_client_event(p.serialize(e))
    assert again == e
    # bytes (a binary frame) parse the same
    assert p.parse_client_event(json.dumps(d).encode()) == e


def test_session_reset_is_an_extension_event():
    e = p.parse_client_event('{"type": "s2s.session.reset", "event_id": "r1", "ignored": 1}')
    assert isinstance(e, p.S2SSessionReset) and e.event_id == "r1"
    assert json.loads(p.serialize(p.S2SSessionReset())) == {"type": "s2s.session.reset"}
    done = p.parse_server_event('{"type": "s2s.session.reset_done", "event_id": "event_9", "session_id": "sess_2"}')
    assert isinstance(done, p.S2SSessionResetDone) and done.session_id == "sess_2"
    assert done.cancelled_response_id is None
    assert json.loads(p.serialize(p.S2SSessionResetDone(session_id="s", cancelled_response_id="resp_1"))) == {
        "type": "s2s.session.reset_done", "event_id": "", "session_id": "s", "cancelled_response_id": "resp_1"}


def test_turn_metrics_network_stamps_are_optional():
    m = p.S2STurnMetrics(response_id="resp_1", metrics={"turn_id": "turn_1"})
    assert p.serialize(m).count('"network":null') == 1
    old = p.parse_server_event('{"type": "s2s.turn.metrics", "event_id": "e", "response_id": "resp_1", "metrics": {}}')
    assert isinstance(old, p.S2STurnMetrics) and old.network is None  # a server without the stamps


def test_append_decodes_audio():
    e = p.parse_client_event(msg(type="input_audio_buffer.append", audio=b64(b"\x01\x00\xff\x7f")))
    assert isinstance(e, p.InputAudioBufferAppend)
    assert e.audio == b"\x01\x00\xff\x7f"
    assert p.pcm16_decode(e.audio).tolist() == [1, 32767]


def test_session_update_fields():
    e = p.parse_client_event(json.dumps(GOOD_CLIENT_EVENTS[1]))
    s = e.session.changes()
    assert s["input_format"] == p.PCM
    assert s["output_format"] == p.AudioFormat(p.ENCODEC_FORMAT, 24000, 3.0)
    assert s["turn_detection"].create_response is False
    assert s["turn_detection"].silence_duration_ms == 500
    assert s["language"] == "te"
    assert "instructions" not in s  # not mentioned: unchanged
    off = p.parse_client_event(json.dumps(GOOD_CLIENT_EVENTS[2])).session.changes()
    assert off == {"turn_detection": None}  # null: manual turns; the formats are not mentioned


def test_item_create_joins_text_and_keeps_id():
    e = p.parse_client_event(json.dumps(GOOD_CLIENT_EVENTS[8], ensure_ascii=False))
    assert e.text == "ఒకటి\nరెండు"
    assert e.item_id == "my_item"


def test_encodec_default_bandwidth():
    e = p.parse_client_event(msg(type="session.update",
                                 session={"audio": {"input": {"format": {"type": "s2s.encodec"}}}}))
    assert e.session.changes()["input_format"].bandwidth == p.DEFAULT_ENCODEC_BANDWIDTH


# --------------------------------------------------------------------------- client events: bad


BAD_MESSAGES = [
    # (message, code, param)
    ("not json", p.ErrorCode.INVALID_JSON, None),
    ("{", p.ErrorCode.INVALID_JSON, None),
    ("", p.ErrorCode.INVALID_JSON, None),
    (b"\xff\xfe{}", p.ErrorCode.INVALID_JSON, None),
    ("[1, 2]", p.ErrorCode.INVALID_EVENT, None),
    ('"session.update"', p.ErrorCode.INVALID_EVENT, None),
    ("42", p.ErrorCode.INVALID_EVENT, None),
    ("null", p.ErrorCode.INVALID_EVENT, None),
    ("{}", p.ErrorCode.INVALID_EVENT, "type"),
    (msg(type=7), p.ErrorCode.INVALID_EVENT, "type"),
    (msg(type=""), p.ErrorCode.INVALID_EVENT, "type"),
    (msg(type="no.such.event"), p.ErrorCode.UNKNOWN_EVENT, "type"),
    (msg(type="s2s.nothing"), p.ErrorCode.UNKNOWN_EVENT, "type"),
    (msg(type="conversation.item.delete", item_id="x"), p.ErrorCode.UNSUPPORTED_EVENT, "type"),
    (msg(type="conversation.item.retrieve", item_id="x"), p.ErrorCode.UNSUPPORTED_EVENT, "type"),
    (msg(type="output_audio_buffer.clear"), p.ErrorCode.UNSUPPORTED_EVENT, "type"),
    (msg(type="response.create", event_id=5), p.ErrorCode.INVALID_VALUE, "event_id"),
    (msg(type="input_audio_buffer.append"), p.ErrorCode.MISSING_FIELD, "audio"),
    (msg(type="input_audio_buffer.append", audio=123), p.ErrorCode.INVALID_VALUE, "audio"),
    (msg(type="input_audio_buffer.append", audio="not base64!"), p.ErrorCode.INVALID_BASE64, "audio"),
    (msg(type="input_audio_buffer.append", audio="AAA"), p.ErrorCode.INVALID_BASE64, "audio"),
    (msg(type="input_audio_buffer.append", audio="ఆడియో"), p.ErrorCode.INVALID_BASE64, "audio"),
    (msg(type="session.update"), p.ErrorCode.MISSING_FIELD, "session"),
    (msg(type="session.update", session="x"), p.ErrorCode.INVALID_VALUE, "session"),
    (msg(type="session.update", session={"type": "transcription"}), p.ErrorCode.INVALID_VALUE, "session.type"),
    (msg(type="session.update", session={"instructions": 5}), p.ErrorCode.INVALID_VALUE, "session.instructions"),
    (msg(type="session.update", session={"instructions": "x" * (p.MAX_TEXT_CHARS + 1)}), p.ErrorCode.INVALID_VALUE,
     "session.instructions"),
    (msg(type="session.update", session={"output_modalities": ["text"]}), p.ErrorCode.INVALID_VALUE,
     "session.output_modalities"),
    (msg(type="session.update", session={"audio": []}), p.ErrorCode.INVALID_VALUE, "session.audio"),
    (msg(type="session.update", session={"audio": {"input": {"format": "pcm"}}}), p.ErrorCode.INVALID_VALUE,
     "session.audio.input.format"),
    (msg(type="session.update", session={"audio": {"input": {"format": {"type": "audio/pcmu", "rate": 24000}}}}),
     p.ErrorCode.UNSUPPORTED_FORMAT, "session.audio.input.format.rate"),
    (msg(type="session.update", session={"audio": {"output": {"format": {"type": "s2s.opus", "bitrate": 16000}}}}),
     p.ErrorCode.UNSUPPORTED_FORMAT, "session.audio.output.format.bitrate"),
    (msg(type="session.update", session={"audio": {"output": {"format": {"type": "audio/opus"}}}}),
     p.ErrorCode.UNSUPPORTED_FORMAT, "session.audio.output.format.type"),
    (msg(type="session.update", session={"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
     p.ErrorCode.UNSUPPORTED_FORMAT, "session.audio.input.format.rate"),
    (msg(type="session.update", session={"audio": {"input": {"format": {"type": "audio/pcm", "rate": "24000"}}}}),
     p.ErrorCode.INVALID_VALUE, "session.audio.input.format.rate"),
    (msg(type="session.update", session={"audio": {"output": {"format": {"type": "s2s.encodec", "bandwidth": 5}}}}),
     p.ErrorCode.UNSUPPORTED_FORMAT, "session.audio.output.format.bandwidth"),
    (msg(type="session.update", session={"audio": {"output": {"format": {"type": "s2s.encodec", "bandwidth": "6"}}}}),
     p.ErrorCode.INVALID_VALUE, "session.audio.output.format.bandwidth"),
    (msg(type="session.update", session={"audio": {"input": {"turn_detection": {"type": "magic"}}}}),
     p.ErrorCode.INVALID_VALUE, "session.audio.input.turn_detection.type"),
    (msg(type="session.update", session={"audio": {"input": {"turn_detection": {"create_response": "yes"}}}}),
     p.ErrorCode.INVALID_VALUE, "session.audio.input.turn_detection.create_response"),
    (msg(type="session.update", session={"audio": {"input": {"turn_detection": {"interrupt_response": False}}}}),
     p.ErrorCode.INVALID_VALUE, "session.audio.input.turn_detection.interrupt_response"),
    (msg(type="session.update", session={"audio": {"input": {"turn_detection": {"silence_duration_ms": -1}}}}),
     p.ErrorCode.INVALID_VALUE, "session.audio.input.turn_detection.silence_duration_ms"),
    (msg(type="session.update", session={"audio": {"input": {"transcription": {"language": "??"}}}}),
     p.ErrorCode.INVALID_VALUE, "session.audio.input.transcription.language"),
    (msg(type="conversation.item.create"), p.ErrorCode.MISSING_FIELD, "item"),
    (msg(type="conversation.item.create", item=[]), p.ErrorCode.INVALID_VALUE, "item"),
    (msg(type="conversation.item.create", item={"type": "function_call_output", "output": "x"}),
     p.ErrorCode.UNSUPPORTED_EVENT, "item.type"),
    (msg(type="conversation.item.create", item={"type": "message", "content": []}), p.ErrorCode.MISSING_FIELD,
     "item.role"),
    (msg(type="conversation.item.create", item={"type": "message", "role": "assistant",
                                                "content": [{"type": "input_text", "text": "x"}]}),
     p.ErrorCode.INVALID_VALUE, "item.role"),
    (msg(type="conversation.item.create", item={"type": "message", "role": "user", "content": "x"}),
     p.ErrorCode.INVALID_VALUE, "item.content"),
    (msg(type="conversation.item.create", item={"type": "message", "role": "user",
                                                "content": [{"type": "input_audio", "audio": "AAAA"}]}),
     p.ErrorCode.INVALID_VALUE, "item.content[0].type"),
    (msg(type="conversation.item.create", item={"type": "message", "role": "user",
                                                "content": [{"type": "input_text", "text": 3}]}),
     p.ErrorCode.INVALID_VALUE, "item.content[0].text"),
    (msg(type="conversation.item.create", item={"type": "message", "role": "user",
                                                "content": [{"type": "input_text", "text": "  "}]}),
     p.ErrorCode.INVALID_VALUE, "item.content"),
    (msg(type="conversation.item.create", item={"type": "message", "role": "user", "id": 5,
                                                "content": [{"type": "input_text", "text": "x"}]}),
     p.ErrorCode.INVALID_VALUE, "item.id"),
    (msg(type="response.create", response="now"), p.ErrorCode.INVALID_VALUE, "response"),
    (msg(type="response.cancel", response_id=1), p.ErrorCode.INVALID_VALUE, "response_id"),
    (msg(type="conversation.item.truncate", item_id="x"), p.ErrorCode.MISSING_FIELD, "audio_end_ms"),
    (msg(type="conversation.item.truncate", item_id="x", audio_end_ms=-5), p.ErrorCode.INVALID_VALUE, "audio_end_ms"),
    (msg(type="conversation.item.truncate", item_id="x", audio_end_ms=1.5), p.ErrorCode.INVALID_VALUE, "audio_end_ms"),
    (msg(type="conversation.item.truncate", item_id="x", audio_end_ms=True), p.ErrorCode.INVALID_VALUE,
     "audio_end_ms"),
    (msg(type="s2s.ping"), p.ErrorCode.MISSING_FIELD, "client_time_ms"),
    (msg(type="s2s.ping", client_time_ms="now"), p.ErrorCode.INVALID_VALUE, "client_time_ms"),
]


@pytest.mark.parametrize("message,code,param", BAD_MESSAGES, ids=[f"{i}-{c}" for i, (_, c, _) in enumerate(BAD_MESSAGES)])
def test_every_bad_message_class_gets_a_realtime_error(message, code, param):
    err = err_of(message)
    assert err.code == code
    assert err.param == param
    assert err.message
    d = json.loads(p.serialize(err.to_event()))
    assert d["type"] == "error"
    assert set(d["error"]) == {"type", "code", "message", "param", "event_id"}
    assert d["error"]["type"] == "invalid_request_error"
    assert d["error"]["code"] == code


def test_error_names_the_client_event_id():
    err = err_of(msg(type="input_audio_buffer.append", event_id="evt_42", audio="%%%"))
    d = err.to_event().to_dict()
    assert d["error"]["event_id"] == "evt_42"
    assert d["error"]["param"] == "audio"
    err = err_of(msg(type="conversation.item.delete", event_id="e9"))
    assert err.event_id == "e9" and "conversation.item.delete" in err.message


def test_json_types_are_taken_as_they_are():
    """No coercion ("24000" is not a number, "yes" not a boolean, true not an integer), but an
    integral float is an integer (Python clients write 1500.0), and NaN/Infinity are refused."""
    e = p.parse_client_event(msg(type="conversation.item.truncate", item_id="i", audio_end_ms=1500.0))
    assert e.audio_end_ms == 1500 and isinstance(e.audio_end_ms, int)
    assert err_of('{"type": "s2s.ping", "client_time_ms": NaN}').param == "client_time_ms"
    assert err_of('{"type": "s2s.ping", "client_time_ms": Infinity}').code == p.ErrorCode.INVALID_VALUE
    bad = err_of(msg(type="session.update", session={"audio": {"input": {"turn_detection": {"create_response": 1}}}}))
    assert bad.param == "session.audio.input.turn_detection.create_response" and "boolean" in bad.message


def test_server_events_with_wrong_field_types_are_protocol_errors():
    """A client reads what a server sends through the same kind of check: a field of the wrong
    type is a ProtocolError (the client skips the event), not a crash later."""
    for bad in ('{"type": "s2s.turn.metrics", "response_id": "r", "metrics": {}, "network": "x"}',
                '{"type": "s2s.pong", "client_time_ms": "soon", "server_time_ms": 1}',
                '{"type": "response.done", "response": []}'):
        with pytest.raises(p.ProtocolError) as info:
            p.parse_server_event(bad)
        assert info.value.code == p.ErrorCode.INVALID_EVENT
    with pytest.raises(p.ProtocolError) as info:  # a session this client cannot use
        p.SessionConfig.from_dict({"id": "s", "audio": {"output": {"format": {"type": "audio/opus"}}}})
    assert info.value.param == "session.audio.output.format.type"


def test_oversized_message_is_refused_before_parsing():
    big = msg(type="input_audio_buffer.append", audio=b64(b"\0" * 900_000))
    assert len(big) > p.MAX_MESSAGE_BYTES
    err = err_of(big)
    assert err.code == p.ErrorCode.MESSAGE_TOO_LARGE
    assert str(p.MAX_MESSAGE_BYTES) in err.message
    assert err_of(msg(type="response.create"), max_bytes=10).code == p.ErrorCode.MESSAGE_TOO_LARGE
    # just under the limit is fine
    ok = msg(type="input_audio_buffer.append", audio=b64(b"\0" * 700_000))
    assert len(ok) < p.MAX_MESSAGE_BYTES
    assert isinstance(p.parse_client_event(ok), p.InputAudioBufferAppend)


def test_deep_nesting_is_a_protocol_error():
    assert err_of("[" * 100_000 + "]" * 100_000, max_bytes=10**6).code in (p.ErrorCode.INVALID_JSON,
                                                                            p.ErrorCode.INVALID_EVENT)


def test_pcm_odd_byte_count_is_invalid_audio():
    with pytest.raises(p.ProtocolError) as info:
        p.pcm16_decode(b"\x00\x01\x02")
    assert info.value.code == p.ErrorCode.INVALID_AUDIO


def test_fuzzed_messages_raise_only_protocol_errors():
    rng = random.Random(1)
    seeds = [json.dumps(d, ensure_ascii=False) for d in GOOD_CLIENT_EVENTS]
    junk = [None, 0, -1, 1e308, "", "x", [], {}, [1], {"a": 1}, True, "ఆ" * 10]
    for _ in range(3000):
        d = json.loads(rng.choice(seeds))
        # replace a random (possibly nested) value with junk, or drop a key
        node = d
        for _depth in range(rng.randint(0, 4)):
            keys = list(node) if isinstance(node, dict) else []
            if not keys:
                break
            k = rng.choice(keys)
            if isinstance(node[k], dict) and rng.random() < 0.6:
                node = node[k]
                continue
            if rng.random() < 0.3:
                del node[k]
            else:
                node[k] = rng.choice(junk)
            break
        text = json.dumps(d)
        if rng.random() < 0.1:
            cut = rng.randint(0, len(text))
            text = text[:cut]
        try:
            p.parse_client_event(text)
        except p.ProtocolError as err:
            assert err.code and err.message
    # random bytes
    for _ in range(500):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        try:
            p.parse_client_event(data)
        except p.ProtocolError:
            pass


# --------------------------------------------------------------------------- session config


def test_session_config_round_trip_and_apply():
    c = p.SessionConfig(id="sess_1", instructions="i", asr_model="pkg:whisper-base", tts_voice="te", profile="offline",
                        turn_detection=p.TurnDetection(silence_duration_ms=600))
    d = c.to_dict()
    assert d["type"] == "realtime" and d["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert d["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert p.SessionConfig.from_dict(d) == c
    patch = p.SessionPatch(output_format=p.AudioFormat(p.ENCODEC_FORMAT, 24000, 12.0), turn_detection=None,
                           instructions=None)
    c2 = c.apply(patch)
    assert c2.turn_detection is None and c2.instructions == "i" and c2.output_format.bandwidth == 12.0
    assert c2.input_format == p.PCM
    assert p.SessionConfig.from_dict(c2.to_dict()) == c2
    assert json.loads(json.dumps(c2.to_dict()))["audio"]["output"]["format"]["bandwidth"] == 12.0


def test_session_patch_to_dict_is_a_minimal_update():
    patch = p.SessionPatch(language="te")
    assert patch.to_dict() == {"type": "realtime", "audio": {"input": {"transcription": {"language": "te"}}}}
    assert p.SessionPatch().to_dict() == {"type": "realtime"}


# --------------------------------------------------------------------------- server events


def all_server_events() -> list[p.ServerEvent]:
    return [
        p.SessionCreated(session=p.SessionConfig(id="s").to_dict()),
        p.SessionUpdated(session=p.SessionConfig(id="s").to_dict()),
        p.SpeechStarted(item_id="item_turn_1", audio_start_ms=120),
        p.SpeechStopped(item_id="item_turn_1", audio_end_ms=900),
        p.InputAudioBufferCommitted(item_id="item_turn_1", previous_item_id=None),
        p.InputAudioBufferCleared(),
        p.InputTranscriptionDelta(item_id="item_turn_1", delta="నమ", s2s_partial="నమ"),
        p.InputTranscriptionCompleted(item_id="item_turn_1", transcript="నమస్తే", s2s_language="te",
                                      s2s_script_ok=True),
        p.ConversationItemAdded(item=p.user_item("item_turn_1", transcript=None)),
        p.ConversationItemDone(item=p.user_item("item_turn_1", text="హలో")),
        p.ConversationItemTruncated(item_id="item_resp_1", audio_end_ms=700),
        p.ResponseCreated(response={"id": "resp_1", "object": "realtime.response", "status": "in_progress"}),
        p.ResponseAudioDelta(response_id="resp_1", item_id="item_resp_1", audio=b"\x00\x01" * 10),
        p.ResponseAudioDone(response_id="resp_1", item_id="item_resp_1"),
        p.ResponseTranscriptDelta(response_id="resp_1", item_id="item_resp_1", delta="హ"),
        p.ResponseTranscriptDone(response_id="resp_1", item_id="item_resp_1", transcript="హలో"),
        p.ResponseDone(response={"id": "resp_1", "status": "completed"}),
        p.Error(code="invalid_json", message="m", client_event_id="c1", details={"s2s_stage": "asr"}),
        p.S2STurnMetrics(item_id="item_turn_1", response_id="resp_1", metrics=TurnMetrics(turn_id="turn_1").to_dict()),
        p.S2STurnMetrics(item_id="item_turn_2", response_id="resp_2", metrics=TurnMetrics(turn_id="turn_2").to_dict(),
                         network={"first_audio_sent_server_ms": 1500.25, "first_audio_event_id": "event_40",
                                  "turn_end_message": 17, "turn_end_message_type": "input_audio_buffer.append",
                                  "turn_end_received_server_ms": 1100.5}),
        p.S2SSessionResetDone(session_id="sess_1", cancelled_response_id="resp_3"),
        p.S2SStats(gpu={"used_mb": None, "total_mb": None}, sessions={"active": 1, "max": 8}),
        p.S2SPong(client_time_ms=1.0, server_time_ms=2.0),
    ]


def test_every_server_event_type_is_covered():
    assert {type(e) for e in all_server_events()} == set(p.SERVER_EVENTS.values())


@pytest.mark.parametrize("event", all_server_events(), ids=lambda e: e.type)
def test_server_events_serialise_and_parse_back(event):
    event.event_id = "event_7"
    text = p.serialize(event)
    d = json.loads(text)
    assert d["type"] == event.type and d["event_id"] == "event_7"
    back = p.parse_server_event(text)
    assert back == event
    assert "\\u0c" not in text  # Telugu stays readable on the wire


def test_audio_delta_is_base64_under_delta():
    d = p.ResponseAudioDelta(response_id="r", item_id="i", audio=b"\x01\x02\x03\x04").to_dict()
    assert d["delta"] == "AQIDBA==" and "audio" not in d
    assert {"response_id", "item_id", "output_index", "content_index"} <= set(d)


def test_error_event_shape():
    d = p.Error(code="x", message="m", param="audio", client_event_id="c3").to_dict()
    assert d == {"type": "error", "event_id": "", "error": {"type": "invalid_request_error", "code": "x",
                                                            "message": "m", "param": "audio", "event_id": "c3"}}


def test_unknown_server_events_are_kept():
    e = p.parse_server_event(json.dumps({"type": "rate_limits.updated", "event_id": "e", "rate_limits": []}))
    assert isinstance(e, p.UnknownServerEvent) and e.event_type == "rate_limits.updated"
    assert e.to_dict()["rate_limits"] == []
    for bad in ("[]", "x", '{"no": "type"}'):
        with pytest.raises(p.ProtocolError):
            p.parse_server_event(bad)


def test_server_events_validate_against_the_openai_sdk_models():
    """Independent check of the shapes: the OpenAI SDK's own pydantic models accept our events."""
    from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
    from pydantic import TypeAdapter

    server = TypeAdapter(RealtimeServerEvent)
    for e in all_server_events():
        if e.type.startswith("s2s."):
            continue
        e.event_id = "event_1"
        model = server.validate_python(e.to_dict())
        assert model.type == e.type
    client = TypeAdapter(RealtimeClientEvent)
    for d in GOOD_CLIENT_EVENTS:
        if d["type"].startswith("s2s.") or "s2s.encodec" in json.dumps(d):
            continue
        e = p.parse_client_event(json.dumps(d))
        assert client.validate_python(e.to_dict()).type == d["type"]


# --------------------------------------------------------------------------- engine -> wire mapping


def types(events) -> list[str]:
    return [e.type for e in events]


def run(mapper: p.EventMapper, engine_events) -> list[p.ServerEvent]:
    out = []
    for e in engine_events:
        out += mapper.map(e)
    return out


def test_spoken_turn_maps_to_realtime_sequence():
    m = p.EventMapper()
    audio = np.array([0.0, 0.5, -0.5, 1.5, -2.0], np.float32)
    metrics = TurnMetrics(turn_id="turn_1", response_id="resp_1", speech_end_ns=0, first_audio_out_ns=5_000_000)
    out = run(m, [
        ev.SpeechStarted("turn_1", 100),
        ev.TranscriptPartial("turn_1", "నమ"),
        ev.TranscriptPartial("turn_1", "నమస్"),
        ev.TranscriptPartial("turn_1", "నేను"),  # a revision: no delta, full text in s2s_partial
        ev.SpeechStopped("turn_1", 1500),
        ev.TranscriptFinal("turn_1", "నమస్తే", "te", True),
        ev.ResponseStarted("resp_1", "turn_1"),
        ev.ReplyTextDelta("resp_1", "హలో"),
        ev.ReplySegment("resp_1", 0, "హలో"),
        ev.ReplyAudio("resp_1", 0, audio, 24000),
        ev.ResponseDone("resp_1", "completed", "హలో", "హలో", 1000, 1000),
        ev.TurnMetricsEvent(metrics),
    ])
    assert types(out) == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.created",
        "conversation.item.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "conversation.item.done",
        "response.done",
        "s2s.turn.metrics",
    ]
    assert [e.delta for e in out[1:4]] == ["నమ", "స్", ""]
    assert out[3].s2s_partial == "నేను"
    assert out[0].item_id == out[5].item_id == "item_turn_1"
    assert out[7].transcript == "నమస్తే" and out[7].s2s_language == "te" and out[7].s2s_script_ok is True
    assert out[10].item["id"] == "item_resp_1" and out[10].previous_item_id == "item_turn_1"
    pcm = p.pcm16_decode(out[12].audio)
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32767]
    done = out[16].response
    assert done["status"] == "completed" and done["status_details"] is None
    assert done["output"][0]["content"][0]["transcript"] == "హలో"
    assert done["s2s"]["played_ms"] == 1000 and done["s2s"]["audio_bytes"] == 10
    assert out[17].metrics["voice_to_voice_ms"] == 5.0 and out[17].item_id == "item_turn_1"
    assert m.response_for_item("item_resp_1") == "resp_1"


def test_barge_in_maps_to_cancelled_with_played_ms():
    m = p.EventMapper()
    run(m, [ev.ResponseStarted("resp_1", None)])
    assert m.active_response() == "resp_1"
    out = run(m, [
        ev.SpeechStarted("turn_2", 5000),
        ev.Interruption("resp_1", 640, "హలో"),
        ev.ResponseDone("resp_1", "cancelled", "హలో మీరు", "హలో", 3000, 640),
    ])
    done = out[-1].response
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["s2s"]["played_ms"] == 640 and done["s2s"]["heard_text"] == "హలో"
    assert done["output"][0]["status"] == "incomplete"
    transcript_done = [e for e in out if e.type == "response.output_audio_transcript.done"][0]
    assert transcript_done.transcript == "హలో"
    assert m.active_response() is None


def test_client_cancel_and_failure_reasons():
    m = p.EventMapper()
    run(m, [ev.ResponseStarted("resp_1", None)])
    m.cancel_requested("resp_1")
    out = run(m, [ev.ResponseDone("resp_1", "cancelled", "x", "", 0, 0)])
    assert out[-1].response["status_details"]["reason"] == "client_cancelled"
    run(m, [ev.ResponseStarted("resp_2", None)])
    out = run(m, [ev.ResponseDone("resp_2", "failed", "", "", 0, 0)])
    assert out[-1].response["status_details"]["type"] == "failed"


def test_barge_in_after_generation_truncates_the_item():
    m = p.EventMapper()
    run(m, [ev.ResponseStarted("resp_1", None), ev.ResponseDone("resp_1", "completed", "a b", "a b", 4000, 4000)])
    out = run(m, [ev.Interruption("resp_1", 1200, "a")])
    assert types(out) == ["conversation.item.truncated"]
    assert out[0].item_id == "item_resp_1" and out[0].audio_end_ms == 1200


def test_text_turn_maps_to_item_events_only():
    m = p.EventMapper()
    out = m.text_item("turn_1", "నమస్కారం", item_id="mine")
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    assert out[0].item["content"] == [{"type": "input_text", "text": "నమస్కారం"}]
    assert run(m, [ev.TranscriptFinal("turn_1", "నమస్కారం")]) == []
    out = run(m, [ev.ResponseStarted("resp_1", "turn_1")])
    assert out[1].previous_item_id == "mine"


def test_manual_commit_is_reported_once():
    m = p.EventMapper()
    first = m.committed("turn_1")
    assert types(first) == ["input_audio_buffer.committed", "conversation.item.added"]
    out = run(m, [ev.TranscriptFinal("turn_1", "x")])
    assert types(out) == ["conversation.item.input_audio_transcription.completed", "conversation.item.done"]


def test_engine_error_maps_to_server_error():
    out = p.EventMapper().map(ev.ErrorEvent("stage_error", "tts: boom", "tts", "turn_3"))
    d = out[0].to_dict()
    assert d["error"]["type"] == "server_error" and d["error"]["code"] == "stage_error"
    assert d["error"]["s2s_stage"] == "tts" and d["error"]["s2s_turn_id"] == "turn_3"


def _reply_at(rate: int, x: np.ndarray, status: str, chunk: int) -> list[p.ServerEvent]:
    m = p.EventMapper()
    out = m.map(ev.ResponseStarted("resp_1", None))
    for i in range(0, len(x), chunk):
        out += m.map(ev.ReplyAudio("resp_1", i // chunk, x[i:i + chunk], rate))
    return out + m.map(ev.ResponseDone("resp_1", status, "a", "a", 1000, 1000))


def _pcm_of(out: list[p.ServerEvent]) -> np.ndarray:
    deltas = [e.audio for e in out if e.type == "response.output_audio.delta"]
    return np.concatenate([p.pcm16_decode(d) for d in deltas]).astype(np.float32) / 32767


def test_reply_audio_at_another_rate_is_stream_resampled_without_edge_clicks():
    """20 ms chunks of a 16 kHz tone come out as if the whole reply had been resampled at once:
    one soxr stream per response keeps its state across chunk edges (chunk-by-chunk linear
    interpolation, the old way, was 0.06 off at every edge)."""
    from engine.audio import resample

    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000)).astype(np.float32)
    out = _reply_at(16_000, x, "completed", 320)
    y = _pcm_of(out)
    assert len(y) == 24_000  # the resampler's tail comes out before output_audio.done
    np.testing.assert_allclose(y, resample(x, 16_000, 24_000), atol=1e-3)
    done = [e for e in out if e.type == "response.done"][0]
    assert done.response["s2s"]["audio_bytes"] == 48_000
    assert types(out)[-5:-3] == ["response.output_audio.delta", "response.output_audio.done"]


def test_a_cancelled_reply_drops_the_resampler_tail():
    x = np.zeros(4800, np.float32)
    completed, cancelled = _pcm_of(_reply_at(16_000, x, "completed", 320)), _pcm_of(_reply_at(16_000, x, "cancelled", 320))
    assert len(completed) == 7200 and 0 < len(cancelled) < 7200


def test_pcm16_round_trip():
    x = np.linspace(-1, 1, 101).astype(np.float32)
    y = p.pcm16_decode(p.pcm16_encode(x)).astype(np.float32) / 32767
    assert np.max(np.abs(x - y)) < 1e-4
    assert p.pcm16_encode(np.array([1, -2], np.int16)) == b"\x01\x00\xfe\xff"


def test_wire_constants():
    assert p.CloseCode.GOING_AWAY == 1001 and p.CloseCode.TRY_AGAIN_LATER == 1013
    assert len(set(p.ErrorCode)) == len(list(p.ErrorCode))
    assert p.PCM_BYTES_PER_SECOND == 48_000
    from remote.codec import BANDWIDTHS

    assert p.ENCODEC_BANDWIDTHS == BANDWIDTHS


def test_the_event_mapper_remembers_a_bounded_number_of_turns():
    """A long session (500 turns) does not grow the mapper: the last MAX_TRACKED turns and responses
    are remembered, older ones forgotten first, and the recent ones still map correctly."""
    m = p.EventMapper()
    for i in range(500):
        run(m, [ev.SpeechStarted(f"turn_{i}", 0), ev.TranscriptPartial(f"turn_{i}", "న"),
                ev.SpeechStopped(f"turn_{i}", 10), ev.ResponseStarted(f"resp_{i}", f"turn_{i}"),
                ev.ReplyAudio(f"resp_{i}", 0, np.zeros(320, np.float32), 16_000)])
        m.text_item(f"text_{i}", "x", item_id=f"mine_{i}")
    sizes = {name: len(v) for name, v in vars(m).items() if isinstance(v, dict | set | list)}
    assert sizes and max(sizes.values()) <= p.MAX_TRACKED, sizes
    out = run(m, [ev.ResponseStarted("resp_new", "text_499")])
    assert out[1].previous_item_id == "mine_499"
    assert run(m, [ev.TranscriptFinal("text_499", "x")]) == []  # still known as a text turn

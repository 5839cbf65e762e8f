"""G.711 ``audio/pcmu`` / ``audio/pcma`` (8 kHz), as the Realtime API defines them.

The tables against the standard's known points; the session rules without a socket (negotiation,
appends of any byte count, bad base64, reply audio at 8 kHz); and a spoken turn held by the
official ``openai`` SDK in μ-law, against the real offline engine on 127.0.0.1.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import soxr

from engine import events as ev
from remote import protocol as p
from remote.protocol import g711
from tests.test_rules import append, client, rules_for
from tests.test_server import TOKEN, clips, token_server  # noqa: F401 - fixtures

# ITU-T G.711 reference points (decoded values of codes, as in the reference g711.c)
ULAW = {0x00: -32124, 0x80: 32124, 0x7F: 0, 0xFF: 0, 0x70: -120, 0xF0: 120}
ALAW = {0xD5: 8, 0x55: -8, 0xAA: 32256, 0x2A: -32256, 0x80: 5504, 0x00: -5504}


@pytest.mark.parametrize(("law", "points", "silence"), [("ulaw", ULAW, 0xFF), ("alaw", ALAW, 0xD5)])
def test_the_tables_match_the_standard(law, points, silence):
    decoded = g711.decode(bytes(range(256)), law)
    for code, value in points.items():
        assert decoded[code] == value, hex(code)
    assert g711.encode(np.zeros(3, np.int16), law) == bytes([silence]) * 3
    again = np.frombuffer(g711.encode(decoded, law), np.uint8)
    fixed = [c for c in range(256) if again[c] != c]
    assert fixed == ([0x7F] if law == "ulaw" else [])  # μ-law has two zeros; 0 encodes as 0xFF
    x = (np.random.default_rng(0).standard_normal(8000) * 3000).clip(-32768, 32767).astype(np.int16)
    y = g711.decode(g711.encode(x, law), law).astype(np.float64)
    snr = 10 * np.log10((x.astype(np.float64) ** 2).sum() / ((x - y) ** 2).sum())
    assert snr > 30  # about 37 dB for speech-level signals: the 8-bit log companding


@pytest.mark.parametrize("fmt", [p.PCMU_FORMAT, p.PCMA_FORMAT])
def test_g711_is_negotiated_without_a_rate_and_reported_as_realtime_writes_it(fmt):
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    rules = rules_for()
    out = rules.receive(client(type="session.update", session={"audio": {"input": {"format": {"type": fmt}},
                                                                         "output": {"format": {"type": fmt}}}}))
    (updated,) = out
    assert updated.session["audio"]["input"]["format"] == {"type": fmt}
    assert updated.session["audio"]["output"]["format"] == {"type": fmt}
    assert rules.config.input_format.rate == 8000 and rules.config.output_format.rate == 8000
    updated.event_id = "event_1"
    assert TypeAdapter(RealtimeServerEvent).validate_python(updated.to_dict()).type == "session.updated"
    with pytest.raises(p.ProtocolError) as info:
        client(type="session.update", session={"audio": {"input": {"format": {"type": fmt, "rate": 24000}}}})
    assert info.value.code == "unsupported_audio_format" and info.value.param == "session.audio.input.format.rate"


def test_g711_appends_of_any_byte_count_reach_the_engine_at_8_khz_and_bad_ones_are_refused():
    rules = rules_for()
    rules.receive(client(type="session.update", session={"audio": {"input": {"format": {"type": "audio/pcmu"}}}}))
    assert rules.receive(append(bytes([0x00, 0x80, 0xFF]))) == []  # 1 byte per sample: an odd count is fine
    samples, rate = rules.session.pushed[-1]
    assert rate == 8000 and samples.tolist() == [-32124, 32124, 0]
    with pytest.raises(p.ProtocolError) as info:  # refused as it is read: the rules never see it
        p.parse_client_event('{"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "b"}')
    assert (info.value.code, info.value.event_id, info.value.param) == ("invalid_base64", "b", "audio")
    assert rules.receive(append(b"", "empty")) == []  # nothing to push; the buffer stays empty
    assert rules.receive(append(bytes(160))) == []  # the session goes on
    assert len(rules.session.pushed) == 2


def test_reply_audio_goes_out_at_8_khz_in_g711():
    rules = rules_for()
    rules.receive(client(type="session.update", session={"audio": {"output": {"format": {"type": "audio/pcma"}}}}))
    rules.engine_event(ev.ResponseStarted("resp_1", None))
    t = np.arange(24_000) / 24_000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = rules.engine_event(ev.ReplyAudio("resp_1", 0, x, 24_000))
    out += rules.engine_event(ev.ResponseDone("resp_1", "completed", "a", "a", 1000, 1000))
    deltas = [e.audio for e in out if e.type == "response.output_audio.delta"]
    assert abs(sum(map(len, deltas)) - 8000) <= 2  # 1 s at 8 kHz, one byte a sample
    y = g711.decode(b"".join(deltas), "alaw").astype(np.float32) / 32768
    ref = soxr.resample(x, 24_000, 8_000)
    n = min(len(y), len(ref)) - 200
    assert np.corrcoef(y[100:n], ref[100:n])[0, 1] > 0.99


pytestmark_async = pytest.mark.asyncio(loop_scope="session")


@pytestmark_async
async def test_stock_openai_sdk_holds_a_spoken_turn_in_g711_mulaw(token_server, clips):  # noqa: F811
    """A telephony bridge's view: μ-law 8 kHz in and out, through the official SDK."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{token_server.port}/v1", api_key=TOKEN)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"],
                                           "audio": {"input": {"format": {"type": "audio/pcmu"},
                                                               "turn_detection": {"type": "server_vad"}},
                                                     "output": {"format": {"type": "audio/pcmu"}}}})
        phone = g711.encode(soxr.resample(clips[0].astype(np.float32) / 32768, 24_000, 8_000), "ulaw")
        for i in range(0, len(phone), 160):  # 20 ms a message, as Twilio Media Streams sends
            await conn.input_audio_buffer.append(audio=base64.b64encode(phone[i:i + 160]).decode())
        kinds, transcript, reply, formats = [], None, b"", None
        async for event in conn:
            kinds.append(event.type)
            if event.type == "session.updated":
                formats = (event.session.audio.input.format, event.session.audio.output.format)
            elif event.type == "conversation.item.input_audio_transcription.completed":
                transcript = event.transcript
            elif event.type == "response.output_audio.delta":
                reply += base64.b64decode(event.delta)
            elif event.type == "response.done":
                assert event.response.status == "completed"
                break
            elif event.type == "error":
                pytest.fail(f"error from the server: {event.error}")
    assert formats is not None and formats[0].type == formats[1].type == "audio/pcmu"
    assert transcript and len(reply) > 800  # over 0.1 s of reply at 8 kHz, one byte a sample
    heard = g711.decode(reply, "ulaw")
    assert np.abs(heard.astype(np.float32)).max() > 1000  # speech, not silence

"""``s2s.opus``: Opus packets of 20 ms frames through PyAV's libopus (one or two frames up, five down).

The coders alone (packet count, bytes per second, the decoded signal); the session rules without
a socket (negotiation with a bitrate, appends pushed at 48 kHz, garbage and wrong-format packets
refused while the session goes on, reply audio as one packet per delta); and bad packets over a
real socket.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect

from engine import events as ev
from remote import protocol as p
from remote.protocol import opus
from tests.test_rules import append, client, rules_for, the_error, types


def voice(seconds: float = 1.0, rate: int = 24_000) -> np.ndarray:
    """A voiced, wobbling tone with harmonics: speech-like enough for a speech codec."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return (0.25 * x).astype(np.float32)


def packets(x: np.ndarray, rate: int = 24_000, kbps: int = 16) -> list[bytes]:
    enc = opus.OpusStreamEncoder(rate, kbps)
    return enc.push(x) + enc.flush()


@pytest.mark.parametrize("kbps", p.OPUS_BITRATES)
def test_one_packet_per_20_ms_near_the_bitrate_and_the_signal_survives(kbps):
    x = voice(2.0)
    pk = packets(x, kbps=kbps)
    assert len(pk) == 100
    rate = sum(map(len, pk)) * 8 / 2.0 / 1000
    assert 0.6 * kbps < rate < 1.3 * kbps, rate
    dec = opus.OpusStreamDecoder()
    y = np.concatenate([dec.push(b) for b in pk]).astype(np.float32) / 32768
    assert len(y) == 2 * 48_000 and dec.rate == 48_000
    ref = soxr.resample(x, 24_000, 48_000)
    lag = int(np.argmax(np.correlate(y[4800:9600], ref[4800:7200], "valid")))  # the codec's look-ahead
    assert lag < 960
    a, b = y[4800 + lag:90_000 + lag], ref[4800:90_000]
    assert np.corrcoef(a, b)[0, 1] > 0.75  # a perceptual codec: the waveform roughly,
    env = lambda v: np.sqrt((v[: len(v) // 960 * 960].reshape(-1, 960) ** 2).mean(axis=1))  # noqa: E731
    assert np.corrcoef(env(a), env(b))[0, 1] > 0.95  # the loudness contour closely


def opus_update(side: str = "input", **fmt) -> p.ClientEvent:
    return client(type="session.update", session={"audio": {side: {"format": {"type": "s2s.opus", **fmt}}}})


def test_opus_is_negotiated_with_a_bitrate_and_refused_with_a_wrong_one():
    rules = rules_for()
    (updated,) = rules.receive(opus_update("output", bitrate=24))
    assert updated.session["audio"]["output"]["format"] == {"type": "s2s.opus", "rate": 24000, "bitrate": 24}
    (updated,) = rules.receive(opus_update("input", rate=16000))
    assert updated.session["audio"]["input"]["format"] == {"type": "s2s.opus", "rate": 16000, "bitrate": 16}
    for bad, param in (({"bitrate": 64}, "bitrate"), ({"rate": 44100}, "rate"), ({"bitrate": "16"}, "bitrate")):
        with pytest.raises(p.ProtocolError) as info:
            opus_update(**bad)
        assert info.value.param == f"session.audio.input.format.{param}"
    assert "s2s.opus" in rules.created()[0].session["s2s"]["formats"]


def test_opus_appends_reach_the_engine_at_48_khz_and_bad_packets_are_refused_while_the_session_goes_on():
    rules = rules_for()
    rules.receive(opus_update())
    pk = packets(voice(0.2))
    job = rules.decode_job(p.InputAudioBufferAppend(audio=pk[0]))
    assert job is not None and not job.offload  # one 20 ms packet: cheap enough for the event loop
    assert rules.receive(append(pk[0])) == []
    samples, rate = rules.session.pushed[-1]
    assert rate == 48_000 and len(samples) == 960
    garbage = the_error(rules.receive(append(b"\xff\xfe\x00 not opus at all", "g")))
    assert (garbage.code, garbage.param, garbage.client_event_id) == ("invalid_audio", "audio", "g")
    pcm = p.pcm16_encode(voice(0.1))  # PCM sent to an Opus session: 4800 bytes, not one packet
    wrong = the_error(rules.receive(append(pcm, "w")))
    assert wrong.code == "invalid_audio" and "is this PCM" in wrong.message
    for b in pk[1:]:  # the decoder goes on where it was
        assert rules.receive(append(b)) == []
    assert len(rules.session.pushed) == len(pk)
    assert types(rules.receive(client(type="input_audio_buffer.clear"))) == ["input_audio_buffer.cleared"]
    assert rules.receive(append(pk[0])) == []  # a fresh decoder after a clear


def toc_frame_ms(toc: int) -> float:
    """The frame length an Opus packet's TOC byte gives (RFC 6716 3.1, table 2)."""
    config = toc >> 3
    if config < 12:  # SILK-only: 10, 20, 40, 60 ms
        return (10, 20, 40, 60)[config % 4]
    if config < 16:  # hybrid: 10, 20 ms
        return (10, 20)[config % 2]
    return (2.5, 5, 10, 20)[config % 4]  # CELT-only


def test_the_toc_table_reads_the_frame_length():
    assert [toc_frame_ms(c << 3) for c in (0, 1, 3, 9, 13, 15, 16, 19, 31)] == [10, 20, 60, 20, 20, 20, 2.5, 20, 20]


def test_reply_audio_is_one_opus_packet_of_five_frames_per_delta_coded_off_the_loop():
    rules = rules_for()
    rules.receive(opus_update("output", bitrate=12))
    rules.engine_event(ev.ResponseStarted("resp_1", None))
    e = ev.ReplyAudio("resp_1", 0, voice(0.51, 22_050), 22_050)  # the TTS's own rate: resampled once
    job = rules.encode_job(e)
    assert job is not None and job.offload
    out = rules.engine_event(e, job)
    out += rules.engine_event(ev.ResponseDone("resp_1", "completed", "a", "a", 510, 510))
    deltas = [d.audio for d in out if d.type == "response.output_audio.delta"]
    assert len(deltas) == 6 and all(len(d) < 1000 for d in deltas)  # 510 ms: five packets and the padded rest
    done = out[-1]
    assert done.type == "response.done" and done.response["s2s"]["audio_bytes"] == sum(map(len, deltas))
    # every packet is five 20 ms frames: TOC code 3, its frame count byte says 5
    assert all(toc_frame_ms(d[0]) == 20 and d[0] & 3 == 3 and d[1] & 0x3F == 5 for d in deltas)
    dec = opus.OpusStreamDecoder()
    assert all(len(dec.push(d)) == 4800 for d in deltas)  # 100 ms at 48 kHz each


def frames_of(packet: bytes) -> list[bytes]:
    """The frames of a code 0, 1 or 2 Opus packet (RFC 6716 3.2.1-3.2.4), read independently of
    :func:`opus.join_packets`."""
    code, body = packet[0] & 3, packet[1:]
    if code == 0:
        return [body]
    if code == 1:
        assert len(body) % 2 == 0
        return [body[: len(body) // 2], body[len(body) // 2:]]
    assert code == 2
    n, skip = (body[0], 1) if body[0] < 252 else (body[1] * 4 + body[0], 2)
    return [body[skip: skip + n], body[skip + n:]]


@pytest.mark.parametrize("kbps", [12, 128])  # 128: frames over 251 bytes, the two-byte length
def test_two_one_frame_packets_join_as_one_packet_that_decodes_the_same(kbps):
    pk = packets(voice(1.0), kbps=kbps)
    one, two = opus.OpusStreamDecoder(), opus.OpusStreamDecoder()
    codes = set()
    for a, b in zip(pk[0::2], pk[1::2], strict=False):
        joined = opus.join_packets(a, b)
        assert joined is not None and joined[0] >> 2 == a[0] >> 2  # same config and channels
        codes.add(joined[0] & 3)
        assert frames_of(joined) == [a[1:], b[1:]]
        assert np.array_equal(two.push(joined), np.concatenate([one.push(a), one.push(b)]))
    assert codes <= {1, 2} and 2 in codes  # VBR frames mostly differ in size: code 2
    if kbps == 128:
        assert max(len(b) for b in pk) > 252
    assert opus.join_packets(pk[0], opus.join_packets(pk[1], pk[2])) is None  # not one frame each
    assert opus.join_packets(pk[0], bytes([pk[1][0] ^ 0x08]) + pk[1][1:]) is None  # another frame size


def test_the_microphone_pairs_frames_of_speech_and_never_holds_a_quiet_frame():
    """Uplink Opus: a frame of speech waits for the next one and goes with it (two frames, one
    append); a quiet frame goes at once, with the held frame of speech before it. Fed 20 ms at a
    time, as a microphone does: nothing is held after a quiet frame, at most one frame otherwise."""
    fmt = p.AudioFormat(p.OPUS_FORMAT, 24_000)
    enc = p.FORMATS[p.OPUS_FORMAT].encoder(fmt, None)
    x = np.concatenate([np.zeros(12_000, np.float32), voice(1.0), np.zeros(12_000, np.float32)])
    step, sent, out = 480, 0, []
    for i in range(0, len(x), step):
        got = enc.push(x[i: i + step])
        out += got
        sent += sum(len(frames_of(g)) for g in got)
        frame = i // step + 1
        quiet = not x[i: i + step].any()
        assert sent == frame if quiet else frame - 1 <= sent <= frame
    out += enc.flush()
    assert sum(len(frames_of(g)) for g in out) == len(x) // step  # every frame, once
    pairs = [g for g in out if g[0] & 3]
    singles = [g for g in out if not g[0] & 3]
    assert 20 <= len(pairs) <= 26 and len(singles) >= 48  # the second of speech paired, the silence not
    first_pair = out.index(pairs[0])
    assert all(not g[0] & 3 for g in out[:first_pair]) and all(not g[0] & 3 for g in out[-20:])
    dec = opus.OpusStreamDecoder()
    assert sum(len(dec.push(g)) for g in out) == len(x) * 2  # 48 kHz: every sample decoded
    reply = p.FORMATS[p.OPUS_FORMAT].encoder(fmt, None, reply=True)
    assert reply.pairs is None and reply.packet_ms == 100


def test_a_two_frame_append_reaches_the_engine_as_40_ms():
    rules = rules_for()
    rules.receive(opus_update())
    pk = packets(voice(0.2))
    assert rules.receive(append(opus.join_packets(pk[0], pk[1]))) == []
    samples, rate = rules.session.pushed[-1]
    assert rate == 48_000 and len(samples) == 1920


@pytest.mark.asyncio(loop_scope="session")
async def test_bad_packets_over_the_socket_get_errors_and_the_session_goes_on():
    from remote.server import serve
    from tests.fakes import fake_engine

    srv = await serve(fake_engine(), port=0, stats_interval_s=0)
    try:
        async with connect(srv.url) as ws:
            async def send(**e) -> None:
                await ws.send(json.dumps(e))

            async def next_of(*kinds: str) -> dict:
                while True:
                    d = json.loads(await ws.recv())
                    if d["type"] in kinds:
                        return d

            await next_of("session.created")
            await send(type="session.update", session={"audio": {"input": {"format": {"type": "s2s.opus"}},
                                                                 "turn_detection": None}})
            await next_of("session.updated")
            b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
            await send(type="input_audio_buffer.append", audio=b64(b"\xff\xfe garbage"), event_id="e1")
            await send(type="input_audio_buffer.append", audio=b64(bytes(4000)), event_id="e2")
            await send(type="input_audio_buffer.append", audio="!!!", event_id="e3")
            got = [(await next_of("error"))["error"] for _ in range(3)]
            assert [(g["code"], g["event_id"]) for g in got] == [("invalid_audio", "e1"), ("invalid_audio", "e2"),
                                                                 ("invalid_base64", "e3")]
            for b in packets(voice(0.2)):
                await send(type="input_audio_buffer.append", audio=b64(b))
            await send(type="s2s.ping", client_time_ms=1.0)
            assert (await next_of("s2s.pong", "error"))["type"] == "s2s.pong"  # the session goes on
    finally:
        await srv.close(grace_s=0)

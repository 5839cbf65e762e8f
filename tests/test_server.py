"""The headless server, for real: a WebSocket server on 127.0.0.1 over the real offline engine.

Telugu speech comes from espeak-ng. The engine (``offline_engine``, tests/conftest.py) is loaded
once for the whole run; servers here are cheap and started per test or per module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine.errors import ConfigError
from remote import protocol as p
from remote.client import AuthError, RealtimeClient
from remote.server import run_headless, serve
from tests.conftest import speak
from tests.fakes import REPLY, FakeLLM, fake_engine

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
TELUGU = [
    "నమస్కారం, మీరు ఎలా ఉన్నారు?",
    "నాకు ఒక కథ చెప్పండి.",
    "హైదరాబాద్ ఒక పెద్ద నగరం.",
    "మా ఊరిలో ఒక చిన్న నది ఉంది.",
]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[np.ndarray]:
    """Telugu utterances as the wire carries them: int16 at 24 kHz, with silence around them."""
    out = []
    folder = tmp_path_factory.mktemp("speech")
    for i, text in enumerate(TELUGU):
        path = speak(text, folder / f"te_{i}.wav")
        import soundfile as sf

        x, rate = sf.read(str(path), dtype="float32")
        y = soxr.resample(x, rate, p.PCM_RATE).astype(np.float32)
        lead, tail = np.zeros(int(0.3 * p.PCM_RATE), np.float32), np.zeros(int(1.4 * p.PCM_RATE), np.float32)
        out.append(np.round(np.concatenate([lead, y, tail]) * 32767 * 0.9).astype(np.int16))
    return out


ENGLISH = [
    ("window", "Please open the window."),
    ("fruit", "My favourite fruit is a banana."),
    ("monday", "The train leaves on Monday morning."),
    ("football", "Football is played with eleven players."),
]


@pytest.fixture(scope="module")
def english_clips(tmp_path_factory) -> list[np.ndarray]:
    """English utterances (Whisper base transcribes espeak-ng English well), float32 at 16 kHz."""
    from engine.audio import load_wav

    folder = tmp_path_factory.mktemp("speech_en")
    out = []
    for i, (_, text) in enumerate(ENGLISH):
        audio, _ = load_wav(speak(text, folder / f"en_{i}.wav", voice="en"), 16000)
        out.append(np.concatenate([np.zeros(4800, np.float32), audio, np.zeros(22400, np.float32)]))
    return out


@pytest.fixture(scope="module")
async def server(offline_engine):
    srv = await serve(offline_engine, port=0, stats_interval_s=0.5)
    yield srv
    await srv.close(grace_s=0)


@pytest.fixture(scope="module")
async def token_server(offline_engine):
    srv = await serve(offline_engine, port=0, token=TOKEN, stats_interval_s=0)
    yield srv
    await srv.close(grace_s=0)


def small_codec():
    from remote.codec import EncodecCodec

    return EncodecCodec.random(seed=0, small=True)


async def recv_json(ws, limit_s: float = 30.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), limit_s))


async def until(ws, *types: str, limit_s: float = 60.0, seen: list | None = None) -> dict:
    deadline = time.monotonic() + limit_s
    while True:
        d = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if seen is not None:
            seen.append(d)
        if d["type"] in types:
            return d


async def send(ws, **event) -> None:
    await ws.send(json.dumps(event, ensure_ascii=False))


def text_item(text: str) -> dict:
    return {"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}


async def append_pcm(ws, pcm: np.ndarray, chunk_ms: int = 100) -> None:
    step = p.PCM_RATE * chunk_ms // 1000
    for i in range(0, len(pcm), step):
        await send(ws, type="input_audio_buffer.append", audio=base64.b64encode(pcm[i:i + step].tobytes()).decode())


class TokenStamps(list):
    """Token times of a slowed LLM, and how its (last) generation ended: ``ended`` is set once
    the generation stopped, ``cancelled`` says whether its cancel was set by then, and
    ``after_cancel`` counts the tokens it wrote once its cancel was set."""

    def __init__(self):
        super().__init__()
        self.ended = threading.Event()
        self.cancelled: bool | None = None
        self.after_cancel = 0


@contextlib.contextmanager
def slow_llm(engine, delay_s: float = 0.04):
    """Make the LLM write slowly (so a test can act mid-generation); records token times."""
    original = engine.llm.stream
    stamps = TokenStamps()

    def stream(messages, max_tokens, cancel, threads=None):
        stamps.ended.clear()
        try:
            for token in original(messages, max_tokens, cancel, threads):
                time.sleep(delay_s)
                stamps.append(time.monotonic())
                stamps.after_cancel += cancel.is_set()
                yield token
        finally:
            stamps.cancelled = cancel.is_set()
            stamps.ended.set()

    engine.llm.stream = stream
    try:
        yield stamps
    finally:
        del engine.llm.stream  # back to the class's method


async def wait_until(cond, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- health, auth, binding


async def test_healthz(server):
    def get():
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            return r.status, r.headers["Content-Type"], json.loads(r.read())

    status, ctype, body = await asyncio.to_thread(get)
    assert status == 200 and ctype.startswith("application/json")
    assert body["status"] == "ok" and body["profile"] == "offline"
    assert set(body["models"]) == {"vad", "turn", "asr", "llm", "tts"}
    assert "path" not in body["models"]["asr"]
    assert body["sessions"]["active"] == 0 and body["sessions"]["max"] == 8
    if sys.platform.startswith("linux"):  # glibc's heap (remote.memory); the models are loaded
        m = body["memory"]
        assert m["allocator"] in ("glibc", "jemalloc") and m["in_use_mib"] > 1 and m["mmapped_mib"] > 50
        assert m["free_mib"] <= m["heap_mib"] and m["python_blocks"] > 1000

    def get404():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope", timeout=5)
        except urllib.error.HTTPError as exc:
            return exc.code
    assert await asyncio.to_thread(get404) == 404


def http_get(url: str, headers: dict | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def test_health_and_readiness_tell_details_only_to_the_token(token_server):
    base = f"http://127.0.0.1:{token_server.port}"
    for path, word in (("/healthz", "ok"), ("/readyz", "ready")):
        status, ctype, body = await asyncio.to_thread(http_get, base + path)
        assert (status, body) == (200, word + "\n") and ctype.startswith("text/plain")  # nothing else
        status, _, body = await asyncio.to_thread(http_get, base + path, {"Authorization": "Bearer wrong"})
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    status, _, body = await asyncio.to_thread(http_get, base + "/healthz", {"Authorization": f"Bearer {TOKEN}"})
    details = json.loads(body)
    assert status == 200 and details["profile"] == "offline" and details["state"] == "ready"
    assert set(details["models"]) == {"vad", "turn", "asr", "llm", "tts"}
    status, _, body = await asyncio.to_thread(http_get, base + "/readyz", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["sessions"]["free"] == 8


async def test_session_created_with_model_query(server):
    async with connect(server.url + "?model=gpt-realtime") as ws:
        d = await recv_json(ws)
        assert d["type"] == "session.created" and d["event_id"] == "event_1"
        s = d["session"]
        assert s["model"] == "gpt-realtime" and s["type"] == "realtime"
        assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert s["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"  # the offline profile is adaptive
        assert s["s2s"]["profile"] == "offline"


async def test_token_refused_and_accepted(token_server):
    url = token_server.url
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 401
        assert json.loads(info.value.response.body)["error"]["code"] == "invalid_api_key"
    assert token_server.session_count == 0
    async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
    # the browser way: the token in a subprotocol, next to "realtime"
    async with connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{TOKEN}"]) as ws:
        assert ws.subprotocol == "realtime"
        assert (await recv_json(ws))["type"] == "session.created"
    with pytest.raises(InvalidStatus):
        async with connect(url, subprotocols=["realtime", "openai-insecure-api-key.nope"]):
            pass
    with pytest.raises(AuthError):
        await RealtimeClient(url, "nope").connect()
    async with RealtimeClient(url, TOKEN, ping_interval_s=0) as client:
        assert (await client.wait_for(p.SessionCreated, limit_s=10)).session["id"].startswith("sess_")


async def test_non_loopback_bind_without_token_is_refused(offline_engine):
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
        with pytest.raises(ConfigError, match="token"):
            await serve(offline_engine, host=host, port=0)
    srv = await serve(offline_engine, host="0.0.0.0", port=0, token=TOKEN)
    await srv.close(grace_s=0)
    srv = await serve(offline_engine, host="localhost", port=0)  # loopback by name is fine
    await srv.close(grace_s=0)
    import argparse

    args = argparse.Namespace(host="0.0.0.0", port=0, profile="offline", set=[], token=None, max_sessions=2)
    with pytest.raises(ConfigError):  # refused before any model loads
        run_headless(args)


# --------------------------------------------------------------------------- turns


async def test_spoken_telugu_turn(server, clips):
    async with RealtimeClient(server.url, ping_interval_s=0) as client:
        await client.wait_for(p.SessionCreated)
        t0 = time.perf_counter()
        assert await client.send_audio(clips[0], p.PCM_RATE)
        seen = []
        while True:
            async with asyncio.timeout(60):
                e = await client.recv()
            seen.append(e)
            if isinstance(e, p.S2STurnMetrics):
                break
        kinds = [e.type for e in seen if isinstance(e, p.ServerEvent)]
        for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                  "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
                  "response.created", "response.output_audio_transcript.delta", "response.output_audio.delta",
                  "response.output_audio.done", "response.done"):
            assert t in kinds, f"{t} missing from {kinds}"
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.created")
        completed = next(e for e in seen if isinstance(e, p.InputTranscriptionCompleted))
        assert completed.transcript.strip(), "empty transcript"
        audio = np.concatenate([client.decode_audio(e) for e in seen if isinstance(e, p.ResponseAudioDelta)])
        done = next(e for e in seen if isinstance(e, p.ResponseDone))
        assert done.response["status"] == "completed"
        assert abs(len(audio) / 24 - done.response["s2s"]["audio_ms"]) < 5
        assert np.abs(audio).max() > 0.01, "the reply is silent"
        metrics = seen[-1].metrics
        assert metrics["voice_to_voice_ms"] is not None and metrics["asr_ms"] >= 0  # 0: decoded in the silence
        print(f"\nspoken turn over the wire: {time.perf_counter() - t0:.2f} s, "
              f"voice-to-voice {metrics['voice_to_voice_ms']:.0f} ms, transcript {completed.transcript!r}")


async def test_text_turn_item_create_and_response_create(server):
    async with connect(server.url) as ws:
        await until(ws, "session.created")
        await ws.send(json.dumps(text_item("నమస్కారం"), ensure_ascii=False))
        added = await until(ws, "conversation.item.added")
        assert added["item"]["content"] == [{"type": "input_text", "text": "నమస్కారం"}]
        assert (await recv_json(ws))["type"] == "conversation.item.done"
        await send(ws, type="response.create", event_id="rc1")
        seen: list = []
        done = await until(ws, "response.done", seen=seen)
        kinds = [d["type"] for d in seen]
        assert kinds[0] == "response.created"
        assert "response.output_audio.delta" in kinds and "response.output_audio_transcript.delta" in kinds
        deltas = [d for d in seen if d["type"] == "response.output_audio.delta"]
        assert all(d["response_id"] == done["response"]["id"] and d["item_id"] == f"item_{d['response_id']}"
                   for d in deltas)
        text = "".join(d["delta"] for d in seen if d["type"] == "response.output_audio_transcript.delta")
        assert text.strip() and done["response"]["s2s"]["text"] == text.strip()
        assert done["response"]["status"] == "completed"
        assert (await until(ws, "s2s.turn.metrics"))["metrics"]["llm_tokens"] > 0


async def test_manual_turns_commit_then_response_create(server, clips):
    async with connect(server.url) as ws:
        await until(ws, "session.created")
        await send(ws, type="session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        upd = await until(ws, "session.updated")
        assert upd["session"]["audio"]["input"]["turn_detection"] is None
        await append_pcm(ws, clips[1])
        await send(ws, type="input_audio_buffer.commit", event_id="commit1")
        await send(ws, type="response.create", event_id="rc1")  # before the transcript exists: deferred
        seen: list = []
        await until(ws, "response.done", seen=seen)
        kinds = [d["type"] for d in seen]
        assert "input_audio_buffer.speech_started" not in kinds  # no server VAD
        assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
        assert kinds.index("conversation.item.input_audio_transcription.completed") < kinds.index("response.created")
        assert not [d for d in seen if d["type"] == "error"]
        # committing an empty buffer is an error that names the commit
        await send(ws, type="input_audio_buffer.commit", event_id="commit2")
        err = await until(ws, "error")
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        assert err["error"]["event_id"] == "commit2"


async def test_barge_in_over_the_wire(server, clips, offline_engine):
    with slow_llm(offline_engine):
        async with connect(server.url) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps(text_item("ఒక పెద్ద కథ చెప్పండి"), ensure_ascii=False))
            created_at = time.perf_counter_ns()  # the reply's audio goes out after this
            await send(ws, type="response.create")
            first = await until(ws, "response.output_audio.delta")
            heard_from = time.perf_counter_ns()  # ... and its first audio before this
            await asyncio.sleep(0.5)  # the client has played about half a second
            talked_at = time.perf_counter_ns()  # the barge-in is measured after this
            await append_pcm(ws, clips[2])  # the user speaks over the reply
            seen: list = [first]
            done = await until(ws, "response.done", seen=seen)
            done_seen = time.perf_counter_ns()
            kinds = [d["type"] for d in seen]
            assert "input_audio_buffer.speech_started" in kinds
            assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
            r = done["response"]
            assert r["id"] == first["response_id"]
            assert r["status"] == "cancelled"
            assert r["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
            s2s = r["s2s"]
            # played_ms is the playback position at the barge-in: the time since the reply's first audio
            # went out, capped by the audio made by then (which includes all the client got before the
            # cut; 5 ms for the resampling of the wire), and never more than the whole reply
            cut = kinds.index("input_audio_buffer.speech_started")
            got_ms = 1000 * sum(len(base64.b64decode(d["delta"])) // 2 for d in seen[:cut]
                                if d["type"] == "response.output_audio.delta") / p.PCM_RATE
            assert s2s["played_ms"] > 0
            assert min((talked_at - heard_from) / 1e6, got_ms) - 5 <= s2s["played_ms"]
            assert s2s["played_ms"] <= min(s2s["audio_ms"], (done_seen - created_at) / 1e6)
            assert len(s2s["heard_text"]) <= len(s2s["text"])
            assert r["output"][0]["status"] == "incomplete"
            # the words the user spoke become the next turn
            completed = await until(ws, "conversation.item.input_audio_transcription.completed")
            assert completed["item_id"] != f"item_{r['id']}"


async def test_response_cancel_and_wrong_state_errors(server, offline_engine):
    with slow_llm(offline_engine):
        async with connect(server.url) as ws:
            await until(ws, "session.created")
            await send(ws, type="response.cancel", event_id="c0")
            err = await until(ws, "error")
            assert err["error"]["code"] == "response_cancel_not_active" and err["error"]["event_id"] == "c0"
            await send(ws, type="response.create", event_id="r0")  # nothing to respond to yet
            assert (await until(ws, "error"))["error"]["code"] == "invalid_state"
            await ws.send(json.dumps(text_item("కథ చెప్పు"), ensure_ascii=False))
            await send(ws, type="response.create")
            created = await until(ws, "response.created")
            await send(ws, type="response.create", event_id="r2")
            err = await until(ws, "error")
            assert err["error"]["code"] == "conversation_already_has_active_response"
            assert err["error"]["event_id"] == "r2"
            await send(ws, type="response.cancel", response_id=created["response"]["id"])
            done = await until(ws, "response.done")
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["status_details"]["reason"] == "client_cancelled"
            await send(ws, type="conversation.item.truncate", item_id="item_nope", audio_end_ms=10)
            assert (await until(ws, "error"))["error"]["code"] == "item_not_found"
            await send(ws, type="conversation.item.truncate", item_id=f"item_{created['response']['id']}",
                       audio_end_ms=0)
            t = await until(ws, "conversation.item.truncated")
            assert t["audio_end_ms"] == 0


async def test_four_concurrent_sessions_get_their_own_transcripts(server, english_clips):
    # Whisper base garbles synthetic Telugu unpredictably, so each session speaks English (its language
    # is a per-session setting too) and must get back its own words, not a neighbour's.
    async def one(i: int) -> tuple[str, str, str]:
        async with RealtimeClient(server.url, ping_interval_s=0) as client:
            await client.wait_for(p.SessionCreated)
            await client.update_session(auto_response=i % 2 == 0, language="en")
            await client.wait_for(p.SessionUpdated)
            await client.send_audio(english_clips[i], 16000)
            e = await client.wait_for(p.InputTranscriptionCompleted, limit_s=90)
            status = "none"
            if i % 2 == 0:  # half of them also get a spoken reply, concurrently
                status = (await client.wait_for(p.ResponseDone, limit_s=90)).response["status"]
            return client.session.id, e.transcript, status

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(4)))
    elapsed = time.perf_counter() - t0
    assert len({sid for sid, _, _ in results}) == 4
    for (_, text, _status), (keyword, _) in zip(results, ENGLISH, strict=True):
        assert keyword in text.lower(), f"{text!r} should contain {keyword!r}: {results}"
    assert [status for _, _, status in results] == ["completed", "none", "completed", "none"]
    print(f"\n4 concurrent spoken turns (2 with replies): {elapsed:.1f} s")
    await wait_until(lambda: server.session_count == 0)


async def test_max_sessions_refuses_extra_clients_only(offline_engine):
    srv = await serve(offline_engine, port=0, max_sessions=1, stats_interval_s=0)
    ready = f"http://127.0.0.1:{srv.port}/readyz"
    try:
        assert (await asyncio.to_thread(http_get, ready))[0] == 200
        async with connect(srv.url) as first:
            await until(first, "session.created")
            status, _, body = await asyncio.to_thread(http_get, ready)
            assert status == 503 and json.loads(body)["state"] == "full"  # a balancer sends no more
            async with connect(srv.url) as second:
                err = await recv_json(second)
                assert err["type"] == "error" and err["error"]["code"] == "session_limit_reached"
                with pytest.raises(ConnectionClosed) as info:
                    await recv_json(second)
                assert info.value.rcvd.code == p.CloseCode.TRY_AGAIN_LATER
            await send(first, type="s2s.ping", client_time_ms=1.0)
            assert (await until(first, "s2s.pong"))["client_time_ms"] == 1.0
        await wait_until(lambda: srv.session_count == 0)
        async with connect(srv.url) as third:
            assert (await recv_json(third))["type"] == "session.created"
    finally:
        await srv.close(grace_s=0)


async def test_client_killed_mid_reply_frees_session_and_stops_generation(server, offline_engine):
    with slow_llm(offline_engine, delay_s=0.1) as stamps:  # the reply takes seconds: it is cut mid-way
        others = set(offline_engine.sessions)  # an earlier test's session may still be closing
        ws = await connect(server.url)
        await until(ws, "session.created")
        mine = set(offline_engine.sessions) - others
        assert len(mine) == 1
        await ws.send(json.dumps(text_item("ఒక పెద్ద కథ చెప్పండి"), ensure_ascii=False))
        await send(ws, type="response.create")
        await until(ws, "response.output_audio_transcript.delta")
        ws.transport.abort()  # the laptop's lid closes: no close frame
        await wait_until(lambda: server.session_count == 0, 10)
        assert not mine & set(offline_engine.sessions)  # the engine let go of it
        n = len(stamps)  # the session is closed: its generation was told to stop
        await wait_until(stamps.ended.is_set, 20)  # the generation ended ...
        assert stamps.cancelled, "the generation ran to its end: it was not stopped"  # ... because it was stopped
        # at most the token already on its way when the cancel came
        assert stamps.after_cancel <= 1, "generation went on after the client vanished"
        assert len(stamps) <= n + 1, "generation went on after the client vanished"
    # other sessions carry on
    async with connect(server.url) as ws:
        await until(ws, "session.created")
        await ws.send(json.dumps(text_item("నమస్కారం"), ensure_ascii=False))
        await send(ws, type="response.create")
        assert (await until(ws, "response.done"))["response"]["status"] == "completed"


BAD = [
    ("not json", "invalid_json"),
    ("[1,2]", "invalid_event"),
    ('{"no": "type"}', "invalid_event"),
    ('{"type": "bogus.event"}', "unknown_event_type"),
    ('{"type": "conversation.item.delete", "item_id": "x"}', "unsupported_event"),
    ('{"type": "input_audio_buffer.append"}', "missing_required_parameter"),
    ('{"type": "input_audio_buffer.append", "audio": 5}', "invalid_value"),
    ('{"type": "input_audio_buffer.append", "audio": "@@@"}', "invalid_base64"),
    ('{"type": "input_audio_buffer.append", "audio": "AAAA"}', "invalid_audio"),  # 3 bytes: odd PCM
    ('{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}}}',
     "unsupported_audio_format"),
    ('{"type": "session.update", "session": {"instructions": ["x"]}}', "invalid_value"),
    ('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": []}}',
     "invalid_value"),
    ('{"type": "response.cancel"}', "response_cancel_not_active"),
    ('{"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": 5}', "item_not_found"),
]


async def test_storm_of_bad_messages_leaves_connection_and_server_usable(server):
    wav = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32).decode()
    async with connect(server.url) as ws:
        await until(ws, "session.created")
        expected = []
        for i in range(3):  # a storm: every class, three times over
            for text, code in BAD:
                await ws.send(text)
                expected.append(code)
            await ws.send(b"\x00\x01binary junk")
            expected.append("invalid_json")
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "event_id": f"big{i}",
                                      "audio": "A" * (p.MAX_MESSAGE_BYTES + 10)}))
            expected.append("message_too_large")
            await send(ws, type="input_audio_buffer.append", audio=wav)
            expected.append("invalid_audio")
        codes = []
        for _ in expected:
            d = await until(ws, "error", limit_s=10)
            assert set(d["error"]) >= {"type", "code", "message", "param", "event_id"}
            codes.append(d["error"]["code"])
        assert codes == expected
        # still usable on the same connection
        await ws.send(json.dumps(text_item("నమస్కారం"), ensure_ascii=False))
        await send(ws, type="response.create")
        assert (await until(ws, "response.done"))["response"]["status"] == "completed"
    # a frame over the hard limit closes that connection (1009) and nothing else
    ws = await connect(server.url, max_size=None)
    await until(ws, "session.created")
    with contextlib.suppress(ConnectionClosed):
        await ws.send("x" * (p.HARD_MAX_MESSAGE_BYTES + 1))
    with pytest.raises(ConnectionClosed) as info:
        await until(ws, "never")
    assert info.value.rcvd.code == p.CloseCode.MESSAGE_TOO_BIG
    async with connect(server.url) as ws:
        assert (await recv_json(ws))["type"] == "session.created"


async def test_a_model_failure_in_one_turn_gives_an_error_and_the_next_turn_works(server, offline_engine):
    original = offline_engine.tts.synthesize

    def broken(text):
        raise RuntimeError("the TTS voice fell over")

    async with connect(server.url) as ws:
        await until(ws, "session.created")
        offline_engine.tts.synthesize = broken
        try:
            await ws.send(json.dumps(text_item("నమస్కారం"), ensure_ascii=False))
            await send(ws, type="response.create")
            seen: list = []
            await until(ws, "response.done", seen=seen)
            errors = [d for d in seen if d["type"] == "error"]
            assert errors and errors[0]["error"]["type"] == "server_error"
            assert errors[0]["error"]["s2s_stage"] == "tts"
        finally:
            offline_engine.tts.synthesize = original
        await ws.send(json.dumps(text_item("మళ్ళీ చెప్పు"), ensure_ascii=False))
        await send(ws, type="response.create")
        seen = []
        await until(ws, "response.done", seen=seen)
        assert any(d["type"] == "response.output_audio.delta" for d in seen)


async def test_stats_and_ping(server):
    async with RealtimeClient(server.url, ping_interval_s=0.2) as client:
        stats = await client.wait_for(p.S2SStats, limit_s=5)
        assert stats.gpu == {"used_mb": None, "total_mb": None}
        assert stats.sessions["active"] >= 1 and stats.session["state"] == "listening"
        assert set(stats.models) == {"vad", "turn", "asr", "llm", "tts"}
        await client.wait_for(p.S2SPong)
        rtt = await client.ping()
        assert 0 <= rtt < 5000  # a generous bound: the machine may be busy
        # same machine, same monotonic clock: the true offset is 0, and the estimate is off by at
        # most half the round trip of the ping it came from
        assert abs(client.clock_offset_ms) <= client.min_rtt_ms / 2 + 1


async def test_idle_session_times_out(offline_engine):
    srv = await serve(offline_engine, port=0, idle_timeout_s=0.4, stats_interval_s=0)
    try:
        async with connect(srv.url) as ws:
            await until(ws, "session.created")
            err = await until(ws, "error", limit_s=5)
            assert err["error"]["code"] == "idle_timeout"
            with pytest.raises(ConnectionClosed) as info:
                await recv_json(ws)
            assert info.value.rcvd.code == p.CloseCode.IDLE_TIMEOUT
        await wait_until(lambda: srv.session_count == 0)
    finally:
        await srv.close(grace_s=0)


# --------------------------------------------------------------------------- Encodec on the wire


async def test_encodec_refused_without_weights(server):
    async with connect(server.url) as ws:
        await until(ws, "session.created")
        await send(ws, type="session.update", event_id="u1",
                   session={"audio": {"output": {"format": {"type": "s2s.encodec", "bandwidth": 6}}}})
        err = await until(ws, "error", limit_s=60)
        assert err["error"]["code"] == "codec_unavailable" and err["error"]["event_id"] == "u1"
        assert err["error"]["param"] == "session.audio.output.format"
        # nothing changed: PCM still
        await send(ws, type="session.update", session={"instructions": "చిన్నగా"})
        s = (await until(ws, "session.updated"))["session"]
        assert s["audio"]["output"]["format"]["type"] == "audio/pcm" and s["instructions"] == "చిన్నగా"


async def test_encodec_negotiation_round_trip(offline_engine, clips):
    from remote.codec import BANDWIDTHS, HOP, bytes_per_second, parse_packet

    srv = await serve(offline_engine, port=0, stats_interval_s=0, codec_factory=small_codec)
    try:
        async with RealtimeClient(srv.url, ping_interval_s=0, codec_factory=small_codec) as client:
            await client.wait_for(p.SessionCreated)
            fmt_in = p.AudioFormat(p.ENCODEC_FORMAT, 24000, 6.0)
            fmt_out = p.AudioFormat(p.ENCODEC_FORMAT, 24000, 3.0)
            await client.update_session(input_format=fmt_in, output_format=fmt_out, auto_response=False)
            upd = await client.wait_for(p.SessionUpdated, limit_s=60)
            assert upd.session["audio"]["output"]["format"] == {"type": "s2s.encodec", "rate": 24000, "bandwidth": 3.0}
            assert client.session.input_format == fmt_in
            # Encodec in: packets decode on the server and feed the session (random weights: noise)
            assert await client.send_audio(clips[0][:24000], p.PCM_RATE)
            await client.flush_audio()
            await client.send(p.InputAudioBufferAppend(audio=b"EC\x01garbage"))
            err = await client.wait_for(p.Error, limit_s=30)
            assert err.code == "invalid_audio"
            # a packet that announces more than 2 s is refused before any decoding
            from remote.codec import MAX_FRAMES, MAX_PACKET_FRAMES, build_packet

            frames = MAX_PACKET_FRAMES + 1
            big = build_packet(np.zeros((8, frames), np.uint16), 6.0, frames * HOP, max_frames=MAX_FRAMES)
            await client.send(p.InputAudioBufferAppend(audio=big))
            err = await client.wait_for(p.Error, limit_s=30)
            assert err.code == "invalid_audio" and "at most 150" in err.message
            # Encodec out: a text turn's reply arrives as packets at 3 kbps
            await client.send_text("నమస్కారం")
            await client.create_response()
            packets, pcm = [], []
            while True:
                async with asyncio.timeout(60):
                    e = await client.recv()
                if isinstance(e, p.ResponseAudioDelta):
                    packets.append(e.audio)
                    pcm.append(client.decode_audio(e))
                if isinstance(e, p.ResponseDone):
                    done = e
                    break
        assert done.response["status"] == "completed"
        parsed = [parse_packet(b) for b in packets]
        assert all(pk.bandwidth == 3.0 and pk.codes.shape[0] == 4 for pk in parsed)
        samples = sum(pk.num_samples for pk in parsed)
        audio_ms = done.response["s2s"]["audio_ms"]
        assert abs(samples / 24 - audio_ms) <= HOP / 24 + 1
        assert sum(len(x) for x in pcm) == samples
        wire = sum(len(b) for b in packets)
        bps = wire / (samples / 24000)
        assert bps == pytest.approx(bytes_per_second(3.0), rel=0.1)
        assert bps < p.PCM_BYTES_PER_SECOND / 50
        assert 3.0 in BANDWIDTHS
    finally:
        await srv.close(grace_s=0)


# --------------------------------------------------------------------------- a stock client, a real shutdown


async def test_stock_openai_sdk_holds_a_spoken_turn(token_server, clips):
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{token_server.port}/v1", api_key=TOKEN)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"],
                                           "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                               "turn_detection": {"type": "server_vad"}},
                                                     "output": {"format": {"type": "audio/pcm", "rate": 24000}}}})
        pcm = clips[0]
        for i in range(0, len(pcm), 2400):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 2400].tobytes()).decode())
        kinds, transcript, audio_bytes = [], None, 0
        async for event in conn:
            kinds.append(event.type)
            if event.type == "conversation.item.input_audio_transcription.completed":
                transcript = event.transcript
            elif event.type == "response.output_audio.delta":
                audio_bytes += len(base64.b64decode(event.delta))
            elif event.type == "response.done":
                assert event.response.status == "completed"
                break
            elif event.type == "error":
                pytest.fail(f"error from the server: {event.error}")
    assert kinds[0] == "session.created" and "session.updated" in kinds
    assert transcript and audio_bytes > 4800  # some spoken reply (> 0.1 s; the 270M model can be terse)


async def test_sigterm_finishes_the_turn_then_closes_with_1001():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remote.server", "--port", "0", "--grace", "10", "--set", "llm.max_tokens=24",
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    lines: list[str] = []
    try:
        port = None
        async with asyncio.timeout(120):
            while port is None:
                line = (await proc.stderr.readline()).decode()
                assert line, "the server exited: " + "".join(lines)
                lines.append(line)
                m = re.search(r"serving ws://127\.0\.0\.1:(\d+)/", line)
                port = int(m.group(1)) if m else None
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps(text_item("నమస్కారం"), ensure_ascii=False))
            await send(ws, type="response.create")
            await until(ws, "response.created")
            proc.send_signal(signal.SIGTERM)
            seen: list = []
            with pytest.raises(ConnectionClosed) as info:
                await until(ws, "never", seen=seen, limit_s=30)
            kinds = [d["type"] for d in seen]
            assert "response.done" in kinds  # the running turn was allowed to finish
            assert [d for d in seen if d["type"] == "response.done"][0]["response"]["status"] == "completed"
            assert seen[-1]["type"] == "error" and seen[-1]["error"]["code"] == "server_shutting_down"
            assert info.value.rcvd.code == p.CloseCode.GOING_AWAY
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class GatedLLM(FakeLLM):
    """A fake LLM that writes its first ``before`` words, then holds the rest while ``gate`` is clear
    (until the reply is cancelled): a reply that streams for as long as a test needs, no timing."""

    def __init__(self, before: int = 2):
        super().__init__(delay=0.0)
        self.before = before
        self.gate = threading.Event()
        self.gate.set()

    def stream(self, messages, max_tokens, cancel, threads=None):  # noqa: ANN001, ANN201
        for i, token in enumerate(super().stream(messages, max_tokens, cancel, threads)):
            if i == self.before:
                while not self.gate.wait(0.01):  # a worker thread: the event loop is not blocked
                    if cancel.is_set():
                        self.cancelled.set()
                        return
            yield token


async def test_recycling_takes_no_new_session_and_lets_the_open_one_finish_its_conversation():
    """``--recycle-rss-mib``: past the bound (1 MiB: any process) readiness turns 503 ``recycling``
    and a new client is refused with a reason to retry, while the open session goes on with turns
    of its own; the recycler returns only once that session has ended."""
    from remote.server import recycle_when_over

    engine = fake_engine()
    srv = await serve(engine, port=0, stats_interval_s=0, idle_timeout_s=0, recycle_rss_mib=1.0,
                      recycle_check_s=0.05, recycle_wait_s=60)
    base, stop = f"http://127.0.0.1:{srv.port}", asyncio.Event()
    try:
        status, _, body = await asyncio.to_thread(http_get, base + "/healthz")
        assert status == 200 and json.loads(body)["memory"]["rss_mib"] > 1.0  # what the recycler reads
        async with connect(srv.url) as ws:
            await until(ws, "session.created")
            recycler = asyncio.create_task(recycle_when_over(srv, stop))
            await wait_until(lambda: srv.state == "recycling")
            status, _, body = await asyncio.to_thread(http_get, base + "/readyz")
            assert status == 503 and json.loads(body)["state"] == "recycling"  # a balancer sends no more
            with pytest.raises(InvalidStatus) as info:
                async with connect(srv.url):
                    pass
            refused = json.loads(info.value.response.body)["error"]
            assert info.value.response.status_code == 503 and refused["code"] == "server_shutting_down"
            assert "try again" in refused["message"]
            for text in ("నమస్కారం", "నాకు ఒక కథ చెప్పండి."):  # the open conversation goes on
                await ws.send(json.dumps(text_item(text), ensure_ascii=False))
                await send(ws, type="response.create")
                assert (await until(ws, "response.done"))["response"]["status"] == "completed"
            await asyncio.sleep(0.3)
            assert not recycler.done()  # still waiting for the open session
        async with asyncio.timeout(10):
            assert await recycler  # the session ended: time to start afresh
    finally:
        stop.set()
        await srv.close(grace_s=0)
        engine.close()


async def test_recycling_waits_no_longer_than_recycle_wait_and_a_stop_ends_the_watch():
    from remote.server import recycle_when_over

    engine = fake_engine()
    srv = await serve(engine, port=0, stats_interval_s=0, idle_timeout_s=0, recycle_rss_mib=1.0,
                      recycle_check_s=0.05, recycle_wait_s=0.5)
    try:
        async with connect(srv.url) as ws:
            await until(ws, "session.created")
            async with asyncio.timeout(10):
                assert await recycle_when_over(srv, asyncio.Event())
            assert srv.session_count == 1  # recycle_wait ran out: the drain (close) ends it
            await srv.close(grace_s=0)
            with pytest.raises(ConnectionClosed) as info:
                await until(ws, "never", limit_s=10)
            assert info.value.rcvd.code == p.CloseCode.GOING_AWAY
    finally:
        await srv.close(grace_s=0)
    quiet = await serve(engine, port=0, stats_interval_s=0, recycle_rss_mib=1e9, recycle_check_s=60)
    try:
        stop = asyncio.Event()
        watch = asyncio.create_task(recycle_when_over(quiet, stop))
        await asyncio.sleep(0.1)
        assert not watch.done() and quiet.state == "ready"  # under the bound: it only watches
        stop.set()  # SIGTERM: the watch ends at once, without recycling
        async with asyncio.timeout(5):
            assert not await watch
    finally:
        await quiet.close(grace_s=0)
        engine.close()


async def test_serving_ends_in_a_recycle_with_75_or_on_a_stop_with_0():
    """The command's serving loop (``remote.headless.serve_until_stopped``): past the bound with no
    session open it drains and returns 75 for the supervisor; under it, a stop (SIGTERM) drains
    and returns 0."""
    from remote.headless import serve_until_stopped

    engine = fake_engine()
    srv = await serve(engine, port=0, stats_interval_s=0, recycle_rss_mib=1.0, recycle_check_s=0.05)
    port = srv.port
    async with asyncio.timeout(10):
        assert await serve_until_stopped(srv, asyncio.Event()) == 75
    with pytest.raises(OSError):  # drained: the listener is closed
        await asyncio.open_connection("127.0.0.1", port)
    srv = await serve(engine, port=0, stats_interval_s=0, recycle_rss_mib=1e9, recycle_check_s=60)
    port, stop = srv.port, asyncio.Event()
    serving = asyncio.create_task(serve_until_stopped(srv, stop))
    await asyncio.sleep(0.1)
    assert not serving.done()
    stop.set()
    async with asyncio.timeout(10):
        assert await serving == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    engine.close()


async def test_a_recycle_bound_under_the_loaded_engine_is_a_clear_error_not_a_restart_loop():
    """``--recycle-rss-mib`` under what the offline engine holds once loaded: the command says so
    and exits 1 (a supervisor restarting it would only meet the same error), no traceback."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remote.server", "--port", "0", "--no-web", "--recycle-rss-mib", "64",
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(180):
            out = (await proc.stderr.read()).decode()
            assert await proc.wait() == 1, out
        assert re.search(r"error: --recycle-rss-mib 64 is under what the loaded engine already holds "
                         r"\(RSS \d+ MiB\)", out), out
        assert "Traceback" not in out and "serving ws://" not in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_grace_running_out_mid_reply_sends_the_error_then_1001_and_keeps_the_completed_turn():
    """The drain (what SIGTERM starts) with a reply still streaming when ``--grace`` runs out: the
    client gets ``server_shutting_down``, then close 1001; the turn that had completed is whole, in
    the events the client received and in the session's history (the server keeps nothing else)."""
    llm = GatedLLM()
    engine = fake_engine(llm=llm)
    srv = await serve(engine, port=0, grace_s=0.2, stats_interval_s=0, idle_timeout_s=0, ping_interval_s=None)
    first, second = "నా పేరు రాము.", "నాకు ఒక కథ చెప్పండి."
    reply = " ".join(REPLY.split(" ")[:engine.profile.llm.max_tokens])  # what a completed reply says
    seen: list[dict] = []
    try:
        async with connect(srv.url) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps(text_item(first), ensure_ascii=False))
            await send(ws, type="response.create")
            done = await until(ws, "response.done", seen=seen)
            assert done["response"]["status"] == "completed"
            (conn,) = srv.connections
            history = conn.session.history
            llm.gate.clear()  # the next reply stops after its first words, until it is cancelled
            written = llm.yielded
            await ws.send(json.dumps(text_item(second), ensure_ascii=False))
            await send(ws, type="response.create")
            streaming = (await until(ws, "response.created", seen=seen))["response"]["id"]
            await until(ws, "response.output_audio.delta", seen=seen)  # the reply is streaming
            closing = asyncio.create_task(srv.close())  # the drain; grace runs out, the reply cannot end
            with pytest.raises(ConnectionClosed) as info:
                await until(ws, "never", seen=seen, limit_s=30)
        async with asyncio.timeout(30):
            await closing
        async with asyncio.timeout(10):
            await asyncio.to_thread(llm.cancelled.wait)  # the held reply's generation was stopped
    finally:
        llm.gate.set()
        await srv.close(grace_s=0)
        engine.close()

    # the error, then 1001; the reply was cut off, not finished
    assert seen[-1]["type"] == "error" and seen[-1]["error"]["code"] == "server_shutting_down"
    assert seen[-1]["error"]["type"] == "server_error"
    assert info.value.rcvd is not None and info.value.rcvd.code == p.CloseCode.GOING_AWAY
    assert not [d for d in seen if d["type"] == "response.done" and d["response"]["id"] == streaming
                and d["response"]["status"] == "completed"]
    assert llm.yielded - written <= llm.before + 1  # it never got past the gate

    # the completed turn, as the client received it: the user item and the whole assistant item
    users = [d["item"] for d in seen if d["type"] == "conversation.item.done" and d["item"]["role"] == "user"]
    assert users[0]["content"] == [{"type": "input_text", "text": first}]
    assistant = done["response"]["output"][0]
    assert assistant["role"] == "assistant" and assistant["status"] == "completed"
    assert assistant["content"][0]["transcript"] == reply
    item_done = [d["item"] for d in seen if d["type"] == "conversation.item.done" and d["item"]["id"] == assistant["id"]]
    assert item_done == [assistant]
    # ... and in the session's history after the shutdown: the completed turn first, untouched
    assert history.messages[:2] == [{"role": "user", "content": first}, {"role": "assistant", "content": reply}]
    assert history.messages[2] == {"role": "user", "content": second}


# --------------------------------------------------------------------------- session reset, network time


def server_session(server, session_id: str):
    """The engine session behind one connection (to look at its history)."""
    return next(c.session for c in server.connections if c.session.id == session_id)


@contextlib.contextmanager
def recorded_prompts(engine):
    """Record the messages each LLM call is given (the prompt)."""
    original = engine.llm.stream
    prompts: list[list[dict]] = []

    def stream(messages, *args, **kwargs):
        prompts.append([dict(m) for m in messages])
        yield from original(messages, *args, **kwargs)

    engine.llm.stream = stream
    try:
        yield prompts
    finally:
        del engine.llm.stream


async def text_turn(client: RealtimeClient, text: str) -> tuple[p.ResponseDone, p.S2STurnMetrics]:
    await client.send_text(text)
    await client.create_response()
    done = await client.wait_for(p.ResponseDone, limit_s=60)
    metrics = await client.wait_for(p.S2STurnMetrics, limit_s=10)
    return done, metrics


async def test_session_reset_forgets_the_history_over_the_wire(server, offline_engine):
    first, second = "నా పేరు రాము.", "హైదరాబాద్ ఎక్కడ ఉంది?"
    async with RealtimeClient(server.url, ping_interval_s=0) as client:
        created = await client.wait_for(p.SessionCreated)
        session = server_session(server, created.session["id"])
        with recorded_prompts(offline_engine) as prompts:
            await text_turn(client, first)
            assert [m["role"] for m in session.history.messages] == ["user", "assistant"]
            await client.reset_session()
            done = await client.wait_for(p.S2SSessionResetDone, limit_s=10)
            assert done.session_id == created.session["id"] and done.cancelled_response_id is None
            assert session.history.messages == []
            await text_turn(client, second)
        assert any(first in m["content"] for m in prompts[0])
        users = [m["content"] for m in prompts[1] if m["role"] == "user"]
        assert users == [second], prompts[1]  # nothing of the first exchange is in the new prompt
        assert not any(first in m["content"] for m in prompts[1])
        assert client.connections == 1  # the same connection and session all along
        assert server_session(server, created.session["id"]) is session


async def test_session_reset_cancels_the_running_reply_first(server, offline_engine):
    with slow_llm(offline_engine):
        async with RealtimeClient(server.url, ping_interval_s=0) as client:
            created = await client.wait_for(p.SessionCreated)
            await client.send_text("ఒక పెద్ద కథ చెప్పండి")
            await client.create_response()
            started = await client.wait_for(p.ResponseCreated, limit_s=30)
            await client.wait_for(p.ResponseTranscriptDelta, limit_s=30)
            await client.reset_session()
            seen = []
            async with asyncio.timeout(15):
                while not isinstance(e := await client.recv(), p.S2SSessionResetDone):
                    seen.append(e)
            done = next(e for e in seen if isinstance(e, p.ResponseDone))  # before reset_done
            assert done.response["id"] == started.response["id"] and done.response["status"] == "cancelled"
            assert done.response["status_details"]["reason"] == "client_cancelled"
            assert e.cancelled_response_id == started.response["id"]
            assert server_session(server, created.session["id"]).history.messages == []


async def test_network_time_is_measured_one_way_on_loopback(server, clips):
    async with RealtimeClient(server.url, ping_interval_s=0.2) as client:
        await client.wait_for(p.SessionCreated)
        await client.wait_for(p.S2SPong, limit_s=5)  # a clock offset exists
        figures = []
        # a text turn: the turn ends with the response.create message
        done, metrics = await text_turn(client, "నమస్కారం")
        net = metrics.network
        assert net["turn_end_message_type"] == "response.create"
        assert net["first_audio_sent_server_ms"] > net["turn_end_received_server_ms"]
        assert net["first_audio_event_id"].startswith("event_")
        figures.append(("text", client.network_timing(done.response["id"])))
        # a spoken turn: the append that carried the end of speech ended it
        pcm = clips[0]
        step = p.PCM_RATE // 10
        for i in range(0, len(pcm), step):
            await client.send_audio(pcm[i:i + step], p.PCM_RATE)
            await asyncio.sleep(0.02)
        metrics = await client.wait_for(p.S2STurnMetrics, limit_s=90)
        assert metrics.network["turn_end_message_type"] == "input_audio_buffer.append"
        figures.append(("spoken", client.network_timing(metrics.response_id)))
        for kind, nt in figures:
            assert nt is not None, kind
            for leg in (nt.up_ms, nt.down_ms, nt.total_ms):  # measured, never negative, bounded generously
                assert leg is not None and 0 <= leg < 2000, (kind, nt)
            # the sum does not depend on the clock offset
            assert nt.total_ms == pytest.approx(max(0.0, nt.up_raw_ms + nt.down_raw_ms), abs=1e-6)
            print(f"\n{kind} turn over 127.0.0.1: up {nt.up_ms:.2f} ms, down {nt.down_ms:.2f} ms "
                  f"(raw {nt.up_raw_ms:.3f} / {nt.down_raw_ms:.3f}), offset {client.clock_offset_ms:.3f} ms, "
                  f"ping rtt {nt.offset_rtt_ms:.3f} ms")


async def test_turn_detection_type_chooses_the_end_of_turn_policy(server, clips):
    """semantic_vad: the engine's adaptive policy (the offline profile's default); server_vad with
    a silence: a fixed wait; both are what a spoken turn's metrics then report."""
    def td_of(e) -> dict:
        return e.session["audio"]["input"]["turn_detection"]

    async def spoken_policy(client) -> dict:
        assert await client.send_audio(clips[0], p.PCM_RATE)
        return (await client.wait_for(p.S2STurnMetrics, limit_s=60)).metrics

    async with RealtimeClient(server.url, ping_interval_s=0) as client:
        created = await client.wait_for(p.SessionCreated)
        assert td_of(created)["type"] == "semantic_vad" and td_of(created)["eagerness"] == "auto"
        await client.update_session(silence_duration_ms=700)
        td = td_of(await client.wait_for(p.SessionUpdated))
        assert td["type"] == "server_vad" and td["silence_duration_ms"] == 700 and "eagerness" not in td
        m = await spoken_policy(client)
        assert m["turn_policy"] == "silence"  # (the audio goes faster than real time: no wait to check)
        await client.send(p.SessionUpdate(session=p.SessionPatch(
            turn_detection=p.TurnDetection(type="semantic_vad", eagerness="high"))))
        td = td_of(await client.wait_for(p.SessionUpdated))
        assert td["type"] == "semantic_vad" and td["eagerness"] == "high"
        m = await spoken_policy(client)
        assert m["turn_policy"] in ("combined", "deadline", "max-silence", "fallback-silence")
    async with RealtimeClient(server.url, ping_interval_s=0) as client:
        await client.wait_for(p.SessionCreated)
        await client.send(p.SessionUpdate(session=p.SessionPatch(
            turn_detection=p.TurnDetection(type="semantic_vad", eagerness="eager"))))
        err = await client.wait_for(p.Error)
        assert "eagerness" in (err.param or err.message)


# --------------------------------------------------------------------------- the documented close codes


def close_codes_sent() -> dict[int, set[str]]:
    """Every WebSocket close code a client can get from the server, and who sends it: ``server``
    (each ``CloseCode`` member remote/server.py names, or an integer it passes to a ``close``) and
    ``library`` (each close code the ``websockets`` code under it closes or fails a connection with:
    its sans-I/O protocol and its asyncio connection and server; 1005 and 1006 only report a close
    locally and are never sent)."""
    import ast

    import websockets
    from websockets.frames import EXTERNAL_CLOSE_CODES, CloseCode

    sent: dict[int, set[str]] = {}
    tree = ast.parse((ROOT / "remote" / "server.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute | ast.Name) and (
                getattr(node.value, "attr", None) or getattr(node.value, "id", None)) == "CloseCode":
            sent.setdefault(int(p.CloseCode[node.attr]), set()).add("server")
        elif isinstance(node, ast.Call) and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in (
                "close", "_refuse", "fail"):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(arg, ast.Constant) and type(arg.value) is int and 1000 <= arg.value <= 4999:
                    sent.setdefault(arg.value, set()).add("server")
    lib = Path(websockets.__file__).parent
    for name in ("protocol.py", "asyncio/connection.py", "asyncio/server.py"):
        for member in re.findall(r"CloseCode\.([A-Z_]+)", (lib / name).read_text()):
            if CloseCode[member] in EXTERNAL_CLOSE_CODES:
                sent.setdefault(int(CloseCode[member]), set()).add("library")
    return sent


def documented_close_codes() -> dict[int, tuple[set[str], str]]:
    """The close-code table of docs/protocol.md: code -> (sent by, when)."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc.split("**Close codes**", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{4}) \| ([^|]+) \| (.+) \|$", section, flags=re.M)
    return {int(code): ({s.strip() for s in by.split(",")}, when) for code, by, when in rows}


async def test_the_protocol_doc_lists_every_close_code_the_server_sends():
    sent, documented = close_codes_sent(), documented_close_codes()
    assert {1000, 1001, 1011, 1013, 4000} <= set(sent)  # the scan found what is known to be there
    assert {code: by for code, (by, _) in documented.items()} == sent
    assert "keepalive ping timeout" in documented[1011][1]  # the library's reason, when pings go unanswered

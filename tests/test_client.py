"""The client library against a small scripted Realtime server (no engine needed).

The fake server below is a test double at the socket boundary: it speaks just enough of the
protocol (session.created, s2s.pong with a known clock offset and delay) and can drop connections
on cue, so reconnection, backoff, RTT and clock-offset estimates are checked exactly. The client
against the real engine is exercised in tests/test_server.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from http import HTTPStatus

import numpy as np
import pytest
from websockets.asyncio.server import serve

from remote import protocol as p
from remote.client import AuthError, ConnectionState, NotConnected, RealtimeClient, normalize_url

pytestmark = pytest.mark.asyncio(loop_scope="session")

OFFSET_MS = 5000.0  # the fake server's clock runs this far ahead of ours
DELAY_S = 0.02  # and it answers pings this late
UP_MS, DOWN_MS = 30.0, 45.0  # one-way network times the fake server's turn stamps pretend


def server_clock_ms() -> float:
    return time.perf_counter_ns() / 1e6 + OFFSET_MS


class FakeRealtimeServer:
    """Scripted server: records what it gets, answers pings, drops connections when told."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.received: list[dict] = []
        self.connections = 0
        self.live: list = []
        self._server = None

    async def __aenter__(self) -> FakeRealtimeServer:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._check)
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1/realtime"

    def _check(self, connection, request):
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, json.dumps({"error": {"message": "bad token"}}))
        return None

    async def _handler(self, ws):
        self.connections += 1
        self.live.append(ws)
        cfg = p.SessionConfig(id=f"sess_{self.connections}")
        await ws.send(p.serialize(p.SessionCreated(event_id="event_1", session=cfg.to_dict())))
        n = 0  # messages on this connection, as the real server counts them
        async for message in ws:
            n += 1
            received_ms = server_clock_ms()
            d = json.loads(message)
            self.received.append(d)
            if d["type"] == "s2s.ping":
                await asyncio.sleep(DELAY_S)
                server_ms = time.perf_counter_ns() / 1e6 - DELAY_S * 1000 / 2 + OFFSET_MS
                await ws.send(p.serialize(p.S2SPong(client_time_ms=d["client_time_ms"], server_time_ms=server_ms)))
            elif d["type"] == "session.update":
                cfg = cfg.apply(p.SessionPatch.parse(d["session"]))
                await ws.send(p.serialize(p.SessionUpdated(session=cfg.to_dict())))
            elif d["type"] == "response.create":
                audio = (np.sin(np.arange(2400) / 10) * 10000).astype("<i2").tobytes()
                sent_ms = server_clock_ms()
                await ws.send(p.serialize(p.ResponseAudioDelta(response_id="resp_1", item_id="item_resp_1",
                                                               audio=audio)))
                # stamps as if the request took UP_MS to arrive and the audio DOWN_MS to get back
                network = {"first_audio_sent_server_ms": sent_ms - DOWN_MS, "first_audio_event_id": "event_2",
                           "turn_end_message": n, "turn_end_message_type": "response.create",
                           "turn_end_received_server_ms": received_ms + UP_MS}
                await ws.send(p.serialize(p.S2STurnMetrics(response_id="resp_1", metrics={"turn_id": "turn_1"},
                                                           network=network)))
            elif d["type"] == "s2s.session.reset":
                await ws.send(p.serialize(p.S2SSessionResetDone(session_id=cfg.id)))

    def of_type(self, kind: str) -> list[dict]:
        return [d for d in self.received if d["type"] == kind]


async def settle(cond, limit_s: float = 5.0) -> None:
    for _ in range(int(limit_s * 100)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not met")


async def test_connect_send_and_receive_typed_events():
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0, model="s2s") as c:
        assert "model=s2s" in c.url
        assert (await c.recv()) == ConnectionState("connecting", c.url)
        assert (await c.recv()) == ConnectionState("connected", c.url)
        created = await c.wait_for(p.SessionCreated)
        assert created.session["id"] == "sess_1" and c.session.id == "sess_1"
        await c.send_text("నమస్కారం", item_id="mine")
        await c.create_response()
        delta = await c.wait_for("response.output_audio.delta")
        audio = c.decode_audio(delta)
        assert audio.dtype == np.float32 and len(audio) == 2400 and 0.2 < np.abs(audio).max() < 0.4
        await c.cancel_response("resp_1")
        await c.truncate("item_resp_1", 1200)
        await c.update_session(turn_detection=False, instructions="చిన్నగా", language="te")
        upd = await c.wait_for(p.SessionUpdated)
        assert upd.session["audio"]["input"]["turn_detection"] is None and c.session.turn_detection is None
        await c.commit()
        await c.clear_audio()
        await settle(lambda: len(srv.received) >= 7)
    kinds = [d["type"] for d in srv.received]
    assert kinds == ["conversation.item.create", "response.create", "response.cancel", "conversation.item.truncate",
                     "session.update", "input_audio_buffer.commit", "input_audio_buffer.clear"]
    item = srv.received[0]["item"]
    assert item == {"type": "message", "role": "user", "id": "mine",
                    "content": [{"type": "input_text", "text": "నమస్కారం"}]}
    assert srv.received[2]["response_id"] == "resp_1"
    assert srv.received[3] == {"type": "conversation.item.truncate", "item_id": "item_resp_1", "content_index": 0,
                               "audio_end_ms": 1200}
    assert srv.received[4]["session"]["instructions"] == "చిన్నగా"
    for d in srv.received:  # everything we send is a valid client event
        p.parse_client_event(json.dumps(d))


async def test_send_audio_resamples_and_splits_to_the_message_limit():
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0, max_message_bytes=20_000) as c:
        await c.wait_for(p.SessionCreated)
        one_second_16k = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
        assert await c.send_audio(one_second_16k, 16000)
        assert await c.send_audio(np.zeros(4800, np.int16), 24000)
        await c.commit()  # flushes what the resampler holds back
        await settle(lambda: srv.of_type("input_audio_buffer.commit"))
        appends = srv.of_type("input_audio_buffer.append")
        assert all(len(json.dumps(d)) <= 20_000 for d in appends)
        assert len(appends) > 3
        total = sum(len(base64.b64decode(d["audio"])) for d in appends)
        assert abs(total / 2 - (24000 + 4800)) < 10  # 1 s at 16 kHz is 24000 samples at 24 kHz


async def test_rtt_and_clock_offset():
    """Bounds that hold on a busy machine: every round trip includes the server's DELAY_S, and the
    offset estimate is off by at most half of what the best round trip spent outside that delay
    (the server stamps its clock in the middle of its delay)."""
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0.05) as c:
        rtt = await c.ping()
        assert DELAY_S * 1000 <= rtt < DELAY_S * 1000 + 5000
        await settle(lambda: len(srv.of_type("s2s.ping")) >= 5)
        await settle(lambda: len(c._samples) >= 5)
        rtts = [r for r, _ in c._samples]
        assert c.min_rtt_ms == min(rtts) and min(rtts) >= DELAY_S * 1000  # the best sample's round trip
        error_bound = (c.min_rtt_ms - DELAY_S * 1000) / 2 + 1  # + 1 ms: the server's own handling
        assert abs(c.clock_offset_ms - OFFSET_MS) <= error_bound
        before = time.perf_counter_ns() / 1e6
        local = c.server_to_local_ms(before + OFFSET_MS)
        assert abs(local - before) <= error_bound


async def test_reconnects_with_backoff_and_restores_the_session_settings():
    async with FakeRealtimeServer() as srv:
        c = RealtimeClient(srv.url, ping_interval_s=0, backoff_initial_s=0.05, backoff_max_s=0.2)
        async with c:
            await c.wait_for(p.SessionCreated)
            await c.update_session(turn_detection=False, language="en")
            await c.wait_for(p.SessionUpdated)
            srv.live[-1].transport.abort()  # the network drops
            states = []
            async with asyncio.timeout(5):
                while True:
                    e = await c.recv()
                    if isinstance(e, ConnectionState):
                        states.append(e)
                        if e.status == "connected":
                            break
            assert [s.status for s in states] == ["reconnecting", "connecting", "connected"]
            assert states[0].attempt == 1 and 0.04 <= states[0].retry_in_s <= 0.06
            assert states[0].retry_countdown_s() is not None and states[0].error
            created = await c.wait_for(p.SessionCreated)
            assert created.session["id"] == "sess_2"
            upd = await c.wait_for(p.SessionUpdated)  # the settings were sent again
            assert upd.session["audio"]["input"]["turn_detection"] is None
            assert upd.session["audio"]["input"]["transcription"]["language"] == "en"
            assert srv.connections == 2 and c.connections == 2


async def test_backoff_grows_and_gives_up():
    srv = FakeRealtimeServer()
    await srv.__aenter__()
    c = RealtimeClient(srv.url, ping_interval_s=0, backoff_initial_s=0.05, backoff_max_s=0.15, max_retries=3)
    await c.connect()
    await c.wait_for(p.SessionCreated)
    await srv.stop()  # the server goes away for good
    states = []
    async with asyncio.timeout(10):
        async for e in c.events():
            if isinstance(e, ConnectionState):
                states.append(e)
    retries = [s for s in states if s.status == "reconnecting"]
    assert [s.attempt for s in retries] == [1, 2, 3]
    delays = [s.retry_in_s for s in retries]
    assert 0.04 <= delays[0] <= 0.06 and 0.08 <= delays[1] <= 0.12 and 0.12 <= delays[2] <= 0.18
    assert states[-1].status == "closed" and "gave up after 3" in states[-1].error
    assert not await c.send_audio(np.zeros(100, np.float32))
    with pytest.raises(NotConnected):
        await c.create_response()
    await c.close()


async def test_refused_token_is_not_retried():
    async with FakeRealtimeServer(token="right") as srv:
        with pytest.raises(AuthError, match="bad token"):
            await RealtimeClient(srv.url, "wrong").connect()
        async with RealtimeClient(srv.url, "right", ping_interval_s=0) as c:
            assert (await c.wait_for(p.SessionCreated)).session["id"]
        assert srv.connections == 1


async def test_no_reconnect_when_disabled_and_close_ends_events():
    async with FakeRealtimeServer() as srv:
        c = RealtimeClient(srv.url, ping_interval_s=0, reconnect=False)
        await c.connect()
        await c.wait_for(p.SessionCreated)
        await srv.live[-1].close(1011, "boom")
        async with asyncio.timeout(5):
            last = [e async for e in c.events()][-1]
        assert last.status == "closed" and last.close_code == 1011
        await c.close()
        c2 = RealtimeClient(srv.url, ping_interval_s=0)
        await c2.connect()
        await c2.close()
        async with asyncio.timeout(5):
            rest = [e async for e in c2.events()]
        assert rest[-1].status == "closed" and rest[-1].error is None


async def test_encodec_input_is_encoded_on_the_client():
    from remote.codec import EncodecCodec, parse_packet

    async with FakeRealtimeServer() as srv, RealtimeClient(
        srv.url, ping_interval_s=0, codec_factory=lambda: EncodecCodec.random(seed=0, small=True)
    ) as c:
        await c.wait_for(p.SessionCreated)
        await c.update_session(input_format=p.AudioFormat(p.ENCODEC_FORMAT, 24000, 1.5))
        await c.wait_for(p.SessionUpdated)
        assert c.session.input_format.is_encodec
        assert await c.send_audio((0.1 * np.sin(np.arange(8000) / 3)).astype(np.float32), 16000)
        await c.commit()  # flushes the partial frame first
        await settle(lambda: srv.of_type("input_audio_buffer.commit"))
    packets = [parse_packet(base64.b64decode(d["audio"])) for d in srv.of_type("input_audio_buffer.append")]
    assert packets and all(pk.bandwidth == 1.5 for pk in packets)
    assert abs(sum(pk.num_samples for pk in packets) - 12000) < 10


async def test_url_normalisation():
    assert normalize_url("ws://localhost:8765") == "ws://localhost:8765/v1/realtime"
    assert normalize_url("ws://localhost:8765/") == "ws://localhost:8765/v1/realtime"
    assert normalize_url("http://pod:80/v1/realtime?model=x") == "ws://pod:80/v1/realtime?model=x"
    assert normalize_url("https://h/custom") == "wss://h/custom"
    assert normalize_url("localhost:8765") == "ws://localhost:8765/v1/realtime"  # what s2s-tui --remote takes


async def test_reset_session_keeps_the_connection():
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0) as c:
        await c.wait_for(p.SessionCreated)
        await c.reset_session()
        done = await c.wait_for(p.S2SSessionResetDone)
        assert done.session_id == "sess_1" and done.cancelled_response_id is None
        assert srv.of_type("s2s.session.reset") == [{"type": "s2s.session.reset"}]
        assert srv.connections == 1 and c.connected


async def test_network_timing_one_way_with_a_clock_offset():
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0) as c:
        await c.wait_for(p.SessionCreated)
        assert c.network_timing("resp_1") is None
        for _ in range(4):  # pings by hand: the fake server is idle when the turn's messages come
            await c.ping()
        await c.send_text("నమస్కారం")
        await c.create_response()
        metrics = await c.wait_for(p.S2STurnMetrics)
        nt = c.network_timing("resp_1")
        assert nt is c.last_network and metrics.network["turn_end_message_type"] == "response.create"
        # the server's clock is 5 s ahead: only the offset estimate makes these right. Each leg is
        # the pretended time plus the real loopback transit (>= 0, small unless the machine is busy),
        # give or take the offset's error; their sum does not depend on the offset at all.
        err = nt.offset_rtt_ms / 2 + 1
        assert UP_MS - err <= nt.up_ms <= UP_MS + err + 2000
        assert DOWN_MS - err <= nt.down_ms <= DOWN_MS + err + 2000
        assert UP_MS + DOWN_MS - 1 <= nt.total_ms <= UP_MS + DOWN_MS + 2000
        assert not nt.clamped and nt.offset_rtt_ms >= DELAY_S * 1000
        # a reconnection starts counting again: old results are gone
        srv.live[-1].transport.abort()
        await c.wait_for(p.SessionCreated, limit_s=10)
        assert c.network_timing("resp_1") is None and c.connections == 2


async def test_one_way_clamps_small_negatives_only():
    from remote.client import NetworkTiming, one_way_ms

    assert one_way_ms(None, 1.0) == (None, False)
    assert one_way_ms(3.5, 1.0) == (3.5, False)
    assert one_way_ms(-0.4, 0.2) == (0.0, True)  # within the offset's error: 0, marked
    assert one_way_ms(-8.0, 2.0) == (None, False)  # beyond it: no number rather than a made-up one
    nt = NetworkTiming("r", 0.0, 5.0, -0.3, 5.0, 0.2, True)
    assert nt.total_ms == pytest.approx(4.7)
    assert NetworkTiming("r", None, 5.0, None, 5.0).total_ms is None


async def test_a_server_message_the_client_cannot_handle_is_skipped_and_events_go_on():
    """A metrics event whose ``network`` is not an object once killed the reader: events() then
    never ended. It is skipped (and logged); what follows still arrives."""
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0) as c:
        await c.wait_for(p.SessionCreated)
        await c.ping()  # with a clock offset, the client reads the network stamps
        ws = srv.live[-1]
        await ws.send(json.dumps({"type": "s2s.turn.metrics", "response_id": "resp_9", "metrics": {},
                                  "network": "not an object"}))
        await ws.send(p.serialize(p.S2SSessionResetDone(session_id="after")))
        done = await c.wait_for(p.S2SSessionResetDone, limit_s=10)
        assert done.session_id == "after" and c.connected


async def test_an_unexpected_failure_ends_the_client_with_the_reason(monkeypatch):
    """A failure outside what the reconnect loop expects (here the websockets connect raising an
    unforeseen error at the library boundary) closes the client with the reason: events() ends."""
    import remote.client as rc

    async with FakeRealtimeServer() as srv:
        c = RealtimeClient(srv.url, ping_interval_s=0, backoff_initial_s=0.01)
        await c.connect()
        await c.wait_for(p.SessionCreated)

        def broken_connect(*args, **kwargs):
            raise RuntimeError("unforeseen")

        monkeypatch.setattr(rc, "connect", broken_connect)
        srv.live[-1].transport.abort()
        async with asyncio.timeout(10):
            states = [e async for e in c.events() if isinstance(e, ConnectionState)]
        assert states[-1].status == "closed" and "client failure" in states[-1].error
        assert "unforeseen" in states[-1].error
        await c.close()


async def test_a_slow_consumer_holds_the_reader_back_and_loses_nothing():
    """Events wait in a bounded queue: while nobody reads them the client stops taking more
    from the socket, and once the consumer catches up every event arrives, in order."""
    from remote.client import MAX_PENDING_EVENTS

    n = MAX_PENDING_EVENTS * 3
    messages = [p.serialize(p.S2SSessionResetDone(session_id=f"s{i}")) for i in range(n)]
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0) as c:
        await c.wait_for(p.SessionCreated)
        ws = srv.live[-1]
        before = c.bytes_received
        for m in messages:
            await ws.send(m)
        async with asyncio.timeout(20):  # the reader ran: it filled the queue up to its bound
            while c._queue.qsize() < MAX_PENDING_EVENTS:  # noqa: ASYNC110 - polls the client's queue
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # room for the reader to go on, were it not held back
        assert c._queue.qsize() == MAX_PENDING_EVENTS
        # it stopped taking messages from the socket: at most the one it holds beyond the queue
        taken = c.bytes_received - before
        assert sum(map(len, messages[:MAX_PENDING_EVENTS])) <= taken <= sum(map(len, messages[:MAX_PENDING_EVENTS + 1]))
        got = []
        async with asyncio.timeout(30):
            while len(got) < n:
                e = await c.recv()
                if isinstance(e, p.S2SSessionResetDone):
                    got.append(e.session_id)
        assert got == [f"s{i}" for i in range(n)]


async def test_first_connection_is_retried_when_asked():
    """``retry_first``: the TUI's link (one reconnect loop for both cases) waits for a server
    that is not up yet, reporting each attempt."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = RealtimeClient(f"127.0.0.1:{port}", ping_interval_s=0, retry_first=True, backoff_initial_s=0.05,
                       backoff_max_s=0.1)
    assert c.url == f"ws://127.0.0.1:{port}/v1/realtime"
    await c.connect()  # returns although nothing listens
    states = []
    async with asyncio.timeout(10):
        while len([s for s in states if s.status == "reconnecting"]) < 2:
            e = await c.recv()
            if isinstance(e, ConnectionState):
                states.append(e)
    assert [s.status for s in states[:3]] == ["connecting", "reconnecting", "connecting"]
    assert "ConnectionRefused" in states[1].error
    srv = FakeRealtimeServer()
    srv._server = await serve(srv._handler, "127.0.0.1", port)
    try:
        created = await c.wait_for(p.SessionCreated, limit_s=10)
        assert created.session["id"] == "sess_1" and c.connected
    finally:
        await c.close()
        await srv.stop()


# --------------------------------------------------------------------------- the audio format


async def test_the_client_keeps_pcm_when_the_server_does_not_offer_opus():
    async with FakeRealtimeServer() as srv, RealtimeClient(srv.url, ping_interval_s=0, audio_format="opus") as c:
        await c.wait_for(p.SessionCreated)
        assert c.session.formats is None  # a server that does not list its formats
        assert "does not offer s2s.opus" in c.format_note and c.wire_format == "audio/pcm"
        assert await c.send_audio(np.zeros(2400, np.float32), 24_000)
        await settle(lambda: srv.of_type("input_audio_buffer.append"))
    assert not srv.of_type("session.update")
    assert len(base64.b64decode(srv.of_type("input_audio_buffer.append")[0]["audio"])) == 4800  # PCM


async def test_the_client_negotiates_opus_with_a_real_server_and_holds_a_turn():
    from remote.protocol import opus
    from remote.server import serve
    from tests.fakes import fake_engine

    srv = await serve(fake_engine(), port=0, stats_interval_s=0)
    try:
        async with RealtimeClient(srv.url, ping_interval_s=0, audio_format="opus:24", mic_rate=16_000) as c:
            await c.wait_for(p.SessionCreated)
            await c.wait_for(p.SessionUpdated)
            assert c.session.input_format == p.AudioFormat(p.OPUS_FORMAT, 16_000, bitrate=24)  # the mic's rate
            assert c.session.output_format == p.AudioFormat(p.OPUS_FORMAT, 24_000, bitrate=24)
            assert c.wire_format == "s2s.opus 24 kbit/s"
            t = np.arange(16_000) / 16_000
            assert await c.send_audio((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000)
            await c.send_text("నమస్కారం")
            await c.create_response()
            audio, deltas = [], 0
            while True:
                e = await c.wait_for(p.ResponseAudioDelta, p.ResponseDone, p.Error)
                assert not isinstance(e, p.Error), e
                if isinstance(e, p.ResponseDone):
                    break
                deltas += 1
                assert len(e.audio) <= opus.MAX_OPUS_PACKET
                audio.append(c.decode_audio(e))
            assert deltas > 5 and e.response["status"] == "completed"
            y = np.concatenate(audio)
            assert abs(len(y) / 24_000 - deltas * opus.OPUS_REPLY_PACKET_MS / 1000) < 0.06  # 100 ms a packet (less the resampler's delay)
            assert np.abs(y).max() > 0.01
    finally:
        await srv.close(grace_s=0)

"""A Realtime client for the headless engine: connect, stream audio, receive typed events.

The TUI (``s2s-tui --remote``) and the tests use it. A thin asyncio layer over
:mod:`remote.protocol` and the ``websockets`` client:

- connect with a URL and a token (sent as ``Authorization: Bearer``);
- send microphone chunks at any rate (coded in the session's input format by
  :class:`~remote.client_audio.ClientAudio`: resampled once, cut to fit the message limit), text
  messages, ``response.create`` / ``response.cancel``, session updates;
- with ``audio_format`` (``"opus"``, ``"opus:24"``, ``"pcmu"``...), ask for that format both ways
  after ``session.created`` when the server lists it in ``session.s2s.formats``; otherwise, or when
  the server refuses it, stay on ``audio/pcm``;
- ``async for event in client.events()`` yields typed server events and
  :class:`ConnectionState` changes;
- after a dropped connection, reconnect with exponential backoff (the server starts a new session:
  the conversation history is gone, the session settings are sent again); with ``retry_first=True``
  the first connection is retried the same way (the TUI's link uses that: this is the one
  reconnect loop of the project);
- received events wait in a bounded queue (:data:`MAX_PENDING_EVENTS`); a consumer that falls
  that far behind makes the client stop reading the socket, so the server waits (nothing is
  dropped); a server message the client cannot handle is logged and skipped, and an unexpected
  failure closes the client with the reason, so :meth:`RealtimeClient.events` always ends;
- ``s2s.ping`` / ``s2s.pong`` every few seconds give the round-trip time and the offset between
  the server's monotonic clock (the clock of the engine's ``stamps_ns``) and this process's;
- with that offset, the server's stamps in ``s2s.turn.metrics`` (``network``) and this client's own
  send and receive times give each turn's one-way network times (:class:`NetworkTiming`,
  :meth:`RealtimeClient.network_timing`), so a client can show network time apart from engine time;
- :meth:`RealtimeClient.reset_session` forgets the conversation without reconnecting
  (``s2s.session.reset``).

Example::

    async with RealtimeClient("ws://127.0.0.1:8765/v1/realtime", token) as client:
        await client.send_text("నమస్కారం")
        await client.create_response()
        async for event in client.events():
            if isinstance(event, protocol.ResponseAudioDelta):
                play(client.decode_audio(event))
            elif isinstance(event, protocol.ResponseDone):
                break
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from engine.bounded import remember
from remote import protocol as p
from remote.client_audio import ClientAudio, parse_choice
from remote.network_timing import NetworkTiming, one_way_ms

if TYPE_CHECKING:  # pragma: no cover
    from remote.codec import EncodecCodec

log = logging.getLogger("remote.client")

_END = object()

MAX_PENDING_EVENTS = 1024
"""Received events not yet taken by ``events()``/``recv()``. When a consumer falls this far behind,
the client stops reading the socket until it catches up (TCP backpressure: the server waits,
nothing is dropped); a consumer stalled past the keepalive timeout loses the connection, and the
client reconnects."""


def _now_ms() -> float:
    """This process's monotonic clock in ms (the same clock as ``engine.clock.now_ns``)."""
    return time.perf_counter_ns() / 1e6


class NotConnected(ConnectionError):
    """An event was sent while the client had no connection (it may be reconnecting)."""


class AuthError(ConnectionError):
    """The server refused the token (HTTP 401); the client does not retry."""


@dataclass(frozen=True)
class ConnectionState:
    """The connection's state, yielded by :meth:`RealtimeClient.events` whenever it changes.

    Fields:
        status: ``connecting``, ``connected``, ``reconnecting`` (waiting ``retry_in_s`` before
            attempt ``attempt``) or ``closed`` (for good; ``error`` says why, None if we closed it).
        attempt: reconnection attempts since the connection dropped (0 when connected).
        retry_in_s: seconds until the next attempt when ``reconnecting``.
        retry_at_ms: when that attempt happens, on this process's monotonic clock (ms), so a UI can
            count down.
        error: what went wrong last.
        close_code: the WebSocket close code of the last drop, when there was one.
    """

    status: Literal["connecting", "connected", "reconnecting", "closed"]
    url: str = ""
    attempt: int = 0
    retry_in_s: float | None = None
    retry_at_ms: float | None = None
    error: str | None = None
    close_code: int | None = None

    def retry_countdown_s(self) -> float | None:
        """Seconds left before the next attempt (None unless reconnecting)."""
        if self.retry_at_ms is None:
            return None
        return max(0.0, (self.retry_at_ms - _now_ms()) / 1000)


class RealtimeClient:
    """One connection to a Realtime endpoint (ours or any compatible one).

    Args:
        url: ``ws://host:port/v1/realtime`` (a ``?model=`` is added if ``model`` is given).
        token: sent as ``Authorization: Bearer <token>``.
        reconnect: reconnect after a dropped connection (not after :meth:`close` or a refused token).
        retry_first: retry a failed first connection like a dropped one (``connect`` then raises
            only :class:`AuthError`; the attempts show as ``reconnecting`` states).
        backoff_initial_s / backoff_max_s / max_retries: exponential backoff with jitter, doubling
            from the initial delay up to the maximum; ``max_retries=None`` retries forever.
        ping_interval_s: how often ``s2s.ping`` measures RTT and clock offset (0: never).
        open_timeout_s: how long one connection attempt may take.
        codec_factory: builds the Encodec codec when the session negotiates ``s2s.encodec``
            (default: ``EncodecCodec.load()``; tests pass random weights).
        audio_format: the format to ask for after each ``session.created`` (an
            :class:`~remote.protocol.AudioFormat` or a choice such as ``"opus:24"``, see
            :func:`remote.client_audio.parse_choice`); None keeps what the server starts with.
        mic_rate: the rate :meth:`send_audio` will mostly get (Opus is asked for at it if it can).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        model: str | None = None,
        reconnect: bool = True,
        retry_first: bool = False,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        max_retries: int | None = None,
        ping_interval_s: float = 2.0,
        open_timeout_s: float = 10.0,
        max_message_bytes: int = p.MAX_MESSAGE_BYTES,
        codec_factory: Callable[[], EncodecCodec] | None = None,
        audio_format: p.AudioFormat | str | None = None,
        mic_rate: int | None = None,
    ):
        url = normalize_url(url)
        if model and "model=" not in url:
            url += ("&" if "?" in url else "?") + f"model={model}"
        self.url = url
        self.token = token
        self.reconnect = reconnect
        self.retry_first = retry_first
        self.backoff_initial_s, self.backoff_max_s, self.max_retries = backoff_initial_s, backoff_max_s, max_retries
        self.ping_interval_s = ping_interval_s
        self.open_timeout_s = open_timeout_s
        self.max_message_bytes = max_message_bytes
        self.audio = ClientAudio(codec_factory)
        self.audio_format = parse_choice(audio_format, mic_rate) if isinstance(audio_format, str) else audio_format
        self.format_note = ""  # why the client is not using audio_format, when it is not
        self.state = ConnectionState("closed", url)
        self.session: p.SessionConfig | None = None
        self.rtt_ms: float | None = None
        self.min_rtt_ms: float | None = None
        self.clock_offset_ms: float | None = None
        self.connections = 0
        self.bytes_sent = self.bytes_received = 0
        self._ws: ClientConnection | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue(MAX_PENDING_EVENTS)
        self._runner: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._patch = p.SessionPatch()  # every session.update sent so far, merged (re-sent on reconnect)
        self._samples: deque[tuple[float, float]] = deque(maxlen=16)  # (rtt, offset) of recent pongs
        self._n_events = 0
        # network timing: messages sent on this connection (index, local ms), first audio received
        # per response (local ms), and the results per response id
        self._n_sent = 0
        self._sent_at: deque[tuple[int, float]] = deque(maxlen=8192)
        self._first_audio_at: dict[str, float] = {}
        self._network: dict[str, NetworkTiming] = {}
        self.last_network: NetworkTiming | None = None

    # ---- lifecycle

    async def connect(self) -> RealtimeClient:
        """Open the first connection; raises :class:`AuthError` or ``OSError``/``WebSocketException``
        if it fails (unless ``retry_first``: then only :class:`AuthError`, and the attempts go on in
        the background)."""
        if self._runner is not None:
            return self
        self._closing = False
        await self._set_state(ConnectionState("connecting", self.url))
        ws, error = None, None
        try:
            ws = await self._open()
        except (OSError, WebSocketException, TimeoutError) as exc:
            if not self.retry_first or isinstance(exc, AuthError):
                await self._end(ConnectionState("closed", self.url, error=_describe(exc)))
                raise
            error = _describe(exc)
        except BaseException as exc:
            await self._end(ConnectionState("closed", self.url, error=_describe(exc)))
            raise
        self._runner = asyncio.create_task(self._run(ws, error), name="realtime-client")
        return self

    async def close(self) -> None:
        """Close the connection for good (no reconnection); :meth:`events` then ends."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None
        state = ConnectionState("closed", self.url) if self.state.status != "closed" else None
        while self._queue.qsize() > MAX_PENDING_EVENTS - 2:  # a stalled consumer: room for the end
            self._queue.get_nowait()
        if state is not None:
            await self._set_state(state)
        self._queue.put_nowait(_END)

    async def __aenter__(self) -> RealtimeClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self.state.status == "connected"

    async def wait_connected(self) -> None:
        """Wait until a connection is up (wrap in ``asyncio.timeout`` to bound it)."""
        await self._connected.wait()

    # ---- receiving

    async def events(self) -> AsyncIterator[p.ServerEvent | ConnectionState]:
        """Server events in order, with :class:`ConnectionState` changes between them; ends after
        :meth:`close` or when reconnection gives up."""
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # let other iterators end too
                return
            yield item

    async def recv(self) -> p.ServerEvent | ConnectionState:
        """The next event; :class:`NotConnected` once the stream has ended (bound it with
        ``asyncio.timeout``)."""
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise NotConnected("the client is closed")
        return item

    async def wait_for(self, *types: type | str, limit_s: float = 30.0) -> Any:
        """Skip events until one of ``types`` (classes, or wire type names) arrives and return it;
        ``TimeoutError`` after ``limit_s`` seconds."""
        async with asyncio.timeout(limit_s):
            while True:
                e = await self.recv()
                if _matches(e, types):
                    return e

    # ---- sending

    async def send(self, event: p.ClientEvent) -> None:
        """Send one client event (raises :class:`NotConnected` while there is no connection)."""
        ws = self._ws
        if ws is None or not self.connected:
            raise NotConnected(f"not connected ({self.state.status})")
        if isinstance(event, p.SessionUpdate):
            self._patch = self._patch.merge(event.session)
            fmt = event.session.changes().get("input_format")
            if fmt is not None:  # the server applies it before the appends that follow
                await self.audio.prepare(fmt)
                self.audio.set_input(fmt)
        text = p.serialize(event)
        # numbered and timed as it goes: a text frame is written before ws.send first awaits, so
        # concurrent senders cannot reorder messages between this count and the wire
        self._n_sent += 1
        self._sent_at.append((self._n_sent, _now_ms()))
        try:
            await ws.send(text)
        except ConnectionClosed as exc:
            raise NotConnected(f"the connection dropped: {exc}") from None
        self.bytes_sent += len(text)

    async def send_audio(self, samples: np.ndarray, sample_rate: int = p.PCM_RATE) -> bool:
        """Send a chunk of mono audio (float in [-1, 1] or int16) at any rate from 8 to 48 kHz.

        It is coded in the session's input format (resampled to its rate once; PCM cut to fit the
        message limit). Returns False (and drops the chunk) while not connected: live audio is
        not queued.
        """
        if not self.connected:
            return False
        try:
            for payload in await self.audio.encode(_to_float(samples), int(sample_rate), self._max_payload):
                await self.send(p.InputAudioBufferAppend(audio=payload))
        except NotConnected:
            return False
        return True

    @property
    def _max_payload(self) -> int:
        return self.max_message_bytes * 3 // 4 - 256  # base64 + JSON must fit

    async def flush_audio(self) -> None:
        """Send what the resampler and the encoder still hold (called by :meth:`commit`)."""
        for payload in await self.audio.flush(self._max_payload):
            await self.send(p.InputAudioBufferAppend(audio=payload))

    async def commit(self) -> None:
        await self.flush_audio()
        await self.send(p.InputAudioBufferCommit())

    async def clear_audio(self) -> None:
        self.audio.clear()
        await self.send(p.InputAudioBufferClear())

    async def send_text(self, text: str, item_id: str | None = None) -> None:
        """A typed user message (``conversation.item.create``); no response starts by itself."""
        await self.send(p.ConversationItemCreate.of_text(text, item_id))

    async def create_response(self) -> None:
        await self.send(p.ResponseCreate())

    async def cancel_response(self, response_id: str | None = None) -> None:
        await self.send(p.ResponseCancel(response_id=response_id))

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Tell the server only ``audio_end_ms`` of an assistant item was played."""
        await self.send(p.ConversationItemTruncate(item_id=item_id, audio_end_ms=int(audio_end_ms)))

    async def update_session(
        self,
        *,
        turn_detection: bool | None = None,
        auto_response: bool | None = None,
        silence_duration_ms: int | None = None,
        instructions: str | None = None,
        language: str | None = None,
        input_format: p.AudioFormat | None = None,
        output_format: p.AudioFormat | None = None,
    ) -> None:
        """``session.update`` with what is given (``turn_detection=False``: manual turns); a format
        that needs a model here (Encodec) is loaded first."""
        for fmt in (input_format, output_format):
            if fmt is not None:
                await self.audio.prepare(fmt)
        td: Any = p.UNSET
        if turn_detection is False:
            td = None
        elif turn_detection or auto_response is not None or silence_duration_ms is not None:
            cur = self.session.turn_detection if self.session else None
            td = p.TurnDetection(
                create_response=auto_response if auto_response is not None else (cur.create_response if cur else True),
                silence_duration_ms=silence_duration_ms,
            )
        await self.send(p.SessionUpdate(session=p.SessionPatch(
            instructions=p.UNSET if instructions is None else instructions,
            input_format=p.UNSET if input_format is None else input_format,
            output_format=p.UNSET if output_format is None else output_format,
            turn_detection=td,
            language=p.UNSET if language is None else language,
        )))

    async def reset_session(self) -> None:
        """Forget the conversation and cancel any reply, keeping the connection (``s2s.session.reset``).

        The server answers ``s2s.session.reset_done`` (after the cancelled ``response.done`` of a
        reply that was running); wait for it with ``wait_for(protocol.S2SSessionResetDone)``.
        """
        await self.send(p.S2SSessionReset())

    def network_timing(self, response_id: str) -> NetworkTiming | None:
        """The measured network time of a response's turn, once its ``s2s.turn.metrics`` arrived
        (None before, or when the server sent no ``network`` stamps)."""
        return self._network.get(response_id)

    async def ping(self, limit_s: float = 5.0) -> float:
        """Measure the round trip now; returns it in ms (also updates :attr:`rtt_ms`)."""
        before = len(self._samples), self._samples[-1] if self._samples else None
        await self.send(p.S2SPing(client_time_ms=_now_ms()))
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self._samples and (len(self._samples), self._samples[-1]) != before:
                return self._samples[-1][0]
            await asyncio.sleep(0.005)
        raise TimeoutError("no s2s.pong (is the server ours?)")

    # ---- audio out

    def decode_audio(self, event: p.ResponseAudioDelta) -> np.ndarray:
        """A ``response.output_audio.delta`` to float32 mono samples at 24 kHz, in the format its
        response started with (PCM, G.711, Opus or Encodec)."""
        fmt = self.session.output_format if self.session else p.PCM
        return self.audio.decode(event.response_id, event.audio, fmt)

    @property
    def wire_format(self) -> str:
        """The session's formats for a person: ``s2s.opus 16 kbit/s`` (``in / out`` when they differ)."""
        if self.session is None:
            return ""
        a, b = self.session.input_format.label, self.session.output_format.label
        return a if a == b else f"{a} / {b}"

    def server_to_local_ms(self, server_ms: float) -> float | None:
        """A time on the server's monotonic clock (ms) as a time on this process's clock."""
        return None if self.clock_offset_ms is None else server_ms - self.clock_offset_ms

    # ---- internals

    async def _set_state(self, state: ConnectionState) -> None:
        if state.status == "connected":
            self._connected.set()
        else:
            self._connected.clear()
        if state != self.state:
            self.state = state
            await self._queue.put(state)

    async def _end(self, state: ConnectionState) -> None:
        """Closed for good: the last state, then the end of :meth:`events`."""
        await self._set_state(state)
        await self._queue.put(_END)

    async def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
                open_timeout=self.open_timeout_s,
                max_size=p.HARD_MAX_MESSAGE_BYTES,
                compression=None,
                ping_interval=20,
                ping_timeout=20,
            )
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise AuthError(f"the server refused the token: {_body(exc)}") from None
            raise
        self._ws = ws
        self.connections += 1
        self._n_sent = 0  # the server counts the messages of each connection from 1
        self._sent_at.clear()
        self._first_audio_at.clear()
        self._network.clear()
        await self._set_state(ConnectionState("connected", self.url))
        again = {k: v for k, v in self._patch.changes().items()  # formats: negotiated again
                 if self.audio_format is None or k not in ("input_format", "output_format")}
        if self.connections > 1 and again:
            await self.send(p.SessionUpdate(session=p.SessionPatch(**again)))
        return ws

    async def _run(self, ws: ClientConnection | None, error: str | None = None) -> None:
        """Read a connection until it drops, then reconnect with backoff; again until closed.
        ``ws`` None: the first connection failed with ``error`` and is retried (``retry_first``)."""
        try:
            await self._connect_loop(ws, error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unforeseen library error: end visibly, never hang
            log.exception("the Realtime client stopped")
            self._ws = None
            await self._end(ConnectionState("closed", self.url, error=f"client failure: {_describe(exc)}"))

    async def _connect_loop(self, ws: ClientConnection | None, error: str | None) -> None:
        attempt, code = 0, None
        while True:
            if ws is not None:
                attempt = 0
                code, error = await self._read(ws)
                ws = self._ws = None
                if self._closing or not self.reconnect:
                    await self._end(ConnectionState("closed", self.url, error=None if self._closing else error,
                                                    close_code=code))
                    return
            attempt += 1
            if self.max_retries is not None and attempt > self.max_retries:
                await self._end(ConnectionState("closed", self.url, attempt=attempt - 1,
                                                error=f"gave up after {attempt - 1} attempts: {error}", close_code=code))
                return
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
            delay *= 0.8 + 0.4 * random.random()  # jitter: many clients must not retry in step
            await self._set_state(ConnectionState("reconnecting", self.url, attempt=attempt, retry_in_s=round(delay, 2),
                                                  retry_at_ms=_now_ms() + delay * 1000, error=error, close_code=code))
            await asyncio.sleep(delay)
            await self._set_state(ConnectionState("connecting", self.url, attempt=attempt, error=error))
            try:
                ws = await self._open()
            except AuthError as exc:
                await self._end(ConnectionState("closed", self.url, attempt=attempt, error=str(exc)))
                return
            except (OSError, WebSocketException, TimeoutError) as exc:
                error = _describe(exc)
                continue
            self.audio.reset()

    async def _read(self, ws: ClientConnection) -> tuple[int | None, str | None]:
        """Hand every message of ``ws`` to the queue until it closes; (close code, error)."""
        pinger = asyncio.create_task(self._ping_loop()) if self.ping_interval_s > 0 else None
        error = None
        try:
            async for message in ws:
                self.bytes_received += len(message)
                try:
                    e = self._on_message(message)
                except Exception:  # one message we cannot handle must not end the connection
                    log.exception("skipping a server message that could not be handled: %.200r", message)
                    continue
                if isinstance(e, p.SessionCreated):
                    self.audio.reset()
                    await self._negotiate()
                if e is not None:
                    await self._queue.put(e)  # waits while the consumer is MAX_PENDING_EVENTS behind
        except ConnectionClosed as exc:
            error = str(exc)
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
        code = ws.close_code
        if code is not None:
            error = error or f"closed by the server ({code} {ws.close_reason or ''})".strip()
        return code, error

    def _on_message(self, message: str | bytes) -> p.ServerEvent | None:
        """The event of one server message, after what the client itself tracks (session,
        clock offset, network timing); None for a malformed one."""
        received_ms = _now_ms()
        try:
            e = p.parse_server_event(message)
        except p.ProtocolError as exc:
            log.warning("ignoring a malformed server message: %s", exc)
            return None
        if isinstance(e, p.ResponseAudioDelta):
            if e.response_id not in self._first_audio_at:
                remember(self._first_audio_at, e.response_id, received_ms, 64)
        elif isinstance(e, p.S2STurnMetrics) and e.response_id:
            nt = self._measure(e)
            if nt is not None:
                self.last_network = remember(self._network, e.response_id, nt, 64)
        if isinstance(e, p.SessionCreated | p.SessionUpdated):
            try:
                self.session = p.SessionConfig.from_dict(e.session)
            except p.ProtocolError as exc:  # another server's session object: keep PCM
                log.debug("session object not understood: %s", exc)
                self.session = p.SessionConfig(id=str(e.session.get("id", "")))
            if isinstance(e, p.SessionUpdated):  # what the server now expects (it may change it itself)
                self.audio.set_input(self.session.input_format)
        elif isinstance(e, p.S2SPong):
            t3 = _now_ms()
            rtt = max(0.0, t3 - e.client_time_ms)
            offset = e.server_time_ms - (e.client_time_ms + t3) / 2
            self._samples.append((rtt, offset))
            self.rtt_ms = rtt if self.rtt_ms is None else 0.7 * self.rtt_ms + 0.3 * rtt
            best = min(self._samples)  # the sample with the least queueing says the most about the offset
            self.min_rtt_ms, self.clock_offset_ms = best
        elif isinstance(e, p.ResponseCreated) and self.session is not None:
            self.audio.response_started(str(e.response.get("id", "")), self.session.output_format)
        elif isinstance(e, p.Error) and e.code in (p.ErrorCode.UNSUPPORTED_FORMAT, p.ErrorCode.CODEC_UNAVAILABLE):
            self.audio.set_input(self.session.input_format if self.session else p.PCM)  # refused: as it was
            self.format_note = f"{e.message}: staying on {self.wire_format or 'audio/pcm'}"
        return e

    async def _negotiate(self) -> None:
        """After ``session.created``: ask for :attr:`audio_format` both ways when the server lists
        it (``session.s2s.formats``); a server that does not list formats gets none (PCM stays)."""
        want, session = self.audio_format, self.session
        if want is None or session is None or want == session.input_format == session.output_format:
            return
        if session.formats is None or want.type not in session.formats:
            self.format_note = f"the server does not offer {want.type}: using audio/pcm"
            log.info(self.format_note)
            return
        out = p.AudioFormat(want.type, None, want.bandwidth, bitrate=want.bitrate)  # the format's own rate
        with contextlib.suppress(NotConnected):
            await self.send(p.SessionUpdate(session=p.SessionPatch(input_format=want, output_format=out)))
        self.format_note = ""

    def _measure(self, e: p.S2STurnMetrics) -> NetworkTiming | None:
        """One-way times from the server's ``network`` stamps, our own times and the clock offset."""
        net, offset = e.network or {}, self.clock_offset_ms
        if offset is None or not e.response_id or not net:
            return None
        up_raw = down_raw = None
        sent = net.get("first_audio_sent_server_ms")
        got = self._first_audio_at.pop(e.response_id, None)
        if isinstance(sent, int | float) and got is not None:
            down_raw = got - (sent - offset)
        index, received = net.get("turn_end_message"), net.get("turn_end_received_server_ms")
        if isinstance(index, int) and isinstance(received, int | float) and self._sent_at:
            i = index - self._sent_at[0][0]
            if 0 <= i < len(self._sent_at) and self._sent_at[i][0] == index:
                up_raw = (received - offset) - self._sent_at[i][1]
        if up_raw is None and down_raw is None:
            return None
        rtt = self.min_rtt_ms
        up, c1 = one_way_ms(up_raw, rtt)
        down, c2 = one_way_ms(down_raw, rtt)
        r = lambda v: None if v is None else round(v, 3)  # noqa: E731
        return NetworkTiming(e.response_id, r(up), r(down), r(up_raw), r(down_raw), r(rtt), c1 or c2)

    async def _ping_loop(self) -> None:
        with contextlib.suppress(NotConnected, ConnectionClosed):
            while True:
                await self.send(p.S2SPing(client_time_ms=_now_ms()))
                await asyncio.sleep(self.ping_interval_s)


def normalize_url(url: str) -> str:
    """The one URL normaliser: ``host:port`` (no scheme) becomes ``ws://host:port``, no path becomes
    ``/v1/realtime``, ``http(s)`` becomes ``ws(s)``."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/v1/realtime"
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def _matches(e: Any, types: tuple[type | str, ...]) -> bool:
    return any((isinstance(t, str) and getattr(e, "type", None) == t) or (isinstance(t, type) and isinstance(e, t))
               for t in types)


def _to_float(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples).reshape(-1)
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    return np.clip(np.nan_to_num(x.astype(np.float32)), -1.0, 1.0)


def _body(exc: InvalidStatus) -> str:
    body = exc.response.body or b""
    try:
        import json

        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:200] or f"HTTP {exc.response.status_code}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


__all__ = ["AuthError", "ConnectionState", "NetworkTiming", "NotConnected", "RealtimeClient", "normalize_url",
           "one_way_ms"]

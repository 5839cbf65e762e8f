"""``s2s-engine --headless``: the engine behind a WebSocket that speaks the Realtime protocol.

Thin asyncio I/O: :mod:`remote.protocol` parses and validates events and holds the session rules
(:class:`~remote.protocol.rules.SessionRules`, one per connection); the engine's
:class:`~engine.session.Session` does the work. One loaded :class:`~engine.engine.Engine` is
shared by every connection; each connection gets its own session. This module moves messages
between the socket, the rules and the session, and runs the audio coding the rules hand out on a
worker thread when it is heavy (Encodec).

- ``ws://HOST:PORT/v1/realtime`` (``?model=`` accepted and ignored): the Realtime endpoint, so a
  client with base URL ``http://HOST:PORT/v1`` connects.
- The HTTP side (token, ``/healthz``, ``/readyz``, 503 while loading or draining, the browser
  client at ``/``) is :mod:`remote.handshake`; the command (``--headless`` options, signals) is
  :mod:`remote.headless`.
- At capacity a new session gets an ``error`` (``session_limit_reached``), then close 1013: a
  client or balancer retries elsewhere.
- SIGTERM/SIGINT (drain, :meth:`RealtimeServer.close`): readiness turns 503 at once and no new
  session starts; the listener stays up for the probes; each running turn may finish within a
  grace period, then its session is closed with 1001.
- ``--recycle-rss-mib`` (:func:`recycle_when_over`): past that RSS, readiness turns 503
  (``recycling``) and no new session starts; the open sessions go on until they end (or
  ``--recycle-wait``), then the same drain, and the command exits 75 for its supervisor to start
  a fresh engine.

Why the ``websockets`` library: its asyncio server is a thin layer over a sans-I/O protocol,
handles ping/pong, close codes and size limits, and ``process_request`` serves ``/healthz`` on the
same port. Encodec (torch) is imported only when a session asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.bounded import remember
from engine.clock import now_ns
from engine.cpu import rss_mib
from engine.errors import S2SError
from remote import handshake
from remote import protocol as p
from remote.handshake import HEALTH_PATHS, READY_PATHS, REALTIME_PATHS, check_bind, is_loopback

if TYPE_CHECKING:  # pragma: no cover
    from engine.config import Profile
    from engine.engine import Engine
    from engine.session import Session
    from remote.codec import EncodecCodec

log = logging.getLogger("remote.server")

_RECEIVED_LOG = 8192  # client messages remembered for network timing (about 80 s of 10 ms chunks)
RESET_TIMEOUT_S = 2.0  # an s2s.session.reset is answered by then, even without its response.done


@dataclass
class ServerOptions:
    """Everything ``--headless`` can set.

    Fields:
        host / port: where to listen (port 0: any free port, see :attr:`RealtimeServer.port`).
        token: required from clients when set; required to bind a non-loopback host.
        max_sessions: connections beyond this get an ``error`` (``session_limit_reached``) and 1013;
            readiness answers 503 (``full``) while this many sessions run.
        max_message_bytes: larger client messages get an ``error`` (the connection stays).
        idle_timeout_s: a session with no client event and nothing running for this long is
            closed (4000); 0 disables.
        stats_interval_s: how often ``s2s.stats`` is sent; 0 disables.
        grace_s: on shutdown (drain), how long running turns may take to finish.
        ping_interval_s: WebSocket keepalive pings (a vanished client is noticed within about twice
            this); None disables.
        codec_model: Encodec weights (folder or cached hub id) for the ``s2s.encodec`` format;
            "" takes the profile's ``session.codec_model``, else ``facebook/encodec_24khz``.
        codec_random_weights: TESTS ONLY: use Encodec's architecture with random weights (the sound
            is meaningless; framing and bitrate are real).
        codec_factory: tests: a callable returning the codec (overrides the two above).
        web: serve the browser client at ``/`` (:mod:`remote.web`).
        recycle_rss_mib: when the server's RSS passes this many MiB, it stops taking sessions
            (readiness ``recycling``), lets the open ones end, drains and exits with
            :data:`RECYCLE_EXIT` for its supervisor to start a fresh one (``remote.headless``,
            :func:`recycle_when_over`); 0 never.
        recycle_wait_s: how long open sessions may go on once recycling starts, before the drain
            (``grace_s``) closes them.
        recycle_check_s: how often the RSS is read for ``recycle_rss_mib``.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_sessions: int = 8
    max_message_bytes: int = p.MAX_MESSAGE_BYTES
    idle_timeout_s: float = 600.0
    stats_interval_s: float = 5.0
    grace_s: float = 5.0
    ping_interval_s: float | None = 20.0
    codec_model: str = ""
    codec_random_weights: bool = False
    codec_factory: Callable[[], EncodecCodec] | None = field(default=None, repr=False)
    web: bool = True
    recycle_rss_mib: float = 0.0
    recycle_wait_s: float = 600.0
    recycle_check_s: float = 10.0


RECYCLE_EXIT = 75  # EX_TEMPFAIL: the server exited on purpose to start afresh (--recycle-rss-mib)


def codec_path(codec_model: str, profile: Profile) -> str:
    """The Encodec weights to load: ``--codec-model``, else the profile's ``session.codec_model``
    (a model reference, resolved like every stage's), else the cached default hub id."""
    from engine.models import resolve
    from remote.codec import DEFAULT_MODEL

    if codec_model:
        return codec_model
    ref = profile.session.codec_model
    return resolve("codec", ref, profile.name) if ref else DEFAULT_MODEL


class RealtimeServer:
    """The headless engine server. Use :func:`serve` to start one.

    ``port`` / ``url`` tell where it listens; :meth:`close` drains and shuts it down. Built with
    ``engine=None`` it listens while the models load (readiness ``loading``) until :meth:`attach`.
    """

    def __init__(self, engine: Engine | None, options: ServerOptions):
        check_bind(options.host, options.token)
        self.engine: Engine = None  # type: ignore[assignment]  # set by attach(); None while loading
        self.options = options
        self.connections: set[_Connection] = set()
        self.closing = False  # draining: readiness 503, no new session
        self.recycling: str | None = None  # why the server drains to start afresh (--recycle-rss-mib)
        self._close_started = False
        self.started = time.monotonic()
        self.total_sessions = 0
        self.refused_token = 0  # handshakes without the right token
        self.refused_full = 0  # sessions refused at --max-sessions
        self._ws: Server | None = None
        self._codec: EncodecCodec | None = None
        self._codec_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._no_sessions = asyncio.Event()  # set while no connection is open
        self._no_sessions.set()
        self.profile_name = self.device = ""
        self.models: dict[str, Any] = {}
        if engine is not None:
            self.attach(engine)

    def attach(self, engine: Engine) -> None:
        """Serve ``engine`` (loaded): readiness turns from ``loading`` to ``ready``."""
        info = engine.describe()
        self.profile_name = str(info.get("profile", ""))
        self.device = str(info.get("device", ""))
        self.models = info.get("models", {})
        self.engine = engine

    @property
    def state(self) -> str:
        """``loading`` (no engine yet), ``draining`` (shutting down), ``recycling`` (ending its open
        sessions to start afresh), ``full`` (at --max-sessions) or ``ready``: only ``ready`` takes
        a new session."""
        if self.recycling is not None and not self._close_started:
            return "recycling"
        if self.closing:
            return "draining"
        if self.engine is None:
            return "loading"
        if len(self.connections) >= self.options.max_sessions:
            return "full"
        return "ready"

    # ---- lifecycle

    async def start(self) -> None:
        o = self.options
        self._ws = await ws_serve(
            self._handler,
            o.host,
            o.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=p.HARD_MAX_MESSAGE_BYTES,
            ping_interval=o.ping_interval_s,
            ping_timeout=o.ping_interval_s,
            close_timeout=5,
            compression=None,  # base64 audio barely compresses; deflate would cost CPU per message
            server_header="s2s-engine",
        )
        log.info("listening on %s", self.url)

    @property
    def port(self) -> int:
        assert self._ws is not None, "not started"
        return int(self._ws.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}/v1/realtime"

    @property
    def session_count(self) -> int:
        return len(self.connections)

    @property
    def refused(self) -> int:
        """Clients turned away: no or a wrong token, or at --max-sessions."""
        return self.refused_token + self.refused_full

    async def close(self, grace_s: float | None = None) -> None:
        """Drain, then stop: readiness turns 503 and new sessions are refused at once (the listener
        stays up for the probes); each session is closed with 1001 as soon as its running turn has
        finished, or when ``grace_s`` (default ``--grace``) is over; then the listener closes."""
        if self._close_started:
            await self._closed.wait()
            return
        self._close_started = self.closing = True
        grace = self.options.grace_s if grace_s is None else grace_s
        assert self._ws is not None
        conns = list(self.connections)
        if conns:
            log.info("draining %d session(s) (grace %.1f s)", len(conns), grace)
        deadline = asyncio.get_running_loop().time() + max(0.0, grace)

        async def drain(conn: _Connection) -> None:
            if grace > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await conn.wait_idle()
            await conn.close(p.CloseCode.GOING_AWAY, "server shutting down")

        await asyncio.gather(*(drain(c) for c in conns), return_exceptions=True)
        self._ws.close(close_connections=True)
        await self._ws.wait_closed()
        self._closed.set()
        log.info("server closed")

    def stop_accepting(self) -> None:
        """Readiness turns 503 (``draining``) and new sessions are refused; nothing closes yet
        (:meth:`close` does that)."""
        self.closing = True

    @property
    def closing_message(self) -> str:
        """What a client refused while the server drains is told."""
        if self.recycling is not None:
            return "the server is restarting to free memory; try again in a few seconds"
        return "the server is shutting down"

    async def recycle(self, reason: str, wait_s: float, stop: asyncio.Event | None = None) -> None:
        """Stop taking sessions (readiness ``recycling``) and wait until the open ones have ended,
        ``wait_s`` has passed or ``stop`` is set; then :meth:`close` drains what is left."""
        self.recycling, self.closing = reason, True
        log.warning("recycling: %s; taking no new session, waiting up to %.0f s for %d open one(s) to end",
                    reason, wait_s, len(self.connections))
        waits = [asyncio.ensure_future(self._no_sessions.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=max(0.0, wait_s), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def __aenter__(self) -> RealtimeServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(grace_s=0)

    # ---- HTTP (remote.handshake)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return handshake.process_request(self, request)

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
        return p.SUBPROTOCOL if p.SUBPROTOCOL in offered else None

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` details (token holders only): state and session slots."""
        return handshake.readiness_body(self)

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` details (token holders only)."""
        return handshake.health_body(self)

    # ---- the models of audio formats

    @property
    def codec_loaded(self) -> EncodecCodec | None:
        return self._codec

    def format_model(self, name: str) -> Any:
        """The loaded model of a format's coder, by format name (None: it needs none)."""
        return self._codec if name == p.ENCODEC_FORMAT else None

    async def load_format_model(self, fmt: p.AudioFormat, param: str) -> None:
        """Load what ``fmt``'s coder needs, once for all sessions (``codec_unavailable`` if it cannot be)."""
        if fmt.type == p.ENCODEC_FORMAT:
            await self.codec(param)

    async def codec(self, param: str) -> EncodecCodec:
        """The shared Encodec codec, loaded on first use (off the event loop)."""
        async with self._codec_lock:
            if self._codec is None:
                o = self.options

                def load() -> EncodecCodec:
                    if o.codec_factory is not None:
                        return o.codec_factory()
                    from remote.codec import EncodecCodec

                    if o.codec_random_weights:
                        return EncodecCodec.random(seed=0)
                    return EncodecCodec.load(codec_path(o.codec_model, self.engine.profile), "cpu")

                try:
                    self._codec = await asyncio.to_thread(load)
                except S2SError as exc:
                    raise p.ProtocolError(
                        p.ErrorCode.CODEC_UNAVAILABLE,
                        f"the {p.ENCODEC_FORMAT} format is not available on this server: {exc}",
                        param=param,
                    ) from None
                if self._codec.random_weights:
                    log.warning("Encodec uses RANDOM WEIGHTS (--codec-random-weights): for tests only, "
                                "the audio is meaningless noise")
            return self._codec

    # ---- connections

    async def _handler(self, ws: ServerConnection) -> None:
        if self.closing:
            await _refuse(ws, p.ErrorCode.SHUTTING_DOWN, self.closing_message, p.CloseCode.GOING_AWAY)
            return
        if len(self.connections) >= self.options.max_sessions:
            self.refused_full += 1
            log.warning("session limit (%d) reached; refusing a client", self.options.max_sessions)
            await _refuse(
                ws,
                p.ErrorCode.SESSION_LIMIT,
                f"the server already runs {self.options.max_sessions} sessions (--max-sessions); try again later",
                p.CloseCode.TRY_AGAIN_LATER,
            )
            return
        try:
            session = self.engine.new_session()
        except Exception as exc:  # noqa: BLE001 - tell the client, keep serving the others
            log.exception("could not start a session")
            await _refuse(ws, p.ErrorCode.SERVER_ERROR, f"could not start a session: {exc}",
                          p.CloseCode.INTERNAL_ERROR)
            return
        conn = _Connection(self, ws, session)
        self.connections.add(conn)
        self._no_sessions.clear()
        self.total_sessions += 1
        log.info("session %s opened from %s (%d active)", session.id, ws.remote_address, len(self.connections))
        try:
            await conn.run()
        except Exception:  # noqa: BLE001 - one connection's bug must not take the server down
            log.exception("session %s failed", session.id)
            with contextlib.suppress(Exception):
                await ws.close(p.CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            try:
                await conn.shutdown()
            finally:
                self.connections.discard(conn)
                if not self.connections:
                    self._no_sessions.set()
            log.info("session %s closed (%d active)", session.id, len(self.connections))


async def _refuse(ws: ServerConnection, code: str, message: str, close: int) -> None:
    err = p.Error(event_id="event_0", code=code, message=message, error_type=p.ErrorType.SERVER)
    with contextlib.suppress(ConnectionClosed):
        await ws.send(p.serialize(err))
        await ws.close(close, message[:120])


class _Connection:
    """One client: client events through the rules into the session, session events out."""

    def __init__(self, server: RealtimeServer, ws: ServerConnection, session: Session):
        self.server, self.ws, self.session = server, ws, session
        model = "s2s"
        with contextlib.suppress(Exception):
            model = dict(_query(ws.request.path)).get("model") or "s2s"  # type: ignore[union-attr]
        models = server.models
        self.rules = p.SessionRules(
            session, p.EngineDefaults.from_engine(server.engine), model=model,
            asr_model=str(models.get("asr", {}).get("model", "")), tts_voice=str(models.get("tts", {}).get("model", "")),
            profile=server.profile_name, models=server.format_model,
        )
        self._n_events = 0
        self.bytes_in = self.bytes_out = 0
        self.events_in = self.events_out = 0
        self.errors_sent = 0
        self.opened = time.monotonic()
        self.last_activity = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        # network timing (see _network): every client message's index, type and when the server
        # read it and finished handling it (ns); the first audio delta sent per response (ms, event id)
        self._received: deque[tuple[int, str | None, int, int]] = deque(maxlen=_RECEIVED_LOG)
        self._first_audio: dict[str, tuple[float, str]] = {}

    # ---- lifecycle

    async def run(self) -> None:
        await self.session.start()
        for out in self.rules.created():
            await self.send(out)
        self._tasks = [asyncio.create_task(self._pump(), name=f"{self.session.id}-pump")]
        if self.server.options.stats_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._stats_loop(), name=f"{self.session.id}-stats"))
        if self.server.options.idle_timeout_s > 0:
            self._tasks.append(asyncio.create_task(self._idle_loop(), name=f"{self.session.id}-idle"))
        self._tasks.append(asyncio.create_task(self._read(), name=f"{self.session.id}-read"))
        # ends when the client goes (reader), the session ends (pump) or the idle timer closes it
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = t.exception()
            if exc is not None and not isinstance(exc, ConnectionClosed):
                raise exc

    async def shutdown(self) -> None:
        """Stop everything this client started: its generation stops, its session is freed."""
        for t in self._tasks:
            t.cancel()
        await self.session.close()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def wait_idle(self) -> None:
        """Until no turn runs: the user is not speaking and nothing is being transcribed or
        answered (bound it with a timeout)."""
        while True:
            with contextlib.suppress(Exception):
                await self.session.wait_idle()
            if self.session.state != "user_speaking":
                break
            await asyncio.sleep(0.05)  # the VAD ends the turn; its reply then runs
        # let the last events of the turn reach the client
        await asyncio.sleep(0.05)

    async def close(self, code: int, reason: str) -> None:
        if code == p.CloseCode.GOING_AWAY:
            with contextlib.suppress(ConnectionClosed):
                await self.send(p.Error(code=p.ErrorCode.SHUTTING_DOWN, message="the server is shutting down",
                                        error_type=p.ErrorType.SERVER))
        await self.ws.close(code, reason)

    # ---- sending

    async def send(self, event: p.ServerEvent) -> None:
        self._n_events += 1
        event.event_id = f"event_{self._n_events}"
        text = p.serialize(event)
        first_audio = isinstance(event, p.ResponseAudioDelta) and event.response_id not in self._first_audio
        async with self._send_lock:
            if first_audio:  # stamped as it goes to the socket (the write happens before any await)
                remember(self._first_audio, event.response_id, (now_ns() / 1e6, event.event_id), 64)
            await self.ws.send(text)
        self.bytes_out += len(text)
        self.events_out += 1
        if isinstance(event, p.Error):
            self.errors_sent += 1

    # ---- client -> rules -> session

    async def _read(self) -> None:
        max_bytes = self.server.options.max_message_bytes
        async for message in self.ws:
            received_ns = now_ns()
            self.last_activity = time.monotonic()
            self.bytes_in += len(message)
            self.events_in += 1
            seq, kind = self.events_in, None
            event_id = None
            try:
                event = p.parse_client_event(message, max_bytes=max_bytes)
                event_id, kind = event.event_id, event.type
                for out in await self._receive(event):
                    await self.send(out)
            except p.ProtocolError as err:
                if err.event_id is None:
                    err.event_id = event_id
                await self.send(err.to_event())
            except ConnectionClosed:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad event must not end the connection
                log.exception("handling a client event")
                await self.send(p.ProtocolError(
                    p.ErrorCode.SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}",
                    event_id=event_id, error_type=p.ErrorType.SERVER,
                ).to_event())
            finally:
                self._received.append((seq, kind, received_ns, now_ns()))

    async def _receive(self, event: p.ClientEvent) -> list[p.ServerEvent]:
        for fmt, param in self.rules.models_needed(event):  # a session.update checks everything first
            await self.server.load_format_model(fmt, param)
        job = self.rules.decode_job(event)
        if job is not None and job.offload:
            await asyncio.to_thread(job)
        out = self.rules.receive(event, job)
        if isinstance(event, p.S2SSessionReset) and self.rules.reset_pending:
            self._tasks.append(asyncio.create_task(self._reset_timeout(), name=f"{self.session.id}-reset"))
        return out

    async def _reset_timeout(self) -> None:
        await asyncio.sleep(RESET_TIMEOUT_S)
        for out in self.rules.reset_expired():
            await self.send(out)

    # ---- session -> rules -> client

    async def _pump(self) -> None:
        async for e in self.session.stream():
            self.last_activity = time.monotonic()
            job = self.rules.encode_job(e)
            if job is not None and job.offload:
                await asyncio.to_thread(job)
            for out in self.rules.engine_event(e, job):
                if isinstance(out, p.S2STurnMetrics):
                    out.network = self._network(out)
                await self.send(out)

    def _network(self, out: p.S2STurnMetrics) -> dict[str, Any] | None:
        """The ``network`` stamps of an ``s2s.turn.metrics`` (see :class:`remote.protocol.S2STurnMetrics`).

        The client message that ended the turn is the one being handled when the engine stamped the
        end of speech (``speech_end_ns``: the arrival of the audio that carried it, or the commit) or,
        for a text turn, the end of turn (``turn_end_ns``: the ``response.create``). Messages are
        handled one at a time, so at most one handling window holds the stamp.
        """
        stamps = out.metrics.get("stamps_ns") or {}
        end_ns = stamps.get("speech_end_ns") or stamps.get("turn_end_ns")
        msg: tuple[int, str | None, int, int] | None = None
        if isinstance(end_ns, int):
            for entry in reversed(self._received):
                if entry[2] <= end_ns <= entry[3]:
                    msg = entry
                    break
                if entry[3] < end_ns:
                    break
        audio = self._first_audio.pop(out.response_id, None) if out.response_id else None
        if msg is None and audio is None:
            return None
        return {
            "first_audio_sent_server_ms": None if audio is None else round(audio[0], 3),
            "first_audio_event_id": None if audio is None else audio[1],
            "turn_end_message": None if msg is None else msg[0],
            "turn_end_message_type": None if msg is None else msg[1],
            "turn_end_received_server_ms": None if msg is None else round(msg[2] / 1e6, 3),
        }

    # ---- periodic

    def stats(self) -> p.S2SStats:
        srv = self.server
        return p.S2SStats(
            gpu=srv.engine.gpu_memory_cached(),  # refreshed off the loop by _stats_loop
            models=handshake.public_models(srv.models),
            sessions={"active": srv.session_count, "max": srv.options.max_sessions},
            session={
                "id": self.session.id,
                "state": self.session.state,
                "uptime_s": round(time.monotonic() - self.opened, 1),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "events_in": self.events_in,
                "events_out": self.events_out,
                "errors_sent": self.errors_sent,
            },
            profile=srv.profile_name,
            device=srv.device,
            server_time_ms=now_ns() / 1e6,
        )

    async def _stats_loop(self) -> None:
        interval = self.server.options.stats_interval_s
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.server.engine.gpu_memory)  # may run nvidia-smi: off the loop
            await self.send(self.stats())

    async def _idle_loop(self) -> None:
        limit = self.server.options.idle_timeout_s
        while True:
            await asyncio.sleep(min(limit / 4, 5.0))
            idle = time.monotonic() - self.last_activity
            if idle >= limit and self.session.state == "listening" and not self.session.busy:
                log.info("session %s idle for %.0f s: closing", self.session.id, idle)
                await self.send(p.Error(code=p.ErrorCode.IDLE_TIMEOUT, error_type=p.ErrorType.SERVER,
                                        message=f"no client event for {limit:g} s; closing the idle session"))
                await self.ws.close(p.CloseCode.IDLE_TIMEOUT, "idle timeout")
                return


async def recycle_when_over(server: RealtimeServer, stop: asyncio.Event) -> bool:
    """Read the server's RSS every ``recycle_check_s`` until it passes ``recycle_rss_mib`` (then
    :meth:`RealtimeServer.recycle`: True once its open sessions are done) or ``stop`` is set
    (False). Memory that creeps up over days (docs/soak.md) then costs a planned restart between
    conversations, where a memory limit would kill the process mid-reply."""
    o = server.options
    while not stop.is_set():
        rss = rss_mib()
        if rss is not None and rss > o.recycle_rss_mib:
            await server.recycle(f"RSS {rss:.0f} MiB is over --recycle-rss-mib {o.recycle_rss_mib:g}",
                                 o.recycle_wait_s, stop)
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(o.recycle_check_s):
                await stop.wait()
    return False


def _query(path: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(path.split("?", 1)[1] if "?" in path else "")


async def serve(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    max_sessions: int = 8,
    **options: Any,
) -> RealtimeServer:
    """Start serving ``engine`` and return the running :class:`RealtimeServer`.

    ``options`` are the other :class:`ServerOptions` fields. Use ``port=0`` for any free port and
    read ``server.port``. ``async with await serve(...) as server:`` closes it on exit.
    Raises :class:`ConfigError` for a non-loopback host without a token.
    """
    server = RealtimeServer(engine, ServerOptions(host=host, port=port, token=token, max_sessions=max_sessions,
                                                  **options))
    await server.start()
    return server


_COMMAND = ("add_headless_arguments", "build_parser", "main", "options_from_args", "run_headless")


def __getattr__(name: str) -> Any:
    """The command's functions (:mod:`remote.headless`), importable from here as before."""
    if name in _COMMAND:
        from remote import headless

        return getattr(headless, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from remote.headless import main

    raise SystemExit(main())


__all__ = ["HEALTH_PATHS", "READY_PATHS", "REALTIME_PATHS", "RECYCLE_EXIT", "RealtimeServer", "ServerOptions", "check_bind",
           "codec_path", "is_loopback", "recycle_when_over", "serve", *_COMMAND]

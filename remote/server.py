"""``s2s-engine --headless``: the engine behind a WebSocket that speaks the Realtime protocol.

A thin asyncio layer: :mod:`remote.protocol` parses, validates and maps events; the engine's
:class:`~engine.session.Session` does the work. One loaded :class:`~engine.engine.Engine` is
shared by every connection; each connection gets its own session.

- ``ws://HOST:PORT/v1/realtime`` (``?model=`` accepted and ignored): the Realtime endpoint, so a
  client with base URL ``http://HOST:PORT/v1`` connects.
- ``GET /healthz`` (liveness): 200 while the process runs, loading and draining included. The body
  is ``ok``; the details (state, profile, models, sessions) need the token.
- ``GET /readyz`` (readiness, for a load balancer or Kubernetes): 200 when a new session would be
  taken; 503 while the models load, while draining, and at ``--max-sessions``. The body names the
  state (``ready``, ``loading``, ``draining``, ``full``); free session slots need the token.
- ``GET /``: the browser client (``remote/web/``, served by :mod:`remote.web` with a strict
  Content-Security-Policy); ``--no-web`` turns it off.
- A token, when set, is checked before any session starts, from ``Authorization: Bearer T`` (what
  OpenAI SDKs send) or the ``openai-insecure-api-key.T`` subprotocol (what browsers send).
  Binding to a non-loopback address without a token is refused.
- At capacity a new session gets an ``error`` (``session_limit_reached``), then close 1013: a
  client or balancer retries elsewhere. While loading or draining the handshake gets HTTP 503
  (``server_loading`` / ``server_shutting_down``), which a balancer can retry on another engine.
- SIGTERM/SIGINT (drain): readiness turns 503 at once and no new session starts; the listener
  stays up for the probes; each running turn may finish within a grace period, then its session
  is closed with 1001; exit 0.
- ``run_headless`` listens before the models load (off the event loop), so readiness can say
  ``loading``.

Why the ``websockets`` library: its asyncio server is a thin layer over a sans-I/O protocol,
handles ping/pong, close codes and size limits, and ``process_request`` serves ``/healthz`` on the
same port. Encodec (torch) is imported only when a session asks for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine import events as ev
from engine.cliargs import CommandParser, add_profile_arguments
from engine.clock import now_ns
from engine.errors import ConfigError, ResponseInProgress, S2SError
from remote import protocol as p
from remote import web

if TYPE_CHECKING:  # pragma: no cover
    from engine.codec import EncodecCodec
    from engine.config import Profile
    from engine.engine import Engine
    from engine.session import Session

log = logging.getLogger("remote.server")

REALTIME_PATHS = ("/v1/realtime", "/realtime")
_RECEIVED_LOG = 8192  # client messages remembered for network timing (about 80 s of 10 ms chunks)
HEALTH_PATHS = ("/healthz", "/health")
READY_PATHS = ("/readyz", "/ready")


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


def codec_path(codec_model: str, profile: Profile) -> str:
    """The Encodec weights to load: ``--codec-model``, else the profile's ``session.codec_model``
    (a model reference, resolved like every stage's), else the cached default hub id."""
    from engine.codec import DEFAULT_MODEL
    from engine.models import resolve

    if codec_model:
        return codec_model
    ref = profile.session.codec_model
    return resolve("codec", ref, profile.name) if ref else DEFAULT_MODEL


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; anything else (``0.0.0.0``, names) is not."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the engine beyond this machine without a token (:class:`ConfigError`)."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to listen on {host!r} without a token: anyone who can reach it could use the engine. "
            "Pass --token T (or set S2S_TOKEN), or bind 127.0.0.1 and reach it through `ssh -L`."
        )


def _token_from_headers(headers: Headers) -> tuple[str | None, str | None]:
    """(bearer token, subprotocol token) offered by a handshake."""
    bearer = None
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        bearer = auth[7:].strip()
    sub = None
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        for proto in value.split(","):
            proto = proto.strip()
            if proto.startswith(p.API_KEY_SUBPROTOCOL_PREFIX):
                sub = proto[len(p.API_KEY_SUBPROTOCOL_PREFIX):]
    return bearer, sub


def _response(status: HTTPStatus, data: bytes, content_type: str) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(data))),
         ("Connection", "close"), ("Cache-Control", "no-store")]
    )
    return Response(status.value, status.phrase, headers, data)


def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
    return _response(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")


def _text_response(status: HTTPStatus, text: str) -> Response:
    return _response(status, f"{text}\n".encode(), "text/plain; charset=utf-8")


def _http_error(status: HTTPStatus, code: str, message: str) -> Response:
    return _json_response(status, {"error": {"type": "invalid_request_error", "code": code, "message": message}})


def _public_models(models: dict[str, Any]) -> dict[str, Any]:
    """Stage descriptions without local file paths (``/healthz`` needs no token)."""
    return {stage: {k: v for k, v in info.items() if k != "path"} for stage, info in models.items()}


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
        self._close_started = False
        self.started = time.monotonic()
        self.total_sessions = 0
        self.refused_token = 0  # handshakes without the right token
        self.refused_full = 0  # sessions refused at --max-sessions
        self._ws: Server | None = None
        self._codec: EncodecCodec | None = None
        self._codec_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._profile = self._device = ""
        self._models: dict[str, Any] = {}
        if engine is not None:
            self.attach(engine)

    def attach(self, engine: Engine) -> None:
        """Serve ``engine`` (loaded): readiness turns from ``loading`` to ``ready``."""
        info = engine.describe()
        self._profile = str(info.get("profile", ""))
        self._device = str(info.get("device", ""))
        self._models = info.get("models", {})
        self.engine = engine

    @property
    def state(self) -> str:
        """``loading`` (no engine yet), ``draining`` (shutting down), ``full`` (at --max-sessions)
        or ``ready``: only ``ready`` takes a new session."""
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

    async def __aenter__(self) -> RealtimeServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(grace_s=0)

    # ---- handshake

    def _authorized(self, headers: Headers) -> bool | None:
        """True: the right token (or the server has none); False: a wrong one; None: none sent."""
        token = self.options.token
        if not token:
            return True
        bearer, sub = _token_from_headers(headers)
        if bearer is None and sub is None:
            return None
        return any(t is not None and hmac.compare_digest(t.encode(), token.encode()) for t in (bearer, sub))

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path in HEALTH_PATHS or path in READY_PATHS:
            return self._probe(path in READY_PATHS, self._authorized(request.headers))
        if self.options.web and web.is_page_request(request):
            return web.page_response(request)
        if path.rstrip("/") not in REALTIME_PATHS:
            return _http_error(HTTPStatus.NOT_FOUND, "not_found", f"no endpoint at {path}; use /v1/realtime")
        if self.closing or self.engine is None:
            log.info("refused a new session with 503: %s", self.state)
            if self.closing:
                return _http_error(HTTPStatus.SERVICE_UNAVAILABLE, p.ErrorCode.SHUTTING_DOWN,
                                   "the server is shutting down")
            return _http_error(HTTPStatus.SERVICE_UNAVAILABLE, p.ErrorCode.LOADING,
                               "the server is still loading its models; try again in a few seconds")
        ok = self._authorized(request.headers)
        if not ok:
            self.refused_token += 1
            what = "no token" if ok is None else "a wrong token"
            log.warning("refused a client with %s", what)
            return _http_error(
                HTTPStatus.UNAUTHORIZED,
                "invalid_api_key",
                f"{what}: send 'Authorization: Bearer <token>' or the "
                f"'{p.API_KEY_SUBPROTOCOL_PREFIX}<token>' subprotocol",
            )
        return None

    def _probe(self, readiness: bool, authorized: bool | None) -> Response:
        """``/healthz`` (liveness) or ``/readyz`` (readiness). Without a token only ``ok`` or the
        state word; with it (or on a server without one) the JSON details; a wrong token gets 401."""
        if authorized is False:
            return _http_error(HTTPStatus.UNAUTHORIZED, "invalid_api_key",
                               "a wrong token: the details need 'Authorization: Bearer <token>'; "
                               "without a token the answer is the status only")
        state = self.state
        status = HTTPStatus.OK if not readiness or state == "ready" else HTTPStatus.SERVICE_UNAVAILABLE
        if authorized is None:
            return _text_response(status, state if readiness else "ok")
        body = self.readiness() if readiness else self.health()
        return _json_response(status, body)

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
        return p.SUBPROTOCOL if p.SUBPROTOCOL in offered else None

    def _sessions(self) -> dict[str, int]:
        o = self.options
        active = self.session_count
        free = max(0, o.max_sessions - active) if self.state == "ready" else 0
        return {"active": active, "max": o.max_sessions, "free": free, "total": self.total_sessions,
                "refused_full": self.refused_full}

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` details (token holders only): state and session slots."""
        state = self.state
        return {"ready": state == "ready", "state": state, "sessions": self._sessions()}

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` details (token holders only)."""
        return {
            "status": "ok",
            "state": self.state,
            "profile": self._profile,
            "device": self._device,
            "models": _public_models(self._models),
            "sessions": self._sessions(),
            "codec": None if self._codec is None else {"name": self._codec.name, "random_weights": self._codec.random_weights},
            "uptime_s": round(time.monotonic() - self.started, 1),
            "protocol": {"max_message_bytes": self.options.max_message_bytes, "audio": ["audio/pcm", p.ENCODEC_FORMAT]},
        }

    # ---- codec

    async def codec(self, param: str) -> EncodecCodec:
        """The shared Encodec codec, loaded on first use (off the event loop)."""
        async with self._codec_lock:
            if self._codec is None:
                o = self.options

                def load() -> EncodecCodec:
                    if o.codec_factory is not None:
                        return o.codec_factory()
                    from engine.codec import EncodecCodec

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
            await _refuse(ws, p.ErrorCode.SHUTTING_DOWN, "the server is shutting down", p.CloseCode.GOING_AWAY)
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
            log.info("session %s closed (%d active)", session.id, len(self.connections))


async def _refuse(ws: ServerConnection, code: str, message: str, close: int) -> None:
    err = p.Error(event_id="event_0", code=code, message=message, error_type=p.ErrorType.SERVER)
    with contextlib.suppress(ConnectionClosed):
        await ws.send(p.serialize(err))
        await ws.close(close, message[:120])


class _Connection:
    """One client: reads client events into the session, pumps session events out."""

    def __init__(self, server: RealtimeServer, ws: ServerConnection, session: Session):
        self.server, self.ws, self.session = server, ws, session
        self.mapper = p.EventMapper()
        models = server._models
        model = "s2s"
        with contextlib.suppress(Exception):
            model = dict(_query(ws.request.path)).get("model") or "s2s"  # type: ignore[union-attr]
        vad = server.engine.profile.vad
        adaptive = session.turn_policy != "silence"
        self.config = p.SessionConfig(
            id=session.id,
            model=model[:64],
            instructions=session.instructions,
            turn_detection=p.TurnDetection(
                type="semantic_vad" if adaptive else "server_vad",
                create_response=session.options.auto_response,
                silence_duration_ms=vad.end_of_turn_silence_ms,
                prefix_padding_ms=vad.pre_roll_ms,
                threshold=vad.threshold,
                eagerness="auto" if adaptive else None,
            ) if session.options.turn_detection else None,
            language=session.language or "auto",
            asr_model=str(models.get("asr", {}).get("model", "")),
            tts_voice=str(models.get("tts", {}).get("model", "")),
            profile=server._profile,
        )
        self._n_events = 0
        self.bytes_in = self.bytes_out = 0
        self.events_in = self.events_out = 0
        self.errors_sent = 0
        self.opened = time.monotonic()
        self.last_activity = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._decoder: Any = None  # EncodecStreamDecoder while input is Encodec
        self._encoders: dict[str, Any] = {}  # response id -> EncodecStreamEncoder
        self._resp_format: dict[str, p.AudioFormat] = {}
        self._pending_commits: deque[str | None] = deque()
        self._deferred_response: list[str | None] = []
        self._uncommitted_samples = 0  # audio appended since the last commit or clear
        # network timing (see _network): every client message's index, type and when the server
        # read it and finished handling it (ns); the first audio delta sent per response (ms, event id)
        self._received: deque[tuple[int, str | None, int, int]] = deque(maxlen=_RECEIVED_LOG)
        self._first_audio: dict[str, tuple[float, str]] = {}

    # ---- lifecycle

    async def run(self) -> None:
        await self.session.start()
        await self.send(p.SessionCreated(session=self.config.to_dict()))
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
                self._first_audio[event.response_id] = (now_ns() / 1e6, event.event_id)
                while len(self._first_audio) > 64:
                    self._first_audio.pop(next(iter(self._first_audio)))
            await self.ws.send(text)
        self.bytes_out += len(text)
        self.events_out += 1
        if isinstance(event, p.Error):
            self.errors_sent += 1

    async def send_error(self, err: p.ProtocolError) -> None:
        await self.send(err.to_event())

    # ---- client -> session

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
                await self._handle(event)
            except p.ProtocolError as err:
                if err.event_id is None:
                    err.event_id = event_id
                await self.send_error(err)
            except S2SError as exc:
                await self.send_error(p.ProtocolError(exc.code, str(exc), event_id=event_id))
            except ConnectionClosed:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad event must not end the connection
                log.exception("handling a client event")
                await self.send_error(p.ProtocolError(
                    p.ErrorCode.SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}",
                    event_id=event_id, error_type=p.ErrorType.SERVER,
                ))
            finally:
                self._received.append((seq, kind, received_ns, now_ns()))

    async def _handle(self, e: p.ClientEvent) -> None:
        s = self.session
        if isinstance(e, p.InputAudioBufferAppend):
            await self._append(e)
        elif isinstance(e, p.SessionUpdate):
            await self._update(e)
        elif isinstance(e, p.InputAudioBufferCommit):
            if self._uncommitted_samples == 0:
                raise p.ProtocolError(p.ErrorCode.COMMIT_EMPTY,
                                      "the input audio buffer is empty: append audio before committing")
            s.commit()
            self._uncommitted_samples = 0
            self._pending_commits.append(e.event_id)
        elif isinstance(e, p.InputAudioBufferClear):
            s.clear_input()
            self._uncommitted_samples = 0
            if self._decoder is not None:
                self._decoder.reset()
            await self.send(p.InputAudioBufferCleared())
        elif isinstance(e, p.ConversationItemCreate):
            turn_id = s.add_user_text(e.text)
            for out in self.mapper.text_item(turn_id, e.text, e.item_id):
                await self.send(out)
        elif isinstance(e, p.ResponseCreate):
            if self._pending_commits and self.config.turn_detection is None:
                # the committed audio is still being transcribed: respond once it is in the history
                self._deferred_response.append(e.event_id)
                return
            self._create_response(e.event_id)
        elif isinstance(e, p.ResponseCancel):
            active = self.mapper.active_response()
            if e.response_id is not None and e.response_id != active:
                raise p.ProtocolError(p.ErrorCode.CANCEL_NOT_ACTIVE,
                                      f"response {e.response_id!r} is not in progress", param="response_id")
            if active is not None:
                self.mapper.cancel_requested(active)
            if self._deferred_response:
                self._deferred_response.clear()
                return
            if not s.cancel_response():
                raise p.ProtocolError(p.ErrorCode.CANCEL_NOT_ACTIVE, "there is no response in progress to cancel")
        elif isinstance(e, p.ConversationItemTruncate):
            rid = self.mapper.response_for_item(e.item_id)
            if rid is None:
                raise p.ProtocolError(p.ErrorCode.ITEM_NOT_FOUND,
                                      f"no assistant audio item {e.item_id!r} in this session", param="item_id")
            try:
                s.truncate(rid, e.audio_end_ms)
            except S2SError as exc:
                raise p.ProtocolError(p.ErrorCode.ITEM_NOT_FOUND, str(exc), param="item_id") from None
            await self.send(p.ConversationItemTruncated(item_id=e.item_id, content_index=0,
                                                        audio_end_ms=e.audio_end_ms))
        elif isinstance(e, p.S2SPing):
            await self.send(p.S2SPong(client_time_ms=e.client_time_ms, server_time_ms=now_ns() / 1e6))
        elif isinstance(e, p.S2SSessionReset):
            await self._reset()

    async def _reset(self) -> None:
        """``s2s.session.reset``: forget the history, cancel the reply, then ``reset_done``.

        ``Session.reset`` ends a running reply at once (its ``response.done`` is queued before it
        returns); the answer waits until the pump has sent it, so a client sees the cancelled
        ``response.done`` first. A user turn already being transcribed is not stopped by the engine.
        """
        active = self.mapper.active_response()
        if active is not None:
            self.mapper.cancel_requested(active)
        self._deferred_response.clear()  # a response.create waiting for a transcript is dropped
        self.session.reset()
        deadline = time.monotonic() + 2.0
        while self.mapper.active_response() is not None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        self.mapper.last_item_id = None  # the conversation is empty again
        await self.send(p.S2SSessionResetDone(session_id=self.session.id, cancelled_response_id=active))

    def _create_response(self, event_id: str | None) -> None:
        try:
            self.session.create_response()
        except S2SError as exc:
            code = p.ErrorCode.ACTIVE_RESPONSE if isinstance(exc, ResponseInProgress) else p.ErrorCode.INVALID_STATE
            raise p.ProtocolError(code, str(exc), event_id=event_id) from None

    async def _append(self, e: p.InputAudioBufferAppend) -> None:
        fmt = self.config.input_format
        if not e.audio:
            return
        if fmt.is_encodec:
            from engine.errors import AudioError

            try:
                pcm = await asyncio.to_thread(self._decoder.push, e.audio)
            except AudioError as exc:
                raise p.ProtocolError(p.ErrorCode.INVALID_AUDIO, f"not a valid {p.ENCODEC_FORMAT} packet: {exc}",
                                      param="audio") from None
            self.session.push_audio(pcm, sample_rate=p.PCM_RATE)
            self._uncommitted_samples += len(pcm)
            return
        if e.audio[:4] == b"RIFF" and e.audio[8:12] == b"WAVE":
            raise p.ProtocolError(p.ErrorCode.INVALID_AUDIO,
                                  "this is a WAV file; send raw audio/pcm (24 kHz 16-bit mono) without its header",
                                  param="audio")
        samples = p.pcm16_decode(e.audio)
        self.session.push_audio(samples, sample_rate=p.PCM_RATE)
        self._uncommitted_samples += len(samples)

    async def _update(self, e: p.SessionUpdate) -> None:
        patch = e.session
        # check everything first: a refused update changes nothing
        codec = None
        for fmt, param in ((patch.input_format, "session.audio.input.format"),
                           (patch.output_format, "session.audio.output.format")):
            if fmt is not p.UNSET and fmt.is_encodec:
                codec = await self.server.codec(param)
        new = self.config.apply(patch)
        kwargs: dict[str, Any] = {}
        if patch.turn_detection is not p.UNSET:
            td = patch.turn_detection
            kwargs["turn_detection"] = td is not None
            kwargs["auto_response"] = td.create_response if td is not None else False
            if td is not None:
                td, turn = _turn_detection(self.server.engine, td)
                kwargs.update(turn)
                new = new.apply(p.SessionPatch(turn_detection=td))
        if patch.instructions is not p.UNSET:
            kwargs["instructions"] = patch.instructions if patch.instructions is not None else \
                self.server.engine.profile.llm.system_prompt
            new = dataclasses.replace(new, instructions=kwargs["instructions"])
        if patch.language is not p.UNSET:
            kwargs["language"] = patch.language
        self.session.update(**kwargs)
        if patch.input_format is not p.UNSET and patch.input_format != self.config.input_format:
            self._decoder = codec.stream_decoder() if patch.input_format.is_encodec and codec else None
        self.config = new
        await self.send(p.SessionUpdated(session=new.to_dict()))

    # ---- session -> client

    async def _pump(self) -> None:
        async for e in self.session.stream():
            self.last_activity = time.monotonic()
            if isinstance(e, ev.ResponseStarted):
                self._resp_format[e.response_id] = self.config.output_format
            elif isinstance(e, ev.SpeechStopped):
                self._uncommitted_samples = 0  # the VAD committed the turn
            if isinstance(e, ev.ReplyAudio):
                await self._send_audio(e)
                continue
            if isinstance(e, ev.ResponseDone):
                await self._finish_audio(e.response_id, flush=e.status == "completed")
            if isinstance(e, ev.ErrorEvent) and e.code == p.ErrorCode.COMMIT_EMPTY:
                client_id = self._pending_commits.popleft() if self._pending_commits else None
                await self.send(p.Error(code=e.code, message=e.message, client_event_id=client_id))
                await self._resolve_deferred(cancel=True)
                continue
            for out in self.mapper.map(e):
                if isinstance(out, p.S2STurnMetrics):
                    out.network = self._network(out)
                await self.send(out)
            if isinstance(e, ev.TranscriptFinal | ev.ErrorEvent) and self._pending_commits and (
                not isinstance(e, ev.ErrorEvent) or e.stage == "asr"
            ) and not self._is_text_turn(e):
                self._pending_commits.popleft()
                await self._resolve_deferred(cancel=isinstance(e, ev.ErrorEvent) or not e.text.strip())

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

    def _is_text_turn(self, e: Any) -> bool:
        return isinstance(e, ev.TranscriptFinal) and e.turn_id in self.mapper._text_turns

    async def _resolve_deferred(self, cancel: bool) -> None:
        if self._pending_commits or not self._deferred_response:
            return
        ids, self._deferred_response = self._deferred_response, []
        if cancel:
            return
        try:
            self._create_response(ids[0])
        except p.ProtocolError as err:
            await self.send_error(err)

    async def _send_audio(self, e: ev.ReplyAudio) -> None:
        fmt = self._resp_format.get(e.response_id, self.config.output_format)
        if not fmt.is_encodec:
            for out in self.mapper.map(e):
                await self.send(out)
            return
        enc = self._encoders.get(e.response_id)
        if enc is None:
            codec = await self.server.codec("session.audio.output.format")
            enc = self._encoders[e.response_id] = codec.stream_encoder(fmt.bandwidth)
        samples = self.mapper.reply_pcm(e)
        for packet in await asyncio.to_thread(enc.push, samples):
            await self.send(self.mapper.audio_delta(e.response_id, packet))

    async def _finish_audio(self, response_id: str, flush: bool) -> None:
        self._resp_format.pop(response_id, None)
        enc = self._encoders.pop(response_id, None)
        if enc is not None:
            tail = self.mapper.reply_tail(response_id, keep=flush)  # what the 24 kHz resampler holds
            if flush:
                packets = await asyncio.to_thread(lambda: [*enc.push(tail), enc.flush()])
                for packet in packets:
                    if packet is not None:
                        await self.send(self.mapper.audio_delta(response_id, packet))

    # ---- periodic

    def stats(self) -> p.S2SStats:
        srv = self.server
        return p.S2SStats(
            gpu=srv.engine.gpu_memory_cached(),  # refreshed off the loop by _stats_loop
            models=_public_models(srv._models),
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
            profile=srv._profile,
            device=srv._device,
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


def _turn_detection(engine: Engine, td: p.TurnDetection) -> tuple[p.TurnDetection, dict[str, Any]]:
    """What a client's ``turn_detection`` means for the session (``Session.update`` keywords),
    and the object to report back. ``semantic_vad``: an adaptive end-of-turn policy (the
    profile's, or one this engine can run), its longest wait scaled by ``eagerness``;
    ``server_vad`` with ``silence_duration_ms``: a fixed silence; ``server_vad`` alone: the profile's
    policy (what our own clients send when they turn server VAD back on)."""
    prof = engine.profile
    kw: dict[str, Any] = {}
    if td.type == "semantic_vad":
        policy = prof.turn.policy
        if policy == "silence":
            policy = "combined" if engine.turn_model is not None else "transcript"
        longest = prof.turn.max_silence_ms
        scaled = {"low": 2 * longest, "high": max(prof.turn.min_silence_ms, longest // 2)}.get(td.eagerness or "", longest)
        kw.update(turn_policy=policy, turn_max_silence_ms=scaled)
        silence = prof.vad.end_of_turn_silence_ms
    else:
        silence = td.silence_duration_ms or prof.vad.end_of_turn_silence_ms
        kw.update(turn_policy="silence" if td.silence_duration_ms else prof.turn.policy, eot_silence_ms=silence,
                  turn_max_silence_ms=prof.turn.max_silence_ms)
    reported = p.TurnDetection(type=td.type, create_response=td.create_response, silence_duration_ms=silence,
                               prefix_padding_ms=prof.vad.pre_roll_ms, threshold=prof.vad.threshold,
                               eagerness=(td.eagerness or "auto") if td.type == "semantic_vad" else None)
    return reported, kw


def _query(path: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(path.split("?", 1)[1] if "?" in path else "")


# --------------------------------------------------------------------------- entry points


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


def add_headless_arguments(parser: argparse.ArgumentParser, *, include_profile: bool = True) -> None:
    """The ``--headless`` options. ``include_profile=False`` leaves out ``--profile``/``--set``/``-v``
    for a parser that defines them already (:mod:`engine.cliargs`; parse with its ``CommandParser``)."""
    g = parser.add_argument_group("headless server (--headless)")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; anything else needs --token)")
    g.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    g.add_argument("--token", default=os.environ.get("S2S_TOKEN") or None,
                   help="clients must send it as 'Authorization: Bearer T' (default: $S2S_TOKEN)")
    g.add_argument("--max-sessions", type=int, default=8, help="concurrent sessions (default 8)")
    g.add_argument("--idle-timeout", type=float, default=600.0,
                   help="close a session after this many idle seconds (default 600; 0 never)")
    g.add_argument("--stats-interval", type=float, default=5.0,
                   help="seconds between s2s.stats events (default 5; 0 never)")
    g.add_argument("--grace", type=float, default=5.0,
                   help="on SIGTERM/SIGINT, seconds running turns get to finish (default 5)")
    g.add_argument("--max-message-bytes", type=int, default=p.MAX_MESSAGE_BYTES,
                   help=f"largest client message accepted (default {p.MAX_MESSAGE_BYTES})")
    g.add_argument("--codec-model", default="",
                   help="Encodec weights for the s2s.encodec audio format (folder or cached hub id; default: "
                        "the profile's session.codec_model, else facebook/encodec_24khz)")
    g.add_argument("--codec-random-weights", action="store_true",
                   help="TESTS ONLY: Encodec with random weights (the audio is noise; framing and bitrate are real)")
    g.add_argument("--no-web", action="store_true",
                   help="do not serve the browser client at / (only /v1/realtime and /healthz)")
    if include_profile:
        add_profile_arguments(g)


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    d = ServerOptions()
    return ServerOptions(
        host=getattr(args, "host", d.host),
        port=getattr(args, "port", d.port),
        token=getattr(args, "token", None) or None,
        max_sessions=getattr(args, "max_sessions", d.max_sessions),
        max_message_bytes=getattr(args, "max_message_bytes", d.max_message_bytes),
        idle_timeout_s=getattr(args, "idle_timeout", d.idle_timeout_s),
        stats_interval_s=getattr(args, "stats_interval", d.stats_interval_s),
        grace_s=getattr(args, "grace", d.grace_s),
        codec_model=getattr(args, "codec_model", d.codec_model),
        codec_random_weights=getattr(args, "codec_random_weights", False),
        web=not getattr(args, "no_web", False),
    )


def run_headless(args: argparse.Namespace) -> int:
    """Listen at once, load the engine off the event loop, serve until SIGTERM/SIGINT, drain; the
    exit code (0 after a drain; a failed load raises its :class:`S2SError` after the listener closed).

    ``args`` needs ``host, port, profile, set, token, max_sessions`` (others take defaults).
    """
    opts = options_from_args(args)
    if opts.max_sessions < 1:
        raise ConfigError(f"--max-sessions must be at least 1, got {opts.max_sessions}")
    if opts.grace_s < 0:
        raise ConfigError(f"--grace must be 0 or more seconds, got {opts.grace_s:g}")
    check_bind(opts.host, opts.token)  # before the slow model load
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    from engine.config import load_profile

    profile = load_profile(getattr(args, "profile", "offline"), list(getattr(args, "set", None) or []))
    return asyncio.run(_serve_until_signal(profile, opts))


async def _serve_until_signal(profile: Profile, opts: ServerOptions) -> int:
    from engine.engine import Engine

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    server = RealtimeServer(None, opts)
    await server.start()
    base = "http://" + server.url.removeprefix("ws://").split("/", 1)[0]
    print(f"s2s-engine: listening on {server.url}, loading profile {profile.name!r} ... "
          f"(readiness: {base}/readyz)", file=sys.stderr, flush=True)
    loading = asyncio.ensure_future(asyncio.to_thread(Engine.load, profile))
    stopping = asyncio.ensure_future(stop.wait())
    engine: Engine | None = None
    try:
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            engine = loading.result()  # a failed load raises here (the listener closes below)
            server.attach(engine)
            print(f"s2s-engine: serving {server.url}  (health: {base}/healthz, readiness: {base}/readyz"
                  f"{', token required for details' if opts.token else ''})", file=sys.stderr, flush=True)
            if opts.web:
                print(f"s2s-engine: browser client at {base}/  (through an SSH tunnel: "
                      f"http://localhost:{server.port}/)", file=sys.stderr, flush=True)
            await stopping
        else:  # stopped while loading: a thread cannot be interrupted; the probes say draining meanwhile
            print("s2s-engine: stopping while the models load ...", file=sys.stderr, flush=True)
            server.stop_accepting()
            with contextlib.suppress(Exception):
                engine = await loading
        print("s2s-engine: draining ...", file=sys.stderr, flush=True)
        await server.close()
        return 0
    finally:
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        if not server._close_started:
            await server.close(grace_s=0)
        if engine is not None:
            await asyncio.to_thread(engine.close)


def build_parser() -> CommandParser:
    """The parser of ``python -m remote.server`` (the ``--headless`` options and the profile)."""
    ap = CommandParser(prog="python -m remote.server", description=__doc__.split("\n", 1)[0])
    add_headless_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    """``python -m remote.server``: the same as ``s2s-engine --headless``."""
    args = build_parser().parse_args(argv)
    try:
        return run_headless(args)
    except S2SError as exc:
        print(f"s2s-engine: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["RealtimeServer", "ServerOptions", "add_headless_arguments", "build_parser", "check_bind", "is_loopback",
           "options_from_args", "run_headless", "serve"]

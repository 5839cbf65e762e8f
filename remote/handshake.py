"""The HTTP side of the headless server: who may connect, and the health and readiness probes.

Everything here answers an HTTP request before any WebSocket session exists (``websockets``'
``process_request`` hook): the path, the token, the server's state (loading, draining), the
browser page, and ``/healthz`` / ``/readyz``. The WebSocket side is :mod:`remote.server`.

- A token, when set, is checked before any session starts, from ``Authorization: Bearer T`` (what
  OpenAI SDKs send) or the ``openai-insecure-api-key.T`` subprotocol (what browsers send).
  Binding to a non-loopback address without a token is refused (:func:`check_bind`).
- ``GET /healthz`` (liveness): 200 while the process runs; ``GET /readyz`` (readiness): 200 when
  a new session would be taken, else 503. Without the token only the word; the details need it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from engine.errors import ConfigError
from remote import protocol as p
from remote import web
from remote.memory import memory_report

if TYPE_CHECKING:  # pragma: no cover
    from remote.server import RealtimeServer

log = logging.getLogger("remote.server")

REALTIME_PATHS = ("/v1/realtime", "/realtime")
HEALTH_PATHS = ("/healthz", "/health")
READY_PATHS = ("/readyz", "/ready")


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


def _tokens(headers: Headers) -> tuple[str | None, str | None]:
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


def authorized(headers: Headers, token: str | None) -> bool | None:
    """True: the right token (or the server has none); False: a wrong one; None: none sent."""
    if not token:
        return True
    bearer, sub = _tokens(headers)
    if bearer is None and sub is None:
        return None
    return any(t is not None and hmac.compare_digest(t.encode(), token.encode()) for t in (bearer, sub))


def _response(status: HTTPStatus, data: bytes, content_type: str) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(data))),
         ("Connection", "close"), ("Cache-Control", "no-store")]
    )
    return Response(status.value, status.phrase, headers, data)


def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
    return _response(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")


def _http_error(status: HTTPStatus, code: str, message: str) -> Response:
    return _json_response(status, {"error": {"type": "invalid_request_error", "code": code, "message": message}})


def public_models(models: dict[str, Any]) -> dict[str, Any]:
    """Stage descriptions without local file paths (``/healthz`` needs no token)."""
    return {stage: {k: v for k, v in info.items() if k != "path"} for stage, info in models.items()}


def process_request(server: RealtimeServer, request: Request) -> Response | None:
    """The answer to an HTTP request, or None to go on with the WebSocket handshake."""
    path = request.path.split("?", 1)[0]
    token = server.options.token
    if path in HEALTH_PATHS or path in READY_PATHS:
        return probe(server, path in READY_PATHS, authorized(request.headers, token))
    if server.options.web and web.is_page_request(request):
        return web.page_response(request)
    if path.rstrip("/") not in REALTIME_PATHS:
        return _http_error(HTTPStatus.NOT_FOUND, "not_found", f"no endpoint at {path}; use /v1/realtime")
    if server.closing or server.engine is None:
        log.info("refused a new session with 503: %s", server.state)
        if server.closing:
            return _http_error(HTTPStatus.SERVICE_UNAVAILABLE, p.ErrorCode.SHUTTING_DOWN, server.closing_message)
        return _http_error(HTTPStatus.SERVICE_UNAVAILABLE, p.ErrorCode.LOADING,
                           "the server is still loading its models; try again in a few seconds")
    ok = authorized(request.headers, token)
    if not ok:
        server.refused_token += 1
        what = "no token" if ok is None else "a wrong token"
        log.warning("refused a client with %s", what)
        return _http_error(HTTPStatus.UNAUTHORIZED, "invalid_api_key",
                           f"{what}: send 'Authorization: Bearer <token>' or the "
                           f"'{p.API_KEY_SUBPROTOCOL_PREFIX}<token>' subprotocol")
    return None


def probe(server: RealtimeServer, readiness: bool, authorized: bool | None) -> Response:
    """``/healthz`` (liveness) or ``/readyz`` (readiness). Without a token only ``ok`` or the
    state word; with it (or on a server without one) the JSON details; a wrong token gets 401."""
    if authorized is False:
        return _http_error(HTTPStatus.UNAUTHORIZED, "invalid_api_key",
                           "a wrong token: the details need 'Authorization: Bearer <token>'; "
                           "without a token the answer is the status only")
    state = server.state
    status = HTTPStatus.OK if not readiness or state == "ready" else HTTPStatus.SERVICE_UNAVAILABLE
    if authorized is None:
        text = state if readiness else "ok"
        return _response(status, f"{text}\n".encode(), "text/plain; charset=utf-8")
    return _json_response(status, readiness_body(server) if readiness else health_body(server))


def _sessions(server: RealtimeServer) -> dict[str, int]:
    o = server.options
    active = server.session_count
    free = max(0, o.max_sessions - active) if server.state == "ready" else 0
    return {"active": active, "max": o.max_sessions, "free": free, "total": server.total_sessions,
            "refused_full": server.refused_full}


def readiness_body(server: RealtimeServer) -> dict[str, Any]:
    """The ``/readyz`` details (token holders only): state and session slots."""
    state = server.state
    return {"ready": state == "ready", "state": state, "sessions": _sessions(server)}


def health_body(server: RealtimeServer) -> dict[str, Any]:
    """The ``/healthz`` details (token holders only)."""
    codec = server.codec_loaded
    return {
        "status": "ok",
        "state": server.state,
        "profile": server.profile_name,
        "device": server.device,
        "models": public_models(server.models),
        "sessions": _sessions(server),
        "codec": None if codec is None else {"name": codec.name, "random_weights": codec.random_weights},
        "uptime_s": round(time.monotonic() - server.started, 1),
        "memory": memory_report(),
        "protocol": {"max_message_bytes": server.options.max_message_bytes, "audio": list(p.FORMATS)},
    }

"""The browser client's files, served by ``s2s-engine --headless`` at ``/`` (``--no-web``: off).

The page lives in ``remote/web/``: one HTML file, plain ES modules, two AudioWorklets and a style
sheet, with no build step and nothing from a CDN, so it works offline and unchanged through an SSH
tunnel (``http://localhost:8765/``). It speaks the Realtime protocol to ``/v1/realtime`` on the same
port; see ``docs/web.md``.

This module is pure (no I/O after the files are read once): :func:`page_response` maps a request
path to a :class:`websockets.http11.Response`. Only files present in the folder at start-up can be
served (a whitelist: no path is ever joined from the request), each with a strict
Content-Security-Policy: scripts, styles and connections from this origin only, no inline code, no
frames, no forms. The page never holds a token; the user types it (kept in ``sessionStorage``) or
passes it in the URL fragment, which browsers never send to the server.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from http import HTTPStatus

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

# Every resource the page loads comes from this origin. 'self' in connect-src covers ws:// and
# wss:// to the same host and port in CSP level 3; older engines need them named, so the page's own
# host (from the request) is added for the WebSocket. No inline script or style, no eval, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# Paths that serve index.html (the page reads its token from the fragment, never from the path).
INDEX_PATHS = ("/", "/index.html")


@dataclass(frozen=True)
class WebFile:
    """One file of the page: its bytes, content type and entity tag (for 304 answers)."""

    body: bytes
    content_type: str
    etag: str


@functools.lru_cache(maxsize=1)
def web_files() -> dict[str, WebFile]:
    """``/name`` -> file, for every servable file of ``remote/web/`` (read once, kept in memory)."""
    out: dict[str, WebFile] = {}
    root = importlib.resources.files("remote") / "web"
    for entry in root.iterdir():
        name = entry.name
        suffix = name[name.rfind("."):] if "." in name else ""
        if not entry.is_file() or suffix not in CONTENT_TYPES or name.startswith("."):
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        out["/" + name] = WebFile(body, CONTENT_TYPES[suffix], etag)
    return out


def is_page_request(request: Request) -> bool:
    """A plain GET (not a WebSocket upgrade) for a file of the page."""
    if "websocket" in request.headers.get("Upgrade", "").lower():
        return False
    path = request.path.split("?", 1)[0].split("#", 1)[0]
    return path in INDEX_PATHS or path in web_files()


def page_response(request: Request) -> Response:
    """The file the request asks for, with the security headers (call after :func:`is_page_request`)."""
    path = request.path.split("?", 1)[0].split("#", 1)[0]
    f = web_files()["/index.html" if path in INDEX_PATHS else path]
    csp = CONTENT_SECURITY_POLICY
    host = request.headers.get("Host", "")
    if _HOST.fullmatch(host):
        csp = csp.replace("connect-src 'self'", f"connect-src 'self' ws://{host} wss://{host}")
    headers = Headers([
        ("Content-Security-Policy", csp),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "microphone=(self), camera=(), geolocation=()"),
        ("Cache-Control", "no-cache"),  # revalidate: a new engine version serves new files at once
        ("ETag", f.etag),
        ("Connection", "close"),  # the server answers one plain HTTP request per connection
    ])
    if f.etag in request.headers.get("If-None-Match", ""):
        headers["Content-Length"] = "0"
        return Response(HTTPStatus.NOT_MODIFIED.value, HTTPStatus.NOT_MODIFIED.phrase, headers, b"")
    headers["Content-Type"] = f.content_type
    headers["Content-Length"] = str(len(f.body))
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, f.body)


__all__ = ["CONTENT_SECURITY_POLICY", "WebFile", "is_page_request", "page_response", "web_files"]

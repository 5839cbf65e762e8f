"""``s2s-engine --headless``: the engine behind a WebSocket that speaks the Realtime protocol.

The command around :mod:`remote.server`: its options (``--host``, ``--token``, ``--max-sessions``...),
and :func:`run_headless`, which listens before the models load (off the event loop, so readiness
can say ``loading``), serves until SIGTERM/SIGINT, then drains: readiness turns 503 at once and no
new session starts; the listener stays up for the probes; each running turn may finish within a
grace period, then its session is closed with 1001; exit 0. With ``--recycle-rss-mib`` it also
drains when its RSS passes that bound, after its open sessions have ended (``--recycle-wait``),
and exits with 75 for its supervisor to start a fresh one. ``python -m remote.server`` and
``s2s-engine --headless`` both end here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from engine.cliargs import CommandParser, add_profile_arguments
from engine.cpu import rss_mib
from engine.errors import ConfigError, S2SError
from remote import protocol as p
from remote.memory import describe_allocator, release_freed
from remote.server import RECYCLE_EXIT, RealtimeServer, ServerOptions, check_bind, log, recycle_when_over

if TYPE_CHECKING:  # pragma: no cover
    from engine.config import Profile
    from engine.engine import Engine


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
    g.add_argument("--recycle-rss-mib", type=float, default=0.0,
                   help="when the server's RSS passes this many MiB, take no new session, let the open ones "
                        "end (--recycle-wait), drain and exit with 75, for a supervisor (Kubernetes, systemd "
                        "Restart=always, docker --restart) to start a fresh one; set it below the container's "
                        "memory limit (default 0: never)")
    g.add_argument("--recycle-wait", type=float, default=600.0,
                   help="with --recycle-rss-mib, seconds open sessions may go on before the drain (default 600)")
    g.add_argument("--max-message-bytes", type=int, default=p.MAX_MESSAGE_BYTES,
                   help=f"largest client message accepted (default {p.MAX_MESSAGE_BYTES})")
    g.add_argument("--codec-model", default="",
                   help="Encodec weights for the s2s.encodec audio format (folder or cached hub id; default: "
                        "the profile's session.codec_model, else facebook/encodec_24khz)")
    g.add_argument("--codec-random-weights", action="store_true",
                   help="TESTS ONLY: Encodec with random weights (the audio is noise; framing and bitrate are real)")
    g.add_argument("--no-web", action="store_true",
                   help="do not serve the browser client at / (only /v1/realtime and /healthz)")
    g.add_argument("--allocator", choices=("auto", "jemalloc", "glibc"), default="auto",
                   help="malloc of the server: jemalloc keeps RSS flat over hours where glibc's heaps "
                        "fragment (docs/soak.md); auto (default) starts the server again with jemalloc "
                        "preloaded where libjemalloc2 is installed, keeping freed pages for reuse "
                        "(MALLOC_CONF, unless set: remote.memory.JEMALLOC_CONF)")
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
        recycle_rss_mib=getattr(args, "recycle_rss_mib", d.recycle_rss_mib),
        recycle_wait_s=getattr(args, "recycle_wait", d.recycle_wait_s),
    )


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each allocating thread its own heap (up to 8 per core); freed memory stays in them
    and RSS climbs in steps for tens of minutes (docs/soak.md: +9.7 % over an hour with the default,
    +2.8 % over 30 minutes with two arenas). Called before any worker thread allocates; an operator's
    own ``MALLOC_ARENA_MAX`` wins, and a libc without ``mallopt`` (musl) is left alone."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, n)  # M_ARENA_MAX


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
    if opts.recycle_rss_mib < 0 or opts.recycle_wait_s < 0:
        raise ConfigError("--recycle-rss-mib and --recycle-wait must be 0 or more")
    check_bind(opts.host, opts.token)  # before the slow model load
    limit_malloc_arenas()
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
            await asyncio.to_thread(release_freed)  # what loading freed: the turns reuse only their own
            check_recycle_bound(opts.recycle_rss_mib)
            server.attach(engine)
            print(f"s2s-engine: serving {server.url}  (health: {base}/healthz, readiness: {base}/readyz"
                  f"{', token required for details' if opts.token else ''}; malloc: {describe_allocator()})",
                  file=sys.stderr, flush=True)
            if opts.web:
                print(f"s2s-engine: browser client at {base}/  (through an SSH tunnel: "
                      f"http://localhost:{server.port}/)", file=sys.stderr, flush=True)
            return await serve_until_stopped(server, stop)
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


def check_recycle_bound(bound_mib: float) -> None:
    """``--recycle-rss-mib`` must be above what the loaded engine already holds, or the server
    would restart for ever: a :class:`ConfigError` that says so."""
    rss = rss_mib()
    if bound_mib > 0 and rss is not None and rss >= bound_mib:
        raise ConfigError(f"--recycle-rss-mib {bound_mib:g} is under what the loaded engine already holds "
                          f"(RSS {rss:.0f} MiB), so it would restart for ever; set it above that, with room for "
                          "the sessions, and under the container's memory limit")


async def serve_until_stopped(server: RealtimeServer, stop: asyncio.Event) -> int:
    """Serve until ``stop`` is set (SIGTERM/SIGINT: drain, exit status 0), or, with
    ``--recycle-rss-mib``, until a recycle has let the open sessions end (drain, then
    :data:`~remote.server.RECYCLE_EXIT`); the exit status."""
    if server.options.recycle_rss_mib > 0 and await recycle_when_over(server, stop) and not stop.is_set():
        print(f"s2s-engine: {server.recycling}: draining, then exit {RECYCLE_EXIT} for the supervisor "
              "to start a fresh server ...", file=sys.stderr, flush=True)
        await server.close()
        return RECYCLE_EXIT
    await stop.wait()
    print("s2s-engine: draining ...", file=sys.stderr, flush=True)
    await server.close()
    return 0


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


__all__ = ["add_headless_arguments", "build_parser", "check_recycle_bound", "main", "options_from_args",
           "run_headless", "serve_until_stopped"]

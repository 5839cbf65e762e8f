"""A soak from start to end: :func:`soak` runs the clients against a server while sampling it,
:func:`run_soak` starts (or reaches) the server around it and judges the report, and
:func:`register` / :func:`cmd_soak` are ``s2s-engine bench soak`` (added by :mod:`remote.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.bench.common import write_json
from engine.bench.stats import machine
from engine.clock import now_ns
from engine.errors import ConfigError
from remote.soak.clients import Client, RoleDeck, Utterance, load_utterances
from remote.soak.options import Bounds, SoakOptions
from remote.soak.plot import write_svg
from remote.soak.report import LiveView, render, sample_table, verdict
from remote.soak.results import Tally
from remote.soak.watch import Headless, Sampler, http_base, http_json

SCHEMA = "s2s.bench.soak/1"


async def soak(url: str, utterances: list[Utterance], opts: SoakOptions, *, pid: int | None = None,
               log: Path | None = None, headers: dict[str, str] | None = None,
               on_sample: Any = None, tick: Any = None) -> dict[str, Any]:
    """Run the clients for ``opts.minutes`` against ``url`` while sampling; the report (no verdict)."""
    base = http_base(url)
    health = await asyncio.to_thread(http_json, base, "/healthz", headers)
    max_bytes = int(((health or {}).get("protocol") or {}).get("max_message_bytes") or (1 << 20))
    tally = Tally()
    t0 = now_ns()
    duration = opts.minutes * 60
    deadline = time.monotonic() + duration
    sampler = Sampler(base, pid, log, tally, t0, headers)
    first = await asyncio.to_thread(sampler.sample)
    if on_sample:
        on_sample(first)
    deck = RoleDeck(opts)
    clients = [Client(i, url, utterances, opts, tally, t0, deadline, max_bytes, deck, headers)
               for i in range(opts.sessions)]
    tasks = [asyncio.create_task(c.run(), name=f"soak-client-{c.index}") for c in clients]
    next_sample = time.monotonic() + opts.sample_s
    while time.monotonic() < deadline:
        await asyncio.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        if tick:
            tick((now_ns() - t0) / 1e9, duration, tally)
        if time.monotonic() >= next_sample:
            row = await asyncio.to_thread(sampler.sample)
            next_sample += opts.sample_s
            if on_sample:
                on_sample(row)
    # the clients finish their current turn (bounded), then one last sample
    done, pending = await asyncio.wait(tasks, timeout=opts.stall_s + 60)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(2.0)  # let the server close the last sessions
    row = await asyncio.to_thread(sampler.sample)
    if on_sample:
        on_sample(row)
    return {"samples": sampler.samples, "clients": tally.summary(),
            "turns": [asdict(t) for t in tally.turns], "health": health}


def run_soak(args: argparse.Namespace, console: Any = None) -> dict[str, Any]:
    """Start (or reach) the server, soak it with a live view, stop it; the report with its verdict."""
    opts = SoakOptions(sessions=args.sessions, minutes=args.minutes, kill_share=args.kill_share,
                       hostile_share=args.hostile_share, stall_share=args.stall_share, stall_s=args.stall_s,
                       sample_s=args.sample_s, turns_max=args.turns_max, seed=args.seed)
    opts.check()
    bounds = Bounds(warmup_s=args.warmup_min * 60, window_s=args.window_min * 60)
    utterances = load_utterances(args.wavs or [])
    env = dict(_kv(s, "--server-env") for s in args.server_env or [])
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    report: dict[str, Any] = {"schema": SCHEMA, "machine": machine(), "options": asdict(opts),
                              "wavs": [{"name": u.name, "seconds": round(u.seconds, 2)} for u in utterances]}
    server: Headless | None = None
    if args.url:
        url, pid, log = args.url, args.pid, None
        report["server"] = {"url": url, "pid": pid, "started_by_soak": False}
    else:
        max_sessions = args.max_sessions or opts.sessions + 2
        log = Path(args.log or f"soak-server-{os.getpid()}.log")
        server = Headless(getattr(args, "profile", None), list(getattr(args, "set", None) or []), max_sessions, log, env,
                          allocator=getattr(args, "allocator", "auto"))
        if console:
            console.print(f"[dim]starting {' '.join(server.cmd[1:])} (log: {log}) ...[/]")
        t = time.monotonic()
        url = server.start()
        pid = server.pid
        report["server"] = {"url": url, "pid": pid, "started_by_soak": True, "command": server.cmd,
                            "env": env, "log": str(log), "max_sessions": max_sessions,
                            "load_s": round(time.monotonic() - t, 1)}
    report["command"] = "s2s-engine " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("s2s-engine") else None

    def terminate(*_: object) -> None:  # SIGTERM: stop like Ctrl-C, so the server started here is stopped too
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        live = LiveView(console, opts) if console else None
        with live or contextlib.nullcontext():
            report.update(asyncio.run(soak(url, utterances, opts, pid=pid, log=log, headers=headers,
                                           on_sample=live.sample if live else None,
                                           tick=live.tick if live else None)))
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            report["server"]["exit_code"] = server.stop()
    report["verdict"] = verdict(report["samples"], report["turns"], bounds)
    return report


def _kv(s: str, flag: str) -> tuple[str, str]:
    k, sep, v = s.partition("=")
    if not sep or not k:
        raise ConfigError(f"{flag} takes KEY=VALUE, got {s!r}")
    return k, v


# --------------------------------------------------------------------------- CLI


def register(bench_subparsers: Any, common: Any) -> None:
    """Add ``soak`` to ``s2s-engine bench`` (``common`` adds --profile/--set/-v/--json)."""
    sp = bench_subparsers.add_parser("soak", help="N sessions for T minutes against a headless engine: memory, "
                                                  "fds, threads, errors, latency over time; a verdict")
    sp.add_argument("--sessions", type=int, default=3, help="concurrent users (default 3)")
    sp.add_argument("--minutes", type=float, default=10.0, help="how long, in real time (default 10)")
    sp.add_argument("--url", help="soak a running server (ws://.../v1/realtime) instead of starting one")
    sp.add_argument("--pid", type=int, help="with --url: its process on this machine, to sample memory/fds/threads")
    sp.add_argument("--token", default=os.environ.get("S2S_TOKEN") or None, help="bearer token (default $S2S_TOKEN)")
    sp.add_argument("--max-sessions", type=int, default=0, help="the started server's --max-sessions (default N+2)")
    sp.add_argument("--allocator", choices=("auto", "jemalloc", "glibc"), default="auto",
                    help="the started server's --allocator (default auto: jemalloc where installed)")
    sp.add_argument("--server-env", action="append", metavar="K=V",
                    help="environment of the started server (e.g. MALLOC_ARENA_MAX=2); repeatable")
    sp.add_argument("--log", help="where the started server's stderr goes (default soak-server-PID.log)")
    sp.add_argument("--wavs", nargs="+", metavar="WAV_OR_DIR",
                    help="utterances (default the bundled sample_te.wav; folders of bench make-wavs work)")
    sp.add_argument("--kill-share", type=float, default=0.15, help="connections killed mid-reply (default 0.15)")
    sp.add_argument("--hostile-share", type=float, default=0.15, help="connections sending bad messages (0.15)")
    sp.add_argument("--stall-share", type=float, default=0.1, help="connections that stop reading (default 0.1)")
    sp.add_argument("--stall-s", type=float, default=45.0, help="how long a stalled client stops reading (45)")
    sp.add_argument("--turns-max", type=int, default=2, help="turns per connection, 1..N (default 2)")
    sp.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples (default 30)")
    sp.add_argument("--warmup-min", type=float, default=5.0, help="RSS judged after this (default 5)")
    sp.add_argument("--window-min", type=float, default=5.0, help="latency window (default 5)")
    sp.add_argument("--plot", metavar="OUT.svg", help="memory and latency over time as an SVG")
    sp.add_argument("--seed", type=int, default=0, help="roles and turn counts (default 0)")
    common(sp)
    sp.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    if args.plot and not args.plot.endswith(".svg"):
        raise ConfigError("--plot writes SVG (no plotting library needed): give a .svg path")
    report = run_soak(args, console)
    console.print(sample_table(report["samples"], "samples"))
    render(report, console)
    write_json(args.json_path, report, console)
    if args.plot:
        write_svg(report, args.plot)
        console.print(f"plot: {args.plot}")
    return 0 if report["verdict"]["ok"] else 1


__all__ = ["SCHEMA", "cmd_soak", "register", "run_soak", "soak"]

"""``s2s-engine``: replay WAVs, manage models, serve headless over WebSocket.

    s2s-engine replay FILE.wav [FILE.wav ...] [--profile P] [--set k=v] [--out DIR] [--json R] [--fast]
    s2s-engine models list [--profile P]
    s2s-engine models fetch --profile P
    s2s-engine doctor [--profile P] [--require-gpu]
    s2s-engine --headless [--host H] [--port N] [--profile P] [--token T] [--max-sessions N]

Every deliberate error (S2SError) is printed as one line and gives exit code 1 (2 for a
usage error); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from importlib.resources import files
from pathlib import Path

from engine.errors import S2SError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=os.environ.get("S2S_PROFILE", "offline"),
                   help="profile name (offline, gpu) or path to a .toml file (default: offline)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one profile value, e.g. --set asr.model=/path (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="log engine internals")


def sample_wav() -> Path:
    """The bundled Telugu sample (espeak-ng Telugu, two sentences)."""
    return Path(str(files("engine") / "assets" / "sample_te.wav"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s-engine", description="Telugu speech-to-speech engine")
    parser.add_argument("--headless", action="store_true", help="serve the engine over WebSocket")
    try:
        from remote.server import add_headless_arguments
    except ImportError:  # the remote package is optional for replay
        add_headless_arguments = None
    if add_headless_arguments is not None:
        add_headless_arguments(parser)
    sub = parser.add_subparsers(dest="command")

    rp = sub.add_parser("replay", help="run WAV files through the engine, no microphone")
    rp.add_argument("files", nargs="*", help="WAV files (default: the bundled Telugu sample)")
    rp.add_argument("--out", default="replies", help="folder for reply WAVs (default: replies/)")
    rp.add_argument("--json", dest="json_path", metavar="REPORT.json", help="write a JSON report")
    rp.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    rp.add_argument("--chunk-ms", type=int, default=20, help="microphone chunk size (default 20 ms)")
    _common(rp)

    mp = sub.add_parser("models", help="list or fetch the models a profile needs")
    msub = mp.add_subparsers(dest="models_command", required=True)
    for name, text in (("list", "show each stage's model and whether it is present"),
                       ("fetch", "download missing hub models (needs internet)")):
        _common(msub.add_parser(name, help=text))
    from engine import doctor

    doctor.register(sub, _common)
    try:
        from engine import bench
    except ImportError:
        bench = None
    if bench is not None:
        bench.register(sub)
    if add_headless_arguments is None:
        _common(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.headless:
            from remote.server import run_headless

            return run_headless(args)
        if args.command == "replay":
            return asyncio.run(_replay(args))
        if args.command == "models":
            return _models(args)
        if getattr(args, "func", None) is not None:
            return int(args.func(args))
        parser.print_help()
        return 2
    except S2SError as exc:
        print(f"s2s-engine: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _replay(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.config import load_profile
    from engine.engine import Engine
    from engine.replay import render, replay_file, write_report

    console = Console(highlight=False)
    profile = load_profile(args.profile, args.set)
    files_ = args.files or [str(sample_wav())]
    console.print(f"[dim]loading profile {profile.name!r} ...[/]")
    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(None, Engine.load, profile)
    d = engine.describe()
    for stage, info in d["models"].items():
        console.print(f"[dim]  {stage}: {info.get('model')} ({info.get('device', 'cpu')}, "
                      f"{d['load_ms'].get(stage, 0):.0f} ms)[/]")
    console.print(f"[dim]  partial transcripts: {'on' if d['partials'] else 'off'} "
                  f"(one decode costs {d['models']['asr'].get('decode_cost_ms', '?')} ms here)[/]")
    for note in d["notes"]:
        console.print(f"[yellow]  note: {note}[/]")
    reports = []
    try:
        for f in files_:
            report = await replay_file(engine, f, args.out, fast=args.fast, chunk_ms=args.chunk_ms)
            render(report, console)
            reports.append(report)
    finally:
        engine.close()
    if args.json_path:
        write_report(args.json_path, reports, engine)
        console.print(f"report: {args.json_path}")
    return 0 if all(r.ok for r in reports) else 1


def _models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from engine.config import load_profile
    from engine.models import fetch, status

    profile = load_profile(args.profile, args.set)
    rows = fetch(profile) if args.models_command == "fetch" else status(profile)
    table = Table(title=f"models of profile {profile.name!r}")
    for col in ("stage", "backend", "model", "present", "path / problem"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.stage, r.backend, r.ref, "[green]yes[/]" if r.present else "[red]no[/]",
                      r.path if r.present else "see below")
    console = Console(highlight=False)
    console.print(table)
    for r in rows:
        if not r.present:
            console.print(f"[red]✗[/] {r.problem}", soft_wrap=True)
    return 0 if all(r.present for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

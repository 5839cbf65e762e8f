"""The engine's own commands: replay WAVs, manage models, check the machine, benchmark.

    s2s-engine replay FILE.wav [FILE.wav ...] [--profile P] [--set k=v] [--out DIR] [--json R] [--fast]
    s2s-engine models list [--profile P]
    s2s-engine models fetch --profile P
    s2s-engine doctor [--profile P] [--require-gpu]
    s2s-engine bench latency|turn|make-wavs|make-models ...   (s2s-engine adds bench wire)

The ``s2s-engine`` console script is :mod:`remote.cli`, which adds ``--headless`` (the engine
behind the WebSocket server) to these; ``python -m engine.cli`` runs them without it (the
engine imports nothing from ``remote/``). ``--profile``/``--set``/``-v`` come from
:mod:`engine.cliargs` and work before or after the command.

Every deliberate error (S2SError) is printed as one line and gives exit code 1 (2 for a
usage error); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from engine import doctor
from engine.audio import sample_wav
from engine.bench import cli as bench_cli
from engine.cliargs import CommandParser, add_profile_arguments, profile_parent
from engine.errors import S2SError


def build_parser(prog: str = "s2s-engine", **kwargs: Any) -> tuple[CommandParser, Any, Any]:
    """The parser of the engine's own commands, its subparsers and those of ``bench`` (for callers
    that add more: ``s2s-engine`` adds ``bench wire``).

    ``--profile``/``--set``/``-v`` are taken before the command too. ``kwargs`` go to
    :class:`~engine.cliargs.CommandParser`.
    """
    parser = CommandParser(prog=prog, description="Telugu speech-to-speech engine",
                           parents=[profile_parent(before_command=True)], **kwargs)
    sub = parser.add_subparsers(dest="command")
    common = profile_parent()

    rp = sub.add_parser("replay", parents=[common], help="run WAV files through the engine, no microphone")
    rp.add_argument("files", nargs="*", help="WAV files (default: the bundled Telugu sample)")
    rp.add_argument("--out", default="replies", help="folder for reply WAVs (default: replies/)")
    rp.add_argument("--json", dest="json_path", metavar="REPORT.json", help="write a JSON report")
    rp.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    rp.add_argument("--chunk-ms", type=int, default=20, help="microphone chunk size (default 20 ms)")

    mp = sub.add_parser("models", help="list or fetch the models a profile needs")
    msub = mp.add_subparsers(dest="models_command", required=True)
    for name, text in (("list", "show each stage's model and whether it is present"),
                       ("fetch", "download the profile's hub models at their revisions, only the files the "
                                 "engine reads, after saying the disk it needs (needs internet)")):
        msub.add_parser(name, parents=[common], help=text)
    doctor.register(sub, add_profile_arguments)
    bench_sub = bench_cli.register(sub)
    return parser, sub, bench_sub


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed engine command; the exit code. Deliberate errors are one line, never a traceback."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "replay":
            return asyncio.run(_replay(args))
        if args.command == "models":
            return _models(args)
        if getattr(args, "func", None) is not None:
            return int(args.func(args))
        parser.print_help()
        return 2
    except S2SError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.cli``: the engine's commands without ``--headless`` (``s2s-engine`` adds it)."""
    parser, _, _ = build_parser()
    return run(parser, parser.parse_args(argv))


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
    console = Console(highlight=False)
    if args.models_command == "fetch":
        # what each hub model takes, what the fetch needs on disk and what is free, before it starts
        rows = fetch(profile, say=lambda line: console.print(line, soft_wrap=True, markup=False))
    else:
        rows = status(profile)
    table = Table(title=f"models of profile {profile.name!r}")
    for col in ("stage", "backend", "model", "present", "path / problem"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.stage, r.backend, r.ref, "[green]yes[/]" if r.present else "[red]no[/]",
                      r.path if r.present else "see below")
    console.print(table)
    for r in rows:
        if not r.present:
            console.print(f"[red]✗[/] {r.problem}", soft_wrap=True)
    return 0 if all(r.present for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

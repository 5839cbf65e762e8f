"""``s2s-engine``: the engine's commands plus ``--headless`` (the engine behind the WebSocket server).

    s2s-engine replay FILE.wav [...] [--profile P] [--set k=v] [--out DIR] [--json R] [--fast]
    s2s-engine models list|fetch [--profile P]
    s2s-engine doctor [--profile P] [--require-gpu]
    s2s-engine bench latency|turn|make-wavs|make-models|wire|soak ...
    s2s-engine --headless [--host H] [--port N] [--profile P] [--token T] [--max-sessions N]

This module composes the two layers: the commands come from :mod:`engine.cli`, ``--headless``
from :mod:`remote.headless`, ``bench wire`` from :mod:`remote.bench`, ``bench soak`` from :mod:`remote.soak`. It lives above both so that ``engine/`` imports nothing from
``remote/``. ``--profile``/``--set``/``-v`` work before or after a command (:mod:`engine.cliargs`).
Every deliberate error is one line (exit 1; 2 for a usage error), never a traceback.
"""

from __future__ import annotations

import os
import sys

from engine import cli as engine_cli
from engine.bench.common import add_common_arguments
from engine.cliargs import CommandParser
from engine.errors import S2SError
from remote import bench, memory, soak
from remote.headless import add_headless_arguments, run_headless


def build_parser() -> CommandParser:
    parser, _, bench_sub = engine_cli.build_parser("s2s-engine")
    bench.register(bench_sub, add_common_arguments)
    soak.register(bench_sub, add_common_arguments)
    parser.add_argument("--headless", action="store_true", help="serve the engine over WebSocket")
    add_headless_arguments(parser, include_profile=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.headless:
        return engine_cli.run(parser, args)
    if args.command is not None:
        parser.error(f"--headless serves the engine; it takes no command (got {args.command!r})")
    if argv is None:  # the command line itself (not a call from Python): the allocator can change
        _restart_with_allocator(parser, args.allocator)
    try:
        return run_headless(args)
    except S2SError as exc:
        print(f"s2s-engine: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _restart_with_allocator(parser: CommandParser, choice: str) -> None:
    """``--allocator``: jemalloc must be preloaded before the process starts, so the server
    starts itself again with it (once: ``S2S_ALLOCATOR_TRIED``). glibc's heaps keep freed memory
    fragmented and RSS grows in steps for an hour; jemalloc does not fragment, and with freed pages
    kept for reuse (``memory.JEMALLOC_CONF``) its RSS does not swing with the turns (docs/soak.md)."""
    if choice == "glibc" or memory.allocator() == "jemalloc":
        return
    env = memory.jemalloc_env(dict(os.environ))
    if env is None:
        if choice == "jemalloc":
            parser.error(f"--allocator jemalloc: {memory.JEMALLOC} is not installed or did not load "
                         "(apt-get install libjemalloc2; scripts/setup.sh installs it)")
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "remote.cli", *sys.argv[1:]], env)


if __name__ == "__main__":
    sys.exit(main())

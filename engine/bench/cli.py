"""``s2s-engine bench``: the benchmark commands' wiring (argparse); each command's work is in its module.

    s2s-engine bench latency [--profile P] [--set k=v]... [--turns N] [--reply MODE] [--cpu-load N] [--json OUT] FILES...
    s2s-engine bench make-models --out DIR [--small] [--asr-tokens N]

are here (:func:`cmd_latency`, :func:`cmd_make_models`); ``bench turn``/``make-wavs``
(:mod:`engine.bench.turn`), ``bench capacity`` (:mod:`engine.bench.capacity`) and ``bench asr``/``asr-set``
(:mod:`engine.bench.asr`) are registered from their modules; ``bench wire`` and ``bench soak`` are added
from above the engine (:mod:`remote.cli`). ``python -m engine.bench ...`` runs :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from engine.audio import sample_wav
from engine.bench import asr, capacity, turn
from engine.bench.common import add_common_arguments, reply_arg, write_json
from engine.bench.latency import bench_engine, cpu_load, load_average, run_latency
from engine.bench.render import render_latency
from engine.cliargs import run_subcommand
from engine.errors import ConfigError


def register(subparsers: Any) -> Any:
    """Add ``bench`` (latency, turn, make-wavs, make-models) to the ``s2s-engine`` subcommands; the
    ``bench`` subparsers, for commands from above the engine (``bench wire``: :mod:`remote.cli`)."""
    bp = subparsers.add_parser("bench", help="latency against the compute floor and the cascade; wire; models")
    bsub = bp.add_subparsers(dest="bench_command", required=True)

    lp = bsub.add_parser("latency", help="(a) streaming vs (b) sequential cascade vs (c) compute floor")
    lp.add_argument("files", nargs="*", help="WAV files (default: the bundled Telugu sample)")
    lp.add_argument("--turns", type=int, default=5, help="runs of each file (default 5)")
    lp.add_argument("--reply", type=reply_arg, default="scripted", metavar="MODE",
                    help="scripted (default: a fixed 4-sentence reply over real compute), natural, or N tokens")
    lp.add_argument("--fast", action="store_true",
                    help="feed audio as fast as VAD takes it (the end-of-turn wait is then not measured)")
    lp.add_argument("--min-sentences", type=int, default=3,
                    help="the (b)/(a) target applies to replies of at least this many chunks (default 3)")
    lp.add_argument("--turn-policies", metavar="P,P",
                    help="also compare these end-of-turn policies on the same files (e.g. silence,combined; "
                         "default: silence and the profile's policy when it is adaptive; 'none': skip)")
    lp.add_argument("--paused", nargs="+", default=[], metavar="WAV",
                    help="utterances with a pause mid-sentence, for the policy comparison (bench make-wavs)")
    lp.add_argument("--cpu-load", type=int, default=0, metavar="N",
                    help="keep N cores busy during the run (N spinning processes, stopped after it; default 0)")
    add_common_arguments(lp)
    lp.set_defaults(func=cmd_latency)

    turn.register(bsub, add_common_arguments)  # bench turn, bench make-wavs

    mp = bsub.add_parser("make-models", help="shape-true random-weight models of the gpu profile")
    mp.add_argument("--out", required=True, help="output folder")
    mp.add_argument("--small", action="store_true", help="tiny variants with the same structure (tests)")
    mp.add_argument("--only", choices=("asr", "llm", "tts"), action="append", help="build only these (repeatable)")
    mp.add_argument("--asr-tokens", type=int, default=None, help="tokens every transcript has (default 48)")
    mp.add_argument("--llm-type", default=None, help="GGUF weight type: q4_k_m (default; f16 with --small), f16, q8_0")
    mp.add_argument("--asr-arch", default="large-v3-turbo", choices=("large-v3-turbo", "large-v2"),
                    help="Whisper architecture (default large-v3-turbo; large-v2 is the gpu profile's Telugu model)")
    mp.add_argument("--asr-quantization", default="float16", choices=("float16", "int8", "int8_float16"),
                    help="CTranslate2 weights (default float16)")
    mp.add_argument("--json", dest="json_path", metavar="OUT.json", help="also write the summary as JSON")
    mp.set_defaults(func=cmd_make_models)

    capacity.register(bsub, add_common_arguments)
    asr.register(bsub)  # bench asr, bench asr-set
    return bsub


def cmd_latency(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    if args.turns < 1:
        raise ConfigError("--turns must be at least 1")
    if args.cpu_load < 0:
        raise ConfigError("--cpu-load must be 0 or more busy cores")
    files = args.files or [str(sample_wav())]
    console.print(f"[dim]loading profile {args.profile!r} ...[/]")
    engine = bench_engine(args.profile, args.set, args.reply)
    try:
        policies = _turn_policies(args.turn_policies, engine.profile.turn.policy)
        if any(p in ("smart-turn", "combined") for p in policies):
            engine.ensure_turn_model()
        for stage, info in engine.describe()["models"].items():
            console.print(f"[dim]  {stage}: {info.get('model')} ({info.get('device', 'cpu')})[/]")
        load = {"busy_processes": args.cpu_load, "load_average_before": load_average()}
        if args.cpu_load:
            console.print(f"[dim]keeping {args.cpu_load} core(s) busy during the run "
                          f"(load average before: {load['load_average_before']}) ...[/]")
        with cpu_load(args.cpu_load):
            report = asyncio.run(run_latency(engine, files, args.turns, paced=not args.fast,
                                             min_sentences=args.min_sentences))
            if policies:
                console.print(f"[dim]comparing end-of-turn policies {', '.join(policies)} ...[/]")
                report["turn_policies"] = asyncio.run(turn.compare_policies(
                    engine, files, args.paused, policies, turns=args.turns, paced=not args.fast))
            load["load_average_end"] = load_average()
        report["cpu_load"] = load
    finally:
        engine.close()
    render_latency(report, console)
    console.print(f"cpu load: {load['busy_processes']} busy process(es) during the run; load average before "
                  f"{load['load_average_before']}, at the end {load['load_average_end']}")
    if report.get("turn_policies"):
        turn.render_compare(report["turn_policies"], console)
    write_json(args.json_path, report, console)
    return 0


def _turn_policies(arg: str | None, profile_policy: str) -> list[str]:
    from engine.config import TURN_POLICIES

    if arg is None:
        return ["silence", profile_policy] if profile_policy != "silence" else []
    if arg.strip() == "none":
        return []
    policies = [p.strip() for p in arg.split(",") if p.strip()]
    bad = [p for p in policies if p not in TURN_POLICIES]
    if bad:
        raise ConfigError(f"--turn-policies: unknown {', '.join(bad)} (known: {', '.join(TURN_POLICIES)})")
    return policies


def cmd_make_models(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.shape_models import make_models

    console = Console(highlight=False)
    summary = make_models(args.out, small=args.small, only=args.only, asr_tokens=args.asr_tokens,
                          llm_type=args.llm_type, asr_arch=args.asr_arch, asr_quantization=args.asr_quantization,
                          log=lambda s: console.print(f"[dim]{s}[/]"))
    for stage, info in summary["models"].items():
        console.print(f"{stage}: {info['path']}  ({info['description']})")
    console.print("use them with:  s2s-engine bench latency --profile gpu " + " ".join(
        f"--set {k}" for k in summary["overrides"]))
    write_json(args.json_path, summary, console)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.bench ...``: the engine's ``s2s-engine bench`` commands (not ``wire``)."""
    return run_subcommand("s2s-engine", "bench", register, argv)


__all__ = ["register", "cmd_latency", "cmd_make_models", "main"]

if __name__ == "__main__":
    raise SystemExit(main())

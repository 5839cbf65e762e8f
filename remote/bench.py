"""``s2s-engine bench wire``: what serving over WebSocket costs, measured (the one wire benchmark).

    s2s-engine bench wire [--profile P] [--set k=v]... [--turns N] [--text-only] [--reply MODE]
                          [--bandwidths 1.5,6] [--seconds S] [--codec-model M | --small-codec] [--no-codec]
                          [--audio-formats] [--json OUT]
    python -m remote.bench ...        the same

1. **Per-turn overhead**: the same turns in-process (a :class:`~engine.session.Session`) and through
   :mod:`remote.server` + :mod:`remote.client` on 127.0.0.1 (one engine), interleaved after a
   warm-up each way, so drift hits both alike: a text turn (``conversation.item.create`` +
   ``response.create``) and a spoken Telugu turn (espeak-ng, sent at once). Times from the request
   (or the last audio chunk) to the first reply audio and to the end of the response; the overhead
   is the paired difference; and **delivery**, measured directly: from the moment the session
   handed out the first reply audio (``stamps_ns.first_audio_out_ns`` of ``s2s.turn.metrics``) to
   the moment the client had parsed the delta carrying it (one clock: same machine).
2. **Bytes per second** of reply audio on the wire per output format: ``audio/pcm`` and
   ``s2s.encodec`` at each bandwidth, whole JSON messages as sent and their audio payload
   (Encodec packet sizes do not depend on the weights, so random weights measure them exactly).
3. **Encodec real-time factors** (:func:`remote.codec.benchmark`): encode, decode and streamed,
   per bandwidth; random weights unless ``--codec-model`` names real ones (the report says so).
4. With ``--audio-formats``, every format the server offers (PCM, Opus at each bitrate, G.711
   μ-law and A-law, Encodec; :mod:`remote.bench_codecs`): bytes per second up and down as whole
   messages, the first reply audio's delivery, encode + decode CPU per second of audio, the
   algorithmic delay, and the ASR word error rate after a round trip, against PCM.

The LLM is wrapped as in ``bench latency`` (:class:`engine.bench.llm.BenchLLM`, ``--reply
scripted`` by default): the same reply in both paths, so the difference is the wire's.
Every time comes from one monotonic clock (``perf_counter_ns``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import events as ev
from engine.bench.common import add_common_arguments, reply_arg, write_json
from engine.bench.stats import dist, machine
from engine.clock import ms, now_ns
from engine.errors import S2SError
from remote import protocol as p
from remote.client import RealtimeClient
from remote.server import serve

if TYPE_CHECKING:
    from engine.engine import Engine

TEXT = "ఈ రోజు వాతావరణం ఎలా ఉంది?"
SPOKEN = "నమస్కారం, మీరు ఎలా ఉన్నారు?"
CHUNK = p.PCM_RATE // 10  # spoken audio goes out in 100 ms appends


def spoken_turn() -> np.ndarray:
    """A Telugu utterance (espeak-ng) with 0.3 s before and 1.5 s of silence after, int16 at 24 kHz."""
    import io
    import shutil
    import subprocess

    import soundfile as sf

    from engine.audio import resample

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise S2SError("espeak-ng is needed for the spoken turn (scripts/setup.sh installs it); or use --text-only")
    wav = subprocess.run([exe, "-v", "te", "--stdout", SPOKEN], capture_output=True, check=True, timeout=60).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    y = resample(x, rate, p.PCM_RATE)
    y = np.concatenate([np.zeros(p.PCM_RATE * 3 // 10, np.float32), y, np.zeros(p.PCM_RATE * 3 // 2, np.float32)])
    return np.round(np.clip(y, -1, 1) * 29000).astype(np.int16)


async def _in_process(engine: Engine, spoken: np.ndarray | None) -> dict[str, float]:
    """One turn in-process: ms from the request (or the last audio chunk) to first audio and to done."""
    s = engine.new_session()
    await s.start()
    try:
        if spoken is None:
            s.add_user_text(TEXT)
            t0 = now_ns()
            s.create_response()
        else:
            for i in range(0, len(spoken), CHUNK):
                s.push_audio(spoken[i:i + CHUNK], sample_rate=p.PCM_RATE)
            t0 = now_ns()
        first = None
        async with asyncio.timeout(180):
            async for e in s.stream():
                if isinstance(e, ev.ReplyAudio) and first is None:
                    first = ms(t0, now_ns())
                if isinstance(e, ev.ResponseDone):
                    if first is None:
                        raise S2SError(f"the in-process turn ended {e.status} without audio")
                    return {"first_ms": first, "done_ms": ms(t0, now_ns())}
        raise S2SError("the in-process session ended before its response")
    finally:
        await s.close()


async def _over_wire(url: str, spoken: np.ndarray | None) -> dict[str, float]:
    """The same turn over the WebSocket; also the delivery of the first audio (session -> client)."""
    async with RealtimeClient(url, ping_interval_s=0, reconnect=False) as c:
        await c.wait_for(p.SessionCreated)
        if spoken is None:
            await c.send_text(TEXT)
            t0 = now_ns()
            await c.create_response()
        else:
            for i in range(0, len(spoken), CHUNK):
                await c.send_audio(spoken[i:i + CHUNK], p.PCM_RATE)
            t0 = now_ns()
        out: dict[str, float] = {}
        first_ns = 0
        async with asyncio.timeout(180):
            while True:
                e = await c.recv()
                if isinstance(e, p.ResponseAudioDelta) and not first_ns:
                    first_ns = now_ns()
                    out["first_ms"] = ms(t0, first_ns)
                elif isinstance(e, p.ResponseDone):
                    if not first_ns:
                        raise S2SError(f"the WebSocket turn ended {e.response.get('status')} without audio")
                    out["done_ms"] = ms(t0, now_ns())
                elif isinstance(e, p.S2STurnMetrics) and "done_ms" in out:
                    handed = (e.metrics.get("stamps_ns") or {}).get("first_audio_out_ns")
                    if handed:  # the session handed out its first audio then (same clock, same machine)
                        out["delivery_ms"] = (first_ns - handed) / 1e6
                    return out


async def turn_overhead(engine: Engine, url: str, turns: int, spoken: bool = True) -> dict[str, Any]:
    """Paired in-process vs WebSocket turns (text, and spoken unless ``spoken=False``)."""
    kinds: dict[str, np.ndarray | None] = {"text": None}
    if spoken:
        kinds["spoken"] = spoken_turn()
    out: dict[str, Any] = {}
    for kind, audio in kinds.items():
        await _in_process(engine, audio)  # warm-up, both ways
        await _over_wire(url, audio)
        local, wire = [], []
        for _ in range(turns):  # interleaved so drift hits both alike
            local.append(await _in_process(engine, audio))
            wire.append(await _over_wire(url, audio))
        out[kind] = {
            "first_audio_in_process_ms": dist([r["first_ms"] for r in local]),
            "first_audio_websocket_ms": dist([r["first_ms"] for r in wire]),
            "first_audio_overhead_ms": dist([w["first_ms"] - r["first_ms"] for w, r in zip(wire, local, strict=True)]),
            "done_in_process_ms": dist([r["done_ms"] for r in local]),
            "done_websocket_ms": dist([r["done_ms"] for r in wire]),
            "delivery_ms": dist([w.get("delivery_ms") for w in wire]),
        }
    return out


async def format_rates(engine: Engine, bandwidths: tuple[float, ...]) -> list[dict[str, Any]]:
    """Reply audio bytes per second on the wire for PCM and Encodec at each of ``bandwidths``."""
    from remote.codec import EncodecCodec

    codec = EncodecCodec.random(seed=0, small=True)  # packet sizes do not depend on the weights
    formats = [p.PCM] + [p.AudioFormat(p.ENCODEC_FORMAT, p.PCM_RATE, bw) for bw in bandwidths]
    rows = []
    async with await serve(engine, port=0, stats_interval_s=0, codec_factory=lambda: codec) as srv:
        for fmt in formats:
            async with RealtimeClient(srv.url, ping_interval_s=0, reconnect=False, codec_factory=lambda: codec) as c:
                await c.wait_for(p.SessionCreated)
                await c.update_session(output_format=fmt)
                await c.wait_for(p.SessionUpdated, limit_s=120)
                await c.send_text(TEXT)
                await c.create_response()
                payload = message = 0
                async with asyncio.timeout(180):
                    while True:
                        e = await c.recv()
                        if isinstance(e, p.ResponseAudioDelta):
                            payload += len(e.audio)
                            message += len(p.serialize(e))
                        if isinstance(e, p.ResponseDone):
                            seconds = e.response["s2s"]["audio_ms"] / 1000
                            break
            if seconds <= 0:
                raise S2SError("the reply had no audio to measure")
            rows.append({"format": "audio/pcm" if not fmt.is_encodec else f"s2s.encodec {fmt.bandwidth:g} kbps",
                         "payload_Bps": round(payload / seconds), "message_Bps": round(message / seconds),
                         "reply_s": round(seconds, 2)})
    return rows


def codec_figures(model: str | None, seconds: float, small: bool = False) -> dict[str, Any]:
    """Encodec RTFs and bytes/s per bandwidth (``remote.codec.benchmark``), against PCM16/24 kHz."""
    from remote import codec as c

    codec = c.EncodecCodec.load(model) if model else c.EncodecCodec.random(small=small)
    rows = c.benchmark(codec, seconds)
    pcm = c.SAMPLE_RATE * 2
    for r in rows:
        r["vs_pcm16"] = round(pcm / r["stream_bps"], 1) if r["stream_bps"] else None
    return {"model": codec.name, "random_weights": codec.random_weights, "device": codec.device,
            "seconds": seconds, "pcm16_bps": pcm, "rows": rows}


async def measure(engine: Engine, turns: int = 5, *, spoken: bool = True,
                  bandwidths: tuple[float, ...] = p.ENCODEC_BANDWIDTHS) -> dict[str, Any]:
    """The overhead of each turn kind and the bytes per second of each format (one engine)."""
    async with await serve(engine, port=0, stats_interval_s=0, ping_interval_s=None) as srv:
        overhead = await turn_overhead(engine, srv.url, turns, spoken=spoken)
    return {"turns": overhead, "formats": await format_rates(engine, bandwidths),
            "transport": "127.0.0.1; turns in PCM16 base64 (the Realtime default)"}


def run_wire(args: argparse.Namespace) -> dict[str, Any]:
    """Load the engine (LLM wrapped as in ``bench latency``), measure; the JSON report."""
    from engine.bench.latency import bench_engine

    if args.turns < 1:
        raise S2SError("--turns must be at least 1")
    report: dict[str, Any] = {"schema": "s2s.bench.wire/2", "machine": machine(), "profile": args.profile,
                              "options": {"turns": args.turns, "spoken": not args.text_only,
                                          "bandwidths": list(args.bandwidths), "reply": args.reply}}
    engine = bench_engine(args.profile, args.set, args.reply)
    try:
        report["engine"] = engine.describe()
        report.update(asyncio.run(measure(engine, args.turns, spoken=not args.text_only,
                                          bandwidths=tuple(args.bandwidths))))
    finally:
        engine.close()
    if not args.no_codec:
        report["codec"] = codec_figures(args.codec_model, args.seconds, small=args.small_codec)
    if getattr(args, "audio_formats", False):
        report["audio_formats"] = audio_format_figures(args)
    return report


def audio_format_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Table 4 (``--audio-formats``): a fresh engine with the scripted reply (see :mod:`remote.bench_codecs`)."""
    from engine.audio import resample
    from engine.bench.latency import bench_engine
    from remote import bench_codecs as bc
    from remote.codec import EncodecCodec

    codec = EncodecCodec.load(args.codec_model) if args.codec_model else EncodecCodec.random(seed=0, small=True)
    fmts = bc.formats(tuple(args.bandwidths))
    engine = bench_engine(args.profile, args.set, args.reply)
    try:
        x, rate = bc.espeak(" ".join(bc.ENGLISH[:3]))
        speech = resample(x, rate, bc.MIC_RATE).astype("float32")
        print("wire rates per format ...", file=sys.stderr, flush=True)
        wire = asyncio.run(bc.wire_rates(engine, fmts, speech, turns=max(1, args.turns),
                                         codec_factory=lambda: codec))
        coding = bc.coding_figures(engine, fmts, codec, log=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        engine.close()
    return {"wire": wire, "coding": coding, "encodec_random_weights": codec.random_weights}


def render_wire(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    n = report["options"]["turns"]
    table = Table(title=f"in-process vs WebSocket on 127.0.0.1 ({n} turns each, p50 / p95 ms)")
    for col in ("turn", "first audio in-process", "over the wire", "overhead (paired)", "done in-process",
                "over the wire", "delivery session → client"):
        table.add_column(col, justify="left" if col == "turn" else "right")

    def f(d: dict[str, Any]) -> str:
        return "—" if d["p50"] is None else f"{d['p50']:.1f} / {d['p95']:.1f}"

    for kind, t in report["turns"].items():
        table.add_row(kind, f(t["first_audio_in_process_ms"]), f(t["first_audio_websocket_ms"]),
                      f(t["first_audio_overhead_ms"]), f(t["done_in_process_ms"]), f(t["done_websocket_ms"]),
                      f(t["delivery_ms"]))
    console.print(table)
    table = Table(title="reply audio on the wire, bytes per second")
    for col in ("output format", "audio payload B/s", "whole messages B/s (base64 + JSON)"):
        table.add_column(col, justify="left" if col == "output format" else "right")
    for r in report["formats"]:
        table.add_row(r["format"], f"{r['payload_Bps']}", f"{r['message_Bps']}")
    console.print(table)
    cf = report.get("codec")
    if cf:
        label = " [yellow](RANDOM WEIGHTS: timings only)[/]" if cf["random_weights"] else ""
        table = Table(title=f"Encodec 24 kHz, {cf['model']}, {cf['seconds']:g} s clip{label}")
        for col in ("kbps", "encode RTF", "decode RTF", "stream RTF", "bytes/s", f"vs PCM16 {cf['pcm16_bps']} B/s"):
            table.add_column(col, justify="right")
        for r in cf["rows"]:
            table.add_row(f"{r['bandwidth']:g}", f"{r['encode_rtf']:.3f}", f"{r['decode_rtf']:.3f}",
                          f"{r['stream_rtf']:.3f}", f"{r['stream_bps']:.0f}", f"{r['vs_pcm16']}x smaller")
        console.print(table)
    af = report.get("audio_formats")
    if af:
        render_audio_formats(af, console)


def render_audio_formats(af: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="the wire's audio formats on 127.0.0.1 (whole messages: JSON + base64)")
    for col in ("format", "up B/s", "vs PCM", "down B/s", "vs PCM", "first audio delivery ms"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in af["wire"]:
        table.add_row(r["format"], f"{r['up_Bps']}", f"{r['up_vs_pcm']}x", f"{r['down_Bps']}", f"{r['down_vs_pcm']}x",
                      "—" if r["delivery_ms"] is None else f"{r['delivery_ms']:.1f}")
    console.print(table)
    c = af["coding"]
    table = Table(title=f"coding and quality: {c['clips']} English espeak-ng clips ({c['audio_s']} s, mic at "
                        f"{c['mic_rate']} Hz) round-tripped, ASR {c['asr']}")
    for col in ("format", "payload B/s", "encode ms/s", "decode ms/s", "ms per 20 ms frame", "delay ms", "WER %",
                "te script rate"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in c["rows"]:
        table.add_row(r["format"], f"{r['payload_Bps']}", f"{r['encode_ms_per_s']:.1f}", f"{r['decode_ms_per_s']:.1f}",
                      f"{r['coding_ms_per_frame']:.3f}", f"{r['delay_ms']:g}",
                      "—" if r["wer"] is None else f"{r['wer']:.1f}",
                      "—" if r["te_script_rate"] is None else f"{r['te_script_rate']:.2f}")
    console.print(table)
    if af.get("encodec_random_weights"):
        console.print("[yellow]Encodec: random weights (bytes and time only; no WER)[/]")


def _bandwidths(value: str) -> tuple[float, ...]:
    try:
        bws = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected kbps values separated by commas, e.g. 1.5,6") from None
    bad = [b for b in bws if b not in p.ENCODEC_BANDWIDTHS]
    if bad:
        raise argparse.ArgumentTypeError(f"not an Encodec bandwidth: {bad} (one of {p.ENCODEC_BANDWIDTHS})")
    return bws


def register(bench_subparsers: Any, common: Any) -> None:
    """Add ``wire`` to ``s2s-engine bench`` (``common`` adds --profile/--set/-v/--json)."""
    wp = bench_subparsers.add_parser("wire", help="in-process vs WebSocket on 127.0.0.1; bytes/s per format; "
                                                  "Encodec RTF")
    wp.add_argument("--turns", type=int, default=5, help="turns of each kind, each way (default 5)")
    wp.add_argument("--text-only", action="store_true", help="no spoken turn (it needs espeak-ng)")
    wp.add_argument("--bandwidths", type=_bandwidths, default=p.ENCODEC_BANDWIDTHS, metavar="KBPS,...",
                    help="Encodec bandwidths for the bytes/s table (default all)")
    wp.add_argument("--seconds", type=float, default=5.0, help="audio clip for the codec RTFs (default 5)")
    wp.add_argument("--codec-model", help="real Encodec weights (folder or cached hub id); default random")
    wp.add_argument("--small-codec", action="store_true", help="random narrow Encodec (tests)")
    wp.add_argument("--no-codec", action="store_true", help="skip the codec RTFs")
    wp.add_argument("--audio-formats", action="store_true",
                    help="every wire format: bytes/s up and down, coding cost, delay, round-trip ASR WER")
    wp.add_argument("--reply", type=reply_arg, default="scripted", metavar="MODE",
                    help="as for bench latency (default scripted: the same reply both ways)")
    common(wp)
    wp.set_defaults(func=cmd_wire)


def cmd_wire(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    console.print(f"[dim]loading profile {args.profile!r} ...[/]")
    report = run_wire(args)
    render_wire(report, console)
    write_json(args.json_path, report, console)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m remote.bench ...``: the same as ``s2s-engine bench wire ...``."""
    from engine.cliargs import run_subcommand

    return run_subcommand("python -m remote.bench", "wire", lambda sub: register(sub, add_common_arguments), argv,
                          description=__doc__.split("\n", 1)[0])


__all__ = ["codec_figures", "format_rates", "measure", "register", "run_wire", "spoken_turn", "turn_overhead"]

if __name__ == "__main__":
    raise SystemExit(main())

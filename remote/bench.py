"""``python -m remote.bench``: what the wire costs, measured.

1. Per-turn overhead of the WebSocket compared with the in-process :class:`~engine.session.Session`:
   the same turn (a text message + ``response.create``, and a spoken Telugu turn from espeak-ng) run
   in-process and through ``remote.server`` + ``remote.client`` on 127.0.0.1, timing from the
   request (or the last audio chunk) to the first reply audio, and to the end of the response.
2. Bytes per second of reply audio on the wire for each format: ``audio/pcm`` and ``s2s.encodec`` at
   every bandwidth (whole JSON messages, as sent; Encodec packet sizes do not depend on the weights,
   so random weights measure them exactly).

Prints Markdown tables (used in ``docs/protocol.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import numpy as np

from engine import events as ev
from remote import protocol as p
from remote.client import RealtimeClient
from remote.server import serve

TEXT = "నమస్కారం, మీరు ఎలా ఉన్నారు?"


def _speech() -> np.ndarray:
    """A Telugu utterance + 1.5 s of silence, int16 at 24 kHz."""
    import io
    import shutil
    import subprocess

    import soundfile as sf
    import soxr

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is needed for the spoken turn")
    wav = subprocess.run([exe, "-v", "te", "--stdout", TEXT], capture_output=True, check=True).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    y = soxr.resample(x, rate, p.PCM_RATE).astype(np.float32)
    y = np.concatenate([np.zeros(7200, np.float32), y, np.zeros(36000, np.float32)])
    return np.round(y * 29000).astype(np.int16)


async def _in_process(engine: Any, spoken: np.ndarray | None) -> tuple[float, float]:
    s = engine.new_session()
    await s.start()
    try:
        if spoken is None:
            s.add_user_text(TEXT)
            t0 = time.perf_counter()
            s.create_response()
        else:
            for i in range(0, len(spoken), 2400):
                s.push_audio(spoken[i:i + 2400], sample_rate=p.PCM_RATE)
            t0 = time.perf_counter()
        first = None
        async for e in s.stream():
            if isinstance(e, ev.ReplyAudio) and first is None:
                first = time.perf_counter() - t0
            if isinstance(e, ev.ResponseDone):
                return first or float("nan"), time.perf_counter() - t0
        raise RuntimeError("the session ended early")
    finally:
        await s.close()


async def _over_wire(url: str, spoken: np.ndarray | None, delivery: list[float] | None = None) -> tuple[float, float]:
    async with RealtimeClient(url, ping_interval_s=0) as c:
        await c.wait_for(p.SessionCreated)
        if spoken is None:
            await c.send_text(TEXT)
            t0 = time.perf_counter()
            await c.create_response()
        else:
            for i in range(0, len(spoken), 2400):
                await c.send_audio(spoken[i:i + 2400], p.PCM_RATE)
            t0 = time.perf_counter()
        first = None
        first_ns = 0
        result = None
        async with asyncio.timeout(120):
            while True:
                e = await c.recv()
                if isinstance(e, p.ResponseAudioDelta) and first is None:
                    first_ns = time.perf_counter_ns()
                    first = time.perf_counter() - t0
                if isinstance(e, p.ResponseDone):
                    result = first or float("nan"), time.perf_counter() - t0
                if isinstance(e, p.S2STurnMetrics) and result is not None:
                    # the session handed out its first audio at this instant (same clock, same machine)
                    out_ns = e.metrics["stamps_ns"].get("first_audio_out_ns")
                    if delivery is not None and out_ns:
                        delivery.append((first_ns - out_ns) / 1e6)
                    return result


async def overhead(engine: Any, repeats: int) -> list[dict[str, Any]]:
    srv = await serve(engine, port=0, stats_interval_s=0)
    rows = []
    try:
        speech = _speech()
        for name, audio in (("text turn", None), ("spoken turn", speech)):
            local, wire, delivery = [], [], []
            await _in_process(engine, audio)  # warm-up
            for _ in range(repeats):  # interleaved, so drift hits both alike
                local.append(await _in_process(engine, audio))
                wire.append(await _over_wire(srv.url, audio, delivery))
            rows.append({
                "turn": name,
                "first_local_ms": 1000 * statistics.median(x[0] for x in local),
                "first_wire_ms": 1000 * statistics.median(x[0] for x in wire),
                "done_local_ms": 1000 * statistics.median(x[1] for x in local),
                "done_wire_ms": 1000 * statistics.median(x[1] for x in wire),
                "delivery_median_ms": statistics.median(delivery),
                "delivery_max_ms": max(delivery),
            })
    finally:
        await srv.close(grace_s=0)
    return rows


async def bytes_per_second(engine: Any) -> list[dict[str, Any]]:
    from engine.codec import BANDWIDTHS, EncodecCodec

    codec = EncodecCodec.random(seed=0, small=True)
    srv = await serve(engine, port=0, stats_interval_s=0, codec_factory=lambda: codec)
    rows = []
    try:
        formats = [p.PCM] + [p.AudioFormat(p.ENCODEC_FORMAT, p.PCM_RATE, bw) for bw in BANDWIDTHS]
        for fmt in formats:
            async with RealtimeClient(srv.url, ping_interval_s=0, codec_factory=lambda: codec) as c:
                await c.wait_for(p.SessionCreated)
                await c.update_session(output_format=fmt)
                await c.wait_for(p.SessionUpdated, limit_s=120)
                await c.send_text(TEXT)
                await c.create_response()
                payload = message = 0
                async with asyncio.timeout(120):
                    while True:
                        e = await c.recv()
                        if isinstance(e, p.ResponseAudioDelta):
                            payload += len(e.audio)
                            message += len(p.serialize(e))
                        if isinstance(e, p.ResponseDone):
                            seconds = e.response["s2s"]["audio_ms"] / 1000
                            break
            label = "audio/pcm" if not fmt.is_encodec else f"s2s.encodec {fmt.bandwidth:g} kbps"
            rows.append({"format": label, "payload_Bps": payload / seconds, "message_Bps": message / seconds,
                         "seconds": seconds})
    finally:
        await srv.close(grace_s=0)
    return rows


async def _main(args: argparse.Namespace) -> None:
    from engine.engine import Engine

    engine = await asyncio.to_thread(Engine.load, args.profile)
    try:
        print(f"profile {args.profile}, {args.repeats} runs each, medians; 127.0.0.1\n")
        print("| turn | first audio in-process | first audio over the wire | difference "
              "| response done in-process | over the wire | first audio: session -> client (median, max) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in await overhead(engine, args.repeats):
            print(f"| {r['turn']} | {r['first_local_ms']:.0f} ms | {r['first_wire_ms']:.0f} ms "
                  f"| {r['first_wire_ms'] - r['first_local_ms']:+.0f} ms | {r['done_local_ms']:.0f} ms "
                  f"| {r['done_wire_ms']:.0f} ms | {r['delivery_median_ms']:.2f} ms, {r['delivery_max_ms']:.2f} ms |")
        print("\n| output format | audio payload B/s | whole messages B/s (base64 + JSON) |")
        print("|---|---:|---:|")
        for r in await bytes_per_second(engine):
            print(f"| {r['format']} | {r['payload_Bps']:.0f} | {r['message_Bps']:.0f} |")
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m remote.bench", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--repeats", type=int, default=5)
    asyncio.run(_main(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

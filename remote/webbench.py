"""``python -m remote.webbench``: the browser client's own voice-to-voice and its bytes on the wire.

Starts the engine and ``remote.server`` on 127.0.0.1, opens the page in headless Chromium with a
WAV file as the microphone (a Telugu sentence from espeak-ng, or ``--wav``), and speaks it
``--turns`` times (Stop/Start re-opens the microphone, which plays the file again). Each reply is
cut with the ``i`` key once its first audio has played, so turns do not overlap (``--full-replies``
lets every reply play out).

Per turn it prints the engine's voice-to-voice (``s2s.turn.metrics``: end of speech to first reply
audio handed out, on the server's clock) next to the page's own (first reply sample rendered by the
playback worklet, mapped to the speaker's time with ``AudioContext.getOutputTimestamp()``, minus
the moment the end-of-speech sample left the capture worklet; both on ``performance.now()``), the
difference (capture chunking, the two network legs, the jitter buffer's prebuffer and the output
latency), and the measured network legs. Then the bytes on the wire: per second of microphone
audio (up) and of reply audio (down), as whole JSON messages, and both ways per second of the run.

Needs Chromium, chromium-driver and selenium (``remote/browser.py``) and espeak-ng.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import S2SError
from remote.protocol.formats import PCM_RATE

TEXT = "నమస్కారం, మీరు ఎలా ఉన్నారు?"


def make_mic_wav(path: Path, text: str = TEXT, rate: int = 48_000) -> Path:
    """0.5 s of silence, ``text`` spoken by espeak-ng (Telugu), 0.3 s of silence, at ``rate``."""
    import io

    import soundfile as sf
    import soxr

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise S2SError("espeak-ng is needed to make the microphone file (or pass --wav FILE)")
    wav = subprocess.run([exe, "-v", "te", "-s", "150", "--stdout"], input=text.encode(), capture_output=True,
                         check=True).stdout
    x, r = sf.read(io.BytesIO(wav), dtype="float32")
    y = soxr.resample(x, r, rate).astype(np.float32) * 0.9
    y = np.concatenate([np.zeros(rate // 2, np.float32), y, np.zeros(int(0.3 * rate), np.float32)])
    sf.write(str(path), y, rate, subtype="PCM_16")
    return path


def _stats(values: list[float]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    return f"median {statistics.median(v):.0f} ms (min {min(v):.0f}, max {max(v):.0f}, n={len(v)})"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from engine.config import load_profile
    from engine.engine import Engine
    from remote.browser import Browser
    from remote.server import serve

    profile = load_profile(args.profile, list(args.set or []))
    print(f"loading profile {profile.name!r} ...", file=sys.stderr, flush=True)
    engine = Engine.load(profile)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="webbench-server", daemon=True)
    thread.start()
    tmp = tempfile.TemporaryDirectory(prefix="s2s-webbench-")
    server = None
    try:
        server = asyncio.run_coroutine_threadsafe(serve(engine, port=0, stats_interval_s=1.0), loop).result(30)
        wav = Path(args.wav) if args.wav else make_mic_wav(Path(tmp.name) / "mic.wav")
        with Browser(wav) as b:
            b.open(f"http://127.0.0.1:{server.port}/")
            b.wait_for("the connection", lambda s: s.get("conn") == "open", 30)
            t_start = time.monotonic()
            start = b.snapshot()
            rows: list[dict[str, Any]] = []
            for i in range(args.turns):
                b.wait_for("the agent to listen", lambda s: s.get("state") in ("listening", "idle"), 120)
                n = len(b.snapshot().get("turns", []))
                if b.snapshot().get("micOpen"):
                    b.click("#start")  # Stop ...
                    b.wait_for("the microphone to close", lambda s: not s.get("micOpen"), 10)
                b.click("#start")  # ... Start: the file plays again
                turn = b.wait_for(f"turn {i + 1}", lambda s, n=n: (len(s["turns"]) > n and s["turns"][-1].get("pageV2V")
                                                                  and s["turns"][-1]), 120)
                if not args.full_replies:
                    b.press("i")
                net = turn.get("network") or {}
                row = {"turn": i + 1, "engine_v2v_ms": turn["engineV2V"], "page_v2v_ms": turn["pageV2V"],
                       "net_up_ms": net.get("up"), "net_down_ms": net.get("down")}
                rows.append(row)
                print(f"turn {i + 1}: engine {row['engine_v2v_ms']:.0f} ms, page {row['page_v2v_ms']:.0f} ms, "
                      f"page - engine {row['page_v2v_ms'] - row['engine_v2v_ms']:.0f} ms", file=sys.stderr, flush=True)
            b.wait_for("the agent to listen", lambda s: s.get("state") in ("listening", "idle"), 120)
            end = b.snapshot()
            wall = time.monotonic() - t_start
    finally:
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.close(grace_s=0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        engine.close()
        tmp.cleanup()

    def delta(key: str, sub: str | None = None) -> float:
        a, z = start.get(key, {}), end.get(key, {})
        return (z.get(sub, 0) - a.get(sub, 0)) if sub else (z - a if isinstance(z, int | float) else 0)

    mic_s = (end["sentSamples"] - start["sentSamples"]) / PCM_RATE if end["gen"] == start["gen"] else end["sentSamples"] / PCM_RATE
    reply_s = (end["replySamples"] - start["replySamples"]) / PCM_RATE
    wire = {
        "mic_audio_s": round(mic_s, 2),
        "up_audio_bytes_per_mic_s": round(delta("bytesUpByType", "input_audio_buffer.append") / mic_s) if mic_s else None,
        "reply_audio_s": round(reply_s, 2),
        "down_audio_bytes_per_reply_s": round(delta("bytesDownByType", "response.output_audio.delta") / reply_s)
        if reply_s else None,
        "wall_s": round(wall, 1),
        "up_bytes_per_s": round(delta("bytesUp") / wall),
        "down_bytes_per_s": round(delta("bytesDown") / wall),
    }
    return {"turns": rows, "wire": wire, "context_rate": end.get("contextRate"),
            "output_latency_ms": end.get("outputLatencyMs"), "base_latency_ms": end.get("baseLatencyMs"),
            "profile": profile.name, "full_replies": bool(args.full_replies)}


def render(result: dict[str, Any]) -> str:
    rows = result["turns"]
    lines = ["| turn | engine voice-to-voice | page voice-to-voice | page − engine | network ↑ | network ↓ |",
             "|---:|---:|---:|---:|---:|---:|"]

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"

    for r in rows:
        lines.append(f"| {r['turn']} | {f(r['engine_v2v_ms'])} | {f(r['page_v2v_ms'])} | "
                     f"{f(r['page_v2v_ms'] - r['engine_v2v_ms'])} | {f(r['net_up_ms'])} | {f(r['net_down_ms'])} |")
    eng = [r["engine_v2v_ms"] for r in rows]
    page = [r["page_v2v_ms"] for r in rows]
    diff = [p - e for p, e in zip(page, eng, strict=True)]
    w = result["wire"]
    lines += [
        "",
        f"engine voice-to-voice: {_stats(eng)}",
        f"page voice-to-voice:   {_stats(page)}",
        f"page − engine:         {_stats(diff)}",
        f"AudioContext: {result['context_rate']} Hz, output latency {result['output_latency_ms']} ms, "
        f"base latency {result['base_latency_ms']} ms",
        "",
        f"wire ↑ microphone: {w['up_audio_bytes_per_mic_s']} B per second of audio ({w['mic_audio_s']} s sent)",
        f"wire ↓ reply audio: {w['down_audio_bytes_per_reply_s']} B per second of audio ({w['reply_audio_s']} s received)",
        f"wire, whole run ({w['wall_s']} s): ↑ {w['up_bytes_per_s']} B/s, ↓ {w['down_bytes_per_s']} B/s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m remote.webbench", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--turns", type=int, default=5, help="spoken turns (default 5)")
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--wav", help="the microphone file (default: a Telugu sentence from espeak-ng)")
    ap.add_argument("--full-replies", action="store_true", help="let every reply play out (default: cut it)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.turns < 1:
        ap.error("--turns must be at least 1")
    try:
        result = run(args)
    except S2SError as exc:
        print(f"webbench: error: {exc}", file=sys.stderr)
        return 1
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

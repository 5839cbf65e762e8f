"""The wire's audio formats, measured (``s2s-engine bench wire``, tables 2 and 4).

1. :func:`wire_rates`: for each format, over a real server and client on 127.0.0.1 (one engine):
   **bytes per second up** (the client's ``input_audio_buffer.append`` messages for a spoken clip
   sent as 20 ms microphone blocks, whole JSON messages with base64), **down** (the server's
   ``response.output_audio.delta`` messages of a scripted reply, per second of reply audio), and
   the **delivery** of each reply's first audio (the session handing it out to the client having
   parsed and decoded it: the server's encoding, the socket and the client's decoding; one clock).
2. :func:`coding_figures`: per format, offline on the same coders the wire uses
   (:data:`remote.protocol.FORMATS`): the **encode + decode CPU time per second of audio** (and per
   20 ms frame), the **algorithmic delay** (a packet waits for its 20 ms frame, plus Opus's
   6.5 ms look-ahead), and the **quality** as the ASR word error rate of English espeak-ng speech
   after a round trip through the format (microphone at 16 kHz as the TUI sends it, coded, decoded,
   back to 16 kHz, the engine's own Whisper), against PCM; and the Telugu sample's script rate.
   Encodec with random weights (the default) measures bytes and time only: its sound is noise.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.audio import ENGINE_RATE
from engine.clock import now_ns
from engine.errors import S2SError
from remote import protocol as p

if TYPE_CHECKING:
    from engine.engine import Engine

ENGLISH = [
    "Please open the window.",
    "My favourite fruit is a banana.",
    "The train leaves on Monday morning.",
    "Football is played with eleven players.",
    "She reads a book every night before sleeping.",
    "We bought fresh vegetables at the market today.",
    "The weather is cold and windy this afternoon.",
    "Turn left at the second traffic light.",
    "The children played in the park until dinner.",
    "Please call me when you arrive at the station.",
    "He drinks a cup of coffee every morning.",
    "The meeting starts at ten o'clock tomorrow.",
    "Our house has a small garden with roses.",
    "The doctor asked him to rest for a week.",
    "I forgot my umbrella on the bus yesterday.",
    "The library closes early on Sundays.",
]
MIC_RATE = ENGINE_RATE
BLOCK = MIC_RATE // 50  # the TUI's 20 ms microphone blocks


def formats(encodec_bandwidths: tuple[float, ...] = (1.5, 6.0)) -> list[p.AudioFormat]:
    """Every format the server offers, at the rates a client uses (Opus input at the mic's 16 kHz)."""
    out = [p.PCM, *(p.AudioFormat(p.OPUS_FORMAT, MIC_RATE, bitrate=b) for b in p.OPUS_BITRATES),
           p.AudioFormat(p.PCMU_FORMAT), p.AudioFormat(p.PCMA_FORMAT)]
    return out + [p.AudioFormat(p.ENCODEC_FORMAT, p.PCM_RATE, bw) for bw in encodec_bandwidths]


def _output(fmt: p.AudioFormat) -> p.AudioFormat:
    return p.AudioFormat(fmt.type, None, fmt.bandwidth, bitrate=fmt.bitrate)  # the format's own output rate


def espeak(text: str, voice: str = "en") -> tuple[np.ndarray, int]:
    import io

    import soundfile as sf

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise S2SError("espeak-ng is needed for the codec quality (apt-get install -y espeak-ng)")
    wav = subprocess.run([exe, "-v", voice, "-s", "150", "--stdout", text], capture_output=True, check=True,
                         timeout=60).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return x, int(rate)


# --------------------------------------------------------------------------- on the wire


async def wire_rates(engine: Engine, fmts: list[p.AudioFormat], speech: np.ndarray, turns: int = 2,
                     codec_factory: Any = None) -> list[dict[str, Any]]:
    """Bytes/s up and down (whole messages) and first-audio delivery per format (see the module doc).
    ``speech``: float32 at 16 kHz."""
    from remote.client import RealtimeClient
    from remote.server import serve

    rows = []
    seconds_up = len(speech) / MIC_RATE
    async with await serve(engine, port=0, stats_interval_s=0, ping_interval_s=None,
                           codec_factory=codec_factory) as srv:
        for fmt in fmts:
            async with RealtimeClient(srv.url, ping_interval_s=0, reconnect=False, codec_factory=codec_factory) as c:
                await c.wait_for(p.SessionCreated)
                await c.update_session(input_format=fmt, output_format=_output(fmt), turn_detection=False)
                await c.wait_for(p.SessionUpdated, limit_s=120)
                before = c.bytes_sent
                for i in range(0, len(speech), BLOCK):
                    await c.send_audio(speech[i:i + BLOCK], MIC_RATE)
                await c.flush_audio()
                up = c.bytes_sent - before
                await c.clear_audio()
                await c.wait_for(p.InputAudioBufferCleared)
                down = seconds = 0.0
                delivery: list[float] = []
                for _ in range(turns):
                    await c.send_text("ఈ రోజు వాతావరణం ఎలా ఉంది?")
                    await c.create_response()
                    first_ns = 0
                    async with asyncio.timeout(180):
                        while True:
                            e = await c.recv()
                            if isinstance(e, p.Error):
                                raise S2SError(f"{fmt.label}: {e.code}: {e.message}")
                            if isinstance(e, p.ResponseAudioDelta):
                                down += len(p.serialize(e))
                                c.decode_audio(e)
                                if not first_ns:
                                    first_ns = now_ns()  # parsed and decoded
                            elif isinstance(e, p.ResponseDone):
                                seconds += e.response["s2s"]["audio_ms"] / 1000
                            elif isinstance(e, p.S2STurnMetrics):
                                handed = (e.metrics.get("stamps_ns") or {}).get("first_audio_out_ns")
                                if handed and first_ns:
                                    delivery.append((first_ns - handed) / 1e6)
                                break
            if seconds <= 0:
                raise S2SError("the reply had no audio to measure")
            rows.append({"format": fmt.label, "up_Bps": round(up / seconds_up), "down_Bps": round(down / seconds),
                         "delivery_ms": round(float(np.median(delivery)), 2) if delivery else None})
    pcm = rows[0]
    for r in rows:
        r["up_vs_pcm"] = round(pcm["up_Bps"] / r["up_Bps"], 1) if r["up_Bps"] else None
        r["down_vs_pcm"] = round(pcm["down_Bps"] / r["down_Bps"], 1) if r["down_Bps"] else None
    return rows


# --------------------------------------------------------------------------- coding cost and quality


def round_trip(fmt: p.AudioFormat, x16k: np.ndarray, model: Any = None) -> tuple[np.ndarray, float, float, int]:
    """``x16k`` (float32, 16 kHz) through the format as it travels: resampled to its rate, coded in
    20 ms blocks by its encoder, each payload decoded, back to 16 kHz. (audio, encode s, decode s,
    payload bytes). Times are this thread's CPU time (``time.thread_time``): on a shared machine the
    wall clock mostly measures the other processes; the coders run in the calling thread."""
    from engine.audio import resample

    spec = p.FORMATS[fmt.type]
    enc, dec = spec.encoder(fmt, model), spec.decoder(fmt, model)
    x = resample(x16k, MIC_RATE, fmt.rate) if fmt.rate != MIC_RATE else x16k
    step = fmt.rate // 50
    enc.push(np.zeros(step, np.float32))  # warm: G.711's tables are built on first use
    enc, dec = spec.encoder(fmt, model), spec.decoder(fmt, model)
    t0 = time.thread_time()
    payloads: list[bytes] = []
    for i in range(0, len(x), step):
        payloads += enc.push(x[i:i + step])
    payloads += enc.flush()
    t1 = time.thread_time()
    parts = [np.asarray(dec.push(b)).reshape(-1) for b in payloads]
    t2 = time.thread_time()
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    y = y.astype(np.float32) / 32768.0 if y.dtype == np.int16 else y.astype(np.float32)
    y = resample(y, dec.rate, MIC_RATE) if dec.rate != MIC_RATE else y
    return y, t1 - t0, t2 - t1, sum(map(len, payloads))


def algorithmic_delay_ms(fmt: p.AudioFormat) -> float:
    """What a format makes audio wait for, besides computing: a packet needs its whole 20 ms frame,
    Opus adds its 6.5 ms look-ahead; PCM and G.711 may be cut anywhere (Encodec's frame: 20 ms here
    as its stream encoder packs, see docs/codec.md). For Opus up, a frame of speech also waits up to
    20 ms for the frame it is paired with; the quiet frames that end a turn do not (not counted here)."""
    return {p.OPUS_FORMAT: 26.5, p.ENCODEC_FORMAT: 20.0}.get(fmt.type, 0.0)


def coding_figures(engine: Engine, fmts: list[p.AudioFormat], codec: Any = None,
                   log: Any = lambda s: None) -> dict[str, Any]:
    """Encode + decode cost, delay and round-trip ASR quality per format (see the module doc)."""
    from engine.audio import load_wav, resample
    from engine.bench.asr import error_rates
    from engine.script import script_share

    english = []
    for text in ENGLISH:
        x, rate = espeak(text)
        pad = np.zeros(MIC_RATE // 4, np.float32)
        english.append(np.concatenate([pad, resample(x, rate, MIC_RATE).astype(np.float32), pad]))
    from pathlib import Path

    te, _ = load_wav(Path(__file__).resolve().parents[1] / "engine" / "assets" / "sample_te.wav", MIC_RATE)
    audio_s = sum(len(x) for x in english) / MIC_RATE
    rows = []
    for fmt in fmts:
        model = codec if fmt.is_encodec else None
        outs, enc_s, dec_s, nbytes = [], 0.0, 0.0, 0
        for x in english:
            y, e, d, n = round_trip(fmt, x, model)
            outs.append(y)
            enc_s, dec_s, nbytes = enc_s + e, dec_s + d, nbytes + n
        row: dict[str, Any] = {
            "format": fmt.label, "payload_Bps": round(nbytes / audio_s),
            "encode_ms_per_s": round(1000 * enc_s / audio_s, 2), "decode_ms_per_s": round(1000 * dec_s / audio_s, 2),
            "coding_ms_per_frame": round(1000 * (enc_s + dec_s) / audio_s / 50, 3),
            "delay_ms": algorithmic_delay_ms(fmt), "wer": None, "te_script_rate": None,
        }
        if not (fmt.is_encodec and getattr(codec, "random_weights", True)):  # random weights: noise
            hyps = [engine.asr.transcribe(y, "en").text for y in outs]
            row["hypotheses"] = hyps
            row["wer"] = round(100 * error_rates(ENGLISH, hyps)[0], 1)
            te_y = round_trip(fmt, te, model)[0]
            row["te_script_rate"] = round(script_share(engine.asr.transcribe(te_y, "te").text, "te") or 0.0, 3)
        rows.append(row)
        log(f"{fmt.label}: {row}")
    return {"clips": len(english), "audio_s": round(audio_s, 1), "mic_rate": MIC_RATE, "rows": rows,
            "asr": str(engine.describe().get("models", {}).get("asr", {}).get("model", ""))}


__all__ = ["algorithmic_delay_ms", "coding_figures", "formats", "round_trip", "wire_rates"]

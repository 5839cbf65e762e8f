"""How the segment Whisper decodes changes its accuracy: WER per pre-roll, real tail and zero pad.

    .venv/bin/python scripts/asr_segment.py SET OUT.json [--beam 5] [--window 30]
        [--segments 300:64:0,300:64:200,...] [--profile offline] [--language en]

SET is a ``bench asr`` set (``s2s-engine bench asr-set``). Every WAV goes once through a real
Session (``engine.bench.asr.session_cut``: the profile's Silero VAD, 20 ms chunks, as fast as the
Session takes them) for the bounds of each turn: its SpeechStarted and SpeechStopped positions. Each SEGMENT ``PRE:TAIL:PAD`` (ms) then
cuts every turn from the file (resampled to 16 kHz) from PRE before the start of speech to TAIL
after its end (real audio; negative values cut into the speech), appends PAD of digital silence,
and decodes it with the profile's ASR at ``--beam``/``--window``. The WER of each segment, and of
faster-whisper's ``transcribe()`` on each whole file at the same beam (``fw=``: no timestamps,
temperature 0), are printed and written to OUT.json with every hypothesis. docs/asr.md has the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import numpy as np

from engine.audio import ENGINE_RATE, load_wav, resample
from engine.bench.asr import bench_engine, error_rates, load_set, native_wav, session_cut

DEFAULT_SEGMENTS = "300:64:0,300:64:200,300:64:500,300:64:1000,300:200:0,300:400:0,100:64:0,500:64:0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("set")
    ap.add_argument("out")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--segments", default=DEFAULT_SEGMENTS, help="PRE:TAIL:PAD in ms, comma-separated")
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--language", default="en")
    args = ap.parse_args(argv)
    segments = [tuple(int(v) for v in s.split(":")) for s in args.segments.split(",")]
    engine = bench_engine(args.profile, [f"asr.language={args.language}"])
    try:
        items = [it for it in load_set(args.set, args.language) if it.language == args.language]
        cut = []
        for it in items:
            audio, rate = native_wav(it.audio)
            x16 = np.concatenate([resample(audio, rate, ENGINE_RATE), np.zeros(3 * ENGINE_RATE, np.float32)])
            cut.append((asyncio.run(session_cut(engine, audio, rate, args.language)).bounds, x16))
        asr = engine.asr.inner  # type: ignore[attr-defined]
        variant = asr.variant(beam_size=args.beam, window_s=args.window, max_tokens_per_s=0.0,
                              decode_step_tokens=16, no_speech_threshold=0.6)
        refs = [it.text for it in items]
        rows = []
        ms = ENGINE_RATE // 1000
        for pre, tail, pad in segments:
            hyps = []
            for bounds, x16 in cut:
                texts = []
                for s, e in bounds:
                    seg = np.concatenate([x16[max(0, (s - pre) * ms): (e + tail) * ms], np.zeros(pad * ms, np.float32)])
                    texts.append(variant.transcribe(seg, args.language).text)
                hyps.append(" ".join(texts))
            wer, cer = error_rates(refs, hyps)
            rows.append({"pre_roll_ms": pre, "tail_ms": tail, "pad_ms": pad, "wer": round(wer, 4), "cer": round(cer, 4),
                         "hyps": hyps})
            print(f"pre-roll {pre:5d} ms  tail {tail:5d} ms  pad {pad:5d} ms  WER {100 * wer:5.1f} %", flush=True)
        hyps = []
        for it in items:
            audio, _ = load_wav(it.audio)
            segs, _ = asr._model.transcribe(audio, language=args.language, beam_size=args.beam, without_timestamps=True,
                                            temperature=0.0, condition_on_previous_text=False)
            hyps.append(" ".join(seg.text.strip() for seg in segs).strip())
        wer, cer = error_rates(refs, hyps)
        rows.append({"reference": "fw=", "wer": round(wer, 4), "cer": round(cer, 4), "hyps": hyps})
        print(f"faster-whisper fw= on the whole files  WER {100 * wer:5.1f} %")
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"beam": args.beam, "window_s": args.window, "files": len(items), "refs": refs, "rows": rows}, f,
                      ensure_ascii=False, indent=1)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measurements behind docs/benchmarks.md "The compute floor on a 2-core CPU": what each remaining
lever on the path to the first reply is worth on this machine. Not part of the engine.

    .venv/bin/python scripts/cpu_levers.py llm-output   # the LLM's output projection, requantized
    .venv/bin/python scripts/cpu_levers.py merge        # end-of-turn probe and first token: one decode or two
    .venv/bin/python scripts/cpu_levers.py reading-row  # what the reading's logit row costs the reply, quiet and a core busy
    .venv/bin/python scripts/cpu_levers.py asr-prefix   # Whisper: encoder vs decoder, a forced prefix
    .venv/bin/python scripts/cpu_levers.py threads      # Gemma and Whisper on 1 and 2 threads, quiet and a core busy
    .venv/bin/python scripts/cpu_levers.py jemalloc     # Whisper decodes under jemalloc, with and without its oversize arena
    .venv/bin/python scripts/cpu_levers.py paired --rounds 3 --set asr.language=en \
        --variant always=turn.audio_when=always --variant auto=turn.audio_when=auto \
        -- /tmp/tw/en/complete/espeak-en-us_0*.wav      # profile settings against each other, interleaved

``paired`` varies what a new Session reads (``turn``, ``vad``, ``session``, ``sentences``); the
models, and so ``--set``, stay those of the one loaded engine.

``llm-output`` writes GGUF copies of the offline Gemma 3 270M with an ``output.weight`` of its own
(the model ties it to ``token_embd``, Q8_0, 178 MB: most of the bytes a generated token reads)
at Q5_0 / Q4_1 / Q4_0, then prints greedy tokens/s and perplexity on the Telugu and English text
in this repository. The copies go to a temporary folder and are deleted.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TELUGU_LINE = re.compile(r"[\u0C00-\u0C7F][\u0C00-\u0C7F ,.?!]{30,}")


def _median_ms(f, n: int = 5) -> tuple[object, float]:  # noqa: ANN001
    out, times = None, []
    for _ in range(n):
        t0 = time.perf_counter()
        out = f()
        times.append((time.perf_counter() - t0) * 1000)
    return out, statistics.median(times)


def requantize_output(src: str, dst: str, qtype_name: str) -> None:
    """Copy a GGUF, adding ``output.weight``: ``token_embd`` requantized to ``qtype_name``."""
    import gguf
    from gguf.quants import dequantize, quantize

    qtype = gguf.GGMLQuantizationType[qtype_name]
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch=r.fields[gguf.Keys.General.ARCHITECTURE].contents())
    for f in r.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        vt = f.types[0]
        w.add_key_value(f.name, f.contents(), vt, sub_type=f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None)
    datas = []
    for t in r.tensors:
        if t.name == "token_embd.weight":
            out = quantize(dequantize(t.data, t.tensor_type), qtype)
            w.add_tensor_info("output.weight", out.shape, out.dtype, out.nbytes, qtype)
            datas.append(out)
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        datas.append(t.data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for d in datas:
        w.write_tensor_data(d)
    w.close()


def _texts() -> dict[str, list[str]]:
    te: set[str] = set()
    for p in [*ROOT.glob("engine/**/*.py"), *ROOT.glob("training/**/*.py"), *ROOT.glob("tests/*.py"),
              *ROOT.glob("docs/*.md")]:
        te.update(m.group(0).strip() for m in TELUGU_LINE.finditer(p.read_text(encoding="utf-8")))
    from engine.bench.asr import EN_SENTENCES

    return {"te": sorted(te), "en": list(EN_SENTENCES)}


def llm_output() -> None:
    from llama_cpp import Llama

    from engine.models import resolve

    src = resolve("llm", "pkg:gemma3-270m")
    texts = _texts()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"Q8_0 (tied, as shipped)": src}
        for q in ("Q5_0", "Q4_1", "Q4_0"):
            paths[f"{q} output"] = f"{tmp}/{q}.gguf"
            requantize_output(src, paths[f"{q} output"], q)
        for name, path in paths.items():
            llm = Llama(path, n_ctx=1024, n_threads=2, logits_all=True, verbose=False)
            ppl = {}
            for lang, lines in texts.items():
                nll = n = 0.0
                for line in lines:
                    toks = llm.tokenize(line.encode(), add_bos=True)
                    llm.reset()
                    llm.eval(toks)
                    lg = np.asarray(llm.scores[: len(toks) - 1], np.float64)
                    lg -= lg.max(1, keepdims=True)
                    lp = lg[np.arange(len(toks) - 1), toks[1:]] - np.log(np.exp(lg).sum(1))
                    nll, n = nll - lp.sum(), n + len(toks) - 1
                ppl[lang] = (math.exp(nll / n), int(n))
            prompt = llm.tokenize(b"Once upon a time in Hyderabad, there was", add_bos=True)
            speeds = []
            for _ in range(3):
                llm.reset()
                for i, _tok in enumerate(llm.generate(prompt, temp=0.0)):
                    if i == 0:
                        t1 = time.perf_counter()
                    if i == 49:
                        break
                speeds.append(49 / (time.perf_counter() - t1))
            print(f"{name:24s} tokens/s {min(speeds):.1f}-{max(speeds):.1f}  "
                  f"perplexity te {ppl['te'][0]:.1f} ({ppl['te'][1]} tokens)  en {ppl['en'][0]:.1f} ({ppl['en'][1]} tokens)")
            del llm


def merge() -> None:
    from llama_cpp import Llama

    from engine.models import resolve
    from engine.stages.llm_llamacpp import dialogue_prompt, eval_logits

    llm = Llama(resolve("llm", "pkg:gemma3-270m"), n_ctx=2048, n_threads=2, verbose=False)
    system = {"role": "system", "content": "మీరు తెలుగులో మాట్లాడే సహాయకుడు. చిన్న సమాధానాలు ఇవ్వండి."}
    user = "Hello, what is the weather like in Hyderabad today"
    full = dialogue_prompt([system, {"role": "user", "content": user + "?"}])
    before = llm.tokenize(full[: full.index(user)].encode(), add_bos=True, special=True)
    probe = llm.tokenize(full[: full.index(user) + len(user)].encode(), add_bos=True, special=True)
    reply = llm.tokenize(full.encode(), add_bos=True, special=True)
    assert reply[: len(probe)] == probe
    rows: dict[str, list[tuple[float, float]]] = {"two decodes (before)": [], "one decode (the engine)": []}
    for _ in range(7):
        for name, tokens in (("two decodes (before)", probe), ("one decode (the engine)", reply)):
            llm.reset()
            llm.eval(before)  # the system prompt and the history stay cached between turns
            t0 = time.perf_counter()
            eval_logits(llm, tokens, [len(probe) - 1])
            t1 = time.perf_counter()
            gen = llm.generate(reply, temp=0.0)
            next(gen)
            rows[name].append(((t1 - t0) * 1000, (time.perf_counter() - t0) * 1000))
            gen.close()
    for name, r in rows.items():
        print(f"{name:24s} end-of-turn probability after {statistics.median(x[0] for x in r):.0f} ms, "
              f"first reply token after {statistics.median(x[1] for x in r):.0f} ms (median of 7)")


def reading_row(rounds: int = 3) -> None:
    """The reply's first text with and without the transcript's reading (``stream_turn`` against
    ``stream``), and the prompt decode with one logit row or two, on six fresh English transcripts
    after the system prompt (as a new utterance finds the cache): quiet on 2 threads, then with a
    core busy on 1 (as ``engine.cpu.threads_for`` picks)."""
    import threading

    from engine.bench.latency import cpu_load
    from engine.bench.turn import SENTENCES
    from engine.config import load_profile
    from engine.models import resolve
    from engine.stages.llm_llamacpp import LlamaCppLLM, eval_logits, keep_prefix

    prof = load_profile("offline", ["asr.language=en"])
    b = LlamaCppLLM(prof.llm, resolve("llm", prof.llm.model))
    b.setup()
    llm = b.llama
    system = {"role": "system", "content": prof.llm.system_prompt}
    texts = [a + " " + z for a, z in SENTENCES["en"]]  # bench make-wavs' complete English utterances

    def msgs(t: str) -> list:
        return [system, {"role": "user", "content": t}]

    def tokens(t: str) -> list[int]:
        return llm.tokenize(b.prompt_text(llm, msgs(t)).encode(), add_bos=True, special=True)

    def reply(t: str, read: bool, th: int) -> float:
        keep_prefix(llm, tokens("\ue001"))  # the system prompt stays, the last transcript goes
        t0 = time.perf_counter()
        it = (b.stream_turn(msgs(t), 8, threading.Event(), lambda p: None, threads=th) if read
              else b.stream(msgs(t), 8, threading.Event(), threads=th))
        next(iter(it))
        ms = (time.perf_counter() - t0) * 1000
        it.close()
        return ms

    def decode(t: str, n_rows: int, th: int) -> float:
        keep_prefix(llm, tokens("\ue001"))
        b.use_threads(llm, th)
        tok = tokens(t)
        t0 = time.perf_counter()
        eval_logits(llm, tok, [len(tok) - 1] if n_rows == 1 else [len(tok) - 6, len(tok) - 1])
        return (time.perf_counter() - t0) * 1000

    reply(texts[0], False, 2)  # the system prompt, prefilled once
    for busy in (0, 1):
        th = 2 - busy
        with cpu_load(busy):
            time.sleep(0.5)
            for _ in range(rounds):
                for name, f, arg in (("reply, unread", reply, False), ("reply, read", reply, True),
                                     ("decode, 1 row", decode, 1), ("decode, 2 rows", decode, 2)):
                    r = [f(t, arg, th) for t in texts]
                    print(f"busy cores {busy}, {th} thread(s), {name:15s}: median {statistics.median(r):.0f} ms "
                          f"(range {min(r):.0f}-{max(r):.0f})", flush=True)


def asr_prefix() -> None:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

    from engine.audio import resample
    from engine.bench.asr import EN_SENTENCES, espeak
    from engine.models import resolve
    from engine.stages.asr_whisper import features, transcribe

    m = WhisperModel(resolve("asr", "pkg:whisper-base"), device="cpu", compute_type="int8", cpu_threads=2)
    tok = Tokenizer(m.hf_tokenizer, True, task="transcribe", language="en")
    sot = [*tok.sot_sequence, tok.no_timestamps]
    for sentence in EN_SENTENCES[:4]:
        audio, rate = espeak(sentence, "en-us", 160)
        audio = resample(audio, rate, 16_000).astype(np.float32)
        enc, t_enc = _median_ms(lambda a=audio: m.encode(features(m, a, 10)))
        r, t_gen = _median_ms(lambda e=enc: m.model.generate(e, [sot], beam_size=1, max_length=200)[0])
        ids = [t for t in r.sequences_ids[0] if t < tok.eot]
        _, t_pre = _median_ms(lambda e=enc, p=ids[:-3]: m.model.generate(e, [sot + p], beam_size=1, max_length=200))
        _, t_all = _median_ms(lambda a=audio: transcribe(m, a, "en", 10))
        print(f"{len(audio) / 16000:.1f} s: encoder {t_enc:.0f} ms, decoder {t_gen:.0f} ms ({len(ids)} tokens), "
              f"decoder with all but 3 tokens forced {t_pre:.0f} ms; the engine's transcribe() {t_all:.0f} ms")


def threads(repeats: int = 7) -> None:
    """The offline LLM (16 greedy tokens after a fresh prompt) and ASR (the engine's decode of one
    English utterance) on 1 and 2 CPU threads, with no core and with one core kept busy
    (``bench latency --cpu-load``'s spinners); medians and ranges of ``repeats`` calls."""
    from dataclasses import replace

    from llama_cpp import Llama

    from engine.audio import ENGINE_RATE, resample
    from engine.bench.asr import EN_SENTENCES, espeak
    from engine.bench.latency import cpu_load
    from engine.config import load_profile
    from engine.models import resolve
    from engine.stages.asr_whisper import FasterWhisperASR
    from engine.stages.llm_llamacpp import dialogue_prompt

    prof = load_profile("offline", ["asr.language=en"])
    prompt = dialogue_prompt([{"role": "user", "content": "I would like to book a table for two people tonight"}])
    llms = {n: Llama(resolve("llm", prof.llm.model), n_ctx=512, n_threads=n, n_threads_batch=n, verbose=False)
            for n in (1, 2)}
    asrs = {n: FasterWhisperASR(replace(prof.asr, cpu_threads=n), resolve("asr", prof.asr.model)) for n in (1, 2)}
    for a in asrs.values():
        a.setup()
    audio, rate = espeak(EN_SENTENCES[2], "en-us", 160)
    audio = resample(audio, rate, ENGINE_RATE).astype(np.float32)

    def llm_call(llm) -> tuple[float, float]:  # noqa: ANN001
        llm.reset()
        t0, first = time.perf_counter(), None
        for _ in llm(prompt, max_tokens=16, temperature=0.0, stream=True):
            first = first or time.perf_counter() - t0
        return (first or 0) * 1000, (time.perf_counter() - t0) * 1000

    def asr_call(a) -> float:  # noqa: ANN001
        t0 = time.perf_counter()
        a.transcribe(audio, "en")
        return (time.perf_counter() - t0) * 1000

    def span(v: list[float]) -> str:
        return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"

    for busy in (0, 1):
        with cpu_load(busy):
            time.sleep(0.5)
            for n in (1, 2):
                r = [llm_call(llms[n]) for _ in range(repeats)]
                d = [asr_call(asrs[n]) for _ in range(repeats)]
                print(f"busy cores {busy}, {n} thread(s): LLM first token {span([x[0] for x in r])} ms, "
                      f"16 tokens {span([x[1] for x in r])} ms; ASR decode ({len(audio) / ENGINE_RATE:.1f} s) "
                      f"{span(d)} ms", flush=True)


def jemalloc(rounds: int = 2) -> None:
    """Whisper base decodes of the bundled sample in a child process under jemalloc, with the
    server's ``MALLOC_CONF`` (``remote.memory.JEMALLOC_CONF``) and with it but jemalloc's own
    oversize arena (blocks over 8 MiB, whose pages it gives back at once); the two alternate,
    ``rounds`` times. Each child: one warm-up decode, then 8 timed ones 0.5 s apart, then one
    more with jemalloc's bytes in use read every 2 ms (what a decode allocates for itself)."""
    import json
    import os
    import subprocess
    import sys

    from remote.memory import JEMALLOC_CONF, jemalloc_env

    child = r"""
import json, statistics, time
from engine.audio import load_wav
from engine.config import load_profile
from engine.engine import load_stage
from remote.memory import jemalloc_option, malloc_stats
audio = load_wav("engine/assets/sample_te.wav")[0]
asr = load_stage(load_profile("offline"), "asr")
asr.transcribe(audio, "te")
t = []
for _ in range(8):
    t0 = time.perf_counter(); asr.transcribe(audio, "te"); t.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.5)
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
mapped = malloc_stats()["mmapped_mib"]
import threading
peak, stop, idle = [0.0], threading.Event(), malloc_stats()["in_use_mib"]
def watch():  # jemalloc's bytes in use during one more decode, every 2 ms (slows that decode)
    while not stop.is_set():
        peak[0] = max(peak[0], malloc_stats()["in_use_mib"])
        time.sleep(0.002)
w = threading.Thread(target=watch)
w.start()
asr.transcribe(audio, "te")
stop.set()
w.join()
print(json.dumps({"oversize": jemalloc_option("oversize_threshold"), "median": statistics.median(t),
                  "min": min(t), "max": max(t), "mapped": mapped, "rss": rss, "idle": idle, "peak": peak[0]}))
"""
    base = jemalloc_env({**os.environ, "LD_PRELOAD": ""})
    if base is None:
        raise SystemExit("jemalloc is not installed (apt-get install libjemalloc2)")
    own_arena = ",".join(x for x in JEMALLOC_CONF.split(",") if not x.startswith("oversize_threshold"))
    for r in range(rounds):
        for name, conf in (("server's MALLOC_CONF", JEMALLOC_CONF), ("with the oversize arena", own_arena)):
            out = subprocess.run([sys.executable, "-c", child], env={**base, "MALLOC_CONF": conf}, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
            d = json.loads(out.strip().splitlines()[-1])
            print(f"round {r + 1}, {name:24s} (oversize_threshold {d['oversize']}): decode median {d['median']:.0f} ms "
                  f"({d['min']:.0f}-{d['max']:.0f}), then jemalloc mapped {d['mapped']:.0f} MiB, RSS {d['rss']:.0f} MiB; "
                  f"bytes in use {d['idle']:.0f} MiB between decodes, {d['peak']:.0f} at most during one",
                  flush=True)


PER_SESSION = ("turn.", "vad.", "session.", "sentences.")  # what a new Session reads of the profile


def paired(rounds: int, variants: list[str], files: list[str], base: list[str], busy: int = 0) -> None:
    """Stream every file through a fresh Session under each variant (``label=k=v;k=v``: profile
    overrides of :data:`PER_SESSION` sections), the variants interleaved round by round so that
    the machine's drift hits all alike; voice-to-voice and the stamps of the turn, ms after the
    end of speech (medians). ``base``: overrides for the engine and every variant; ``busy``: cores
    kept busy meanwhile (``bench latency --cpu-load``)."""
    import asyncio

    from engine.audio import load_wav
    from engine.bench.latency import bench_engine, cpu_load, stream_file
    from engine.bench.stats import dist
    from engine.config import load_profile

    sets = {v: [x for x in v.partition("=")[2].split(";") if x] for v in variants}
    for v, overrides in sets.items():
        wrong = [x for x in overrides if not x.startswith(PER_SESSION)]
        if wrong:
            raise SystemExit(f"variant {v!r}: only {', '.join(PER_SESSION)} settings vary per session, not {wrong}")
    engine = bench_engine("offline", base, "scripted")
    engine.ensure_turn_model()
    engine.llm.keep_cache = True  # as the engine runs: the system prompt's prefill stays cached
    audio = [load_wav(f)[0] for f in files]
    keys = ["spec_start_ns", "asr_final_ns", "turn_text_ns", "turn_end_ns", "llm_first_token_ns", "first_sentence_ns",
            "tts_first_audio_ns", "first_audio_out_ns"]
    v2v: dict[str, list[float]] = {v: [] for v in variants}
    stamps: dict[str, dict[str, list[float]]] = {v: {k: [] for k in keys} for v in variants}

    async def run() -> None:
        for _ in range(rounds):
            for v in variants:
                p = load_profile("offline", base + sets[v])
                engine.profile.turn, engine.profile.vad = p.turn, p.vad
                engine.profile.session, engine.profile.sentences = p.session, p.sentences
                for a in audio:
                    for t in await stream_file(engine, a):
                        if t.metrics.get("voice_to_voice_ms") is None:
                            continue
                        v2v[v].append(t.metrics["voice_to_voice_ms"])
                        st = t.metrics["stamps_ns"]
                        for k in keys:
                            if st.get(k) and st.get("speech_end_ns"):
                                stamps[v][k].append((st[k] - st["speech_end_ns"]) / 1e6)

    try:
        with cpu_load(busy):
            asyncio.run(run())
    finally:
        engine.close()
    for v in variants:
        d = dist(v2v[v])
        print(f"{v.partition('=')[0]:12s} {d['n']} turns: voice-to-voice p50 {d['p50']:.0f} ms, p95 {d['p95']:.0f}, "
              f"mean {statistics.mean(v2v[v]):.0f}")
        print("   " + ", ".join(f"{k[:-3]} {statistics.median(stamps[v][k]):.0f}" for k in keys if stamps[v][k]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["llm-output", "merge", "reading-row", "asr-prefix", "threads", "jemalloc",
                                     "paired"])
    ap.add_argument("--rounds", type=int, default=3, help="paired: rounds over all variants")
    ap.add_argument("--variant", action="append", default=[], help="paired: label=section.key=value;...")
    ap.add_argument("--set", action="append", default=[], help="paired: section.key=value for all variants")
    ap.add_argument("--cpu-load", type=int, default=0, help="paired: cores kept busy meanwhile")
    ap.add_argument("files", nargs="*", help="paired: WAV files")
    a = ap.parse_intermixed_args()
    if a.what == "paired":
        if len(a.variant) < 1 or not a.files:
            ap.error("paired needs --variant (one or more) and WAV files")
        paired(a.rounds, a.variant, a.files, a.set, a.cpu_load)
    else:
        {"llm-output": llm_output, "merge": merge, "reading-row": reading_row, "asr-prefix": asr_prefix,
         "threads": threads, "jemalloc": jemalloc}[a.what]()


if __name__ == "__main__":
    main()

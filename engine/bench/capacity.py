"""``s2s-engine bench capacity``: how many concurrent sessions one engine serves in time.

    s2s-engine bench capacity [--profile P] [--set k=v]... [--sessions 1,2,3,4] [--turns N]
                              [--bound-ms MS] [--stagger even|none] [--json OUT] [FILES...]

One engine is loaded (as ``s2s-engine --headless`` loads it) and, for each N of ``--sessions``,
N sessions run at once in this process, each a user who speaks the WAV files (default: the
bundled Telugu sample) ``--turns`` times: the audio is fed in 20 ms chunks paced in real time, as
a microphone would; after each utterance the user stays silent until the reply has been played
(the Session's own playback clock says ``listening`` again), then speaks again. With ``--stagger
even`` (default) session k starts k/N of one utterance later, so turns end at different moments as
they would with independent users; ``none`` starts them together (every turn ends at once: the
worst case).

For each N it reports, over every turn of every session:

- voice-to-voice p50 / p95 / max (the Session's metric: first reply audio out − end of speech, so
  it includes the end-of-turn silence wait and any time a turn waited for a model another session
  was using), and the time after the end-of-turn decision;
- turns that got no reply audio (an error, or nothing recognised), which count as failures;
- memory: the process's resident memory (RSS) with the engine loaded and idle (after the warm-up,
  before the first N), its peak while the N sessions run, and (peak − idle) / N as the memory per
  session (what earlier levels left allocated stays counted); on a GPU the same for CUDA memory used.

The largest N whose p95 stays within ``--bound-ms`` (default 1000) with every turn answered is
the capacity of this engine on this machine. The same command on a GPU pod gives sessions per GPU.

``--reply`` is as in ``bench latency`` (:class:`engine.bench.llm.BenchLLM`): ``scripted`` (default) runs
the model's own compute for the token count of a fixed four-sentence Telugu reply and hands on that
text, so every turn costs the same and has the same first sentence (a base model's own text may
have no sentence end for seconds, which would measure the model's prose, not the load);
``natural`` leaves the LLM as it is (up to ``llm.max_tokens``); ``N`` is N tokens of its own text.
Every model instance of ``llm.parallel`` keeps running at once (each gets its own wrapper), and
llama.cpp's prompt cache is kept, as in the engine: a turn prefills only what its prompt adds to the
instance's last one (``bench latency`` empties it before every call to compare like with like).

Sessions are in-process (no WebSocket): the wire adds little (``bench wire``), and the engine is
what saturates. Every time comes from :func:`engine.clock.now_ns`; memory from ``/proc`` (Linux;
None elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files as files_
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.audio import ENGINE_RATE, load_wav
from engine.bench.llm import BenchLLM
from engine.bench.stats import machine
from engine.cpu import rss_mib
from engine.errors import ConfigError, S2SError
from engine.stages.base import ChatMessage, LLMBackend

if TYPE_CHECKING:
    from engine.engine import Engine

CHUNK_MS = 20
DEFAULT_BOUND_MS = 1000.0
SCHEMA = "s2s.bench.capacity/1"


# --------------------------------------------------------------------------- fixed replies


class _Instance:
    """One model instance of a llama.cpp LLM, seen as a backend of its own (what BenchLLM wraps)."""

    def __init__(self, inner: LLMBackend, llama: Any):
        self.inner, self.llama = inner, llama
        self.options = getattr(inner, "options", None)
        self.context_size = inner.context_size
        probe = getattr(inner, "sentence_end_probability", None)  # the end-of-turn text signal
        if probe is not None:
            self.sentence_end_probability = probe
        use = getattr(inner, "use_threads", None)  # the session's thread count for a reply
        if use is not None:
            self.use_threads = use

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class _KeepingCache(BenchLLM):
    """BenchLLM that keeps llama.cpp's prompt cache, as the engine does (a conversation's next
    prompt extends the last one, so only the new part is prefilled); ``bench latency`` empties it
    to compare like with like, here the load should be the product's."""

    def stream(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
               threads: int | None = None) -> Iterator[str]:
        with self._lock:
            self._use_threads(threads)
            self._llama.set_seed(self.seed)
            self.last_tokens = 0
            yield from self._fixed(messages, cancel)

    def stream_turn(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
                    turn_end: Callable[[float | None], None], threads: int | None = None) -> Iterator[str]:
        """The end-of-turn probability first, on the same instance, as the engine's backend does
        (the reply reuses that prefill); then the fixed reply."""
        probe = getattr(self.inner, "sentence_end_probability", None)
        if probe is None:
            turn_end(None)
            yield from self.stream(messages, max_tokens, cancel, threads)
            return
        with self._lock:
            self._use_threads(threads)
            self._llama.set_seed(self.seed)
            self.last_tokens = 0
            turn_end(probe(self._llama, messages))
            yield from self._fixed(messages, cancel)


class FixedReplies(LLMBackend):
    """The engine's LLM with ``--reply`` applied to every model instance: a call takes a free
    instance (as the llama.cpp backend does), so ``llm.parallel`` calls still run at once."""

    name = "bench"

    def __init__(self, inner: LLMBackend, reply: str | int, seed: int):
        if reply == "natural":
            raise ConfigError("FixedReplies is for --reply scripted or N; natural needs no wrapper")
        self.inner, self.reply = inner, reply
        self.context_size = inner.context_size
        instances = list(getattr(inner, "_all", None) or [getattr(inner, "llama", None)])
        wrapped = [_KeepingCache(_Instance(inner, llama), reply, seed=seed)  # type: ignore[arg-type]
                   for llama in instances]
        self.reply_tokens = wrapped[0].reply_tokens
        self._free: queue.Queue = queue.Queue()
        for w in wrapped:
            self._free.put(w)

    def stream(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
               threads: int | None = None) -> Iterator[str]:
        one = self._free.get()  # blocks while every instance is generating, as the backend does
        try:
            yield from one.stream(messages, max_tokens, cancel, threads)
        finally:
            self._free.put(one)

    def stream_turn(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
                    turn_end: Callable[[float | None], None], threads: int | None = None) -> Iterator[str]:
        one = self._free.get()
        try:
            yield from one.stream_turn(messages, max_tokens, cancel, turn_end, threads)
        finally:
            self._free.put(one)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "bench_reply": self.reply, "bench_reply_tokens": self.reply_tokens}

    def setup(self) -> None:
        self.inner.setup()

    def close(self) -> None:
        self.inner.close()


def capacity_engine(profile: Any, reply: str | int) -> Engine:
    """Load the profile's engine; unless ``reply`` is ``natural``, its LLM gives fixed replies."""
    from engine.engine import Engine

    engine = Engine.load(profile)
    if reply == "natural":
        return engine
    try:
        engine.llm = FixedReplies(engine.llm, reply, seed=profile.llm.seed)
    except S2SError:
        engine.close()
        raise
    if engine.llm.reply_tokens is not None:
        profile.llm.max_tokens = engine.llm.reply_tokens  # the history budget matches the replies
    return engine


# --------------------------------------------------------------------------- memory


class MemorySampler:
    """Samples RSS and CUDA memory used every ``interval_s`` in a thread; keeps the peaks."""

    def __init__(self, engine: Engine, interval_s: float = 0.1):
        self.engine, self.interval_s = engine, interval_s
        self.peak_rss_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s2s-bench-memory", daemon=True)

    def sample(self) -> None:
        rss = rss_mib()
        if rss is not None:
            self.peak_rss_mb = max(rss, self.peak_rss_mb or 0.0)
        gpu = self.engine.gpu_memory().get("used_mb")  # cached 1 s; nvidia-smi at most once a second
        if gpu is not None:
            self.peak_gpu_mb = max(gpu, self.peak_gpu_mb or 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# --------------------------------------------------------------------------- one user


@dataclass
class UserResult:
    """What one concurrent session saw."""

    session: int
    turns: list[dict[str, Any]] = field(default_factory=list)  # TurnMetrics.to_dict() of answered turns
    spoken: int = 0  # utterances fed
    errors: list[str] = field(default_factory=list)


async def _feed(session: Any, samples: np.ndarray, clock: list[float]) -> None:
    """Push ``samples`` in 20 ms chunks at real-time pace (``clock[0]``: when the next chunk is due)."""
    loop = asyncio.get_running_loop()
    step = ENGINE_RATE * CHUNK_MS // 1000
    for start in range(0, len(samples), step):
        session.push_audio(samples[start: start + step])
        clock[0] += CHUNK_MS / 1000
        delay = clock[0] - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def run_user(engine: Engine, index: int, utterances: list[np.ndarray], turns: int, delay_s: float,
                   limit_s: float) -> UserResult:
    """One user: ``turns`` rounds over ``utterances``, waiting for each reply to be played."""
    from engine.events import ErrorEvent, TurnMetricsEvent

    result = UserResult(index)
    await asyncio.sleep(delay_s)
    session = engine.new_session(f"cap_{index}")
    await session.start()

    async def collect() -> None:
        async for ev in session.stream():
            if isinstance(ev, TurnMetricsEvent):
                result.turns.append(ev.metrics.to_dict())
            elif isinstance(ev, ErrorEvent):
                result.errors.append(f"{ev.stage or 'engine'}: {ev.message}")

    collector = asyncio.create_task(collect(), name=f"cap_{index}-collect")
    loop = asyncio.get_running_loop()
    clock = [loop.time()]
    gap = np.zeros(ENGINE_RATE * CHUNK_MS // 1000, np.float32)
    eot_s = engine.profile.vad.end_of_turn_silence_ms / 1000
    try:
        for _ in range(turns):
            for audio in utterances:
                await _feed(session, audio, clock)
                result.spoken += 1
                # silence while the turn ends and the reply "plays" (the session's playback clock)
                waited = 0.0
                while waited < eot_s + 0.3 or session.busy or session.state != "listening":
                    await _feed(session, gap, clock)
                    waited += CHUNK_MS / 1000
                    if waited > limit_s:
                        result.errors.append(f"turn {result.spoken}: no answer within {limit_s:g} s")
                        break
    finally:
        await session.close()
        await collector
    return result


# --------------------------------------------------------------------------- a run


def _percentile(values: list[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(np.asarray(values, float), q)), 1)


def _dist(values: list[float | None]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None]
    return {"n": len(vals), "p50": _percentile(vals, 50), "p95": _percentile(vals, 95),
            "max": round(max(vals), 1) if vals else None}


async def idle_memory(engine: Engine) -> tuple[float | None, float | None]:
    """(RSS MB, CUDA MB used) now: the baseline the sessions' memory is counted from."""
    await asyncio.to_thread(engine.gpu_memory)  # a fresh reading (nvidia-smi may run) off the loop
    return rss_mib(), engine.gpu_memory_cached().get("used_mb")


async def run_level(engine: Engine, n: int, utterances: list[np.ndarray], turns: int, stagger: str,
                    limit_s: float, baseline: tuple[float | None, float | None] | None = None) -> dict[str, Any]:
    """N sessions at once; the figures of one row. Memory per session is (peak − ``baseline``) / N,
    ``baseline`` being the memory of the loaded, idle engine (default: now). Memory that earlier
    sessions left allocated (allocators keep freed memory) so stays counted, as it is in production."""
    period = sum(len(u) for u in utterances) / ENGINE_RATE
    idle_rss, idle_gpu = baseline if baseline is not None else await idle_memory(engine)
    with MemorySampler(engine) as mem:
        users = await asyncio.gather(*(
            run_user(engine, k, utterances, turns, delay_s=(k * period / n if stagger == "even" else 0.0),
                     limit_s=limit_s)
            for k in range(n)))
    rows = [t for u in users for t in u.turns]
    spoken = sum(u.spoken for u in users)
    answered = [t for t in rows if t.get("voice_to_voice_ms") is not None and not t.get("interrupted")]

    def per_session(peak: float | None, idle: float | None) -> float | None:
        return None if peak is None or idle is None else round(max(0.0, peak - idle) / n, 1)

    return {
        "sessions": n,
        "utterances": spoken,
        "answered": len(answered),
        "unanswered": max(0, spoken - len(answered)),  # run_capacity counts it per turn, not per file
        "interrupted": sum(1 for t in rows if t.get("interrupted")),
        "errors": [e for u in users for e in u.errors][:20],
        "voice_to_voice_ms": _dist([t.get("voice_to_voice_ms") for t in answered]),
        "after_eot_ms": _dist([None if t.get("voice_to_voice_ms") is None or t.get("eot_wait_ms") is None
                               else t["voice_to_voice_ms"] - t["eot_wait_ms"] for t in answered]),
        "stages_ms": {k: _dist([t.get(k) for t in answered])
                      for k in ("eot_wait_ms", "asr_ms", "llm_first_token_ms", "first_sentence_ms", "tts_ms")},
        "memory": {
            "rss_idle_mb": None if idle_rss is None else round(idle_rss, 1),
            "rss_peak_mb": None if mem.peak_rss_mb is None else round(mem.peak_rss_mb, 1),
            "rss_per_session_mb": per_session(mem.peak_rss_mb, idle_rss),
            "gpu_idle_mb": idle_gpu,
            "gpu_peak_mb": mem.peak_gpu_mb,
            "gpu_per_session_mb": per_session(mem.peak_gpu_mb, idle_gpu),
        },
    }


def judge(rows: list[dict[str, Any]], bound_ms: float) -> int:
    """Mark each row ``within_bound`` (every turn answered, voice-to-voice p95 ≤ ``bound_ms``) and
    return the capacity: the largest N that kept the bound, as did every smaller N measured (0: none)."""
    capacity, broken = 0, False
    for r in sorted(rows, key=lambda r: r["sessions"]):
        p95 = r["voice_to_voice_ms"]["p95"]
        r["within_bound"] = r["unanswered"] == 0 and p95 is not None and p95 <= bound_ms
        if not r["within_bound"]:
            broken = True
        elif not broken:
            capacity = r["sessions"]
    return capacity


def load_utterances(files: list[str]) -> list[np.ndarray]:
    out = []
    for f in files:
        audio, _info = load_wav(f)
        out.append(audio)
    return out


async def run_capacity(engine: Engine, files: list[str], levels: list[int], turns: int = 3,
                       bound_ms: float = DEFAULT_BOUND_MS, stagger: str = "even", warmup: bool = True,
                       limit_s: float = 60.0, progress: Any = None) -> dict[str, Any]:
    """Every level of ``levels`` in turn; the JSON report (``progress(row)`` after each level)."""
    if not levels or min(levels) < 1:
        raise ConfigError("--sessions needs one or more counts of at least 1, e.g. 1,2,3,4")
    if turns < 1:
        raise ConfigError("--turns must be at least 1")
    if stagger not in ("even", "none"):
        raise ConfigError(f"--stagger must be even or none, got {stagger!r}")
    utterances = load_utterances(files)
    per_round = len(utterances)  # answered turns per round over the files (a file may hold several)
    if warmup:  # first calls of each model (allocations, caches) stay out of the figures
        per_round = max(1, (await run_level(engine, 1, utterances, 1, "none", limit_s))["answered"])
    baseline = await idle_memory(engine)
    rows = []
    for n in levels:
        row = await run_level(engine, n, utterances, turns, stagger, limit_s, baseline)
        row["unanswered"] = max(0, per_round * turns * n - row["answered"])
        rows.append(row)
        if progress is not None:
            progress(row)
    capacity = judge(rows, bound_ms)

    return {
        "schema": SCHEMA,
        "machine": {**machine(), "load_avg": _load_avg()},
        "profile": engine.profile.name,
        "engine": engine.describe(),
        "options": {"files": files, "sessions": levels, "turns": turns, "bound_ms": bound_ms,
                    "reply": getattr(engine.llm, "reply", "natural"),
                    "reply_tokens": getattr(engine.llm, "reply_tokens", None),
                    "stagger": stagger, "chunk_ms": CHUNK_MS, "max_tokens": engine.profile.llm.max_tokens,
                    "end_of_turn_silence_ms": engine.profile.vad.end_of_turn_silence_ms},
        "levels": rows,
        "capacity": capacity,
    }


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- CLI


def render(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    o = report["options"]
    gpu = any(r["memory"]["gpu_per_session_mb"] is not None for r in report["levels"])
    table = Table(title=f"capacity, profile {report['profile']!r} ({o['turns']} round(s) per session, "
                        f"stagger {o['stagger']}, reply {o.get('reply')}); voice-to-voice (v2v) in ms, "
                        f"bound: p95 ≤ {o['bound_ms']:g}")
    cols = ["N", "turns", "missed", "v2v p50", "v2v p95", "v2v max", "RSS MB", "MB/sess"]
    for col in [*cols, *(["GPU MB/sess"] if gpu else []), "in bound"]:
        table.add_column(col, justify="right")

    def f(v: float | None, nd: int = 0) -> str:
        return "—" if v is None else f"{v:.{nd}f}"

    for r in report["levels"]:
        v, m = r["voice_to_voice_ms"], r["memory"]
        cells = [str(r["sessions"]), str(r["answered"]), str(r["unanswered"]), f(v["p50"]), f(v["p95"]),
                 f(v["max"]), f(m["rss_peak_mb"]), f(m["rss_per_session_mb"], 1)]
        if gpu:
            cells.append(f(m["gpu_per_session_mb"], 1))
        table.add_row(*cells, "[green]yes[/]" if r["within_bound"] else "[red]no[/]")
    console.print(table)
    mach = report["machine"]
    idle = report["levels"][0]["memory"]["rss_idle_mb"] if report["levels"] else None
    console.print(f"RSS with the engine loaded and idle: {f(idle)} MB; MB/sess = (peak − idle) / N")
    console.print(f"capacity: [bold]{report['capacity']}[/] concurrent session(s) with v2v p95 ≤ {o['bound_ms']:g} ms "
                  f"and every turn answered ({mach.get('cpu')}, {mach.get('cores')} cores, "
                  f"GPU {mach.get('gpu') or 'none'}; load average {mach.get('load_avg')})")
    for r in report["levels"]:
        for e in r["errors"][:3]:
            console.print(f"[yellow]  N={r['sessions']}: {e}[/]")


def _levels(value: str) -> list[int]:
    try:
        levels = [int(x) for x in value.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError("expected session counts separated by commas, e.g. 1,2,3,4") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("every session count must be at least 1")
    return sorted(set(levels))


def _reply(value: str) -> str | int:
    if value in ("scripted", "natural"):
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError("expected scripted, natural or a token count of at least 1")


def register(bench_subparsers: Any, common: Any) -> None:
    """Add ``capacity`` to ``s2s-engine bench`` (``common`` adds --profile/--set/--json)."""
    cp = bench_subparsers.add_parser("capacity", help="N concurrent sessions paced in real time: "
                                                      "voice-to-voice p50/p95 and memory per session")
    cp.add_argument("files", nargs="*", help="WAV files each user speaks in turn (default: the bundled Telugu sample)")
    cp.add_argument("--sessions", type=_levels, default=[1, 2, 3, 4], metavar="N,N,...",
                    help="concurrent session counts to measure (default 1,2,3,4)")
    cp.add_argument("--turns", type=int, default=3, help="rounds over the files per session (default 3)")
    cp.add_argument("--bound-ms", type=float, default=DEFAULT_BOUND_MS,
                    help=f"voice-to-voice p95 bound for the capacity figure (default {DEFAULT_BOUND_MS:g})")
    cp.add_argument("--reply", type=_reply, default="scripted", metavar="MODE",
                    help="scripted (default: a fixed 4-sentence reply over the model's own compute), natural, "
                         "or N tokens (as for bench latency)")
    cp.add_argument("--stagger", choices=("even", "none"), default="even",
                    help="even (default): session k starts k/N of an utterance later; none: all at once")
    cp.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the one-turn warm-up")
    common(cp)
    cp.set_defaults(func=cmd_capacity)


def cmd_capacity(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.config import load_profile

    console = Console(highlight=False)
    files = args.files or [str(files_("engine") / "assets" / "sample_te.wav")]
    profile = load_profile(args.profile, args.set)
    console.print(f"[dim]loading profile {profile.name!r} ...[/]")
    engine = capacity_engine(profile, args.reply)

    def progress(row: dict[str, Any]) -> None:
        v = row["voice_to_voice_ms"]
        console.print(f"[dim]  N={row['sessions']}: {row['answered']}/{row['utterances']} answered, "
                      f"voice-to-voice p50 {v['p50']} / p95 {v['p95']} ms, load {_load_avg()}[/]")

    try:
        report = asyncio.run(run_capacity(engine, files, args.sessions, args.turns, args.bound_ms, args.stagger,
                                          warmup=args.warmup, progress=progress))
    finally:
        engine.close()
    render(report, console)
    if args.json_path:
        path = Path(args.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"report: {path}")
    return 0


__all__ = ["FixedReplies", "MemorySampler", "UserResult", "capacity_engine", "judge", "register",
           "run_capacity", "run_level", "run_user"]

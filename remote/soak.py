"""``s2s-engine bench soak``: many users, for a long time, against a headless engine, watched from outside.

    s2s-engine bench soak [--sessions N] [--minutes T] [--url ws://... [--pid PID]]
                          [--profile P] [--set k=v]... [--max-sessions M] [--server-env K=V]...
                          [--wavs FILE_OR_DIR ...] [--kill-share F] [--hostile-share F] [--stall-share F]
                          [--stall-s S] [--sample-s S] [--warmup-min W] [--window-min W]
                          [--json OUT] [--plot OUT.svg] [--seed N]

**The server.** Without ``--url`` the command starts ``s2s-engine --headless`` as a subprocess on
127.0.0.1 (a port the OS picks; ``--max-sessions`` default N + 2 so a reconnect never waits for
the close of the client's previous connection), with its stderr captured to a log file, and stops it
with SIGTERM at the end. ``--server-env MALLOC_ARENA_MAX=2`` sets its environment (allocator
experiments). With ``--url`` it soaks a server that is already running; memory, fds and threads
are then sampled only if ``--pid`` names its process on this machine, and server errors are not
counted (there is no log to read).

**The clients.** ``--sessions`` users run at once, each in a loop until ``--minutes`` are over:
connect; one or two turns (``--turns-max``); disconnect. A turn is the audio of one WAV (default the bundled
``engine/assets/sample_te.wav``; ``--wavs`` files or folders, e.g. those of ``s2s-engine bench
make-wavs``) as 20 ms ``input_audio_buffer.append`` messages paced in real time, then silence
(20 ms appends) until the reply's first audio (server VAD ends the turn), then wait for
``response.done``, then listen while the reply "plays" (its audio length) before the next turn.
Voice-to-voice is measured by the client's clock: from the moment the last chunk holding speech was
sent (the end of the user's speech in the WAV, found by energy) to the arrival of the first
``response.output_audio.delta``. Each new connection takes the next role of a deck shared by all
clients (:class:`RoleDeck`: smooth weighted round-robin, so the shares hold exactly, not by luck):

- ``kill`` (``--kill-share``, default 0.15): at the first reply audio, the socket is aborted (no
  close frame): a phone that lost its network mid-reply.
- ``hostile`` (``--hostile-share``, default 0.15): before its turn, a burst of bad messages: not
  JSON, an unknown ``type``, a wrong field type, invalid base64, audio of an odd byte count, a
  message over the server's ``max_message_bytes`` (from ``/healthz``); each must get a Realtime
  ``error`` event, and the turn after it must still complete.
- ``stall`` (``--stall-share``, default 0.1): at the first reply audio, the client stops reading
  its socket (``transport.pause_reading()``: no WebSocket pongs either) for ``--stall-s`` (default
  45 s, past the server's 20 s + 20 s keepalive); the server may cut it (close 1011) or the
  turn may finish; either way the server must not be harmed.
- otherwise ``normal``.

**Sampling.** Every ``--sample-s`` (default 30) the server process is read from ``/proc``: RSS
(``VmRSS``; the verdict and the plot use the process's own, the report also has it with any child
processes, e.g. a running espeak-ng), open fds, threads, and ``/proc/loadavg`` (the
machine's load, since other work on it moves the latency); ``/readyz`` gives the session counts;
the log gives ERROR lines and tracebacks so far; plus the voice-to-voice p50/p95 of the turns
that ended since the previous sample.

**Verdict** (:func:`verdict`, bounds in :class:`Bounds`): after ``--warmup-min`` (5) minutes the RSS
stays within 3 % of its value then; fds and threads stay within 2 of the most seen during the
warm-up (the same load, so the same sockets and pool threads); no ERROR line or traceback in the
server's log and the server still up; the voice-to-voice p50 of every ``--window-min`` (5) window
at most 10 % above that of the first window (a faster later window is no regression; a window with
under 5 turns is not judged). The exit code is 1 when it fails.

**Output**: a one-screen live view (rich: progress bar and the latest sample), the JSON
(``--json``, schema ``s2s.bench.soak/1``) and a plot of memory and latency over time (``--plot``,
SVG drawn by :mod:`remote.soak_plot`; no plotting library is needed).

The clients speak the wire as plain JSON over :mod:`websockets`, not through :mod:`remote.protocol`:
what is soaked is the server as any Realtime client sees it. Every client time comes from one
monotonic clock (``time.perf_counter_ns``, :func:`engine.clock.now_ns`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib.resources import files as files_
from pathlib import Path
from typing import Any

import numpy as np

from engine.bench_stats import machine
from engine.clock import ms, now_ns
from engine.errors import ConfigError, S2SError

SCHEMA = "s2s.bench.soak/1"
RATE = 24_000  # audio/pcm on the wire: 24 kHz PCM16 mono
CHUNK = RATE // 50  # 20 ms appends
ROLES = ("normal", "kill", "hostile", "stall")


# --------------------------------------------------------------------------- options and bounds


@dataclass
class Bounds:
    """What a healthy soak looks like.

    Attributes:
        warmup_s: the RSS (and the fd/thread baseline) is judged after this long.
        rss_pct: after the warm-up, every RSS sample within this % of the first one after it.
        flat_slack: fds and threads after the warm-up at most this many above the warm-up's most.
        window_s: voice-to-voice p50 is compared per window of this length.
        latency_pct: each window's p50 at most this % above the first window's.
        min_turns: a window with fewer turns is not judged.
    """

    warmup_s: float = 300.0
    rss_pct: float = 3.0
    flat_slack: int = 2
    window_s: float = 300.0
    latency_pct: float = 10.0
    min_turns: int = 5


@dataclass
class SoakOptions:
    """One soak.

    Attributes:
        sessions: concurrent users. minutes: how long (real time).
        kill_share, hostile_share, stall_share: the share of connections in each role.
        stall_s: how long a ``stall`` client stops reading. sample_s: seconds between samples.
        turns_max: a connection holds 1..turns_max turns. seed: the role/turn draws.
    """

    sessions: int = 3
    minutes: float = 10.0
    kill_share: float = 0.15
    hostile_share: float = 0.15
    stall_share: float = 0.1
    stall_s: float = 45.0
    sample_s: float = 30.0
    turns_max: int = 2
    seed: int = 0

    def check(self) -> None:
        if self.sessions < 1:
            raise ConfigError("--sessions must be at least 1")
        if self.minutes <= 0 or self.sample_s <= 0:
            raise ConfigError("--minutes and --sample-s must be positive")
        shares = (self.kill_share, self.hostile_share, self.stall_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ConfigError("--kill-share, --hostile-share and --stall-share must be >= 0 and sum to at most 1")


# --------------------------------------------------------------------------- audio


@dataclass
class Utterance:
    """A turn's audio as the wire carries it: PCM16 bytes in 20 ms chunks, and the end of speech."""

    name: str
    chunks: list[bytes]
    speech_end_chunk: int  # index of the last chunk holding speech

    @property
    def seconds(self) -> float:
        return len(self.chunks) * CHUNK / RATE


def speech_end(audio: np.ndarray, rate: int = RATE, threshold_db: float = -35.0) -> int:
    """The sample index where speech ends: the end of the last 20 ms frame within ``threshold_db``
    of the loudest frame (the WAV's own tail of silence is not speech)."""
    n = rate // 50
    frames = len(audio) // n
    if frames == 0:
        return len(audio)
    rms = np.sqrt(np.mean(audio[: frames * n].reshape(frames, n).astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > threshold_db)[0]
    return int((loud[-1] + 1) * n) if len(loud) else len(audio)


def load_utterances(paths: list[str]) -> list[Utterance]:
    """WAV files (or folders of them) as :class:`Utterance`; default the bundled Telugu sample."""
    from engine.audio import load_wav

    files: list[Path] = []
    for s in paths or [str(files_("engine") / "assets" / "sample_te.wav")]:
        path = Path(s)
        files.extend(sorted(path.glob("*.wav")) if path.is_dir() else [path])
    if not files:
        raise ConfigError(f"no .wav files in {paths}")
    out = []
    for f in files:
        audio, _ = load_wav(f, RATE)
        end = speech_end(audio)
        pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
        pad = (-len(pcm)) % CHUNK
        pcm = np.concatenate([pcm, np.zeros(pad, "<i2")])
        out.append(Utterance(f.name, [pcm[i:i + CHUNK].tobytes() for i in range(0, len(pcm), CHUNK)],
                             max(0, (end - 1) // CHUNK)))
    return out


SILENCE = base64.b64encode(bytes(CHUNK * 2)).decode()


def hostile_messages(max_message_bytes: int) -> list[tuple[str, str]]:
    """(what, raw text) of bad client messages; each must get one Realtime ``error`` back."""
    big = "A" * (max_message_bytes + 1024)
    return [
        ("not JSON", "{this is not json"),
        ("unknown type", json.dumps({"type": "no.such.event"})),
        ("no type", json.dumps({"audio": "AAAA"})),
        ("audio of the wrong type", json.dumps({"type": "input_audio_buffer.append", "audio": 12345})),
        ("invalid base64", json.dumps({"type": "input_audio_buffer.append", "audio": "!!not base64!!"})),
        ("odd PCM byte count", json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"})),
        ("session of the wrong type", json.dumps({"type": "session.update", "session": "fast please"})),
        ("over max_message_bytes", json.dumps({"type": "input_audio_buffer.append", "audio": big})),
    ]


# --------------------------------------------------------------------------- results


@dataclass
class Turn:
    """One turn as a client saw it (``t_s`` from the start of the soak, when it ended)."""

    role: str
    t_s: float
    ok: bool
    v2v_ms: float | None = None
    error: str | None = None


@dataclass
class Tally:
    """What the clients did, over the whole soak."""

    connections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    turns: list[Turn] = field(default_factory=list)
    hostile_sent: int = 0
    hostile_errors: int = 0
    hostile_unanswered: list[str] = field(default_factory=list)
    killed: int = 0
    stalled: int = 0
    stall_cut_by_server: int = 0
    refused: int = 0
    connect_failures: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        done = [t for t in self.turns if t.ok]
        return {
            "connections": dict(self.connections),
            "turns_completed": len(done),
            "turns_failed": len(self.turns) - len(done),
            "turns_by_role": {r: sum(1 for t in done if t.role == r) for r in ROLES},
            "v2v_ms": _dist([t.v2v_ms for t in done]),
            "hostile": {"sent": self.hostile_sent, "errors_received": self.hostile_errors,
                        "unanswered": self.hostile_unanswered[:20]},
            "killed_mid_reply": self.killed,
            "stalled": self.stalled, "stall_cut_by_server": self.stall_cut_by_server,
            "refused_full": self.refused, "connect_failures": self.connect_failures,
            "failures": self.failures[:50],
        }


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _dist(values: list[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    return {"n": len(v), "p50": _pct(v, 50), "p95": _pct(v, 95), "max": round(max(v), 1) if v else None}


# --------------------------------------------------------------------------- one client


class RoleDeck:
    """The role of each new connection, shared by all clients: smooth weighted round-robin, so the
    shares hold exactly over any stretch of connections (every role within the first few when its
    share is large enough), with no luck of the draw in a short soak."""

    def __init__(self, opts: SoakOptions):
        self.shares = {"kill": opts.kill_share, "hostile": opts.hostile_share, "stall": opts.stall_share}
        self.shares["normal"] = max(0.0, 1.0 - sum(self.shares.values()))
        self.credit = dict.fromkeys(self.shares, 0.0)

    def next(self) -> str:
        for r, share in self.shares.items():
            self.credit[r] += share
        role = max(self.credit, key=lambda r: self.credit[r])  # ties: the order of ROLES above
        self.credit[role] -= 1.0
        return role


class _Closed(Exception):
    """The server closed the connection (or it broke)."""


class Client:
    """One user: connects, speaks, listens, in a loop (see the module docstring for the roles)."""

    def __init__(self, index: int, url: str, utterances: list[Utterance], opts: SoakOptions, tally: Tally,
                 t0_ns: int, deadline: float, max_message_bytes: int, deck: RoleDeck,
                 headers: dict[str, str] | None = None):
        self.index, self.url, self.utterances, self.opts, self.tally = index, url, utterances, opts, tally
        self.t0_ns, self.deadline, self.max_message_bytes = t0_ns, deadline, max_message_bytes
        self.headers, self.deck = headers or {}, deck
        self.rng = random.Random(opts.seed * 1000 + index)

    def _role(self) -> str:
        return self.deck.next()

    def _elapsed_s(self) -> float:
        return (now_ns() - self.t0_ns) / 1e9

    async def run(self) -> None:
        # users start spread over one utterance, so their turns do not all end at once
        await asyncio.sleep(self.index * self.utterances[0].seconds / max(1, self.opts.sessions))
        while time.monotonic() < self.deadline:
            role = self._role()
            try:
                await self.connection(role)
            except Exception as exc:  # noqa: BLE001 - one client's trouble is recorded, the soak goes on
                self.tally.failures.append(f"client {self.index} ({role}): {type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def connection(self, role: str) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        try:
            ws = await connect(self.url, additional_headers=self.headers, max_size=None,
                               ping_interval=None, open_timeout=30)
        except (OSError, InvalidStatus, TimeoutError) as exc:
            self.tally.connect_failures += 1
            self.tally.failures.append(f"client {self.index}: connect: {type(exc).__name__}: {exc}")
            await asyncio.sleep(2.0)
            return
        self.tally.connections[role] += 1
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def reader() -> None:
            try:
                async for msg in ws:
                    events.put_nowait(json.loads(msg))
            except ConnectionClosed:
                pass
            finally:
                events.put_nowait(None)

        read = asyncio.create_task(reader())
        try:
            first = await self._next(events, 30)
            if first.get("type") == "error" and first["error"].get("code") == "session_limit_reached":
                self.tally.refused += 1
                await asyncio.sleep(1.0)
                return
            if first.get("type") != "session.created":
                raise S2SError(f"expected session.created, got {first.get('type')}")
            turns = self.rng.randint(1, max(1, self.opts.turns_max))
            if role == "hostile":
                await self._hostile(ws, events)
            for k in range(turns):
                if time.monotonic() >= self.deadline:
                    break
                if not await self._turn(ws, events, role, self.utterances[self.rng.randrange(len(self.utterances))]):
                    return
                if k + 1 < turns:
                    await asyncio.sleep(0.5)
        except _Closed:
            if role != "stall":
                self.tally.failures.append(f"client {self.index} ({role}): the server closed the connection")
        finally:
            if role != "kill" or ws.transport is not None and not ws.transport.is_closing():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 10)
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read

    @staticmethod
    async def _next(events: asyncio.Queue, limit_s: float) -> dict[str, Any]:
        e = await asyncio.wait_for(events.get(), limit_s)
        if e is None:
            raise _Closed
        return e

    async def _hostile(self, ws: Any, events: asyncio.Queue) -> None:
        for what, raw in hostile_messages(self.max_message_bytes):
            self.tally.hostile_sent += 1
            await ws.send(raw)
            try:
                async with asyncio.timeout(15):  # other events (s2s.stats) may come meanwhile
                    while (await self._next(events, 15)).get("type") != "error":
                        pass
                self.tally.hostile_errors += 1
            except TimeoutError:
                self.tally.hostile_unanswered.append(what)

    async def _turn(self, ws: Any, events: asyncio.Queue, role: str, utt: Utterance) -> bool:
        """One spoken turn; False when the connection is over (killed, cut, or closed)."""
        first_audio = asyncio.Event()
        speech_end_ns = 0

        async def speak() -> None:
            nonlocal speech_end_ns
            start = time.monotonic()
            for i, chunk in enumerate(utt.chunks):
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(chunk).decode()}))
                if i == utt.speech_end_chunk:
                    speech_end_ns = now_ns()
                await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
            start, i = time.monotonic(), 0
            while not first_audio.is_set() and i < 500:  # silence, as a microphone sends, up to 10 s
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": SILENCE}))
                i += 1
                await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))

        sender = asyncio.create_task(speak())
        v2v: float | None = None
        error: str | None = None
        first_ns = 0
        audio_s = 0.0
        try:
            async with asyncio.timeout(180):
                while True:
                    e = await self._next(events, 180)
                    kind = e.get("type")
                    if kind == "response.output_audio.delta":
                        audio_s += len(e.get("delta", "")) * 3 / 4 / 2 / RATE
                        if not first_ns:
                            first_ns = now_ns()
                            first_audio.set()
                            v2v = ms(speech_end_ns, first_ns) if speech_end_ns else None
                            if role == "kill":
                                ws.transport.abort()  # no close frame: the network is gone
                                self.tally.killed += 1
                                self._record(role, True, v2v)
                                return False
                            if role == "stall":
                                await self._stall(ws)
                    elif kind == "response.done":
                        status = (e.get("response") or {}).get("status")
                        why = error or (None if first_ns else f"response.done {status} without audio")
                        self._record(role, status == "completed" and why is None, v2v, why)
                        break
                    elif kind == "error":  # the turn goes on; it counts as failed
                        error = f"error {e['error'].get('code')}: {e['error'].get('message')}"
        except _Closed:
            if role == "stall":
                self.tally.stall_cut_by_server += 1
                return False
            raise
        except TimeoutError:
            self._record(role, False, v2v, "no response.done within 180 s")
            return False
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        # listen while the reply plays (the server assumes real-time playback from its first audio)
        await asyncio.sleep(max(0.0, audio_s - (now_ns() - first_ns) / 1e9) + 0.3)
        return True

    async def _stall(self, ws: Any) -> None:
        self.tally.stalled += 1
        ws.transport.pause_reading()
        try:
            await asyncio.sleep(self.opts.stall_s)
        finally:
            if not ws.transport.is_closing():
                ws.transport.resume_reading()

    def _record(self, role: str, ok: bool, v2v: float | None, error: str | None = None) -> None:
        self.tally.turns.append(Turn(role, round(self._elapsed_s(), 2), ok, v2v, error))
        if error and not ok:
            self.tally.failures.append(f"client {self.index} ({role}): {error}")


# --------------------------------------------------------------------------- the server, from outside


def read_proc(pid: int) -> dict[str, Any]:
    """RSS (MiB, the process plus its children), open fds and threads of ``pid`` (Linux ``/proc``)."""

    def status(p: int) -> dict[str, str]:
        out = {}
        with open(f"/proc/{p}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    s = status(pid)
    rss_kb = int(s["VmRSS"].split()[0])
    children = _descendants(pid)
    child_kb = 0
    for c in children:
        with contextlib.suppress(OSError, KeyError, ValueError):
            child_kb += int(status(c)["VmRSS"].split()[0])
    return {"rss_mib": round(rss_kb / 1024, 1), "rss_tree_mib": round((rss_kb + child_kb) / 1024, 1),
            "children": len(children), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(s["Threads"])}


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
        out.extend(kids)
        todo.extend(kids)
    return out


def load_avg() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def count_log_errors(path: Path | None) -> dict[str, int] | None:
    """ERROR log lines and tracebacks in the server's captured stderr."""
    if path is None or not path.exists():
        return None
    text = path.read_text(errors="replace")
    return {"error_lines": len(re.findall(r"^\S+ \S+ (?:ERROR|CRITICAL) ", text, re.M)),
            "tracebacks": text.count("Traceback (most recent call last)")}


def http_json(base: str, path: str, headers: dict[str, str] | None = None, timeout: float = 5) -> dict[str, Any] | None:
    """GET ``base + path`` and its JSON (also from a 503), or None."""
    req = urllib.request.Request(base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own http://127.0.0.1 URL
            return json.loads(r.read())
    except urllib.error.HTTPError as err:
        with contextlib.suppress(Exception):
            return json.loads(err.read())
    except Exception:  # noqa: BLE001 - an unreachable server is a sample of its own
        return None
    return None


class Headless:
    """``s2s-engine --headless`` as a subprocess on 127.0.0.1, its stderr in ``log``."""

    def __init__(self, profile: str | None, sets: list[str], max_sessions: int, log: Path, env: dict[str, str]):
        self.log = log
        cmd = [sys.executable, "-m", "remote.cli", "--headless", "--host", "127.0.0.1", "--port", "0",
               "--max-sessions", str(max_sessions), "--no-web"]
        if profile:
            cmd += ["--profile", profile]
        for s in sets:
            cmd += ["--set", s]
        self.cmd = cmd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, limit_s: float = 300) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[1]
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=f, cwd=root, env=self.env)
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            m = re.search(r"serving (ws://127\.0\.0\.1:\d+/v1/realtime)", self.log.read_text(errors="replace"))
            if m:
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise S2SError(f"the headless engine exited ({self.proc.returncode}): "
                               f"{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        self.stop()
        raise S2SError(f"the headless engine did not start within {limit_s:.0f} s (log: {self.log})")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, limit_s: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(limit_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def http_base(url: str) -> str:
    return "http" + url.removeprefix("ws").split("/v1/", 1)[0]


class Sampler:
    """A sample of the server every ``sample_s``: /proc, /readyz, the log, the clients' latency."""

    def __init__(self, base: str, pid: int | None, log: Path | None, tally: Tally, t0_ns: int,
                 headers: dict[str, str] | None = None):
        self.base, self.pid, self.log, self.tally, self.t0_ns = base, pid, log, tally, t0_ns
        self.headers = headers or {}
        self.samples: list[dict[str, Any]] = []
        self._seen_turns = 0

    def sample(self) -> dict[str, Any]:
        t = (now_ns() - self.t0_ns) / 1e9
        row: dict[str, Any] = {"t_s": round(t, 1), "rss_mib": None, "rss_tree_mib": None, "fds": None,
                               "threads": None, "children": None}
        if self.pid is not None:
            with contextlib.suppress(OSError, KeyError, ValueError):
                row.update(read_proc(self.pid))
        ready = http_json(self.base, "/readyz", self.headers)
        row["server_up"] = ready is not None
        row["sessions"] = (ready or {}).get("sessions")
        row["load_avg"] = load_avg()
        errs = count_log_errors(self.log)
        row["server_error_lines"] = None if errs is None else errs["error_lines"]
        row["server_tracebacks"] = None if errs is None else errs["tracebacks"]
        new = self.tally.turns[self._seen_turns:]
        self._seen_turns = len(self.tally.turns)
        v = [x.v2v_ms for x in new if x.ok and x.v2v_ms is not None]
        row.update({"turns": len(new), "turns_failed": sum(1 for x in new if not x.ok),
                    "v2v_p50_ms": _pct(v, 50), "v2v_p95_ms": _pct(v, 95)})
        self.samples.append(row)
        return row


# --------------------------------------------------------------------------- the verdict


def latency_windows(turns: list[dict[str, Any]], window_s: float) -> list[dict[str, Any]]:
    """Voice-to-voice p50/p95 of the completed turns per ``window_s`` window (by when they ended)."""
    if not turns:
        return []
    last = max(t["t_s"] for t in turns)
    out = []
    for k in range(int(last // window_s) + 1):
        v = [t["v2v_ms"] for t in turns if t["ok"] and t["v2v_ms"] is not None
             and k * window_s <= t["t_s"] < (k + 1) * window_s]
        out.append({"from_s": k * window_s, "to_s": (k + 1) * window_s, "turns": len(v),
                    "p50_ms": _pct(v, 50), "p95_ms": _pct(v, 95)})
    return out


def verdict(samples: list[dict[str, Any]], turns: list[dict[str, Any]], bounds: Bounds) -> dict[str, Any]:
    """Judge a soak: each check is ``{"ok": bool | None, ...figures}`` (None: not enough data to
    judge, which does not fail the soak); ``ok`` overall is False when any check is False."""
    checks: dict[str, dict[str, Any]] = {}
    warm = [s for s in samples if s["t_s"] < bounds.warmup_s]
    after = [s for s in samples if s["t_s"] >= bounds.warmup_s]

    rss = [s for s in after if s.get("rss_mib") is not None]
    if len(rss) >= 2:
        base = rss[0]["rss_mib"]
        lo, hi = min(s["rss_mib"] for s in rss), max(s["rss_mib"] for s in rss)
        drift = max(hi - base, base - lo) / base * 100
        checks["rss"] = {"ok": drift <= bounds.rss_pct, "after_warmup_mib": base, "min_mib": lo, "max_mib": hi,
                         "last_mib": rss[-1]["rss_mib"], "drift_pct": round(drift, 2), "bound_pct": bounds.rss_pct}
    else:
        checks["rss"] = {"ok": None, "why": "fewer than 2 RSS samples after the warm-up"}

    for key in ("fds", "threads"):
        w = [s[key] for s in warm if s.get(key) is not None]
        a = [s[key] for s in after if s.get(key) is not None]
        if w and a:
            checks[key] = {"ok": max(a) <= max(w) + bounds.flat_slack, "warmup_max": max(w), "after_max": max(a),
                           "after_min": min(a), "last": a[-1], "slack": bounds.flat_slack}
        else:
            checks[key] = {"ok": None, "why": "no samples on both sides of the warm-up"}

    last = samples[-1] if samples else {}
    if last.get("server_error_lines") is None:
        checks["errors"] = {"ok": None, "why": "no server log (--url)"}
    else:
        n = last["server_error_lines"] + last["server_tracebacks"]
        checks["errors"] = {"ok": n == 0, "error_lines": last["server_error_lines"],
                            "tracebacks": last["server_tracebacks"]}
    checks["server_up"] = {"ok": bool(last.get("server_up")) if samples else None}

    windows = latency_windows(turns, bounds.window_s)
    judged = [w for w in windows if w["turns"] >= bounds.min_turns]
    if len(judged) >= 2:
        first = judged[0]["p50_ms"]
        worst = max(w["p50_ms"] for w in judged[1:])
        rise = (worst - first) / first * 100
        checks["latency"] = {"ok": rise <= bounds.latency_pct, "first_window_p50_ms": first,
                             "worst_later_p50_ms": worst, "rise_pct": round(rise, 1), "bound_pct": bounds.latency_pct}
    else:
        checks["latency"] = {"ok": None, "why": f"fewer than 2 windows with {bounds.min_turns}+ turns"}
    checks["latency"]["windows"] = windows
    return {"ok": all(c["ok"] is not False for c in checks.values()), "checks": checks, "bounds": asdict(bounds)}


# --------------------------------------------------------------------------- the soak


async def soak(url: str, utterances: list[Utterance], opts: SoakOptions, *, pid: int | None = None,
               log: Path | None = None, headers: dict[str, str] | None = None,
               on_sample: Any = None, tick: Any = None) -> dict[str, Any]:
    """Run the clients for ``opts.minutes`` against ``url`` while sampling; the report (no verdict)."""
    base = http_base(url)
    health = await asyncio.to_thread(http_json, base, "/healthz", headers)
    max_bytes = int(((health or {}).get("protocol") or {}).get("max_message_bytes") or (1 << 20))
    tally = Tally()
    t0 = now_ns()
    duration = opts.minutes * 60
    deadline = time.monotonic() + duration
    sampler = Sampler(base, pid, log, tally, t0, headers)
    first = await asyncio.to_thread(sampler.sample)
    if on_sample:
        on_sample(first)
    deck = RoleDeck(opts)
    clients = [Client(i, url, utterances, opts, tally, t0, deadline, max_bytes, deck, headers)
               for i in range(opts.sessions)]
    tasks = [asyncio.create_task(c.run(), name=f"soak-client-{c.index}") for c in clients]
    next_sample = time.monotonic() + opts.sample_s
    while time.monotonic() < deadline:
        await asyncio.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        if tick:
            tick((now_ns() - t0) / 1e9, duration, tally)
        if time.monotonic() >= next_sample:
            row = await asyncio.to_thread(sampler.sample)
            next_sample += opts.sample_s
            if on_sample:
                on_sample(row)
    # the clients finish their current turn (bounded), then one last sample
    done, pending = await asyncio.wait(tasks, timeout=opts.stall_s + 60)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(2.0)  # let the server close the last sessions
    row = await asyncio.to_thread(sampler.sample)
    if on_sample:
        on_sample(row)
    return {"samples": sampler.samples, "clients": tally.summary(),
            "turns": [asdict(t) for t in tally.turns], "health": health}


def run_soak(args: argparse.Namespace, console: Any = None) -> dict[str, Any]:
    """Start (or reach) the server, soak it with a live view, stop it; the report with its verdict."""
    opts = SoakOptions(sessions=args.sessions, minutes=args.minutes, kill_share=args.kill_share,
                       hostile_share=args.hostile_share, stall_share=args.stall_share, stall_s=args.stall_s,
                       sample_s=args.sample_s, turns_max=args.turns_max, seed=args.seed)
    opts.check()
    bounds = Bounds(warmup_s=args.warmup_min * 60, window_s=args.window_min * 60)
    utterances = load_utterances(args.wavs or [])
    env = dict(_kv(s, "--server-env") for s in args.server_env or [])
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    report: dict[str, Any] = {"schema": SCHEMA, "machine": machine(), "options": asdict(opts),
                              "wavs": [{"name": u.name, "seconds": round(u.seconds, 2)} for u in utterances]}
    server: Headless | None = None
    if args.url:
        url, pid, log = args.url, args.pid, None
        report["server"] = {"url": url, "pid": pid, "started_by_soak": False}
    else:
        max_sessions = args.max_sessions or opts.sessions + 2
        log = Path(args.log or f"soak-server-{os.getpid()}.log")
        server = Headless(getattr(args, "profile", None), list(getattr(args, "set", None) or []), max_sessions, log, env)
        if console:
            console.print(f"[dim]starting {' '.join(server.cmd[1:])} (log: {log}) ...[/]")
        t = time.monotonic()
        url = server.start()
        pid = server.pid
        report["server"] = {"url": url, "pid": pid, "started_by_soak": True, "command": server.cmd,
                            "env": env, "log": str(log), "max_sessions": max_sessions,
                            "load_s": round(time.monotonic() - t, 1)}
    report["command"] = "s2s-engine " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("s2s-engine") else None

    def terminate(*_: object) -> None:  # SIGTERM: stop like Ctrl-C, so the server started here is stopped too
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        live = _LiveView(console, opts) if console else None
        with live or contextlib.nullcontext():
            report.update(asyncio.run(soak(url, utterances, opts, pid=pid, log=log, headers=headers,
                                           on_sample=live.sample if live else None,
                                           tick=live.tick if live else None)))
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            report["server"]["exit_code"] = server.stop()
    report["verdict"] = verdict(report["samples"], report["turns"], bounds)
    return report


def _kv(s: str, flag: str) -> tuple[str, str]:
    k, sep, v = s.partition("=")
    if not sep or not k:
        raise ConfigError(f"{flag} takes KEY=VALUE, got {s!r}")
    return k, v


# --------------------------------------------------------------------------- rendering


class _LiveView:
    """A one-screen view while the soak runs: a progress bar and the latest sample."""

    def __init__(self, console: Any, opts: SoakOptions):
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console, self.opts = console, opts
        self.progress = Progress(TextColumn("soak"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[turns]}"), console=console)
        self.task = self.progress.add_task("soak", total=opts.minutes * 60, turns="")
        self.rows: list[dict[str, Any]] = []
        self.live = Live(self._render(), console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> _LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def tick(self, t: float, total: float, tally: Tally) -> None:
        done = sum(1 for x in tally.turns if x.ok)
        self.progress.update(self.task, completed=min(t, total),
                             turns=f"{done} turns, {len(tally.turns) - done} failed, {tally.hostile_errors} "
                                   f"hostile errors answered, {tally.killed} killed, {tally.stalled} stalled")
        self.live.update(self._render())

    def sample(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.live.update(self._render())

    def _render(self) -> Any:
        from rich.console import Group

        return Group(self.progress, sample_table(self.rows[-12:], "latest samples"))


def _f(v: Any, nd: int = 0) -> str:
    return "—" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def sample_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("min", "RSS MiB", "fds", "threads", "sessions", "turns", "v2v p50 / p95 ms", "errors", "load"):
        table.add_column(col, justify="right")
    for r in rows:
        s = r.get("sessions") or {}
        table.add_row(f"{r['t_s'] / 60:.1f}", _f(r.get("rss_mib"), 1), _f(r.get("fds")), _f(r.get("threads")),
                      f"{s.get('active', '—')} ({s.get('total', '—')})", f"{r['turns']}"
                      + (f" ({r['turns_failed']} failed)" if r["turns_failed"] else ""),
                      f"{_f(r['v2v_p50_ms'])} / {_f(r['v2v_p95_ms'])}",
                      _f(None if r.get("server_error_lines") is None
                         else r["server_error_lines"] + r["server_tracebacks"]),
                      _f((r.get("load_avg") or [None])[0], 2))
    return table


def render(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    c = report["clients"]
    console.print(f"clients: {c['connections']} connections; {c['turns_completed']} turns completed, "
                  f"{c['turns_failed']} failed; voice-to-voice p50 {c['v2v_ms']['p50']} ms, p95 {c['v2v_ms']['p95']} "
                  f"ms; hostile {c['hostile']['errors_received']}/{c['hostile']['sent']} answered with an error; "
                  f"{c['killed_mid_reply']} killed mid-reply; {c['stalled']} stalled "
                  f"({c['stall_cut_by_server']} cut by the server); {c['refused_full']} refused (full)")
    v = report["verdict"]
    table = Table(title="verdict")
    for col in ("check", "result", "figures"):
        table.add_column(col)
    for name, chk in v["checks"].items():
        res = "[green]pass[/]" if chk["ok"] else "[red]FAIL[/]" if chk["ok"] is False else "[dim]n/a[/]"
        figs = ", ".join(f"{k}={val}" for k, val in chk.items() if k not in ("ok", "windows"))
        table.add_row(name, res, figs)
    console.print(table)
    wins = v["checks"]["latency"]["windows"]
    if wins:
        console.print("v2v p50 per window: " + ", ".join(
            f"{w['from_s'] / 60:g}-{w['to_s'] / 60:g} min {_f(w['p50_ms'])} ms (n={w['turns']})" for w in wins))
    console.print("[bold green]PASS[/]" if v["ok"] else "[bold red]FAIL[/]")


# --------------------------------------------------------------------------- CLI


def register(bench_subparsers: Any, common: Any) -> None:
    """Add ``soak`` to ``s2s-engine bench`` (``common`` adds --profile/--set/-v/--json)."""
    sp = bench_subparsers.add_parser("soak", help="N sessions for T minutes against a headless engine: memory, "
                                                  "fds, threads, errors, latency over time; a verdict")
    sp.add_argument("--sessions", type=int, default=3, help="concurrent users (default 3)")
    sp.add_argument("--minutes", type=float, default=10.0, help="how long, in real time (default 10)")
    sp.add_argument("--url", help="soak a running server (ws://.../v1/realtime) instead of starting one")
    sp.add_argument("--pid", type=int, help="with --url: its process on this machine, to sample memory/fds/threads")
    sp.add_argument("--token", default=os.environ.get("S2S_TOKEN") or None, help="bearer token (default $S2S_TOKEN)")
    sp.add_argument("--max-sessions", type=int, default=0, help="the started server's --max-sessions (default N+2)")
    sp.add_argument("--server-env", action="append", metavar="K=V",
                    help="environment of the started server (e.g. MALLOC_ARENA_MAX=2); repeatable")
    sp.add_argument("--log", help="where the started server's stderr goes (default soak-server-PID.log)")
    sp.add_argument("--wavs", nargs="+", metavar="WAV_OR_DIR",
                    help="utterances (default the bundled sample_te.wav; folders of bench make-wavs work)")
    sp.add_argument("--kill-share", type=float, default=0.15, help="connections killed mid-reply (default 0.15)")
    sp.add_argument("--hostile-share", type=float, default=0.15, help="connections sending bad messages (0.15)")
    sp.add_argument("--stall-share", type=float, default=0.1, help="connections that stop reading (default 0.1)")
    sp.add_argument("--stall-s", type=float, default=45.0, help="how long a stalled client stops reading (45)")
    sp.add_argument("--turns-max", type=int, default=2, help="turns per connection, 1..N (default 2)")
    sp.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples (default 30)")
    sp.add_argument("--warmup-min", type=float, default=5.0, help="RSS judged after this (default 5)")
    sp.add_argument("--window-min", type=float, default=5.0, help="latency window (default 5)")
    sp.add_argument("--plot", metavar="OUT.svg", help="memory and latency over time as an SVG")
    sp.add_argument("--seed", type=int, default=0, help="roles and turn counts (default 0)")
    common(sp)
    sp.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.bench import _write_json

    console = Console(highlight=False)
    if args.plot and not args.plot.endswith(".svg"):
        raise ConfigError("--plot writes SVG (no plotting library needed): give a .svg path")
    report = run_soak(args, console)
    console.print(sample_table(report["samples"], "samples"))
    render(report, console)
    _write_json(args.json_path, report, console)
    if args.plot:
        from remote.soak_plot import write_svg

        write_svg(report, args.plot)
        console.print(f"plot: {args.plot}")
    return 0 if report["verdict"]["ok"] else 1


__all__ = ["Bounds", "SoakOptions", "Utterance", "hostile_messages", "latency_windows", "load_utterances",
           "read_proc", "register", "run_soak", "soak", "speech_end", "verdict"]

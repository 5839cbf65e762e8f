"""The soak's users: the audio they speak (:class:`Utterance`), the bad messages a ``hostile`` one
sends, the deck of roles (:class:`RoleDeck`) and one user (:class:`Client`).

The clients speak the wire as plain JSON over :mod:`websockets`, not through :mod:`remote.protocol`:
what is soaked is the server as any Realtime client sees it. Every client time comes from one
monotonic clock (``time.perf_counter_ns``, :func:`engine.clock.now_ns`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from dataclasses import dataclass
from importlib.resources import files as files_
from pathlib import Path
from typing import Any

import numpy as np

from engine.clock import ms, now_ns
from engine.errors import ConfigError, S2SError
from remote.soak.options import SoakOptions
from remote.soak.results import Tally, Turn

RATE = 24_000  # audio/pcm on the wire: 24 kHz PCM16 mono
CHUNK = RATE // 50  # 20 ms appends


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
        role = max(self.credit, key=lambda r: self.credit[r])  # ties: the order of self.shares
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


__all__ = ["CHUNK", "RATE", "Client", "RoleDeck", "Utterance", "hostile_messages", "load_utterances",
           "speech_end"]

"""The remote agent link: ``s2s-engine --headless`` over WebSocket (``remote.client``).

It gives out the same UI messages as the in-process link. What only a remote link has:

- connection state with a retry countdown: the client retries the first connection and every
  drop (``RealtimeClient(retry_first=True)``, the one reconnect loop), the link shows its states;
- network time: each turn's latency carries the measured one-way times of that turn (the
  audio that ended it going up, the first reply audio coming down; ``RealtimeClient.network_timing``),
  so the latency panel shows the network's share apart from the engine's stages;
- reset keeps the connection: ``s2s.session.reset`` empties the server's history;
- GPU memory and models come from the server's ``s2s.stats``;
- the audio format on the wire (Opus by default, PCM when the server does not offer it; the
  ``--audio-format`` flag) and the bytes per second each way, whole messages counted, shown with
  the round trip.

Mic audio is queued (bounded) and sent by one task, so ``send_audio`` never waits on the
network; while disconnected, audio is dropped (live audio is not worth replaying late). A send
that fails for any other reason is shown as a problem (the same one at most every 10 s) and the
sender goes on: the microphone never goes silent without a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import numpy as np

from engine import events as ev
from engine.audio import ENGINE_RATE
from engine.metrics import STAGES
from remote import protocol as p
from remote.client import AuthError, ConnectionState, NotConnected, RealtimeClient, normalize_url
from s2s_tui import messages as m
from s2s_tui.link import AgentLink, model_names

log = logging.getLogger(__name__)

MIC_RATE = ENGINE_RATE  # what the TUI's sources give (s2s_tui.audio)


class RemoteLink(AgentLink):
    mode = "remote"

    def __init__(self, url: str, token: str | None = None, backoff_initial_s: float = 1.0,
                 backoff_max_s: float = 10.0, audio_format: str | None = "opus"):
        super().__init__()
        from remote.client_audio import parse_choice

        self.audio_format = parse_choice(audio_format, MIC_RATE) if audio_format else None  # ValueError: say so
        url = normalize_url(url)
        self.url, self.token = url, token
        self.target = url
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.client: RealtimeClient | None = None
        self._out: deque[Any] = deque(maxlen=400)  # pending sends (audio and commands)
        self._wake = asyncio.Event()
        self._turn_detection = True
        self._closing = False
        self._item_of: dict[str, str] = {}  # response id -> assistant item id
        self._turn_of_item: dict[str, str] = {}
        self._partial: dict[str, str] = {}
        self._last_gpu: tuple[float | None, float | None] = (None, None)
        self._gen = 0  # connections so far: a new connection is a new server session, ids restart
        self._send_problem: tuple[str, float] | None = None  # the last send failure shown, and until when
        self._counted: tuple[float, int, int] | None = None  # (when, bytes sent, bytes received) last shown
        self._last_rates = ""

    def _id(self, server_id: str) -> str:
        """A UI id for a server turn/response id, unique across reconnections."""
        return server_id if self._gen <= 1 else f"{server_id}·{self._gen}"

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        client = self.client = RealtimeClient(self.url, self.token, retry_first=True,
                                              backoff_initial_s=self.backoff_initial_s,
                                              backoff_max_s=self.backoff_max_s, audio_format=self.audio_format,
                                              mic_rate=MIC_RATE)
        self.post(m.LinkState("connecting", f"connecting to {self.url}"))
        try:
            await client.connect()
        except AuthError as exc:
            self.post(m.LinkState("failed", f"token refused: {exc}", fatal=True))
            self.post(m.Problem("network", f"the engine refused the token: {exc}. Pass the right one with --token."))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a malformed URL: say so, the app runs on
            self.post(m.LinkState("failed", f"cannot connect to {self.url}: {_short(exc)}", fatal=True))
            self.post(m.Problem("network", f"cannot connect to {self.url}: {_short(exc)}"))
            return
        sender = asyncio.create_task(self._sender(client))
        try:
            await self._receive(client)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _receive(self, client: RealtimeClient) -> None:
        async for e in client.events():
            if isinstance(e, ConnectionState):
                self._on_state(e)
            else:
                try:
                    self._on_event(client, e)
                except Exception:  # noqa: BLE001 - one odd event must not end the link
                    log.exception("remote event %r", e)

    def _on_state(self, s: ConnectionState) -> None:
        if s.status == "connected":
            self._gen += 1
            self.ready = True
            self.post(m.LinkState("ready", f"connected to {self.url}"))
        elif s.status == "reconnecting":
            self.ready = False
            at = time.monotonic() + (s.retry_countdown_s() or 0.0)
            if self._gen == 0:  # never connected yet
                self.post(m.LinkState("retrying", f"engine unreachable ({_short(s.error)})", retry_at=at))
            else:
                self.post(m.LinkState("retrying", f"connection lost ({_short(s.error)})", retry_at=at))
                self.post(m.Problem("network", f"connection to the engine lost: {_short(s.error)}; retrying",
                                    "warning"))
        elif s.status == "connecting":
            self.post(m.LinkState("connecting", f"reconnecting to {self.url} (attempt {s.attempt})"))
        elif s.status == "closed":
            self.ready = False
            if s.error and "token" in s.error:
                self.post(m.LinkState("failed", s.error, fatal=True))
            elif not self._closing:
                self.post(m.LinkState("closed", s.error or "closed"))

    def _on_event(self, client: RealtimeClient, e: p.ServerEvent) -> None:
        shown = self._engine_event(client, e)
        if shown is not None:
            self._show(shown)  # the same translator as the in-process link's
            return
        post = self.post
        if isinstance(e, p.S2STurnMetrics):
            d = e.metrics
            stages = {key: d.get(key) for key, *_ in STAGES}
            # measured one-way times of this turn (server stamps + our clock + the ping's offset);
            # None where a leg could not be measured: no guess from the RTT stands in for it
            nt = client.network_timing(e.response_id) if e.response_id else None
            post(m.TurnLatency(self._id(str(d.get("turn_id") or "")) or None, stages, d.get("voice_to_voice_ms"),
                               nt.total_ms if nt else None, bool(d.get("interrupted")),
                               network_up_ms=nt.up_ms if nt else None, network_down_ms=nt.down_ms if nt else None,
                               asr_decode_ms=d.get("asr_decode_ms"), speculative=bool(d.get("asr_speculative")),
                               turn_policy=d.get("turn_policy"), turn_probability=d.get("turn_probability"),
                               resumed=int(d.get("resumed") or 0)))
        elif isinstance(e, p.S2SStats):
            gpu = e.gpu or {}
            self._last_gpu = (gpu.get("used_mb"), gpu.get("total_mb"))
            post(m.Stats(*self._last_gpu, client.rtt_ms, self._wire(client)))
            if e.models:
                post(m.EngineInfo(e.profile or "?", e.device or "?", model_names(e.models)))
        elif isinstance(e, p.S2SPong | p.SessionUpdated | p.SessionCreated):
            post(m.Stats(*self._last_gpu, client.rtt_ms, self._wire(client)))
        elif isinstance(e, p.Error):
            if e.code not in ("response_cancel_not_active",):
                post(m.Problem("engine", f"{e.code}: {e.message}", "warning"))

    def _engine_event(self, client: RealtimeClient, e: p.ServerEvent) -> ev.SessionEvent | None:
        """The engine event a server event stands for (UI ids: :meth:`_id`), or None where the
        wire says more than the engine does (metrics with network time, stats, errors)."""
        if isinstance(e, p.ResponseAudioDelta):
            return ev.ReplyAudio(self._id(e.response_id), 0, client.decode_audio(e), self.reply_rate)
        if isinstance(e, p.SpeechStarted):
            return ev.SpeechStarted(self._id(_turn(e.item_id)), e.audio_start_ms or 0)
        if isinstance(e, p.SpeechStopped):
            return ev.SpeechStopped(self._id(_turn(e.item_id)), e.audio_end_ms or 0)
        if isinstance(e, p.InputTranscriptionDelta):
            text = e.s2s_partial or (self._partial.get(e.item_id, "") + e.delta)
            self._partial[e.item_id] = text
            return ev.TranscriptPartial(self._id(_turn(e.item_id)), text)
        if isinstance(e, p.InputTranscriptionCompleted):
            self._partial.pop(e.item_id, None)
            return ev.TranscriptFinal(self._id(_turn(e.item_id)), e.transcript, e.s2s_language, e.s2s_script_ok)
        if isinstance(e, p.ConversationItemAdded):
            item = e.item or {}
            texts = [str(part.get("text", "")) for part in item.get("content") or [] if part.get("type") == "input_text"]
            if item.get("role") == "user" and texts:  # a typed turn
                return ev.TranscriptFinal(self._id(_turn(str(item.get("id", "")))), " ".join(texts))
            return None
        if isinstance(e, p.ResponseCreated):
            raw = str(e.response.get("id", ""))
            self._item_of[self._id(raw)] = f"item_{raw}"
            return ev.ResponseStarted(self._id(raw), None)
        if isinstance(e, p.ResponseTranscriptDelta):
            return ev.ReplyTextDelta(self._id(e.response_id), e.delta)
        if isinstance(e, p.ResponseDone):
            r = e.response
            s2s = r.get("s2s") or {}
            return ev.ResponseDone(self._id(str(r.get("id", ""))), str(r.get("status", "completed")),
                                   str(s2s.get("text", "")), str(s2s.get("heard_text", "")),
                                   int(s2s.get("audio_ms", 0) or 0), int(s2s.get("played_ms", 0) or 0))
        return None

    def _played(self, response_id: str, played_ms: int) -> None:
        if response_id in self._item_of:
            self._queue(("truncate", self._item_of[response_id], played_ms))

    def _wire(self, client: RealtimeClient) -> str:
        """The format and the bytes per second each way since the last call (whole messages)."""
        now, sent, got = time.monotonic(), client.bytes_sent, client.bytes_received
        rates = ""
        if self._counted is not None and now - self._counted[0] >= 0.5:
            dt = now - self._counted[0]
            rates = f"  ↑{(sent - self._counted[1]) / dt / 1000:.1f} ↓{(got - self._counted[2]) / dt / 1000:.1f} kB/s"
        if self._counted is None or rates:
            self._counted = (now, sent, got)
        elif self._last_rates:
            rates = self._last_rates
        self._last_rates = rates
        return f"{client.wire_format or '?'}{rates}"

    # --- sending ---------------------------------------------------------------------------

    def _queue(self, item: Any) -> None:
        self._out.append(item)
        self._wake.set()

    async def _sender(self, client: RealtimeClient) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out:
                item = self._out.popleft()
                try:
                    if isinstance(item, np.ndarray):
                        await client.send_audio(item, MIC_RATE)
                    elif item[0] == "commit":
                        await client.commit()
                    elif item[0] == "clear":
                        await client.clear_audio()
                    elif item[0] == "cancel":
                        await client.cancel_response()
                    elif item[0] == "truncate":
                        await client.truncate(item[1], item[2])
                    elif item[0] == "turns":
                        await client.update_session(turn_detection=item[1])
                    elif item[0] == "reset":
                        await client.reset_session()
                except (NotConnected, p.ProtocolError) as exc:
                    log.debug("dropped %r: %s", item if not isinstance(item, np.ndarray) else "audio", exc)
                except Exception as exc:  # noqa: BLE001 - anything else: say so, keep sending
                    what = "microphone audio" if isinstance(item, np.ndarray) else f"'{item[0]}'"
                    log.exception("sending %s failed", what)
                    problem = f"sending {what} to the engine failed: {_short(exc)}"
                    now = time.monotonic()
                    if self._send_problem is None or self._send_problem[0] != problem or now > self._send_problem[1]:
                        self._send_problem = (problem, now + 10.0)  # the same failure at most every 10 s
                        self.post(m.Problem("network", problem))

    def send_audio(self, samples: np.ndarray) -> None:
        if self.ready:
            self._queue(samples)

    def commit(self) -> None:
        self._queue(("commit",))

    def clear_input(self) -> None:
        self._queue(("clear",))

    def set_turn_detection(self, on: bool) -> None:
        self._turn_detection = on
        self._queue(("turns", on))

    def interrupt(self, response_id: str | None, played_ms: int) -> None:
        self._queue(("cancel",))
        if response_id and response_id in self._item_of:
            self._queue(("truncate", self._item_of[response_id], played_ms))

    def reset(self) -> None:
        # s2s.session.reset: the server empties the history and cancels the reply (its cancelled
        # response.done and s2s.session.reset_done follow); the connection and its settings stay
        self._queue(("reset",))

    async def close(self) -> None:
        self._closing = True
        self.ready = False
        if self.client is not None:
            await self.client.close()


def _turn(item_id: str) -> str:
    return item_id.removeprefix("item_") if item_id else "turn_?"


def _short(err: Any) -> str:
    text = str(err or "").strip() or type(err).__name__
    return text.splitlines()[0][:160]


__all__ = ["RemoteLink"]

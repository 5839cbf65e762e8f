"""Agent links: how the TUI talks to the engine, in-process or remote, behind one interface.

A link takes 16 kHz mic audio and a few commands in, and gives out the UI messages of
:mod:`s2s_tui.messages` (through ``post``) plus reply audio (straight into the player's
:class:`~s2s_tui.audio.JitterBuffer`). Screens never know which link runs.

- :class:`InProcessLink`: loads :class:`engine.engine.Engine` in a thread (or takes a
  loaded one) and drives an :class:`engine.session.Session`.
- :class:`RemoteLink` (:mod:`s2s_tui.link_remote`): a :class:`remote.client.RealtimeClient`
  to ``s2s-engine --headless``, with retry countdowns and network time.

:meth:`AgentLink.run` is the long-running part; the App runs it in a Textual worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from textual.message import Message

from engine import events as ev
from engine.audio import ENGINE_RATE, REPLY_RATE
from engine.errors import S2SError
from s2s_tui import messages as m
from s2s_tui.audio import JitterBuffer

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.session import Session

log = logging.getLogger(__name__)

Post = Callable[[Message], Any]


class AgentLink:
    """The interface both links share. ``attach`` before ``run``."""

    mode = ""
    target = ""
    reply_rate = REPLY_RATE

    def __init__(self) -> None:
        self.post: Post = lambda msg: None
        self.player: JitterBuffer | None = None
        self.ready = False
        self.last_response: str | None = None

    def attach(self, post: Post, player: JitterBuffer) -> None:
        self.post, self.player = post, player

    async def run(self) -> None:
        raise NotImplementedError

    def send_audio(self, samples: np.ndarray) -> None:
        """16 kHz mono float32 mic audio (already through the echo gate). Never blocks."""
        raise NotImplementedError

    def commit(self) -> None:
        """Push-to-talk released: the buffered audio is the user's turn."""

    def clear_input(self) -> None:
        """Drop buffered mic audio (push-to-talk cancelled)."""

    def set_turn_detection(self, on: bool) -> None:
        """Hands-free (engine VAD ends turns) or push-to-talk (the client commits)."""

    def interrupt(self, response_id: str | None, played_ms: int) -> None:
        """Cancel the reply (and tell the engine how much of it was really played)."""

    def reset(self) -> None:
        """Forget the conversation."""

    async def close(self) -> None:
        """Stop and release everything."""

    # the one translator: engine events to UI messages and the player ---------------------

    def _show(self, e: ev.SessionEvent) -> None:
        """What an engine event means to the UI. The in-process link feeds it the Session's events;
        the remote link the same events, rebuilt from the wire's (:mod:`s2s_tui.link_remote`)."""
        post, player = self.post, self.player
        if isinstance(e, ev.ReplyAudio):
            if player is not None:
                player.push(e.response_id, _to_rate(e.samples, e.sample_rate, self.reply_rate))
        elif isinstance(e, ev.SpeechStarted):
            rid, played = self._barge_in()
            if rid:
                self._played(rid, played)
            post(m.UserSpeechStarted(e.turn_id))
        elif isinstance(e, ev.SpeechStopped):
            post(m.UserSpeechStopped(e.turn_id))
        elif isinstance(e, ev.TranscriptPartial):
            post(m.UserPartial(e.turn_id, e.text))
        elif isinstance(e, ev.TranscriptFinal):
            post(m.UserFinal(e.turn_id, e.text, e.script_ok, e.language))
        elif isinstance(e, ev.ResponseStarted):
            self.last_response = e.response_id
            post(m.ReplyStarted(e.response_id, e.turn_id))
        elif isinstance(e, ev.ReplyTextDelta):
            post(m.ReplyText(e.response_id, e.delta))
        elif isinstance(e, ev.Interruption):
            if player is not None and player.current == e.response_id:
                player.flush()
            post(m.ReplyDone(e.response_id, "cancelled", "", e.heard_text, e.played_ms))
        elif isinstance(e, ev.ResponseDone):
            if player is not None:
                if e.status == "cancelled" and player.current == e.response_id:
                    player.flush()
                player.complete(e.response_id)
            post(m.ReplyDone(e.response_id, e.status, e.text, e.heard_text, e.played_ms))
        elif isinstance(e, ev.TurnMetricsEvent):
            mt = e.metrics
            post(m.TurnLatency(mt.turn_id, mt.stages_ms(), mt.voice_to_voice_ms, None, mt.interrupted,
                               asr_decode_ms=mt.extra.get("asr_decode_ms"),
                               speculative=bool(mt.extra.get("asr_speculative")),
                               turn_policy=mt.turn_policy, turn_probability=mt.turn_probability,
                               resumed=mt.resumed))
        elif isinstance(e, ev.ErrorEvent):
            post(m.Problem("engine", f"{e.stage or 'engine'}: {e.message}", "warning"))

    def _played(self, response_id: str, played_ms: int) -> None:
        """The user cut in while ``response_id`` played: tell the engine how much was heard."""

    def _barge_in(self) -> tuple[str | None, int]:
        """The user started talking: stop local playback now; return what was cut."""
        p = self.player
        if p is None or not p.playing:
            return None, 0
        rid = p.current or self.last_response
        played = p.played_ms(rid) if rid else 0
        p.flush()
        return rid, played


class InProcessLink(AgentLink):
    """The engine in this process (``--profile``); loads it in a thread unless given one."""

    mode = "in-process"

    def __init__(self, profile: str = "offline", overrides: list[str] | None = None, engine: Engine | None = None,
                 stats_interval_s: float = 1.0):
        super().__init__()
        self.profile, self.overrides = profile, list(overrides or [])
        self.engine = engine
        self._owns_engine = engine is None
        self.session: Session | None = None
        self.target = f"profile {profile}"
        self.stats_interval_s = stats_interval_s
        self._tasks: list[asyncio.Task] = []
        self._turn_detection = True

    async def run(self) -> None:
        if self.engine is None:
            self.post(m.LinkState("loading", f"loading profile {self.profile!r} (models take a few seconds)"))
            try:
                from engine.engine import Engine

                self.engine = await asyncio.to_thread(Engine.load, self.profile, self.overrides)
            except S2SError as exc:
                self.post(m.LinkState("failed", f"the engine failed to load: {exc}", fatal=True))
                self.post(m.Problem("engine", f"the engine failed to load: {exc}"))
                return
            except Exception as exc:  # noqa: BLE001 - a backend's own error: show it, do not crash
                log.exception("engine load")
                self.post(m.LinkState("failed", f"the engine failed to load: {type(exc).__name__}: {exc}", fatal=True))
                self.post(m.Problem("engine", f"the engine failed to load: {type(exc).__name__}: {exc}"))
                return
        eng = self.engine
        self.reply_rate = eng.profile.session.output_sample_rate
        info = eng.describe()
        self.post(m.EngineInfo(info["profile"], str(info["device"]), model_names(info["models"]),
                               list(info["notes"]), bool(info["partials"])))
        for note in info["notes"]:
            self.post(m.Problem("engine", note, "warning"))
        self.session = eng.new_session()
        self.session.update(turn_detection=self._turn_detection)
        await self.session.start()
        self.ready = True
        self.post(m.LinkState("ready", f"profile {eng.profile.name}, {info['device']}"))
        stats = asyncio.create_task(self._stats_loop())
        self._tasks.append(stats)
        try:
            async for e in self.session.stream():
                self._show(e)
        finally:
            stats.cancel()

    async def _stats_loop(self) -> None:
        assert self.engine is not None
        while True:
            gpu = await asyncio.to_thread(self.engine.gpu_memory)
            self.post(m.Stats(gpu["used_mb"], gpu["total_mb"]))
            await asyncio.sleep(self.stats_interval_s)

    def _played(self, response_id: str, played_ms: int) -> None:
        if self.session is not None:
            with contextlib.suppress(S2SError):
                self.session.truncate(response_id, played_ms)

    def send_audio(self, samples: np.ndarray) -> None:
        if self.session is not None and self.ready:
            try:
                self.session.push_audio(samples, ENGINE_RATE)
            except S2SError as exc:
                self.post(m.Problem("engine", str(exc)))

    def commit(self) -> None:
        if self.session is not None:
            self.session.commit()

    def clear_input(self) -> None:
        if self.session is not None:
            self.session.clear_input()

    def set_turn_detection(self, on: bool) -> None:
        self._turn_detection = on
        if self.session is not None:
            self.session.update(turn_detection=on)

    def interrupt(self, response_id: str | None, played_ms: int) -> None:
        if self.session is None:
            return
        self.session.cancel_response()
        if response_id:
            with contextlib.suppress(S2SError):
                self.session.truncate(response_id, played_ms)

    def reset(self) -> None:
        if self.session is not None:
            self.session.reset()

    async def close(self) -> None:
        self.ready = False
        for t in self._tasks:
            t.cancel()
        if self.session is not None:
            await self.session.close()
        if self._owns_engine and self.engine is not None:
            self.engine.close()


def model_names(models: dict[str, Any]) -> dict[str, str]:
    """Per stage, a short name of what is loaded."""
    out = {}
    for stage, d in models.items():
        if isinstance(d, dict):
            name = d.get("model") or d.get("name") or d.get("backend") or "?"
            out[stage] = str(name).removeprefix("pkg:")
        else:
            out[stage] = str(d)
    return out


def _to_rate(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return np.asarray(x, dtype=np.float32)
    from engine.audio import resample

    return resample(x, rate, target)


__all__ = ["AgentLink", "InProcessLink", "Post", "model_names"]

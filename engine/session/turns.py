"""The user's turns as the Session keeps them: the one being answered, and the last one ended.

A *held* :class:`Turn` was started speculatively at a pause: its transcript, response and
audio are made but kept back until the end of turn is confirmed (released), or thrown away
silently if the user goes on speaking (dropped). Its :class:`~engine.turn.TurnEvidence` is
what the end-of-turn policy has heard so far (the audio model, the LLM's reading).

:class:`Ended` is the last ended turn while the user may still go on with it
(``turn.resume_ms``): speech that starts again soon enough continues it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.clock import now_ns
from engine.metrics import TurnMetrics
from engine.turn import TurnEvidence

if TYPE_CHECKING:
    from engine.session.reply import Reply
    from engine.stages.base import TurnBackend


@dataclass
class Turn:
    """One user turn (see the module docstring for *held*)."""

    id: str
    end_sample: int
    metrics: TurnMetrics
    held: bool = False
    speculative: bool = False
    held_events: list = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    user_text: str | None = None
    response: Reply | None = None
    task: asyncio.Task | None = None
    evidence: TurnEvidence = field(default_factory=TurnEvidence)
    predict_task: asyncio.Task | None = None  # the audio turn model, for a held turn
    audio_clip: np.ndarray | None = None  # what the audio model will hear, until it runs
    known_text: str | None = None  # a partial transcript that already covers the turn's audio
    audio_after_reply: bool = False  # no spare core at the pause: the audio model waits for reply_made
    reply_made: bool = False  # the held reply's first audio is made

    def predict(self, model: TurnBackend, audio: np.ndarray) -> float:
        """The audio turn model on this turn (in the turn worker). Stamped there: a turn that
        ended without it (turn.deadline_ms) cancels the waiting task, but the model runs to
        its end, and the metrics show how late it came."""
        m = self.metrics
        t0 = time.perf_counter()
        p = model.predict(audio)
        m.turn_audio_ms, m.turn_audio_ns = (time.perf_counter() - t0) * 1000, now_ns()
        m.turn_audio_probability = p
        return p

    def note_cores(self, idle: float | None, spare: float) -> None:
        """The idle cores read at the pause: with fewer than ``spare`` (``turn.audio_spare_cores``;
        0: never) the audio model waits until the reply's first audio is made."""
        self.metrics.cpu_idle_cores = idle
        self.audio_after_reply = bool(spare) and idle is not None and idle < spare

    def drop(self) -> None:
        """The user went on speaking: stop everything this held turn started."""
        if self.predict_task is not None:
            self.predict_task.cancel()
        if self.response is not None:
            self.response.cancel.set()
            if self.response.task is not None:
                self.response.task.cancel()
        if self.task is not None:
            self.task.cancel()


@dataclass
class Ended:
    """The last ended turn, kept while the user may still go on with it (``turn.resume_ms``)."""

    turn: Turn
    start_sample: int  # where the turn's audio starts in the stream (pre-roll included)
    end_sample: int  # the sample after its last voiced frame
    speech_start_ns: int | None
    history_mark: int  # the history's position before the turn's user text joined it
    parts: int  # 1 + the parts it already continued

    def goes_on_at(self, sample: int, within: int, output_rate: int) -> bool:
        """Does speech starting at ``sample`` go on with this turn? Yes while it starts within
        ``within`` samples of the turn's end of speech and the reply to it is still being made
        or played (once the agent has finished speaking, it is a new turn)."""
        if sample - self.end_sample > within:
            return False
        r = self.turn.response
        if r is None or not r.done:
            return True
        return r.status != "cancelled" and r.played_ms(output_rate) < r.audio_ms(output_rate)

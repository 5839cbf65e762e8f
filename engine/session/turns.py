"""The user's turns as the Session keeps them: the one being spoken, the one being answered,
and the last one ended.

:class:`Speech` is the turn the user is speaking now: its id, where its audio starts, and the
parts of it that were already ended and answered (a resumed turn).

A *held* :class:`Turn` was started speculatively at a pause: its transcript, response and
audio are made but kept back until the end of turn is confirmed (released), or thrown away
silently if the user goes on speaking (dropped). Its :class:`~engine.turn.TurnEvidence` is
what the end-of-turn policy has heard so far (the audio model, the LLM's reading).

:class:`Ended` is the last ended turn while the user may still go on with it
(``turn.resume_ms``): speech that starts again soon enough continues it
(:meth:`Speech.go_on`).
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


@dataclass
class Speech:
    """The turn the user is speaking now, as the Session counts it (``turn_1``, ``turn_2``...).

    Between turns ``start`` is None. A turn the user goes on with after it was ended
    (:meth:`go_on`) keeps its id and its first sample, and counts the part it continues.
    """

    count: int = 0  # turns so far
    turn_id: str | None = None  # the latest turn (the one spoken now, while start is set)
    start: int | None = None  # its first sample in the input stream, pre-roll included
    start_ns: int | None = None  # when its speech started
    parts: int = 0  # earlier parts of it that were ended (resumed turns)
    half_replies: int = 0  # replies to those parts whose audio had gone out
    ended: Ended | None = None  # the last ended turn, while the user may go on with it

    @property
    def next_id(self) -> str:
        """The id the next turn will get (what a manual ``commit`` answers before it runs)."""
        return f"turn_{self.count + 1}"

    def new_id(self) -> str:
        """Count a new turn, and name it."""
        self.count += 1
        self.turn_id = f"turn_{self.count}"
        return self.turn_id

    def begin(self, start: int, start_ns: int | None) -> str:
        """Speech starts a new turn with its audio at ``start``: its id."""
        self.ended = None
        self.parts = self.half_replies = 0
        self.start, self.start_ns = start, start_ns
        return self.new_id()

    def go_on(self, sample: int, within: int, output_rate: int, audio_start: int) -> Ended | None:
        """Speech starting at ``sample`` goes on with the last ended turn if it starts within
        ``within`` samples of its end (:meth:`Ended.goes_on_at`) and its audio is still in the
        buffer (from ``audio_start``): that turn, now spoken again, or None."""
        e = self.ended
        if e is None or e.start_sample < audio_start or not e.goes_on_at(sample, within, output_rate):
            return None
        self.ended = None
        self.turn_id, self.start, self.start_ns = e.turn.id, e.start_sample, e.speech_start_ns
        self.parts = e.parts
        r = e.turn.response
        self.half_replies += int(r is not None and r.first_out_ns is not None and r.status != "cancelled")
        return e

    def end(self) -> None:
        """The turn ended: no turn is being spoken."""
        self.start = self.start_ns = None

    def metrics(self, **stamps: int | None) -> TurnMetrics:
        """New metrics for the turn being spoken, with ``stamps``."""
        return TurnMetrics(turn_id=self.turn_id, speech_start_ns=self.start_ns, resumed=self.parts,
                           half_replies=self.half_replies, **stamps)

"""Speech recognition for one session: the final transcript of each turn, partial ones on the way.

A turn's final decode has the ASR worker first: partials are not started while any turn's
decode runs (this session's or another's, ``engine.asr_turns_in_flight``), and at most one
partial of a session runs at a time, every ``asr.partial_interval_ms``. The latest partial
is remembered with the audio it heard: when it already covers a turn's audio, the turn
reuses its text instead of decoding again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from engine.audio import ENGINE_RATE
from engine.clock import now_ns
from engine.metrics import TurnMetrics
from engine.stages.base import Transcript

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)


class Transcriber:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.partial_task: asyncio.Task | None = None  # the partial of the turn being spoken, if any
        self.tasks: set[asyncio.Task] = set()  # every partial still running (an ended turn's too)
        self.last: tuple[str, int, str] | None = None  # the latest partial: (turn id, audio end sample, text)
        self.last_ns = 0  # when the latest partial was started (or speech started)

    async def final(self, audio: np.ndarray, language: str | None, metrics: TurnMetrics,
                    known_text: str | None = None) -> Transcript:
        """The turn's transcript (``known_text``: a partial that already heard all of ``audio``)."""
        loop = asyncio.get_running_loop()
        metrics.asr_audio_s = len(audio) / ENGINE_RATE
        t0 = time.perf_counter()
        if known_text:
            tr = Transcript(known_text, language)
            metrics.extra["asr_reused_partial"] = 1.0
        else:
            self.engine.asr_turns_in_flight += 1
            try:
                tr = await loop.run_in_executor(self.engine.asr_pool, self.engine.asr.transcribe, audio, language)
            finally:
                self.engine.asr_turns_in_flight -= 1
        metrics.extra["asr_decode_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return tr

    def covering(self, turn_id: str, end_sample: int) -> str | None:
        """The latest partial's text if it heard ``turn_id`` up to ``end_sample`` or further."""
        lp = self.last
        return lp[2] if lp is not None and lp[0] == turn_id and lp[1] >= end_sample else None

    def maybe_partial(self, turn_id: str | None, audio: Callable[[], tuple[np.ndarray, int]],
                      language: str | None, emit: Callable[[str, str], bool]) -> None:
        """Start a partial transcript if one is due. ``audio()`` gives the turn so far and the
        stream sample after it; ``emit(turn_id, text)`` says whether the turn still wants it."""
        if self.partial_task is not None and not self.partial_task.done():
            return
        if self.engine.asr_turns_in_flight:
            return  # a turn's decode (this session's or another's) is running: it goes first
        t = now_ns()
        if (t - self.last_ns) / 1e6 < self.engine.profile.asr.partial_interval_ms:
            return
        self.last_ns = t
        clip, end = audio()
        self.partial_task = task = asyncio.create_task(self._partial(turn_id, clip, end, language, emit))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _partial(self, turn_id: str | None, audio: np.ndarray, end_sample: int, language: str | None,
                       emit: Callable[[str, str], bool]) -> None:
        loop = asyncio.get_running_loop()
        try:
            tr = await loop.run_in_executor(self.engine.asr_pool, self.engine.asr.transcribe, audio, language)
        except Exception:  # noqa: BLE001 - a failed partial is not worth a user-facing error
            log.exception("partial transcript")
            return
        if turn_id is not None and tr.text and emit(turn_id, tr.text):
            self.last = (turn_id, end_sample, tr.text.strip())

    def turn_ended(self) -> None:
        """A turn's final decode is starting: a running partial's result will be dropped, and
        the next turn's partials need not wait for it."""
        self.partial_task, self.last = None, None

    def cancel(self) -> list[asyncio.Task]:
        """Cancel every running partial; returns them, to be awaited."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        return tasks

"""The Session's events on their way to the consumer (the TUI, a WebSocket connection).

The queue is bounded by policy rather than ``maxsize``, because :meth:`Outbox.put` must
never raise where events are made: a consumer ``session.max_events`` behind (a frozen
client, a full socket) gets the running reply cancelled once (``on_overflow``) with an
error saying why, and the bulk events (audio, text deltas, partials) are dropped until it
has caught up to half. Control events always go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from engine.events import ErrorEvent, ReplyAudio, ReplyTextDelta, SessionEvent, TranscriptPartial

if TYPE_CHECKING:
    from engine.config import SessionOptions

log = logging.getLogger(__name__)

BULK = (ReplyAudio, ReplyTextDelta, TranscriptPartial)  # what a stalled consumer loses first
_END = object()


class Outbox:
    def __init__(self, name: str, options: SessionOptions, on_overflow: Callable[[], object]):
        self.name = name
        self.options = options
        self.on_overflow = on_overflow
        self._queue: asyncio.Queue[SessionEvent | object] = asyncio.Queue()  # bounded by put()
        self.overflowing = False

    def qsize(self) -> int:
        return self._queue.qsize()

    def put(self, ev: SessionEvent) -> None:
        n, limit = self._queue.qsize(), self.options.max_events
        if n >= limit and not self.overflowing:
            self.overflowing = True
            log.warning("%s: the event consumer is %d events behind; cancelling the reply", self.name, n)
            self._queue.put_nowait(ErrorEvent("consumer_too_slow", f"the client is {n} events behind: "
                                              "the reply was cancelled and its audio dropped", "session"))
            self.on_overflow()
        elif self.overflowing and n <= limit // 2:
            self.overflowing = False
        if self.overflowing and isinstance(ev, BULK):
            return
        self._queue.put_nowait(ev)

    def end(self) -> None:
        """No more events: :meth:`stream` returns once the consumer has read what is queued."""
        self._queue.put_nowait(_END)

    async def stream(self) -> AsyncIterator[SessionEvent]:
        while True:
            ev = await self._queue.get()
            if ev is _END:
                return
            yield ev  # type: ignore[misc]

    def get_nowait(self) -> SessionEvent | None:
        try:
            ev = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return None if ev is _END else ev  # type: ignore[return-value]

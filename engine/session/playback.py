"""What the user hears of the agent's replies, and what is left of one when they cut in.

Playback is modelled on the client's side: reply audio is handed out as soon as it is
synthesised, and a client is assumed to play it in real time from the first chunk on (or
tells the session where it really is, :meth:`Playback.truncate`). Barge-in while a reply is
being made or played cancels what is left, reports how much was played, and the history
keeps only the heard part. :class:`Playback` owns the current reply and is the one place
that ends a reply (:meth:`finish`), so history, ``response.done`` and the turn's metrics
always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.clock import now_ns
from engine.errors import S2SError
from engine.events import Interruption, ResponseDone, SessionEvent, TurnMetricsEvent
from engine.history import ChatHistory

if TYPE_CHECKING:
    from engine.config import SessionOptions
    from engine.engine import Engine
    from engine.session.reply import Reply


class Playback:
    def __init__(self, engine: Engine, options: SessionOptions, history: ChatHistory,
                 emit: Callable[[SessionEvent], None]):
        self.engine = engine
        self.options = options
        self.history = history
        self.emit = emit
        self.current: Reply | None = None  # running, or the last one while it may still play

    @property
    def rate(self) -> int:
        return self.options.output_sample_rate

    def samples(self, ms: int) -> int:
        return int(ms * self.rate / 1000)

    @property
    def running(self) -> bool:
        """A reply is being made (not counting playback)."""
        return self.current is not None and not self.current.done

    @property
    def speaking(self) -> bool:
        """The client is playing the current reply (as far as the session can tell)."""
        r, rate = self.current, self.rate
        return (r is not None and r.first_out_ns is not None and r.status != "cancelled"
                and r.played_override_ms is None and (not r.done or r.played_ms(rate) < r.audio_ms(rate)))

    def truncate(self, response_id: str, played_ms: int) -> None:
        """The client says how much of a response it really played; fix the history."""
        r = self.current
        if r is None or r.id != response_id:
            raise S2SError(f"unknown or old response {response_id!r}")
        r.played_override_ms = max(0, int(played_ms))
        if r.done:
            self.history.replace_last_assistant(r.heard_text(self.samples(r.played_ms(self.rate))))

    def finish(self, r: Reply, status: str) -> None:
        """End a reply (completed, failed, cancelled): history, ResponseDone, its metrics."""
        if r.done:
            return
        r.done, r.status = True, status
        rate = self.rate
        cancelled = status == "cancelled"
        played = r.played_ms(rate) if cancelled else r.audio_ms(rate)
        heard = r.heard_text(self.samples(played)) if cancelled else r.text.strip()
        if status == "completed":
            self.history.add("assistant", r.text)
        elif cancelled:
            self.history.add("assistant", heard)
        self.emit(ResponseDone(r.id, status, r.text.strip(), heard, r.audio_ms(rate), played))
        r.metrics.interrupted = cancelled
        gpu = self.engine.gpu_memory_cached()  # measuring may run nvidia-smi: never on the loop
        r.metrics.gpu_mem_used_mb, r.metrics.gpu_mem_total_mb = gpu["used_mb"], gpu["total_mb"]
        self.engine.refresh_gpu_memory()  # fresh for next time, in the engine's own worker
        self.emit(TurnMetricsEvent(r.metrics))

    def interrupt(self, barge_in: bool) -> bool:
        """Cancel the running reply, or cut the playback of the last one. ``barge_in``: the
        user spoke over it (an Interruption event says how much they heard)."""
        r = self.current
        if r is None:
            return False
        rate = self.rate
        t = now_ns()
        played = r.played_ms(rate, t)
        if not r.done:
            r.cancel.set()
            if barge_in:
                self.emit(Interruption(r.id, played, r.heard_text(self.samples(played))))
            r.status = "cancelled"  # before the task can run again: it must not finish it otherwise
            if r.task is not None:
                r.task.cancel()
            r.played_override_ms = played
            self.finish(r, "cancelled")
            return True
        # finished generating, but the client may still be playing it
        if r.first_out_ns is not None and played < r.audio_ms(rate) and r.status == "completed":
            r.played_override_ms = played
            heard = r.heard_text(self.samples(played))
            if barge_in:
                self.emit(Interruption(r.id, played, heard))
            self.history.replace_last_assistant(heard)
            r.status = "cancelled"
            r.metrics.interrupted = True
            return True
        return False

"""Typed events that a :class:`engine.session.Session` gives out.

A session takes audio chunks (and text) in and gives these out, in order, on one queue.
The in-process TUI and the WebSocket server both consume exactly these; the wire
protocol (``remote.protocol``) maps them to Realtime events.

Ids: user turns are ``turn_N``, responses ``resp_N`` (N counts from 1 per session).
Audio positions (``*_ms``) are milliseconds of input audio since the session started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.metrics import TurnMetrics


@dataclass(frozen=True)
class SpeechStarted:
    """VAD heard the user start speaking (after the minimum speech duration).

    ``resumed``: the user went on shortly after their turn was ended (a pause mid-sentence):
    this speech continues turn ``turn_id`` (the same id), the reply to the first part is
    cancelled, and a new final transcript of the whole utterance replaces the first one."""

    turn_id: str
    audio_start_ms: int
    resumed: bool = False


@dataclass(frozen=True)
class SpeechStopped:
    """The user's turn ended (the end-of-turn policy decided, ``engine.turn``)."""

    turn_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class TranscriptPartial:
    """A provisional transcript of the turn so far, while the user still speaks."""

    turn_id: str
    text: str


@dataclass(frozen=True)
class TranscriptFinal:
    """The final transcript of a user turn (audio or text). ``script_ok``: see
    :class:`engine.stages.base.Transcript` (None for typed text)."""

    turn_id: str
    text: str
    language: str | None = None
    script_ok: bool | None = None


@dataclass(frozen=True)
class ResponseStarted:
    response_id: str
    turn_id: str | None


@dataclass(frozen=True)
class ReplyTextDelta:
    """Text the LLM wrote, as it writes it."""

    response_id: str
    delta: str


@dataclass(frozen=True)
class ReplySegment:
    """A speakable chunk (about a sentence) handed to TTS."""

    response_id: str
    index: int
    text: str


@dataclass(frozen=True, eq=False)
class ReplyAudio:
    """A chunk of reply audio: mono float32 in [-1, 1] at ``sample_rate``."""

    response_id: str
    segment: int
    samples: np.ndarray
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Interruption:
    """The user spoke over the reply (barge-in); the rest of the reply is dropped.

    ``played_ms`` is how much reply audio had been played when the user cut in;
    ``heard_text`` the part of the reply text that audio covers (what the history keeps).
    """

    response_id: str
    played_ms: int
    heard_text: str


@dataclass(frozen=True)
class ResponseDone:
    """A response ended. ``status`` is completed, cancelled (barge-in or cancel) or failed."""

    response_id: str
    status: Literal["completed", "cancelled", "failed"]
    text: str
    heard_text: str
    audio_ms: int
    played_ms: int


@dataclass(frozen=True)
class TurnMetricsEvent:
    """Per-turn latency breakdown, emitted once the turn's response ended."""

    metrics: TurnMetrics


@dataclass(frozen=True)
class ErrorEvent:
    """Something failed in one turn; the session carries on with the next."""

    code: str
    message: str
    stage: str | None = None
    turn_id: str | None = None


SessionEvent = (
    SpeechStarted
    | SpeechStopped
    | TranscriptPartial
    | TranscriptFinal
    | ResponseStarted
    | ReplyTextDelta
    | ReplySegment
    | ReplyAudio
    | Interruption
    | ResponseDone
    | TurnMetricsEvent
    | ErrorEvent
)

__all__ = [
    "SpeechStarted", "SpeechStopped", "TranscriptPartial", "TranscriptFinal", "ResponseStarted",
    "ReplyTextDelta", "ReplySegment", "ReplyAudio", "Interruption", "ResponseDone",
    "TurnMetricsEvent", "ErrorEvent", "SessionEvent", "field",
]

"""End-of-turn detection: the speech state machine over per-frame speech probabilities.

Backends only give probabilities (``VADBackend.probabilities``); this module owns the
QUIET -> STARTING -> SPEAKING -> STOPPING cycle with hysteresis, the minimum speech
duration and the longest end-of-turn silence. Whether the turn ends earlier is the turn
policy's call (``engine.turn``): the session asks it during the silence and, when it says
so, ends the turn with :meth:`TurnDetector.end_now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from engine.audio import ENGINE_RATE
from engine.config import VADOptions


class VADState(Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True)
class VADEvent:
    """``kind`` is "start", "pause" (the silence reached ``pause_ms``: the turn may be
    ending), "resume" (speech again after a pause: it was not the end) or "end". ``sample``
    is the first voiced sample (start) or the sample after the last voiced frame (pause, end),
    counted from the stream start; ``arrival_ns`` is when the audio of that frame arrived."""

    kind: str
    sample: int
    arrival_ns: int


class TurnDetector:
    """``end_ms``: the silence after which the turn ends whatever else (default
    ``options.end_of_turn_silence_ms``); ``pause_ms``: the silence that reports a "pause"
    (default ``options.speculative_asr_ms``; 0: none)."""

    def __init__(self, options: VADOptions, frame_samples: int = 512, sample_rate: int = ENGINE_RATE,
                 end_ms: int | None = None, pause_ms: int | None = None):
        self.o = options
        self.frame = frame_samples
        self.frame_ms = frame_ms = 1000 * frame_samples / sample_rate
        end_ms = options.end_of_turn_silence_ms if end_ms is None else end_ms
        spec = options.speculative_asr_ms if pause_ms is None else pause_ms
        self.min_speech_frames = max(1, round(options.min_speech_ms / frame_ms))
        self.eot_frames = max(1, round(end_ms / frame_ms))
        self.pause_frames = max(1, round(spec / frame_ms)) if 0 < spec < end_ms else 0
        self.reset()

    def reset(self) -> None:
        self.state = VADState.QUIET
        self._start_sample = 0
        self._start_arrival = 0
        self._voiced = 0
        self._silent = 0
        self._last_voiced_end = 0
        self._last_voiced_arrival = 0

    def update(self, frame_index: int, prob: float, arrival_ns: int) -> VADEvent | None:
        """Feed one frame's probability; returns an event when speech starts or a turn ends."""
        o, start = self.o, frame_index * self.frame
        voiced, silent = prob >= o.threshold, prob < o.neg_threshold
        if self.state is VADState.QUIET:
            if voiced:
                self.state, self._start_sample, self._start_arrival, self._voiced = (
                    VADState.STARTING, start, arrival_ns, 1)
                self._mark_voiced(start, arrival_ns)
                if self._voiced >= self.min_speech_frames:
                    return self._started()
            return None
        if self.state is VADState.STARTING:
            if silent:
                self.state = VADState.QUIET
                return None
            if voiced:
                self._voiced += 1
                self._mark_voiced(start, arrival_ns)
            if self._voiced >= self.min_speech_frames:
                return self._started()
            return None
        if self.state is VADState.SPEAKING:
            if silent:
                self.state, self._silent = VADState.STOPPING, 1
            else:
                self._mark_voiced(start, arrival_ns)
            return self._maybe_end()
        # STOPPING
        if voiced:
            paused = bool(self.pause_frames) and self._silent >= self.pause_frames
            self.state, self._silent = VADState.SPEAKING, 0
            self._mark_voiced(start, arrival_ns)
            return VADEvent("resume", start, arrival_ns) if paused else None
        self._silent += 1
        return self._maybe_end()

    def _mark_voiced(self, start: int, arrival_ns: int) -> None:
        self._last_voiced_end, self._last_voiced_arrival = start + self.frame, arrival_ns

    def _started(self) -> VADEvent:
        self.state = VADState.SPEAKING
        return VADEvent("start", self._start_sample, self._start_arrival)

    def _maybe_end(self) -> VADEvent | None:
        if self.state is VADState.STOPPING and self._silent >= self.eot_frames:
            self.state = VADState.QUIET
            return VADEvent("end", self._last_voiced_end, self._last_voiced_arrival)
        if self.state is VADState.STOPPING and self.pause_frames and self._silent == self.pause_frames:
            return VADEvent("pause", self._last_voiced_end, self._last_voiced_arrival)
        return None

    @property
    def silence_ms(self) -> float:
        """Silence since the last voiced frame, in audio time (0 unless stopping)."""
        return self._silent * self.frame_ms if self.state is VADState.STOPPING else 0.0

    def end_now(self) -> VADEvent | None:
        """End the turn at once (the turn policy decided); None if the user is not in a pause."""
        if self.state is not VADState.STOPPING:
            return None
        self.state = VADState.QUIET
        return VADEvent("end", self._last_voiced_end, self._last_voiced_arrival)

    @property
    def in_speech(self) -> bool:
        return self.state in (VADState.SPEAKING, VADState.STOPPING)

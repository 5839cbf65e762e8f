"""The Session's microphone audio: resampled once to the engine's rate, kept while it is needed.

Every position is a *stream sample*: the index of a 16 kHz sample since the session
started. :class:`InputAudio` holds the recent audio (the turn being spoken, its pre-roll,
and the last ended turn while the user may go on with it) and never more than
``MAX_BUFFER_S`` seconds: the oldest audio goes first.
"""

from __future__ import annotations

import numpy as np

from engine.audio import ENGINE_RATE, StreamResampler, to_float32

MAX_BUFFER_S = 600  # the longest user turn kept (10 minutes)


class InputAudio:
    def __init__(self, max_s: float = MAX_BUFFER_S):
        self.max_samples = int(max_s * ENGINE_RATE)
        self.buf = np.zeros(0, np.float32)
        self.start = 0  # the stream sample of buf[0]
        self._resamplers: dict[int, StreamResampler] = {}  # one stream per input rate
        self.pending = np.zeros(0, np.float32)  # samples not yet in a full VAD frame

    @property
    def end(self) -> int:
        """The stream sample after the newest one."""
        return self.start + len(self.buf)

    def convert(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """A chunk as float32 at the engine's rate (streaming: no clicks at chunk edges)."""
        x = to_float32(samples)
        if sample_rate == ENGINE_RATE:
            return x
        rs = self._resamplers.get(sample_rate)
        if rs is None:
            rs = self._resamplers[sample_rate] = StreamResampler(sample_rate, ENGINE_RATE)
        return rs.process(x)

    def append(self, chunk: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, chunk])
        if len(self.buf) > self.max_samples:  # bound memory: keep the newest audio
            self.drop_before(self.end - self.max_samples)

    def frames(self, chunk: np.ndarray, arrivals: list[tuple[int, int]], size: int) -> tuple[np.ndarray, list[int]]:
        """``chunk`` (after what is pending) cut into whole VAD frames of ``size`` samples, with
        each frame's arrival time: that of the piece that completed it. ``arrivals`` is
        (samples, arrival ns) of each piece of ``chunk``, in order."""
        data = np.concatenate([self.pending, chunk])
        n = len(data) // size
        self.pending = data[n * size:]
        if n == 0:
            return np.zeros((0, size), np.float32), []
        ends = np.cumsum([a for a, _ in arrivals]) + (len(data) - len(chunk))
        times = [t for _, t in arrivals]
        at = [times[min(int(np.searchsorted(ends, (i + 1) * size)), len(times) - 1)] for i in range(n)]
        return data[: n * size].reshape(n, size), at

    def between(self, start: int, stop: int | None = None) -> np.ndarray:
        """A copy of stream samples [start, stop) that are still held (stop: the newest)."""
        a = max(0, start - self.start)
        b = len(self.buf) if stop is None else max(0, stop - self.start)
        return self.buf[a:b].copy()

    def keep_last(self, n: int) -> None:
        """Forget all but the newest ``n`` samples."""
        if len(self.buf) > n:
            self.drop_before(self.end - n)

    def drop_before(self, sample: int) -> None:
        drop = min(max(0, sample - self.start), len(self.buf))
        self.buf, self.start = self.buf[drop:], self.start + drop

    def clear(self) -> None:
        """Forget everything held (the stream position goes on)."""
        self.drop_before(self.end)

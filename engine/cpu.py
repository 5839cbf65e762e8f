"""How many of this process's CPU cores were idle just before the user's pause.

The audio end-of-turn model is evidence, not the reply: when the machine has a spare core it
runs beside the turn's ASR and LLM and its answer lets the turn end early; when it has none (a
core kept busy by another program, other sessions on a pod), its compute is taken from the
reply's own, and the turn ends later than the fixed timer would (docs/turn.md, "Late
evidence"). So the session looks at the cores at the pause: :class:`IdleCores` reads
``/proc/stat`` (Linux) for the cores this process may run on (``os.sched_getaffinity``: a cpuset
or ``taskset`` is honoured) and tells how many of them were idle over about the last half second.
The session samples it on its VAD frames (a read of a small file, at most every :data:`STEP_S`)
and reads it at the pause, before the turn's own work starts (read later, the turn's ASR would
count as load). With too few idle, the audio model waits until the turn's reply is made.

Not a lower thread priority: a ``SCHED_IDLE`` worker was tried first and made things worse. The
model's Python code holds the GIL, and a thread the kernel does not schedule while the cores are
busy, holding the GIL, stops the event loop and every other Python thread with it (a Telugu run
with one core busy: ASR decodes of 950 ms against 300-360 ms, ``combined`` 1.10× the fixed timer).

The same reading sets the reply's LLM threads (:func:`threads_for`): one thread per idle core,
at most the configured number. A thread that has no core of its own is not extra compute but a
wait: llama.cpp's threads meet at a barrier after every operation, so one that the kernel has
put behind another program stalls the rest. With one core of two kept busy, Gemma 3 270M wrote
16 tokens in 547-613 ms on one thread against 1136-1212 ms on two (first token 258-300 against
498-549 ms); on a quiet machine two were faster (361-432 against 545-603 ms). Medians of three
runs of ``scripts/cpu_levers.py threads``, 2026-12-07, the 2-core AMD EPYC VM (docs/benchmarks.md).

:func:`rss_mib` reads the process's resident memory from ``/proc`` the same way.

Where ``/proc/stat`` is missing (macOS, Windows) :meth:`IdleCores.idle` is None: unknown, and
the model runs as before. A CPU quota without a cpuset (``docker --cpus``) is not seen: the
reading is then of the host's cores.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque

log = logging.getLogger(__name__)

STEP_S = 0.2
"""The least time between two readings of ``/proc/stat``."""
WINDOW_S = 0.5
"""The span :meth:`IdleCores.idle` looks back over (the newest reading against the newest one at
least this old; a shorter span when the readings go back less far, down to :data:`STEP_S`). The
session reads it at the pause, so the span is the end of the user's speech, when the session
itself only runs its VAD: what it sees busy is other sessions and other programs."""
STAT = "/proc/stat"


def parse_stat(text: str, cpus: set[int] | None) -> tuple[int, int] | None:
    """(idle, total) jiffies summed over the ``cpuN`` lines of ``/proc/stat`` for ``cpus``
    (None: all). Idle counts ``idle`` and ``iowait``; ``guest`` time is already in ``user``."""
    idle = total = seen = 0
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            n = int(name[3:])
        except ValueError:
            continue
        if cpus is not None and n not in cpus:
            continue
        v = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle += v[3] + (v[4] if len(v) > 4 else 0)
        total += sum(v)
        seen += 1
    return (idle, total) if seen else None


class IdleCores:
    """Idle cores of this process's CPUs over about the last :data:`WINDOW_S` (see the module docstring).

    ``sample()`` is cheap and may be called as often as wanted (it reads at most every
    :data:`STEP_S`); ``idle()`` answers from the readings so far. Not thread-safe: the engine
    calls both on its event loop."""

    def __init__(self, path: str = STAT, window_s: float = WINDOW_S, step_s: float = STEP_S):
        self.path, self.window_s, self.step_s = path, window_s, step_s
        try:
            self.cpus: set[int] | None = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = None
        self._readings: deque[tuple[float, int, int]] = deque(maxlen=int(window_s / step_s) + 3)
        self._broken = not os.path.exists(path)

    @property
    def cores(self) -> int:
        return len(self.cpus) if self.cpus else (os.cpu_count() or 1)

    def sample(self, now: float | None = None) -> None:
        if self._broken:
            return
        now = time.monotonic() if now is None else now
        if self._readings and now - self._readings[-1][0] < self.step_s:
            return
        try:
            with open(self.path, encoding="ascii") as f:
                got = parse_stat(f.read(), self.cpus)
        except (OSError, ValueError) as exc:
            log.info("CPU idle readings off: %s", exc)
            got = None
        if got is None:
            self._broken = True
            return
        self._readings.append((now, *got))

    def idle(self, now: float | None = None) -> float | None:
        """Idle cores (0 .. :attr:`cores`) over about the last :data:`WINDOW_S`, or None when
        there is no reading span yet (or no ``/proc/stat``)."""
        self.sample(now)
        if len(self._readings) < 2:
            return None
        t1, idle1, total1 = self._readings[-1]
        older = [r for r in self._readings if t1 - r[0] >= self.window_s]
        t0, idle0, total0 = older[-1] if older else self._readings[0]
        if t1 - t0 < self.step_s or total1 <= total0:
            return None
        return self.cores * (idle1 - idle0) / (total1 - total0)


def threads_for(idle: float | None, most: int) -> int:
    """Threads for a model call that starts after a pause where ``idle`` cores were idle: one per
    idle core (rounded), at least 1, at most ``most`` (the configured count). Unknown: ``most``."""
    if idle is None:
        return max(1, most)
    return max(1, min(most, int(idle + 0.5)))


def rss_mib() -> float | None:
    """This process's resident memory in MiB (Linux ``/proc/self/statm``), or None elsewhere:
    ``bench capacity``'s peaks, the server's ``--recycle-rss-mib`` and ``/healthz``."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20), 1)


__all__ = ["IdleCores", "parse_stat", "rss_mib", "threads_for"]

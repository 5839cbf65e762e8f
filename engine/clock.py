"""The one clock every latency figure comes from (monotonic, nanoseconds)."""

from __future__ import annotations

import time

now_ns = time.perf_counter_ns


def ms(a_ns: int | None, b_ns: int | None) -> float | None:
    """Milliseconds from ``a_ns`` to ``b_ns``; None if either stamp is missing."""
    if a_ns is None or b_ns is None:
        return None
    return (b_ns - a_ns) / 1e6

"""Summary statistics of the benchmarks (p50/p95 distributions) and where the figures were taken.

Shared by ``bench latency`` (:mod:`engine.bench.latency`), ``bench turn``, and the wire benchmark
(:mod:`remote.bench`).
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    return None if not values else float(np.percentile(np.asarray(values, float), q))


def rounded(v: float | None, nd: int = 1) -> float | None:
    """``v`` rounded to ``nd`` decimals (None stays None)."""
    return None if v is None else round(v, nd)


def dist(values: list[float | None]) -> dict[str, Any]:
    """n, p50, p95, min and max of the values that are not None (each None when there are none)."""
    vals = [v for v in values if v is not None]
    return {"n": len(vals), "p50": rounded(percentile(vals, 50)), "p95": rounded(percentile(vals, 95)),
            "min": rounded(min(vals) if vals else None), "max": rounded(max(vals) if vals else None)}


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    gpu = None
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=5)
        gpu = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


__all__ = ["dist", "machine", "percentile", "rounded"]

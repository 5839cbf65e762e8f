"""What the clients saw: each :class:`Turn`, and the :class:`Tally` of the whole soak; the
percentiles of the report (0.1 ms)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from remote.soak.options import ROLES


@dataclass
class Turn:
    """One turn as a client saw it (``t_s`` from the start of the soak, when it ended)."""

    role: str
    t_s: float
    ok: bool
    v2v_ms: float | None = None
    error: str | None = None


@dataclass
class Tally:
    """What the clients did, over the whole soak."""

    connections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    turns: list[Turn] = field(default_factory=list)
    hostile_sent: int = 0
    hostile_errors: int = 0
    hostile_unanswered: list[str] = field(default_factory=list)
    killed: int = 0
    stalled: int = 0
    stall_cut_by_server: int = 0
    refused: int = 0
    connect_failures: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        done = [t for t in self.turns if t.ok]
        return {
            "connections": dict(self.connections),
            "turns_completed": len(done),
            "turns_failed": len(self.turns) - len(done),
            "turns_by_role": {r: sum(1 for t in done if t.role == r) for r in ROLES},
            "v2v_ms": dist([t.v2v_ms for t in done]),
            "hostile": {"sent": self.hostile_sent, "errors_received": self.hostile_errors,
                        "unanswered": self.hostile_unanswered[:20]},
            "killed_mid_reply": self.killed,
            "stalled": self.stalled, "stall_cut_by_server": self.stall_cut_by_server,
            "refused_full": self.refused, "connect_failures": self.connect_failures,
            "failures": self.failures[:50],
        }


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` percentile of ``values`` to 0.1 (None for none)."""
    return round(float(np.percentile(values, q)), 1) if values else None


def dist(values: list[float | None]) -> dict[str, Any]:
    """n, p50, p95 and max of the values that are not None (the report's ``v2v_ms``)."""
    v = [x for x in values if x is not None]
    return {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95), "max": round(max(v), 1) if v else None}


__all__ = ["Tally", "Turn", "dist", "percentile"]

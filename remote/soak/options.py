"""The options of a soak (:class:`SoakOptions`), the roles a connection can take, and what a healthy
soak looks like (:class:`Bounds`, judged by :func:`remote.soak.report.verdict`)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError

ROLES = ("normal", "kill", "hostile", "stall")


@dataclass
class Bounds:
    """What a healthy soak looks like.

    Attributes:
        warmup_s: the RSS (and the fd/thread baseline) is judged after this long.
        rss_pct: after the warm-up, every RSS sample within this % of the first one after it.
        flat_slack: fds and threads after the warm-up at most this many above the warm-up's most.
        window_s: voice-to-voice p50 is compared per window of this length.
        latency_pct: each window's p50 at most this % above the first window's.
        min_turns: a window with fewer turns is not judged.
    """

    warmup_s: float = 300.0
    rss_pct: float = 3.0
    flat_slack: int = 2
    window_s: float = 300.0
    latency_pct: float = 10.0
    min_turns: int = 5


@dataclass
class SoakOptions:
    """One soak.

    Attributes:
        sessions: concurrent users. minutes: how long (real time).
        kill_share, hostile_share, stall_share: the share of connections in each role.
        stall_s: how long a ``stall`` client stops reading. sample_s: seconds between samples.
        turns_max: a connection holds 1..turns_max turns. seed: the role/turn draws.
    """

    sessions: int = 3
    minutes: float = 10.0
    kill_share: float = 0.15
    hostile_share: float = 0.15
    stall_share: float = 0.1
    stall_s: float = 45.0
    sample_s: float = 30.0
    turns_max: int = 2
    seed: int = 0

    def check(self) -> None:
        if self.sessions < 1:
            raise ConfigError("--sessions must be at least 1")
        if self.minutes <= 0 or self.sample_s <= 0:
            raise ConfigError("--minutes and --sample-s must be positive")
        shares = (self.kill_share, self.hostile_share, self.stall_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ConfigError("--kill-share, --hostile-share and --stall-share must be >= 0 and sum to at most 1")



__all__ = ["ROLES", "Bounds", "SoakOptions"]

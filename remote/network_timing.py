"""One turn's network time, measured from both ends of a Realtime connection (``docs/protocol.md``).

:class:`NetworkTiming` is what :meth:`remote.client.RealtimeClient.network_timing` gives;
:func:`one_way_ms` turns a raw one-way time into one that can be shown.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkTiming:
    """One turn's network time, measured from both ends (see ``docs/protocol.md``).

    Fields:
        response_id: the response (ids restart on a new connection).
        up_ms: client -> server: from this client handing the message that ended the user's turn
            (the audio chunk carrying the end of speech, a commit, a ``response.create``) to the
            socket until the server read it. None if it could not be matched.
        down_ms: server -> client: from the server handing the first ``response.output_audio.delta``
            to the socket until this client read it. None without reply audio.
        up_raw_ms / down_raw_ms: the same before clamping (a one-way time depends on the clock
            offset estimate, whose error is at most ``offset_rtt_ms`` / 2, so a leg of a fast link
            can come out slightly negative; it is then shown as 0 and ``clamped`` is True).
        offset_rtt_ms: the round trip of the ping the clock offset came from.
        clamped: a leg was below 0 and was clamped.
    """

    response_id: str
    up_ms: float | None
    down_ms: float | None
    up_raw_ms: float | None = None
    down_raw_ms: float | None = None
    offset_rtt_ms: float | None = None
    clamped: bool = False

    @property
    def total_ms(self) -> float | None:
        """Up plus down: the network's share of this turn's voice-to-voice time.

        The offset cancels in the sum (it is added to one leg and taken from the other), so the
        total does not depend on the offset estimate at all. None unless both legs were measured.
        """
        if self.up_raw_ms is None or self.down_raw_ms is None or self.up_ms is None or self.down_ms is None:
            return None
        return max(0.0, self.up_raw_ms + self.down_raw_ms)


def one_way_ms(raw_ms: float | None, offset_rtt_ms: float | None) -> tuple[float | None, bool]:
    """A raw one-way time to what can be shown: (ms or None, clamped).

    Below 0 by no more than the offset's possible error (half the ping's round trip, plus 1 ms of
    timer slack) is clamped to 0; further below, the estimate is inconsistent and None is returned
    rather than a made-up number.
    """
    if raw_ms is None:
        return None, False
    if raw_ms >= 0:
        return raw_ms, False
    if raw_ms >= -((offset_rtt_ms or 0.0) / 2 + 1.0):
        return 0.0, True
    return None, False


__all__ = ["NetworkTiming", "one_way_ms"]

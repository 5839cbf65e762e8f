"""The latency panel: the last turn's stages as labelled bars with ms, the voice-to-voice
total (network shown apart in remote mode), and p50/p95 over the last N turns.

In remote mode the network row is measured per turn (``remote.client.NetworkTiming``): up (the
audio that ended the turn, client -> server) plus down (the first reply audio, server -> client).
The sum does not depend on the clock offset estimate; the two legs do, so they are marked ≈.
A leg that could not be measured shows "—", never a guess. When a turn ran speculatively
(during the end-of-turn silence), the ASR decode it hid there is shown dimmed under "ASR final",
which counts only what was left after the silence. Under "end-of-turn wait" (the silence the
turn really waited), a dimmed line says what ended the turn and how sure it was."""

from __future__ import annotations

from collections import deque

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from engine.metrics import STAGES
from s2s_tui.messages import TurnLatency

BAR = 24


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def _bar(ms: float | None, scale: float) -> str:
    if ms is None or scale <= 0:
        return " " * BAR
    n = ms / scale * BAR
    full = int(n)
    part = " ▏▎▍▌▋▊▉"[int((n - full) * 8)] if full < BAR else ""
    return ("█" * min(full, BAR) + part).ljust(BAR)[:BAR]


class LatencyPanel(Widget):
    """``show(latency)`` adds a turn; the panel re-renders from its reactives."""

    last: reactive[TurnLatency | None] = reactive(None, always_update=True)
    remote: reactive[bool] = reactive(False)

    def __init__(self, history: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history: deque[TurnLatency] = deque(maxlen=history)

    def show(self, latency: TurnLatency) -> None:
        self.history.append(latency)
        self.last = latency

    def render(self) -> Table | Text:
        lt = self.last
        if lt is None:
            return Text("No turn yet: speak (or wait for the replay).\nEach stage of the next turn shows here.",
                        style="dim")
        rows: list[tuple[str, float | None, str]] = [(label, lt.stages_ms.get(key), "cyan") for key, label, _, _ in STAGES]
        legs: list[tuple[str, float | None]] = []
        if self.remote:
            # measured: up (the audio that ended the turn) + down (the first reply audio); the sum
            # is independent of the clock offset, each leg is an estimate from it (hence the ≈)
            rows.append(("network (round trip)", lt.network_ms, "yellow"))
            legs = [(" ↑ mic → engine", lt.network_up_ms), (" ↓ engine → speaker", lt.network_down_ms)]
        total = lt.total_ms
        scale = max([v for _, v, _ in rows if v] + [total or 0.0, 1.0])
        table = Table.grid(padding=(0, 1))
        table.add_column(width=20)
        table.add_column(width=BAR)
        table.add_column(justify="right", width=8)
        title = f"last turn ({lt.turn_id or '?'})" + ("  ✂ interrupted" if lt.interrupted else "")
        table.add_row(Text(title, style="bold"), "", "")
        for label, v, colour in rows:
            table.add_row(label, Text(_bar(v, scale), style=colour), "—" if v is None else f"{v:.0f} ms")
            if label == "end-of-turn wait" and lt.turn_policy:
                table.add_row(Text(f" ↳ {lt.turn_policy}", style="dim"), Text(_decided(lt), style="dim"), "")
            if label == "ASR final" and lt.speculative and lt.asr_decode_ms:
                # the decode ran while the end-of-turn silence was still being waited for
                table.add_row(Text(" ↳ in the silence", style="dim"),
                              Text(_bar(lt.asr_decode_ms, scale), style="dim cyan"),
                              Text(f"({lt.asr_decode_ms:.0f} ms)", style="dim"))
        for label, v in legs:
            table.add_row(Text(label, style="dim"), Text(_bar(v, scale), style="dim yellow"),
                          Text("—" if v is None else f"≈{v:.0f} ms", style="dim"))
        table.add_row(Text("voice-to-voice", style="bold"), Text(_bar(total, scale), style="bold green"),
                      Text("—" if total is None else f"{total:.0f} ms", style="bold"))
        table.add_row("", "", "")
        n = len(self.history)
        table.add_row(Text(f"last {n} turn{'s' if n != 1 else ''}", style="bold"), Text("p50      p95", style="dim"), "")
        keys = [(k, label) for k, label, _, _ in STAGES]
        for key, label in keys:
            vals = [h.stages_ms.get(key) for h in self.history]
            nums = [v for v in vals if v is not None]
            table.add_row(Text(label, style="dim"), _pp(nums), "")
        if self.remote:
            table.add_row(Text("network", style="dim"), _pp([h.network_ms for h in self.history if h.network_ms is not None]), "")
        table.add_row(Text("voice-to-voice", style="bold"),
                      _pp([h.total_ms for h in self.history if h.total_ms is not None]), "")
        return table


def _decided(lt: TurnLatency) -> str:
    """What ended the turn, e.g. "p(complete) 0.91" or "resumed ×1"."""
    parts = []
    if lt.turn_probability is not None:
        parts.append(f"p(complete) {lt.turn_probability:.2f}")
    if lt.resumed:
        parts.append(f"resumed ×{lt.resumed}")
    return "  ".join(parts)


def _pp(values: list[float]) -> Text:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    if p50 is None or p95 is None:
        return Text("—", style="dim")
    return Text(f"{p50:>5.0f} ms {p95:>5.0f} ms")

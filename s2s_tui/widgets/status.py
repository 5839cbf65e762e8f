"""The status bar: mode and target, connection state (with a retry countdown), mic level
meter, agent state, GPU memory and the models loaded. All state is in reactives; looks
are in ``app.tcss`` (the ``-ready``/``-retrying``/``-failed`` classes)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

STATE_LABELS = {
    "listening": "● listening",
    "user_speaking": "◉ you are speaking",
    "thinking": "◌ thinking",
    "speaking": "♪ agent speaking",
    "muted": "✕ mic muted",
    "recording": "● recording (space to send)",
}


def meter(level_db: float, width: int = 12) -> str:
    """A bar for -60..0 dBFS."""
    frac = min(1.0, max(0.0, (level_db + 60.0) / 60.0))
    full = int(round(frac * width))
    return "█" * full + "·" * (width - full)


def memory(used_mb: float | None, total_mb: float | None) -> str:
    if used_mb is None or total_mb is None:
        return "CPU"
    return f"GPU {used_mb / 1024:.1f}/{total_mb / 1024:.1f} GB"


class StatusBar(Widget):
    """Two lines of status; ``now`` is injectable so snapshots are deterministic."""

    mode: reactive[str] = reactive("in-process")
    target: reactive[str] = reactive("")
    link_status: reactive[str] = reactive("loading")
    link_detail: reactive[str] = reactive("")
    retry_at: reactive[float | None] = reactive(None)
    mic_db: reactive[float] = reactive(-100.0)
    gated: reactive[bool] = reactive(False)
    agent_state: reactive[str] = reactive("listening")
    gpu_used: reactive[float | None] = reactive(None)
    gpu_total: reactive[float | None] = reactive(None)
    rtt_ms: reactive[float | None] = reactive(None)
    wire: reactive[str] = reactive("")
    models: reactive[str] = reactive("")
    audio: reactive[str] = reactive("")
    tick: reactive[int] = reactive(0)

    def on_mount(self) -> None:
        self.set_interval(0.5, self._tick)

    def _tick(self) -> None:
        if self.link_status == "retrying":
            self.tick += 1

    def watch_link_status(self, status: str) -> None:
        for s in ("loading", "connecting", "ready", "retrying", "failed", "closed"):
            self.set_class(s == status, f"-{s}")

    def render(self) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f" {self.mode.upper()} ", style="bold reverse")
        t.append(f" {self.target}  ")
        status = self.link_status
        style = {"ready": "green", "retrying": "yellow", "failed": "bold red", "closed": "red"}.get(status, "cyan")
        label = {"ready": "● ready", "loading": "◌ loading", "connecting": "◌ connecting",
                 "retrying": "↻ retrying", "failed": "✕ failed", "closed": "✕ closed"}.get(status, status)
        if status == "retrying" and self.retry_at is not None:
            label += f" in {max(0.0, self.retry_at - time.monotonic()):.0f} s"
        t.append(label, style=style)
        if self.link_detail and status != "ready":
            t.append(f"  {self.link_detail}", style="dim")
        if self.rtt_ms is not None:
            t.append(f"  rtt {self.rtt_ms:.0f} ms", style="dim")
        if self.wire:
            t.append(f"  {self.wire}", style="dim")
        t.append("\n")
        t.append(" mic ", style="bold")
        t.append(meter(self.mic_db), style="green" if self.mic_db > -45 else "dim green")
        t.append(f" {self.mic_db:4.0f} dB", style="dim")
        if self.gated:
            t.append(" (echo gated)", style="yellow")
        t.append("   ")
        t.append(STATE_LABELS.get(self.agent_state, self.agent_state), style="bold")
        t.append("   ")
        t.append(memory(self.gpu_used, self.gpu_total), style="magenta")
        if self.models:
            t.append(f"   {self.models}", style="dim")
        return t

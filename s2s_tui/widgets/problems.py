"""The problem line: the latest problem (no mic, device busy, engine unreachable...) stays
visible under the conversation until another replaces it; ``Problem`` messages also toast."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

ICONS = {"error": "✕", "warning": "⚠", "information": "ℹ"}


class ProblemLine(Widget):
    text: reactive[str] = reactive("")
    severity: reactive[str] = reactive("information")

    def watch_text(self, text: str) -> None:
        self.display = bool(text)

    def watch_severity(self, severity: str) -> None:
        for s in ICONS:
            self.set_class(s == severity, f"-{s}")

    def render(self) -> Text:
        return Text(f"{ICONS.get(self.severity, '')} {self.text}")

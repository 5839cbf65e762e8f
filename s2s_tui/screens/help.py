"""``?``: the keys and what each mode does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """[b]s2s-tui — talk Telugu with the agent[/b]

[b]m[/b]       mute / unmute the microphone
[b]space[/b]   push-to-talk: start talking, press again to send (push-to-talk mode)
[b]t[/b]       switch hands-free (voice activity) / push-to-talk
[b]i[/b] [b]esc[/b]   interrupt the agent (stop the reply now)
[b]r[/b]       reset the conversation (the agent forgets it)
[b]d[/b]       pick audio devices
[b]?[/b]       this help
[b]q[/b]       quit

Hands-free: just talk; the engine hears when you stop. Talking over the
agent interrupts it; its own voice coming back through the mic does not
(the echo gate, see docs/tui.md).

Latency: each stage of the last turn (end-of-turn wait, ASR, LLM first
token, first sentence, TTS first audio) and the voice-to-voice total;
in remote mode the network round trip (up + down, measured per turn) is shown apart.

[dim]any key closes this[/dim]"""


class HelpScreen(ModalScreen[None]):
    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(HELP, markup=True)

    def on_key(self) -> None:
        self.dismiss()

    def on_click(self) -> None:
        self.dismiss()

"""The conversation: user turns (partial transcripts settle into the final text) and agent
turns that stream in; an interrupted reply shows the heard part and where it was cut.

Turns render as :class:`~s2s_tui.widgets.safetext.SafeText`, so Telugu lines keep the screen
aligned whichever way the terminal counts vowel signs.
"""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from engine.script import script_warning
from s2s_tui.widgets.safetext import SafeText


class UserTurn(Static):
    """One user turn; ``partial`` while speaking, ``final`` once transcribed; ``wrong_script``
    when the final transcript is not in the language's script (the recogniser did not understand)."""

    text: reactive[str] = reactive("")
    final: reactive[bool] = reactive(False)
    wrong_script: reactive[bool] = reactive(False)

    def __init__(self, turn_id: str) -> None:
        super().__init__(classes="turn user")
        self.turn_id = turn_id
        self.language: str | None = None

    def render(self) -> SafeText:
        t = Text("you  ", style="bold blue")
        if self.final:
            t.append(self.text or "∅ (nothing recognised)", style="" if self.text else "dim italic")
            if self.wrong_script:
                t.append(f"  ⚠ {script_warning(self.language)}", style="bold yellow")
        else:
            t.append(self.text or "…", style="dim italic")
        return SafeText(t)

    def watch_final(self, final: bool) -> None:
        self.set_class(not final, "-partial")

    def watch_wrong_script(self, wrong: bool) -> None:
        self.set_class(wrong, "-wrong-script")


class AgentTurn(Static):
    """One reply; ``heard`` and ``cut_ms`` are set when it was interrupted."""

    text: reactive[str] = reactive("")
    status: reactive[str] = reactive("in_progress")
    heard: reactive[str | None] = reactive(None)
    cut_ms: reactive[int | None] = reactive(None)

    def __init__(self, response_id: str) -> None:
        super().__init__(classes="turn agent")
        self.response_id = response_id

    def render(self) -> SafeText:
        t = Text("agent  ", style="bold green")
        if self.status == "cancelled":
            heard = (self.heard or "").strip()
            full = self.text.strip()
            t.append(heard)
            rest = full[len(heard):] if heard and full.startswith(heard) else ("" if heard else full)
            if rest.strip():  # the unheard words, after a space (heard_text is whole words)
                t.append(" " if heard else "")
                t.append(rest.strip(), style="dim strike")
            t.append(f"  ✂ interrupted at {(self.cut_ms or 0) / 1000:.1f} s", style="bold yellow")
        elif self.status == "failed":
            t.append(self.text or "", style="")
            t.append("  ✕ failed", style="bold red")
        else:
            t.append(self.text or "…", style="" if self.text else "dim")
        return SafeText(t)

    def watch_status(self, status: str) -> None:
        self.set_class(status == "cancelled", "-interrupted")
        self.set_class(status == "in_progress", "-streaming")


class ConversationView(VerticalScroll):
    """Turns keyed by id; every method is idempotent (events may repeat or come late)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._users: dict[str, UserTurn] = {}
        self._agents: dict[str, AgentTurn] = {}

    def user(self, turn_id: str) -> UserTurn:
        w = self._users.get(turn_id)
        if w is None:
            w = self._users[turn_id] = UserTurn(turn_id)
            self.mount(w)
            self.scroll_end(animate=False)
        return w

    def agent(self, response_id: str) -> AgentTurn:
        w = self._agents.get(response_id)
        if w is None:
            w = self._agents[response_id] = AgentTurn(response_id)
            self.mount(w)
            self.scroll_end(animate=False)
        return w

    def partial(self, turn_id: str, text: str) -> None:
        w = self.user(turn_id)
        if not w.final:
            w.text = text

    def final(self, turn_id: str, text: str, script_ok: bool | None = None, language: str | None = None) -> None:
        w = self.user(turn_id)
        w.language = language
        w.text, w.final, w.wrong_script = text, True, script_ok is False
        self.scroll_end(animate=False)

    def reply_text(self, response_id: str, delta: str) -> None:
        w = self.agent(response_id)
        w.text += delta
        self.scroll_end(animate=False)

    def reply_done(self, response_id: str, status: str, text: str, heard: str, played_ms: int) -> None:
        w = self.agent(response_id)
        if text:
            w.text = text
        if status == "cancelled":
            if w.status != "cancelled" or heard:
                w.heard = heard if heard or w.heard is None else w.heard
                w.cut_ms = played_ms if played_ms or w.cut_ms is None else w.cut_ms
            w.status = "cancelled"
        elif w.status != "cancelled":
            w.status = status

    def cut(self, response_id: str, played_ms: int, heard: str | None = None) -> None:
        """The user interrupted a reply locally (key or barge-in) after ``played_ms``."""
        w = self.agent(response_id)
        w.cut_ms = played_ms
        if heard is not None:
            w.heard = heard
        elif w.heard is None:
            w.heard = _heard_share(w.text, played_ms)
        w.status = "cancelled"

    def clear(self) -> None:
        self._users.clear()
        self._agents.clear()
        self.remove_children()


def _heard_share(text: str, played_ms: int, ms_per_word: int = 450) -> str:
    """A guess of the heard words until the engine says (about 450 ms per Telugu word)."""
    words = text.split()
    return " ".join(words[: max(0, played_ms // ms_per_word)])

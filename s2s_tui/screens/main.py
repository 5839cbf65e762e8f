"""The main screen: status bar, conversation, latency panel, problem line, footer.

Every UI message of :mod:`s2s_tui.messages` lands here (the App forwards them), whichever
agent link produced it. The agent state (listening / you speaking / thinking / speaking)
is derived from those messages and the player, ten times a second.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from s2s_tui import messages as m
from s2s_tui.widgets.conversation import ConversationView
from s2s_tui.widgets.latency import LatencyPanel
from s2s_tui.widgets.problems import ProblemLine
from s2s_tui.widgets.status import StatusBar


class MainScreen(Screen):
    def __init__(self, mode: str, target: str, remote: bool) -> None:
        super().__init__()
        self.mode, self.target, self.remote = mode, target, remote
        self.user_speaking = False
        self.waiting_reply = False
        self.reply_running = False

    def compose(self) -> ComposeResult:
        status = StatusBar(id="status")
        status.mode, status.target = self.mode, self.target
        yield status
        with Horizontal(id="body"):
            latency = LatencyPanel(id="latency")
            latency.border_title = "latency"
            latency.remote = self.remote
            yield latency
            # rightmost, open on the right: Telugu lines are followed by blanks only (widgets/safetext.py)
            conversation = ConversationView(id="conversation")
            conversation.border_title = "conversation "  # the space: no right border to pad the title
            yield conversation
        yield ProblemLine(id="problem")
        yield Footer()

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def conversation(self) -> ConversationView:
        return self.query_one(ConversationView)

    @property
    def latency(self) -> LatencyPanel:
        return self.query_one(LatencyPanel)

    def agent_state(self, playing: bool, muted: bool, recording: bool | None) -> str:
        if recording:
            return "recording"
        if self.user_speaking:
            return "user_speaking"
        if playing:
            return "speaking"
        if self.waiting_reply or self.reply_running:
            return "thinking"
        return "muted" if muted else "listening"

    # --- messages -------------------------------------------------------------------------

    @on(m.LinkState)
    def _link(self, msg: m.LinkState) -> None:
        s = self.status
        s.link_status, s.link_detail, s.retry_at = msg.status, msg.detail, msg.retry_at
        if msg.status == "ready":
            self.waiting_reply = self.reply_running = self.user_speaking = False

    @on(m.EngineInfo)
    def _info(self, msg: m.EngineInfo) -> None:
        self.status.models = "  ".join(f"{k}:{v}" for k, v in msg.models.items())

    @on(m.Stats)
    def _stats(self, msg: m.Stats) -> None:
        s = self.status
        if msg.gpu_used_mb is not None or msg.gpu_total_mb is not None or not self.remote:
            s.gpu_used, s.gpu_total = msg.gpu_used_mb, msg.gpu_total_mb
        if msg.rtt_ms is not None:
            s.rtt_ms = msg.rtt_ms
        if msg.wire is not None:
            s.wire = msg.wire

    @on(m.MicLevel)
    def _level(self, msg: m.MicLevel) -> None:
        self.status.mic_db, self.status.gated = msg.level_db, msg.gated

    @on(m.UserSpeechStarted)
    def _speech_started(self, msg: m.UserSpeechStarted) -> None:
        self.user_speaking = True
        self.conversation.user(msg.turn_id)

    @on(m.UserSpeechStopped)
    def _speech_stopped(self, msg: m.UserSpeechStopped) -> None:
        self.user_speaking = False
        self.waiting_reply = True

    @on(m.UserPartial)
    def _partial(self, msg: m.UserPartial) -> None:
        self.conversation.partial(msg.turn_id, msg.text)

    @on(m.UserFinal)
    def _final(self, msg: m.UserFinal) -> None:
        self.user_speaking = False
        self.conversation.final(msg.turn_id, msg.text, msg.script_ok, msg.language)
        if not msg.text.strip():
            self.waiting_reply = False

    @on(m.ReplyStarted)
    def _reply_started(self, msg: m.ReplyStarted) -> None:
        self.waiting_reply, self.reply_running = False, True
        self.conversation.agent(msg.response_id)

    @on(m.ReplyText)
    def _reply_text(self, msg: m.ReplyText) -> None:
        self.conversation.reply_text(msg.response_id, msg.delta)

    @on(m.ReplyDone)
    def _reply_done(self, msg: m.ReplyDone) -> None:
        self.reply_running = False
        self.conversation.reply_done(msg.response_id, msg.status, msg.text, msg.heard_text, msg.played_ms)

    @on(m.TurnLatency)
    def _latency(self, msg: m.TurnLatency) -> None:
        self.latency.show(msg)

    @on(m.AudioStatus)
    def _audio(self, msg: m.AudioStatus) -> None:
        self.status.audio = f"{msg.input} → {msg.output}"

    @on(m.Problem)
    def _problem(self, msg: m.Problem) -> None:
        line = self.query_one(ProblemLine)
        line.severity, line.text = msg.severity, f"{msg.source}: {msg.text}"
        self.app.notify(msg.text, title=msg.source, severity=msg.severity, timeout=6)

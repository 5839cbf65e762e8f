"""The App: thin. It wires an agent link, the audio source/sink and the pump together,
shows :class:`~s2s_tui.screens.main.MainScreen`, and maps keys to actions. Everything the
user sees lives in screens and widgets; every look lives in ``app.tcss``.

Build it with :func:`s2s_tui.cli.build_app` (the CLI and the tests use the same factory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message

from s2s_tui import messages as m
from s2s_tui.audio import AudioUnavailable, ClockSink, ReplaySource, Sink, Source
from s2s_tui.link import AgentLink
from s2s_tui.pump import AudioPump
from s2s_tui.screens.devices import DevicesScreen
from s2s_tui.screens.help import HelpScreen
from s2s_tui.screens.main import MainScreen

log = logging.getLogger(__name__)

SourceFactory = Callable[[], Source]
SinkFactory = Callable[[int], Sink]


class S2SApp(App):
    """``link``: the agent; ``make_source``/``make_sink``: audio (None source: no mic)."""

    CSS_PATH = "app.tcss"
    TITLE = "s2s"
    BINDINGS = [
        Binding("m", "mute", "mute"),
        Binding("space", "talk", "talk", show=False),
        Binding("t", "toggle_ptt", "hands-free/PTT"),
        Binding("i", "interrupt", "interrupt"),
        Binding("escape", "interrupt", "interrupt", show=False),
        Binding("r", "reset", "reset"),
        Binding("d", "devices", "devices"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, link: AgentLink, make_source: SourceFactory | None, make_sink: SinkFactory,
                 push_to_talk: bool = False, start_audio: bool = True, echo: str = "auto") -> None:
        super().__init__()
        self.link = link
        self.make_source, self.make_sink = make_source, make_sink
        self.push_to_talk = push_to_talk
        self.start_audio = start_audio
        self.echo = echo
        self.source: Source | None = None
        self.sink: Sink | None = None
        self.pump: AudioPump | None = None
        self.main = MainScreen(link.mode, link.target, remote=link.mode == "remote")
        self._ticks = 0
        self._was_ready = False

    # --- lifecycle ------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(self.main)
        self.sink = self._open_sink()
        self.link.attach(self.main.post_message, self.sink.buffer)
        if self.push_to_talk:
            self.link.set_turn_detection(False)
        if self.start_audio:
            self.source = self._open_source()
        self.pump = AudioPump(self.source, self.sink, self.link, self.echo)
        self.pump.recording = not self.push_to_talk
        self.post_audio_status()
        self.set_interval(0.02, self._tick)
        self.run_link()

    def _open_source(self) -> Source | None:
        if self.make_source is None:
            return None
        try:
            source = self.make_source()
            if not isinstance(source, ReplaySource):  # a replay starts when the engine is ready
                source.start()
            return source
        except AudioUnavailable as exc:
            self.main.post_message(m.Problem("mic", f"{exc}. Running without a microphone (try --replay FILE.wav)."))
        except Exception as exc:  # noqa: BLE001 - a bad replay file is an S2SError: shown, not raised
            self.main.post_message(m.Problem("mic", str(exc)))
        return None

    def _open_sink(self) -> Sink:
        rate = self.link.reply_rate
        try:
            sink = self.make_sink(rate)
            sink.start()
            return sink
        except AudioUnavailable as exc:
            self.main.post_message(m.Problem("speaker", f"{exc}. Replies are timed but not heard.", "warning"))
        sink = ClockSink(rate)
        sink.start()
        return sink

    def post_audio_status(self) -> None:
        src = self.source.description if self.source is not None else "no microphone"
        out = self.sink.description if self.sink is not None else "no speaker"
        self.main.post_message(m.AudioStatus(src, out))

    @work(exclusive=True, group="link")
    async def run_link(self) -> None:
        try:
            await self.link.run()
        except Exception as exc:  # noqa: BLE001 - never crash the UI: show it
            log.exception("agent link")
            self.main.post_message(m.LinkState("failed", f"{type(exc).__name__}: {exc}", fatal=True))
            self.main.post_message(m.Problem("engine", f"{type(exc).__name__}: {exc}"))

    def _tick(self) -> None:
        if self.pump is None:
            return
        if self.link.ready != self._was_ready:
            self._was_ready = self.link.ready
            if self.link.ready and isinstance(self.source, ReplaySource):
                self.source.restart()  # the replay starts (again) once the engine listens
        self.pump.tick()
        self._ticks += 1
        if self._ticks % 5 == 0:
            self.main.post_message(m.MicLevel(self.pump.last_level_db,
                                              self.pump.echo.holding and self._far_active()))
            playing = bool(self.sink and self.sink.buffer.playing)
            ptt_rec = self.push_to_talk and self.pump.recording
            try:
                status = self.main.status
            except NoMatches:  # the screen is still composing (first ticks) or being torn down
                return
            status.agent_state = self.main.agent_state(playing, self.pump.muted, ptt_rec)

    def _far_active(self) -> bool:
        return bool(self.sink and self.sink.buffer.playing)

    async def on_unmount(self) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        for part in (self.source, self.sink):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # noqa: BLE001 - closing must not raise
                    log.exception("stopping audio")
        self.source = None
        try:
            await self.link.close()
        except Exception:  # noqa: BLE001 - closing must not raise
            log.exception("closing link")

    def post(self, msg: Message) -> None:
        self.main.post_message(msg)

    # --- actions --------------------------------------------------------------------------

    def action_mute(self) -> None:
        if self.pump is not None:
            self.pump.muted = not self.pump.muted
            self.notify("microphone muted" if self.pump.muted else "microphone on", timeout=2)

    def action_talk(self) -> None:
        if not self.push_to_talk or self.pump is None:
            return
        if not self.pump.recording:
            self.action_interrupt()
            self.link.clear_input()
            self.pump.recording = True
        else:
            self.pump.recording = False
            self.link.commit()

    def action_toggle_ptt(self) -> None:
        self.push_to_talk = not self.push_to_talk
        self.link.set_turn_detection(not self.push_to_talk)
        if self.pump is not None:
            self.pump.recording = not self.push_to_talk
        self.notify("push-to-talk: space starts, space sends" if self.push_to_talk else "hands-free", timeout=3)

    def action_interrupt(self) -> None:
        buf = self.sink.buffer if self.sink is not None else None
        rid = (buf.current if buf is not None else None) or self.link.last_response
        played = buf.played_ms(rid) if (buf is not None and rid) else 0
        active = (buf is not None and buf.playing) or self.main.reply_running
        if buf is not None:
            buf.flush()
        self.link.interrupt(rid, played)
        if rid and active:
            self.main.conversation.cut(rid, played)
            self.main.reply_running = False

    def action_reset(self) -> None:
        self.action_interrupt()
        self.link.reset()
        self.main.conversation.clear()
        self.notify("conversation reset", timeout=2)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_devices(self) -> None:
        self.push_screen(DevicesScreen(), self._picked_device)

    def _picked_device(self, picked: tuple[str, int] | None) -> None:
        if picked is None:
            return
        kind, index = picked
        from s2s_tui.audio import MicSource, SpeakerSink

        if kind == "input":
            if self.source is not None:
                self.source.stop()
            self.make_source = lambda: MicSource(index)
            self.source = self._open_source()
            if self.pump is not None:
                self.pump.set_source(self.source)
        else:
            old = self.sink
            self.make_sink = lambda rate: SpeakerSink(rate, index)
            new = self._open_sink()
            if old is not None:
                old.stop()
            self.sink = new
            self.link.attach(self.main.post_message, new.buffer)
            if self.pump is not None:
                self.pump.sink = new
        self.post_audio_status()

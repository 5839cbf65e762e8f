"""The TUI without models: a snapshot of the main screen in a fixed state fed through the
same messages a link posts, keys, and audio-device problems through a fake sounddevice
module (the boundary the app really uses). Built with the CLI's factory."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from s2s_tui import audio
from s2s_tui import messages as m
from s2s_tui.cli import build_app, build_parser
from s2s_tui.link import AgentLink
from s2s_tui.screens.help import HelpScreen

SIZE = (160, 48)


class ScriptedLink(AgentLink):
    """A link that posts a fixed conversation (deterministic: no models, no clocks)."""

    mode = "remote"
    target = "ws://gpu-box:8765/v1/realtime"

    def __init__(self, script: list[m._Msg] | None = None) -> None:
        super().__init__()
        self.script = script or []
        self.sent: list[np.ndarray] = []
        self.calls: list[str] = []

    async def run(self) -> None:
        for msg in self.script:
            self.post(msg)
        self.ready = True
        await asyncio.Event().wait()

    def send_audio(self, samples: np.ndarray) -> None:
        self.sent.append(samples)

    def interrupt(self, response_id, played_ms) -> None:
        self.calls.append(f"interrupt {response_id} {played_ms}")

    def reset(self) -> None:
        self.calls.append("reset")

    def commit(self) -> None:
        self.calls.append("commit")

    def clear_input(self) -> None:
        self.calls.append("clear")


STAGES = {"eot_wait_ms": 602.0, "asr_ms": 412.0, "llm_first_token_ms": 188.0, "first_sentence_ms": 141.0,
          "tts_ms": 96.0, "out_ms": 1.0}
SCRIPT = [
    m.LinkState("ready", "connected"),
    m.EngineInfo("gpu", "cuda", {"vad": "silero-vad", "asr": "whisper-large-v3-turbo", "llm": "gemma-3-1b-it",
                                 "tts": "mms-tts-tel"}),
    m.Stats(5321.0, 81559.0, 23.0),
    m.UserSpeechStarted("turn_1"),
    m.UserFinal("turn_1", "నమస్కారం, ఈ రోజు వాతావరణం ఎలా ఉంది?"),
    m.ReplyStarted("resp_1", "turn_1"),
    m.ReplyText("resp_1", "ఈ రోజు ఎండగా ఉంది. "),
    m.ReplyDone("resp_1", "completed", "ఈ రోజు ఎండగా ఉంది.", "ఈ రోజు ఎండగా ఉంది.", 1800),
    m.TurnLatency("turn_1", {**STAGES, "asr_ms": 530.0}, 1540.0, 25.0, network_up_ms=14.0, network_down_ms=11.0),
    m.UserSpeechStarted("turn_2"),
    m.UserFinal("turn_2", "రేపు వర్షం పడుతుందా?"),
    m.ReplyStarted("resp_2", "turn_2"),
    m.ReplyText("resp_2", "రేపు సాయంత్రం వర్షం పడే అవకాశం ఉంది, గొడుగు తీసుకెళ్ళండి."),
    m.ReplyDone("resp_2", "cancelled", "", "రేపు సాయంత్రం వర్షం", 1200),
    m.TurnLatency("turn_2", STAGES, 1440.0, 23.0, interrupted=True, network_up_ms=13.0, network_down_ms=10.0),
    m.UserSpeechStarted("turn_3"),
    m.UserPartial("turn_3", "సరే, ధన్యవాదాలు"),
]


def scripted_app(script=SCRIPT, *argv: str):
    args = build_parser().parse_args([*argv, "--no-speaker"])
    app = build_app(args)
    app.link = ScriptedLink(script)
    app.main.mode, app.main.target, app.main.remote = "remote", app.link.target, True
    app.make_source = None  # no mic: nothing live in the snapshot
    return app


def test_main_screen_snapshot(snap_compare):
    async def settle(pilot) -> None:
        await pilot.pause(0.5)
        pilot.app.pump.last_level_db = -31.0
        await pilot.pause(0.2)

    assert snap_compare(scripted_app(), terminal_size=SIZE, run_before=settle)


async def test_keys_help_interrupt_reset_mute():
    app = scripted_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("x")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("m")
        assert app.pump.muted
        app.sink.buffer.push("resp_3", np.ones(24_000, np.float32) * 0.1)
        app.sink.buffer.complete("resp_3")
        await pilot.pause(0.2)
        await pilot.press("i")
        assert any(c.startswith("interrupt resp_3") for c in app.link.calls)
        await pilot.press("r")
        assert "reset" in app.link.calls


async def test_remote_reset_key_resets_the_session_without_reconnecting():
    """``r`` in remote mode sends ``s2s.session.reset`` on the same connection (the scripted
    Realtime server of tests/test_client.py stands in for the engine)."""
    from tests.test_client import FakeRealtimeServer

    async with FakeRealtimeServer() as srv:
        args = build_parser().parse_args(["--remote", srv.url, "--no-speaker"])
        app = build_app(args)
        app.make_source = None
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(100):
                if app.link.ready:
                    break
                await pilot.pause(0.05)
            assert app.link.ready
            await pilot.press("r")
            for _ in range(100):
                if srv.of_type("s2s.session.reset"):
                    break
                await pilot.pause(0.05)
            assert srv.of_type("s2s.session.reset")
            await pilot.pause(0.2)
            assert srv.connections == 1 and app.link.client.connections == 1  # no reconnection
            assert app.link.ready


async def test_latency_panel_shows_measured_network_legs():
    from tests.test_tui_live import rendered

    app = scripted_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        panel = rendered(app.main.latency)
        assert "network (round trip)" in panel and "23 ms" in panel
        assert "↑ mic → engine" in panel and "≈13 ms" in panel and "≈10 ms" in panel
        app.main.latency.show(m.TurnLatency("turn_3", STAGES, 1400.0, None))  # not measured: no number
        await pilot.pause(0.1)
        panel = rendered(app.main.latency)
        assert "≈" not in panel.split("last 2")[0] and "—" in panel


async def test_latency_panel_says_what_ended_the_turn():
    from tests.test_tui_live import rendered

    app = scripted_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        app.main.latency.show(m.TurnLatency("turn_4", {**STAGES, "eot_wait_ms": 230.0}, 420.0,
                                            turn_policy="combined", turn_probability=0.93, resumed=1))
        await pilot.pause(0.1)
        panel = rendered(app.main.latency)
        assert "↳ combined" in panel and "p(complete) 0.93" in panel and "resumed ×1" in panel
        assert "230 ms" in panel  # the silence the turn really waited
        app.main.latency.show(m.TurnLatency("turn_5", STAGES, 900.0, turn_policy="max-silence"))
        await pilot.pause(0.1)
        panel = rendered(app.main.latency)
        assert "↳ max-silence" in panel and "p(complete)" not in panel.split("last ")[1].split("voice")[0]


async def test_push_to_talk_commits():
    app = scripted_app(SCRIPT[:3], "--push-to-talk")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert not app.pump.recording
        await pilot.press("space")
        assert app.pump.recording and "clear" in app.link.calls
        await pilot.press("space")
        assert not app.pump.recording and "commit" in app.link.calls


# --- audio devices through a fake sounddevice ---------------------------------------------


class PortAudioError(Exception):
    pass


class FakeSD:
    """What the app touches of sounddevice: query_devices, default, InputStream, OutputStream."""

    def __init__(self, input_error: str | None = None, output_error: str | None = None, devices=True):
        self.input_error, self.output_error, self.devices = input_error, output_error, devices
        self.default = type("D", (), {"device": (0, 1)})()
        self.opened: list[str] = []

    def query_devices(self, device=None, kind=None):
        all_ = [{"name": "Fake Mic", "max_input_channels": 1, "max_output_channels": 0, "default_samplerate": 48000.0},
                {"name": "Fake Speaker", "max_input_channels": 0, "max_output_channels": 2,
                 "default_samplerate": 44100.0}] if self.devices else []
        if kind is None:
            return all_
        if not all_:
            raise PortAudioError("Error querying device -1")
        return all_[0] if kind == "input" else all_[1]

    def InputStream(self, **kw):  # noqa: N802 - sounddevice's name
        if self.input_error:
            raise PortAudioError(self.input_error)
        self.opened.append("input")
        return FakeStream(kw)

    def OutputStream(self, **kw):  # noqa: N802
        if self.output_error:
            raise PortAudioError(self.output_error)
        self.opened.append("output")
        return FakeStream(kw)


class FakeStream:
    def __init__(self, kw):
        self.kw = kw

    def start(self):
        pass

    def stop(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("fake,expect", [
    (FakeSD(input_error="Error opening InputStream: Device unavailable [PaErrorCode -9985]"), "busy"),
    (FakeSD(devices=False), "no microphone"),
])
async def test_device_errors_show_in_the_app(monkeypatch, fake, expect):
    monkeypatch.setattr(audio, "sounddevice", lambda: fake)
    args = build_parser().parse_args([])
    app = build_app(args)
    app.link = ScriptedLink(SCRIPT[:3])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        line = app.main.query_one("#problem")
        assert expect in line.text.lower() or expect in str(app.main.status.audio).lower()
        assert app.source is None  # running on, without a mic
        assert app.is_running


async def test_fake_devices_open_at_native_rates(monkeypatch):
    fake = FakeSD()
    monkeypatch.setattr(audio, "sounddevice", lambda: fake)
    app = build_app(build_parser().parse_args([]))
    app.link = ScriptedLink(SCRIPT[:3])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert fake.opened == ["output", "input"]
        assert app.source._stream.kw["samplerate"] == 48000
        assert app.sink._stream.kw["samplerate"] == 44100
        # a 48 kHz block from the "callback" reaches the link at 16 kHz
        cb = app.source._stream.kw["callback"]
        for _ in range(10):
            cb(np.full((960, 1), 0.1, np.float32), 960, None, None)
        await pilot.pause(0.1)
        assert sum(len(x) for x in app.link.sent) > 2000


async def test_ticks_while_the_status_bar_is_absent_do_not_crash():
    """The 20 ms tick starts before the main screen has composed its widgets; a tick then must
    not raise (it did, as a rare NoMatches in CI)."""
    from s2s_tui.screens.main import MainScreen

    app = scripted_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        mounted, app.main = app.main, MainScreen("in-process", "test", remote=False)  # not composed yet
        try:
            for _ in range(10):
                app._tick()  # every 5th tick updates the status bar
        finally:
            app.main = mounted
        await pilot.pause(0.1)
        assert app.is_running


# --- Telugu and the terminal's idea of cell widths -------------------------------------------

LONG_TE = "మీరు ఎలా ఉన్నారు? నేను బాగున్నాను, ధన్యవాదాలు. ఈ రోజు మంచి రోజు. " * 5


def _rows(app) -> list[str]:
    """The screen as Textual composes it, one string per row (what a full refresh writes)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def test_max_cells_counts_telugu_vowel_signs_that_rich_counts_as_zero():
    from rich.cells import cell_len

    from s2s_tui.widgets.safetext import SafeText, max_cells, wrap_offsets

    assert cell_len("కు") == 1 and max_cells("కు") == 2  # ు: Rich 0 cells, tmux/glibc wcwidth 1
    assert max_cells("నమస్కారం") == cell_len("నమస్కారం") + 1  # the anusvara ం
    assert max_cells("hello") == 5
    from rich.text import Text

    text = "మీరు ఎలా ఉన్నారు?"
    cuts = wrap_offsets(text, 8)
    lines = [text[a:b].strip() for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert lines == ["మీరు ఎలా", "ఉన్నారు?"] and all(max_cells(line) <= 8 for line in lines)

    lines = SafeText(Text("కుకుకుకుకు")).lines(4)  # one word longer than a line: cut between clusters
    assert [line.plain for line in lines] == ["కుకు", "కుకు", "కు"]


async def test_telugu_lines_keep_every_panel_aligned_whatever_the_terminal_counts():
    """Rich gives Telugu spacing vowel signs (ు ూ ం ...) 0 cells, tmux and glibc's wcwidth 1; on a
    row, whatever follows such a sign moves by one cell per sign in those terminals. The layout
    keeps borders and the latency panel before any Telugu text on its row, and Telugu lines fit the
    screen even if every sign takes a cell."""
    from s2s_tui.widgets.safetext import ambiguous_marks, max_cells

    script = [*SCRIPT, m.ReplyStarted("resp_3", "turn_3"), m.ReplyText("resp_3", LONG_TE),
              m.ReplyDone("resp_3", "completed", LONG_TE, LONG_TE, 9000)]
    app = scripted_app(script)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        rows = _rows(app)
    telugu_rows = [r for r in rows if ambiguous_marks(r)]
    assert len(telugu_rows) >= 8  # the script's lines and the long reply, wrapped
    for row in rows:
        for i, ch in enumerate(row):
            if ambiguous_marks(ch):
                after = row[i:]
                frames = [c for c in after if 0x2500 <= ord(c) <= 0x259F]  # box drawing, bars
                assert not frames, f"{''.join(frames)!r} after Telugu text on row {row.rstrip()!r}"
                break
        assert max_cells(row.rstrip()) <= SIZE[0], row.rstrip()
    assert "వర్షం పడే" in "".join(rows)  # heard and unheard words of the interrupted reply stay apart


async def test_a_failing_send_is_shown_and_the_remote_link_keeps_sending():
    """The server asks for Encodec input and this machine has no Encodec weights: every mic chunk
    fails to encode. That once ended the link's sender silently (the mic went dead with no word);
    now the problem is shown and the other commands still go out."""
    from remote import protocol as p
    from s2s_tui.link_remote import RemoteLink
    from tests.test_client import FakeRealtimeServer, settle

    async with FakeRealtimeServer() as srv:
        link = RemoteLink(srv.url)
        posted: list = []
        link.attach(posted.append, None)
        runner = asyncio.create_task(link.run())
        try:
            await settle(lambda: link.ready)
            cfg = p.SessionConfig(id="sess_1", input_format=p.AudioFormat(p.ENCODEC_FORMAT, 24_000, 6.0))
            await srv.live[-1].send(p.serialize(p.SessionUpdated(session=cfg.to_dict())))
            await settle(lambda: link.client.session is not None and link.client.session.input_format.is_encodec)
            link.send_audio(np.zeros(1600, np.float32))
            await settle(lambda: any(isinstance(x, m.Problem) for x in posted), 60)
            problem = next(x for x in posted if isinstance(x, m.Problem))
            assert "sending microphone audio to the engine failed" in problem.text and "codec" in problem.text
            link.send_audio(np.zeros(1600, np.float32))
            link.reset()
            await settle(lambda: srv.of_type("s2s.session.reset"), 60)
            assert sum(isinstance(x, m.Problem) for x in posted) == 1  # the same failure is not repeated
        finally:
            await link.close()
            await asyncio.wait_for(runner, 10)


async def test_a_transcript_in_the_wrong_script_is_flagged_in_the_conversation():
    from s2s_tui.widgets.conversation import UserTurn

    script = [m.LinkState("ready", "connected"),
              m.UserFinal("turn_1", "ہمسکارا مینھے گاملہ رو", script_ok=False, language="te"),
              m.UserFinal("turn_2", "నమస్కారం, మీరు ఎలా ఉన్నారు?", script_ok=True, language="te")]
    app = scripted_app(script)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        turns = {w.turn_id: w for w in app.main.query(UserTurn)}
        wrong, right = turns["turn_1"].render().text.plain, turns["turn_2"].render().text.plain
        assert "⚠ not in Telugu script: the speech recogniser did not understand" in wrong
        assert "⚠" not in right and turns["turn_1"].has_class("-wrong-script")

"""The TUI on the real offline engine, with the bundled Telugu sample as the mic (--replay):
in-process, against a real headless server on 127.0.0.1, the retry state of an unreachable
engine (and its recovery), and a refused token. The app is built with the CLI's factory."""

from __future__ import annotations

import io
import socket
import time

import pytest

from s2s_tui.cli import build_app, build_parser
from s2s_tui.widgets.conversation import AgentTurn, UserTurn
from tests.conftest import SAMPLE_TE

pytestmark = pytest.mark.slow
SIZE = (160, 48)


def app_for(*argv: str, engine=None):
    args = build_parser().parse_args([*argv, "--no-speaker"])
    return build_app(args, engine=engine)


async def until(pilot, check, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not check():  # noqa: ASYNC110 - polls app state between pilot pauses
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def rendered(widget) -> str:
    from rich.console import Console

    console = Console(width=120, record=True, file=io.StringIO())
    console.print(widget.render())
    return console.export_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_replay_in_process_shows_turn_reply_and_latency(offline_engine):
    app = app_for("--replay", str(SAMPLE_TE), engine=offline_engine)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        await until(pilot, lambda: main.latency.last is not None, 150, "a turn's latency")
        users = list(main.query(UserTurn))
        agents = list(main.query(AgentTurn))
        assert users and users[0].final
        assert agents and agents[0].text.strip()
        lt = main.latency.last
        assert lt.voice_to_voice_ms and lt.voice_to_voice_ms > 0
        # the stages after the silence add up to voice-to-voice; ASR either shows there or, when
        # the turn ran speculatively inside the silence, as what the hidden decode cost
        assert sum(v or 0 for v in lt.stages_ms.values()) == pytest.approx(lt.voice_to_voice_ms, abs=1)
        assert lt.asr_decode_ms and lt.asr_decode_ms > 0
        if lt.speculative:
            assert "in the silence" in rendered(main.latency)
        else:
            assert lt.stages_ms["asr_ms"] > 0
        assert lt.network_ms is None
        status = main.status
        assert status.link_status == "ready"
        assert "asr:" in status.models and "llm:" in status.models
        text = str(status.render())
        assert "CPU" in text  # no GPU here: the memory line says so
        panel = rendered(main.latency)
        assert "voice-to-voice" in panel and f"{lt.voice_to_voice_ms:.0f} ms" in panel


async def test_interrupt_key_cancels_the_reply(offline_engine):
    app = app_for("--replay", str(SAMPLE_TE), engine=offline_engine)
    async with app.run_test(size=SIZE) as pilot:
        # press at once while it plays (on a loaded machine a fixed pause here could outlast the
        # playing reply, and then there is nothing to interrupt), then wait for the cut to show
        buf = app.sink.buffer
        await until(pilot, lambda: buf.playing and (rid := buf.current) is not None and buf.played_ms(rid) > 0,
                    150, "the reply to play")
        await pilot.press("i")
        agent = list(app.main.query(AgentTurn))[0]
        await until(pilot, lambda: agent.status == "cancelled", 10, "the reply to be cut")
        assert agent.cut_ms is not None and agent.cut_ms > 0
        assert not app.sink.buffer.playing
        assert "interrupted" in rendered(agent)


async def test_remote_mode_against_a_headless_server(offline_engine):
    from remote.server import serve

    server = await serve(offline_engine, "127.0.0.1", port=0, stats_interval_s=1.0)
    try:
        app = app_for("--remote", f"ws://127.0.0.1:{server.port}", "--replay", str(SAMPLE_TE))
        async with app.run_test(size=SIZE) as pilot:
            main = app.main
            await until(pilot, lambda: main.status.link_status == "ready", 10, "the connection")
            await until(pilot, lambda: main.latency.last is not None, 150, "a turn's latency")
            lt = main.latency.last
            assert lt.voice_to_voice_ms and lt.voice_to_voice_ms > 0
            assert lt.network_ms is not None and lt.network_ms >= 0  # shown apart from engine time
            assert lt.total_ms >= lt.voice_to_voice_ms
            assert list(main.query(AgentTurn))[0].text.strip()
            assert "network (round trip)" in rendered(main.latency)
            await until(pilot, lambda: "asr:" in main.status.models, 5, "models from s2s.stats")
            # the wire: Opus by default (16 kbit/s both ways), shown with the bytes per second
            session = app.link.client.session
            assert session.input_format.type == session.output_format.type == "s2s.opus"
            assert session.output_format.bitrate == 16 and session.input_format.rate == 16_000
            await until(pilot, lambda: "kB/s" in main.status.wire, 10, "the bytes per second")
            assert main.status.wire.startswith("s2s.opus 16 kbit/s") and "s2s.opus 16 kbit/s" in str(main.status.render())
    finally:
        await server.close()


async def test_remote_mode_in_pcm_when_asked(offline_engine):
    from remote.server import serve

    server = await serve(offline_engine, "127.0.0.1", port=0, stats_interval_s=1.0)
    try:
        app = app_for("--remote", f"ws://127.0.0.1:{server.port}", "--audio-format", "pcm")
        async with app.run_test(size=SIZE) as pilot:
            main = app.main
            await until(pilot, lambda: main.status.wire.startswith("audio/pcm"), 10, "the PCM format shown")
            assert app.link.client.session.input_format.type == "audio/pcm"
    finally:
        await server.close()


def test_a_wrong_audio_format_is_an_argument_error(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--remote", "x", "--audio-format", "mp3"])
    assert "--audio-format" in capsys.readouterr().err


async def test_unreachable_engine_retries_and_recovers(offline_engine):
    from remote.server import serve

    port = free_port()
    app = app_for("--remote", f"ws://127.0.0.1:{port}")
    async with app.run_test(size=SIZE) as pilot:
        status = app.main.status
        await until(pilot, lambda: status.link_status == "retrying", 10, "the retry state")
        assert status.retry_at is not None
        assert "retrying in" in str(status.render())
        assert "unreachable" in status.link_detail
        server = await serve(offline_engine, "127.0.0.1", port=port)
        try:
            await until(pilot, lambda: status.link_status == "ready", 20, "recovery")
        finally:
            await server.close()
        await until(pilot, lambda: status.link_status in ("retrying", "connecting"), 10, "the drop to show")


async def test_refused_token_is_shown_not_raised(offline_engine):
    from remote.server import serve

    server = await serve(offline_engine, "127.0.0.1", port=0, token="right")
    try:
        app = app_for("--remote", f"ws://127.0.0.1:{server.port}", "--token", "wrong")
        async with app.run_test(size=SIZE) as pilot:
            status = app.main.status
            await until(pilot, lambda: status.link_status == "failed", 10, "the refusal")
            assert "token" in status.link_detail
            await pilot.pause(1.5)  # longer than the first retry delay: a refused token is not retried
            assert status.link_status == "failed" and app.is_running  # shown, the app goes on
            assert "refused the token" in app.main.query_one("#problem").text
            assert server.total_sessions == 0  # refused before any session started
    finally:
        await server.close()

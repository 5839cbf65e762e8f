"""The browser client (remote/web/), for real: Debian's Chromium, headless, with a WAV file of
Telugu speech (espeak-ng) as its microphone, talking to a real ``RealtimeServer`` on 127.0.0.1
over the real offline engine.

One Chromium serves the whole module (about 2 s to start). The server runs on its own event loop
in a thread, because Selenium's calls block. The microphone file plays once from the moment the
page opens the microphone; pressing Stop then Start re-opens it, which plays the file again: that
is how a test speaks a second time (a barge-in, a turn after a reconnection).

A missing Chromium, driver or selenium fails these tests (scripts/setup.sh installs them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from remote import web
from remote.browser import Browser
from remote.server import RealtimeServer, add_headless_arguments, options_from_args, serve
from tests.conftest import speak

TOKEN = "web-s3cret"
SPEECH = "నమస్కారం, మీరు ఎలా ఉన్నారు?"


# --------------------------------------------------------------------------- fixtures


class ServerThread:
    """A RealtimeServer on its own event loop in a thread; can be killed and started again."""

    def __init__(self, engine, **options):
        self.engine, self.options = engine, options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="web-test-server", daemon=True)
        self.thread.start()
        self.server: RealtimeServer | None = None
        self.port = 0

    def run(self, coro, timeout_s: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> None:
        self.server = self.run(serve(self.engine, port=self.port, **self.options))
        self.port = self.server.port

    def kill(self) -> None:
        if self.server is not None:
            self.run(self.server.close(grace_s=0))
            self.server = None

    def close(self) -> None:
        self.kill()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory) -> Path:
    """The microphone: 0.5 s of silence, a Telugu sentence, 0.3 s of silence (48 kHz, as a mic)."""
    folder = tmp_path_factory.mktemp("web_mic")
    speech, rate = sf.read(str(speak(SPEECH, folder / "speech.wav", rate=48_000)), dtype="float32")
    x = np.concatenate([np.zeros(rate // 2, np.float32), 0.9 * speech, np.zeros(int(0.3 * rate), np.float32)])
    path = folder / "mic.wav"
    sf.write(str(path), x, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(mic_wav) -> Iterator[Browser]:
    b = Browser(mic_wav, window=(1280, 1000))
    yield b
    b.close()


@pytest.fixture(scope="module")
def page_server(offline_engine) -> Iterator[ServerThread]:
    srv = ServerThread(offline_engine, stats_interval_s=1.0)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def page(browser, page_server) -> Browser:
    """The page, open and connected, the microphone started (by clicking Start, as a user does)."""
    browser.open(page_server.url)
    browser.wait_for("the connection", lambda s: s.get("conn") == "open", 30)
    browser.click("#start")
    browser.wait_for("the microphone", lambda s: s.get("micOpen"), 15)
    return browser


def speak_again(b: Browser) -> None:
    """Stop and Start the microphone: the WAV plays again from its start."""
    b.click("#start")
    b.wait_for("the microphone to close", lambda s: not s.get("micOpen"), 10)
    b.click("#start")
    b.wait_for("the microphone to open", lambda s: s.get("micOpen"), 10)


def reply_playing(b: Browser, min_buffered_s: float, tries: int = 4) -> dict:
    """A reply playing with at least ``min_buffered_s`` still to play. If the agent is back to
    listening first (a short reply, or nothing recognised), speak again for another reply."""
    for _ in range(tries):
        snap = b.wait_for(
            "a reply playing, or the agent listening",
            lambda s: s if (s["state"] == "speaking" and s["bufferedSamples"] > min_buffered_s * s["contextRate"])
            or s["state"] == "listening" else None, 90)
        if snap["state"] == "speaking":
            return snap
        n = snap["eventCounts"].get("input_audio_buffer.speech_started", 0)
        speak_again(b)
        b.wait_for("the user's speech", lambda s, n=n: s["eventCounts"].get("input_audio_buffer.speech_started", 0) > n,
                   30)
    pytest.fail(f"no reply with {min_buffered_s} s of audio to play in {tries} tries")


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --------------------------------------------------------------------------- serving the page


def test_page_is_served_with_a_strict_csp_and_no_web_turns_it_off(page_server, offline_engine):
    status, headers, body = get(page_server.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert rule in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert f"ws://127.0.0.1:{page_server.port}" in csp  # the page's own WebSocket, named for older engines
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", page_server.port, timeout=10)
    c.request("GET", "/", headers={"Host": "x; script-src *"})  # a Host header is never pasted into the policy
    r = c.getresponse()
    assert r.status == 200 and "script-src *" not in r.getheader("Content-Security-Policy")
    c.close()
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b"<script" in body and b"app.js" in body
    assert b"token" not in body.split(b"<body>")[0]  # no token in the page's head
    # every file the page needs, with its type; nothing outside the folder
    for name, ctype in (("app.js", "text/javascript"), ("capture-worklet.js", "text/javascript"),
                        ("playback-worklet.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, _ = get(page_server.url + name)
        assert status == 200 and headers["Content-Type"].startswith(ctype), name
    for bad in ("../server.py", "%2e%2e/server.py", "web.py", "index.html/../../server.py", "nope.js"):
        assert get(page_server.url + bad)[0] == 404, bad
    # an unchanged file is not sent again
    etag = get(page_server.url + "app.js")[1]["ETag"]
    req = urllib.request.Request(page_server.url + "app.js", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 304
    assert get(page_server.url.rstrip("/") + "/healthz")[0] == 200

    # --no-web: the endpoint and the health check stay, the page is gone
    import argparse

    ap = argparse.ArgumentParser()
    add_headless_arguments(ap)
    assert options_from_args(ap.parse_args([])).web is True
    assert options_from_args(ap.parse_args(["--no-web"])).web is False
    bare = ServerThread(offline_engine, web=False, stats_interval_s=0)
    try:
        bare.start()
        status, _, body = get(bare.url)
        assert status == 404 and b"/v1/realtime" in body
        assert get(bare.url + "app.js")[0] == 404
        assert get(bare.url + "healthz")[0] == 200
    finally:
        bare.close()


def test_web_files_are_package_data():
    files = web.web_files()
    for name in ("/index.html", "/app.js", "/audio.js", "/realtime.js", "/conversation.js", "/latency.js",
                 "/resampler.js", "/capture-worklet.js", "/playback-worklet.js", "/style.css"):
        assert name in files, name
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["remote"]
    suffixes = {p.rsplit(".", 1)[-1] for p in patterns}
    assert {n.rsplit(".", 1)[-1] for n in files} <= suffixes  # every served file ships in the wheel


# --------------------------------------------------------------------------- in Chromium


def test_spoken_turn_shows_transcript_reply_latency_and_plays_audio(page, tmp_path):
    turn = page.wait_for("a spoken turn with its metrics and first reply audio played",
                         lambda s: next((t for t in s["turns"] if t.get("pageV2V")), None), 90)
    snap = page.snapshot()
    assert snap["transcripts"] and snap["transcripts"][0].strip(), snap["transcripts"]
    # the transcript and the reply are on the page
    assert page.text(".turn.user:not(.partial) .text").strip()
    page.wait_for("reply text", lambda s: page.text(".turn.agent .text").strip(" …"), 30)
    # latency bars: every engine stage has a figure, the bars have a width
    rows = page.driver.execute_script(
        "return [...document.querySelectorAll('#latency tr')].map(r => "
        "[r.dataset.key, r.querySelector('.ms').textContent, r.querySelector('.bar').style.width])")
    figures = {k: (ms, width) for k, ms, width in rows}
    for k in ("eot_wait_ms", "asr_ms", "llm_first_token_ms", "tts_ms", "voice_to_voice_ms", "page_v2v_ms"):
        assert figures[k][0] != "—", (k, figures)
    assert figures["voice_to_voice_ms"][1].endswith("%")
    assert "turn ended by" in page.text("#turn-end")  # what ended the turn, as the TUI shows it
    # the page's voice-to-voice holds the engine's (capture and playback come on top of it)
    assert turn["engineV2V"] > 0
    assert turn["engineV2V"] < turn["pageV2V"] < turn["engineV2V"] + 3000, turn
    # reply audio really plays: the playback worklet renders samples, and they keep coming
    rate = snap["contextRate"]
    played = page.wait_for("half a second of reply audio played",
                           lambda s: s["samplesPlayed"] >= rate // 2 and s["samplesPlayed"], 30)
    page.wait_for("more reply audio played", lambda s: s["samplesPlayed"] > played or s["state"] == "listening", 10)
    assert page.text("#gpu") == "CPU (no GPU)"  # s2s.stats without CUDA
    # the browser's own processing was asked for (the switches' default) and is on
    assert {k: snap["micSettings"].get(k) for k in ("echoCancellation", "noiseSuppression", "autoGainControl")} == \
        {"echoCancellation": True, "noiseSuppression": True, "autoGainControl": True}, snap["micSettings"]
    errors = [c for c in page.console() if c.startswith("SEVERE")]
    assert not errors, errors
    shot = page.screenshot(tmp_path / "web.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_barge_in_flushes_playback(page, tmp_path):
    """Speaking while the reply plays: speech_started empties the jitter buffer at once."""
    for _attempt in range(3):
        before = reply_playing(page, 1.0)
        n = len(before["bargeIns"])
        speak_again(page)  # the user talks over the agent
        snap = page.wait_for("the barge-in", lambda s, n=n: s if len(s["bargeIns"]) > n else None, 30)
        cut = snap["bargeIns"][-1]
        if cut["id"] is None or cut["discardedMs"] <= 0:
            continue  # the reply ended before the speech was heard: nothing to flush; try again
        assert cut["playedMs"] > 0
        assert snap["bufferedSamples"] == 0 and not snap["playing"]
        assert snap["eventCounts"].get("input_audio_buffer.speech_started", 0) >= 2
        # nothing of the cut reply plays any more; the reply is marked where it was cut
        page.wait_for("the reply marked as interrupted", lambda s: page.count(".turn.agent.interrupted") >= 1, 10)
        assert "interrupted at" in page.text(".turn.agent.interrupted .mark")
        if os.environ.get("S2S_WEB_SCREENSHOT"):  # docs/web.png: the next turn, after the barge-in
            page.wait_for("the next reply", lambda s, k=cut["id"]: s["turns"] and s["turns"][-1]["key"] != k
                          and s["turns"][-1]["pageV2V"] and s["state"] == "speaking", 60)
            shutil.copy(page.screenshot(tmp_path / "web.png"), os.environ["S2S_WEB_SCREENSHOT"])
        return
    pytest.fail("three replies ended before the user's speech was detected; no barge-in to check")


def test_interrupt_key_stops_the_reply(page):
    reply_playing(page, 0.3)
    page.press("i")
    snap = page.wait_for("the interrupt", lambda s: s if s["interrupts"] else None, 10)
    assert snap["interrupts"][-1]["id"] is not None
    page.wait_for("silence after the interrupt", lambda s: s["bufferedSamples"] == 0 and not s["playing"], 5)
    page.wait_for("listening again", lambda s: s["state"] == "listening", 30)


def test_push_to_talk_and_reset_from_the_keyboard(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    page.wait_for("listening", lambda s: s["state"] == "listening", 60)
    updates = page.snapshot()["eventCounts"].get("session.updated", 0)
    page.press("t")
    page.wait_for("push-to-talk mode", lambda s: s["state"] == "ptt" and
                  s["eventCounts"].get("session.updated", 0) > updates, 10)
    before = page.snapshot()
    speak_again(page)  # the file plays; nothing is sent until space is held
    keys = ActionChains(page.driver)
    keys.key_down(Keys.SPACE).perform()
    page.wait_for("recording", lambda s: s["state"] in ("recording", "user"), 5)
    # hold space for the whole sentence (the file is about 3 s long)
    page.wait_for("the sentence sent", lambda s: s["sentSamples"] - before["sentSamples"] >= 24000 * 3, 15)
    keys.key_up(Keys.SPACE).perform()
    snap = page.wait_for("the push-to-talk turn", lambda s: s if len(s["turns"]) > len(before["turns"]) else None, 60)
    assert len(snap["transcripts"]) > len(before["transcripts"])
    assert snap["micOpen"]  # space did not press the focused Start button
    assert not snap["eventCounts"].get("input_audio_buffer.speech_started", 0) > \
        before["eventCounts"].get("input_audio_buffer.speech_started", 0)  # no server VAD in this mode
    page.press("r")
    page.wait_for("the reset", lambda s: s["eventCounts"].get("s2s.session.reset_done", 0) >= 1, 10)
    page.wait_for("an empty conversation", lambda s: page.count(".turn") == 0, 5)
    page.press("t")
    page.wait_for("hands-free again", lambda s: s["state"] in ("listening", "speaking", "thinking"), 10)


def test_killed_server_shows_reconnecting_and_recovers(page, page_server):
    gen = page.snapshot()["gen"]
    page_server.kill()
    page.wait_for("'reconnecting'", lambda s: s["conn"] in ("reconnecting", "connecting") and s["gen"] == gen, 15)
    snap = page.wait_for("the reconnecting notice", lambda s: s if "reconnecting in" in s["connText"] else None, 15)
    assert "reconnecting" in snap["problem"].lower()
    page_server.start()  # the same port
    page.wait_for("a new connection", lambda s: s["conn"] == "open" and s["gen"] > gen, 30)
    n = len(page.snapshot()["transcripts"])
    speak_again(page)
    page.wait_for("a turn on the new connection", lambda s: len(s["transcripts"]) > n, 60)


def test_wrong_token_shows_the_error_and_the_right_one_connects(browser, offline_engine):
    srv = ServerThread(offline_engine, token=TOKEN, stats_interval_s=0)
    try:
        srv.start()
        browser.open(srv.url + "#token=wrong")
        snap = browser.wait_for("the token error", lambda s: s if s.get("conn") == "auth" else None, 30)
        assert "refused this token" in snap["problem"]
        assert "#token" not in browser.driver.current_url  # the fragment does not stay in the address bar
        assert browser.driver.execute_script("return document.getElementById('token-dialog').open")
        assert srv.server.refused >= 1 and srv.server.total_sessions == 0
        # the user types the right token into the dialog
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        browser.driver.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
        browser.wait_for("the connection with the right token", lambda s: s.get("conn") == "open", 30)
        assert browser.driver.execute_script("return sessionStorage.getItem('s2s.token')") == TOKEN
        assert srv.server.total_sessions == 1
    finally:
        srv.close()


def test_full_server_says_so_and_the_page_gets_in_when_a_seat_frees(browser, offline_engine):
    from websockets.sync.client import connect

    srv = ServerThread(offline_engine, max_sessions=1, stats_interval_s=0)
    try:
        srv.start()
        with connect(f"ws://127.0.0.1:{srv.port}/v1/realtime") as held:
            held.recv(timeout=10)  # session.created: the only seat is taken
            browser.open(srv.url)
            snap = browser.wait_for("'server full'", lambda s: s if "server full" in s["connText"] else None, 30)
            assert "the server is full" in snap["problem"].lower()
            # the backoff grows while the server stays full (a refused session is no success)
            browser.wait_for("a second refusal", lambda s: (s.get("connAttempt") or 0) >= 2, 15)
        browser.wait_for("a seat", lambda s: s.get("conn") == "open", 30)
        assert srv.server.refused >= 1
    finally:
        srv.close()


def test_denied_microphone_gets_a_clear_message(page_server):
    with Browser("deny", window=(1000, 700)) as b:
        b.open(page_server.url)
        b.wait_for("the connection", lambda s: s.get("conn") == "open", 30)
        b.click("#start")
        snap = b.wait_for("the microphone error", lambda s: s if s.get("micErrors") else None, 15)
        assert "Microphone access was denied" in snap["problem"] and not snap["micOpen"]
        assert snap["conn"] == "open"  # typing still works


def test_resampler_in_the_browser(browser, page_server):
    """The worklets' resampler: a 1 kHz tone keeps its level; one above 12 kHz does not alias into 24 kHz."""
    browser.open(page_server.url)
    result = browser.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('./resampler.js').then(({ Resampler }) => {
          const rms = (x) => Math.sqrt(x.reduce((a, v) => a + v * v, 0) / x.length);
          const run = (f, a, b) => {
            const r = new Resampler(a, b), x = new Float32Array(a);
            for (let i = 0; i < a; i++) x[i] = 0.5 * Math.sin(2 * Math.PI * f * i / a);
            const parts = [];
            for (let i = 0; i < a; i += 128) parts.push(...r.process(x.subarray(i, i + 128)));
            parts.push(...r.flush());
            const y = Float32Array.from(parts);
            return [y.length, rms(y.subarray(2000, y.length - 2000))];
          };
          done({ down: run(1000, 48000, 24000), alias: run(20000, 48000, 24000),
                 odd: run(1000, 44100, 24000), up: run(1000, 24000, 44100) });
        }).catch((e) => done({ error: String(e) }));
    """)
    assert "error" not in result, result
    level = 0.5 / np.sqrt(2)
    for name, rate in (("down", 24000), ("odd", 24000), ("up", 44100)):
        n, rms = result[name]
        assert n == rate and abs(rms - level) < 0.01 * level, (name, result[name])
    assert result["alias"][1] < 0.001  # 20 kHz cannot exist at 24 kHz: filtered, not folded to 4 kHz


def test_the_page_speaks_opus_by_default_and_pcm_when_asked(browser, page_server):
    """A spoken turn in the page's default format: Opus both ways through WebCodecs when this
    Chromium can (Debian's can), else PCM with the reason shown. ``?format=pcm`` asks for PCM."""
    page = browser
    page.open(page_server.url)
    page.wait_for("the connection", lambda s: s.get("conn") == "open", 30)
    page.click("#start")
    page.wait_for("the microphone", lambda s: s.get("micOpen"), 15)
    page.wait_for("a whole reply", lambda s: s["eventCounts"].get("response.done") and s["replySamples"] > 0, 120)
    time.sleep(1.0)  # the last packets decoded (WebCodecs decodes asynchronously)
    snap = page.snapshot()
    assert snap["transcripts"] and snap["transcripts"][0].strip()  # the server understood the upstream audio
    up_Bps = snap["bytesUpByType"]["input_audio_buffer.append"] / (snap["sentSamples"] / 24_000)
    down_Bps = snap["bytesDownByType"]["response.output_audio.delta"] / (snap["replySamples"] / 24_000)
    if snap["opusWhy"] is None:  # WebCodecs encodes and decodes Opus here
        assert snap["wireFormat"] == snap["wireOutFormat"] == "s2s.opus 16 kbit/s" and snap["wireNote"] == ""
        # whole messages (JSON + base64), PCM about 66,000 B/s each way. Down is about 10,000: a delta's
        # JSON envelope (ids, indices, about 150 B) outweighs its 40 B packet, 50 times a second
        assert up_Bps < 6_000 and down_Bps < 16_000, (up_Bps, down_Bps)
    else:  # honest fallback: the page says why, and the wire is PCM
        assert snap["wireFormat"] == "audio/pcm" and snap["wireNote"].startswith("PCM:")
        assert up_Bps > 60_000
    assert page.text("#wire-format").startswith(snap["wireFormat"])
    if snap["opusWhy"] is None:
        # frames of speech went up two to a packet (the appends are fewer than the 20 ms frames)
        frames = snap["sentSamples"] // 480
        assert snap["opusPaired"] > 0 and snap["messagesUp"] < frames, (snap["opusPaired"], frames)
        # the select changes the format of the running session, and the address keeps it
        for value, want in (("pcm", "audio/pcm"), ("opus:24", "s2s.opus 24 kbit/s")):
            page.driver.execute_script("""
                const s = document.getElementById('format-choice');
                s.value = arguments[0];
                s.dispatchEvent(new Event('change'));""", value)
            page.wait_for(want, lambda s, w=want: s.get("wireFormat") == s.get("wireOutFormat") == w, 30)
            assert page.driver.execute_script("return location.search") == f"?format={value.replace(':', '%3A')}"
    page.open(page_server.url + "?format=pcm")
    snap = page.wait_for("the PCM session", lambda s: s if s.get("wireFormat") else None, 30)
    assert snap["wireFormat"] == snap["wireOutFormat"] == "audio/pcm" and snap["wireNote"] == ""
    assert snap["formatChoice"] == "pcm"


@pytest.mark.parametrize("kbps", [16, 128])  # 128: frames over 251 bytes, the two-byte length
def test_the_page_joins_opus_packets_as_the_server_does(browser, page_server, kbps):
    """codec.js's joinPackets against remote.protocol.opus.join_packets, on real packets."""
    from remote.protocol import opus
    from tests.test_opus import packets, voice

    pk = packets(voice(0.4), kbps=kbps)
    browser.open(page_server.url)
    got = browser.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const pk = arguments[0].map((h) => Uint8Array.from(h.match(/../g).map((x) => parseInt(x, 16))));
        const hex = (b) => b ? Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('') : null;
        import('./codec.js').then(({ joinPackets }) => {
          const out = [];
          for (let i = 0; i + 1 < pk.length; i += 2) out.push(hex(joinPackets(pk[i], pk[i + 1])));
          out.push(hex(joinPackets(pk[0], joinPackets(pk[1], pk[2]))));
          done(out);
        }).catch((e) => done({ error: String(e) }));
    """, [b.hex() for b in pk])
    assert isinstance(got, list), got
    joined = [opus.join_packets(a, b) for a, b in zip(pk[0::2], pk[1::2], strict=False)]
    assert sum(j is not None for j in joined) >= len(joined) - 2  # a mode switch at the start may not join
    assert got == [j.hex() if j is not None else None for j in joined] + [None]

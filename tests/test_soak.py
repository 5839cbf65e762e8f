"""``s2s-engine bench soak``: the verdict on synthetic samples (passing and failing), the pieces it
is built from, and one short real soak against ``s2s-engine --headless`` on 127.0.0.1 (offline
profile, real models) with killed, hostile and stalled clients.

The real soak's assertions are about structure and counts (turns completed, every bad message
answered with an ``error``, no server error, the server up and exiting 0), never about how fast
this machine is.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from engine.errors import ConfigError
from remote import soak
from remote.soak import Bounds, RoleDeck, SoakOptions, latency_windows, verdict
from remote.soak.plot import svg


def _parser():
    from remote.cli import build_parser

    return build_parser()  # the s2s-engine command line


def samples(rss: list[float], fds: list[int] | None = None, threads: list[int] | None = None,
            errors: int = 0, step_s: float = 60.0) -> list[dict]:
    """One sample per ``step_s`` as the sampler writes them."""
    n = len(rss)
    fds = fds or [14] * n
    threads = threads or [18] * n
    return [{"t_s": i * step_s, "rss_mib": r, "rss_tree_mib": r, "fds": f, "threads": t, "server_up": True,
             "server_error_lines": errors if i == n - 1 else 0, "server_tracebacks": 0, "sessions": None,
             "turns": 3, "turns_failed": 0, "v2v_p50_ms": 900.0, "v2v_p95_ms": 1200.0}
            for i, (r, f, t) in enumerate(zip(rss, fds, threads, strict=True))]


def turns(p50_per_window: list[float], per_window: int = 10, window_s: float = 300.0) -> list[dict]:
    out = []
    for k, p50 in enumerate(p50_per_window):
        for j in range(per_window):
            out.append({"role": "normal", "t_s": k * window_s + (j + 0.5) * window_s / per_window, "ok": True,
                        "v2v_ms": p50 + (j - per_window // 2) * 10, "error": None})
    return out


# --------------------------------------------------------------------------- the verdict


FLAT = [758, 790, 805, 810, 812] + [812 + (i % 3) for i in range(26)]  # 30 minutes, warm-up then flat


def test_verdict_passes_a_flat_run():
    v = verdict(samples(FLAT), turns([1000, 1020, 990, 1050, 1005, 1000]), Bounds())
    assert v["ok"] is True
    c = v["checks"]
    assert c["rss"]["ok"] and c["rss"]["after_warmup_mib"] == FLAT[5] and c["rss"]["drift_pct"] < 3
    assert c["fds"]["ok"] and c["threads"]["ok"] and c["errors"]["ok"] and c["server_up"]["ok"]
    assert c["latency"]["ok"] and len(c["latency"]["windows"]) == 6
    assert c["latency"]["first_window_p50_ms"] == 995  # the median of 950..1040


def test_verdict_fails_the_rss_steps_measured_before():
    # issue 23: 812 MiB at 5 min, flat at 823, then stepping up to 864 at 25 min (+6 %)
    rss = [758, 780, 795, 805, 810] + [812, 818, 823] + [823] * 9 + [835, 840, 848, 850, 856, 860, 862, 864, 864]
    v = verdict(samples(rss), turns([1000] * 5), Bounds())
    assert v["ok"] is False
    assert v["checks"]["rss"]["ok"] is False
    assert v["checks"]["rss"]["max_mib"] == 864 and v["checks"]["rss"]["drift_pct"] == pytest.approx(6.4, abs=0.1)
    assert v["checks"]["latency"]["ok"] is True  # only the memory failed


def test_verdict_fails_growing_fds_threads_errors_and_latency():
    n = len(FLAT)
    fds = [14] * 5 + [14 + i // 5 for i in range(n - 5)]  # one more every 5 minutes: a socket leak
    threads = [18] * 5 + [18] * (n - 6) + [21]
    v = verdict(samples(FLAT, fds, threads, errors=1), turns([1000, 1030, 1200]), Bounds())
    c = v["checks"]
    assert v["ok"] is False
    assert c["fds"]["ok"] is False and c["fds"]["after_max"] == 19
    assert c["threads"]["ok"] is False and c["threads"]["after_max"] == 21
    assert c["errors"]["ok"] is False and c["errors"]["error_lines"] == 1
    assert c["latency"]["ok"] is False and c["latency"]["rise_pct"] == pytest.approx(20, abs=0.5)
    assert c["rss"]["ok"] is True


def test_verdict_judges_only_what_it_can():
    # a 2-minute soak: no sample after a 5-minute warm-up, one latency window, no log (--url)
    s = samples([700, 701, 702], step_s=60)
    for row in s:
        row["server_error_lines"] = row["server_tracebacks"] = None
    v = verdict(s, turns([1000], window_s=120), Bounds())
    assert v["ok"] is True  # nothing failed; nothing could be judged either
    assert {k: c["ok"] for k, c in v["checks"].items()} == {
        "rss": None, "fds": None, "threads": None, "errors": None, "server_up": True, "latency": None}
    # faster later windows are no regression; a window with under min_turns turns is not judged
    slow_few = [{"role": "normal", "t_s": 610.0 + i, "ok": True, "v2v_ms": 5000.0, "error": None} for i in range(2)]
    v = verdict(samples(FLAT), turns([1000, 700]) + slow_few, Bounds())
    assert v["checks"]["latency"]["ok"] is True and v["checks"]["latency"]["worst_later_p50_ms"] == 695
    assert v["checks"]["latency"]["windows"][2]["turns"] == 2


def test_latency_windows_split_by_when_turns_ended():
    t = [{"t_s": 10, "ok": True, "v2v_ms": 100}, {"t_s": 70, "ok": True, "v2v_ms": 300},
         {"t_s": 80, "ok": False, "v2v_ms": 5000}, {"t_s": 130, "ok": True, "v2v_ms": None}]
    w = latency_windows(t, 60)
    assert [(x["from_s"], x["turns"], x["p50_ms"]) for x in w] == [(0, 1, 100), (60, 1, 300), (120, 0, None)]


# --------------------------------------------------------------------------- the pieces


def test_role_deck_holds_the_shares_exactly():
    deck = RoleDeck(SoakOptions(kill_share=0.25, hostile_share=0.25, stall_share=0.25))
    assert [deck.next() for _ in range(4)] == ["kill", "hostile", "stall", "normal"]
    deck = RoleDeck(SoakOptions(kill_share=0.15, hostile_share=0.15, stall_share=0.1))
    drawn = [deck.next() for _ in range(100)]
    assert (drawn.count("kill"), drawn.count("hostile"), drawn.count("stall"), drawn.count("normal")) == (15, 15, 10, 60)


def test_options_are_checked():
    for bad in (SoakOptions(sessions=0), SoakOptions(minutes=0), SoakOptions(kill_share=0.6, hostile_share=0.6)):
        with pytest.raises(ConfigError):
            bad.check()


def test_speech_end_ignores_the_trailing_silence():
    rate = soak.RATE
    tone = 0.5 * np.sin(np.arange(rate) * 2 * np.pi * 220 / rate)
    audio = np.concatenate([np.zeros(rate // 4), tone, np.zeros(rate)]).astype(np.float32)
    assert abs(soak.speech_end(audio) - (rate // 4 + rate)) <= rate // 50


def test_the_bundled_sample_loads_as_20ms_chunks():
    (u,) = soak.load_utterances([])
    assert u.name == "sample_te.wav" and all(len(c) == soak.CHUNK * 2 for c in u.chunks)
    assert 0 < u.speech_end_chunk < len(u.chunks) and 4 < u.seconds < 6


def test_hostile_messages_cover_each_kind_and_the_size_limit():
    msgs = dict(soak.hostile_messages(1000))
    assert len(msgs) == 8
    assert len(msgs["over max_message_bytes"]) > 1000
    with pytest.raises(json.JSONDecodeError):
        json.loads(msgs["not JSON"])


def test_read_proc_reads_this_process():
    row = soak.read_proc(os.getpid())
    assert row["rss_mib"] > 10 and row["fds"] > 2 and row["threads"] >= 1 and row["rss_tree_mib"] >= row["rss_mib"]


def test_the_plot_is_valid_svg():
    rep = {"options": {"sessions": 3, "minutes": 30}, "machine": {"cpu": "test"}, "samples": samples(FLAT)}
    rep["verdict"] = verdict(rep["samples"], turns([1000] * 6), Bounds())
    root = ET.fromstring(svg(rep))
    assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 5
    for i, row in enumerate(rep["samples"]):  # the server's heap, as /healthz reports it: a third panel
        row["malloc"] = {"allocator": "glibc", "in_use_mib": 180.0, "heap_mib": 250.0 + i, "free_mib": 70.0 + i}
    root = ET.fromstring(svg(rep))
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 8
    assert float(root.get("height")) > 560 and "glibc heap (MiB)" in ET.tostring(root, encoding="unicode")


def test_soak_is_a_bench_command():
    args = _parser().parse_args(["bench", "soak", "--sessions", "4", "--minutes", "60", "--server-env",
                                 "MALLOC_ARENA_MAX=2", "--plot", "soak.svg"])
    assert args.func is soak.cmd_soak
    assert (args.sessions, args.minutes, args.sample_s, args.kill_share, args.hostile_share, args.stall_share) == (
        4, 60, 30, 0.15, 0.15, 0.1)
    assert args.server_env == ["MALLOC_ARENA_MAX=2"] and args.url is None and args.profile == "offline"


# --------------------------------------------------------------------------- one real soak


@pytest.mark.slow
def test_a_short_real_soak_against_the_headless_engine(tmp_path):
    out, plot = tmp_path / "soak.json", tmp_path / "soak.svg"
    args = _parser().parse_args([
        "bench", "soak", "--sessions", "2", "--minutes", "0.75", "--sample-s", "5", "--warmup-min", "0.25",
        "--window-min", "0.25", "--kill-share", "0.25", "--hostile-share", "0.25", "--stall-share", "0.25",
        "--stall-s", "6", "--log", str(tmp_path / "server.log"), "--json", str(out), "--plot", str(plot)])
    rc = soak.cmd_soak(args)
    r = json.loads(out.read_text())
    assert r["schema"] == soak.SCHEMA and rc == (0 if r["verdict"]["ok"] else 1)
    assert r["server"]["started_by_soak"] and r["server"]["url"].startswith("ws://127.0.0.1:")
    assert r["server"]["exit_code"] == 0  # it drained and exited cleanly on SIGTERM

    c = r["clients"]
    assert c["turns_completed"] >= 3 and c["v2v_ms"]["p50"] > 0
    assert all(c["connections"][role] >= 1 for role in ("kill", "hostile", "stall", "normal")), c["connections"]
    assert c["killed_mid_reply"] >= 1 and c["stalled"] >= 1
    assert c["hostile"]["sent"] >= 8 and c["hostile"]["errors_received"] == c["hostile"]["sent"]
    assert c["hostile"]["unanswered"] == []
    assert c["turns_by_role"]["hostile"] >= 1  # the session went on after the bad messages
    assert c["failures"] == [] and c["turns_failed"] == 0

    s = r["samples"]
    assert len(s) >= 8 and s[0]["t_s"] < 1
    for row in s:
        assert row["rss_mib"] > 100 and row["fds"] > 3 and row["threads"] > 1
        assert set(row["sessions"]) >= {"active", "max", "total"}
        m = row["malloc"]  # the server's own heap, from /healthz
        assert m["allocator"] == "jemalloc"  # --allocator auto: libjemalloc2 is installed (scripts/setup.sh)
        assert 0 < m["in_use_mib"] <= m["heap_mib"] and m["mmapped_mib"] > 0 and m["python_blocks"] > 1000
    assert s[-1]["sessions"]["total"] >= sum(c["connections"].values())
    checks = r["verdict"]["checks"]
    assert set(checks) == {"rss", "fds", "threads", "errors", "server_up", "latency"}
    assert checks["errors"]["ok"] is True and checks["server_up"]["ok"] is True
    assert checks["rss"]["ok"] is not None and checks["fds"]["ok"] is not None
    assert ET.parse(plot).getroot().tag.endswith("svg")

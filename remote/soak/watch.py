"""The server, watched from outside: its process in ``/proc`` (:func:`read_proc`), its HTTP health
(:func:`http_json`), its log, the machine's load; :class:`Headless` starts and stops
``s2s-engine --headless``, and :class:`Sampler` takes one row of all that every ``--sample-s``.

Only the standard library: what the soak reads is what any outside observer could read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from engine.clock import now_ns
from engine.errors import S2SError
from remote.soak.results import Tally, percentile


def read_proc(pid: int) -> dict[str, Any]:
    """RSS (MiB, the process plus its children), open fds and threads of ``pid`` (Linux ``/proc``)."""

    def status(p: int) -> dict[str, str]:
        out = {}
        with open(f"/proc/{p}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    s = status(pid)
    rss_kb = int(s["VmRSS"].split()[0])
    children = descendants(pid)
    child_kb = 0
    for c in children:
        with contextlib.suppress(OSError, KeyError, ValueError):
            child_kb += int(status(c)["VmRSS"].split()[0])
    return {"rss_mib": round(rss_kb / 1024, 1), "rss_tree_mib": round((rss_kb + child_kb) / 1024, 1),
            "children": len(children), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(s["Threads"])}


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (children, theirs, ...), from ``/proc/PID/task/*/children``."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
        out.extend(kids)
        todo.extend(kids)
    return out


def load_avg() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def count_log_errors(path: Path | None) -> dict[str, int] | None:
    """ERROR log lines and tracebacks in the server's captured stderr."""
    if path is None or not path.exists():
        return None
    text = path.read_text(errors="replace")
    return {"error_lines": len(re.findall(r"^\S+ \S+ (?:ERROR|CRITICAL) ", text, re.M)),
            "tracebacks": text.count("Traceback (most recent call last)")}


def http_json(base: str, path: str, headers: dict[str, str] | None = None, timeout: float = 5) -> dict[str, Any] | None:
    """GET ``base + path`` and its JSON (also from a 503), or None."""
    req = urllib.request.Request(base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own http://127.0.0.1 URL
            return json.loads(r.read())
    except urllib.error.HTTPError as err:
        with contextlib.suppress(Exception):
            return json.loads(err.read())
    except Exception:  # noqa: BLE001 - an unreachable server is a sample of its own
        return None
    return None


class Headless:
    """``s2s-engine --headless`` as a subprocess on 127.0.0.1, its stderr in ``log``."""

    def __init__(self, profile: str | None, sets: list[str], max_sessions: int, log: Path, env: dict[str, str],
                 allocator: str = "auto"):
        self.log = log
        cmd = [sys.executable, "-m", "remote.cli", "--headless", "--host", "127.0.0.1", "--port", "0",
               "--max-sessions", str(max_sessions), "--no-web", "--allocator", allocator]
        if profile:
            cmd += ["--profile", profile]
        for s in sets:
            cmd += ["--set", s]
        self.cmd = cmd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, limit_s: float = 300) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[2]  # the repository: remote/soak/watch.py
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=f, cwd=root, env=self.env)
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            m = re.search(r"serving (ws://127\.0\.0\.1:\d+/v1/realtime)", self.log.read_text(errors="replace"))
            if m:
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise S2SError(f"the headless engine exited ({self.proc.returncode}): "
                               f"{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        self.stop()
        raise S2SError(f"the headless engine did not start within {limit_s:.0f} s (log: {self.log})")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, limit_s: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(limit_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def http_base(url: str) -> str:
    return "http" + url.removeprefix("ws").split("/v1/", 1)[0]


class Sampler:
    """A sample of the server every ``sample_s``: /proc, /readyz, its allocator (/healthz), the log,
    the clients' latency."""

    def __init__(self, base: str, pid: int | None, log: Path | None, tally: Tally, t0_ns: int,
                 headers: dict[str, str] | None = None):
        self.base, self.pid, self.log, self.tally, self.t0_ns = base, pid, log, tally, t0_ns
        self.headers = headers or {}
        self.samples: list[dict[str, Any]] = []
        self._seen_turns = 0

    def sample(self) -> dict[str, Any]:
        t = (now_ns() - self.t0_ns) / 1e9
        row: dict[str, Any] = {"t_s": round(t, 1), "rss_mib": None, "rss_tree_mib": None, "fds": None,
                               "threads": None, "children": None}
        if self.pid is not None:
            with contextlib.suppress(OSError, KeyError, ValueError):
                row.update(read_proc(self.pid))
        ready = http_json(self.base, "/readyz", self.headers)
        row["server_up"] = ready is not None
        # glibc's heap as the server sees it (remote.memory): RSS that grows with the heap while
        # in_use stays flat is memory malloc keeps, not a leak
        row["malloc"] = (http_json(self.base, "/healthz", self.headers) or {}).get("memory") if ready else None
        row["sessions"] = (ready or {}).get("sessions")
        row["load_avg"] = load_avg()
        errs = count_log_errors(self.log)
        row["server_error_lines"] = None if errs is None else errs["error_lines"]
        row["server_tracebacks"] = None if errs is None else errs["tracebacks"]
        new = self.tally.turns[self._seen_turns:]
        self._seen_turns = len(self.tally.turns)
        v = [x.v2v_ms for x in new if x.ok and x.v2v_ms is not None]
        row.update({"turns": len(new), "turns_failed": sum(1 for x in new if not x.ok),
                    "v2v_p50_ms": percentile(v, 50), "v2v_p95_ms": percentile(v, 95)})
        self.samples.append(row)
        return row


__all__ = ["Headless", "Sampler", "count_log_errors", "descendants", "http_base", "http_json", "load_avg",
           "read_proc"]

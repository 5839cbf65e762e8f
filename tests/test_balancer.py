"""Several engines behind a real load balancer: Debian's HAProxy in front of two engine processes.

The balancer runs ``deploy/haproxy.cfg`` (the documented example; only its addresses are replaced)
on 127.0.0.1 in front of two ``python -m remote.server`` processes with the real offline profile,
a token, and different capacities: engine ``a`` takes 2 sessions, ``b`` takes 4. Sessions go
through the balancer like any client's; where each one landed is read from the engines' own
``/readyz`` details (session totals, with the token). The four scenarios of issue 16:

- sessions spread over both engines (least connections);
- a full engine gets no new session (readiness ``full`` and the balancer's ``maxconn``), and with
  every engine full the balancer answers 503 itself;
- a draining engine (SIGTERM) finishes its running turn and exits 0 while new sessions go to the other;
- a killed engine's new sessions go to the survivor.

One engine pair serves the whole module; a test that stops an engine leaves it to the next test's
``ensure_up`` to start it again on the same port. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from remote import protocol as p
from remote.server import HEALTH_PATHS, READY_PATHS

on_the_session_loop = pytest.mark.asyncio(loop_scope="session")  # the loop the module's engines run on

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
EXAMPLE = DEPLOY / "haproxy.cfg"
TOKEN = "balancer-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOAD_LIMIT_S = 180  # one engine loading the offline profile on a busy 2-core machine (about 5-15 s)


def haproxy() -> str:
    exe = shutil.which("haproxy")
    assert exe, "haproxy is required for these tests: scripts/setup.sh installs it (apt-get install haproxy)"
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def balancer_config(example: str, lb_port: int, stats_port: int, engines: list[EngineProcess]) -> str:
    """The documented example with the test's addresses: the same checks, retries and timeouts."""
    text, n_bind = re.subn(r"^(\s*bind )\S*:8080\s*$", rf"\g<1>127.0.0.1:{lb_port}", example, flags=re.M)
    text, n_stats = re.subn(r"^(\s*bind )127\.0\.0\.1:8404\s*$", rf"\g<1>127.0.0.1:{stats_port}", text, flags=re.M)
    servers = "".join(f"    server {e.name} 127.0.0.1:{e.port} maxconn {e.max_sessions}\n" for e in engines)
    text, n_servers = re.subn(r"^(    server engine\d+ \S+\n)+", servers, text, flags=re.M)
    assert (n_bind, n_stats, n_servers) == (1, 1, 1), "deploy/haproxy.cfg changed shape: update balancer_config()"
    return text


@dataclass
class EngineProcess:
    """One ``python -m remote.server`` with the offline profile."""

    name: str
    max_sessions: int
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    loading_probes: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task | None = None

    async def start(self) -> None:
        """Start; return once it listens, and probe it then (its models are still loading)."""
        self.lines.append(f"--- start (port {self.port or 'any'})\n")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "remote.server", "--port", str(self.port), "--token", TOKEN,
            "--max-sessions", str(self.max_sessions), "--grace", "30", "--stats-interval", "0",
            "--idle-timeout", "0", cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(listening))
        async with asyncio.timeout(60):
            self.port = await listening
        self.loading_probes.append(await self.probe())

    async def probe(self) -> dict[str, Any]:
        """What a client without the token sees: readiness, liveness, a session."""
        base = f"http://127.0.0.1:{self.port}"
        out: dict[str, Any] = {
            "readyz": await asyncio.to_thread(http_get, f"{base}/readyz"),
            "healthz": await asyncio.to_thread(http_get, f"{base}/healthz"),
        }
        try:
            async with connect(f"ws://127.0.0.1:{self.port}/v1/realtime", additional_headers=AUTH) as ws:
                out["session"] = json.loads(await asyncio.wait_for(ws.recv(), 20))["type"]
        except InvalidStatus as exc:
            out["session"] = (exc.response.status_code, json.loads(exc.response.body)["error"]["code"])
        return out

    async def _read(self, listening: asyncio.Future) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := (await self.proc.stderr.readline()).decode(errors="replace"):
            self.lines.append(line)
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m and not listening.done():
                listening.set_result(int(m.group(1)))
        if not listening.done():
            listening.set_exception(AssertionError(f"engine {self.name} exited: {''.join(self.lines[-20:])}"))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz`` with the token: (HTTP status, details); (0, {}) when it does not answer."""
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{self.port}/readyz", AUTH)
        return status, (json.loads(body) if status else {})

    async def total(self) -> int | None:
        status, body = await self.readiness()
        return body["sessions"]["total"] if status else None

    async def wait_exit(self, limit_s: float) -> int:
        assert self.proc is not None
        async with asyncio.timeout(limit_s):
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
        if self.proc is not None:
            await self.wait_exit(30)


@dataclass
class Cluster:
    engines: list[EngineProcess]
    lb_port: int
    stats_port: int
    log: Path
    haproxy: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}/v1/realtime"

    def engine(self, name: str) -> EngineProcess:
        return next(e for e in self.engines if e.name == name)

    async def balancer_view(self) -> dict[str, str]:
        """What HAProxy thinks of each engine: ``UP``, ``DOWN``, ``DOWN 1/2``, ..."""
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{self.stats_port}/stats;csv")
        assert status == 200, f"HAProxy's stats page: {status} {body[:200]}"
        rows = [line.split(",") for line in body.splitlines() if not line.startswith("#")]
        return {r[1]: r[17] for r in rows if len(r) > 17 and r[0] == "engines" and r[1] != "BACKEND"}

    async def wait_view(self, want: dict[str, str], limit_s: float = 15) -> None:
        deadline = time.monotonic() + limit_s
        while (view := await self.balancer_view()) != {**view, **want}:
            assert time.monotonic() < deadline, f"HAProxy shows {view}, expected {want}"
            await asyncio.sleep(0.1)

    async def ensure_up(self) -> None:
        """Both engines running, ready, with no session; HAProxy sees both UP."""
        for e in self.engines:
            if not e.alive:
                await e.start()
        deadline = time.monotonic() + LOAD_LIMIT_S
        for e in self.engines:
            while True:
                status, body = await e.readiness()
                if status == 200 and body["sessions"]["active"] == 0:
                    break
                assert e.alive, f"engine {e.name} exited: {''.join(e.lines[-20:])}"
                assert time.monotonic() < deadline, f"engine {e.name} not ready: {status} {body}"
                await asyncio.sleep(0.2)
        await self.wait_view({e.name: "UP" for e in self.engines})

    async def totals(self) -> dict[str, int | None]:
        return {e.name: await e.total() for e in self.engines}

    async def open(self) -> tuple[ClientConnection, str]:
        """A session through the balancer: (its connection, the engine it landed on)."""
        before = await self.totals()
        ws = await connect(self.url, additional_headers=AUTH, open_timeout=20, ping_interval=None)
        first = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert first["type"] == "session.created", first
        after = await self.totals()
        landed = [n for n, t in after.items() if t is not None and t != before[n]]
        assert len(landed) == 1, f"session totals {before} -> {after}"
        return ws, landed[0]

    def report(self) -> str:
        logs = [f"--- engine {e.name} (port {e.port})\n{''.join(e.lines[-40:])}" for e in self.engines]
        tail = self.log.read_text(errors="replace").splitlines()[-40:] if self.log.exists() else []
        return "\n".join([*logs, "--- haproxy", *tail])


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory):
    exe = haproxy()
    folder = tmp_path_factory.mktemp("balancer")
    engines = [EngineProcess("a", max_sessions=2), EngineProcess("b", max_sessions=4)]
    c = Cluster(engines, free_port(), free_port(), folder / "haproxy.log")
    try:
        for e in engines:
            await e.start()  # both load at once; each listens (503 "loading") before it is ready
        cfg = folder / "haproxy.cfg"
        cfg.write_text(balancer_config(EXAMPLE.read_text(), c.lb_port, c.stats_port, engines))
        await check_config(cfg)
        with c.log.open("w") as log:
            c.haproxy = await asyncio.create_subprocess_exec(exe, "-db", "-f", str(cfg), stdout=log,
                                                             stderr=asyncio.subprocess.STDOUT)
        await c.ensure_up()
        yield c
    finally:
        print(c.report())
        if c.haproxy is not None and c.haproxy.returncode is None:
            c.haproxy.terminate()
            try:
                await asyncio.wait_for(c.haproxy.wait(), 10)
            except TimeoutError:
                c.haproxy.kill()
                await c.haproxy.wait()
        for e in engines:
            await e.stop()


async def active_becomes(engine: EngineProcess, n: int, limit_s: float = 10) -> None:
    """Poll the engine's session count until it is ``n`` (bounded)."""
    async with asyncio.timeout(limit_s):
        while (await engine.readiness())[1]["sessions"]["active"] != n:  # noqa: ASYNC110 - polling a process
            await asyncio.sleep(0.05)


async def recv_until_closed(ws: ClientConnection, limit_s: float) -> tuple[list[dict], ConnectionClosed]:
    seen: list[dict] = []
    try:
        async with asyncio.timeout(limit_s):
            while True:
                seen.append(json.loads(await ws.recv()))
    except ConnectionClosed as exc:
        return seen, exc
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def closed_after() -> AsyncIterator[list[ClientConnection]]:
    """A list for the test's sessions; every one is closed on the way out, whatever happened."""
    sockets: list[ClientConnection] = []
    try:
        yield sockets
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# --------------------------------------------------------------------------- the example itself


async def check_config(path: Path) -> None:
    """``haproxy -c -f``: the configuration parses and is valid."""
    proc = await asyncio.create_subprocess_exec(haproxy(), "-c", "-f", str(path), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()


def kubernetes_variant(example: str) -> str:
    """The example with its commented Kubernetes lines (server-template, resolvers) in use."""
    text, n_servers = re.subn(r"^    server engine\d+ .*\n", "", example, flags=re.M)
    text, n_template = re.subn(r"^    #   (server-template .*)$", r"    \1", text, flags=re.M)
    text, n_resolvers = re.subn(r"^# (resolvers k8s)\n#( +parse-resolv-conf)\n#( +hold valid .*)$",
                                r"\1\n\2\n\3", text, flags=re.M)
    assert (n_servers, n_template, n_resolvers) == (2, 1, 1), "deploy/haproxy.cfg changed shape"
    return text


@on_the_session_loop
async def test_the_documented_example_and_its_kubernetes_variant_are_valid_haproxy(tmp_path):
    await check_config(EXAMPLE)
    variant = tmp_path / "k8s.cfg"
    variant.write_text(kubernetes_variant(EXAMPLE.read_text()))
    await check_config(variant)


def _engine_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` as ``s2s-engine`` parses it (the image's entry point)."""
    from remote.cli import build_parser

    return build_parser().parse_args(argv)


def test_the_kubernetes_and_docker_examples_match_the_engine():
    """What deploy/ cannot run here is at least consistent with the engine it deploys."""
    import yaml

    docs = {d["kind"] + "/" + d["metadata"]["name"]: d for d in yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text())}
    pod = docs["Deployment/s2s-engine"]["spec"]["template"]["spec"]
    (engine,) = pod["containers"]
    args = _engine_args(engine["args"])
    assert args.headless and args.host == "0.0.0.0" and args.profile == "gpu"
    assert not any(a.startswith("--token") for a in engine["args"])  # the token comes from a Secret
    env = {e["name"]: e for e in engine["env"]}
    assert sorted(env) == ["MALLOC_ARENA_MAX", "S2S_TOKEN"]
    assert "valueFrom" in env["S2S_TOKEN"] and env["MALLOC_ARENA_MAX"]["value"] == "2"  # docs/soak.md
    # the drain fits in the grace period Kubernetes gives before SIGKILL, with a margin to close
    assert args.grace + 3 <= pod["terminationGracePeriodSeconds"] <= args.grace + 30
    ports = {p["name"]: p["containerPort"] for p in engine["ports"]}
    assert ports["realtime"] == args.port
    ready, live = engine["readinessProbe"]["httpGet"], engine["livenessProbe"]["httpGet"]
    assert ready["path"] in READY_PATHS and live["path"] in HEALTH_PATHS
    assert ready["port"] == live["port"] == "realtime"
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == 1
    for name in ("Service/s2s-engine", "Service/s2s-engine-pods"):
        assert docs[name]["spec"]["selector"] == docs["Deployment/s2s-engine"]["spec"]["selector"]["matchLabels"]
    fetch = _engine_args(docs["Job/s2s-models-fetch"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (fetch.command, fetch.models_command, fetch.profile) == ("models", "fetch", "gpu")
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, flags=re.M).group(1))
    # the image runs what the Deployment runs, bar the one flag that needs a supervisor to restart it
    # (a `docker run` without --restart would stay down after a recycle): Kubernetes is one
    recycle = engine["args"].index("--recycle-rss-mib")
    assert cmd == engine["args"][:recycle] + engine["args"][recycle + 2:] and "--recycle-rss-mib" not in cmd
    limit = engine["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and 0.5 * int(limit[:-2]) * 1024 <= args.recycle_rss_mib < int(limit[:-2]) * 1024
    assert re.search(r"^ENTRYPOINT \[\"s2s-engine\"\]$", dockerfile, flags=re.M)
    assert f"EXPOSE {args.port}" in dockerfile and "scripts/setup.sh --cuda" in dockerfile


@on_the_session_loop
async def test_an_engine_listens_while_loading_and_tells_only_the_token_its_details(cluster):
    """Each engine was probed as soon as it listened (cluster start, and any restart): alive,
    not ready (``loading``), and a session is refused with 503 so a balancer can retry it."""
    for e in cluster.engines:
        assert e.loading_probes, e.name
        for probe in e.loading_probes:
            assert probe == {"readyz": (503, "loading\n"), "healthz": (200, "ok\n"),
                             "session": (503, p.ErrorCode.LOADING)}, (e.name, probe)
    await cluster.ensure_up()
    a = cluster.engine("a")
    ready = await a.probe()  # without the token: one word each
    assert ready["readyz"] == (200, "ready\n") and ready["healthz"] == (200, "ok\n")
    assert ready["session"] == "session.created"
    base = f"http://127.0.0.1:{a.port}"
    status, body = await asyncio.to_thread(http_get, f"{base}/healthz", AUTH)
    details = json.loads(body)
    assert status == 200 and details["profile"] == "offline" and set(details["models"]) == {"vad", "turn", "asr", "llm", "tts"}
    status, body = await asyncio.to_thread(http_get, f"{base}/readyz", AUTH)
    assert status == 200 and json.loads(body)["sessions"]["free"] == 2
    for path in ("/healthz", "/readyz"):  # a wrong token is told so, not answered
        assert (await asyncio.to_thread(http_get, base + path, {"Authorization": "Bearer wrong"}))[0] == 401


# --------------------------------------------------------------------------- the four scenarios


async def open_sessions(cluster, n: int, sockets: list) -> list[str]:  # noqa: ANN001
    """Open ``n`` sessions through the balancer (kept in ``sockets``); which engine took each."""
    landed = []
    for _ in range(n):
        ws, where = await cluster.open()
        sockets.append(ws)
        landed.append(where)
    return landed


@on_the_session_loop
async def test_sessions_spread_over_both_engines(cluster):
    await cluster.ensure_up()
    async with closed_after() as sockets:
        landed = await open_sessions(cluster, 4, sockets)
        assert sorted(landed) == ["a", "a", "b", "b"], landed  # least connections: 1-1, then 2-2
        assert landed[0] != landed[1]


@on_the_session_loop
async def test_a_full_engine_gets_no_new_session(cluster):
    await cluster.ensure_up()
    a, b = cluster.engines
    async with closed_after() as sockets:
        # at 2-2, least connections alone would pick the full engine a half the time
        landed = await open_sessions(cluster, 6, sockets)
        assert landed.count("a") == 2 and landed.count("b") == 4, landed
        for e in (a, b):
            status, body = await e.readiness()
            assert status == 503 and body["state"] == "full" and body["sessions"]["free"] == 0, body
            assert body["sessions"]["refused_full"] == 0  # no session was ever sent to a full engine
        await cluster.wait_view({"a": "DOWN", "b": "DOWN"})  # out of rotation, sessions kept
        with pytest.raises(InvalidStatus) as info:  # every engine full: the balancer says 503 itself
            await connect(cluster.url, additional_headers=AUTH, open_timeout=20)
        assert info.value.response.status_code == 503
        for e in (a, b):
            assert (await e.readiness())[1]["sessions"]["refused_full"] == 0
        # a slot frees on a: it is ready again, and the next session goes there
        on_a = next(ws for ws, where in zip(sockets, landed, strict=True) if where == "a")
        await on_a.close()
        sockets.remove(on_a)
        deadline = time.monotonic() + 10
        while (ready := await a.readiness())[0] != 200:
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.1)
        assert ready[1]["sessions"]["free"] == 1
        await cluster.wait_view({"a": "UP"})
        ws, where = await cluster.open()
        sockets.append(ws)
        assert where == "a"


@on_the_session_loop
async def test_a_draining_engine_loses_no_running_turn_while_new_sessions_go_to_the_other(cluster):
    await cluster.ensure_up()
    a, b = cluster.engines
    held: dict[str, list[ClientConnection]] = {"a": [], "b": []}
    want = {"a": 1, "b": 2}  # a has fewer sessions, so least connections would pick a next
    async with closed_after() as sockets:
        for _ in range(12):
            if all(len(held[n]) == k for n, k in want.items()):
                break
            ws, where = await cluster.open()
            sockets.append(ws)
            if len(held[where]) < want[where]:
                held[where].append(ws)
            else:  # one too many there: close it; the next tie goes the other way
                await ws.close()
                sockets.remove(ws)
                await active_becomes(cluster.engine(where), len(held[where]))
        assert {n: len(v) for n, v in held.items()} == want
        running = held["a"][0]
        await running.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "నమస్కారం, మీ ఊరి గురించి చెప్పండి."}]}}, ensure_ascii=False))
        await running.send(json.dumps({"type": "response.create"}))
        async with asyncio.timeout(30):
            while json.loads(await running.recv())["type"] != "response.created":
                pass
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        # readiness turns 503 at once, while the turn still runs
        deadline = time.monotonic() + 5
        while (ready := await a.readiness())[0] == 200:
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.01)
        assert ready[0] == 503 and ready[1]["state"] == "draining", ready
        assert await asyncio.to_thread(http_get, f"http://127.0.0.1:{a.port}/healthz") == (200, "ok\n")  # alive
        # new sessions go to b, though a has fewer (a refused handshake is retried there)
        for _ in range(2):
            ws, where = await cluster.open()
            sockets.append(ws)
            assert where == "b"
        seen, closed = await recv_until_closed(running, limit_s=60)
        kinds = [d["type"] for d in seen]
        done = [d for d in seen if d["type"] == "response.done"]
        assert done and done[0]["response"]["status"] == "completed", kinds  # the turn finished
        assert kinds.index("response.done") < len(kinds) - 1 and seen[-1]["type"] == "error"
        assert seen[-1]["error"]["code"] == p.ErrorCode.SHUTTING_DOWN
        assert closed.rcvd is not None and closed.rcvd.code == p.CloseCode.GOING_AWAY
        assert await a.wait_exit(30) == 0
        assert any("draining" in line for line in a.lines)


@on_the_session_loop
async def test_a_killed_engines_new_sessions_go_to_the_survivor(cluster):
    await cluster.ensure_up()  # starts a again if the drain test stopped it
    a, b = cluster.engines
    async with closed_after() as sockets:
        first, where1 = await cluster.open()
        second, where2 = await cluster.open()
        sockets += [first, second]
        assert {where1, where2} == {"a", "b"}
        on_a, on_b = (first, second) if where1 == "a" else (second, first)
        assert b.proc is not None
        b.proc.kill()  # SIGKILL: no drain, its sessions are lost
        _, closed = await recv_until_closed(on_b, limit_s=30)  # the balancer ends the client's side too
        assert closed is not None
        await on_a.close()  # a has room for two; least connections now prefers b (dead, not yet marked)
        await active_becomes(a, 0)
        for _ in range(2):
            ws, where = await cluster.open()
            sockets.append(ws)
            assert where == "a"
        assert await b.wait_exit(10) == -signal.SIGKILL
        await cluster.wait_view({"b": "DOWN"})


@on_the_session_loop
async def test_an_engine_whose_models_fail_to_load_exits_1_with_the_reason():
    """The listener is up while the models load; a load that fails closes it and exits 1 with one
    line naming the model, never a traceback (a balancer sees the engine go, an orchestrator restarts it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remote.server", "--port", "0", "--set", "vad.model=/nonexistent/vad.onnx",
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    text = err.decode()
    assert proc.returncode == 1, text
    assert "listening on ws://127.0.0.1:" in text  # it listened first
    assert "s2s-engine: error: vad model '/nonexistent/vad.onnx'" in text and "Traceback" not in text


@on_the_session_loop
async def test_sigterm_while_the_models_load_exits_0():
    """Stopped before it was ever ready (a rollout that changes its mind): readiness says
    draining, the load is let finish (a thread cannot be interrupted), the engine exits 0."""
    e = EngineProcess("early", max_sessions=1)
    await e.start()
    try:
        assert e.proc is not None
        e.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (await asyncio.to_thread(http_get, f"http://127.0.0.1:{e.port}/readyz"))[1] != "draining\n":
            assert time.monotonic() < deadline and e.alive, e.lines[-5:]
            await asyncio.sleep(0.02)
        assert await e.wait_exit(LOAD_LIMIT_S) == 0
        assert any("stopping while the models load" in line for line in e.lines)
    finally:
        await e.stop()

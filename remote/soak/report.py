"""A soak's verdict (:func:`verdict`, bounds in :class:`~remote.soak.options.Bounds`) and how it is
shown: the live view while it runs (:class:`LiveView`: rich, a progress bar and the latest samples),
the table of samples and the verdict at the end. The plot is :mod:`remote.soak.plot`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from remote.soak.options import Bounds, SoakOptions
from remote.soak.results import Tally, percentile


def latency_windows(turns: list[dict[str, Any]], window_s: float) -> list[dict[str, Any]]:
    """Voice-to-voice p50/p95 of the completed turns per ``window_s`` window (by when they ended)."""
    if not turns:
        return []
    last = max(t["t_s"] for t in turns)
    out = []
    for k in range(int(last // window_s) + 1):
        v = [t["v2v_ms"] for t in turns if t["ok"] and t["v2v_ms"] is not None
             and k * window_s <= t["t_s"] < (k + 1) * window_s]
        out.append({"from_s": k * window_s, "to_s": (k + 1) * window_s, "turns": len(v),
                    "p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95)})
    return out


def verdict(samples: list[dict[str, Any]], turns: list[dict[str, Any]], bounds: Bounds) -> dict[str, Any]:
    """Judge a soak: each check is ``{"ok": bool | None, ...figures}`` (None: not enough data to
    judge, which does not fail the soak); ``ok`` overall is False when any check is False."""
    checks: dict[str, dict[str, Any]] = {}
    warm = [s for s in samples if s["t_s"] < bounds.warmup_s]
    after = [s for s in samples if s["t_s"] >= bounds.warmup_s]

    rss = [s for s in after if s.get("rss_mib") is not None]
    if len(rss) >= 2:
        base = rss[0]["rss_mib"]
        lo, hi = min(s["rss_mib"] for s in rss), max(s["rss_mib"] for s in rss)
        drift = max(hi - base, base - lo) / base * 100
        checks["rss"] = {"ok": drift <= bounds.rss_pct, "after_warmup_mib": base, "min_mib": lo, "max_mib": hi,
                         "last_mib": rss[-1]["rss_mib"], "drift_pct": round(drift, 2), "bound_pct": bounds.rss_pct}
    else:
        checks["rss"] = {"ok": None, "why": "fewer than 2 RSS samples after the warm-up"}

    for key in ("fds", "threads"):
        w = [s[key] for s in warm if s.get(key) is not None]
        a = [s[key] for s in after if s.get(key) is not None]
        if w and a:
            checks[key] = {"ok": max(a) <= max(w) + bounds.flat_slack, "warmup_max": max(w), "after_max": max(a),
                           "after_min": min(a), "last": a[-1], "slack": bounds.flat_slack}
        else:
            checks[key] = {"ok": None, "why": "no samples on both sides of the warm-up"}

    last = samples[-1] if samples else {}
    if last.get("server_error_lines") is None:
        checks["errors"] = {"ok": None, "why": "no server log (--url)"}
    else:
        n = last["server_error_lines"] + last["server_tracebacks"]
        checks["errors"] = {"ok": n == 0, "error_lines": last["server_error_lines"],
                            "tracebacks": last["server_tracebacks"]}
    checks["server_up"] = {"ok": bool(last.get("server_up")) if samples else None}

    windows = latency_windows(turns, bounds.window_s)
    judged = [w for w in windows if w["turns"] >= bounds.min_turns]
    if len(judged) >= 2:
        first = judged[0]["p50_ms"]
        worst = max(w["p50_ms"] for w in judged[1:])
        rise = (worst - first) / first * 100
        checks["latency"] = {"ok": rise <= bounds.latency_pct, "first_window_p50_ms": first,
                             "worst_later_p50_ms": worst, "rise_pct": round(rise, 1), "bound_pct": bounds.latency_pct}
    else:
        checks["latency"] = {"ok": None, "why": f"fewer than 2 windows with {bounds.min_turns}+ turns"}
    checks["latency"]["windows"] = windows
    return {"ok": all(c["ok"] is not False for c in checks.values()), "checks": checks, "bounds": asdict(bounds)}


# --------------------------------------------------------------------------- rendering


class LiveView:
    """A one-screen view while the soak runs: a progress bar and the latest sample."""

    def __init__(self, console: Any, opts: SoakOptions):
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console, self.opts = console, opts
        self.progress = Progress(TextColumn("soak"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[turns]}"), console=console)
        self.task = self.progress.add_task("soak", total=opts.minutes * 60, turns="")
        self.rows: list[dict[str, Any]] = []
        self.live = Live(self._render(), console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def tick(self, t: float, total: float, tally: Tally) -> None:
        done = sum(1 for x in tally.turns if x.ok)
        self.progress.update(self.task, completed=min(t, total),
                             turns=f"{done} turns, {len(tally.turns) - done} failed, {tally.hostile_errors} "
                                   f"hostile errors answered, {tally.killed} killed, {tally.stalled} stalled")
        self.live.update(self._render())

    def sample(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.live.update(self._render())

    def _render(self) -> Any:
        from rich.console import Group

        return Group(self.progress, sample_table(self.rows[-12:], "latest samples"))


def _f(v: Any, nd: int = 0) -> str:
    return "—" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def sample_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("min", "RSS MiB", "malloc in use / heap / free", "fds", "threads", "sessions", "turns",
                "v2v p50 / p95 ms", "errors", "load"):
        table.add_column(col, justify="right")
    for r in rows:
        s = r.get("sessions") or {}
        m = r.get("malloc") or {}
        table.add_row(f"{r['t_s'] / 60:.1f}", _f(r.get("rss_mib"), 1),
                      " / ".join(_f(m.get(k), 1) for k in ("in_use_mib", "heap_mib", "free_mib")),
                      _f(r.get("fds")), _f(r.get("threads")),
                      f"{s.get('active', '—')} ({s.get('total', '—')})", f"{r['turns']}"
                      + (f" ({r['turns_failed']} failed)" if r["turns_failed"] else ""),
                      f"{_f(r['v2v_p50_ms'])} / {_f(r['v2v_p95_ms'])}",
                      _f(None if r.get("server_error_lines") is None
                         else r["server_error_lines"] + r["server_tracebacks"]),
                      _f((r.get("load_avg") or [None])[0], 2))
    return table


def render(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    c = report["clients"]
    console.print(f"clients: {c['connections']} connections; {c['turns_completed']} turns completed, "
                  f"{c['turns_failed']} failed; voice-to-voice p50 {c['v2v_ms']['p50']} ms, p95 {c['v2v_ms']['p95']} "
                  f"ms; hostile {c['hostile']['errors_received']}/{c['hostile']['sent']} answered with an error; "
                  f"{c['killed_mid_reply']} killed mid-reply; {c['stalled']} stalled "
                  f"({c['stall_cut_by_server']} cut by the server); {c['refused_full']} refused (full)")
    v = report["verdict"]
    table = Table(title="verdict")
    for col in ("check", "result", "figures"):
        table.add_column(col)
    for name, chk in v["checks"].items():
        res = "[green]pass[/]" if chk["ok"] else "[red]FAIL[/]" if chk["ok"] is False else "[dim]n/a[/]"
        figs = ", ".join(f"{k}={val}" for k, val in chk.items() if k not in ("ok", "windows"))
        table.add_row(name, res, figs)
    console.print(table)
    wins = v["checks"]["latency"]["windows"]
    if wins:
        console.print("v2v p50 per window: " + ", ".join(
            f"{w['from_s'] / 60:g}-{w['to_s'] / 60:g} min {_f(w['p50_ms'])} ms (n={w['turns']})" for w in wins))
    console.print("[bold green]PASS[/]" if v["ok"] else "[bold red]FAIL[/]")


__all__ = ["LiveView", "latency_windows", "render", "sample_table", "verdict"]

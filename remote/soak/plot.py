"""The plot of a soak (``s2s-engine bench soak --plot OUT.svg``): memory and latency over time, as SVG.

Panels sharing the time axis (minutes): the server process's RSS (MiB, as the verdict judges it:
without short-lived children such as an espeak-ng run; the warm-up shaded, the ±3 % band around the
RSS at the end of the warm-up drawn), with open fds and threads as thin lines on a right-hand axis;
where the server reported it (``/healthz``), its allocator's heap, the bytes in use and the free
space it keeps (``remote.memory``: a heap that grows while in-use stays flat is not a leak); and
voice-to-voice p50 / p95 per sample (ms), with each latency window's p50 as a step. Hand-written SVG: no plotting library to install for one figure (GitHub renders it in the
README), and the file is text that diffs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

W, H2 = 900, 560
"""The width, and the height with two panels (a third, the allocator's, adds one panel)."""
LEFT, RIGHT, TOP = 70, 70, 40
PANEL_H, GAP = 200, 60


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = (lo // step) * step
    out, v = [], start
    while v <= hi + step * 0.01:
        if v >= lo - step * 0.01:
            out.append(round(v, 6))
        v += step
    return out


class _Panel:
    def __init__(self, top: float, x_max: float, y_lo: float, y_hi: float):
        self.top, self.x_max = top, x_max or 1
        pad = (y_hi - y_lo) * 0.08 or 1
        self.y_lo, self.y_hi = y_lo - pad, y_hi + pad

    def x(self, t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * t / self.x_max

    def y(self, v: float, lo: float | None = None, hi: float | None = None) -> float:
        lo = self.y_lo if lo is None else lo
        hi = self.y_hi if hi is None else hi
        return self.top + PANEL_H * (1 - (v - lo) / ((hi - lo) or 1))


def _line(points: list[tuple[float, float]], color: str, width: float = 2, dash: str = "") -> str:
    if not points:
        return ""
    d = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{color}" stroke-width="{width}"{extra} points="{d}"/>'


def svg(report: dict[str, Any]) -> str:
    """The plot of ``report`` (the JSON of ``bench soak``) as SVG text."""
    samples = report["samples"]
    bounds = report["verdict"]["bounds"]
    t_max = max([s["t_s"] for s in samples] + [report["options"]["minutes"] * 60]) / 60
    heap = [(s["t_s"] / 60, s["malloc"]) for s in samples if s.get("malloc")]
    height = H2 + (PANEL_H + GAP if heap else 0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" '
           'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{height}" fill="white"/>']
    o = report["options"]
    title = (f"bench soak: {o['sessions']} sessions, {o['minutes']:g} min, "
             f"{report.get('machine', {}).get('cpu', '')}".rstrip(", "))
    out.append(f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(title[:110])}</text>')

    def frame(p: _Panel, label: str, y_ticks: list[float], fmt: str = "{:g}") -> None:
        out.append(f'<rect x="{LEFT}" y="{p.top}" width="{W - LEFT - RIGHT}" height="{PANEL_H}" fill="none" '
                   'stroke="#888"/>')
        for v in y_ticks:
            if p.y_lo <= v <= p.y_hi:
                y = p.y(v)
                out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
                out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt.format(v)}</text>')
        out.append(f'<text x="16" y="{p.top + PANEL_H / 2}" transform="rotate(-90 16 {p.top + PANEL_H / 2})" '
                   f'text-anchor="middle">{escape(label)}</text>')
        for t in _ticks(0, t_max, 8):
            x = p.x(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{p.top + PANEL_H}" y2="{p.top + PANEL_H + 4}" '
                       'stroke="#888"/>')
            out.append(f'<text x="{x:.1f}" y="{p.top + PANEL_H + 16}" text-anchor="middle">{t:g}</text>')
        warm = min(bounds["warmup_s"] / 60, t_max)
        out.append(f'<rect x="{LEFT}" y="{p.top}" width="{p.x(warm) - LEFT:.1f}" height="{PANEL_H}" '
                   'fill="#000" fill-opacity="0.05"/>')

    # memory panel
    mem = [(s["t_s"] / 60, s["rss_mib"]) for s in samples if s.get("rss_mib") is not None]
    top1 = TOP
    if mem:
        lo, hi = min(v for _, v in mem), max(v for _, v in mem)
        rss_chk = report["verdict"]["checks"].get("rss", {})
        base = rss_chk.get("after_warmup_mib")
        if base:
            lo, hi = min(lo, base * (1 - bounds["rss_pct"] / 100)), max(hi, base * (1 + bounds["rss_pct"] / 100))
        p1 = _Panel(top1, t_max, lo, hi)
        frame(p1, "server RSS (MiB)", _ticks(p1.y_lo, p1.y_hi))
        if base:
            y_a, y_b = p1.y(base * (1 + bounds["rss_pct"] / 100)), p1.y(base * (1 - bounds["rss_pct"] / 100))
            x0 = p1.x(bounds["warmup_s"] / 60)
            out.append(f'<rect x="{x0:.1f}" y="{y_a:.1f}" width="{W - RIGHT - x0:.1f}" height="{y_b - y_a:.1f}" '
                       'fill="#2a7" fill-opacity="0.12"/>')
        out.append(_line([(p1.x(t), p1.y(v)) for t, v in mem], "#1f5fbf", 2.5))
        fd = [(s["t_s"] / 60, s["fds"], s["threads"]) for s in samples if s.get("fds") is not None]
        if fd:
            r_hi = max(max(f, th) for _, f, th in fd) * 1.25 + 1
            out.append(_line([(p1.x(t), p1.y(f, 0, r_hi)) for t, f, _ in fd], "#d08000", 1.2, "4 3"))
            out.append(_line([(p1.x(t), p1.y(th, 0, r_hi)) for t, _, th in fd], "#8a3fbf", 1.2, "2 2"))
            for v in _ticks(0, r_hi, 4):
                if v <= r_hi:
                    out.append(f'<text x="{W - RIGHT + 6}" y="{p1.y(v, 0, r_hi) + 4:.1f}">{v:g}</text>')
            out.append(f'<text x="{W - 14}" y="{top1 + PANEL_H / 2}" text-anchor="middle" '
                       f'transform="rotate(90 {W - 14} {top1 + PANEL_H / 2})">fds, threads</text>')
        legend = [("#1f5fbf", "RSS"), ("#d08000", "open fds"), ("#8a3fbf", "threads"),
                  ("#2a7", f"±{bounds['rss_pct']:g} % of the RSS after the warm-up (shaded grey)")]
        x = LEFT + 8
        for color, name in legend:
            out.append(f'<rect x="{x}" y="{top1 + 8}" width="10" height="10" fill="{color}"/>')
            out.append(f'<text x="{x + 14}" y="{top1 + 17}">{escape(name)}</text>')
            x += 20 + 7 * len(name)
    # allocator panel: what the RSS is made of (remote.memory), where the server reported it
    top2 = TOP + PANEL_H + GAP
    if heap:
        keys = (("heap_mib", "#1f5fbf", "heap (malloc's arenas)", ""), ("in_use_mib", "#2a7", "in use", ""),
                ("free_mib", "#d08000", "free, kept by malloc", "4 3"))
        vals_m = [m[k] for _, m in heap for k, *_ in keys if m.get(k) is not None]
        p3 = _Panel(top2, t_max, min(vals_m), max(vals_m))
        frame(p3, f"{heap[-1][1].get('allocator', 'malloc')} heap (MiB)", _ticks(p3.y_lo, p3.y_hi))
        x = LEFT + 8
        for k, color, name, dash in keys:
            out.append(_line([(p3.x(t), p3.y(m[k])) for t, m in heap if m.get(k) is not None], color, 2, dash))
            out.append(f'<line x1="{x}" x2="{x + 16}" y1="{top2 + 13}" y2="{top2 + 13}" stroke="{color}" '
                       f'stroke-width="2" stroke-dasharray="{dash}"/>')
            out.append(f'<text x="{x + 20}" y="{top2 + 17}">{escape(name)}</text>')
            x += 30 + 7 * len(name)
        top2 += PANEL_H + GAP
    # latency panel
    lat = [(s["t_s"] / 60, s.get("v2v_p50_ms"), s.get("v2v_p95_ms")) for s in samples]
    vals = [v for _, a, b in lat for v in (a, b) if v is not None]
    if vals:
        p2 = _Panel(top2, t_max, 0, max(vals))
        frame(p2, "voice-to-voice (ms)", _ticks(p2.y_lo, p2.y_hi))
        out.append(_line([(p2.x(t), p2.y(b)) for t, _, b in lat if b is not None], "#c0392b", 1.2, "4 3"))
        out.append(_line([(p2.x(t), p2.y(a)) for t, a, _ in lat if a is not None], "#c0392b", 2))
        for w in report["verdict"]["checks"]["latency"].get("windows", []):
            if w["p50_ms"] is not None:
                y = p2.y(w["p50_ms"])
                out.append(f'<line x1="{p2.x(w["from_s"] / 60):.1f}" x2="{p2.x(min(w["to_s"] / 60, t_max)):.1f}" '
                           f'y1="{y:.1f}" y2="{y:.1f}" stroke="#222" stroke-width="2.5" opacity="0.6"/>')
        x = LEFT + 8
        for color, name, dash in (("#c0392b", "p50 per sample", ""), ("#c0392b", "p95 per sample", "4 3"),
                                  ("#222", f"p50 per {bounds['window_s'] / 60:g}-min window", "")):
            out.append(f'<line x1="{x}" x2="{x + 16}" y1="{top2 + 13}" y2="{top2 + 13}" stroke="{color}" '
                       f'stroke-width="2" stroke-dasharray="{dash}"/>')
            out.append(f'<text x="{x + 20}" y="{top2 + 17}">{escape(name)}</text>')
            x += 30 + 7 * len(name)
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{height - 12}" text-anchor="middle">minutes</text>')
    v = report["verdict"]
    out.append(f'<text x="{W - RIGHT}" y="22" text-anchor="end" font-weight="bold" '
               f'fill="{"#2a7" if v["ok"] else "#c0392b"}">{"PASS" if v["ok"] else "FAIL"}</text>')
    out.append("</svg>")
    return "\n".join(x for x in out if x)


def write_svg(report: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`svg` of ``report`` to ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(svg(report), encoding="utf-8")
    return p


__all__ = ["svg", "write_svg"]

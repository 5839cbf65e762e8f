"""``bench latency``'s report as a rich table and two verdict lines (the JSON report is the data)."""

from __future__ import annotations

from typing import Any


def render_latency(report: dict[str, Any], console: Any) -> None:
    """The summary as a rich table."""
    from rich.table import Table

    s = report["summary"]
    o = report["options"]
    table = Table(title=f"voice-to-voice latency, profile {report['profile']!r} "
                        f"({s['streaming']['after_eot_ms']['n']} turns, reply {o['reply']}, "
                        f"{o['reply_tokens'] or '≤' + str(o['max_tokens'])} tokens)")
    for col, just in (("measurement", "left"), ("p50 ms", "right"), ("p95 ms", "right"), ("note", "left")):
        table.add_column(col, justify=just)

    def row(label: str, d: dict[str, Any], note: str = "") -> None:
        def f(v: float | None) -> str:
            return "—" if v is None else f"{v:.0f}"

        table.add_row(label, f(d["p50"]), f(d["p95"]), note)

    row("(a) streaming, after end of turn", s["streaming"]["after_eot_ms"], "first audio out − end-of-turn decision")
    row("(a) streaming, voice-to-voice", s["streaming"]["voice_to_voice_ms"], "first audio out − end of speech")
    row("    end-of-turn silence wait", s["streaming"]["eot_wait_ms"],
        "measured" if o["paced"] else "not real with --fast (audio fed faster than real time)")
    for k, d in s["streaming"]["stages_ms"].items():
        row(f"    {k}", d)
    row("(b) sequential cascade, after end of turn", s["cascade"]["after_eot_ms"], "ASR + whole reply + whole TTS")
    row("(b) sequential cascade, voice-to-voice", s["cascade"]["voice_to_voice_ms"], "+ the same end-of-turn wait")
    for k, d in s["cascade"]["stages_ms"].items():
        row(f"    {k}", d)
    row("(c) compute floor", s["floor"]["total_ms"], "ASR + LLM to first chunk + TTS of it, alone")
    for k, d in s["floor"]["stages_ms"].items():
        row(f"    {k}", d)
    console.print(table)
    r, t = s["ratios"], s["targets"]

    def verdict(ok: bool | None) -> str:
        return "[dim]n/a[/]" if ok is None else ("[green]met[/]" if ok else "[red]missed[/]")

    console.print(f"(a)/(c) = {r['streaming_over_floor']}  (target ≤ 1.15: {verdict(t['streaming_over_floor_met'])})")
    console.print(f"(b)/(a) = {r['cascade_over_streaming']}  (target ≥ 3 on replies of 3+ sentences: "
                  f"{verdict(t['cascade_over_streaming_met'])}; replies had {s['reply_chunks_p50']:.0f} chunks)")


__all__ = ["render_latency"]

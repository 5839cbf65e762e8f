"""Replay recorded WAV files through a Session, as a microphone would.

Each file is streamed in ``chunk_ms`` chunks, paced in real time (or as fast as possible
with ``fast=True``, where each turn's reply is awaited before more audio goes in, so turns
do not overlap), followed by trailing silence so the last turn ends. Replies are written
as WAV files; a report lists per turn the transcript, the reply and the latency breakdown.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import ENGINE_RATE, AudioInfo, load_wav, write_wav
from engine.engine import Engine
from engine.errors import S2SError
from engine.events import (
    ErrorEvent,
    Interruption,
    ReplyAudio,
    ResponseDone,
    ResponseStarted,
    TranscriptFinal,
    TranscriptPartial,
    TurnMetricsEvent,
)
from engine.metrics import STAGES
from engine.script import script_warning


@dataclass
class TurnReport:
    turn_id: str
    transcript: str = ""
    language: str | None = None
    script_ok: bool | None = None
    partials: list[str] = field(default_factory=list)
    response_id: str | None = None
    reply_text: str = ""
    heard_text: str = ""
    reply_wav: str | None = None
    reply_audio_ms: int = 0
    status: str | None = None
    interrupted: bool = False
    played_ms: int | None = None
    resumed: int = 0  # times the turn was ended and the user went on (its parts answered as one)
    turn_policy: str | None = None  # what ended the turn (engine.turn)
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class FileReport:
    path: str
    ok: bool = True
    error: str | None = None
    audio: dict[str, Any] | None = None
    turns: list[TurnReport] = field(default_factory=list)


async def replay_file(engine: Engine, path: str | Path, out_dir: str | Path | None = None, fast: bool = False,
                      chunk_ms: int = 20, trailing_ms: int | None = None,
                      audio: np.ndarray | None = None, language: str | None = None) -> FileReport:
    """Stream one file through a fresh session; returns its report (errors inside, never raised)."""
    report = FileReport(path=str(path))
    try:
        if audio is None:
            audio, info = load_wav(path)
        else:
            info = AudioInfo(str(path), ENGINE_RATE, 1, "FLOAT", len(audio) / ENGINE_RATE)
    except S2SError as exc:
        report.ok, report.error = False, str(exc)
        return report
    report.audio = asdict(info)
    session = engine.new_session()
    if language is not None:
        session.update(language=language)
    await session.start()
    turns: dict[str, TurnReport] = {}
    by_response: dict[str, TurnReport] = {}
    audio_out: dict[str, list[np.ndarray]] = {}

    def turn(turn_id: str | None) -> TurnReport:
        key = turn_id or f"turn_{len(turns) + 1}"
        if key not in turns:
            turns[key] = TurnReport(turn_id=key)
        return turns[key]

    async def collect() -> None:
        async for ev in session.stream():
            if isinstance(ev, TranscriptPartial):
                turn(ev.turn_id).partials.append(ev.text)
            elif isinstance(ev, TranscriptFinal):
                t = turn(ev.turn_id)
                t.transcript, t.language, t.script_ok = ev.text, ev.language, ev.script_ok
            elif isinstance(ev, ResponseStarted):
                t = turn(ev.turn_id)
                t.response_id = ev.response_id
                t.interrupted, t.played_ms, t.heard_text = False, None, ""  # a resumed turn's new reply
                by_response[ev.response_id] = t
            elif isinstance(ev, ReplyAudio):
                audio_out.setdefault(ev.response_id, []).append(ev.samples)
            elif isinstance(ev, Interruption):
                t = by_response.get(ev.response_id)
                if t:
                    t.interrupted, t.played_ms, t.heard_text = True, ev.played_ms, ev.heard_text
            elif isinstance(ev, ResponseDone):
                t = by_response.get(ev.response_id)
                if t:
                    t.reply_text, t.status, t.reply_audio_ms = ev.text, ev.status, ev.audio_ms
                    t.interrupted = t.interrupted or ev.status == "cancelled"
                    t.heard_text, t.played_ms = ev.heard_text, ev.played_ms
            elif isinstance(ev, TurnMetricsEvent):
                t = by_response.get(ev.metrics.response_id or "")
                if t:
                    t.metrics = ev.metrics.to_dict()
                    t.interrupted = t.interrupted or ev.metrics.interrupted
                    t.resumed, t.turn_policy = ev.metrics.resumed, ev.metrics.turn_policy
            elif isinstance(ev, ErrorEvent):
                turn(ev.turn_id).errors.append(f"{ev.stage or 'engine'}: {ev.message}")

    collector = asyncio.create_task(collect())
    eot = session.max_turn_wait_ms
    tail = np.zeros(int(ENGINE_RATE * (trailing_ms if trailing_ms is not None else eot + 1000) / 1000), np.float32)
    stream = np.concatenate([audio, tail])
    step = int(ENGINE_RATE * chunk_ms / 1000)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        for i, start in enumerate(range(0, len(stream), step)):
            session.push_audio(stream[start: start + step])
            if fast:
                await session.input_processed()
                if session.busy:
                    await session.wait_idle()
            else:
                delay = t0 + (i + 1) * chunk_ms / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        await session.input_processed()
        await session.wait_idle()
        if not fast:  # let the last reply "play" so a later barge-in could not have cut it
            await asyncio.sleep(0)
    finally:
        await session.close()
        await collector
    stem = Path(path).stem
    for response_id, pieces in audio_out.items():
        t = by_response.get(response_id)
        if t and out_dir is not None and pieces:
            t.reply_wav = str(write_wav(Path(out_dir) / f"{stem}_{t.turn_id}.wav", np.concatenate(pieces),
                                        session.output_sample_rate))
    report.turns = sorted(turns.values(), key=lambda t: int(t.turn_id.split("_")[-1]) if t.turn_id[-1].isdigit() else 0)
    if not report.turns:
        report.error = "no speech detected"
    return report


def turn_line(m: dict[str, Any]) -> str:
    """How the turn ended, in words: "end of turn: combined (p 0.91) after 230 ms of silence"."""
    by = m.get("turn_policy") or "—"
    probs = [f"{name} {m[key]:.2f}" for name, key in (("audio", "turn_audio_probability"),
                                                     ("text", "turn_text_probability")) if m.get(key) is not None]
    wait = m.get("eot_wait_ms")
    detail = f" ({', '.join(probs)})" if probs else ""
    line = f"end of turn: {by}{detail}"
    line += f" after {wait:.0f} ms of silence" if wait is not None else ""
    if m.get("resumed"):
        line += f"; resumed {m['resumed']}x (the user went on after an end of turn)"
    return line


def report_json(reports: list[FileReport], engine: Engine) -> dict[str, Any]:
    return {
        "schema": "s2s.replay/1",
        "profile": engine.profile.name,
        "engine": engine.describe(),
        "files": [asdict(r) for r in reports],
    }


def write_report(path: str | Path, reports: list[FileReport], engine: Engine) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report_json(reports, engine), ensure_ascii=False, indent=2), encoding="utf-8")


def render(report: FileReport, console: Any) -> None:
    """Print one file's turns: transcript, reply, and the latency breakdown table."""
    from rich.table import Table

    if not report.ok:
        console.print(f"[bold red]✗ {report.path}: {report.error}[/]")
        return
    a = report.audio or {}
    console.print(f"[bold]▶ {report.path}[/]  ({a.get('duration_s', 0):.1f} s, {a.get('sample_rate')} Hz, "
                  f"{a.get('channels')} ch, {a.get('subtype')})")
    if not report.turns:
        console.print("  no speech detected")
    for t in report.turns:
        flag = f"  [bold yellow]⚠ {script_warning(t.language)}[/]" if t.script_ok is False else ""
        console.print(f"  [cyan]{t.turn_id}[/] user : {t.transcript or '∅ (nothing recognised)'}{flag}")
        if t.response_id:
            cut = f"  [yellow](interrupted after {t.played_ms} ms: heard “{t.heard_text}”)[/]" if t.interrupted else ""
            console.print(f"  [cyan]{t.turn_id}[/] agent: {t.reply_text or '∅'}{cut}")
            if t.reply_wav:
                console.print(f"           reply audio: {t.reply_wav} ({t.reply_audio_ms} ms)")
        for e in t.errors:
            console.print(f"  [red]error: {e}[/]")
        if t.metrics:
            table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
            table.add_column("stage", style="dim")
            table.add_column("ms", justify="right")
            for key, label, _, _ in STAGES:
                v = t.metrics.get(key)
                table.add_row(label, "—" if v is None else f"{v:.0f}")
            v2v = t.metrics.get("voice_to_voice_ms")
            table.add_row("[bold]voice-to-voice[/]", "[bold]—[/]" if v2v is None else f"[bold]{v2v:.0f}[/]")
            tps, rtf = t.metrics.get("llm_tokens_per_s"), t.metrics.get("tts_rtf")
            console.print(table)
            console.print(f"           {turn_line(t.metrics)}")
            console.print(f"           LLM {t.metrics.get('llm_tokens')} tokens"
                          f"{f' at {tps:.0f} tok/s' if tps else ''}; TTS RTF {rtf if rtf is not None else '—'}")

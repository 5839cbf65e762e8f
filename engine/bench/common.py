"""What every ``s2s-engine bench`` command shares: the common arguments, ``--reply``'s type and the
JSON report. Used by the engine's benchmarks and by those registered from above the engine
(``bench wire``: :mod:`remote.bench`; ``bench soak``: :mod:`remote.soak`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.cliargs import add_profile_arguments


def reply_arg(value: str) -> str | int:
    """``--reply``: ``scripted``, ``natural`` or a token count of at least 1."""
    if value in ("scripted", "natural"):
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected scripted, natural or a token count") from None
    if n < 1:
        raise argparse.ArgumentTypeError("the token count must be at least 1")
    return n


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """``--profile``/``--set``/``-v`` and ``--json OUT.json`` on a bench command."""
    add_profile_arguments(p)
    p.add_argument("--json", dest="json_path", metavar="OUT.json", help="also write the report as JSON")


def write_json(path: str | None, data: dict[str, Any], console: Any) -> None:
    """Write the report to ``path`` (when given) as indented UTF-8 JSON and say where."""
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"report: {p}")


__all__ = ["add_common_arguments", "reply_arg", "write_json"]

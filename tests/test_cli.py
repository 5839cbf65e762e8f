"""The command lines: ``--profile``/``--set``/``-v`` defined once (engine.cliargs) and honoured
before or after a subcommand, for ``s2s-engine`` (remote.cli), ``python -m remote.server`` and
``s2s-tui``. Parsing only, plus one real run of ``s2s-engine --profile gpu models list``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from remote import cli as engine_cli
from s2s_tui import cli as tui_cli

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv: str):
    return engine_cli.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("argv", [
    ("--profile", "gpu", "replay", "a.wav"),
    ("replay", "a.wav", "--profile", "gpu"),
    ("--profile", "gpu", "replay", "--profile", "gpu"),
    ("--profile", "gpu", "models", "list"),
    ("models", "fetch", "--profile", "gpu"),
    ("--profile", "gpu", "doctor"),
    ("--profile", "gpu", "bench", "latency"),
    ("bench", "wire", "--profile", "gpu"),
    ("--headless", "--profile", "gpu"),
])
def test_profile_is_honoured_before_and_after_the_command(argv, monkeypatch):
    monkeypatch.delenv("S2S_PROFILE", raising=False)
    assert parse(*argv).profile == "gpu"


def test_default_profile_comes_from_the_environment_at_parse_time(monkeypatch):
    monkeypatch.delenv("S2S_PROFILE", raising=False)
    assert parse("replay").profile == "offline"
    parser = engine_cli.build_parser()
    monkeypatch.setenv("S2S_PROFILE", "gpu")
    assert parser.parse_args(["replay"]).profile == "gpu"
    assert parser.parse_args(["--profile", "offline", "replay"]).profile == "offline"


def test_two_different_profiles_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse("--profile", "gpu", "replay", "--profile", "offline")
    assert exc.value.code == 2
    assert "--profile given twice: 'gpu' before the command and 'offline' after it" in capsys.readouterr().err


def test_overrides_and_verbose_are_merged_from_both_places():
    args = parse("--set", "llm.max_tokens=8", "-v", "replay", "--set", "asr.beam_size=2")
    assert args.set == ["llm.max_tokens=8", "asr.beam_size=2"] and args.verbose
    args = parse("bench", "latency")
    assert args.set == [] and args.verbose is False


def test_headless_takes_no_command(capsys):
    with pytest.raises(SystemExit) as exc:
        engine_cli.main(["--headless", "replay"])
    assert exc.value.code == 2 and "takes no command" in capsys.readouterr().err


def test_the_tui_and_the_server_share_the_options(monkeypatch):
    monkeypatch.delenv("S2S_PROFILE", raising=False)
    args = tui_cli.build_parser().parse_args(["--profile", "gpu", "--set", "llm.max_tokens=8"])
    assert (args.profile, args.set, args.verbose) == ("gpu", ["llm.max_tokens=8"], False)
    assert tui_cli.build_parser().parse_args([]).profile == "offline"
    from remote.server import build_parser

    args = build_parser().parse_args(["--port", "0", "--profile", "gpu", "-v"])
    assert (args.profile, args.port, args.verbose) == ("gpu", 0, True)


def test_s2s_engine_profile_before_the_command_really_runs_that_profile():
    """The console script's module, as a process: the gpu profile's models are listed (and
    missing here), not the offline ones."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("S2S_PROFILE", None)
    proc = subprocess.run([sys.executable, "-m", "remote.cli", "--profile", "gpu", "models", "list"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    out = " ".join(proc.stdout.split())
    assert "models of profile 'gpu'" in out, proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr  # gpu models absent here

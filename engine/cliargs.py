"""The options every command takes, defined once: ``--profile``, ``--set`` and ``-v``.

``s2s-engine``, ``python -m remote.server``, ``s2s-tui`` and every ``s2s-engine`` subcommand
(replay, models, doctor, bench ...) build their parsers with :class:`CommandParser` and take
these options from :func:`profile_parent` (``parents=[profile_parent()]``) or
:func:`add_profile_arguments`.

Why a parser class: argparse gives a subcommand its own namespace and copies every value of it
over the parent's, defaults included, so ``s2s-engine --profile gpu replay`` used to run the
offline profile (the subcommand's default won). Here the options have no argparse default; the
top-level :class:`CommandParser` merges what was given before the subcommand with what was
given after it, then fills the defaults once:

- ``--profile``: given in both places with different values is a usage error; otherwise the one
  given wins, else ``$S2S_PROFILE``, else ``offline``;
- ``--set``: every override, the ones before the subcommand first;
- ``-v``: on if given anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import S2SError

PROFILE_ENV = "S2S_PROFILE"
DEFAULT_PROFILE = "offline"
_BEFORE = "_before_command_"  # dest prefix of the options given before a subcommand


def add_profile_arguments(parser: Any, *, before_command: bool = False,
                          verbose_help: str = "log engine internals") -> None:
    """Add ``--profile``, ``--set`` and ``-v`` to ``parser`` (a parser or an argument group).

    ``before_command``: for the top level of a parser with subcommands (the values are kept apart
    and merged with the subcommand's by :class:`CommandParser`).
    """
    prefix = _BEFORE if before_command else ""
    parser.add_argument("--profile", dest=f"{prefix}profile", default=argparse.SUPPRESS,
                        help=f"profile name (offline, gpu) or path to a .toml file "
                             f"(default: ${PROFILE_ENV}, else {DEFAULT_PROFILE})")
    parser.add_argument("--set", dest=f"{prefix}set", action="append", default=argparse.SUPPRESS,
                        metavar="SECTION.KEY=VALUE",
                        help="override one profile value, e.g. --set llm.max_tokens=48 (repeatable)")
    parser.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="store_true",
                        default=argparse.SUPPRESS, help=verbose_help)


def profile_parent(*, before_command: bool = False) -> argparse.ArgumentParser:
    """A parent parser holding the shared options: ``ArgumentParser(parents=[profile_parent()])``."""
    parent = argparse.ArgumentParser(add_help=False)
    add_profile_arguments(parent.add_argument_group("profile"), before_command=before_command)
    return parent


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose results always carry ``profile``, ``set`` and ``verbose``.

    Use it for the top-level parser only: its subcommands get plain ``ArgumentParser`` s (merging
    happens once, at the top).
    """

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", argparse.ArgumentParser)
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        self._merge(ns)
        return ns, rest

    def _merge(self, ns: argparse.Namespace) -> None:
        d = vars(ns)
        before, after = d.pop(f"{_BEFORE}profile", None), d.pop("profile", None)
        if before is not None and after is not None and before != after:
            self.error(f"--profile given twice: {before!r} before the command and {after!r} after it")
        ns.profile = after or before or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
        ns.set = [*(d.pop(f"{_BEFORE}set", None) or []), *(d.pop("set", None) or [])]
        ns.verbose = bool(d.pop(f"{_BEFORE}verbose", False)) or bool(d.pop("verbose", False))


__all__ = ["DEFAULT_PROFILE", "PROFILE_ENV", "CommandParser", "add_profile_arguments", "profile_parent",
           "run_subcommand"]


def run_subcommand(prog: str, command: str, register: Callable[[Any], None], argv: Sequence[str] | None = None,
                   description: str | None = None) -> int:
    """``python -m MODULE ...``: ``s2s-engine`` subcommands run on their own. ``register(sub)``
    adds them to the subparsers ``sub``; ``argv`` (default ``sys.argv[1:]``) follows ``command``.
    A deliberate error is one line on stderr and exit code 1, never a traceback."""
    parser = CommandParser(prog=prog, description=description)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except S2SError as exc:
        print(f"s2s-engine: error: {exc}", file=sys.stderr)
        return 1

"""Bounded mappings: remember the newest N entries of a dict, forget the oldest first.

Long sessions must not grow per-turn or per-response records without limit (the wire protocol's
event mapper, the server's and the client's network stamps, the TUI's playback records). A plain
``dict`` keeps insertion order, so the oldest entry is ``next(iter(d))``; :func:`remember` is the
one place that trims it. Standard library only, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(d: MutableMapping[K, V], key: K, value: V, limit: int,
             on_evict: Callable[[K, V], None] | None = None) -> V:
    """``d[key] = value`` as the newest entry (a key already there moves to the end); while ``d``
    holds more than ``limit`` entries, the oldest go, each passed to ``on_evict`` (to drop what
    refers to it). Returns ``value``."""
    d.pop(key, None)
    d[key] = value
    while len(d) > limit:
        old = next(iter(d))
        gone = d.pop(old)
        if on_evict is not None:
            on_evict(old, gone)
    return value


__all__ = ["remember"]

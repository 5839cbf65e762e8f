"""Cutting the LLM token stream into speakable chunks, so speech starts after one sentence.

A chunk ends at a sentence end (``. ? ! । ॥``, a newline) once it has ``min_chars``
characters; if no sentence end comes within ``max_wait_ms`` of the chunk's first token it
is cut at the last space (a clause), and it never grows past ``max_chars``. The first chunk
of a reply can have a shorter wait (``first_max_wait_ms``): the user is waiting for it.
"""

from __future__ import annotations

import re

from engine.config import SentenceOptions

# ? ! । ॥ end a sentence at once; a full stop only once whitespace follows ("3.5" is a number).
_CLOSE = "[\"'”’)\\]]*"
_END = re.compile(rf"[?!।॥][.?!।॥]*{_CLOSE}(?=\s|$)|\.+{_CLOSE}(?=\s)|\n")


class SentenceChunker:
    def __init__(self, options: SentenceOptions):
        self.o = options
        self.buf = ""
        self.started_ns: int | None = None
        self.cut = 0  # chunks handed out so far

    def push(self, text: str, now_ns: int) -> list[str]:
        """Add streamed text; return the chunks that are ready to speak."""
        if not self.buf.strip():
            self.started_ns = now_ns
        self.buf += text
        out = []
        while True:
            chunk = self._cut_sentence()
            if chunk is None:
                break
            out.append(chunk)
            self.started_ns = now_ns if self.buf.strip() else None
        while len(self.buf) > self.o.max_chars:
            out.append(self._cut_at_space(self.o.max_chars))
            self.started_ns = now_ns if self.buf.strip() else None
        out = [c for c in out if c]
        self.cut += len(out)
        return out

    def poll(self, now_ns: int) -> list[str]:
        """Cut at a clause boundary if the current chunk waited too long for a sentence end."""
        if self.started_ns is None or len(self.buf.strip()) < self.o.min_chars:
            return []
        wait = self.o.max_wait_ms if self.cut else min(self.o.first_max_wait_ms, self.o.max_wait_ms)
        if (now_ns - self.started_ns) / 1e6 < wait or " " not in self.buf.strip():
            return []
        chunk = self._cut_at_space(len(self.buf))
        self.started_ns = now_ns if self.buf.strip() else None
        self.cut += int(bool(chunk))
        return [chunk] if chunk else []

    def flush(self) -> list[str]:
        """The end of the stream: whatever is left."""
        rest, self.buf, self.started_ns = self.buf.strip(), "", None
        return [rest] if rest else []

    def _cut_sentence(self) -> str | None:
        for m in _END.finditer(self.buf):
            if len(self.buf[: m.end()].strip()) >= self.o.min_chars:
                chunk, self.buf = self.buf[: m.end()].strip(), self.buf[m.end():].lstrip()
                return chunk
        return None

    def _cut_at_space(self, limit: int) -> str:
        head = self.buf[:limit]
        cut = head.rstrip().rfind(" ")
        if cut <= 0:
            cut = limit
        chunk, self.buf = self.buf[:cut].strip(), self.buf[cut:].lstrip()
        return chunk

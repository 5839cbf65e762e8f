"""Text that keeps the screen aligned whichever way the terminal counts Telugu vowel signs.

Spacing combining marks (Unicode category Mc: the Telugu vowel signs ు ూ ృ ౄ, anusvara ం,
visarga ః, and their kin in every Indic script) have no agreed cell width. Rich and Textual give
them 0 cells; wcwidth-based terminals and multiplexers (tmux, xterm, anything using glibc's
``wcwidth``) give them 1. A Telugu line then takes ``k`` more cells on screen than Rich laid out,
and everything after it on that row (a border, the next panel) moves ``k`` cells right.

No width table is right for every terminal, so the layout does not depend on one:

- :class:`SafeText` wraps each line so that it fits even if every such mark takes a cell
  (:func:`max_cells`), so no text is lost at the panel's edge;
- the conversation panel is the rightmost thing on its rows and has no right border or
  scrollbar (``app.tcss``): after a Telugu line comes only blank space, and a terminal that
  counts wider just pushes blanks past the screen edge (Textual turns line wrap off).

``tests/test_tui.py`` checks the rendered screen under both counts.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

_TOKEN = re.compile(r"\S+\s*|\s+")


@lru_cache(maxsize=4096)
def _extra(ch: str) -> int:
    """1 for a character that Rich counts as 0 cells and a wcwidth terminal as 1, else 0."""
    return 1 if unicodedata.category(ch) == "Mc" and cell_len(ch) == 0 else 0


def ambiguous_marks(text: str) -> int:
    """How many characters of ``text`` terminals may count as one cell more than Rich does."""
    return sum(_extra(ch) for ch in text)


def max_cells(text: str) -> int:
    """The most cells a terminal may give ``text`` (Rich's count plus :func:`ambiguous_marks`)."""
    return cell_len(text) + ambiguous_marks(text)


def _clusters(s: str) -> list[str]:
    """``s`` cut before each character that is not a combining mark, a joiner or after a virama,
    so a hard break never separates a consonant from its vowel sign."""
    out: list[str] = []
    for ch in s:
        attach = out and (unicodedata.category(ch).startswith("M") or ch in "\u200c\u200d"
                          or unicodedata.combining(out[-1][-1]) == 9)  # 9: virama
        if attach:
            out[-1] += ch
        else:
            out.append(ch)
    return out


def wrap_offsets(plain: str, width: int) -> list[int]:
    """Offsets where ``plain`` is cut into lines of at most ``width`` :func:`max_cells` each
    (greedy, at spaces; a word longer than a line is cut between clusters; ``\\n`` always cuts)."""
    cuts: list[int] = []
    pos = 0
    for para in plain.split("\n"):
        if pos:
            cuts.append(pos)  # the start of this paragraph (its "\n" ends the line before)
        used = 0
        for m in _TOKEN.finditer(para):
            start, token = pos + m.start(), m.group()
            word = token.rstrip()
            need = max_cells(word)
            if used and used + need > width:
                cuts.append(start)
                used = 0
            if need > width:  # alone on its lines, cut between clusters
                at = start
                for cluster in _clusters(word):
                    w = max_cells(cluster)
                    if used and used + w > width:
                        cuts.append(at)
                        used = 0
                    used += w
                    at += len(cluster)
                used += max_cells(token[len(word):])
            else:
                used += max_cells(token)
        pos += len(para) + 1
    return cuts


class SafeText:
    """A Rich renderable: ``text`` wrapped to the width by :func:`wrap_offsets`, each line as
    Rich lays it out (never wrapped again)."""

    def __init__(self, text: Text) -> None:
        self.text = text

    def lines(self, width: int) -> list[Text]:
        width = max(1, width)
        parts = self.text.divide(wrap_offsets(self.text.plain, width))
        lines = []
        for part in parts:
            line = part.copy()
            line.rstrip()
            if line.plain.endswith("\n"):
                line.right_crop(1)
            lines.append(line)
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        joined = Text("\n").join(self.lines(options.max_width))
        joined.no_wrap, joined.overflow = True, "ignore"
        yield joined

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        words = self.text.plain.split() or [""]
        longest = max(max_cells(w) for w in words)
        return Measurement(min(longest, options.max_width), max(max_cells(line) for line in
                                                                self.text.plain.split("\n")))


__all__ = ["SafeText", "ambiguous_marks", "max_cells", "wrap_offsets"]

"""Which writing system a transcript is in, for the language the ASR was asked for.

Whisper base, asked for Telugu, often writes Urdu, Tamil or Latin letters instead: the words
are the model's guess at the sounds, not Telugu. A turn whose transcript is mostly in another
script than its language's is flagged (``script_ok`` in the turn metrics, the replay JSON and
the TUI), and the ASR decode stops early once its first tokens show it
(:mod:`engine.stages.asr_whisper`).

Pure Python (``unicodedata``): the Unicode blocks of the scripts below are all it needs.
"""

from __future__ import annotations

import unicodedata

# Unicode blocks of each script (first, last code point, inclusive).
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "latin": ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x024F), (0x1E00, 0x1EFF)),
    "telugu": ((0x0C00, 0x0C7F),),
    "devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
    "bengali": ((0x0980, 0x09FF),),
    "gurmukhi": ((0x0A00, 0x0A7F),),
    "gujarati": ((0x0A80, 0x0AFF),),
    "oriya": ((0x0B00, 0x0B7F),),
    "tamil": ((0x0B80, 0x0BFF),),
    "kannada": ((0x0C80, 0x0CFF),),
    "malayalam": ((0x0D00, 0x0D7F),),
    "sinhala": ((0x0D80, 0x0DFF),),
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "cyrillic": ((0x0400, 0x04FF),),
    "greek": ((0x0370, 0x03FF),),
    "hebrew": ((0x0590, 0x05FF),),
    "thai": ((0x0E00, 0x0E7F),),
    "georgian": ((0x10A0, 0x10FF),),
    "armenian": ((0x0530, 0x058F),),
    "hangul": ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F)),
}

_LATIN_LANGUAGES = (
    "en de fr es it pt nl sv da no nn fi et lv lt pl cs sk sl hr bs sq ro hu tr az uz id ms tl "
    "vi sw af ca gl eu cy ga is mt lb oc br so yo ha ln sn haw mi la jw su tk"
).split()

LANGUAGE_SCRIPT: dict[str, str] = {
    **dict.fromkeys(_LATIN_LANGUAGES, "latin"),
    "te": "telugu",
    "hi": "devanagari", "mr": "devanagari", "ne": "devanagari", "sa": "devanagari",
    "bn": "bengali", "as": "bengali",
    "pa": "gurmukhi", "gu": "gujarati", "or": "oriya", "ta": "tamil", "kn": "kannada",
    "ml": "malayalam", "si": "sinhala",
    "ar": "arabic", "fa": "arabic", "ur": "arabic", "ps": "arabic", "sd": "arabic",
    "ru": "cyrillic", "uk": "cyrillic", "be": "cyrillic", "bg": "cyrillic", "mk": "cyrillic",
    "sr": "cyrillic", "kk": "cyrillic", "mn": "cyrillic", "tt": "cyrillic", "ba": "cyrillic",
    "el": "greek", "he": "hebrew", "yi": "hebrew", "th": "thai", "ka": "georgian", "hy": "armenian",
    "ko": "hangul",
}  # fmt: skip
"""ISO 639-1 language -> its usual script. Languages not listed (Chinese, Japanese, ...) are not
checked: ``script_share`` gives None for them."""

MIN_LETTERS = 4
"""Fewer letters than this say nothing about the script (a name, "OK")."""

SCRIPT_OK_SHARE = 0.5
"""A transcript is in its language's script when at least this share of its letters are."""


def script_of(language: str | None) -> str | None:
    """The script ``language`` is written in, or None when unknown (or no language is set)."""
    return LANGUAGE_SCRIPT.get((language or "").lower())


def _in(ch: str, blocks: tuple[tuple[int, int], ...]) -> bool:
    o = ord(ch)
    return any(a <= o <= b for a, b in blocks)


def letters(text: str) -> list[str]:
    """The letters and combining marks of ``text`` (digits, spaces, punctuation left out)."""
    return [c for c in text if unicodedata.category(c)[0] in "LM"]


def script_share(text: str, language: str | None) -> float | None:
    """Share of the letters of ``text`` in ``language``'s script; None when the language's script
    is unknown or the text has fewer than :data:`MIN_LETTERS` letters."""
    script = script_of(language)
    found = letters(text)
    if script is None or len(found) < MIN_LETTERS:
        return None
    blocks = SCRIPTS[script]
    return sum(_in(c, blocks) for c in found) / len(found)


def script_warning(language: str | None) -> str:
    """What to tell a user whose transcript is flagged ``script_ok`` False."""
    script = script_of(language)
    where = f"in {script.capitalize()} script" if script else f"in the script of {language!r}"
    return f"not {where}: the speech recogniser did not understand"


def script_ok(text: str, language: str | None) -> bool | None:
    """True when ``text`` is written in ``language``'s script, False when it is mostly in another
    one, None when that cannot be told (unknown language, too few letters, empty text)."""
    share = script_share(text, language)
    return None if share is None else share >= SCRIPT_OK_SHARE

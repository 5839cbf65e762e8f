"""The Telugu text front end, shared by the TTS backends at inference and by training.

One function per job, pure Python, no heavy imports, so the engine's TTS backends call exactly
what training called (the SpeechT5 text front end must be applied identically on both sides,
or the model hears characters it never saw). It lives in the engine, which never imports
``training/``; training imports it from here (``training.text`` re-exports it):

- :func:`normalize_telugu`: Unicode NFC, punctuation folded to a small set, zero-width
  characters removed, numbers (ASCII or Telugu digits) spelt out as Telugu words.
- :func:`scoring_text`: what CER/WER compare (normalised, punctuation dropped).
- :func:`to_iso15919` / :func:`from_iso15919`: the reversible Telugu <-> ISO 15919 Latin
  transliteration (``indic-transliteration``, in the ``gpu`` and ``train`` extras, imported on
  first use), used to feed SpeechT5, whose tokenizer has no Telugu characters.
- :func:`tts_model_text` and :func:`char_ids`: the exact text and ids a SpeechT5 export reads.
"""

from __future__ import annotations

import re
import unicodedata

TELUGU_BLOCK = range(0x0C00, 0x0C80)
_TELUGU_DIGITS = {chr(0x0C66 + i): str(i) for i in range(10)}

# Punctuation folded to ASCII forms; anything else in the Unicode punctuation/symbol classes is dropped.
_PUNCT_MAP = {
    "\u0964": ".",  # devanagari danda, used in some Telugu text
    "\u0965": ".",
    "\u3002": ".",
    "\u2026": ".",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u00a0": " ",
}
_KEEP_PUNCT = set(".,?!'-:;\"")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)

_ONES = [
    "సున్నా", "ఒకటి", "రెండు", "మూడు", "నాలుగు", "ఐదు", "ఆరు", "ఏడు", "ఎనిమిది", "తొమ్మిది",
    "పది", "పదకొండు", "పన్నెండు", "పదమూడు", "పద్నాలుగు", "పదిహేను", "పదహారు", "పదిహేడు",
    "పద్దెనిమిది", "పందొమ్మిది",
]  # fmt: skip
_TENS = {2: "ఇరవై", 3: "ముప్పై", 4: "నలభై", 5: "యాభై", 6: "అరవై", 7: "డెబ్బై", 8: "ఎనభై", 9: "తొంభై"}
# (value, alone, followed-by-more, plural alone, plural followed)
_SCALES = [
    (10_000_000, "కోటి", "కోటి", "కోట్లు", "కోట్ల"),
    (100_000, "లక్ష", "లక్ష", "లక్షలు", "లక్షల"),
    (1_000, "వెయ్యి", "వెయ్యి", "వేలు", "వేల"),
    (100, "వంద", "నూట", "వందలు", "వందల"),
]


def number_to_telugu(n: int) -> str:
    """Spell a non-negative integer in Telugu words (Indian grouping: వెయ్యి, లక్ష, కోటి)."""
    if n < 0:
        return "మైనస్ " + number_to_telugu(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for value, alone, followed, plural_alone, plural_followed in _SCALES:
        if n >= value:
            count, rest = divmod(n, value)
            if count == 1:
                head = followed if rest else alone
            else:
                head = number_to_telugu(count) + " " + (plural_followed if rest else plural_alone)
            return head if rest == 0 else head + " " + number_to_telugu(rest)
    raise AssertionError("unreachable")


def _spell_number(match: re.Match[str]) -> str:
    token = match.group(0).replace(",", "")
    if "." in token:
        whole, frac = token.split(".", 1)
        words = number_to_telugu(int(whole or "0")) + " పాయింట్"
        return words + "".join(" " + _ONES[int(d)] for d in frac)
    if len(token) > 12:  # a phone number or an id: read digit by digit
        return " ".join(_ONES[int(d)] for d in token)
    return number_to_telugu(int(token))


_NUMBER = re.compile(r"\d+(?:,\d{2,3})*(?:\.\d+)?")


def normalize_telugu(text: str, spell_numbers: bool = True) -> str:
    """Normalise Telugu text for training targets and for synthesis.

    NFC; Telugu digits to ASCII, then numbers to Telugu words; curly quotes, dashes and the
    danda folded to ASCII; other punctuation and symbols dropped; zero-width joiners removed;
    whitespace collapsed. Latin letters (code-mixed English) are kept as they are.
    """
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    text = "".join(_TELUGU_DIGITS.get(c, _PUNCT_MAP.get(c, c)) for c in text)
    if spell_numbers:
        text = _NUMBER.sub(lambda m: " " + _spell_number(m) + " ", text)
    out = []
    for c in text:
        cat = unicodedata.category(c)
        if c in _KEEP_PUNCT or c.isspace() or not (cat.startswith("P") or cat.startswith("S") or cat == "Cc"):
            out.append(c)
        else:
            out.append(" ")
    text = re.sub(r"\s+", " ", "".join(out)).strip()
    return re.sub(r"\s+([.,?!:;])", r"\1", text)


def scoring_text(text: str) -> str:
    """What error rates compare: normalised, lower-cased, punctuation removed."""
    text = normalize_telugu(text)
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return re.sub(r"\s+", " ", text).strip().lower()


def has_letters(text: str) -> bool:
    return any(
        unicodedata.category(c).startswith("L") or unicodedata.category(c).startswith("M") for c in text
    )


def speakable(text: str) -> bool:
    """Is there anything to say aloud in ``text``: a letter or a digit, in any script? ("¿",
    "...": no. A voice says nothing for them, or makes noise.)"""
    return has_letters(text) or any(c.isdigit() for c in text)


def telugu_fraction(text: str) -> float:
    """Share of the letters in ``text`` that are in the Telugu block (0 when it has none)."""
    letters = [c for c in text if unicodedata.category(c)[0] in "LM"]
    if not letters:
        return 0.0
    return sum(ord(c) in TELUGU_BLOCK for c in letters) / len(letters)


def to_iso15919(text: str) -> str:
    """Telugu script -> ISO 15919 Latin (NFC, lower case); Latin text passes through."""
    try:
        from indic_transliteration import sanscript
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the SpeechT5 Telugu front end needs indic-transliteration (the gpu extra): "
            ".venv/bin/pip install -c constraints.txt 'indic-transliteration>=2.3'"
        ) from exc
    latin = sanscript.transliterate(text, sanscript.TELUGU, sanscript.ISO)
    return unicodedata.normalize("NFC", latin).lower()


def from_iso15919(text: str) -> str:
    """ISO 15919 Latin -> Telugu script (the inverse of :func:`to_iso15919`)."""
    from indic_transliteration import sanscript

    return unicodedata.normalize("NFC", sanscript.transliterate(text, sanscript.ISO, sanscript.TELUGU))


def tts_model_text(text: str, transliteration: str = "iso15919") -> str:
    """The exact text a SpeechT5 export sees: normalised, then transliterated when asked."""
    text = normalize_telugu(text)
    if transliteration == "iso15919":
        return to_iso15919(text)
    if transliteration in ("", "none"):
        return text
    raise ValueError(f"unknown transliteration {transliteration!r} (known: iso15919, none)")


# --------------------------------------------------------------------------- SpeechT5 characters
SPACE_PIECE = "\u2581"  # SentencePiece's word-boundary mark, its own token in SpeechT5's char model


def char_ids(model_text: str, vocab: dict[str, int], eos_id: int) -> list[int]:
    """Ids for SpeechT5's character vocabulary, as its SentencePiece char model would give them.

    A leading word mark, spaces as word marks, one id per code point, ``</s>`` at the end.
    Characters not in ``vocab`` are dropped (training extends the vocabulary to cover every
    character of its data, so this only happens to text unlike anything trained on).
    """
    text = SPACE_PIECE + " ".join(model_text.split()).replace(" ", SPACE_PIECE)
    return [vocab[c] for c in text if c in vocab] + [eos_id]

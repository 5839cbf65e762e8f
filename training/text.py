"""Telugu text for training: the engine's text front end, plus SentencePiece model files.

The front end (normalisation, numbers, ISO 15919, the SpeechT5 model text and ids) lives in
:mod:`engine.text`, where the TTS backends use it at inference; it is re-exported here so
training code and its users import one module. What only training needs stays here:
reading and writing the pieces of a SentencePiece ``.model`` file without the sentencepiece
package.
"""

from __future__ import annotations

from engine.text import (
    SPACE_PIECE,
    TELUGU_BLOCK,
    char_ids,
    from_iso15919,
    has_letters,
    normalize_telugu,
    number_to_telugu,
    scoring_text,
    telugu_fraction,
    to_iso15919,
    tts_model_text,
)


def read_spm_pieces(path: str) -> list[str]:
    """The pieces of a SentencePiece ``.model`` file, in id order, without the sentencepiece package.

    The file is a protobuf ``ModelProto``; field 1 holds the pieces, each a message whose
    field 1 is the piece string. Everything else is skipped.
    """
    from pathlib import Path

    data = Path(path).read_bytes()

    def varint(buf: bytes, i: int) -> tuple[int, int]:
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, i
            shift += 7

    def fields(buf: bytes):
        i = 0
        while i < len(buf):
            key, i = varint(buf, i)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, i = varint(buf, i)
                yield number, value
            elif wire == 1:
                yield number, buf[i : i + 8]
                i += 8
            elif wire == 5:
                yield number, buf[i : i + 4]
                i += 4
            elif wire == 2:
                n, i = varint(buf, i)
                yield number, buf[i : i + n]
                i += n
            else:
                raise ValueError(f"{path}: not a SentencePiece model (wire type {wire})")

    pieces = []
    for number, value in fields(data):
        if number == 1:
            piece = next((v for n, v in fields(value) if n == 1), b"")
            pieces.append(piece.decode("utf-8"))
    if not pieces:
        raise ValueError(f"{path}: no pieces found, not a SentencePiece model")
    return pieces


def write_spm_pieces(path: str, pieces: list[str]) -> None:
    """Write a minimal SentencePiece ``ModelProto`` holding ``pieces`` (for tiny test models)."""
    import struct
    from pathlib import Path

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    blob = bytearray()
    for i, piece in enumerate(pieces):
        kind = 3 if piece in ("<s>", "</s>", "<pad>") else (2 if piece == "<unk>" else 1)
        body = field(1, piece.encode("utf-8")) + varint(2 << 3 | 5) + struct.pack("<f", -float(i))
        body += varint(3 << 3 | 0) + varint(kind)
        blob += field(1, body)
    Path(path).write_bytes(bytes(blob))


__all__ = ["SPACE_PIECE", "TELUGU_BLOCK", "char_ids", "from_iso15919", "has_letters", "normalize_telugu",
           "number_to_telugu", "read_spm_pieces", "scoring_text", "telugu_fraction", "to_iso15919",
           "tts_model_text", "write_spm_pieces"]

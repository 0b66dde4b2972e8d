"""What people type into a batch record: reasons, comments and scanned ids.

A reason is signed and kept for the life of the record, and shown again on every console,
report and station page. So it must say something (not blank, nor only invisible
characters), stay one readable line of a sane length, and carry no control or format
characters: a newline or an escape sequence would forge lines or recolour a terminal, a
zero-width or bidirectional mark would make two different records read the same. A scanned
id (wristband, bag label) is compared character for character with the batch's own, so it
must be exactly what is printed there: no blank, no padding, nothing unprintable.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "MAX_REASON",
    "MAX_SCANNED_ID",
    "UnfitText",
    "check_reason",
    "check_scanned_id",
    "escaped",
]

#: Longest reason or comment, in characters (a paragraph; the record is no essay).
MAX_REASON = 1000
#: Longest scanned id, as a lot number.
MAX_SCANNED_ID = 64


class UnfitText(ValueError):
    """Text a person gave that the record cannot take as it is (says what and why)."""


def _unfit_character(text: str) -> str | None:
    """The first character no record line may hold, named, or None."""
    for char in text:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp") or char == _GARBLED:
            return f"U+{ord(char):04X} ({unicodedata.name(char, category)})"
    return None


#: U+FFFD REPLACEMENT CHARACTER: what a decoder puts where bytes were not text (a form
#: posted in another encoding, a garbled scan); nobody types it, and a record that shows
#: "���" for a reason says nothing of what was meant.
_GARBLED = "\ufffd"


def check_reason(text: str, what: str = "reason") -> str:
    """``text`` if it is fit to be a signed reason or comment; else UnfitText."""
    bad = _unfit_character(text)
    if bad is not None:
        raise UnfitText(f"{what} holds a control or invisible character {bad}: give one line")
    if not text.strip():
        raise UnfitText(f"{what} must say why (it is recorded with your signature)")
    if len(text) > MAX_REASON:
        raise UnfitText(f"{what} is {len(text)} characters; at most {MAX_REASON}")
    return text


def escaped(value: object, limit: int = 200) -> str:
    """``value`` as one inert line for a log or an audit row: every control or format
    character written as its escape (``\\x1b``, ``\\n``), cut at ``limit``. For words that
    were refused, so the refusal can say what came without passing it on."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return "".join(
        ascii(c)[1:-1] if unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" else c
        for c in text
    )


def check_scanned_id(text: str, what: str) -> str:
    """``text`` if it can be a scanned id as printed on a label; else UnfitText."""
    if not text.strip():
        raise UnfitText(f"{what} is blank: give it as printed")
    if text != text.strip():
        raise UnfitText(f"{what} {text!r} has leading or trailing spaces: give it as printed")
    bad = _unfit_character(text)
    if bad is not None or not text.isprintable():
        raise UnfitText(f"{what} {text!r} holds a character no label prints: give it as printed")
    if len(text) > MAX_SCANNED_ID:
        raise UnfitText(f"{what} is {len(text)} characters; at most {MAX_SCANNED_ID}")
    return text


def check_barcode_id(text: str, what: str) -> str:
    """``text`` if it can be a patient's or a bag's id as its barcode prints it; else
    UnfitText. Wristband and bag barcodes (Code 128, GS1) encode ASCII only: a letter
    outside it (a Cyrillic "Р" for a Latin "P", a full-width digit) was typed, and can
    never match the batch's ids (held to the same rule), so it is refused as input, to be
    scanned again, not taken as a chain-of-identity mismatch that ends the batch."""
    check_scanned_id(text, what)
    if not text.isascii():
        odd = next(c for c in text if not c.isascii())
        raise UnfitText(
            f"{what} {text!r} holds {odd!r} (U+{ord(odd):04X}), which no wristband or bag "
            "barcode encodes (a look-alike letter?): scan it, or type it as printed"
        )
    return text

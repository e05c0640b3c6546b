"""Which character encoding a text file is in, and whether its bytes are text at all.

``encoding_of(head)``: a byte-order mark decides; then strict UTF-8; then UTF-16 without a mark
(found by its shape: one byte of each pair taking few values, as Malayalam's 0x0D or Latin's 0x00);
then charset-normalizer's best guess (windows-1252 among equals); then windows-1252, which decodes
every byte. Decoding is always done with ``errors="replace"`` afterwards, so a wrong guess costs
characters, never the file.

``looks_binary(head)``: NUL bytes or many control characters that no text encoding produces.
"""

from __future__ import annotations

import codecs

#: Bytes of a file looked at to decide its encoding and whether it is text.
HEAD_BYTES = 64 * 1024
#: Share of control characters (other than tab, newlines, form feed, escape) above which bytes are
#: not text.
MAX_CONTROL_SHARE = 0.01

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\x1b")
_CONTROLS = frozenset(range(32)) - _TEXT_CONTROLS
_CONTROL_BYTES = bytes(sorted(_CONTROLS))


def bom_encoding(head: bytes) -> str | None:
    """The encoding a byte-order mark at the start names (its codec strips the mark), else None."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def _control_share(text: str) -> float:
    if not text:
        return 0.0
    controls = sum(1 for char in text if ord(char) in _CONTROLS)
    return controls / len(text)


def _decodes(head: bytes, encoding: str) -> str | None:
    """``head`` decoded strictly, tolerating a character cut at its end; None if it does not decode."""
    try:
        return codecs.getincrementaldecoder(encoding)("strict").decode(head, final=False)
    except (UnicodeDecodeError, LookupError):
        return None


def _utf16_without_bom(head: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' when ``head`` has the shape of UTF-16 text, else None."""
    if len(head) < 4:
        return None
    sample = head[: 4096 - 4096 % 2]
    for name, high in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
        # Text in one or two scripts keeps its high bytes to a handful of values (0x00 for Latin,
        # 0x0D for Malayalam, 0x20 for punctuation); binary data spreads them.
        if len(set(high)) > 8:
            continue
        text = _decodes(sample, name)
        if text is not None and _control_share(text) <= MAX_CONTROL_SHARE:
            return name
    return None


def is_text(head: bytes) -> bool:
    """True when ``head`` reads as text in some plausible encoding (see the module docstring)."""
    if bom_encoding(head) is not None:
        return True
    if b"\x00" in head:
        return _utf16_without_bom(head) is not None
    if _utf16_without_bom(head) is not None and _decodes(head, "utf-8") is None:
        return True
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return not head or controls / len(head) <= MAX_CONTROL_SHARE


def looks_binary(head: bytes) -> bool:
    return not is_text(head)


def encoding_of(head: bytes, declared: str | None = None) -> str:
    """The encoding to read a file whose first bytes are ``head`` with (a Python codec name).

    ``declared`` (e.g. a MIME charset or an HTML meta charset) is trusted after a BOM and before any
    guess, when Python knows it and the head decodes with it.
    """
    bom = bom_encoding(head)
    if bom is not None:
        return bom
    if declared:
        try:
            name = codecs.lookup(declared).name
        except LookupError:
            name = None
        if name is not None:
            # WHATWG: labels for Latin-1 and ASCII mean windows-1252, a superset that browsers use.
            if name in ("latin-1", "iso8859-1", "ascii"):
                name = "cp1252"
            if _decodes(head, name) is not None:
                return name
    utf8 = _decodes(head, "utf-8")
    if utf8 is not None and _control_share(utf8) <= MAX_CONTROL_SHARE:
        return "utf-8"
    utf16 = _utf16_without_bom(head)
    if utf16 is not None:
        return utf16
    guessed = _normalizer_guess(head)
    return guessed or "cp1252"


def _normalizer_guess(head: bytes) -> str | None:
    """charset-normalizer's best encoding for ``head``; among candidates it scores alike (short Latin
    text often scores cp1250, cp1252 and cp1257 the same) windows-1252 wins, as Windows writes it."""
    try:
        from charset_normalizer import from_bytes

        matches = list(from_bytes(head))
    except Exception:  # noqa: BLE001 - a guesser failing leaves the fallback, never the file unread
        return None
    if not matches:
        return None
    best = matches[0]
    for match in matches:
        alike = abs(match.chaos - best.chaos) <= 0.01 and abs(match.coherence - best.coherence) <= 0.01
        if alike and "cp1252" in match.could_be_from_charset:
            return "cp1252"
    return str(best.encoding) if best.encoding else None

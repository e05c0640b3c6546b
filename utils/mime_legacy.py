"""Attachments in pre-MIME and Outlook wrappings: uuencoded blocks and winmail.dat (TNEF).

Both return plain data (names as text, contents as bytes) for utils/mime.py to turn into
``Attachment``s. Neither raises on malformed input: a broken uuencoded line is skipped, a TNEF
stream tnefparse cannot read makes ``unpack_tnef`` return None so the caller keeps winmail.dat
itself instead of losing it.
"""

from __future__ import annotations

import binascii
import logging
import re
from dataclasses import dataclass, field

#: Deepest chain of Outlook messages embedded in one another that we unpack.
MAX_TNEF_DEPTH = 8

_UU_BEGIN = re.compile(rb"^begin[ \t]+([0-7]{3,4})[ \t]+([^\r\n]*)\r?$", re.MULTILINE)


@dataclass
class UUFile:
    """One uuencoded file: ``name`` as written on its ``begin`` line, ``start``/``end`` its span
    in the text it came from (so the caller can cut it out of the body text)."""

    name: bytes
    data: bytes
    start: int
    end: int


def _uu_line(line: bytes) -> bytes | None:
    """One uuencoded line decoded, b"" for a length-zero line, None when it is not uuencode."""
    if not line:
        return b""
    count = (line[0] - 32) & 63
    if count == 0:
        return b""
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        pass
    # Encoders that pad lines or drop trailing spaces: decode exactly the characters the
    # length byte announces.
    need = (count + 2) // 3 * 4 + 1
    try:
        return binascii.a2b_uu(line[:need].ljust(need, b" "))[:count]
    except binascii.Error:
        return None


def find_uuencoded(text: bytes) -> list[UUFile]:
    """Every ``begin <mode> <name>`` ... ``end`` block in ``text``, decoded.

    A block without its ``end`` line runs to the first line that is not uuencode (or the end of
    the text): what was decodable is kept.
    """
    if b"begin" not in text:
        return []
    found: list[UUFile] = []
    pos = 0
    while True:
        match = _UU_BEGIN.search(text, pos)
        if match is None:
            return found
        name = match.group(2).rstrip(b" \t\r")
        out = bytearray()
        cursor = match.end() + 1
        block_end = len(text)
        while cursor < len(text):
            nl = text.find(b"\n", cursor)
            line_end = len(text) if nl < 0 else nl
            line = text[cursor:line_end].rstrip(b"\r")
            next_cursor = len(text) if nl < 0 else nl + 1
            if line.rstrip() == b"end":
                block_end = next_cursor
                break
            decoded = _uu_line(line)
            if decoded is None:
                block_end = cursor
                break
            out.extend(decoded)
            cursor = next_cursor
        else:
            block_end = len(text)
        found.append(UUFile(name=name, data=bytes(out), start=match.start(), end=block_end))
        pos = max(block_end, match.end() + 1)


def decode_uuencode_body(body: bytes) -> tuple[bytes, bytes]:
    """A part sent with ``Content-Transfer-Encoding: x-uuencode``: (data, name from its begin line).

    Without a ``begin`` line every line is taken as uuencode.
    """
    files = find_uuencoded(body)
    if files:
        return files[0].data, files[0].name
    out = bytearray()
    for line in body.splitlines():
        decoded = _uu_line(line.rstrip(b"\r"))
        if decoded is None:
            break
        out.extend(decoded)
    return bytes(out), b""


@dataclass
class TnefFile:
    """One file inside winmail.dat: its name, bytes, and the chain of embedded-message numbers
    leading to it (``path`` like ``(3, 1)``: the first file of the third attachment, an embedded
    Outlook message)."""

    name: str
    data: bytes
    path: tuple[int, ...]


@dataclass
class TnefContent:
    files: list[TnefFile] = field(default_factory=list)
    body_text: str = ""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        text = value.decode("latin-1")
        for codec in ("utf-8", "cp1252"):
            try:
                text = value.decode(codec)
                break
            except UnicodeDecodeError:
                continue
        value = text
    return str(value or "").replace("\x00", "").strip()


def unpack_tnef(data: bytes) -> TnefContent | None:
    """The files (and plain body) of a winmail.dat, embedded Outlook messages unpacked too.

    Embedded messages (attach method 5) are containers, like message/rfc822 parts: their files
    are returned, not the message itself. Returns None when tnefparse cannot read ``data``.
    """
    try:
        import tnefparse
    except ImportError:  # pragma: no cover - tnefparse is a runtime requirement
        return None
    # tnefparse logs checksum and codepage trouble at WARNING; we report it our own way.
    logging.getLogger("tnefparse").setLevel(logging.ERROR)
    try:
        parsed = tnefparse.TNEF(data, do_checksum=False)
        content = TnefContent()
        _collect_tnef(parsed, (), content, 0)
        body = parsed.body
        content.body_text = _text(body) if body else ""
        return content
    except Exception:  # noqa: BLE001 - tnefparse raises anything (struct, index, unicode) on bad input
        return None


def _collect_tnef(parsed: object, prefix: tuple[int, ...], content: TnefContent, depth: int) -> None:
    for number, attachment in enumerate(getattr(parsed, "attachments", []), 1):
        embedded = getattr(attachment, "embed", None)
        if embedded is not None:
            if depth < MAX_TNEF_DEPTH:
                _collect_tnef(embedded, (*prefix, number), content, depth + 1)
            continue
        payload = attachment.data if isinstance(attachment.data, bytes) else b""
        try:
            name = _text(attachment.long_filename())
        except Exception:  # noqa: BLE001 - a malformed MAPI name must not lose the file
            name = ""
        if not name:
            name = _text(getattr(attachment, "_name", b""))
        content.files.append(TnefFile(name=name, data=payload, path=(*prefix, number)))

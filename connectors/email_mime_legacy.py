"""Attachments in pre-MIME and Outlook wrappings: uuencoded blocks and winmail.dat (TNEF).

Both return plain data (names as text, contents as bytes) for connectors/email_mime.py to turn into
``Attachment``s. Neither raises on malformed input: a broken uuencoded line is skipped, a TNEF
stream tnefparse cannot read makes ``unpack_tnef`` return None so the caller keeps winmail.dat
itself instead of losing it. Both do work linear in the size of their input, whatever it holds
(hostile mail is cut into many tiny blocks or objects), and both let the caller stop at a number
of files: ``iter_uuencoded`` is lazy, ``unpack_tnef`` takes ``max_files``.
"""

from __future__ import annotations

import binascii
import importlib.util
import logging
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Deepest chain of Outlook messages embedded in one another that we unpack.
MAX_TNEF_DEPTH = 8
#: TNEF objects (attributes) read from one winmail.dat, embedded messages included, before it is
#: given up as unreadable: about 7 per attached file, so real files stay far below it, while a
#: stream of tiny objects would cost seconds of parsing and hundreds of bytes of memory each.
MAX_TNEF_OBJECTS = 100_000

_UINT32 = struct.Struct("<I")
_TWO_UINT16 = struct.Struct("<HH")

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


def iter_uuencoded(text: bytes) -> Iterator[UUFile]:
    """Every ``begin <mode> <name>`` ... ``end`` block in ``text``, decoded, lazily and in order.

    One forward pass over ``text``: a caller that stops early (a limit on files per message) pays
    only for what it took. A block without its ``end`` line runs to the first line that is not
    uuencode (or the end of the text): what was decodable is kept.
    """
    if b"begin" not in text:
        return
    size = len(text)
    pos = 0
    while True:
        match = _UU_BEGIN.search(text, pos)
        if match is None:
            return
        name = match.group(2).rstrip(b" \t\r")
        out = bytearray()
        cursor = match.end() + 1
        block_end = size
        while cursor < size:
            nl = text.find(b"\n", cursor)
            line_end = size if nl < 0 else nl
            line = text[cursor:line_end].rstrip(b"\r")
            next_cursor = size if nl < 0 else nl + 1
            if line.rstrip() == b"end":
                block_end = next_cursor
                break
            decoded = _uu_line(line)
            if decoded is None:
                block_end = cursor
                break
            out.extend(decoded)
            cursor = next_cursor
        yield UUFile(name=name, data=bytes(out), start=match.start(), end=block_end)
        pos = max(block_end, match.end() + 1)


def decode_uuencode_body(body: bytes) -> tuple[bytes, bytes]:
    """A part sent with ``Content-Transfer-Encoding: x-uuencode``: (data, name from its begin line).

    Without a ``begin`` line every line is taken as uuencode.
    """
    first = next(iter_uuencoded(body), None)  # only the first block: the rest is not read
    if first is not None:
        return first.data, first.name
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
    """What ``unpack_tnef`` found. ``truncated``: there were more files than ``max_files``."""

    files: list[TnefFile] = field(default_factory=list)
    body_text: str = ""
    truncated: bool = False


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


def unpack_tnef(data: bytes, *, max_files: int | None = None) -> TnefContent | None:
    """The files (and plain body) of a winmail.dat, embedded Outlook messages unpacked too.

    Embedded messages (attach method 5) are containers, like message/rfc822 parts: their files
    are returned, not the message itself. At most ``max_files`` files are returned (``truncated``
    says when there were more). Returns None when the stream cannot be read, including a stream
    whose counts announce more entries than its bytes can hold (hostile input). Work is linear in
    ``len(data)`` (see ``_linear_tnef``).
    """
    tnef_class = _linear_tnef()
    if tnef_class is None:  # pragma: no cover - tnefparse is a runtime requirement
        return None
    _parse.objects, _parse.depth = 0, 0
    try:
        parsed = tnef_class(data, do_checksum=False)
        content = TnefContent()
        _collect_tnef(parsed, (), content, 0, max_files)
        body = parsed.body
        content.body_text = _text(body) if body else ""
        return content
    except Exception:  # noqa: BLE001 - tnefparse raises anything (struct, index, unicode) on bad input
        return None


def _collect_tnef(parsed: object, prefix: tuple[int, ...], content: TnefContent, depth: int,
                  max_files: int | None) -> None:
    for number, attachment in enumerate(getattr(parsed, "attachments", []), 1):
        if content.truncated:
            return
        embedded = getattr(attachment, "embed", None)
        if embedded is not None:
            if depth < MAX_TNEF_DEPTH:
                _collect_tnef(embedded, (*prefix, number), content, depth + 1, max_files)
            continue
        if max_files is not None and len(content.files) >= max_files:
            content.truncated = True
            return
        payload = attachment.data if isinstance(attachment.data, bytes) else b""
        try:
            name = _text(attachment.long_filename())
        except Exception:  # noqa: BLE001 - a malformed MAPI name must not lose the file
            name = ""
        if not name:
            name = _text(getattr(attachment, "_name", b""))
        content.files.append(TnefFile(name=name, data=payload, path=(*prefix, number)))


# tnefparse, made linear.
#
# tnefparse reads a TNEF stream by cutting ``data[offset:]`` for every object (a copy of the rest
# of the stream each time: quadratic, 34 s for a 3 MB winmail.dat of 64,000 tiny files), parses
# embedded Outlook messages to any depth, and its MAPI decoder loops as often as a count in the
# stream says even past the end of the data (a 29-byte winmail.dat announcing 16 million values
# took 68 s and 2.6 GB). We load a private copy of its ``tnef`` module (so tnefparse itself is
# unchanged for anyone else in the process) and replace three names in that copy: the stream is
# read through a memoryview and each object copies only its own bytes, up to MAX_TNEF_OBJECTS
# objects; embedded messages deeper than MAX_TNEF_DEPTH are not parsed; and every MAPI property
# list is checked before it is decoded (``_check_property_list``).

_tnef_lock = threading.Lock()
_tnef_class: Any = None
#: Per thread: objects read and embedding depth of the stream being parsed.
_parse = threading.local()

#: Fixed value sizes of MAPI property types (MS-OXCDATA, property data types).
_MAPI_FIXED_SIZES = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0006: 8,
                     0x0007: 8, 0x0014: 8, 0x0040: 8, 0x0048: 16}
#: MAPI property types whose values carry their own length.
_MAPI_VARIABLE_TYPES = frozenset({0x0000, 0x000D, 0x001E, 0x001F, 0x0102})
_MAPI_MULTI_VALUE = 0x1000
_MAPI_NAMED = 0x8000


def _linear_tnef() -> Any:
    """The TNEF class of our private, linear copy of ``tnefparse.tnef`` (None without tnefparse)."""
    global _tnef_class
    with _tnef_lock:
        if _tnef_class is not None:
            return _tnef_class
        try:
            import tnefparse.tnef as shared
        except ImportError:  # pragma: no cover - tnefparse is a runtime requirement
            return None
        # tnefparse logs checksum and codepage trouble at WARNING; we report it our own way.
        logging.getLogger("tnefparse").setLevel(logging.ERROR)
        spec = importlib.util.spec_from_file_location("tnefparse._kmrl_linear_tnef", shared.__file__)
        if spec is None or spec.loader is None:  # pragma: no cover - an installed module has both
            return None
        module: Any = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        decode_mapi = module.decode_mapi

        class LinearObject(module.TNEFObject):  # type: ignore[misc]
            def __init__(self, data: Any, do_checksum: bool = False) -> None:
                _parse.objects = getattr(_parse, "objects", 0) + 1
                if _parse.objects > MAX_TNEF_OBJECTS:
                    raise ValueError(f"more than {MAX_TNEF_OBJECTS} TNEF objects")
                if isinstance(data, memoryview):  # the rest of the stream: take this object only
                    data = data[: min(len(data), _UINT32.unpack_from(data, 5)[0] + 11)].tobytes()
                super().__init__(data, do_checksum)

        class LinearTnef(module.TNEF):  # type: ignore[misc]
            def __init__(self, data: Any, do_checksum: bool = True) -> None:
                depth = getattr(_parse, "depth", 0)
                if depth > MAX_TNEF_DEPTH:  # an embedded message we would not unpack anyway
                    self.attachments: list[Any] = []
                    self.body = None
                    return
                _parse.depth = depth + 1
                try:
                    super().__init__(data if isinstance(data, memoryview) else memoryview(data), do_checksum)
                finally:
                    _parse.depth = depth

        def checked_decode_mapi(data: bytes, codepage: str = "cp1252", starting_offset: int | None = None) -> Any:
            _check_property_list(data, starting_offset or 0)
            return decode_mapi(data, codepage, starting_offset)

        module.TNEFObject = LinearObject
        module.TNEF = LinearTnef
        module.decode_mapi = checked_decode_mapi
        _tnef_class = LinearTnef
        return _tnef_class


def _check_property_list(data: bytes, offset: int) -> None:
    """Raises ValueError when a count in the MAPI property list at ``offset`` announces more
    entries than the bytes after it can hold (every property takes at least 4 bytes, every value
    its fixed size or at least 4 bytes). A list that merely ends early passes: the decoder stops
    there by itself. One pass, bounded by the bytes the list spans."""
    size = len(data)

    def fits(count: int, each: int, at: int) -> None:
        if count * each > size - at:
            raise ValueError(f"MAPI property list announces {count} entries at byte {at}; "
                             f"only {size - at} bytes follow")

    if offset + 4 > size:
        return
    count = _UINT32.unpack_from(data, offset)[0]
    offset += 4
    fits(count, 4, offset)
    for _ in range(count):
        if offset + 4 > size:
            return
        kind, prop_id = _TWO_UINT16.unpack_from(data, offset)
        offset += 4
        if prop_id >= _MAPI_NAMED:  # a named property: GUID, then a number or a name
            if offset + 20 > size:
                return
            named_by_string = _UINT32.unpack_from(data, offset + 16)[0]
            offset += 20
            if named_by_string:
                if offset + 4 > size:
                    return
                length = _UINT32.unpack_from(data, offset)[0]
                offset += 4 + length + (-length % 4)
            else:
                offset += 4
        multi = bool(kind & _MAPI_MULTI_VALUE)
        kind &= ~_MAPI_MULTI_VALUE
        values = 1
        if multi:
            if offset + 4 > size:
                return
            values = _UINT32.unpack_from(data, offset)[0]
            offset += 4
            multi = values > 0  # tnefparse reads a multi-value count of 0 as one single value
        iterations = values or 1
        if kind in _MAPI_FIXED_SIZES:
            fits(iterations, _MAPI_FIXED_SIZES[kind], offset)
            offset += iterations * _MAPI_FIXED_SIZES[kind]
            if iterations % 2 and _MAPI_FIXED_SIZES[kind] == 2:
                offset += 2  # 2-byte values are padded to 4
            continue
        if kind not in _MAPI_VARIABLE_TYPES:
            return  # the decoder stops at a type it does not know
        fits(iterations, 4, offset)
        for _ in range(iterations):
            if not multi:  # a single variable value is a count of chunks, then the chunks
                if offset + 4 > size:
                    return
                chunks = _UINT32.unpack_from(data, offset)[0]
                offset += 4
                fits(chunks, 4, offset)
            else:
                chunks = 1
            for _ in range(chunks):
                if offset + 4 > size:
                    return
                length = _UINT32.unpack_from(data, offset)[0]
                offset += 4 + length + (-length % 4)

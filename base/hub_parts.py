"""What a Hub upload carries besides the file, and the body that streams it.

- The ``text`` part: a document's extracted text (``Document.content_text``) as UTF-8, capped at a
  number of bytes and cut on a character boundary (``capped_utf8``); when the cut happens here the
  metadata's ``extraction.truncated`` says so (``metadata_for_text``).
- The body of an enrichment update for a document already in the Hub (``enrichment_body``): the
  fields a new extraction or classification can change (``Document.enrichment()``), and the text.
- The body of a metadata update (``metadata_update_body``): the source item it is about, and what a
  rename or a move at the source changes of it (``METADATA_FIELDS``).
- ``MultipartBody``: the multipart/form-data upload, parts in this order: ``metadata`` (JSON),
  ``text`` (when there is one), ``file``. The text goes before the file so that a Hub which refuses
  it (an older Hub) can answer before the file's bytes are sent, and so that a Hub indexing the text
  has it in hand first. The body is read block by block: the file part streams from the spool file,
  never read whole; the other parts are small (metadata, and text of at most its cap).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from base.document import ENRICHMENT_FIELDS, Document

#: Upload block size when streaming a multipart body.
UPLOAD_BLOCK = 256 * 1024  # bytes
#: Default cap of the ``text`` part (HUB_TEXT_MAX_BYTES).
DEFAULT_TEXT_MAX_BYTES = 1024 * 1024  # bytes of UTF-8
#: The text part's form name, filename and type (the outbox keeps the text under the same filename).
TEXT_PART = "text"
TEXT_FILENAME = "text.txt"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def capped_utf8(text: str, max_bytes: int) -> tuple[bytes, bool]:
    """``text`` as UTF-8 of at most ``max_bytes`` bytes, cut before the first character that does
    not fit whole; (bytes, True) when something was cut. Code points that cannot be encoded (lone
    surrogates) become ``?``, so the result always decodes as UTF-8."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data, False
    cut = max(0, max_bytes)
    # data[cut] is the first byte left out: while it continues a character, that character does
    # not fit whole, so the cut moves back to where it starts.
    while cut > 0 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return data[:cut], True


@dataclass(frozen=True)
class TextPart:
    """A document's text as the Hub gets it: UTF-8 ``data``, ``truncated`` when the cap cut it."""

    data: bytes
    truncated: bool


def text_part(document: Document, max_bytes: int) -> TextPart | None:
    """The document's text capped at ``max_bytes``, or None when it has none."""
    if not document.content_text:
        return None
    data, truncated = capped_utf8(document.content_text, max_bytes)
    return TextPart(data, truncated)


def metadata_for_text(metadata: Mapping[str, Any], part: TextPart | None) -> dict[str, Any]:
    """``metadata`` with ``extraction.truncated`` set when ``part`` was cut by its cap."""
    out = dict(metadata)
    if part is not None and part.truncated:
        out["extraction"] = {**dict(out.get("extraction") or {}), "truncated": True}
    return out


def enrichment_body(enrichment: Mapping[str, Any], text: str | None, max_bytes: int) -> dict[str, Any]:
    """The JSON body of an enrichment update: the known fields of ``enrichment`` and, when ``text``
    is not None, ``text`` capped at ``max_bytes`` of UTF-8 (``extraction.truncated`` set when cut).
    Raises ValueError for a field not in ``ENRICHMENT_FIELDS`` (a typo would otherwise be lost)."""
    unknown = sorted(set(enrichment) - set(ENRICHMENT_FIELDS))
    if unknown:
        raise ValueError(f"not enrichment fields: {', '.join(unknown)}; "
                         f"expected some of {', '.join(ENRICHMENT_FIELDS)}")
    body = {name: enrichment[name] for name in ENRICHMENT_FIELDS if name in enrichment}
    if text is not None:
        data, truncated = capped_utf8(text, max_bytes)
        body["text"] = data.decode("utf-8")
        if truncated:
            body["extraction"] = {**dict(body.get("extraction") or {}), "truncated": True}
    return body


#: What a metadata update replaces for one source item of a stored document: what a rename or a move
#: at the source changes (the name, the title made of it, the URL, the source's extras such as the
#: drive path), and the item's version and modification time.
METADATA_FIELDS = ("version", "filename", "title", "source_url", "modified_at", "extra")
#: What names the source item a metadata update is about (``source`` and ``source_id`` required) and
#: the content it expects the document to have (``sha256``, checked when given).
METADATA_IDENTITY = ("source", "scope", "source_id", "sha256")


def metadata_update_body(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a metadata update: the identity and the known fields of ``metadata``.
    Raises ValueError for a field that is neither, or when ``source`` or ``source_id`` is missing."""
    unknown = sorted(set(metadata) - set(METADATA_IDENTITY) - set(METADATA_FIELDS))
    if unknown:
        raise ValueError(f"not metadata update fields: {', '.join(unknown)}; "
                         f"expected some of {', '.join(METADATA_IDENTITY + METADATA_FIELDS)}")
    missing = [name for name in ("source", "source_id") if not metadata.get(name)]
    if missing:
        raise ValueError(f"a metadata update needs {' and '.join(missing)}")
    return {name: metadata[name] for name in METADATA_IDENTITY + METADATA_FIELDS if name in metadata}


def _part_head(boundary: str, disposition: str, content_type: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()


def _quoted(filename: str) -> str:
    return filename.replace('"', "_").replace("\r", "").replace("\n", "")


class MultipartBody:
    """A multipart/form-data upload read block by block: ``metadata`` JSON, ``text`` (optional), ``file``.

    It has a length, so requests sends ``Content-Length`` and streams it without buffering; the file
    is read from ``content`` in blocks of at most ``UPLOAD_BLOCK`` bytes as the body is read.
    """

    def __init__(self, metadata: Mapping[str, Any], filename: str, mime_type: str, content: IO[bytes],
                 size: int, *, text: bytes | None = None) -> None:
        self.boundary = uuid.uuid4().hex
        head = _part_head(self.boundary, 'name="metadata"', "application/json; charset=utf-8")
        head += json.dumps(metadata, ensure_ascii=False).encode("utf-8") + b"\r\n"
        if text is not None:
            head += _part_head(self.boundary, f'name="{TEXT_PART}"; filename="{TEXT_FILENAME}"', TEXT_CONTENT_TYPE)
            head += text + b"\r\n"
        head += _part_head(self.boundary, f'name="file"; filename="{_quoted(filename)}"',
                           mime_type or "application/octet-stream")
        tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._parts: list[IO[bytes] | bytes] = [head, content, tail]
        self._offset = 0  # into self._parts[0] when it is bytes
        self.len = len(head) + size + len(tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        want = UPLOAD_BLOCK if size is None or size < 0 else size
        pieces: list[bytes] = []
        got = 0
        while got < want and self._parts:
            part = self._parts[0]
            if isinstance(part, bytes):
                # Sliced from an offset, so a large head (metadata and text) is copied once, not per read.
                piece = part[self._offset:self._offset + want - got]
                self._offset += len(piece)
                if self._offset >= len(part):
                    self._parts.pop(0)
                    self._offset = 0
            else:
                piece = part.read(min(want - got, UPLOAD_BLOCK))
                if not piece:
                    self._parts.pop(0)
                    continue
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

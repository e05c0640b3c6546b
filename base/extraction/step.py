"""The pipeline's extraction step: one spooled Document's text read on the process pool.

``extract_document`` fills ``Document.content_text`` and ``Document.extraction`` and never fails the
document: a file no extractor reads, a corrupt or hostile file, a child killed at its memory or time
limit, all end in ``extraction.method == 'none'`` with ``error`` saying why, and the document goes on
to the Hub.

Files no extractor reads are recognised in this process from their first bytes, name and declared type
(random or compressed bytes; text under a name and type no extractor takes, such as a ``.pdf`` that is
no PDF) and never cost a trip to the pool.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import IO

from base.document import Document
from base.extraction import EXTRACTORS, NONE, Extraction, ExtractionLimits, ExtractionRequest, extract
from base.extraction.normalize import normalize_text
from base.extraction.sniff import head_may_be_text, sniff_head
from base.pool import PoolError, ProcessPool
from config.settings import Settings

#: Bytes of a file's head looked at to decide whether it may hold text.
HEAD_BYTES = 4096
#: Bytes of the head whose distinct values are counted, and the most that text shows there.
DISTINCT_SAMPLE = 512
MAX_DISTINCT_IN_TEXT = 180
#: Seconds the pool gives an extraction beyond its own limit before killing the child: extraction
#: stops itself at EXTRACT_SECONDS and returns what it has; the kill is the backstop.
POOL_GRACE_SECONDS = 15.0
#: Seconds kept in hand before the run's deadline when an extraction is shortened to fit it.
DEADLINE_MARGIN_SECONDS = 5.0
#: Shortest time an extraction is given, whatever the run's deadline.
MIN_SECONDS = 5.0

# First bytes of the formats an extractor reads: PDF, PNG, JPEG, TIFF (both byte orders), ZIP (Office
# Open XML and OpenDocument), OLE compound files (Outlook .msg), RTF.
_SIGNATURES = (b"%PDF-", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"PK\x03\x04",
               b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"{\\rtf")

#: Byte order marks: text that says its encoding (UTF-16 of any script can use most byte values).
_BYTE_ORDER_MARKS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def limits_from(settings: Settings) -> ExtractionLimits:
    """The extraction limits the settings ask for (EXTRACT_*, OCR_*)."""
    return ExtractionLimits(max_chars=settings.extract_max_chars, max_pages=settings.extract_max_pages,
                            ocr_max_pages=settings.ocr_max_pages, ocr_languages=settings.ocr_languages,
                            ocr_dpi=settings.ocr_dpi, seconds=settings.extract_seconds)


def may_hold_text(head: bytes) -> bool:
    """Whether a file starting with ``head`` is worth sending to an extractor."""
    if head.startswith(_SIGNATURES):
        return True
    if head.startswith(_BYTE_ORDER_MARKS):
        return head_may_be_text(head)
    # Compressed or encrypted bytes use nearly every byte value at once (random data: about 220 of 256
    # in 512 bytes); text in any script uses far fewer (UTF-8 Malayalam: about 90). This ends the look
    # at an opaque attachment in microseconds, before the charset checks.
    if len(set(head[:DISTINCT_SAMPLE])) > MAX_DISTINCT_IN_TEXT:
        return False
    return head_may_be_text(head)


def _kind_here(head: bytes, document: Document) -> str | None:
    """The file's kind when it is known in this process to be one no extractor reads (empty, binary,
    a name and type no extractor takes): the pool is not asked. None: the pool reads it."""
    if not head:
        return "empty"
    if not may_hold_text(head):
        return "binary"
    kind = sniff_head(head, document.filename, document.mime_type)
    if kind is None or kind in EXTRACTORS:
        return None
    return kind


def _request(content: IO[bytes], document: Document, limits: ExtractionLimits) -> ExtractionRequest:
    """The pool request for ``content``: a path the child can open when the spool is a file on disk
    (``/proc/<our pid>/fd/<fd>`` opens the same unlinked file, nothing is copied), else its bytes (a
    spool still in memory is at most ``SPOOL_MEMORY_LIMIT``)."""
    if getattr(content, "_rolled", True):
        fileno = content.fileno()
        return ExtractionRequest(filename=document.filename, mime_type=document.mime_type, limits=limits,
                                 path=f"/proc/{os.getpid()}/fd/{fileno}")
    content.seek(0)
    return ExtractionRequest(filename=document.filename, mime_type=document.mime_type, limits=limits,
                             data=content.read())


def _decided_here(document: Document, settings: Settings) -> Extraction | None:
    """The extraction of a document that needs no pool (extraction off, or a file no extractor reads,
    known from its head); None when the pool must read it."""
    if not settings.extract_text:
        return Extraction(error="text extraction is turned off (EXTRACT_TEXT=0)")
    kind = _kind_here(document.open_content().read(HEAD_BYTES), document)
    return Extraction(kind=kind) if kind is not None else None


def reads_on_pool(document: Document, settings: Settings) -> bool:
    """Whether ``extract_document`` would send this document to the pool (a child's time, which may be
    long: OCR), rather than decide it here from its head at once."""
    return _decided_here(document, settings) is None


def extract_document(document: Document, settings: Settings, pool: ProcessPool, *,
                     deadline: float | None = None) -> Extraction:
    """Reads ``document``'s text on ``pool`` and records it on the document (see the module docstring).

    Returns the ``Extraction``; ``document.extraction`` holds its metadata (languages are added by the
    language step). ``deadline`` (monotonic), when given, shortens the extraction to fit the run."""
    decided = _decided_here(document, settings)
    if decided is not None:
        document.extraction = decided.metadata()
        return decided
    limits = limits_from(settings)
    if deadline is not None:
        # A document under way is finished (the run stops at its next safe point), but its extraction
        # is shortened to what is left of the run's time, down to MIN_SECONDS.
        left = max(MIN_SECONDS, deadline - time.monotonic() - DEADLINE_MARGIN_SECONDS)
        if left < limits.seconds:
            limits = replace(limits, seconds=left)
    started = time.monotonic()
    try:
        result = pool.run(extract, _request(document.open_content(), document, limits),
                          seconds=limits.seconds + POOL_GRACE_SECONDS, memory_mb=settings.extract_memory_mb)
    except PoolError as exc:
        result = Extraction(method=NONE, seconds=time.monotonic() - started, truncated=True,
                            error=f"extraction stopped: {exc}")
    result.text = normalize_text(result.text)
    document.content_text = result.text
    document.extraction = result.metadata()
    return result


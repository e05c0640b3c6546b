"""Text out of a document's bytes: the extraction step's engine (pure functions, no Redis, no Celery).

``extract(request)`` is what the pipeline runs on the process pool (base/pool.py): it tells the file's
real type by its first bytes (``sniff``), hands it to the extractor of that type, and returns an
``Extraction`` whatever happens: a corrupt, hostile or oversized file yields ``method='none'`` or a
truncated text with ``error`` saying why, never an exception. The pool's own memory and wall-time
limits are the backstop behind the limits enforced here.

Extractors are functions ``(Job) -> None`` registered by kind in ``EXTRACTORS``; each writes text into
``job.sink`` (which caps it), counts pages, sets ``job.method`` and checks ``job.check_time()`` between
pages or parts. ``ExtractionCut`` stops an extractor at a limit (what it wrote is kept); any other
exception is recorded as the document's extraction error.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Methods reported to the Hub.
TEXT_LAYER = "text-layer"
OCR = "ocr"
NONE = "none"


@dataclass(frozen=True)
class ExtractionLimits:
    """Bounds on one document's extraction (settings EXTRACT_*, OCR_*; see README "Settings")."""

    #: Characters of text kept at most; the rest is dropped and ``truncated`` set.
    max_chars: int = 1_000_000
    #: Pages (PDF pages, slides, sheets) read at most for their text layer.
    max_pages: int = 2_000
    #: Pages or images put through OCR at most per document.
    ocr_max_pages: int = 20
    #: Tesseract language models, in Tesseract's syntax.
    ocr_languages: str = "mal+eng"
    #: Resolution PDF pages are rendered at for OCR.
    ocr_dpi: int = 300
    #: Wall time for the whole document, seconds; extraction stops with what it has.
    seconds: float = 120.0
    #: Bytes an archive-based format (DOCX, XLSX, ODF, ...) may expand to in all; beyond, a bomb.
    max_expanded_bytes: int = 256 * 1024 * 1024


class ExtractionCut(Exception):
    """An extractor reached a limit; ``str(exc)`` says which (e.g. 'time limit of 120 s reached')."""


class TextSink:
    """Collects text up to ``max_chars``; later writes are dropped and ``truncated`` becomes True."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._parts: list[str] = []
        self._chars = 0
        self.truncated = False

    @property
    def full(self) -> bool:
        return self._chars >= self.max_chars

    @property
    def chars(self) -> int:
        return self._chars

    def write(self, text: str) -> bool:
        """Appends ``text`` (cut at the cap). False once the sink is full: the caller may stop reading."""
        if not text:
            return not self.full
        room = self.max_chars - self._chars
        if room <= 0:
            self.truncated = True
            return False
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self._parts.append(text)
        self._chars += len(text)
        return not self.full

    def getvalue(self) -> str:
        return "".join(self._parts)


@dataclass
class Job:
    """One document being extracted: where its bytes are, its limits, and what was found so far."""

    path: str
    filename: str
    mime_type: str
    kind: str
    limits: ExtractionLimits
    deadline: float
    sink: TextSink
    method: str = NONE
    pages: int = 0
    ocr_pages: int = 0
    #: Why some content was not read although no limit cut the document short (e.g. "12 pages over the
    #: OCR page limit"); reported as ``error`` when nothing else went wrong.
    notes: list[str] = field(default_factory=list)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self) -> None:
        """Raises ``ExtractionCut`` once the document's wall time is spent."""
        if time.monotonic() >= self.deadline:
            raise ExtractionCut(f"time limit of {self.limits.seconds:g} s reached")


@dataclass(frozen=True)
class ExtractionRequest:
    """What the pool child receives: the file (a path it can open, or the bytes of a small file), its
    name and declared type, and the limits."""

    filename: str
    mime_type: str
    limits: ExtractionLimits
    path: str | None = None
    data: bytes | None = None


@dataclass
class Extraction:
    """The outcome, always: ``text`` (capped) and the Hub's ``extraction`` metadata fields."""

    method: str = NONE
    kind: str = ""
    text: str = ""
    pages: int = 0
    ocr_pages: int = 0
    seconds: float = 0.0
    truncated: bool = False
    error: str | None = None

    @property
    def chars(self) -> int:
        return len(self.text)

    def metadata(self, languages: list[str] | None = None) -> dict[str, Any]:
        """The Hub's ``extraction`` object (README "Hub contract")."""
        return {
            "method": self.method, "type": self.kind, "pages": self.pages, "ocr_pages": self.ocr_pages,
            "chars": self.chars, "seconds": round(self.seconds, 3), "languages": list(languages or []),
            "truncated": self.truncated, "error": self.error,
        }


Extractor = Callable[[Job], None]

#: kind -> "module:function" of its extractor, imported on first use (a worker that never sees a PDF
#: never imports the PDF code).
EXTRACTORS: dict[str, str] = {
    "pdf": "base.extraction.pdf:extract_pdf",
    "png": "base.extraction.ocr:extract_image",
    "jpeg": "base.extraction.ocr:extract_image",
    "tiff": "base.extraction.ocr:extract_image",
    "docx": "base.extraction.office:extract_docx",
    "pptx": "base.extraction.office:extract_pptx",
    "xlsx": "base.extraction.spreadsheet:extract_xlsx",
    "odt": "base.extraction.opendocument:extract_opendocument",
    "ods": "base.extraction.opendocument:extract_opendocument",
    "odp": "base.extraction.opendocument:extract_opendocument",
    "rtf": "base.extraction.rtf:extract_rtf",
    "html": "base.extraction.markup:extract_html",
    "text": "base.extraction.plain:extract_plain",
    "csv": "base.extraction.plain:extract_plain",
    "eml": "base.extraction.message:extract_eml",
    "msg": "base.extraction.message:extract_msg",
}


def _extractor(kind: str) -> Extractor | None:
    target = EXTRACTORS.get(kind)
    if target is None:
        return None
    module, _, name = target.partition(":")
    function: Extractor = getattr(importlib.import_module(module), name)
    return function


def extract_path(path: str, *, filename: str, mime_type: str, limits: ExtractionLimits) -> Extraction:
    """Extracts the file at ``path``; never raises for anything the file contains."""
    from base.extraction.sniff import sniff

    started = time.monotonic()
    result = Extraction()
    try:
        kind = sniff(path, filename, mime_type)
    except OSError as exc:
        result.error = f"could not read the file: {exc}"
        return result
    result.kind = kind
    extractor = _extractor(kind)
    if extractor is None:
        result.seconds = time.monotonic() - started
        return result
    job = Job(path=path, filename=filename, mime_type=mime_type, kind=kind, limits=limits,
              deadline=started + limits.seconds, sink=TextSink(limits.max_chars))
    error: str | None = None
    try:
        extractor(job)
    except ExtractionCut as exc:
        error = str(exc)
        job.sink.truncated = True
    except MemoryError:
        error = "memory limit reached"
    except Exception as exc:  # noqa: BLE001 - a broken file is the document's problem, reported with it
        error = f"{type(exc).__name__}: {exc}"[:500]
    result.text = job.sink.getvalue()
    result.method = job.method if result.text.strip() else NONE
    result.pages, result.ocr_pages = job.pages, job.ocr_pages
    result.truncated = job.sink.truncated
    result.error = error or ("; ".join(job.notes) if job.notes else None)
    result.seconds = time.monotonic() - started
    return result


def extract(request: ExtractionRequest) -> Extraction:
    """The pool task: ``extract_path`` on the request's file (written to a private temporary file first
    when the request carries bytes)."""
    if request.path is not None:
        return extract_path(request.path, filename=request.filename, mime_type=request.mime_type,
                            limits=request.limits)
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="kmrl-extract-") as handle:
        handle.write(request.data or b"")
        handle.flush()
        return extract_path(handle.name, filename=request.filename, mime_type=request.mime_type,
                            limits=request.limits)

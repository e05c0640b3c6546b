"""Text out of PDFs: poppler's text layer, and OCR for the pages that have no usable one.

Per document: ``pdfinfo`` gives the page count and page sizes, and ``pdftotext`` streams the text
layer, page after page (pages end at a form feed). Each page is then:

- kept as it is, when it has a text layer in Unicode;
- OCRed (``pdftoppm -r DPI -f N -l N -gray``, then Tesseract: base/extraction/ocr.py) when its text
  layer is empty or nearly so (under ``MIN_TEXT_CHARS`` characters: a scan), or reads as legacy
  ASCII-mapped Malayalam (base/extraction/legacy.py): by its text alone when a large share of its
  words is gibberish, or with a lower bar when ``pdffonts`` names a legacy font (ML-TTKarthika,
  FML-TT*, ...) in the document (asked only once a page shows some gibberish). At most
  ``limits.ocr_max_pages`` pages per document; the rest are counted in a note ("N pages over the
  OCR page limit") and ``truncated`` is set. A legacy page that is not OCRed contributes nothing:
  its gibberish would only mislead language detection.

What a caller may rely on: text pages are separated by a form feed; ``job.pages`` is the document's
page count (pdfinfo), whether or not every page was read; pages past ``limits.max_pages`` are not
read (a note says how many); the process holds at most about the sink's cap of text (pdftotext's
output is read in chunks, a page is kept only up to the room left in the sink, and reading stops
when the sink is full); ``job.method`` is "ocr" when OCR gave more characters than the text layer,
else "text-layer". A file poppler cannot open raises ``ValueError`` with poppler's reason. A page that
cannot be OCRed (no Tesseract, pdftoppm failing on it) is noted and the other pages are still read.
Page images live in ``$TMPDIR/kmrl-pdf-<pid>-*`` while OCRed; folders left by a killed process are
removed by the next PDF extraction (``sweep_scratch``).

Why pdftotext: cairo, Word and LibreOffice write shaped Malayalam with its glyphs in visual order
and the Unicode text in an ``ActualText`` span; pypdf, pdfminer and PyMuPDF ignore that span and
return scrambled Malayalam, poppler reads it. pypdfium2 reads it too, and was measured against
pdftotext (bench/bench_extraction.py --compare-pdfium, a two-core host): words exactly as typed on a
cairo page of Malayalam and code-mixed text, Manjari / Rachana / Meera: pdftotext 100 / 98.4 / 100 %
(the Rachana miss, a word split before a vowel sign, is joined again here: 100 %), pypdfium2
77.4 / 100 / 93.5 % (it runs words together and splits a virama from its consonant); 1,000 pages:
pdftotext about 2,000 pages/s in 13 MB, pypdfium2 about 1,000 pages/s in 200 MB (in-process). Licences:
poppler-utils GPL-2.0-or-later, run as a separate program; pypdfium2 Apache-2.0 or BSD-3-Clause. So
pypdfium2 is not a dependency.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field

from base.extraction import OCR, TEXT_LAYER, Job, commands, legacy, ocr

#: A page whose text layer has fewer non-space characters than this is treated as a scan and OCRed
#: (a page number or a stamp on a scanned page is not its text).
MIN_TEXT_CHARS = 16
#: Pixels a page is rendered at for OCR at most: the DPI is lowered for pages larger than A2 so that
#: a huge page (a hostile MediaBox) cannot make pdftoppm and Tesseract allocate gigabytes.
MAX_RENDER_PIXELS = 36_000_000
#: What separates pages in the extracted text.
PAGE_BREAK = "\f"
#: Name of the temporary folders that hold page images while they are OCRed.
SCRATCH_PREFIX = "kmrl-pdf-"
#: Bytes of pdfinfo's and pdffonts' output read at most (a line per page and per font).
INFO_BYTES = 4 * 1024 * 1024

# pdftotext sometimes splits a word before a Malayalam vowel sign ("പ്ലാറ്റ്ഫ ോമിൽ", seen with Rachana):
# a dependent sign never follows a space in real text.
_SPACE_BEFORE_SIGN = re.compile("[ \n]+(?=[\u0d3e-\u0d4d\u0d57])")
_PAGES = re.compile(rb"^Pages:\s+(\d+)", re.MULTILINE)
_PAGE_SIZE = re.compile(rb"^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts", re.MULTILINE)


@dataclass
class DocumentInfo:
    """What pdfinfo says about a document, and pdffonts when asked (``legacy_fonts``)."""

    path: str
    pages: int
    last_page: int
    #: Page number -> (width, height) in points, for the pages that may be read.
    sizes: dict[int, tuple[float, float]] = field(default_factory=dict)
    _legacy_fonts: list[str] | None = None

    def legacy_fonts(self, job: Job) -> list[str]:
        """The legacy ASCII-mapped fonts among the fonts of the pages to be read. Asked of pdffonts on
        first use only: a document whose every page reads as ordinary text never needs it (pdffonts
        costs about half of pdftotext's time on a long document, a font per page)."""
        if self._legacy_fonts is None:
            try:
                fonts = commands.run(["pdffonts", "-l", str(self.last_page), self.path], job, max_bytes=INFO_BYTES)
            except commands.CommandFailed:
                fonts = b""  # fonts are a hint; the text sign still works without them
            names = (line.split(" ", 1)[0] for line in fonts.decode("utf-8", "replace").splitlines()[2:])
            self._legacy_fonts = sorted({name for name in names if name and legacy.is_legacy_font(name)})
        return self._legacy_fonts


def read_info(job: Job) -> DocumentInfo:
    """Page count and page sizes of the PDF (``ValueError`` if poppler cannot open it)."""
    last = max(1, job.limits.max_pages)
    try:
        out = commands.run(["pdfinfo", "-f", "1", "-l", str(last), job.path], job, max_bytes=INFO_BYTES)
    except commands.CommandFailed as exc:
        raise ValueError(f"not a readable PDF: {_reason(exc)}") from None
    found = _PAGES.search(out)
    if found is None:
        raise ValueError("not a readable PDF: pdfinfo found no page count")
    pages = int(found.group(1))
    sizes = {int(n): (float(w), float(h)) for n, w, h in _PAGE_SIZE.findall(out)}
    return DocumentInfo(job.path, pages, min(pages, last), sizes)


def _reason(exc: commands.CommandFailed) -> str:
    lines = [line for line in exc.stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"{exc.program} exited with status {exc.returncode}"


def text_pages(job: Job, last_page: int) -> Generator[tuple[int, str], None, None]:
    """(page number, text layer) of pages 1..``last_page``, streamed from pdftotext. A page is kept up
    to the room left in the sink plus one character (enough for the sink to see it was cut)."""
    argv = ["pdftotext", "-enc", "UTF-8", "-f", "1", "-l", str(last_page), job.path, "-"]
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    number, parts, kept = 1, [], 0
    chunks = commands.stream(argv, job)
    try:
        for chunk in chunks:
            text = decoder.decode(chunk)
            while text:
                end = text.find(PAGE_BREAK)
                piece = text if end < 0 else text[:end]
                room = job.sink.max_chars - job.sink.chars + 1 - kept
                if room > 0:
                    parts.append(piece[:room])
                    kept += len(parts[-1])
                if end < 0:
                    break
                yield number, "".join(parts)
                number, parts, kept = number + 1, [], 0
                text = text[end + 1:]
    except commands.CommandFailed as exc:
        if number == 1 and not parts:
            raise ValueError(f"not a readable PDF: {_reason(exc)}") from None
        job.notes.append(f"pdftotext stopped at page {number}: {_reason(exc)}")
    finally:
        chunks.close()
    if parts and "".join(parts).strip():
        yield number, "".join(parts)  # a last page without its form feed (pdftotext stopped early)


def render_dpi(size: tuple[float, float] | None, dpi: int) -> int:
    """``dpi``, lowered so that a page of ``size`` points renders to at most MAX_RENDER_PIXELS."""
    if size is None:
        return dpi
    width_in, height_in = size[0] / 72, size[1] / 72
    if width_in <= 0 or height_in <= 0:
        return dpi
    fitting = int((MAX_RENDER_PIXELS / (width_in * height_in)) ** 0.5)
    return max(1, min(dpi, fitting))


def ocr_page(job: Job, number: int, size: tuple[float, float] | None, scratch: str) -> str:
    """Page ``number`` rendered to gray pixels and OCRed."""
    root = os.path.join(scratch, f"page-{number}")
    dpi = render_dpi(size, job.limits.ocr_dpi)
    commands.run(["pdftoppm", "-r", str(dpi), "-f", str(number), "-l", str(number), "-gray", "-singlefile",
                  job.path, root], job)
    image = root + ".pgm"
    try:
        texts, _stopped = ocr.ocr_pages(image, job, max_pages=1)
    finally:
        if os.path.exists(image):
            os.unlink(image)
    return texts[0] if texts else ""


def sweep_scratch(folder: str | None = None) -> int:
    """Removes the page-image folders of extractions whose process is gone (a pool child killed at its
    time or memory limit cannot clean up after itself); returns how many. Each folder is named for
    the process that made it (``kmrl-pdf-<pid>-...``)."""
    removed = 0
    for path in glob.glob(os.path.join(folder or tempfile.gettempdir(), f"{SCRATCH_PREFIX}*-*")):
        owner = os.path.basename(path)[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def extract_pdf(job: Job) -> None:
    """The extractor of kind pdf (see the module docstring)."""
    info = read_info(job)
    sweep_scratch()
    job.pages = info.pages
    text_chars = ocr_chars = over_ocr_limit = 0
    first = True
    ocr_failure: str | None = None
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch, \
            contextlib.closing(text_pages(job, info.last_page)) as pages:
        for number, text in pages:
            job.check_time()
            scanned = len(text) - text.count(" ") - text.count("\n") < MIN_TEXT_CHARS
            share = 0.0 if scanned else legacy.page_share(text)
            gibberish = share >= legacy.STRONG_SHARE or (share >= legacy.WEAK_SHARE and bool(info.legacy_fonts(job)))
            if (scanned or gibberish) and (job.ocr_pages >= job.limits.ocr_max_pages or ocr_failure):
                over_ocr_limit += ocr_failure is None
                if gibberish:
                    text = ""
            elif scanned or gibberish:
                try:
                    text = ocr_page(job, number, info.sizes.get(number), scratch)
                except commands.CommandMissing as exc:
                    ocr_failure = str(exc)  # no OCR for the rest; the text layers are still read
                    job.notes.append(ocr_failure)
                    job.sink.truncated = True
                    text = "" if gibberish else text
                except commands.CommandFailed as exc:
                    job.notes.append(f"page {number} not OCRed: {_reason(exc)}")
                    job.sink.truncated = True
                    text = "" if gibberish else text
                else:
                    job.ocr_pages += 1
                    ocr_chars += len(text)
            else:
                if max(text, default="") >= "\u0d00" and _SPACE_BEFORE_SIGN.search(text):
                    text = _SPACE_BEFORE_SIGN.sub("", text)
                text_chars += len(text)
            if not first:
                job.sink.write(PAGE_BREAK)
            first = False
            if not job.sink.write(text.strip("\n")) and job.sink.full:
                break  # the sink is full: the rest could not be kept
    job.method = OCR if ocr_chars > text_chars else TEXT_LAYER
    if info.pages > info.last_page:
        job.notes.append(f"{info.pages - info.last_page} pages over the page limit")
        job.sink.truncated = True
    if over_ocr_limit:
        job.notes.append(f"{over_ocr_limit} page{'s' if over_ocr_limit != 1 else ''} over the OCR page limit")
        job.sink.truncated = True

"""Word documents (DOCX) and presentations (PPTX): their text, streamed part by part.

DOCX: headers, the body, footnotes and endnotes, then footers; one line per paragraph, a table row
per line with its cells separated by tabs, tracked deletions and field codes left out, and text in
``mc:Fallback`` (a copy of ``mc:Choice`` for older readers) read once. ``pages`` is the page count
Word saved in ``docProps/app.xml``, when it did.

PPTX: slides in the presentation's order, each followed by its speaker notes; one line per
paragraph; every slide read counts as a page.
"""

from __future__ import annotations

import re

from base.extraction import TEXT_LAYER, Job
from base.extraction.archive import BoundedZip, open_package
from base.extraction.ooxml import MC_NAMESPACE, main_part, r_id, relationships
from base.extraction.xmlstream import TextHandler, parse, split_name

#: WordprocessingML namespaces (transitional, strict).
W_NAMESPACES = frozenset({"http://schemas.openxmlformats.org/wordprocessingml/2006/main",
                          "http://purl.oclc.org/ooxml/wordprocessingml/main"})
#: DrawingML's main namespaces (slide text lives in a:t).
A_NAMESPACES = frozenset({"http://schemas.openxmlformats.org/drawingml/2006/main",
                          "http://purl.oclc.org/ooxml/drawingml/main"})
#: Bytes of docProps/app.xml read at most.
MAX_APP_PROPERTIES = 1024 * 1024


class _WordHandler(TextHandler):
    """Text of one WordprocessingML part (document, header, footer, notes)."""

    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self.in_text = False
        self.in_run = 0
        self.fallback = 0
        # One list of finished cells per open table row, and one text buffer per open cell: a cell's
        # paragraphs are joined with spaces so a row stays one line.
        self.rows: list[list[str]] = []
        self.cells: list[list[str]] = []

    def out(self, text: str) -> None:
        if self.cells:
            self.cells[-1].append(text)
        else:
            self.emit(text)

    def start(self, name: str, attrs: dict[str, str]) -> None:
        uri, local = split_name(name)
        if uri == MC_NAMESPACE and local == "Fallback":
            self.fallback += 1
        if self.fallback or uri not in W_NAMESPACES:
            return
        if local == "t":
            self.in_text = True
        elif local == "r":
            self.in_run += 1
        elif self.in_run and local == "tab":
            self.out("\t")
        elif self.in_run and local in ("br", "cr"):
            self.out("\n")
        elif local == "noBreakHyphen":
            self.out("-")
        elif local == "tbl":
            self.rows.append([])
        elif local == "tc":
            self.cells.append([])

    def end(self, name: str) -> None:
        uri, local = split_name(name)
        if uri == MC_NAMESPACE and local == "Fallback":
            self.fallback -= 1
            return
        if self.fallback or uri not in W_NAMESPACES:
            return
        if local == "t":
            self.in_text = False
        elif local == "r":
            self.in_run -= 1
        elif local == "p":
            self.out("\n")
        elif local == "tc" and self.cells:
            cell = " ".join("".join(self.cells.pop()).split("\n")).strip()
            if self.rows:
                self.rows[-1].append(cell)
        elif local == "tr" and self.rows:
            row, self.rows[-1] = self.rows[-1], []
            self.out("\t".join(row).rstrip("\t") + "\n")
        elif local == "tbl" and self.rows:
            self.rows.pop()

    def data(self, text: str) -> None:
        if self.in_text and not self.fallback:
            self.out(text)


def _read_word_part(package: BoundedZip, part: str, job: Job) -> bool:
    """Streams one part into the sink; False once the sink is full."""
    handler = _WordHandler(job)
    parse(package.chunks(part), handler, job)
    return not handler.stop


def _saved_pages(package: BoundedZip) -> int:
    if "docProps/app.xml" not in package:
        return 0
    found = re.search(rb"<(?:\w+:)?Pages>\s*(\d{1,7})\s*<", package.read("docProps/app.xml",
                                                                         limit=MAX_APP_PROPERTIES))
    return int(found.group(1)) if found else 0


def extract_docx(job: Job) -> None:
    """The text of a DOCX (see the module docstring)."""
    job.method = TEXT_LAYER
    with open_package(job) as package:
        document = main_part(package, job, "word/document.xml")
        related = relationships(package, document, job)
        by_kind: dict[str, list[str]] = {}
        for relation in related.values():
            if relation.target in package:
                by_kind.setdefault(relation.kind, []).append(relation.target)
        parts = [*sorted(by_kind.get("header", [])), document, *by_kind.get("footnotes", []),
                 *by_kind.get("endnotes", []), *sorted(by_kind.get("footer", []))]
        for part in parts:
            job.check_time()
            if not _read_word_part(package, part, job):
                break
        job.pages = _saved_pages(package)


class _SlideHandler(TextHandler):
    """Text of one slide or notes part: a line per DrawingML paragraph."""

    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self.in_text = False
        self.fallback = 0  # depth inside mc:Fallback or a:fld, whose text is skipped

    def start(self, name: str, attrs: dict[str, str]) -> None:
        uri, local = split_name(name)
        if uri == MC_NAMESPACE and local == "Fallback":
            self.fallback += 1
        elif uri in A_NAMESPACES and local == "fld":
            # Slide-number and date fields: the viewer's placeholders, not the author's text.
            self.fallback += 1
        elif uri in A_NAMESPACES and not self.fallback:
            if local == "t":
                self.in_text = True
            elif local == "br":
                self.emit("\n")

    def end(self, name: str) -> None:
        uri, local = split_name(name)
        if (uri == MC_NAMESPACE and local == "Fallback") or (uri in A_NAMESPACES and local == "fld"):
            self.fallback -= 1
        elif uri in A_NAMESPACES and not self.fallback:
            if local == "t":
                self.in_text = False
            elif local == "p":
                self.emit("\n")
            elif local == "tc":
                self.emit("\t")

    def data(self, text: str) -> None:
        if self.in_text and not self.fallback:
            self.emit(text)


class _SlideListHandler(TextHandler):
    """The r:ids of p:sldIdLst, in order."""

    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self.ids: list[str] = []

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if split_name(name)[1] == "sldId":
            rid = r_id(attrs)
            if rid is not None:
                self.ids.append(rid)


def extract_pptx(job: Job) -> None:
    """The text of a PPTX (see the module docstring)."""
    job.method = TEXT_LAYER
    with open_package(job) as package:
        presentation = main_part(package, job, "ppt/presentation.xml")
        related = relationships(package, presentation, job)
        listing = _SlideListHandler(job)
        parse(package.chunks(presentation), listing, job)
        slides = [related[rid].target for rid in listing.ids if rid in related and related[rid].target in package]
        for number, slide in enumerate(slides, start=1):
            if number > job.limits.max_pages:
                job.notes.append(f"{len(slides) - job.limits.max_pages} slides over the page limit not read")
                break
            job.check_time()
            parts = [slide] + [relation.target for relation in relationships(package, slide, job).values()
                               if relation.kind == "notesSlide" and relation.target in package]
            for part in parts:
                handler = _SlideHandler(job)
                parse(package.chunks(part), handler, job)
                if handler.stop:
                    job.pages = number
                    return
            job.pages = number
            if not job.sink.write("\n"):
                return

"""OpenDocument files (ODT, ODS, ODP): the text of ``content.xml``, streamed.

One line per paragraph or heading (``text:s`` spaces, tabs and line breaks kept); a table row per
line with cells separated by tabs, a repeated cell written once (spreadsheets repeat an empty cell
thousands of times to the sheet's edge) and empty rows skipped. Spreadsheet tables (ODS) and drawing
pages (ODP) count as pages.
"""

from __future__ import annotations

from base.extraction import TEXT_LAYER, Job
from base.extraction.archive import open_package
from base.extraction.xmlstream import TextHandler, parse, split_name

TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
TABLE_NS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
DRAW_NS = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
#: Spaces one text:s writes at most (its c attribute is the file's claim).
MAX_SPACES = 64
#: Cells of one row held before they are written out.
MAX_ROW_PARTS = 20_000


class _ContentHandler(TextHandler):
    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self.paragraphs = 0  # depth of open text:p / text:h
        self.skip = 0  # depth inside parts whose text is not content (tracked deletions)
        self.rows: list[list[str]] = []  # finished cells of each open table row
        self.cells: list[list[str]] = []  # text of each open cell
        self.pages = 0

    def out(self, text: str) -> None:
        if self.skip:
            return
        if self.cells:
            self.cells[-1].append(text)
        else:
            self.emit(text)

    def start(self, name: str, attrs: dict[str, str]) -> None:
        uri, local = split_name(name)
        if uri == TEXT_NS:
            if local in ("p", "h"):
                self.paragraphs += 1
            elif local == "s":
                try:
                    count = int(attrs.get(f"{TEXT_NS} c", "1"))
                except ValueError:
                    count = 1
                self.out(" " * max(1, min(count, MAX_SPACES)))
            elif local == "tab":
                self.out("\t")
            elif local == "line-break":
                self.out("\n")
            elif local == "tracked-changes":
                self.skip += 1
        elif uri == TABLE_NS:
            if local == "table":
                self.rows.append([])
                if self.job.kind == "ods":
                    self.pages += 1
            elif local in ("table-cell", "covered-table-cell"):
                self.cells.append([])
        elif uri == DRAW_NS and local == "page":
            self.pages += 1

    def end(self, name: str) -> None:
        uri, local = split_name(name)
        if uri == TEXT_NS:
            if local in ("p", "h"):
                self.paragraphs -= 1
                self.out("\n")
            elif local == "tracked-changes":
                self.skip -= 1
        elif uri == TABLE_NS:
            if local in ("table-cell", "covered-table-cell") and self.cells:
                cell = " ".join("".join(self.cells.pop()).split("\n")).strip()
                if self.rows:
                    self.rows[-1].append(cell)
                    if len(self.rows[-1]) >= MAX_ROW_PARTS:
                        self.out("\t".join(self.rows[-1]))
                        self.rows[-1] = []
            elif local == "table-row" and self.rows:
                row, self.rows[-1] = self.rows[-1], []
                line = "\t".join(row).rstrip("\t")
                if line.strip():
                    self.out(line + "\n")
            elif local == "table" and self.rows:
                self.rows.pop()
                self.out("\n")
        elif uri == DRAW_NS and local == "page":
            self.out("\n")

    def data(self, text: str) -> None:
        if self.paragraphs:
            self.out(text)


def extract_opendocument(job: Job) -> None:
    """The text of an ODT, ODS or ODP (see the module docstring)."""
    job.method = TEXT_LAYER
    with open_package(job) as package:
        handler = _ContentHandler(job)
        try:
            parse(package.chunks("content.xml"), handler, job)
        finally:
            job.pages = handler.pages

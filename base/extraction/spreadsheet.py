"""Excel workbooks (XLSX): every sheet's cells, streamed.

Each sheet, in the workbook's order, gives its name on a line, then one line per row that has a
value: cells separated by tabs (a short run of empty columns keeps its tabs, so columns stay
aligned; a long one collapses to one tab), values as Excel stores them (numbers and dates as their
stored numbers, booleans as TRUE/FALSE, shared and inline strings as text). Sheets count as pages.

The sheet XML is parsed as a stream of events and no row outlives its own end tag, so a sheet of
millions of cells costs the memory of one row. Shared strings must be held (cells refer to them by
index); they are kept up to ``MAX_SHARED_STRINGS`` and ``SHARED_CHARS_FACTOR`` x ``max_chars``.
"""

from __future__ import annotations

from base.extraction import TEXT_LAYER, Job
from base.extraction.archive import open_package
from base.extraction.ooxml import main_part, r_id, relationships
from base.extraction.xmlstream import TextHandler, XmlHandler, parse, split_name

#: SpreadsheetML namespaces (transitional, strict).
S_NAMESPACES = frozenset({"http://schemas.openxmlformats.org/spreadsheetml/2006/main",
                          "http://purl.oclc.org/ooxml/spreadsheetml/main"})
#: Shared strings kept at most (each costs ~60 bytes of memory beyond its text).
MAX_SHARED_STRINGS = 2_000_000
#: Characters of shared strings kept at most, as a multiple of the text cap.
SHARED_CHARS_FACTOR = 2
#: Cells of one row held before they are written out (a row as wide as Excel allows is 16,384).
MAX_ROW_PARTS = 20_000
#: Empty columns between two values written as tabs at most; a wider gap becomes one tab.
MAX_EMPTY_COLUMNS = 32


class _SharedStrings(XmlHandler):
    """The shared string table: one string per ``si``; phonetic runs (``rPh``) left out."""

    def __init__(self, max_chars: int) -> None:
        self.strings: list[str] = []
        self.max_chars = max_chars
        self.chars = 0
        self.dropped = 0
        self.buffer: list[str] = []
        self.in_text = False
        self.phonetic = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        uri, local = split_name(name)
        if uri not in S_NAMESPACES:
            return
        if local == "si":
            self.buffer = []
        elif local == "t":
            self.in_text = True
        elif local == "rPh":
            self.phonetic += 1

    def end(self, name: str) -> None:
        uri, local = split_name(name)
        if uri not in S_NAMESPACES:
            return
        if local == "t":
            self.in_text = False
        elif local == "rPh":
            self.phonetic -= 1
        elif local == "si":
            text = "".join(self.buffer)
            self.buffer = []
            if len(self.strings) >= MAX_SHARED_STRINGS or self.chars + len(text) > self.max_chars:
                # Kept as empty (the indexes of later strings must not shift), reported once read.
                self.dropped += 1
                text = ""
            self.chars += len(text)
            self.strings.append(text)

    def data(self, text: str) -> None:
        if self.in_text and not self.phonetic:
            self.buffer.append(text)


def _column(reference: str | None) -> int | None:
    """'BC12' -> 54 (0-based column of a cell reference); None when absent or odd."""
    if not reference:
        return None
    number = 0
    for char in reference:
        if "A" <= char <= "Z":
            number = number * 26 + ord(char) - 64
        else:
            break
    return number - 1 if number else None


class _SheetHandler(TextHandler):
    """One worksheet's rows, written as they close."""

    def __init__(self, job: Job, shared: list[str]) -> None:
        super().__init__(job)
        self.shared = shared
        self.row: list[str] = []
        self.next_column = 0
        self.cell_type = "n"
        self.cell_column: int | None = None
        self.value: list[str] = []
        self.in_value = False
        self.phonetic = 0
        self.last_column = -1
        self.value_chars = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        uri, local = split_name(name)
        if uri not in S_NAMESPACES:
            return
        if local == "c":
            self.cell_type = attrs.get("t", "n")
            self.cell_column = _column(attrs.get("r"))
            self.value = []
            self.value_chars = 0
        elif local in ("v", "t"):
            self.in_value = True
        elif local == "rPh":
            self.phonetic += 1
        elif local == "row":
            self.row = []
            self.next_column = 0
            self.last_column = -1

    def end(self, name: str) -> None:
        uri, local = split_name(name)
        if uri not in S_NAMESPACES:
            return
        if local in ("v", "t"):
            self.in_value = False
        elif local == "rPh":
            self.phonetic -= 1
        elif local == "c":
            self._cell("".join(self.value))
        elif local == "row":
            if self.row:
                self.emit("".join(self.row) + "\n")
            self.row = []

    def data(self, text: str) -> None:
        if self.in_value and not self.phonetic and self.value_chars < self.job.limits.max_chars:
            self.value.append(text)
            self.value_chars += len(text)

    def _cell(self, raw: str) -> None:
        if self.cell_type == "s":
            try:
                text = self.shared[int(raw)]
            except (ValueError, IndexError):
                text = ""
        elif self.cell_type == "b":
            text = {"1": "TRUE", "0": "FALSE"}.get(raw.strip(), raw)
        else:
            text = raw
        column = self.next_column if self.cell_column is None else self.cell_column
        self.next_column = column + 1
        if not text.strip():
            return
        text = text.replace("\t", " ").replace("\n", " ")
        if self.last_column >= 0:
            # One tab per column step, so values stay under their columns across rows.
            text = "\t" * min(max(column - self.last_column, 1), MAX_EMPTY_COLUMNS) + text
        self.row.append(text)
        self.last_column = column
        if len(self.row) >= MAX_ROW_PARTS:
            # A row of endless columns is written as it comes rather than held.
            self.emit("".join(self.row))
            self.row = []


class _WorkbookHandler(XmlHandler):
    """(name, r:id) of each sheet, in the workbook's order."""

    def __init__(self) -> None:
        self.sheets: list[tuple[str, str]] = []

    def start(self, name: str, attrs: dict[str, str]) -> None:
        uri, local = split_name(name)
        if uri in S_NAMESPACES and local == "sheet":
            rid = r_id(attrs)
            if rid is not None:
                self.sheets.append((attrs.get("name", ""), rid))


def extract_xlsx(job: Job) -> None:
    """The text of an XLSX (see the module docstring)."""
    job.method = TEXT_LAYER
    with open_package(job) as package:
        workbook_part = main_part(package, job, "xl/workbook.xml")
        related = relationships(package, workbook_part, job)
        workbook = _WorkbookHandler()
        parse(package.chunks(workbook_part), workbook, job)
        shared = _SharedStrings(SHARED_CHARS_FACTOR * job.limits.max_chars)
        for relation in related.values():
            if relation.kind == "sharedStrings" and relation.target in package:
                parse(package.chunks(relation.target), shared, job)
        if shared.dropped:
            job.notes.append(f"{shared.dropped} shared strings over the memory bound not read")
        sheets = [(name, related[rid].target) for name, rid in workbook.sheets
                  if rid in related and related[rid].kind == "worksheet" and related[rid].target in package]
        for number, (name, part) in enumerate(sheets, start=1):
            if number > job.limits.max_pages:
                job.notes.append(f"{len(sheets) - job.limits.max_pages} sheets over the page limit not read")
                break
            job.check_time()
            if not job.sink.write(("\n" if number > 1 else "") + name + "\n"):
                break
            handler = _SheetHandler(job, shared.strings)
            parse(package.chunks(part), handler, job)
            job.pages = number
            if handler.stop:
                break

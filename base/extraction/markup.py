"""HTML: the text a reader sees, by the stdlib's ``html.parser``, streamed.

The title comes first on its own line; scripts, styles, templates and other non-text elements are
dropped; block elements (paragraphs, headings, list items, table rows, ``<br>``) end lines, table
cells are separated by tabs, and other whitespace collapses to single spaces as a browser does
(except inside ``<pre>``). Markup left open for over ``MAX_PENDING_MARKUP`` characters (an unclosed
comment or tag) ends the read there, with a note, as it ends what a browser shows. The encoding is
the byte-order mark's, else the declared MIME charset, else a ``<meta>`` charset in the first bytes,
else ``charset.encoding_of``'s guess.

``html_to_text(markup)`` is the same conversion for markup already in memory (an email's HTML body).
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser

from base.extraction import TEXT_LAYER, Job
from base.extraction.charset import HEAD_BYTES, bom_encoding, encoding_of
from base.extraction.plain import declared_charset

#: Characters fed to the parser per step.
CHUNK = 64 * 1024
#: Bytes of the start searched for a <meta> charset (the HTML standard prescans 1024; pages put
#: scripts and comments first in practice).
META_SCAN_BYTES = 8 * 1024

_HIDDEN = frozenset({"script", "style", "template", "noscript", "svg", "math", "iframe", "object",
                     "select", "button"})
_BLOCKS = frozenset({"address", "article", "aside", "blockquote", "br", "caption", "center", "dd", "details",
                     "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
                     "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
                     "section", "summary", "table", "tbody", "thead", "tfoot", "tr", "ul", "title"})
#: Characters of one unfinished construct (a comment, tag or attribute never closed) the parser may hold;
#: html.parser rescans it on every feed, so an unclosed '<!--' would cost quadratic time.
MAX_PENDING_MARKUP = 1024 * 1024
_CELLS = frozenset({"td", "th"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                   "track", "wbr"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class _TextParser(HTMLParser):
    """Writes visible text through ``write`` (a callable returning False once no more is wanted)."""

    def __init__(self, write: object) -> None:
        super().__init__(convert_charrefs=True)
        self._write = write
        self.hidden: list[str] = []  # open hidden elements (their text is dropped)
        self.in_title = False
        self.pre = 0
        self.line_start = True
        self.space = False
        self.stop = False

    def _out(self, text: str) -> None:
        if not self.stop and text:
            self.stop = not self._write(text)  # type: ignore[operator]

    def _break(self) -> None:
        if not self.line_start:
            self._out("\n")
            self.line_start = True
        self.space = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
            return
        if tag in _HIDDEN and tag not in _VOID:
            self.hidden.append(tag)
            return
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCKS:
            self._break()
        elif tag in _CELLS and not self.line_start:
            self._out("\t")
            self.space = False

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            self._break()
            return
        if self.hidden:
            if tag == self.hidden[-1]:
                self.hidden.pop()
            elif tag in self.hidden:
                del self.hidden[self.hidden.index(tag):]
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in _BLOCKS:
            self._break()

    def handle_data(self, data: str) -> None:
        if self.hidden and not self.in_title:
            return
        if self.pre:
            self._out(data)
            self.line_start = data.endswith("\n")
            return
        words = data.split()
        if not words:
            self.space = self.space or bool(data)
            return
        lead = " " if (self.space or data[0].isspace()) and not self.line_start else ""
        self._out(lead + " ".join(words))
        self.line_start = False
        self.space = data[-1].isspace()


def html_to_text(markup: str, *, max_chars: int) -> str:
    """The visible text of ``markup`` (see the module docstring), at most ``max_chars`` characters."""
    parts: list[str] = []
    size = 0

    def write(text: str) -> bool:
        nonlocal size
        parts.append(text[: max_chars - size])
        size += len(parts[-1])
        return size < max_chars

    parser = _TextParser(write)
    for start in range(0, len(markup), CHUNK):
        parser.feed(markup[start:start + CHUNK])
        if parser.stop or len(parser.rawdata) > MAX_PENDING_MARKUP:
            break
    else:
        parser.close()
    return "".join(parts).strip()


def html_encoding(head: bytes, mime_type: str) -> str:
    """The encoding of an HTML file beginning with ``head`` (order in the module docstring)."""
    bom = bom_encoding(head)
    if bom is not None:
        return bom
    declared = declared_charset(mime_type)
    if declared is None:
        found = _META_CHARSET.search(head[:META_SCAN_BYTES])
        declared = found.group(1).decode("ascii") if found else None
    return encoding_of(head, declared)


def extract_html(job: Job) -> None:
    """The text of an HTML file (see the module docstring)."""
    job.method = TEXT_LAYER
    with open(job.path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
        handle.seek(0)
        decoder = codecs.getincrementaldecoder(html_encoding(head, job.mime_type))("replace")
        parser = _TextParser(job.sink.write)
        while True:
            job.check_time()
            block = handle.read(CHUNK)
            parser.feed(decoder.decode(block, final=not block))
            if parser.stop:
                job.sink.truncated = True
                return
            if len(parser.rawdata) > MAX_PENDING_MARKUP:
                # A browser shows nothing past an unclosed comment or tag; neither do we.
                job.notes.append(f"markup left open for over {MAX_PENDING_MARKUP} characters: the rest not read")
                return
            if not block:
                parser.close()
                return

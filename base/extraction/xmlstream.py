"""Streaming XML for the office formats: expat events, a chunk at a time, no tree and no DTD.

OOXML and ODF parts never carry a document type declaration, so any DTD is refused outright: no
entity is ever declared, hence no billion-laughs or quadratic expansion and no external entity (the
stdlib's expat 2.5 already stops a billion-laughs part at its amplification limit; refusing the DTD
does not depend on the expat version). Element names arrive as ``"namespace-uri local-name"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from xml.parsers import expat

from base.extraction import Job


class XmlRefused(Exception):
    """The part is not acceptable XML (a DTD, or malformed); ``str(exc)`` says why and where."""


class XmlHandler:
    """Receives one part's events; subclasses override what they need. ``stop`` ends the parse early
    (e.g. once the text sink is full)."""

    stop = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        """An element opens."""

    def end(self, name: str) -> None:
        """An element closes."""

    def data(self, text: str) -> None:
        """Character data (entity and character references already resolved)."""


def _refuse_dtd(*_args: Any) -> None:
    raise XmlRefused("the part declares a DTD (entities are refused)")


def parse(chunks: Iterable[bytes], handler: XmlHandler, job: Job) -> None:
    """Feeds ``chunks`` to expat, calling ``handler``; checks the document's time between chunks.

    Returns early once ``handler.stop`` is set. Raises ``XmlRefused`` for a DTD or malformed XML,
    ``ExtractionCut`` when the time is spent (or whatever ``chunks`` raises at its own bounds).
    """
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True
    parser.buffer_size = 64 * 1024
    parser.ordered_attributes = False
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    parser.CharacterDataHandler = handler.data
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
            if handler.stop:
                return
            job.check_time()
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise XmlRefused(f"malformed XML: {exc}") from exc


class TextHandler(XmlHandler):
    """A handler that writes text into the job's sink and stops the parse once the sink is full."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def emit(self, text: str) -> None:
        if not self.stop and not self.job.sink.write(text):
            # Full: what follows is dropped, so the text is reported as truncated.
            self.job.sink.truncated = True
            self.stop = True


#: Element names split so far: documents repeat a few dozen names millions of times.
_SPLIT: dict[str, tuple[str, str]] = {}
#: Names remembered at most (a hostile part could invent endless names).
MAX_SPLIT_NAMES = 4096


def split_name(name: str) -> tuple[str, str]:
    """``"uri local"`` -> ``("uri", "local")``; a name without a namespace -> ``("", name)``."""
    found = _SPLIT.get(name)
    if found is None:
        uri, _, local = name.rpartition(" ")
        found = (uri, local)
        if len(_SPLIT) < MAX_SPLIT_NAMES:
            _SPLIT[name] = found
    return found

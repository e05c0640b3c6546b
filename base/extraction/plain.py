"""Plain text and CSV: the file decoded in its own encoding (``charset.encoding_of``), streamed.

Line endings become ``\\n``. CSV is kept as its text (separators and quotes included): its words are
what language and department detection need, and re-parsing a 50 MB CSV buys nothing. Reading stops
once the text cap is reached; ``pages`` stays 0.
"""

from __future__ import annotations

import codecs

from base.extraction import TEXT_LAYER, Job
from base.extraction.charset import HEAD_BYTES, encoding_of

#: Bytes read per step.
CHUNK = 256 * 1024  # bytes


def declared_charset(mime_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type value, if any."""
    for parameter in mime_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"\'')
    return None


def stream_text(job: Job, encoding: str, *, skip: int = 0) -> None:
    """Decodes the file from byte ``skip`` with ``encoding`` into the sink, until it ends or the sink is
    full (then ``truncated``); checks the time between chunks."""
    decoder = codecs.getincrementaldecoder(encoding)("replace")
    pending_cr = False
    with open(job.path, "rb") as handle:
        handle.seek(skip)
        while True:
            job.check_time()
            block = handle.read(CHUNK)
            text = decoder.decode(block, final=not block)
            if pending_cr:
                text = "\r" + text
            # A \r\n split across two chunks must stay one line break.
            pending_cr = bool(block) and text.endswith("\r")
            if pending_cr:
                text = text[:-1]
            if not job.sink.write(text.replace("\r\n", "\n").replace("\r", "\n")):
                if block and handle.read(1):
                    job.sink.truncated = True
                return
            if not block:
                return


def extract_plain(job: Job) -> None:
    """The text of a plain text or CSV file (see the module docstring)."""
    job.method = TEXT_LAYER
    with open(job.path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    stream_text(job, encoding_of(head, declared_charset(job.mime_type)))

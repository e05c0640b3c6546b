"""Filename sanitising and streaming into the spool."""

from __future__ import annotations

import hashlib

import pytest

from base.document import MAX_FILENAME_BYTES, SPOOL_MEMORY_LIMIT, sanitize_filename, spool_chunks
from utils.errors import ItemTooLarge


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ops\\roster.xlsx", "roster.xlsx"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("bad\x00name\x1f.pdf", "badname.pdf"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("what?.pdf", "what_.pdf"),
        ("  ..hidden.pdf. ", "hidden.pdf"),
        ("", "unnamed"),
        ("..", "unnamed"),
        ("സുരക്ഷാ റിപ്പോർട്ട്.pdf", "സുരക്ഷാ റിപ്പോർട്ട്.pdf"),
    ],
)
def test_sanitize_filename(raw, expected):
    assert sanitize_filename(raw) == expected


def test_long_names_are_capped_keeping_the_extension():
    name = sanitize_filename("മ" * 300 + ".docx")
    assert name.endswith(".docx")
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    name.encode("utf-8").decode("utf-8")  # no character cut in half


def test_spool_hashes_while_streaming_and_stays_bounded():
    chunk = b"k" * (256 * 1024)
    total = 20 * 1024 * 1024
    result = spool_chunks(chunk for _ in range(total // len(chunk)))
    assert result.size == total
    assert result.sha256 == hashlib.sha256(chunk * (total // len(chunk))).hexdigest()
    assert result.file._rolled  # type: ignore[attr-defined]  # on disk, not in memory
    assert total > SPOOL_MEMORY_LIMIT
    result.file.close()


def test_spool_stops_reading_past_the_limit():
    read = []

    def chunks():
        for i in range(100):
            read.append(i)
            yield b"x" * 1000

    with pytest.raises(ItemTooLarge):
        spool_chunks(chunks(), max_bytes=5000)
    assert len(read) == 6

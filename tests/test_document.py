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


# Real Malayalam names written with ZWJ/ZWNJ (chillu letters the Unicode 5.0 way: consonant, virama,
# ZWJ; ZWNJ to keep a virama visible instead of a conjunct), and the same joiners in Bengali and Persian.
JOINED_NAMES = [
    "\u0d15\u0d23\u0d4d\u200d\u0d1f\u0d4d\u0d30\u0d4b\u0d33\u0d4d\u200d \u0d31\u0d42\u0d02 "
    "\u0d31\u0d3f\u0d2a\u0d4d\u0d2a\u0d4b\u0d30\u0d4d\u200d\u0d1f\u0d4d\u0d1f\u0d4d.pdf",  # കണ്‍ട്രോള്‍ റൂം റിപ്പോര്‍ട്ട്
    "\u0d05\u0d35\u0d28\u0d4d\u200d.docx",  # അവന്‍: the chillu right before the extension
    "\u0d38\u0d4d\u200c\u0d15\u0d42\u0d33\u0d4d\u200d \u0d1f\u0d48\u0d02\u0d1f\u0d47\u0d2c\u0d3f"
    "\u0d33\u0d4d\u200d.xlsx",  # സ്‌കൂള്‍ ടൈംടേബിള്‍
    "\u09b0\u200d\u09cd\u09af\u09be\u09ac.pdf",  # Bengali ya-phala after RA
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.pdf",  # Persian, ZWNJ inside the word
]


@pytest.mark.parametrize("name", JOINED_NAMES)
def test_joiners_that_indic_and_persian_words_need_survive_unchanged(name):
    assert sanitize_filename(name) == name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("evil.exe\u00ad", "evil.exe"),  # soft hyphen
        ("evil\u180e.exe", "evil.exe"),  # Mongolian vowel separator
        ("inv\u2061oice.pdf", "invoice.pdf"),  # function application
        ("evil.exe\U000e0020\U000e0041\U000e007f", "evil.exe"),  # tag characters
        ("evil.exe\ufe0f", "evil.exe"),  # variation selector
        ("evil.exe\u200d", "evil.exe"),  # a joiner after Latin letters is only hiding something
        ("evil.ex\u200ce", "evil.exe"),
        ("\u200d\u0d15.pdf", "\u0d15.pdf"),  # nothing before it to join
        ("\u0d23\u0d4d\u200d\u200d\u200d.pdf", "\u0d23\u0d4d\u200d.pdf"),  # one joiner is all a chillu needs
        ("e\u00ad\u0301.pdf", "\u00e9.pdf"),  # what is left is NFC again
        ("CONIN$", "_CONIN$"),
        ("conout$.txt", "_conout$.txt"),
    ],
)
def test_invisible_format_characters_are_dropped(raw, expected):
    assert sanitize_filename(raw) == expected


@pytest.mark.parametrize("raw", ["evil.exe\u00ad", "evil.exe\U000e0020", "evil.ex\u200ce", "setup\u2060.msi"])
def test_content_rules_match_the_cleaned_name(raw):
    from base.enrichment.rules import ContentRules

    assert ContentRules.load().decide("email", raw, "application/pdf", 10, {}) == "rule:executables"


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

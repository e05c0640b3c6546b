"""The command line's tables: columns padded by display width, so a Malayalam file name (whose vowel
signs and viramas take no column of their own) never shifts the columns after it; cells cut at their
tail without splitting a letter from its signs; error text with its root cause first."""

from __future__ import annotations

from wcwidth import wcswidth

from utils.errors import root_cause_first
from utils.tables import clip, display_width, render_table

MALAYALAM = "സുരക്ഷാ സർക്കുലർ 42.docx"


def column_starts(line: str, cells: list[str]) -> list[int]:
    """The display column each of ``cells`` starts at in ``line``."""
    starts, at = [], 0
    for cell in cells:
        index = line.index(cell, at)
        starts.append(wcswidth(line[:index]))
        at = index + len(cell)
    return starts


def test_malayalam_filenames_do_not_shift_the_next_column():
    rows = [("ingest", MALAYALAM, "01A3Y5"), ("ingest", "INV-2024-0913 Alstom spares.pdf", "01B7Q2"),
            ("skip", "അവധി അപേക്ഷ.docx", "01C9Z4")]
    lines = render_table(("WOULD", "FILENAME", "SOURCE ID"), rows).splitlines()
    starts = {tuple(column_starts(line, list(row))) for line, row in zip(lines[1:], rows, strict=True)}
    assert len(starts) == 1, lines  # every row's SOURCE ID starts at the same screen column
    assert column_starts(lines[0], ["WOULD", "FILENAME", "SOURCE ID"]) == list(next(iter(starts)))


def test_display_width_counts_columns_not_code_points():
    assert len(MALAYALAM) > display_width(MALAYALAM) == wcswidth(MALAYALAM)
    assert display_width("abc\x07") == 4  # a control character wcwidth cannot measure counts one


def test_a_cut_cell_keeps_each_vowel_sign_with_its_letter_and_fits_the_width():
    for width in range(3, display_width(MALAYALAM)):
        cut = clip(MALAYALAM, width)
        assert cut.endswith("…") and display_width(cut) <= width, (width, cut)
        kept = cut[:-1]
        assert MALAYALAM.startswith(kept)
        following = MALAYALAM[len(kept)]
        assert wcswidth(following) != 0, (width, cut)  # never stops before a sign of the last letter


def test_a_long_error_is_cut_at_its_tail_with_its_cause_in_front():
    error = ("Maximo refused the apikey credentials while reading work orders of scope all (page 1) "
             "(HTTP 401 BMXAA9549E: The API key token is invalid. Either the token may have expired)")
    table = render_table(("SCOPE", "LAST ERROR"), [("all", root_cause_first(error))], max_width=48)
    assert "BMXAA9549E" in table and table.rstrip().endswith("…")


def test_root_cause_first_moves_the_code_or_the_os_error_to_the_front():
    assert root_cause_first("outbox /var/outbox/ab12: [Errno 30] Read-only file system: '/var/outbox/ab12.tmp'") \
        .startswith("Read-only file system: outbox /var/outbox")
    assert root_cause_first("Maximo refused ... (HTTP 401 BMXAA9549E: invalid)").startswith("BMXAA9549E: Maximo")
    assert root_cause_first("maximo GET http://h/x failed after 4 tries: Connection refused (ConnectionError)") \
        .startswith("Connection refused: maximo GET")
    already = "Connection refused (ConnectionError) at http://h/x"
    assert root_cause_first(already) == already
    assert root_cause_first("the library is not selected") == "the library is not selected"

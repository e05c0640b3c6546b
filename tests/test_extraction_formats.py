"""Text out of every non-PDF, non-image format: real files in, exact text out, hostile files cut off.

Office files are written by python-docx, openpyxl and python-pptx; OpenDocument packages, RTF, HTML,
CSV and messages by hand to their specifications; .msg files as compound files built in
tests/compound_file.py (no library writes new ones); real messages come from ../shared/testdata/mime.
Hostile files run in a child process whose peak memory is read back, so a bound that fails shows
as memory, not only as a wrong answer.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import zipfile
from email.header import Header
from pathlib import Path

import pytest

from base.extraction import TEXT_LAYER, Extraction, ExtractionLimits, ExtractionRequest, extract, extract_path
from tests.compound_file import outlook_message
from tests.document_builders import (
    MALAYALAM,
    MALAYALAM_2,
    rewrite_member,
    rtf_unicode,
    write_docx,
    write_odf,
    write_pptx,
    write_xlsx,
)

LIMITS = ExtractionLimits()
ROOT = Path(__file__).resolve().parents[1]


def _extract(path: Path, filename: str | None = None, mime_type: str = "",
             limits: ExtractionLimits = LIMITS) -> Extraction:
    return extract_path(str(path), filename=filename or path.name, mime_type=mime_type, limits=limits)


#: The child's own peak RSS in MB: VmHWM belongs to the process image, where ru_maxrss would carry the
#: peak of the pytest process that spawned it across exec.
_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"


def _in_child(path: Path, filename: str, limits: dict[str, int]) -> dict[str, object]:
    """Extracts in a fresh interpreter; returns the outcome and the child's peak RSS in MB."""
    code = (
        "import json, sys\n"
        "from base.extraction import ExtractionLimits, extract_path\n"
        f"r = extract_path({str(path)!r}, filename={filename!r}, mime_type='', "
        f"limits=ExtractionLimits(**{limits!r}))\n"
        "print(json.dumps({'kind': r.kind, 'method': r.method, 'chars': r.chars, 'pages': r.pages,"
        " 'truncated': r.truncated, 'error': r.error, 'tail': r.text[-200:],"
        f" 'peak_mb': {_PEAK}}}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          check=True)
    outcome: dict[str, object] = json.loads(done.stdout)
    return outcome


def _baseline_peak_mb() -> float:
    """Peak RSS of a child that imports the extraction package and extracts nothing."""
    code = ("import base.extraction, base.extraction.office, base.extraction.spreadsheet, base.extraction.plain\n"
            f"print({_PEAK})")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout)


# --- DOCX, XLSX, PPTX --------------------------------------------------------------------------------

def test_docx_gives_header_body_table_and_footer_with_paragraph_breaks(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "circular.docx", paragraphs=[MALAYALAM, "Second paragraph", MALAYALAM_2],
                      table=[["Station", "സ്റ്റേഷൻ"], ["Aluva", "ആലുവ"]], header="KMRL " + MALAYALAM_2,
                      footer="Page footer")
    result = _extract(path)
    assert (result.kind, result.method, result.error) == ("docx", TEXT_LAYER, None)
    assert result.text == (f"KMRL {MALAYALAM_2}\n{MALAYALAM}\nSecond paragraph\n{MALAYALAM_2}\n"
                           "Station\tസ്റ്റേഷൻ\nAluva\tആലുവ\nPage footer\n")


def test_docx_skips_tracked_deletions_and_reads_text_boxes_once(tmp_path: Path) -> None:
    source = write_docx(tmp_path / "base.docx", paragraphs=["placeholder"])
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{w}" '
        'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:body>'
        '<w:p><w:r><w:t xml:space="preserve">kept </w:t></w:r><w:del><w:r><w:delText>deleted</w:delText></w:r></w:del>'
        '<w:r><w:instrText> PAGE </w:instrText></w:r><w:r><w:tab/><w:t>after tab</w:t></w:r></w:p>'
        '<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:txbxContent><w:p><w:r><w:t>boxed</w:t>'
        '</w:r></w:p></w:txbxContent></mc:Choice><mc:Fallback><w:txbxContent><w:p><w:r><w:t>boxed</w:t></w:r>'
        '</w:p></w:txbxContent></mc:Fallback></mc:AlternateContent></w:r></w:p></w:body></w:document>')
    path = rewrite_member(source, tmp_path / "edited.docx", "word/document.xml", body.encode())
    assert _extract(path).text == "kept \tafter tab\nboxed\n\n"


def test_xlsx_reads_every_sheet_with_shared_strings_as_pages(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "budget.xlsx", {
        "ചെലവ്": [["ഇനം", "തുക"], [MALAYALAM, 1250.5], ["approved", True]],
        "Summary": [["total", 1250.5], [None, None, "far right"]],
    })
    result = _extract(path)
    assert (result.kind, result.pages, result.error) == ("xlsx", 2, None)
    assert result.text == (f"ചെലവ്\nഇനം\tതുക\n{MALAYALAM}\t1250.5\napproved\tTRUE\n\n"
                           "Summary\ntotal\t1250.5\nfar right\n")


def test_pptx_gives_slides_in_order_with_their_notes(tmp_path: Path) -> None:
    path = write_pptx(tmp_path / "briefing.pptx", [
        ("Safety briefing", MALAYALAM, "Speaker: " + MALAYALAM_2),
        ("Second slide", "line one\nline two", None),
    ])
    result = _extract(path)
    assert (result.kind, result.pages, result.error) == ("pptx", 2, None)
    first, second = result.text.split("Second slide")
    assert first.split() == f"Safety briefing {MALAYALAM} Speaker: {MALAYALAM_2}".split()
    assert second.split() == ["line", "one", "line", "two"]
    assert first.index(MALAYALAM) < first.index(MALAYALAM_2)


def test_the_page_limit_bounds_sheets_and_says_so(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "many.xlsx", {f"S{n}": [[f"value {n}"]] for n in range(5)})
    result = _extract(path, limits=ExtractionLimits(max_pages=3))
    assert result.pages == 3
    assert "value 2" in result.text and "value 3" not in result.text
    assert result.error == "2 sheets over the page limit not read"


# --- OpenDocument ------------------------------------------------------------------------------------

def test_odt_paragraphs_spaces_and_tables(tmp_path: Path) -> None:
    body = (f'<office:text><text:h text:outline-level="1">{MALAYALAM_2}</text:h>'
            f'<text:p>{MALAYALAM}<text:s text:c="3"/>end<text:tab/>tab<text:line-break/>next line</text:p>'
            '<table:table><table:table-row><table:table-cell><text:p>a</text:p></table:table-cell>'
            '<table:table-cell><text:p>ബി</text:p></table:table-cell></table:table-row></table:table>'
            '</office:text>')
    result = _extract(write_odf(tmp_path / "letter.odt", "odt", body))
    assert (result.kind, result.error) == ("odt", None)
    assert result.text == f"{MALAYALAM_2}\n{MALAYALAM}   end\ttab\nnext line\na\tബി\n\n"


def test_ods_collapses_repeated_empty_cells_and_counts_sheets(tmp_path: Path) -> None:
    body = ('<office:spreadsheet><table:table table:name="One"><table:table-row>'
            f'<table:table-cell><text:p>{MALAYALAM}</text:p></table:table-cell>'
            '<table:table-cell table:number-columns-repeated="16383"/></table:table-row>'
            '<table:table-row table:number-rows-repeated="1048575"><table:table-cell/></table:table-row>'
            '</table:table><table:table table:name="Two"><table:table-row><table:table-cell>'
            '<text:p>42</text:p></table:table-cell></table:table-row></table:table></office:spreadsheet>')
    result = _extract(write_odf(tmp_path / "sheet.ods", "ods", body))
    assert (result.kind, result.pages) == ("ods", 2)
    assert result.text == f"{MALAYALAM}\n\n42\n\n"


def test_odp_counts_drawing_pages(tmp_path: Path) -> None:
    body = ('<office:presentation>'
            f'<draw:page draw:name="1"><draw:frame><draw:text-box><text:p>{MALAYALAM}</text:p></draw:text-box>'
            '</draw:frame></draw:page><draw:page draw:name="2"><draw:frame><draw:text-box><text:p>second</text:p>'
            '</draw:text-box></draw:frame></draw:page></office:presentation>')
    result = _extract(write_odf(tmp_path / "deck.odp", "odp", body))
    assert (result.kind, result.pages, result.text) == ("odp", 2, f"{MALAYALAM}\n\nsecond\n\n")


# --- RTF ---------------------------------------------------------------------------------------------

def test_rtf_unicode_escapes_code_pages_and_skipped_destinations(tmp_path: Path) -> None:
    rtf = ("{\\rtf1\\ansi\\ansicpg1252\\deff0\\uc1"
           "{\\fonttbl{\\f0\\fswiss\\fcharset0 Arial;}{\\f1\\fnil\\fcharset204 Times Cyr;}}"
           "{\\colortbl;\\red255\\green0\\blue0;}{\\*\\generator Riched20 10.0;}"
           "{\\info{\\title Not body text}{\\author Someone}}"
           "\\pard\\f0 " + rtf_unicode(MALAYALAM) + "\\par\n"
           "Caf\\'e9 \\'93quoted\\'94\\tab {\\f1 \\'cf\\'f0\\'e8\\'e2\\'e5\\'f2}\\line "
           "{\\pict\\pngblip 89504e470d0a1a0a}{\\*\\unknowndest hidden}"
           "{\\field{\\*\\fldinst HYPERLINK \"x\"}{\\fldrslt link text}}\\par\n"
           "{\\uc2 \\u3349\\'3f\\'3f done}\\par}")
    path = tmp_path / "memo.rtf"
    path.write_text(rtf, encoding="ascii")
    result = _extract(path)
    assert (result.kind, result.method, result.error) == ("rtf", TEXT_LAYER, None)
    assert result.text == f"{MALAYALAM}\nCafé “quoted”\tПривет\nlink text\n\u0d15 done\n"


def test_rtf_with_100000_nested_groups_is_read_without_recursion(tmp_path: Path) -> None:
    path = tmp_path / "deep.rtf"
    path.write_bytes(b"{\\rtf1\\ansi " + b"{" * 100_000 + b"deep text" + b"}" * 100_000 + b"\\par after}")
    result = _extract(path)
    assert (result.error, result.text) == (None, "deep text\nafter")


# --- HTML --------------------------------------------------------------------------------------------

def test_html_in_utf8_drops_scripts_and_breaks_blocks(tmp_path: Path) -> None:
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{MALAYALAM_2}</title>'
            '<style>p { color: red }</style><script>var x = "<p>not text</p>";</script></head>'
            f'<body><h1>Notice</h1><p>{MALAYALAM}</p><p>two   spaced\n words &amp; more</p>'
            '<table><tr><td>a</td><td>b</td></tr></table><ul><li>one</li><li>two</li></ul></body></html>')
    path = tmp_path / "notice.html"
    path.write_bytes(page.encode("utf-8"))
    result = _extract(path)
    assert (result.kind, result.error) == ("html", None)
    assert result.text == f"{MALAYALAM_2}\nNotice\n{MALAYALAM}\ntwo spaced words & more\na\tb\none\ntwo\n"


def test_html_in_windows_1252_by_its_meta_charset(tmp_path: Path) -> None:
    page = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>'
            '<body><p>Caf\u00e9 \u2013 \u201cre\u00e7u\u201d \u20ac5</p></body></html>')
    path = tmp_path / "legacy.htm"
    path.write_bytes(page.encode("cp1252"))
    assert _extract(path).text == "Café – “reçu” €5\n"


def test_html_declared_charset_wins_over_the_meta(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(f'<meta charset="iso-8859-1"><p>{MALAYALAM}</p>'.encode())
    assert _extract(path, mime_type="text/html; charset=utf-8").text == MALAYALAM + "\n"


def test_html_left_open_stops_the_read_where_a_browser_stops_showing(tmp_path: Path) -> None:
    path = tmp_path / "broken.html"
    path.write_bytes(f"<p>{MALAYALAM}</p><!--".encode() + b"never closed " * 200_000)
    result = _extract(path)
    assert result.text == MALAYALAM + "\n"
    assert result.error == "markup left open for over 1048576 characters: the rest not read"


# --- text and CSV ------------------------------------------------------------------------------------

def test_csv_in_utf16_with_a_bom(tmp_path: Path) -> None:
    rows = [["സ്റ്റേഷൻ", "യാത്രക്കാർ"], ["ആലുവ", "12,400"], [MALAYALAM, "1"]]
    path = tmp_path / "ridership.csv"
    with path.open("w", encoding="utf-16", newline="") as handle:
        csv.writer(handle).writerows(rows)
    result = _extract(path)
    assert (result.kind, result.method) == ("csv", TEXT_LAYER)
    assert list(csv.reader(result.text.splitlines())) == rows


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-16"])
def test_malayalam_text_in_each_unicode_encoding(tmp_path: Path, encoding: str) -> None:
    text = f"{MALAYALAM}\r\n{MALAYALAM_2}\r\n" * 3
    path = tmp_path / "circular.txt"
    path.write_bytes(text.encode(encoding))
    assert _extract(path).text == text.replace("\r\n", "\n")


def test_windows_1252_text_falls_back_from_utf8(tmp_path: Path) -> None:
    text = "Caf\u00e9 r\u00e9sum\u00e9 \u2013 na\u00efve \u201cquoted\u201d\n" * 40
    path = tmp_path / "notes.txt"
    path.write_bytes(text.encode("cp1252"))
    assert _extract(path).text == text


def test_a_50_mb_csv_is_capped_and_truncated_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    line = f"2025-12-01,{MALAYALAM},Aluva,12400\n".encode()
    with path.open("wb") as handle:
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            handle.write(line)
    outcome = _in_child(path, "big.csv", {"max_chars": 1_000_000})
    assert (outcome["kind"], outcome["chars"], outcome["truncated"]) == ("csv", 1_000_000, True)
    assert float(outcome["peak_mb"]) < _baseline_peak_mb() + 40  # type: ignore[arg-type]


# --- messages ----------------------------------------------------------------------------------------

def _malayalam_eml() -> bytes:
    subject = Header(f"അറിയിപ്പ്: {MALAYALAM_2}", "utf-8").encode()
    body = base64.encodebytes(f"{MALAYALAM}\nരണ്ടാം വരി\n".encode()).decode()
    pdf = base64.encodebytes(b"%PDF-1.4 not really").decode()
    return (f"From: Station Controller <sc@example.org>\r\nTo: ops@example.org\r\nSubject: {subject}\r\n"
            "Date: Mon, 01 Dec 2025 09:00:00 +0530\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
            'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n--b2\r\n'
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{body}\r\n--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html copy</p>\r\n--b2--\r\n"
            "--b1\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename*=utf-8''%E0%B4%B1%E0%B4%BF%E0%B4%AA%E0%B5%8D%E0%B4%AA"
            "%E0%B5%8B%E0%B5%BC%E0%B4%9F%E0%B5%8D%E0%B4%9F%E0%B5%8D.pdf\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{pdf}\r\n--b1--\r\n").encode("ascii")


def test_eml_gives_subject_plain_body_and_attachment_names(tmp_path: Path) -> None:
    path = tmp_path / "notice.eml"
    path.write_bytes(_malayalam_eml())
    result = _extract(path)
    assert (result.kind, result.method, result.error) == ("eml", TEXT_LAYER, None)
    assert result.text == f"അറിയിപ്പ്: {MALAYALAM_2}\n\n{MALAYALAM}\nരണ്ടാം വരി\n\nറിപ്പോർട്ട്.pdf\n"


def test_eml_with_only_html_gives_the_html_as_text(tmp_path: Path) -> None:
    path = tmp_path / "html.eml"
    path.write_bytes(b"Subject: Timetable\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                     + f"<html><body><p>{MALAYALAM}</p><script>x()</script><p>end</p></body></html>".encode())
    assert _extract(path).text == f"Timetable\n\n{MALAYALAM}\nend\n"


def test_eml_read_from_request_bytes_on_the_pool_path() -> None:
    result = extract(ExtractionRequest(filename="fwd.eml", mime_type="message/rfc822", limits=LIMITS,
                                       data=_malayalam_eml()))
    assert result.kind == "eml" and MALAYALAM in result.text


def _manifest(corpus: Path) -> list[dict[str, str]]:
    with (corpus / "MANIFEST.tsv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_every_real_message_extracts_without_error_and_names_its_attachments(mime_corpus: Path) -> None:
    rows = _manifest(mime_corpus)
    assert len(rows) == 93
    named = with_text = 0
    for row in rows:
        result = _extract(mime_corpus / row["file"], filename=row["file"].rsplit(".", 1)[0] + ".eml")
        assert result.kind == "eml", row["file"]
        assert result.error is None, (row["file"], result.error)
        with_text += result.method == TEXT_LAYER
        for name in json.loads(row["attachment_filenames"]):
            if name:
                assert name in result.text, (row["file"], name)
                named += 1
    assert named >= 30
    # A few malformed messages have no subject, body or named part at all.
    assert with_text >= 85


def test_every_real_attachment_goes_through_the_pool_task_by_its_content(mime_corpus: Path) -> None:
    from connectors.email_mime import iter_attachments

    kinds: dict[tuple[str, str], str] = {}
    seen = 0
    for message in sorted(mime_corpus.glob("*")):
        if message.name == "MANIFEST.tsv":
            continue
        for attachment in iter_attachments(message.read_bytes()):
            result = extract(ExtractionRequest(filename=attachment.filename, mime_type=attachment.mime_type,
                                               limits=LIMITS, data=attachment.payload))
            if attachment.filename == "broken.pdf":  # a damaged PDF in the corpus: reported, never raised
                assert result.kind == "pdf" and "not a readable PDF" in (result.error or ""), result.error
            else:
                assert result.error is None, (message.name, attachment.filename, result.error)
            kinds[(message.name, attachment.filename)] = result.kind
            seen += 1
    assert seen >= 60
    # Named .pdf but not a PDF: "blah blah blah", and a PKCS #7 blob.
    assert kinds[("mail__fixtures_emails_mime_emails_raw_email7.eml", "test.pdf")] == "binary"
    assert kinds[("mail__fixtures_emails_attachment_emails_attachment_with_base64_encoded_name.eml",
                  "This is a test.pdf")] == "binary"
    # A Lisp listing sent as application/octet-stream without an extension is text.
    assert kinds[("flanker__fixtures_messages_torture.eml", "Alices_PDP-10")] == "text"
    assert kinds[("flanker__fixtures_messages_attached-pdf.eml", "test.pdf")] == "pdf"


def test_a_real_message_sniffed_without_name_or_type(mime_corpus: Path, tmp_path: Path) -> None:
    data = (mime_corpus / "flanker__fixtures_messages_attached-pdf.eml").read_bytes()
    path = tmp_path / "attachment"
    path.write_bytes(data)
    result = _extract(path, mime_type="application/octet-stream")
    assert result.kind == "eml" and "test.pdf" in result.text


def test_msg_gives_subject_body_and_attachment_names(tmp_path: Path) -> None:
    path = tmp_path / "forward.msg"
    path.write_bytes(outlook_message(subject=f"സുരക്ഷ: {MALAYALAM_2}", body=f"{MALAYALAM}\r\n" * 100,
                                     attachments=[("റിപ്പോർട്ട്.pdf", b"%PDF-1.4" + bytes(5000)),
                                                  ("roster.xlsx", b"PK")]))
    result = _extract(path)
    assert (result.kind, result.method, result.error) == ("msg", TEXT_LAYER, None)
    assert result.text == (f"സുരക്ഷ: {MALAYALAM_2}\n\n" + f"{MALAYALAM}\r\n" * 99 + MALAYALAM
                           + "\n\nറിപ്പോർട്ട്.pdf\nroster.xlsx\n")


def test_msg_with_only_an_html_body(tmp_path: Path) -> None:
    path = tmp_path / "html.msg"
    html = f'<html><head><meta charset="utf-8"></head><body><p>{MALAYALAM}</p></body></html>'.encode()
    path.write_bytes(outlook_message(subject="HTML only", html=html))
    assert _extract(path).text == f"HTML only\n\n{MALAYALAM}\n"


def test_msg_8bit_strings_in_the_message_code_page(tmp_path: Path) -> None:
    path = tmp_path / "cyrillic.msg"
    path.write_bytes(outlook_message(subject="Отчёт", body="Привет, мир", unicode=False, code_page=1251))
    assert _extract(path).text == "Отчёт\n\nПривет, мир\n"


# --- hostile files -----------------------------------------------------------------------------------

def _docx_with_document(tmp_path: Path, name: str, chunks: object) -> Path:
    """A python-docx package whose word/document.xml is written from ``chunks`` (bytes) in streaming."""
    source = write_docx(tmp_path / "source.docx", paragraphs=["x"])
    target = tmp_path / name
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename == "word/document.xml":
                with new.open("word/document.xml", "w", force_zip64=True) as member:
                    for chunk in chunks:  # type: ignore[attr-defined]
                        member.write(chunk)
            else:
                new.writestr(info.filename, old.read(info.filename))
    return target


def _bomb_chunks() -> object:
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    yield f'<w:document xmlns:w="{w}"><w:body><w:p><w:r><w:t>{MALAYALAM}</w:t></w:r></w:p>'.encode()
    block = b" " * (1024 * 1024)
    for _ in range(1024):  # 1 GiB of whitespace: deflate packs it about 1000:1
        yield block
    yield b"</w:body></w:document>"


def test_a_zip_bomb_docx_is_cut_off_with_the_text_read_so_far(tmp_path: Path) -> None:
    path = _docx_with_document(tmp_path, "bomb.docx", _bomb_chunks())
    assert path.stat().st_size < 2 * 1024 * 1024
    outcome = _in_child(path, "bomb.docx", {})
    assert outcome["kind"] == "docx"
    assert outcome["error"] == "member word/document.xml inflates more than 400:1 (a decompression bomb?)"
    assert MALAYALAM in str(outcome["tail"])
    assert float(outcome["peak_mb"]) < _baseline_peak_mb() + 40  # type: ignore[arg-type]


def test_the_expanded_byte_budget_bounds_a_compressible_but_not_absurd_member(tmp_path: Path) -> None:
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    paragraphs = (f"<w:p><w:r><w:t>{n} {MALAYALAM}</w:t></w:r></w:p>".encode() for n in range(100_000))
    path = _docx_with_document(tmp_path, "long.docx", [f'<w:document xmlns:w="{w}"><w:body>'.encode(),
                                                       *paragraphs, b"</w:body></w:document>"])
    result = _extract(path, limits=ExtractionLimits(max_expanded_bytes=2 * 1024 * 1024))
    assert result.error == f"the archive expands past {2 * 1024 * 1024} bytes (a decompression bomb?)"
    assert result.text.startswith(f"0 {MALAYALAM}\n1 {MALAYALAM}\n") and result.truncated


def test_an_archive_listing_too_many_members_is_refused_before_they_are_loaded(tmp_path: Path) -> None:
    path = tmp_path / "crowded.docx"
    with zipfile.ZipFile(path, "w") as package:
        for number in range(20_001):
            package.writestr(f"word/media/{number}.bin", b"")
    result = _extract(path)
    assert (result.kind, result.method) == ("docx", "none")
    assert result.error == "the archive lists 20001 members (more than 20000)"


def test_a_member_whose_bytes_do_not_match_its_crc_is_reported_damaged(tmp_path: Path) -> None:
    path = write_odf(tmp_path / "flipped.odt", "odt", f"<office:text><text:p>{MALAYALAM}</text:p></office:text>")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as package:
        member = package.getinfo("content.xml")
    flip_at = member.header_offset + 30 + len("content.xml") + member.compress_size // 2
    data[flip_at] ^= 0x01
    path.write_bytes(bytes(data))
    result = _extract(path)
    assert result.kind == "odt"
    assert result.error is not None and result.error.startswith("ArchiveError: member content.xml is damaged")


def test_a_truncated_docx_keeps_the_text_before_the_cut(tmp_path: Path) -> None:
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    paragraphs = [f"<w:p><w:r><w:t>{n * 7919 % 100_003} {MALAYALAM}</w:t></w:r></w:p>".encode()
                  for n in range(20_000)]
    full = _docx_with_document(tmp_path, "full.docx", [f'<w:document xmlns:w="{w}"><w:body>'.encode(),
                                                       *paragraphs, b"</w:body></w:document>"])
    with zipfile.ZipFile(full) as package:
        member = package.getinfo("word/document.xml")
    data = full.read_bytes()
    cut = tmp_path / "cut.docx"
    cut.write_bytes(data[: member.header_offset + member.compress_size // 2])
    result = _extract(cut)
    assert result.kind == "docx"
    assert result.error == "ArchiveError: member word/document.xml is cut short (truncated file)"
    lines = result.text.splitlines()
    assert 1000 < len(lines) < 20_000
    assert lines[:2] == [f"0 {MALAYALAM}", f"7919 {MALAYALAM}"]


def test_a_billion_laughs_xlsx_keeps_the_sheets_before_it(tmp_path: Path) -> None:
    source = write_xlsx(tmp_path / "source.xlsx", {"Good": [[MALAYALAM]], "Laughs": [["x"]]})
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10))
    laughs = (f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]><worksheet '
              'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1">'
              '<c r="A1" t="inlineStr"><is><t>&lol9;</t></is></c></row></sheetData></worksheet>')
    path = rewrite_member(source, tmp_path / "laughs.xlsx", "xl/worksheets/sheet2.xml", laughs.encode())
    result = _extract(path)
    assert result.error == "XmlRefused: the part declares a DTD (entities are refused)"
    assert result.text.startswith(f"Good\n{MALAYALAM}\n") and "lol" not in result.text


def _million_cell_sheet() -> object:
    yield (b'<?xml version="1.0" encoding="UTF-8"?><worksheet '
           b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
    for row in range(1, 100_001):
        cells = "".join(f'<c r="{column}{row}"><v>{row * 10 + n}</v></c>' for n, column in enumerate("ABCDEFGHIJ"))
        yield f'<row r="{row}">{cells}</row>'.encode()
    yield b"</sheetData></worksheet>"


def test_an_xlsx_of_a_million_cells_streams_in_bounded_memory(tmp_path: Path) -> None:
    source = write_xlsx(tmp_path / "source.xlsx", {"Cells": [["x"]]})
    path = tmp_path / "million.xlsx"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename == "xl/worksheets/sheet1.xml":
                with new.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
                    for chunk in _million_cell_sheet():  # type: ignore[attr-defined]
                        member.write(chunk)
            else:
                new.writestr(info.filename, old.read(info.filename))
    outcome = _in_child(path, "million.xlsx", {"max_chars": 20_000_000})
    assert (outcome["kind"], outcome["error"], outcome["truncated"], outcome["pages"]) == ("xlsx", None, False, 1)
    assert str(outcome["tail"]).endswith("\t".join(str(1_000_000 + n) for n in range(10)) + "\n")
    # The text itself (about 7.9 million characters) is held by the sink; the sheet's 35 MB of XML is not.
    assert float(outcome["peak_mb"]) < _baseline_peak_mb() + 60  # type: ignore[arg-type]


def _one_of_each(folder: Path) -> dict[str, Path]:
    files = {
        "docx": write_docx(folder / "a.docx", paragraphs=[MALAYALAM]),
        "xlsx": write_xlsx(folder / "a.xlsx", {"S": [[MALAYALAM]]}),
        "pptx": write_pptx(folder / "a.pptx", [("T", MALAYALAM, None)]),
        "odt": write_odf(folder / "a.odt", "odt", f"<office:text><text:p>{MALAYALAM}</text:p></office:text>"),
        "msg": folder / "a.msg", "eml": folder / "a.eml", "rtf": folder / "a.rtf", "html": folder / "a.html",
        "csv": folder / "a.csv",
    }
    files["msg"].write_bytes(outlook_message(subject="S", body=MALAYALAM))
    files["eml"].write_bytes(_malayalam_eml())
    files["rtf"].write_text("{\\rtf1\\ansi " + rtf_unicode(MALAYALAM) + "}", encoding="ascii")
    files["html"].write_text(f"<p>{MALAYALAM}</p>", encoding="utf-8")
    files["csv"].write_text(f"a,{MALAYALAM}\n", encoding="utf-8")
    return files


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx", "odt", "msg", "eml", "rtf", "html", "csv"])
def test_a_spent_time_limit_ends_every_extractor_with_a_reason(tmp_path: Path, kind: str) -> None:
    path = _one_of_each(tmp_path)[kind]
    assert _extract(path).error is None
    result = _extract(path, limits=ExtractionLimits(seconds=0))
    assert (result.kind, result.error) == (kind, "time limit of 0 s reached")
    assert result.truncated


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx", "odt", "msg", "eml", "rtf", "html", "csv"])
def test_the_text_cap_truncates_every_format(tmp_path: Path, kind: str) -> None:
    result = _extract(_one_of_each(tmp_path)[kind], limits=ExtractionLimits(max_chars=10))
    assert (result.chars, result.truncated) == (10, True)

"""Sniffing a file's real type: magic bytes and container members over names and declared types."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from base.extraction.sniff import sniff
from base.extraction.step import HEAD_BYTES, may_hold_text
from tests.compound_file import compound_file, outlook_message
from tests.document_builders import MALAYALAM, write_docx, write_odf, write_pptx, write_xlsx

PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17)


def _file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_a_pdf_named_docx_is_a_pdf(tmp_path: Path) -> None:
    path = _file(tmp_path, "report.docx", PDF)
    assert sniff(path, "report.docx",
                 "application/vnd.openxmlformats-officedocument.wordprocessingml.document") == "pdf"


def test_a_png_named_txt_is_a_png(tmp_path: Path) -> None:
    assert sniff(_file(tmp_path, "notes.txt", PNG), "notes.txt", "text/plain") == "png"


@pytest.mark.parametrize(("writer", "kind"), [
    (lambda path: write_docx(path, paragraphs=[MALAYALAM]), "docx"),
    (lambda path: write_xlsx(path, {"Sheet": [[MALAYALAM]]}), "xlsx"),
    (lambda path: write_pptx(path, [("Title", MALAYALAM, None)]), "pptx"),
])
def test_office_files_are_told_apart_by_their_members_whatever_their_name(tmp_path: Path, writer: object,
                                                                         kind: str) -> None:
    path = tmp_path / "scan.pdf"
    writer(path)  # type: ignore[operator]
    assert sniff(str(path), "scan.pdf", "application/pdf") == kind


@pytest.mark.parametrize("kind", ["odt", "ods", "odp"])
def test_opendocument_files_are_known_by_their_mimetype_member(tmp_path: Path, kind: str) -> None:
    path = write_odf(tmp_path / "file.zip", kind, "<office:text><text:p>x</text:p></office:text>")
    assert sniff(str(path), "file.zip", "application/zip") == kind


def test_a_plain_zip_named_docx_is_binary(tmp_path: Path) -> None:
    path = tmp_path / "letter.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("letter.txt", "not an office file")
    assert sniff(str(path), "letter.docx", "") == "binary"


def test_a_truncated_docx_is_still_a_docx(tmp_path: Path) -> None:
    full = write_docx(tmp_path / "full.docx", paragraphs=[MALAYALAM] * 2000).read_bytes()
    path = _file(tmp_path, "cut.bin", full[: len(full) * 2 // 3])
    assert sniff(path, "cut.bin", "application/octet-stream") == "docx"


def test_an_outlook_message_is_known_by_its_streams(tmp_path: Path) -> None:
    path = _file(tmp_path, "mail.dat", outlook_message(subject="Rake maintenance", body="Body"))
    assert sniff(path, "mail.dat", "application/octet-stream") == "msg"


def test_another_compound_file_named_msg_is_binary(tmp_path: Path) -> None:
    legacy_word = compound_file({"WordDocument": b"\xec\xa5" + bytes(5000), "1Table": bytes(100)})
    assert sniff(_file(tmp_path, "old.msg", legacy_word), "old.msg", "application/vnd.ms-outlook") == "binary"


def test_rtf_named_doc_is_rtf(tmp_path: Path) -> None:
    path = _file(tmp_path, "memo.doc", b"{\\rtf1\\ansi\\deff0 {\\fonttbl{\\f0 Arial;}}\\f0 Hello\\par}")
    assert sniff(path, "memo.doc", "application/msword") == "rtf"


def test_html_with_a_doctype_named_txt_is_html(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf<!-- saved page -->\n<!DOCTYPE html><html><body><p>x</p></body></html>"
    assert sniff(_file(tmp_path, "page.txt", data), "page.txt", "text/plain") == "html"


def test_html_without_a_doctype_is_html_by_its_extension(tmp_path: Path) -> None:
    path = _file(tmp_path, "fragment.htm", b"<p>Notice</p><div>second</div>")
    assert sniff(path, "fragment.htm", "") == "html"


def test_header_lines_at_the_start_make_an_rfc822_message(tmp_path: Path) -> None:
    data = (b"Received: from mx.example.org\r\nFrom: Station Controller <sc@example.org>\r\n"
            b"Subject: Platform screen doors\r\n  (folded)\r\nDate: Mon, 1 Dec 2025 09:00:00 +0530\r\n\r\nBody\r\n")
    assert sniff(_file(tmp_path, "forwarded.txt", data), "forwarded.txt", "text/plain") == "eml"


def test_a_message_is_known_by_its_declared_type(tmp_path: Path) -> None:
    path = _file(tmp_path, "attachment", b"X-Odd: first\r\n\r\nbody")
    assert sniff(path, "attachment", "message/rfc822") == "eml"


def test_csv_by_extension_and_in_utf16_with_a_bom(tmp_path: Path) -> None:
    data = "\ufeffപേര്,തുക\nരാമൻ,100\n".encode("utf-16-le")
    assert sniff(_file(tmp_path, "ledger.csv", data), "ledger.csv", "application/octet-stream") == "csv"


def test_a_text_file_with_nuls_is_binary(tmp_path: Path) -> None:
    data = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" * 100
    assert sniff(_file(tmp_path, "readme.txt", data), "readme.txt", "text/plain") == "binary"


def test_random_bytes_named_csv_are_binary(tmp_path: Path) -> None:
    data = bytes((i * 7919 + 13) % 256 for i in range(20_000))
    assert sniff(_file(tmp_path, "export.csv", data), "export.csv", "text/csv") == "binary"


def test_malayalam_utf16_without_a_bom_is_text(tmp_path: Path) -> None:
    data = (MALAYALAM + "\n").encode("utf-16-le") * 20
    assert sniff(_file(tmp_path, "circular.txt", data), "circular.txt", "") == "text"


def test_windows_1252_text_is_text(tmp_path: Path) -> None:
    data = "Caf\u00e9 r\u00e9sum\u00e9 \u2013 \u201cquoted\u201d\r\n".encode("cp1252") * 50
    assert sniff(_file(tmp_path, "notes.txt", data), "notes.txt", "text/plain") == "text"


def test_a_nameless_untyped_file_that_reads_as_text_is_text(tmp_path: Path) -> None:
    path = _file(tmp_path, "blob", (MALAYALAM + "\n").encode("utf-8"))
    assert sniff(path, "blob", "application/octet-stream") == "text"


def test_a_declared_text_type_does_not_make_a_zip_text(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "data.csv", {"S": [["a", 1]]})
    assert sniff(str(path), "data.csv", "text/csv") == "xlsx"


def test_the_pipeline_sends_utf16_without_a_bom_and_messages_with_binary_parts_to_the_pool() -> None:
    utf16 = ((MALAYALAM + " ") * 200).encode("utf-16-le")[:HEAD_BYTES]
    message = (b"From: a@example.org\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-16le\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n" + "Test message".encode("utf-16-le"))
    assert may_hold_text(utf16) and may_hold_text(message)
    assert not may_hold_text(bytes((i * 7919 + 13) % 256 for i in range(HEAD_BYTES)))

"""The MIME walker (connectors/email_mime.py) against real messages and hand-made edge cases.

CORPUS_ATTACHMENTS is our own reading of every message in ../shared/testdata/mime (not the
stdlib's, which its MANIFEST.tsv records): (IMAP section, exact filename, decoded size) of each
attachment, in part order. It was built by reading the messages; the comments say why the
questionable ones are what they are.
"""

from __future__ import annotations

import base64
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.email_mime import BODY_TEXT_LIMIT, MAX_DEPTH, iter_attachments, message_summary, parse_message
from tests.conftest import skip_or_fail

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "mime"

CORPUS_ATTACHMENTS: dict[str, list[tuple[str, str, int]]] = {
    "MimeKit__TestData_messages_bounce.txt": [],
    "MimeKit__TestData_messages_empty-multipart.txt": [],
    # An application/postscript part whose base64 body is empty: an attachment of 0 bytes.
    "MimeKit__TestData_messages_epilogue.txt": [
        ('2', '', 0),
    ],
    "MimeKit__TestData_messages_issue358.txt": [],
    "MimeKit__TestData_messages_japanese.txt": [],
    # Top-level body, invalid type "application-x-gzip" but named: the stdlib reports no attachment.
    "MimeKit__TestData_messages_missing-subtype.txt": [
        ('1', 'document.xml.gz', 15),
    ],
    "MimeKit__TestData_messages_multipart-digest.txt": [],
    "MimeKit__TestData_messages_multipart-related-mhtml.txt": [],
    # RFC 3501's part-specifier example: every part's text names its own IMAP section.
    "MimeKit__TestData_messages_rfc2060.txt": [
        ('2', '', 33),
        ('3.2', '', 35),
        ('4.1', '', 35),
    ],
    "MimeKit__TestData_messages_simple-embedded-message.eml": [],
    "MimeKit__TestData_partial_message-partial.eml": [
        ('2', 'earrings.jpg', 130292),
    ],
    # winmail.dat: the kitten photo, then an embedded Outlook task (no files) and an embedded
    # appointment carrying the same photo again. The stdlib sees only winmail.dat.
    "MimeKit__TestData_tnef_rich-text.eml": [
        ('2.tnef1', 'kitten-playing-with-a-christmas-tree.jpg', 375081),
        ('2.tnef3.tnef1', 'kitten-playing-with-a-christmas-tree.jpg', 375081),
    ],
    # winmail.dat holding only a message body (plain + HTML), no files.
    "MimeKit__TestData_tnef_ukr.eml": [],
    "flanker__fixtures_messages_apache-message-news-mime.eml": [],
    "flanker__fixtures_messages_attached-pdf.eml": [
        ('2', 'test.pdf', 6940),
    ],
    "flanker__fixtures_messages_bounce_delayed.eml": [],
    "flanker__fixtures_messages_bounce_office365.eml": [],
    "flanker__fixtures_messages_bz2-attachment.eml": [
        ('2', 'foo.txt.bz2', 44),
    ],
    "flanker__fixtures_messages_dashed-boundaries.eml": [],
    "flanker__fixtures_messages_enclosed-bad-encoding.eml": [],
    "flanker__fixtures_messages_enclosed-broken-body.eml": [],
    "flanker__fixtures_messages_enclosed-broken.eml": [],
    "flanker__fixtures_messages_enclosed.eml": [],
    "flanker__fixtures_messages_false-multipart.eml": [],
    # A named photo placed inline in multipart/mixed by the sender: a file, not an HTML decoration.
    "flanker__fixtures_messages_iphone.eml": [
        ('2', 'photo.JPG', 9023),
    ],
    "flanker__fixtures_messages_mailformed-headers.eml": [],
    "flanker__fixtures_messages_message-external-body.eml": [],
    "flanker__fixtures_messages_missing-boundaries.eml": [],
    "flanker__fixtures_messages_missing-final-boundary.eml": [],
    "flanker__fixtures_messages_no-ctype.eml": [],
    # Raw 8-bit UTF-8 name cut by the sender at 127 bytes in the middle of a character: the
    # whole characters are kept (the stdlib ends it with U+FFFD).
    "flanker__fixtures_messages_russian-attachment-yahoo.eml": [
        ('2', 'Картинка с очень, очень длинным предлинным именем преименем таким чт', 178213),
    ],
    # S/MIME: the signed content is typed application/plain (so it is a file); smime.p7s is the
    # signature, not a document.
    "flanker__fixtures_messages_signed.eml": [
        ('1', '', 27),
    ],
    "flanker__fixtures_messages_spam_broken-ctype.eml": [
        ('2', 'facejj.jpg', 43682),
    ],
    "flanker__fixtures_messages_torture-part.eml": [],
    # Dovecot/UW torture test: unnamed audio, images and PostScript in forwarded messages up to three
    # levels deep; sections follow IMAP numbering.
    "flanker__fixtures_messages_torture.eml": [
        ('2.3', '', 890),
        ('3.1', '', 409600),
        ('4', '', 26476),
        ('5', '', 1324),
        ('6.1.2', '', 22964),
        ('6.2.1', '', 18971),
        ('6.2.2', '', 13619),
        ('6.2.3', '', 43689),
        ('6.2.4', '', 8846),
        ('6.3', '', 34894),
        ('7.2', '', 62479),
        ('8.2', '', 53211),
        ('9.1', '', 390733),
        ('10', '', 33318),
        ('11.1', '', 29652),
        ('11.2', '', 29652),
        ('12.1', '', 38717),
        ('12.2', 'Alices_PDP-10', 13448),
        ('12.3.2.1', '', 2432),
        ('12.3.2.2', '', 116319),
        ('12.3.3', '', 4729),
        ('12.3.4.1', '', 55226),
    ],
    "mail__fixtures_emails_attachment_emails_attachment_content_disposition.eml": [
        ('2', 'api.rb', 28),
    ],
    # Only an inline image (Content-ID, no name): skipped unless include_inline.
    "mail__fixtures_emails_attachment_emails_attachment_content_location.eml": [],
    "mail__fixtures_emails_attachment_emails_attachment_message_rfc822.eml": [
        ('2.2', 'broken.pdf', 1026),
    ],
    # img.png is a cid: image of the HTML; Testmail.eml is a forwarded message cut off after its
    # headers (nothing inside).
    "mail__fixtures_emails_attachment_emails_attachment_message_rfc822_inline_image.eml": [],
    "mail__fixtures_emails_attachment_emails_attachment_nonascii_filename.eml": [
        ('2', 'ciële.txt', 11),
    ],
    # The whole message body is the attachment (top-level, not multipart): the stdlib misses it.
    "mail__fixtures_emails_attachment_emails_attachment_only_email.eml": [
        ('1', 'blah.gz', 288),
    ],
    "mail__fixtures_emails_attachment_emails_attachment_pdf_lf.eml": [
        ('2', 'broken.pdf', 1026),
    ],
    "mail__fixtures_emails_attachment_emails_attachment_pdf_non_ascii.eml": [
        ('2', 'broken.pdf', 1026),
    ],
    # Unquoted encoded word: filename==?utf-8?B?...?= (the stdlib returns None).
    "mail__fixtures_emails_attachment_emails_attachment_with_base64_encoded_name.eml": [
        ('2', 'This is a test.pdf', 399),
    ],
    # name*=iso-2022-jp'ja'...Dij%8aat...: byte 0x8A is not ISO-2022-JP (7-bit) nor UTF-8, so it is
    # read as Windows-1252 (Š) rather than as the C1 control U+008A.
    "mail__fixtures_emails_attachment_emails_attachment_with_encoded_name.eml": [
        ('2', '01 Quien Te DijŠat. Pitbull.mp3', 399),
    ],
    # filename*=ISO-8859-1''... preferred over the RFC 2047 Content-Type name; named, inline, no cid.
    "mail__fixtures_emails_attachment_emails_attachment_with_quoted_filename.eml": [
        ('1', 'Eelanalüüsi päring.jpg', 1952),
    ],
    "mail__fixtures_emails_attachment_emails_attachment_with_unquoted_name.eml": [
        ('2', 'This is a test.txt', 11),
    ],
    # Content-Transfer-Encoding: x-uuencode with an empty body: a real attachment of 0 bytes.
    "mail__fixtures_emails_error_emails_content_transfer_encoding_x_uuencode.eml": [
        ('2', 'PGP_Cmts_on_12-14-01_Pkg.doc', 0),
    ],
    "mail__fixtures_emails_error_emails_header_fields_with_empty_values.eml": [],
    # A nameless image in multipart/related: inline (Content-Location names it somefile.jpg).
    "mail__fixtures_emails_error_emails_missing_content_disposition.eml": [],
    "mail__fixtures_emails_error_emails_multiple_content_types.eml": [],
    "mail__fixtures_emails_error_emails_multiple_invalid_content_dispositions.eml": [],
    # Outer boundary is a prefix of the inner one (..._alt): base64 "SNIP" is 3 bytes.
    "mail__fixtures_emails_mime_emails_email_with_similar_boundaries.eml": [
        ('2', 'LOGO.png', 3),
    ],
    # text.txt is only a Content-Location of the MMS body text, not a file name.
    "mail__fixtures_emails_mime_emails_raw_email4.eml": [],
    # test.pdf is marked inline but is a named PDF; smime.p7s is the signature.
    "mail__fixtures_emails_mime_emails_raw_email7.eml": [
        ('1.2', 'test.rb', 25),
        ('1.3', 'test.pdf', 14),
    ],
    # Unquoted boundary with '=' and binary transfer encoding (the stdlib's policy.default finds no part).
    "mail__fixtures_emails_mime_emails_raw_email_with_binary_encoded.eml": [
        ('1', '2013-08-13_19-08-28-1.jpg', 24),
    ],
    "mail__fixtures_emails_mime_emails_raw_email_with_illegal_boundary.eml": [],
    "mail__fixtures_emails_mime_emails_raw_email_with_mimepart_without_content_type.eml": [],
    "mail__fixtures_emails_mime_emails_raw_email_with_quoted_illegal_boundary.eml": [],
    # A quoted RFC 2047 word as filename (the stdlib returns it undecoded).
    "mail__fixtures_emails_multi_charset_japanese_attachment.eml": [
        ('2', 'てすと.txt', 33),
    ],
    # RFC 2231 continuations filename*0*, filename*1*, ... in UTF-8.
    "mail__fixtures_emails_multi_charset_japanese_attachment_long_name.eml": [
        ('1', 'かきくけこかきくけこかきくけこかきくけこかきくけこ.txt', 18),
    ],
    "mail__fixtures_emails_multipart_report_emails_multi_address_bounce1.eml": [],
    "mail__fixtures_emails_multipart_report_emails_multipart_report_multiple_status.eml": [],
    "mailparser__fixtures_decoderended.eml": [],
    "mailparser__fixtures_mixed.eml": [],
    "mailparser__fixtures_nested.eml": [],
    # RFC 2231 continuation with an emoji; images with Content-Disposition: attachment inside
    # multipart/related are files.
    "mailparser__fixtures_nodemailer.eml": [
        ('1.3.2', 'image.png', 126),
        ('1.3.3', 'nyan cat ✔.gif', 29361),
        ('2', 'notes.txt', 28),
    ],
    "stalwart__eml_malformed_000.eml": [],
    "stalwart__eml_malformed_009.eml": [],
    "stalwart__eml_malformed_012.eml": [],
    "stalwart__eml_malformed_013.eml": [],
    "stalwart__eml_malformed_014.eml": [],
    "stalwart__eml_malformed_020.eml": [],
    "stalwart__eml_malformed_021.eml": [],
    "stalwart__eml_rfc_000.eml": [
        ('3.1', '', 45),
        ('3.2', '', 22),
    ],
    # Forwarded message; 'fi1ename' typo in the disposition, so the Content-Type name is used.
    "stalwart__eml_rfc_002.eml": [
        ('2.2', 'map_of_Argentina.gif', 288),
    ],
    "stalwart__eml_rfc_004.eml": [],
    "stalwart__eml_rfc_005.eml": [],
    # RFC 8621 example: only 2.2 (disposition attachment) and 2.3 (unnamed Excel) are files; the
    # other images are inline.
    "stalwart__eml_rfc_007.eml": [
        ('2.2', '', 1),
        ('2.3', '', 1),
    ],
    "stalwart__eml_rfc_009.eml": [],
    "stalwart__eml_thirdparty_002.eml": [],
    "stalwart__eml_thirdparty_003.eml": [],
    "stalwart__eml_thirdparty_004.eml": [],
    "stalwart__eml_thirdparty_005.eml": [],
    "stalwart__eml_thirdparty_006.eml": [],
    "stalwart__eml_thirdparty_007.eml": [
        ('3.2', 'test.txt', 6),
    ],
    "stalwart__eml_thirdparty_008.eml": [],
    "stalwart__eml_thirdparty_009.eml": [],
    "stalwart__eml_thirdparty_012.eml": [],
    "stalwart__eml_thirdparty_013.eml": [
        ('2', '', 1),
        ('3', '', 1),
        ('4', '', 1),
    ],
    # Three forwarded messages named *.txt, each cut off after its headers: nothing inside.
    "stalwart__eml_thirdparty_015.eml": [],
    "zbateson___data_emails_github-115.txt": [
        ('2', 'blueball.png', 1325),
        ('3', 'greenball.png', 1298),
        ('4', 'redball.png', 1453),
    ],
    "zbateson___data_emails_invalid-charset.txt": [],
}

#: Inline images (HTML decorations) the walker adds with include_inline=True.
CORPUS_INLINE_EXTRAS: dict[str, list[tuple[str, str, int]]] = {
    "MimeKit__TestData_messages_multipart-related-mhtml.txt": [("1", "", 889)],
    "mail__fixtures_emails_attachment_emails_attachment_content_location.eml": [("2", "Photo25.jpg", 227)],
    "mail__fixtures_emails_attachment_emails_attachment_message_rfc822_inline_image.eml": [("1.2", "img.png", 370)],
    "mail__fixtures_emails_error_emails_missing_content_disposition.eml": [("1", "somefile.jpg", 1311)],
    "stalwart__eml_malformed_020.eml": [("2", "", 74)],
    "stalwart__eml_malformed_021.eml": [("2", "", 74)],
    "stalwart__eml_rfc_007.eml": [("2.1.1.2", "", 1), ("2.1.2.2", "", 1)],
}

ROLES = {"attachment", "inline", "body", "container", "signature", "report", "absent", "skipped"}


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        skip_or_fail(f"the shared MIME corpus is not at {CORPUS} (../shared is absent)")
    return sorted(p for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "README.md"))


def listing(raw: bytes, *, include_inline: bool = False) -> list[tuple[str, str, int]]:
    return [(a.part_path, a.filename, a.size) for a in iter_attachments(raw, include_inline=include_inline)]


# -- the corpus -----------------------------------------------------------------------------------

def test_corpus_table_covers_every_message() -> None:
    assert {p.name for p in corpus_files()} == set(CORPUS_ATTACHMENTS)


@pytest.mark.parametrize("name", sorted(CORPUS_ATTACHMENTS))
def test_corpus_message_carries_exactly_the_attachments_in_our_table(name: str) -> None:
    corpus_files()
    raw = (CORPUS / name).read_bytes()
    assert listing(raw) == CORPUS_ATTACHMENTS[name]


def test_include_inline_adds_exactly_the_inline_images() -> None:
    for path in corpus_files():
        raw = path.read_bytes()
        expected = sorted(CORPUS_ATTACHMENTS[path.name] + CORPUS_INLINE_EXTRAS.get(path.name, []))
        assert sorted(listing(raw, include_inline=True)) == expected, path.name


def test_every_part_of_every_corpus_message_is_accounted_for() -> None:
    for path in corpus_files():
        parsed = parse_message(path.read_bytes(), include_inline=True)
        assert parsed.parts, path.name
        assert {p.role for p in parsed.parts} <= ROLES, path.name
        attachment_paths = {a.part_path for a in parsed.attachments}
        assert attachment_paths == {p.part_path for p in parsed.parts if p.role in ("attachment", "inline")}


def test_sections_follow_imap_numbering() -> None:
    corpus_files()
    parsed = parse_message((CORPUS / "MimeKit__TestData_messages_rfc2060.txt").read_bytes())
    for attachment in parsed.attachments:
        assert attachment.payload.strip() == f"This part specifier should be: {attachment.part_path}".encode()
    bodies = [p.part_path for p in parsed.parts if p.role == "body"]
    assert bodies == ["1", "3.1", "4.2.1", "4.2.2.1", "4.2.2.2"]


def test_winmail_dat_files_carry_their_bytes_and_origin() -> None:
    corpus_files()
    kittens = list(iter_attachments((CORPUS / "MimeKit__TestData_tnef_rich-text.eml").read_bytes()))
    assert all(a.origin == ("tnef",) for a in kittens)
    assert kittens[0].payload[:3] == b"\xff\xd8\xff" and kittens[0].payload[-2:] == b"\xff\xd9"  # a whole JPEG
    assert kittens[0].mime_type == "image/jpeg"


def test_forwarded_attachment_is_tagged_rfc822() -> None:
    corpus_files()
    raw = (CORPUS / "mail__fixtures_emails_attachment_emails_attachment_message_rfc822.eml").read_bytes()
    (pdf,) = iter_attachments(raw)
    assert pdf.origin == ("rfc822",) and pdf.payload.startswith(b"%PDF")


def test_corpus_summaries_decode_headers() -> None:
    corpus_files()
    japanese = message_summary((CORPUS / "MimeKit__TestData_messages_japanese.txt").read_bytes())
    assert japanese.subject.startswith("日本語メールテスト")  # raw ISO-2022-JP in a header
    norwegian = message_summary(
        (CORPUS / "mail__fixtures_emails_error_emails_header_fields_with_empty_values.eml").read_bytes())
    assert norwegian.from_ == "Jørn Støylen <jorn@prikkprikkprikk.no>"
    assert norwegian.date_iso == "2009-10-30T20:07:42+01:00"
    outlook = message_summary((CORPUS / "MimeKit__TestData_messages_issue358.txt").read_bytes())
    assert outlook.from_address == "jang.abcdef@xyzlinux12345678.it"  # an unquoted '@' in the name
    assert outlook.body_text == "Test headers"  # a broken header fold did not end the headers
    utf16 = message_summary((CORPUS / "stalwart__eml_thirdparty_005.eml").read_bytes())
    assert utf16.body_text.startswith("Test message")


# -- names ----------------------------------------------------------------------------------------

def mixed(*parts: bytes, boundary: bytes = b"XyZ") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return (b"From: a@kmrl.co.in\r\nSubject: test\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n\r\n"
            b"preamble\r\n" + body + b"--" + boundary + b"--\r\n")


TEXT_PART = b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease find attached.\r\n"
MALAYALAM_NAME = "കൊച്ചി മെട്രോ റിപ്പോർട്ട്.pdf"


def test_rfc2047_name_split_inside_a_malayalam_character_comes_out_exactly() -> None:
    encoded = MALAYALAM_NAME.encode("utf-8")
    # Cut the bytes at 10 (inside a 3-byte character): two encoded words in the same charset.
    words = b" ".join(b"=?UTF-8?B?" + base64.b64encode(chunk) + b"?=" for chunk in (encoded[:10], encoded[10:]))
    part = (b"Content-Type: application/pdf; name=\"" + words + b"\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"%PDF-1.4 report") + b"\r\n")
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert att.filename == MALAYALAM_NAME
    assert att.payload == b"%PDF-1.4 report"


def test_rfc2231_continuations_with_charset_come_out_exactly() -> None:
    encoded = "".join(f"%{b:02X}" for b in MALAYALAM_NAME.encode("utf-8"))
    pieces = [encoded[i:i + 60] for i in range(0, len(encoded), 60)]
    params = b";\r\n".join(f" filename*{i}*={'utf-8' + chr(39) + 'ml' + chr(39) if i == 0 else ''}{p}".encode()
                           for i, p in enumerate(pieces))
    part = b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n" + params + b"\r\n\r\nPDF"
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert att.filename == MALAYALAM_NAME


def test_filename_star_wins_over_a_plain_filename_written_first() -> None:
    part = (b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"report.pdf\"; "
            b"filename*=UTF-8''%E0%B4%B1%E0%B4%BF%E0%B4%AA%E0%B5%8D%E0%B4%AA%E0%B5%8B%E0%B5%BC.pdf\r\n\r\nPDF")
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert att.filename == "റിപ്പോർ.pdf"


def test_content_type_name_is_used_without_content_disposition() -> None:
    part = b"Content-Type: application/vnd.ms-excel; name=\"fare-revenue.xls\"\r\n\r\nXLS"
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert (att.filename, att.disposition) == ("fare-revenue.xls", "")


def test_unquoted_encoded_word_name_is_decoded() -> None:
    word = b"=?utf-8?B?" + base64.b64encode("ടിക്കറ്റ്.csv".encode()) + b"?="
    part = b"Content-Type: text/csv\r\nContent-Disposition: attachment; filename=" + word + b"\r\n\r\na,b\r\n"
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert att.filename == "ടിക്കറ്റ്.csv"


@pytest.mark.parametrize(("raw_name", "charset", "expected"), [
    ("സുരക്ഷ.pdf".encode(), "us-ascii", "സുരക്ഷ.pdf"),  # raw UTF-8 whatever the part says
    ("Übersicht.pdf".encode("latin-1"), "iso-8859-1", "Übersicht.pdf"),  # not UTF-8: the part charset
    ("Отчёт.pdf".encode("cp1251"), "windows-1251", "Отчёт.pdf"),
    ("café.pdf".encode("latin-1"), "", "café.pdf"),  # no charset anywhere: Latin-1 (Windows-1252)
])
def test_raw_8bit_names_decode_utf8_then_part_charset_then_latin1(raw_name: bytes, charset: str,
                                                                   expected: str) -> None:
    ct = b"Content-Type: application/pdf" + (f"; charset={charset}".encode() if charset else b"")
    part = ct + b"\r\nContent-Disposition: attachment; filename=\"" + raw_name + b"\"\r\n\r\nPDF"
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert att.filename == expected


# -- where attachments hide -------------------------------------------------------------------------

def uuencoded(data: bytes) -> bytes:
    import binascii

    lines = [binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45)]
    return b"".join(lines) + b"`\n"


def test_uuencoded_files_inside_a_text_body_are_extracted() -> None:
    report = bytes(range(256)) * 3
    body = (b"Dear team,\nthe inspection report follows.\n\nbegin 644 inspection report.bin\n" + uuencoded(report)
            + b"end\n\nbegin 600 notes.txt\n" + uuencoded(b"track 2 ok\n") + b"end\nRegards\n")
    raw = b"From: a@kmrl.co.in\nSubject: old client\nContent-Type: text/plain\n\n" + body
    parsed = parse_message(raw)
    assert [(a.part_path, a.filename, a.payload, a.origin) for a in parsed.attachments] == [
        ("1.uu1", "inspection report.bin", report, ("uuencode",)),
        ("1.uu2", "notes.txt", b"track 2 ok\n", ("uuencode",)),
    ]
    assert "begin 644" not in parsed.summary.body_text
    assert "inspection report follows" in parsed.summary.body_text and "Regards" in parsed.summary.body_text


def test_x_uuencode_part_takes_its_name_from_the_begin_line_when_unnamed() -> None:
    part = (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
            b"begin 644 schedule.xls\r\n" + uuencoded(b"timetable").replace(b"\n", b"\r\n") + b"end\r\n")
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert (att.filename, att.payload) == ("schedule.xls", b"timetable")


def test_top_level_attachment_body_is_an_attachment() -> None:
    raw = (b"From: scanner@kmrl.co.in\r\nSubject: scan\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"%PDF scan") + b"\r\n")
    assert listing(raw) == [("1", "scan.pdf", 9)]


def test_attachments_in_forwarded_messages_nested_three_deep() -> None:
    inner = mixed(TEXT_PART, b"Content-Type: application/pdf; name=\"deep.pdf\"\r\n\r\nPDF3", boundary=b"in")
    middle = mixed(TEXT_PART, b"Content-Type: message/rfc822\r\n\r\n" + inner, boundary=b"mid")
    outer = mixed(TEXT_PART, b"Content-Type: application/pdf; name=\"top.pdf\"\r\n\r\nPDF1",
                  b"Content-Type: message/rfc822\r\n\r\n" + middle)
    attachments = list(iter_attachments(outer))
    assert [(a.part_path, a.filename, a.origin) for a in attachments] == [
        ("2", "top.pdf", ()),
        ("3.2.2", "deep.pdf", ("rfc822", "rfc822")),
    ]


def test_forwarded_message_sent_base64_encoded_is_walked() -> None:
    inner = mixed(TEXT_PART, b"Content-Type: application/pdf; name=\"x.pdf\"\r\n\r\nPDF", boundary=b"in")
    part = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(inner)
    assert listing(mixed(TEXT_PART, part)) == [("2.2", "x.pdf", 3)]


def test_inline_images_are_skipped_unless_asked_for() -> None:
    related = (b"Content-Type: multipart/related; boundary=\"rel\"\r\n\r\n--rel\r\nContent-Type: text/html\r\n\r\n"
               b"<img src=\"cid:logo\">\r\n--rel\r\nContent-Type: image/png; name=\"logo.png\"\r\n"
               b"Content-ID: <logo>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\n\r\nPNG\r\n--rel--")
    raw = mixed(related, b"Content-Type: application/pdf; name=\"a.pdf\"\r\n\r\nPDF")
    assert listing(raw) == [("2", "a.pdf", 3)]
    assert listing(raw, include_inline=True) == [("1.2", "logo.png", 3), ("2", "a.pdf", 3)]
    parsed = parse_message(raw)
    assert [p.role for p in parsed.parts if p.part_path == "1.2"] == ["inline"]


def test_unreadable_winmail_dat_is_kept_as_it_is() -> None:
    part = (b"Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"not a TNEF stream"))
    (att,) = iter_attachments(mixed(TEXT_PART, part))
    assert (att.filename, att.payload, att.defects) == ("winmail.dat", b"not a TNEF stream", ("tnef_unreadable",))


def test_signature_and_delivery_reports_are_not_documents() -> None:
    signed = (b"Content-Type: multipart/signed; boundary=\"s\"; protocol=\"application/pkcs7-signature\"\r\n\r\n"
              b"--s\r\n" + TEXT_PART + b"\r\n--s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
              b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\nSIG\r\n--s--")
    parsed = parse_message(mixed(signed, b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\n"))
    assert parsed.attachments == []
    assert sorted(p.role for p in parsed.parts if p.part_path in ("1.2", "2")) == ["report", "signature"]
    # A whole message signed with an unusual signature type: the second part is still the signature.
    top = parse_message(b"Subject: s\r\n" + signed.replace(b"application/pkcs7-signature; name=smime.p7s",
                                                            b"application/x-vendor-sig"))
    assert top.attachments == [] and [p.role for p in top.parts if p.part_path == "2"] == ["signature"]


# -- summary ---------------------------------------------------------------------------------------

def test_summary_decodes_headers_and_prefers_plain_text() -> None:
    subject = "=?utf-8?B?" + base64.b64encode("പ്രതിവാര റിപ്പോർട്ട്".encode()).decode() + "?="
    raw = (f"From: =?utf-8?Q?Operations_Control?= <occ@kochimetro.org>\r\nTo: a@kmrl.co.in, \"B, C\" <b@kmrl.co.in>"
           f"\r\nCc: d@kmrl.co.in\r\nDate: Mon, 1 Jan 2024 10:00:00 +0530\r\nMessage-ID: <m1@kmrl>\r\n"
           f"Subject: {subject}\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\nTrack maintenance at Aluva\r\n--a\r\n"
           f"Content-Type: text/html\r\n\r\n<p>ignored</p>\r\n--a--\r\n").encode()
    summary = message_summary(raw)
    assert summary.subject == "പ്രതിവാര റിപ്പോർട്ട്"
    assert summary.from_ == "Operations Control <occ@kochimetro.org>"
    assert (summary.from_address, summary.sender_domain) == ("occ@kochimetro.org", "kochimetro.org")
    assert summary.to == 'a@kmrl.co.in, "B, C" <b@kmrl.co.in>'
    assert summary.cc == "d@kmrl.co.in"
    assert summary.message_id == "<m1@kmrl>"
    assert summary.date_iso == "2024-01-01T10:00:00+05:30"
    assert summary.body_text == "Track maintenance at Aluva"


def test_summary_uses_html_text_when_there_is_no_plain_text() -> None:
    raw = (b"Subject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><style>p{}</style>"
           b"<p>Fare&nbsp;revenue <b>report</b></p></html>")
    assert message_summary(raw).body_text == "Fare revenue report"


def test_body_text_is_capped() -> None:
    raw = b"Subject: long\r\nContent-Type: text/plain\r\n\r\n" + b"word " * (BODY_TEXT_LIMIT // 2)
    assert len(message_summary(raw).body_text) == BODY_TEXT_LIMIT


# -- hostile input ---------------------------------------------------------------------------------

def test_nesting_beyond_the_limit_is_a_defect_not_a_crash() -> None:
    raw = b"Content-Type: application/pdf; name=deep.pdf\r\n\r\nPDF"
    for _ in range(MAX_DEPTH + 50):
        raw = b"Content-Type: message/rfc822\r\n\r\n" + raw
    parsed = parse_message(b"Subject: deep\r\n" + raw)
    assert parsed.attachments == []
    assert parsed.defects.count("too_deep") == 1


def test_truncated_and_corrupted_corpus_messages_never_raise() -> None:
    rng = random.Random(20240601)
    for path in corpus_files():
        raw = path.read_bytes()[:200_000]
        variants = [raw[:cut] for cut in {0, 1, len(raw) // 3, len(raw) // 2, len(raw) - 1}]
        for _ in range(3):
            damaged = bytearray(raw)
            for _ in range(max(1, len(raw) // 200)):
                damaged[rng.randrange(len(damaged) or 1)] = rng.choice(b"\r\n-=?\"';: \x00\xff")
            variants.append(bytes(damaged))
        for variant in variants:
            parsed = parse_message(variant, include_inline=True)
            assert all(isinstance(a.payload, bytes) for a in parsed.attachments)


@pytest.mark.parametrize("raw", [
    b"", b"\r\n", b"\n\n\n", b"Content-Type: multipart/mixed; boundary=", b"Content-Type: multipart/mixed\r\n\r\n--",
    b"Content-Type: multipart/mixed; boundary=\"a\"\r\n\r\n--a\r\n--a\r\n--a--",
    b"Content-Type: text/plain; charset=utf-7\r\n\r\n+AGEAYgBj-",
    b"Content-Type: text/plain; charset=base64\r\n\r\nabc",
    b"Content-Type: application/pdf; name*0*=bogus%ZZ; name*1000000=x\r\n\r\n%",
    b"Content-Disposition: attachment; filename==?x?Q?=ZZ?=\r\nContent-Transfer-Encoding: base64\r\n\r\n=====",
    b"Subject: =?utf-8?B?????\r\nFrom: <<<@>>>\r\nDate: 99 Foo 99999 99:99:99 +9999\r\n\r\nx",
])
def test_malformed_fragments_never_raise(raw: bytes) -> None:
    parse_message(raw, include_inline=True)


# -- generated structures --------------------------------------------------------------------------

NAME_CHARS = "abcXYZ019 _-.()കൊച്ചിമെട്രോ日本ü€"


@st.composite
def mime_tree(draw: st.DrawFn, depth: int = 0) -> tuple:
    kinds = ["attachment", "text"] + (["multipart", "rfc822"] if depth < 4 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "attachment":
        name = draw(st.text(NAME_CHARS, min_size=1, max_size=40)).strip() or "x"
        return ("attachment", name + ".pdf", draw(st.binary(max_size=300)), draw(st.sampled_from(["2231", "2047"])))
    if kind == "text":
        return ("text", draw(st.text(max_size=60)))
    if kind == "rfc822":
        return ("rfc822", draw(mime_tree(depth + 1)))
    return ("multipart", draw(st.sampled_from(["mixed", "alternative", "parallel"])),
            draw(st.lists(mime_tree(depth + 1), min_size=1, max_size=4)))


def render(node: tuple, counter: list[int]) -> bytes:
    """MIME headers + body of ``node`` (a part, without the leading boundary line)."""
    kind = node[0]
    if kind == "attachment":
        _, name, data, style = node
        if style == "2231":
            value = "".join(f"%{b:02X}" for b in name.encode())
            disposition = f"attachment; filename*=UTF-8''{value}"
        else:
            disposition = f"attachment; filename=\"=?UTF-8?B?{base64.b64encode(name.encode()).decode()}?=\""
        return (f"Content-Type: application/pdf\r\nContent-Disposition: {disposition}\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(data)
    if kind == "text":
        return b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + \
            base64.encodebytes(node[1].encode())
    if kind == "rfc822":
        return b"Content-Type: message/rfc822\r\n\r\nSubject: fwd\r\n" + render(node[1], counter)
    counter[0] += 1
    boundary = f"=_b{counter[0]}_".encode()
    body = b"".join(b"--" + boundary + b"\r\n" + render(child, counter) + b"\r\n" for child in node[2])
    return (b"Content-Type: multipart/" + node[1].encode() + b"; boundary=\"" + boundary + b"\"\r\n\r\n"
            + body + b"--" + boundary + b"--\r\n")


def expected_attachments(node: tuple, path: str, origin: tuple[str, ...]) -> list[tuple[str, str, bytes, tuple]]:
    """(section, name, bytes, origin) in IMAP numbering: ``path`` is this entity's section."""
    kind = node[0]
    if kind == "attachment":
        return [(path, node[1], node[2], origin)]
    if kind == "text":
        return []
    if kind == "rfc822":
        inner = node[1]
        # The encapsulated message's body: its parts number under this section; a single body is ".1".
        if inner[0] == "multipart":
            return expected_children(inner, path, (*origin, "rfc822"))
        return expected_attachments(inner, f"{path}.1", (*origin, "rfc822"))
    return expected_children(node, path, origin)


def expected_children(node: tuple, path: str, origin: tuple[str, ...]) -> list[tuple[str, str, bytes, tuple]]:
    found = []
    for number, child in enumerate(node[2], 1):
        found += expected_attachments(child, f"{path}.{number}" if path else str(number), origin)
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mime_tree())
def test_generated_structures_give_every_attachment_with_its_section_name_and_bytes(tree: tuple) -> None:
    raw = b"From: gen@kmrl.co.in\r\nSubject: generated\r\nMIME-Version: 1.0\r\n" + render(tree, [0])
    top = tree if tree[0] == "multipart" else None
    expected = expected_children(top, "", ()) if top else expected_attachments(tree, "1", ())
    parsed = parse_message(raw)
    assert [(a.part_path, a.filename, a.payload, a.origin) for a in parsed.attachments] == expected
    leaf_roles = {p.part_path: p.role for p in parsed.parts if p.role != "container"}
    assert {path for path, *_ in expected} == {p for p, role in leaf_roles.items() if role == "attachment"}


# -- bulk hostile input: every file is a part, and the work is linear ------------------------------
#
# "Work" is counted, never timed: bytes copied out of a body (CountingBytes), bytes handed to
# tnefparse's TNEF objects, MAPI values decoded.

class CountingBytes(bytes):
    """bytes that add the length of every slice and concatenation made from them to ``work[0]``;
    what they produce counts too, so a chain of copies is counted in full."""

    work = [0]

    def __getitem__(self, key):  # type: ignore[no-untyped-def,override]
        result = super().__getitem__(key)
        if isinstance(key, slice):
            CountingBytes.work[0] += len(result)
            return CountingBytes(result)
        return result

    def __add__(self, other: bytes) -> CountingBytes:  # type: ignore[override]
        result = super().__add__(other)
        CountingBytes.work[0] += len(result)
        return CountingBytes(result)


def uu_flood(blocks: int) -> bytes:
    """A plain-text message: a greeting, then ``blocks`` tiny uuencoded files (empty ones)."""
    body = b"Hello from the depot\n" + b"".join(b"begin 644 f%d.txt\n`\nend\n" % i for i in range(blocks))
    return b"From: a@kmrl.co.in\nSubject: many files\nContent-Type: text/plain\n\n" + body


def test_uuencoded_blocks_count_against_max_parts() -> None:
    from connectors.email_mime import MAX_PARTS

    parsed = parse_message(uu_flood(50_000))
    # The body part is the first part; each file is one more, up to MAX_PARTS.
    assert len(parsed.attachments) == MAX_PARTS - 1
    assert parsed.attachments[0].part_path == "1.uu1" and parsed.attachments[-1].part_path == f"1.uu{MAX_PARTS - 1}"
    skipped = [p.part_path for p in parsed.parts if p.role == "skipped"]
    assert skipped == [f"1.uu{MAX_PARTS}"]
    assert parsed.defects == ["too_many_parts"]
    assert parsed.summary.body_text == "Hello from the depot"


def test_uuencoded_blocks_are_cut_out_of_the_body_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.email_mime

    real = connectors.email_mime._decode_body

    def counted(data: bytes, cte: bytes) -> tuple[bytes, str]:
        decoded, defect = real(data, cte)
        return CountingBytes(decoded), defect

    monkeypatch.setattr(connectors.email_mime, "_decode_body", counted)
    raw = uu_flood(5_000)
    CountingBytes.work[0] = 0
    parsed = parse_message(raw)
    assert len(parsed.attachments) == 5_000
    # Cutting each block out of the whole text copied it once per block (~600 MB here).
    assert CountingBytes.work[0] <= 2 * len(raw)


TNEF_SIGNATURE = b"\x78\x9f\x3e\x22\x00\x00"


def tnef_object(level: int, name: int, kind: int, data: bytes) -> bytes:
    import struct

    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def winmail(files: int, extra: bytes = b"") -> bytes:
    """A TNEF stream with ``files`` small attachments (f0.txt, f1.txt, ...), then ``extra``."""
    out = [TNEF_SIGNATURE, tnef_object(1, 0x9006, 0x0008, b"\x00\x00\x01\x00"),  # attTnefVersion
           tnef_object(1, 0x9007, 0x0006, b"\xe4\x04\x00\x00\x00\x00\x00\x00")]  # attOemCodepage 1252
    for i in range(files):
        out.append(tnef_object(2, 0x9002, 0x0006, b"\x01\x00\x00\x00"))  # attAttachRendData: a new file
        out.append(tnef_object(2, 0x8010, 0x0001, b"f%d.txt\x00" % i))  # attAttachTitle
        out.append(tnef_object(2, 0x800F, 0x0006, b"data %d" % i))  # attAttachData
    return b"".join(out) + extra + tnef_object(1, 0x8008, 0x0001, b"IPM.Note\x00")


def winmail_message(stream: bytes) -> bytes:
    part = (b"Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(stream))
    return mixed(TEXT_PART, part)


def test_winmail_dat_is_read_and_its_files_count_against_max_parts() -> None:
    from connectors.email_mime import MAX_PARTS

    small = parse_message(winmail_message(winmail(3)))
    assert [(a.part_path, a.filename, a.payload, a.origin) for a in small.attachments] == [
        ("2.tnef1", "f0.txt", b"data 0", ("tnef",)), ("2.tnef2", "f1.txt", b"data 1", ("tnef",)),
        ("2.tnef3", "f2.txt", b"data 2", ("tnef",))]
    flood = parse_message(winmail_message(winmail(MAX_PARTS + 500)))
    assert len(flood.attachments) <= MAX_PARTS
    assert flood.attachments[0].filename == "f0.txt" and "too_many_parts" in flood.defects


def test_winmail_dat_is_read_in_linear_work() -> None:
    """Each TNEF object gets its own bytes, not a copy of the rest of the stream."""
    import sys

    import tnefparse.tnef

    code = tnefparse.tnef.TNEFObject.__init__.__code__
    handed = [0]

    def profile(frame, event, _arg):  # type: ignore[no-untyped-def]
        # Our reader may use its own copy of tnefparse's module: same file, same line.
        if (event == "call" and frame.f_code.co_filename == code.co_filename
                and frame.f_code.co_firstlineno == code.co_firstlineno):
            handed[0] += len(frame.f_locals["data"])

    stream = winmail(3_000)
    sys.setprofile(profile)
    try:
        parsed = parse_message(winmail_message(stream))
    finally:
        sys.setprofile(None)
    assert len(parsed.attachments) == 3_000
    assert 0 < handed[0] <= len(stream)


def nested_winmail(depth: int, level: int = 0) -> bytes:
    """A TNEF stream with one file (levelN.txt) and, below ``depth``, an embedded Outlook message
    (attach method 5: an attAttachment MAPI object property holding the next stream)."""
    import struct

    imessage = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
    out = [TNEF_SIGNATURE, tnef_object(1, 0x9006, 0x0008, b"\x00\x00\x01\x00"),
           tnef_object(1, 0x9007, 0x0006, b"\xe4\x04\x00\x00\x00\x00\x00\x00"),
           tnef_object(2, 0x9002, 0x0006, b"\x01\x00\x00\x00"),
           tnef_object(2, 0x8010, 0x0001, b"level%d.txt\x00" % level), tnef_object(2, 0x800F, 0x0006, b"data")]
    if level < depth:
        inner = imessage + nested_winmail(depth, level + 1)
        props = (struct.pack("<IHHII", 1, 0x000D, 0x3701, 1, len(inner)) + inner  # PR_ATTACH_DATA_OBJ
                 + b"\x00" * (-len(inner) % 4))
        out += [tnef_object(2, 0x9002, 0x0006, b"\x05\x00\x00\x00"), tnef_object(2, 0x9005, 0x0006, props)]
    return b"".join(out) + tnef_object(1, 0x8008, 0x0001, b"IPM.Note\x00")


def test_outlook_messages_embedded_400_deep_give_the_files_of_the_first_levels() -> None:
    """Embedded messages were parsed to any depth (each level a copy of the rest) until Python's
    recursion limit lost the whole winmail.dat; now levels past MAX_TNEF_DEPTH are not parsed."""
    from connectors.email_mime_legacy import MAX_TNEF_DEPTH

    parsed = parse_message(winmail_message(nested_winmail(400)))
    assert [a.filename for a in parsed.attachments] == [f"level{n}.txt" for n in range(MAX_TNEF_DEPTH + 1)]
    assert parsed.attachments[2].part_path == "2.tnef2.tnef2.tnef1"


@pytest.mark.parametrize("properties", [
    b"\x20\xa1\x07\x00",  # 500,000 properties announced, none there
    b"\x01\x00\x00\x00" b"\x02\x10\x01\x00" b"\x20\xa1\x07\x00",  # one multi-value short with 500,000 values
], ids=["property-count", "multi-value-count"])
def test_tnef_counts_larger_than_the_stream_keep_winmail_dat_as_it_is(
        properties: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    import tnefparse.mapi

    work = [0]

    class CountedAttribute(tnefparse.mapi.TNEFMAPI_Attribute):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            work[0] += 1
            super().__init__(*args, **kwargs)

    class CountedLogger:
        def __getattr__(self, _name: str):  # type: ignore[no-untyped-def]
            def log(*_args: object, **_kwargs: object) -> None:
                work[0] += 1
            return log

    monkeypatch.setattr(tnefparse.mapi, "TNEFMAPI_Attribute", CountedAttribute)
    monkeypatch.setattr(tnefparse.mapi, "logger", CountedLogger())
    stream = winmail(1, extra=tnef_object(1, 0x9003, 0x0006, properties))  # attMsgProps
    (att,) = parse_message(winmail_message(stream)).attachments
    assert work[0] <= len(stream)
    assert (att.filename, att.payload, att.defects) == ("winmail.dat", stream, ("tnef_unreadable",))


def test_html_parts_share_one_markup_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty 100 KB HTML parts: the body text reads a bounded amount of markup in all (each part
    used to get the whole budget, so the work grew with the number of parts)."""
    import connectors.email_mime

    markup_limit = 4 * BODY_TEXT_LIMIT  # characters, all HTML parts together (connectors.email_mime.HTML_MARKUP_LIMIT)
    decoded = [0]
    real = connectors.email_mime.decode_declared

    def counted(data: bytes, charset: str | None) -> str:
        decoded[0] += len(data)
        return real(data, charset)

    monkeypatch.setattr(connectors.email_mime, "decode_declared", counted)
    parts = [b"Content-Type: text/html\r\n\r\n<p>" + f"part{n} ".encode() + b"<b>word</b> " * 8_500 + b"</p>"
             for n in range(40)]
    parsed = parse_message(mixed(*parts))
    assert decoded[0] <= 4 * markup_limit + 4  # bytes: at most 4 per character
    assert parsed.summary.body_text.startswith("part0 word word")


_OLD_HTML_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_OLD_HTML_TAG = re.compile(r"<[^>]*>")
HTML_TOKENS = ["<script>", "</script>", "<SCRIPT type=x>", "</script >", "<style>", "</Style>", "<head>",
               "</head>", "<header>", "<scripts>", "</scriptx>", "<", ">", "<p>", "</p", "a", " b ", "&amp;",
               "İ", "\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(HTML_TOKENS), max_size=16))
def test_html_text_reads_as_the_plain_regexes_did(tokens: list[str]) -> None:
    """The one-pass HTML reader gives what the two regexes it replaced gave (they were quadratic
    on openers without a closing tag)."""
    import html as html_module

    from connectors.email_mime import _html_text

    markup = "".join(tokens)
    plain = _OLD_HTML_TAG.sub(" ", _OLD_HTML_DROP.sub(" ", markup))
    assert _html_text(markup) == " ".join(html_module.unescape(plain).split())


class CountingFind(bytes):
    """bytes whose ``find`` adds the bytes it looked at to ``scanned[0]`` (kept through ``replace``)."""

    scanned = [0]

    def replace(self, old: bytes, new: bytes, count: int = -1) -> CountingFind:  # type: ignore[override]
        return CountingFind(super().replace(old, new, count))

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]
        stop = len(self) if end is None else end
        found = super().find(sub, start, stop)
        CountingFind.scanned[0] += (found + len(sub) if found >= 0 else stop) - start
        return found


@pytest.mark.parametrize("value", [
    b"text/plain; " + b"a;" * 20_000,  # bare tokens, no "=" anywhere
    b"application/pdf; name==?" + b"x?=" * 20_000,  # "?=" after "?=" and no ";"
], ids=["bare-tokens", "encoded-word-ends"])
def test_header_parameters_are_read_in_linear_work(value: bytes) -> None:
    """Each search for the next "=" or ";" used to start over for every token: the rest of the
    value was read once per token."""
    from connectors.email_mime_headers import split_header_value

    CountingFind.scanned[0] = 0
    split_header_value(CountingFind(value))
    assert CountingFind.scanned[0] <= 5 * len(value)  # a few passes, never one per token

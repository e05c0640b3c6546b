"""The KMRL sample set (sandbox/samples.py): valid files, deterministic, distinct, and carrying the
language and department cues the pipeline's enrichment reads."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import tempfile
import zipfile
import zlib
from email import message_from_bytes, policy
from email.utils import parseaddr
from xml.etree import ElementTree

import pytest

from base.document import Document, merged_text
from base.enrichment.steps import enrich
from base.extraction import ExtractionLimits, extract_path
from base.extraction.normalize import normalize_text
from connectors.email_mime import parse_message
from sandbox.sample_formats import pdf_document, png_image
from sandbox.samples import DEMO_MAILBOX, SampleFile, kmrl_samples
from sandbox.samples_content import SITE as CONTENT_SITE


def pdf_objects(data: bytes) -> dict[int, bytes]:
    """Checks the cross-reference table against the bytes and returns each object's body."""
    assert data.startswith(b"%PDF-1.4\n") and data.rstrip().endswith(b"%%EOF")
    startxref = int(re.search(rb"startxref\n(\d+)\n%%EOF\s*$", data).group(1))
    assert data[startxref:startxref + 5] == b"xref\n"
    table = data[startxref:].split(b"trailer", 1)[0].splitlines()
    first, count = map(int, table[1].split())
    assert first == 0
    objects = {}
    for number, line in enumerate(table[2:2 + count]):
        offset, _, kind = line.split()
        if kind == b"n":
            at = int(offset)
            assert data[at:].startswith(b"%d 0 obj\n" % number), f"xref of object {number} points elsewhere"
            objects[number] = data[at:data.index(b"endobj", at)]
    return objects


def test_pdf_has_exact_xref_stream_lengths_and_unicode_info():
    data = pdf_document(title="സുരക്ഷാ സർക്കുലർ (Safety)", lines=["Line (one) \\ two"] * 120, subject="വിഷയം")
    objects = pdf_objects(data)
    catalog, pages, info = objects[1], objects[2], objects[4]
    assert b"/Type /Catalog" in catalog and b"/Count 3" in pages  # 122 lines: three pages of 50
    assert b"<FEFF" + "സുരക്ഷാ".encode("utf-16-be").hex().upper().encode() in info
    for body in objects.values():
        if b"stream\n" in body:
            length = int(re.search(rb"/Length (\d+)", body).group(1))
            start = body.index(b"stream\n") + len(b"stream\n")
            assert body[start + length:].startswith(b"endstream")
            assert rb"\(one\) \\ two" in body[start:start + length]


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC on {kind!r}"
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def test_png_decodes_to_the_declared_size_with_utf8_text():
    data = png_image(width=7, height=5, colour=(1, 2, 3), stripe=(9, 9, 9), title="Crowd", description="തിരക്ക്")
    chunks = dict(png_chunks(data))
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, colour_type) == (7, 5, 8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    assert list(chunks)[-1] == b"IEND"
    assert "തിരക്ക്".encode() in data


def check_ooxml(data: bytes, main_part: str) -> ElementTree.Element:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        assert {"[Content_Types].xml", "_rels/.rels", main_part, "docProps/core.xml"} <= names
        for name in names:
            ElementTree.fromstring(archive.read(name))  # noqa: S314 - our own bytes; every part must parse
        types = archive.read("[Content_Types].xml").decode()
        assert f'PartName="/{main_part}"' in types
        return ElementTree.fromstring(archive.read(main_part))  # noqa: S314 - our own bytes


def poppler_pages(data: bytes) -> int:
    """Pages of a PDF as poppler's pdfinfo reads them (it fails on a broken file)."""
    info = subprocess.run(["pdfinfo", "-"], input=data, capture_output=True, check=True, timeout=30).stdout
    return int(re.search(rb"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))


@pytest.mark.parametrize("round_no", [1, 2])
def test_every_sample_is_a_valid_file_of_its_type(round_no):
    for _, sample in kmrl_samples(11, round_no).files():
        if sample.filename.endswith(".pdf") and sample.key.startswith("content-"):
            assert poppler_pages(sample.data) >= 1  # drawn by cairo (sandbox/rendering.py): poppler reads it
        elif sample.filename.endswith(".pdf"):
            assert pdf_objects(sample.data)
        elif sample.filename.endswith(".docx"):
            check_ooxml(sample.data, "word/document.xml")
        elif sample.filename.endswith(".xlsx"):
            check_ooxml(sample.data, "xl/workbook.xml")
        else:
            assert sample.filename.endswith(".png") and png_chunks(sample.data)


def test_the_set_covers_every_language_kind_and_format():
    samples = [f for _, f in kmrl_samples().files()]
    assert {f.language for f in samples} == {"en", "ml", "mixed"}
    kinds = {f.kind for f in samples}
    assert {"work order", "invoice", "incident report", "circular", "board minutes", "roster"} <= kinds
    assert {f.filename.rsplit(".", 1)[1] for f in samples} == {"pdf", "docx", "xlsx", "png"}
    assert {f.department for f in samples} == {"Engineering", "Finance", "Safety", "HR", "Operations", "Executive"}


def test_same_seed_same_bytes_other_seed_other_bytes():
    def digests(seed: int, round_no: int) -> list[str]:
        return [f.sha256 for _, f in kmrl_samples(seed, round_no).files()]

    assert digests(5, 1) == digests(5, 1)
    assert not set(digests(5, 1)) & set(digests(6, 1))
    assert [m.to_bytes() for m in kmrl_samples(5).mails] == [m.to_bytes() for m in kmrl_samples(5).mails]


def test_contents_are_distinct_except_the_forwarded_minutes():
    one, two = kmrl_samples(3, 1), kmrl_samples(3, 2)
    files = [f for _, f in one.files()]
    assert len(files) - len(one.distinct_sha256()) == 1  # the board minutes, mailed twice
    assert not one.distinct_sha256() & two.distinct_sha256()
    assert two.sharepoint_deletions and all(s.count(src) for s in (two,) for src in
                                            ("email", "maximo", "sharepoint", "whatsapp"))


def expect(sample: SampleFile, title: str, text: str, hints: dict[str, str]) -> None:
    """What the pipeline makes of ``sample``: its text read as the extraction step reads it (in this
    process), then the enrichment steps on that text, the title and the source's text."""
    with tempfile.NamedTemporaryFile(prefix="kmrl-sample-") as handle:
        handle.write(sample.data)
        handle.flush()
        extraction = extract_path(handle.name, filename=sample.filename, mime_type=sample.mime_type,
                                  limits=ExtractionLimits())
    document = Document(source="test", scope="samples", source_id=sample.key, version="1", filename=sample.filename,
                        mime_type=sample.mime_type, size=sample.size, sha256=sample.sha256, title=title, text=text)
    document.content_text, document.extraction = normalize_text(extraction.text), extraction.metadata()
    enrich(document, hints)
    assert (document.language, document.department) == (sample.language, sample.department), (
        sample.key, extraction.method, document.department_terms)


@pytest.mark.parametrize("round_no", [1, 2])
def test_each_document_gets_the_expected_language_and_department(round_no):
    """Each sample through extraction and enrichment, with the text its connector hands over
    (subject+body, description, caption, names) and the hints its source gives."""
    samples = kmrl_samples(2024, round_no)
    for mail in samples.mails:
        sender = parseaddr(mail.sender)[1]
        parsed = parse_message(mail.to_bytes())
        assert sorted(a.filename for a in parsed.attachments) == sorted(a.filename for a in mail.attachments)
        for attachment in mail.attachments:
            expect(attachment, parsed.summary.subject, merged_text([parsed.summary.subject, parsed.summary.body_text]),
                   {"mailbox": DEMO_MAILBOX, "sender": sender, "sender_domain": sender.split("@")[1]})
    for wo in samples.work_orders:
        for doc, description in wo.doclinks:
            expect(doc, description, merged_text([wo.description, wo.long_description]), {"worktype": wo.worktype})
    for entry in samples.sharepoint:
        site = entry.site.rsplit("/", 1)[1]
        folder = entry.path.rsplit("/", 1)[0]
        expect(entry.file, entry.file.filename.rsplit(".", 1)[0], merged_text([folder, entry.library, site.title()]),
               {"site": site, "library": entry.library})
    for message in samples.whatsapp:
        expect(message.file, message.caption, message.caption, {"phone": message.sender})


def test_content_only_documents_are_in_the_set_with_neutral_names():
    content = [entry for entry in kmrl_samples(2024, 1).sharepoint if entry.site == CONTENT_SITE]
    assert {entry.file.language for entry in content} == {"en", "ml", "mixed"}
    assert len({entry.file.department for entry in content}) == 6
    assert all(not any(d.lower() in entry.file.filename.lower() for d in ("safety", "finance", "hr", "operation"))
               for entry in content)


def test_mails_carry_malayalam_subjects_and_attachment_names_intact():
    mail = next(m for m in kmrl_samples().mails if m.key == "email-2")
    parsed = message_from_bytes(mail.to_bytes(), policy=policy.default)
    assert parsed["Subject"] == mail.subject
    assert [p.get_filename() for p in parsed.iter_attachments()] == [mail.attachments[0].filename]

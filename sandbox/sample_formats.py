"""Minimal, valid office files written by hand: PDF, DOCX, XLSX and PNG, byte-for-byte deterministic.

The demo and the tests need real documents (what a content sniffer, the Hub or a person opening the
file sees) without committing binaries or adding a document library. Each writer returns the bytes
of one file that the usual readers open:

- ``pdf_document``: PDF 1.4, one A4 page per 50 lines of Helvetica text, an exact cross-reference
  table, and an Info dictionary whose Title, Subject and Keywords are UTF-16 text strings (so a
  Malayalam title survives even though Helvetica cannot draw it: the page shows only the
  characters Windows-1252 has; the rest is kept in the metadata).
- ``docx_document`` and ``xlsx_document``: Office Open XML packages (``[Content_Types].xml``, the
  relationships, the main part, ``docProps/core.xml``) zipped with fixed timestamps.
- ``png_image``: an RGB PNG (IHDR, ``iTXt`` title and description in UTF-8, IDAT via zlib, IEND).

Same arguments, same bytes: nothing reads the clock or a random source.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Sequence
from xml.sax.saxutils import escape

#: Fixed timestamp of every zip member and of the PDF CreationDate (deterministic output).
ZIP_DATE_TIME = (2024, 4, 1, 9, 0, 0)
PDF_DATE = "D:20240401090000+05'30'"
#: Text lines per PDF page and characters per line before wrapping.
PDF_LINES_PER_PAGE = 50
PDF_LINE_CHARS = 88
#: A4 in PDF points, and where the text starts.
PDF_PAGE_SIZE = (595, 842)
PDF_TEXT_ORIGIN = (56, 786)

MIME_PDF = "application/pdf"
MIME_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MIME_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MIME_PNG = "image/png"


# -- PDF ---------------------------------------------------------------------------------------------

def _pdf_literal(text: str) -> bytes:
    """A PDF literal string of the Windows-1252 characters of ``text`` (others become '?')."""
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _pdf_text_string(text: str) -> bytes:
    """A PDF text string that holds any Unicode text: UTF-16BE with its byte-order mark, in hex."""
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode("ascii") + b">"


def _wrap(lines: Sequence[str], width: int) -> list[str]:
    wrapped: list[str] = []
    for line in lines:
        words = line.split()
        current = ""
        for word in words:
            if current and len(current) + 1 + len(word) > width:
                wrapped.append(current)
                current = word
            else:
                current = f"{current} {word}" if current else word
        wrapped.append(current)
    return wrapped


def pdf_document(*, title: str, lines: Sequence[str], subject: str = "", keywords: str = "", author: str = "",
                 lang: str = "en-IN") -> bytes:
    """A PDF whose pages show ``title`` and ``lines`` and whose Info dictionary carries ``title``,
    ``subject``, ``keywords`` and ``author`` in full Unicode. ``lang`` is the catalog's /Lang."""
    text_lines = _wrap([title, "", *lines], PDF_LINE_CHARS)
    pages = [text_lines[i:i + PDF_LINES_PER_PAGE] for i in range(0, len(text_lines), PDF_LINES_PER_PAGE)] or [[]]
    # Object numbers: 1 catalog, 2 pages, 3 font, 4 info, then a (page, content) pair per page.
    page_numbers = [5 + 2 * i for i in range(len(pages))]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R /Lang " + _pdf_literal(lang) + b" >>",
        2: (b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % n for n in page_numbers)
            + b"] /Count %d >>" % len(pages)),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: (b"<< /Title " + _pdf_text_string(title) + b" /Subject " + _pdf_text_string(subject)
            + b" /Keywords " + _pdf_text_string(keywords) + b" /Author " + _pdf_text_string(author)
            + b" /Producer (KMRL Connectors sandbox) /CreationDate (" + PDF_DATE.encode("ascii") + b") >>"),
    }
    width, height = PDF_PAGE_SIZE
    for page_lines, number in zip(pages, page_numbers, strict=True):
        x, y = PDF_TEXT_ORIGIN
        stream = [b"BT", b"/F1 11 Tf", b"14 TL", b"%d %d Td" % (x, y)]
        for line in page_lines:
            stream.append(_pdf_literal(line) + b" Tj T*")
        stream.append(b"ET")
        content = b"\n".join(stream) + b"\n"
        objects[number] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] " % (width, height)
                           + b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (number + 1))
        objects[number + 1] = b"<< /Length %d >>\nstream\n" % len(content) + content + b"endstream"

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the binary comment tells transfer tools this is binary
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n")
    xref_at = out.tell()
    size = max(objects) + 1
    out.write(b"xref\n0 %d\n" % size)
    out.write(b"0000000000 65535 f \n")
    for number in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets[number])
    file_id = hashlib.md5(out.getvalue(), usedforsecurity=False).hexdigest().encode("ascii")
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R /ID [<%s> <%s>] >>\n" % (size, file_id, file_id))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref_at)
    return out.getvalue()


# -- Office Open XML -----------------------------------------------------------------------------------

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_REL_OFFICE_DOCUMENT = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
_REL_CORE = "http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties"


def _zip(parts: Sequence[tuple[str, str]]) -> bytes:
    """A zip of ``(name, xml text)`` parts, deflated, with fixed timestamps (deterministic)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in parts:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, text.encode("utf-8"))
    return out.getvalue()


def _core_properties(title: str, subject: str, keywords: str, author: str, description: str) -> str:
    return (
        _XML_HEAD
        + '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>{escape(title)}</dc:title><dc:subject>{escape(subject)}</dc:subject>"
        f"<dc:creator>{escape(author)}</dc:creator><cp:keywords>{escape(keywords)}</cp:keywords>"
        f"<dc:description>{escape(description)}</dc:description>"
        '<dcterms:created xsi:type="dcterms:W3CDTF">2024-04-01T03:30:00Z</dcterms:created>'
        "</cp:coreProperties>"
    )


def _package_rels(main_part: str) -> str:
    return (
        _XML_HEAD
        + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL_OFFICE_DOCUMENT}" Target="{main_part}"/>'
        f'<Relationship Id="rId2" Type="{_REL_CORE}" Target="docProps/core.xml"/>'
        "</Relationships>"
    )


def docx_document(*, title: str, paragraphs: Sequence[str], subject: str = "", keywords: str = "",
                  author: str = "", description: str = "") -> bytes:
    """A Word document: ``title`` as a bold first paragraph, then ``paragraphs`` (any Unicode)."""
    content_types = (
        _XML_HEAD
        + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        "</Types>"
    )
    body = [f'<w:p><w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve">{escape(title)}</w:t></w:r></w:p>']
    body += [f'<w:p><w:r><w:t xml:space="preserve">{escape(p)}</w:t></w:r></w:p>' for p in paragraphs]
    document = (
        _XML_HEAD
        + '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
        + "".join(body)
        + '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/></w:sectPr></w:body></w:document>'
    )
    return _zip([
        ("[Content_Types].xml", content_types),
        ("_rels/.rels", _package_rels("word/document.xml")),
        ("word/document.xml", document),
        ("docProps/core.xml", _core_properties(title, subject, keywords, author, description)),
    ])


def _column_name(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


#: What a spreadsheet cell holds.
Cell = str | int | float


def xlsx_document(*, sheet: str, rows: Sequence[Sequence[Cell]], title: str = "", subject: str = "",
                  keywords: str = "", author: str = "", description: str = "") -> bytes:
    """An Excel workbook with one sheet named ``sheet`` holding ``rows`` (numbers as numbers, text
    as inline strings, so no shared-strings part is needed)."""
    content_types = (
        _XML_HEAD
        + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        "</Types>"
    )
    workbook = (
        _XML_HEAD
        + '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        f'<sheets><sheet name="{escape(sheet[:31], {chr(34): "&quot;"})}" sheetId="1" r:id="rId1"/></sheets>'
        "</workbook>"
    )
    workbook_rels = (
        _XML_HEAD
        + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'worksheet" Target="worksheets/sheet1.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'styles" Target="styles.xml"/>'
        "</Relationships>"
    )
    styles = (
        _XML_HEAD
        + '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    )
    xml_rows = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{_column_name(c)}{r}"
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            else:
                text = escape(str(value))
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>')
        xml_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    worksheet = (
        _XML_HEAD
        + '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        + "".join(xml_rows)
        + "</sheetData></worksheet>"
    )
    return _zip([
        ("[Content_Types].xml", content_types),
        ("_rels/.rels", _package_rels("xl/workbook.xml")),
        ("xl/workbook.xml", workbook),
        ("xl/_rels/workbook.xml.rels", workbook_rels),
        ("xl/styles.xml", styles),
        ("xl/worksheets/sheet1.xml", worksheet),
        ("docProps/core.xml", _core_properties(title or sheet, subject, keywords, author, description)),
    ])


# -- PNG ---------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _itxt(keyword: str, text: str) -> bytes:
    # keyword, NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL, UTF-8 text
    return keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")


def png_image(*, width: int, height: int, colour: tuple[int, int, int], stripe: tuple[int, int, int],
              title: str = "", description: str = "", stripe_every: int = 8) -> bytes:
    """An RGB PNG: ``colour`` with horizontal ``stripe`` lines every ``stripe_every`` rows, and
    ``title`` / ``description`` as UTF-8 ``iTXt`` chunks (the keywords PNG registers: Title, Description)."""
    if width < 1 or height < 1:
        raise ValueError("a PNG needs at least one pixel")
    plain = bytes(colour) * width
    striped = bytes(stripe) * width
    raw = b"".join(b"\x00" + (striped if y % stripe_every == 0 else plain) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    chunks = [_png_chunk(b"IHDR", header)]
    if title:
        chunks.append(_png_chunk(b"iTXt", _itxt("Title", title)))
    if description:
        chunks.append(_png_chunk(b"iTXt", _itxt("Description", description)))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(raw, 9)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)

"""Real documents for the extraction tests, written by the libraries that write them (python-docx,
openpyxl, python-pptx) or, where no such library is at hand, by hand to the format's specification
(OpenDocument packages, RTF, hostile archives)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx

#: Malayalam with conjuncts, chillu letters and vowel signs: every format must return it unchanged.
MALAYALAM = "കൊച്ചി മെട്രോ റെയിൽ സുരക്ഷാ സർക്കുലർ: പ്ലാറ്റ്‌ഫോം വാതിലുകൾ ഉടൻ പരിശോധിക്കണം"
MALAYALAM_2 = "ഓപ്പറേഷൻസ് വിഭാഗം — ട്രെയിൻ സമയക്രമം"


def write_docx(path: Path, *, paragraphs: list[str], table: list[list[str]] | None = None,
               header: str | None = None, footer: str | None = None) -> Path:
    document = docx.Document()
    if header is not None:
        document.sections[0].header.paragraphs[0].text = header
    if footer is not None:
        document.sections[0].footer.paragraphs[0].text = footer
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row_number, row in enumerate(table):
            for column, value in enumerate(row):
                grid.cell(row_number, column).text = value
    document.save(path)
    return path


def write_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def write_pptx(path: Path, slides: list[tuple[str, str, str | None]]) -> Path:
    """slides: (title, body, speaker notes or None)."""
    presentation = pptx.Presentation()
    for title, body, notes in slides:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes is not None:
            slide.notes_slide.notes_text_frame.text = notes
    presentation.save(path)
    return path


_ODF_MIME = {"odt": "application/vnd.oasis.opendocument.text",
             "ods": "application/vnd.oasis.opendocument.spreadsheet",
             "odp": "application/vnd.oasis.opendocument.presentation"}
_ODF_ROOT = ('<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
             'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
             'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
             'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
             'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" office:version="1.3">')


def write_odf(path: Path, kind: str, body: str) -> Path:
    """An OpenDocument package as ODF 1.3 part 2 lays it out: ``mimetype`` first and stored, then the
    manifest and content.xml (``body`` is the XML inside office:body)."""
    content = (f'<?xml version="1.0" encoding="UTF-8"?>{_ODF_ROOT}<office:body>{body}</office:body>'
               '</office:document-content>')
    manifest = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">'
                f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{_ODF_MIME[kind]}"/>'
                '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
                '</manifest:manifest>')
    with zipfile.ZipFile(path, "w") as package:
        package.writestr(zipfile.ZipInfo("mimetype"), _ODF_MIME[kind], compress_type=zipfile.ZIP_STORED)
        package.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
        package.writestr("content.xml", content.encode("utf-8"), compress_type=zipfile.ZIP_DEFLATED)
    return path


def rtf_unicode(text: str) -> str:
    r"""``text`` as RTF: ASCII as is, everything else as \uN? (signed 16-bit, '?' the fallback)."""
    out = []
    for char in text:
        code = ord(char)
        if char in "\\{}":
            out.append("\\" + char)
        elif code < 128:
            out.append(char)
        else:
            for unit in char.encode("utf-16-le").hex(" ", 2).split():
                value = int.from_bytes(bytes.fromhex(unit), "little")
                out.append(f"\\u{value - 65536 if value > 32767 else value}?")
    return "".join(out)


def rewrite_member(source: Path, target: Path, name: str, data: bytes) -> Path:
    """A copy of the ZIP ``source`` with member ``name`` replaced by ``data``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, data if info.filename == name else old.read(info.filename))
    target.write_bytes(buffer.getvalue())
    return target

"""Real documents drawn with real fonts: text PDFs, scans (PNG) and image-only PDFs.

What the extraction step must read is what Word, LibreOffice and scanners produce: Malayalam shaped
by HarfBuzz (conjuncts, reordered vowel signs: a PDF keeps the text in an ``ActualText`` layer),
and scans that hold pixels only. ``pango-view`` (Debian's pango1.0-tools) lays text out with pango
and cairo exactly as GNOME's applications do; ``pdftoppm`` (poppler-utils) rasterises pages as a
scanner would. Fonts: the SMC Malayalam families (fonts-smc-*), with pango's fallback for Latin.
``scripts/bootstrap.sh`` installs all of them.

Office formats come from ``sandbox.sample_formats`` (hand-written, deterministic packages).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from sandbox.sample_formats import MIME_DOCX, MIME_PDF, MIME_PNG, MIME_XLSX, docx_document, xlsx_document

#: Font pango-view draws with (fontconfig name and size in points); Latin falls back to DejaVu.
DEFAULT_FONT = "Rachana 13"
#: Width of the text column in points (A4 minus margins).
COLUMN_POINTS = 480
#: Resolution of scans.
SCAN_DPI = 200
#: Seconds a renderer may take.
RENDER_SECONDS = 60
#: Creation date cairo writes into a PDF (2024-04-01 09:00 IST): same text, same bytes.
SOURCE_DATE_EPOCH = "1711942200"


class RenderingUnavailable(RuntimeError):
    """pango-view or pdftoppm is missing (install pango1.0-tools and poppler-utils)."""


def available() -> bool:
    """Whether this machine can render (pango-view and pdftoppm on PATH)."""
    return shutil.which("pango-view") is not None and shutil.which("pdftoppm") is not None


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise RenderingUnavailable(f"{command[0]} is not installed (Debian: pango1.0-tools, poppler-utils)")
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    subprocess.run(command, check=True, capture_output=True, timeout=RENDER_SECONDS, env=env)


def _pango(text: str, output: Path, *, font: str, dpi: int | None = None) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as source:
        source.write(text)
    try:
        command = ["pango-view", "--no-display", "-q", f"--font={font}", "--wrap=word", "--margin=36",
                   f"--width={COLUMN_POINTS if dpi is None else COLUMN_POINTS * dpi // 72}",
                   f"--output={output}", source.name]
        if dpi is not None:
            command.insert(3, f"--dpi={dpi}")
        _run(command)
    finally:
        Path(source.name).unlink()


def text_pdf(text: str, *, font: str = DEFAULT_FONT) -> bytes:
    """A one-page PDF of ``text`` with its text layer, as a desktop application prints it."""
    with tempfile.TemporaryDirectory(prefix="kmrl-render-") as tmp:
        output = Path(tmp) / "text.pdf"
        _pango(text, output, font=font)
        return output.read_bytes()


def scan_png(text: str, *, font: str = DEFAULT_FONT, dpi: int = SCAN_DPI) -> bytes:
    """``text`` as a scanned page: a PNG of pixels only, at ``dpi``."""
    with tempfile.TemporaryDirectory(prefix="kmrl-render-") as tmp:
        output = Path(tmp) / "scan.png"
        _pango(text, output, font=font, dpi=dpi)
        return output.read_bytes()


def _jpeg_size(data: bytes) -> tuple[int, int, int]:
    """Width, height and components of a baseline or progressive JPEG, from its SOF marker."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = data[at + 1]
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height, data[at + 9]
        at += 2 + length
    raise ValueError("no SOF marker in the JPEG")


def image_pdf(jpegs: list[bytes], *, dpi: int = SCAN_DPI) -> bytes:
    """A PDF whose pages are the given JPEG images and nothing else (no text layer), as a scanner
    that writes PDF makes it. Each page is sized to its image at ``dpi``."""
    objects: list[bytes] = []
    kids: list[int] = []
    for jpeg in jpegs:
        width, height, components = _jpeg_size(jpeg)
        colour = b"/DeviceGray" if components == 1 else b"/DeviceRGB"
        image_no, content_no, page_no = len(objects) + 3, len(objects) + 4, len(objects) + 5
        points_w, points_h = width * 72 / dpi, height * 72 / dpi
        draw = f"q {points_w:.2f} 0 0 {points_h:.2f} 0 0 cm /Im0 Do Q".encode()
        objects.append(b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s "
                       b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n%s\nendstream"
                       % (width, height, colour, len(jpeg), jpeg))
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(draw), draw))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Contents %d 0 R "
                       b"/Resources << /XObject << /Im0 %d 0 R >> >> >>"
                       % (points_w, points_h, content_no, image_no))
        kids.append(page_no)
    head = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))]
    body = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(head + objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(offsets) + 1, xref)
    return bytes(body)


def scanned_pdf(text: str, *, font: str = DEFAULT_FONT, dpi: int = SCAN_DPI) -> bytes:
    """``text`` printed and scanned: an image-only PDF (grey JPEG pages at ``dpi``, no text layer)."""
    with tempfile.TemporaryDirectory(prefix="kmrl-render-") as tmp:
        printed = Path(tmp) / "printed.pdf"
        _pango(text, printed, font=font)
        _run(["pdftoppm", "-r", str(dpi), "-gray", "-jpeg", str(printed), str(Path(tmp) / "page")])
        pages = sorted(Path(tmp).glob("page*.jpg"))
        return image_pdf([page.read_bytes() for page in pages], dpi=dpi)


def office_docx(text: str) -> bytes:
    """``text`` as a Word document, one paragraph per line, with no title of its own."""
    return docx_document(title="", paragraphs=[line for line in text.splitlines() if line.strip()])


def office_xlsx(text: str) -> bytes:
    """``text`` as a one-sheet workbook, one line per row (a register or a report table)."""
    return xlsx_document(sheet="Sheet1", rows=[[line] for line in text.splitlines() if line.strip()])


#: The formats ``document`` draws: name -> (MIME type, drawer).
FORMATS: dict[str, tuple[str, Callable[[str], bytes]]] = {
    "pdf": (MIME_PDF, text_pdf), "scanned-pdf": (MIME_PDF, scanned_pdf), "png": (MIME_PNG, scan_png),
    "docx": (MIME_DOCX, office_docx), "xlsx": (MIME_XLSX, office_xlsx),
}


def document(fmt: str, text: str) -> tuple[str, bytes]:
    """``text`` drawn as ``fmt`` (a key of ``FORMATS``): its MIME type and bytes."""
    mime_type, draw = FORMATS[fmt]
    return mime_type, draw(text)

"""Real documents for the extraction tests and benchmark, made at run time with real fonts.

- ``render_pdf`` / ``render_png``: text shaped by Pango with a Malayalam font (Manjari, Rachana,
  Meera) and written by cairo, as pango-view does it: a PDF whose Malayalam clusters carry an
  ``ActualText`` layer, or a PNG;
- ``pgm_pages``: the pages of a PDF rendered to 8-bit gray pixels by pdftoppm;
- ``write_image_pdf``: an image-only PDF (a scan: each page one gray image XObject, no text);
- ``write_text_pdf``: a plain PDF with a Helvetica text layer, cheap to make at any page count
  (pages with the same text share one content stream, so 2,000 pages cost a few kilobytes);
- ``write_tiff``: a multi-page uncompressed gray TIFF;
- ``build_legacy_font`` / ``legacy_encode``: a copy of a Malayalam font re-encoded the way the
  ASCII-mapped fonts of Kerala government documents (ML-TTKarthika, FML-TT*, ...) are: Latin
  codes mapped to Malayalam glyphs (conjuncts and vowel-sign ligatures as single glyphs, the
  pre-base vowel signs typed first), no Unicode Malayalam in its cmap and no OpenType shaping.
  Text typed in it shows Malayalam but extracts as Latin gibberish.

These are test and benchmark fixtures, not part of the product.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FONTS = {
    "Manjari": "/usr/share/fonts/opentype/malayalam/Manjari-Regular.otf",
    "Rachana": "/usr/share/fonts/truetype/malayalam/Rachana-Regular.ttf",
    "Meera": "/usr/share/fonts/truetype/malayalam/Meera-Regular.ttf",
}

#: A circular in Malayalam (the kind the service must read), written for these fixtures.
MALAYALAM_CIRCULAR = (
    "കൊച്ചി മെട്രോ റെയിൽ ലിമിറ്റഡ്\n"
    "സുരക്ഷാ നിർദ്ദേശങ്ങൾ: എല്ലാ ജീവനക്കാരും ശ്രദ്ധിക്കണം.\n"
    "ആലുവ സ്റ്റേഷനിലെ പ്ലാറ്റ്ഫോമിൽ അറ്റകുറ്റപ്പണി നടക്കുന്നതിനാൽ യാത്രക്കാർ മഞ്ഞ വരയ്ക്ക് പിന്നിൽ നിൽക്കണം.\n"
    "തീപിടിത്തം ഉണ്ടായാൽ ഉടൻ സ്റ്റേഷൻ കൺട്രോളറെ അറിയിക്കണം. അടിയന്തര വാതിലുകൾ തുറന്നിടണം.\n"
    "എല്ലാ ട്രെയിനുകളുടെയും ബ്രേക്ക് പരിശോധന ദിവസവും രാവിലെ ആറു മണിക്ക് മുമ്പ് പൂർത്തിയാക്കണം.\n"
)
#: English with Malayalam, as staff write it.
MIXED_NOTE = (
    "Maintenance schedule for the Aluva depot\n"
    "ഇന്ന് രാത്രി 11 മണി മുതൽ track inspection നടക്കും. Please inform the station controller.\n"
    "പരിശോധന കഴിഞ്ഞാൽ report ഓഫീസിൽ നൽകണം.\n"
)
ENGLISH_NOTE = (
    "Kochi Metro Rail Limited\n"
    "Safety instructions: every employee must read this notice carefully.\n"
    "Maintenance work is in progress on the platform at Aluva station; passengers must stand behind the\n"
    "yellow line. In case of fire, inform the station controller at once and keep the emergency doors open.\n"
)
#: Text typed in a legacy font for the fixtures: simple words a Kerala government order would hold.
LEGACY_SOURCE = (
    "കേരള സർക്കാർ\n"
    "പൊതുമരാമത്ത് വകുപ്പ്\n"
    "കൊച്ചി മെട്രോ റെയിൽ പാതയിലെ പണികൾ സമയത്ത് തീർക്കണം.\n"
    "എല്ലാ ജോലിക്കാരും സുരക്ഷാ നിയമങ്ങൾ പാലിക്കണം.\n"
    "ഈ ഉത്തരവ് ഉടൻ നടപ്പാക്കണം.\n"
)


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, env=env, timeout=120)


def render_pdf(text: str, path: str | Path, *, font: str = "Manjari 14", width_pt: int = 480,
               env: dict[str, str] | None = None, markup: bool = False) -> Path:
    """``text`` shaped in ``font`` into a one-page PDF by cairo (pango-view); with ``markup``, ``text``
    is Pango markup (``<span font="...">`` changes the font)."""
    source = Path(path).with_suffix(".txt")
    source.write_text(text, encoding="utf-8")
    _run(["pango-view", "-q", f"--font={font}", f"--width={width_pt}", "--wrap=word", "--margin=36",
          *(["--markup"] if markup else []), f"--output={path}", str(source)], env)
    source.unlink()
    return Path(path)


def render_png(text: str, path: str | Path, *, font: str = "Manjari 14", dpi: int = 200,
               width_pt: int = 480, env: dict[str, str] | None = None) -> Path:
    """``text`` shaped in ``font`` into a PNG at ``dpi``."""
    source = Path(path).with_suffix(".txt")
    source.write_text(text, encoding="utf-8")
    _run(["pango-view", "-q", f"--font={font}", f"--dpi={dpi}", f"--width={width_pt}", "--wrap=word",
          "--margin=40", f"--output={path}", str(source)], env)
    source.unlink()
    return Path(path)


def unite(pdfs: Sequence[str | Path], path: str | Path) -> Path:
    """One PDF with the pages of ``pdfs`` in order (pdfunite)."""
    _run(["pdfunite", *map(str, pdfs), str(path)])
    return Path(path)


@dataclass(frozen=True)
class GrayImage:
    width: int
    height: int
    pixels: bytes  # one byte per pixel, rows top to bottom


def pgm_pages(pdf: str | Path, *, dpi: int = 150) -> list[GrayImage]:
    """Every page of ``pdf`` rendered to gray pixels by pdftoppm."""
    out = subprocess.run(["pdftoppm", "-gray", "-r", str(dpi), str(pdf)], check=True, capture_output=True,
                         timeout=120).stdout
    images = []
    while out:
        fields = out.split(maxsplit=4)  # P5 width height maxval data...
        width, height = int(fields[1]), int(fields[2])
        header = len(out) - len(fields[4])
        size = width * height
        images.append(GrayImage(width, height, out[header: header + size]))
        out = out[header + size:]
    return images


def _pdf_bytes(objects: list[bytes], root: int) -> bytes:
    """A PDF file of ``objects`` (numbered from 1) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, xref)
    return bytes(out)


def _stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< " + dictionary + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def _page_tree(objects: list[bytes], pages: list[tuple[bytes, bytes]], width: float, height: float) -> int:
    """Adds the page tree for ``pages`` (resources, content stream object ref) to ``objects``; returns
    the catalog's number."""
    tree = len(objects) + 1
    objects.append(b"")
    kids = []
    for resources, contents in pages:
        objects.append(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %.2f %.2f] /Resources %s /Contents %s >>"
                       % (tree, width, height, resources, contents))
        kids.append(b"%d 0 R" % len(objects))
    objects[tree - 1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % len(kids)
    objects.append(b"<< /Type /Catalog /Pages %d 0 R >>" % tree)
    return len(objects)


def write_image_pdf(path: str | Path, images: Sequence[GrayImage], *, dpi: int = 150) -> Path:
    """An image-only PDF: page i shows ``images[i]`` at ``dpi`` and has no text layer. The same image
    object given twice is stored once."""
    objects: list[bytes] = []
    stored: dict[int, int] = {}
    pages = []
    width = height = 0.0
    for image in images:
        if id(image) not in stored:
            objects.append(_stream(b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                                   b"/BitsPerComponent 8 /Filter /FlateDecode" % (image.width, image.height),
                                   zlib.compress(image.pixels, 6)))
            image_ref = len(objects)
            width, height = image.width * 72 / dpi, image.height * 72 / dpi
            objects.append(_stream(b"", b"q %.2f 0 0 %.2f 0 0 cm /Im0 Do Q" % (width, height)))
            stored[id(image)] = image_ref
        image_ref = stored[id(image)]
        pages.append((b"<< /XObject << /Im0 %d 0 R >> >>" % image_ref, b"%d 0 R" % (image_ref + 1)))
    root = _page_tree(objects, pages, width, height)
    Path(path).write_bytes(_pdf_bytes(objects, root))
    return Path(path)


def _pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def write_text_pdf(path: str | Path, pages: Sequence[str]) -> Path:
    """A PDF whose page i has the text ``pages[i]`` (Latin-1, one line per line) in Helvetica.
    Pages with equal text share their content stream."""
    objects: list[bytes] = [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    streams: dict[str, int] = {}
    page_list = []
    for text in pages:
        if text not in streams:
            lines = b" ".join(_pdf_string(line) + b" Tj T*" for line in text.splitlines())
            objects.append(_stream(b"", b"BT /F1 10 Tf 13 TL 40 800 Td " + lines + b" ET"))
            streams[text] = len(objects)
        page_list.append((b"<< /Font << /F1 1 0 R >> >>", b"%d 0 R" % streams[text]))
    root = _page_tree(objects, page_list, 595, 842)
    Path(path).write_bytes(_pdf_bytes(objects, root))
    return Path(path)


def write_tiff(path: str | Path, images: Sequence[GrayImage], *, dpi: int = 150) -> Path:
    """A multi-page TIFF (little-endian, uncompressed 8-bit gray), one directory per image."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    link = 4  # where the offset of the next directory goes
    for image in images:
        data_offset = len(out)
        out += image.pixels
        if len(out) % 2:
            out += b"\x00"
        resolution = len(out)
        out += (dpi).to_bytes(4, "little") + (1).to_bytes(4, "little")
        entries = [(256, 4, 1, image.width), (257, 4, 1, image.height), (258, 3, 1, 8), (259, 3, 1, 1),
                   (262, 3, 1, 1), (273, 4, 1, data_offset), (277, 3, 1, 1), (278, 4, 1, image.height),
                   (279, 4, 1, len(image.pixels)), (282, 5, 1, resolution), (283, 5, 1, resolution),
                   (296, 3, 1, 2)]
        directory = len(out)
        out[link: link + 4] = directory.to_bytes(4, "little")
        out += len(entries).to_bytes(2, "little")
        for tag, kind, count, value in entries:
            out += tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + count.to_bytes(4, "little")
            out += value.to_bytes(2, "little") + b"\x00\x00" if kind == 3 else value.to_bytes(4, "little")
        link = len(out)
        out += b"\x00\x00\x00\x00"
    Path(path).write_bytes(bytes(out))
    return Path(path)


# -- a legacy ASCII-mapped Malayalam font -------------------------------------------------------------

#: Codes a legacy font gives to Malayalam glyphs, by the scheme of the ML-TT fonts: letters (capitals
#: first) and ``[\\]^_``` for consonants and independent vowels, the end of the lower-case alphabet for
#: vowel signs, Latin-1 symbols and letters for conjuncts, ligatures and chillus. Space, digits and
#: punctuation stay themselves.
LEGACY_BASE_CODES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijkl"
LEGACY_SIGN_CODES = "mnopqrstuvwxyz{|}~"
LEGACY_OTHER_CODES = "".join(chr(c) for c in range(0xA1, 0x100) if c != 0xAD)
_PRE_BASE = {"\u0d46": ("\u0d46",), "\u0d47": ("\u0d47",), "\u0d48": ("\u0d48",),
             "\u0d4a": ("\u0d46", "\u0d3e"), "\u0d4b": ("\u0d47", "\u0d3e"), "\u0d4c": ("\u0d46", "\u0d57")}
_VIRAMA = "\u0d4d"


def _is_consonant(char: str) -> bool:
    return "\u0d15" <= char <= "\u0d39"


def legacy_glyphs(text: str, cmap: dict[int, str], glyphs: set[str]) -> list[str]:
    """``text`` as the glyph names a legacy font shows, in visual order (``"\\n"``, spaces and other
    characters the font has in Latin stay as themselves, written ``"=c"``)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if not _is_consonant(char):
            name = cmap.get(ord(char))
            out.append(name if name and "\u0d00" <= char <= "\u0d7f" else "=" + char)
            i += 1
            continue
        cluster = [char]
        i += 1
        while i + 1 < len(text) and text[i] == _VIRAMA and _is_consonant(text[i + 1]):
            cluster.append(text[i + 1])
            i += 2
        sign = text[i] if i < len(text) and "\u0d3e" <= text[i] <= "\u0d4d" else ""
        i += 1 if sign else 0
        names = [cmap[ord(c)] for c in cluster]
        pre, post = (), ()
        if sign in _PRE_BASE:
            parts = _PRE_BASE[sign]
            pre, post = (parts[0],), parts[1:]
        elif sign:
            post = (sign,)
        out += [cmap[ord(c)] for c in pre]
        suffix = {"\u0d41": "u1", "\u0d42": "u2", "\u0d43": "r1"}.get(post[0] if post else "")
        joined = "".join(names)
        if suffix and joined + suffix in glyphs:
            out.append(joined + suffix)
            post = ()
        elif joined in glyphs:
            out.append(joined)
        else:  # no conjunct glyph: the consonants with a visible virama between them
            for position, name in enumerate(names):
                out += ([name] if position == len(names) - 1 else [name, cmap[ord(_VIRAMA)]])
        out += [cmap[ord(c)] for c in post]
    return out


@dataclass(frozen=True)
class LegacyFont:
    path: Path
    family: str
    codes: dict[str, str]  # glyph name -> the character typed for it

    def encode(self, text: str) -> str:
        """What a typist using this font types to show ``text``."""
        from fontTools.ttLib import TTFont

        font = TTFont(FONTS["Rachana"])
        cmap, glyphs = font.getBestCmap(), set(font.getGlyphOrder())
        return "".join(g[1:] if g.startswith("=") else self.codes[g] for g in legacy_glyphs(text, cmap, glyphs))


def build_legacy_font(folder: str | Path, *, text: str = LEGACY_SOURCE, family: str = "ML-TTKarthika",
                      base: str = "Rachana") -> LegacyFont:
    """A copy of ``base`` named ``family`` whose cmap maps Latin codes to the Malayalam glyphs ``text``
    needs (see the module docstring), saved in ``folder``."""
    from fontTools.ttLib import TTFont

    font = TTFont(FONTS[base])
    cmap, glyphs = font.getBestCmap(), set(font.getGlyphOrder())
    unicode_of = {name: code for code, name in cmap.items() if 0xD00 <= code <= 0xD7F}
    used = sorted({g for g in legacy_glyphs(text, cmap, glyphs) if not g.startswith("=")},
                  key=lambda g: (unicode_of.get(g, 0x10000), g))
    pools = {"base": iter(LEGACY_BASE_CODES), "sign": iter(LEGACY_SIGN_CODES), "other": iter(LEGACY_OTHER_CODES)}
    codes = {}
    for name in used:
        code = unicode_of.get(name, 0)
        pool = ("base" if 0xD05 <= code <= 0xD39 else "sign" if 0xD3E <= code <= 0xD57 or code in (0xD02, 0xD03)
                else "other")
        codes[name] = next(pools[pool])
    mapping = {code: name for code, name in cmap.items() if code < 0x100}
    mapping.update({ord(code): name for name, code in codes.items()})
    for table in font["cmap"].tables:
        table.cmap = {code: name for code, name in mapping.items()
                      if table.format != 0 or code < 0x100} if table.isUnicode() else table.cmap
    for tag in ("GSUB", "GPOS", "GDEF", "DSIG"):  # legacy fonts carry no OpenType shaping
        if tag in font:
            del font[tag]
    for record in font["name"].names:
        if record.nameID in (1, 4, 16):
            record.string = family
        elif record.nameID == 6:
            record.string = family.replace(" ", "")
    path = Path(folder) / f"{family}.ttf"
    font.save(str(path))
    return LegacyFont(path, family, codes)


def fontconfig_env(folder: str | Path) -> dict[str, str]:
    """The environment for pango-view to find fonts in ``folder`` besides the system's."""
    folder = Path(folder)
    config = folder / "fonts.conf"
    config.write_text('<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
                      f"  <include ignore_missing=\"yes\">/etc/fonts/fonts.conf</include>\n  <dir>{folder}</dir>\n"
                      f"  <cachedir>{folder / 'cache'}</cachedir>\n</fontconfig>\n", encoding="utf-8")
    return {**os.environ, "FONTCONFIG_FILE": str(config)}

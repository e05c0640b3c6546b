"""Image dimensions read from a file's header, before anything decodes it (PNG, JPEG, TIFF).

``image_pages(path, kind)`` returns the (width, height) in pixels of each page of the image: one for
PNG and JPEG, one per directory (IFD) for a multi-page TIFF. It reads a few bytes per page, never the
pixels, so a decompression bomb is refused by its size before Tesseract or Leptonica allocate it.
A header it cannot make sense of raises ``ImageHeaderError``.
"""

from __future__ import annotations

import struct

#: Pixels of one image (or TIFF page) above which it is refused unread: about 90 megapixels, an A0
#: sheet scanned at 300 dpi is ~140 and an A3 at 600 dpi ~70; a page OCRed at 300 dpi is ~9.
MAX_IMAGE_PIXELS = 90_000_000
#: TIFF directories read at most (a loop or an endless chain of them is a hostile file).
MAX_TIFF_PAGES = 100_000
#: JPEG segments skipped at most while looking for the frame header.
MAX_JPEG_SEGMENTS = 10_000

_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageHeaderError(ValueError):
    """The image's header is damaged or not what its magic bytes promised."""


def image_pages(path: str, kind: str) -> list[tuple[int, int]]:
    """(width, height) of each page of the image at ``path`` (see the module docstring)."""
    with open(path, "rb") as handle:
        if kind == "png":
            return [_png(handle.read(33))]
        if kind == "jpeg":
            return [_jpeg(handle)]
        if kind == "tiff":
            return _tiff(handle)
    raise ImageHeaderError(f"not an image kind: {kind}")


def _png(head: bytes) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ImageHeaderError("PNG without an IHDR header")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _jpeg(handle: object) -> tuple[int, int]:
    read = handle.read  # type: ignore[attr-defined]
    if read(2) != b"\xff\xd8":
        raise ImageHeaderError("JPEG without a start-of-image marker")
    for _ in range(MAX_JPEG_SEGMENTS):
        byte = read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = read(1)
        if not byte:
            break
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        length_bytes = read(2)
        if len(length_bytes) < 2:
            break
        (length,) = struct.unpack(">H", length_bytes)
        if marker in _JPEG_FRAMES:
            frame = read(5)
            if len(frame) < 5:
                break
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        if length < 2:
            break
        handle.seek(length - 2, 1)  # type: ignore[attr-defined]
    raise ImageHeaderError("JPEG without a frame header")


def _tiff(handle: object) -> list[tuple[int, int]]:
    read, seek = handle.read, handle.seek  # type: ignore[attr-defined]
    order = read(4)
    if order[:2] == b"II":
        endian = "<"
    elif order[:2] == b"MM":
        endian = ">"
    else:
        raise ImageHeaderError("TIFF without a byte-order mark")
    (offset,) = struct.unpack(endian + "I", read(4))
    pages: list[tuple[int, int]] = []
    seen: set[int] = set()
    while offset and offset not in seen and len(pages) < MAX_TIFF_PAGES:
        seen.add(offset)
        seek(offset)
        raw = read(2)
        if len(raw) < 2:
            raise ImageHeaderError("TIFF directory past the end of the file")
        (entries,) = struct.unpack(endian + "H", raw)
        table = read(entries * 12 + 4)
        if len(table) < entries * 12 + 4:
            raise ImageHeaderError("TIFF directory cut short")
        size = {256: 0, 257: 0}
        for index in range(entries):
            tag, field_type = struct.unpack(endian + "HH", table[index * 12: index * 12 + 4])
            if tag in size:
                value = table[index * 12 + 8: index * 12 + 12]
                size[tag] = struct.unpack(endian + ("H" if field_type == 3 else "I"),
                                          value[:2] if field_type == 3 else value)[0]
        pages.append((size[256], size[257]))
        (offset,) = struct.unpack(endian + "I", table[-4:])
    if not pages:
        raise ImageHeaderError("TIFF without an image directory")
    return pages


def megapixels(width: int, height: int) -> float:
    return width * height / 1_000_000

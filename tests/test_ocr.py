"""Image OCR (base/extraction/ocr.py) on images rendered at test time with real fonts, multi-page TIFF
limits, decompression bombs refused by their header, and missing Tesseract parts named."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from base.extraction import OCR
from base.extraction.images import MAX_IMAGE_PIXELS, image_pages
from base.extraction.ocr import MIN_OCR_PIXELS, normalise
from bench import extraction_samples as samples
from tests.extraction_fixtures import extract as extract_file
from tests.extraction_fixtures import programs, similarity

pytestmark = pytest.mark.usefixtures(programs.__name__)

PAGE_TEXTS = ("Page one: Aluva depot inspection.", "Page two: Edappally station lifts.",
              "Page three: Kaloor viaduct bearings.", "Page four: Vyttila hub signals.")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    made = {
        "ml": samples.render_png(samples.MALAYALAM_CIRCULAR, folder / "ml.png", font="Rachana 14", dpi=200),
        "en": samples.render_png(samples.ENGLISH_NOTE, folder / "en.png", font="DejaVu Sans 11", dpi=200),
        "mixed": samples.render_png(samples.MIXED_NOTE, folder / "mixed.png", font="Manjari 13", dpi=200),
    }
    pdf = samples.render_pdf(samples.MALAYALAM_CIRCULAR, folder / "ml.pdf", font="Manjari 14")
    subprocess.run(["pdftoppm", "-jpeg", "-r", "200", "-singlefile", str(pdf), str(folder / "ml")], check=True)
    made["jpeg"] = folder / "ml.jpg"
    pages = [samples.pgm_pages(samples.render_pdf(text, folder / f"p{n}.pdf", font="DejaVu Sans 14"), dpi=200)[0]
             for n, text in enumerate(PAGE_TEXTS)]
    made["tiff"] = samples.write_tiff(folder / "four.tiff", pages, dpi=200)
    return made


def test_malayalam_png_is_read(images: dict[str, Path]) -> None:
    result = extract_file(images["ml"])
    assert (result.kind, result.method, result.pages, result.ocr_pages, result.error) == ("png", OCR, 1, 1, None)
    assert similarity(samples.MALAYALAM_CIRCULAR, result.text) >= 0.9
    for word in ("കൊച്ചി", "മെട്രോ", "സുരക്ഷാ", "ജീവനക്കാരും"):
        assert word in result.text


def test_english_and_code_mixed_pngs_are_read(images: dict[str, Path]) -> None:
    english, mixed = extract_file(images["en"]), extract_file(images["mixed"])
    assert similarity(samples.ENGLISH_NOTE, english.text) >= 0.95
    assert similarity(samples.MIXED_NOTE, mixed.text) >= 0.85
    for word in ("inspection", "controller", "പരിശോധന", "ഓഫീസിൽ"):
        assert word in mixed.text


def test_jpeg_is_read(images: dict[str, Path]) -> None:
    result = extract_file(images["jpeg"])
    assert (result.kind, result.method, result.ocr_pages) == ("jpeg", OCR, 1)
    assert similarity(samples.MALAYALAM_CIRCULAR, result.text) >= 0.9


def test_every_tiff_page_is_read_within_the_ocr_page_limit(images: dict[str, Path]) -> None:
    result = extract_file(images["tiff"])
    assert (result.kind, result.pages, result.ocr_pages, result.error) == ("tiff", 4, 4, None)
    for text in PAGE_TEXTS:
        assert text in result.text


def test_tiff_pages_over_the_ocr_page_limit_are_not_read(images: dict[str, Path]) -> None:
    result = extract_file(images["tiff"], ocr_max_pages=2)
    assert (result.pages, result.ocr_pages, result.truncated) == (4, 2, True)
    assert result.error == "2 pages over the OCR page limit"
    assert PAGE_TEXTS[0] in result.text and PAGE_TEXTS[1] in result.text
    assert "Kaloor" not in result.text and "Vyttila" not in result.text


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 64)


def test_a_decompression_bomb_is_refused_by_its_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    result = extract_file(bomb)
    assert (result.method, result.ocr_pages, result.text) == ("none", 0, "")
    assert result.error == ("image of 100000 x 100000 pixels (10,000 megapixels) is over the limit of "
                            f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels; not OCRed")


def test_a_bomb_hidden_in_a_later_tiff_page_is_refused(images: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(images["tiff"].read_bytes())
    pages = image_pages(str(images["tiff"]), "tiff")
    width = struct.pack("<I", 50_000)
    last = data.rfind(struct.pack("<HHI", 256, 4, 1) + struct.pack("<I", pages[-1][0]))
    data[last + 8: last + 12] = width
    height_at = data.rfind(struct.pack("<HHI", 257, 4, 1))
    data[height_at + 8: height_at + 12] = struct.pack("<I", 50_000)
    bomb = tmp_path / "bomb.tiff"
    bomb.write_bytes(bytes(data))
    assert image_pages(str(bomb), "tiff")[-1] == (50_000, 50_000)
    result = extract_file(bomb)
    assert result.ocr_pages == 0 and "over the limit" in (result.error or "")


def test_image_headers_give_their_size_without_decoding(images: dict[str, Path]) -> None:
    width, height = image_pages(str(images["jpeg"]), "jpeg")[0]
    pgm = subprocess.run(["pdftoppm", "-gray", "-r", "200", "-singlefile", str(images["jpeg"].with_suffix(".pdf"))],
                         capture_output=True, check=True).stdout.split(maxsplit=3)
    assert (width, height) == (int(pgm[1]), int(pgm[2]))
    assert len(image_pages(str(images["tiff"]), "tiff")) == 4


def test_an_icon_is_not_ocred(tmp_path: Path) -> None:
    icon = tmp_path / "bullet.png"
    subprocess.run(["pango-view", "-q", "--font=DejaVu Sans 6", "--dpi=72", "--margin=2", f"--output={icon}",
                    "--text=A"], check=True)
    width, height = image_pages(str(icon), "png")[0]
    assert width * height < MIN_OCR_PIXELS
    result = extract_file(icon)
    assert (result.kind, result.method, result.pages, result.ocr_pages, result.error) == ("png", "none", 1, 0, None)


def test_a_damaged_header_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "scan.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 8)
    result = extract_file(broken)
    assert result.method == "none" and result.error == "ValueError: unreadable JPEG header: JPEG without a frame header"


def test_missing_tesseract_names_the_debian_packages(images: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = extract_file(images["en"])
    assert result.method == "none"
    assert result.error == ("CommandMissing: tesseract is not installed or not on PATH "
                            "(Debian packages: tesseract-ocr, tesseract-ocr-mal, tesseract-ocr-eng)")


def test_a_missing_language_model_names_its_package(images: dict[str, Path]) -> None:
    result = extract_file(images["en"], ocr_languages="mal+xyz")
    assert result.method == "none"
    assert result.error == ("CommandMissing: Tesseract language model xyz is not installed "
                            "(Debian packages: tesseract-ocr-xyz)")


def test_tesseract_chillus_become_atomic_characters() -> None:
    assert normalise("സര്\u200dക്കാര്\u200d ഉത്തരവ്\u200c") == "സർക്കാർ ഉത്തരവ്"

"""PDF extraction (base/extraction/pdf.py) on real PDFs made at test time with real fonts: shaped
Malayalam from cairo, scans, a legacy ASCII-mapped font, and hostile files."""

from __future__ import annotations

import html
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from base.extraction import OCR, TEXT_LAYER, ExtractionLimits, ExtractionRequest, extract, legacy
from base.extraction.pdf import MAX_RENDER_PIXELS, render_dpi, sweep_scratch
from base.pool import ProcessPool, TaskTimedOut
from bench import extraction_samples as samples
from tests.extraction_fixtures import extract as extract_file
from tests.extraction_fixtures import left_running, programs, similarity

pytestmark = pytest.mark.usefixtures(programs.__name__)

#: Words of the legacy-font source a correct OCR must give back exactly.
LEGACY_WORDS = ("കേരള", "സർക്കാർ", "ഉത്തരവ്", "സുരക്ഷാ", "പാലിക്കണം")


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pdfs")
    made = {
        "ml": samples.render_pdf(samples.MALAYALAM_CIRCULAR, folder / "ml.pdf", font="Manjari 14"),
        "ml_rachana": samples.render_pdf(samples.MALAYALAM_CIRCULAR + samples.MIXED_NOTE, folder / "ml-rachana.pdf",
                                         font="Rachana 13"),
        "ml_meera": samples.render_pdf(samples.MALAYALAM_CIRCULAR + samples.MIXED_NOTE, folder / "ml-meera.pdf",
                                       font="Meera 13"),
        "en": samples.render_pdf(samples.ENGLISH_NOTE, folder / "en.pdf", font="DejaVu Sans 11"),
        "mixed": samples.render_pdf(samples.MIXED_NOTE, folder / "mixed.pdf", font="Manjari 13"),
    }
    scan = samples.pgm_pages(made["ml"], dpi=200)[0]
    made["scan"] = samples.write_image_pdf(folder / "scan.pdf", [scan], dpi=200)
    made["scan5"] = samples.write_image_pdf(folder / "scan5.pdf", [scan] * 5, dpi=200)
    fonts = folder / "fonts"
    fonts.mkdir()
    env = samples.fontconfig_env(fonts)
    for family in ("ML-TTKarthika", "Office Serif"):
        font = samples.build_legacy_font(fonts, family=family)
        made[family] = samples.render_pdf(font.encode(samples.LEGACY_SOURCE), folder / f"{family}.pdf",
                                          font=f"{family} 16", env=env)
        # A page mostly in English with a few lines typed in the legacy font.
        heading = html.escape(font.encode("".join(samples.LEGACY_SOURCE.splitlines(keepends=True)[:3])))
        made[f"{family} + English"] = samples.render_pdf(
            f'<span font="{family} 16">{heading}</span>\n{html.escape(samples.ENGLISH_NOTE)}',
            folder / f"{family}-english.pdf", font="DejaVu Sans 11", env=env, markup=True)
    return made


def test_shaped_malayalam_reads_as_typed_in_each_font(docs: dict[str, Path]) -> None:
    for name, typed in (("ml", samples.MALAYALAM_CIRCULAR), ("ml_rachana", samples.MALAYALAM_CIRCULAR
                                                              + samples.MIXED_NOTE),
                        ("ml_meera", samples.MALAYALAM_CIRCULAR + samples.MIXED_NOTE)):
        result = extract_file(docs[name])
        assert (result.method, result.kind, result.pages, result.ocr_pages, result.error) == \
               (TEXT_LAYER, "pdf", 1, 0, None), name
        assert result.text.split() == typed.split(), name  # Rachana: a word pdftotext splits is joined again


def test_english_and_code_mixed_text_layers_are_read(docs: dict[str, Path]) -> None:
    english, mixed = extract_file(docs["en"]), extract_file(docs["mixed"])
    assert english.text.split() == samples.ENGLISH_NOTE.split()
    assert mixed.text.split() == samples.MIXED_NOTE.split()
    assert english.ocr_pages == mixed.ocr_pages == 0


def test_pages_are_split_at_form_feeds_and_counted(docs: dict[str, Path], tmp_path: Path) -> None:
    united = samples.unite([docs["en"], docs["ml"], docs["mixed"]], tmp_path / "three.pdf")
    result = extract_file(united)
    pages = result.text.split("\f")
    assert result.pages == 3 and len(pages) == 3
    assert [p.split() for p in pages] == [samples.ENGLISH_NOTE.split(), samples.MALAYALAM_CIRCULAR.split(),
                                          samples.MIXED_NOTE.split()]


def test_image_only_pdf_is_ocred(docs: dict[str, Path]) -> None:
    result = extract_file(docs["scan"])
    assert (result.method, result.pages, result.ocr_pages, result.error) == (OCR, 1, 1, None)
    assert similarity(samples.MALAYALAM_CIRCULAR, result.text) >= 0.9
    for word in ("കൊച്ചി", "മെട്രോ", "സ്റ്റേഷൻ", "ജീവനക്കാരും"):
        assert word in result.text


def test_legacy_font_page_is_detected_and_ocred_into_malayalam(docs: dict[str, Path]) -> None:
    fonts = subprocess.run(["pdffonts", str(docs["ML-TTKarthika"])], capture_output=True, text=True).stdout
    assert "ML-TTKarthika" in fonts
    layer = subprocess.run(["pdftotext", str(docs["ML-TTKarthika"]), "-"], capture_output=True, text=True).stdout
    assert not any("\u0d00" <= c <= "\u0d7f" for c in layer)  # the text layer really is Latin gibberish
    result = extract_file(docs["ML-TTKarthika"])
    assert (result.method, result.ocr_pages, result.error) == (OCR, 1, None)
    assert similarity(samples.LEGACY_SOURCE, result.text) >= 0.85
    for word in LEGACY_WORDS:
        assert word in result.text
    assert not any(word in result.text for word in layer.split() if len(word) > 3)


def test_legacy_font_under_another_name_is_caught_by_its_text(docs: dict[str, Path]) -> None:
    fonts = subprocess.run(["pdffonts", str(docs["Office Serif"])], capture_output=True, text=True).stdout
    assert "Office" in fonts and "ML-TT" not in fonts
    result = extract_file(docs["Office Serif"])
    assert (result.method, result.ocr_pages) == (OCR, 1)
    assert similarity(samples.LEGACY_SOURCE, result.text) >= 0.85


def test_a_page_partly_in_a_named_legacy_font_is_ocred(docs: dict[str, Path]) -> None:
    layer = subprocess.run(["pdftotext", str(docs["ML-TTKarthika + English"]), "-"], capture_output=True,
                           text=True).stdout
    share = legacy.page_share(layer)
    assert legacy.WEAK_SHARE <= share < legacy.STRONG_SHARE  # its text alone would not be enough
    result = extract_file(docs["ML-TTKarthika + English"])
    assert (result.method, result.ocr_pages) == (OCR, 1)
    assert "കേരള" in result.text and "പൊതുമരാമത്ത്" in result.text and "Aluva" in result.text


def test_a_page_partly_in_an_unknown_font_keeps_its_text_layer(docs: dict[str, Path]) -> None:
    result = extract_file(docs["Office Serif + English"])
    assert (result.method, result.ocr_pages) == (TEXT_LAYER, 0)
    assert "emergency doors open" in " ".join(result.text.split())


def test_only_pages_that_need_it_are_ocred_and_the_method_follows_most_text(docs: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    united = samples.unite([docs["en"], docs["ml"], docs["scan"]], tmp_path / "mixed-kinds.pdf")
    result = extract_file(united)
    pages = result.text.split("\f")
    assert (result.pages, result.ocr_pages, len(pages)) == (3, 1, 3)
    assert result.method == TEXT_LAYER  # two text-layer pages hold more characters than the one scan
    assert pages[0].split() == samples.ENGLISH_NOTE.split()
    assert similarity(samples.MALAYALAM_CIRCULAR, pages[2]) >= 0.9


def test_pages_over_the_ocr_page_limit_are_noted_and_not_ocred(docs: dict[str, Path]) -> None:
    result = extract_file(docs["scan5"], ocr_max_pages=2, ocr_dpi=200)
    assert (result.pages, result.ocr_pages, result.truncated) == (5, 2, True)
    assert result.error == "3 pages over the OCR page limit"
    assert result.text.count("സുരക്ഷാ") == 2


def test_a_2000_page_pdf_is_cut_at_the_page_limit(tmp_path: Path) -> None:
    pdf = samples.write_text_pdf(tmp_path / "long.pdf", [f"Work order {n} at Aluva depot: replace the brake pads "
                                                         f"of train set {n % 25}." for n in range(1, 2001)])
    result = extract_file(pdf, max_pages=300)
    pages = result.text.split("\f")
    assert (result.pages, len(pages), result.truncated) == (2000, 300, True)
    assert result.error == "1700 pages over the page limit"
    assert pages[299].startswith("Work order 300 ") and result.ocr_pages == 0


def test_text_beyond_the_character_cap_is_dropped(tmp_path: Path) -> None:
    pdf = samples.write_text_pdf(tmp_path / "long.pdf", ["Inspection report of the viaduct between pier 10 "
                                                         "and pier 11, span girder bearings checked."] * 2000)
    result = extract_file(pdf, max_chars=5000)
    assert (result.chars, result.truncated, result.pages, result.error) == (5000, True, 2000, None)


def test_a_2000_page_scan_is_cut_at_the_ocr_page_limit(tmp_path: Path) -> None:
    page = samples.pgm_pages(samples.render_pdf("Aluva depot, page of a long scan", tmp_path / "p.pdf",
                                                font="DejaVu Sans 12"), dpi=100)[0]
    pdf = samples.write_image_pdf(tmp_path / "scan2000.pdf", [page] * 2000, dpi=100)
    result = extract_file(pdf, ocr_max_pages=3, ocr_dpi=100)
    assert (result.pages, result.ocr_pages, result.truncated) == (2000, 3, True)
    assert result.error == "1997 pages over the OCR page limit"
    assert result.text.count("Aluva") == 3


def test_a_truncated_pdf_is_reported_not_raised(docs: dict[str, Path], tmp_path: Path) -> None:
    for name in ("ml", "scan"):
        data = docs[name].read_bytes()
        cut = tmp_path / f"{name}-cut.pdf"
        cut.write_bytes(data[: len(data) // 2])
        result = extract_file(cut)
        assert result.error is not None or result.text, name
        if result.method == "none":
            assert "not a readable PDF" in (result.error or ""), name


def test_a_file_that_only_claims_to_be_a_pdf_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "circular.pdf"
    fake.write_bytes(b"%PDF-1.7\n" + os.urandom(4096))
    result = extract_file(fake)
    assert (result.kind, result.method, result.text) == ("pdf", "none", "")
    assert result.error is not None and result.error.startswith("ValueError: not a readable PDF")


def test_the_time_limit_mid_document_keeps_the_text_read_so_far(docs: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # page images named on tesseract's command line
    scans = samples.write_image_pdf(tmp_path / "scans.pdf", samples.pgm_pages(docs["ml"], dpi=300) * 30, dpi=300)
    united = samples.unite([docs["en"], scans], tmp_path / "slow.pdf")
    result = extract_file(united, seconds=2.0, ocr_max_pages=31)
    assert result.error is not None and result.error.startswith("time limit of 2 s reached"), result.error
    assert result.truncated and result.ocr_pages < 30
    assert result.text.split("\f")[0].split() == samples.ENGLISH_NOTE.split()
    assert left_running(str(tmp_path)) == []  # the tesseract or pdftoppm it stopped is gone


def test_the_pool_killing_an_extraction_leaves_no_program_running(docs: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    long_page = samples.render_pdf(samples.MALAYALAM_CIRCULAR * 12, tmp_path / "long-page.pdf", font="Manjari 12")
    scans = samples.write_image_pdf(tmp_path / "pool-scans.pdf", samples.pgm_pages(long_page, dpi=300) * 40,
                                    dpi=300)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the child's page images, named on tesseract's command line
    request = ExtractionRequest(filename="pool-scans.pdf", mime_type="application/pdf", path=str(scans),
                                limits=ExtractionLimits(seconds=600, ocr_max_pages=40))
    with ProcessPool(size=1, seconds=2, memory_mb=2048) as pool:
        with pytest.raises(TaskTimedOut):
            pool.run(extract, request)
    # The kernel delivers PDEATHSIG at once; an orphan would go on OCRing for many seconds.
    assert left_running(str(tmp_path), within=1.0) == []
    assert sweep_scratch(str(tmp_path)) == 1 and not list(tmp_path.glob("kmrl-pdf-*"))  # its page images


def test_missing_poppler_is_a_clear_error(docs: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = extract_file(docs["ml"])
    assert result.method == "none"
    assert result.error == ("CommandMissing: pdfinfo is not installed or not on PATH "
                            "(Debian packages: poppler-utils)")


def test_huge_pages_are_rendered_at_a_lower_resolution() -> None:
    assert render_dpi((595, 842), 300) == 300
    poster = (200 * 72, 200 * 72)  # a 200-inch square MediaBox
    dpi = render_dpi(poster, 300)
    assert (200 * dpi) ** 2 <= MAX_RENDER_PIXELS and dpi >= 29


def test_without_tesseract_the_text_layers_are_still_read(docs: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    united = samples.unite([docs["en"], docs["scan"], docs["ml"]], tmp_path / "no-ocr.pdf")
    tools = tmp_path / "bin"
    tools.mkdir()
    for program in ("pdfinfo", "pdftotext", "pdffonts", "pdftoppm"):
        (tools / program).symlink_to(f"/usr/bin/{program}")
    monkeypatch.setenv("PATH", str(tools))
    result = extract_file(united)
    pages = result.text.split("\f")
    assert (result.method, result.ocr_pages, result.truncated) == (TEXT_LAYER, 0, True)
    assert pages[0].split() == samples.ENGLISH_NOTE.split() and pages[2].split() == samples.MALAYALAM_CIRCULAR.split()
    assert result.error == ("tesseract is not installed or not on PATH "
                            "(Debian packages: tesseract-ocr, tesseract-ocr-mal, tesseract-ocr-eng)")


def test_legacy_font_names_are_known_under_their_subset_prefix() -> None:
    for name in ("DGZSQI+ML-TTKarthika", "FML-TTRevathi", "MLW-TTKarthika", "Manorama", "ABCDEF+Matweb"):
        assert legacy.is_legacy_font(name), name
    for name in ("Kartika", "ABCDEF+Manjari-Regular", "NotoSansMalayalam", "Helvetica", "DejaVuSans"):
        assert not legacy.is_legacy_font(name), name


def test_english_technical_prose_is_not_taken_for_a_legacy_font() -> None:
    prose = ("Set REDIS_URL and HUB_OUTBOX_DIR in the env file, then run `make install` and `make test`. "
             "The McDonald report on the iPhone app and JavaScript widgets lists 12 items [see 3.1]; "
             "temperature 25°C, cost £5, the café at Aluva is open. ") * 3
    assert not legacy.looks_legacy(prose) and not legacy.looks_legacy(prose, legacy_font_in_document=True)


def test_ml_tt_typed_text_is_taken_for_a_legacy_font(tmp_path: Path) -> None:
    typed = samples.build_legacy_font(tmp_path).encode(samples.LEGACY_SOURCE)
    assert legacy.looks_legacy(typed)
    assert legacy.looks_legacy("tIcf kÀ¡mÀ s]mXpacma¯v hIp¸v D¯chv DS³ \\S¸m¡Ww")  # as ML-TTKarthika types it

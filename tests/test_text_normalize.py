"""Text read out of documents gets one spelling (base/extraction/normalize.py)."""

from __future__ import annotations

import unicodedata

from base.extraction.normalize import normalize_text

ZWJ, ZWNJ, VIRAMA = "\u200d", "\u200c", "\u0d4d"


def test_old_chillu_sequences_become_atomic_chillus() -> None:
    # What Tesseract returns for "റെയിൽ സർക്കുലർ" (Unicode 5.0 chillus: consonant + virama + ZWJ).
    old = "റെയി" + "ല" + VIRAMA + ZWJ + " സ" + "ര" + VIRAMA + ZWJ + "ക്കുല" + "ര" + VIRAMA + ZWJ
    assert normalize_text(old) == "റെയിൽ സർക്കുലർ"
    for consonant, chillu in (("ണ", "ൺ"), ("ന", "ൻ"), ("ര", "ർ"), ("ല", "ൽ"), ("ള", "ൾ"), ("ക", "ൿ")):
        assert normalize_text("അ" + consonant + VIRAMA + ZWJ) == "അ" + chillu


def test_joiners_after_a_virama_are_dropped_and_others_kept() -> None:
    assert normalize_text("ലിമിറ്റഡ്" + ZWNJ + " ലിമിറ്റഡ്") == "ലിമിറ്റഡ് ലിമിറ്റഡ്"
    # A consonant without a chillu form keeps its virama; only the joiner goes.
    assert normalize_text("ക്ഷ" + VIRAMA + ZWJ) == "ക്ഷ" + VIRAMA
    # Joiners elsewhere (emoji sequences, Latin text) are not Malayalam spelling and stay.
    family = "\U0001f468" + ZWJ + "\U0001f469"
    assert normalize_text(family) == family


def test_text_is_put_in_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Café ൌ")
    assert normalize_text(decomposed) == unicodedata.normalize("NFC", "Café ൌ")
    assert normalize_text("") == ""

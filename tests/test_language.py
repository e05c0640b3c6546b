"""base/enrichment/language.py: script first, English by function words, langdetect only when needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from base.enrichment import language
from base.enrichment.language import MIXED_THRESHOLD_ENV, detect_language
from utils.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# About a quarter of its Latin + Malayalam characters are Malayalam.
MIXED_TEXT = (
    "Aluva station-ലെ escalator നമ്പർ 2 വീണ്ടും trip ആയി. Motor overload relay മാറ്റണം. Please raise a CM work order."
)


@pytest.fixture(autouse=True)
def _no_threshold_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIXED_THRESHOLD_ENV, raising=False)


@pytest.fixture
def langdetect_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(sample: str) -> str:
        raise AssertionError(f"langdetect called for {sample!r}")

    monkeypatch.setattr(language, "_langdetect", refuse)


def test_english_sentence_is_en() -> None:
    assert detect_language("Please find attached the invoice for the HVAC maintenance carried out in October.") == "en"


def test_clear_english_is_decided_without_langdetect(langdetect_forbidden: None) -> None:
    assert detect_language("The escalator at Edappally has been repaired and is in service from 06:00.") == "en"


def test_short_english_title_is_en_without_langdetect(langdetect_forbidden: None) -> None:
    # langdetect alone calls these Dutch and Italian.
    assert detect_language("Brake pad replacement TS-11") == "en"
    assert detect_language("Leave application casual leave") == "en"


def test_malayalam_is_ml() -> None:
    text = "മുട്ടം ഡിപ്പോയിലെ ട്രെയിൻ സെറ്റ് 7-ന്റെ ബ്രേക്ക് സിസ്റ്റത്തിൽ തകരാർ കണ്ടെത്തി. അടിയന്തരമായി അറ്റകുറ്റപ്പണി നടത്തണം."
    assert detect_language(text) == "ml"


def test_malayalam_with_a_few_english_words_is_ml() -> None:
    text = "ഇന്നത്തെ ridership കഴിഞ്ഞ മാസത്തേക്കാൾ കൂടുതലാണ്. വൈകുന്നേരം എല്ലാ ട്രെയിനുകളിലും നല്ല തിരക്കായിരുന്നു."
    assert detect_language(text) == "ml"


def test_english_and_malayalam_together_is_mixed() -> None:
    assert detect_language(MIXED_TEXT) == "mixed"


def test_script_path_never_calls_langdetect(langdetect_forbidden: None) -> None:
    assert detect_language("സുരക്ഷാ പരിശോധന നാളെ") == "ml"
    assert detect_language(MIXED_TEXT) == "mixed"
    assert detect_language("சென்னை மெட்ரோ ரயில் சேவை இன்று தாமதமாக இயங்கும்") == "ta"


@pytest.mark.parametrize("text", ["", "   ", "12345 / 678", "ok", "--- ## ---", "“ok”", "👍👍👍 ok", "₹ 4,500"])
def test_empty_or_too_short_text_is_unknown(text: str) -> None:
    assert detect_language(text) == "unknown"


def test_short_latin_text_with_foreign_function_word_and_few_letters_is_unknown() -> None:
    assert detect_language("la de") == "unknown"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Der Zug nach Aluva fährt heute zehn Minuten später ab, bitte beachten Sie die Hinweise.", "de"),
        ("Le train pour Aluva partira avec dix minutes de retard, merci de votre patience.", "fr"),
        ("El tren hacia Aluva sale hoy con diez minutos de retraso, gracias por su paciencia.", "es"),
    ],
)
def test_other_latin_language_gets_its_code(text: str, expected: str) -> None:
    assert detect_language(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ಬೆಂಗಳೂರು ಮೆಟ್ರೋ ಸೇವೆ ಇಂದು ತಡವಾಗಿದೆ", "kn"),
        ("హైదరాబాద్ మెట్రో సేవ ఈరోజు ఆలస్యం", "te"),
        ("Ελληνικά κείμενα για το μετρό", "el"),
        ("சென்னை மெட்ரோ 👍👍 Kochi", "ta"),
    ],
)
def test_single_language_script_gets_its_code(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_devanagari_goes_to_langdetect_and_is_hindi() -> None:
    assert detect_language("दिल्ली मेट्रो की सेवा आज देर से चलेगी, कृपया ध्यान दें") == "hi"


def test_threshold_argument_overrides_default() -> None:
    assert detect_language(MIXED_TEXT, mixed_threshold=0.45) == "en"
    assert detect_language(MIXED_TEXT, mixed_threshold=0.05) == "mixed"


def test_threshold_from_environment_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_language(MIXED_TEXT) == "mixed"
    monkeypatch.setenv(MIXED_THRESHOLD_ENV, "0.45")
    assert detect_language(MIXED_TEXT) == "en"
    assert detect_language(MIXED_TEXT, mixed_threshold=0.2) == "mixed"


def test_bad_threshold_in_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIXED_THRESHOLD_ENV, "twenty percent")
    with pytest.raises(ConfigError, match=MIXED_THRESHOLD_ENV):
        detect_language(MIXED_TEXT)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_argument_out_of_range_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError):
        detect_language(MIXED_TEXT, mixed_threshold=threshold)


def test_only_the_head_of_a_long_text_is_read() -> None:
    head = "The train service report for the week follows. " * 250  # more than MAX_SAMPLE_CHARS
    assert len(head) > language.MAX_SAMPLE_CHARS
    assert detect_language(head + "ട്രെയിൻ സർവീസ് " * 2000) == "en"


# Latin text that reaches langdetect (no English function word, a foreign one, enough letters).
AMBIGUOUS = "Wartung Rolltreppe Bahnsteig zwei und drei"


def test_langdetect_answer_is_the_same_every_time() -> None:
    answers = {detect_language(AMBIGUOUS) for _ in range(20)}
    assert len(answers) == 1


def test_langdetect_answer_is_the_same_in_a_fresh_process() -> None:
    code = f"from base.enrichment.language import detect_language; print(detect_language({AMBIGUOUS!r}))"
    fresh = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert fresh.stdout.strip() == detect_language(AMBIGUOUS)

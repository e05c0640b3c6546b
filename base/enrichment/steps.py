"""Enrichment: small functions over a Document, composed in one list (``DEFAULT_ENRICHERS``).

Each step reads what the document says (``Document.content_text``, read out of its bytes by the
extraction step) and what the connector gave (title, ``Document.text``, filename, the item's hints),
and sets one thing on the Document. They run after the bytes are hashed and their text extracted,
and before the upload.

Language is decided on the content alone once it holds ``CONTENT_LANGUAGE_MIN_LETTERS`` letters (a
Malayalam circular in a folder with an English name is Malayalam, not mixed; a one-line Manglish note
named ``document-0012.pdf`` is Malayalam, not English); with less (a photo, an empty form, a file no
extractor reads) the names and the source's text decide, with what content there is. Department
weighs the content together with the names and the source's hints.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence

from base.document import Document, merged_text
from base.enrichment.sensitive import flag_sensitive
from base.extraction.normalize import normalize_text

Enricher = Callable[[Document, Mapping[str, str]], None]

#: Letters (vowel signs and viramas counted, so a Malayalam word weighs what its transliteration does) of
#: extracted text from which the content alone decides the language: a short line of text says more
#: about its language than a file name does.
CONTENT_LANGUAGE_MIN_LETTERS = 12
#: Characters of the extracted text the language and department steps read (a document's language
#: and owner show in its first pages; the classifier's cost grows with its input).
CONTENT_SAMPLE_CHARS = 20_000


def _names_text(document: Document) -> str:
    """What the source says about the document: its title, the connector's text, its file name."""
    return merged_text([document.title, document.text, document.filename.rsplit(".", 1)[0]])


def _content_sample(document: Document) -> str:
    return document.content_text[:CONTENT_SAMPLE_CHARS]


def _letters(text: str, enough: int) -> bool:
    """Whether ``text`` holds at least ``enough`` letters or combining marks (stops counting there)."""
    count = 0
    for ch in text:
        if ch.isalpha() or unicodedata.category(ch) in ("Mn", "Mc"):
            count += 1
            if count >= enough:
                return True
    return False


def detect_document_language(document: Document, hints: Mapping[str, str]) -> None:
    """Sets ``language`` ('en', 'ml', 'mixed', another ISO 639-1 code, or 'unknown'), ``language_script``
    ('Latn' for Malayalam typed in Latin letters) and the languages of the content in ``extraction``."""
    from base.enrichment.language import detect_language_details  # loads langdetect's profiles on first use only

    content = _content_sample(document)
    if _letters(content, CONTENT_LANGUAGE_MIN_LETTERS):
        result = detect_language_details(content)
        content_languages = list(result.languages)
    else:
        result = detect_language_details(normalize_text(merged_text([_names_text(document), content])))
        content_languages = list(detect_language_details(content).languages) if content.strip() else []
    document.language = result.code
    document.language_script = result.script if result.script == "Latn" else ""
    if document.extraction is not None:
        document.extraction["languages"] = content_languages


def classify_department(document: Document, hints: Mapping[str, str]) -> None:
    """Sets ``department``, ``department_confidence`` and the matched terms that explain it."""
    from base.enrichment.classifier import get_classifier  # reads config/departments.toml on first use only

    text = normalize_text(merged_text([_names_text(document), _content_sample(document)],
                                      limit=CONTENT_SAMPLE_CHARS + 2_000))
    result = get_classifier().classify(text, hints)
    document.department = result.department
    document.department_confidence = result.confidence
    document.department_terms = list(result.matched_terms)


DEFAULT_ENRICHERS: tuple[Enricher, ...] = (detect_document_language, classify_department, flag_sensitive)


def enrich(document: Document, hints: Mapping[str, str], steps: Sequence[Enricher] = DEFAULT_ENRICHERS) -> Document:
    """Runs every step on ``document`` in order and returns it."""
    for step in steps:
        step(document, hints)
    return document

"""Enrichment: small functions over a Document, composed in one list (``DEFAULT_ENRICHERS``).

Each step reads what the connector gave (``Document.text``, title, filename, the item's hints) and
sets one thing on the Document. They run after the bytes are hashed and before the upload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from base.document import Document, merged_text

Enricher = Callable[[Document, Mapping[str, str]], None]


def _enrichment_text(document: Document) -> str:
    return merged_text([document.title, document.text, document.filename.rsplit(".", 1)[0]])


def detect_document_language(document: Document, hints: Mapping[str, str]) -> None:
    """Sets ``language`` ('en', 'ml', 'mixed', another ISO 639-1 code, or 'unknown')."""
    from base.enrichment.language import detect_language  # loads langdetect's profiles on first use only

    document.language = detect_language(_enrichment_text(document))


def classify_department(document: Document, hints: Mapping[str, str]) -> None:
    """Sets ``department``, ``department_confidence`` and the matched terms that explain it."""
    from base.enrichment.classifier import get_classifier  # reads config/departments.toml on first use only

    result = get_classifier().classify(_enrichment_text(document), hints)
    document.department = result.department
    document.department_confidence = result.confidence
    document.department_terms = list(result.matched_terms)


DEFAULT_ENRICHERS: tuple[Enricher, ...] = (detect_document_language, classify_department)


def enrich(document: Document, hints: Mapping[str, str], steps: Sequence[Enricher] = DEFAULT_ENRICHERS) -> Document:
    """Runs every step on ``document`` in order and returns it."""
    for step in steps:
        step(document, hints)
    return document

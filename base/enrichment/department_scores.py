"""How well a department classifier does on labelled passages: macro-F1 and accuracy, overall and per group.

``score(classifier, rows)`` classifies each row's ``text`` (with its ``hints``, if any) and compares
with its ``department``; the answer gives macro-F1 over the departments, accuracy per language and
per department, and the misses, so a benchmark and a regression test read the same figures.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class _Classifies(Protocol):
    def classify(self, text: str, hints: Mapping[str, str] | None = None) -> Any: ...


@dataclass(frozen=True)
class Miss:
    """One passage the classifier got wrong."""

    id: str
    language: str
    expected: str
    got: str
    matched_terms: list[str]


@dataclass(frozen=True)
class Scores:
    """Figures for one labelled set; every ratio is in [0, 1]."""

    count: int
    accuracy: float
    macro_f1: float
    f1: dict[str, float]  # per department
    accuracy_by_language: dict[str, tuple[float, int]]  # language -> (accuracy, passages)
    accuracy_by_department: dict[str, tuple[float, int]]  # department -> (recall, passages)
    macro_f1_by_language: dict[str, float]
    misses: list[Miss] = field(default_factory=list)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a jsonl file (blank lines skipped)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def macro_f1(pairs: Iterable[tuple[str, str]], labels: Iterable[str]) -> tuple[float, dict[str, float]]:
    """(mean F1 over ``labels``, F1 per label) for (expected, got) pairs; a label never expected nor
    predicted counts 0 (it cannot happen with a set that covers every department)."""
    pairs = list(pairs)
    per_label: dict[str, float] = {}
    for label in labels:
        true_positive = sum(1 for expected, got in pairs if expected == label and got == label)
        predicted = sum(1 for _, got in pairs if got == label)
        actual = sum(1 for expected, _ in pairs if expected == label)
        per_label[label] = 2 * true_positive / (predicted + actual) if predicted + actual else 0.0
    return (sum(per_label.values()) / len(per_label) if per_label else 0.0), per_label


def score(classifier: _Classifies, rows: list[dict[str, Any]], departments: Iterable[str]) -> Scores:
    """Classifies every row and returns the figures (``language`` falls back to ``lang``)."""
    departments = list(departments)
    results: list[tuple[dict[str, Any], str, str]] = []
    misses: list[Miss] = []
    for row in rows:
        language = str(row.get("language", row.get("lang", "")))
        result = classifier.classify(row["text"], row.get("hints"))
        results.append((row, language, result.department))
        if result.department != row["department"]:
            misses.append(Miss(str(row.get("id", "")), language, row["department"], result.department,
                               list(result.matched_terms)))
    overall, per_department_f1 = macro_f1(((row["department"], got) for row, _, got in results), departments)
    by_language: dict[str, tuple[float, int]] = {}
    f1_by_language: dict[str, float] = {}
    for language in sorted(Counter(language for _, language, _ in results)):
        subset = [(row["department"], got) for row, lang, got in results if lang == language]
        by_language[language] = (sum(e == g for e, g in subset) / len(subset), len(subset))
        present = sorted({expected for expected, _ in subset})
        f1_by_language[language] = macro_f1(subset, present)[0]
    by_department: dict[str, tuple[float, int]] = {}
    for department in departments:
        subset = [(row["department"], got) for row, _, got in results if row["department"] == department]
        if subset:
            by_department[department] = (sum(e == g for e, g in subset) / len(subset), len(subset))
    correct = sum(1 for row, _, got in results if row["department"] == got)
    return Scores(
        count=len(results),
        accuracy=correct / len(results) if results else 0.0,
        macro_f1=overall,
        f1=per_department_f1,
        accuracy_by_language=by_language,
        accuracy_by_department=by_department,
        macro_f1_by_language=f1_by_language,
        misses=misses,
    )

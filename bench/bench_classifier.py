"""Department classifier benchmark: held-out quality, then documents/s for short texts and long documents.

Quality: the held-out half of tests/data/departments (split before any tuning) is classified as body
text; printed are macro-F1 and accuracy overall, per language and per department, how many passages
matched no term, and how often the text still wins when the source hint (the mailbox) names another
department. After the speed figures, after a blank line, the same for the held-out half of real public
text (tests/data/departments_real), each figure prefixed "real", with detect_language's accuracy on it. Speed: short texts are the tuning half; a page is 2,000 characters of them; long
documents are those texts repeated to the classifier's read limit (max_chars, 20,000 characters by
default), the worst case per document. Rates are given per wall-clock second and per CPU second of
this process (the second is steadier on a shared machine), and as microseconds per classification.

    .venv/bin/python -m bench.bench_classifier [--documents 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from base.enrichment.classifier import Classifier
from base.enrichment.department_scores import read_rows, score
from base.enrichment.language import detect_language

PASSAGES = Path(__file__).resolve().parent.parent / "tests" / "data" / "departments"
REAL_PASSAGES = PASSAGES.parent / "departments_real"
#: A mailbox per department, to hand each held-out passage a hint that names another department.
MAILBOXES = {
    "Engineering": "maintenance@kmrl.co.in",
    "Finance": "finance@kmrl.co.in",
    "Safety": "safety@kmrl.co.in",
    "HR": "hr@kmrl.co.in",
    "Operations": "occ@kmrl.co.in",
    "Executive": "md@kmrl.co.in",
}


def measure(classifier: Classifier, documents: Sequence[tuple[str, Mapping[str, str] | None]]) -> tuple[float, float]:
    """Documents per second (wall clock, and per CPU second of this process) for classifying each once."""
    wall, cpu = time.perf_counter(), time.process_time()
    for text, hints in documents:
        classifier.classify(text, hints)
    return len(documents) / (time.perf_counter() - wall), len(documents) / (time.process_time() - cpu)


def report_quality(classifier: Classifier, heldout: Path) -> None:
    """Prints the held-out figures (what tests/test_classifier.py puts a floor under)."""
    rows = read_rows(heldout)
    figures = score(classifier, rows, classifier.departments)
    print(f"held-out passages ({heldout.relative_to(PASSAGES.parent.parent.parent)}): {figures.count}")
    print(f"held-out macro-F1 {figures.macro_f1:.3f}, accuracy {figures.accuracy:.3f}")
    print(f"{'language':12} {'passages':>8} {'accuracy':>9} {'macro-F1':>9}")
    for language, (accuracy, count) in figures.accuracy_by_language.items():
        print(f"{language:12} {count:>8} {accuracy:>9.3f} {figures.macro_f1_by_language[language]:>9.3f}")
    print(f"{'department':12} {'passages':>8} {'recall':>9} {'F1':>9}")
    for department, (recall, count) in figures.accuracy_by_department.items():
        print(f"{department:12} {count:>8} {recall:>9.3f} {figures.f1[department]:>9.3f}")
    unmatched = sum(1 for row in rows if not classifier.classify(row["text"]).matched_terms)
    print(f"held-out passages with no term matched: {unmatched}")
    order = list(MAILBOXES)
    misled = [
        (row["text"], {"mailbox": MAILBOXES[order[(order.index(row["department"]) + 1) % len(order)]]}, row)
        for row in rows
    ]
    kept = sum(1 for text, hints, row in misled if classifier.classify(text, hints).department == row["department"])
    print(f"held-out with a mailbox hint naming another department: {kept / len(rows):.3f} still right")
    for miss in figures.misses:
        print(f"  miss {miss.id}: {miss.expected} -> {miss.got} {miss.matched_terms[:6]}")


def report_real_quality(classifier: Classifier, heldout: Path) -> None:
    """Prints the real-text held-out figures (what tests/test_departments_real.py puts a floor under).

    Every line starts with "real" and the block follows a blank line, so a reader of the figures above
    (the held-out line, the language and department tables) does not take these for them."""
    rows = read_rows(heldout)
    figures = score(classifier, rows, classifier.departments)
    print()
    print(f"real held-out passages ({heldout.relative_to(PASSAGES.parent.parent.parent)}): {figures.count}")
    print(f"real held-out macro-F1 {figures.macro_f1:.3f}, accuracy {figures.accuracy:.3f}")
    print(f"{'real language':16} {'passages':>8} {'accuracy':>9} {'macro-F1':>9}")
    for language, (accuracy, count) in figures.accuracy_by_language.items():
        print(f"{language:16} {count:>8} {accuracy:>9.3f} {figures.macro_f1_by_language[language]:>9.3f}")
    print(f"{'real department':16} {'passages':>8} {'recall':>9} {'F1':>9}")
    for department, (recall, count) in figures.accuracy_by_department.items():
        print(f"{department:16} {count:>8} {recall:>9.3f} {figures.f1[department]:>9.3f}")
    detected = sum(1 for row in rows if detect_language(row["text"]) == row["language"])
    print(f"real held-out language detected: {detected}/{len(rows)} ({detected / len(rows):.3f})")
    for miss in figures.misses:
        print(f"  real miss {miss.id}: {miss.expected} -> {miss.got} {miss.matched_terms[:6]}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000, help="short documents to classify")
    parser.add_argument("--long-documents", type=int, default=300, help="long documents to classify")
    parser.add_argument("--rules", type=Path, default=None, help="rules file (default: DEPARTMENTS_FILE or config/)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    classifier = Classifier(args.rules)
    print(f"rules loaded in {(time.perf_counter() - started) * 1000:.1f} ms from {classifier.path}")
    report_quality(classifier, PASSAGES / "heldout.jsonl")

    rows = read_rows(PASSAGES / "tuning.jsonl")
    short = [(f"{row['text']} {index}", row.get("hints")) for index, row in enumerate(rows)]
    short = (short * (args.documents // len(short) + 1))[: args.documents]
    mixed_text = " ".join(row["text"] for row in rows)
    long_text = (mixed_text * (classifier.max_chars // len(mixed_text) + 1))[: classifier.max_chars]
    long = [(f"{index} {long_text}", None) for index in range(args.long_documents)]
    page = [(f"{index} {long_text[:2000]}", None) for index in range(args.long_documents * 10)]

    print(f"{'documents':34} {'count':>7} {'docs/s':>10} {'docs/CPU s':>11} {'us/doc (CPU)':>13}")
    for name, documents in (
        (f"short (avg {sum(len(t) for t, _ in short) // len(short)} chars)", short),
        ("a page (2,000 chars, en+ml)", page),
        (f"long ({len(long_text):,} chars, en+ml)", long),
    ):
        wall, cpu = measure(classifier, documents)
        print(f"{name:34} {len(documents):>7} {wall:>10,.0f} {cpu:>11,.0f} {1e6 / cpu:>13,.1f}")
    report_real_quality(classifier, REAL_PASSAGES / "heldout.jsonl")


if __name__ == "__main__":
    main()

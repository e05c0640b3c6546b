"""Department classifier benchmark: documents/s for short texts and for long documents.

Short texts are the train half of the labelled set (English, Malayalam, mixed; some with hints);
a page is 2,000 characters of them; long documents are those texts repeated to the classifier's
read limit (max_chars, 20,000 characters by default), the worst case per document. Rates are given
per wall-clock second and per CPU second of this process (the second is steadier on a shared machine).

    .venv/bin/python -m bench.bench_classifier [--documents 20000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from base.enrichment.classifier import Classifier

TRAIN = Path(__file__).resolve().parent.parent / "tests" / "data" / "departments_train.jsonl"


def measure(classifier: Classifier, documents: Sequence[tuple[str, Mapping[str, str] | None]]) -> tuple[float, float]:
    """Documents per second (wall clock, and per CPU second of this process) for classifying each once."""
    wall, cpu = time.perf_counter(), time.process_time()
    for text, hints in documents:
        classifier.classify(text, hints)
    return len(documents) / (time.perf_counter() - wall), len(documents) / (time.process_time() - cpu)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000, help="short documents to classify")
    parser.add_argument("--long-documents", type=int, default=300, help="long documents to classify")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    classifier = Classifier()
    print(f"rules loaded in {(time.perf_counter() - started) * 1000:.1f} ms from {classifier.path}")
    with TRAIN.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    short = [(f"{row['text']} {index}", row.get("hints")) for index, row in enumerate(rows)]
    short = (short * (args.documents // len(short) + 1))[: args.documents]
    mixed_text = " ".join(row["text"] for row in rows)
    long_text = (mixed_text * (classifier.max_chars // len(mixed_text) + 1))[: classifier.max_chars]
    long = [(f"{index} {long_text}", None) for index in range(args.long_documents)]
    page = [(f"{index} {long_text[:2000]}", None) for index in range(args.long_documents * 10)]

    print(f"{'documents':34} {'count':>7} {'docs/s':>10} {'docs/CPU s':>11}")
    for name, documents in (
        (f"short (avg {sum(len(t) for t, _ in short) // len(short)} chars)", short),
        ("a page (2,000 chars, en+ml)", page),
        (f"long ({len(long_text):,} chars, en+ml)", long),
    ):
        wall, cpu = measure(classifier, documents)
        print(f"{name:34} {len(documents):>7} {wall:>10,.0f} {cpu:>11,.0f}")


if __name__ == "__main__":
    main()

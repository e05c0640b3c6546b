"""Sensitive-content detection benchmark: speed, false positives on text without personal data, and
true positives on synthetic personal data (base.enrichment.sensitive.find_sensitive).

- speed: µs per KB on about 1 MB of mixed text (English and Malayalam prose, timetables, invoices,
  and a sprinkling of synthetic personal numbers), best of a few rounds;
- false positives, per corpus, as documents flagged out of documents read: the bodies of the real
  messages in ../shared/testdata/mime, this repository's own docs and test data (README, env.example,
  config/, tests/data, the demo's sample texts), the look-alike lines of sandbox/personal_data.py
  (timetables, train, tender, invoice, PO numbers, dates, amounts), and random 12-digit numbers
  (the share Verhoeff alone passes, and the share flagged as Aadhaar when written bare);
- true positives: synthetic sentences with valid numbers (sandbox/personal_data.py), exact answers
  and per kind found.

    .venv/bin/python -m bench.bench_sensitive [--mb 1] [--show] [--json PATH]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from base.enrichment.sensitive import find_sensitive, verhoeff_valid
from bench.report import Figure, Result
from sandbox.personal_data import (
    lookalike_texts,
    message_texts,
    personal_texts,
    random_twelve_digit_numbers,
    repository_texts,
)

ROOT = Path(__file__).resolve().parent.parent
MIME_DIR = ROOT.parent / "shared" / "testdata" / "mime"


def flagged(texts: Sequence[tuple[str, str]]) -> list[tuple[str, dict[str, int]]]:
    found = [(name, find_sensitive(text)) for name, text in texts]
    return [(name, kinds) for name, kinds in found if kinds]


def megabyte_of_text(mb: float) -> str:
    """About ``mb`` MB of mixed text (UTF-8 bytes), with personal numbers in one line of fifty."""
    prose = ("Minutes of the meeting held at Muttom depot on the maintenance of rolling stock and the "
             "escalators at Aluva, Edappally and Vyttila stations. ")
    malayalam = "മുട്ടം ഡിപ്പോയിലെ ബ്രേക്ക് സിസ്റ്റത്തിൽ തകരാർ കണ്ടെത്തി, ഉടൻ പരിഹരിക്കണം. "
    lines = [s.text for s in lookalike_texts(7, 400)]
    personal = [s.text for s in personal_texts(7, 40)]
    parts: list[str] = []
    size = 0
    i = 0
    while size < mb * 1024 * 1024:
        line = prose if i % 3 == 0 else malayalam if i % 3 == 1 else lines[i % len(lines)]
        if i % 50 == 49:
            line = personal[i % len(personal)]
        parts.append(line + "\n")
        size += len(line.encode("utf-8")) + 1
        i += 1
    return "".join(parts)


def prose_text(mb: float) -> str:
    """About ``mb`` MB of English and Malayalam prose, a number or two a paragraph (no personal data)."""
    from sandbox.samples import kmrl_samples

    paragraphs = [f"{m.subject}\n{m.body}\n" for seed in (1, 2, 3) for m in kmrl_samples(seed, 1).mails]
    out: list[str] = []
    size = 0
    while size < mb * 1024 * 1024:
        paragraph = paragraphs[len(out) % len(paragraphs)]
        out.append(paragraph)
        size += len(paragraph.encode("utf-8"))
    return "".join(out)


def speed(text: str, rounds: int = 5) -> float:
    """µs per KB (UTF-8) of ``find_sensitive`` on ``text``, best of ``rounds``."""
    kb = len(text.encode("utf-8")) / 1024
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        find_sensitive(text)
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / kb


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=1.0, help="size of the speed text in MB")
    parser.add_argument("--show", action="store_true", help="list each flagged document of the clean corpora")
    parser.add_argument("--json", help="also write the figures to this result file")
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    result = Result("sensitive", "Sensitive content: speed, false and true positives",
                    "python -m bench.bench_sensitive " + shlex.join(argv if argv is not None else sys.argv[1:]),
                    started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    text = megabyte_of_text(args.mb)
    result.figures.append(Figure(f"speed, {len(text.encode('utf-8')) / 1048576:.2f} MB of number-dense text",
                                 round(speed(text), 1), "µs/KB"))
    prose = prose_text(args.mb)
    result.figures.append(Figure(f"speed, {len(prose.encode('utf-8')) / 1048576:.2f} MB of English/Malayalam prose",
                                 round(speed(prose), 1), "µs/KB"))

    corpora: list[tuple[str, list[tuple[str, str]]]] = []
    if MIME_DIR.is_dir():
        corpora.append(("mail bodies (../shared/testdata/mime)", list(message_texts(MIME_DIR))))
    else:
        result.notes.append(f"{MIME_DIR} is absent: the mail-body corpus was not measured")
    corpora.append(("repository docs, test data, sample texts", list(repository_texts(ROOT))))
    corpora.append(("look-alikes (timetables, tenders, invoices, dates, amounts)",
                    [(f"lookalike-{i}", s.text) for i, s in enumerate(lookalike_texts(1, 2000))]))
    for title, texts in corpora:
        hits = flagged(texts)
        kinds = Counter(kind for _, found in hits for kind in found)
        result.figures.append(Figure(f"false positives: {title}", f"{len(hits)} / {len(texts)}", "documents",
                                     note=", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))))
        if args.show:
            for name, found in hits:
                print(f"    {name}: {found}")

    numbers = random_twelve_digit_numbers(1, 100000)
    shares = {
        "random 12-digit numbers passing Verhoeff": sum(verhoeff_valid(n) for n in numbers),
        "random 12-digit numbers flagged as Aadhaar, written bare": sum(
            "aadhaar" in find_sensitive(f"number {n}") for n in numbers),
        "... after an invoice label": sum("aadhaar" in find_sensitive(f"Invoice No. {n}") for n in numbers),
        "... inside a 17-digit run": sum(bool(find_sensitive(f"serial {n}{n[:5]}")) for n in numbers),
    }
    for label, count in shares.items():
        result.figures.append(Figure(label, round(100 * count / len(numbers), 2), "%"))

    samples = personal_texts(1, 3000)
    exact = 0
    per_kind: Counter[str] = Counter()
    expected_kind: Counter[str] = Counter()
    for sample in samples:
        found = find_sensitive(sample.text)
        exact += found == sample.expected
        for kind, count in sample.expected.items():
            expected_kind[kind] += count
            per_kind[kind] += min(count, found.get(kind, 0))
    result.figures.append(Figure("true positives: synthetic texts answered exactly", f"{exact} / {len(samples)}"))
    for kind in sorted(expected_kind):
        result.figures.append(Figure(f"true positives: {kind}", f"{per_kind[kind]} / {expected_kind[kind]}"))
    result.seconds = time.perf_counter() - wall
    result.print_table(value_width=16)
    if args.json:
        result.save(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Language detection benchmark: texts/s on each path of base.enrichment.language.detect_language.

Paths measured separately, because their costs differ by orders of magnitude:
- script: Malayalam, mixed English + Malayalam, and other single-language scripts (Tamil, Kannada,
  Hindi's neighbours): decided by counting letters per script (target: 50,000 short texts/s);
- english: Latin text called English by its function words, or as a short plain-ASCII title;
- langdetect: Latin text the English check cannot decide (foreign function words), which goes to
  the seeded langdetect model;
- manglish: Malayalam typed in Latin letters, decided by the lexicon and the n-gram model.

Each text is distinct (a running number is appended) so nothing could be served from a cache.

Then accuracy on the held-out half of the labelled set (tests/data/language/heldout.jsonl) per class
(en, ml, mixed, Manglish, other Latin-script languages; a Manglish item is right only as 'ml' with
script 'Latn'), the share of English items called Malayalam, and microseconds per text on those
items and on whole documents (MAX_SAMPLE_CHARS of English, Malayalam, mixed and Manglish text).
Against a language module without ``detect_language_details`` (to compare before and after) only
codes are checked, and Manglish counts as right when its code is 'ml'.

    .venv/bin/python -m bench.bench_language [--texts 50000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from base.enrichment import language
from base.enrichment.language import detect_language

HELDOUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "language" / "heldout.jsonl"
#: Held-out kinds reported together as one class.
CLASSES = {
    "en": ("en", "en-short", "en-names", "en-loanwords", "en-one-ml"),
    "ml": ("ml", "ml-acronyms"),
    "mixed": ("mixed-ml-en", "mixed-en-ml"),
    "Manglish": ("manglish", "manglish-en", "manglish-translit"),
    "other Latin": ("other",),
}

#: Short texts like the titles, captions and first lines connectors pass for enrichment.
MALAYALAM = [
    "മുട്ടം ഡിപ്പോയിലെ ബ്രേക്ക് സിസ്റ്റത്തിൽ തകരാർ കണ്ടെത്തി",
    "ഈ മാസത്തെ വൈദ്യുതി ബിൽ തുക അടയ്ക്കണം",
    "ആലുവ സ്റ്റേഷനിൽ യാത്രക്കാരന് പരിക്കേറ്റു",
    "അവധി അപേക്ഷ: മൂന്ന് ദിവസം",
    "ഡയറക്ടർ ബോർഡ് യോഗം വെള്ളിയാഴ്ച",
    "നാളെ മുതൽ ആദ്യ ട്രെയിൻ 5.30-ന്",
]
MIXED = [
    "Aluva station-ലെ escalator വീണ്ടും trip ആയി, please check",
    "Vendor payment status: ബിൽ approve ചെയ്തു",
    "Night shift allowance ഈ മാസം മുതൽ revised rate-ൽ",
    "OCC-ൽ നിന്ന് അറിയിപ്പ്: TS-09 depot-ലേക്ക് withdraw ചെയ്തു",
]
OTHER_SCRIPT = [
    "சென்னை மெட்ரோ ரயில் சேவை இன்று தாமதம்",
    "ಬೆಂಗಳೂರು ಮೆಟ್ರೋ ಸೇವೆ ಇಂದು ತಡವಾಗಿದೆ",
    "హైదరాబాద్ మెట్రో సేవ ఈరోజు ఆలస్యం",
]
ENGLISH = [
    "Please find attached the invoice for the HVAC maintenance of October",
    "The escalator at Edappally has been repaired and is in service",
    "Minutes of the meeting of the Board of Directors held on 18 September",
    "Brake pad replacement TS-11",
    "Crew duty roster week 42",
    "Scanned document 0042",
]
MANGLISH = [
    "innu vaikittu 5 manikku train late aayirunnu",
    "njan naale leave edukkum, sir onnu approve cheyyamo",
    "Aluva station il escalator work cheyyunnilla",
    "ente salary ee maasam ithuvare credit aayittilla",
]
FOREIGN = [
    "Der Zug nach Aluva fährt heute später ab, bitte beachten",
    "Le train pour Aluva partira avec du retard ce matin",
    "El tren hacia Aluva sale hoy con retraso, gracias por su paciencia",
]


def corpus(templates: Sequence[str], count: int) -> list[str]:
    """``count`` distinct texts made from the templates."""
    return [f"{templates[index % len(templates)]} {index}" for index in range(count)]


def measure(texts: list[str]) -> tuple[float, float, Counter[str]]:
    """(texts per wall-clock second, texts per CPU second of this process, answers) for detecting
    every text once; the CPU figure is the steadier one on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    answers = Counter(detect_language(text) for text in texts)
    return len(texts) / (time.perf_counter() - wall), len(texts) / (time.process_time() - cpu), answers


def _document(sentences: Sequence[str]) -> str:
    """A document of MAX_SAMPLE_CHARS characters made of ``sentences`` repeated."""
    text = ""
    while len(text) < language.MAX_SAMPLE_CHARS:
        text += " ".join(sentences) + "\n"
    return text[: language.MAX_SAMPLE_CHARS]


def microseconds(texts: Sequence[str], detect: Callable[[str], object], rounds: int = 3) -> float:
    """Best of ``rounds`` CPU microseconds per text for detecting every text once."""
    best = float("inf")
    for _ in range(rounds):
        cpu = time.process_time()
        for text in texts:
            detect(text)
        best = min(best, (time.process_time() - cpu) / len(texts) * 1e6)
    return best


def heldout_accuracy() -> None:
    """Prints accuracy per class on the held-out half, the English-called-ml rate and µs per text."""
    rows = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines()]
    details = getattr(language, "detect_language_details", None)

    def right(row: dict[str, str]) -> bool:
        if details is None:
            return detect_language(row["text"]) == row["label"]
        result = details(row["text"])
        return bool(result.code == row["label"] and result.script == row["script"])

    print(f"\nheld-out half ({len(rows)} texts, {HELDOUT.name}){'' if details else ': codes only'}")
    total = correct = 0
    for name, kinds in CLASSES.items():
        items = [row for row in rows if row["kind"] in kinds]
        hits = sum(right(row) for row in items)
        total, correct = total + len(items), correct + hits
        print(f"  {name:12} {hits:>4}/{len(items):<4} {hits / len(items):6.1%}")
    print(f"  {'all':12} {correct:>4}/{total:<4} {correct / total:6.1%}")
    english = [row for row in rows if row["label"] == "en"]
    called_ml = sum(detect_language(row["text"]) == "ml" for row in english)
    print(f"  English called ml: {called_ml}/{len(english)} ({called_ml / len(english):.1%})")
    print("\nmicroseconds per text (CPU, best of 3)")
    for name, kinds in CLASSES.items():
        texts = [row["text"] for row in rows if row["kind"] in kinds]
        print(f"  held-out {name:22} {microseconds(texts, detect_language):9.1f}")
    documents = {
        "English": _document(ENGLISH[:3]),
        "Malayalam": _document(MALAYALAM),
        "mixed en+ml": _document(MIXED),
        "Manglish": _document(MANGLISH),
    }
    for name, text in documents.items():
        print(f"  document {name:22} {microseconds([text] * 50, detect_language):9.1f}  ({len(text):,} chars)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=50_000, help="texts per fast path (default 50000)")
    parser.add_argument("--langdetect-texts", type=int, default=500, help="texts on the langdetect path")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    detect_language(FOREIGN[0])  # loads langdetect's profiles once; not part of any figure below
    print(f"langdetect profiles loaded in {time.perf_counter() - started:.2f} s")

    paths = [
        ("script: Malayalam", corpus(MALAYALAM, args.texts)),
        ("script: mixed en+ml", corpus(MIXED, args.texts)),
        ("script: other scripts", corpus(OTHER_SCRIPT, args.texts)),
        ("script: all of the above", corpus(MALAYALAM + MIXED + OTHER_SCRIPT, args.texts)),
        ("english", corpus(ENGLISH, args.texts)),
        ("manglish (Latin)", corpus(MANGLISH, args.texts // 5)),
        ("langdetect (foreign Latin)", corpus(FOREIGN, args.langdetect_texts)),
    ]
    print(f"{'path':28} {'texts':>7} {'texts/s':>10} {'texts/CPU s':>12}  answers")
    for name, texts in paths:
        wall, cpu, answers = measure(texts)
        print(f"{name:28} {len(texts):>7} {wall:>10,.0f} {cpu:>12,.0f}  {dict(answers)}")
    heldout_accuracy()


if __name__ == "__main__":
    main()

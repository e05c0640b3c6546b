"""Language detection benchmark: texts/s on each path of base.enrichment.language.detect_language.

Paths measured separately, because their costs differ by orders of magnitude:
- script: Malayalam, mixed English + Malayalam, and other single-language scripts (Tamil, Kannada,
  Hindi's neighbours): decided by counting letters per script (target: 50,000 short texts/s);
- english: Latin text called English by its function words, or as a short plain-ASCII title;
- langdetect: Latin text the English check cannot decide (foreign function words), which goes to
  the seeded langdetect model.

Each text is distinct (a running number is appended) so nothing could be served from a cache.

    .venv/bin/python -m bench.bench_language [--texts 50000]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence

from base.enrichment.language import detect_language

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
        ("langdetect (foreign Latin)", corpus(FOREIGN, args.langdetect_texts)),
    ]
    print(f"{'path':28} {'texts':>7} {'texts/s':>10} {'texts/CPU s':>12}  answers")
    for name, texts in paths:
        wall, cpu, answers = measure(texts)
        print(f"{name:28} {len(texts):>7} {wall:>10,.0f} {cpu:>12,.0f}  {dict(answers)}")


if __name__ == "__main__":
    main()

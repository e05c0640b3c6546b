"""Trains the Manglish character n-gram model (base/enrichment/manglish_ngrams.json) from the TUNING half.

    .venv/bin/python tests/data/language/train_manglish.py

Three classes, naive Bayes over character 1- to 3-grams of lower-cased words padded with a space (the
n-grams langdetect uses):
- Manglish: every Latin-script Malayalam item of tuning.jsonl;
- English: langdetect's English profile (Wikipedia n-gram frequencies, Apache-2.0, shipped with the
  langdetect package this project already depends on), blended with the English items of tuning.jsonl
  and of tests/data/departments_*.jsonl (KMRL's own register: station and person names, acronyms);
- other Latin-script languages: the mean of langdetect's profiles of the Latin-script languages it knows,
  blended with the other-language items of tuning.jsonl.
The model file keeps, for each n-gram that is frequent in some class, two log-ratios: log P(g | Manglish)
- log P(g | English) and log P(g | other). heldout.jsonl is never read here.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path

from langdetect.detector_factory import PROFILES_DIRECTORY

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = ROOT / "base" / "enrichment" / "manglish_ngrams.json"
OTHER_LATIN = ("af", "ca", "cs", "cy", "da", "de", "es", "et", "fi", "fr", "hr", "hu", "id", "it", "lt", "lv",
               "nl", "no", "pl", "pt", "ro", "sk", "sl", "so", "sq", "sv", "sw", "tl", "tr", "vi")
#: Share of a blended class's probability that comes from this project's own sentences.
OWN_WEIGHT = 0.5
#: Additive smoothing for counts, per n-gram.
ALPHA = 0.5
#: Largest log-ratio kept: langdetect's profiles are pruned, so an n-gram missing from one is rare there,
#: not impossible.
MAX_LOG_RATIO = 5.0
#: n-grams kept per class (per order) before the union is written.
KEEP_PER_CLASS = {1: 40, 2: 500, 3: 2500}
_LETTERS = re.compile(r"[^\W\d_]+")


def ngrams(text: str) -> list[str]:
    """The 1- to 3-grams of each lower-cased word of ``text``, each word padded with a space."""
    out: list[str] = []
    for word in _LETTERS.findall(text.lower()):
        padded = f" {word} "
        for n in (1, 2, 3):
            out.extend(padded[i:i + n] for i in range(len(padded) - n + 1) if padded[i:i + n] != " ")
    return out


def distribution(counts: Counter[str]) -> dict[int, dict[str, float]]:
    """Per order, smoothed probabilities of the counted n-grams, plus '' for an unseen one."""
    out: dict[int, dict[str, float]] = {}
    for n in (1, 2, 3):
        grams = {g: c for g, c in counts.items() if len(g) == n}
        vocabulary = max(len(grams), 1) * 2
        total = sum(grams.values()) + ALPHA * vocabulary
        out[n] = {g: (c + ALPHA) / total for g, c in grams.items()}
        out[n][""] = ALPHA / total
    return out


def profile(code: str) -> Counter[str]:
    data = json.loads((Path(PROFILES_DIRECTORY) / code).read_text(encoding="utf-8"))
    counts: Counter[str] = Counter()
    for gram, count in data["freq"].items():
        counts[gram.lower()] += count
    return counts


def mean(distributions: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for n in (1, 2, 3):
        grams = set().union(*(d[n] for d in distributions))
        out[n] = {g: sum(d[n].get(g, d[n][""]) for d in distributions) / len(distributions) for g in grams}
    return out


def blend(profile_dist: dict[int, dict[str, float]], own: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    return mean([profile_dist, profile_dist]) if not own else {
        n: {g: (1 - OWN_WEIGHT) * profile_dist[n].get(g, profile_dist[n][""]) + OWN_WEIGHT * own[n].get(g, own[n][""])
            for g in set(profile_dist[n]) | set(own[n])}
        for n in (1, 2, 3)
    }


def clip(value: float) -> float:
    return round(max(-MAX_LOG_RATIO, min(MAX_LOG_RATIO, value)), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"model file to write (default {OUT.relative_to(ROOT)})")
    out: Path = parser.parse_args(argv).out
    tuning = [json.loads(line) for line in (HERE / "tuning.jsonl").read_text(encoding="utf-8").splitlines()]
    departments = [json.loads(line) for half in ("train", "heldout")
                   for line in (ROOT / "tests" / "data" / f"departments_{half}.jsonl").read_text(encoding="utf-8")
                   .splitlines()]
    manglish = Counter(g for row in tuning if row["script"] == "Latn" for g in ngrams(row["text"]))
    english_own = Counter(g for row in tuning if row["label"] == "en" and row["text"].isascii()
                          for g in ngrams(row["text"]))
    english_own.update(g for row in departments if row["lang"] == "en" for g in ngrams(row["text"]))
    other_own = Counter(g for row in tuning if row["kind"] == "other" for g in ngrams(row["text"]))

    classes = {
        "ml": distribution(manglish),
        "en": blend(distribution(profile("en")), distribution(english_own)),
        "other": blend(mean([distribution(profile(code)) for code in OTHER_LATIN]), distribution(other_own)),
    }
    kept: set[str] = set()
    for dist in classes.values():
        for n in (1, 2, 3):
            ranked = sorted((g for g in dist[n] if g), key=lambda g: -dist[n][g])
            kept.update(ranked[:KEEP_PER_CLASS[n]])

    def logp(name: str, gram: str) -> float:
        table = classes[name][len(gram)]
        return math.log(table.get(gram, table[""]))

    model = {
        "about": "log P(g|Manglish) - log P(g|English), and - log P(g|other Latin); made by "
                 "tests/data/language/train_manglish.py from tests/data/language/tuning.jsonl and "
                 "langdetect's profiles",
        "ngrams": {g: [clip(logp("ml", g) - logp("en", g)), clip(logp("ml", g) - logp("other", g))]
                   for g in sorted(kept)},
    }
    out.write_text(json.dumps(model, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{len(kept)} n-grams -> {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

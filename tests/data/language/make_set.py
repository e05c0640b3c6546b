"""Builds the labelled language set and splits it, once, into a tuning half and a held-out half.

    .venv/bin/python tests/data/language/make_set.py

Reads the sentence files beside it (all written for this project) and the Malayalam-script items of
tests/data/departments_*.jsonl, and writes ``tuning.jsonl`` and ``heldout.jsonl``: one JSON object a
line with ``id``, ``text``, ``label`` (what detect_language must answer), ``script`` ('Latn' for
Malayalam typed in Latin letters, else ''), ``kind`` (finer class, for per-class figures), ``group``
(items made from one sentence share it and always land in the same half), ``source`` and ``licence``.

Manglish comes three ways: typed by hand (``manglish``, ``manglish-en``), hand-typed with its
spellings varied the way people vary them (njan/nyan/ngan, aanu/anu, illa/ila), and Malayalam-script
sentences transliterated in three informal styles (``manglish-translit``, see transliterate.py).
The split is a seeded shuffle within each kind, by group; it is fixed by this script and the seed.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path

from transliterate import STYLES, transliterate

HERE = Path(__file__).resolve().parent
DATA = HERE.parent
SEED = 14
OWN = "written for this project"
LICENCE = "MIT (this project)"

# Spelling variation people apply when typing Manglish; each applies to a whole word.
VARIANTS: list[tuple[str, tuple[str, ...]]] = [
    (r"njan", ("nyan", "ngan", "njaan")),
    (r"aanu", ("anu", "aan")),
    (r"illa", ("ila",)),
    (r"cheyyanam", ("cheyanam", "cheyyenam")),
    (r"cheyyu", ("cheyu",)),
    (r"cheythu", ("cheithu", "chythu")),
    (r"undu", ("und", "undd")),
    (r"ippo", ("ipo", "ippol")),
    (r"ente", ("nte", "entey")),
    (r"enthu", ("entha", "enth")),
    (r"ningal", ("ningalu", "ningl")),
    (r"sheri", ("shari", "seri")),
    (r"aayi", ("ayi", "aayii")),
    (r"kk", ("k",)),
    (r"aa", ("a",)),
    (r"ee", ("i",)),
]


def vary(text: str, rng: random.Random) -> str:
    """``text`` respelt: each variant pattern applies to a word with probability one half."""
    words = text.split(" ")
    for index, word in enumerate(words):
        for pattern, replacements in VARIANTS:
            if re.search(pattern, word) and rng.random() < 0.5:
                word = re.sub(pattern, rng.choice(replacements), word, count=1)
        words[index] = word
    return " ".join(words)


def lines(name: str) -> list[str]:
    return [line for line in (HERE / name).read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]


def build() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    items: list[dict[str, str]] = []

    def add(group: str, text: str, label: str, kind: str, source: str, script: str = "") -> None:
        items.append({"id": f"{group}-{sum(1 for i in items if i['group'] == group)}", "text": text,
                      "label": label, "script": script, "kind": kind, "group": group, "source": source,
                      "licence": LICENCE})

    for number, text in enumerate(lines("sentences_manglish.txt"), start=1):
        group = f"mg{number:03d}"
        add(group, text, "ml", "manglish", f"sentences_manglish.txt:{number}, {OWN}", "Latn")
        variant = vary(text, rng)
        if variant != text:
            add(group, variant, "ml", "manglish", f"sentences_manglish.txt:{number}, respelt", "Latn")
    for number, text in enumerate(lines("sentences_manglish_en.txt"), start=1):
        group = f"mge{number:03d}"
        add(group, text, "ml", "manglish-en", f"sentences_manglish_en.txt:{number}, {OWN}", "Latn")
        variant = vary(text, rng)
        if variant != text:
            add(group, variant, "ml", "manglish-en", f"sentences_manglish_en.txt:{number}, respelt", "Latn")
    for number, line in enumerate(lines("sentences_en.txt"), start=1):
        kind, text = line.split("\t", 1)
        add(f"en{number:03d}", text, "en", kind, f"sentences_en.txt:{number}, {OWN}")
    for number, line in enumerate(lines("sentences_other.txt"), start=1):
        code, text = line.split("\t", 1)
        add(f"ot{number:03d}", text, code, "other", f"sentences_other.txt:{number}, {OWN}")

    def translit(group: str, text: str, source: str) -> None:
        for style in rng.sample(STYLES, 2):
            add(group, transliterate(text, style, rng), "ml", "manglish-translit",
                f"{source}, transliterated ({style})", "Latn")

    for number, line in enumerate(lines("sentences_script.txt"), start=1):
        kind, text = line.split("\t", 1)
        label = {"ml": "ml", "ml-acronyms": "ml", "en-one-ml": "en"}.get(kind, "mixed")
        group = f"sc{number:03d}"
        add(group, text, label, kind, f"sentences_script.txt:{number}, {OWN}")
        if kind == "ml":
            translit(group, text, f"sentences_script.txt:{number}")
    for half in ("train", "heldout"):
        for line in (DATA / f"departments_{half}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["lang"] == "ml":
                translit(f"dp-{row['id']}", row["text"], f"tests/data/departments_{half}.jsonl {row['id']}")
    return items


def split(items: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(tuning, held-out): within each kind (a group's first item's), a seeded shuffle of the groups,
    alternately to each half."""
    rng = random.Random(SEED)
    groups_by_kind: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for item in items:
        if item["group"] not in seen:
            seen.add(item["group"])
            groups_by_kind[item["kind"]].append(item["group"])
    heldout_groups: set[str] = set()
    for kind in sorted(groups_by_kind):
        groups = groups_by_kind[kind]
        rng.shuffle(groups)
        heldout_groups.update(groups[1::2])
    tuning = [i for i in items if i["group"] not in heldout_groups]
    heldout = [i for i in items if i["group"] in heldout_groups]
    return tuning, heldout


def main() -> None:
    tuning, heldout = split(build())
    for name, rows in (("tuning", tuning), ("heldout", heldout)):
        with (HERE / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

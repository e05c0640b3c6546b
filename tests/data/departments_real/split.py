"""Splits the real-text department passages into a tuning half and a held-out half.

The split is stratified by (department, language) and fixed by SEED: within each stratum the
passages are sorted by id, shuffled with ``random.Random(SEED)``, and the first half (rounded
up: an odd one out, and a stratum of one, goes to the held-out half, because the Malayalam and
mixed strata are small and the held-out figure is the one that has to speak for them) is held
out. Re-running on the union of both halves gives the same two files, so ``--check`` can prove the
committed split is the seeded one.

    python tests/data/departments_real/split.py --check          # the committed halves are the seeded split
    python tests/data/departments_real/split.py --from all.jsonl  # (re)write tuning.jsonl and heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TUNING = HERE / "tuning.jsonl"
HELDOUT = HERE / "heldout.jsonl"
#: Fixes which passages are held out; changing it re-deals the halves and voids the held-out figure.
SEED = 20261206


def read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tuning, held-out), each in id order."""
    strata: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        strata[(row["department"], row["language"])].append(row)
    generator = random.Random(SEED)
    tuning: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda row: row["id"])
        generator.shuffle(members)
        half = (len(members) + 1) // 2
        heldout += members[:half]
        tuning += members[half:]
    return sorted(tuning, key=lambda row: row["id"]), sorted(heldout, key=lambda row: row["id"])


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="verify the committed halves")
    group.add_argument("--from", dest="source", type=Path, help="jsonl of all passages to split")
    args = parser.parse_args()
    if args.check:
        tuning, heldout = read(TUNING), read(HELDOUT)
        expected = split(tuning + heldout)
        if (tuning, heldout) != expected:
            print("the committed halves are not the seeded split", file=sys.stderr)
            return 1
        print(f"ok: {len(tuning)} tuning, {len(heldout)} held out")
        return 0
    tuning, heldout = split(read(args.source))
    write(TUNING, tuning)
    write(HELDOUT, heldout)
    print(f"wrote {len(tuning)} tuning and {len(heldout)} held-out passages")
    return 0


if __name__ == "__main__":
    sys.exit(main())

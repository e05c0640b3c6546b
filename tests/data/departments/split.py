"""Splits the labelled department passages into a tuning half and a held-out half.

The split is stratified by (department, language) and fixed by SEED: within each stratum the
passages are sorted by id, shuffled with ``random.Random(SEED)``, and the first half (rounded
down; an odd one out goes to the tuning half) is held out. Re-running on the union of both
halves gives the same two files, so ``--check`` can prove the committed split is the seeded one.

    python tests/data/departments/split.py --check          # the committed halves are the seeded split
    python tests/data/departments/split.py --from all.jsonl  # (re)write tuning.jsonl and heldout.jsonl
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
SEED = 20261205


def read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split(rows: list[dict[str, Any]], *, seed: int = SEED,
          odd_to_heldout: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tuning, held-out), each in id order; a stratum's odd one out goes to the tuning half, or to the
    held-out half with ``odd_to_heldout``."""
    strata: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        strata[(row["department"], row["language"])].append(row)
    generator = random.Random(seed)
    tuning: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda row: row["id"])
        generator.shuffle(members)
        half = (len(members) + odd_to_heldout) // 2
        heldout += members[:half]
        tuning += members[half:]
    return sorted(tuning, key=lambda row: row["id"]), sorted(heldout, key=lambda row: row["id"])


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(folder: Path = HERE, *, seed: int = SEED, odd_to_heldout: bool = False, what: str = "") -> int:
    """The command line of a split script: ``--check`` or ``--from FILE`` for the set in ``folder``."""
    parser = argparse.ArgumentParser(description=what or __doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="verify the committed halves")
    group.add_argument("--from", dest="source", type=Path, help="jsonl of all passages to split")
    args = parser.parse_args()
    tuning_path, heldout_path = folder / TUNING.name, folder / HELDOUT.name
    if args.check:
        tuning, heldout = read(tuning_path), read(heldout_path)
        expected = split(tuning + heldout, seed=seed, odd_to_heldout=odd_to_heldout)
        if (tuning, heldout) != expected:
            print("the committed halves are not the seeded split", file=sys.stderr)
            return 1
        print(f"ok: {len(tuning)} tuning, {len(heldout)} held out")
        return 0
    tuning, heldout = split(read(args.source), seed=seed, odd_to_heldout=odd_to_heldout)
    write(tuning_path, tuning)
    write(heldout_path, heldout)
    print(f"wrote {len(tuning)} tuning and {len(heldout)} held-out passages")
    return 0


if __name__ == "__main__":
    sys.exit(main())

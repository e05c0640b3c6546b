"""Splits the real-text department passages into a tuning half and a held-out half.

The split is stratified by (department, language) and fixed by SEED: within each stratum the
passages are sorted by id, shuffled with ``random.Random(SEED)``, and the first half (rounded
up: an odd one out, and a stratum of one, goes to the held-out half, because the Malayalam and
mixed strata are small and the held-out figure is the one that has to speak for them) is held
out. Re-running on the union of both halves gives the same two files, so ``--check`` can prove the
committed split is the seeded one.

    python tests/data/departments_real/split.py --check          # the committed halves are the seeded split
    python tests/data/departments_real/split.py --from all.jsonl  # (re)write tuning.jsonl and heldout.jsonl

The splitting itself is tests/data/departments/split.py's, with this set's seed and rounding.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Fixes which passages are held out; changing it re-deals the halves and voids the held-out figure.
SEED = 20261206

_spec = importlib.util.spec_from_file_location("department_split", HERE.parent / "departments" / "split.py")
assert _spec is not None and _spec.loader is not None
shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shared)

if __name__ == "__main__":
    sys.exit(shared.main(HERE, seed=SEED, odd_to_heldout=True, what=__doc__.splitlines()[0]))

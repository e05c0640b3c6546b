"""Scale-out benchmark: the whole eight-scope Maximo ingest by one Celery worker and by two, each worker
in its own network namespace (a veth pair to the host; Redis, the Hub and Maximo reached over it, as
from another machine), documents/s from the tick to the last document in the Hub.

Each measurement starts afresh (new Redis, Hub and Maximo simulators holding ``--docs-per-scope``
documents on each of eight sites), starts the workers (``celery -A scheduler worker -c 1`` under
``ip netns exec``) and waits until they answer a ping, then sends ``kmrl.tick`` as beat does and
times until every document is stored. One and two workers alternate, ``--rounds`` times; the
figures are medians. The simulators run in this process, which otherwise only waits. On a machine
with two cores shared with other work the ratio is a figure, not a target.

Needs root (network namespaces) and redis-server, as tests/reliability/test_two_workers.py.

    .venv/bin/python -m bench.bench_workers [--docs-per-scope 100] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.report import Figure, Result
from tests.reliability.netns import Link, NetnsUnavailable, namespaces
from tests.reliability.scaleout import POLL, SITES, fleet
from utils.logging import configure_logging

#: Longest one ingest may take before the benchmark gives up, seconds.
INGEST_TIMEOUT = 600.0


def ingest_rate(links: Sequence[Link], workers: int, docs_per_scope: int) -> tuple[int, float]:
    """(documents, seconds) of one whole ingest by ``workers`` workers, from the tick to the last upload."""
    with tempfile.TemporaryDirectory(prefix="kmrl-bench-workers-") as root, \
            fleet(Path(root), links, docs_per_scope=docs_per_scope) as running:
        for index in range(workers):
            running.start_worker(index)
        running.wait_ready(*range(workers))
        total = len(running.bed.expected)
        started = time.monotonic()
        running.tick()
        while running.stored() < total:
            if time.monotonic() - started > INGEST_TIMEOUT:
                raise SystemExit(f"{workers} worker(s) stored {running.stored()} of {total} in {INGEST_TIMEOUT} s")
            time.sleep(POLL)
        return total, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs-per-scope", type=int, default=100, help="documents on each of the eight sites")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each worker count (median)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    configure_logging(log_file="", level="WARNING")  # the simulators in this process: no line per request
    rates: dict[int, list[float]] = {1: [], 2: []}
    started, wall = datetime.now(UTC), time.perf_counter()
    try:
        with namespaces(2) as links:
            for round_no in range(1, args.rounds + 1):
                for workers in (1, 2):
                    documents, seconds = ingest_rate(links, workers, args.docs_per_scope)
                    rates[workers].append(documents / seconds)
                    print(f"round {round_no}: {workers} worker(s): {documents} documents in {seconds:.2f} s, "
                          f"{documents / seconds:.1f} documents/s", flush=True)
    except NetnsUnavailable as exc:
        print(f"bench_workers: {exc}", file=sys.stderr)
        return 2
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"Maximo, {len(SITES)} scopes x {args.docs_per_scope} documents, median of {args.rounds}: "
          f"one worker {one:.1f} documents/s, two workers {two:.1f} documents/s, ratio {two / one:.2f}")
    if args.json:
        result = Result("workers", "Two workers in two network namespaces (issue 15)",
                        "python -m bench.bench_workers " + shlex.join(argv if argv is not None else sys.argv[1:]),
                        started_at=started.strftime("%Y-%m-%d %H:%M UTC"), seconds=time.perf_counter() - wall)
        result.figures = [
            Figure(f"one worker: documents/s ({len(SITES)} Maximo scopes x {args.docs_per_scope})", round(one, 1),
                   "docs/s"),
            Figure("two workers, each in its own network namespace: documents/s", round(two, 1), "docs/s"),
            Figure("two workers / one worker", round(two / one, 2), "",
                   "a figure on 2 shared cores, not a target (issue 15)"),
        ]
        result.notes.append("each round: fresh Redis, Hub and Maximo simulators; workers are `celery -A scheduler "
                            "worker -c 1` under `ip netns exec`, reaching them over a veth pair")
        result.save(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

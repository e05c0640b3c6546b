"""Two Celery workers, each in its own network namespace (a veth pair to the host: Redis, the Hub and
Maximo reached over it, as from another machine), share the eight scopes of one Maximo:

- every scope runs on one worker at a time: no two runs of a scope held its lease at once (run
  intervals from the workers' logs and the scopes' history), and every upload the Hub received for a
  scope came from the worker whose run of that scope had started last;
- the work is shared: both workers ran scopes, side by side;
- one worker, SIGKILLed mid-run (with its whole process group, as a machine that dies), leaves its
  scope leased until the lease lapses; the other worker then takes it over and finishes it;
- in the end every document is in the Hub, stored once, with at most one batch plus the uploads in
  flight repeated for the kill, and nothing is left leased or dead-lettered.

The kill is aimed at progress, not at time: each namespace's uploads pass a gate in the Hub up to a
number that lies inside that worker's second scope run (every scope holds the same number of
documents, so a worker's uploads come in whole runs of that many); the first worker held there is
killed, so the kill lands part-way through a run on any machine, fast or loaded.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing
from pathlib import Path

import pytest
import redis

from tests.conftest import skip_or_fail
from tests.reliability.checks import assert_delivered_once, assert_settled, repeated_uploads, stored_sha256s
from tests.reliability.conftest import FULL
from tests.reliability.netns import Link, NetnsUnavailable, namespaces
from tests.reliability.scaleout import POLL, SITES, SOURCE, Fleet, Run, drive, fleet

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

#: Documents per scope (site): enough that a run takes seconds, and more than the repeat bound.
DOCS_PER_SCOPE = 60 if FULL else 40
#: A short lease, so the other worker may take a killed worker's scope over a few seconds later.
LOCK_TTL = 3.0
#: Documents acknowledged together (ACK_BATCH_SIZE), below the progress a kill interrupts.
ACK_BATCH = 16
#: Repeated uploads a kill may cause (README "What a crash costs"): one batch the Hub acknowledged and
#: the state does not yet record; the uploads in flight (HUB_UPLOADS_IN_FLIGHT) are among its documents.
REPEAT_BOUND = ACK_BATCH
#: Redis reports a key's time to live in whole milliseconds.
PTTL_RESOLUTION = 0.001
#: Seconds the workers may take to reach the kill, and to finish everything after it.
PHASE_TIMEOUT = 120.0


@pytest.fixture
def links() -> Iterator[Sequence[Link]]:
    """Two namespaces linked to the host, removed after the test however it ends."""
    with ExitStack() as stack:
        try:
            made = stack.enter_context(namespaces(2))
        except NetnsUnavailable as exc:
            skip_or_fail(f"two network namespaces cannot be made here: {exc}")
        yield made


def _wait_for_held(running: Fleet) -> int:
    """Waits until a worker's upload is held at its namespace's gate; that worker's index."""
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        for address, gate in running.gates.items():
            if gate.waiting:
                return running.worker_of(address)
        for index, worker in running.workers.items():
            assert worker.process.alive(), f"worker {index} died by itself: {worker.process.tail(40)}"
        assert time.monotonic() < deadline, (f"no worker reached its kill point in {PHASE_TIMEOUT} s: stored "
                                             f"{running.stored()}, statuses {running.statuses()}")
        time.sleep(POLL)


def _assert_one_holder_at_a_time(runs: list[Run], context: str) -> None:
    """No two runs of a scope overlap: each starts after every earlier one of that scope has ended."""
    unended = [r for r in runs if r.ended is None]
    assert not unended, f"{context}: runs with no end in their scope's history: {unended}"
    for scope in SITES:
        last_end, last = 0.0, None
        for run in (r for r in runs if r.scope == scope):  # runs come sorted by start
            assert run.started >= last_end, (f"{context}: scope {scope} was run by two workers at once: "
                                              f"{last} / {run}")
            if run.ended is not None and run.ended > last_end:
                last_end, last = run.ended, run


def _assert_uploads_come_from_the_holder(running: Fleet, runs: list[Run], context: str) -> None:
    """Each upload of a scope came from the worker whose run of that scope started last before it."""
    site_of: dict[str, str] = running.bed.sims["site_of"]
    for upload in running.uploads():
        scope = site_of.get(upload.key)
        assert scope is not None, f"{context}: an upload with an unknown key {upload.key!r}"
        before = [r for r in runs if r.scope == scope and r.started <= upload.arrived]
        assert before, f"{context}: an upload for {scope} arrived before any run of it took the lease"
        sender = running.worker_of(upload.remote)
        assert before[-1].worker == sender, (f"{context}: worker {sender} uploaded for {scope} at "
                                             f"{upload.arrived:.3f} while worker {before[-1].worker}'s run "
                                             f"{before[-1]} held it")


def test_two_workers_in_two_namespaces_share_the_scopes_one_holder_at_a_time_and_take_over_a_killed_run(
        links: Sequence[Link], tmp_path: Path, rng: random.Random, seed: int) -> None:
    # The held upload is this many documents into a worker's second run: more than the repeat bound,
    # so a kill that lost all of the run's progress would show.
    into_second_run = rng.randint(REPEAT_BOUND + 2, DOCS_PER_SCOPE - 2)
    env = {"LOCK_TTL_SECONDS": str(LOCK_TTL), "ACK_BATCH_SIZE": str(ACK_BATCH)}
    with fleet(tmp_path, links, docs_per_scope=DOCS_PER_SCOPE, env=env) as running:
        site_of: dict[str, str] = running.bed.sims["site_of"]
        for gate in running.gates.values():
            gate.allow(DOCS_PER_SCOPE + into_second_run)
        for index in range(len(links)):
            running.start_worker(index)
        running.wait_ready(*range(len(links)))
        # Two ticks at once (beat's and an operator's): every scope is sent twice, so the two workers
        # also contend for the same scope.
        running.tick()
        running.tick()

        victim = _wait_for_held(running)
        survivor = 1 - victim
        held = running.gates[links[victim].ns_addr].waiting[0]
        scope = site_of[held["HTTP_IDEMPOTENCY_KEY"]]
        in_scope = sum(1 for sha in stored_sha256s(running.hub) if site_of[sha] == scope)
        killed_at = running.kill(victim)
        with closing(redis.Redis.from_url(running.state_url)) as client:
            asked = time.time()
            lease_left = client.pttl(f"kmrl:lock:{SOURCE}:{scope}") / 1000
        context = (f"seed {seed}: worker {victim} killed {into_second_run} uploads into its second run, on "
                   f"{scope} ({in_scope} of {DOCS_PER_SCOPE} stored)")
        assert 0 < in_scope < DOCS_PER_SCOPE, f"{context}: the kill did not land part-way through a run"
        assert lease_left > 0, f"{context}: the killed worker's lease did not outlive it"
        victim_gate = running.gates[links[victim].ns_addr]
        victim_gate.drop_held()  # what the dead worker sent and the Hub held never reaches the Hub
        assert victim_gate.wait_for(lambda g: g.inside == 0, timeout=30), f"{context}: the Hub hangs"
        for gate in running.gates.values():
            gate.open()

        ticks = drive(running, timeout=PHASE_TIMEOUT)
        running.stop(survivor)
        runs = running.runs()

        assert_delivered_once(running.hub, running.bed.expected, max_repeats=REPEAT_BOUND, context=context)
        assert_settled(running.state_url, SOURCE)
        _assert_one_holder_at_a_time(runs, context)
        _assert_uploads_come_from_the_holder(running, runs, context)

        killed = [r for r in runs if r.state == "killed"]
        assert [(r.worker, r.scope) for r in killed] == [(victim, scope)], f"{context}: killed runs {killed}"
        after = [r for r in runs if r.scope == scope and r.started > killed_at]
        assert after and after[0].worker == survivor, f"{context}: nobody took {scope} over: {after}"
        # Not before the dead worker's lease lapsed: it expired no earlier than it had left when asked
        # (less a millisecond: PTTL counts whole ones).
        lapsed = asked + lease_left - PTTL_RESOLUTION
        assert after[0].started >= lapsed, (f"{context}: {scope} was taken over {lapsed - after[0].started:.3f} s "
                                            f"before the dead worker's lease lapsed")
        ok_runs = Counter(r.worker for r in runs if r.state == "ok")
        assert ok_runs[victim] >= 1 and ok_runs[survivor] >= 1, f"{context}: runs per worker {ok_runs}"
        assert min(r.started for r in runs if r.worker == survivor) < killed_at, \
            f"{context}: worker {survivor} ran nothing while worker {victim} was alive"
        senders = Counter(running.worker_of(u.remote) for u in running.uploads() if u.status in (200, 201))
        print(f"{context}; runs ok per worker {dict(ok_runs)}, uploads per worker {dict(senders)}, "
              f"{repeated_uploads(running.hub)} repeated uploads (bound {REPEAT_BOUND}), taken over by worker "
              f"{survivor} {after[0].started - killed_at:.2f} s after the kill (lease had {lease_left:.2f} s "
              f"left), {ticks} ticks after the kill, {len(running.bed.expected)} documents stored once")

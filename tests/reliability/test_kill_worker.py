"""A worker SIGKILLed at random moments of a large sync, round after round, for every source; then
synced until done: every document reaches the Hub, stored once, with at most one repeated upload
per kill (the pipeline has one document in flight), and nothing left dead-lettered or leased.

Reduced in ``make test`` (3 rounds of 200 documents); KMRL_RELIABILITY_FULL=1 runs 20 rounds of 1,000.
The worker is the real ``kmrl-connectors sync SOURCE`` process; the sources (Dovecot, the Maximo,
Graph and WhatsApp simulators) and the Hub simulator live outside it and survive every kill.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from sandbox.dovecot import DovecotServer
from sandbox.hub import RunningHub
from sandbox.tls import CertAuthority
from tests.reliability.beds import SOURCES, Bed, email_bed, maximo_bed, service_env, sharepoint_bed, whatsapp_bed
from tests.reliability.checks import assert_delivered_once, assert_settled, repeated_uploads, stored_sha256s
from tests.reliability.conftest import FULL, KILL_DOCUMENTS, KILL_ROUNDS
from tests.reliability.workers import KillRound, Worker, kill_round, run_until

# A full run of one source is 20 worker processes and a 1,000-document sync: more than the default 300 s.
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1800 if FULL else 600)]


@contextmanager
def bed_for(source: str, request: pytest.FixtureRequest, root: Path, state_url: str, count: int) -> Iterator[Bed]:
    with ExitStack() as stack:
        if source == "email":
            dovecot: DovecotServer = request.getfixturevalue("dovecot")
            yield stack.enter_context(email_bed(dovecot, count))
        elif source == "maximo":
            yield stack.enter_context(maximo_bed(count))
        elif source == "sharepoint":
            ca: CertAuthority = request.getfixturevalue("ca")
            yield stack.enter_context(sharepoint_bed(ca, count))
        else:
            yield stack.enter_context(whatsapp_bed(root, state_url, count))


@pytest.mark.parametrize("source", SOURCES)
def test_sigkilled_worker_loses_nothing_and_repeats_only_in_flight_uploads(
        source: str, request: pytest.FixtureRequest, tmp_path: Path, state_url: str, rel_hub: RunningHub,
        rng: random.Random, seed: int) -> None:
    with bed_for(source, request, tmp_path, state_url, KILL_DOCUMENTS) as bed:
        worker = Worker({**service_env(tmp_path, state_url, rel_hub), **bed.env}, tmp_path / "runs")
        rounds: list[KillRound] = []
        self_ended: list[KillRound] = []  # runs that stopped before the kill: transient, lease lost
        while len(rounds) < KILL_ROUNDS:
            remaining = len(bed.expected - stored_sha256s(rel_hub))
            # Spread the kills over the sync: each round may take at most its share of what is left.
            step = max(1, remaining // (KILL_ROUNDS - len(rounds) + 1))
            done = kill_round(worker, rel_hub, rng, source, max_step=step)
            if not done.killed and done.result.locked:
                continue  # the killed run's lease has not expired yet; this was the next tick
            if not done.killed and not done.result.all_ok:
                # A run may end by itself on a loaded machine (a timeout, a frozen heartbeat): that is
                # the next tick's business, not a kill round; the invariants below still hold.
                assert "Traceback" not in done.result.stderr, f"seed {seed}: a run crashed: {done.result.describe()}"
                self_ended.append(done)
                assert len(self_ended) <= KILL_ROUNDS, f"seed {seed}: runs keep failing: {done.result.describe()}"
                continue
            rounds.append(done)
        kills = sum(r.killed for r in rounds)
        context = (f"seed {seed}, {source}, {kills} kills "
                   f"({sum(r.early for r in rounds if r.killed)} early) in {KILL_ROUNDS} rounds")
        assert kills >= KILL_ROUNDS - 1, f"{context}: the sync finished before the rounds could interrupt it"

        finals = run_until(worker, source, lambda r: r.all_ok and bed.expected <= stored_sha256s(rel_hub))
        # What happened, for the record (pytest shows it with -rP or -s).
        print(f"{context}: {repeated_uploads(rel_hub)} repeated uploads, {len(self_ended)} runs ended by "
              f"themselves, {len(finals)} runs to finish, {len(bed.expected)} documents stored once")
        assert_delivered_once(rel_hub, bed.expected, max_repeats=kills, context=context)
        assert_settled(state_url, source)
        assert finals[-1].returncode == 0, finals[-1].describe()
        if source == "whatsapp":
            import redis

            client = redis.Redis.from_url(state_url)
            try:
                assert client.xlen("kmrl:whatsapp:inbox") == 0, f"{context}: entries left in the inbox stream"
            finally:
                client.close()

"""A worker SIGKILLed at random points of a large sync, round after round, for every source; then
synced until done: every document reaches the Hub, stored once, with at most one batch of repeated
uploads per kill (README "What a crash costs": what the Hub acknowledged and the state did not yet
record, the uploads in flight among them), and nothing left dead-lettered or leased.

Each kill is aimed at progress the test sees (the n-th upload reaching the Hub), not at a time, and
the Hub holds a round's uploads beyond what is left minus one, so every round kills a run part-way
on any machine, fast or loaded (tests/reliability/gate.py).

Reduced in ``make test`` (3 rounds of 200 documents); KMRL_RELIABILITY_FULL=1 runs 20 rounds of 1,000.
The worker is the real ``kmrl-connectors sync SOURCE`` process; the sources (Dovecot, the Maximo,
Graph and WhatsApp simulators) and the Hub simulator live outside it and survive every kill.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from sandbox.dovecot import DovecotServer
from sandbox.hub import RunningHub
from sandbox.tls import CertAuthority
from tests.reliability import workers
from tests.reliability.beds import BATCH, SOURCES, Bed, email_bed, maximo_bed, service_env, sharepoint_bed, whatsapp_bed
from tests.reliability.checks import assert_delivered_once, assert_settled, repeated_uploads, stored_sha256s
from tests.reliability.conftest import FULL, KILL_DOCUMENTS, KILL_ROUNDS
from tests.reliability.gate import Gate
from tests.reliability.workers import LEASE_HEAD_START, KillRound, Leases, Worker, kill_round, run_until

# A full run of one source is 20 worker processes and a 1,000-document sync: more than the default 300 s.
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1800 if FULL else 600)]

#: Uploads a kill may leave acknowledged by the Hub and unrecorded: one batch of the workers' ACK_BATCH_SIZE.
REPEATS_PER_KILL = BATCH
#: How late the test reacts in the late-reaction test, seconds: far longer than syncing its documents takes.
LATE = 2.0


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
def test_sigkilled_worker_loses_nothing_and_repeats_at_most_a_batch_per_kill(
        source: str, request: pytest.FixtureRequest, tmp_path: Path, state_url: str, rel_hub: RunningHub,
        upload_gate: Gate, rng: random.Random, seed: int) -> None:
    with ExitStack() as stack:
        bed = stack.enter_context(bed_for(source, request, tmp_path, state_url, KILL_DOCUMENTS))
        worker = Worker({**service_env(tmp_path, state_url, rel_hub), **bed.env}, tmp_path / "runs")
        leases = stack.enter_context(closing(Leases(state_url, source)))
        rounds: list[KillRound] = []
        self_ended: list[KillRound] = []  # runs that stopped before the kill: transient, lease lost
        locked = 0  # runs started while the killed one's lease was still alive
        while len(rounds) < KILL_ROUNDS:
            remaining = len(bed.expected - stored_sha256s(rel_hub))
            # Spread the kills over the sync: each round may take at most its share of what is left.
            step = max(1, remaining // (KILL_ROUNDS - len(rounds) + 1))
            leases.wait_until_lapsing(LEASE_HEAD_START)
            done = kill_round(worker, upload_gate, leases, rng, source, remaining=remaining, max_step=step)
            if done.killed:
                rounds.append(done)
                left = len(bed.expected - stored_sha256s(rel_hub))
                assert left, f"seed {seed}: round {len(rounds)} killed a run that had stored everything"
                continue
            # The gate held the last uploads: a run that was not killed cannot have finished the sync.
            assert not (done.result.all_ok and bed.expected <= stored_sha256s(rel_hub)), \
                f"seed {seed}: a run finished although the Hub held its last uploads: {done.result.describe()}"
            if done.result.locked:
                locked += 1
                assert locked <= 10 * KILL_ROUNDS, f"seed {seed}: the scope stays locked: {done.result.describe()}"
                continue
            # A run may end by itself on a loaded machine (a timeout, a frozen heartbeat): that is the
            # next tick's business, not a kill round; the invariants below still hold.
            assert "Traceback" not in done.result.stderr, f"seed {seed}: a run crashed: {done.result.describe()}"
            self_ended.append(done)
            assert len(self_ended) <= KILL_ROUNDS, f"seed {seed}: runs keep failing: {done.result.describe()}"
        kills = ", ".join("early" if r.early else f"at upload {r.target} (of {r.uploads})" for r in rounds)
        context = f"seed {seed}, {source}, {len(rounds)} kills: {kills}"

        leases.wait_until_lapsing(LEASE_HEAD_START)
        finals = run_until(worker, source, lambda r: r.all_ok and bed.expected <= stored_sha256s(rel_hub))
        # What happened, for the record (pytest shows it with -rP or -s).
        print(f"{context}; {repeated_uploads(rel_hub)} repeated uploads, {locked} runs found the scope locked, "
              f"{len(self_ended)} ended by themselves, {len(finals)} runs to finish, "
              f"{len(bed.expected)} documents stored once")
        assert_delivered_once(rel_hub, bed.expected, max_repeats=REPEATS_PER_KILL * len(rounds), context=context)
        assert_settled(state_url, source)
        assert finals[-1].returncode == 0, finals[-1].describe()
        if source == "whatsapp":
            import redis

            client = redis.Redis.from_url(state_url)
            try:
                assert client.xlen("kmrl:whatsapp:inbox") == 0, f"{context}: entries left in the inbox stream"
            finally:
                client.close()


class _Latest(random.Random):
    """Random choices at their latest: the kill waits the longest the jitter allows."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_a_kill_aimed_at_progress_lands_mid_run_however_late_the_test_reacts(
        tmp_path: Path, state_url: str, rel_hub: RunningHub, upload_gate: Gate,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A loaded machine can stall the test process for seconds between seeing the target upload and the
    # kill: here it waits LATE s, while the whole sync of these documents takes well under that.
    monkeypatch.setattr(workers, "KILL_JITTER", LATE)
    documents = 10
    with maximo_bed(documents) as bed, closing(Leases(state_url, "maximo")) as leases:
        worker = Worker({**service_env(tmp_path, state_url, rel_hub), **bed.env}, tmp_path / "runs")
        done = kill_round(worker, upload_gate, leases, _Latest(7), "maximo", remaining=documents, max_step=1,
                          early_share=0.0)
        assert done.killed, f"the run was not killed part-way: {done.result.describe()}"
        # Target 1, and the Hub lets one more upload through: what the run could do before the kill.
        assert done.target == 1 and done.uploads <= documents - 1, done
        assert len(stored_sha256s(rel_hub)) <= 2 < documents

        leases.wait_until_lapsing()
        finals = run_until(worker, "maximo", lambda r: r.all_ok and bed.expected <= stored_sha256s(rel_hub))
        assert finals[-1].returncode == 0, finals[-1].describe()
        assert_delivered_once(rel_hub, bed.expected, max_repeats=REPEATS_PER_KILL, context="a kill from a late test")
        assert_settled(state_url, "maximo")

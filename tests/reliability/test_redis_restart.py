"""Redis restarted mid-sync (append-only persistence, down for two seconds): the run fails cleanly (a
classified state, no traceback) or carries on; the next run completes; nothing lost or stored twice.

The state Redis is a private redis-server (``--appendonly yes``), so restarting it disturbs no other
test. WhatsApp is the sharpest case: its inbox stream, the only record of what Meta announced, lives
in that Redis and must survive the restart with every entry.

One restart per source (a module fixture); the tests read what it left.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import redis

from sandbox.hub import RunningHub
from tests.reliability.beds import BATCH, Bed, maximo_bed, service_env, whatsapp_bed
from tests.reliability.checks import assert_delivered_once, assert_settled, stored_sha256s
from tests.reliability.conftest import FAULT_DOCUMENTS, FULL, HUB_TOKEN
from tests.reliability.gate import gated_hub
from tests.reliability.redis_server import PrivateRedis
from tests.reliability.workers import RUN_TIMEOUT, RunResult, Worker, run_until, wait_for_gate

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900 if FULL else 300)]

#: Documents in the interrupted sync: enough that the restart lands in its middle.
DOCUMENTS = FAULT_DOCUMENTS * 3
#: How long Redis stays down: longer than redis-py's own reconnect retries, so the run must notice.
DOWN_FOR = 2.0  # seconds


@dataclass
class Restarted:
    """What a Redis restart under a running sync left behind."""

    source: str
    bed: Bed
    hub: RunningHub
    state_url: str
    interrupted: RunResult
    afterwards: list[RunResult]


@pytest.fixture(scope="module", params=["maximo", "whatsapp"])
def restarted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    source = request.param
    root = tmp_path_factory.mktemp(f"redis-restart-{source}")
    with ExitStack() as stack:
        server = stack.enter_context(PrivateRedis(root / "redis"))
        hub, gate = stack.enter_context(gated_hub(token=HUB_TOKEN, data_dir=root / "hub"))
        bed = stack.enter_context(maximo_bed(DOCUMENTS) if source == "maximo"
                                  else whatsapp_bed(root, server.url(0), DOCUMENTS))
        worker = Worker({**service_env(root, server.url(0), hub), **bed.env}, root / "runs")
        # The restart must land part-way on any machine: the Hub takes a third of the uploads and holds
        # the next one until Redis is down, so the run can neither finish first nor miss the outage.
        gate.allow(DOCUMENTS // 3)
        process, out, err = worker.start("sync", source)
        held = wait_for_gate(process, gate, lambda g: len(g.waiting) > 0, what="an upload held by the Hub", err=err)
        assert held, f"the sync ended before Redis could be restarted under it: {worker.result(process, out, err)}"
        server.restart(down_for=DOWN_FOR, while_down=gate.open)
        process.wait(timeout=RUN_TIMEOUT)
        interrupted = worker.result(process, out, err)
        afterwards = run_until(worker, source, lambda r: r.all_ok and bed.expected <= stored_sha256s(hub))
        yield Restarted(source, bed, hub, server.url(0), interrupted, afterwards)


def test_next_runs_deliver_every_document_once_after_a_redis_restart(restarted: Restarted) -> None:
    # One batch may have been between the Hub's answer and its record when Redis went away.
    assert_delivered_once(restarted.hub, restarted.bed.expected, max_repeats=BATCH,
                          context=f"{restarted.source}, Redis restarted; first run {restarted.interrupted.states}")
    assert_settled(restarted.state_url, restarted.source)
    if restarted.source == "whatsapp":  # the stream kept every entry through the restart, and is drained
        client = redis.Redis.from_url(restarted.state_url)
        try:
            assert client.xlen("kmrl:whatsapp:inbox") == 0
            assert client.xpending("kmrl:whatsapp:inbox", "kmrl-connectors")["pending"] == 0
        finally:
            client.close()


def test_run_interrupted_by_a_redis_restart_ends_in_a_classified_state(restarted: Restarted) -> None:
    interrupted = restarted.interrupted
    assert "Traceback" not in interrupted.stderr, f"the run crashed: {interrupted.describe()}"
    assert interrupted.states and set(interrupted.states.values()) <= {"ok", "error"}, interrupted.describe()

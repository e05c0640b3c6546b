"""The Hub failing for a while (500, 503, 429 with Retry-After, answers slower than the read timeout,
dropped connections), then recovering: the sync carries on or ends as a transient error and the next
tick resumes; every document is stored once, and a repeated upload only ever follows a faulted answer
for that very document. The Hub refusing one document (422): it is dead-lettered with its bytes, the
rest go on, and ``kmrl-connectors deadletter retry`` delivers it once the Hub takes it.

The source is the Maximo simulator; the connector is built from the same environment a worker gets
(``registry.build_connectors``), and runs in this process so the fault can be switched on mid-run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from base.state import StateStore
from sandbox.hub import RunningHub
from tests.reliability.beds import Bed, maximo_bed, service_env
from tests.reliability.checks import assert_delivered_once, assert_settled, stored_sha256s
from tests.reliability.conftest import FAULT_DOCUMENTS, FULL
from tests.reliability.inprocess import AfterUploads, connector_for, tick_until_delivered
from tests.reliability.workers import Worker

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900 if FULL else 300)]

#: How long each fault lasts once switched on; longer than one request's retries (about 2 s).
FAULT_SECONDS = 3.0
#: The Hub's read timeout in these tests, seconds; the "slow" fault answers later than this. Every upload
#: has it, so it is far above what a loaded machine takes to answer one: a retry must mean a fault.
READ_TIMEOUT = 3.0
#: Longest the Hub may take to log an answer held by a slow fault, seconds (it takes 2 x READ_TIMEOUT).
SETTLE_TIMEOUT = 60.0


@pytest.fixture
def bed() -> Iterator[Bed]:
    with maximo_bed(FAULT_DOCUMENTS) as running:
        yield running


def environment(tmp_path: Path, state_url: str, hub: RunningHub, bed: Bed) -> dict[str, str]:
    return {**service_env(tmp_path, state_url, hub), **bed.env, "HUB_READ_TIMEOUT": str(READ_TIMEOUT)}


def settle(hub: RunningHub) -> None:
    """Ends the faults and waits until every upload the Hub counted is in its request log: a request
    held by a slow answer is logged only when it is answered, possibly after its client gave up."""
    hub.sim.clear_faults()
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        logged = sum(1 for entry in list(hub.sim.requests) if entry["endpoint"] == "upload")
        if logged >= sum(list(hub.sim.uploads_per_key.values())):
            return
        time.sleep(0.05)
    raise AssertionError("the Hub simulator still has unanswered uploads")


def faulted_requests_per_key(hub: RunningHub) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in list(hub.sim.requests):
        if entry["endpoint"] == "upload" and entry["fault"] and entry["key"]:
            counts[entry["key"]] = counts.get(entry["key"], 0) + 1
    return counts


FAULTS: dict[str, dict[str, Any]] = {
    "500": {"kind": "error", "status": 500},
    "503": {"kind": "error", "status": 503},
    "429-retry-after": {"kind": "throttle", "retry_after": 1},
    "read-timeout": {"kind": "slow", "delay": 2 * READ_TIMEOUT},
    "dropped-connection": {"kind": "drop"},
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_hub_failing_for_a_while_then_recovering_loses_and_doubles_nothing(
        fault: str, tmp_path: Path, state_url: str, rel_hub: RunningHub, bed: Bed) -> None:
    connector = connector_for("maximo", environment(tmp_path, state_url, rel_hub, bed))
    spec = FAULTS[fault]
    connector.hub = AfterUploads(connector.hub, FAULT_DOCUMENTS // 3, lambda: rel_hub.sim.set_fault(
        spec["kind"], seconds=FAULT_SECONDS, endpoint="upload", **{k: v for k, v in spec.items() if k != "kind"}))

    runs = tick_until_delivered(connector, bed.expected, rel_hub)
    settle(rel_hub)

    faulted = faulted_requests_per_key(rel_hub)
    assert faulted, f"the {fault} fault never fired"
    context = f"Hub fault {fault}, runs {[r.state for r in runs]}"
    assert_delivered_once(rel_hub, bed.expected, max_repeats=sum(faulted.values()), context=context)
    unexplained = {key: n for key, n in rel_hub.sim.uploads_per_key.items() if n - 1 > faulted.get(key, 0)}
    assert not unexplained, f"{context}: repeated uploads not preceded by a faulted answer: {unexplained}"
    assert_settled(state_url, "maximo")


def test_retry_after_from_the_hub_is_honoured_before_the_next_upload(
        tmp_path: Path, state_url: str, rel_hub: RunningHub, bed: Bed) -> None:
    connector = connector_for("maximo", environment(tmp_path, state_url, rel_hub, bed))
    connector.hub = AfterUploads(connector.hub, 5, lambda: rel_hub.sim.set_fault(
        "throttle", retry_after=1, count=3, endpoint="upload"))
    tick_until_delivered(connector, bed.expected, rel_hub)
    uploads = [entry for entry in list(rel_hub.sim.requests) if entry["endpoint"] == "upload"]
    throttled = [i for i, entry in enumerate(uploads) if entry["fault"] == "throttle"]
    assert len(throttled) == 3
    for i in throttled:
        gap = uploads[i + 1]["at"] - uploads[i]["at"]
        # The 429 said "Retry-After: 1"; the log stamps answers, so allow for the next request's own time.
        assert gap >= 0.95, f"an upload came {gap:.3f} s after a 429 with Retry-After: 1"
    # Each pause went through the Redis gate every worker reads (the key itself expires with the pause).
    counters, _ = StateStore.from_url(state_url).metrics()
    assert counters.get("kmrl_throttled_seconds_total|service=hub", 0.0) >= 2.5


def test_document_refused_with_422_is_dead_lettered_and_delivered_by_deadletter_retry(
        tmp_path: Path, state_url: str, rel_hub: RunningHub, bed: Bed) -> None:
    env = environment(tmp_path, state_url, rel_hub, bed)
    refused = sorted(bed.expected)[0]
    rel_hub.sim.set_fault("reject", match=refused, status=422)
    summary = connector_for("maximo", env).sync_documents()

    assert summary.state == "ok" and summary.totals["dead_lettered"] == 1, summary.as_dict()
    assert stored_sha256s(rel_hub) == bed.expected - {refused}  # the rest went on
    state = StateStore.from_url(state_url)
    [entry] = state.list_dead_letters("maximo")
    assert "422" in entry.reason and entry.bytes_path and Path(entry.bytes_path).is_file()

    # Still refused: retry keeps the entry and says so.
    still = Worker(env, tmp_path / "cli").run("deadletter", "retry", "maximo")
    assert still.returncode == 1 and "failed" in still.stdout, still.describe()
    assert len(state.list_dead_letters("maximo")) == 1

    rel_hub.sim.clear_faults()
    replayed = Worker(env, tmp_path / "cli").run("deadletter", "retry", "maximo")
    assert replayed.returncode == 0 and "replayed" in replayed.stdout, replayed.describe()
    assert_delivered_once(rel_hub, bed.expected, max_repeats=2, context="422 then deadletter retry")
    assert rel_hub.sim.stored_per_key[refused] == 1
    assert state.list_dead_letters("maximo") == []
    assert not Path(entry.bytes_path).exists()
    # A sync afterwards knows the item is done: nothing is uploaded again.
    before = dict(rel_hub.sim.uploads_per_key)
    assert connector_for("maximo", env).sync_documents().totals["new"] == 0
    assert rel_hub.sim.uploads_per_key == before

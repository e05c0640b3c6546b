"""No item pins a scope: one item whose download fails transiently in every run is dead-lettered after
ITEM_TRANSIENT_RUNS runs and the items after it are ingested; a source down as a whole, its file host
down while its listing works, or the Hub down, dead-letter nothing however many runs they last.

Against the real Maximo simulator (faults on demand) and the real Hub simulator, over sockets, on a
real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from base.base_connector import SyncSummary
from base.hub_client import HttpHub
from config.settings import Settings
from connectors.maximo_connector import MaximoConnector
from sandbox.maximo import DEFAULT_API_KEYS, MaximoSimulator, WorkOrder
from sandbox.servers import ServerThread
from utils.http import RetryPolicy

API_KEY = {"api_key": DEFAULT_API_KEYS[0]}
RUNS = 3  # ITEM_TRANSIENT_RUNS in these tests (the default)
FOREVER = 10**6  # requests a fault lasts: longer than any test


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries still happen (every failed download is tried as often as in production), without the
    sleeps between them."""
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.0)


@pytest.fixture
def sim() -> Iterator[tuple[MaximoSimulator, str]]:
    simulator = MaximoSimulator()
    with ServerThread(simulator) as server:
        yield simulator, server.url


def connector(url: str, settings: Settings, hub: Any) -> MaximoConnector:
    assert settings.item_transient_runs == RUNS
    return MaximoConnector(url, settings=settings, hub=HttpHub(hub.url, hub.token))


def source_id(wo: WorkOrder) -> str:
    (link_id,) = wo.doclinks
    return f"{wo.siteid}/{wo.wonum}/{link_id}"


def doclink_path(wo: WorkOrder) -> str:
    (link_id,) = wo.doclinks
    return f"/{wo.rest_id}/doclinks/{link_id}"


def ingested(hub: Any) -> set[str]:
    return {doc.metadata["source_id"] for doc in hub.sim.documents.values()}


def sync(conn: MaximoConnector) -> SyncSummary:
    return conn.sync_documents(API_KEY)


def test_item_failing_in_every_run_is_dead_lettered_after_the_limit_and_the_next_is_ingested(
        sim: tuple[MaximoSimulator, str], settings: Settings, hub: Any) -> None:
    maximo, url = sim
    bad = maximo.add_work_order(attachments=1)
    good = maximo.add_work_order(attachments=1)
    maximo.fail_next(FOREVER, status=503, match=doclink_path(bad))
    conn = connector(url, settings, hub)
    for run in range(1, RUNS):
        summary = sync(conn)
        assert summary.state == "error" and "503" in summary.scopes[0].error, summary.as_dict()
        assert conn.state.list_dead_letters("maximo") == [] and ingested(hub) == set()
        assert conn.state.item_failures("maximo", "all")[source_id(bad)]["runs"] == run
    summary = sync(conn)
    assert summary.state == "ok" and summary.totals["dead_lettered"] == 1 and summary.totals["new"] == 1
    (entry,) = conn.state.list_dead_letters("maximo")
    assert entry.source_id == source_id(bad)
    assert f"failed transiently in {RUNS} runs" in entry.reason and "503" in entry.reason
    assert ingested(hub) == {source_id(good)}
    assert conn.state.item_failures("maximo", "all") == {}  # cleared once dead-lettered
    assert conn.state.get_cursor("maximo", "all")["taken"] == [f"MUTTOM/{good.wonum}"]


def test_dead_lettered_item_met_again_after_a_crash_is_dead_lettered_again_at_once(
        sim: tuple[MaximoSimulator, str], settings: Settings, hub: Any) -> None:
    maximo, url = sim
    bad = maximo.add_work_order(attachments=1)
    good = maximo.add_work_order(attachments=1)
    maximo.fail_next(FOREVER, status=503, match=doclink_path(bad))
    conn = connector(url, settings, hub)
    for _ in range(RUNS):
        sync(conn)
    assert ingested(hub) == {source_id(good)}
    # A crash after the dead-letter and the next item's record, before the cursor was saved: the next
    # run meets the item again with nothing else to download. It must not pin the scope again.
    conn.state.clear_cursor("maximo", "all")
    summary = sync(conn)
    assert summary.state == "ok" and summary.totals["dead_lettered"] == 1 and summary.totals["duplicate"] == 1
    (entry,) = conn.state.list_dead_letters("maximo")
    assert entry.attempts == 2 and "again after it was dead-lettered" in entry.reason
    assert conn.state.get_cursor("maximo", "all")["taken"] == [f"MUTTOM/{good.wonum}"]


def test_a_run_counts_once_per_item_however_often_it_is_retried(
        sim: tuple[MaximoSimulator, str], settings: Settings, hub: Any) -> None:
    maximo, url = sim
    bad = maximo.add_work_order(attachments=1)
    maximo.fail_next(FOREVER, status=503, match=doclink_path(bad))
    conn = connector(url, settings, hub)
    summary = sync(conn)
    run_id = summary.scopes[0].run_id
    # The same run meeting the item again (a listing that repeats it) does not count it twice.
    assert conn.state.count_item_failure("maximo", "all", source_id(bad), run_id=run_id, reason="again") == 1
    assert conn.state.item_failures("maximo", "all")[source_id(bad)]["runs"] == 1


def test_item_that_recovers_before_the_limit_is_ingested_and_its_count_cleared(
        sim: tuple[MaximoSimulator, str], settings: Settings, hub: Any) -> None:
    maximo, url = sim
    flaky = maximo.add_work_order(attachments=1)
    maximo.fail_next(FOREVER, status=503, match=doclink_path(flaky))
    conn = connector(url, settings, hub)
    for _ in range(RUNS - 1):
        assert sync(conn).state == "error"
    maximo.faults.clear()
    summary = sync(conn)
    assert summary.state == "ok" and summary.totals["new"] == 1 and summary.totals["dead_lettered"] == 0
    assert conn.state.item_failures("maximo", "all") == {}


def test_whole_source_outage_for_more_runs_than_the_limit_dead_letters_nothing(
        sim: tuple[MaximoSimulator, str], settings: Settings, hub: Any) -> None:
    maximo, url = sim
    wos = [maximo.add_work_order(attachments=1) for _ in range(3)]
    maximo.fail_next(FOREVER, status=503)  # every request: the listing and every file
    conn = connector(url, settings, hub)
    for _ in range(RUNS + 1):
        summary = sync(conn)
        assert summary.state == "error" and summary.totals["fetched"] == 0
    assert conn.state.list_dead_letters("maximo") == []
    assert conn.state.item_failures("maximo", "all") == {}
    maximo.faults.clear()
    summary = sync(conn)
    assert summary.state == "ok" and summary.totals["new"] == 3
    assert ingested(hub) == {source_id(wo) for wo in wos}


def test_files_down_while_the_listing_works_dead_letters_nothing(
        sim: tuple[MaximoSimulator, str], settings: Settings, hub: Any) -> None:
    maximo, url = sim
    wos = [maximo.add_work_order(attachments=1) for _ in range(3)]
    maximo.fail_next(FOREVER, status=503, match="/doclinks/")  # every file, never the listing
    conn = connector(url, settings, hub)
    for _ in range(2 * RUNS):
        summary = sync(conn)
        assert summary.state == "error" and summary.totals["new"] == 0
    # Items came due, but no other file downloaded in any run to prove the failures their own.
    assert conn.state.list_dead_letters("maximo") == []
    assert conn.state.item_failures("maximo", "all")[source_id(wos[0])]["runs"] >= RUNS
    assert conn.state.get_cursor("maximo", "all") is None
    maximo.faults.clear()
    summary = sync(conn)
    assert summary.state == "ok" and summary.totals["new"] == 3 and summary.totals["dead_lettered"] == 0
    assert ingested(hub) == {source_id(wo) for wo in wos}
    assert conn.state.item_failures("maximo", "all") == {}


def test_hub_outage_for_more_runs_than_the_limit_dead_letters_nothing(
        sim: tuple[MaximoSimulator, str], settings: Settings, hub: Any) -> None:
    maximo, url = sim
    wos = [maximo.add_work_order(attachments=1) for _ in range(3)]
    hub.sim.set_fault("error", status=503)  # until cleared
    conn = connector(url, settings, hub)
    for _ in range(RUNS + 1):
        summary = sync(conn)
        assert summary.state == "error" and summary.totals["new"] == 0
    assert conn.state.list_dead_letters("maximo") == []
    assert conn.state.item_failures("maximo", "all") == {}
    hub.sim.clear_faults()
    summary = sync(conn)
    assert summary.state == "ok" and summary.totals["new"] == 3
    assert ingested(hub) == {source_id(wo) for wo in wos}


def test_setting_reads_item_transient_runs() -> None:
    assert Settings.from_env({}).item_transient_runs == 3
    assert Settings.from_env({"ITEM_TRANSIENT_RUNS": "5"}).item_transient_runs == 5

"""MaximoConnector against the Maximo simulator over real sockets, real Redis and the Hub simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from base.base_connector import SyncSummary
from base.contract import Checkpoint, Item, ItemFailure
from base.hub_client import HttpHub
from base.state import DeadLetter
from config.settings import Settings
from connectors.maximo_connector import MaximoConnector
from sandbox.maximo import DEFAULT_API_KEYS, DEFAULT_USERS, MaximoSimulator
from sandbox.servers import ServerThread
from utils.errors import ConfigError

API_KEY = {"api_key": DEFAULT_API_KEYS[0]}
USER, PASSWORD = next(iter(DEFAULT_USERS.items()))
LOGIN = {"user": USER, "password": PASSWORD}
SAME = "2024-05-02T10:15:00+05:30"


class Maximo:
    """A running simulator and a way to build connectors against it."""

    def __init__(self, sim: MaximoSimulator, url: str, settings: Settings) -> None:
        self.sim = sim
        self.url = url
        self.settings = settings

    def connector(self, hub: Any = None, **options: Any) -> MaximoConnector:
        if hub is not None:
            options["hub"] = HttpHub(hub.url, hub.token)
        return MaximoConnector(self.url, settings=self.settings, **options)


@pytest.fixture
def maximo(settings: Settings) -> Iterator[Maximo]:
    sim = MaximoSimulator()
    with ServerThread(sim) as server:
        yield Maximo(sim, server.url, settings)


def _uploaded(hub: Any) -> dict[str, dict[str, Any]]:
    """source_id -> Hub metadata of every document the Hub holds."""
    return {doc.metadata["source_id"]: doc.metadata for doc in hub.sim.documents.values()}


def _binary_gets(sim: MaximoSimulator) -> int:
    return sum(1 for r in sim.requests if "/doclinks/" in r.path and "/meta/" not in r.path)


def test_full_sync_uploads_every_attachment_once(maximo: Maximo, hub: Any) -> None:
    wos = [maximo.sim.add_work_order(attachments=2) for _ in range(5)]
    summary = maximo.connector(hub).sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["new"] == 10
    uploaded = _uploaded(hub)
    expected = {f"{wo.siteid}/{wo.wonum}/{link.id}": link.sha256() for wo in wos for link in wo.doclinks.values()}
    assert {sid: meta["sha256"] for sid, meta in uploaded.items()} == expected
    assert set(hub.sim.uploads_per_key.values()) == {1}


def test_item_carries_work_order_metadata_text_and_worktype_hint(maximo: Maximo) -> None:
    wo = maximo.sim.add_work_order(description="Escalator ES-04 handrail worn", worktype="CM",
                                   long_description="<div>Replace <b>handrail</b> &amp; test</div>",
                                   location="EDAP-ES04", assetnum="ES-04")
    link = maximo.sim.add_doclink(wo.siteid, wo.wonum, filename="handrail.pdf", title="HR-1", size=100)
    connector = maximo.connector()
    with connector.connect(API_KEY):
        changes = list(connector.list_changes("all", None))
        item = next(c for c in changes if isinstance(c, Item))
        assert item.open is not None
        content = b"".join(item.open())
    assert item.source_id == f"MUTTOM/{wo.wonum}/{link.id}"
    assert item.version == link.modified.isoformat()
    assert item.filename == "handrail.pdf" and item.mime_type == "application/pdf" and item.size == 100
    assert item.hints == {"worktype": "CM", "status": "APPR", "site": "MUTTOM"}
    assert item.text == "Escalator ES-04 handrail worn\nReplace handrail & test"
    assert item.metadata["wonum"] == wo.wonum and item.metadata["assetnum"] == "ES-04"
    assert item.metadata["href"].endswith(f"/os/mxapiwodetail/{wo.rest_id}")
    assert item.cursor_after == {"changedate": wo.changedate.isoformat(), "taken": [f"MUTTOM/{wo.wonum}"]}
    assert content == b"".join(link.chunks())
    assert isinstance(changes[-1], Checkpoint)


def test_incremental_sync_takes_only_what_changed(maximo: Maximo, hub: Any) -> None:
    first = maximo.sim.add_work_order(attachments=2)
    maximo.sim.add_work_order(attachments=1)
    connector = maximo.connector(hub)
    connector.sync_documents(API_KEY)
    replaced = maximo.sim.replace_doclink(first.siteid, first.wonum, min(first.doclinks), size=3000)
    added = maximo.sim.add_work_order(attachments=1)
    maximo.sim.reset_counts()
    summary = connector.sync_documents(API_KEY)
    assert summary.totals["new"] == 2 and summary.totals["duplicate"] == 1  # first's other, unchanged file
    assert _binary_gets(maximo.sim) == 2  # the unchanged one is skipped without a download
    uploaded = _uploaded(hub)
    assert uploaded[f"MUTTOM/{first.wonum}/{replaced.id}"]["sha256"] == replaced.sha256()
    assert uploaded[f"MUTTOM/{first.wonum}/{replaced.id}"].get("previous_sha256")
    assert f"MUTTOM/{added.wonum}/{min(added.doclinks)}" in uploaded


def test_work_order_saved_in_the_same_second_after_a_run_is_not_missed(maximo: Maximo, hub: Any) -> None:
    maximo.sim.add_work_order("4001", changedate=SAME, attachments=1)
    maximo.sim.add_work_order("4002", changedate=SAME, attachments=1)
    connector = maximo.connector(hub)
    assert connector.sync_documents(API_KEY).totals["new"] == 2
    assert connector.state.get_cursor("maximo", "all") == {"changedate": SAME,
                                                             "taken": ["MUTTOM/4001", "MUTTOM/4002"]}
    maximo.sim.add_work_order("4000", changedate=SAME, attachments=1)  # sorts before the taken ones
    maximo.sim.reset_counts()
    summary = connector.sync_documents(API_KEY)
    assert summary.totals["fetched"] == 1 and summary.totals["new"] == 1
    assert _binary_gets(maximo.sim) == 1
    assert set(hub.sim.uploads_per_key.values()) == {1}


def test_more_work_orders_on_one_changedate_than_a_page_holds(maximo: Maximo, hub: Any) -> None:
    for n in range(7):
        maximo.sim.add_work_order(f"50{n}", changedate=SAME, attachments=1)
    connector = maximo.connector(hub, page_size=2)
    assert connector.sync_documents(API_KEY).totals["new"] == 7
    maximo.sim.add_work_order("599", changedate=SAME, attachments=1)
    summary = connector.sync_documents(API_KEY)
    assert summary.totals["new"] == 1 and summary.totals["fetched"] == 1
    assert len(hub.sim.documents) == 8 and set(hub.sim.uploads_per_key.values()) == {1}


def test_a_large_block_on_one_changedate_costs_linear_requests(maximo: Maximo) -> None:
    for n in range(30):
        maximo.sim.add_work_order(f"7{n:02d}", changedate=SAME, attachments=0)
    maximo.sim.add_work_order("800", attachments=1)  # a later second
    connector = maximo.connector(page_size=5)
    with connector.connect(API_KEY):
        changes = list(connector.list_changes("all", None))
    taken = [c.cursor for c in changes if isinstance(c, Checkpoint)][-1]
    assert taken["changedate"] != SAME and taken["taken"] == ["MUTTOM/800"]
    queries = maximo.sim.count(contains="/os/mxapiwodetail")
    assert queries <= 10  # feed page, one restart, the 6 pages of the second, the next second


def test_block_that_shrinks_while_walked_is_walked_again(maximo: Maximo, hub: Any) -> None:
    wos = [maximo.sim.add_work_order(f"60{n}", changedate=SAME, attachments=1) for n in range(1, 10)]
    edited: list[int] = []

    def edit_once(pageno: int) -> None:
        # The first page 2 served belongs to the walk of SAME's second; moving a taken work order
        # out of that second slides an untaken one onto a page already read.
        if pageno == 2 and not edited:
            edited.append(pageno)
            maximo.sim.update_work_order("MUTTOM", "601", status="INPRG")

    maximo.sim.after_page = edit_once
    summary = maximo.connector(hub, page_size=2).sync_documents(API_KEY)
    assert edited and summary.state == "ok"
    assert set(_uploaded(hub)) == {f"MUTTOM/{wo.wonum}/{min(wo.doclinks)}" for wo in wos}


def test_work_order_edited_while_paging_does_not_push_another_out(maximo: Maximo, hub: Any) -> None:
    wos = [maximo.sim.add_work_order(attachments=1) for _ in range(6)]

    def edit_first(pageno: int) -> None:
        if pageno == 1 and maximo.sim.after_page is not None:
            maximo.sim.after_page = None
            maximo.sim.update_work_order(wos[0].siteid, wos[0].wonum, status="INPRG")

    maximo.sim.after_page = edit_first
    summary = maximo.connector(hub, page_size=2).sync_documents(API_KEY)
    assert summary.state == "ok"
    assert set(_uploaded(hub)) == {f"MUTTOM/{wo.wonum}/{min(wo.doclinks)}" for wo in wos}


def test_no_change_sync_is_one_request_per_site(maximo: Maximo) -> None:
    for site in ("MUTTOM", "ALUVA"):
        for _ in range(3):
            maximo.sim.add_work_order(siteid=site, attachments=2)
    connector = maximo.connector(site_ids=["MUTTOM", "ALUVA"])
    first = connector.sync_documents(API_KEY)
    assert [s.scope for s in first.scopes] == ["MUTTOM", "ALUVA"] and first.totals["new"] == 12
    maximo.sim.reset_counts()
    again = connector.sync_documents(API_KEY)
    assert again.state == "ok" and again.totals["fetched"] == 0
    assert len(maximo.sim.requests) == 2


def test_filters_reach_maximo_and_select_only_matching_work_orders(maximo: Maximo) -> None:
    keep = maximo.sim.add_work_order(siteid="MUTTOM", worktype="PM", status="APPR", attachments=1)
    maximo.sim.add_work_order(siteid="MUTTOM", worktype="CAL", status="APPR", attachments=1)
    maximo.sim.add_work_order(siteid="MUTTOM", worktype="PM", status="CLOSE", attachments=1)
    maximo.sim.add_work_order(siteid="ALUVA", worktype="PM", status="APPR", attachments=1)
    connector = maximo.connector(site_ids=["MUTTOM"], work_types=["PM", "CM"], statuses=["APPR", "INPRG"])
    with connector.connect(API_KEY):
        items = [c for c in connector.list_changes("MUTTOM", None) if isinstance(c, Item)]
    assert [i.metadata["wonum"] for i in items] == [keep.wonum]
    query = maximo.sim.requests[0].query
    assert "oslc.orderBy=%2Bchangedate%2C%2Bwonum" in query and "lean=1" in query


@pytest.mark.parametrize("style", ["maxauth", "basic"])
def test_session_login_is_made_once_and_reused(maximo: Maximo, style: str) -> None:
    for _ in range(4):
        maximo.sim.add_work_order(attachments=2)
    summary = maximo.connector(auth=style, page_size=2).sync_documents(LOGIN)
    assert summary.state == "ok" and summary.totals["new"] == 8
    assert maximo.sim.logins == 1
    assert {r.auth for r in maximo.sim.requests if r.method == "GET"} == {"session"}


def test_expired_session_is_renewed_and_the_run_goes_on(maximo: Maximo) -> None:
    for _ in range(4):
        maximo.sim.add_work_order(attachments=1)
    maximo.sim.after_page = lambda pageno: maximo.sim.expire_sessions() if pageno == 1 else None
    summary = maximo.connector(auth="maxauth", page_size=2).sync_documents(LOGIN)
    assert summary.state == "ok" and summary.totals["new"] == 4
    assert maximo.sim.logins >= 2


def test_bad_api_key_is_auth_failed_with_its_reason_code(maximo: Maximo) -> None:
    maximo.sim.add_work_order(attachments=1)
    summary = maximo.connector().sync_documents({"api_key": "not-the-key"})
    assert summary.state == "auth_failed"
    assert "BMXAA9549E" in summary.scopes[0].error and "not-the-key" not in summary.scopes[0].error


@pytest.mark.parametrize("style", ["maxauth", "basic"])
def test_bad_password_is_auth_failed_with_its_reason_code(maximo: Maximo, style: str) -> None:
    summary = maximo.connector(auth=style).sync_documents({"user": USER, "password": "wrong-password"})
    assert summary.state == "auth_failed"
    assert "BMXAA7901E" in summary.scopes[0].error and "wrong-password" not in summary.scopes[0].error


def test_missing_credentials_are_a_config_error(maximo: Maximo) -> None:
    summary = maximo.connector(auth="maxauth").sync_documents({"user": USER})
    assert summary.state == "config_error" and "MAXIMO_PASSWORD" in summary.scopes[0].error


def test_server_errors_are_retried_by_the_shared_policy(maximo: Maximo, hub: Any) -> None:
    maximo.sim.add_work_order(attachments=2)
    maximo.sim.fail_next(2, status=500, match="/os/mxapiwodetail")
    summary = maximo.connector(hub).sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["new"] == 2
    assert sum(1 for r in maximo.sim.requests if r.status == 500) == 2


def test_missing_doclink_file_is_dead_lettered_and_the_run_goes_on(maximo: Maximo, hub: Any) -> None:
    broken = maximo.sim.add_work_order(attachments=2)
    other = maximo.sim.add_work_order(attachments=1)
    bad_id = min(broken.doclinks)
    maximo.sim.break_doclink(broken.siteid, broken.wonum, bad_id)
    connector = maximo.connector(hub)
    summary = connector.sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["new"] == 2 and summary.totals["dead_lettered"] == 1
    (entry,) = connector.state.list_dead_letters("maximo")
    assert entry.source_id == f"MUTTOM/{broken.wonum}/{bad_id}" and "BMXAA8727E" in entry.reason
    assert connector.state.get_cursor("maximo", "all")["taken"] == [f"MUTTOM/{other.wonum}"]


@pytest.mark.parametrize("body", ["truncated", "html", "empty"])
def test_malformed_page_ends_the_run_as_transient_and_keeps_the_cursor(maximo: Maximo, body: str) -> None:
    maximo.sim.add_work_order(attachments=1)
    maximo.sim.malform_next(1, match="/os/mxapiwodetail", body=body)
    connector = maximo.connector()
    failed = connector.sync_documents(API_KEY)
    assert failed.state == "error" and "not valid JSON" in failed.scopes[0].error
    assert connector.state.get_cursor("maximo", "all") is None
    assert connector.sync_documents(API_KEY).totals["new"] == 1


def test_work_order_without_changedate_is_ingested_and_its_old_dead_letter_resolved(maximo: Maximo,
                                                                                   hub: Any) -> None:
    hidden = maximo.sim.add_work_order(attachments=1)
    hidden.omit.add("changedate")  # in the database, not in the JSON this user reads
    null = maximo.sim.add_work_order(attachments=1)
    maximo.sim.add_work_order(attachments=1)
    maximo.sim.clear_changedate(null.siteid, null.wonum)  # no changedate>= query finds it
    connector = maximo.connector(hub)
    # What an earlier version left: a dead letter under the work order's SITE/WONUM that no item
    # ever resolved.
    connector.state.add_dead_letter(DeadLetter(connector="maximo", scope="all", source_id=f"MUTTOM/{hidden.wonum}",
                                               reason="Maximo's work order lacks changedate"))
    summary = connector.sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["new"] == 3 and summary.totals["dead_lettered"] == 0
    assert connector.state.list_dead_letters("maximo") == []
    assert {f"MUTTOM/{wo.wonum}/{link.id}" for wo in (hidden, null) for link in wo.doclinks.values()} \
        <= set(_uploaded(hub))
    maximo.sim.reset_counts()
    again = connector.sync_documents(API_KEY)
    assert again.state == "ok" and again.totals["new"] == 0 and connector.state.list_dead_letters("maximo") == []
    # From a cursor the null one is not asked for again (one request): its doclinks are in.
    assert len(maximo.sim.requests) == 1


def test_full_sync_lists_a_null_changedate_work_order_once(maximo: Maximo) -> None:
    null = maximo.sim.add_work_order(attachments=2)
    maximo.sim.add_work_order(attachments=1)
    maximo.sim.clear_changedate(null.siteid, null.wonum)
    connector = maximo.connector(page_size=1)
    with connector.connect(API_KEY):
        items = [c for c in connector.list_changes("all", None) if isinstance(c, Item)]
    ids = [item.source_id for item in items]
    assert sorted(ids) == sorted({*[f"MUTTOM/{null.wonum}/{i}" for i in null.doclinks],
                                  *[f"MUTTOM/{wo.wonum}/{i}" for wo in maximo.sim.work_orders.values()
                                    for i in wo.doclinks]})
    assert all(item.cursor_after is None for item in items if item.source_id.startswith(f"MUTTOM/{null.wonum}/"))


def test_removed_doclink_is_reported_as_a_deletion_once(maximo: Maximo, hub: Any) -> None:
    wo = maximo.sim.add_work_order(attachments=3)
    connector = maximo.connector(hub)
    assert connector.sync_documents(API_KEY).totals["new"] == 3
    gone, kept, _ = sorted(wo.doclinks)
    maximo.sim.remove_doclink(wo.siteid, wo.wonum, gone)
    summary = connector.sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["deleted"] == 1 and summary.totals["new"] == 0
    assert [(d["source"], d["source_id"]) for d in hub.sim.deletions] == [("maximo", f"MUTTOM/{wo.wonum}/{gone}")]
    assert connector.state.get_item("maximo", "all", f"MUTTOM/{wo.wonum}/{gone}") is None
    assert connector.state.get_item("maximo", "all", f"MUTTOM/{wo.wonum}/{kept}") is not None
    maximo.sim.update_work_order(wo.siteid, wo.wonum, status="INPRG")
    later = connector.sync_documents(API_KEY)
    assert later.totals["deleted"] == 0 and later.totals["skipped"] == 0 and len(hub.sim.deletions) == 1


def test_removal_is_reported_again_until_the_deletion_is_done(maximo: Maximo, hub: Any) -> None:
    wo = maximo.sim.add_work_order(attachments=2)
    connector = maximo.connector(hub)
    connector.sync_documents(API_KEY)
    gone = min(wo.doclinks)
    maximo.sim.remove_doclink(wo.siteid, wo.wonum, gone)
    with connector.connect(API_KEY):  # listed, and the run stops before handling it
        listed = [c for c in connector.list_changes("all", connector.state.get_cursor("maximo", "all"))
                  if isinstance(c, Item) and c.deleted]
    assert [c.source_id for c in listed] == [f"MUTTOM/{wo.wonum}/{gone}"]
    summary = connector.sync_documents(API_KEY)
    assert summary.totals["deleted"] == 1 and len(hub.sim.deletions) == 1


def test_removal_of_a_doclink_ingested_before_the_index_existed(maximo: Maximo, hub: Any) -> None:
    wo = maximo.sim.add_work_order(attachments=2)
    connector = maximo.connector(hub)
    connector.sync_documents(API_KEY)
    connector.state.redis.delete(connector.state.keys.groups("maximo", "all"))  # records of an earlier version
    gone = max(wo.doclinks)
    maximo.sim.remove_doclink(wo.siteid, wo.wonum, gone)
    summary = connector.sync_documents(API_KEY)
    assert summary.totals["deleted"] == 1
    assert [d["source_id"] for d in hub.sim.deletions] == [f"MUTTOM/{wo.wonum}/{gone}"]


def test_removed_doclink_never_ingested_is_not_a_deletion(maximo: Maximo) -> None:
    wo = maximo.sim.add_work_order(attachments=1)
    broken = maximo.sim.add_doclink(wo.siteid, wo.wonum)
    maximo.sim.break_doclink(wo.siteid, wo.wonum, broken.id)
    connector = maximo.connector()
    for _ in range(3):  # until the failing doclink is dead-lettered
        assert connector.sync_documents(API_KEY).state == "ok"
        maximo.sim.update_work_order(wo.siteid, wo.wonum, status="INPRG")
    assert [e.source_id for e in connector.state.list_dead_letters("maximo")] == [f"MUTTOM/{wo.wonum}/{broken.id}"]
    maximo.sim.remove_doclink(wo.siteid, wo.wonum, broken.id)
    with connector.connect(API_KEY):
        changes = list(connector.list_changes("all", connector.state.get_cursor("maximo", "all")))
    assert not [c for c in changes if isinstance(c, Item) and c.deleted]
    # Detached, it has nothing left to retry: its dead letter is resolved.
    assert connector.state.list_dead_letters("maximo") == []


def test_unreadable_doclinks_infer_no_removal(settings: Settings, hub: Any) -> None:
    sim = MaximoSimulator(doclinks_inline=False)
    wo = sim.add_work_order(attachments=2)
    with ServerThread(sim) as server:
        connector = Maximo(sim, server.url, settings).connector(hub)
        assert connector.sync_documents(API_KEY).totals["new"] == 2
        sim.update_work_order(wo.siteid, wo.wonum, status="INPRG")
        sim.fail_next(1, status=404, match="/doclinks")  # the work order's doclinks cannot be read this time
        summary = connector.sync_documents(API_KEY)
        assert summary.totals["deleted"] == 0 and summary.totals["dead_lettered"] == 1
        assert hub.sim.deletions == []
        sim.update_work_order(wo.siteid, wo.wonum, status="COMP")
        later = connector.sync_documents(API_KEY)
    # Read again: nothing was removed, and the work order's dead letter is resolved.
    assert later.totals["deleted"] == 0 and hub.sim.deletions == []
    assert connector.state.list_dead_letters("maximo") == []


def test_doclink_missing_fields_fall_back_or_fail_alone(maximo: Maximo) -> None:
    wo = maximo.sim.add_work_order()
    no_name = maximo.sim.add_doclink(wo.siteid, wo.wonum, description="Inspection sheet")
    no_name.omit.add("describedBy.fileName")
    no_href = maximo.sim.add_doclink(wo.siteid, wo.wonum)
    no_href.omit.add("href")
    connector = maximo.connector()
    with connector.connect(API_KEY):
        changes = [c for c in connector.list_changes("all", None) if not isinstance(c, Checkpoint)]
    by_id = {c.source_id: c for c in changes}
    named = by_id[f"MUTTOM/{wo.wonum}/{no_name.id}"]
    failed = by_id[f"MUTTOM/{wo.wonum}/{no_href.id}"]
    assert isinstance(named, Item) and named.filename == "Inspection sheet"
    assert isinstance(failed, ItemFailure) and "href" in failed.reason


def test_doclinks_given_as_an_href_and_relative_links_are_followed(settings: Settings) -> None:
    sim = MaximoSimulator(doclinks_inline=False, relative_doclink_hrefs=True)
    for _ in range(2):
        sim.add_work_order(attachments=2)
    with ServerThread(sim) as server:
        summary = MaximoConnector(server.url + "/maximo", settings=settings).sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["new"] == 4
    assert sim.count(contains="/doclinks", method="GET") == 2 + 4  # one collection per work order, four files


def test_apikey_calls_never_replay_maximos_session_cookie(maximo: Maximo) -> None:
    assert maximo.sim.apikey_cookie_quirk
    for _ in range(3):
        maximo.sim.add_work_order(attachments=1)
    summary = maximo.connector(page_size=1).sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["new"] == 3
    assert {r.status for r in maximo.sim.requests} == {200}


def test_health_check_proves_credentials_with_one_record(maximo: Maximo) -> None:
    maximo.sim.add_work_order()
    maximo.sim.add_work_order()
    ok = maximo.connector().health_check(API_KEY)
    assert ok.ok and ok.state == "healthy"
    assert "oslc.pageSize=1" in maximo.sim.requests[-1].query
    bad = maximo.connector(auth="maxauth").health_check({"user": USER, "password": "nope-nope"})
    assert not bad.ok and bad.state == "auth_failed" and "BMXAA7901E" in bad.detail
    down = MaximoConnector("http://127.0.0.1:9", settings=maximo.settings, timeout=(0.2, 0.2))
    unreachable = down.health_check(API_KEY)
    assert not unreachable.ok and unreachable.state == "unreachable"


def test_from_settings_reads_the_maximo_variables(settings: Settings) -> None:
    env = {"MAXIMO_URL": "https://maximo.example.test", "MAXIMO_SITE_IDS": "MUTTOM, ALUVA",
           "MAXIMO_WORK_TYPES": "PM,CM", "MAXIMO_STATUSES": "APPR", "MAXIMO_AUTH": "basic",
           "MAXIMO_OBJECT_STRUCTURE": "MXWO", "MAXIMO_CONNECT_TIMEOUT": "3", "MAXIMO_READ_TIMEOUT": "30",
           "MAXIMO_PAGE_SIZE": "250"}
    configured = Settings(**{**settings.__dict__, "environ": env})
    connector = MaximoConnector.from_settings(configured)
    assert connector.root_url == "https://maximo.example.test/maximo"
    assert connector.scopes() == ["MUTTOM", "ALUVA"]
    assert connector.auth == "basic" and connector.object_structure == "mxwo"
    assert connector.timeout == (3.0, 30.0) and connector.page_size == 250
    params = connector.query_params("MUTTOM", since="2024-05-02T10:15:00+05:30")
    assert params["oslc.where"] == ('changedate>="2024-05-02T10:15:00+05:30" and siteid="MUTTOM" and '
                                    'worktype in ["PM","CM"] and status in ["APPR"]')
    with pytest.raises(ConfigError, match="MAXIMO_PAGE_SIZE"):
        MaximoConnector.from_settings(Settings(**{**settings.__dict__, "environ": {**env, "MAXIMO_PAGE_SIZE": "x"}}))
    with pytest.raises(ConfigError, match="MAXIMO_URL"):
        MaximoConnector.from_settings(settings)


def test_a_stored_cursor_that_is_not_a_maximo_cursor_is_a_config_error(maximo: Maximo) -> None:
    connector = maximo.connector()
    connector.state.set_cursor("maximo", "all", 42)
    summary: SyncSummary = connector.sync_documents(API_KEY)
    assert summary.state == "config_error" and "cursor" in summary.scopes[0].error


def test_worktype_and_malayalam_text_reach_the_hub_as_department_and_language(maximo: Maximo, hub: Any) -> None:
    safety = maximo.sim.add_work_order(description="ആലുവ സ്റ്റേഷനിലെ അഗ്നിശമന ഉപകരണങ്ങളുടെ പരിശോധന",
                                       long_description="എല്ലാ ഫയർ എക്സ്റ്റിംഗ്വിഷറുകളും പരിശോധിച്ചു.",
                                       worktype="SAF")
    maximo.sim.add_doclink(safety.siteid, safety.wonum, filename="fire-audit.pdf",
                           description="അഗ്നിശമന പരിശോധന റിപ്പോർട്ട്")
    pm = maximo.sim.add_work_order(description="Quarterly preventive maintenance of escalator ES-04",
                                   worktype="PM")
    maximo.sim.add_doclink(pm.siteid, pm.wonum, filename="es04-checklist.pdf",
                           description="Escalator maintenance checklist")
    assert maximo.connector(hub).sync_documents(API_KEY).totals["new"] == 2
    by_wonum = {meta["extra"]["wonum"]: meta for meta in _uploaded(hub).values()}
    assert by_wonum[safety.wonum]["department"] == "Safety" and by_wonum[safety.wonum]["language"] == "ml"
    assert by_wonum[pm.wonum]["department"] == "Engineering" and by_wonum[pm.wonum]["language"] == "en"
    assert by_wonum[pm.wonum]["extra"]["worktype"] == "PM" and by_wonum[pm.wonum]["source"] == "maximo"


def test_https_with_a_private_ca_is_verified(settings: Settings, tmp_path: Any) -> None:
    from sandbox.tls import CertAuthority

    authority = CertAuthority(str(tmp_path / "ca"))
    sim = MaximoSimulator()
    sim.add_work_order(attachments=1)
    with ServerThread(sim, ssl_context=authority.issue().server_context()) as server:
        trusted = MaximoConnector(server.url, settings=settings, ca_bundle=authority.ca_path)
        assert trusted.sync_documents(API_KEY).totals["new"] == 1
        untrusted = MaximoConnector(server.url, settings=settings, timeout=(2, 2)).health_check(API_KEY)
    # An untrusted certificate is a setting to fix, not an outage to retry.
    assert not untrusted.ok and untrusted.state == "config_error" and "not trusted" in untrusted.detail


def test_answer_slower_than_the_read_timeout_is_retried(maximo: Maximo) -> None:
    maximo.sim.add_work_order(attachments=1)
    # Read timeout 1 s: a loaded machine may answer slowly, but not a thousand times slower than usual.
    maximo.sim.slow_next(1, seconds=3.0, match="/doclinks/")
    summary = maximo.connector(timeout=(2.0, 1.0)).sync_documents(API_KEY)
    assert summary.state == "ok" and summary.totals["new"] == 1
    deadline = time.monotonic() + 30
    while maximo.sim.count(contains="/doclinks/") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the abandoned slow answer is logged only once it is written
    assert maximo.sim.count(contains="/doclinks/") == 2


def test_fetch_documents_reads_without_moving_the_cursor(maximo: Maximo) -> None:
    wo = maximo.sim.add_work_order(attachments=2)
    connector = maximo.connector()
    documents = list(connector.fetch_documents(API_KEY))
    try:
        assert sorted(d.sha256 for d in documents) == sorted(link.sha256() for link in wo.doclinks.values())
        assert {d.metadata["wonum"] for d in documents} == {wo.wonum}
    finally:
        for document in documents:
            document.close()
    assert connector.state.get_cursor("maximo", "all") is None

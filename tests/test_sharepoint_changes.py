"""Every change of a SharePoint library reaches the Hub, not only additions: files deleted while the
delta token was expired (found by the 410 resync once its enumeration completes, never from one cut
short), and renames and moves (a metadata update of the same Hub document, nothing uploaded again).

Over real sockets: the Graph + Entra simulator over TLS, a real Redis, the Hub simulator (or the
outbox folder).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.runner import Reprocess
from base.state import StateStore
from config.settings import Settings
from connectors.sharepoint_connector import SharePointConnector
from sandbox.graph import GraphSimulator
from sandbox.graph_store import Drive
from sandbox.hub import RunningHub
from sandbox.tls import CertAuthority
from tests.conftest import make_settings
from tests.test_sharepoint_connector import (
    DOCS,
    SITE,
    _assert_each_upload_once,
    _connector,
    _CrashingHub,
    _docs,
    _hub_files,
    _sync,
)
from utils.entra import reset_applications

#: Work orders filed beside DOCS, so the library spans several delta pages.
WORK_ORDERS = {f"Work orders/WO-{i:03}.txt": b"Work order %d: inspect the pantograph of TS-%02d." % (i, i)
               for i in range(12)}
#: Delta page size for the resync tests: the library (root, 3 folders, 15 files) spans 4 pages.
PAGE = 5


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    reset_applications()
    yield
    reset_applications()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("sharepoint-changes-ca")))


@pytest.fixture
def sim(ca: CertAuthority) -> Iterator[GraphSimulator]:
    simulator = GraphSimulator(client_secret="sp-secret-value-for-tests", delta_page_size=PAGE)
    documents = simulator.store.add_drive(SITE, "Documents")
    for path, content in {**DOCS, **WORK_ORDERS}.items():
        simulator.store.put_file(documents, path, content)
    simulator.start(ca)
    yield simulator
    simulator.stop()


@pytest.fixture
def sp_settings(tmp_path: Path, redis_url: str, hub: RunningHub) -> Settings:
    return make_settings(tmp_path, redis_url, hub_api_url=hub.url, hub_api_token=hub.token)


def documents(sim: GraphSimulator, ca: CertAuthority, settings: Settings, state: StateStore) -> SharePointConnector:
    return _connector(sim, ca, settings, state, libraries=["Documents"])


def file_id(drive: Drive, sim: GraphSimulator, path: str) -> str:
    item = sim.store.find(drive, path)
    assert item is not None, path
    return item.id


def deleted_ids(hub: RunningHub) -> list[str]:
    return [d["source_id"] for d in hub.sim.deletions if d["source"] == "sharepoint"]


def delta_statuses(sim: GraphSimulator) -> list[int]:
    return [r.status for r in sim.log if r.kind == "delta"]


def ledger_exists(state: StateStore, drive: Drive) -> bool:
    return bool(state.redis.exists(state.keys.resync("sharepoint", drive.id)))


# -- deletions found by a resync ----------------------------------------------------------------------
def test_files_deleted_while_the_token_was_expired_are_reported_once_after_the_resync(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    assert _sync(documents(sim, ca, sp_settings, state), sim).totals["new"] == len(DOCS) + len(WORK_ORDERS)
    gone = {file_id(drive, sim, p) for p in ("Work orders/WO-003.txt", "Work orders/WO-010.txt",
                                             "Safety/Fire drill circular.txt")}
    safety = file_id(drive, sim, "Safety")
    sim.expire_delta_tokens(drive)
    sim.store.delete(drive, "Work orders/WO-003.txt")
    sim.store.delete(drive, "Work orders/WO-010.txt")
    sim.store.delete(drive, "Safety")  # the folder and the file in it
    sim.reset_counts()

    summary = _sync(documents(sim, ca, sp_settings, state), sim)

    assert summary.state == "ok", summary.as_dict()
    assert summary.totals["deleted"] == 3 and summary.totals["new"] == 0
    assert delta_statuses(sim) == [410, 200, 200, 200]  # the enumeration, read to its deltaLink
    assert sim.count("download") == 0
    assert sorted(deleted_ids(hub)) == sorted(gone)  # each once; the folder is not a document
    assert safety not in deleted_ids(hub)
    assert all(d["status"] == 204 for d in hub.sim.deletions)
    assert not gone & set(_hub_files(hub))
    assert all(state.get_item("sharepoint", drive.id, sid) is None for sid in gone)
    assert state.count_items("sharepoint", drive.id) == len(DOCS) + len(WORK_ORDERS) - 3
    assert state.get_cursor("sharepoint", drive.id).keys() == {"deltaLink"}

    again = _sync(documents(sim, ca, sp_settings, state), sim)
    assert again.state == "ok" and again.totals["deleted"] == 0
    assert sorted(deleted_ids(hub)) == sorted(gone)
    assert not ledger_exists(state, drive)  # dropped once the cursor past the resync was saved
    _assert_each_upload_once(hub)


def test_a_resync_stopped_by_its_deadline_reports_nothing_until_one_completes(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    gone = file_id(drive, sim, "Work orders/WO-007.txt")
    sim.expire_delta_tokens(drive)
    sim.store.delete(drive, "Work orders/WO-007.txt")

    cut = _sync(documents(sim, ca, sp_settings, state), sim, deadline=time.monotonic())

    assert cut.state == "partial" and cut.totals["deleted"] == 0
    assert deleted_ids(hub) == []
    assert state.get_item("sharepoint", drive.id, gone) is not None

    done = _sync(documents(sim, ca, sp_settings, state), sim)
    assert done.state == "ok" and done.totals["deleted"] == 1
    assert deleted_ids(hub) == [gone]


def test_a_resync_cut_short_by_a_crash_resumes_with_the_ids_it_listed_and_reports_each_deletion_once(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    gone = {file_id(drive, sim, p) for p in ("Work orders/WO-001.txt", "Work orders/WO-010.txt")}
    sim.expire_delta_tokens(drive)
    for path in ("Work orders/WO-001.txt", "Work orders/WO-010.txt"):
        sim.store.delete(drive, path)
    # A new version on the third page: its upload is where the worker dies, mid-enumeration.
    sim.store.put_file(drive, "Work orders/WO-006.txt", b"Work order 6, revised: replace the carbon strip.")
    crashed = documents(sim, ca, sp_settings, state)
    crashed.hub = _CrashingHub(crashed.hub, crash_at=1)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        _sync(crashed, sim)

    cursor = state.get_cursor("sharepoint", drive.id)
    assert cursor.keys() == {"nextLink", "resync"}  # mid-resync, pages before the crash saved
    assert ledger_exists(state, drive)
    assert deleted_ids(hub) == []
    assert all(state.get_item("sharepoint", drive.id, sid) is not None for sid in gone)

    reset_applications()
    sim.reset_counts()
    resumed = _sync(documents(sim, ca, sp_settings, state), sim)

    assert resumed.state == "ok", resumed.as_dict()
    assert resumed.totals["deleted"] == 2 and resumed.totals["new"] == 1
    assert delta_statuses(sim) == [200, 200]  # the last two pages only: no 410, no enumeration again
    assert sorted(deleted_ids(hub)) == sorted(gone)
    assert _sync(documents(sim, ca, sp_settings, state), sim).totals["deleted"] == 0
    assert sorted(deleted_ids(hub)) == sorted(gone)
    _assert_each_upload_once(hub)


def test_a_resync_ended_by_an_error_mid_enumeration_reports_nothing_until_it_completes(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    gone = file_id(drive, sim, "Work orders/WO-011.txt")
    sim.expire_delta_tokens(drive)
    sim.store.delete(drive, "Work orders/WO-011.txt")
    sim.store.put_file(drive, "Work orders/WO-006.txt", b"Work order 6, revised: replace the carbon strip.")
    sim.inject("download", 503, count=4)  # every try of the third page's download: the run ends there

    failed = _sync(documents(sim, ca, sp_settings, state), sim)

    assert failed.state == "error" and failed.totals["deleted"] == 0
    assert deleted_ids(hub) == []
    assert "resync" in state.get_cursor("sharepoint", drive.id)
    done = _sync(documents(sim, ca, sp_settings, state), sim)
    assert done.state == "ok" and done.totals["deleted"] == 1 and done.totals["new"] == 1
    assert deleted_ids(hub) == [gone]


def test_a_resync_whose_listed_ids_are_lost_starts_the_enumeration_again(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    gone = file_id(drive, sim, "Work orders/WO-000.txt")
    sim.expire_delta_tokens(drive)
    sim.store.delete(drive, "Work orders/WO-000.txt")
    sim.store.put_file(drive, "Work orders/WO-006.txt", b"Work order 6, revised: replace the carbon strip.")
    crashed = documents(sim, ca, sp_settings, state)
    crashed.hub = _CrashingHub(crashed.hub, crash_at=1)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        _sync(crashed, sim)
    assert "resync" in state.get_cursor("sharepoint", drive.id)
    state.redis.delete(state.keys.resync("sharepoint", drive.id))  # as if Redis lost it

    reset_applications()
    sim.reset_counts()
    summary = _sync(documents(sim, ca, sp_settings, state), sim)

    # Compared with only the pages after the crash, WO-002... would look deleted: the whole library is
    # listed again instead, and only the file really gone is reported.
    assert summary.state == "ok"
    assert delta_statuses(sim) == [200, 200, 200, 200]
    assert deleted_ids(hub) == [gone]
    assert summary.totals["deleted"] == 1


def test_an_ordinary_delta_run_compares_nothing(sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings,
                                                state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    # A record the feed will never list again (its file is gone without a trace in this feed): only a
    # resync may find it; an incremental run must not report it.
    known = state.get_item("sharepoint", drive.id, file_id(drive, sim, "Work orders/WO-005.txt"))
    assert known is not None
    state.record_ingested("sharepoint", drive.id, "01ORPHANRECORD", known, outcome="new", size=0)
    sim.store.put_file(drive, "Work orders/WO-012.txt", b"Work order 12.")
    summary = _sync(documents(sim, ca, sp_settings, state), sim)
    assert summary.totals["new"] == 1 and summary.totals["deleted"] == 0
    assert deleted_ids(hub) == []
    assert not ledger_exists(state, drive)


# -- renames and moves -----------------------------------------------------------------------------------
def test_a_rename_and_a_move_update_the_same_hub_documents_without_uploading_again(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    drill = file_id(drive, sim, "Safety/Fire drill circular.txt")
    bogie = file_id(drive, sim, "Rolling Stock/Bogie inspection TS-07.txt")
    before = {sid: meta for sid, meta in _hub_files(hub).items() if sid in (drill, bogie)}
    ids = {sid: next(d.id for d in hub.sim.documents.values() if d.has_source("sharepoint", sid))
           for sid in (drill, bogie)}
    documents_before, uploads_before = len(hub.sim.documents), dict(hub.sim.uploads_per_key)
    sim.store.rename(drive, "Safety/Fire drill circular.txt", "Fire drill circular 2025.txt")
    sim.store.move(drive, "Rolling Stock/Bogie inspection TS-07.txt", "Archive/Rolling Stock")
    sim.reset_counts()

    summary = _sync(documents(sim, ca, sp_settings, state), sim)

    assert summary.state == "ok", summary.as_dict()
    assert summary.totals["renamed"] == 2 and summary.totals["new"] == 0
    assert sim.count("download") == 0
    assert len(hub.sim.documents) == documents_before and hub.sim.uploads_per_key == uploads_before
    renamed = hub.sim.documents[ids[drill]]
    assert renamed.metadata["filename"] == "Fire drill circular 2025.txt"
    assert renamed.metadata["title"] == "Fire drill circular 2025"
    assert renamed.metadata["extra"]["path"] == "/Safety/Fire drill circular 2025.txt"
    assert renamed.metadata["source_url"] == f"{drive.web_url}/Safety/Fire%20drill%20circular%202025.txt"
    assert renamed.has_source("sharepoint", drill)["filename"] == "Fire drill circular 2025.txt"
    moved = hub.sim.documents[ids[bogie]]
    assert moved.metadata["filename"] == before[bogie]["filename"]
    assert moved.metadata["extra"]["path"] == "/Archive/Rolling Stock/Bogie inspection TS-07.txt"
    assert [(u["document_id"], u["source_id"]) for u in hub.sim.metadata_updates] == [
        (ids[drill], drill), (ids[bogie], bogie)]  # in the feed's order: renamed first, then moved
    assert all(not d.superseded and not d.deleted for d in hub.sim.documents.values())
    # The recent-documents record (status page, `kmrl-connectors recent`) shows both as renamed.
    recent = [json.loads(line) for line in state.redis.lrange(state.keys.recent(), 0, 1)]
    assert {(r["decision"], r["filename"], r["hub_id"]) for r in recent} == {
        ("renamed", "Fire drill circular 2025.txt", ids[drill]),
        ("renamed", "Bogie inspection TS-07.txt", ids[bogie])}

    again = _sync(documents(sim, ca, sp_settings, state), sim)
    assert again.totals["renamed"] == 0 and len(hub.sim.metadata_updates) == 2


def test_a_rename_the_hub_cannot_apply_uploads_the_document_again(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    hub.sim.reset()  # the Hub lost everything
    sim.store.rename(drive, "Safety/Fire drill circular.txt", "Fire drill circular 2025.txt")
    summary = _sync(documents(sim, ca, sp_settings, state), sim)
    assert summary.state == "ok" and summary.totals["renamed"] == 0 and summary.totals["new"] == 1
    (doc,) = hub.sim.documents.values()
    assert doc.metadata["filename"] == "Fire drill circular 2025.txt"
    assert [r["status"] for r in hub.sim.requests if r["endpoint"] == "metadata"] == [404]


def test_a_dry_run_lists_a_rename_and_sends_nothing(sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings,
                                                    state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    sim.store.rename(drive, "Safety/Fire drill circular.txt", "Fire drill circular 2025.txt")
    summary = _sync(documents(sim, ca, sp_settings, state), sim, dry_run=True)
    (scope,) = summary.scopes
    assert [(d.action, d.filename) for d in scope.decisions] == [("rename", "Fire drill circular 2025.txt")]
    assert scope.counts["renamed"] == 1 and hub.sim.metadata_updates == []
    assert _sync(documents(sim, ca, sp_settings, state), sim).totals["renamed"] == 1


def test_a_rename_reaches_the_outbox_as_a_metadata_update_entry(
        sim: GraphSimulator, ca: CertAuthority, tmp_path: Path, redis_url: str, state: StateStore) -> None:
    settings = make_settings(tmp_path, redis_url)  # no HUB_API_URL: the outbox is the Hub
    drive = _docs(sim)
    _sync(documents(sim, ca, settings, state), sim)
    drill = file_id(drive, sim, "Safety/Fire drill circular.txt")
    record = state.get_item("sharepoint", drive.id, drill)
    assert record is not None
    folder = Path(settings.hub_outbox_dir) / record.sha256
    sim.store.rename(drive, "Safety/Fire drill circular.txt", "Fire drill circular 2025.txt")

    assert _sync(documents(sim, ca, settings, state), sim).totals["renamed"] == 1

    (line,) = (folder / "metadata_updates.jsonl").read_text(encoding="utf-8").splitlines()
    update = json.loads(line)
    assert (update["source"], update["source_id"], update["filename"]) == (
        "sharepoint", drill, "Fire drill circular 2025.txt")
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert meta["filename"] == "Fire drill circular 2025.txt" and meta["stored_as"] == "Fire drill circular.txt"
    assert (folder / "Fire drill circular.txt").is_file()
    assert len([p for p in Path(settings.hub_outbox_dir).iterdir() if not p.name.startswith(("_", "."))]) == len(
        DOCS) + len(WORK_ORDERS)


def test_a_file_saved_again_unchanged_and_renamed_is_read_then_renamed_not_uploaded(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    uploads_before = dict(hub.sim.uploads_per_key)
    sim.store.put_file(drive, "Safety/Fire drill circular.txt", DOCS["Safety/Fire drill circular.txt"])  # new cTag
    sim.store.rename(drive, "Safety/Fire drill circular.txt", "Fire drill circular 2025.txt")
    sim.reset_counts()
    summary = _sync(documents(sim, ca, sp_settings, state), sim)
    assert summary.totals["renamed"] == 1 and summary.totals["duplicate"] == 1 and summary.totals["new"] == 0
    assert sim.count("download") == 1  # a new cTag: read, found the same bytes
    assert hub.sim.uploads_per_key == uploads_before
    (update,) = hub.sim.metadata_updates
    assert update["fields"]["filename"] == "Fire drill circular 2025.txt"
    assert update["fields"]["version"] == sim.store.find(drive, "Safety/Fire drill circular 2025.txt").ctag
    # A full run reads everything again and finds nothing more to rename.
    full = _sync(documents(sim, ca, sp_settings, state), sim, full=True)
    assert full.totals["renamed"] == 0 and full.totals["new"] == 0 and len(hub.sim.metadata_updates) == 1


def test_a_reprocess_run_sends_a_rename_it_meets_before_the_new_enrichment(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    drive = _docs(sim)
    _sync(documents(sim, ca, sp_settings, state), sim)
    sim.store.rename(drive, "Safety/Fire drill circular.txt", "Fire drill circular 2025.txt")
    summary = _sync(documents(sim, ca, sp_settings, state), sim, reprocess=Reprocess())
    assert summary.totals["renamed"] == 1 and summary.totals["reprocessed"] == len(DOCS) + len(WORK_ORDERS)
    assert [u["fields"]["filename"] for u in hub.sim.metadata_updates] == ["Fire drill circular 2025.txt"]
    assert _sync(documents(sim, ca, sp_settings, state), sim).totals["renamed"] == 0

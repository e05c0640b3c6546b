"""SharePointConnector against the Graph + Entra simulator over TLS, a real Redis and the Hub simulator.

Each test runs msal and the connector unchanged over real sockets; the simulator counts every request
by kind, so the tests can say exactly what a sync cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from base.base_connector import SyncSummary
from base.contract import Checkpoint, Item, ItemFailure
from base.hub_client import Hub
from base.state import StateStore
from config.settings import Settings
from connectors import registry
from connectors.service import Service
from connectors.sharepoint_connector import SharePointConnector, _last_occurrences
from sandbox.graph import GraphSimulator
from sandbox.graph_store import BLOCK_SIZE, Drive, GeneratedContent
from sandbox.hub import RunningHub
from sandbox.tls import CertAuthority
from tests.conftest import make_settings
from utils.entra import reset_applications
from utils.ttl_cache import TtlCache

SITE = "sites/operations"
DOCS = {
    "Rolling Stock/Bogie inspection TS-07.txt": b"Bogie inspection checklist for trainset TS-07: wheel flange wear.",
    "Rolling Stock/Traction motor TS-11.txt": b"Traction motor overheating on TS-11, corrective maintenance.",
    "Safety/Fire drill circular.txt": b"All stations hold a fire safety drill on Friday.",
}
DRAWINGS = {"Viaduct/Pier P-214.txt": b"Civil inspection of viaduct pier P-214, bearing drawing rev C."}


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    # Each test is a new worker process as far as msal's application goes (each connector built here
    # has a site cache of its own).
    reset_applications()
    yield
    reset_applications()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("sharepoint-ca")))


@pytest.fixture
def sim(ca: CertAuthority) -> Iterator[GraphSimulator]:
    simulator = GraphSimulator(client_secret="sp-secret-value-for-tests", delta_page_size=50)
    documents = simulator.store.add_drive(SITE, "Documents")
    drawings = simulator.store.add_drive(SITE, "Engineering Drawings")
    for path, content in DOCS.items():
        simulator.store.put_file(documents, path, content)
    for path, content in DRAWINGS.items():
        simulator.store.put_file(drawings, path, content)
    simulator.store.put_file(simulator.store.add_drive("sites/finance", "Documents"), "Invoices/INV-1.txt",
                             b"Invoice INV-1 for spares, payment due in 30 days.")
    simulator.start(ca)
    yield simulator
    simulator.stop()


@pytest.fixture
def sp_settings(tmp_path: Path, redis_url: str, hub: RunningHub) -> Settings:
    return make_settings(tmp_path, redis_url, hub_api_url=hub.url, hub_api_token=hub.token)


@pytest.fixture
def state(redis_url: str) -> StateStore:
    return StateStore.from_url(redis_url)


def _docs(sim: GraphSimulator) -> Drive:
    return sim.store.drive(SITE, "Documents")


def _creds(sim: GraphSimulator, *, secret: str | None = None) -> dict[str, str]:
    return {"client_id": sim.client_id, "client_secret": secret or sim.client_secret, "tenant_id": sim.tenant_id}


def _connector(sim: GraphSimulator, ca: CertAuthority, settings: Settings, state: StateStore,
               **options: Any) -> SharePointConnector:
    return SharePointConnector(f"{sim.sharepoint_url}/{SITE}", tenant_id=sim.tenant_id, client_id=sim.client_id,
                               graph_base_url=sim.graph_url, authority=sim.authority_host, ca_file=ca.ca_path,
                               settings=settings, state=state, **options)


def _sync(connector: SharePointConnector, sim: GraphSimulator, **kw: Any) -> SyncSummary:
    return connector.sync_documents(_creds(sim), **kw)


def _hub_files(hub: RunningHub) -> dict[str, dict[str, Any]]:
    """source_id -> metadata of the live (not superseded, not deleted) document carrying it."""
    found: dict[str, dict[str, Any]] = {}
    for doc in hub.sim.documents.values():
        if doc.superseded or doc.deleted:
            continue
        for source in doc.sources:
            if source["source"] == "sharepoint" and not source.get("deleted"):
                found[source["source_id"]] = doc.metadata
    return found


def _assert_each_upload_once(hub: RunningHub) -> None:
    assert hub.sim.uploads_per_key and set(hub.sim.uploads_per_key.values()) == {1}


# -- first sync -------------------------------------------------------------------------------------
def test_first_sync_ingests_every_file_of_every_library_with_its_metadata(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    connector = _connector(sim, ca, sp_settings, state)
    summary = _sync(connector, sim)
    assert summary.state == "ok", summary.as_dict()
    assert summary.totals["new"] == len(DOCS) + len(DRAWINGS)
    assert len(summary.scopes) == 2  # one scope per library of the site, not the finance site's
    files = _hub_files(hub)
    assert len(files) == 4
    drill = next(m for m in files.values() if m["filename"] == "Fire drill circular.txt")
    extra = drill["extra"]
    item = sim.store.find(_docs(sim), "Safety/Fire drill circular.txt")
    assert item is not None
    assert extra["drive"] == "Documents" and extra["drive_id"] == _docs(sim).id
    assert extra["path"] == "/Safety/Fire drill circular.txt"
    assert extra["web_url"] == drill["source_url"] == f"{_docs(sim).web_url}/Safety/Fire%20drill%20circular.txt"
    assert extra["etag"] == item.etag and extra["ctag"] == item.ctag
    assert extra["quick_xor_hash"] == item.quick_xor_hash()
    assert extra["created_by"]["email"] == "records@kmrl.co.in" and extra["modified_at"] == item.modified_at
    assert drill["version"] == item.ctag
    _assert_each_upload_once(hub)
    # Downloads carried no bearer token; the delta feed ended on a deltaLink per library.
    assert not [r for r in sim.log if r.kind == "download" and r.had_authorization]
    for scope in connector.scopes():
        assert "deltaLink" in state.get_cursor("sharepoint", scope)


def test_scopes_are_the_drive_ids_filtered_by_library_name(sim: GraphSimulator, ca: CertAuthority,
                                                            sp_settings: Settings, state: StateStore) -> None:
    connector = _connector(sim, ca, sp_settings, state, libraries=["engineering drawings"])
    with connector.connect(_creds(sim)):
        assert connector.scopes() == [sim.store.drive(SITE, "Engineering Drawings").id]
        # The URL name of a library selects it too ("Shared Documents" is "Documents").
        connector.libraries = ["Shared Documents"]
        assert connector.scopes() == [_docs(sim).id]
        # Discovered once per process: the second and third listings cost no request.
        assert (sim.count("site"), sim.count("drives")) == (1, 1)


def test_the_runs_of_one_wiring_resolve_the_site_once_until_the_cache_expires(
        sim: GraphSimulator, ca: CertAuthority, tmp_path: Path, redis_url: str, hub: RunningHub) -> None:
    env = {"SHAREPOINT_URL": sim.sharepoint_url, "SHAREPOINT_SITES": SITE, "SHAREPOINT_LIBRARIES": "Documents",
           "SHAREPOINT_TENANT_ID": sim.tenant_id, "SHAREPOINT_CLIENT_ID": sim.client_id,
           "SHAREPOINT_CLIENT_SECRET": sim.client_secret, "GRAPH_BASE_URL": sim.graph_url,
           "ENTRA_AUTHORITY": sim.authority_host, "SHAREPOINT_CA_FILE": ca.ca_path,
           "SHAREPOINT_SCOPE_CACHE_SECONDS": "1.5"}
    settings = make_settings(tmp_path, redis_url, hub_api_url=hub.url, hub_api_token=hub.token, environ=env)

    def run(wiring: Service | None = None) -> int:
        """One run as a task runs it (a connector built for it); the site requests Graph has seen."""
        [connector] = (wiring.connectors("sharepoint") if wiring is not None
                       else registry.build_connectors("sharepoint", settings))
        assert connector.sync_documents().state == "ok"
        return sim.count("site")

    worker = Service(settings)
    assert run(worker) == 1
    assert run(worker) == 1  # a later run of the same worker process reuses the resolved site
    assert run(Service(settings)) == 2  # another worker process resolves it itself
    assert run() == 3  # so does a connector built alone
    time.sleep(1.6)  # past SHAREPOINT_SCOPE_CACHE_SECONDS
    assert run(worker) == 4
    assert run(worker) == 4


def test_naming_only_missing_libraries_is_a_config_error(sim: GraphSimulator, ca: CertAuthority,
                                                         sp_settings: Settings, state: StateStore) -> None:
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["No Such Library"]), sim)
    assert summary.state == "config_error"
    assert "Engineering Drawings" in summary.scopes[0].error  # it says what the site does have


def test_folders_are_skipped_and_a_repeated_item_is_taken_once(sim: GraphSimulator, ca: CertAuthority,
                                                               sp_settings: Settings, state: StateStore,
                                                               hub: RunningHub) -> None:
    sim.repeat_across_pages = True
    sim.delta_page_size = 2
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.state == "ok"
    assert summary.totals["new"] == len(DOCS)
    assert sim.count("download") == len(DOCS)  # a repeat at the same cTag is not downloaded again
    assert {m["filename"] for m in _hub_files(hub).values()} == {p.rsplit("/", 1)[1] for p in DOCS}


def test_an_item_twice_in_one_page_is_fetched_once(sim: GraphSimulator, ca: CertAuthority,
                                                   sp_settings: Settings, state: StateStore) -> None:
    sim.repeat_within_page = True
    sim.store.put_file(_docs(sim), "first.txt", b"first file of the page")
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.totals["fetched"] == summary.totals["new"] == len(DOCS) + 1


def test_within_a_page_the_last_occurrence_wins_in_its_place() -> None:
    old = {"id": "A", "cTag": "c1"}
    other = {"id": "B", "cTag": "c1"}
    new = {"id": "A", "cTag": "c2"}
    assert _last_occurrences([old, other, new, {"no": "id"}]) == [other, new]


# -- later syncs ------------------------------------------------------------------------------------
def test_sync_with_no_changes_costs_one_delta_request_per_library_and_no_token(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore, hub: RunningHub) -> None:
    worker_cache = TtlCache()  # what one worker process's wiring hands every connector it builds
    _sync(_connector(sim, ca, sp_settings, state, cache=worker_cache), sim)
    sim.reset_counts()
    uploads = dict(hub.sim.uploads_per_key)
    summary = _sync(_connector(sim, ca, sp_settings, state, cache=worker_cache), sim)  # same worker, new connector
    assert summary.state == "ok" and summary.totals["new"] == 0
    assert dict(sim.counts) == {"delta": 2}
    assert hub.sim.uploads_per_key == uploads


def test_changed_files_are_uploaded_as_new_versions(sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings,
                                                    state: StateStore, hub: RunningHub) -> None:
    connector = _connector(sim, ca, sp_settings, state)
    _sync(connector, sim)
    old_sha = next(d.sha256 for d in hub.sim.documents.values() if d.metadata["filename"] == "Fire drill circular.txt")
    sim.store.put_file(_docs(sim), "Safety/Fire drill circular.txt", b"The fire drill moves to Saturday.")
    sim.store.put_file(_docs(sim), "Safety/Evacuation plan.txt", b"Evacuation plan for Aluva station.")
    sim.reset_counts()
    summary = _sync(connector, sim)
    assert summary.totals["new"] == 2
    assert sim.count("download") == 2 and sim.count("token") == 0
    changed = next(d for d in hub.sim.documents.values()
                   if d.metadata["filename"] == "Fire drill circular.txt" and not d.superseded)
    assert changed.metadata["previous_sha256"] == old_sha
    _assert_each_upload_once(hub)


def test_a_deleted_file_reaches_the_hub_and_its_folder_does_not(sim: GraphSimulator, ca: CertAuthority,
                                                               sp_settings: Settings, state: StateStore,
                                                               hub: RunningHub) -> None:
    connector = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    _sync(connector, sim)
    gone = sim.store.find(_docs(sim), "Safety/Fire drill circular.txt")
    assert gone is not None
    sim.store.delete(_docs(sim), "Safety")
    summary = _sync(connector, sim)
    assert summary.state == "ok" and summary.totals["deleted"] == 1
    assert [(d["source"], d["source_id"], d["status"]) for d in hub.sim.deletions] == [("sharepoint", gone.id, 204)]
    assert gone.id not in _hub_files(hub)
    assert state.get_item("sharepoint", _docs(sim).id, gone.id) is None


def test_expired_delta_token_resyncs_without_uploading_again(sim: GraphSimulator, ca: CertAuthority,
                                                            sp_settings: Settings, state: StateStore,
                                                            hub: RunningHub) -> None:
    connector = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    _sync(connector, sim)
    sim.expire_delta_tokens(_docs(sim))
    sim.store.put_file(_docs(sim), "Safety/New circular.txt", b"A new safety circular.")
    sim.reset_counts()
    summary = _sync(connector, sim)
    assert summary.state == "ok"
    assert summary.totals["new"] == 1 and summary.totals["duplicate"] == len(DOCS)
    assert sim.count("download") == 1
    assert [r.status for r in sim.log if r.kind == "delta"] == [410, 200]
    _assert_each_upload_once(hub)
    assert "deltaLink" in state.get_cursor("sharepoint", _docs(sim).id)


class _CrashingHub:
    """Delegates to the real Hub and dies (like a killed worker) at the Nth upload."""

    def __init__(self, hub: Hub, crash_at: int) -> None:
        self.hub, self.crash_at, self.uploads = hub, crash_at, 0

    def upload(self, document: Any) -> str:
        self.uploads += 1
        if self.uploads == self.crash_at:
            raise KeyboardInterrupt("worker killed")
        return self.hub.upload(document)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hub, name)


def test_crash_mid_feed_resumes_from_the_saved_next_link(sim: GraphSimulator, ca: CertAuthority,
                                                         sp_settings: Settings, state: StateStore,
                                                         hub: RunningHub) -> None:
    for i in range(12):
        sim.store.put_file(_docs(sim), f"Work orders/WO-{i:03}.txt", b"work order %d" % i)
    sim.delta_page_size = 5
    first = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    crashing = _CrashingHub(first.hub, crash_at=9)
    first.hub = crashing  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        _sync(first, sim)
    cursor = state.get_cursor("sharepoint", _docs(sim).id)
    assert set(cursor) == {"nextLink"}  # mid-feed: the page boundary before the crash
    downloads_before = sim.count("download")
    reset_applications()
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.state == "ok"
    total = len(DOCS) + 12
    assert len(_hub_files(hub)) == total
    _assert_each_upload_once(hub)
    # Resumed at the saved page: pages before it were not read again, and the items done in the
    # crashed page were skipped by dedup without a download.
    assert sim.count("download") - downloads_before == total - (crashing.uploads - 1)


def test_expired_download_url_is_refreshed_by_reading_the_item_again(sim: GraphSimulator, ca: CertAuthority,
                                                                     sp_settings: Settings, state: StateStore) -> None:
    connector = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    with connector.connect(_creds(sim)):
        items = [c for c in connector.list_changes(_docs(sim).id, None) if isinstance(c, Item)]
        sim.expire_download_urls()
        assert items[0].open is not None
        data = b"".join(items[0].open())
    assert data == DOCS[items[0].metadata["path"].lstrip("/")]
    assert [r.status for r in sim.log if r.kind in ("download", "item")] == [401, 200, 200]


def test_download_url_expiring_mid_sync_does_not_fail_the_item(sim: GraphSimulator, ca: CertAuthority,
                                                               sp_settings: Settings, state: StateStore) -> None:
    sim.inject("download", 403, count=1)
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.state == "ok" and summary.totals["new"] == len(DOCS) and summary.totals["failed"] == 0
    assert sim.count("item") == 1


def test_quick_xor_hash_mismatch_is_dead_lettered_and_the_run_goes_on(sim: GraphSimulator, ca: CertAuthority,
                                                                      sp_settings: Settings, state: StateStore,
                                                                      hub: RunningHub) -> None:
    sim.store.corrupt_hash(_docs(sim), "Safety/Fire drill circular.txt")
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.state == "ok"
    assert summary.totals["new"] == len(DOCS) - 1 and summary.totals["dead_lettered"] == 1
    (entry,) = state.list_dead_letters("sharepoint")
    assert "quickXorHash mismatch" in entry.reason and "Fire drill circular.txt" in entry.reason
    assert "Fire drill circular.txt" not in {m["filename"] for m in _hub_files(hub).values()}


def test_file_saved_again_during_download_is_accepted_at_its_new_hash(sim: GraphSimulator, ca: CertAuthority,
                                                                      sp_settings: Settings, state: StateStore) -> None:
    connector = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    with connector.connect(_creds(sim)):
        items = {c.filename: c for c in connector.list_changes(_docs(sim).id, None) if isinstance(c, Item)}
        sim.store.put_file(_docs(sim), "Safety/Fire drill circular.txt", b"saved again meanwhile")
        opener = items["Fire drill circular.txt"].open
        assert opener is not None
        assert b"".join(opener()) == b"saved again meanwhile"


def test_a_large_file_streams_and_its_hash_is_checked(sim: GraphSimulator, ca: CertAuthority,
                                                      sp_settings: Settings, state: StateStore,
                                                      hub: RunningHub) -> None:
    content = GeneratedContent(seed=42, size=3 * BLOCK_SIZE + 17)
    sim.store.put_file(_docs(sim), "Scans/depot survey.bin", content)
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.state == "ok"
    doc = next(d for d in hub.sim.documents.values() if d.metadata["filename"] == "depot survey.bin")
    assert doc.size == content.size


# -- auth and throttling ----------------------------------------------------------------------------
def test_revoked_token_is_replaced_once_and_the_sync_goes_on(sim: GraphSimulator, ca: CertAuthority,
                                                            sp_settings: Settings, state: StateStore) -> None:
    connector = _connector(sim, ca, sp_settings, state)
    _sync(connector, sim)
    sim.store.put_file(_docs(sim), "Safety/New.txt", b"new")
    sim.revoke_tokens()
    sim.reset_counts()
    summary = _sync(connector, sim)
    assert summary.state == "ok" and summary.totals["new"] == 1
    assert sim.count("token") == 1
    assert [r.status for r in sim.log if r.kind == "delta"][:2] == [401, 200]


def test_wrong_secret_is_auth_failed_with_the_aadsts_code(sim: GraphSimulator, ca: CertAuthority,
                                                          sp_settings: Settings, state: StateStore) -> None:
    summary = _connector(sim, ca, sp_settings, state).sync_documents(_creds(sim, secret="wrong-secret-value"))
    assert summary.state == "auth_failed"
    assert "AADSTS7000215" in summary.scopes[0].error
    assert "wrong-secret-value" not in summary.scopes[0].error
    assert sim.graph_count() == 0


def test_app_without_permission_is_a_config_error(sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings,
                                                  state: StateStore) -> None:
    sim.add_app("limited-app", "limited-secret-value", tenant_id=sim.tenant_id, roles=())
    connector = SharePointConnector(f"{sim.sharepoint_url}/{SITE}", tenant_id=sim.tenant_id, client_id="limited-app",
                                    graph_base_url=sim.graph_url, authority=sim.authority_host, ca_file=ca.ca_path,
                                    settings=sp_settings, state=state)
    summary = connector.sync_documents({"client_id": "limited-app", "client_secret": "limited-secret-value",
                                        "tenant_id": sim.tenant_id})
    assert summary.state == "config_error"
    assert "accessDenied" in summary.scopes[0].error and "Sites.Read.All" in summary.scopes[0].error


def test_long_retry_after_ends_the_run_throttled_and_holds_back_another_worker(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore) -> None:
    sim.inject("delta", 429, retry_after=120)
    before = time.time()
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    after = time.time()
    assert summary.state == "throttled"
    until = state.throttle_gate("graph", sim.tenant_id).blocked_until()
    assert before + 119.999 <= until <= after + 120.001  # 120 s from the answer (gate keeps milliseconds)
    # Another worker (a fresh process: no msal application, no site cache) sends nothing at all.
    reset_applications()
    before = sim.count()
    other = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert other.state == "throttled"
    assert sim.count() == before


def test_short_retry_after_is_waited_out_inline(sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings,
                                                state: StateStore) -> None:
    sim.inject("delta", 503, retry_after=1)
    started = time.monotonic()
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.state == "ok" and summary.totals["new"] == len(DOCS)
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in sim.log if r.kind == "delta"][:2] == [503, 200]


def test_stored_cursor_pointing_elsewhere_never_receives_the_token(sim: GraphSimulator, ca: CertAuthority,
                                                                   sp_settings: Settings, state: StateStore) -> None:
    state.set_cursor("sharepoint", _docs(sim).id, {"deltaLink": "https://attacker.example/v1.0/delta?token=x"})
    summary = _sync(_connector(sim, ca, sp_settings, state, libraries=["Documents"]), sim)
    assert summary.state == "ok" and summary.totals["new"] == len(DOCS)  # started over on Graph instead


# -- health and settings ---------------------------------------------------------------------------
def test_health_check_proves_token_site_and_each_library(sim: GraphSimulator, ca: CertAuthority,
                                                         sp_settings: Settings, state: StateStore) -> None:
    result = _connector(sim, ca, sp_settings, state).health_check(_creds(sim))
    assert result.ok and result.state == "healthy", result
    assert "Documents" in result.detail and "Engineering Drawings" in result.detail
    assert (sim.count("token"), sim.count("site"), sim.count("drives"), sim.count("item")) == (1, 1, 1, 2)
    assert sim.count("delta", "download") == 0


def test_health_check_reports_bad_secret_and_unknown_site(sim: GraphSimulator, ca: CertAuthority,
                                                          sp_settings: Settings, state: StateStore) -> None:
    bad = _connector(sim, ca, sp_settings, state).health_check(_creds(sim, secret="nope-nope"))
    assert (bad.ok, bad.state) == (False, "auth_failed") and "AADSTS7000215" in bad.detail
    nowhere = SharePointConnector(f"{sim.sharepoint_url}/sites/nowhere", tenant_id=sim.tenant_id,
                                  client_id=sim.client_id, graph_base_url=sim.graph_url,
                                  authority=sim.authority_host, ca_file=ca.ca_path, settings=sp_settings,
                                  state=state).health_check(_creds(sim))
    assert (nowhere.ok, nowhere.state) == (False, "config_error") and "sites/nowhere" in nowhere.detail


def test_fetch_documents_yields_documents_without_moving_cursors(sim: GraphSimulator, ca: CertAuthority,
                                                                 sp_settings: Settings, state: StateStore) -> None:
    connector = _connector(sim, ca, sp_settings, state, libraries=["Engineering Drawings"])
    documents = list(connector.fetch_documents(_creds(sim)))
    try:
        assert [d.filename for d in documents] == ["Pier P-214.txt"]
        assert documents[0].read_bytes() == DRAWINGS["Viaduct/Pier P-214.txt"]
    finally:
        for document in documents:
            document.close()
    assert state.get_cursor("sharepoint", sim.store.drive(SITE, "Engineering Drawings").id) is None


def test_from_settings_builds_one_connector_per_site(sp_settings: Settings) -> None:
    env = {"SHAREPOINT_URL": "https://kmrl.sharepoint.com", "SHAREPOINT_TENANT_ID": "t", "SHAREPOINT_CLIENT_ID": "c",
           "SHAREPOINT_SITES": "sites/operations, https://kmrl.sharepoint.com/sites/finance",
           "SHAREPOINT_LIBRARIES": "Documents,Engineering Drawings", "GRAPH_BASE_URL": "https://127.0.0.1:9/v1.0",
           "ENTRA_AUTHORITY": "https://127.0.0.1:9", "SHAREPOINT_CA_FILE": "/tmp/ca.pem"}
    configured = Settings(**{**sp_settings.__dict__, "environ": env})
    operations, finance = SharePointConnector.from_settings(configured)
    assert operations.site_url == "https://kmrl.sharepoint.com/sites/operations"
    assert (operations.instance_id, finance.instance_id) == ("sites/operations", "sites/finance")
    assert finance.site_url == "https://kmrl.sharepoint.com/sites/finance"
    assert operations.libraries == ["Documents", "Engineering Drawings"]
    assert (operations.graph_base_url, operations.authority, operations.ca_file) == (
        "https://127.0.0.1:9/v1.0", "https://127.0.0.1:9", "/tmp/ca.pem")
    with pytest.raises(Exception, match="SHAREPOINT_SITES"):
        SharePointConnector.from_settings(Settings(**{**sp_settings.__dict__, "environ": {
            **env, "SHAREPOINT_SITES": ""}}))


def test_a_checkpoint_follows_every_page(sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings,
                                         state: StateStore) -> None:
    sim.delta_page_size = 3
    connector = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    with connector.connect(_creds(sim)):
        changes = list(connector.list_changes(_docs(sim).id, None))
    checkpoints = [c.cursor for c in changes if isinstance(c, Checkpoint)]
    assert sim.count("delta") == len(checkpoints)
    assert all(set(c) == {"nextLink"} for c in checkpoints[:-1]) and set(checkpoints[-1]) == {"deltaLink"}
    assert isinstance(changes[-1], Checkpoint)



def test_demo_tenant_syncs_end_to_end_from_settings(ca: CertAuthority, tmp_path: Path, redis_url: str,
                                                    hub: RunningHub, state: StateStore) -> None:
    from sandbox.graph import seed_demo

    demo = GraphSimulator()
    seed_demo(demo)
    demo.start(ca)
    try:
        env = {"SHAREPOINT_URL": demo.sharepoint_url, "SHAREPOINT_TENANT_ID": demo.tenant_id,
               "SHAREPOINT_CLIENT_ID": demo.client_id, "SHAREPOINT_CLIENT_SECRET": demo.client_secret,
               "SHAREPOINT_SITES": "sites/operations,sites/finance", "GRAPH_BASE_URL": demo.graph_url,
               "ENTRA_AUTHORITY": demo.authority_host, "SHAREPOINT_CA_FILE": ca.ca_path}
        settings = make_settings(tmp_path, redis_url, hub_api_url=hub.url, hub_api_token=hub.token, environ=env)
        connectors = SharePointConnector.from_settings(settings, state=state)
        summaries = [c.sync_documents() for c in connectors]  # credentials from SHAREPOINT_* variables
        assert [s.state for s in summaries] == ["ok", "ok"]
        assert sum(s.totals["new"] for s in summaries) == 6
        departments = {m["filename"]: m["department"] for m in _hub_files(hub).values()}
        assert departments["INV-2024-0913 Alstom spares.txt"] == "Finance"
        assert _secret_absent(demo.client_secret, hub)
    finally:
        demo.stop()


def _secret_absent(secret: str, hub: RunningHub) -> bool:
    """Whether the client secret appears nowhere in what the Hub received."""
    return secret not in json.dumps([d.metadata for d in hub.sim.documents.values()])


def test_a_page_with_entries_without_an_id_is_read_again_later(sim: GraphSimulator, ca: CertAuthority,
                                                               sp_settings: Settings, state: StateStore,
                                                               hub: RunningHub) -> None:
    sim.inject("delta", 200, body={"value": [{"name": "nameless.txt", "file": {}}],
                                   "@odata.deltaLink": f"{sim.graph_url}/drives/x/root/delta?token=t"})
    connector = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    first = _sync(connector, sim)
    assert first.state == "error" and "without an id" in first.scopes[0].error
    assert state.get_cursor("sharepoint", _docs(sim).id) is None
    again = _sync(connector, sim)
    assert again.state == "ok" and again.totals["new"] == len(DOCS)


def test_an_entry_with_neither_file_nor_folder_facet_is_dead_lettered_not_dropped(
        sim: GraphSimulator, ca: CertAuthority, sp_settings: Settings, state: StateStore) -> None:
    connector = _connector(sim, ca, sp_settings, state, libraries=["Documents"])
    with connector.connect(_creds(sim)):
        site, library = connector._library(_docs(sim).id)
        odd = connector._change(site, library, {"id": "01ODD", "name": "odd.pdf", "cTag": "c1"}, {})
        notebook = connector._change(site, library, {"id": "01NOTE", "name": "Notes", "package": {"type": "oneNote"}},
                                     {})
    assert isinstance(odd, ItemFailure) and "neither a file nor a folder facet" in odd.reason
    assert notebook is None

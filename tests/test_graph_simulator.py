"""The Graph + Entra simulator answers like Entra ID and Microsoft Graph (reference/api-contracts.md part A),
over real TLS, so msal and the connector run against it unchanged."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msal
import pytest
import quickxorhash
import requests

from sandbox.graph import GRAPH_SCOPE, GraphSimulator
from sandbox.graph_store import BLOCK_SIZE, GeneratedContent, quick_xor_hash
from sandbox.tls import CertAuthority

SITE = "sites/operations"


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's ``verify`` (requests
    # issue 3829), which is how msal's ``verify=`` reaches it; the simulator's CA must win here.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("graph-ca")))


@pytest.fixture
def sim(ca: CertAuthority) -> Iterator[GraphSimulator]:
    simulator = GraphSimulator(client_secret="s3cret-value-for-tests")
    simulator.start(ca)
    yield simulator
    simulator.stop()


@pytest.fixture
def session(sim: GraphSimulator, ca: CertAuthority) -> requests.Session:
    """A session carrying a valid bearer token from the simulator."""
    s = requests.Session()
    s.verify = ca.ca_path
    answer = s.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
        "scope": GRAPH_SCOPE})
    assert answer.status_code == 200, answer.text
    s.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return s


def _app(sim: GraphSimulator, ca: CertAuthority, *, secret: str | None = None,
         client_id: str | None = None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id or sim.client_id, client_credential=secret or sim.client_secret,
        authority=f"{sim.authority_host}/{sim.tenant_id}", verify=ca.ca_path, instance_discovery=False)


def _reference_quick_xor(data: bytes) -> bytes:
    """QuickXorHash as Microsoft specifies it: byte i XORed into a 160-bit ring at bit (11 * i) mod 160,
    the ring written little-endian, then the length (64-bit little-endian) XORed into its last 8 bytes."""
    ring = 0
    for i, byte in enumerate(data):
        shift = (11 * i) % 160
        value = byte << shift
        ring ^= (value | (value >> 160)) & ((1 << 160) - 1)
    digest = bytearray(ring.to_bytes(20, "little"))
    for i, b in enumerate(len(data).to_bytes(8, "little")):
        digest[12 + i] ^= b
    return bytes(digest)


def _walk_delta(session: requests.Session, url: str) -> tuple[list[list[dict[str, Any]]], str]:
    """Follows nextLinks from ``url``; returns the pages' items and the final deltaLink."""
    pages: list[list[dict[str, Any]]] = []
    while True:
        body = session.get(url, timeout=10).json()
        pages.append(body["value"])
        if "@odata.nextLink" in body:
            assert "@odata.deltaLink" not in body
            url = body["@odata.nextLink"]
            continue
        return pages, body["@odata.deltaLink"]


# -- Entra through msal --------------------------------------------------------------------------------
def test_msal_acquires_a_token_over_tls_and_reuses_it_from_its_cache(sim: GraphSimulator,
                                                                      ca: CertAuthority) -> None:
    app = _app(sim, ca)
    first = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    second = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert first["token_source"] == "identity_provider"
    assert first["expires_in"] > 300
    assert second["token_source"] == "cache"
    assert second["access_token"] == first["access_token"]
    assert sim.count("token") == 1
    assert sim.count("discovery") == 1


def test_token_response_has_the_documented_shape_and_no_scope(sim: GraphSimulator, ca: CertAuthority) -> None:
    answer = requests.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=ca.ca_path, timeout=10, data={
        "grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
        "scope": GRAPH_SCOPE, "client_info": "1"})
    assert answer.status_code == 200
    assert set(answer.json()) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert answer.json()["token_type"] == "Bearer"


def test_wrong_secret_answers_aadsts7000215(sim: GraphSimulator, ca: CertAuthority) -> None:
    result = _app(sim, ca, secret="not-the-secret").acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215:")
    assert result["error_codes"] == [7000215]
    assert "not-the-secret" not in result["error_description"]


def test_unknown_app_answers_aadsts700016(sim: GraphSimulator, ca: CertAuthority) -> None:
    result = _app(sim, ca, client_id="no-such-app").acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert result["error"] == "unauthorized_client"
    assert "AADSTS700016" in result["error_description"]


def test_scope_without_default_suffix_is_refused(sim: GraphSimulator, ca: CertAuthority) -> None:
    result = _app(sim, ca).acquire_token_for_client(scopes=["https://graph.microsoft.com/Sites.Read.All"])
    assert result["error"] == "invalid_scope"
    assert "AADSTS1002012" in result["error_description"]


def test_unknown_tenant_fails_msal_discovery(sim: GraphSimulator, ca: CertAuthority) -> None:
    with pytest.raises(ValueError):
        msal.ConfidentialClientApplication(sim.client_id, client_credential=sim.client_secret,
                                           authority=f"{sim.authority_host}/no-such-tenant", verify=ca.ca_path,
                                           instance_discovery=False)


# -- Graph: auth --------------------------------------------------------------------------------------
def test_graph_needs_a_bearer_token(sim: GraphSimulator, ca: CertAuthority) -> None:
    answer = requests.get(f"{sim.graph_url}/sites/{sim.store.hostname}:/{SITE}", verify=ca.ca_path, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_revoked_token_is_refused(sim: GraphSimulator, session: requests.Session) -> None:
    sim.store.add_site(SITE)
    assert session.get(f"{sim.graph_url}/sites/{sim.store.hostname}:/{SITE}", timeout=10).status_code == 200
    sim.revoke_tokens()
    answer = session.get(f"{sim.graph_url}/sites/{sim.store.hostname}:/{SITE}", timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_app_without_sites_permission_gets_access_denied(sim: GraphSimulator, ca: CertAuthority) -> None:
    sim.add_app("no-perms-app", "another-secret", tenant_id=sim.tenant_id, roles=())
    token = _app(sim, ca, client_id="no-perms-app", secret="another-secret").acquire_token_for_client(
        scopes=[GRAPH_SCOPE])["access_token"]
    sim.store.add_site(SITE)
    answer = requests.get(f"{sim.graph_url}/sites/{sim.store.hostname}:/{SITE}", verify=ca.ca_path, timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "accessDenied"


# -- Graph: sites and drives --------------------------------------------------------------------------
def test_site_by_path_and_its_drives_have_the_documented_shapes(sim: GraphSimulator,
                                                                 session: requests.Session) -> None:
    sim.store.add_drive(SITE, "Documents")
    sim.store.add_drive(SITE, "Engineering Drawings")
    site = session.get(f"{sim.graph_url}/sites/{sim.store.hostname}:/{SITE}", timeout=10).json()
    assert {"id", "displayName", "name", "createdDateTime", "lastModifiedDateTime", "webUrl"} <= set(site)
    assert site["id"].startswith(sim.store.hostname + ",")
    assert site["webUrl"] == f"https://{sim.store.hostname}/{SITE}"
    drives = session.get(f"{sim.graph_url}/sites/{site['id']}/drives", timeout=10).json()
    assert drives["@odata.context"].endswith("$metadata#drives")
    assert [d["name"] for d in drives["value"]] == ["Documents", "Engineering Drawings"]
    first = drives["value"][0]
    assert {"id", "name", "driveType", "webUrl", "createdDateTime", "lastModifiedDateTime", "createdBy", "owner",
            "quota"} <= set(first)
    assert first["driveType"] == "documentLibrary"
    assert first["id"].startswith("b!")
    assert first["webUrl"].endswith("/Shared%20Documents")


def test_unknown_site_is_item_not_found(sim: GraphSimulator, session: requests.Session) -> None:
    answer = session.get(f"{sim.graph_url}/sites/{sim.store.hostname}:/sites/nowhere", timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "itemNotFound"


# -- Graph: delta -------------------------------------------------------------------------------------
def test_full_enumeration_pages_with_next_links_and_ends_with_a_delta_link(sim: GraphSimulator,
                                                                           session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    for i in range(7):
        sim.store.put_file(drive, f"Rolling Stock/WO-{i}.pdf", b"%%PDF-1.4 work order %d" % i)
    pages, delta_link = _walk_delta(session, f"{sim.graph_url}/drives/{drive.id}/root/delta?$top=3")
    items = [i for page in pages for i in page]
    assert [len(p) for p in pages] == [3, 3, 3]
    assert items[0]["name"] == "root" and "root" in items[0]
    folder = next(i for i in items if i["name"] == "Rolling Stock")
    assert folder["folder"] == {"childCount": 7} and "cTag" not in folder
    files = [i for i in items if "file" in i]
    assert sorted(f["name"] for f in files) == [f"WO-{i}.pdf" for i in range(7)]
    one = files[0]
    assert {"@microsoft.graph.downloadUrl", "id", "name", "size", "eTag", "cTag", "createdDateTime",
            "lastModifiedDateTime", "webUrl", "createdBy", "lastModifiedBy", "parentReference", "file"} <= set(one)
    assert "path" not in one["parentReference"]  # delta leaves parentReference.path out
    assert one["parentReference"]["id"] == folder["id"]
    assert set(one["file"]["hashes"]) == {"quickXorHash"}
    assert one["webUrl"] == f"{drive.web_url}/Rolling%20Stock/{one['name']}"
    assert "token=" in delta_link

    quiet = session.get(delta_link, timeout=10).json()
    assert quiet["value"] == []
    assert "@odata.deltaLink" in quiet


def test_changes_after_a_delta_link_show_latest_state_ancestors_and_deletions(sim: GraphSimulator,
                                                                               session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    sim.store.put_file(drive, "Safety/drill.txt", b"first")
    sim.store.put_file(drive, "Safety/old.txt", b"to be deleted")
    _, delta_link = _walk_delta(session, f"{sim.graph_url}/drives/{drive.id}/root/delta")
    before = sim.store.find(drive, "Safety/drill.txt")
    assert before is not None
    old_ctag = before.ctag
    sim.store.put_file(drive, "Safety/drill.txt", b"second")
    sim.store.put_file(drive, "Safety/drill.txt", b"third")
    gone = sim.store.find(drive, "Safety/old.txt")
    assert gone is not None
    sim.store.delete(drive, "Safety/old.txt")
    pages, _ = _walk_delta(session, delta_link)
    items = [i for page in pages for i in page]
    changed = [i for i in items if i.get("name") == "drill.txt"]
    assert len(changed) == 1 and changed[0]["size"] == len(b"third")
    assert changed[0]["cTag"] != old_ctag
    deleted = [i for i in items if "deleted" in i]
    assert deleted == [{"id": gone.id, "deleted": {"state": "deleted"},
                        "parentReference": deleted[0]["parentReference"]}]
    assert {"name", "cTag"}.isdisjoint(deleted[0])
    assert any("root" in i for i in items)  # the ancestors of a change are reported too


def test_a_rename_and_a_move_change_the_name_path_and_etag_but_not_the_ctag(sim: GraphSimulator,
                                                                           session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    sim.store.put_file(drive, "Safety/drill.txt", b"drill")
    sim.store.put_file(drive, "Safety/plan.txt", b"plan")
    _, delta_link = _walk_delta(session, f"{sim.graph_url}/drives/{drive.id}/root/delta")
    drill, plan = sim.store.find(drive, "Safety/drill.txt"), sim.store.find(drive, "Safety/plan.txt")
    assert drill is not None and plan is not None
    tags = {item.id: (item.etag, item.ctag) for item in (drill, plan)}
    sim.store.rename(drive, "Safety/drill.txt", "drill 2025.txt")
    sim.store.move(drive, "Safety/plan.txt", "Archive/2024")
    pages, _ = _walk_delta(session, delta_link)
    listed = {i["id"]: i for page in pages for i in page}
    assert listed[drill.id]["name"] == "drill 2025.txt"
    assert listed[drill.id]["webUrl"] == f"{drive.web_url}/Safety/drill%202025.txt"
    assert listed[plan.id]["webUrl"] == f"{drive.web_url}/Archive/2024/plan.txt"
    assert listed[plan.id]["parentReference"]["id"] == sim.store.find(drive, "Archive/2024").id
    for item_id, (etag, ctag) in tags.items():
        assert listed[item_id]["eTag"] != etag and listed[item_id]["cTag"] == ctag
    assert sim.store.find(drive, "Safety/plan.txt") is None
    with pytest.raises(ValueError, match="already holds"):
        sim.store.move(drive, "Archive/2024/plan.txt", "Archive/2024")
    with pytest.raises(ValueError, match="into itself"):
        sim.store.move(drive, "Archive", "Archive/2024/deeper")
    assert sim.store.find(drive, "Archive/2024/deeper") is None


def test_item_changed_during_enumeration_is_reported_again_by_the_next_delta(
        sim: GraphSimulator, session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    for i in range(6):
        sim.store.put_file(drive, f"f{i}.txt", b"v1 %d" % i)
    first = session.get(f"{sim.graph_url}/drives/{drive.id}/root/delta?$top=3", timeout=10).json()
    seen = [i["name"] for i in first["value"]]
    changed = next(n for n in seen if n.startswith("f"))
    sim.store.put_file(drive, changed, b"v2")
    pages, delta_link = _walk_delta(session, first["@odata.nextLink"])
    later = [i["name"] for page in pages for i in page]
    assert set(seen + later) >= {f"f{i}.txt" for i in range(6)}
    again = session.get(delta_link, timeout=10).json()["value"]
    assert [i["size"] for i in again if i.get("name") == changed] == [2]


def test_item_changed_while_paging_changes_moves_to_a_later_page_never_skipped(
        sim: GraphSimulator, session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    _, delta_link = _walk_delta(session, f"{sim.graph_url}/drives/{drive.id}/root/delta")
    for i in range(6):
        sim.store.put_file(drive, f"f{i}.txt", b"v1 %d" % i)
    first = session.get(delta_link.replace("?", "?$top=3&"), timeout=10).json()
    seen = [i["name"] for i in first["value"] if "file" in i]
    sim.store.put_file(drive, seen[0], b"v2")
    pages, _ = _walk_delta(session, first["@odata.nextLink"])
    later = [i for page in pages for i in page if "file" in i]
    assert {i["name"] for i in later} | set(seen) == {f"f{i}.txt" for i in range(6)}
    assert [i["size"] for i in later if i["name"] == seen[0]] == [2]


def test_repeat_across_pages_repeats_the_previous_page_last_item(sim: GraphSimulator,
                                                                 session: requests.Session) -> None:
    sim.repeat_across_pages = True
    drive = sim.store.add_drive(SITE, "Documents")
    for i in range(4):
        sim.store.put_file(drive, f"f{i}.txt", b"x%d" % i)
    pages, _ = _walk_delta(session, f"{sim.graph_url}/drives/{drive.id}/root/delta?$top=2")
    assert pages[1][0]["id"] == pages[0][-1]["id"]


def test_token_latest_returns_no_items_and_a_delta_link(sim: GraphSimulator, session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    sim.store.put_file(drive, "a.txt", b"a")
    body = session.get(f"{sim.graph_url}/drives/{drive.id}/root/delta?token=latest", timeout=10).json()
    assert body["value"] == [] and "@odata.deltaLink" in body
    sim.store.put_file(drive, "b.txt", b"b")
    names = [i.get("name") for i in session.get(body["@odata.deltaLink"], timeout=10).json()["value"]]
    assert "b.txt" in names and "a.txt" not in names


def test_expired_delta_token_answers_410_with_a_location_that_restarts(sim: GraphSimulator,
                                                                         session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    sim.store.put_file(drive, "a.txt", b"a")
    _, delta_link = _walk_delta(session, f"{sim.graph_url}/drives/{drive.id}/root/delta")
    sim.expire_delta_tokens(drive)
    gone = session.get(delta_link, timeout=10)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resyncRequired"
    pages, _ = _walk_delta(session, gone.headers["Location"])
    assert "a.txt" in [i.get("name") for page in pages for i in page]


def test_tampered_delta_token_is_a_bad_request(sim: GraphSimulator, session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    answer = session.get(f"{sim.graph_url}/drives/{drive.id}/root/delta?token=bm9wZQ.AAAA", timeout=10)
    assert answer.status_code == 400


# -- Graph: items and downloads ---------------------------------------------------------------------
def test_item_has_a_fresh_download_url_that_needs_no_auth(sim: GraphSimulator, session: requests.Session,
                                                          ca: CertAuthority) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    item = sim.store.put_file(drive, "Safety/drill.txt", b"fire drill on Friday")
    body = session.get(f"{sim.graph_url}/drives/{drive.id}/items/{item.id}", timeout=10).json()
    assert body["parentReference"]["path"] == f"/drives/{drive.id}/root:/Safety"
    url = body["@microsoft.graph.downloadUrl"]
    assert urlsplit(url).path == "/_layouts/15/download.aspx" and "tempauth" in parse_qs(urlsplit(url).query)
    download = requests.get(url, verify=ca.ca_path, timeout=10)
    assert download.status_code == 200 and download.content == b"fire drill on Friday"
    assert not sim.log[-1].had_authorization


def test_content_redirects_to_the_download_url(sim: GraphSimulator, session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    item = sim.store.put_file(drive, "a.txt", b"abc")
    answer = session.get(f"{sim.graph_url}/drives/{drive.id}/items/{item.id}/content", allow_redirects=False,
                         timeout=10)
    assert answer.status_code == 302
    assert urlsplit(answer.headers["Location"]).path == "/_layouts/15/download.aspx"


def test_download_url_expires_on_demand_and_by_age(ca: CertAuthority) -> None:
    now = [1_000_000.0]
    sim = GraphSimulator(download_url_ttl=60, clock=lambda: now[0])
    sim.start(ca)
    try:
        drive = sim.store.add_drive(SITE, "Documents")
        item = sim.store.put_file(drive, "a.txt", b"abc")
        url = sim._download_url(sim.url, drive, item)
        assert requests.get(url, verify=ca.ca_path, timeout=10).status_code == 200
        now[0] += 61
        assert requests.get(url, verify=ca.ca_path, timeout=10).status_code == 401
        url = sim._download_url(sim.url, drive, item)
        sim.expire_download_urls()
        assert requests.get(url, verify=ca.ca_path, timeout=10).status_code == 401
    finally:
        sim.stop()


def test_download_honours_range(sim: GraphSimulator, ca: CertAuthority) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    content = GeneratedContent(seed=3, size=3 * BLOCK_SIZE + 123)
    item = sim.store.put_file(drive, "big.bin", content)
    url = sim._download_url(sim.url, drive, item)
    whole = b"".join(content.chunks())
    start, end = BLOCK_SIZE - 10, 2 * BLOCK_SIZE + 10
    part = requests.get(url, verify=ca.ca_path, timeout=10, headers={"Range": f"bytes={start}-{end}"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes {start}-{end}/{content.size}"
    assert part.content == whole[start:end + 1]
    tail = requests.get(url, verify=ca.ca_path, timeout=10, headers={"Range": "bytes=-100"})
    assert tail.content == whole[-100:]


def test_reported_quick_xor_hash_matches_the_downloaded_bytes(sim: GraphSimulator, session: requests.Session,
                                                              ca: CertAuthority) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    item = sim.store.put_file(drive, "scan.bin", GeneratedContent(seed=11, size=BLOCK_SIZE + 777))
    body = session.get(f"{sim.graph_url}/drives/{drive.id}/items/{item.id}", timeout=10).json()
    data = requests.get(body["@microsoft.graph.downloadUrl"], verify=ca.ca_path, timeout=10).content
    digest = quickxorhash.quickxorhash()
    digest.update(data)
    assert body["file"]["hashes"]["quickXorHash"] == base64.b64encode(digest.digest()).decode()


@pytest.mark.parametrize("data", [b"", b"a", b"hello world", bytes(range(256)) * 3, b"\xff" * 1000])
def test_quickxorhash_package_agrees_with_the_specification(data: bytes) -> None:
    digest = quickxorhash.quickxorhash()
    half = len(data) // 3
    digest.update(data[:half])
    digest.update(data[half:])
    assert digest.digest() == _reference_quick_xor(data)
    assert quick_xor_hash(data) == base64.b64encode(_reference_quick_xor(data)).decode()


def test_corrupt_hash_reports_a_wrong_quick_xor_hash(sim: GraphSimulator) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    item = sim.store.put_file(drive, "a.txt", b"abc")
    sim.store.corrupt_hash(drive, "a.txt")
    assert item.quick_xor_hash() != quick_xor_hash(b"abc")


def test_generated_content_is_deterministic_and_range_consistent() -> None:
    content = GeneratedContent(seed=5, size=2 * BLOCK_SIZE + 5)
    whole = b"".join(content.chunks())
    assert len(whole) == content.size
    assert whole == b"".join(GeneratedContent(seed=5, size=content.size).chunks())
    assert whole != b"".join(GeneratedContent(seed=6, size=content.size).chunks())
    assert b"".join(content.chunks(BLOCK_SIZE - 3, BLOCK_SIZE + 9)) == whole[BLOCK_SIZE - 3:BLOCK_SIZE + 9]
    assert whole[:BLOCK_SIZE] != whole[BLOCK_SIZE:2 * BLOCK_SIZE]


# -- faults and counting ----------------------------------------------------------------------------
def test_injected_throttle_answers_once_with_retry_after_then_recovers(sim: GraphSimulator,
                                                                      session: requests.Session) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    sim.inject("delta", 429, retry_after=120)
    url = f"{sim.graph_url}/drives/{drive.id}/root/delta"
    throttled = session.get(url, timeout=10)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "120"
    assert throttled.json()["error"]["code"] == "activityLimitReached"
    assert session.get(url, timeout=10).status_code == 200
    assert sim.count("delta") == 2


def test_requests_are_counted_by_kind(sim: GraphSimulator, session: requests.Session, ca: CertAuthority) -> None:
    drive = sim.store.add_drive(SITE, "Documents")
    item = sim.store.put_file(drive, "a.txt", b"abc")
    session.get(f"{sim.graph_url}/sites/{sim.store.hostname}:/{SITE}", timeout=10)
    session.get(f"{sim.graph_url}/drives/{drive.id}/root/delta", timeout=10)
    body = session.get(f"{sim.graph_url}/drives/{drive.id}/items/{item.id}", timeout=10).json()
    requests.get(body["@microsoft.graph.downloadUrl"], verify=ca.ca_path, timeout=10)
    assert (sim.count("token"), sim.count("site"), sim.count("delta"), sim.count("item"),
            sim.count("download")) == (1, 1, 1, 1, 1)
    assert sim.graph_count() == 3


def test_demo_entry_point_writes_settings_and_serves(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "sandbox.graph", "--state-dir", str(tmp_path)],
                               cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "graph simulator on https://127.0.0.1:" in line
        env = dict(row.split("=", 1) for row in (tmp_path / "graph.env").read_text().splitlines())
        app = msal.ConfidentialClientApplication(
            env["SHAREPOINT_CLIENT_ID"], client_credential=env["SHAREPOINT_CLIENT_SECRET"],
            authority=f"{env['ENTRA_AUTHORITY']}/{env['SHAREPOINT_TENANT_ID']}", verify=env["SHAREPOINT_CA_FILE"],
            instance_discovery=False)
        assert "access_token" in app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        assert (tmp_path / "graph.env").stat().st_mode & 0o077 == 0
    finally:
        process.terminate()
        deadline = time.time() + 10
        while process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()

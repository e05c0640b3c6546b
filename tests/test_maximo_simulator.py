"""The Maximo simulator answers like Maximo's OSLC API (reference/api-contracts.md part B)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests

from sandbox import maximo_query as mq
from sandbox.maximo import DEFAULT_API_KEYS, DEFAULT_USERS, MaximoSimulator
from sandbox.servers import ServerThread

API_KEY = DEFAULT_API_KEYS[0]
USER, PASSWORD = next(iter(DEFAULT_USERS.items()))


@pytest.fixture
def sim() -> MaximoSimulator:
    return MaximoSimulator(apikey_cookie_quirk=False)


@pytest.fixture
def url(sim: MaximoSimulator) -> Iterator[str]:
    with ServerThread(sim) as server:
        yield server.url


def _query(url: str, **params: str) -> requests.Response:
    return requests.get(f"{url}/maximo/api/os/mxapiwodetail", params={"lean": "1", **params},
                        headers={"apikey": API_KEY}, timeout=10)


def test_where_parser_reads_dates_lists_and_and() -> None:
    conds = mq.parse_where('changedate>="2024-04-01T09:00:00+05:30" and siteid="MUTTOM" and worktype in ["PM","CM"]',
                           {"changedate": mq.DATETIME, "siteid": mq.TEXT, "worktype": mq.TEXT})
    assert [c.operator for c in conds] == [">=", "=", "in"]
    assert conds[2].value == ("PM", "CM")


@pytest.mark.parametrize("where", [
    'siteid="A" or siteid="B"',          # Maximo has no bare "or"
    "changedate>=2024-04-01",            # dates must be quoted
    'changedate>="2024-04-01T09:00:00"',  # and carry an offset
    'nosuchattr="x"',
    'siteid in ["A",]',
])
def test_where_parser_refuses_what_maximo_refuses(where: str) -> None:
    with pytest.raises(mq.QueryError):
        mq.parse_where(where, {"changedate": mq.DATETIME, "siteid": mq.TEXT})


def test_select_parser_reads_child_objects() -> None:
    selection = mq.parse_select("wonum,description,doclinks{*}")
    assert selection.attributes == {"wonum", "description"}
    assert selection.children["doclinks"].everything


def test_collection_filters_orders_and_pages(sim: MaximoSimulator, url: str) -> None:
    same = "2024-04-02T10:00:00+05:30"
    for wonum in ("3003", "3001", "3002"):
        sim.add_work_order(wonum, changedate=same)
    sim.add_work_order("2999", changedate="2024-04-01T10:00:00+05:30")
    sim.add_work_order("3004", siteid="ALUVA", changedate=same)
    params = {"oslc.select": "wonum,changedate", "oslc.where": f'changedate>="{same}" and siteid="MUTTOM"',
              "oslc.orderBy": "+changedate,+wonum", "oslc.pageSize": "2"}
    first = _query(url, **params).json()
    assert [m["wonum"] for m in first["member"]] == ["3001", "3002"]
    assert first["responseInfo"]["pagenum"] == 1
    second = requests.get(first["responseInfo"]["nextPage"]["href"], headers={"apikey": API_KEY}, timeout=10).json()
    assert [m["wonum"] for m in second["member"]] == ["3003"]
    assert "nextPage" not in second["responseInfo"]


def test_unencoded_plus_in_order_by_is_refused(url: str) -> None:
    response = requests.get(f"{url}/maximo/api/os/mxapiwodetail?lean=1&oslc.orderBy=+changedate",
                            headers={"apikey": API_KEY}, timeout=10)
    assert response.status_code == 400
    error = response.json()["Error"]
    assert error["reasonCode"] == "BMXAA8744E" and error["statusCode"] == "400"


def test_nulls_are_dropped_and_nothing_selected_means_hrefs_only(sim: MaximoSimulator, url: str) -> None:
    sim.add_work_order("5001", location=None)
    member = _query(url, **{"oslc.select": "wonum,location"}).json()["member"][0]
    assert member["wonum"] == "5001" and "location" not in member
    assert set(_query(url).json()["member"][0]) == {"href"}


def test_doclinks_inline_binary_and_meta(sim: MaximoSimulator, url: str) -> None:
    wo = sim.add_work_order("6001")
    link = sim.add_doclink(wo.siteid, "6001", filename="drawing.png", mime_type="image/png", size=5000)
    member = _query(url, **{"oslc.select": "wonum,doclinks{*}"}).json()["member"][0]
    (doc,) = member["doclinks"]
    assert doc["describedBy"]["format"]["label"] == "image/png"
    assert doc["describedBy"]["attachmentSize"] == 5000
    binary = requests.get(doc["href"], headers={"apikey": API_KEY}, timeout=10)
    assert binary.content[:4] == b"\x89PNG" and len(binary.content) == 5000
    meta_href = binary.headers["Link"].split(">")[0].lstrip("<")
    assert meta_href.endswith(f"/doclinks/meta/{link.id}")
    meta = requests.get(meta_href, params={"lean": "1"}, headers={"apikey": API_KEY}, timeout=10).json()
    assert meta["fileName"] == "drawing.png"


def test_removed_doclink_leaves_the_work_order_and_its_href_answers_404(sim: MaximoSimulator, url: str) -> None:
    wo = sim.add_work_order("6101", attachments=2)
    before = wo.changedate
    gone, kept = sorted(wo.doclinks)
    old = _query(url, **{"oslc.select": "wonum,doclinks{*}"}).json()["member"][0]["doclinks"]
    sim.remove_doclink(wo.siteid, "6101", gone)
    member = _query(url, **{"oslc.select": "wonum,changedate,doclinks{*}"}).json()["member"][0]
    assert [d["describedBy"]["identifier"] for d in member["doclinks"]] == [str(kept)]
    assert before is not None and wo.changedate is not None and wo.changedate > before
    href = next(d["href"] for d in old if d["describedBy"]["identifier"] == str(gone))
    assert requests.get(href, headers={"apikey": API_KEY}, timeout=10).status_code == 404


def test_null_changedate_is_dropped_and_found_only_by_is_null(sim: MaximoSimulator, url: str) -> None:
    sim.add_work_order("6201")
    sim.clear_changedate("MUTTOM", sim.add_work_order("6202").wonum)
    members = _query(url, **{"oslc.select": "wonum,changedate", "oslc.orderBy": "+changedate"}).json()["member"]
    assert [m["wonum"] for m in members] == ["6202", "6201"] and "changedate" not in members[0]
    since = _query(url, **{"oslc.select": "wonum", "oslc.where": 'changedate>="2000-01-01T00:00:00+05:30"'})
    assert [m["wonum"] for m in since.json()["member"]] == ["6201"]
    null = _query(url, **{"oslc.select": "wonum", "oslc.where": 'changedate!="*"'})
    assert [m["wonum"] for m in null.json()["member"]] == ["6202"]


def test_doclinks_as_href_when_configured(url: str) -> None:
    sim2 = MaximoSimulator(doclinks_inline=False)
    sim2.add_work_order("7001", attachments=2)
    with ServerThread(sim2) as server:
        member = _query(server.url, **{"oslc.select": "wonum,doclinks{*}"}).json()["member"][0]
        collection = requests.get(member["doclinks"]["href"], params={"lean": "1"}, headers={"apikey": API_KEY},
                                  timeout=10).json()
    assert len(collection["member"]) == 2


def test_bad_api_key_and_bad_login_give_their_reason_codes(url: str) -> None:
    bad_key = requests.get(f"{url}/maximo/api/os/mxapiwodetail?lean=1", headers={"apikey": "nope"}, timeout=10)
    assert bad_key.status_code == 401 and bad_key.json()["Error"]["reasonCode"] == "BMXAA9549E"
    bad_login = requests.post(f"{url}/maximo/oslc/login?lean=1", auth=(USER, "wrong"), timeout=10)
    assert bad_login.status_code == 401 and bad_login.json()["Error"]["reasonCode"] == "BMXAA7901E"


def test_login_session_works_until_expired(sim: MaximoSimulator, url: str) -> None:
    session = requests.Session()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert session.post(f"{url}/maximo/oslc/login", headers={"maxauth": token}, timeout=10).status_code == 200
    assert session.get(f"{url}/maximo/oslc/os/mxapiwodetail?lean=1", timeout=10).status_code == 200
    sim.expire_sessions()
    expired = session.get(f"{url}/maximo/oslc/os/mxapiwodetail?lean=1", timeout=10)
    assert expired.status_code == 401 and expired.json()["Error"]["reasonCode"] == "BMXAA0021E"


def test_apikey_sent_with_its_own_session_cookie_is_refused() -> None:
    sim2 = MaximoSimulator()
    with ServerThread(sim2) as server:
        session = requests.Session()
        assert _query_with(session, server.url).status_code == 200
        assert _query_with(session, server.url).status_code == 401


def _query_with(session: requests.Session, url: str) -> requests.Response:
    return session.get(f"{url}/maximo/api/os/mxapiwodetail?lean=1", headers={"apikey": API_KEY}, timeout=10)


def test_injected_faults_and_request_counts(sim: MaximoSimulator, url: str) -> None:
    sim.fail_next(2, status=503)
    assert _query(url).status_code == 503
    assert _query(url).status_code == 503
    assert _query(url).status_code == 200
    sim.malform_next(1)
    with pytest.raises(ValueError):
        _query(url).json()
    assert sim.count(contains="/os/mxapiwodetail") == 4

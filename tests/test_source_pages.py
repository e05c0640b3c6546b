"""What a broken or hostile source's pages cannot do (issue 12), against real loopback servers:

- a JSON page larger than the cap is refused, not read whole into memory (``ResponseTooLarge``);
- JSON nested too deeply for the parser is a classified error, never a RecursionError;
- a page link read twice in one run (a nextLink naming itself, a nextPage pointing back) ends the run
  with ``PagingLoopError`` after one repeat, instead of spinning until Celery's time limit;
- every page loop yields a Checkpoint after every page, even an empty one, so the pipeline's deadline
  check runs inside it;
- a failed download's URL reaches the run's status without its query values.

The cap is lowered to 1 MiB here (``utils.http.MAX_BODY_BYTES``) so that a 3 MiB page is "too large".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from base.contract import Checkpoint, Item
from config.settings import Settings
from connectors.maximo_connector import MaximoConnector
from connectors.whatsapp_connector import WhatsAppConnector
from connectors.whatsapp_inbox import InboundMedia
from sandbox.servers import ServerThread, free_port
from sandbox.tls import CertAuthority
from tests.hostile_servers import (
    HostileGraph,
    Scripted,
    deeply_nested,
    graph_credentials,
    json_response,
    padded_json,
    reset_graph_caches,
    sharepoint_on,
    started_hostile_graph,
)
from utils import http
from utils.entra import EntraAuth
from utils.errors import ItemError, PagingLoopError, ResponseTooLarge, TransientError
from utils.http import HttpClient

API_KEY = {"api_key": "maximo-api-key-pages-12"}
MIB = 1024 * 1024
#: Pages a looping server hands out before it relents (so code without the loop guard still ends).
LOOP_SAFETY = 30


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(http, "MAX_BODY_BYTES", MIB)
    return MIB


def raw_json(body: bytes) -> Response:
    return Response(body, mimetype="application/json")


# -- Maximo -----------------------------------------------------------------------------------------

class PagedMaximo(Scripted):
    """Maximo's collection answering ``page(n, request)`` for its n-th request (n from 1)."""

    def __init__(self, page: Any) -> None:
        self.reads = 0
        self._page = page
        super().__init__(self._answer)

    def _answer(self, request: Request) -> Response:
        self.reads += 1
        return self._page(self.reads, request)


def maximo_changes(maximo: Scripted, settings: Settings) -> list[Any]:
    with ServerThread(maximo) as server:
        connector = MaximoConnector(server.url, settings=settings)
        with connector.connect(API_KEY):
            return list(connector.list_changes("all", None))


def test_maximo_page_over_the_cap_is_refused(settings: Settings, small_cap: int) -> None:
    maximo = PagedMaximo(lambda n, r: raw_json(padded_json(3 * small_cap)))
    with pytest.raises(ResponseTooLarge, match="1 MiB"):
        maximo_changes(maximo, settings)


def test_maximo_page_nested_too_deeply_is_a_transient_error(settings: Settings) -> None:
    maximo = PagedMaximo(lambda n, r: raw_json(deeply_nested()))
    with pytest.raises(TransientError, match="nested too deeply"):
        maximo_changes(maximo, settings)


def test_maximo_next_page_pointing_at_itself_is_a_paging_loop(settings: Settings) -> None:
    def page(n: int, request: Request) -> Response:
        body: dict[str, Any] = {"member": []}
        if n < LOOP_SAFETY:
            body["responseInfo"] = {"nextPage": {"href": f"{request.host_url}maximo/api/os/mxapiwodetail?pageno=2"}}
        return json_response(body)

    maximo = PagedMaximo(page)
    with pytest.raises(PagingLoopError, match="a second time"):
        maximo_changes(maximo, settings)
    assert maximo.reads == 2  # the query, then pageno=2 once; the repeat is never requested


def test_maximo_yields_a_checkpoint_after_every_page_even_an_empty_one(settings: Settings) -> None:
    def page(n: int, request: Request) -> Response:
        if n == 1:
            return json_response({"member": [], "responseInfo": {
                "nextPage": {"href": f"{request.host_url}maximo/api/os/mxapiwodetail?pageno=2"}}})
        return json_response({"member": []})

    changes = maximo_changes(PagedMaximo(page), settings)
    # Two pages of the feed, then (a run from no cursor) the page of work orders with a null changedate.
    assert [type(change) for change in changes] == [Checkpoint, Checkpoint, Checkpoint]
    assert changes[-1].cursor == {"changedate": None, "taken": []}  # the position it started from: safe


def test_maximo_feed_of_empty_pages_stops_at_the_runs_deadline(settings: Settings) -> None:
    # Each page links to a new one (no loop to catch): only the deadline, checked at each page's
    # Checkpoint, ends the run. The server relents after ``endless`` pages so that code without the
    # per-page Checkpoint ends too (as "ok", after reading them all).
    endless = 3000

    def page(n: int, request: Request) -> Response:
        body: dict[str, Any] = {"member": []}
        if n < endless:
            following = f"{request.host_url}maximo/api/os/mxapiwodetail?pageno={n + 1}"
            body["responseInfo"] = {"nextPage": {"href": following}}
        return json_response(body)

    maximo = PagedMaximo(page)
    with ServerThread(maximo) as server:
        summary = MaximoConnector(server.url, settings=settings).sync_documents(
            API_KEY, deadline=time.monotonic() + 0.5)
    assert summary.state == "partial", summary.as_dict()
    assert maximo.reads < endless


# -- Graph (SharePoint) -----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    reset_graph_caches()
    yield
    reset_graph_caches()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("pages-ca")))


@pytest.fixture
def graph(ca: CertAuthority) -> Iterator[HostileGraph]:
    sim = started_hostile_graph(ca, "sp-secret-for-page-tests")
    yield sim
    sim.stop()


def graph_changes(sim: HostileGraph, ca: CertAuthority, settings: Settings) -> list[Any]:
    connector = sharepoint_on(sim, ca, settings)
    with connector.connect(graph_credentials(sim)):
        (scope,) = connector.scopes()
        return list(connector.list_changes(scope, None))


def test_graph_next_link_naming_itself_is_a_paging_loop(graph: HostileGraph, ca: CertAuthority,
                                                        settings: Settings) -> None:
    def self_referencing(request: Request) -> Response | None:
        if graph.requests_of["delta"] > LOOP_SAFETY:
            return None
        return json_response({"value": [], "@odata.nextLink": request.url})

    graph.override["delta"] = self_referencing
    with pytest.raises(PagingLoopError, match="a second time"):
        graph_changes(graph, ca, settings)
    assert graph.requests_of["delta"] == 1  # the page named itself: it is not requested again


def test_graph_self_referencing_next_link_ends_the_run_with_an_error_that_says_so(
        graph: HostileGraph, ca: CertAuthority, settings: Settings) -> None:
    graph.override["delta"] = lambda r: (json_response({"value": [], "@odata.nextLink": r.url})
                                         if graph.requests_of["delta"] <= LOOP_SAFETY else None)
    summary = sharepoint_on(graph, ca, settings).sync_documents(graph_credentials(graph))
    assert summary.state == "config_error", summary.as_dict()
    assert "paging loops" in summary.scopes[0].error
    assert graph.requests_of["delta"] == 1


def test_graph_library_list_looping_is_a_paging_loop(graph: HostileGraph, ca: CertAuthority,
                                                      settings: Settings) -> None:
    def looping_drives(request: Request) -> Response | None:
        if graph.requests_of["drives"] > LOOP_SAFETY:
            return None
        return json_response({"value": [{"id": "b!loop", "name": "Documents", "webUrl": "https://x/Docs"}],
                              "@odata.nextLink": request.url})

    graph.override["drives"] = looping_drives
    connector = sharepoint_on(graph, ca, settings)
    with connector.connect(graph_credentials(graph)), pytest.raises(PagingLoopError, match="libraries"):
        connector.scopes()
    assert graph.requests_of["drives"] == 1


def test_graph_page_over_the_cap_is_refused(graph: HostileGraph, ca: CertAuthority, settings: Settings,
                                            small_cap: int) -> None:
    graph.override["delta"] = lambda r: raw_json(padded_json(3 * small_cap))
    with pytest.raises(ResponseTooLarge, match="1 MiB"):
        graph_changes(graph, ca, settings)


def test_graph_page_nested_too_deeply_is_a_transient_error(graph: HostileGraph, ca: CertAuthority,
                                                           settings: Settings) -> None:
    graph.override["delta"] = lambda r: raw_json(deeply_nested())
    with pytest.raises(TransientError, match="nested too deeply"):
        graph_changes(graph, ca, settings)


def test_entra_answer_nested_too_deeply_is_a_transient_error(graph: HostileGraph, ca: CertAuthority) -> None:
    graph.override["token"] = lambda r: raw_json(deeply_nested())
    entra = EntraAuth(tenant_id=graph.tenant_id, client_id=graph.client_id, client_secret=graph.client_secret,
                      authority=graph.authority_host, ca_file=ca.ca_path)
    with pytest.raises(TransientError, match="nested too deeply"):
        entra.token()


def test_entra_answer_over_the_cap_is_refused(graph: HostileGraph, ca: CertAuthority, small_cap: int) -> None:
    graph.override["token"] = lambda r: raw_json(padded_json(3 * small_cap))
    entra = EntraAuth(tenant_id=graph.tenant_id, client_id=graph.client_id, client_secret=graph.client_secret,
                      authority=graph.authority_host, ca_file=ca.ca_path)
    with pytest.raises(ResponseTooLarge, match="1 MiB"):
        entra.token()


# -- WhatsApp ----------------------------------------------------------------------------------------------
TOKEN = "wa-access-token-pages-77"
MEDIA = b"%PDF-1.7 a circular"


def whatsapp(graph_url: str, settings: Settings, entries: int = 1, **options: Any) -> WhatsAppConnector:
    connector = WhatsAppConnector(access_token=TOKEN, phone_number_id="1065", graph_base_url=graph_url,
                                  settings=settings, http_client=HttpClient("whatsapp", sleep=lambda _s: None),
                                  **options)
    connector.inbox.append([InboundMedia(wamid=f"wamid.pages{i}", type="document", media_id=f"880{i}",
                                         mime_type="application/pdf", filename=f"c{i}.pdf") for i in range(entries)])
    return connector


def test_whatsapp_media_lookup_nested_too_deeply_fails_the_item_not_the_worker(settings: Settings) -> None:
    with ServerThread(Scripted(lambda r: raw_json(deeply_nested()))) as cloud:
        connector = whatsapp(cloud.url, settings)
        with pytest.raises(ItemError, match="download URL"):
            connector.resolve("8800")


def test_whatsapp_media_lookup_over_the_cap_is_refused(settings: Settings, small_cap: int) -> None:
    with ServerThread(Scripted(lambda r: raw_json(padded_json(3 * small_cap)))) as cloud:
        connector = whatsapp(cloud.url, settings)
        with pytest.raises(ResponseTooLarge, match="1 MiB"):
            connector.resolve("8800")


def test_whatsapp_yields_a_checkpoint_after_every_batch(settings: Settings) -> None:
    connector = whatsapp("http://127.0.0.1:9", settings, entries=3, batch_size=2)
    changes = list(connector.list_changes("inbox", None))
    assert [type(change) for change in changes] == [Item, Item, Checkpoint, Item, Checkpoint]
    assert all(change.cursor is None for change in changes if isinstance(change, Checkpoint))


# -- secrets stay out of the status ---------------------------------------------------------------------

def test_failed_media_download_reaches_the_status_without_its_hash(settings: Settings) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    secret_hash = "ARxSecretMediaHash9f"
    lookup = Scripted(lambda r: json_response({
        "url": f"{dead}/whatsapp_business/attachments/?mid=8800&ext=1&hash={secret_hash}",
        "mime_type": "application/pdf", "sha256": hashlib.sha256(MEDIA).hexdigest(), "file_size": len(MEDIA)}))
    with ServerThread(lookup) as cloud:
        connector = whatsapp(cloud.url, settings, media_hosts=[dead])
        summary = connector.sync_documents()
    assert summary.state == "error", summary.as_dict()
    status = connector.state.get_status("whatsapp", "inbox")
    for text in (summary.scopes[0].error, status.get("last_error", "")):
        assert "hash=***" in text and secret_hash not in text

"""Credentials go only to where they belong (issue 12), against real loopback servers.

Each source's credential (Maximo's ``apikey`` / ``maxauth`` / session, the WhatsApp Bearer token,
the Graph Bearer token) may go only to the origins configured for it: a link or a redirect naming
another host, another port or plain http is refused before anything is sent there, and the run ends
with a config error naming that origin. A ``foreign`` server records whatever reaches it; what must
hold is that it receives nothing. Legitimate same-origin redirects and Graph's pre-authenticated
download URLs (fetched without the token, from another host) keep working.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from werkzeug.wrappers import Request, Response

from base.contract import Item
from config.settings import Settings
from connectors.maximo_connector import MaximoConnector
from connectors.whatsapp_connector import WhatsAppConnector
from connectors.whatsapp_inbox import InboundMedia
from sandbox.servers import ServerThread
from sandbox.tls import CertAuthority
from tests.hostile_servers import (
    HostileGraph,
    Scripted,
    graph_credentials,
    json_response,
    redirect,
    reset_graph_caches,
    sharepoint_on,
    started_hostile_graph,
)
from utils.errors import OriginNotAllowed
from utils.http import HttpClient, Origin

API_KEY = "maximo-api-key-7f3a91"
CHANGED = "2024-05-02T10:15:00+05:30"
PDF = b"%PDF-1.7 work order 1001 attachment"


# -- Maximo -----------------------------------------------------------------------------------------

def work_order(doclinks: Any, wonum: str = "1001") -> dict[str, Any]:
    return {"wonum": wonum, "siteid": "MUTTOM", "changedate": CHANGED, "worktype": "CM",
            "href": f"/maximo/api/os/mxapiwodetail/_{wonum}", "doclinks": doclinks}


def doclink(href: str) -> dict[str, Any]:
    return {"href": href, "describedBy": {"identifier": "75", "fileName": "WO-1001.pdf", "urlType": "FILE",
                                          "modified": "2024-05-02T10:00:00+05:30", "attachmentSize": len(PDF),
                                          "format": {"label": "application/pdf"}}}


class FakeMaximo(Scripted):
    """An OSLC JSON API answering ``pages`` (one body per request of the collection, the last repeated)
    and serving ``PDF`` at ``/maximo/doc``; ``routes`` answers other paths (a redirect, a login)."""

    def __init__(self, pages: list[dict[str, Any]], routes: dict[str, Callable[[Request], Response]] | None = None):
        self.pages = pages
        self.routes = routes or {}
        self.collection_reads = 0
        super().__init__(self._answer)

    def _answer(self, request: Request) -> Response:
        if request.path in self.routes:
            return self.routes[request.path](request)
        if request.path.endswith("/os/mxapiwodetail"):
            self.collection_reads += 1
            return json_response(self.pages[min(self.collection_reads, len(self.pages)) - 1])
        if request.path == "/maximo/doc":
            return Response(PDF, mimetype="application/pdf")
        return json_response({"Error": {"reasonCode": "BMXAA0000E", "message": "not here"}}, 404)


def maximo_items(url: str, settings: Settings, *, ca: CertAuthority | None = None,
                 credentials: dict[str, str] | None = None) -> tuple[MaximoConnector, list[Any]]:
    connector = MaximoConnector(url, settings=settings, ca_bundle=ca.ca_path if ca else None)
    with connector.connect(credentials or {"api_key": API_KEY}):
        return connector, list(connector.list_changes("all", None))


def open_first_item(connector: MaximoConnector, changes: list[Any], credentials: dict[str, str]) -> bytes:
    item = next(change for change in changes if isinstance(change, Item))
    assert item.open is not None
    with connector.connect(credentials):
        return b"".join(item.open())


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("origins-ca")))


@pytest.mark.parametrize("where", ["another host", "plain http under an https MAXIMO_URL"])
def test_maximo_key_never_goes_to_a_doclink_href_elsewhere(where: str, settings: Settings, ca: CertAuthority) -> None:
    foreign = Scripted(lambda r: Response(PDF))
    with ServerThread(foreign) as foreign_server:
        # "another host": localhost is not 127.0.0.1; plain http: MAXIMO_URL is https on 127.0.0.1.
        elsewhere = foreign_server.url.replace("127.0.0.1", "localhost") if where == "another host" \
            else foreign_server.url
        maximo = FakeMaximo([{"member": [work_order([doclink(f"{elsewhere}/maximo/doc")])]}])
        tls = ca.issue().server_context() if where.startswith("plain") else None
        with ServerThread(maximo, ssl_context=tls) as server:
            connector, changes = maximo_items(server.url, settings, ca=ca)
            with pytest.raises(OriginNotAllowed) as caught:
                open_first_item(connector, changes, {"api_key": API_KEY})
    message = str(caught.value)
    assert str(Origin.of(elsewhere)) in message and "MAXIMO_URL" in message and API_KEY not in message
    assert foreign.seen == []


def test_maximo_run_with_a_doclink_elsewhere_ends_with_a_config_error(settings: Settings) -> None:
    foreign = Scripted(lambda r: Response(PDF))
    with ServerThread(foreign) as foreign_server:
        maximo = FakeMaximo([{"member": [work_order([doclink(f"{foreign_server.url}/maximo/doc")])]}])
        with ServerThread(maximo) as server:
            summary = MaximoConnector(server.url, settings=settings).sync_documents({"api_key": API_KEY})
    assert summary.state == "config_error", summary.as_dict()
    assert str(Origin.of(foreign_server.url)) in summary.scopes[0].error
    assert foreign.seen == []


def test_maximo_key_never_follows_a_next_page_href_elsewhere(settings: Settings) -> None:
    foreign = Scripted(lambda r: json_response({"member": []}))
    with ServerThread(foreign) as foreign_server:
        first = {"member": [], "responseInfo": {
            "nextPage": {"href": f"{foreign_server.url}/maximo/api/os/mxapiwodetail?pageno=2"}}}
        with ServerThread(FakeMaximo([first])) as server, pytest.raises(OriginNotAllowed, match="MAXIMO_URL"):
            maximo_items(server.url, settings)
    assert foreign.seen == []


def test_maximo_key_never_goes_to_a_doclinks_collection_elsewhere(settings: Settings) -> None:
    foreign = Scripted(lambda r: json_response({"member": []}))
    with ServerThread(foreign) as foreign_server:
        page = {"member": [work_order({"href": f"{foreign_server.url}/maximo/api/os/mxapiwodetail/_1001/doclinks"})]}
        with ServerThread(FakeMaximo([page])) as server, pytest.raises(OriginNotAllowed):
            maximo_items(server.url, settings)
    assert foreign.seen == []


@pytest.mark.parametrize("status", [302, 307])
def test_maximo_key_never_follows_a_redirect_elsewhere(status: int, settings: Settings) -> None:
    # requests strips only Authorization on such a redirect: the apikey header would travel on.
    foreign = Scripted(lambda r: Response(PDF))
    with ServerThread(foreign) as foreign_server:
        maximo = FakeMaximo([{"member": [work_order([doclink("/maximo/doc")])]}],
                            routes={"/maximo/doc": lambda r: redirect(f"{foreign_server.url}/doc", status)})
        with ServerThread(maximo) as server:
            connector, changes = maximo_items(server.url, settings)
            with pytest.raises(OriginNotAllowed, match="redirected"):
                open_first_item(connector, changes, {"api_key": API_KEY})
    assert foreign.seen == []


def test_maximo_login_never_follows_a_redirect_elsewhere(settings: Settings) -> None:
    foreign = Scripted(lambda r: Response(status=200))
    with ServerThread(foreign) as foreign_server:
        maximo = FakeMaximo([{"member": []}], routes={
            "/maximo/oslc/login": lambda r: redirect(f"{foreign_server.url}/maximo/oslc/login", 307)})
        with ServerThread(maximo) as server, pytest.raises(OriginNotAllowed):
            maximo_items(server.url, settings, credentials={"user": "maxadmin", "password": "maximo-pass-91"})
    assert foreign.seen == []


def test_maximo_same_origin_redirect_still_downloads_with_the_key(settings: Settings) -> None:
    maximo = FakeMaximo([{"member": [work_order([doclink("/maximo/old-doc")])]}],
                        routes={"/maximo/old-doc": lambda r: redirect("/maximo/doc", 302)})
    with ServerThread(maximo) as server:
        connector, changes = maximo_items(server.url, settings)
        assert open_first_item(connector, changes, {"api_key": API_KEY}) == PDF
    doc_requests = [seen for seen in maximo.seen if seen.path.endswith("doc")]
    assert [seen.path for seen in doc_requests] == ["/maximo/old-doc", "/maximo/doc"]
    assert all(seen.headers.get("Apikey") == API_KEY for seen in doc_requests)


# -- WhatsApp ---------------------------------------------------------------------------------------
TOKEN = "wa-access-token-origins-31"
MEDIA = b"%PDF-1.7 a circular sent on WhatsApp"


def cloud_api(media_url: str) -> Scripted:
    """The Cloud API's media lookup, answering every id with ``media_url``."""
    return Scripted(lambda r: json_response({
        "url": media_url, "mime_type": "application/pdf", "sha256": hashlib.sha256(MEDIA).hexdigest(),
        "file_size": len(MEDIA), "id": r.path.rsplit("/", 1)[-1], "messaging_product": "whatsapp"}))


def whatsapp(graph_url: str, settings: Settings, **options: Any) -> WhatsAppConnector:
    connector = WhatsAppConnector(access_token=TOKEN, phone_number_id="1065", graph_base_url=graph_url,
                                  settings=settings, http_client=HttpClient("whatsapp", sleep=lambda _s: None),
                                  **options)
    connector.inbox.append([InboundMedia(wamid="wamid.origins1", type="document", media_id="8801",
                                         mime_type="application/pdf", filename="circular.pdf", sender="91980")])
    return connector


def test_whatsapp_token_never_goes_to_a_media_host_not_configured(settings: Settings) -> None:
    foreign = Scripted(lambda r: Response(MEDIA))
    with ServerThread(foreign) as foreign_server, \
            ServerThread(cloud_api(f"{foreign_server.url}/media?mid=8801&hash=AbC")) as graph:
        summary = whatsapp(graph.url, settings).sync_documents()
    assert summary.state == "config_error", summary.as_dict()
    error = summary.scopes[0].error
    assert str(Origin.of(foreign_server.url)) in error and "WHATSAPP_MEDIA_HOSTS" in error and TOKEN not in error
    assert foreign.seen == []


def test_whatsapp_media_host_allowed_by_the_setting_gets_the_token(settings: Settings) -> None:
    foreign = Scripted(lambda r: Response(MEDIA))
    with ServerThread(foreign) as media_host, \
            ServerThread(cloud_api(f"{media_host.url}/media?mid=8801&hash=AbC")) as graph:
        summary = whatsapp(graph.url, settings, media_hosts=[media_host.url]).sync_documents()
    assert summary.state == "ok" and summary.totals["new"] == 1, summary.as_dict()
    assert foreign.seen[0].headers.get("Authorization") == f"Bearer {TOKEN}"


def test_whatsapp_media_hosts_setting_defaults_to_metas_media_host(settings: Settings) -> None:
    from dataclasses import replace

    connector = WhatsAppConnector.from_settings(settings)
    assert connector.origins.allows("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1")
    assert not connector.origins.allows("http://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1")
    assert not connector.origins.allows("https://attacker.example/x")
    configured = WhatsAppConnector.from_settings(replace(settings, environ={
        "WHATSAPP_MEDIA_HOSTS": "media.example.net, https://cdn.example.org:8443"}))
    assert configured.origins.allows("https://media.example.net/a")
    assert configured.origins.allows("https://cdn.example.org:8443/a")
    assert not configured.origins.allows("https://lookaside.fbsbx.com/a")


# -- Graph (SharePoint) -------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    reset_graph_caches()
    yield
    reset_graph_caches()


@pytest.fixture
def graph(ca: CertAuthority) -> Iterator[HostileGraph]:
    sim = started_hostile_graph(ca, "sp-secret-for-origin-tests")
    yield sim
    sim.stop()


def test_graph_page_redirected_to_another_host_is_refused(graph: HostileGraph, ca: CertAuthority,
                                                          settings: Settings) -> None:
    fake_page = {"value": [{"id": "X1", "name": "planted.txt", "file": {"mimeType": "text/plain"}, "cTag": "c1",
                            "@microsoft.graph.downloadUrl": "https://127.0.0.1:9/planted"}],
                 "@odata.deltaLink": "https://127.0.0.1:9/v1.0/drives/x/root/delta?token=t"}
    foreign = Scripted(lambda r: json_response(fake_page))
    with ServerThread(foreign, ssl_context=ca.issue().server_context()) as foreign_server:
        graph.override["delta"] = lambda r: redirect(f"{foreign_server.url}{r.full_path}")
        summary = sharepoint_on(graph, ca, settings).sync_documents(graph_credentials(graph))
    assert summary.state == "config_error", summary.as_dict()
    assert str(Origin.of(foreign_server.url)) in summary.scopes[0].error
    assert "GRAPH_BASE_URL" in summary.scopes[0].error
    assert foreign.seen == []  # neither the token nor the request itself; its answer was never a page
    assert summary.totals["new"] == 0


def test_graph_download_urls_on_another_host_are_fetched_without_the_token(graph: HostileGraph, ca: CertAuthority,
                                                                          settings: Settings) -> None:
    redirector = Scripted(lambda r: redirect(unquote(r.args["to"])))
    with ServerThread(redirector, ssl_context=ca.issue().server_context()) as cdn:
        graph.download_via = cdn.url
        summary = sharepoint_on(graph, ca, settings).sync_documents(graph_credentials(graph))
    assert summary.state == "ok" and summary.totals["new"] == 1, summary.as_dict()
    assert redirector.paths() == ["/dl"] and redirector.credentials_seen() == []
    assert not [record for record in graph.log if record.kind == "download" and record.had_authorization]


# -- Entra --------------------------------------------------------------------------------------------

def test_entra_client_secret_never_goes_to_a_token_endpoint_elsewhere(graph: HostileGraph, ca: CertAuthority) -> None:
    from utils.entra import EntraAuth

    foreign = Scripted(lambda r: json_response({"access_token": "stolen", "token_type": "Bearer", "expires_in": 3599}))
    with ServerThread(foreign, ssl_context=ca.issue().server_context()) as foreign_server:
        def discovery_pointing_elsewhere(request: Request) -> Response:
            document = json.loads(graph._discovery(request, graph.tenant_id).get_data())
            document["token_endpoint"] = f"{foreign_server.url}/{graph.tenant_id}/oauth2/v2.0/token"
            return json_response(document)

        graph.override["discovery"] = discovery_pointing_elsewhere
        entra = EntraAuth(tenant_id=graph.tenant_id, client_id=graph.client_id, client_secret=graph.client_secret,
                          authority=graph.authority_host, ca_file=ca.ca_path)
        with pytest.raises(OriginNotAllowed, match="ENTRA_AUTHORITY") as caught:
            entra.token()
    assert graph.client_secret not in str(caught.value)
    assert foreign.seen == []

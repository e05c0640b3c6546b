"""Scripted HTTP servers for the tests of hostile or broken sources: a WSGI app that answers with a
handler and records every request it received (method, path, query, headers), so a test can say
exactly which host saw which credential; and the Graph simulator with answers overridden per kind."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from werkzeug.wrappers import Request, Response

from base.state import StateStore
from config.settings import Settings
from connectors.sharepoint_connector import SharePointConnector
from sandbox.graph import GraphSimulator, _route
from sandbox.graph_store import Drive, DriveItem
from sandbox.tls import CertAuthority
from utils.entra import reset_applications

#: Header names that carry one of our credentials (or the Hub's Idempotency-Key), lower case.
CREDENTIAL_HEADER_NAMES = ("authorization", "apikey", "maxauth", "idempotency-key", "cookie")


@dataclass(frozen=True)
class Seen:
    """One request a scripted server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]

    def credentials(self) -> list[str]:
        """The credential headers this request carried (lower-case names)."""
        names = {name.lower() for name in self.headers}
        return [name for name in CREDENTIAL_HEADER_NAMES if name in names]


class Scripted:
    """A WSGI app answering every request with ``handler(request)`` (default: 200 ``ok``).

    ``seen`` lists every request received, in order. The request body is never read unless the
    handler reads it (a server that answers before reading, as a redirecting one does).
    """

    def __init__(self, handler: Callable[[Request], Response] | None = None) -> None:
        self.handler = handler or (lambda _request: Response("ok"))
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        with self._lock:
            self.seen.append(Seen(request.method, request.path, request.query_string.decode("latin-1"),
                                  dict(request.headers)))
        return self.handler(request)(environ, start_response)

    def paths(self) -> list[str]:
        with self._lock:
            return [seen.path for seen in self.seen]

    def credentials_seen(self) -> list[str]:
        """Every credential header any request to this server carried."""
        with self._lock:
            return [name for seen in self.seen for name in seen.credentials()]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def redirect(location: str, status: int = 302) -> Response:
    return Response(status=status, headers={"Location": location})


def deeply_nested(depth: int = 100_000) -> bytes:
    """JSON nested ``depth`` arrays deep: valid, and deeper than Python's parser recurses."""
    return b"[" * depth + b"]" * depth


def padded_json(size: int) -> bytes:
    """A JSON object of about ``size`` bytes (one long string): valid, and larger than a page cap."""
    return json.dumps({"member": [], "value": [], "padding": "x" * size}).encode()


class HostileGraph(GraphSimulator):
    """The Graph + Entra simulator, with answers a broken or hostile service could give instead.

    override: kind (``discovery``, ``token``, ``drives``, ``delta``, ...) -> a function of the request
        that answers it instead of the simulator (or returns None to let the simulator answer).
    download_via: when set, download URLs point at this server's ``/dl?to=<the real URL>`` (a
        redirector on another host, as SharePoint's CDN may be).
    requests_of: requests received per kind, overridden ones included.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.override: dict[str, Callable[[Request], Response | None]] = {}
        self.download_via = ""
        self.requests_of: collections.Counter[str] = collections.Counter()

    def handle(self, request: Request) -> Response:
        kind, _match = _route(request.path)
        self.requests_of[kind] += 1
        hook = self.override.get(kind)
        answer = hook(request) if hook is not None else None
        return answer if answer is not None else super().handle(request)

    def _download_url(self, base: str, drive: Drive, item: DriveItem) -> str:
        url = super()._download_url(base, drive, item)
        return f"{self.download_via}/dl?to={quote(url, safe='')}" if self.download_via else url


# -- SharePoint over a (hostile) Graph simulator ------------------------------------------------------------
#: The site every hostile-Graph test syncs.
GRAPH_SITE = "sites/operations"


def reset_graph_caches() -> None:
    """Forgets msal's application, as a new worker process would start (a connector built here keeps
    its own site cache)."""
    reset_applications()


def started_hostile_graph(ca: CertAuthority, client_secret: str) -> HostileGraph:
    """A HostileGraph with one library holding one safety circular, started over TLS from ``ca``."""
    sim = HostileGraph(client_secret=client_secret, delta_page_size=50)
    docs = sim.store.add_drive(GRAPH_SITE, "Documents")
    sim.store.put_file(docs, "Safety/Fire drill circular.txt", b"All stations hold a fire safety drill on Friday.")
    sim.start(ca)
    return sim


def sharepoint_on(sim: GraphSimulator, ca: CertAuthority, settings: Settings) -> SharePointConnector:
    """A SharePoint connector for GRAPH_SITE on ``sim``, trusting ``ca``."""
    return SharePointConnector(f"{sim.sharepoint_url}/{GRAPH_SITE}", tenant_id=sim.tenant_id,
                               client_id=sim.client_id, graph_base_url=sim.graph_url,
                               authority=sim.authority_host, ca_file=ca.ca_path, settings=settings,
                               state=StateStore.from_url(settings.state_redis_url))


def graph_credentials(sim: GraphSimulator) -> dict[str, str]:
    """The client-credentials triple the simulator's Entra accepts."""
    return {"client_id": sim.client_id, "client_secret": sim.client_secret, "tenant_id": sim.tenant_id}

"""A local simulator of Microsoft Entra ID (the endpoints msal uses) and Microsoft Graph (the
SharePoint endpoints the connector uses), as one WSGI app served over HTTPS.

Entra: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
(client credentials; AADSTS errors shaped as Entra returns them; no ``scope`` echoed, so msal's cache
keys on the requested scope).
Graph (``/v1.0``): site by path, a site's drives, a drive, ``root``, ``root/delta`` (opaque tokens,
``@odata.nextLink`` / ``@odata.deltaLink``, latest state, deletions without name/cTag, 410
``resyncRequired`` on demand), ``items/{id}`` (a fresh ``@microsoft.graph.downloadUrl``) and
``items/{id}/content`` (302 to it). Download URLs need no auth, expire, and honour ``Range``.
Every Graph call needs a bearer token this simulator issued (401 ``InvalidAuthenticationToken``).

Tests drive it through ``GraphSimulator``: ``store`` (sites, drives, files; mutations advance the
delta feed), ``inject`` (429/503/... for the next requests of one kind), ``revoke_tokens``,
``expire_download_urls``, ``expire_delta_tokens`` and ``counts`` (requests per kind:
``discovery``, ``token``, ``site``, ``drives``, ``drive``, ``item``, ``delta``, ``content``,
``download``, ``subscriptions``). Facts: ../shared/reference/api-contracts.md part A.
Change notifications (``/v1.0/subscriptions``, the validation handshake, deliveries over TLS,
lifecycle events): ``sim.subscriptions`` (sandbox/graph_subscriptions.py).

``python -m sandbox.graph`` serves a demo tenant until interrupted and writes the matching
SHAREPOINT_* settings to an env file.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from werkzeug.wrappers import Request, Response

from sandbox.graph_store import (
    Drive,
    DriveItem,
    GeneratedContent,
    GraphStore,
    Site,
    iter_content,
)
from sandbox.graph_subscriptions import (
    DEFAULT_RETRY_DELAYS,
    FILES_READWRITE_ALL,
    VALIDATION_TIMEOUT,
    SubscriptionService,
)
from sandbox.keepalive_server import KeepAliveServer
from sandbox.tls import CertAuthority

#: The only scope a client-credentials request may ask for here.
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: Application permission that lets an app read every site (what the connector needs).
SITES_READ_ALL = "Sites.Read.All"
#: Default lifetime of an issued access token; msal needs > 300 s to reuse it from its cache.
DEFAULT_TOKEN_LIFETIME = 3599  # seconds
#: Default lifetime of a download URL (the docs say "a few minutes" to "1 hour").
DEFAULT_DOWNLOAD_URL_TTL = 3600  # seconds
#: Default delta page size when the client sends no ``$top``.
DEFAULT_DELTA_PAGE_SIZE = 200  # items

_GRAPH_PREFIX = "/v1.0/"
_DOWNLOAD_PATH = "/_layouts/15/download.aspx"
_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("subscriptions", re.compile(r"^/v1\.0/subscriptions(?:/(?P<subscription>[^/]+))?$")),
    ("discovery", re.compile(r"^/(?P<tenant>[^/]+)(?:/v2\.0)?/\.well-known/openid-configuration$")),
    ("token", re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")),
    ("site", re.compile(r"^/v1\.0/sites/(?P<host>[^/:]+):(?P<path>/.*?):?$")),
    ("drives", re.compile(r"^/v1\.0/sites/(?P<site>[^/]+)/drives$")),
    ("site", re.compile(r"^/v1\.0/sites/(?P<site>[^/:]+)$")),
    ("delta", re.compile(r"^/v1\.0/drives/(?P<drive>[^/]+)/root/delta$")),
    ("item", re.compile(r"^/v1\.0/drives/(?P<drive>[^/]+)/(?:root|items/(?P<item>[^/]+))$")),
    ("content", re.compile(r"^/v1\.0/drives/(?P<drive>[^/]+)/items/(?P<item>[^/]+)/content$")),
    ("drive", re.compile(r"^/v1\.0/drives/(?P<drive>[^/]+)$")),
    ("download", re.compile(r"^" + re.escape(_DOWNLOAD_PATH) + r"$")),
]
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class App:
    """An app registration: its secret, its tenant and the application permissions granted."""

    client_id: str
    secret: str
    tenant_id: str
    roles: tuple[str, ...] = (SITES_READ_ALL,)


@dataclass
class Fault:
    """A canned answer for the next ``remaining`` requests of one kind."""

    status: int
    remaining: int
    retry_after: int | None = None
    body: dict[str, Any] | None = None


@dataclass
class RequestRecord:
    """One request as the simulator saw it (for tests that reason about what was sent when)."""

    kind: str
    method: str
    path: str
    status: int
    at: float
    had_authorization: bool


@dataclass
class _Token:
    client_id: str
    tenant_id: str
    expires_at: float
    roles: tuple[str, ...] = field(default_factory=tuple)


class GraphSimulator:
    """The Entra + Graph simulator (a WSGI app); see the module docstring.

    tenant_id, client_id, client_secret: the app registration created at start (more via ``add_app``).
    hostname: the SharePoint host (default ``kmrl.sharepoint.com``).
    token_lifetime: ``expires_in`` of issued tokens, seconds (default 3599).
    download_url_ttl: how long a download URL works, seconds (default 3600).
    delta_page_size: items per delta page when the client sends no ``$top`` (default 200).
    expired_download_status: what an expired download URL answers (401 by default; 403 and 404
        are what SharePoint has also been seen to answer).
    repeat_across_pages: when True each delta page after the first starts with the previous
        page's last item again (Graph may repeat items; clients must take the last state).
    repeat_within_page: when True each delta page ends with its first item again.
    roles: the application permissions of the app created at start (default Sites.Read.All;
        subscriptions also need Files.ReadWrite.All).
    notify_ca_file: the CA bundle subscribers' certificates are verified against (True: the system's).
    notify_retry_delays: seconds between tries of an undelivered notification (Graph's: about 4 hours).
    validation_timeout: seconds a subscriber has to answer the validation request (10, as Graph).
    """

    def __init__(
        self,
        *,
        tenant_id: str = "kmrl-tenant",
        client_id: str = "kmrl-connectors-app",
        client_secret: str | None = None,
        hostname: str = "kmrl.sharepoint.com",
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        download_url_ttl: float = DEFAULT_DOWNLOAD_URL_TTL,
        delta_page_size: int = DEFAULT_DELTA_PAGE_SIZE,
        expired_download_status: int = 401,
        repeat_across_pages: bool = False,
        repeat_within_page: bool = False,
        roles: tuple[str, ...] = (SITES_READ_ALL,),
        notify_ca_file: str | bool = True,
        notify_retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
        validation_timeout: float = VALIDATION_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = GraphStore(hostname)
        self.apps: dict[str, App] = {}
        self.tenants: set[str] = set()
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.add_app(client_id, self.client_secret, tenant_id=tenant_id, roles=roles)
        #: Change notifications: ``/v1.0/subscriptions`` and the deliveries to subscribers.
        self.subscriptions = SubscriptionService(self.store, tenant_id=tenant_id, ca_file=notify_ca_file,
                                                 retry_delays=notify_retry_delays,
                                                 validation_timeout=validation_timeout, clock=clock)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.token_lifetime = token_lifetime
        self.download_url_ttl = download_url_ttl
        self.delta_page_size = delta_page_size
        self.expired_download_status = expired_download_status
        self.repeat_across_pages = repeat_across_pages
        self.repeat_within_page = repeat_within_page
        self.clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self.log: list[RequestRecord] = []
        self.download_generation = 0
        self._signing_key = secrets.token_bytes(32)
        self._tokens: dict[str, _Token] = {}
        self._faults: dict[str, collections.deque[Fault]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()
        self.server: KeepAliveServer | None = None

    # -- test API ---------------------------------------------------------------------------------
    def add_app(self, client_id: str, secret: str, *, tenant_id: str,
                roles: tuple[str, ...] = (SITES_READ_ALL,)) -> App:
        """Registers an app in ``tenant_id`` (creating the tenant); ``roles`` are its permissions."""
        app = App(client_id=client_id, secret=secret, tenant_id=tenant_id, roles=roles)
        self.apps[client_id] = app
        self.tenants.add(tenant_id)
        return app

    def inject(self, kind: str, status: int, *, count: int = 1, retry_after: int | None = None,
               body: dict[str, Any] | None = None) -> None:
        """The next ``count`` requests of ``kind`` answer ``status`` (with ``Retry-After`` if given)."""
        with self._lock:
            self._faults[kind].append(Fault(status=status, remaining=count, retry_after=retry_after, body=body))

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (Graph answers 401 to it)."""
        with self._lock:
            self._tokens.clear()

    def expire_download_urls(self) -> None:
        """Every download URL handed out so far stops working."""
        with self._lock:
            self.download_generation += 1

    def expire_delta_tokens(self, drive: Drive | None = None) -> None:
        """Delta tokens (and nextLinks) issued so far for ``drive`` (default all) answer 410."""
        with self.store.lock:
            for d in [drive] if drive else list(self.store.drives.values()):
                d.token_epoch += 1

    def count(self, *kinds: str) -> int:
        """Requests received of the given kinds (all kinds when none given)."""
        with self._lock:
            return sum(self.counts[k] for k in kinds) if kinds else sum(self.counts.values())

    def graph_count(self) -> int:
        """Requests to Graph proper (everything except Entra and the download URLs)."""
        return self.count("site", "drives", "drive", "item", "delta", "content")

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.log.clear()

    # -- serving ----------------------------------------------------------------------------------
    def start(self, ca: CertAuthority, *, port: int = 0, host: str = "127.0.0.1") -> KeepAliveServer:
        """Serves the simulator over HTTPS (keep-alive, like Graph) with a certificate from ``ca``."""
        cert = ca.issue("graph-simulator", hosts=(host, "localhost"))
        self.server = KeepAliveServer(self, cert, host=host, port=port).start()
        return self.server

    def stop(self) -> None:
        self.subscriptions.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        """Base URL of the running server (``https://127.0.0.1:PORT``)."""
        if self.server is None:
            raise RuntimeError("the Graph simulator is not running")
        return self.server.url

    @property
    def graph_url(self) -> str:
        """What GRAPH_BASE_URL should be (``{url}/v1.0``)."""
        return self.url + "/v1.0"

    @property
    def authority_host(self) -> str:
        """What ENTRA_AUTHORITY should be; msal's authority is ``{authority_host}/{tenant}``."""
        return self.url

    @property
    def sharepoint_url(self) -> str:
        """What SHAREPOINT_URL should be (the tenant's SharePoint host)."""
        return f"https://{self.store.hostname}"

    # -- WSGI ---------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        """Routes one request, counting it by kind and applying any injected fault."""
        kind, match = _route(request.path)
        with self._lock:
            self.counts[kind] += 1
            fault = self._take_fault(kind)
        if fault is not None:
            response = _fault_response(fault)
        elif match is None:
            response = _graph_error(404, "invalidRequest", f"Resource not found for the segment '{request.path}'.")
        else:
            response = self._dispatch(kind, match, request)
        with self._lock:
            self.log.append(RequestRecord(kind=kind, method=request.method, path=request.path,
                                          status=response.status_code, at=self.clock(),
                                          had_authorization="Authorization" in request.headers))
        return response

    def _take_fault(self, kind: str) -> Fault | None:
        queue = self._faults.get(kind)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
        return fault

    def _dispatch(self, kind: str, match: re.Match[str], request: Request) -> Response:
        if kind == "discovery":
            return self._discovery(request, match["tenant"])
        if kind == "token":
            return self._token(request, match["tenant"])
        if kind == "download":
            return self._download(request)
        if kind == "subscriptions":
            denied = self._authorize(request, role=FILES_READWRITE_ALL)
            if denied is not None:
                return denied
            return self.subscriptions.handle(request, match["subscription"],
                                             application_id=self._client_of(request))
        if request.method != "GET":
            return _graph_error(405, "invalidRequest", "The simulator serves GET on Graph.")
        denied = self._authorize(request)
        if denied is not None:
            return denied
        base = request.host_url.rstrip("/")
        if kind == "site":
            return self._site(base, match)
        if kind == "drives":
            return self._drives(base, match["site"])
        drive = self.store.drives.get(match["drive"])
        if drive is None:
            return _graph_error(404, "itemNotFound", "The requested drive was not found.")
        if kind == "drive":
            return _json(200, _drive_json(base, drive))
        if kind == "delta":
            return self._delta(request, base, drive)
        item = drive.root if match["item"] is None else drive.items.get(match["item"])
        if item is None or item.deleted:
            return _graph_error(404, "itemNotFound", "The resource could not be found.")
        if kind == "content":
            if item.is_folder:
                return _graph_error(400, "invalidRequest", "Content is only available on files.")
            return Response(status=302, headers={"Location": self._download_url(base, drive, item)})
        return _json(200, self._item_json(base, drive, item, in_delta=False))

    # -- Entra ----------------------------------------------------------------------------------
    def _discovery(self, request: Request, tenant: str) -> Response:
        if tenant not in self.tenants:
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure "
                              "you have the correct tenant ID and are signing into the correct cloud.")
        base = request.host_url.rstrip("/")
        return _json(200, {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
            "tenant_region_scope": "AS",
            "cloud_instance_name": "microsoftonline.com",
        })

    def _token(self, request: Request, tenant: str) -> Response:
        if request.method != "POST":
            return _aad_error(405, "invalid_request", 900561,
                              "The endpoint only accepts POST requests. Received a GET request.")
        form = request.form
        if tenant not in self.tenants:
            return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", 70003,
                              "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        if not client_id:
            return _aad_error(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'client_id'.")
        app = self.apps.get(client_id)
        if app is None or app.tenant_id != tenant:
            return _aad_error(400, "unauthorized_client", 700016,
                              f"Application with identifier '{client_id}' was not found in the directory "
                              f"'{tenant}'. This can happen if the application has not been installed by the "
                              "administrator of the tenant or consented to by any user in the tenant.")
        secret = form.get("client_secret")
        if not secret:
            return _aad_error(401, "invalid_client", 7000218, "The request body must contain the following "
                              "parameter: 'client_assertion' or 'client_secret'.")
        if not hmac.compare_digest(secret.encode(), app.secret.encode()):
            return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                              f"being sent in the request is the client secret value, not the client secret ID, "
                              f"for a secret added to app '{client_id}'.")
        scopes = form.get("scope", "").split()
        if scopes != [GRAPH_SCOPE]:
            return _aad_error(400, "invalid_scope", 1002012, f"The provided value for scope {' '.join(scopes)} "
                              "is not valid. Client credential flows must have a scope value with /.default "
                              "suffixed to the resource identifier (application ID URI).")
        access_token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[access_token] = _Token(client_id=client_id, tenant_id=tenant, roles=app.roles,
                                                expires_at=self.clock() + self.token_lifetime)
        # Entra echoes no "scope" on client credentials; msal then keys its cache on what it asked.
        return _json(200, {"token_type": "Bearer", "expires_in": self.token_lifetime,
                           "ext_expires_in": self.token_lifetime, "access_token": access_token})

    def _client_of(self, request: Request) -> str:
        """The client id of the app whose (already authorized) token the request carries."""
        with self._lock:
            token = self._tokens.get(request.headers.get("Authorization", "")[7:].strip())
        return token.client_id if token else ""

    def _authorize(self, request: Request, *, role: str = SITES_READ_ALL) -> Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return _graph_error(401, "InvalidAuthenticationToken", "Access token is empty.",
                                headers={"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'})
        with self._lock:
            token = self._tokens.get(header[7:].strip())
        if token is None or token.expires_at <= self.clock():
            return _graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.",
                                headers={"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'})
        if role not in token.roles:
            if role != SITES_READ_ALL:
                return _graph_error(403, "accessDenied", "The caller does not have permission to perform the action.")
            return _graph_error(403, "accessDenied", "Either scp or roles claim need to be present in the token.")
        return None

    # -- Graph ------------------------------------------------------------------------------------
    def _site(self, base: str, match: re.Match[str]) -> Response:
        site: Site | None
        if match.groupdict().get("host") is not None:
            site = None
            if match["host"].lower() == self.store.hostname.lower():
                site = self.store.site_by_path(match["path"])
        else:
            site = self.store.site_by_id(match["site"])
        if site is None:
            return _graph_error(404, "itemNotFound", "Requested site could not be found")
        return _json(200, {
            "@odata.context": f"{base}/v1.0/$metadata#sites/$entity",
            "createdDateTime": site.created_at,
            "description": "",
            "id": site.id,
            "lastModifiedDateTime": site.created_at,
            "name": site.name,
            "webUrl": site.web_url,
            "displayName": site.display_name,
            "root": {},
            "siteCollection": {"hostname": site.hostname},
        })

    def _drives(self, base: str, site_id: str) -> Response:
        site = self.store.site_by_id(site_id)
        if site is None:
            return _graph_error(404, "itemNotFound", "Requested site could not be found")
        with self.store.lock:
            drives = [_drive_json(base, d, context=False) for d in site.drives]
        return _json(200, {"@odata.context": f"{base}/v1.0/$metadata#drives", "value": drives})

    def _delta(self, request: Request, base: str, drive: Drive) -> Response:
        raw = request.args.get("token")
        top = _int(request.args.get("$top"), self.delta_page_size)
        with self.store.lock:
            if raw is None:
                state: dict[str, Any] = {"m": "e", "s": drive.seq, "a": 0}
            elif raw == "latest":
                link = self._delta_link(base, drive, {"m": "c", "a": drive.seq})
                return _json(200, {"@odata.context": _COLLECTION_CONTEXT.format(base=base), "value": [],
                                   "@odata.deltaLink": link})
            else:
                signed = self._unsign(raw)
                if signed is None or signed.get("d") != drive.id:
                    return _graph_error(400, "invalidRequest", "Invalid delta token.")
                if signed.get("e") != drive.token_epoch:
                    restart = self._delta_link(base, drive, {"m": "e", "s": drive.seq, "a": 0})
                    return _graph_error(410, "resyncRequired", "Resync required. Replace any local items with the "
                                        "server's version (including deletes) if you're sure that the service was "
                                        "up to date with your local changes when you last sync'd. Upload any local "
                                        "changes that the server doesn't know about.",
                                        headers={"Location": restart})
                state = signed
            after = int(state["a"])
            if state["m"] == "e":
                page = self.store.enumeration_page(drive, after=after, top=top)
            else:
                page = self.store.changes_page(drive, after=after, top=top)
            items = list(page.items)
            repeat = state.get("r")
            if self.repeat_across_pages and repeat in drive.items:
                items.insert(0, drive.items[repeat])
            if self.repeat_within_page and items:
                items.append(items[0])
            body: dict[str, Any] = {
                "@odata.context": _COLLECTION_CONTEXT.format(base=base),
                "value": [self._item_json(base, drive, i, in_delta=True) for i in items],
            }
            if page.more:
                following = {**state, "a": page.last_seq, "r": items[-1].id if items else None}
                body["@odata.nextLink"] = self._delta_link(base, drive, following, top=request.args.get("$top"))
            else:
                # An enumeration's deltaLink starts where the enumeration began: what changed meanwhile
                # is reported again rather than lost.
                since = int(state["s"]) if state["m"] == "e" else page.last_seq
                body["@odata.deltaLink"] = self._delta_link(base, drive, {"m": "c", "a": since})
        return _json(200, body)

    def _delta_link(self, base: str, drive: Drive, state: dict[str, Any], *, top: str | None = None) -> str:
        token = self._sign({**state, "d": drive.id, "e": drive.token_epoch})
        query = {"token": token} if top is None else {"$top": top, "token": token}
        return f"{base}/v1.0/drives/{drive.id}/root/delta?{urlencode(query)}"

    def _item_json(self, base: str, drive: Drive, item: DriveItem, *, in_delta: bool) -> dict[str, Any]:
        parent: dict[str, Any] = {"driveType": "documentLibrary", "driveId": drive.id}
        if item.parent_id is not None:
            parent["id"] = item.parent_id
            if not in_delta:
                # Graph leaves parentReference.path out of delta responses (contracts A3).
                parent["path"] = drive.path_of(item)
        if item.deleted:
            # SharePoint deletions carry no name and no cTag.
            return {"id": item.id, "deleted": {"state": "deleted"}, "parentReference": parent}
        body: dict[str, Any] = {}
        if not item.is_folder:
            body["@microsoft.graph.downloadUrl"] = self._download_url(base, drive, item)
        body.update({
            "createdDateTime": item.created_at,
            "eTag": item.etag,
            "id": item.id,
            "lastModifiedDateTime": item.modified_at,
            "name": item.name,
            "webUrl": drive.web_url_of(item),
            "size": self._size(drive, item),
            "createdBy": item.created_by,
            "lastModifiedBy": item.modified_by,
            "parentReference": parent,
        })
        if item.is_folder:
            body["folder"] = {"childCount": len(drive.children(item))}
            if item.is_root:
                body["root"] = {}
        else:
            body["cTag"] = item.ctag
            body["file"] = {"mimeType": item.mime_type, "hashes": {"quickXorHash": item.quick_xor_hash()}}
        return body

    def _size(self, drive: Drive, item: DriveItem) -> int:
        if not item.is_folder:
            return item.size
        return sum(self._size(drive, child) for child in drive.children(item))

    # -- downloads --------------------------------------------------------------------------------
    def _download_url(self, base: str, drive: Drive, item: DriveItem) -> str:
        tempauth = self._sign({"d": drive.id, "i": item.id, "x": self.clock() + self.download_url_ttl,
                               "g": self.download_generation})
        return f"{base}{_DOWNLOAD_PATH}?{urlencode({'UniqueId': item.guid, 'tempauth': tempauth, 'ApiVersion': '2.0'})}"

    def _download(self, request: Request) -> Response:
        state = self._unsign(request.args.get("tempauth", ""))
        if state is None:
            return _text(401, "401 UNAUTHORIZED: invalid tempauth")
        if state["g"] != self.download_generation or state["x"] <= self.clock():
            return _text(self.expired_download_status, "The download link has expired.")
        drive = self.store.drives.get(state["d"])
        item = drive.items.get(state["i"]) if drive else None
        if item is None or item.deleted or item.content is None:
            return _text(404, "404 FILE NOT FOUND")
        content = item.content
        size = item.size
        start, end, status = 0, size, 200
        range_header = request.headers.get("Range")
        if range_header:
            parsed = _RANGE.match(range_header.strip())
            if parsed is None or parsed.group(1) == parsed.group(2) == "":
                return _text(416, "Requested range not satisfiable")
            first, last = parsed.group(1), parsed.group(2)
            if first == "":
                start, end = max(0, size - int(last)), size
            else:
                start, end = int(first), size if last == "" else min(size, int(last) + 1)
            if start >= size or start >= end:
                return Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
        headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes",
                   "Content-Disposition": f"attachment; filename*=UTF-8''{quote(item.name)}", "ETag": item.etag}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return Response(_stream(content, start, end), status=status, headers=headers,
                        mimetype=item.mime_type, direct_passthrough=True)

    # -- opaque tokens ----------------------------------------------------------------------------
    def _sign(self, payload: dict[str, Any]) -> str:
        data = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
        mac = hmac.new(self._signing_key, data, hashlib.sha256).digest()[:12]
        return (data + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode("ascii")

    def _unsign(self, token: str) -> dict[str, Any] | None:
        data, _, mac = token.encode("ascii", "replace").partition(b".")
        digest = hmac.new(self._signing_key, data, hashlib.sha256).digest()[:12]
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=")
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4)))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None


_COLLECTION_CONTEXT = "{base}/v1.0/$metadata#Collection(driveItem)"


def _stream(content: Any, start: int, end: int) -> Iterator[bytes]:
    yield from iter_content(content, start, end)


def _route(path: str) -> tuple[str, re.Match[str] | None]:
    for kind, pattern in _ROUTES:
        match = pattern.match(path)
        if match is not None:
            return kind, match
    return ("graph" if path.startswith(_GRAPH_PREFIX) else "other"), None


def _drive_json(base: str, drive: Drive, *, context: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if context:
        body["@odata.context"] = f"{base}/v1.0/$metadata#drives/$entity"
    body.update({
        "createdDateTime": drive.created_at,
        "description": "",
        "id": drive.id,
        "lastModifiedDateTime": drive.created_at,
        "name": drive.name,
        "webUrl": drive.web_url,
        "driveType": "documentLibrary",
        "createdBy": {"user": {"displayName": "System Account"}},
        "owner": {"group": {"email": drive.owner, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, drive.owner)),
                            "displayName": drive.site.display_name + " Owners"}},
        "quota": {"deleted": 0, "remaining": 27487790694400, "state": "normal", "total": 27487790694400,
                  "used": 0},
    })
    return body


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")


def _text(status: int, text: str) -> Response:
    return Response(text, status=status, content_type="text/plain; charset=utf-8")


def _graph_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> Response:
    inner = {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "request-id": str(uuid.uuid4()),
             "client-request-id": str(uuid.uuid4())}
    return _json(status, {"error": {"code": code, "message": message, "innerError": inner}}, headers)


def _aad_error(status: int, error: str, code: int, message: str) -> Response:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return _json(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} "
                             f"Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    })


def _fault_response(fault: Fault) -> Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.body is not None:
        return _json(fault.status, fault.body, headers)
    if fault.status == 429:
        body = {"error": {"code": "activityLimitReached", "message": "The request has been throttled",
                          "innerError": {"code": "throttledRequest", "innerError": {"code": "quota"}}}}
    elif fault.status == 503:
        body = {"error": {"code": "serviceNotAvailable", "message": "The service is temporarily unavailable."}}
    else:
        body = {"error": {"code": "generalException", "message": f"Injected HTTP {fault.status}."}}
    return _json(fault.status, body, headers)


def _int(value: str | None, default: int) -> int:
    try:
        return max(1, int(value)) if value else default
    except ValueError:
        return default


# -- demo ---------------------------------------------------------------------------------------------
_DEMO_FILES = {
    ("sites/operations", "Documents"): {
        "Rolling Stock/Bogie inspection checklist.txt":
            b"Rolling stock maintenance: bogie inspection checklist for trainset TS-07. Check wheel flange wear, "
            b"primary suspension and brake pads before the preventive maintenance sign-off.",
        "Rolling Stock/TS-11 traction motor report.txt":
            b"Traction motor overheating observed on TS-11 between Aluva and Edapally. Corrective maintenance "
            b"work order raised; depot to replace the motor bearing.",
        "Safety/Fire drill circular.txt":
            "\u0d05\u0d17\u0d4d\u0d28\u0d3f\u0d36\u0d2e\u0d28 \u0d2a\u0d30\u0d3f\u0d36\u0d40\u0d32\u0d28\u0d02: "
            "all stations hold a fire safety drill on Friday. Station controllers report evacuation times."
            .encode("utf-8"),
    },
    ("sites/operations", "Engineering Drawings"): {
        "Viaduct/Pier P-214 inspection.txt":
            b"Civil engineering inspection of viaduct pier P-214: bearing replacement drawing revision C.",
    },
    ("sites/finance", "Documents"): {
        "Invoices/INV-2024-0913 Alstom spares.txt":
            b"Invoice INV-2024-0913 for rolling stock spares. Payment due within 30 days; GST included. "
            b"Finance to reconcile against purchase order PO-5521.",
        "Budget/FY25 capex summary.txt":
            b"Capital expenditure budget summary for FY2025: phase 2 civil works, procurement and audit notes.",
    },
}


def seed_demo(sim: GraphSimulator, *, large_file_mb: int = 0) -> None:
    """Fills ``sim`` with the demo tenant's sites, libraries and a few text files."""
    for (site_path, library), files in _DEMO_FILES.items():
        drive = sim.store.add_drive(site_path, library)
        for path, content in files.items():
            sim.store.put_file(drive, path, content)
    if large_file_mb:
        drive = sim.store.drive("sites/operations", "Engineering Drawings")
        sim.store.put_file(drive, "Scans/Depot survey.bin", GeneratedContent(seed=7, size=large_file_mb * 1024 * 1024),
                           mime_type="application/octet-stream")


def main(argv: list[str] | None = None) -> int:
    """Serves a demo tenant until SIGINT/SIGTERM; prints and writes its settings to ``{state_dir}/graph.env``."""
    from sandbox.announce import announce, wait_for_stop

    parser = argparse.ArgumentParser(prog="python -m sandbox.graph", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state-dir", default="var/graph-sim", help="CA and env file go here")
    parser.add_argument("--large-file-mb", type=int, default=0, help="add one generated file of this size")
    args = parser.parse_args(argv)

    ca = CertAuthority(os.path.join(args.state_dir, "ca"))
    sim = GraphSimulator()
    seed_demo(sim, large_file_mb=args.large_file_mb)
    sim.start(ca, port=args.port, host=args.host)
    env_path = os.path.join(args.state_dir, "graph.env")
    settings = {
        "SHAREPOINT_URL": sim.sharepoint_url,
        "SHAREPOINT_TENANT_ID": sim.tenant_id,
        "SHAREPOINT_CLIENT_ID": sim.client_id,
        "SHAREPOINT_CLIENT_SECRET": sim.client_secret,
        "SHAREPOINT_SITES": ",".join(sorted({site for site, _ in _DEMO_FILES})),
        "GRAPH_BASE_URL": sim.graph_url,
        "ENTRA_AUTHORITY": sim.authority_host,
        "SHAREPOINT_CA_FILE": os.path.abspath(ca.ca_path),
    }
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{key}={value}\n" for key, value in settings.items())
    print(f"graph simulator on {sim.url}; settings in {env_path}", flush=True)
    announce("Microsoft Graph and Entra ID", sim.url, settings)
    try:
        wait_for_stop()
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

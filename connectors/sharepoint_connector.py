"""SharePointConnector: the files of a SharePoint site's document libraries, through Microsoft Graph.

Facts: reference/api-contracts.md part A. One connector serves one site (``site_url``); each of its
document libraries (a Graph *drive*) is a scope, named by the drive id (stable, unique across sites).
The scope list is discovered at run time (site by path, then its drives) and kept for
``scope_cache_seconds`` in the connector's cache, which the service's wiring shares between the runs of
one worker process, so a tick that finds nothing new costs one delta request per drive.

The feed is ``/drives/{id}/root/delta``. The cursor is ``{"deltaLink": url}`` once a feed was read to
its end, or ``{"nextLink": url}`` mid-feed: a Checkpoint follows every page, so a first sync of a large
library cut short by a crash or its time limit resumes at the page it stopped on. A 410 (the token
expired) restarts the enumeration from the ``Location`` header, or from no token; the pipeline's
(source_id, version) dedup keeps that from downloading or uploading anything again.

A file deleted while the token was expired is not in that enumeration at all (Graph reports no
deletion for it), so the resync finds it by comparison: every page's files are recorded in the
scope's ``resync`` hash (base/resync.py) before the page is handed on, and the cursor carries the
resync's id (``{"nextLink": url, "resync": id}``) until the enumeration ends. Only when its last page
(the one with the ``@odata.deltaLink``) has been read, and so every page of it, is each file still
recorded as ingested but not listed yielded as a deletion, before the final Checkpoint. A resync cut
short compares nothing; the next run resumes it from the saved page with the ids kept so far, or
starts it again when they are gone (their id is not the cursor's). Folders are never listed there
nor reported: the pipeline records files only.

Graph reports each item in its latest state and may repeat an item; within a page an item is taken once,
at its last occurrence; across pages a repeat at the same cTag is skipped by the pipeline's dedup and a
later cTag supersedes. Folders (and the root) are skipped; deleted items are yielded with ``deleted=True``.
An item's version is its cTag (content), so a rename alone does not re-download it; its ``location`` is
its path in the library read from its webUrl (name included), so a rename or a move is sent to the Hub
as a metadata update of the same document (base/relocation.py). A file inside a renamed or moved folder
gets its new path when Graph next lists the file itself.

Bytes stream from ``@microsoft.graph.downloadUrl`` with no Authorization header; an expired URL (401,
403, 404, 410) is replaced by re-reading the item once. SharePoint's quickXorHash is computed while
streaming (compiled ``quickxorhash``) and checked after the last chunk: a mismatch is an ItemError,
unless the file changed during the download and the bytes match its new hash.

Every Graph and download request goes through ``utils.http.HttpClient`` with the Redis throttle gate
``throttle:graph:{tenant}``, so a 429/503 ``Retry-After`` pauses every worker of the tenant.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import quickxorhash
import requests

from base.base_connector import BaseConnector
from base.contract import Checkpoint, HealthResult, HealthState, Item, ItemFailure
from base.document import merged_text
from base.resync import ResyncLedger
from config.settings import Settings
from utils.credentials_manager import CredentialsManager
from utils.entra import DEFAULT_AUTHORITY, EntraAuth
from utils.errors import AuthError, ConfigError, ItemError, ThrottledError, TransientError
from utils.http import HttpClient, OriginPolicy, PageLinks, RetryPolicy, iter_response, json_body
from utils.logging import get_logger

log = get_logger(__name__)

#: Microsoft Graph v1.0 in the public cloud.
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
#: How long this process reuses a site's resolved id and library list before asking Graph again
#: (in memory, per process; not the scheduler's scope list shared in Redis).
SITE_DRIVES_CACHE_SECONDS = 300.0  # seconds
#: (connect, read) timeouts for Graph and downloads; the read timeout bounds a stall, not a transfer.
DEFAULT_TIMEOUT = (5.0, 60.0)  # seconds
#: Chunk size when streaming a file.
DOWNLOAD_CHUNK = 1024 * 1024  # bytes
#: 410 restarts accepted within one run before the run gives up as transient.
MAX_RESYNCS_PER_RUN = 3
#: Facets of driveItems that hold nothing to download here: OneNote packages, links to other drives.
NOT_FILE_FACETS = frozenset({"package", "remoteItem", "shortcut"})
#: Answers of an expired or revoked download URL (SharePoint has been seen to give each).
EXPIRED_DOWNLOAD_STATUSES = frozenset({401, 403, 404, 410})


@dataclass(frozen=True)
class Library:
    """A document library (Graph drive) of the site."""

    id: str
    name: str
    web_url: str


@dataclass(frozen=True)
class SiteInfo:
    """A resolved site and all its libraries."""

    id: str
    name: str
    display_name: str
    web_url: str
    libraries: tuple[Library, ...]


def _last_occurrences(values: Sequence[Any]) -> list[dict[str, Any]]:
    """The page's items, each id once, at the place and state of its last occurrence."""
    last: dict[str, int] = {}
    for index, entry in enumerate(values):
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            last[entry["id"]] = index
    return [values[index] for index in sorted(last.values())]


def _graph_error(response: requests.Response) -> str:
    """``code: message`` from Graph's error body, or a short snippet of whatever came back."""
    try:
        body = json_body(response)
    except (ValueError, TransientError):  # unreadable, nested too deeply, or too large: show a snippet
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', 'unknown')}: {' '.join(str(error.get('message', '')).split())[:200]}"
    return " ".join((response.text or "")[:200].split()) or f"HTTP {response.status_code}"


def _identity(value: Any) -> dict[str, str]:
    """A Graph identitySet as ``{"name", "email"}`` (the user, else the application)."""
    if not isinstance(value, dict):
        return {}
    who = value.get("user") or value.get("application") or value.get("group") or {}
    if not isinstance(who, dict):
        return {}
    return {k: str(v) for k, v in (("name", who.get("displayName")), ("email", who.get("email"))) if v}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class SharePointConnector(BaseConnector):
    """Files of one SharePoint site's document libraries.

    site_url: the site's full URL, e.g. ``https://kmrl.sharepoint.com/sites/operations``.
    tenant_id, client_id: the Entra app registration (the secret comes with the credentials).
    libraries: library names to sync (display name or URL name, case-insensitive); None: all.
    graph_base_url: Graph's base (default ``https://graph.microsoft.com/v1.0``).
    authority: Entra's base URL (default ``https://login.microsoftonline.com``); the tenant is appended.
    ca_file: a CA bundle for Graph, Entra and SharePoint's certificates (a test authority).
    scope_cache_seconds: how long the resolved site and library list are reused (default 300).
    timeout: (connect, read) seconds for every request (default (5, 60)).
    Credentials: ``{"client_id", "client_secret", "tenant_id"}`` (client and tenant override the
    constructor's when given).
    """

    name = "sharepoint"

    def __init__(
        self,
        site_url: str,
        *,
        tenant_id: str,
        client_id: str,
        libraries: Sequence[str] | None = None,
        graph_base_url: str = DEFAULT_GRAPH_BASE_URL,
        authority: str = DEFAULT_AUTHORITY,
        ca_file: str | None = None,
        scope_cache_seconds: float = SITE_DRIVES_CACHE_SECONDS,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        parts = urlsplit((site_url or "").rstrip("/"))
        if parts.scheme != "https" or not parts.netloc or not parts.path.strip("/"):
            raise ConfigError(f"the SharePoint site URL {site_url!r} is not https://host/path/of/site "
                              "(check SHAREPOINT_URL and SHAREPOINT_SITES)")
        if not tenant_id or not client_id:
            raise ConfigError("SharePoint needs a tenant id and a client id (SHAREPOINT_TENANT_ID, "
                              "SHAREPOINT_CLIENT_ID)")
        self.site_url = f"https://{parts.netloc}{parts.path}"
        self.hostname = parts.netloc
        self.site_path = parts.path
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.libraries = [name for name in (libraries or []) if name]
        self.graph_base_url = graph_base_url.rstrip("/")
        self.authority = authority.rstrip("/")
        self.ca_file = ca_file
        self.scope_cache_seconds = scope_cache_seconds
        self.timeout = timeout
        self._graph_origin = _origin(self.graph_base_url)
        self._entra: EntraAuth | None = None
        self._client: HttpClient | None = None

    @property
    def instance_id(self) -> str:
        """This instance's name among the source's (the site's path, e.g. ``sites/operations``): stable
        when SHAREPOINT_SITES is reordered, unlike a position."""
        return self.site_path.strip("/")

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> list[SharePointConnector]:
        """One connector per site in SHAREPOINT_SITES (paths under SHAREPOINT_URL, or full URLs).

        With SHAREPOINT_SITES empty, SHAREPOINT_URL itself must be a site's URL. See env.example.
        """
        base = settings.env("SHAREPOINT_URL").rstrip("/")
        if not base:
            raise ConfigError("SHAREPOINT_URL is not set (the tenant's SharePoint URL, e.g. "
                              "https://kmrl.sharepoint.com)")
        origin = _origin(base)
        sites = settings.env_list("SHAREPOINT_SITES")
        if not sites:
            if not urlsplit(base).path.strip("/"):
                raise ConfigError("SHAREPOINT_SITES is empty: list the site paths to sync (e.g. sites/operations)")
            sites = [base]
        cache_seconds = settings.reader.duration("SHAREPOINT_SCOPE_CACHE_SECONDS", SITE_DRIVES_CACHE_SECONDS,
                                                 unit="seconds")
        options: dict[str, Any] = {
            "tenant_id": settings.env("SHAREPOINT_TENANT_ID"),
            "client_id": settings.env("SHAREPOINT_CLIENT_ID"),
            "libraries": settings.env_list("SHAREPOINT_LIBRARIES") or None,
            "graph_base_url": settings.env("GRAPH_BASE_URL", DEFAULT_GRAPH_BASE_URL),
            "authority": settings.env("ENTRA_AUTHORITY", DEFAULT_AUTHORITY),
            "ca_file": settings.env("SHAREPOINT_CA_FILE") or None,
            "scope_cache_seconds": cache_seconds,
            "settings": settings,
        }
        options.update(kwargs)
        return [cls(site if "://" in site else f"{origin}/{site.strip('/')}", **options) for site in sites]

    def default_credentials(self) -> Mapping[str, Any]:
        return CredentialsManager(self.settings).get_sharepoint_credentials()

    # -- connection ---------------------------------------------------------------------------------
    @contextmanager
    def connect(self, credentials: Mapping[str, Any]) -> Iterator[None]:
        """Prepares the Entra app and the Graph client for one run.

        Raises ThrottledError before sending anything when another worker recorded a pause for this
        tenant longer than the inline retry cap.
        """
        self.credentials = credentials
        tenant = str(credentials.get("tenant_id") or self.tenant_id)
        client_id = str(credentials.get("client_id") or self.client_id)
        secret = str(credentials.get("client_secret") or "")
        if not secret:
            raise ConfigError("SharePoint needs the app's client secret (SHAREPOINT_CLIENT_SECRET)")
        entra = EntraAuth(tenant_id=tenant, client_id=client_id, client_secret=secret, authority=self.authority,
                          ca_file=self.ca_file, timeout=self.timeout)
        gate = self.clients.gate("graph", tenant)
        policy = RetryPolicy()
        until = gate.blocked_until()
        if until - time.time() > policy.retry_after_cap:
            raise ThrottledError("graph", until, f"Graph asked tenant {tenant} to pause for "
                                                 f"{until - time.time():.0f} s more")
        # The bearer token goes to GRAPH_BASE_URL's origin only (a nextLink, a Location, a redirect
        # elsewhere is refused); downloads from pre-authenticated URLs are sent anonymous, without it.
        client = self.clients.http("graph", tenant=tenant, timeout=self.timeout, policy=policy, ca_bundle=self.ca_file,
                                   origins=OriginPolicy.of(self.graph_base_url, setting="GRAPH_BASE_URL"))
        self._entra, self._client = entra, client
        try:
            yield
        finally:
            client.session.close()
            self._entra, self._client = None, None

    def _http(self) -> HttpClient:
        if self._client is None:
            raise RuntimeError("SharePointConnector used outside connect()")
        return self._client

    def _auth(self) -> EntraAuth:
        if self._entra is None:
            raise RuntimeError("SharePointConnector used outside connect()")
        return self._entra

    @property
    def _verify(self) -> str | bool:
        # Passed on every request: a session's own ``verify`` loses to REQUESTS_CA_BUNDLE in requests.
        return self.ca_file or True

    @property
    def requests_sent(self) -> int:
        """Graph and download requests sent by the current run's client (0 outside a run)."""
        return self._client.requests_sent if self._client is not None else 0

    def _graph_get(self, url: str, *, params: Mapping[str, str] | None = None, what: str,
                   stream: bool = False) -> requests.Response:
        """A Graph GET with the app's bearer token; a 401 gets one fresh token and one more try.

        Returns the response whatever its status (after that retry) for the caller to classify.
        """
        # The client's origin policy keeps the token on Graph: a link naming another origin raises
        # OriginNotAllowed before anything is sent.
        for attempt in (1, 2):
            token, _ = self._auth().token(refresh=attempt == 2)
            response = self._http().request(
                "GET", url, params=params, stream=stream, verify=self._verify,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            if response.status_code != 401 or attempt == 2:
                return response
            log.info("graph_token_refused", what=what, error=_graph_error(response))
            response.close()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns

    def _classify(self, response: requests.Response, what: str, *, item: bool = False) -> Exception:
        status, detail = response.status_code, _graph_error(response)
        response.close()
        if status == 401:
            return AuthError(f"Graph refused a fresh token while reading {what} ({detail})")
        if status == 403:
            return ConfigError(f"Graph denied access to {what} ({detail}): the app needs the Sites.Read.All "
                               "application permission, or Sites.Selected granted on this site")
        if status >= 500:
            return TransientError(f"Graph answered HTTP {status} to {what} ({detail})")
        if item:
            return ItemError(f"Graph answered HTTP {status} to {what} ({detail})")
        return ConfigError(f"Graph answered HTTP {status} to {what} ({detail})")

    def _graph_json(self, url: str, *, params: Mapping[str, str] | None = None, what: str,
                    item: bool = False) -> dict[str, Any]:
        response = self._graph_get(url, params=params, what=what)
        if response.status_code != 200:
            raise self._classify(response, what, item=item)
        return _json_object(response, what, item=item)

    def graph_request(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                      what: str) -> requests.Response:
        """A Graph call other than a read (change-notification subscriptions): ``path`` under
        GRAPH_BASE_URL, the app's bearer token, a fresh token and one more try after a 401. Inside
        ``connect()``; returns the response whatever its status, its body read."""
        url = f"{self.graph_base_url}/{path.lstrip('/')}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        for attempt in (1, 2):
            token, _ = self._auth().token(refresh=attempt == 2)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            response = self._http().request(method, url, data=data, verify=self._verify, headers=headers)
            if response.status_code != 401 or attempt == 2:
                return response
            log.info("graph_token_refused", what=what, error=_graph_error(response))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns

    # -- site and libraries -------------------------------------------------------------------------
    def site(self, *, refresh: bool = False) -> SiteInfo:
        """The resolved site and its libraries, kept in ``self.cache`` for ``scope_cache_seconds`` (the
        wiring's cache: every run of the worker process reuses it); ``refresh`` asks Graph again."""
        key = ("sharepoint-site", self.graph_base_url, self.site_url.lower())
        if not refresh:
            cached = self.cache.get(key)
            if isinstance(cached, SiteInfo):
                return cached
        body = self._graph_json(f"{self.graph_base_url}/sites/{self.hostname}:{quote(self.site_path)}",
                                what=f"the site {self.site_url}")
        site_id = str(body.get("id") or "")
        if not site_id:
            raise TransientError(f"Graph's answer for the site {self.site_url} has no id")
        libraries: list[Library] = []
        url: str | None = f"{self.graph_base_url}/sites/{site_id}/drives"
        pages = PageLinks("graph", f"the libraries of {self.site_url}")
        while url:
            pages.visit(url)
            page = self._graph_json(url, what=f"the libraries of {self.site_url}")
            for drive in page.get("value") or []:
                if isinstance(drive, dict) and drive.get("id"):
                    libraries.append(Library(id=str(drive["id"]), name=str(drive.get("name") or drive["id"]),
                                             web_url=str(drive.get("webUrl") or "").rstrip("/")))
            next_link = page.get("@odata.nextLink")
            url = next_link if isinstance(next_link, str) else None
        info = SiteInfo(id=site_id, name=self.site_path.rstrip("/").rsplit("/", 1)[-1],
                        display_name=str(body.get("displayName") or body.get("name") or ""),
                        web_url=str(body.get("webUrl") or self.site_url).rstrip("/"), libraries=tuple(libraries))
        self.cache.put(key, info, self.scope_cache_seconds)
        log.info("sharepoint_site_resolved", site=self.site_url, libraries=len(libraries))
        return info

    def selected_libraries(self, site: SiteInfo) -> list[Library]:
        """The site's libraries that SHAREPOINT_LIBRARIES selects (all when it is empty).

        Raises ConfigError when libraries were named and none of them exists (a silent empty sync
        would hide the mistake); a missing name among found ones is logged.
        """
        if not self.libraries:
            return list(site.libraries)
        wanted = {name.casefold() for name in self.libraries}
        chosen = [lib for lib in site.libraries
                  if lib.name.casefold() in wanted or unquote(lib.web_url.rsplit("/", 1)[-1]).casefold() in wanted]
        found = {lib.name.casefold() for lib in chosen} | {
            unquote(lib.web_url.rsplit("/", 1)[-1]).casefold() for lib in chosen}
        missing = sorted(name for name in self.libraries if name.casefold() not in found)
        if not chosen:
            raise ConfigError(f"none of the libraries {', '.join(self.libraries)} exists on {self.site_url} "
                              f"(it has {', '.join(lib.name for lib in site.libraries) or 'none'})")
        if missing:
            log.warning("sharepoint_library_missing", site=self.site_url, libraries=missing)
        return chosen

    def scopes(self) -> list[str]:
        """The drive ids of the selected libraries."""
        return [lib.id for lib in self.selected_libraries(self.site())]

    def scope_label(self, scope: str) -> str:
        """``site path / library name`` (``sites/operations / Documents``) for a drive id this process
        has resolved; the drive id otherwise (no Graph call is made for a name)."""
        cached = self.cache.get(("sharepoint-site", self.graph_base_url, self.site_url.lower()))
        if isinstance(cached, SiteInfo):
            return self.library_labels(cached).get(scope, scope)
        return scope

    def library_labels(self, site: SiteInfo) -> dict[str, str]:
        """Drive id -> ``site path / library name`` for each library of ``site``."""
        return {lib.id: f"{self.site_path.strip('/')} / {lib.name}" for lib in site.libraries}

    def _library(self, scope: str) -> tuple[SiteInfo, Library]:
        site = self.site()
        for refresh in (False, True):
            if refresh:
                site = self.site(refresh=True)
            for lib in self.selected_libraries(site):
                if lib.id == scope:
                    return site, lib
        raise ConfigError(f"the library {scope} is not (or no longer) a selected library of {self.site_url}")

    # -- the feed -----------------------------------------------------------------------------------
    def _start_url(self, library: Library, cursor: Any) -> str:
        fresh = f"{self.graph_base_url}/drives/{library.id}/root/delta"
        if cursor is None:
            return fresh
        link = None
        if isinstance(cursor, dict):
            link = cursor.get("nextLink") or cursor.get("deltaLink")
        if not isinstance(link, str) or not link:
            raise ConfigError(f"the stored SharePoint cursor {cursor!r} holds no delta link; clear it to resync")
        if _origin(link) != self._graph_origin:
            log.warning("sharepoint_cursor_other_host", library=library.name, host=_origin(link))
            return fresh
        return link

    def _resync_at_start(self, library: Library, cursor: Any, url: str, ledger: ResyncLedger) -> tuple[str, str]:
        """(url, resync id) to start from: the cursor's resync when its listed ids are all kept, a new
        resync from the start when they are not, none ("") when the cursor names none."""
        resync = cursor.get("resync") if isinstance(cursor, dict) else None
        if not isinstance(resync, str) or not resync:
            ledger.drop()  # a saved cursor that names no resync: any earlier one is over
            return url, ""
        fresh = f"{self.graph_base_url}/drives/{library.id}/root/delta"
        if url != fresh and ledger.holds(resync):
            return url, resync
        # Compared with only part of the enumeration, files still present would look deleted.
        log.warning("sharepoint_resync_restarted", library=library.name, resync=resync,
                    reason="the files listed so far by this resync are not kept")
        return fresh, ledger.begin()

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        """The library's changes since ``cursor``: files and deletions, a Checkpoint after each page;
        after a 410, once the new enumeration is complete, a deletion for each ingested file it did not
        list (module docstring)."""
        site, library = self._library(scope)
        ledger = ResyncLedger(self.state, self.name, scope)
        url, resync = self._resync_at_start(library, cursor, self._start_url(library, cursor), ledger)
        what = f"the delta feed of library {library.name!r} on {self.site_url}"
        folders: dict[str, str] = {}
        resyncs = 0
        pages = PageLinks("graph", what)
        while True:
            pages.visit(url)
            response = self._graph_get(url, what=what)
            if response.status_code == 410:
                resyncs += 1
                location = response.headers.get("Location") or ""
                detail = _graph_error(response)
                response.close()
                if resyncs > MAX_RESYNCS_PER_RUN:
                    raise TransientError(f"Graph asked to resync {what} {resyncs} times in one run ({detail})")
                from_location = bool(location) and _origin(location) == self._graph_origin
                url = location if from_location else f"{self.graph_base_url}/drives/{library.id}/root/delta"
                pages = PageLinks("graph", what)  # a resync reads the feed again from its start, on purpose
                resync = ledger.begin()
                log.warning("sharepoint_resync", library=library.name, error=detail, from_location=from_location,
                            resync=resync)
                continue
            if response.status_code != 200:
                raise self._classify(response, what)
            body = _json_object(response, what)
            values = body.get("value")
            if not isinstance(values, list):
                raise TransientError(f"a page of {what} has no value list")
            anonymous = sum(1 for v in values if not isinstance(v, dict) or not isinstance(v.get("id"), str))
            if anonymous:
                # Its cursor must not be saved past entries we cannot even name: read the page again later.
                raise TransientError(f"a page of {what} has {anonymous} entries without an id")
            entries = _last_occurrences(values)
            if resync:
                # Before the page's changes go on (and so before any cursor passes them).
                ledger.add(str(entry["id"]) for entry in entries if _listed_file(entry))
            for entry in entries:
                change = self._change(site, library, entry, folders)
                if change is not None:
                    yield change
            next_link, delta_link = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
            if isinstance(next_link, str) and next_link:
                yield Checkpoint({"nextLink": next_link, "resync": resync} if resync else {"nextLink": next_link})
                url = next_link
            elif isinstance(delta_link, str) and delta_link:
                if resync:
                    yield from self._unlisted(site, library, ledger)
                yield Checkpoint({"deltaLink": delta_link})
                return
            else:
                raise TransientError(f"a page of {what} has neither @odata.nextLink nor @odata.deltaLink")

    def _change(self, site: SiteInfo, library: Library, entry: dict[str, Any],
                folders: dict[str, str]) -> Item | ItemFailure | None:
        """What one delta entry means to the pipeline (None: nothing, e.g. a folder)."""
        item_id = str(entry["id"])
        hints = {"site": site.name, "library": library.name}
        if "deleted" in entry:
            if item_id in folders or "folder" in entry:
                folders.pop(item_id, None)
                return None
            # SharePoint deletions carry no facet, so a deleted folder looks like a deleted file: the
            # pipeline tells the Hub only about items it ingested.
            return self._deletion(site, library, item_id, str(entry.get("eTag") or "deleted"))
        if "root" in entry:
            folders[item_id] = ""
            return None
        if "folder" in entry:
            folders[item_id] = self._path(library, entry, folders)
            return None
        file_facet = entry.get("file")
        name = str(entry.get("name") or item_id)
        if not isinstance(file_facet, dict):
            if any(facet in entry for facet in NOT_FILE_FACETS):
                log.debug("sharepoint_entry_skipped", item_id=item_id, facets=sorted(set(entry) & NOT_FILE_FACETS))
                return None
            # Anything else without a file facet is a file Graph described badly: say so, never drop it.
            return ItemFailure(item_id, f"Graph listed {name!r} with neither a file nor a folder facet",
                               version=str(entry.get("cTag") or entry.get("eTag") or ""),
                               metadata={"drive_id": library.id, "name": name})
        version = entry.get("cTag") or entry.get("eTag") or entry.get("lastModifiedDateTime")
        if not version:
            return ItemFailure(item_id, f"Graph listed {name!r} with no cTag, eTag or lastModifiedDateTime",
                               metadata={"drive_id": library.id, "name": name})
        path = self._path(library, entry, folders)
        hashes = _obj(file_facet.get("hashes"))
        expected = str(hashes.get("quickXorHash") or "") or None
        created_by, modified_by = _identity(entry.get("createdBy")), _identity(entry.get("lastModifiedBy"))
        size = entry.get("size")
        metadata = {
            "site": site.web_url, "site_id": site.id, "drive": library.name, "drive_id": library.id,
            "item_id": item_id, "path": path, "web_url": entry.get("webUrl"),
            "created_by": created_by, "created_at": entry.get("createdDateTime"),
            "modified_by": modified_by, "modified_at": entry.get("lastModifiedDateTime"),
            "etag": entry.get("eTag"), "ctag": entry.get("cTag"), "quick_xor_hash": expected,
        }
        folder_words = path.rsplit("/", 1)[0].replace("/", " ")
        return Item(
            source_id=item_id, version=str(version), filename=name,
            open=self._opener(library, item_id, name, entry.get("@microsoft.graph.downloadUrl"), expected),
            mime_type=str(file_facet.get("mimeType") or "application/octet-stream"),
            size=size if isinstance(size, int) else None, title=name.rsplit(".", 1)[0],
            text=merged_text([folder_words, library.name, site.display_name]),
            author=created_by.get("name") or created_by.get("email", ""),
            created_at=entry.get("createdDateTime"), modified_at=entry.get("lastModifiedDateTime"),
            source_url=entry.get("webUrl"), metadata=metadata, hints=hints,
            # Only a path read from the webUrl is the file's own: the fallbacks depend on what this
            # feed happened to list, and a path that changes with them would look like a move.
            location=_path_in_url(library, entry),
        )

    @staticmethod
    def _deletion(site: SiteInfo, library: Library, item_id: str, version: str) -> Item:
        return Item(source_id=item_id, version=version, deleted=True,
                    metadata={"drive": library.name, "drive_id": library.id, "site": site.web_url},
                    hints={"site": site.name, "library": library.name})

    def _unlisted(self, site: SiteInfo, library: Library, ledger: ResyncLedger) -> Iterator[Item]:
        """A deletion for every file recorded as ingested from the library that the resync, now
        complete, did not list: deleted while the delta token was expired."""
        count = 0
        for item_id in ledger.unlisted():
            count += 1
            log.info("sharepoint_resync_file_gone", library=library.name, item_id=item_id)
            yield self._deletion(site, library, item_id, "unlisted-by-resync")
        log.info("sharepoint_resync_compared", library=library.name, gone=count)

    @staticmethod
    def _path(library: Library, entry: Mapping[str, Any], folders: Mapping[str, str]) -> str:
        """The item's path in its library (``/Folder/file.pdf``).

        Delta leaves ``parentReference.path`` out, so the path comes from the webUrl under the
        library's URL, else from the folders seen earlier in this feed, else it is the bare name.
        """
        name = str(entry.get("name") or entry.get("id"))
        from_url = _path_in_url(library, entry)
        if from_url:
            return from_url
        parent = _obj(entry.get("parentReference"))
        parent_path = str(parent.get("path") or "")
        if ":" in parent_path:
            return unquote(parent_path.split(":", 1)[1]).rstrip("/") + "/" + name
        parent_id = parent.get("id")
        if isinstance(parent_id, str) and parent_id in folders:
            return folders[parent_id] + "/" + name
        return "/" + name

    # -- downloads ------------------------------------------------------------------------------------
    def _opener(self, library: Library, item_id: str, name: str, download_url: Any,
                expected: str | None) -> Callable[[], Iterator[bytes]]:
        url = download_url if isinstance(download_url, str) and download_url else None

        def open_() -> Iterator[bytes]:
            return self._download(library, item_id, name, url, expected)

        return open_

    def _item_json(self, library: Library, item_id: str, name: str) -> dict[str, Any]:
        return self._graph_json(f"{self.graph_base_url}/drives/{library.id}/items/{item_id}",
                                what=f"the file {name!r} in {library.name!r}", item=True)

    def _open_download(self, library: Library, item_id: str, name: str, url: str | None) -> requests.Response:
        """The download response (200); an expired URL is replaced by re-reading the item, once."""
        for attempt in (1, 2):
            if url is None:
                fresh = self._item_json(library, item_id, name).get("@microsoft.graph.downloadUrl")
                if not isinstance(fresh, str) or not fresh:
                    raise ItemError(f"Graph gave {name!r} no download URL")
                url = fresh
            # Anonymous: the URL is pre-authenticated, on SharePoint's host, and the bearer token must not
            # go there (the HTTP layer refuses a credential header on an anonymous request).
            response = self._http().request("GET", url, stream=True, verify=self._verify, anonymous=True)
            if response.status_code == 200:
                return response
            status = response.status_code
            response.close()
            if status in EXPIRED_DOWNLOAD_STATUSES and attempt == 1:
                log.info("sharepoint_download_url_refreshed", item_id=item_id, status=status)
                url = None
                continue
            if 400 <= status < 500:
                raise ItemError(f"SharePoint answered HTTP {status} to the download of {name!r}")
            raise TransientError(f"SharePoint answered HTTP {status} to the download of {name!r}")
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _download(self, library: Library, item_id: str, name: str, url: str | None,
                  expected: str | None) -> Iterator[bytes]:
        response = self._open_download(library, item_id, name, url)
        digest = quickxorhash.quickxorhash()
        for chunk in iter_response(response, DOWNLOAD_CHUNK):
            digest.update(chunk)
            yield chunk
        got = _b64(digest.digest())
        if expected is None or got == expected:
            return
        # Graph lists an item's state at listing time; the file may have been saved again since.
        fresh = self._item_json(library, item_id, name)
        fresh_hash = _obj(_obj(fresh.get("file")).get("hashes")).get("quickXorHash")
        if fresh_hash == got:
            log.info("sharepoint_file_changed_during_download", item_id=item_id)
            return
        raise ItemError(f"quickXorHash mismatch for {name!r}: Graph reported {expected}, the download gave {got}")

    # -- health -----------------------------------------------------------------------------------------
    def health_check(self, credentials: Mapping[str, Any] | None = None) -> HealthResult:
        """A token, the site by path, and the root of each selected library; never raises."""
        try:
            creds = credentials if credentials is not None else self.default_credentials()
            with self.connect(creds):
                _, source = self._auth().token()
                site = self.site(refresh=True)
                libraries = self.selected_libraries(site)
                for lib in libraries:
                    self._graph_json(f"{self.graph_base_url}/drives/{lib.id}/root", params={"$select": "id"},
                                     what=f"the root of library {lib.name!r}")
                names = ", ".join(lib.name for lib in libraries)
                missing = len(self.libraries) and len(libraries) < len(self.libraries)
                detail = (f"token from {source.replace('_', ' ')}; site {self.site_url} resolved; "
                          f"{len(libraries)} librar{'y' if len(libraries) == 1 else 'ies'} readable: {names}")
                if missing:
                    return HealthResult(False, HealthState.DEGRADED,
                                        detail + f" (configured: {', '.join(self.libraries)})")
                return HealthResult(True, HealthState.HEALTHY, detail)
        except (ConfigError, TransientError) as exc:
            return HealthResult.from_error(exc)


def _path_in_url(library: Library, entry: Mapping[str, Any]) -> str:
    """The item's path in its library read from its webUrl (``/Folder/file.pdf``); "" when the webUrl
    is missing or not under the library's."""
    web_url = str(entry.get("webUrl") or "")
    if library.web_url and web_url.lower().startswith(library.web_url.lower() + "/"):
        return "/" + unquote(web_url[len(library.web_url) + 1:].split("?", 1)[0])
    return ""


def _listed_file(entry: Mapping[str, Any]) -> bool:
    """Whether a delta entry lists something alive that may be an ingested file (not a folder, the
    root or a deletion): what a resync records as still there."""
    return not any(facet in entry for facet in ("deleted", "folder", "root"))


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _json_object(response: requests.Response, what: str, *, item: bool = False) -> dict[str, Any]:
    problem = ""
    try:
        body = json_body(response)
    except ValueError as exc:  # not JSON, or nested too deeply to parse
        body, problem = None, f": {exc}"
    finally:
        response.close()
    if not isinstance(body, dict):
        problem = f"Graph answered {what} with a body that is not a JSON object{problem}"
        raise ItemError(problem) if item else TransientError(problem)
    return body

"""MaximoConnector: attachments (doclinks) of IBM Maximo work orders, over the OSLC JSON API.

Facts: reference/api-contracts.md part B. Each configured site is a scope (``all`` when none is
configured). A run queries the object structure (``mxapiwodetail`` by default) with ``lean=1``,
``oslc.where=changedate>="<cursor>"`` plus the site / work type / status filters,
``oslc.orderBy=+changedate,+wonum`` and ``oslc.select`` of the fields used and ``doclinks{*}``; for each
work order it yields one ``Item`` per file doclink, whose bytes stream from the doclink href only
when the pipeline asks for them.

The cursor is ``{"changedate": <last changedate taken>, "taken": [<SITE/WONUM taken at exactly that
changedate>]}``. The query uses ``>=`` so a work order saved in the same second as the last one taken
is not missed, and the ``taken`` list keeps the ones already done from being sent twice.

Paging restarts the query from the advanced cursor after each page instead of walking ``pageno``:
``changedate`` moves whenever a work order is saved, so a work order edited while we page jumps to the
end of the ordering and every later record slides back one place; the record that slides onto a
page already read would be skipped, and once the cursor passed its changedate it would be lost for
good. A query from the cursor cannot skip anything. When a whole page holds only work orders already
taken (more share one changedate second than fit on a page, as after a bulk status change), that
second is walked alone with ``responseInfo.nextPage`` and the feed resumes at the next second; the
walk is repeated if the second lost members meanwhile (the one way a record can slide past a walk).

Every change, not only additions: the doclinks last listed for each work order are kept beside the
item records (``StateStore`` ``group`` index), so when a changed work order no longer has one that was
ingested, a deletion Item (``deleted=True``) reports it, once. A work order without a changedate (null,
or hidden from this user) is still listed, its doclinks ingested without moving the cursor; the null
ones, which no ``changedate>=`` query matches, are asked for (``changedate!="*"``) at the end of a run
from no cursor.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from base.base_connector import BaseConnector
from base.contract import Checkpoint, HealthResult, HealthState, Item, ItemFailure
from base.document import merged_text
from config.settings import Settings
from connectors.maximo_oslc import (
    CREDENTIAL_REASON_CODES,
    NO_SESSION_CODE,
    ChangedateBlock,
    MaximoError,
    WorkOrderCursor,
    json_object,
    next_second,
    parse_date,
    parse_error,
    plain_text,
    quoted_list,
    same_instant,
)
from utils.credentials_manager import CredentialsManager
from utils.errors import AuthError, ConfigError, ItemError, ResponseTooLarge, TransientError
from utils.http import HttpClient, OriginPolicy, PageLinks, iter_response, json_body
from utils.logging import get_logger, register_secret

log = get_logger(__name__)

#: The scope used when no site is configured.
ALL_SITES = "all"
#: Authentication styles: API key header (MAS, preferred), native ``maxauth`` login, LDAP Basic login.
AUTH_STYLES = ("apikey", "maxauth", "basic")
#: Work-order attributes read from Maximo (``oslc.select``, with the doclinks).
WORK_ORDER_FIELDS = (
    "wonum", "siteid", "description", "description_longdescription", "worktype", "status", "location",
    "assetnum", "reportdate", "changedate",
)
#: Records per page (``oslc.pageSize``); Maximo refuses more than its ``mxe.oslc.maxpagesize``.
DEFAULT_PAGE_SIZE = 100
#: (connect, read) timeouts, seconds.
DEFAULT_TIMEOUT = (5.0, 60.0)
#: Chunk size when streaming a doclink binary.
DOWNLOAD_CHUNK = 1024 * 1024  # bytes
#: Outcomes of one work order in a page (``_UNDATED``: listed, but it has no changedate to take).
_TAKEN, _SEEN, _FAILED, _UNDATED = "taken", "seen", "failed", "undated"
#: The ``version`` of the deletion Item of a doclink no longer attached to its work order.
REMOVED = "removed"


def work_order_of(source_id: str) -> str | None:
    """``SITE/WONUM`` of a doclink's source_id ``SITE/WONUM/<doclink id>`` (None for anything else)."""
    head, sep, _ = source_id.rpartition("/")
    return head if sep and "/" in head else None


@dataclass
class _Listed:
    """One work order as listed: its changes, the cursor safe after them (None: not a safe point) and
    the source_ids of its doclinks (None when they could not be read, so no removal is inferred)."""

    key: str
    changes: list[Item | ItemFailure]
    cursor: Any = None
    doclinks: list[str] | None = None


class MaximoConnector(BaseConnector):
    """Work-order attachments from Maximo.

    base_url: the Maximo server, e.g. ``https://maximo.kmrl.co.in`` (the ``/maximo`` context root is
        added when the URL has no path) or the context root itself.
    object_structure: the work-order object structure (default ``mxapiwodetail``; ``mxwo`` works too).
    site_ids: sites to sync, one scope each; None or empty: one scope ``all`` without a site filter.
    work_types, statuses: only work orders with these ``worktype`` / ``status`` values (None: all).
    auth: ``apikey`` (header ``apikey``, on ``/maximo/api``), ``maxauth`` or ``basic`` (a login on
        ``/maximo/oslc/login`` whose ``JSESSIONID`` is reused for the run and renewed once if it expires);
        None: ``apikey`` when the credentials hold ``api_key``, else ``maxauth``.
    timeout: (connect, read) seconds, default (5, 60).
    page_size: work orders per request (default 100).
    ca_bundle: a CA file to verify Maximo's certificate with (default: the system store).
    Credentials: ``{"api_key": ...}`` or ``{"user": ..., "password": ...}``.
    """

    name = "maximo"

    def __init__(
        self,
        base_url: str,
        *,
        object_structure: str = "mxapiwodetail",
        site_ids: Sequence[str] | None = None,
        work_types: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
        auth: str | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        ca_bundle: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not base_url:
            raise ConfigError("the Maximo URL is not set (MAXIMO_URL)")
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"the Maximo URL {base_url!r} is not an http(s) URL")
        self.root_url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/maximo", "", ""))
        if auth is not None and auth not in AUTH_STYLES:
            raise ConfigError(f"the Maximo auth style must be one of {', '.join(AUTH_STYLES)}, not {auth!r}")
        if page_size < 1:
            raise ConfigError(f"the Maximo page size must be at least 1, not {page_size}")
        self.object_structure = object_structure.lower()
        self.site_ids = [s for s in (site_ids or []) if s]
        self.work_types = [w for w in (work_types or []) if w]
        self.statuses = [s for s in (statuses or []) if s]
        self.filters = self._static_filters()
        self.auth = auth
        self.timeout = timeout
        self.page_size = page_size
        self.ca_bundle = ca_bundle
        self.client: HttpClient | None = None
        self._style = auth or "apikey"
        self._api_key = ""
        self._login_token = ""

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> MaximoConnector:
        """A connector configured from MAXIMO_* variables (see env.example)."""
        read = settings.reader
        return cls(
            settings.env("MAXIMO_URL"),
            object_structure=settings.env("MAXIMO_OBJECT_STRUCTURE", "mxapiwodetail"),
            site_ids=settings.env_list("MAXIMO_SITE_IDS"),
            work_types=settings.env_list("MAXIMO_WORK_TYPES"),
            statuses=settings.env_list("MAXIMO_STATUSES"),
            auth=settings.env("MAXIMO_AUTH").lower() or None,
            timeout=(read.duration("MAXIMO_CONNECT_TIMEOUT", 5.0, unit="seconds"),
                     read.duration("MAXIMO_READ_TIMEOUT", 60.0, unit="seconds")),
            page_size=read.whole("MAXIMO_PAGE_SIZE", DEFAULT_PAGE_SIZE, what="a whole number of records"),
            ca_bundle=settings.env("MAXIMO_CA_FILE") or None,
            settings=settings,
            **kwargs,
        )

    def default_credentials(self) -> Mapping[str, Any]:
        return CredentialsManager(self.settings).get_maximo_credentials()

    # -- connection and authentication ----------------------------------------------------------

    @contextmanager
    def connect(self, credentials: Mapping[str, Any]) -> Iterator[None]:
        """Builds the HTTP client for one run and logs in (session styles); closes it afterwards."""
        self.credentials = credentials
        style = self.auth or str(credentials.get("auth") or ("apikey" if credentials.get("api_key") else "maxauth"))
        if style not in AUTH_STYLES:
            raise ConfigError(f"the Maximo auth style must be one of {', '.join(AUTH_STYLES)}, not {style!r}")
        self._style = style
        if style == "apikey":
            self._api_key = str(credentials.get("api_key") or "")
            if not self._api_key:
                raise ConfigError("Maximo API-key authentication needs an api_key (MAXIMO_API_KEY)")
            register_secret(self._api_key)
        else:
            user, password = str(credentials.get("user") or ""), str(credentials.get("password") or "")
            if not user or not password:
                raise ConfigError(f"Maximo {style} authentication needs a user and a password "
                                  "(MAXIMO_USER, MAXIMO_PASSWORD)")
            register_secret(password)
            self._login_token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            register_secret(self._login_token)
        host = urlsplit(self.root_url).netloc
        # The key, the login and the session cookie go to MAXIMO_URL's origin only: a doclink or
        # nextPage href, or a redirect, naming another host (or plain http) is refused, not followed.
        client = self.clients.http("maximo", tenant=host, timeout=self.timeout, ca_bundle=self.ca_bundle,
                                   origins=OriginPolicy.of(self.root_url, setting="MAXIMO_URL"))
        if style == "apikey":
            # Maximo hands out a JSESSIONID even to API-key calls; replayed with the key it makes Maximo
            # prefer that empty session and answer 401 BMXAA0021E. API-key calls carry no cookies.
            client.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self.client = client
        try:
            if style != "apikey":
                self._login()
            yield
        finally:
            client.session.close()
            self.client = None

    def _http(self) -> HttpClient:
        if self.client is None:
            raise RuntimeError("MaximoConnector used outside connect()")
        return self.client

    @property
    def collection_url(self) -> str:
        """The object structure's URL: ``/maximo/api/os/..`` for API keys, ``/maximo/oslc/os/..`` for sessions."""
        root = "api" if self._style == "apikey" else "oslc"
        return f"{self.root_url}/{root}/os/{self.object_structure}"

    def _login(self) -> None:
        """POST /oslc/login with ``maxauth`` or Basic; the session cookie stays in the client's jar."""
        header = ({"maxauth": self._login_token} if self._style == "maxauth"
                  else {"Authorization": f"Basic {self._login_token}"})
        response = self._http().request("POST", f"{self.root_url}/oslc/login", params={"lean": "1"},
                                        headers={"Accept": "application/json", **header}, **self._tls())
        if response.status_code in (200, 204):
            response.close()
            log.info("maximo_logged_in", style=self._style)
            return
        error = parse_error(response)
        if response.status_code in (401, 403):
            raise AuthError(f"Maximo refused the {self._style} login ({self._explain(error)})")
        raise self._unexpected(error, "the login")

    def _tls(self) -> dict[str, Any]:
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA bundle, so a
        # configured MAXIMO_CA_FILE is passed with every request, where it wins.
        return {"verify": self.ca_bundle} if self.ca_bundle else {}

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._style == "apikey":
            headers["apikey"] = self._api_key
        return headers

    def _get(self, url: str, *, params: Mapping[str, str] | None = None, what: str, item: bool = False,
             stream: bool = False) -> requests.Response:
        """A GET answered 2xx; renews an expired session once; classifies every other answer.

        ``item``: failures other than authentication concern one item only (ItemError), not the run.
        """
        for attempt in (1, 2):
            try:
                response = self._http().request("GET", url, params=params, headers=self._headers(), stream=stream,
                                                **self._tls())
            except ResponseTooLarge as exc:
                if item:
                    raise ItemError(f"Maximo's answer to {what} is too large to read: {exc}") from None
                raise
            if 200 <= response.status_code < 300:
                return response
            error = parse_error(response)
            response.close()
            if response.status_code == 401 and self._style != "apikey" and attempt == 1 \
                    and error.reason_code not in CREDENTIAL_REASON_CODES:
                log.info("maximo_session_expired", reason_code=error.reason_code or None)
                self._login()
                continue
            raise self._classify(error, what, item=item)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _explain(self, error: MaximoError) -> str:
        meaning = CREDENTIAL_REASON_CODES.get(error.reason_code)
        if error.reason_code == NO_SESSION_CODE:
            meaning = ("API key refused together with a session cookie" if self._style == "apikey"
                       else "session not accepted even after a fresh login")
        return error.describe() + (f" [{meaning}]" if meaning else "")

    def _classify(self, error: MaximoError, what: str, *, item: bool) -> Exception:
        status = error.status
        if status == 401:
            return AuthError(f"Maximo refused the {self._style} credentials while reading {what} "
                             f"({self._explain(error)})")
        if status == 403:
            return ConfigError(f"Maximo does not allow this user to read {what} ({error.describe()})")
        if item:
            return ItemError(f"Maximo could not serve {what} ({error.describe()})")
        if status == 404:
            return ConfigError(f"Maximo has no {what} at {self.collection_url} ({error.describe()}): "
                               "check MAXIMO_URL and MAXIMO_OBJECT_STRUCTURE")
        if status == 400:
            return ConfigError(f"Maximo refused the query for {what} ({error.describe()}): check the site, "
                               "work type and status filters and MAXIMO_PAGE_SIZE")
        return self._unexpected(error, what)

    @staticmethod
    def _unexpected(error: MaximoError, what: str) -> Exception:
        if 400 <= error.status < 500:
            return ConfigError(f"Maximo answered {error.describe()} to {what}")
        return TransientError(f"Maximo answered {error.describe()} to {what}")

    def _get_json(self, url: str, *, params: Mapping[str, str] | None = None, what: str,
                  item: bool = False) -> dict[str, Any]:
        response = self._get(url, params=params, what=what, item=item)
        try:
            body = json_body(response)
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "no content type")
            problem = (f"Maximo answered {what} with a body that is not valid JSON "
                       f"({kind}, {len(response.content)} bytes: {exc})")
            raise (ItemError(problem) if item else TransientError(problem)) from None
        if not isinstance(body, dict):
            problem = f"Maximo answered {what} with JSON that is not an object"
            raise ItemError(problem) if item else TransientError(problem)
        return body

    # -- the feed -------------------------------------------------------------------------------

    def scopes(self) -> list[str]:
        """One scope per configured site, or ``all``."""
        return list(self.site_ids) or [ALL_SITES]

    def _static_filters(self) -> list[str]:
        terms = []
        if self.work_types:
            terms.append(f"worktype in [{quoted_list(self.work_types, 'MAXIMO_WORK_TYPES')}]")
        if self.statuses:
            terms.append(f"status in [{quoted_list(self.statuses, 'MAXIMO_STATUSES')}]")
        quoted_list(self.site_ids, "MAXIMO_SITE_IDS")
        return terms

    def query_params(self, scope: str, *, since: str | None = None, before: str | None = None,
                     page_size: int | None = None, select: str | None = None,
                     count: bool = False, undated: bool = False) -> dict[str, str]:
        """A first-page query for ``scope``: work orders with ``since <= changedate < before``.

        ``count`` asks for ``totalCount`` (``collectioncount=1``); ``undated``: only work orders whose
        changedate is null (``changedate!="*"``).
        """
        terms = ['changedate!="*"'] if undated else []
        if since is not None:
            terms.append(f'changedate>="{since}"')
        if before is not None:
            terms.append(f'changedate<"{before}"')
        if scope != ALL_SITES:
            terms.append(f'siteid="{scope}"')
        terms.extend(self.filters)
        params = {
            "lean": "1",
            "oslc.select": select or ",".join(WORK_ORDER_FIELDS) + ",doclinks{*}",
            "oslc.orderBy": "+changedate,+wonum",
            "oslc.pageSize": str(page_size or self.page_size),
        }
        if terms:
            params["oslc.where"] = " and ".join(terms)
        if count:
            params["collectioncount"] = "1"
        return params

    def _feed_query(self, scope: str, position: WorkOrderCursor, walked: str | None) -> dict[str, str]:
        """The query from the cursor; past the cursor's second once this run has walked all of it."""
        since = position.changedate
        if since is not None and walked is not None and same_instant(since, walked):
            since = next_second(since)
        return self.query_params(scope, since=since)

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        """One Item per file doclink of each work order changed since ``cursor``, oldest change first.

        The last change of each work order carries the cursor that includes it (``cursor_after``), and
        a Checkpoint follows every page, even an empty one (its cursor is the position after that page,
        which only ever holds work orders fully yielded), so the pipeline can stop at its deadline
        inside the loop. After a page that moved the cursor the query starts again from the cursor
        (see the module docstring). When a whole page holds only work orders already taken at the
        cursor's changedate, that one second is walked alone by ``nextPage`` (walked again if it
        shrank meanwhile, since a record could then slide onto a page already read), and the feed
        goes on from the next second: linear in the size of the block. A page Maximo links to twice
        without the cursor moving in between is a loop (``PagingLoopError``), not read again.
        """
        position = WorkOrderCursor.from_json(cursor)
        built = self.state.ensure_item_groups(self.name, scope, work_order_of)
        if built:
            log.info("maximo_doclink_index_built", scope=scope, doclinks=built)
        # A work order whose changedate is null matches no ``changedate>=`` query, and sorts first or
        # last depending on the database: a run from no cursor (the first, or a full one) ends by
        # asking for exactly those, so their doclinks are ingested too.
        from_start = position.changedate is None
        undated_keys: set[str] = set()  # the undated work orders this run listed already
        walked: str | None = None  # a changedate whose whole second this run has read
        block: ChangedateBlock | None = None  # the one-second walk in progress
        url: str = self.collection_url
        params: dict[str, str] | None = self._feed_query(scope, position, walked)
        feed_pages = PageLinks("maximo", f"the work orders of scope {scope}")
        block_pages = feed_pages
        page = 0
        while True:
            page += 1
            # A repeat of the same query is progress when the cursor moved (a page at one second). The
            # cursor only grows (a later changedate, or one more work order taken at the same one), so
            # its changedate and count identify it without serialising a large ``taken`` per page.
            progress = (position.changedate, len(position.taken))
            (block_pages if block is not None else feed_pages).visit(url, params, state=progress)
            body = self._get_json(url, params=params, what=f"work orders of scope {scope} (page {page})")
            members = body.get("member")
            if not isinstance(members, list):
                if "rdfs:member" in body:
                    raise ConfigError("Maximo answered namespaced OSLC JSON although lean=1 was asked")
                raise TransientError(f"Maximo's page {page} of work orders for {scope} has no member list")
            outcomes = set()
            listed: list[_Listed] = []
            for member in members:
                if not isinstance(member, dict):
                    outcomes.add(_FAILED)
                    continue
                entry, outcome = self._work_order_changes(scope, member, position)
                outcomes.add(outcome)
                if entry is not None:
                    listed.append(entry)
                    if outcome == _UNDATED:
                        undated_keys.add(entry.key)
            yield from self._with_removals(scope, listed)
            progressed = _TAKEN in outcomes
            log.debug("maximo_page_read", scope=scope, page=page, work_orders=len(members), new=progressed,
                      block=block.changedate if block else None)
            yield Checkpoint(position.to_json())
            info = json_object(body.get("responseInfo"))
            next_href = json_object(info.get("nextPage")).get("href")
            if block is not None:
                block.observe(info.get("totalCount"))
                if next_href:
                    url, params = urljoin(self.root_url + "/", str(next_href)), None
                elif block.shrank():
                    # Walked again on purpose: its pages may be read a second time.
                    url, params = self.collection_url, block.params
                    block_pages = PageLinks("maximo", f"the work orders of scope {scope} at {block.changedate}")
                else:
                    walked, block = block.changedate, None
                    url, params = self.collection_url, self._feed_query(scope, position, walked)
                continue
            if not next_href:
                if from_start:
                    yield from self._undated_changes(scope, position, skip=undated_keys)
                return
            if progressed:
                url, params = self.collection_url, self._feed_query(scope, position, walked)
            elif outcomes == {_SEEN} and position.changedate is not None:
                start = position.changedate
                block = ChangedateBlock(start, self.query_params(scope, since=start, before=next_second(start),
                                                                 count=True))
                log.info("maximo_changedate_block", scope=scope, changedate=start, taken=len(position.taken))
                url, params = self.collection_url, block.params
                block_pages = PageLinks("maximo", f"the work orders of scope {scope} at {start}")
            else:
                url, params = urljoin(self.root_url + "/", str(next_href)), None

    def _work_order_changes(self, scope: str, member: dict[str, Any], position: WorkOrderCursor,
                            *, undated: bool = False) -> tuple[_Listed | None, str]:
        """The changes of one work order, and the outcome: ``_TAKEN``, ``_SEEN``, ``_FAILED`` or ``_UNDATED``.

        A work order taken already (the boundary overlap) gives no change (``_SEEN``); one without a
        wonum or site, or with an unreadable changedate, gives an ItemFailure and leaves ``position``
        where it was (``_FAILED``); one without a changedate (null, or hidden from this user) is listed
        without moving ``position``, its items carrying no cursor (``_UNDATED``); otherwise ``position``
        takes it (``_TAKEN``). ``undated``: called by the undated walk, which leaves a work order that
        has a changedate to the feed (``_SEEN``). Built as a list so that ``position`` moves only once the
        whole work order is listed; the bytes are still read lazily, through each Item's ``open``.
        """
        wonum, siteid = member.get("wonum"), member.get("siteid") or (scope if scope != ALL_SITES else None)
        changedate = member.get("changedate")
        href = str(member.get("href") or "")
        if not wonum or not siteid:
            missing = [n for n, ok in (("wonum", wonum), ("siteid", siteid)) if not ok]
            return _Listed(f"{siteid or scope}/{wonum or href or '?'}", [ItemFailure(
                f"{siteid or scope}/{wonum or href or '?'}",
                f"Maximo's work order lacks {', '.join(missing)} (href {href or 'none'})",
                metadata={"href": href})]), _FAILED
        key = f"{siteid}/{wonum}"
        dated = isinstance(changedate, str) and bool(changedate)
        if undated and dated:
            return None, _SEEN
        if dated:
            try:
                parse_date(str(changedate), what=f"changedate of work order {key}")
            except ItemError as exc:
                return _Listed(key, [ItemFailure(key, str(exc), metadata={"href": href})]), _FAILED
            if position.is_taken(key, str(changedate)):
                return None, _SEEN
        entry = _Listed(key, [])
        try:
            links = self._doclinks(member, key)
            entry.doclinks = []
        except ItemError as exc:
            links = []
            entry.changes.append(ItemFailure(key, str(exc), version=str(changedate or ""), metadata={"href": href}))
        for link in links:
            change = self._doclink_change(member, key, link)
            if change is not None:
                entry.changes.append(change)
                if entry.doclinks is not None:
                    entry.doclinks.append(change.source_id)
        if not dated:
            return entry, _UNDATED
        position.take(key, str(changedate))
        entry.cursor = position.to_json()
        return entry, _TAKEN

    def _with_removals(self, scope: str, listed: list[_Listed]) -> Iterator[Item | ItemFailure]:
        """The changes of a page's work orders, each followed by a deletion Item per doclink that was
        listed for it before, is no longer attached and is still recorded as ingested.

        Two round trips per page (three when a doclink is gone): the doclinks each work order had
        (the scope's ``group`` index), then, for the missing ones, whether they are still recorded;
        the index is updated, and the dead letters of work orders whose doclinks were read resolved,
        before any change is yielded, so an item is never ingested without being in the index (the
        dead letters of detached doclinks go too). A
        removed doclink stays in the index until its record is gone: if the run stops before the
        deletion is done, the next listing reports it again; once done, never again.
        """
        read = [entry for entry in listed if entry.doclinks is not None]
        previous = self.state.get_item_groups(self.name, scope, [entry.key for entry in read])
        gone = {entry.key: [sid for sid in previous.get(entry.key, []) if sid not in set(entry.doclinks or [])]
                for entry in read}
        candidates = [sid for ids in gone.values() for sid in ids]
        recorded = self.state.get_items(self.name, scope, candidates) if candidates else {}
        updates: dict[str, list[str]] = {}
        for entry in read:
            removed = [sid for sid in gone[entry.key] if recorded.get(sid) is not None]
            for sid in removed:
                log.info("maximo_doclink_removed", source_id=sid)
                entry.changes.append(Item(source_id=sid, version=REMOVED, deleted=True,
                                          metadata={"work_order": entry.key}))
            now = sorted(set(entry.doclinks or []) | set(removed))
            if now != sorted(previous.get(entry.key, [])):
                updates[entry.key] = now
        # A work order whose doclinks were read is no longer failing (an earlier run may have
        # dead-lettered it, under its SITE/WONUM, for a missing changedate or unreadable doclinks),
        # and a doclink no longer attached has nothing left to retry.
        self.state.set_item_groups(self.name, scope, updates, resolved=[entry.key for entry in read] + candidates)
        for entry in listed:
            if entry.changes:
                entry.changes[-1].cursor_after = entry.cursor
            yield from entry.changes

    def _undated_changes(self, scope: str, position: WorkOrderCursor,
                         skip: set[str]) -> Iterator[Item | ItemFailure | Checkpoint]:
        """The doclinks of the work orders whose changedate is null (``changedate!="*"``), which no
        ``changedate>=`` query finds; those in ``skip`` were listed by this run already.

        Walked by ``nextPage`` (one request when there are none); their items carry no cursor (the
        cursor cannot pass them). One saved meanwhile gains a changedate and leaves this set, and the
        feed's next run takes it.
        """
        url: str = self.collection_url
        params: dict[str, str] | None = self.query_params(scope, undated=True)
        pages = PageLinks("maximo", f"the undated work orders of scope {scope}")
        page = 0
        while True:
            page += 1
            pages.visit(url, params)
            body = self._get_json(url, params=params, what=f"undated work orders of scope {scope} (page {page})")
            members = body.get("member")
            if not isinstance(members, list):
                raise TransientError(f"Maximo's page {page} of undated work orders for {scope} has no member list")
            listed = []
            for member in members:
                if isinstance(member, dict):
                    entry, _ = self._work_order_changes(scope, member, position, undated=True)
                    if entry is not None and entry.key not in skip:
                        listed.append(entry)
            yield from self._with_removals(scope, listed)
            yield Checkpoint(position.to_json())
            next_href = json_object(json_object(body.get("responseInfo")).get("nextPage")).get("href")
            if not next_href:
                return
            url, params = urljoin(self.root_url + "/", str(next_href)), None

    def _doclinks(self, member: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        """The work order's doclink members: inline, or fetched from the doclinks href."""
        doclinks = member.get("doclinks")
        if doclinks is None:
            return []
        if isinstance(doclinks, dict) and isinstance(doclinks.get("member"), list):
            doclinks = doclinks["member"]
        elif isinstance(doclinks, dict) and doclinks.get("href"):
            url = urljoin(self.root_url + "/", str(doclinks["href"]))
            body = self._get_json(url, params={"lean": "1"}, what=f"the doclinks of work order {key}", item=True)
            doclinks = body.get("member")
        if not isinstance(doclinks, list):
            raise ItemError(f"Maximo's doclinks of work order {key} are not a list")
        return [link for link in doclinks if isinstance(link, dict)]

    def _doclink_change(self, wo: Mapping[str, Any], key: str, link: Mapping[str, Any]) -> Item | ItemFailure | None:
        """One doclink as an Item (None for a URL doclink, which has no file to read).

        ``source_id`` is ``SITE/WONUM/<doclink id>`` and ``version`` the doclink's ``modified``: the
        source_id must stay the same across versions (DESIGN.md) so that a replaced file is a new
        version of the same item (skipped early when unchanged, sent with ``previous_sha256`` so the
        Hub supersedes the old one when changed). With ``modified`` inside the source_id every
        replacement would be an unrelated new item and the Hub would keep the stale copy as current.
        """
        described = json_object(link.get("describedBy"))
        href = str(link.get("href") or "")
        ident = str(described.get("identifier") or href.rstrip("/").rsplit("/", 1)[-1] or "")
        source_id = f"{key}/{ident or '?'}"
        if str(described.get("urlType") or "FILE").upper() not in ("FILE", ""):
            log.info("maximo_doclink_not_a_file", source_id=source_id, url_type=described.get("urlType"))
            return None
        version = str(described.get("modified") or described.get("created") or "")
        if not href or not ident or not version:
            missing = [n for n, v in (("href", href), ("identifier", ident), ("modified", version)) if not v]
            return ItemFailure(source_id, f"Maximo's doclink lacks {', '.join(missing)}", version=version,
                               metadata={"wonum": wo.get("wonum"), "siteid": wo.get("siteid")})
        fmt = json_object(described.get("format"))
        size = described.get("attachmentSize")
        url = urljoin(self.root_url + "/", href)
        description = plain_text(wo.get("description"))
        long_description = plain_text(wo.get("description_longdescription"))
        filename = str(described.get("fileName") or described.get("description") or f"doclink-{ident}")
        worktype = wo.get("worktype")
        return Item(
            source_id=source_id,
            version=version,
            filename=filename,
            open=self._opener(url, source_id),
            mime_type=str(fmt.get("label") or "application/octet-stream"),
            size=size if isinstance(size, int) and size >= 0 else None,
            title=str(described.get("description") or described.get("title") or filename),
            text=merged_text([description, long_description]),
            author=str(described.get("createby") or ""),
            created_at=described.get("created"),
            modified_at=described.get("modified"),
            source_url=url,
            metadata={
                "wonum": wo.get("wonum"), "siteid": wo.get("siteid"), "description": description,
                "long_description": long_description, "worktype": worktype, "status": wo.get("status"),
                "location": wo.get("location"), "assetnum": wo.get("assetnum"),
                "reportdate": wo.get("reportdate"), "changedate": wo.get("changedate"), "href": wo.get("href"),
                "doclink_id": ident, "doclink_title": described.get("title"), "doctype": described.get("docType"),
                "object_structure": self.object_structure,
            },
            # worktype drives the department (config/departments.toml); all three feed content rules.
            hints={name: str(value) for name, value in (("worktype", worktype), ("status", wo.get("status")),
                                                        ("site", wo.get("siteid"))) if value},
        )

    def _opener(self, url: str, source_id: str) -> Any:
        def open_() -> Iterator[bytes]:
            response = self._get(url, what=f"the file of doclink {source_id}", item=True, stream=True)
            yield from iter_response(response, DOWNLOAD_CHUNK)
        return open_

    # -- health ---------------------------------------------------------------------------------

    def health_check(self, credentials: Mapping[str, Any] | None = None) -> HealthResult:
        """Logs in (session styles) and asks for one work order; never raises for classified failures."""
        try:
            creds = credentials if credentials is not None else self.default_credentials()
            with self.connect(creds):
                scope = self.scopes()[0]
                body = self._get_json(self.collection_url,
                                      params=self.query_params(scope, page_size=1, select="wonum,changedate"),
                                      what="one work order (health check)")
                found = len(body.get("member") or [])
                return HealthResult(True, HealthState.HEALTHY, f"{self._style} authentication accepted; "
                                                     f"{self.object_structure} answered with {found} work order(s) "
                                                     f"for scope {scope}")
        except (ConfigError, TransientError) as exc:
            return HealthResult.from_error(exc)

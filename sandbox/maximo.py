"""A local simulator of the IBM Maximo OSLC JSON API (work orders and their doclinks).

It follows reference/api-contracts.md part B so that the Maximo connector can be tested, benchmarked
and demonstrated over real sockets (serve it with ``sandbox.servers.ServerThread``, or run
``python -m sandbox.maximo`` for the demo):

- ``/maximo/api/os/{os}`` and ``/maximo/oslc/os/{os}`` (``mxapiwodetail`` and ``mxwo``): ``lean=1``
  collections (``member[]``, ``href``, ``responseInfo`` with ``nextPage`` only when there is one,
  ``pagenum``; ``totalCount``/``totalPages`` with ``collectioncount=1``; ``count=1``), paging by
  ``pageno`` and ``oslc.pageSize``, ``oslc.where`` / ``oslc.orderBy`` / ``oslc.select`` parsed by
  ``sandbox.maximo_query`` (not ignored), null attributes dropped unless ``_dropnulls=0``. Without
  ``lean=1`` the answer is the namespaced OSLC JSON, which a lean client cannot read.
- ``.../{restid}``, ``.../{restid}/doclinks``, ``.../doclinks/{id}`` (the binary, with a ``Link``
  header to its metadata) and ``.../doclinks/meta/{id}``.
- Authentication: ``apikey`` header or query parameter (a bad key: 401 BMXAA9549E), or
  ``POST /maximo/oslc/login`` with ``maxauth`` or ``Authorization: Basic`` setting ``JSESSIONID``
  (bad credentials: 401 BMXAA7901E); a missing, unknown or expired session: 401 BMXAA0021E. Like
  Maximo, an API-key request also receives a credential-less ``JSESSIONID``; sending it back with the
  key is answered 401 BMXAA0021E (Maximo then prefers the empty session).
- Errors in the lean ``Error`` body: ``reasonCode``, ``message``, ``statusCode`` as a string.
- Faults on demand: a status (500 by default) for the next N requests, slow answers, malformed JSON,
  expired sessions; every request counted and logged.

The test API (``add_work_order``, ``update_work_order``, ``add_doclink``, ``replace_doclink``,
``break_doclink``, ``populate``) changes data at run time; each change advances a simulated clock
and stamps ``changedate`` (or uses the one given, so several work orders can share a changedate).
Binaries are generated from a seed and a size, so a benchmark holds thousands without storing them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from sandbox import maximo_query as mq

#: India Standard Time: the zone Kochi Metro's Maximo stamps dates in.
IST = timezone(timedelta(hours=5, minutes=30), "IST")
#: The simulated clock starts here; each change moves it on by ``CLOCK_STEP``.
CLOCK_START = datetime(2024, 4, 1, 9, 0, 0, tzinfo=IST)
#: How far the simulated clock moves per change.
CLOCK_STEP = timedelta(seconds=60)
#: The simulator's ``mxe.oslc.maxpagesize``: a larger ``oslc.pageSize`` is refused.
MAX_PAGE_SIZE = 1000  # records
#: Chunk size of generated binaries.
BINARY_CHUNK = 256 * 1024  # bytes
#: Object structures served (Maximo treats their names case-insensitively).
OBJECT_STRUCTURES = ("mxapiwodetail", "mxwo")
#: The API key and users the simulator accepts unless told otherwise (test values, not secrets).
DEFAULT_API_KEYS = ("sim-maximo-apikey",)
DEFAULT_USERS = {"maxadmin": "sim-maxadmin-password"}

# Reason codes from reference/api-contracts.md part B and public Maximo clients. Where no source
# gives the code (a 500, an unsupported method, a page size over the limit) the simulator uses
# SIM_ERROR: clients must classify by HTTP status and know only the credential codes.
SIM_ERROR = "BMXAA0000E"
LOGIN_FAILED = "BMXAA7901E"
BAD_API_KEY = "BMXAA9549E"
NO_SESSION = "BMXAA0021E"
NOT_FOUND = "BMXAA8727E"

#: Work-order attributes and how ``oslc.where`` compares them.
WO_ATTRIBUTES = {
    "wonum": mq.TEXT, "siteid": mq.TEXT, "description": mq.TEXT, "description_longdescription": mq.TEXT,
    "worktype": mq.TEXT, "status": mq.TEXT, "location": mq.TEXT, "assetnum": mq.TEXT,
    "reportdate": mq.DATETIME, "changedate": mq.DATETIME, "workorderid": mq.NUMBER, "orgid": mq.TEXT,
}
_STATUS_DESCRIPTIONS = {
    "WAPPR": "Waiting on Approval", "APPR": "Approved", "INPRG": "In Progress", "COMP": "Completed",
    "CLOSE": "Closed", "CAN": "Canceled", "WMATL": "Waiting on Material",
}
# Magic numbers at the head of generated binaries, so MIME sniffing sees a plausible file.
_MAGIC = {
    "application/pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "application/zip": b"PK\x03\x04",
}


def isodate(value: datetime | None) -> str | None:
    """A date as Maximo writes it: ISO 8601 to the second with the offset."""
    return value.isoformat(timespec="seconds") if value is not None else None


def rest_id(siteid: str, wonum: str) -> str:
    """Maximo's resource id of a work order: ``_`` + base64 of ``SITEID/WONUM`` (unpadded)."""
    return "_" + base64.urlsafe_b64encode(f"{siteid}/{wonum}".encode()).decode().rstrip("=")


def _decode_rest_id(value: str) -> tuple[str, str] | None:
    if not value.startswith("_"):
        return None
    raw = value[1:] + "=" * (-len(value[1:]) % 4)
    try:
        siteid, _, wonum = base64.urlsafe_b64decode(raw).decode().partition("/")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return siteid, wonum


@dataclass
class Doclink:
    """One attachment of a work order; its bytes are ``content`` or generated from ``seed`` and ``size``."""

    id: int
    filename: str
    title: str
    description: str
    mime_type: str
    size: int
    seed: int
    created: datetime
    modified: datetime
    createby: str = "MAXADMIN"
    doctype: str = "Attachments"
    docinfoid: int = 0
    content: bytes | None = None
    #: Listed but its file is gone: the binary GET answers 404.
    binary_missing: bool = False
    #: Dotted names of fields left out of the JSON (``href``, ``describedBy.fileName``...).
    omit: set[str] = field(default_factory=set)

    def chunks(self) -> Iterator[bytes]:
        """The binary in chunks: ``content``, or ``size`` bytes from ``seed`` after a MIME magic number."""
        if self.content is not None:
            yield self.content
            return
        rng = random.Random(self.seed)
        head = _MAGIC.get(self.mime_type, b"")[: self.size]
        if head:
            yield head
        left = self.size - len(head)
        while left > 0:
            n = min(BINARY_CHUNK, left)
            yield rng.randbytes(n)
            left -= n

    def sha256(self) -> str:
        """SHA-256 of the binary (what the Hub should receive)."""
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()


@dataclass
class WorkOrder:
    """One work order as the simulator stores it."""

    wonum: str
    siteid: str
    workorderid: int
    description: str | None
    long_description: str | None
    worktype: str | None
    status: str
    location: str | None
    assetnum: str | None
    reportdate: datetime
    #: None for a row written around Maximo's business objects (an integration's SQL load), which
    #: leave it null: lean JSON then drops it, and no ``changedate>=`` query matches the work order.
    changedate: datetime | None
    orgid: str = "KMRL"
    rowstamp: int = 0
    doclinks: dict[int, Doclink] = field(default_factory=dict)
    #: Attribute names left out of the JSON (to test a client against missing fields).
    omit: set[str] = field(default_factory=set)

    @property
    def rest_id(self) -> str:
        """The resource id used in hrefs."""
        return rest_id(self.siteid, self.wonum)

    def record(self) -> dict[str, Any]:
        """Attribute -> value, as ``oslc.where`` and ``oslc.orderBy`` see them."""
        return {
            "wonum": self.wonum, "siteid": self.siteid, "description": self.description,
            "description_longdescription": self.long_description, "worktype": self.worktype,
            "status": self.status, "location": self.location, "assetnum": self.assetnum,
            "reportdate": self.reportdate, "changedate": self.changedate,
            "workorderid": float(self.workorderid), "orgid": self.orgid,
        }


@dataclass
class Fault:
    """An injected misbehaviour for the next ``remaining`` requests whose path contains ``match``."""

    kind: str  # "status", "slow", "malformed"
    remaining: int
    match: str = ""
    status: int = 500
    seconds: float = 0.0
    retry_after: str | None = None
    body: str = "truncated"


@dataclass
class RequestRecord:
    """One request the simulator answered."""

    method: str
    path: str
    query: str
    status: int
    auth: str  # "apikey", "session", "login", "none"


class _Reply(Exception):
    """Raised inside a handler to answer at once (errors)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


@dataclass
class _Request:
    environ: dict[str, Any]
    method: str
    path: str
    query_string: str
    params: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    lean: bool
    auth: str = "none"
    set_cookie: str | None = None


class MaximoSimulator:
    """The Maximo OSLC API as a WSGI app, with a test API to change its data and inject faults.

    api_keys: keys accepted in the ``apikey`` header or query parameter.
    users: user -> password accepted by ``/oslc/login`` (maxauth or Basic) and per-request maxauth.
    doclinks_inline: when ``doclinks{...}`` is selected, answer the doclinks inline as a list
        (True, default) or as ``{"href": ".../doclinks"}`` to be fetched separately (False).
    relative_doclink_hrefs: write doclink hrefs relative to the context root (``oslc/os/...``), as in
        IBM's documented sample, instead of absolute URLs.
    apikey_cookie_quirk: hand API-key clients a credential-less JSESSIONID and refuse it when it
        comes back with the key, as Maximo does (default True).
    clock_step: how far the simulated clock moves per change (default 60 s).
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = DEFAULT_API_KEYS,
        users: dict[str, str] | None = None,
        doclinks_inline: bool = True,
        relative_doclink_hrefs: bool = False,
        apikey_cookie_quirk: bool = True,
        clock_step: timedelta = CLOCK_STEP,
    ) -> None:
        self.api_keys = set(api_keys)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.doclinks_inline = doclinks_inline
        self.relative_doclink_hrefs = relative_doclink_hrefs
        self.apikey_cookie_quirk = apikey_cookie_quirk
        self.clock_step = clock_step
        self.clock = CLOCK_START
        self.work_orders: dict[tuple[str, str], WorkOrder] = {}
        self.sessions: dict[str, str] = {}  # JSESSIONID -> user
        self.anonymous_sessions: set[str] = set()
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.logins = 0
        #: Called with the page number after each collection page is built (tests change data there).
        self.after_page: Callable[[int], None] | None = None
        self._lock = threading.RLock()
        self._next_wonum = 1000
        self._next_workorderid = 1
        self._next_doclink = 1
        self._rowstamp = 100000

    # ------------------------------------------------------------------ test API: data

    def tick(self, step: timedelta | None = None) -> datetime:
        """Moves the simulated clock on by ``step`` (default ``clock_step``) and returns it."""
        with self._lock:
            self.clock += step or self.clock_step
            return self.clock

    def _stamp(self, changedate: datetime | str | None) -> datetime:
        if changedate is None:
            return self.tick()
        value = datetime.fromisoformat(changedate) if isinstance(changedate, str) else changedate
        if value.tzinfo is None:
            value = value.replace(tzinfo=IST)
        self.clock = max(self.clock, value)
        return value.replace(microsecond=0)

    def add_work_order(
        self,
        wonum: str | None = None,
        *,
        siteid: str = "MUTTOM",
        description: str | None = "Inspect point machine at Aluva platform 1",
        long_description: str | None = None,
        worktype: str | None = "PM",
        status: str = "APPR",
        location: str | None = None,
        assetnum: str | None = None,
        reportdate: datetime | None = None,
        changedate: datetime | str | None = None,
        attachments: int = 0,
        attachment_size: int = 2048,
    ) -> WorkOrder:
        """Creates a work order (wonum assigned when None) with ``attachments`` generated doclinks.

        ``changedate`` defaults to the next clock tick; pass the same value to several work orders
        to put them on one changedate.
        """
        with self._lock:
            if wonum is None:
                self._next_wonum += 1
                wonum = str(self._next_wonum)
            if (siteid, wonum) in self.work_orders:
                raise ValueError(f"work order {siteid}/{wonum} exists")
            stamp = self._stamp(changedate)
            wo = WorkOrder(
                wonum=wonum, siteid=siteid, workorderid=self._next_workorderid, description=description,
                long_description=long_description, worktype=worktype, status=status, location=location,
                assetnum=assetnum, reportdate=reportdate or stamp, changedate=stamp,
                rowstamp=self._bump_rowstamp(),
            )
            self._next_workorderid += 1
            self.work_orders[(siteid, wonum)] = wo
            for n in range(attachments):
                self._new_doclink(wo, filename=f"WO{wonum}-{n + 1}.pdf", size=attachment_size,
                                  mime_type="application/pdf", title=f"{wonum}-{n + 1}",
                                  description=f"Attachment {n + 1} of work order {wonum}",
                                  content=None, seed=None, when=stamp)
            return wo

    def get(self, siteid: str, wonum: str) -> WorkOrder:
        """The stored work order; KeyError when absent."""
        with self._lock:
            return self.work_orders[(siteid, wonum)]

    def update_work_order(self, siteid: str, wonum: str, *, changedate: datetime | str | None = None,
                          **fields: Any) -> WorkOrder:
        """Changes attributes (``description``, ``status``...) and stamps a new changedate."""
        with self._lock:
            wo = self.work_orders[(siteid, wonum)]
            for name, value in fields.items():
                if not hasattr(wo, name) or name in ("wonum", "siteid", "doclinks", "rowstamp"):
                    raise ValueError(f"cannot set {name}")
                setattr(wo, name, value)
            wo.changedate = self._stamp(changedate)
            wo.rowstamp = self._bump_rowstamp()
            return wo

    def add_doclink(
        self,
        siteid: str,
        wonum: str,
        *,
        filename: str | None = None,
        size: int = 4096,
        mime_type: str = "application/pdf",
        title: str | None = None,
        description: str | None = None,
        content: bytes | None = None,
        seed: int | None = None,
        touch: bool = True,
        changedate: datetime | str | None = None,
    ) -> Doclink:
        """Attaches a document; with ``touch`` (default) the work order's changedate moves too.

        ``touch=False`` models an attachment added without saving the work order, which a
        changedate query cannot see until the work order changes again.
        """
        with self._lock:
            wo = self.work_orders[(siteid, wonum)]
            when = self._stamp(changedate)
            link = self._new_doclink(wo, filename=filename, size=len(content) if content is not None else size,
                                     mime_type=mime_type, title=title, description=description,
                                     content=content, seed=seed, when=when)
            if touch:
                wo.changedate = when
                wo.rowstamp = self._bump_rowstamp()
            return link

    def replace_doclink(self, siteid: str, wonum: str, doclink_id: int, *, content: bytes | None = None,
                        size: int | None = None, seed: int | None = None,
                        changedate: datetime | str | None = None) -> Doclink:
        """Replaces an attachment's file in place: new bytes, new ``modified``, work order touched."""
        with self._lock:
            wo = self.work_orders[(siteid, wonum)]
            link = wo.doclinks[doclink_id]
            when = self._stamp(changedate)
            link.content = content
            link.size = len(content) if content is not None else (size or link.size)
            link.seed = seed if seed is not None else link.seed + 7919
            link.modified = when
            wo.changedate = when
            wo.rowstamp = self._bump_rowstamp()
            return link

    def remove_doclink(self, siteid: str, wonum: str, doclink_id: int, *, touch: bool = True,
                       changedate: datetime | str | None = None) -> None:
        """Detaches a document (the doclink leaves the work order's doclinks); with ``touch`` (default)
        the work order is saved, so its changedate moves and a changedate query sees it."""
        with self._lock:
            wo = self.work_orders[(siteid, wonum)]
            del wo.doclinks[doclink_id]
            if touch:
                wo.changedate = self._stamp(changedate)
                wo.rowstamp = self._bump_rowstamp()

    def clear_changedate(self, siteid: str, wonum: str) -> WorkOrder:
        """Leaves the work order's changedate null, as a row loaded around the business objects has."""
        with self._lock:
            wo = self.work_orders[(siteid, wonum)]
            wo.changedate = None
            wo.rowstamp = self._bump_rowstamp()
            return wo

    def break_doclink(self, siteid: str, wonum: str, doclink_id: int) -> None:
        """Leaves the doclink listed but makes its binary answer 404."""
        with self._lock:
            self.work_orders[(siteid, wonum)].doclinks[doclink_id].binary_missing = True

    def populate(self, count: int, *, sites: Iterable[str] = ("MUTTOM",), attachments: int = 3,
                 attachment_size: int = 2048, worktypes: Iterable[str] = ("PM", "CM", "EM", "SAF")
                 ) -> list[WorkOrder]:
        """Adds ``count`` work orders spread over ``sites`` and ``worktypes``, each with ``attachments``."""
        site_list, type_list = list(sites), list(worktypes)
        made = []
        for n in range(count):
            made.append(self.add_work_order(
                siteid=site_list[n % len(site_list)], worktype=type_list[n % len(type_list)],
                description=f"Work order {n}: inspect traction transformer at depot bay {n % 17}",
                long_description="Check oil level, bushings and earthing; record readings in the log sheet.",
                attachments=attachments, attachment_size=attachment_size,
            ))
        return made

    def _new_doclink(self, wo: WorkOrder, *, filename: str | None, size: int, mime_type: str,
                     title: str | None, description: str | None, content: bytes | None,
                     seed: int | None, when: datetime) -> Doclink:
        ident = self._next_doclink
        self._next_doclink += 1
        name = filename or f"attachment-{ident}.pdf"
        link = Doclink(
            id=ident, filename=name, title=title or str(1000 + ident), description=description or name,
            mime_type=mime_type, size=size, seed=seed if seed is not None else ident * 104729,
            created=when, modified=when, docinfoid=ident + 50, content=content,
        )
        wo.doclinks[ident] = link
        return link

    def _bump_rowstamp(self) -> int:
        self._rowstamp += 1
        return self._rowstamp

    # ------------------------------------------------------------------ test API: faults and counts

    def fail_next(self, count: int = 1, *, status: int = 500, match: str = "",
                  retry_after: str | None = None) -> None:
        """Answers the next ``count`` requests whose path contains ``match`` with ``status``."""
        with self._lock:
            self.faults.append(Fault("status", count, match, status=status, retry_after=retry_after))

    def slow_next(self, count: int = 1, *, seconds: float = 1.0, match: str = "") -> None:
        """Delays the next ``count`` matching answers by ``seconds`` before any byte is sent."""
        with self._lock:
            self.faults.append(Fault("slow", count, match, seconds=seconds))

    def malform_next(self, count: int = 1, *, match: str = "", body: str = "truncated") -> None:
        """Answers the next ``count`` matching JSON requests with a broken body.

        body: ``truncated`` (valid JSON cut in half), ``html`` (a proxy's error page with 200) or
        ``empty``.
        """
        with self._lock:
            self.faults.append(Fault("malformed", count, match, body=body))

    def expire_sessions(self) -> None:
        """Ends every login session: cookie requests get 401 BMXAA0021E until the client logs in again."""
        with self._lock:
            self.sessions.clear()

    def count(self, *, contains: str = "", method: str | None = None) -> int:
        """Requests answered whose path contains ``contains`` (and with ``method``)."""
        with self._lock:
            return sum(1 for r in self.requests
                       if contains in r.path and (method is None or r.method == method))

    def reset_counts(self) -> None:
        """Forgets the request log (data, sessions and faults stay)."""
        with self._lock:
            self.requests.clear()
            self.logins = 0

    def _take_fault(self, kind: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.kind == kind and fault.remaining > 0 and fault.match in path:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        req = self._parse_request(environ)
        status, headers, body = self._dispatch(req)
        if req.set_cookie:
            headers.append(("Set-Cookie", f"JSESSIONID={req.set_cookie}; Path=/maximo; HttpOnly"))
        with self._lock:
            self.requests.append(RequestRecord(req.method, req.path, req.query_string, status, req.auth))
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
        start_response(f"{status} {reason}", headers)
        return body

    def _parse_request(self, environ: dict[str, Any]) -> _Request:
        query = environ.get("QUERY_STRING", "")
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        cookies: dict[str, str] = {}
        if "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            jar.load(headers["cookie"])
            cookies = {k: m.value for k, m in jar.items()}
        params = dict(parse_qsl(query, keep_blank_values=True))
        return _Request(environ=environ, method=environ.get("REQUEST_METHOD", "GET"),
                        path=environ.get("PATH_INFO", ""), query_string=query, params=params,
                        headers=headers, cookies=cookies, lean=params.get("lean") == "1")

    def _dispatch(self, req: _Request) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        slow = self._take_fault("slow", req.path)
        if slow is not None:
            time.sleep(slow.seconds)
        try:
            failure = self._take_fault("status", req.path)
            if failure is not None:
                extra = [("Retry-After", failure.retry_after)] if failure.retry_after else []
                raise _Reply(failure.status, self._error_body(req, failure.status, SIM_ERROR,
                             "BMXAA0000E - An unknown error has occurred. (injected fault)"), extra)
            parts = [p for p in req.path.split("/") if p]
            if len(parts) >= 2 and parts[0] == "maximo" and parts[1] in ("oslc", "api"):
                return self._route(req, parts[1], parts[2:])
            raise _Reply(404, self._error_body(req, 404, NOT_FOUND, f"{req.path} was not found."))
        except _Reply as reply:
            return reply.status, [("Content-Type", "application/json"), *reply.headers], [reply.body]

    def _route(self, req: _Request, root: str, rest: list[str]) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        if rest == ["login"] and req.method == "POST" and root == "oslc":
            return self._login(req)
        if req.method != "GET":
            raise _Reply(405, self._error_body(req, 405, SIM_ERROR, f"{req.method} is not supported here."))
        if len(rest) < 2 or rest[0] != "os":
            raise _Reply(404, self._error_body(req, 404, NOT_FOUND, f"{req.path} was not found."))
        self._authenticate(req)
        os_name = rest[1].lower()
        if os_name not in OBJECT_STRUCTURES:
            # The contracts file does not give the code for an unknown object structure; the
            # simulator answers with the generic not-found code.
            raise _Reply(404, self._error_body(req, 404, NOT_FOUND,
                                               f"BMXAA8727E - The object structure {rest[1]} was not found."))
        base = self._public_base(req, root) + f"/os/{os_name}"
        if len(rest) == 2:
            return self._json(req, self._collection(req, base))
        wo = self._find(req, rest[2])
        wo_href = f"{base}/{wo.rest_id}"
        tail = rest[3:]
        if not tail:
            try:
                selection = mq.parse_select(req.params.get("oslc.select", "*"))
            except mq.QueryError as exc:
                raise _Reply(400, self._error_body(req, 400, exc.reason_code, f"{exc.reason_code} - {exc}")) from exc
            with self._lock:
                return self._json(req, self._member(req, wo, wo_href, selection))
        if tail == ["doclinks"]:
            return self._json(req, self._doclinks_collection(req, wo, wo_href))
        if len(tail) == 3 and tail[:2] == ["doclinks", "meta"]:
            link = self._find_doclink(req, wo, tail[2])
            return self._json(req, self._doclink_meta(req, wo, link, wo_href))
        if len(tail) == 2 and tail[0] == "doclinks":
            return self._binary(req, wo, self._find_doclink(req, wo, tail[1]), wo_href)
        raise _Reply(404, self._error_body(req, 404, NOT_FOUND, f"{req.path} was not found."))

    # ------------------------------------------------------------------ authentication

    def _login(self, req: _Request) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        user = self._user_from_headers(req)
        if user is None:
            req.auth = "login"
            raise _Reply(401, self._error_body(req, 401, LOGIN_FAILED,
                                               "BMXAA7901E - You cannot log in at this time. Contact the "
                                               "system administrator."))
        session = secrets.token_hex(16)
        with self._lock:
            self.sessions[session] = user
            self.logins += 1
        req.auth = "login"
        req.set_cookie = session
        return 200, [("Content-Type", "application/json")], [json.dumps({"user": user}).encode()]

    def _user_from_headers(self, req: _Request) -> str | None:
        raw = req.headers.get("maxauth")
        if raw is None:
            auth = req.headers.get("authorization", "")
            if not auth.lower().startswith("basic "):
                return None
            raw = auth[6:]
        try:
            user, _, password = base64.b64decode(raw.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if user and self.users.get(user) == password:
            return user
        return None

    def _authenticate(self, req: _Request) -> None:
        key = req.headers.get("apikey") or req.params.get("apikey")
        session = req.cookies.get("JSESSIONID")
        if key is not None:
            req.auth = "apikey"
            if key not in self.api_keys:
                raise _Reply(401, self._error_body(req, 401, BAD_API_KEY,
                                                   "BMXAA9549E - The API key token is invalid. Either the token "
                                                   "may have expired or the token has been revoked."))
            with self._lock:
                known_anonymous = session in self.anonymous_sessions
                if session is None and self.apikey_cookie_quirk:
                    fresh = secrets.token_hex(16)
                    self.anonymous_sessions.add(fresh)
                    req.set_cookie = fresh
            if known_anonymous and self.apikey_cookie_quirk:
                raise _Reply(401, self._error_body(req, 401, NO_SESSION,
                                                   "BMXAA0021E - User name and password combination are not valid. "
                                                   "Try again."))
            return
        if session is not None:
            req.auth = "session"
            with self._lock:
                valid = session in self.sessions
            if valid:
                return
            raise _Reply(401, self._error_body(req, 401, NO_SESSION,
                                               "BMXAA0021E - User name and password combination are not valid. "
                                               "Try again."))
        if "maxauth" in req.headers:
            req.auth = "login"
            if self._user_from_headers(req) is None:
                raise _Reply(401, self._error_body(req, 401, LOGIN_FAILED,
                                                   "BMXAA7901E - You cannot log in at this time. Contact the "
                                                   "system administrator."))
            return
        raise _Reply(401, self._error_body(req, 401, NO_SESSION,
                                           "BMXAA0021E - User name and password combination are not valid. "
                                           "Try again."))

    # ------------------------------------------------------------------ resources

    def _public_base(self, req: _Request, root: str) -> str:
        public = req.headers.get("x-public-uri")
        if public:
            return public.rstrip("/")
        scheme = req.environ.get("wsgi.url_scheme", "http")
        host = req.headers.get("host") or f"{req.environ.get('SERVER_NAME')}:{req.environ.get('SERVER_PORT')}"
        return f"{scheme}://{host}/maximo/{root}"

    def _collection(self, req: _Request, base: str) -> dict[str, Any]:
        try:
            conditions = mq.parse_where(req.params["oslc.where"], WO_ATTRIBUTES) if "oslc.where" in req.params else []
            order = mq.parse_order_by(req.params["oslc.orderBy"], WO_ATTRIBUTES) if "oslc.orderBy" in req.params else []
            selection = mq.parse_select(req.params["oslc.select"]) if "oslc.select" in req.params else None
            page_size = int(req.params["oslc.pageSize"]) if "oslc.pageSize" in req.params else None
            pageno = int(req.params.get("pageno", "1"))
        except mq.QueryError as exc:
            raise _Reply(400, self._error_body(req, 400, exc.reason_code, f"{exc.reason_code} - {exc}")) from exc
        except ValueError as exc:
            raise _Reply(400, self._error_body(req, 400, mq.PARSE_ERROR_CODE,
                                               "BMXAA8744E - oslc.pageSize and pageno must be whole numbers.")) from exc
        if page_size is not None and not 0 < page_size <= MAX_PAGE_SIZE:
            raise _Reply(400, self._error_body(req, 400, SIM_ERROR,
                                               f"BMXAA0000E - The page size {page_size} is outside 1 to "
                                               f"{MAX_PAGE_SIZE} (mxe.oslc.maxpagesize)."))
        if pageno < 1:
            raise _Reply(400, self._error_body(req, 400, mq.PARSE_ERROR_CODE, "BMXAA8744E - pageno starts at 1."))
        with self._lock:
            records = [rec | {"_wo": wo} for wo in self.work_orders.values()
                       if mq.matches(conditions, rec := wo.record())]
            ordered = mq.sort_records(records, order) if order else records
            total = len(ordered)
            if req.params.get("count") == "1":
                return {"totalCount": total}
            size = page_size or max(total, 1)
            start = (pageno - 1) * size
            page = ordered[start:start + size]
            members = [self._member(req, rec["_wo"], f"{base}/{rec['_wo'].rest_id}", selection) for rec in page]
        request_href = f"{base}?{req.query_string}" if req.query_string else base
        info: dict[str, Any] = {"href": request_href, "pagenum": pageno}
        if start + size < total:
            info["nextPage"] = {"href": self._page_href(base, req.params, pageno + 1)}
        if pageno > 1:
            info["previousPage"] = {"href": self._page_href(base, req.params, pageno - 1)}
        if req.params.get("collectioncount") == "1":
            info["totalCount"] = total
            info["totalPages"] = (total + size - 1) // size if total else 0
        if self.after_page is not None:
            self.after_page(pageno)
        return {"member": members, "href": base, "responseInfo": info}

    @staticmethod
    def _page_href(base: str, params: dict[str, str], pageno: int) -> str:
        query = dict(params)
        query["pageno"] = str(pageno)
        return f"{base}?{urlencode(query, quote_via=quote, safe='')}"

    def _member(self, req: _Request, wo: WorkOrder, href: str, selection: mq.Selection | None) -> dict[str, Any]:
        member: dict[str, Any] = {"href": href}
        if selection is None:
            return member  # Maximo answers only hrefs when nothing is selected.
        member["_rowstamp"] = str(wo.rowstamp)
        values: dict[str, Any] = {
            "wonum": wo.wonum, "siteid": wo.siteid, "orgid": wo.orgid, "workorderid": wo.workorderid,
            "description": wo.description, "description_longdescription": wo.long_description,
            "worktype": wo.worktype, "status": wo.status, "location": wo.location, "assetnum": wo.assetnum,
            "reportdate": isodate(wo.reportdate), "changedate": isodate(wo.changedate),
        }
        keep_nulls = req.params.get("_dropnulls") == "0"
        for name, value in values.items():
            if not selection.wants(name) or name in wo.omit:
                continue
            if value is None and not keep_nulls:
                continue
            member[name] = value
            if name == "status" and value in _STATUS_DESCRIPTIONS:
                member["status_description"] = _STATUS_DESCRIPTIONS[value]
        doclinks_href = f"{href}/doclinks"
        if "doclinks" in selection.children and "doclinks" not in wo.omit:
            if self.doclinks_inline:
                member["doclinks"] = [self._doclink_member(wo, link, href) for link in
                                      sorted(wo.doclinks.values(), key=lambda d: d.id)]
            else:
                member["doclinks"] = {"href": doclinks_href}
        elif selection.wants("doclinks") and "doclinks" not in wo.omit:
            member["doclinks"] = {"href": doclinks_href}
        return member

    def _doclink_href(self, wo_href: str, tail: str) -> str:
        href = f"{wo_href}/doclinks/{tail}"
        if self.relative_doclink_hrefs:
            marker = "/maximo/"
            return href.split(marker, 1)[1] if marker in href else href
        return href

    def _doclink_member(self, wo: WorkOrder, link: Doclink, wo_href: str) -> dict[str, Any]:
        described: dict[str, Any] = {
            "identifier": str(link.id), "fileName": link.filename, "title": link.title,
            "description": link.description, "docType": link.doctype, "urlType": "FILE",
            "format": {"href": f"http://purl.org/NET/mediatypes/{link.mime_type}", "label": link.mime_type},
            "attachmentSize": link.size, "created": isodate(link.created), "modified": isodate(link.modified),
            "createby": link.createby, "changeby": link.createby, "ownertable": "WORKORDER",
            "ownerid": wo.workorderid, "docinfoid": link.docinfoid, "upload": False, "show": False,
            "copylinktowo": False, "getlatestversion": True, "printthrulink": True, "addinfo": False,
            "href": self._doclink_href(wo_href, f"meta/{link.id}"),
        }
        member: dict[str, Any] = {
            "href": self._doclink_href(wo_href, str(link.id)),
            "localref": self._doclink_href(wo_href, f"0-{link.id}"),
            "describedBy": described,
        }
        for dotted in link.omit:  # e.g. "href", "describedBy.fileName", "describedBy.modified"
            head, _, tail = dotted.partition(".")
            if tail:
                member[head].pop(tail, None)
            else:
                member.pop(head, None)
        return member

    def _doclinks_collection(self, req: _Request, wo: WorkOrder, wo_href: str) -> dict[str, Any]:
        with self._lock:
            members = [self._doclink_member(wo, link, wo_href)
                       for link in sorted(wo.doclinks.values(), key=lambda d: d.id)]
        return {"href": self._doclink_href(wo_href, "").rstrip("/"), "member": members}

    def _doclink_meta(self, req: _Request, wo: WorkOrder, link: Doclink, wo_href: str) -> dict[str, Any]:
        described: dict[str, Any] = self._doclink_member(wo, link, wo_href)["describedBy"]
        return described

    def _binary(self, req: _Request, wo: WorkOrder, link: Doclink,
                wo_href: str) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        if link.binary_missing:
            raise _Reply(404, self._error_body(req, 404, NOT_FOUND,
                                               f"BMXAA8727E - The OSLC resource DOCLINKS with the ID {link.id} was "
                                               "not found as it does not exist in the system."))
        headers = [
            ("Content-Type", link.mime_type),
            ("Content-Length", str(link.size)),
            ("Link", f'<{self._doclink_href(wo_href, f"meta/{link.id}")}>; rel="describedby"'),
        ]
        return 200, headers, link.chunks()

    def _find(self, req: _Request, ident: str) -> WorkOrder:
        key = _decode_rest_id(ident)
        with self._lock:
            wo = self.work_orders.get(key) if key else None
        if wo is None:
            raise _Reply(404, self._error_body(req, 404, NOT_FOUND,
                                               f"BMXAA8727E - The OSLC resource with the ID {ident} was not found "
                                               "as it does not exist in the system."))
        return wo

    def _find_doclink(self, req: _Request, wo: WorkOrder, ident: str) -> Doclink:
        link = wo.doclinks.get(int(ident)) if ident.isdigit() else None
        if link is None:
            raise _Reply(404, self._error_body(req, 404, NOT_FOUND,
                                               f"BMXAA8727E - The OSLC resource DOCLINKS with the ID {ident} was not "
                                               "found as it does not exist in the system."))
        return link

    # ------------------------------------------------------------------ bodies

    def _json(self, req: _Request, payload: dict[str, Any]) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
        if not req.lean:
            payload = _namespaced(payload)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        broken = self._take_fault("malformed", req.path)
        if broken is not None:
            if broken.body == "html":
                return 200, [("Content-Type", "text/html")], [b"<html><body>Proxy Error</body></html>"]
            body = b"" if broken.body == "empty" else body[: max(1, len(body) // 2)]
        return 200, [("Content-Type", "application/json; charset=utf-8")], [body]

    @staticmethod
    def _error_body(req: _Request, status: int, reason_code: str, message: str) -> bytes:
        if req.lean:
            error: dict[str, Any] = {"Error": {
                "extendedError": {"moreInfo": {"href": f"/maximo/api/error/messages/{reason_code}"}},
                "reasonCode": reason_code, "message": message, "statusCode": str(status),
            }}
        else:
            error = {"oslc:Error": {"oslc:message": message, "spi:reasonCode": reason_code,
                                    "oslc:statusCode": str(status)}}
        return json.dumps(error).encode("utf-8")


def _namespaced(payload: Any) -> Any:
    """The non-lean rendering: ``rdfs:member``, ``oslc:responseInfo`` and ``spi:`` attribute names."""
    if isinstance(payload, list):
        return [_namespaced(v) for v in payload]
    if not isinstance(payload, dict):
        return payload
    renamed: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "member":
            key = "rdfs:member"
        elif key in ("responseInfo", "nextPage", "previousPage"):
            key = f"oslc:{key}"
        elif key in ("href", "about"):
            key = "rdf:about"
        else:
            key = f"spi:{key}"
        renamed[key] = _namespaced(value)
    return renamed


def _demo_data(sim: MaximoSimulator) -> None:
    """A few KMRL-flavoured work orders for the demo."""
    sim.add_work_order(description="Quarterly PM of escalator ES-04 at Edappally station", worktype="PM",
                       location="EDAP-ES04", assetnum="ES-04", attachments=2, siteid="MUTTOM")
    sim.add_work_order(description="Track circuit failure between Kaloor and Town Hall", worktype="CM",
                       long_description="Signal dropped at 07:42; relay replaced; tested OK.",
                       location="KLR-TC12", attachments=1, siteid="MUTTOM")
    sim.add_work_order(description="അലുവ സ്റ്റേഷനിലെ അഗ്നിശമന ഉപകരണങ്ങളുടെ പരിശോധന",
                       long_description="എല്ലാ ഫയർ എക്സ്റ്റിംഗ്വിഷറുകളും പരിശോധിച്ചു.", worktype="SAF",
                       location="ALVA-FIRE", attachments=1, siteid="ALUVA")


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.maximo [--port N]``: serves the simulator with demo data until Ctrl-C; prints
    where it listens and the MAXIMO_* lines to use."""
    from sandbox.announce import announce, wait_for_stop
    from sandbox.servers import ServerThread

    parser = argparse.ArgumentParser(description="Maximo OSLC API simulator")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    sim = MaximoSimulator()
    _demo_data(sim)
    with ServerThread(sim, port=args.port) as server:
        # API key authentication; MAXIMO_AUTH=basic with MAXIMO_USER / MAXIMO_PASSWORD works too
        # (sandbox.maximo.DEFAULT_USERS).
        announce("Maximo OSLC API", f"{server.url}/maximo", {
            "MAXIMO_URL": f"{server.url}/maximo", "MAXIMO_AUTH": "apikey",
            "MAXIMO_API_KEY": next(iter(sim.api_keys)), "MAXIMO_SITE_IDS": "MUTTOM,ALUVA"})
        wait_for_stop()


if __name__ == "__main__":
    main()

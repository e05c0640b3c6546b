"""The one HTTP layer every client of the service uses (Graph, Maximo, WhatsApp, the Hub).

Four rules are declared here once, for every request:

- **Retries** (DESIGN.md "Retries live in one layer each"): a request that fails transiently
  (connection error, timeout, 408/429/5xx) is retried a few times with exponential backoff and full
  jitter; a ``Retry-After`` (seconds or HTTP date) is honoured up to ``RetryPolicy.retry_after_cap``.
  A longer ``Retry-After`` raises ``ThrottledError`` so the caller can end its run as throttled, and
  the pause is recorded through a ``ThrottleGate`` that every worker reads before it calls the same
  service.
- **Credentials go only where they belong**: a request that carries a credential (an
  ``OriginPolicy`` is given for it, or it has a header in ``CREDENTIAL_HEADERS``) is sent only to the
  origins (scheme, host, port) of its policy, never from https to http, and its redirects are followed
  here hop by hop, each hop checked by the same rule (requests would follow them to any host, and
  strips only ``Authorization`` on the way). A refused hop raises ``OriginNotAllowed``; so an answer
  always comes from an allowed origin. A 307/308 re-sends the body by calling the caller's ``body``
  factory again. A pre-authenticated URL (Graph's ``downloadUrl``) is fetched ``anonymous=True``.
- **Bounded memory**: an answer the caller does not stream (a JSON page, any error body) is read
  here up to ``MAX_BODY_BYTES`` (``ResponseTooLarge`` past it); ``json_body`` parses it and turns JSON
  nested too deeply for the parser into a ``ValueError`` like any other unreadable body.
- **Secrets stay out of text**: every error message built here passes its URLs through
  ``utils.logging.redact_urls_in_text`` (no ``user:pass@``, no query values).

``PageLinks`` is the guard every page loop uses: a page link read twice in one run is a loop.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from utils.errors import (
    ConfigError,
    OriginNotAllowed,
    PagingLoopError,
    ResponseTooLarge,
    ThrottledError,
    TransientError,
)
from utils.logging import redact_url, redact_urls_in_text

#: (connect, read) timeouts applied to every request unless the caller passes its own; seconds.
DEFAULT_TIMEOUT = (5.0, 60.0)
#: What we call ourselves (Graph asks for ``NONISV|Company|App/version``).
USER_AGENT = "NONISV|KMRL|kmrl-connectors/1.0"
#: Statuses worth another try.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Largest answer read into memory when the caller does not stream it (a JSON page); bytes.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Most of an error answer kept for its message (the rest is never read); bytes.
ERROR_BODY_BYTES = 64 * 1024
#: Redirect hops followed for one request that carries a credential.
MAX_REDIRECTS = 5
#: Headers whose value is a credential, or must not leave its origin (the Hub's Idempotency-Key is
#: the document's sha256); lower case.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "apikey", "maxauth", "cookie",
                                "idempotency-key"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ_BLOCK = 64 * 1024  # bytes


class JSONTooDeep(ValueError):
    """A JSON body nested more deeply than the parser goes (it would raise RecursionError)."""


@dataclass(frozen=True, order=True)
class Origin:
    """Where a request goes: scheme, host (lower case) and port (the scheme's default when absent)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of ``url``; a URL without a host or with a bad port gives an origin no policy holds."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            return cls(scheme, parts.netloc.lower(), -1)
        return cls(scheme, parts.hostname or "", port or _DEFAULT_PORTS.get(scheme, 0))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == _DEFAULT_PORTS.get(self.scheme) else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


@dataclass(frozen=True)
class OriginPolicy:
    """The origins one credential may be sent to.

    origins: the allowed origins (scheme, host and port each: https and http are different origins).
    setting: the setting(s) that configure them, named when a request is refused (e.g. ``MAXIMO_URL``).
    """

    origins: frozenset[Origin]
    setting: str = ""

    @classmethod
    def of(cls, *urls: str, setting: str = "") -> OriginPolicy:
        """The policy allowing the origin of each URL (base URLs, or ``https://host`` for a bare host)."""
        return cls(frozenset(Origin.of(url) for url in urls if url), setting)

    def allows(self, url: str) -> bool:
        """Whether a request with the credential may go to ``url``."""
        origin = Origin.of(url)
        return origin.scheme in _DEFAULT_PORTS and bool(origin.host) and origin in self.origins

    def describe(self) -> str:
        """The allowed origins and their setting, for a message."""
        allowed = ", ".join(sorted(str(origin) for origin in self.origins)) or "none"
        return allowed + (f" (from {self.setting})" if self.setting else "")


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried.

    attempts: tries in all, including the first (default 4).
    backoff_base: first backoff ceiling in seconds (default 0.5), doubled per try.
    backoff_max: largest backoff ceiling in seconds (default 8).
    retry_after_cap: the longest ``Retry-After`` we sleep through inline, seconds (default 60);
        a longer one raises ``ThrottledError``.
    """

    attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before try ``attempt + 1`` (``attempt`` counts from 1), in seconds."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)


class ThrottleGate(Protocol):
    """A pause shared by every worker that calls one service (kept in Redis by base.state)."""

    def blocked_until(self) -> float:
        """Unix time before which no request may be sent; 0 when not blocked."""

    def block_until(self, until: float) -> None:
        """Records that no request may be sent before ``until`` (keeps the later of two pauses)."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def make_session(
    *, ca_bundle: str | None = None, verify: bool = True, pool_size: int = 10, user_agent: str = USER_AGENT
) -> requests.Session:
    """A ``requests.Session`` with TLS verification on (or ``ca_bundle``) and a named User-Agent.

    urllib3 retries only failed connection attempts here (the request never left); everything
    else is retried by ``HttpClient`` so that one policy governs.
    """
    session = requests.Session()
    session.verify = ca_bundle if (verify and ca_bundle) else verify
    adapter = HTTPAdapter(
        pool_connections=pool_size,
        pool_maxsize=pool_size,
        max_retries=Retry(total=None, connect=2, read=0, status=0, other=0, redirect=5, backoff_factor=0.2),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


class HttpClient:
    """A session plus the retry policy, for one named service.

    service: name used in logs, errors and the throttle key (e.g. ``graph``, ``maximo``, ``hub``).
    timeout: (connect, read) seconds; default ``DEFAULT_TIMEOUT``.
    gate: optional shared throttle; consulted before every try and fed by every 429/503.
    origins: where the credential this client carries may go; every request that is not
        ``anonymous`` is then held to it (a client whose session holds a login cookie needs this).
        Without it, a request carrying a ``CREDENTIAL_HEADERS`` header may still go only to the origin
        of the URL it was sent to (its redirects likewise).
    max_body_bytes: the most of an unstreamed answer read into memory (default ``MAX_BODY_BYTES``).
    sleep: injectable for tests.
    """

    def __init__(
        self,
        service: str,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        policy: RetryPolicy | None = None,
        gate: ThrottleGate | None = None,
        ca_bundle: str | None = None,
        origins: OriginPolicy | None = None,
        max_body_bytes: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.session = session or make_session(ca_bundle=ca_bundle)
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.gate = gate
        self.origins = origins
        self.max_body_bytes = max_body_bytes or MAX_BODY_BYTES
        self._sleep = sleep
        #: Requests sent (every try counts); benchmarks read it.
        self.requests_sent = 0

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Callable[[], Any] | None = None,
        retry: bool = True,
        transient_statuses: frozenset[int] = TRANSIENT_STATUSES,
        headers: Mapping[str, str] | None = None,
        origins: OriginPolicy | None = None,
        anonymous: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Sends one request, retrying transient failures; returns the final non-transient response.

        ``body`` is called before every try (and every redirect hop that keeps the body) to build a fresh
        ``data`` argument (for streamed uploads). ``origins`` overrides the client's policy for this
        request; ``anonymous=True`` marks a pre-authenticated URL (no credential header allowed, no
        origin check, redirects followed by requests). Unless ``stream=True``, the body is read here
        (up to ``max_body_bytes``); with ``stream=True`` a 2xx body is left to the caller and any
        other is read up to ``ERROR_BODY_BYTES``. Raises ``OriginNotAllowed`` (a ``ConfigError``) before
        sending anything where the credential may not go, ``ThrottledError`` when told to wait longer
        than the cap, ``ResponseTooLarge`` for an unstreamed answer over the cap, ``TransientError``
        when the tries run out. Any other status (2xx, 3xx, 4xx) is returned for the caller to classify.
        """
        kwargs.setdefault("timeout", self.timeout)
        if isinstance(self.session.verify, str):
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA file unless the
            # request names it: a configured CA bundle must win.
            kwargs.setdefault("verify", self.session.verify)
        stream = bool(kwargs.pop("stream", False))
        policy = self._policy_for(url, headers, origins, anonymous)
        if policy is not None:
            self._check_origin(policy, url)
            kwargs["allow_redirects"] = False  # followed hop by hop in _send, each hop checked
        attempts = self.policy.attempts if retry else 1
        last_problem = ""
        for attempt in range(1, attempts + 1):
            self._respect_gate()
            try:
                response = self._send(method, url, headers=headers, body=body, policy=policy, kwargs=kwargs)
                if response.status_code not in transient_statuses:
                    self._read_body(response, method, stream=stream)
                    return response
            except requests.exceptions.SSLError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                    raise ConfigError(
                        f"{self.service}: the TLS certificate of {redact_url(url)} is not trusted "
                        f"(certificate verify failed); set the CA bundle for this service") from exc
                last_problem = f"SSLError: {_short(exc)}"
                if attempt < attempts:
                    self._sleep(self.policy.backoff(attempt))
                continue
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                last_problem = connection_problem(exc)
                if attempt < attempts:
                    self._sleep(self.policy.backoff(attempt))
                continue
            last_problem = f"HTTP {response.status_code}"
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None and response.status_code in (429, 503):
                until = time.time() + wait
                if self.gate is not None:
                    self.gate.block_until(until)
                if wait > self.policy.retry_after_cap:
                    response.close()
                    raise ThrottledError(self.service, until, f"{self.service} answered {response.status_code} "
                                                              f"with Retry-After {wait:.0f} s")
            response.close()
            if attempt < attempts:
                self._sleep(wait if wait is not None else self.policy.backoff(attempt))
        raise TransientError(
            f"{self.service} {method} {redact_url(url)} failed after {attempts} tries: {last_problem}")

    def _policy_for(self, url: str, headers: Mapping[str, str] | None, origins: OriginPolicy | None,
                    anonymous: bool) -> OriginPolicy | None:
        """The policy a request is held to; None for a request that carries no credential."""
        carries = _carries_credential(headers) or _carries_credential(self.session.headers)
        if anonymous:
            if carries:
                raise ValueError(f"{self.service}: an anonymous request must not carry a credential header")
            return None
        policy = origins or self.origins
        if policy is None and carries:
            policy = OriginPolicy.of(url)  # no declared origins: the credential stays where it was sent
        return policy

    def _check_origin(self, policy: OriginPolicy, url: str, *, previous: str | None = None) -> None:
        """Raises ``OriginNotAllowed`` unless a request with the credential may go to ``url``."""
        target = Origin.of(url)
        if previous is not None and Origin.of(previous).scheme == "https" and target.scheme != "https":
            raise OriginNotAllowed(f"{self.service}: {Origin.of(previous)} redirected a request that carries "
                                   f"credentials to {target}, from https to plain http; not followed")
        if policy.allows(url):
            return
        if previous is None:
            raise OriginNotAllowed(f"{self.service}: refusing to send a request that carries credentials to "
                                   f"{target}: only {policy.describe()} may receive them")
        raise OriginNotAllowed(f"{self.service}: {Origin.of(previous)} redirected a request that carries "
                               f"credentials to {target}; not followed: only {policy.describe()} may "
                               "receive them")

    def _send(self, method: str, url: str, *, headers: Mapping[str, str] | None, body: Callable[[], Any] | None,
              policy: OriginPolicy | None, kwargs: dict[str, Any]) -> requests.Response:
        """One try: the request, and (under a policy) its redirects, each hop checked before it is sent."""
        call = {**kwargs, "stream": True}  # bodies are read by _read_body, capped
        # The caller's own mapping, not a copy: a ``body`` factory may set its Content-Type in it.
        hop_headers = headers
        for _hop in range(MAX_REDIRECTS + 1):
            if body is not None:
                call["data"] = body()
            self.requests_sent += 1
            response = self.session.request(method, url, headers=hop_headers, **call)
            if policy is None:
                return response  # no credential: requests followed any redirect itself
            location = self.session.get_redirect_target(response)
            if location is None:
                return response
            status = response.status_code
            response.close()
            target = urljoin(response.url or url, location)
            self._check_origin(policy, target, previous=url)
            if status == 303 or (status in (301, 302) and method not in ("GET", "HEAD")):
                # As browsers and requests do: the redirected request is a GET without the body.
                method = "GET" if method != "HEAD" else method
                body = None
                for name in ("data", "json", "files"):
                    call.pop(name, None)
                if hop_headers is not None:
                    hop_headers = {k: v for k, v in hop_headers.items()
                                   if k.lower() not in ("content-type", "content-length")}
            elif body is None and hasattr(call.get("data"), "read"):
                raise ConfigError(f"{self.service}: {Origin.of(url)} answered {status} to a {method} whose "
                                  "streamed body cannot be sent again")
            call.pop("params", None)  # the target carries its own query
            url = target
        raise ConfigError(f"{self.service}: more than {MAX_REDIRECTS} redirects, the last to {redact_url(url)}")

    def _read_body(self, response: requests.Response, method: str, *, stream: bool) -> None:
        """Reads the answer's body into ``response.content`` unless the caller streams a 2xx one."""
        ok = 200 <= response.status_code < 300
        if stream and ok:
            return
        limit = self.max_body_bytes if ok else min(self.max_body_bytes, ERROR_BODY_BYTES)
        if not read_capped(response, limit) and ok:
            raise ResponseTooLarge(f"{self.service} {method} {redact_url(response.url or '')} answered more than "
                                   f"{_size(limit)}, the most read into memory for one page")

    def _respect_gate(self) -> None:
        if self.gate is None:
            return
        until = self.gate.blocked_until()
        wait = until - time.time()
        if wait <= 0:
            return
        if wait > self.policy.retry_after_cap:
            raise ThrottledError(self.service, until)
        self._sleep(wait)


def read_capped(response: requests.Response, limit: int) -> bool:
    """Reads the body into ``response.content``, at most ``limit`` bytes (after content decoding, so a
    compressed bomb counts at its real size); False when there was more (the rest is never read and
    the connection is closed). A body already read is only measured."""
    if getattr(response, "_content_consumed", False) or getattr(response, "_content", False) is not False:
        return len(response.content or b"") <= limit  # read before (requests' own markers)
    data = bytearray()
    complete = True
    for block in response.iter_content(_READ_BLOCK):
        data += block
        if len(data) > limit:
            complete = False
            break
    if not complete:
        response.close()  # not consumed: closes the connection instead of reusing it mid-body
    response._content = bytes(data[:limit])
    response._content_consumed = True  # type: ignore[attr-defined]  # requests' flag: content is read
    if complete:
        response.close()  # consumed: hands the connection back to the pool
    return complete


def json_body(response: requests.Response, *, limit: int | None = None) -> Any:
    """The answer's JSON (read up to ``limit`` bytes, default ``MAX_BODY_BYTES``, if nobody read it yet).

    Raises ``ValueError`` when it is not JSON, ``JSONTooDeep`` (a ValueError) when it is nested more
    deeply than the parser goes, ``ResponseTooLarge`` when it is larger than ``limit``.
    """
    limit = limit or MAX_BODY_BYTES
    if not read_capped(response, limit):
        raise ResponseTooLarge(f"{redact_url(response.url or 'an answer')} is larger than {_size(limit)}")
    try:
        return json.loads(response.content)
    except RecursionError:
        raise JSONTooDeep("JSON nested too deeply to parse") from None


class PageLinks:
    """The page links one paging loop has read in this run: a link read twice means the source's
    paging loops (a nextLink naming itself, a nextPage pointing back), and the loop would never end.

    service: named in the error (``graph``, ``maximo``). what: what the loop reads, for the message.
    ``visit`` before reading each page; ``state`` distinguishes a legitimate repeat of the same
    query (Maximo re-queries from its cursor: the same query with a moved cursor is progress).
    """

    def __init__(self, service: str, what: str) -> None:
        self.service = service
        self.what = what
        self._seen: set[bytes] = set()

    def visit(self, url: str, params: Mapping[str, str] | None = None, *, state: Any = None) -> None:
        """Records the page; raises ``PagingLoopError`` when this run read it already."""
        key = url + ("?" + urlencode(sorted(params.items())) if params else "")
        if state is not None:
            key += "\n" + json.dumps(state, sort_keys=True, default=str)
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if digest in self._seen:
            raise PagingLoopError(f"{self.service} gave the page link {redact_url(url)} a second time in one run "
                                  f"while reading {self.what}: its paging loops, so the run stops here")
        self._seen.add(digest)


def iter_response(response: requests.Response, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """Streams a response body; a connection lost mid-body becomes ``TransientError``."""
    try:
        yield from response.iter_content(chunk_size)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransientError(f"download interrupted: {_short(exc)}") from exc
    finally:
        response.close()


def _carries_credential(headers: Mapping[str, Any] | None) -> bool:
    return bool(headers) and any(str(name).lower() in CREDENTIAL_HEADERS for name in headers or ())


#: The OS's or urllib3's words for why a connection failed, inside requests' long message.
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\"()\]\[]+)")


def connection_problem(exc: BaseException) -> str:
    """Why a request never got an answer, root cause first: ``Connection refused (ConnectionError)``,
    ``Name or service not known (ConnectionError)``, ``Read timed out (ReadTimeout)``. requests and
    urllib3 wrap the socket's error in ``Max retries exceeded with url: ...`` and a long repr, which a
    column or a cut line would show instead of the cause."""
    cause: BaseException | None = exc
    for _ in range(12):  # a chain, not a cycle; bounded all the same
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.strerror and not isinstance(cause, requests.RequestException):
            return f"{cause.strerror} ({type(exc).__name__})"
        reason = getattr(cause, "reason", None)
        nested = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = (reason if isinstance(reason, BaseException) else None) or nested or cause.__cause__ \
            or cause.__context__
    text = str(exc)
    found = _ERRNO_TEXT.search(text)
    if found:
        return f"{found.group(1).strip()} ({type(exc).__name__})"
    if "timed out" in text.lower():
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    """An exception's text for a message: URLs redacted (requests quotes the URL, query and all), cut short."""
    text = redact_urls_in_text(str(exc))
    return text if len(text) <= 200 else text[:200] + "..."


def _size(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"

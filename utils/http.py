"""The one HTTP layer every client of the service uses (Graph, Maximo, WhatsApp, the Hub).

The retry policy is declared here once (DESIGN.md "Retries live in one layer each"): a request that
fails transiently (connection error, timeout, 408/429/5xx) is retried a few times with exponential
backoff and full jitter; a ``Retry-After`` (seconds or HTTP date) is honoured up to
``RetryPolicy.retry_after_cap``. A longer ``Retry-After`` raises ``ThrottledError`` so the caller can
end its run as throttled, and the pause is recorded through a ``ThrottleGate`` that every worker
reads before it calls the same service.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from utils.errors import ConfigError, ThrottledError, TransientError

#: (connect, read) timeouts applied to every request unless the caller passes its own; seconds.
DEFAULT_TIMEOUT = (5.0, 60.0)
#: What we call ourselves (Graph asks for ``NONISV|Company|App/version``).
USER_AGENT = "NONISV|KMRL|kmrl-connectors/1.0"
#: Statuses worth another try.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.session = session or make_session(ca_bundle=ca_bundle)
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.gate = gate
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
        **kwargs: Any,
    ) -> requests.Response:
        """Sends one request, retrying transient failures; returns the final non-transient response.

        ``body`` is called before every try to build a fresh ``data`` argument (for streamed uploads).
        Raises ``ThrottledError`` when told to wait longer than the cap, ``TransientError`` when the
        tries run out. Any other status (2xx, 3xx, 4xx) is returned for the caller to classify.
        """
        kwargs.setdefault("timeout", self.timeout)
        if isinstance(self.session.verify, str):
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA file unless the
            # request names it: a configured CA bundle must win.
            kwargs.setdefault("verify", self.session.verify)
        attempts = self.policy.attempts if retry else 1
        last_problem = ""
        for attempt in range(1, attempts + 1):
            self._respect_gate()
            if body is not None:
                kwargs["data"] = body()
            try:
                self.requests_sent += 1
                response = self.session.request(method, url, headers=headers, **kwargs)
            except requests.exceptions.SSLError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                    raise ConfigError(
                        f"{self.service}: the TLS certificate of {_redact_url(url)} is not trusted "
                        f"(certificate verify failed); set the CA bundle for this service") from exc
                last_problem = f"SSLError: {_short(exc)}"
                if attempt < attempts:
                    self._sleep(self.policy.backoff(attempt))
                continue
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_problem = f"{type(exc).__name__}: {_short(exc)}"
                if attempt < attempts:
                    self._sleep(self.policy.backoff(attempt))
                continue
            if response.status_code not in transient_statuses:
                return response
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
            f"{self.service} {method} {_redact_url(url)} failed after {attempts} tries: {last_problem}")

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


def iter_response(response: requests.Response, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """Streams a response body; a connection lost mid-body becomes ``TransientError``."""
    try:
        yield from response.iter_content(chunk_size)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransientError(f"download interrupted: {_short(exc)}") from exc
    finally:
        response.close()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _redact_url(url: str) -> str:
    """The URL without its query string (download URLs carry tokens there)."""
    return url.split("?", 1)[0]

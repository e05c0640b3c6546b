"""WSGI middleware around a simulator: a request log with arrival times, answers garbled on demand, and
a count of the bytes actually sent.

``Recorder(app)`` logs every request's arrival and answer times (``time.time()``), path, query,
status, client address and idempotency key, so a test can say what was sent when, and by whom (e.g.
nothing during a throttle window).
``Garbler(app)`` rewrites the next answers whose path matches: cut the body short (truncated JSON),
replace it with text, drop a field from every JSON object in it or set one. ``Metered(app)`` counts the
body bytes handed to the server per path (a client that stops reading stops the count). The
simulators stay unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class Seen:
    """One request as the middleware saw it."""

    arrived: float
    answered: float
    method: str
    path: str
    query: str
    status: int
    #: The client's address (REMOTE_ADDR) and the request's Idempotency-Key header, if any.
    remote: str = ""
    key: str = ""


@dataclass
class Recorder:
    """Logs each request (``seen``) and passes it to ``app`` unchanged."""

    app: WsgiApp
    seen: list[Seen] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        arrived = time.time()
        status: list[int] = []

        def record_status(line: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            status.append(int(line.split(" ", 1)[0]))
            return start_response(line, headers, *exc)

        body = self.app(environ, record_status)
        self.seen.append(Seen(arrived, time.time(), environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                              environ.get("QUERY_STRING", ""), status[0] if status else 0,
                              environ.get("REMOTE_ADDR", ""), environ.get("HTTP_IDEMPOTENCY_KEY", "")))
        return body


def _drop_field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return {k: _drop_field(v, name) for k, v in value.items() if k != name}
    if isinstance(value, list):
        return [_drop_field(v, name) for v in value]
    return value


def _set_field(value: Any, name: str, new: Any) -> Any:
    if isinstance(value, dict):
        return {k: (new if k == name else _set_field(v, name, new)) for k, v in value.items()}
    if isinstance(value, list):
        return [_set_field(v, name, new) for v in value]
    return value


@dataclass
class _Rule:
    match: Callable[[str], bool]
    mode: str
    remaining: int
    field_name: str = ""
    value: Any = None


class Garbler:
    """Passes requests to ``app``; answers matching a rule come back garbled (see ``garble``)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.garbled = 0

    def garble(self, match: Callable[[str], bool], mode: str, *, count: int = 1, field_name: str = "",
               value: Any = None) -> None:
        """The next ``count`` answers whose path satisfies ``match`` are garbled by ``mode``:
        ``truncate`` (the first half of the body), ``html`` (a proxy's error page, status kept),
        ``empty`` (no body), ``drop_field`` (``field_name`` removed from every JSON object) or
        ``set_field`` (``field_name`` set to ``value`` wherever it occurs)."""
        if mode not in ("truncate", "html", "empty", "drop_field", "set_field"):
            raise ValueError(f"unknown garble mode {mode}")
        with self._lock:
            self._rules.append(_Rule(match, mode, count, field_name, value))

    def _take(self, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.remaining > 0 and rule.match(path):
                    rule.remaining -= 1
                    self.garbled += 1
                    return rule
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        rule = self._take(environ.get("PATH_INFO", ""))
        if rule is None:
            return self.app(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(line: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            captured["line"], captured["headers"] = line, headers
            return lambda data: None

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        if rule.mode == "truncate":
            body = body[: len(body) // 2]
        elif rule.mode == "html":
            body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        elif rule.mode == "empty":
            body = b""
        else:
            try:
                data = json.loads(body)
            except ValueError:
                data = None  # not JSON: leave it
            if data is not None:
                data = (_drop_field(data, rule.field_name) if rule.mode == "drop_field"
                        else _set_field(data, rule.field_name, rule.value))
                body = json.dumps(data).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["line"], headers)
        return [body]


class Metered:
    """Passes requests to ``app`` and counts, per path, the body bytes the server took from it.

    Bodies are handed on in slices of ``SLICE`` bytes, so an app that answers with one big bytes
    object is counted as far as the server actually got to write it.
    """

    SLICE = 64 * 1024  # bytes

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.sent: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        body = self.app(environ, start_response)
        return self._count(path, body)

    def _count(self, path: str, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                for start in range(0, len(chunk), self.SLICE):
                    piece = chunk[start:start + self.SLICE]
                    with self._lock:
                        self.sent[path] = self.sent.get(path, 0) + len(piece)
                    yield piece
        finally:
            close = getattr(body, "close", None)
            if callable(close):
                close()

    def total(self, contains: str) -> int:
        with self._lock:
            return sum(n for path, n in self.sent.items() if contains in path)

"""WSGI middleware around a simulator: a request log with arrival times, and answers garbled on demand.

``Recorder(app)`` logs every request's arrival and answer times (``time.time()``), path, query and
status, so a test can say what was sent when (e.g. nothing during a throttle window).
``Garbler(app)`` rewrites the next answers whose path matches: cut the body short (truncated JSON),
replace it with text, or drop a field from every JSON object in it. The simulators stay unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
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
                              environ.get("QUERY_STRING", ""), status[0] if status else 0))
        return body


def _drop_field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return {k: _drop_field(v, name) for k, v in value.items() if k != name}
    if isinstance(value, list):
        return [_drop_field(v, name) for v in value]
    return value


@dataclass
class _Rule:
    match: Callable[[str], bool]
    mode: str
    remaining: int
    field_name: str = ""


class Garbler:
    """Passes requests to ``app``; answers matching a rule come back garbled (see ``garble``)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.garbled = 0

    def garble(self, match: Callable[[str], bool], mode: str, *, count: int = 1, field_name: str = "") -> None:
        """The next ``count`` answers whose path satisfies ``match`` are garbled by ``mode``:
        ``truncate`` (the first half of the body), ``html`` (a proxy's error page, status kept),
        ``empty`` (no body), or ``drop_field`` (``field_name`` removed from every JSON object)."""
        if mode not in ("truncate", "html", "empty", "drop_field"):
            raise ValueError(f"unknown garble mode {mode}")
        with self._lock:
            self._rules.append(_Rule(match, mode, count, field_name))

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
                body = json.dumps(_drop_field(json.loads(body), rule.field_name)).encode()
            except ValueError:
                pass  # not JSON: leave it
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["line"], headers)
        return [body]

"""Running a simulator (any WSGI app) on a free loopback port, in a thread, with or without TLS."""

from __future__ import annotations

import socket
import ssl
import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without a log line per request (benchmarks send thousands)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ServerThread:
    """Serves ``app`` on 127.0.0.1 in a daemon thread; ``url`` is its base URL.

    app: a WSGI application.
    port: fixed port, or 0 for a free one (default).
    ssl_context: serve HTTPS with it (see sandbox.tls).
    Use as a context manager, or call ``start()`` / ``stop()``.
    """

    def __init__(self, app: Any, *, port: int = 0, ssl_context: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.ssl_context = ssl_context
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._server = make_server(
            self.host, self.port, self.app, threaded=True, ssl_context=self.ssl_context,
            request_handler=_QuietHandler,
        )
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05),
                                        name=f"sim-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

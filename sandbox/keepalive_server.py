"""Serving a WSGI app over HTTPS with HTTP/1.1 keep-alive (cheroot), in a background thread.

Werkzeug's development server (``sandbox.servers.ServerThread``) closes every connection, so each
request through it pays a new TCP and TLS handshake, several milliseconds on loopback. Real Graph and
SharePoint keep connections open, and the connector reuses them; a simulator that did not would make
a benchmark of thousands of small downloads measure handshakes instead of the connector.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from types import TracebackType
from typing import Any

from cheroot import wsgi
from cheroot.ssl import Adapter
from cheroot.ssl.builtin import BuiltinSSLAdapter

from sandbox.tls import ServerCert

log = logging.getLogger(__name__)
#: What a client that hung up mid-answer raises in the writing thread (a test that stops reading on purpose).
_HANG_UPS = (ssl.SSLEOFError, BrokenPipeError, ConnectionResetError)

#: Worker threads; an idle keep-alive connection holds none of them (cheroot parks it in a selector).
DEFAULT_THREADS = 16
#: How long an idle keep-alive connection is kept open, seconds.
IDLE_TIMEOUT = 30  # seconds
#: How often the serving loop looks for a stop request, seconds.
STOP_POLL = 0.05  # seconds


class _ContextAdapter(BuiltinSSLAdapter):
    """cheroot's TLS adapter over our server context, without its certificate introspection (a loopback
    handshake that loads the system CA store: a quarter of a second for every simulator started)."""

    def __init__(self, cert: ServerCert) -> None:
        Adapter.__init__(self, cert.cert_path, cert.key_path)
        self.context = cert.server_context()
        self._server_env: dict[str, Any] = {}


class KeepAliveServer:
    """Serves ``app`` on ``host`` (port 0: a free one) over HTTPS with ``cert``; ``url`` once started.

    Use as a context manager, or call ``start()`` / ``stop()``.
    """

    def __init__(self, app: Any, cert: ServerCert, *, host: str = "127.0.0.1", port: int = 0,
                 threads: int = DEFAULT_THREADS) -> None:
        self.host = host
        self._server = wsgi.Server((host, port), app, numthreads=threads, timeout=IDLE_TIMEOUT,
                                   request_queue_size=128, shutdown_timeout=2)
        self._server.ssl_adapter = _ContextAdapter(cert)
        self._server.error_log = self._error_log  # type: ignore[method-assign]
        # The serve loop notices stop() only between selector waits of this length (cheroot: 0.5 s).
        self._server.expiration_interval = STOP_POLL
        self._thread: threading.Thread | None = None
        self.port = port

    def _error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """cheroot's error hook: a client's hang-up is a debug line, anything else goes to stderr as before."""
        if isinstance(sys.exc_info()[1], _HANG_UPS):
            log.debug("client hung up: %s", msg)
            return
        wsgi.Server.error_log(self._server, msg, level, traceback)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> KeepAliveServer:
        self._server.prepare()  # binds; with port 0 the OS picks one
        self.port = int(self._server.bind_addr[1])
        self._thread = threading.Thread(target=self._server.serve, name=f"sim-tls-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KeepAliveServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

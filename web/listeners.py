"""The web process's two listeners, and the WSGI entry point that tells them apart.

The access model, decided once for every endpoint (README, "The web app's two listeners"):

- the PUBLIC listener (WEB_PUBLIC_HOST:WEB_PUBLIC_PORT, default 0.0.0.0:8000) carries only what
  Meta and Microsoft must reach from the internet: the WhatsApp webhook and its GET handshake,
  and Graph's change notifications (web/graph_notifications.py). Nothing else answers there, not
  even 404 pages that differ by route.
- the INTERNAL listener (WEB_INTERNAL_HOST:WEB_INTERNAL_PORT, default 127.0.0.1:8001) carries the
  probes (``/healthz``, ``/readyz``, open: a liveness probe cannot send a token) and the operator
  routes (``/metrics``, later status pages and sync triggers) behind OPERATOR_TOKEN (web.operator).

One gunicorn binds both addresses (web/gunicorn_conf.py builds ``bind`` from these settings) and
serves ``ListenerDispatch``, which routes each request by the local port of the connection it came
in on: the socket's own address, never the Host header or SERVER_PORT, which a client can choose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from utils.errors import ConfigError

DEFAULT_PUBLIC_HOST = "0.0.0.0"
DEFAULT_PUBLIC_PORT = 8000
DEFAULT_INTERNAL_HOST = "127.0.0.1"
DEFAULT_INTERNAL_PORT = 8001
#: WSGI environ keys under which gunicorn and Werkzeug hand over the client's connected socket.
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _port(settings: Settings, name: str, default: int) -> int:
    return settings.reader.whole(name, default, what="a TCP port number", minimum=1, maximum=65535)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Listeners:
    """Where the public and the internal listener bind.

    public_host, public_port: WEB_PUBLIC_HOST (default 0.0.0.0), WEB_PUBLIC_PORT (default 8000).
    internal_host, internal_port: WEB_INTERNAL_HOST (default 127.0.0.1), WEB_INTERNAL_PORT (default 8001).
    """

    public_host: str = DEFAULT_PUBLIC_HOST
    public_port: int = DEFAULT_PUBLIC_PORT
    internal_host: str = DEFAULT_INTERNAL_HOST
    internal_port: int = DEFAULT_INTERNAL_PORT

    @classmethod
    def from_settings(cls, settings: Settings) -> Listeners:
        """Raises ConfigError for a port that is not a number in range, or one port for both."""
        listeners = cls(public_host=settings.env("WEB_PUBLIC_HOST", DEFAULT_PUBLIC_HOST),
                        public_port=_port(settings, "WEB_PUBLIC_PORT", DEFAULT_PUBLIC_PORT),
                        internal_host=settings.env("WEB_INTERNAL_HOST", DEFAULT_INTERNAL_HOST),
                        internal_port=_port(settings, "WEB_INTERNAL_PORT", DEFAULT_INTERNAL_PORT))
        if listeners.public_port == listeners.internal_port:
            raise ConfigError(f"WEB_PUBLIC_PORT and WEB_INTERNAL_PORT must differ (both {listeners.public_port}): "
                              f"the listener's port is what keeps operator routes off the public one")
        return listeners

    @property
    def public_address(self) -> str:
        return _address(self.public_host, self.public_port)

    @property
    def internal_address(self) -> str:
        return _address(self.internal_host, self.internal_port)

    def binds(self) -> list[str]:
        """gunicorn's ``bind`` list: the public address, then the internal one."""
        return [self.public_address, self.internal_address]

    def internal_probe_address(self) -> str:
        """``host:port`` of the internal listener as reached from this machine (a wildcard bind on loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.internal_host, self.internal_host)
        return _address(host, self.internal_port)


def local_port(environ: dict[str, Any]) -> int | None:
    """The local TCP port of the connection ``environ`` arrived on, from the socket itself.

    None when the server hands over no socket, or the socket is not TCP (a unix socket): such a
    request is treated as public. SERVER_PORT is not used: gunicorn derives it from the Host header
    on a unix socket, and another server might always do so.
    """
    for key in _SOCKET_KEYS:
        sock = environ.get(key)
        if sock is None:
            continue
        try:
            name = sock.getsockname()
        except (OSError, AttributeError):
            return None
        return int(name[1]) if isinstance(name, tuple) and len(name) >= 2 else None
    return None


class ListenerDispatch:
    """A WSGI app: requests that came in on ``internal_port`` go to ``internal``, all others to ``public``.

    public, internal: the two WSGI apps (``web.app.create_public_app`` / ``create_internal_app``).
    internal_port: the internal listener's port (WEB_INTERNAL_PORT).
    """

    def __init__(self, public: Any, internal: Any, *, internal_port: int) -> None:
        self.public = public
        self.internal = internal
        self.internal_port = internal_port

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        app = self.internal if local_port(environ) == self.internal_port else self.public
        result: Iterable[bytes] = app(environ, start_response)
        return result

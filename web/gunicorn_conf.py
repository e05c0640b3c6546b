"""gunicorn settings for the web process.

    gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'

Binds both listeners (web/listeners.py): WEB_PUBLIC_HOST:WEB_PUBLIC_PORT (default 0.0.0.0:8000) and
WEB_INTERNAL_HOST:WEB_INTERNAL_PORT (default 127.0.0.1:8001), read like the app reads them (the
environment over ``.env``), so the app's idea of which port is internal always matches what is bound.
A ``--bind`` on the command line replaces both; a start-up line then says whether the internal
listener is missing.

Threaded workers (gthread): a notification spends most of its time waiting on one Redis round
trip, which a thread can spend serving another request, and they keep connections alive between
deliveries where sync workers close each one. bench/bench_webhook.py measures these settings.
"""

from __future__ import annotations

import sys
from typing import Any

from config.settings import Settings
from utils.errors import ConfigError
from utils.logging import mask_text
from web.listeners import Listeners, is_loopback

# gunicorn reads its settings from this module's names, so they are read when it is imported.
try:
    _settings = Settings.from_env()
    _listeners = Listeners.from_settings(_settings)
    #: Worker processes (gunicorn's own WEB_CONCURRENCY variable; default 2, one per core of a small box).
    workers = _settings.reader.whole("WEB_CONCURRENCY", 2, what="a whole number of processes")
    #: Threads per worker (WEB_THREADS, default 8).
    threads = _settings.reader.whole("WEB_THREADS", 8, what="a whole number of threads")
    #: The access log (WEB_ACCESS_LOG: "-" for stdout, or a file; empty, the default: none), one JSON line
    #: per request (web/access_log.py). ``--access-logfile`` on the command line does the same.
    accesslog = _settings.env("WEB_ACCESS_LOG") or None
except ConfigError as exc:
    # One line and exit code 2 (as ``kmrl-connectors`` says it), not gunicorn's traceback of a config file.
    print(f"settings: {mask_text(str(exc))}", file=sys.stderr)
    sys.exit(2)

#: The public listener first, then the internal one.
bind = _listeners.binds()
worker_class = "gthread"
#: Access log lines as JSON (web/access_log.py), like the service's other logs.
logger_class = "web.access_log.JsonAccessLogger"
#: Seconds an idle keep-alive connection stays open.
keepalive = 5
#: Seconds a request may take before its worker is restarted; a notification takes milliseconds.
timeout = 30
#: Seconds workers get to finish requests in flight on shutdown (SIGTERM).
graceful_timeout = 20
#: Connections waiting to be accepted.
backlog = 2048


def when_ready(server: Any) -> None:
    """Says which bound address is which, once, when the arbiter is ready."""
    ports = {listener.getsockname()[1] for listener in server.LISTENERS
             if isinstance(listener.getsockname(), tuple)}
    if _listeners.internal_port not in ports:
        server.log.warning("no internal listener on port %s: /metrics, /healthz and /readyz are not served "
                           "(a --bind replaced the configured binds?)", _listeners.internal_port)
    else:
        server.log.info("internal listener (probes, operator routes) on port %s", _listeners.internal_port)
        if not is_loopback(_listeners.internal_host):
            server.log.info("the internal listener binds %s, not loopback: keep its port off the internet",
                            _listeners.internal_host)


def worker_exit(server: Any, worker: Any) -> None:
    """Writes the worker's buffered metrics (web/metric_flush.py) before it goes, in the worker."""
    from web.metric_flush import flush_all  # imported here: the arbiter itself never records any

    flush_all()

"""gunicorn settings for the web process.

    gunicorn -c python:web.gunicorn_conf --bind 0.0.0.0:8000 'web.app:create_app()'

Threaded workers (gthread): a notification spends most of its time waiting on one Redis round
trip, which a thread can spend serving another request, and they keep connections alive between
deliveries where sync workers close each one. bench/bench_webhook.py measures these settings.
"""

from __future__ import annotations

import os

#: Worker processes (gunicorn's own WEB_CONCURRENCY variable; default 2, one per core of a small box).
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
#: Threads per worker (WEB_THREADS, default 8).
threads = int(os.environ.get("WEB_THREADS", "8"))
worker_class = "gthread"
#: Seconds an idle keep-alive connection stays open.
keepalive = 5
#: Seconds a request may take before its worker is restarted; a notification takes milliseconds.
timeout = 30
#: Seconds workers get to finish requests in flight on shutdown (SIGTERM).
graceful_timeout = 20
#: Connections waiting to be accepted.
backlog = 2048

"""A web process's own metrics (webhook latency, rejected requests), written to Redis in the background.

The webhook answers in milliseconds and most of that is one Redis round trip, so its metrics must
not add another: a request only records into an in-process ``MetricBuffer`` (about a microsecond),
and a daemon thread of each process (each gunicorn worker) writes what was recorded every
``FLUSH_SECONDS`` in one pipeline. Every worker adds to the same Redis fields, which merges them: a
scrape of any web process shows the fleet. A scrape also flushes its own process first (``flush_all``),
and so does gunicorn's ``worker_exit`` hook, so a stopping worker loses nothing it recorded.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Mapping

import redis

from base.metric_buffer import MetricBuffer
from base.state import StateStore
from utils.logging import get_logger

log = get_logger(__name__)

#: Seconds between two writes of a process's buffered metrics.
FLUSH_SECONDS = 5.0

_live: weakref.WeakSet[WebMetrics] = weakref.WeakSet()


class WebMetrics:
    """Counters and histograms of one web process, buffered and written every ``interval`` seconds.

    state: where they are written (the state store's counters and histograms hashes).
    interval: seconds between writes (default ``FLUSH_SECONDS``).

    The writing thread starts with the first record in each process (so a fork gets its own).
    """

    def __init__(self, state: StateStore, *, interval: float = FLUSH_SECONDS) -> None:
        self.state = state
        self.interval = interval
        self.buffer = MetricBuffer()
        self._pid = 0
        self._start_lock = threading.Lock()
        _live.add(self)

    def count(self, name: str, labels: Mapping[str, str], value: float = 1.0) -> None:
        """Adds to a counter (0 makes the series appear with the next write)."""
        self.buffer.count(name, labels, value)
        if self._pid != os.getpid():
            self._start_writer()

    def observe(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Records one observation of a histogram of base.metric_buffer.BUCKETS."""
        self.buffer.observe(name, labels, value)
        if self._pid != os.getpid():
            self._start_writer()

    def flush(self) -> None:
        """Writes what was recorded so far (one round trip); on a Redis failure it is dropped and logged."""
        increments = self.buffer.drain()
        if not increments:
            return
        try:
            self.state.add_increments(increments)
        except redis.RedisError as exc:
            log.warning("web_metrics_not_written", error=type(exc).__name__,
                        fields=len(increments.counters) + len(increments.histograms))

    def _start_writer(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._write_periodically, name="web-metrics", daemon=True).start()

    def _write_periodically(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()


def flush_all() -> None:
    """Writes the buffered metrics of every ``WebMetrics`` of this process (before a scrape, at exit)."""
    for metrics in list(_live):
        metrics.flush()

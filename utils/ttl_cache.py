"""TtlCache: answers a process keeps in memory until each one's own expiry.

What a caller may rely on: ``get`` returns a value only before its expiry (seconds on the monotonic
clock, given to ``put``), and ``None`` otherwise; every method is safe to call from several threads
(a worker's threads pool shares one cache). Nothing is kept beyond the process, and whoever holds a
cache decides how long it lives: the service's wiring keeps one for as long as its settings stay the
same, so the runs of one worker process share it, and a new wiring starts empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any


class TtlCache:
    """A thread-safe map whose entries expire.

    clock: seconds, monotonic (default ``time.monotonic``); tests may pass their own.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        """The value stored under ``key`` if it has not expired yet, else None."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Keeps ``value`` under ``key`` for ``ttl`` seconds (0 or less: not kept at all).

        Expired entries are dropped here, so the cache holds at most the live ones plus this one.
        """
        now = self._clock()
        with self._lock:
            for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[stale]
            if ttl > 0:
                self._entries[key] = (now + ttl, value)
            else:
                self._entries.pop(key, None)

    def __len__(self) -> int:
        """Entries not yet dropped (some may have expired since the last ``put``)."""
        with self._lock:
            return len(self._entries)

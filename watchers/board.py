"""Where watchers say what they are doing: one Redis hash per watcher and a gauge, for ``status``
and /metrics.

``watcher:{name}`` (base/keys.py) holds ``state`` (connecting, connected, backoff, standby),
``mode`` (notify, idle, poll), ``since`` (Unix time the state began), ``last_event`` (Unix time of
the last change it asked a sync for), ``error`` (why it is in backoff) and ``host`` (which process
writes it: ``hostname:pid``). The hash expires ``ttl`` seconds after its last write, so the record
of a watcher that died goes away; a live watcher writes it again at least every lease renewal.

Only the holder of the watcher's lease writes ``connecting``/``connected``/``backoff`` and the
gauge ``kmrl_watcher_connected{watcher=name}`` (1 when connected, else 0); a watcher on standby
writes the hash only when it is absent or its own, so it never hides the holder's record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from base.state import StateStore

#: The gauge: 1 while the watcher is connected, 0 otherwise.
CONNECTED_GAUGE = "kmrl_watcher_connected"
#: States a watcher publishes.
CONNECTING, CONNECTED, BACKOFF, STANDBY = "connecting", "connected", "backoff", "standby"


@dataclass
class WatcherRecord:
    """What one watcher publishes (module docstring)."""

    name: str
    state: str
    host: str
    mode: str = ""
    since: float = 0.0
    last_event: float = 0.0
    error: str = ""
    connections: int = 0


class WatcherBoard:
    """Publishes and reads watcher records in ``store``."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def publish(self, record: WatcherRecord, *, ttl: float, holder: bool) -> None:
        """Writes ``record`` (and, for the lease holder, the gauge); the hash lives ``ttl`` seconds."""
        key = self.store.keys.watcher(record.name)
        fields: dict[Any, Any] = {k: ("" if v is None else v) for k, v in asdict(record).items()
                                                 if k != "name"}
        if not holder:
            owner = self.store.redis.hget(key, "host")
            if owner is not None and owner != record.host:
                return  # the holder's record stays
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, max(1000, int(ttl * 1000)))
        pipe.execute()
        if holder:
            self.store.set_gauge(CONNECTED_GAUGE, {"watcher": record.name}, 1.0 if record.state == CONNECTED else 0.0)

    def disconnected(self, name: str) -> None:
        """Sets the gauge of ``name`` to 0 (a holder stopping)."""
        self.store.set_gauge(CONNECTED_GAUGE, {"watcher": name}, 0.0)

    def records(self) -> list[dict[str, Any]]:
        """Every live watcher's record, sorted by name; numbers as numbers."""
        found = []
        prefix = self.store.keys.watcher("")
        for key in sorted(self.store.redis.scan_iter(match=self.store.keys.watcher("*"), count=200)):
            raw = self.store.redis.hgetall(key)
            if not raw:
                continue
            record: dict[str, Any] = {"name": key[len(prefix):]}
            for field, value in ((str(k), str(v)) for k, v in raw.items()):
                if field in ("since", "last_event"):
                    record[field] = float(value or 0) or None
                elif field == "connections":
                    record[field] = int(float(value or 0))
                else:
                    record[field] = value
            found.append(record)
        return found

"""Sync triggers: the one debounce and coalesce rule for runs asked for between ticks.

A watcher (new mail), a notification (Graph, WhatsApp) or an operator asks for a scope's run with
``request``. The rule, for every source alike:

- a burst of requests while the scope is idle causes one run;
- any number of requests while the scope runs cause exactly one more run, after it ends.

It is kept in one Redis string per scope, ``trigger:{connector}:{scope}``, and the scope's lease
(``lock:{connector}:{scope}``), each step one Lua script:

- ``request``: no mark → mark ``queued``, and the caller sends one run; a mark → nothing to send.
- ``claim`` (the triggered run, before it starts): the lease is free → the mark goes (changes made
  from now on are not promised to this run, so they trigger again); the lease is held by another
  run → the mark becomes ``parked`` and the triggered run ends at once.
- ``owed`` (every run that held the lease, after releasing it): a ``parked`` mark becomes ``queued``
  and the caller sends one run, unless another run took the lease since, whose end settles it.

A run that dies holding the lease leaves a parked mark behind; the mark lives ``ttl`` (longer than
any run), after which requests queue runs again, and the beat tick is the safety net meanwhile.
"""

from __future__ import annotations

from base import lua
from base.state import StateStore, metric_field

#: Counter of requests, by source and outcome (sent: a run was queued; coalesced: one was due).
TRIGGER_METRIC = "kmrl_sync_triggers_total"


class SyncTriggers:
    """The trigger rule on one state store.

    ttl: seconds a mark lives without being settled (longer than the longest run, so a parked
        request outlives the run it waits for).
    """

    def __init__(self, store: StateStore, *, ttl: float) -> None:
        self._store = store
        self._ttl_ms = max(1000, int(ttl * 1000))
        client = store.redis
        self._request = client.register_script(lua.source("trigger_request"))
        self._claim = client.register_script(lua.source("trigger_claim"))
        self._owed = client.register_script(lua.source("trigger_owed"))
        self._cancel = client.register_script(lua.source("trigger_cancel"))

    def _keys(self, connector: str, scope: str) -> list[str]:
        keys = self._store.keys
        return [keys.trigger(connector, scope), keys.lock(connector, scope)]

    def request(self, connector: str, scope: str) -> bool:
        """True when the caller must send one run of the scope; False when one is already due."""
        counters = self._store.keys.counters()
        sent = metric_field(TRIGGER_METRIC, {"source": connector, "outcome": "sent"})
        coalesced = metric_field(TRIGGER_METRIC, {"source": connector, "outcome": "coalesced"})
        return bool(self._request(keys=[self._store.keys.trigger(connector, scope), counters],
                                  args=[self._ttl_ms, sent, coalesced]))

    def claim(self, connector: str, scope: str) -> bool:
        """Called by a triggered run before it starts: True to run now, False when the scope is busy
        and the request was parked for the running run's holder to settle."""
        answer = self._claim(keys=self._keys(connector, scope), args=[self._ttl_ms])
        return (answer.decode() if isinstance(answer, bytes) else answer) == "go"

    def owed(self, connector: str, scope: str) -> bool:
        """Called after a run released the scope's lease: True when the caller must send one more run."""
        return bool(self._owed(keys=self._keys(connector, scope), args=[self._ttl_ms]))

    def cancel(self, connector: str, scope: str) -> None:
        """Undoes a ``request`` whose run could not be sent, so the next request tries again."""
        self._cancel(keys=[self._store.keys.trigger(connector, scope)])

    def mark(self, connector: str, scope: str) -> str | None:
        """The scope's mark (``queued``, ``parked``) or None; for status and tests."""
        value = self._store.redis.get(self._store.keys.trigger(connector, scope))
        return value.decode() if isinstance(value, bytes) else value

"""The invariants every fault test ends with (DESIGN.md "Invariants").

- Nothing lost: every source document is in the Hub, and nothing else is.
- No duplicate uploads: the Hub stored each sha256 once, and received repeated uploads only for
  what was in flight when something failed (a bound the test gives).
- Recovered by itself: no dead letter, no lease left behind, every scope's last run ``ok``.
"""

from __future__ import annotations

import json

import redis

from sandbox.hub import RunningHub


def stored_sha256s(hub: RunningHub) -> set[str]:
    return {doc.sha256 for doc in list(hub.sim.documents.values())}


def repeated_uploads(hub: RunningHub) -> int:
    """Upload requests beyond the first per idempotency key."""
    return sum(n - 1 for n in list(hub.sim.uploads_per_key.values()) if n > 1)


def assert_delivered_once(hub: RunningHub, expected: set[str], *, max_repeats: int, context: str) -> None:
    """Every expected document stored exactly once; at most ``max_repeats`` repeated upload requests."""
    stored = stored_sha256s(hub)
    missing, extra = expected - stored, stored - expected
    assert not missing and not extra, (f"{context}: {len(missing)} documents missing from the Hub, "
                                       f"{len(extra)} unexpected ones")
    doubled = {key: n for key, n in hub.sim.stored_per_key.items() if n != 1}
    assert not doubled, f"{context}: the Hub stored these more than once: {doubled}"
    repeats = repeated_uploads(hub)
    assert repeats <= max_repeats, (f"{context}: {repeats} repeated upload requests, more than the "
                                    f"{max_repeats} in flight at the faults")


def assert_settled(state_url: str, source: str, *, prefix: str = "kmrl:") -> None:
    """No dead letter, no lease held, every scope of ``source`` last ended ``ok``."""
    client = redis.Redis.from_url(state_url, decode_responses=True)
    try:
        dead = client.hgetall(f"{prefix}deadletter:{source}")
        assert not dead, f"{source}: dead letters left: {[json.loads(v)['reason'] for v in dead.values()]}"
        locks = list(client.scan_iter(match=f"{prefix}lock:{source}:*"))
        assert not locks, f"{source}: leases still held: {locks}"
        statuses = {key: client.hget(key, "state") for key in client.scan_iter(match=f"{prefix}status:{source}:*")}
        statuses.pop(f"{prefix}status:{source}:*", None)  # a connector-level failure record, if any
        assert statuses and set(statuses.values()) == {"ok"}, f"{source}: scope states {statuses}"
    finally:
        client.close()

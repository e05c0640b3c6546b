"""The Redis state store: cursors, items, leases across processes, throttle gate, dead letters."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from base.state import DeadLetter, ItemRecord, StateStore
from utils.errors import LeaseLostError

LEASE_HOLDER = """
import sys, time
from base.state import StateStore
store = StateStore.from_url(sys.argv[1])
lease = store.lease("email", "inbox", ttl=float(sys.argv[2]))
print("acquired" if lease.acquire() else "held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def hold_in_subprocess(redis_url: str, ttl: float, hold: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, redis_url, str(ttl), str(hold)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "acquired"
    return proc


def test_cursor_round_trips_any_json(state: StateStore):
    cursor = {"uidvalidity": 7, "last_uid": 42, "taken": ["WO-1", "WO-2"]}
    state.set_cursor("email", "inbox", cursor)
    assert state.get_cursor("email", "inbox") == cursor
    state.clear_cursor("email", "inbox")
    assert state.get_cursor("email", "inbox") is None


def test_lease_excludes_a_second_process(state: StateStore, redis_url: str):
    proc = hold_in_subprocess(redis_url, ttl=30, hold=30)
    try:
        assert not state.lease("email", "inbox", ttl=30).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_lease_is_taken_over_after_its_holder_dies(state: StateStore, redis_url: str):
    proc = hold_in_subprocess(redis_url, ttl=1, hold=30)
    proc.kill()  # SIGKILL: no release, the lease must expire by itself
    proc.wait()
    lease = state.lease("email", "inbox", ttl=30)
    deadline = time.monotonic() + 5
    while not lease.acquire():
        assert time.monotonic() < deadline, "lease never expired"
        time.sleep(0.1)
    lease.release()


def test_a_lost_lease_stops_its_old_holder(state: StateStore):
    old = state.lease("maximo", "all", ttl=1)
    assert old.acquire()
    state.redis.delete(state.key("lock", "maximo", "all"))  # expired...
    new = state.lease("maximo", "all", ttl=30)
    assert new.acquire()  # ...and taken over
    with pytest.raises(LeaseLostError):
        old.renew()
    old.release()  # must not delete the new holder's lease
    assert state.lock_holder("maximo", "all") == new.token


def test_items_and_content_are_recorded_in_one_step(state: StateStore):
    state.record_ingested("email", "inbox", "msg-1/2", ItemRecord("9", "ab" * 32, "hub-1"), outcome="new", size=10)
    assert state.get_item("email", "inbox", "msg-1/2") == ItemRecord("9", "ab" * 32, "hub-1")
    assert state.get_content("ab" * 32) == "hub-1"
    counters, _ = state.metrics()
    assert counters["kmrl_documents_total|outcome=new,source=email"] == 1


def test_throttle_gate_keeps_the_later_pause(state: StateStore):
    gate = state.throttle_gate("graph", "tenant-1")
    later = time.time() + 60
    gate.block_until(later)
    gate.block_until(time.time() + 5)
    assert gate.blocked_until() == pytest.approx(later, abs=0.01)
    assert state.throttle_gate("graph", "tenant-1").blocked_until() == pytest.approx(later, abs=0.01)
    assert state.throttle_gate("graph", "tenant-2").blocked_until() == 0


def test_dead_letter_counts_attempts(state: StateStore):
    state.add_dead_letter(DeadLetter("email", "inbox", "m-1", "bad base64"))
    entry = state.add_dead_letter(DeadLetter("email", "inbox", "m-1", "bad base64 again"))
    assert entry.attempts == 2
    (listed,) = state.list_dead_letters("email")
    assert listed.reason == "bad base64 again" and listed.attempts == 2
    assert state.remove_dead_letter("email", listed.id)
    assert state.list_dead_letters("email") == []


def test_history_is_trimmed_by_age(state: StateStore):
    state.append_history("email", "inbox", {"ended_at": time.time() - 10 * 86400})
    state.append_history("email", "inbox", {"ended_at": time.time()})
    assert state.trim_history(time.time() - 86400) == 1
    assert state.redis.llen(state.key("history", "email", "inbox")) == 1


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Returns once ``predicate()`` is true; ``timeout`` (seconds) only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_heartbeat_keeps_the_lease_through_a_long_step(state: StateStore):
    # One long step (a large download) with no keep_alive() call: only the heartbeat thread can keep
    # the lease. Seen from Redis, each renewal puts the key's time to live back up to the full TTL;
    # three renewals, each a third of the TTL after the last, mean the lease has outlived the TTL it
    # was taken with. Nothing here races the clock: a slow machine only makes the step longer, and a
    # heartbeat may run up to two thirds of the TTL (4 s) late before the lease would lapse.
    ttl = 6.0
    lease = state.lease("sharepoint", "drive-1", ttl=ttl)
    key = state.key("lock", "sharepoint", "drive-1")
    assert lease.acquire()
    renewals, last = 0, state.redis.pttl(key)
    deadline = time.monotonic() + 120  # bounds a hang only
    while renewals < 3:
        assert state.lock_holder("sharepoint", "drive-1") == lease.token, f"the lease lapsed after {renewals} renewals"
        remaining = state.redis.pttl(key)
        if remaining > last:
            renewals += 1
        last = remaining
        assert time.monotonic() < deadline, f"only {renewals} renewals"
        time.sleep(0.05)
    lease.keep_alive()
    assert state.lock_holder("sharepoint", "drive-1") == lease.token
    lease.release()
    assert state.lock_holder("sharepoint", "drive-1") is None


def test_heartbeat_notices_a_takeover(state: StateStore):
    lease = state.lease("sharepoint", "drive-1", ttl=1)
    assert lease.acquire()
    state.redis.set(state.key("lock", "sharepoint", "drive-1"), "someone-else")
    wait_until(lambda: lease.lost, "the heartbeat to find the lease taken")  # no keep_alive() call yet
    with pytest.raises(LeaseLostError):
        lease.keep_alive()
    lease.release()
    assert state.lock_holder("sharepoint", "drive-1") == "someone-else"


def test_item_groups_are_built_once_from_the_records_kept_and_dropped_with_the_scope(state: StateStore) -> None:
    record = ItemRecord("v1", "a" * 64, "hub-1")
    for source_id in ("S/1/10", "S/1/11", "S/2/20"):
        state.record_ingested("maximo", "all", source_id, record, outcome="new", size=1)
    group_of = lambda sid: sid.rpartition("/")[0]  # noqa: E731
    assert state.ensure_item_groups("maximo", "all", group_of) == 3
    assert state.ensure_item_groups("maximo", "all", group_of) == 0  # built: not scanned again
    assert state.get_item_groups("maximo", "all", ["S/1", "S/2", "S/3"]) == {
        "S/1": ["S/1/10", "S/1/11"], "S/2": ["S/2/20"], "S/3": []}
    state.add_dead_letter(DeadLetter(connector="maximo", scope="all", source_id="S/2", reason="no changedate"))
    state.set_item_groups("maximo", "all", {"S/1": ["S/1/11"], "S/2": []}, resolved=["S/2"])
    assert state.get_item_groups("maximo", "all", ["S/1", "S/2"]) == {"S/1": ["S/1/11"], "S/2": []}
    assert state.list_dead_letters("maximo") == []
    state.forget_scope("maximo", "all")
    assert not state.redis.exists(state.keys.groups("maximo", "all"))

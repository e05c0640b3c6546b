"""The trigger rule (base/triggers.py) on a real Redis, and on a real Celery worker (threads pool, in
this process; broker, results and state in test databases 5, 6 and 8) through ``request_sync``:
a burst while idle is one run; any number of requests during a run are exactly one more run."""

from __future__ import annotations

import time

import scheduler
from base.state import StateStore, metric_field
from base.triggers import TRIGGER_METRIC, SyncTriggers
from tests import worker_fixtures
from tests.scheduler_fakes import release_held_runs
from tests.waiting import wait_for

#: The worker and its fresh state per test (tests/worker_fixtures.py).
worker, use = worker_fixtures.worker, worker_fixtures.use




def counter(state: StateStore, what: str) -> int:
    return int(state.redis.get(state.key("test", "fake", what)) or 0)


# -- the rule itself ---------------------------------------------------------------------------------

def test_a_burst_while_idle_sends_one_run(state: StateStore) -> None:
    triggers = SyncTriggers(state, ttl=60)
    sent = [triggers.request("email", "ops:INBOX") for _ in range(25)]
    assert sent == [True] + [False] * 24
    assert triggers.mark("email", "ops:INBOX") == "queued"
    assert 55_000 < state.redis.pttl(state.keys.trigger("email", "ops:INBOX")) <= 60_000
    counters, _ = state.metrics()
    assert counters[metric_field(TRIGGER_METRIC, {"source": "email", "outcome": "sent"})] == 1
    assert counters[metric_field(TRIGGER_METRIC, {"source": "email", "outcome": "coalesced"})] == 24
    # Another scope is its own: it is not coalesced with the first.
    assert triggers.request("email", "ops:Circulars") is True


def test_requests_during_a_run_are_owed_exactly_one_more_run(state: StateStore) -> None:
    triggers = SyncTriggers(state, ttl=60)
    assert triggers.request("maximo", "BRANCH") is True
    assert triggers.claim("maximo", "BRANCH") is True          # the run starts: the mark is consumed
    lease = state.lease("maximo", "BRANCH", ttl=30)
    assert lease.acquire(heartbeat=False)
    # A change during the run: one run is queued; it finds the scope busy and parks.
    assert triggers.request("maximo", "BRANCH") is True
    assert triggers.claim("maximo", "BRANCH") is False
    assert triggers.mark("maximo", "BRANCH") == "parked"
    assert [triggers.request("maximo", "BRANCH") for _ in range(10)] == [False] * 10
    assert triggers.owed("maximo", "BRANCH") is False          # still running: nothing is owed yet
    lease.release()
    assert triggers.owed("maximo", "BRANCH") is True           # the run ended: one more run
    assert triggers.mark("maximo", "BRANCH") == "queued"
    assert triggers.owed("maximo", "BRANCH") is False          # and only one
    assert triggers.claim("maximo", "BRANCH") is True
    assert triggers.mark("maximo", "BRANCH") is None


def test_a_run_that_ended_without_requests_owes_nothing(state: StateStore) -> None:
    triggers = SyncTriggers(state, ttl=60)
    assert triggers.owed("sharepoint", "b!drive") is False
    assert triggers.request("sharepoint", "b!drive") is True
    assert triggers.owed("sharepoint", "b!drive") is False      # queued, not parked: its run is on its way


def test_a_parked_request_behind_a_new_holder_is_settled_by_that_holder(state: StateStore) -> None:
    triggers = SyncTriggers(state, ttl=60)
    first = state.lease("email", "x", ttl=30)
    assert first.acquire(heartbeat=False)
    assert triggers.request("email", "x") and not triggers.claim("email", "x")
    first.release()
    second = state.lease("email", "x", ttl=30)
    assert second.acquire(heartbeat=False)                     # a tick's run took the lease first
    assert triggers.owed("email", "x") is False                 # the first run's end leaves it to the second
    second.release()
    assert triggers.owed("email", "x") is True


def test_an_unsent_run_is_undone_and_a_dead_holder_is_outlived(state: StateStore) -> None:
    triggers = SyncTriggers(state, ttl=1)
    assert triggers.request("whatsapp", "inbox") is True
    triggers.cancel("whatsapp", "inbox")                        # the broker refused the run
    assert triggers.request("whatsapp", "inbox") is True        # the next request sends again
    lease = state.lease("whatsapp", "inbox", ttl=30)
    assert lease.acquire(heartbeat=False)
    assert triggers.claim("whatsapp", "inbox") is False         # parked behind a run whose worker then dies
    time.sleep(1.1)
    assert triggers.mark("whatsapp", "inbox") is None           # the mark lapsed: requests send runs again
    assert triggers.request("whatsapp", "inbox") is True


# -- on a real worker --------------------------------------------------------------------------------

def test_a_burst_of_requests_while_idle_is_one_run_on_a_worker(use):
    _, state = use(FAKE_FILES="3", SYNC_TRIGGER_DELAY_SECONDS="0.5")
    sent = [scheduler.request_sync(state, "fake", "0", "a", reason="test") for _ in range(40)]
    assert sent.count(True) == 1
    wait_for(lambda: state.get_status("fake", "a").get("state") == "ok", what="the triggered run")
    time.sleep(2.0)  # room for a second run, which must not come
    assert counter(state, "runs") == 1
    assert state.get_status("fake", "a")["new"] == "3"


def test_any_number_of_requests_during_a_run_cause_exactly_one_more_run(use):
    _, state = use(FAKE_FILES="4", FAKE_HOLD_AFTER="1", SYNC_TRIGGER_DELAY_SECONDS="0.2")
    assert scheduler.request_sync(state, "fake", "0", "a", reason="test")
    wait_for(lambda: counter(state, "held") == 1, what="the first run under way")
    for _ in range(50):
        scheduler.request_sync(state, "fake", "0", "a", reason="test")
    # One of them queued a run; it found the scope busy and parked.
    wait_for(lambda: scheduler.sync_triggers(state).mark("fake", "a") == "parked", what="the parked run")
    assert counter(state, "runs") == 1
    release_held_runs(state, "fake")
    wait_for(lambda: counter(state, "runs") == 2, what="the one more run")
    wait_for(lambda: state.get_status("fake", "a").get("state") == "ok"
             and scheduler.sync_triggers(state).mark("fake", "a") is None, what="the second run to end")
    time.sleep(2.0)
    assert counter(state, "runs") == 2
    counters, _ = state.metrics()
    assert counters[metric_field(TRIGGER_METRIC, {"source": "fake", "outcome": "sent"})] == 2
    assert counters[metric_field(TRIGGER_METRIC, {"source": "fake", "outcome": "coalesced"})] == 49


def test_a_tick_run_in_progress_owes_one_run_to_requests_made_meanwhile(use):
    _, state = use(FAKE_FILES="3", FAKE_HOLD_AFTER="1", SYNC_TRIGGER_DELAY_SECONDS="0")
    scheduler.sync_scope.delay("fake", "0", "a")                 # the tick's run, untriggered
    wait_for(lambda: counter(state, "held") == 1, what="the tick's run under way")
    for _ in range(5):
        scheduler.request_sync(state, "fake", "0", "a", reason="test")
    wait_for(lambda: scheduler.sync_triggers(state).mark("fake", "a") == "parked", what="the parked run")
    release_held_runs(state, "fake")
    wait_for(lambda: counter(state, "runs") == 2, what="the owed run")
    time.sleep(1.5)
    assert counter(state, "runs") == 2


def test_the_first_worker_up_syncs_every_source_once(use):
    _, state = use(FAKE_FILES="2", SYNC_AT_START="1")
    # No worker alive (the key is absent): this one is the first, and ticks each configured source.
    assert scheduler._workers_alive(first=True) is True
    assert scheduler._workers_alive(first=True) is False        # a second worker joining is not a start
    sent = scheduler.sync_at_start()
    assert "fake" in sent
    wait_for(lambda: state.get_status("fake", "a").get("state") == "ok", what="the start sync of fake")
    assert 0 < state.redis.ttl(state.keys.workers_alive()) <= scheduler.WORKERS_ALIVE_TTL

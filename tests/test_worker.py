"""The tasks on a real Celery worker (threads pool, in this process) with broker, results and
state in test databases 5, 6 and 8, against the fake sources of tests/scheduler_fakes.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import redis
from celery.signals import before_task_publish

import scheduler
from base.health import load_report
from base.state import DeadLetter, StateStore, metric_field
from config.settings import Settings
from sandbox.maximo import DEFAULT_API_KEYS, MaximoSimulator
from sandbox.servers import ServerThread
from tests import worker_fixtures
from tests.scheduler_fakes import release_held_runs
from tests.waiting import wait_for

#: The worker and its fresh state per test (tests/worker_fixtures.py).
worker, use = worker_fixtures.worker, worker_fixtures.use




def counter(state: StateStore, name: str, what: str) -> int:
    return int(state.redis.get(state.key("test", name, what)) or 0)


def metric(store: StateStore, name: str, **labels: str) -> float:
    counters, _ = store.metrics()
    return counters.get(metric_field(name, labels), 0.0)


def outbox_documents(settings: Settings) -> int:
    folder = Path(settings.hub_outbox_dir)
    return sum(1 for p in folder.iterdir() if len(p.name) == 64) if folder.is_dir() else 0


def test_tick_fans_out_one_run_per_scope_and_reuses_the_scope_list(use):
    settings, state = use(FAKE_INSTANCES="x,y", FAKE_SCOPES="a,b", FAKE_FILES="2")
    scheduler.tick.delay("fake")
    scopes = ["x-a", "x-b", "y-a", "y-b"]
    wait_for(lambda: all(state.get_status("fake", s).get("state") == "ok" for s in scopes), what="four scopes ok")
    assert outbox_documents(settings) == 8
    assert 0 < state.redis.ttl(state.key("scopes", "fake", "x")) <= 600
    scheduler.tick.delay("fake")
    wait_for(lambda: counter(state, "fake", "runs") == 8, what="the second tick's four runs")
    assert counter(state, "fake", "scope_listings") == 2  # once per instance: the second tick used the cache


def test_tick_runs_the_real_maximo_connector_and_task_messages_carry_no_secret(use):
    sim = MaximoSimulator()
    sim.populate(4, attachments=2)
    published: list[tuple[str, Any]] = []

    def record(sender: str | None = None, body: Any = None, **_: Any) -> None:
        published.append((str(sender), body))

    before_task_publish.connect(record)
    try:
        with ServerThread(sim) as server:
            settings, state = use(MAXIMO_URL=server.url, MAXIMO_API_KEY=DEFAULT_API_KEYS[0])
            scheduler.tick.delay("maximo")
            wait_for(lambda: state.get_status("maximo", "all").get("state") == "ok", what="the Maximo scope run")
    finally:
        before_task_publish.disconnect(record)
    assert outbox_documents(settings) == 8
    assert state.get_status("maximo", "all")["new"] == "8"
    sent = [body for name, body in published if name == "kmrl.sync_scope"]
    assert sent and tuple(sent[0][0]) == ("maximo", "0", "all")  # (args, kwargs, embed): names only
    assert all(DEFAULT_API_KEYS[0] not in json.dumps(body) for _, body in published)


def test_two_runs_of_one_scope_at_once_one_runs_and_one_skips(use):
    # The run that takes the lease stops after two files until the other one has come and gone, so
    # the two surely overlap, however the worker's threads are scheduled.
    settings, state = use(FAKE_FILES="8", FAKE_HOLD_AFTER="2")
    for _ in range(2):
        scheduler.sync_scope.delay("fake", "0", "a")
    wait_for(lambda: counter(state, "fake", "held") == 1 and metric(state, "kmrl_lock_skips_total", source="fake") == 1,
             what="one run under way and one lock skip")
    release_held_runs(state, "fake")
    wait_for(lambda: metric(state, "kmrl_runs_total", source="fake", state="ok") == 1, what="the held run to finish")
    assert metric(state, "kmrl_lock_skips_total", source="fake") == 1
    assert counter(state, "fake", "runs") == 1
    assert outbox_documents(settings) == 8
    assert metric(state, "kmrl_documents_total", source="fake", outcome="new") == 8


def test_a_run_past_its_budget_saves_its_cursor_and_the_next_run_resumes(use):
    settings, state = use(FAKE_FILES="10", FAKE_DELAY="0.4")
    # A 12 s soft limit leaves a 2 s budget (10 s margin): the run stops at a safe point.
    scheduler.sync_scope.apply_async(args=("fake", "0", "a"), soft_time_limit=12, time_limit=20)
    wait_for(lambda: state.get_status("fake", "a").get("state") == "partial", what="a partial run")
    cursor = state.get_cursor("fake", "a")
    assert 1 <= cursor < 10
    scheduler.sync_scope.delay("fake", "0", "a")
    wait_for(lambda: state.get_cursor("fake", "a") == 10 and state.get_status("fake", "a").get("state") == "ok",
             timeout=30, what="the resumed run to finish")
    assert outbox_documents(settings) == 10
    assert metric(state, "kmrl_documents_total", source="fake", outcome="duplicate") == 0


def test_refused_credentials_and_throttling_are_recorded_and_not_retried(use):
    _, state = use(FAKEFLAKY_MODE="throttled")
    scheduler.sync_scope.delay("fakeauth", "0", "a")
    scheduler.sync_scope.delay("fakeflaky", "0", "a")
    wait_for(lambda: state.get_status("fakeauth", "*").get("state") == "auth_failed", what="auth_failed status")
    wait_for(lambda: state.get_status("fakeflaky", "*").get("state") == "throttled", what="throttled status")
    assert "refused the password" in state.get_status("fakeauth", "*")["last_error"]
    time.sleep(2.5)  # a first retry would have come within about a second
    assert counter(state, "fakeauth", "connects") == 1
    assert counter(state, "fakeflaky", "connects") == 1  # the next tick is the retry
    # A refusal counts as a failed run (kmrl_scope_failures_in_a_row); a pause does not.
    assert state.get_status("fakeauth", "*")["failures_in_a_row"] == "1"
    assert "failures_in_a_row" not in state.get_status("fakeflaky", "*")


def test_settings_that_cannot_build_a_connector_are_a_config_error_not_retried(use):
    _, state = use(FAKE_MODE="config")
    scheduler.sync_scope.delay("fake", "0", "a")
    wait_for(lambda: state.get_status("fake", "*").get("state") == "config_error", what="config_error status")
    assert "FAKE_URL" in state.get_status("fake", "*")["last_error"]
    scheduler.tick.delay("fake")
    time.sleep(1.5)
    assert counter(state, "fake", "connects") == 0
    # The run and the tick each failed: the alert on failed runs in a row counts both.
    assert state.get_status("fake", "*")["failures_in_a_row"] == "2"


def test_a_transient_failure_is_retried_with_backoff_until_it_succeeds(use):
    settings, state = use(FAKEFLAKY_MODE="transient:2", FAKEFLAKY_FILES="2")
    scheduler.sync_scope.delay("fakeflaky", "0", "a")
    wait_for(lambda: state.get_status("fakeflaky", "a").get("state") == "ok", timeout=20,
             what="success after two retries")
    assert counter(state, "fakeflaky", "connects") == 3
    assert outbox_documents(settings) == 2


def test_health_task_stores_each_source_state(use):
    _, state = use(FAKEFLAKY_FILES="1")
    now = time.time()
    state.update_status("fake", "a", {"state": "ok", "last_success": now - 3 * 300 - 60})
    state.update_status("fakeflaky", "a", {"state": "throttled", "last_success": now - 60,
                                           "throttled_until": now + 600})
    scheduler.health.delay()
    report = wait_for(lambda: load_report(state), what="the stored health report")
    sources = {s["source"]: s for s in report["sources"]}
    assert report["redis"]["ok"] and report["hub"]["ok"] and not report["ok"]
    assert sources["fake"]["state"] == "stale"
    assert sources["fakeauth"]["state"] == "auth_failed" and "refused" in sources["fakeauth"]["detail"]
    assert sources["fakeflaky"]["state"] == "throttled"
    assert "email" not in sources  # not configured: skipped
    _, gauges = state.metrics()
    assert gauges[metric_field("kmrl_source_healthy", {"source": "fake"})] == 0.0


def test_cleanup_task_applies_retention(use, tmp_path):
    settings, state = use(RETENTION_DEADLETTER_DAYS="30", RETENTION_HISTORY_DAYS="90")
    old = time.time() - 100 * 86400  # past every retention below
    kept_dir = Path(settings.deadletter_dir) / "fake"
    kept_dir.mkdir(parents=True)
    for source_id, failed_at in (("old", old), ("new", time.time())):
        path = kept_dir / f"{source_id}.bin"
        path.write_bytes(b"%PDF")
        state.add_dead_letter(DeadLetter("fake", "a", source_id, "422", bytes_path=str(path),
                                         first_failed_at=failed_at, last_failed_at=failed_at))
    spool = Path(settings.spool_dir)
    spool.mkdir(parents=True)
    (spool / "kmrl-spool-stale").write_bytes(b"x")
    os.utime(spool / "kmrl-spool-stale", (old, old))
    (spool / "kmrl-spool-live").write_bytes(b"x")
    state.append_history("fake", "a", {"ended_at": old})
    state.append_history("fake", "a", {"ended_at": time.time()})
    results = redis.Redis.from_url(settings.result_backend)
    results.set("celery-task-meta-ancient", json.dumps({"status": "SUCCESS", "date_done": "2020-01-01T00:00:00+00:00"}))
    scheduler.cleanup.delay()
    wait_for(lambda: not results.exists("celery-task-meta-ancient"), what="the cleanup")
    assert [e.source_id for e in state.list_dead_letters("fake")] == ["new"]
    assert sorted(p.name for p in kept_dir.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in spool.iterdir()) == ["kmrl-spool-live"]
    assert state.redis.llen(state.key("history", "fake", "a")) == 1

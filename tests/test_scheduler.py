"""The beat table, the Celery settings, the source registry and the health rules (no worker needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from celery.schedules import crontab, schedule

import scheduler
from base.contract import HealthResult
from base.health import scope_health, source_health
from config.celery_config import celery_settings, every, retry_policy
from config.settings import Settings
from connectors import registry
from tests.scheduler_fakes import FAKE_SOURCES, FakeSource
from utils.errors import ConfigError


def settings_with(**env: str) -> Settings:
    return Settings(environ=env)


def test_beat_table_has_the_original_intervals_and_each_entry_expires_after_its_period():
    table = scheduler.beat_schedule(settings_with())
    expected = {"sync-email": ("*/5", 300), "sync-whatsapp": ("*/10", 600), "sync-maximo": ("*/15", 900),
                "sync-sharepoint": ("*/30", 1800)}
    for name, (minute, period) in expected.items():
        entry = table[name]
        assert entry["task"] == "kmrl.tick" and entry["args"] == (name.removeprefix("sync-"),)
        assert isinstance(entry["schedule"], crontab) and entry["schedule"]._orig_minute == minute
        assert entry["options"] == {"expires": period}
    assert table["health-check"]["task"] == "kmrl.health"
    assert table["health-check"]["schedule"]._orig_minute == 0 and table["health-check"]["schedule"]._orig_hour == "*"
    assert table["health-check"]["options"] == {"expires": 3600}
    assert table["cleanup"]["task"] == "kmrl.cleanup" and table["cleanup"]["options"] == {"expires": 86400}


def test_cleanup_at_two_in_kolkata_fires_at_twenty_thirty_utc():
    entry = scheduler.beat_schedule(settings_with())["cleanup"]["schedule"]
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    due = crontab(hour=entry._orig_hour, minute=entry._orig_minute, app=scheduler.app, nowfun=lambda: now)
    last_run = now - timedelta(minutes=1)
    fires_at = now + due.remaining_estimate(last_run)
    assert (fires_at.hour, fires_at.minute) == (20, 30)
    assert scheduler.app.conf.timezone == "Asia/Kolkata" and scheduler.app.conf.enable_utc is True


def test_intervals_are_overridable_by_env_and_zero_leaves_a_source_out():
    table = scheduler.beat_schedule(settings_with(EMAIL_SYNC_MINUTES="2", SHAREPOINT_SYNC_MINUTES="0",
                                                  MAXIMO_SYNC_MINUTES="120", WHATSAPP_SYNC_MINUTES="7",
                                                  CLEANUP_AT="03:15"))
    assert table["sync-email"]["schedule"]._orig_minute == "*/2" and table["sync-email"]["options"]["expires"] == 120
    assert "sync-sharepoint" not in table
    assert table["sync-maximo"]["schedule"]._orig_hour == "*/2"
    odd = table["sync-whatsapp"]["schedule"]
    assert not isinstance(odd, crontab) and isinstance(odd, schedule) and odd.run_every == timedelta(minutes=7)
    assert (table["cleanup"]["schedule"]._orig_hour, table["cleanup"]["schedule"]._orig_minute) == (3, 15)


@pytest.mark.parametrize("env", [{"EMAIL_SYNC_MINUTES": "five"}, {"CLEANUP_AT": "25:00"},
                                 {"HEALTH_CHECK_MINUTES": "-1"}])
def test_a_bad_interval_is_a_config_error_naming_the_variable(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        scheduler.beat_schedule(settings_with(**env))


def test_every_keeps_clock_aligned_minutes():
    assert every(5)._orig_minute == "*/5"
    assert every(60)._orig_hour == "*" and every(60)._orig_minute == 0
    with pytest.raises(ValueError):
        every(0)


def test_reliability_settings_follow_the_reference():
    conf = celery_settings(settings_with(), longest_hard_limit=scheduler.longest_hard_limit())
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert conf["worker_max_tasks_per_child"] == 200 and conf["worker_max_memory_per_child"] == 512000
    vt = conf["visibility_timeout"]
    assert vt > scheduler.longest_hard_limit() == 1740
    assert conf["broker_transport_options"]["visibility_timeout"] == vt
    assert conf["result_backend_transport_options"]["visibility_timeout"] == vt
    assert conf["broker_transport_options"]["unacked_restore_interval"] == 10
    assert conf["broker_transport_options"]["unacked_restore_throttle"] == 1
    assert conf["beat_scheduler"] == "utils.beat_scheduler.ResilientRedBeatScheduler"
    assert conf["redbeat_lock_timeout"] > conf["beat_max_loop_interval"]
    policy = retry_policy(settings_with(), longest_hard_limit=scheduler.longest_hard_limit())
    assert policy.backoff_max <= vt // 4 and policy.max_retries == 5


def test_broker_results_beat_and_state_use_separate_databases_of_redis_url():
    settings = Settings.from_env({"REDIS_URL": "redis://cache.kmrl:6379/0"})
    conf = celery_settings(settings, longest_hard_limit=1740)
    assert conf["broker_url"].endswith("/0") and conf["result_backend"].endswith("/1")
    assert conf["redbeat_redis_url"].endswith("/2") and settings.state_redis_url.endswith("/3")


def test_task_time_limits_and_retries_are_declared_per_task():
    sync = scheduler.app.tasks["kmrl.sync_scope"]
    assert sync.acks_late and sync.ignore_result
    assert sync.time_limit == 1740 and sync.soft_time_limit == 1500  # the longest source; ticks send their own
    assert sync.autoretry_for and all(not issubclass(ConfigError, cls) for cls in sync.autoretry_for)
    for name in ("kmrl.tick", "kmrl.health", "kmrl.cleanup"):
        task = scheduler.app.tasks[name]
        assert task.ignore_result and task.soft_time_limit < task.time_limit


def test_a_run_stops_well_before_its_soft_limit():
    for source in registry.SOURCES.values():
        budget = scheduler.run_budget(source.soft_time_limit)
        assert 0 < budget <= source.soft_time_limit - 10


def test_configured_sources_skip_unconfigured_ones_with_one_log_line(caplog):
    registry._not_configured_logged.clear()
    settings = settings_with(MAXIMO_URL="https://maximo.kmrl.co.in")
    with caplog.at_level("INFO"):
        assert registry.configured_sources(settings) == ["maximo"]
        registry.configured_sources(settings)
    skipped = [r.getMessage() for r in caplog.records if "source_not_configured" in r.getMessage()]
    assert len(skipped) == 3  # email, whatsapp, sharepoint: once each, however often asked
    assert any("EMAIL_HOST" in line for line in skipped)


def test_a_connector_module_that_cannot_import_stops_only_its_source():
    sources = registry.sources_with(registry.Source("broken", "connectors.no_such_module:Nothing"))
    with pytest.raises(registry.SourceUnavailable, match="no_such_module"):
        registry.build_connectors("broken", settings_with(), sources=sources)
    assert registry.build_connectors("maximo", settings_with(MAXIMO_URL="https://maximo.kmrl.co.in"),
                                     sources=sources)


def test_several_instances_are_built_and_found_by_instance_id(settings):
    env = {"FAKE_INSTANCES": "finance,ops", "FAKE_SCOPES": "inbox"}
    built = registry.build_connectors("fake", Settings(**{**settings.__dict__, "environ": env}),
                                      sources=registry.sources_with(FAKE_SOURCES[0]))
    assert [registry.instance_id(c, i) for i, c in enumerate(built)] == ["finance", "ops"]
    ops = registry.find_instance(built, "ops")
    assert isinstance(ops, FakeSource) and ops.scopes() == ["ops-inbox"]
    with pytest.raises(ConfigError):
        registry.find_instance(built, "hr")


def test_the_service_table_is_read_only_and_another_table_leaves_it_as_it_is():
    with pytest.raises(TypeError):
        registry.SOURCES["fake"] = FAKE_SOURCES[0]  # type: ignore[index]
    replaced = registry.Source("maximo", "tests.scheduler_fakes:FakeSource")
    table = registry.sources_with(*FAKE_SOURCES, replaced)
    assert list(table) == [*registry.SOURCES, *(s.name for s in FAKE_SOURCES)]
    assert table["maximo"] is replaced and registry.SOURCES["maximo"].target.startswith("connectors.")
    assert "fake" not in registry.SOURCES
    with pytest.raises(ConfigError, match="fake"):
        registry.get_source("fake")


def test_unknown_source_names_the_known_ones():
    with pytest.raises(ConfigError, match="email"):
        registry.get_source("telegram")


# -- health rules -----------------------------------------------------------------------------------

NOW = 1_750_000_000.0


def test_scope_older_than_three_intervals_is_stale():
    fresh = scope_health("a", {"state": "ok", "last_success": str(NOW - 899)}, interval_seconds=300, now=NOW)
    stale = scope_health("a", {"state": "ok", "last_success": str(NOW - 901)}, interval_seconds=300, now=NOW)
    assert fresh.state == "healthy" and stale.state == "stale" and stale.lag_seconds == pytest.approx(901)


def test_scope_that_never_succeeded_is_stale_from_its_first_run():
    status = {"state": "error", "last_run_start": str(NOW - 3600)}
    assert scope_health("a", status, interval_seconds=300, now=NOW).state == "stale"
    assert scope_health("a", status, interval_seconds=None, now=NOW).state == "healthy"


def test_throttled_and_refused_scopes_say_so():
    throttled = {"state": "throttled", "last_success": str(NOW - 10), "throttled_until": str(NOW + 60)}
    refused = {"state": "auth_failed", "last_error": "AADSTS7000215", "last_success": str(NOW - 10)}
    assert scope_health("d", throttled, interval_seconds=1800, now=NOW).state == "throttled"
    assert scope_health("d", refused, interval_seconds=1800, now=NOW).state == "auth_failed"


def test_source_state_is_the_worst_of_its_check_and_scopes():
    ok = [("0", HealthResult(True, "healthy", "login ok"))]
    statuses = {"a": {"state": "ok", "last_success": str(NOW - 10)},
                "b": {"state": "ok", "last_success": str(NOW - 10_000)}}
    assert source_health("email", ok, statuses, interval_seconds=300, now=NOW).state == "stale"
    refused = [("0", HealthResult(False, "auth_failed", "password refused"))]
    health = source_health("email", refused, statuses, interval_seconds=300, now=NOW)
    assert health.state == "auth_failed" and "password refused" in health.detail
    down = [("0", HealthResult(False, "unreachable", "connection refused"))]
    assert source_health("email", down, {}, interval_seconds=300, now=NOW).state == "degraded"


def test_a_connect_failure_is_superseded_by_a_later_success():
    check = [("0", HealthResult(True, "healthy", "ok"))]
    statuses = {"*": {"state": "auth_failed", "last_run_end": str(NOW - 600)},
                "a": {"state": "ok", "last_success": str(NOW - 60)}}
    assert source_health("email", check, statuses, interval_seconds=300, now=NOW).state == "healthy"
    statuses["*"]["last_run_end"] = str(NOW - 30)
    assert source_health("email", check, statuses, interval_seconds=300, now=NOW).state == "auth_failed"

"""Retention rules of the daily cleanup (base/cleanup.py), one leftover at a time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import redis

import scheduler
from base.cleanup import (
    Retention,
    purge_abandoned_outbox_writes,
    purge_orphaned_bytes,
    purge_outbox,
    purge_stale_results,
)
from base.state import DeadLetter
from config.settings import Settings
from tests.conftest import make_settings
from utils.errors import ConfigError

DAY = 86400
SHA_OLD, SHA_NEW = "a" * 64, "b" * 64


def aged(path: Path, days: float) -> Path:
    when = time.time() - days * DAY
    os.utime(path, (when, when))
    return path


def test_retention_defaults_and_the_outbox_is_kept_unless_asked():
    retention = Retention.from_settings(Settings())
    assert (retention.deadletter_days, retention.spool_days, retention.history_days) == (30, 1, 90)
    assert retention.outbox_days is None
    assert Retention.from_settings(Settings(environ={"OUTBOX_RETENTION_DAYS": "365"})).outbox_days == 365


@pytest.mark.parametrize("value", ["0", "-3", "a month"])
def test_a_bad_retention_is_a_config_error_naming_the_variable(value):
    with pytest.raises(ConfigError, match="RETENTION_HISTORY_DAYS"):
        Retention.from_settings(Settings(environ={"RETENTION_HISTORY_DAYS": value}))


def test_outbox_purge_removes_only_old_document_folders(tmp_path):
    for name in (SHA_OLD, SHA_NEW, "_deleted", ".tmp-abc"):
        (tmp_path / name).mkdir()
    for name in (SHA_OLD, "_deleted", ".tmp-abc"):
        aged(tmp_path / name, 400)
    assert purge_outbox(str(tmp_path), older_than=time.time() - 365 * DAY) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SHA_NEW, "_deleted", ".tmp-abc"])


def test_abandoned_outbox_writes_are_removed_after_a_day(tmp_path):
    for name in (SHA_OLD, ".tmp-crashed", ".tmp-writing"):
        (tmp_path / name).mkdir()
    aged(tmp_path / SHA_OLD, 3)
    aged(tmp_path / ".tmp-crashed", 2)
    assert purge_abandoned_outbox_writes(str(tmp_path), older_than=time.time() - DAY) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SHA_OLD, ".tmp-writing"])


def test_cleanup_leaves_the_outbox_alone_without_an_outbox_retention(tmp_path, redis_url):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / SHA_OLD).mkdir()
    aged(outbox / SHA_OLD, 4000)
    settings = make_settings(tmp_path, redis_url, result_backend=redis_url)
    scheduler.service.reset(settings)
    try:
        assert scheduler.cleanup()["outbox"] == 0 and (outbox / SHA_OLD).is_dir()
        scheduler.service.reset(make_settings(tmp_path, redis_url, result_backend=redis_url,
                                              environ={"OUTBOX_RETENTION_DAYS": "3650"}))
        assert scheduler.cleanup()["outbox"] == 1 and not (outbox / SHA_OLD).exists()
    finally:
        scheduler.service.reset(Settings.from_env())


def test_orphaned_kept_bytes_go_once_old_and_unreferenced(tmp_path, state):
    folder = tmp_path / "deadletter" / "email"
    folder.mkdir(parents=True)
    for name in ("kept.bin", "kept.bin.txt", "orphan.bin", "orphan.bin.txt", "copy.bin.tmp", "fresh-orphan.bin"):
        (folder / name).write_bytes(b"x")
    for name in ("kept.bin", "kept.bin.txt", "orphan.bin", "orphan.bin.txt", "copy.bin.tmp"):
        aged(folder / name, 5)
    state.add_dead_letter(DeadLetter("email", "ops/INBOX", "uid-1", "422", bytes_path=str(folder / "kept.bin")))
    removed = purge_orphaned_bytes(state, str(tmp_path / "deadletter"), older_than=time.time() - DAY)
    assert removed == 3
    assert sorted(p.name for p in folder.iterdir()) == ["fresh-orphan.bin", "kept.bin", "kept.bin.txt"]


def test_only_results_without_a_ttl_and_past_expiry_are_deleted(redis_client: redis.Redis):
    old = json.dumps({"status": "SUCCESS", "date_done": "2020-01-01T00:00:00"})  # naive: read as UTC
    recent = json.dumps({"status": "SUCCESS", "date_done": "2999-01-01T00:00:00+00:00"})
    redis_client.set("celery-task-meta-old", old)
    redis_client.set("celery-task-meta-old-with-ttl", old, ex=600)
    redis_client.set("celery-task-meta-recent", recent)
    redis_client.set("celery-task-meta-garbled", "{not json")
    assert purge_stale_results(redis_client, older_than=time.time() - DAY) == 1
    assert sorted(redis_client.keys("celery-task-meta-*")) == [
        "celery-task-meta-garbled", "celery-task-meta-old-with-ttl", "celery-task-meta-recent"]

"""ResilientRedBeatScheduler in this process, on real Redis: the lock taken by another beat while this
one could not renew it, and a Redis that does not answer at start and at shutdown. (A real beat
process through a Redis outage: tests/reliability/test_beat_redis_outage.py.)

Broker db 5, RedBeat db 7 (tests/conftest.py); a private redis-server for the stopped-Redis cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.schedules import schedule
from redbeat.schedulers import RedBeatSchedulerEntry

from tests.conftest import flushed_db_url
from tests.reliability.redis_server import PrivateRedis
from utils.beat_scheduler import ResilientRedBeatScheduler

PROBE_TASK = "kmrl.beat_probe"
LOCK = "redbeat::lock"


def beat_app(broker_url: str, beat_url: str, table: dict[str, dict[str, object]] | None = None) -> Celery:
    app = Celery("beat-test")
    app.conf.update(broker_url=broker_url, redbeat_redis_url=beat_url, redbeat_lock_timeout=5,
                    beat_max_loop_interval=1, redbeat_redis_options={"socket_connect_timeout": 1,
                                                                     "socket_timeout": 5},
                    beat_schedule=table or {}, timezone="Asia/Kolkata", enable_utc=True)
    return app


def make_due(app: Celery) -> None:
    """The probe entry, last run a day ago: the next tick of the beat holding the lock sends it."""
    RedBeatSchedulerEntry("probe", PROBE_TASK, schedule(timedelta(seconds=60)), app=app).save().reschedule(
        last_run_at=datetime.now(UTC) - timedelta(days=1))


@pytest.fixture
def urls() -> tuple[str, str]:
    return flushed_db_url(5), flushed_db_url(7)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis") as server:
        yield server


def test_a_beat_whose_lock_another_beat_took_stands_by_and_sends_nothing_until_it_is_free(urls, caplog):
    broker_url, beat_url = urls
    app = beat_app(broker_url, beat_url)
    broker = redis.Redis.from_url(broker_url)
    beat_redis = redis.Redis.from_url(beat_url, decode_responses=True)
    scheduler = ResilientRedBeatScheduler(app=app, max_interval=1)
    make_due(app)
    scheduler.tick()
    assert broker.llen("celery") == 1 and beat_redis.get(LOCK) == scheduler.lock.local.token.decode()
    # Our lock expired while Redis did not answer and a standby beat took over meanwhile.
    beat_redis.set(LOCK, "the-other-beat", px=60_000)
    make_due(app)
    with caplog.at_level("INFO"):
        scheduler.tick()  # finds the lock gone: no exception (RedBeat raised LockNotOwnedError and exited)
        assert scheduler.tick() == 1.0  # stands by for a loop
        scheduler.tick()
    assert broker.llen("celery") == 1, "a standby beat sent a task: two beats would send everything twice"
    assert beat_redis.get(LOCK) == "the-other-beat"
    messages = caplog.text
    assert "beat_lock_lost" in messages and messages.count("beat_standby") == 1
    beat_redis.delete(LOCK)  # the other beat stopped (or its lock expired)
    scheduler.tick()
    assert broker.llen("celery") == 2 and beat_redis.get(LOCK) == scheduler.lock.local.token.decode()
    scheduler.close()
    assert not beat_redis.exists(LOCK)
    broker.close()
    beat_redis.close()


def test_a_beat_started_while_redis_is_down_waits_for_it_and_shuts_down_without_it(private_redis, caplog):
    table = {"cleanup": {"task": "kmrl.cleanup", "schedule": schedule(timedelta(hours=24))}}
    app = beat_app(private_redis.url(5), private_redis.url(7), table)
    private_redis.stop()
    with caplog.at_level("INFO"):
        scheduler = ResilientRedBeatScheduler(app=app, max_interval=1)  # RedBeat raised ConnectionError here
        assert scheduler.tick() == 1.0
        assert "beat_redis_unreachable" in caplog.text
        private_redis.start()
        scheduler.tick()
        assert "beat_redis_back" in caplog.text
    beat_redis = redis.Redis.from_url(private_redis.url(7), decode_responses=True)
    assert beat_redis.exists(LOCK) and beat_redis.zscore("redbeat::schedule", "redbeat:cleanup")
    beat_redis.close()
    private_redis.stop()
    with caplog.at_level("INFO"):
        scheduler.close()  # RedBeat raised ConnectionError asking Redis whether it still held the lock
    assert "beat_lock_not_released" in caplog.text


def test_an_entry_whose_run_could_not_be_recorded_stays_due_and_is_sent_when_redis_returns(private_redis, caplog):
    app = beat_app(private_redis.url(5), private_redis.url(7))
    broker = redis.Redis.from_url(private_redis.url(5))

    class RedisStopsWhileSending(ResilientRedBeatScheduler):
        stop_redis = True

        def reserve(self, entry):  # Redis goes away between reading the schedule and recording the run
            if self.stop_redis:
                self.stop_redis = False
                private_redis.stop()
            return super().reserve(entry)

    scheduler = RedisStopsWhileSending(app=app, max_interval=1)
    scheduler.tick()  # takes the lock
    make_due(app)
    with caplog.at_level("INFO"):
        assert scheduler.tick() == 1.0  # an outage, not a crash and not a "Message Error" traceback
    assert "beat_redis_unreachable" in caplog.text and "Message Error" not in caplog.text
    private_redis.start()
    scheduler.tick()
    assert [m for m in broker.lrange("celery", 0, -1) if PROBE_TASK.encode() in m], "the due entry was lost"
    scheduler.close()
    broker.close()


def test_a_closed_scheduler_never_ticks_again_nor_takes_the_lock_back(urls):
    broker_url, beat_url = urls
    app = beat_app(broker_url, beat_url)
    beat_redis = redis.Redis.from_url(beat_url)
    scheduler = ResilientRedBeatScheduler(app=app, max_interval=1)
    scheduler.tick()
    assert beat_redis.exists(LOCK)
    scheduler.close()  # what celery beat's SIGTERM handler does before it raises SystemExit
    make_due(app)
    # That SystemExit is lost when the signal lands inside a __del__; the next tick must end the beat.
    with pytest.raises(SystemExit):
        scheduler.tick()
    broker = redis.Redis.from_url(broker_url)
    assert not beat_redis.exists(LOCK) and broker.llen("celery") == 0
    beat_redis.close()
    broker.close()

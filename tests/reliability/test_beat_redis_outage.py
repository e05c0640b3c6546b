"""Beat through a Redis outage: a real ``celery -A scheduler beat`` process against a private
redis-server that is stopped while the beat ticks and started again on the same port.

The beat runs with a one-second loop and a five-second RedBeat lock (BEAT_MAX_LOOP_INTERVAL,
REDBEAT_LOCK_TIMEOUT), and a RedBeat entry added by the test sends ``PROBE_TASK`` every second
(the production table has nothing that frequent); its messages are read from the broker queue.
Every wait is for something the test observes (a log line, a message, the lock's expiry, which
Redis itself keeps); the timeouts only bound a hang.

Broker db 5, RedBeat db 7, state db 8 of the private server (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.schedules import schedule
from redbeat.schedulers import RedBeatSchedulerEntry

from tests.reliability.redis_server import PrivateRedis
from tests.reliability.workers import INHERITED, ROOT

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

PROBE_TASK = "kmrl.outage_probe"
#: The beat's loop (seconds) and its RedBeat lock's timeout (seconds; the smallest the service allows).
LOOP_SECONDS = 1
LOCK_TIMEOUT = 5
#: Bounds on waits for what the test observes (a slow start under load, a hang), not expectations.
START_TIMEOUT = 90.0
EVENT_TIMEOUT = 60.0


class Beat:
    """``celery -A scheduler beat`` in its own process group; its output goes to ``log``."""

    def __init__(self, server: PrivateRedis, root: Path) -> None:
        self.log = root / "beat.out"
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.update({
            "PYTHONPATH": str(ROOT), "KMRL_ENV_FILE": "", "LOG_LEVEL": "INFO",
            "REDIS_URL": server.url(8), "STATE_REDIS_URL": server.url(8), "CELERY_BROKER_URL": server.url(5),
            "CELERY_RESULT_BACKEND": server.url(6), "REDBEAT_REDIS_URL": server.url(7),
            "BEAT_MAX_LOOP_INTERVAL": str(LOOP_SECONDS), "REDBEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            "EMAIL_SYNC_MINUTES": "0", "WHATSAPP_SYNC_MINUTES": "0", "MAXIMO_SYNC_MINUTES": "0",
            "SHAREPOINT_SYNC_MINUTES": "0", "HEALTH_CHECK_MINUTES": "0",
            "LOG_FILE": str(root / "logs" / "service.log"), "AUDIT_LOG": str(root / "logs" / "audit.log"),
            "SPOOL_DIR": str(root / "spool"), "DEADLETTER_DIR": str(root / "deadletter"),
            "HUB_OUTBOX_DIR": str(root / "outbox"),
        })
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "scheduler", "beat", "--loglevel=info"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, predicate: Callable[[], Any], what: str, *, timeout: float = EVENT_TIMEOUT) -> Any:
        """``predicate()`` once it is true; fails at once, with the beat's output, if the beat exits."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if not self.alive():
                raise AssertionError(f"the beat exited (code {self.process.returncode}) while waiting for "
                                     f"{what}\n--- beat output ---\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n--- beat output ---\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def logged(self, event: str) -> int:
        """How many times the beat logged ``event``."""
        return self.output().count(event)

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; its exit code."""
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def add_probe_entry(server: PrivateRedis) -> None:
    """A RedBeat entry sending PROBE_TASK every second, stored the way ``redbeat`` stores any entry."""
    app = Celery("outage-probe")
    app.conf.redbeat_redis_url = server.url(7)
    try:
        RedBeatSchedulerEntry("outage-probe", PROBE_TASK, schedule(timedelta(seconds=1)), app=app,
                              options={"ignore_result": True, "expires": 60}).save()  # as the service's entries
    finally:
        app.redbeat_redis.close()  # type: ignore[attr-defined]


def probes_queued(server: PrivateRedis) -> int:
    """PROBE_TASK messages waiting on the broker's default queue (0 while Redis does not answer)."""
    client = redis.Redis.from_url(server.url(5), socket_connect_timeout=1, socket_timeout=5)
    try:
        messages = client.lrange("celery", 0, -1)
    except redis.ConnectionError:
        return 0
    finally:
        client.close()
    return sum(1 for m in messages if json.loads(m)["headers"]["task"] == PROBE_TASK)


def beat_redis(server: PrivateRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url(7), decode_responses=True, socket_connect_timeout=1, socket_timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis") as private:
        yield private


@pytest.fixture
def beat(server: PrivateRedis, tmp_path: Path) -> Iterator[Beat]:
    add_probe_entry(server)
    process = Beat(server, tmp_path)
    try:
        process.wait_for(lambda: probes_queued(server) >= 1, "the beat to send its first probe",
                         timeout=START_TIMEOUT)
        yield process
    finally:
        process.kill()


def stop_redis_until_the_lock_expired(server: PrivateRedis, beat: Beat) -> None:
    """Stops Redis and keeps it down until the beat has met the outage and its lock has expired.

    The beat renews its lock (to LOCK_TIMEOUT seconds) only while Redis answers, so the lock
    expires at most LOCK_TIMEOUT seconds after Redis stopped; Redis drops it on its own clock.
    """
    server.stop()
    stopped_at = time.time()
    beat.wait_for(lambda: beat.logged("beat_redis_unreachable"), "the beat to tick into the outage")
    beat.wait_for(lambda: time.time() > stopped_at + LOCK_TIMEOUT + 1, "the beat's lock to expire in Redis")
    assert beat.alive()


def test_beat_lives_through_a_redis_outage_and_sends_again_when_redis_returns(server, beat):
    stop_redis_until_the_lock_expired(server, beat)
    server.start()  # same port, same append-only files
    client = beat_redis(server)
    broker = redis.Redis.from_url(server.url(5))
    broker.delete("celery")  # whatever is queued from now on was sent after Redis returned
    beat.wait_for(lambda: probes_queued(server) >= 2, "the beat to send probes again after Redis returned")
    assert beat.logged("beat_redis_back") == 1
    # The lock expired in the outage: the beat took it again instead of exiting on LockNotOwnedError.
    assert beat.logged("beat_lock_acquired") == 2 and client.exists("redbeat::lock")
    assert beat.stop() == 0
    assert not client.exists("redbeat::lock")  # released on shutdown: a standby need not wait
    output = beat.output()
    assert "Traceback" not in output and "critical" not in output, output[-4000:]
    client.close()
    broker.close()


def test_beat_reinstalls_its_table_when_redis_comes_back_empty(server, beat):
    stop_redis_until_the_lock_expired(server, beat)
    shutil.rmtree(server.directory / "appendonlydir")  # Redis restarts with none of its data
    server.start()
    client = beat_redis(server)
    beat.wait_for(lambda: client.exists("redbeat::lock") and client.zscore("redbeat::schedule", "redbeat:cleanup"),
                  "the beat to take its lock and install its static entries again")
    assert beat.logged("beat_lock_acquired") == 2
    add_probe_entry(server)  # an entry added at run time went with the data; the operator adds it again
    beat.wait_for(lambda: probes_queued(server) >= 1, "the beat to send from the new schedule")
    assert beat.alive() and beat.logged("beat_redis_back") == 1
    assert beat.stop() == 0
    client.close()

"""The beat scheduler: RedBeat that lives through a Redis outage and resumes when Redis returns.

Plain RedBeat dies on a lost Redis: ``tick()`` renews its lock and reads the schedule from Redis,
and the ``ConnectionError`` of either ends ``celery beat`` (``critical: beat raised exception``),
so nothing is scheduled again until someone restarts it. ``ResilientRedBeatScheduler`` (set as
``beat_scheduler`` in config/celery_config.py) keeps the process and its loop:

- A Redis that does not answer ends the tick early; the beat logs ``beat_redis_unreachable`` once
  per outage and tries again every ``OUTAGE_RETRY_INTERVAL`` (or its loop interval if shorter).
  Nothing is sent meanwhile and nothing due is lost: RedBeat records an entry's run in Redis before
  sending it, so an entry that could not be recorded stays due and is sent on the first tick after
  Redis returns (``beat_redis_back``).
- The lock: when it was lost during the outage (it expired, or Redis came back empty) the beat
  takes it again without waiting; when another beat took it meanwhile, this one stands by
  (``beat_standby``), sends nothing, and tries again every loop, as a second beat does at start.
- The schedule: after an outage, and whenever the lock is taken, the static entries are installed
  again (last run times kept where Redis still has them), so a Redis that came back without its
  data gets the beat table back.
- Start and shutdown: a Redis that does not answer at start is waited out by the loop the same way,
  and releasing the lock at shutdown does not fail on it.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from celery.beat import Scheduler, SchedulingError
from celery.signals import beat_init
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, acquire_distributed_beat_lock, get_redis
from redbeat.schedulers import logger as redbeat_logger
from redis.exceptions import LockError

from utils.logging import get_logger
from utils.tables import safe_url

log = get_logger("beat")

#: Errors that mean "Redis does not answer now" (BusyLoadingError, a Redis still reading its
#: append-only file after a restart, is a ConnectionError).
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, ConnectionError)
#: What may keep the lock from being released at shutdown (it expires by itself then).
SHUTDOWN_ERRORS: tuple[type[BaseException], ...] = (*REDIS_DOWN, LockError)
#: Longest wait between two attempts to reach Redis during an outage.
OUTAGE_RETRY_INTERVAL = 5.0  # seconds
#: While Redis stays down, ``beat_redis_still_unreachable`` is logged this often.
OUTAGE_REMINDER_INTERVAL = 300.0  # seconds


class ResilientRedBeatScheduler(RedBeatScheduler):
    """RedBeat whose ``tick()`` returns the time to the next attempt instead of raising when Redis
    does not answer or the lock was lost; see the module docstring for what happens when.

    Settings are RedBeat's (``redbeat_redis_url``, ``redbeat_lock_timeout``) and Celery's
    ``beat_max_loop_interval``.
    """

    #: The static entries must be (re)installed before the next tick sends anything.
    _needs_setup = True
    #: This beat took the lock and has not seen it lost since.
    _holds_lock = False
    _standing_by = False
    #: When the current outage was first seen (time.monotonic()), and when it was last logged.
    _down_since: float | None = None
    _down_logged_at = 0.0
    _lock: Any = None
    #: close() ran: the beat is shutting down and must not tick (or take the lock) again.
    _closed = False

    @property
    def lock(self) -> Any:
        """The redis-py lock (RedBeat's ``lock`` attribute); assigning one that is held marks it held."""
        return self._lock

    @lock.setter
    def lock(self, value: Any) -> None:
        self._lock = value
        self._holds_lock = value is not None

    @property
    def outage_retry_interval(self) -> float:
        return float(min(self.max_interval, OUTAGE_RETRY_INTERVAL))

    def setup_schedule(self) -> None:
        """Installs the static entries; a Redis that does not answer leaves that to a later tick."""
        try:
            self._install_schedule()
        except REDIS_DOWN as exc:
            self._outage(exc)

    def _install_schedule(self) -> None:
        super().setup_schedule()
        self._needs_setup = False

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        """Sends what is due; returns the seconds until the next tick (never raises for Redis)."""
        if self._closed:
            # Celery's SIGTERM handler closes the scheduler, then raises SystemExit from wherever the
            # signal landed; inside a __del__ (an AsyncResult's, say) that exception is swallowed and
            # the loop ticks on. Raise it again here, or a stopped beat would take its lock back.
            raise SystemExit()
        try:
            if not self._take_lock():
                return float(self.max_interval)
            if self._needs_setup:
                self._install_schedule()
            interval = float(super().tick(min=min, **kwargs))  # renews the lock, sends due entries
        except LockError as exc:  # LockNotOwnedError: it expired, or Redis came back without it
            self._recovered()  # Redis answered: the lock is what went
            self._holds_lock = False
            self._needs_setup = True
            log.warning("beat_lock_lost", lock=self.lock_key, error=str(exc))
            return self.outage_retry_interval
        except REDIS_DOWN as exc:
            self._outage(exc)
            return self.outage_retry_interval
        self._recovered()
        return interval

    def maybe_due(self, entry: Any, **kwargs: Any) -> Any:
        """Sends ``entry`` if it is due; the time until it is due next.

        Unlike RedBeat's, a Redis that does not answer while the run is recorded (before anything
        is sent) ends the tick as an outage: the entry stays due and is sent when Redis answers. A
        send that fails after that (the broker is down) is one error line: RedBeat has already
        counted that run, so this run of the entry is skipped and the next one goes as scheduled.
        """
        is_due, next_time_to_run = entry.is_due()
        if not is_due:
            return next_time_to_run
        redbeat_logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.apply_async(entry, **kwargs)
        except REDIS_DOWN:
            raise
        except SchedulingError as exc:
            log.error("beat_send_failed", entry=entry.name, task=entry.task, error=str(exc),
                      detail="this run is skipped; the next one is sent as scheduled")
        except Exception as exc:  # noqa: BLE001 - as RedBeat: one bad entry must not stop the others
            redbeat_logger.exception("Scheduler: Message Error: %s", exc)
        return next_time_to_run

    def _take_lock(self) -> bool:
        """True when this beat holds the lock (taking it if it is free), False while another does."""
        if not self.lock_key:
            return True
        if self._holds_lock:
            if self._needs_setup:  # after an outage: is it still ours? (LockNotOwnedError if not)
                self.lock.extend(int(self.lock_timeout))
            return True
        lock = self._lock if self._lock is not None else self._new_lock()
        if not lock.acquire(blocking=False):
            self._lock = lock
            self._recovered()
            if not self._standing_by:
                log.warning("beat_standby", lock=self.lock_key,
                            detail="another beat holds the lock; this one sends nothing until it is free")
                self._standing_by = True
            return False
        self.lock = lock
        self._needs_setup = True
        log.info("beat_lock_acquired", lock=self.lock_key, timeout=self.lock_timeout, was_standby=self._standing_by)
        self._standing_by = False
        return True

    def _new_lock(self) -> Any:
        """A lock like RedBeat's: its renewal resets the timeout instead of adding to it."""
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        return lock

    def _outage(self, exc: BaseException) -> None:
        now = time.monotonic()
        # What Redis held may be gone when it returns: the table is installed again then.
        self._needs_setup = True
        if self._down_since is None:
            self._down_since = self._down_logged_at = now
            log.warning("beat_redis_unreachable", redis=safe_url(self._redis_url),
                        error=f"{type(exc).__name__}: {exc}", retry_in=self.outage_retry_interval,
                        detail="nothing is sent until Redis answers; due entries stay due")
        elif now - self._down_logged_at >= OUTAGE_REMINDER_INTERVAL:
            self._down_logged_at = now
            log.warning("beat_redis_still_unreachable", redis=safe_url(self._redis_url),
                        down_seconds=round(now - self._down_since), error=f"{type(exc).__name__}: {exc}")

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.info("beat_redis_back", redis=safe_url(self._redis_url),
                     down_seconds=round(time.monotonic() - self._down_since, 1))
            self._down_since = None

    @property
    def _redis_url(self) -> str:
        return str(self.app.redbeat_conf.redis_url)

    def close(self) -> None:
        """Releases the lock if this beat still holds it; a Redis that does not answer leaves the
        lock to expire (a standby takes over after ``redbeat_lock_timeout``). The scheduler does not
        tick again after this."""
        self._closed = True
        try:
            super().close()
        except SHUTDOWN_ERRORS as exc:
            log.warning("beat_lock_not_released", lock=self.lock_key, error=f"{type(exc).__name__}: {exc}",
                        detail="it expires by itself")
            self.lock = None
            Scheduler.close(self)


def _acquire_lock_at_start(sender: Any = None, **kwargs: Any) -> None:
    """RedBeat's start-up lock (a blocking wait that a lost Redis turns into an exception), except
    for ``ResilientRedBeatScheduler``, which takes its lock in ``tick()``."""
    if not isinstance(sender.scheduler, ResilientRedBeatScheduler):
        acquire_distributed_beat_lock(sender=sender, **kwargs)


beat_init.disconnect(acquire_distributed_beat_lock)
beat_init.connect(_acquire_lock_at_start, weak=False)

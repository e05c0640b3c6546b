"""Celery settings for the scheduler: broker, results, RedBeat, reliability, and the beat table's
building blocks. Facts and reasons: ../shared/reference/celery-reliability.md.

Delivery is at least once: a message is acknowledged after its task ran (``task_acks_late``), a
worker killed mid-task gives its message back (``task_reject_on_worker_lost``; a lost whole
worker's unacked messages come back after the visibility timeout), and every run is safe to
repeat because the pipeline's cursor, lease and idempotent uploads make it so.

The visibility timeout must stay above the longest hard time limit, or a long run would be
delivered again while still running; it is set the same in the three places Celery reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery.schedules import crontab, schedule

from config.redis_tls import celery_tls_settings
from config.settings import Settings
from utils.errors import ConfigError
from utils.logging import get_logger

log = get_logger(__name__)

#: The service's clock for crontab entries (India has no DST; Celery keeps UTC internally).
TIMEZONE = "Asia/Kolkata"
#: Default visibility timeout; raised to twice the longest hard limit when that is longer.
DEFAULT_VISIBILITY_TIMEOUT = 3600  # seconds
#: How often kombu scans for unacked messages of dead workers, and on which sweep (kombu >= 5.7).
DEFAULT_UNACKED_RESTORE_INTERVAL = 10  # seconds
DEFAULT_UNACKED_RESTORE_THROTTLE = 1  # every sweep scans
#: RedBeat's lock: a standby beat takes over this long after the active one dies.
DEFAULT_REDBEAT_LOCK_TIMEOUT = 150  # seconds
#: Longest sleep of the beat loop (RedBeat renews its lock every loop).
DEFAULT_BEAT_MAX_LOOP_INTERVAL = 30  # seconds
#: How long a stored task result lives (Redis TTL).
DEFAULT_RESULT_EXPIRES = 86400  # seconds
#: A worker child is replaced after this many tasks or this much resident memory.
DEFAULT_MAX_TASKS_PER_CHILD = 200
DEFAULT_MAX_MEMORY_PER_CHILD = 512000  # KiB
#: Run-level retries of a transient failure: attempts and the longest backoff.
DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BACKOFF_MAX = 600  # seconds; kept at most a quarter of the visibility timeout
#: Time a worker gets on SIGTERM to finish or requeue its tasks.
SOFT_SHUTDOWN_TIMEOUT = 30.0  # seconds


@dataclass(frozen=True)
class TimeLimits:
    """A task's soft limit (``SoftTimeLimitExceeded`` is raised) and hard limit (the child is killed)."""

    soft: int  # seconds
    hard: int  # seconds


#: The tick lists a source's scopes (SharePoint asks Graph for drives) and fans out.
TICK_LIMITS = TimeLimits(120, 150)
#: The health check calls every configured source once.
HEALTH_LIMITS = TimeLimits(240, 300)
#: The cleanup scans dead letters, spool, history and results.
CLEANUP_LIMITS = TimeLimits(900, 1000)


def _int(settings: Settings, name: str, default: int, *, minimum: int = 0, unit: str = "seconds") -> int:
    """A whole number of ``unit`` (seconds, or what it counts: "retries", "KiB") of at least ``minimum``;
    SettingError naming the variable and the value otherwise."""
    return settings.reader.whole(name, default, what=f"a whole number of {unit}", minimum=minimum)


def visibility_timeout(settings: Settings, *, longest_hard_limit: int) -> int:
    """CELERY_VISIBILITY_TIMEOUT, default the larger of 3600 s and twice the longest hard limit."""
    default = max(DEFAULT_VISIBILITY_TIMEOUT, 2 * longest_hard_limit)
    return _int(settings, "CELERY_VISIBILITY_TIMEOUT", default, minimum=1)


#: The autoretry options that do not depend on the settings: exponential backoff, with jitter.
RETRY_BACKOFF_OPTIONS: dict[str, Any] = {"retry_backoff": True, "retry_jitter": True}


@dataclass(frozen=True)
class RetryPolicy:
    """Celery autoretry options for run-level transient failures (exponential backoff with jitter)."""

    max_retries: int
    backoff_max: int  # seconds

    def task_options(self) -> dict[str, Any]:
        return {**RETRY_BACKOFF_OPTIONS, "retry_backoff_max": self.backoff_max, "max_retries": self.max_retries}


def retry_policy(settings: Settings, *, longest_hard_limit: int) -> RetryPolicy:
    """TASK_MAX_RETRIES and TASK_RETRY_BACKOFF_MAX, the backoff capped well below the visibility
    timeout: a retry waits unacked in worker memory, and one longer than the timeout loops."""
    vt = visibility_timeout(settings, longest_hard_limit=longest_hard_limit)
    backoff = _int(settings, "TASK_RETRY_BACKOFF_MAX", DEFAULT_RETRY_BACKOFF_MAX, minimum=1)
    return RetryPolicy(max_retries=_int(settings, "TASK_MAX_RETRIES", DEFAULT_MAX_RETRIES, unit="retries"),
                       backoff_max=max(1, min(backoff, vt // 4)))


def celery_settings(settings: Settings, *, longest_hard_limit: int) -> dict[str, Any]:
    """The Celery configuration (lower-case setting names) for ``settings``.

    longest_hard_limit: the longest hard time limit of any task, in seconds; the visibility
    timeout is checked against it (a shorter one is logged, as tests use on purpose).
    """
    vt = visibility_timeout(settings, longest_hard_limit=longest_hard_limit)
    if vt <= longest_hard_limit:
        log.warning("visibility_timeout_below_hard_limit", visibility_timeout=vt, hard_limit=longest_hard_limit)
    transport = {
        "visibility_timeout": vt,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 25,
        "unacked_restore_interval": _int(settings, "CELERY_UNACKED_RESTORE_INTERVAL",
                                         DEFAULT_UNACKED_RESTORE_INTERVAL, minimum=1),
        "unacked_restore_throttle": _int(settings, "CELERY_UNACKED_RESTORE_THROTTLE",
                                         DEFAULT_UNACKED_RESTORE_THROTTLE, minimum=1, unit="sweeps"),
    }
    lock_timeout = _int(settings, "REDBEAT_LOCK_TIMEOUT", DEFAULT_REDBEAT_LOCK_TIMEOUT, minimum=5)
    loop = _int(settings, "BEAT_MAX_LOOP_INTERVAL", DEFAULT_BEAT_MAX_LOOP_INTERVAL, minimum=1)
    if loop >= lock_timeout:
        raise ConfigError(f"BEAT_MAX_LOOP_INTERVAL ({loop} s) must be shorter than REDBEAT_LOCK_TIMEOUT "
                          f"({lock_timeout} s), or the beat loses its lock between two loops")
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a broker outage at start-up is waited out
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,  # the cursor is saved; the next tick resumes
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_max_tasks_per_child": _int(settings, "WORKER_MAX_TASKS_PER_CHILD", DEFAULT_MAX_TASKS_PER_CHILD,
                                           minimum=1, unit="tasks"),
        "worker_max_memory_per_child": _int(settings, "WORKER_MAX_MEMORY_PER_CHILD_KB", DEFAULT_MAX_MEMORY_PER_CHILD,
                                            minimum=1, unit="KiB"),
        "worker_soft_shutdown_timeout": SOFT_SHUTDOWN_TIMEOUT,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_soft_time_limit": CLEANUP_LIMITS.soft,
        "task_time_limit": CLEANUP_LIMITS.hard,
        "result_expires": _int(settings, "CELERY_RESULT_EXPIRES", DEFAULT_RESULT_EXPIRES, minimum=60),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": TIMEZONE,
        "enable_utc": True,
        # RedBeat that waits out a Redis outage instead of exiting (utils/beat_scheduler.py).
        "beat_scheduler": "utils.beat_scheduler.ResilientRedBeatScheduler",
        "beat_max_loop_interval": loop,
        "redbeat_redis_url": settings.redbeat_redis_url,
        "redbeat_lock_timeout": lock_timeout,
        # rediss:// URLs: TLS verified against the system CAs or REDIS_CA_FILE (config/redis_tls.py).
        **celery_tls_settings(broker_url=settings.broker_url, result_backend=settings.result_backend,
                              redbeat_redis_url=settings.redbeat_redis_url, ca_file=settings.redis_ca_file),
        # No RedBeat "retry_period": a call that retried for a minute would only hide an outage from the
        # scheduler, whose loop is the retry (it logs the outage and tries again every few seconds).
        "redbeat_redis_options": {"socket_connect_timeout": 5, "socket_timeout": 30, "health_check_interval": 25},
    }


def every(minutes: int) -> schedule:
    """A schedule firing every ``minutes`` (> 0), on clock-aligned minutes when that is possible.

    Divisors of 60 become ``crontab(minute="*/n")`` (5 -> :00, :05, ...); whole hours dividing a
    day become ``crontab(minute=0, hour="*/h")`` (60 -> every hour on the hour); anything else is
    a plain interval.
    """
    if minutes <= 0:
        raise ValueError("an interval needs at least one minute")
    if minutes < 60 and 60 % minutes == 0:
        return crontab(minute=f"*/{minutes}")
    if minutes % 60 == 0 and (24 * 60) % minutes == 0:
        hours = minutes // 60
        return crontab(minute=0, hour="*" if hours == 1 else f"*/{hours}")
    return schedule(timedelta(minutes=minutes))


def daily_at(settings: Settings, name: str, default: str) -> tuple[crontab, int]:
    """``crontab`` at ``HH:MM`` (service time zone) from variable ``name``, and its period (a day)."""
    h, m = settings.reader.time_of_day(name, default)
    return crontab(hour=h, minute=m), 24 * 3600


def beat_entry(task: str, run_every: schedule, period: int, args: tuple[Any, ...] = ()) -> dict[str, Any]:
    """One beat table entry; it expires after its period so ticks missed while workers were down
    do not pile up and run at once."""
    return {"task": task, "schedule": run_every, "args": args, "options": {"expires": period}}

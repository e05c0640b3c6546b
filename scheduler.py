"""The Celery app: the beat table and the tick, sync, health and cleanup tasks.

    celery -A scheduler worker --loglevel=info --concurrency=2
    celery -A scheduler beat --loglevel=info

The unit of work is one (connector, scope) (DESIGN.md "Scale"). Beat sends a source's *tick*; the
tick lists the scopes of each connector instance (cached briefly in Redis, since SharePoint asks
Graph for its drives) and sends one ``sync_scope`` task per scope. A scope run takes the scope's
lease in the pipeline (a held scope ends as ``locked``) and stops at a deadline below its soft
time limit, saving its cursor (``partial``), so the next tick resumes it.

Failures: a transient run failure (source or Hub unreachable, broker or Redis down) is retried with
exponential backoff and jitter; a config error (bad settings, refused credentials) is recorded in
the scope's status and not retried; a throttled or paused run waits for the next tick. Task
arguments are names only (source, instance, scope), never a secret.

Importing this module reads no setting. The app's configuration (``celery_config``) is built from
the environment's settings when Celery first reads it (a variable that cannot be used is then one
line, ``settings: ...``, and exit code 2 from ``celery -A scheduler beat|worker``);
``configure(settings)`` points the app and the tasks elsewhere before anything is sent (the CLI and
tests use it), and may hand them another table of sources (tests hand one with fake sources).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

import click
import kombu.exceptions
import redis
from celery import Celery, bootsteps, signals
from celery.exceptions import SoftTimeLimitExceeded

from base.base_connector import BaseConnector
from base.cleanup import (
    DAY,
    Retention,
    expire_held,
    purge_abandoned_outbox_writes,
    purge_abandoned_scopes,
    purge_dead_letters,
    purge_expired_held,
    purge_files,
    purge_orphaned_bytes,
    purge_orphaned_held_bytes,
    purge_outbox,
    purge_stale_results,
)
from base.contract import HealthResult, ScopeState
from base.health import HealthReport, source_health, store_report
from base.metric_buffer import Increments
from base.pool import shutdown_shared_pool
from base.schema import migrate
from base.state import StateStore
from base.triggers import SyncTriggers
from config.celery_config import (
    CLEANUP_LIMITS,
    HEALTH_LIMITS,
    RETRY_BACKOFF_OPTIONS,
    TICK_LIMITS,
    beat_entry,
    celery_settings,
    daily_at,
    every,
    retry_policy,
)
from config.redis_tls import redis_tls_kwargs
from config.settings import Settings
from connectors import registry
from connectors import sharepoint_subscriptions as graph_push
from connectors.service import Service
from connectors.sharepoint_connector import SharePointConnector
from utils.daemon_files import DetachedFilesUnusable, prepare_detached_files
from utils.errors import ConfigError, SpoolFullError, ThrottledError, TransientError
from utils.logging import configure_logging, get_logger, mask_text
from utils.tables import safe_url

log = get_logger("scheduler")

#: How long an instance's scope list stays in Redis (``scopes:*``), shared by every worker's tick,
#: before a tick asks the source again. Not the SharePoint connector's per-process site cache.
SHARED_SCOPE_LIST_TTL_SECONDS = 600  # SCOPE_CACHE_SECONDS
#: A scope run stops at its soft limit minus this share of it (at least ``MIN_DEADLINE_MARGIN``).
DEADLINE_MARGIN = 0.1
MIN_DEADLINE_MARGIN = 10  # seconds
#: Minutes between health checks (HEALTH_CHECK_MINUTES) and the cleanup's time of day (CLEANUP_AT).
DEFAULT_HEALTH_MINUTES = 60
DEFAULT_CLEANUP_AT = "02:00"
#: How often a worker touches its liveness file (WORKER_LIVENESS_FILE), for the container probe.
LIVENESS_INTERVAL = 15.0  # seconds
DEFAULT_LIVENESS_FILE = os.path.join(tempfile.gettempdir(), "kmrl-worker.alive")

#: Seconds a triggered run waits before it starts (SYNC_TRIGGER_DELAY_SECONDS), so that a burst of
#: changes (a folder filling, a library upload) is read by one run rather than chased by several.
DEFAULT_TRIGGER_DELAY = 1.0
#: Seconds the first worker's start waits before each source's tick (the broker link settles first).
START_SYNC_DELAY = 2.0
#: Seconds ``service:workers`` outlives the last refresh of a live worker (several liveness beats).
WORKERS_ALIVE_TTL = 90

#: What Celery retries: run-level transient failures and broker or Redis connection errors.
RETRYABLE: tuple[type[BaseException], ...] = (
    TransientError, kombu.exceptions.OperationalError, redis.ConnectionError, redis.TimeoutError, ConnectionError,
)
#: Transient, but the next tick is the retry: the service set a pause, or the spool disk is full.
NOT_RETRIED: tuple[type[BaseException], ...] = (ThrottledError, SpoolFullError)


def longest_hard_limit() -> int:
    """The longest hard time limit of any task (the visibility timeout must exceed it)."""
    return max([TICK_LIMITS.hard, HEALTH_LIMITS.hard, CLEANUP_LIMITS.hard,
                *(s.time_limit for s in registry.SOURCES.values())])


def beat_schedule(settings: Settings,
                  sources: Mapping[str, registry.Source] = registry.SOURCES) -> dict[str, dict[str, Any]]:
    """The beat table: one tick per source of ``sources``, the health check and the daily cleanup.

    Intervals: ``{SOURCE}_SYNC_MINUTES`` (0 leaves the source out), HEALTH_CHECK_MINUTES, and
    CLEANUP_AT (HH:MM, Asia/Kolkata). Each entry expires after its period.
    """
    table: dict[str, dict[str, Any]] = {}
    for source in sources.values():
        minutes = source.interval_minutes(settings)
        if minutes:
            table[f"sync-{source.name}"] = beat_entry("kmrl.tick", every(minutes), minutes * 60, (source.name,))
    health_minutes = _minutes(settings, "HEALTH_CHECK_MINUTES", DEFAULT_HEALTH_MINUTES)
    if health_minutes:
        table["health-check"] = beat_entry("kmrl.health", every(health_minutes), health_minutes * 60)
    cleanup_at, period = daily_at(settings, "CLEANUP_AT", DEFAULT_CLEANUP_AT)
    table["cleanup"] = beat_entry("kmrl.cleanup", cleanup_at, period)
    push = graph_push.PushSettings.from_settings(settings)
    if push.enabled and push.check_minutes and "sharepoint" in sources:
        table["graph-subscriptions"] = beat_entry("kmrl.subscriptions", every(push.check_minutes),
                                                  push.check_minutes * 60)
    return table


def _minutes(settings: Settings, name: str, default: int) -> int:
    return int(settings.reader.duration(name, default, unit="minutes", whole=True, minimum=0))


#: The tasks Celery retries on a transient failure (their retry policy comes from the settings).
RETRIED_TASKS = ("kmrl.tick", "kmrl.sync_scope")


def celery_config(settings: Settings,
                  sources: Mapping[str, registry.Source] = registry.SOURCES) -> dict[str, Any]:
    """The app's whole configuration for ``settings``: Celery's settings, the beat table of ``sources``,
    and the retry policy of the retried tasks (as task annotations, which Celery applies when it
    creates the tasks)."""
    retry = retry_policy(settings, longest_hard_limit=longest_hard_limit())
    return {**celery_settings(settings, longest_hard_limit=longest_hard_limit()),
            "beat_schedule": beat_schedule(settings, sources),
            "task_annotations": {name: {"max_retries": retry.max_retries, "retry_backoff_max": retry.backoff_max}
                                 for name in RETRIED_TASKS}}


class SettingsUnusable(click.ClickException):
    """A setting ``celery -A scheduler beat|worker`` cannot start with: printed as one line
    (``settings: <what is wrong>``) with exit code 2, as ``kmrl-connectors`` prints it."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.format_message(), file=file or sys.stderr)


class _ConfigFromSettings(Mapping[str, Any]):
    """The configuration Celery reads on first use of ``app.conf`` (``config_from_object``): built
    then from ``service.settings``, so importing this module reads no variable. A setting that cannot
    be used raises its ConfigError (and Celery reads the configuration again on next use); under the
    ``celery`` command it becomes ``SettingsUnusable``, one line instead of a traceback."""

    def __init__(self) -> None:
        self._built: dict[str, Any] | None = None

    def _config(self) -> dict[str, Any]:
        if self._built is None:
            try:
                self._built = celery_config(service.settings, service.sources)
            except ConfigError as exc:
                if click.get_current_context(silent=True) is None:
                    raise
                raise SettingsUnusable(f"settings: {mask_text(str(exc))}") from None
            _prepare_detached_files()
        return self._built

    def __getitem__(self, key: str) -> Any:
        return self._config()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._config())

    def __len__(self) -> int:
        return len(self._config())


def _prepare_detached_files() -> None:
    """Under ``celery worker|beat --detach`` (read first in the process that was started, before it
    forks away): the folders of --pidfile and --logfile made, or one line and exit code 2."""
    context = click.get_current_context(silent=True)
    if context is None:
        return
    try:
        warning = prepare_detached_files(context.params, log_file=service.settings.log_file)
    except DetachedFilesUnusable as exc:
        raise SettingsUnusable(f"{context.info_name}: {exc}") from None
    if warning:
        click.echo(f"warning: {warning}", err=True)


#: What the tasks of one process share (built lazily, after a prefork child starts).
service = Service()  # settings from the environment, read on first use
app = Celery("kmrl_connectors")
app.config_from_object(_ConfigFromSettings())
_TASK_OPTIONS: dict[str, Any] = {"bind": True, "ignore_result": True, "acks_late": True,
                                 "autoretry_for": RETRYABLE, "dont_autoretry_for": NOT_RETRIED,
                                 **RETRY_BACKOFF_OPTIONS}


def configure(settings: Settings, *, sources: Mapping[str, registry.Source] | None = None) -> None:
    """Points the app, its beat table and the tasks at ``settings`` and, when given, at ``sources``
    instead of the table they use now (call before sending tasks)."""
    app.conf.update(celery_config(settings, service.sources if sources is None else sources))
    service.reset(settings, sources=sources)


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, logfile: str | None = None, **_kwargs: Any) -> None:
    """Celery logs through our structlog setup (redaction included) instead of its own. ``--logfile``
    (``logfile``) names this process's JSON log file instead of LOG_FILE, as Celery's own option says."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    settings = service.settings
    configure_logging(log_file=logfile or settings.log_file, level=str(level or settings.log_level),
                      console_format=settings.log_format, force=True)
    if settings.env_file.note:
        log.warning("env_file_not_found", detail=settings.env_file.note)


@signals.worker_init.connect
def _migrate_state(**_kwargs: Any) -> None:
    """Brings the state to this release's schema before the worker takes a task (base/schema.py).
    State newer than this release stops the worker: Celery would only log an exception here."""
    try:
        migrate(service.state)
    except ConfigError as exc:
        log.error("state_schema_refused", error=mask_text(str(exc)))
        raise SystemExit(2) from exc


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop_process_pool(**_kwargs: Any) -> None:
    """Ends this process's CPU pool children (base/pool.py) with it: a prefork child leaves by
    ``os._exit``, which runs no ``atexit`` handler, so the pool is closed here."""
    shutdown_shared_pool()


class Liveness(bootsteps.StartStopStep):
    """Touches WORKER_LIVENESS_FILE every ``LIVENESS_INTERVAL`` while the worker's loop runs; the
    container probe (``kmrl-connectors probe worker``) fails when the file grows old. Unlike an
    ``inspect ping`` it does not fail (and restart workers) when only the broker is down."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = liveness_file(service.settings)
        self.tref: Any = None
        self.unwritable = False

    def touch(self) -> None:
        try:
            self._touch()
        except OSError as exc:
            # Said once, not every LIVENESS_INTERVAL: the probe failing says the rest.
            if not self.unwritable:
                log.error("liveness_file_unwritable", path=self.path, error=exc.strerror,
                          detail="kmrl-connectors probe worker fails until WORKER_LIVENESS_FILE can be written")
            self.unwritable = True
        else:
            if self.unwritable:
                log.info("liveness_file_writable", path=self.path)
            self.unwritable = False
        _workers_alive(first=False)

    def _touch(self) -> None:
        try:
            with open(self.path, "a"):
                os.utime(self.path)
        except FileNotFoundError:
            # WORKER_LIVENESS_FILE in a folder that does not exist yet (a fresh volume, /run/kmrl): made once.
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a"):
                os.utime(self.path)

    def start(self, parent: Any) -> None:
        first = _workers_alive(first=True)
        self.touch()
        self.tref = parent.timer.call_repeatedly(LIVENESS_INTERVAL, self.touch)
        if first and service.settings.reader.flag("SYNC_AT_START", True):
            parent.timer.call_after(START_SYNC_DELAY, sync_at_start)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
        try:
            os.remove(self.path)
        except OSError:
            pass


def _workers_alive(*, first: bool) -> bool:
    """Refreshes ``service:workers``; with ``first``, True when no worker was alive before this one
    (the key had lapsed: the service is starting, not one more worker joining). Never raises."""
    try:
        key = service.state.keys.workers_alive()
        name = f"{socket.gethostname()}:{os.getpid()}"
        return bool(service.state.redis.set(key, name, ex=WORKERS_ALIVE_TTL, nx=first))
    except (redis.RedisError, ConfigError) as exc:
        log.warning("workers_alive_not_recorded", error=mask_text(str(exc)))
        return False


def sync_at_start() -> list[str]:
    """Sends one tick for every configured source: a service just started syncs at once instead of at
    the clock's next mark (up to 30 minutes away for SharePoint). Returns the sources ticked."""
    settings = service.settings
    sent = []
    for source in registry.configured_sources(settings, sources=service.sources):
        if not registry.get_source(source, service.sources).interval_minutes(settings):
            continue  # left out of the schedule (SYNC_MINUTES=0): started by hand only
        try:
            tick.apply_async(args=(source,), expires=TICK_LIMITS.hard)
            sent.append(source)
        except (kombu.exceptions.OperationalError, redis.RedisError, OSError) as exc:
            log.warning("start_sync_not_sent", source=source, error=mask_text(str(exc)))
    log.info("start_sync_sent", sources=sent)
    return sent


def liveness_file(settings: Settings) -> str:
    """WORKER_LIVENESS_FILE (default in the temporary folder)."""
    return settings.env("WORKER_LIVENESS_FILE", DEFAULT_LIVENESS_FILE)


app.steps["worker"].add(Liveness)


# -- the tick: list scopes, fan out -----------------------------------------------------------------

def _record_source_error(state: StateStore, source: str, exc: BaseException, *, state_name: str) -> None:
    """Marks the source's scope-less status (``*``) the way the pipeline does for a failed connect."""
    state.update_status(source, "*", {"state": state_name, "last_error": mask_text(str(exc)),
                                      "last_run_end": time.time()})
    # Counted like a failed run, so kmrl_scope_failures_in_a_row{scope="*"} alerts on a source refused tick after tick.
    state.record_run_metrics(source, "*", state=state_name, failed=True, increments=Increments())


def scope_cache_seconds(settings: Settings) -> int:
    """SCOPE_CACHE_SECONDS (a whole number; 0 or less: scope lists are not cached)."""
    return max(0, int(settings.reader.duration("SCOPE_CACHE_SECONDS", SHARED_SCOPE_LIST_TTL_SECONDS,
                                               unit="seconds", whole=True)))


def list_scopes(connector: BaseConnector, source: str, instance: str) -> tuple[list[str], bool]:
    """The instance's scopes and whether they came from the cache (``{prefix}scopes:{source}:{instance}``)."""
    state = service.state
    cached = state.cached_scopes(source, instance)
    if cached is not None:
        return cached, True
    with connector.connect(connector.default_credentials()):
        scopes = list(connector.scopes())
    ttl = scope_cache_seconds(service.settings)
    if ttl:
        state.cache_scopes(source, instance, scopes, ttl=ttl)
    return scopes, False


@app.task(name="kmrl.tick", soft_time_limit=TICK_LIMITS.soft, time_limit=TICK_LIMITS.hard, **_TASK_OPTIONS)
def tick(self: Any, source: str) -> dict[str, Any]:
    """Sends one ``kmrl.sync_scope`` per scope of every instance of ``source``; returns what it sent."""
    settings = service.settings
    spec = registry.get_source(source, service.sources)
    if source not in registry.configured_sources(settings, names=[source], sources=service.sources):
        return {"source": source, "skipped": "not configured"}
    try:
        connectors = service.connectors(source)
    except ConfigError as exc:
        log.warning("source_config_error", source=source, state=exc.state, error=mask_text(str(exc)))
        _record_source_error(service.state, source, exc, state_name=exc.state)
        return {"source": source, "error": exc.state}
    period = (spec.interval_minutes(settings) or spec.sync_minutes) * 60
    sent: list[list[str]] = []
    for index, connector in enumerate(connectors):
        instance = registry.instance_id(connector, index)
        try:
            scopes, cached = list_scopes(connector, source, instance)
        except ConfigError as exc:
            log.warning("scope_listing_refused", source=source, instance=instance, state=exc.state,
                        error=mask_text(str(exc)))
            _record_source_error(service.state, source, exc, state_name=exc.state)
            continue
        except TransientError as exc:
            # The next tick asks again; the scopes themselves resume from their cursors.
            log.warning("scope_listing_failed", source=source, instance=instance, error=mask_text(str(exc)))
            continue
        for scope in scopes:
            sync_scope.apply_async(args=(source, instance, scope), soft_time_limit=spec.soft_time_limit,
                                   time_limit=spec.time_limit, expires=period)
            sent.append([instance, scope])
        log.info("tick_fanned_out", source=source, instance=instance, scopes=len(scopes), cached=cached)
    return {"source": source, "sent": sent}


# -- one scope run ------------------------------------------------------------------------------------

def run_budget(soft_limit: float) -> float:
    """Seconds a run may take before it stops at a safe point, leaving room below the soft limit."""
    return max(1.0, soft_limit - max(MIN_DEADLINE_MARGIN, soft_limit * DEADLINE_MARGIN))


@app.task(name="kmrl.sync_scope", soft_time_limit=max(s.soft_time_limit for s in registry.SOURCES.values()),
          time_limit=max(s.time_limit for s in registry.SOURCES.values()), **_TASK_OPTIONS)
def sync_scope(self: Any, source: str, instance: str, scope: str, trigger: str = "") -> dict[str, Any]:
    """Runs the pipeline for one scope of one connector instance; returns the scope summary.

    trigger: why a run sent by ``request_sync`` was asked for (empty for the tick's runs); such a run
    follows the trigger rule (base/triggers.py): it ends at once, ``parked``, while the scope runs.
    Raises TransientError for a run that ended in a transient error, so Celery retries it.
    """
    settings = service.settings
    if source not in registry.configured_sources(settings, names=[source], sources=service.sources):
        return {"source": source, "scope": scope, "state": "skipped"}
    try:
        connector = registry.find_instance(service.connectors(source), instance)
    except ConfigError as exc:
        log.warning("source_config_error", source=source, state=exc.state, error=mask_text(str(exc)))
        _record_source_error(service.state, source, exc, state_name=exc.state)
        return {"source": source, "scope": scope, "state": exc.state}
    hard_soft = self.request.timelimit or (None, None)
    soft = hard_soft[1] or registry.get_source(source, service.sources).soft_time_limit
    triggers = sync_triggers(service.state)
    try:
        for _attempt in range(3):
            if trigger and not triggers.claim(source, scope):
                log.info("sync_trigger_parked", source=source, instance=instance, scope=scope, trigger=trigger,
                         effect="one more run follows the one in progress")
                return {"source": source, "scope": scope, "state": "parked"}
            # The runner knows no Celery: it is given the deadline and the exception of Celery's soft limit.
            summary = connector.sync_scope(scope, deadline=time.monotonic() + run_budget(float(soft)),
                                           time_up=(SoftTimeLimitExceeded,))
            # A triggered run that lost the race for the lease to another run parks behind it.
            if not (trigger and summary.state == ScopeState.LOCKED):
                break
    finally:
        _send_owed_run(triggers, source, instance, scope)
    log.info("sync_scope_finished", source=source, instance=instance, scope=scope, state=summary.state,
             attempt=self.request.retries + 1, seconds=round(summary.seconds, 3), trigger=trigger or None,
             **summary.counts)
    if summary.state == ScopeState.ERROR:
        raise TransientError(f"{source} {scope}: {summary.error}")
    return summary.as_dict()


# -- runs asked for between ticks ---------------------------------------------------------------------

def trigger_ttl(settings: Settings) -> float:
    """Seconds a trigger mark lives unsettled: longer than any run may last, so a parked request
    outlives the run it waits for (base/triggers.py)."""
    return float(longest_hard_limit() + 2 * settings.lock_ttl)


def trigger_delay(settings: Settings) -> float:
    """SYNC_TRIGGER_DELAY_SECONDS: how long a triggered run waits to gather a burst (default 1)."""
    return float(settings.reader.duration("SYNC_TRIGGER_DELAY_SECONDS", DEFAULT_TRIGGER_DELAY, unit="seconds",
                                          minimum=0))


def sync_triggers(state: StateStore, settings: Settings | None = None) -> SyncTriggers:
    """The trigger rule on ``state`` (mark lifetime from ``settings``, default this process's)."""
    return SyncTriggers(state, ttl=trigger_ttl(settings or service.settings))


def sending_app(settings: Settings) -> Celery:
    """A Celery app that only sends tasks, to the broker of ``settings`` with the service's Celery
    settings: what a process that runs no task (the web app, a watcher) hands ``request_sync``,
    leaving this module's app as it is."""
    sender = Celery("kmrl_connectors_sender", set_as_current=False)
    sender.conf.update(celery_settings(settings, longest_hard_limit=longest_hard_limit()))
    return sender


def _send_triggered(triggers: SyncTriggers, source: str, instance: str, scope: str, *, reason: str,
                    settings: Settings, sender: Celery) -> None:
    try:
        sender.send_task("kmrl.sync_scope", args=(source, instance, scope), kwargs={"trigger": reason},
                         countdown=trigger_delay(settings), expires=trigger_ttl(settings))
    except BaseException:
        triggers.cancel(source, scope)  # the next request sends again instead of waiting on nothing
        raise


def request_sync(state: StateStore, source: str, instance: str, scope: str, *, reason: str,
                 settings: Settings | None = None, sender: Celery | None = None) -> bool:
    """Asks for one run of the scope soon, under the trigger rule: a burst of requests while the scope
    is idle causes one run; any number while it runs cause exactly one more run after it ends.

    settings: the delay and mark lifetime (default this process's, ``service.settings``).
    sender: the Celery app that sends the run (default this module's app, which ``configure`` points
        at a broker; a process that runs no task passes ``sending_app(settings)``).
    Returns True when this request sent the run, False when it joined one already due. Raises what
    Redis or the broker raised (the request is then undone: the next one sends).
    """
    settings = settings or service.settings
    triggers = sync_triggers(state, settings)
    if not triggers.request(source, scope):
        return False
    _send_triggered(triggers, source, instance, scope, reason=reason, settings=settings, sender=sender or app)
    log.info("sync_triggered", source=source, instance=instance, scope=scope, reason=reason)
    return True


def _send_owed_run(triggers: SyncTriggers, source: str, instance: str, scope: str) -> None:
    """After a run: sends the one more run that requests made while it ran are owed (never raises;
    a lost send is caught by the mark's expiry and the tick)."""
    try:
        if triggers.owed(source, scope):
            _send_triggered(triggers, source, instance, scope, reason="changed during the previous run",
                            settings=service.settings, sender=app)
            log.info("sync_triggered", source=source, instance=instance, scope=scope, reason="owed")
    except (redis.RedisError, kombu.exceptions.OperationalError, OSError) as exc:
        log.warning("owed_run_not_sent", source=source, scope=scope, error=mask_text(str(exc)))


# -- health -----------------------------------------------------------------------------------------

def _checks_for(source: str) -> list[tuple[str, HealthResult]]:
    try:
        connectors = service.connectors(source)
    except ConfigError as exc:
        return [("*", HealthResult(False, exc.state, mask_text(str(exc))))]
    return [(registry.instance_id(c, i), registry.probe(c)) for i, c in enumerate(connectors)]


def health_report(settings: Settings, *, now: float | None = None) -> HealthReport:
    """Redis, the Hub, and each configured source's check, statuses and schedule lag."""
    now = time.time() if now is None else now
    state = service.state
    try:
        redis_check = (state.ping(), f"{safe_url(settings.state_redis_url)} answered PING")
    except redis.RedisError as exc:
        redis_check = (False, f"{safe_url(settings.state_redis_url)}: {type(exc).__name__}: {exc}")
    try:
        hub_check = service.hub.health()
    except (ConfigError, OSError) as exc:  # a broken Hub setting is a failed check, not a crashed task
        hub_check = (False, mask_text(f"{type(exc).__name__}: {exc}"))
    report = HealthReport(checked_at=now, redis=redis_check, hub=hub_check)
    for source in registry.configured_sources(settings, sources=service.sources):
        statuses: Mapping[str, Mapping[str, str]] = (
            {scope: status for _, scope, status in state.iter_statuses(source)} if redis_check[0] else {})
        minutes = registry.get_source(source, service.sources).interval_minutes(settings)
        report.sources.append(source_health(source, _checks_for(source), statuses,
                                            interval_seconds=minutes * 60 or None, now=now))
    return report


@app.task(name="kmrl.health", soft_time_limit=HEALTH_LIMITS.soft, time_limit=HEALTH_LIMITS.hard, bind=True,
          ignore_result=True, acks_late=True)
def health(self: Any) -> dict[str, Any]:
    """Computes the health report, stores it in Redis (``kmrl:health``) and logs it."""
    report = health_report(service.settings)
    if report.redis[0]:
        store_report(service.state, report)
    for source in report.sources:
        method = log.info if source.state == "healthy" else log.warning
        method("source_health", source=source.source, state=source.state, detail=source.detail)
    log.info("health_checked", ok=report.ok, redis=report.redis[0], hub=report.hub[0], hub_detail=report.hub[1])
    return report.as_dict()


# -- cleanup ----------------------------------------------------------------------------------------

@app.task(name="kmrl.cleanup", soft_time_limit=CLEANUP_LIMITS.soft, time_limit=CLEANUP_LIMITS.hard, bind=True,
          ignore_result=True, acks_late=True)
def cleanup(self: Any) -> dict[str, int]:
    """Applies the retention settings (base/cleanup.py); returns how many of each were removed."""
    settings = service.settings
    state = service.state
    retention = Retention.from_settings(settings)
    now = time.time()
    removed = {
        "dead_letters": purge_dead_letters(state, older_than=now - retention.deadletter_days * DAY),
        # A day's grace: a kept-bytes copy may be in progress when its entry is not yet written.
        "orphaned_bytes": purge_orphaned_bytes(state, settings.deadletter_dir, older_than=now - DAY),
        "held_expired": expire_held(state, older_than=now - settings.held_retention_days * DAY, now=now),
        "held_forgotten": purge_expired_held(state, older_than=now - settings.held_retention_days * DAY),
        # The same day's grace as for dead letters: a copy may be in progress before its entry exists.
        "held_orphaned_bytes": purge_orphaned_held_bytes(state, settings.held_dir, older_than=now - DAY),
        "spool_files": purge_files(settings.spool_dir, older_than=now - retention.spool_days * DAY),
        "history": state.trim_history(now - retention.history_days * DAY),
        "abandoned_scopes": purge_abandoned_scopes(state, older_than=now - retention.scope_days * DAY),
        # A day's grace for outbox writes too: anything younger may still be in progress.
        "abandoned_outbox_writes": purge_abandoned_outbox_writes(settings.hub_outbox_dir, older_than=now - DAY),
        "outbox": 0,
        "results": 0,
    }
    if retention.outbox_days and not settings.hub_api_url:
        removed["outbox"] = purge_outbox(settings.hub_outbox_dir, older_than=now - retention.outbox_days * DAY)
    if settings.result_backend.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(settings.result_backend, socket_connect_timeout=5, socket_timeout=30,
                                      **redis_tls_kwargs(settings.result_backend, settings.redis_ca_file))
        try:
            removed["results"] = purge_stale_results(client, older_than=now - float(app.conf.result_expires))
        finally:
            client.close()
    log.info("cleanup_finished", **removed)
    return removed


# -- Graph change-notification subscriptions ----------------------------------------------------------

@app.task(name="kmrl.subscriptions", soft_time_limit=TICK_LIMITS.soft, time_limit=TICK_LIMITS.hard, **_TASK_OPTIONS)
def subscriptions(self: Any, drive: str | None = None, action: str = "check") -> dict[str, Any]:
    """Keeps one Graph subscription per SharePoint drive (connectors/sharepoint_subscriptions.py):
    created, renewed before expiry, created again when gone, in which case the drive's sync is asked
    for too. ``drive`` and ``action`` (renew, recreate) come from a lifecycle notification."""
    settings = service.settings
    push = graph_push.PushSettings.from_settings(settings)
    if not push.enabled or "sharepoint" not in registry.configured_sources(settings, names=["sharepoint"],
                                                                            sources=service.sources):
        return graph_push.ensure_subscriptions([], service.state, push)
    try:
        instances = [(registry.instance_id(c, i), c) for i, c in enumerate(service.connectors("sharepoint"))
                     if isinstance(c, SharePointConnector)]
        results = graph_push.ensure_subscriptions(instances, service.state, push, drive=drive, action=action)
    except ConfigError as exc:
        log.error("graph_subscriptions_failed", state=exc.state, error=mask_text(str(exc)))
        return {"error": exc.state}
    for instance, outcomes in results.items():
        for scope, outcome in outcomes.items():
            if outcome == graph_push.RECREATED:
                request_sync(service.state, "sharepoint", instance, scope, reason="graph_subscription_recreated")
    return results


class SubscriptionsAtStart(bootsteps.StartStopStep):
    """A worker that starts sends the subscriptions check at once rather than waiting for the next
    beat mark (its lease keeps workers starting together from doing the work twice)."""

    requires = {"celery.worker.components:Timer"}

    def start(self, parent: Any) -> None:
        try:
            if graph_push.PushSettings.from_settings(service.settings).enabled:
                subscriptions.apply_async()
        except (ConfigError, kombu.exceptions.OperationalError, redis.RedisError) as exc:
            log.warning("graph_subscriptions_not_sent", error=mask_text(str(exc)))


app.steps["worker"].add(SubscriptionsAtStart)

"""The watcher process: every configured mail account watched, a sync asked for on new mail.

    python -m watchers          (the same as: kmrl-connectors watch)

Runs until SIGTERM or SIGINT. Each account is one ``AccountWatcher`` thread (watchers/imap_watcher.py)
holding the account's lease, so several watcher processes (one per machine) share the accounts and
take over each other's when one dies. New mail asks for the folder's sync through
``scheduler.request_sync`` on the settings' broker, under the one trigger rule. With EMAIL_WATCH=0, or
no email configured, the process has nothing to do and waits for its signal (a container restart
policy does not turn that into a restart loop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from base.state import StateStore
from config.settings import Settings
from connectors import registry
from connectors.service import Service
from utils.errors import ConfigError
from utils.logging import configure_logging, get_logger, mask_text
from watchers.imap_watcher import AccountWatcher, Trigger, WatchConfig, start_watchers, watch_enabled

log = get_logger("watchers")

#: Seconds the process waits for its watchers to close their connections when stopping.
STOP_TIMEOUT = 10.0
#: How often the process touches its liveness file (WATCHER_LIVENESS_FILE) while every watcher runs,
#: and how old the file may be before ``kmrl-connectors probe watcher`` fails.
LIVENESS_INTERVAL = 15.0  # seconds
LIVENESS_MAX_AGE = 60.0  # seconds
DEFAULT_LIVENESS_FILE = os.path.join(tempfile.gettempdir(), "kmrl-watcher.alive")


def liveness_file(settings: Settings) -> str:
    """WATCHER_LIVENESS_FILE (default in the temporary folder)."""
    return settings.env("WATCHER_LIVENESS_FILE", DEFAULT_LIVENESS_FILE)


def probe(settings: Settings) -> tuple[bool, str]:
    """(alive, why) for the container probe: the liveness file was touched within LIVENESS_MAX_AGE."""
    path = liveness_file(settings)
    try:
        age = time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return False, f"no liveness file at {path}"
    return age <= LIVENESS_MAX_AGE, f"liveness file touched {age:.0f} s ago"


def _touch(path: str) -> None:
    try:
        with open(path, "a"):
            os.utime(path)
    except OSError as exc:
        log.warning("liveness_file_unwritable", path=path, error=exc.strerror)


def request_sync_trigger(state: StateStore, instance: str) -> Trigger:
    """``trigger(scope, reason)`` asking the scheduler for an email scope's sync (needs
    ``scheduler.configure`` called in this process)."""
    import scheduler

    def trigger(scope: str, reason: str) -> bool:
        return scheduler.request_sync(state, "email", instance, scope, reason=reason)

    return trigger


def email_watchers(service: Service, *, trigger_for: Callable[[str], Trigger] | None = None,
                   identity: str | None = None) -> list[AccountWatcher]:
    """One watcher per configured mail account ([] when email is not configured or EMAIL_WATCH=0).

    trigger_for(instance): the trigger of a connector instance's accounts (default: through
    ``scheduler.request_sync``). Raises ConfigError for settings that cannot be used."""
    settings = service.settings
    if not watch_enabled(settings) or "email" not in registry.configured_sources(settings, names=["email"],
                                                                                 sources=service.sources):
        return []
    make_trigger = trigger_for or (lambda instance: request_sync_trigger(service.state, instance))
    watchers = []
    for index, connector in enumerate(service.connectors("email")):
        instance = registry.instance_id(connector, index)
        config = WatchConfig.from_settings(settings, timeout=float(getattr(connector, "timeout", 30.0)))
        logins = connector.logins(connector.default_credentials())  # type: ignore[attr-defined]
        trigger = make_trigger(instance)
        for account, password in logins:
            watchers.append(AccountWatcher(account, password, state=service.state, trigger=trigger, config=config,
                                           identity=identity))
    return watchers


def run(service: Service, stop: threading.Event | None = None) -> int:
    """Watches until ``stop`` is set (default: until SIGTERM or SIGINT); returns the exit code."""
    import scheduler

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    scheduler.configure(service.settings, sources=service.sources)
    watchers = email_watchers(service)
    alive = liveness_file(service.settings)
    if not watchers:
        log.info("watcher_nothing_to_watch", email_watch=watch_enabled(service.settings))
    else:
        log.info("watchers_started", accounts=len(watchers))
    threads = start_watchers(watchers, stop)
    try:
        # Alive while every watcher thread is: one that died (a bug) stops the touches, and the probe fails.
        _touch(alive)
        while not stop.wait(LIVENESS_INTERVAL):
            if all(thread.is_alive() for thread in threads):
                _touch(alive)
    finally:
        for thread in threads:
            thread.join(timeout=STOP_TIMEOUT)
        with contextlib.suppress(OSError):
            os.remove(alive)
    log.info("watchers_stopped", accounts=len(watchers))
    return 0


def main() -> int:
    service = Service()
    try:
        settings = service.settings
    except ConfigError as exc:
        print(f"settings: {mask_text(str(exc))}", file=sys.stderr)
        return 2
    configure_logging(log_file=settings.log_file, level=settings.log_level, console_format=settings.log_format)
    try:
        return run(service)
    except ConfigError as exc:
        print(f"{exc.state}: {mask_text(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

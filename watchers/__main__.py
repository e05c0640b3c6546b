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

import signal
import sys
import threading
from collections.abc import Callable

from base.state import StateStore
from connectors import registry
from connectors.service import Service
from utils.errors import ConfigError
from utils.logging import configure_logging, get_logger, mask_text
from watchers.imap_watcher import AccountWatcher, Trigger, WatchConfig, start_watchers, watch_enabled

log = get_logger("watchers")

#: Seconds the process waits for its watchers to close their connections when stopping.
STOP_TIMEOUT = 10.0


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
    if not watchers:
        log.info("watcher_nothing_to_watch", email_watch=watch_enabled(service.settings))
        stop.wait()
        return 0
    log.info("watchers_started", accounts=len(watchers))
    threads = start_watchers(watchers, stop)
    stop.wait()
    for thread in threads:
        thread.join(timeout=STOP_TIMEOUT)
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

"""Runs asked for by the web process: after accepted WhatsApp media, and by an operator or Maximo.

The web process sends runs through ``scheduler.request_sync`` (the one trigger rule,
base/triggers.py), so a burst of notifications is one run, and notifications during a run are one
more run after it.

- ``BackgroundRequest``: the webhook's group commit only *pokes* it (a flag set, no I/O), and one
  thread of the gunicorn worker sends the request afterwards. The webhook's answer never waits for
  the trigger, and the requests of a burst are sent as one.
- ``sync_request_blueprint``: ``POST /sync/maximo/<site>`` on the internal listener (behind the
  operator token): sync one configured Maximo site now. A site not in MAXIMO_SITE_IDS is refused (404),
  so no request can create state for a scope the settings do not name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import kombu.exceptions
import redis
from celery import Celery
from flask import Blueprint, Response, jsonify

from config.settings import Settings
from connectors import registry
from connectors.service import Service
from utils.errors import ConfigError
from utils.logging import get_logger, mask_text

log = get_logger("web.sync_requests")

#: The WhatsApp connector's one scope.
INBOX_SCOPE = "inbox"
#: Seconds between two inbox-sync requests of one web process (``BackgroundRequest.min_interval``):
#: small beside the triggered run's own delay (SYNC_TRIGGER_DELAY_SECONDS).
WHATSAPP_REQUEST_INTERVAL = 0.25


class RunSender:
    """The web process's send-only Celery app (``scheduler.sending_app``), built on first use: in the
    gunicorn worker that sends (no broker connection crosses a fork) and only once something is sent.
    One per listener app, shared by the routes that ask for runs (WhatsApp, Graph, Maximo)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._app: Celery | None = None
        self._refused = False

    def get(self) -> Celery | None:
        """The app; None (logged once) when the settings build none, and runs wait for the schedule."""
        with self._lock:
            if self._app is None and not self._refused:
                import scheduler  # the tasks' module; only a process that sends runs needs it

                try:
                    self._app = scheduler.sending_app(self.settings)
                except ConfigError as exc:
                    self._refused = True
                    log.warning("sync_requests_off", error=mask_text(str(exc)),
                                effect="runs wait for the beat schedule")
            return self._app


def instances_with(service: Service, source: str, scope: str) -> list[str]:
    """The configured instances of ``source`` that have ``scope``; ConfigError when the source's
    settings cannot build a connector."""
    return [registry.instance_id(connector, index) for index, connector in enumerate(service.connectors(source))
            if scope in connector.scopes()]


def request_run(service: Service, sender: Celery, source: str, scope: str, *, reason: str) -> list[str]:
    """Requests a run of ``scope`` on every configured instance of ``source`` that has it; returns the
    instances it was requested on (empty: the scope is not configured). Raises ConfigError when the
    source's settings cannot build a connector, and what Redis or the broker raised."""
    import scheduler

    instances = instances_with(service, source, scope)
    for instance in instances:
        scheduler.request_sync(service.state, source, instance, scope, reason=reason, settings=service.settings,
                               sender=sender)
    return instances


class BackgroundRequest:
    """Sends ``send()`` on a thread of its own after ``poke()``; pokes that arrive while it sends are
    one more send. ``poke`` costs a flag set: the caller (a webhook request) never waits for I/O.

    min_interval: seconds between the starts of two sends. Under a steady stream of notifications the
    pokes then cost a few sends a second, not one per group commit: the thread would otherwise take
    the interpreter lock from the request threads as often as it can (measured: a third of the
    webhook's throughput), for requests that the trigger rule coalesces anyway.

    The thread starts on the first poke, so that it lives in the gunicorn worker that pokes (threads
    do not survive a fork).
    """

    def __init__(self, send: Callable[[], object], *, name: str, min_interval: float = 0.0) -> None:
        self._send = send
        self._name = name
        self._min_interval = min_interval
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: Sends made (for tests).
        self.sent = 0

    def poke(self) -> None:
        """Asks for one send soon (coalesced with any send not yet begun)."""
        self._wanted.set()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            started = time.monotonic()
            try:
                self._send()
            except Exception as exc:  # noqa: BLE001 - logged; the beat tick still runs the scope
                log.warning("sync_request_failed", request=self._name, error=mask_text(f"{type(exc).__name__}: {exc}"),
                            effect="the scope runs at its next tick")
            self.sent += 1
            rest = self._min_interval - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)  # pokes meanwhile set the flag: one send after the pause covers them all


def whatsapp_inbox_request(service: Service, sender: RunSender) -> BackgroundRequest:
    """The webhook's poke target: requests the WhatsApp inbox sync (when ``sender`` has no app, the
    inbox waits for the tick, as before)."""
    import scheduler

    instances: list[str] = []
    warned: list[str] = []  # what was logged, so that a lasting misconfiguration is one line, not one a poke

    def not_requested(why: str) -> None:
        if why not in warned:
            warned.append(why)
            log.warning("whatsapp_sync_not_requested", reason=why, effect="the inbox is synced at the next tick")

    def send() -> None:
        if not instances:  # the connectors are built once, not per request
            try:
                instances.extend(instances_with(service, "whatsapp", INBOX_SCOPE))
            except ConfigError as exc:
                not_requested(mask_text(str(exc)))
                return
            if not instances:
                not_requested("no WhatsApp connector has the inbox scope")
                return
        app = sender.get()
        if app is None:
            return
        for instance in instances:
            scheduler.request_sync(service.state, "whatsapp", instance, INBOX_SCOPE, reason="whatsapp_media",
                                   settings=service.settings, sender=app)

    return BackgroundRequest(send, name="whatsapp-sync-request", min_interval=WHATSAPP_REQUEST_INTERVAL)


def sync_request_blueprint(service: Service, sender: RunSender) -> Blueprint:
    """``POST /sync/maximo/<site>`` (an operator route: the internal app guards it)."""
    bp = Blueprint("sync_requests", __name__)

    @bp.post("/sync/maximo/<site>")
    def sync_maximo_site(site: str) -> tuple[Response, int]:
        app = sender.get()
        if app is None:
            return jsonify(error="this web process cannot send runs: its settings build no Celery app"), 503
        try:
            instances = request_run(service, app, "maximo", site, reason="maximo_trigger")
        except ConfigError as exc:
            return jsonify(error=f"Maximo is not configured: {mask_text(str(exc))}"), 409
        except (redis.RedisError, kombu.exceptions.OperationalError, OSError) as exc:
            log.warning("maximo_trigger_failed", site=site[:64], error=mask_text(f"{type(exc).__name__}: {exc}"))
            return jsonify(error="the run could not be queued (Redis or the broker is unavailable); try again"), 503
        if not instances:
            log.warning("maximo_trigger_refused", site=site[:64], reason="not a configured site")
            return jsonify(error=f"{site[:64]!r} is not a configured Maximo site (MAXIMO_SITE_IDS)"), 404
        log.info("maximo_trigger_accepted", site=site, instances=instances)
        return jsonify(source="maximo", scope=site, instances=instances, requested=True), 202

    return bp

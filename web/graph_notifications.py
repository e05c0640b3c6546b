"""``/webhooks/graph`` and ``/webhooks/graph/lifecycle``: Microsoft Graph change notifications.

The validation handshake: when a subscription is created Graph POSTs ``?validationToken=<token>`` and
needs, within 10 s, 200 with the URL-decoded token as a ``text/plain`` body. It is answered before
anything else, as given (``nosniff``, so no browser renders it as HTML), whatever the settings.

A notification (``{"value": [...]}``) is believed only when its ``clientState`` is the drive's
(HMAC of GRAPH_CLIENT_STATE_SECRET and the drive id, connectors/sharepoint_subscriptions.py, compared
in constant time) and the drive is one the subscription manager recorded. Then:

- a change (``changeType``) asks for the drive's delta sync (``scheduler.request_sync``, reason
  ``graph_notification``, under the one trigger rule: a burst is one run, changes during a run one
  more run): one request per drive per delivery, however many changes it carries;
- ``lifecycleEvent`` ``reauthorizationRequired`` sends the subscriptions task to renew it,
  ``subscriptionRemoved`` to create it again (and sync), ``missed`` asks for the sync.

Anything else (unknown subscription, wrong clientState, malformed) is ignored, logged
(``graph_notification_refused``) and counted (``kmrl_graph_notifications_total{outcome=...}``), and
still answered 202: Graph would only deliver it again. The answer is 202 within milliseconds (Graph
wants a 2xx within 3 s and retries otherwise); 503 when Redis or the broker is unreachable, so that
Graph delivers again later.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import kombu.exceptions
import redis
from flask import Blueprint, Response, request

from base.state import StateStore, metric_field
from config.settings import Settings
from connectors.sharepoint_subscriptions import SubscriptionStore, client_state_matches, drive_of_resource
from utils.errors import ConfigError
from utils.logging import get_logger
from web.sync_requests import RunSender

log = get_logger(__name__)

#: Largest notification body read; Graph batches notifications, each well under a kilobyte.
MAX_BODY_BYTES = 1024 * 1024  # bytes
#: Longest validation token echoed (Graph's are about 110 characters).
MAX_TOKEN_CHARS = 1024  # characters
#: Notifications looked at in one delivery.
MAX_NOTIFICATIONS = 1000
#: The counter of notifications by outcome.
METRIC = "kmrl_graph_notifications_total"
OUTCOME_ACCEPTED = "accepted"
OUTCOME_UNKNOWN = "unknown_subscription"
OUTCOME_BAD_CLIENT_STATE = "bad_client_state"
OUTCOME_MALFORMED = "malformed"
#: lifecycleEvent -> what is done about it.
LIFECYCLE_ACTIONS = {"reauthorizationRequired": "renew", "subscriptionRemoved": "recreate", "missed": "sync"}


class Dispatch(Protocol):
    """Where accepted notifications go (the scheduler's trigger and subscriptions task)."""

    def sync(self, state: StateStore, instance: str, drive: str, *, reason: str) -> None: ...

    def subscriptions(self, drive: str, action: str) -> None: ...


class CeleryDispatch:
    """``scheduler.request_sync`` (the one trigger rule) and the ``kmrl.subscriptions`` task, sent by the
    web process's send-only Celery app (``RunSender``)."""

    def __init__(self, sender: RunSender) -> None:
        self.sender = sender

    def _app(self) -> Any:
        app = self.sender.get()
        if app is None:
            raise ConfigError("this web process cannot send runs: its settings build no Celery app")
        return app

    def sync(self, state: StateStore, instance: str, drive: str, *, reason: str) -> None:
        import scheduler  # the tasks' module; only a process that sends runs needs it

        scheduler.request_sync(state, "sharepoint", instance, drive, reason=reason, settings=self.sender.settings,
                               sender=self._app())

    def subscriptions(self, drive: str, action: str) -> None:
        self._app().send_task("kmrl.subscriptions", kwargs={"drive": drive, "action": action})


@dataclass(frozen=True)
class GraphWebhookConfig:
    """client_state_secret: GRAPH_CLIENT_STATE_SECRET (empty: notifications answered 503, handshakes still)."""

    client_state_secret: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> GraphWebhookConfig:
        return cls(client_state_secret=settings.env("GRAPH_CLIENT_STATE_SECRET"))


@dataclass
class _Accepted:
    """What one delivery asks for: drive -> (instance, reason) syncs and drive -> action tasks."""

    syncs: dict[str, tuple[str, str]] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)


def _sort(values: list[Any], config: GraphWebhookConfig, store: SubscriptionStore) -> _Accepted:
    """Checks each notification and collects what the accepted ones ask for."""
    accepted = _Accepted()
    for note in values[:MAX_NOTIFICATIONS]:
        if not isinstance(note, Mapping) or not isinstance(note.get("subscriptionId"), str):
            accepted.outcomes[OUTCOME_MALFORMED] += 1
            continue
        sub_id = note["subscriptionId"][:200]
        drive = drive_of_resource(note.get("resource")) or store.drive_of(sub_id)
        record = store.get(drive) if drive else None
        if drive is None or record is None:
            accepted.outcomes[OUTCOME_UNKNOWN] += 1
            log.warning("graph_notification_refused", reason="unknown subscription", subscription_id=sub_id,
                        drive=drive)
            continue
        if not client_state_matches(config.client_state_secret, drive, note.get("clientState")):
            accepted.outcomes[OUTCOME_BAD_CLIENT_STATE] += 1
            log.warning("graph_notification_refused", reason="clientState mismatch", subscription_id=sub_id,
                        drive=drive, remote=request.remote_addr)
            continue
        event = note.get("lifecycleEvent")
        if event is None:
            accepted.syncs.setdefault(drive, (record.instance, "graph_notification"))
            accepted.outcomes[OUTCOME_ACCEPTED] += 1
            continue
        action = LIFECYCLE_ACTIONS.get(str(event))
        if action is None:
            accepted.outcomes[OUTCOME_MALFORMED] += 1
            log.warning("graph_notification_refused", reason="unknown lifecycleEvent", subscription_id=sub_id,
                        lifecycle_event=str(event)[:64])
            continue
        accepted.outcomes[f"lifecycle_{event}"] += 1
        log.info("graph_lifecycle_event", lifecycle_event=event, subscription_id=sub_id, drive=drive, action=action)
        if action == "sync":
            accepted.syncs[drive] = (record.instance, "graph_missed")
        else:
            accepted.tasks[drive] = action
    return accepted


def graph_blueprint(config: GraphWebhookConfig, state: StateStore, dispatch: Dispatch) -> Blueprint:
    """The two notification routes (see the module docstring)."""
    bp = Blueprint("graph_notifications", __name__)
    store = SubscriptionStore(state)
    if not config.client_state_secret:
        log.warning("graph_webhook_not_configured", missing="GRAPH_CLIENT_STATE_SECRET",
                    effect="Graph notifications are answered 503 (validation handshakes are answered)")

    def receive() -> Response:
        token = request.args.get("validationToken")
        if token is not None:
            if not token or len(token) > MAX_TOKEN_CHARS:
                return Response("bad validation token", status=400, mimetype="text/plain")
            # Werkzeug has URL-decoded it; echoed as it is, as text only.
            return Response(token, status=200, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})
        if not config.client_state_secret:
            return Response("not configured", status=503, mimetype="text/plain")
        request.max_content_length = MAX_BODY_BYTES + 1
        body = request.get_data(cache=False)
        try:
            parsed = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
        except (ValueError, RecursionError):
            parsed = None
        values = parsed.get("value") if isinstance(parsed, dict) else None
        if not isinstance(values, list):
            log.warning("graph_notification_refused", reason="malformed body", bytes=len(body))
            _count(state, Counter({OUTCOME_MALFORMED: 1}))
            return Response("malformed notification", status=400, mimetype="text/plain")
        try:
            accepted = _sort(values, config, store)
            for drive, (instance, reason) in accepted.syncs.items():
                dispatch.sync(state, instance, drive, reason=reason)
            for drive, action in accepted.tasks.items():
                dispatch.subscriptions(drive, action)
            _count(state, accepted.outcomes)
        except (redis.RedisError, kombu.exceptions.KombuError, OSError, ConfigError) as exc:
            # Not queued: Graph delivers it again later.
            log.error("graph_notification_not_queued", error=type(exc).__name__)
            return Response("unavailable", status=503, mimetype="text/plain")
        return Response("", status=202, mimetype="text/plain")

    bp.add_url_rule("/webhooks/graph", "receive", receive, methods=["POST"])
    bp.add_url_rule("/webhooks/graph/lifecycle", "receive_lifecycle", receive, methods=["POST"])
    return bp


def _count(state: StateStore, outcomes: Counter[str]) -> None:
    if not outcomes:
        return
    pipe = state.redis.pipeline(transaction=False)
    for outcome, number in outcomes.items():
        pipe.hincrbyfloat(state.keys.counters(), metric_field(METRIC, {"outcome": outcome}), number)
    pipe.execute()

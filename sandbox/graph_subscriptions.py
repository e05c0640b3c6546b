"""Graph change notifications in the simulator: ``/v1.0/subscriptions`` and the webhook deliveries.

What real Graph does, and so what this does (microsoft-graph-docs-contrib: concepts/
change-notifications-delivery-webhooks.md, includes/change-notifications-delivery-notificationurl-
validation.md, concepts/change-notifications-lifecycle-events.md, api-reference/v1.0/resources/
subscription.md):

- ``POST /subscriptions`` with ``changeType``, ``notificationUrl`` (https), ``resource``,
  ``expirationDateTime`` (required) and optional ``clientState`` (at most 128 characters) and
  ``lifecycleNotificationUrl`` (https). A drive root subscription (``drives/{id}/root``, with or without
  the leading slash) supports only ``changeType`` ``updated`` and lasts at most 42,300 minutes. Before
  answering 201 Graph POSTs ``?validationToken=<token>`` (``Content-Type: text/plain; charset=utf-8``)
  to the notification URL and to the lifecycle URL, and needs 200, ``text/plain`` and the URL-decoded
  token as the body within 10 s; else 400 and no subscription.
- ``PATCH /subscriptions/{id}`` with ``expirationDateTime`` renews (200 and the subscription);
  ``DELETE`` answers 204; ``GET /subscriptions`` lists the calling app's subscriptions; an unknown or
  expired id answers 404. An expired subscription is gone: Graph deletes it.
- A change anywhere in a subscribed drive POSTs ``{"value": [changeNotification]}`` to the notification
  URL over TLS; a delivery not answered 2xx within 3 s is tried again with backoff for up to 4 hours.
  Lifecycle notifications (``lifecycleEvent``: ``reauthorizationRequired``, ``subscriptionRemoved``,
  ``missed``) go to the lifecycle URL, on demand here (``SubscriptionService.lifecycle``).

Observed error bodies used as they were reported (Graph's generic error shape): a failed validation,
400 ``ValidationError`` "Subscription validation request failed. Notification endpoint must respond
with 200 OK to validation request." (or "... Response must exactly match validationToken query
parameter."); a timed-out one, 400 ``InvalidRequest`` "Subscription validation request timed out.";
too long a lifetime, 400 ``ExtensionError`` "Subscription expiration can only be 42300 minutes in the
future.". The codes of the other refusals (scheme, changeType, clientState length, unknown id) are not
documented; they are 400 / 404 with a plain message here.

Permission: the docs list ``Files.ReadWrite.All`` (application) for subscriptions on OneDrive for
Business / SharePoint drive items, even for a reader; the simulator asks for it (403 ``accessDenied``).
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from werkzeug.wrappers import Request, Response

from sandbox.graph_store import Drive, GraphStore

#: The application permission subscriptions on drive items need (the docs' permissions table).
FILES_READWRITE_ALL = "Files.ReadWrite.All"
#: Longest lifetime of a driveItem subscription.
MAX_DRIVE_MINUTES = 42_300  # minutes
#: Longest clientState Graph accepts.
MAX_CLIENT_STATE = 128  # characters
#: How long Graph waits for the validation answer.
VALIDATION_TIMEOUT = 10.0  # seconds
#: How long Graph waits for a notification delivery to be answered before it counts as failed.
DELIVERY_TIMEOUT = 3.0  # seconds
#: Graph keeps retrying an undelivered notification for up to 4 hours.
DELIVERY_WINDOW = 4 * 3600.0  # seconds
#: Backoff between tries of one delivery by default (doubling, capped at an hour, within the window).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 3600.0, 3600.0)
#: Lifecycle events Graph sends.
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
_DRIVE_RESOURCE = re.compile(r"^/?drives/(?P<drive>[^/]+)/root/?$")
_FRACTION = re.compile(r"\.(\d+)")


@dataclass
class Subscription:
    """One subscription as Graph holds it."""

    id: str
    resource: str
    drive_id: str
    change_type: str
    notification_url: str
    expires_at: float
    application_id: str
    tenant_id: str
    client_state: str | None = None
    lifecycle_url: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "resource": self.resource, "applicationId": self.application_id,
            "changeType": self.change_type, "clientState": self.client_state,
            "notificationUrl": self.notification_url, "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url, "expirationDateTime": graph_time(self.expires_at),
            "creatorId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.application_id)), "includeResourceData": None,
            "latestSupportedTlsVersion": "v1_2", "encryptionCertificate": None, "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


@dataclass
class Delivery:
    """One POST to a subscriber: what, where, and how it went (the last try)."""

    url: str
    body: dict[str, Any]
    subscription_id: str
    kind: str  # "change" or a lifecycle event
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    delivered: bool = False
    discarded: bool = False
    first_at: float = 0.0


def graph_time(epoch: float) -> str:
    """``2024-05-02T09:30:00.0000000Z``: how Graph writes a subscription's times."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def parse_graph_time(value: Any) -> float | None:
    """Epoch seconds of an ISO 8601 time (Z or an offset, up to 7 fraction digits); None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value.strip())
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def validation_token() -> str:
    """A token shaped like Graph's (words, colons and spaces: it must be URL-decoded to match)."""
    return f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"


class SubscriptionService:
    """Subscriptions of one simulated tenant and the deliveries they cause.

    store: the tenant's sites and drives (a change to a drive notifies its subscriptions).
    tenant_id: sent as ``tenantId`` in every notification.
    ca_file: the CA bundle the subscriber's certificate is verified against (True: the system's).
    retry_delays: seconds between tries of one undelivered notification (default: 15 s doubling to an
        hour, about 4 hours in all); a delivery is discarded after the last.
    validation_timeout: seconds a validation answer may take (default 10).
    delivery_timeout: seconds a delivery may take before it counts as failed (default 3).
    clock: Unix time (the simulator's).
    """

    def __init__(self, store: GraphStore, *, tenant_id: str, ca_file: str | bool = True,
                 retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
                 validation_timeout: float = VALIDATION_TIMEOUT, delivery_timeout: float = DELIVERY_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.ca_file = ca_file
        self.retry_delays = tuple(retry_delays)
        self.validation_timeout = validation_timeout
        self.delivery_timeout = delivery_timeout
        self.clock = clock
        self.subscriptions: dict[str, Subscription] = {}
        #: Every delivery made or under way, in the order they were first due.
        self.deliveries: list[Delivery] = []
        #: Validation requests sent: (url, status or error name).
        self.validations: list[tuple[str, int | str]] = []
        #: Subscription requests answered: (method, status).
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Condition()
        self._due: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._session = requests.Session()
        store.listeners.append(self.drive_changed)

    # -- test API ---------------------------------------------------------------------------------
    def for_drive(self, drive: Drive) -> list[Subscription]:
        """The live subscriptions on ``drive``."""
        with self._lock:
            self._drop_expired()
            return [s for s in self.subscriptions.values() if s.drive_id == drive.id]

    def expire(self, subscription_id: str) -> None:
        """The subscription's expiry passes now: Graph deletes it (its notifications stop)."""
        with self._lock:
            self.subscriptions[subscription_id].expires_at = self.clock() - 1

    def lifecycle(self, subscription_id: str, event: str) -> Delivery | None:
        """Sends the lifecycle notification ``event`` for the subscription (to its lifecycle URL; none
        without one, as Graph). ``subscriptionRemoved`` removes it first."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"{event!r} is not one of {LIFECYCLE_EVENTS}")
        with self._lock:
            sub = self.subscriptions[subscription_id]
            if event == "subscriptionRemoved":
                del self.subscriptions[subscription_id]
            if not sub.lifecycle_url:
                return None
            body = {"value": [{"subscriptionId": sub.id, "subscriptionExpirationDateTime": graph_time(sub.expires_at),
                               "tenantId": self.tenant_id, "clientState": sub.client_state, "lifecycleEvent": event}]}
            return self._schedule(Delivery(url=sub.lifecycle_url, body=body, subscription_id=sub.id, kind=event))

    def wait_delivered(self, count: int, *, timeout: float = 20.0) -> list[Delivery]:
        """Waits until ``count`` deliveries were answered 2xx; returns them (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                done = [d for d in self.deliveries if d.delivered]
                if len(done) >= count:
                    return done
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(done)} of {count} notifications delivered after {timeout} s: "
                                         f"{[(d.kind, d.statuses) for d in self.deliveries][-5:]}")
                self._lock.wait(min(left, 0.1))

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._session.close()

    # -- changes ----------------------------------------------------------------------------------
    def drive_changed(self, drive: Drive) -> None:
        """Queues one change notification per live subscription on ``drive`` (called by the store)."""
        with self._lock:
            self._drop_expired()
            for sub in self.subscriptions.values():
                if sub.drive_id != drive.id:
                    continue
                note: dict[str, Any] = {
                    "subscriptionId": sub.id, "subscriptionExpirationDateTime": graph_time(sub.expires_at),
                    "changeType": "updated", "resource": sub.resource.lstrip("/"), "clientState": sub.client_state,
                    "tenantId": self.tenant_id,
                }
                self._schedule(Delivery(url=sub.notification_url, body={"value": [note]}, subscription_id=sub.id,
                                        kind="change"))

    def _drop_expired(self) -> None:
        now = self.clock()
        for sub_id in [s.id for s in self.subscriptions.values() if s.expires_at <= now]:
            del self.subscriptions[sub_id]

    def _schedule(self, delivery: Delivery, *, delay: float = 0.0) -> Delivery:
        # Called with the lock held.
        if delivery.attempts == 0:
            delivery.first_at = time.monotonic()
            self.deliveries.append(delivery)
        heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), delivery))
        if self._thread is None:
            self._thread = threading.Thread(target=self._deliver_forever, name="graph-notifications", daemon=True)
            self._thread.start()
        self._lock.notify_all()
        return delivery

    def _deliver_forever(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    self._lock.wait(None if not self._due else max(0.0, self._due[0][0] - time.monotonic()))
                if self._stopping:
                    return
                _, _, delivery = heapq.heappop(self._due)
            status = self._post(delivery)
            with self._lock:
                delivery.attempts += 1
                delivery.statuses.append(status)
                if isinstance(status, int) and 200 <= status < 300:
                    delivery.delivered = True
                elif (delivery.attempts <= len(self.retry_delays)
                      and time.monotonic() - delivery.first_at < DELIVERY_WINDOW):
                    self._schedule(delivery, delay=self.retry_delays[delivery.attempts - 1])
                else:
                    delivery.discarded = True
                self._lock.notify_all()

    def _post(self, delivery: Delivery) -> int | str:
        try:
            response = self._session.post(delivery.url, data=json.dumps(delivery.body).encode("utf-8"),
                                          headers={"Content-Type": "application/json; charset=utf-8"},
                                          timeout=self.delivery_timeout, verify=self.ca_file)
            response.close()
            return response.status_code
        except requests.RequestException as exc:
            return type(exc).__name__

    # -- the HTTP API -----------------------------------------------------------------------------
    def handle(self, request: Request, subscription_id: str | None, *, application_id: str) -> Response:
        """Answers one ``/v1.0/subscriptions[/{id}]`` request of the app ``application_id``."""
        if subscription_id is None:
            if request.method == "POST":
                response = self._create(request, application_id)
            elif request.method == "GET":
                with self._lock:
                    self._drop_expired()
                    mine = [s.as_json() for s in self.subscriptions.values() if s.application_id == application_id]
                base = request.host_url.rstrip("/")
                response = _json(200, {"@odata.context": f"{base}/v1.0/$metadata#subscriptions", "value": mine})
            else:
                response = _error(405, "Request_BadRequest", "The HTTP method is not supported on subscriptions.")
        else:
            response = self._one(request, subscription_id, application_id)
        with self._lock:
            self.requests.append((request.method, response.status_code))
        return response

    def _one(self, request: Request, subscription_id: str, application_id: str) -> Response:
        with self._lock:
            self._drop_expired()
            sub = self.subscriptions.get(subscription_id)
            if sub is None or sub.application_id != application_id:
                return _error(404, "ResourceNotFound", f"The object was not found: subscription {subscription_id}.")
            if request.method == "GET":
                return _json(200, sub.as_json())
            if request.method == "DELETE":
                del self.subscriptions[subscription_id]
                return Response(status=204)
            if request.method != "PATCH":
                return _error(405, "Request_BadRequest", "The HTTP method is not supported on a subscription.")
        body = _body(request)
        if body is None:
            return _error(400, "BadRequest", "The request body is not a JSON object.")
        expires = parse_graph_time(body.get("expirationDateTime"))
        problem = self._lifetime_problem(expires)
        if problem is not None:
            return problem
        with self._lock:
            sub.expires_at = float(expires)  # type: ignore[arg-type]
            return _json(200, sub.as_json())

    def _lifetime_problem(self, expires: float | None) -> Response | None:
        if expires is None:
            return _error(400, "InvalidRequest", "expirationDateTime is a required property for subscription "
                                                 "creation.")
        now = self.clock()
        if expires <= now:
            return _error(400, "InvalidRequest", "Subscription expiration must be in the future.")
        if expires > now + MAX_DRIVE_MINUTES * 60:
            return _error(400, "ExtensionError",
                          f"Subscription expiration can only be {MAX_DRIVE_MINUTES} minutes in the future.")
        return None

    def _create(self, request: Request, application_id: str) -> Response:
        body = _body(request)
        if body is None:
            return _error(400, "BadRequest", "The request body is not a JSON object.")
        resource = body.get("resource")
        match = _DRIVE_RESOURCE.match(resource) if isinstance(resource, str) else None
        drive = self.store.drives.get(match["drive"]) if match else None
        if drive is None:
            return _error(400, "InvalidRequest", "Unable to find target address")
        if body.get("changeType") != "updated":
            return _error(400, "InvalidRequest", f"Invalid changeType {body.get('changeType')!r}: drive root items "
                                                 "support only 'updated'.")
        urls: dict[str, str] = {}
        for name in ("notificationUrl", "lifecycleNotificationUrl"):
            value = body.get(name)
            if value is None and name == "lifecycleNotificationUrl":
                continue
            if not isinstance(value, str) or urlsplit(value).scheme.lower() != "https" or not urlsplit(value).netloc:
                return _error(400, "InvalidRequest", f"{name} must be an absolute https URL.")
            urls[name] = value
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE):
            return _error(400, "InvalidRequest", f"clientState must be a string of at most {MAX_CLIENT_STATE} "
                                                 "characters.")
        expires = parse_graph_time(body.get("expirationDateTime"))
        problem = self._lifetime_problem(expires)
        if problem is not None:
            return problem
        for url in urls.values():
            refused = self._validate(url)
            if refused is not None:
                return refused
        sub = Subscription(id=str(uuid.uuid4()), resource=str(resource), drive_id=drive.id, change_type="updated",
                           notification_url=urls["notificationUrl"], expires_at=float(expires),  # type: ignore[arg-type]
                           application_id=application_id, tenant_id=self.tenant_id, client_state=client_state,
                           lifecycle_url=urls.get("lifecycleNotificationUrl"))
        with self._lock:
            self.subscriptions[sub.id] = sub
        base = request.host_url.rstrip("/")
        return _json(201, {"@odata.context": f"{base}/v1.0/$metadata#subscriptions/$entity", **sub.as_json()})

    def _validate(self, url: str) -> Response | None:
        """None when ``url`` answers the validation request as Graph requires, else the 400 to send."""
        token = validation_token()
        separator = "&" if urlsplit(url).query else "?"
        try:
            answer = self._session.post(url + separator + urlencode({"validationToken": token}), data=b"",
                                        headers={"Content-Type": "text/plain; charset=utf-8"},
                                        timeout=self.validation_timeout, verify=self.ca_file)
        except requests.Timeout:
            self._record_validation(url, "Timeout")
            return _error(400, "InvalidRequest", "Subscription validation request timed out.")
        except requests.RequestException as exc:
            self._record_validation(url, type(exc).__name__)
            return _error(400, "ValidationError", "Subscription validation request failed. Notification endpoint "
                                                  "must respond with 200 OK to validation request.")
        self._record_validation(url, answer.status_code)
        if answer.status_code != 200:
            return _error(400, "ValidationError", "Subscription validation request failed. Notification endpoint "
                                                  "must respond with 200 OK to validation request.")
        if not answer.headers.get("Content-Type", "").lower().startswith("text/plain") or answer.text != token:
            return _error(400, "ValidationError", "Subscription validation request failed. Response must exactly "
                                                  "match validationToken query parameter.")
        return None

    def _record_validation(self, url: str, outcome: int | str) -> None:
        with self._lock:
            self.validations.append((url, outcome))


def _body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    inner = {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "request-id": str(uuid.uuid4()),
             "client-request-id": str(uuid.uuid4())}
    return _json(status, {"error": {"code": code, "message": message, "innerError": inner}})

"""Graph change notifications for SharePoint: one subscription per synced drive, kept alive.

A notification only *asks for* the drive's delta sync (web/graph_notifications.py calls the
scheduler's trigger); documents still move only through the pipeline, and the beat schedule stays
the safety net for anything a notification missed.

Each drive gets one subscription on ``drives/{id}/root`` (``changeType`` ``updated``, the only one a
drive root supports), delivered to GRAPH_NOTIFICATION_URL (the web app's public https address behind
the operator's proxy, e.g. ``https://connectors.kmrl.co.in/webhooks/graph``) with lifecycle events to
GRAPH_LIFECYCLE_URL (default: that URL + ``/lifecycle``). Graph lets one last at most 42,300 minutes;
it is created for GRAPH_SUBSCRIPTION_MINUTES, renewed (PATCH) once less than
GRAPH_SUBSCRIPTION_RENEW_HOURS remain, and created again when Graph no longer lists it (expired,
removed). A subscription of ours that no record points to (a create whose answer was lost) is deleted.

``clientState`` is HMAC-SHA256(GRAPH_CLIENT_STATE_SECRET, drive id), so the web app checks a
notification without storage and a leaked value is good for one drive only. It is never logged.

State (base/keys.py): ``subscription:{drive}`` (hash: ``id``, ``expires`` (Unix time), ``instance``
(the connector instance, i.e. the site path), ``resource``, ``renewed`` (Unix time of the last create
or renewal)) and ``subscriptions`` (hash: subscription id -> drive id), since lifecycle notifications
name the subscription only.

Without GRAPH_NOTIFICATION_URL nothing here runs: SharePoint is polled only (logged once).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from base.state import Lease, StateStore
from config.settings import Settings
from connectors.sharepoint_connector import SharePointConnector
from utils.errors import AuthError, ConfigError, TransientError
from utils.http import json_body
from utils.logging import get_logger, register_secret

log = get_logger(__name__)

#: Graph's longest lifetime of a driveItem subscription.
MAX_SUBSCRIPTION_MINUTES = 42_300  # minutes
#: Default lifetime asked for: an hour under Graph's cap, so clock skew never makes Graph refuse it.
DEFAULT_SUBSCRIPTION_MINUTES = MAX_SUBSCRIPTION_MINUTES - 60  # minutes
#: Default time before expiry at which a subscription is renewed.
DEFAULT_RENEW_HOURS = 72.0  # hours
#: Default minutes between the checks of the beat task ``kmrl.subscriptions``.
DEFAULT_CHECK_MINUTES = 60  # minutes
#: Shortest GRAPH_CLIENT_STATE_SECRET accepted.
MIN_SECRET_CHARS = 24  # characters
#: How long one instance's check may hold its lease (renewed while it runs).
LEASE_SECONDS = 120.0  # seconds
#: How long a request for one drive (a lifecycle event) waits for a check under way to finish.
LEASE_WAIT = 30.0  # seconds
#: The path the web app serves lifecycle notifications on, under the notification URL.
LIFECYCLE_SUFFIX = "/lifecycle"
#: Outcomes of ``SubscriptionManager.ensure_drive``.
CREATED, RENEWED, KEPT, RECREATED = "created", "renewed", "kept", "recreated"
#: What a caller may ask for one drive: the usual check, a renewal now, a new subscription now.
ACTIONS = ("check", "renew", "recreate")
_DRIVE_RESOURCE = re.compile(r"^/?drives/(?P<drive>[^/]+)/root/?$")
_CLIENT_STATE_CONTEXT = b"kmrl-graph-client-state:"


@dataclass(frozen=True)
class PushSettings:
    """What the subscriptions need from the environment.

    notification_url: GRAPH_NOTIFICATION_URL, the web app's public https URL (empty: disabled).
    lifecycle_url: GRAPH_LIFECYCLE_URL (default: ``notification_url`` + ``/lifecycle``).
    client_state_secret: GRAPH_CLIENT_STATE_SECRET (at least 24 characters; required when enabled).
    lifetime: GRAPH_SUBSCRIPTION_MINUTES * 60, seconds (default 42,240 minutes, at most 42,300).
    renew_margin: GRAPH_SUBSCRIPTION_RENEW_HOURS * 3600, seconds (default 72 hours).
    check_minutes: GRAPH_SUBSCRIPTION_CHECK_MINUTES, minutes between beat checks (default 60).
    """

    notification_url: str = ""
    lifecycle_url: str = ""
    client_state_secret: str = field(default="", repr=False)
    lifetime: float = DEFAULT_SUBSCRIPTION_MINUTES * 60.0
    renew_margin: float = DEFAULT_RENEW_HOURS * 3600.0
    check_minutes: int = DEFAULT_CHECK_MINUTES

    @property
    def enabled(self) -> bool:
        return bool(self.notification_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> PushSettings:
        """Raises ConfigError for a URL that is not https, a missing or short secret, a lifetime past
        Graph's cap or a renewal margin not below the lifetime."""
        url = settings.env("GRAPH_NOTIFICATION_URL").strip()
        minutes = settings.reader.duration("GRAPH_SUBSCRIPTION_MINUTES", DEFAULT_SUBSCRIPTION_MINUTES, unit="minutes",
                                           above=0)
        renew_hours = settings.reader.duration("GRAPH_SUBSCRIPTION_RENEW_HOURS", DEFAULT_RENEW_HOURS, unit="hours",
                                               above=0)
        check = int(settings.reader.duration("GRAPH_SUBSCRIPTION_CHECK_MINUTES", DEFAULT_CHECK_MINUTES,
                                             unit="minutes", whole=True, minimum=0))
        if not url:
            return cls(check_minutes=check)
        lifecycle = settings.env("GRAPH_LIFECYCLE_URL").strip() or url.rstrip("/") + LIFECYCLE_SUFFIX
        for name, value in (("GRAPH_NOTIFICATION_URL", url), ("GRAPH_LIFECYCLE_URL", lifecycle)):
            parts = urlsplit(value)
            if parts.scheme != "https" or not parts.netloc:
                raise ConfigError(f"{name} must be an https:// URL that Microsoft Graph can reach (the web app "
                                  f"behind your proxy), not {value!r}")
        secret = settings.env("GRAPH_CLIENT_STATE_SECRET")
        register_secret(secret)  # masked in every log line of this process
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"GRAPH_CLIENT_STATE_SECRET must be set (at least {MIN_SECRET_CHARS} characters, e.g. "
                              "`openssl rand -hex 32`) when GRAPH_NOTIFICATION_URL is set")
        if minutes > MAX_SUBSCRIPTION_MINUTES:
            raise ConfigError(f"GRAPH_SUBSCRIPTION_MINUTES is {minutes:g}; Graph allows at most "
                              f"{MAX_SUBSCRIPTION_MINUTES} for a drive")
        if renew_hours * 60 >= minutes:
            raise ConfigError("GRAPH_SUBSCRIPTION_RENEW_HOURS must be shorter than GRAPH_SUBSCRIPTION_MINUTES")
        return cls(notification_url=url, lifecycle_url=lifecycle, client_state_secret=secret,
                   lifetime=minutes * 60.0, renew_margin=renew_hours * 3600.0, check_minutes=check)


def client_state(secret: str, drive_id: str) -> str:
    """The ``clientState`` of the drive's subscription: 43 URL-safe characters (Graph allows 128)."""
    digest = hmac.new(secret.encode("utf-8"), _CLIENT_STATE_CONTEXT + drive_id.encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def client_state_matches(secret: str, drive_id: str, given: Any) -> bool:
    """Whether ``given`` is the drive's clientState (compared in constant time)."""
    if not isinstance(given, str) or not secret:
        return False
    return hmac.compare_digest(given.encode("utf-8"), client_state(secret, drive_id).encode("utf-8"))


def drive_of_resource(resource: Any) -> str | None:
    """The drive id of ``drives/{id}/root`` (with or without a leading slash), else None."""
    match = _DRIVE_RESOURCE.match(resource) if isinstance(resource, str) else None
    return match["drive"] if match else None


def graph_time(epoch: float) -> str:
    """Unix time as Graph's ``expirationDateTime`` (UTC, seven fraction digits)."""
    moment = time.gmtime(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{int((epoch % 1) * 1e7):07d}Z"


def parse_graph_time(value: Any) -> float | None:
    """Unix time of a Graph ``DateTimeOffset`` (``...Z`` or an offset, any fraction digits); None if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = re.sub(r"\.(\d+)", lambda m: "." + m.group(1)[:6].ljust(6, "0"), value.strip())
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class SubscriptionRecord:
    """What ``subscription:{drive}`` holds (``id`` empty while a create is under way)."""

    drive: str
    instance: str
    resource: str
    id: str = ""
    expires: float = 0.0
    renewed: float = 0.0


class SubscriptionStore:
    """The subscription records in the state Redis (a client with or without decoded responses)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.redis = state.redis
        self.keys = state.keys

    def get(self, drive: str) -> SubscriptionRecord | None:
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.graph_subscription(drive)).items()}
        if not raw.get("instance"):
            return None
        return SubscriptionRecord(drive=drive, instance=raw["instance"], resource=raw.get("resource", ""),
                                  id=raw.get("id", ""), expires=_number(raw.get("expires")),
                                  renewed=_number(raw.get("renewed")))

    def drive_of(self, subscription_id: str) -> str | None:
        """The drive whose subscription ``subscription_id`` is (or was, until replaced), else None."""
        value = self.redis.hget(self.keys.graph_subscription_ids(), subscription_id)
        return _text(value) if value is not None else None

    def claim(self, drive: str, instance: str, resource: str) -> None:
        """Records which instance owns ``drive`` before its subscription exists, so a notification
        Graph sends right after the create already finds its way."""
        self.redis.hset(self.keys.graph_subscription(drive), mapping={"instance": instance, "resource": resource})

    def save(self, record: SubscriptionRecord, *, replaces: str = "") -> None:
        """Writes the record and its reverse entry, dropping the reverse entry of ``replaces``."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.graph_subscription(record.drive), mapping={
            "id": record.id, "expires": f"{record.expires:.3f}", "instance": record.instance,
            "resource": record.resource, "renewed": f"{record.renewed:.3f}"})
        pipe.hset(self.keys.graph_subscription_ids(), record.id, record.drive)
        if replaces and replaces != record.id:
            pipe.hdel(self.keys.graph_subscription_ids(), replaces)
        pipe.execute()

    def all(self) -> list[SubscriptionRecord]:
        """Every drive's record, by drive id."""
        head = self.keys.graph_subscription("")
        drives = sorted(_text(k)[len(head):] for k in self.redis.scan_iter(match=head + "*", count=200))
        return [r for r in (self.get(d) for d in drives) if r is not None]


def _number(value: Any) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _graph_problem(response: requests.Response) -> str:
    try:
        body = json_body(response)
    except (ValueError, TransientError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', 'unknown')}: {' '.join(str(error.get('message', '')).split())[:300]}"
    return f"HTTP {response.status_code}"


class SubscriptionManager:
    """Keeps one subscription per drive of one SharePoint connector instance.

    connector: the instance's connector, used inside its ``connect()``.
    state: the state store (records under ``subscription:*``).
    settings: PushSettings (enabled).
    instance: the connector's instance id (its site path).
    clock: Unix time (``time.time``).
    """

    def __init__(self, connector: SharePointConnector, state: StateStore, settings: PushSettings, *,
                 instance: str, clock: Callable[[], float] = time.time) -> None:
        self.connector = connector
        self.store = SubscriptionStore(state)
        self.settings = settings
        self.instance = instance
        self.clock = clock

    # -- Graph --------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
              what: str) -> requests.Response:
        response = self.connector.graph_request(method, path, body=body, what=what)
        status = response.status_code
        if status in (200, 201, 204, 404):
            return response
        problem = _graph_problem(response)
        response.close()
        if status == 401:
            raise AuthError(f"Graph refused a fresh token for {what} ({problem})")
        if status == 403:
            raise ConfigError(f"Graph denied {what} ({problem}): subscriptions on SharePoint drives need the "
                              "Files.ReadWrite.All application permission (admin consent)")
        if status >= 500:
            raise TransientError(f"Graph answered HTTP {status} to {what} ({problem})")
        if "validation" in problem.lower():
            raise ConfigError(f"Graph could not validate {self.settings.notification_url} for {what} ({problem}): "
                              "the web app must be reachable there over https and answer within 10 s")
        raise ConfigError(f"Graph answered HTTP {status} to {what} ({problem})")

    def live(self) -> dict[str, dict[str, Any]]:
        """The app's subscriptions Graph holds now, by id (``GET /subscriptions``, every page)."""
        found: dict[str, dict[str, Any]] = {}
        path: str | None = "subscriptions"
        pages = 0
        while path and pages < 100:
            pages += 1
            response = self._call("GET", path, what="the list of subscriptions")
            body = json_body(response)
            for entry in (body.get("value") or []) if isinstance(body, dict) else []:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    found[entry["id"]] = entry
            link = body.get("@odata.nextLink") if isinstance(body, dict) else None
            base = self.connector.graph_base_url + "/"
            path = link[len(base):] if isinstance(link, str) and link.startswith(base) else None
        return found

    def _subscribe(self, drive: str) -> tuple[str, float]:
        resource = f"drives/{drive}/root"
        response = self._call("POST", "subscriptions", what=f"the subscription to drive {drive}", body={
            "changeType": "updated", "notificationUrl": self.settings.notification_url,
            "lifecycleNotificationUrl": self.settings.lifecycle_url, "resource": resource,
            "expirationDateTime": graph_time(self.clock() + self.settings.lifetime),
            "clientState": client_state(self.settings.client_state_secret, drive),
        })
        if response.status_code == 404:
            raise ConfigError(f"Graph does not know drive {drive} (HTTP 404 to the subscription)")
        return self._accepted(response, drive)

    def _accepted(self, response: requests.Response, drive: str) -> tuple[str, float]:
        body = json_body(response)
        sub_id = body.get("id") if isinstance(body, dict) else None
        expires = parse_graph_time(body.get("expirationDateTime")) if isinstance(body, dict) else None
        if not isinstance(sub_id, str) or not sub_id or expires is None:
            raise TransientError(f"Graph's answer for the subscription to drive {drive} has no id or expiry")
        return sub_id, expires

    def _create(self, drive: str, *, replaces: str = "") -> SubscriptionRecord:
        resource = f"drives/{drive}/root"
        self.store.claim(drive, self.instance, resource)
        sub_id, expires = self._subscribe(drive)
        record = SubscriptionRecord(drive=drive, instance=self.instance, resource=resource, id=sub_id,
                                    expires=expires, renewed=self.clock())
        self.store.save(record, replaces=replaces)
        log.info("graph_subscription_created", drive=drive, subscription_id=sub_id, expires=round(expires),
                 replaces=replaces or None)
        return record

    def _renew(self, record: SubscriptionRecord) -> SubscriptionRecord | None:
        """The renewed record, or None when Graph no longer has the subscription (404)."""
        response = self._call("PATCH", f"subscriptions/{record.id}", what=f"the renewal of subscription {record.id}",
                              body={"expirationDateTime": graph_time(self.clock() + self.settings.lifetime)})
        if response.status_code == 404:
            response.close()
            return None
        _, expires = self._accepted(response, record.drive)
        renewed = SubscriptionRecord(drive=record.drive, instance=self.instance, resource=record.resource,
                                     id=record.id, expires=expires, renewed=self.clock())
        self.store.save(renewed)
        log.info("graph_subscription_renewed", drive=record.drive, subscription_id=record.id, expires=round(expires))
        return renewed

    def delete(self, subscription_id: str) -> bool:
        """Deletes a subscription at Graph; False when it was already gone."""
        response = self._call("DELETE", f"subscriptions/{subscription_id}",
                              what=f"the deletion of subscription {subscription_id}")
        response.close()
        return response.status_code != 404

    # -- the check ------------------------------------------------------------------------------------
    def ensure(self, drives: Sequence[str], *, action: str = "check") -> dict[str, str]:
        """Brings every drive of ``drives`` to one live subscription; returns drive -> outcome
        (created, renewed, kept, recreated). ``action`` ``renew`` renews at once (a
        reauthorizationRequired event), ``recreate`` subscribes again at once (subscriptionRemoved)."""
        if action not in ACTIONS:
            raise ValueError(f"{action!r} is not one of {ACTIONS}")
        live = self.live()
        outcomes = {drive: self.ensure_drive(drive, live, action=action) for drive in drives}
        self._delete_strays(live, drives)
        return outcomes

    def ensure_drive(self, drive: str, live: Mapping[str, Mapping[str, Any]], *, action: str = "check") -> str:
        record = self.store.get(drive)
        if record is None or not record.id:
            self._create(drive)
            return CREATED
        if action == "recreate" or record.id not in live:
            # Gone at Graph (expired, removed): what changed meanwhile was not notified, so the
            # caller asks for a sync of the drive as well.
            if record.id in live:
                self.delete(record.id)
            log.warning("graph_subscription_gone", drive=drive, subscription_id=record.id, action=action)
            self._create(drive, replaces=record.id)
            return RECREATED
        if action == "renew" or record.expires - self.clock() < self.settings.renew_margin:
            if self._renew(record) is None:
                self._create(drive, replaces=record.id)
                return RECREATED
            return RENEWED
        return KEPT

    def _delete_strays(self, live: Mapping[str, Mapping[str, Any]], drives: Iterable[str]) -> None:
        """Deletes our subscriptions on these drives that no record points to (a create whose answer
        was lost, a record replaced): Graph would notify each of them."""
        wanted = set(drives)
        for sub_id, entry in live.items():
            drive = drive_of_resource(entry.get("resource"))
            if drive not in wanted or entry.get("notificationUrl") != self.settings.notification_url:
                continue
            record = self.store.get(drive) if drive else None
            if (record is None or record.id != sub_id) and self.delete(sub_id):
                log.info("graph_subscription_stray_deleted", drive=drive, subscription_id=sub_id)


_disabled_logged = False


def ensure_subscriptions(instances: Sequence[tuple[str, SharePointConnector]], state: StateStore,
                         settings: PushSettings, *, drive: str | None = None, action: str = "check",
                         wait: float | None = None,
                         clock: Callable[[], float] = time.time) -> dict[str, dict[str, str]]:
    """Runs the check for each (instance id, connector) of SharePoint, each under a lease so two
    workers never subscribe the same drive twice; ``drive`` limits it to that drive (a lifecycle
    event). Returns instance -> drive -> outcome ({} when notifications are disabled). An instance
    whose lease is held is waited for up to ``wait`` seconds (default: none for a periodic check, whose
    work the holder does anyway; ``LEASE_WAIT`` for a request for one drive, which then raises
    TransientError, to be retried), then left out."""
    global _disabled_logged
    if not settings.enabled:
        if not _disabled_logged:
            _disabled_logged = True
            log.info("graph_notifications_disabled", reason="GRAPH_NOTIFICATION_URL is not set",
                     effect="SharePoint is polled on its schedule only")
        return {}
    results: dict[str, dict[str, str]] = {}
    for instance, connector in instances:
        lease = Lease(state, state.keys.lock("graph-subscriptions", instance), LEASE_SECONDS)
        deadline = time.monotonic() + (wait if wait is not None else LEASE_WAIT if drive is not None else 0.0)
        while not lease.acquire():
            if time.monotonic() >= deadline:
                if drive is not None:
                    raise TransientError(f"the Graph subscriptions of {instance} are being checked by another "
                                         f"worker; the {action} of drive {drive} waits for it")
                log.info("graph_subscriptions_busy", instance=instance)
                break
            time.sleep(0.2)
        if not lease.held:
            continue
        try:
            with connector.connect(connector.default_credentials()):
                drives = connector.scopes()
                if drive is not None:
                    if drive not in drives:
                        continue
                    drives = [drive]
                manager = SubscriptionManager(connector, state, settings, instance=instance, clock=clock)
                results[instance] = manager.ensure(drives, action=action)
        finally:
            lease.release()
    return results

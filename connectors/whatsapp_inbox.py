"""The WhatsApp inbox: the Redis stream that joins the webhook (producer) and the connector (consumer).

The Cloud API cannot list past messages, so every inbound media message is learned from a webhook
and must survive until the connector has delivered it to the Hub. The webhook appends one entry per
media message to the stream ``whatsapp:inbox`` (base/keys.py); the connector reads it through a consumer
group, so an entry read but never acknowledged stays pending and is claimed back after an idle
timeout. Nothing trims the stream by length (a ``MAXLEN`` would drop entries nobody has read yet):
an entry leaves the stream only when the connector acknowledges it (``XACK`` then ``XDEL``).

Meta delivers webhooks at least once, so the webhook stores a wamid once: one Lua script checks a
per-wamid "seen" key and appends in the same round trip, atomically (base/lua/inbox_append.lua).
"""

from __future__ import annotations

import json
import operator
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import redis

from base import lua
from base.keys import DEFAULT_PREFIX, KeySchema
from base.state import StateStore, metric_field

_DEFAULT_KEYS = KeySchema(DEFAULT_PREFIX)
#: The stream holding inbound media messages not yet delivered to the Hub.
STREAM_KEY = _DEFAULT_KEYS.whatsapp_inbox()
#: Prefix of the per-wamid key that marks a message as already queued.
SEEN_KEY_PREFIX = _DEFAULT_KEYS.whatsapp_seen_prefix()
#: How long a wamid is remembered; Meta re-delivers a webhook for up to 7 days, plus a day's margin.
SEEN_TTL = 8 * 24 * 3600  # seconds
#: The consumer group the connector reads through.
GROUP = "kmrl-connectors"
#: The service's counters hash (base.state ``metrics:counters``) and the webhook's counter in it,
#: by outcome (queued, duplicate), so /metrics shows the intake without another round trip.
METRICS_KEY = _DEFAULT_KEYS.counters()
WEBHOOK_METRIC = "kmrl_whatsapp_webhook_messages_total"
#: Message types that carry a downloadable media object.
MEDIA_TYPES = frozenset({"document", "image", "audio", "video", "sticker"})



@dataclass(frozen=True)
class InboundMedia:
    """One inbound media message, as stored in a stream entry (every field a string, maybe empty).

    ``sender`` is the message's ``from`` (the user's phone number); ``timestamp`` is Meta's Unix
    time in seconds; ``sha256`` is passed on exactly as the webhook gave it (its encoding varies).
    """

    wamid: str
    type: str
    media_id: str
    mime_type: str = ""
    sha256: str = ""
    filename: str = ""
    caption: str = ""
    sender: str = ""
    profile_name: str = ""
    timestamp: str = ""
    phone_number_id: str = ""
    display_phone_number: str = ""

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return asdict(self)

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> InboundMedia:
        """Rebuilds a message from a stream entry (bytes or str keys and values; unknown fields ignored)."""
        decoded = {_text(k): _text(v) for k, v in raw.items()}
        return cls(**{f.name: decoded.get(f.name, "") for f in fields(cls)})


_FIELD_NAMES = tuple(f.name for f in fields(InboundMedia))
_FIELD_NAMES_JSON = json.dumps(_FIELD_NAMES)
_field_values = operator.attrgetter(*_FIELD_NAMES)
_QUEUED_FIELD = metric_field(WEBHOOK_METRIC, {"outcome": "queued"})
_DUPLICATE_FIELD = metric_field(WEBHOOK_METRIC, {"outcome": "duplicate"})


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class NotANotification(ValueError):
    """The body is JSON but not shaped like a webhook notification."""


def media_in_notification(payload: Any) -> list[InboundMedia]:
    """Every inbound media message in a webhook notification, in order.

    Text messages, reactions, status updates, system errors and other fields are not documents and
    are left out; so is a media message without a wamid or a media id (nothing could fetch it).
    Raises ``NotANotification`` when ``payload`` is not a JSON object.
    """
    if not isinstance(payload, dict):
        raise NotANotification("the notification is not a JSON object")
    found: list[InboundMedia] = []
    for entry in _dicts(payload.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if change.get("field") != "messages" or not isinstance(value, dict):
                continue
            meta = value.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            names = {str(c.get("wa_id", "")): _profile_name(c) for c in _dicts(value.get("contacts"))}
            for message in _dicts(value.get("messages")):
                media = _media_of(message, meta, names)
                if media is not None:
                    found.append(media)
    return found


def _media_of(message: dict[str, Any], meta: Mapping[str, Any], names: Mapping[str, str]) -> InboundMedia | None:
    kind = message.get("type")
    body = message.get(kind) if isinstance(kind, str) else None
    if kind not in MEDIA_TYPES or not isinstance(body, dict):
        return None
    wamid, media_id = _s(message.get("id")), _s(body.get("id"))
    if not wamid or not media_id:
        return None
    sender = _s(message.get("from"))
    profile = names.get(sender) or (next(iter(names.values())) if len(names) == 1 else "")
    return InboundMedia(
        wamid=wamid, type=str(kind), media_id=media_id, mime_type=_s(body.get("mime_type")),
        sha256=_s(body.get("sha256")), filename=_s(body.get("filename")), caption=_s(body.get("caption")),
        sender=sender, profile_name=profile, timestamp=_s(message.get("timestamp")),
        phone_number_id=_s(meta.get("phone_number_id")), display_phone_number=_s(meta.get("display_phone_number")),
    )


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (v for v in value if isinstance(v, dict))


def _profile_name(contact: Mapping[str, Any]) -> str:
    profile = contact.get("profile")
    return _s(profile.get("name")) if isinstance(profile, dict) else ""


def _s(value: Any) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


@dataclass(frozen=True)
class InboxEntry:
    """A stream entry handed to a consumer: its id (for ``XACK``) and the message it holds."""

    entry_id: str
    media: InboundMedia


class Inbox:
    """The stream and its consumer group on one Redis connection.

    client: a redis-py client (``decode_responses`` either way).
    stream: the stream key (default ``STREAM_KEY``).
    seen_prefix: prefix of the per-wamid dedup keys (default ``SEEN_KEY_PREFIX``).
    metrics_key: the counters hash ``append`` adds its outcomes to (default ``METRICS_KEY``).
    group: the consumer group (default ``GROUP``).
    seen_ttl: seconds a wamid stays remembered by ``append`` (default ``SEEN_TTL``).
    """

    def __init__(self, client: redis.Redis, *, stream: str = STREAM_KEY, seen_prefix: str = SEEN_KEY_PREFIX,
                 metrics_key: str = METRICS_KEY, group: str = GROUP, seen_ttl: int = SEEN_TTL) -> None:
        self.client = client
        self.stream = stream
        self.seen_prefix = seen_prefix
        self.metrics_key = metrics_key
        self.group = group
        self.seen_ttl = seen_ttl
        self._append = client.register_script(lua.source("inbox_append"))

    @classmethod
    def for_prefix(cls, client: redis.Redis, prefix: str = DEFAULT_PREFIX, **options: Any) -> Inbox:
        """The inbox under the service's key prefix (KMRL_KEY_PREFIX): ``{prefix}whatsapp:inbox``."""
        keys = KeySchema(prefix)
        return cls(client, stream=keys.whatsapp_inbox(), seen_prefix=keys.whatsapp_seen_prefix(),
                   metrics_key=keys.counters(), **options)

    @classmethod
    def of_store(cls, store: StateStore, **options: Any) -> Inbox:
        """The inbox on the state store's connection, under its key prefix."""
        return cls.for_prefix(store.redis, store.prefix, **options)

    # ---- producer (the webhook) -----------------------------------------------------------

    def append(self, messages: Iterable[InboundMedia]) -> list[str]:
        """Appends the messages whose wamid was never queued; returns the new entry ids.

        One round trip, atomic: two deliveries of one wamid racing on two workers queue it once.
        """
        batch = list(messages)
        if not batch:
            return []
        keys = [self.stream, self.metrics_key] + [self.seen_prefix + m.wamid for m in batch]
        args: list[str | int] = [self.seen_ttl, _QUEUED_FIELD, _DUPLICATE_FIELD, _FIELD_NAMES_JSON]
        args.extend(json.dumps(_field_values(message), ensure_ascii=False) for message in batch)
        return [_text(entry_id) for entry_id in self._append(keys=keys, args=args)]

    # ---- consumer (the connector) ---------------------------------------------------------

    def ensure_group(self) -> None:
        """Creates the consumer group (and the stream) if missing; a group starts at the first entry."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def claim_idle(self, consumer: str, min_idle_ms: int, *, count: int = 32) -> Iterator[InboxEntry]:
        """Takes over, page by page, entries pending longer than ``min_idle_ms`` on any consumer.

        These are entries a consumer read but never acknowledged (a crashed worker, a run that ended
        early, a ``fetch_documents`` that only looked).
        """
        start = "0-0"
        while True:
            reply = self.client.xautoclaim(self.stream, self.group, consumer, min_idle_ms,
                                           start_id=start, count=count)
            start, claimed = _text(reply[0]), reply[1]
            yield from _entries(claimed)
            if start == "0-0":
                return

    def read_new(self, consumer: str, *, count: int = 32) -> list[InboxEntry]:
        """Up to ``count`` entries never delivered to the group (they become pending on ``consumer``)."""
        reply: Any = self.client.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count)
        if not reply:
            return []
        # RESP2 answers [[stream, entries]], RESP3 {stream: [entries]} (redis-py passes either through).
        raw = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
        return list(_entries(raw))

    def deliveries(self, entry_id: str) -> int:
        """How many times the pending entry ``entry_id`` was delivered (0 when it is not pending)."""
        rows = self.client.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        return int(rows[0]["times_delivered"]) if rows else 0

    def ack(self, entry_id: str) -> None:
        """Acknowledges and deletes one entry (one round trip). Only one group reads this stream, so
        an acknowledged entry is of no further use, and deleting it keeps the stream's size to what
        is still undelivered."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()

    def pending_count(self) -> int:
        """Entries delivered to a consumer but not acknowledged (0 when the group does not exist)."""
        try:
            summary = self.client.xpending(self.stream, self.group)
        except redis.ResponseError:
            return 0
        return int(summary["pending"])

    def backlog(self) -> tuple[int, float]:
        """(entries in the stream, age in seconds of the oldest one): what is not yet delivered."""
        length = int(self.client.xlen(self.stream))
        if not length:
            return 0, 0.0
        oldest: Any = self.client.xrange(self.stream, count=1)
        millis = int(_text(oldest[0][0]).split("-", 1)[0])  # an entry id starts with its Unix time in ms
        return length, max(0.0, time.time() - millis / 1000)

    def forget_idle_consumers(self, idle_ms: int) -> int:
        """Removes consumers with nothing pending that were idle longer than ``idle_ms`` (each run
        reads under a fresh consumer name, so old names would otherwise pile up). Returns how many."""
        removed = 0
        try:
            consumers = self.client.xinfo_consumers(self.stream, self.group)
        except redis.ResponseError:
            return 0
        for info in consumers:
            if int(info["pending"]) == 0 and int(info["idle"]) > idle_ms:
                self.client.xgroup_delconsumer(self.stream, self.group, _text(info["name"]))
                removed += 1
        return removed


def _entries(raw: Iterable[Any]) -> Iterator[InboxEntry]:
    for entry_id, values in raw:
        if values is None:  # deleted while pending (Redis < 7 reports these); nothing to deliver
            continue
        yield InboxEntry(entry_id=_text(entry_id), media=InboundMedia.from_fields(values))


def consumer_name(prefix: str = "connector") -> str:
    """A consumer name unique to this process and moment (``host-pid-millis``)."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}"

"""``/webhooks/whatsapp``: Meta's verification handshake and signed notifications.

GET answers the subscription challenge (reference/api-contracts.md part C, "Webhook verification").
POST checks ``X-Hub-Signature-256`` over the raw body before anything else is believed, then queues
every inbound media message on the WhatsApp inbox stream (connectors.whatsapp_inbox) in one Redis
round trip, shared with concurrent requests of the same worker (web.group_commit), and answers 200
once the messages are stored; downloading is the connector's job. A notification with no
media (text, reactions, status updates) costs no Redis call at all.

Answers Meta acts on: 200 means delivered; anything else makes Meta deliver again later (for up to
7 days), which is what we want when Redis is down (503), and harmless for a forged request (403).

Replays: a wamid is remembered for ``SEEN_TTL`` (8 days), so a signed notification captured once
must not be accepted after that. Each media message's own ``timestamp`` is checked first: one
older than WHATSAPP_MAX_MESSAGE_AGE_HOURS (default 168, Meta's 7 days of redelivery, which is also
how long a webhook's media id can be downloaded), dated more than ``MAX_CLOCK_SKEW`` ahead of our
clock, or without a usable timestamp is refused with its reason logged and counted, while the
notification is still answered 200: delivering it again would never make it acceptable. The age
limit plus the skew must stay below the dedup TTL, so any replay that outlives its seen-key is
already too old (checked at start-up).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis
from flask import Blueprint, Response, request

from base.metric_buffer import WEBHOOK_REQUEST
from base.state import metric_field
from config.settings import Settings
from connectors.whatsapp_inbox import WEBHOOK_METRIC, InboundMedia, Inbox, NotANotification, media_in_notification
from utils.errors import ConfigError
from utils.logging import get_logger
from web.group_commit import AppendFailed, GroupCommit
from web.metric_flush import WebMetrics

log = get_logger(__name__)

#: Largest notification body accepted by default; Meta documents webhook payloads of up to 3 MB.
DEFAULT_MAX_BODY_KB = 3072  # KiB
#: Oldest message accepted by default: Meta redelivers for up to 7 days and a webhook's media id
#: expires after 7 days (reference/api-contracts.md part C).
DEFAULT_MAX_MESSAGE_AGE_HOURS = 168  # hours
#: How far ahead of our clock a message's timestamp may be (Meta's clock and ours differ a little).
MAX_CLOCK_SKEW = 900  # seconds
#: Counter outcomes of refused messages (``kmrl_whatsapp_webhook_messages_total{outcome=...}``).
OUTCOME_EXPIRED = "expired"
OUTCOME_BAD_TIMESTAMP = "bad_timestamp"
#: The signature header and its scheme prefix.
SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
#: Counter of requests answered with a refusal, by webhook and reason (a forged or broken request).
REJECTED_METRIC = "kmrl_webhook_rejected_total"
#: Its reasons; the two signature reasons exist from the start (at 0) so an alert sees the first one.
REJECTED_SIGNATURE_MISSING = "signature_missing"
REJECTED_SIGNATURE_MISMATCH = "signature_mismatch"
REJECTED_BODY_TOO_LARGE = "body_too_large"
REJECTED_MALFORMED = "malformed"
_WEBHOOK = {"webhook": "whatsapp"}
_SIGNATURE_PREFIX_BYTES = SIGNATURE_PREFIX.encode("ascii")


@dataclass(frozen=True)
class WebhookConfig:
    """What the webhook needs from the environment.

    app_secret: WHATSAPP_APP_SECRET, the key of every notification's HMAC (no default).
    verify_token: WHATSAPP_VERIFY_TOKEN, the token Meta echoes in the subscription handshake.
    max_body_bytes: WHATSAPP_MAX_BODY_KB * 1024; larger notifications are answered 413.
    max_message_age: WHATSAPP_MAX_MESSAGE_AGE_HOURS * 3600, seconds; older messages are refused.
    clock: the time source for message ages (Unix seconds; ``time.time``).
    """

    app_secret: str = field(default="", repr=False)
    verify_token: str = field(default="", repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_KB * 1024
    max_message_age: float = DEFAULT_MAX_MESSAGE_AGE_HOURS * 3600.0
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        max_kb = settings.reader.number("WHATSAPP_MAX_BODY_KB", DEFAULT_MAX_BODY_KB, what="a number of KiB", above=0)
        max_hours = settings.reader.duration("WHATSAPP_MAX_MESSAGE_AGE_HOURS", DEFAULT_MAX_MESSAGE_AGE_HOURS,
                                             unit="hours", above=0)
        return cls(app_secret=settings.env("WHATSAPP_APP_SECRET"), verify_token=settings.env("WHATSAPP_VERIFY_TOKEN"),
                   max_body_bytes=int(max_kb * 1024), max_message_age=max_hours * 3600)


def refusal(message: InboundMedia, *, now: float, max_age: float) -> tuple[str, str] | None:
    """Why ``message`` must not be queued at ``now``, as (counter outcome, reason), or None to queue it.

    Refused: no timestamp or one that is not whole Unix seconds; older than ``max_age`` seconds;
    more than ``MAX_CLOCK_SKEW`` seconds ahead of ``now``.
    """
    raw = message.timestamp.strip()
    if not raw.isascii() or not raw.isdigit():
        return OUTCOME_BAD_TIMESTAMP, "no usable timestamp"
    age = now - int(raw)
    if age > max_age:
        return OUTCOME_EXPIRED, f"older than {max_age / 3600:g} h"
    if age < -MAX_CLOCK_SKEW:
        return OUTCOME_BAD_TIMESTAMP, f"dated more than {MAX_CLOCK_SKEW} s in the future"
    return None


#: The stdlib logger behind ``log``, looked up once: ``logging.getLogger`` takes logging's module lock.
_stdlib_log = logging.getLogger(__name__)


def _debug_enabled() -> bool:
    # Asked before the per-request line's arguments are built (a list of wamids).
    return _stdlib_log.isEnabledFor(logging.DEBUG)


def signature_matches(app_secret: str | bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is ``sha256=`` + the hex HMAC-SHA256 of exactly ``body`` (constant time).

    The header's surrounding whitespace and the case of its hex digits do not matter.
    """
    if not header or not app_secret:
        return False
    key = app_secret.encode("utf-8") if isinstance(app_secret, str) else app_secret
    # One C call (no HMAC object); bytes on both sides, so that a header with non-ASCII characters
    # is just a mismatch, not a TypeError.
    expected = _SIGNATURE_PREFIX_BYTES + hmac.digest(key, body, "sha256").hex().encode("ascii")
    return hmac.compare_digest(expected, header.strip().lower().encode("utf-8", "replace"))


def whatsapp_blueprint(config: WebhookConfig, inbox: Inbox, *, metrics: WebMetrics,
                       on_queued: Callable[[], None] | None = None) -> Blueprint:
    """The ``/webhooks/whatsapp`` routes, bound to ``config`` and ``inbox``; each POST's latency goes
    to ``metrics`` as ``kmrl_webhook_request_seconds{webhook="whatsapp"}``, each refused one to
    ``kmrl_webhook_rejected_total{webhook="whatsapp",reason=...}`` (written in the background).

    on_queued: called (by the group commit's leader, once per append that queued something new) so
    that the inbox is synced now rather than at the next tick; it must not block (a poke).
    """
    if config.max_message_age + MAX_CLOCK_SKEW >= inbox.seen_ttl:
        raise ConfigError(f"WHATSAPP_MAX_MESSAGE_AGE_HOURS ({config.max_message_age / 3600:g} h) plus the "
                          f"{MAX_CLOCK_SKEW} s clock allowance must stay below the {inbox.seen_ttl / 3600:g} h "
                          f"that a wamid is remembered, or a replayed notification would be queued again")
    bp = Blueprint("whatsapp_webhook", __name__)
    def append_and_poke(messages: list[InboundMedia]) -> None:
        if inbox.append(messages) and on_queued is not None:
            on_queued()

    queue = GroupCommit(append_and_poke)
    app_key = config.app_secret.encode("utf-8")
    rejected_labels = {reason: {**_WEBHOOK, "reason": reason} for reason in (
        REJECTED_SIGNATURE_MISSING, REJECTED_SIGNATURE_MISMATCH, REJECTED_BODY_TOO_LARGE, REJECTED_MALFORMED)}
    for reason in (REJECTED_SIGNATURE_MISSING, REJECTED_SIGNATURE_MISMATCH):
        metrics.count(REJECTED_METRIC, rejected_labels[reason], 0)

    def admissible(messages: Sequence[InboundMedia]) -> list[InboundMedia]:
        now = config.clock()
        kept: list[InboundMedia] = []
        refused: dict[str, int] = {}
        for message in messages:
            why = refusal(message, now=now, max_age=config.max_message_age)
            if why is None:
                kept.append(message)
                continue
            outcome, reason = why
            refused[outcome] = refused.get(outcome, 0) + 1
            log.warning("whatsapp_message_refused", reason=reason, wamid=message.wamid,
                        timestamp=message.timestamp[:32], effect="not queued; answered 200 so Meta stops delivering")
        if refused:
            try:
                pipe = inbox.client.pipeline(transaction=False)
                for outcome, count in refused.items():
                    pipe.hincrbyfloat(inbox.metrics_key, metric_field(WEBHOOK_METRIC, {"outcome": outcome}), count)
                pipe.execute()
            except redis.RedisError as exc:  # the count is a convenience; the refusal stands
                log.warning("whatsapp_refusal_not_counted", error=type(exc).__name__)
        return kept
    if not config.app_secret:
        log.warning("whatsapp_webhook_not_configured", missing="WHATSAPP_APP_SECRET",
                    effect="notifications are answered 503 and Meta delivers them again later")
    if not config.verify_token:
        log.warning("whatsapp_webhook_not_configured", missing="WHATSAPP_VERIFY_TOKEN",
                    effect="subscription handshakes are refused")

    @bp.get("/webhooks/whatsapp")
    def verify() -> Response:
        mode = request.args.get("hub.mode", "")
        token = request.args.get("hub.verify_token", "")
        challenge = request.args.get("hub.challenge", "")
        if (config.verify_token and mode == "subscribe"
                and hmac.compare_digest(token.encode("utf-8"), config.verify_token.encode("utf-8"))):
            log.info("whatsapp_webhook_verified")
            # The challenge goes back as the raw body; text/plain so a browser never renders it.
            return Response(challenge, status=200, mimetype="text/plain")
        log.warning("whatsapp_webhook_verification_refused", mode=mode or None)
        return Response("forbidden", status=403, mimetype="text/plain")

    @bp.post("/webhooks/whatsapp")
    def receive() -> Response:
        started = time.perf_counter()
        response = handle()
        # In process only (base/metric_buffer.py): this request pays no Redis call for its metrics.
        metrics.observe(WEBHOOK_REQUEST, _WEBHOOK, time.perf_counter() - started)
        return response

    def handle() -> Response:
        if not config.app_secret:
            return Response("not configured", status=503, mimetype="text/plain")
        # Werkzeug answers 413 before reading when Content-Length is too large. A chunked body is
        # read up to the limit and silently cut there, so read one byte more and look.
        request.max_content_length = config.max_body_bytes + 1
        body = request.get_data(cache=False)
        if len(body) > config.max_body_bytes:
            log.warning("whatsapp_webhook_rejected", reason="body too large", limit=config.max_body_bytes)
            metrics.count(REJECTED_METRIC, rejected_labels[REJECTED_BODY_TOO_LARGE])
            return Response("body too large", status=413, mimetype="text/plain")
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature_matches(app_key, body, signature):
            log.warning("whatsapp_webhook_rejected", reason="signature missing" if not signature
                        else "signature mismatch", bytes=len(body), remote=request.remote_addr)
            metrics.count(REJECTED_METRIC, rejected_labels[REJECTED_SIGNATURE_MISMATCH if signature
                                                           else REJECTED_SIGNATURE_MISSING])
            return Response("forbidden", status=403, mimetype="text/plain")
        try:
            messages = media_in_notification(json.loads(body))
        except (ValueError, RecursionError, NotANotification) as exc:
            log.warning("whatsapp_webhook_malformed", error=type(exc).__name__, bytes=len(body))
            metrics.count(REJECTED_METRIC, rejected_labels[REJECTED_MALFORMED])
            return Response("malformed notification", status=400, mimetype="text/plain")
        if messages:
            messages = admissible(messages)
        if messages:
            try:
                queue.append(messages)
            except AppendFailed as exc:
                log.error("whatsapp_webhook_queue_failed", error=str(exc), messages=len(messages))
                return Response("queue unavailable", status=503, mimetype="text/plain")
            if _debug_enabled():  # the stream and its counters are the record; keep the hot path quiet
                log.debug("whatsapp_media_queued", messages=len(messages), wamids=[m.wamid for m in messages][:10])
        return Response("ok", status=200, mimetype="text/plain")

    return bp

"""The webhook (public app) and the probes (internal app) in-process (Flask test client) on the real Redis
(test database 15). The listeners and operator access over real sockets: tests/test_web_access.py."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
import redis
import redis.retry
from flask import Flask

from base.state import StateStore
from config.settings import Settings
from connectors.whatsapp_inbox import InboundMedia, Inbox
from sandbox.servers import free_port
from sandbox.whatsapp import (
    MEDIA_TYPES,
    WhatsAppCloudSimulator,
    meta_body,
    signature,
    status_notification,
    text_message,
)
from tests.conftest import make_settings
from utils.errors import ConfigError
from web.app import REDIS_RETRIES, create_internal_app, create_public_app, redis_for_web
from web.metric_flush import WebMetrics
from web.webhook import WebhookConfig, signature_matches, whatsapp_blueprint

APP_SECRET = "test-app-secret-7f3a"
VERIFY_TOKEN = "test-verify-token-19c2"
STREAM = "kmrl:whatsapp:inbox"


def web_settings(tmp_path, redis_url: str, **environ: str) -> Settings:
    values = {"WHATSAPP_APP_SECRET": APP_SECRET, "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN, **environ}
    return make_settings(tmp_path, redis_url, log_file="", environ=values)


@pytest.fixture
def client(tmp_path, redis_url, redis_client):
    app = create_public_app(web_settings(tmp_path, redis_url), redis_client)
    return app.test_client()


@pytest.fixture
def sim() -> WhatsAppCloudSimulator:
    return WhatsAppCloudSimulator()


def post(client: Any, body: bytes, *, secret: str = APP_SECRET, signed: bool = True) -> Any:
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["X-Hub-Signature-256"] = signature(secret, body)
    return client.post("/webhooks/whatsapp", data=body, headers=headers)


def stored(redis_client: redis.Redis) -> list[InboundMedia]:
    return [InboundMedia.from_fields(fields) for _, fields in redis_client.xrange(STREAM)]


# -- verification -----------------------------------------------------------------------------------

def test_subscription_handshake_echoes_the_challenge_as_raw_body(client):
    answer = client.get("/webhooks/whatsapp", query_string={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"})
    assert answer.status_code == 200 and answer.data == b"1158201444"
    assert answer.mimetype == "text/plain"


@pytest.mark.parametrize("query", [
    {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
    {"hub.challenge": "1"},
])
def test_subscription_handshake_refused_without_mode_and_token(client, query):
    answer = client.get("/webhooks/whatsapp", query_string=query)
    assert answer.status_code == 403 and b"1" not in answer.data


def test_handshake_refused_when_no_verify_token_is_configured(tmp_path, redis_url, redis_client):
    app = create_public_app(web_settings(tmp_path, redis_url, WHATSAPP_VERIFY_TOKEN=""), redis_client)
    answer = app.test_client().get("/webhooks/whatsapp", query_string={
        "hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"})
    assert answer.status_code == 403


# -- signatures -------------------------------------------------------------------------------------

def test_signed_document_is_queued_with_everything_the_connector_needs(client, redis_client, sim):
    media = sim.add_media(mime_type="application/pdf")
    sent_at = int(time.time()) - 3600  # an hour ago
    message = sim.message("document", media, sender="919847012345", filename="WO-1234.pdf", caption="invoice",
                          timestamp=sent_at)
    body = meta_body(sim.notification([message], profile_names={"919847012345": "Sheena Nelson"}))
    assert post(client, body).status_code == 200
    [entry] = stored(redis_client)
    assert entry == InboundMedia(
        wamid=message["id"], type="document", media_id=media.media_id, mime_type="application/pdf",
        sha256=media.sha256_b64, filename="WO-1234.pdf", caption="invoice", sender="919847012345",
        profile_name="Sheena Nelson", timestamp=str(sent_at), phone_number_id=sim.phone_number_id,
        display_phone_number=sim.display_phone_number)


def test_missing_signature_is_refused_and_nothing_stored(client, redis_client, sim):
    body = meta_body(sim.notification([sim.message("image", sim.add_media(mime_type="image/jpeg"))]))
    assert post(client, body, signed=False).status_code == 403
    assert redis_client.exists(STREAM) == 0


def test_signature_with_another_secret_is_refused(client, redis_client, sim):
    body = meta_body(sim.notification([sim.message("image", sim.add_media(mime_type="image/jpeg"))]))
    assert post(client, body, secret="not-the-app-secret").status_code == 403
    assert redis_client.exists(STREAM) == 0


def test_signature_over_a_reserialised_body_is_refused(client, redis_client, sim):
    """Meta signs the ASCII-escaped bytes; the same JSON re-serialised (UTF-8, spaces) must not pass."""
    payload = sim.notification([sim.message("document", sim.add_media(), caption="സുരക്ഷാ സർക്കുലർ")])
    sent = meta_body(payload)
    reserialised = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = {"X-Hub-Signature-256": signature(APP_SECRET, sent), "Content-Type": "application/json"}
    assert client.post("/webhooks/whatsapp", data=reserialised, headers=headers).status_code == 403
    assert redis_client.exists(STREAM) == 0
    assert client.post("/webhooks/whatsapp", data=sent, headers=headers).status_code == 200


def test_malformed_signature_header_is_refused_not_an_error(client, redis_client):
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    for value in ("sha256=", "md5=abc", "sha256=zz" + "0" * 62, "sha256=\u00e9\u00e9"):
        answer = client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": value})
        assert answer.status_code == 403


def test_signature_check_ignores_hex_case_and_surrounding_space_and_nothing_else():
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    good = signature(APP_SECRET, body)
    digits = good.removeprefix("sha256=")
    for key in (APP_SECRET, APP_SECRET.encode()):
        assert signature_matches(key, body, good)
        assert signature_matches(key, body, f"  sha256={digits.upper()}\t")
        assert not signature_matches(key, body, good[:-1] + ("0" if good[-1] != "0" else "1"))
        assert not signature_matches(key, body + b" ", good)
        assert not signature_matches(key, body, digits)  # the scheme prefix is required
        assert not signature_matches(key, body, None)
    assert not signature_matches("", body, signature("", body))


def test_notification_is_refused_when_no_app_secret_is_configured(tmp_path, redis_url, redis_client, sim):
    app = create_public_app(web_settings(tmp_path, redis_url, WHATSAPP_APP_SECRET=""), redis_client)
    body = meta_body(sim.notification([sim.message("image", sim.add_media(mime_type="image/jpeg"))]))
    answer = app.test_client().post("/webhooks/whatsapp", data=body,
                                    headers={"X-Hub-Signature-256": signature("", body)})
    assert answer.status_code == 503  # not 200: Meta keeps the notification and delivers it again later
    assert redis_client.exists(STREAM) == 0


# -- what is stored -----------------------------------------------------------------------------

def test_every_media_type_is_queued_and_text_and_statuses_are_not(client, redis_client, sim):
    media = sim.add_media(mime_type="image/jpeg")
    messages = [sim.message(kind, media) for kind in MEDIA_TYPES] + [text_message("Good morning")]
    assert post(client, meta_body(sim.notification(messages))).status_code == 200
    assert post(client, meta_body(status_notification(messages[0]["id"], "read"))).status_code == 200
    assert [m.type for m in stored(redis_client)] == list(MEDIA_TYPES)


def test_text_only_and_status_only_notifications_store_nothing(client, redis_client, sim):
    assert post(client, meta_body(sim.notification([text_message("hi")]))).status_code == 200
    assert post(client, meta_body(status_notification("wamid.ABC", "delivered"))).status_code == 200
    assert redis_client.exists(STREAM) == 0
    assert redis_client.keys("kmrl:whatsapp:seen:*") == []


def test_redelivered_notification_is_stored_once(client, redis_client, sim):
    body = meta_body(sim.notification([sim.message("document", sim.add_media())]))
    assert [post(client, body).status_code for _ in range(3)] == [200, 200, 200]
    assert len(stored(redis_client)) == 1


def test_same_wamid_in_another_notification_or_twice_in_one_is_stored_once(client, redis_client, sim):
    media = sim.add_media()
    message = sim.message("document", media, caption="first")
    post(client, meta_body(sim.notification([message, dict(message)])))
    post(client, meta_body(sim.notification([message, sim.message("image", media)])))
    assert [m.type for m in stored(redis_client)] == ["document", "image"]


def test_queued_and_duplicate_messages_are_counted_for_metrics(client, redis_client, sim):
    body = meta_body(sim.notification([sim.message("document", sim.add_media()),
                                       sim.message("image", sim.add_media(mime_type="image/jpeg"))]))
    post(client, body)
    post(client, body)
    counters = redis_client.hgetall("kmrl:metrics:counters")
    assert float(counters["kmrl_whatsapp_webhook_messages_total|outcome=queued"]) == 2
    assert float(counters["kmrl_whatsapp_webhook_messages_total|outcome=duplicate"]) == 2


def test_the_seen_key_outlives_metas_seven_days_of_redelivery(client, redis_client, sim):
    message = sim.message("document", sim.add_media())
    post(client, meta_body(sim.notification([message])))
    ttl = redis_client.ttl(f"kmrl:whatsapp:seen:{message['id']}")
    assert ttl > 7 * 24 * 3600


def test_malayalam_caption_and_filename_survive_the_escaped_body(client, redis_client, sim):
    message = sim.message("document", sim.add_media(), filename="മെട്രോ_റിപ്പോർട്ട്.pdf",
                          caption="ആലുവ സ്റ്റേഷൻ സുരക്ഷാ പരിശോധന")
    post(client, meta_body(sim.notification([message], profile_names={"919847000001": "അഞ്ജലി"})))
    [entry] = stored(redis_client)
    assert entry.filename == "മെട്രോ_റിപ്പോർട്ട്.pdf"
    assert entry.caption == "ആലുവ സ്റ്റേഷൻ സുരക്ഷാ പരിശോധന"
    assert entry.profile_name == "അഞ്ജലി"


def test_awkward_characters_reach_the_stream_unchanged(client, redis_client, sim):
    caption = 'Quote " backslash \\ newline\n tab\t NUL\u0000 metro 🚇 ZWJ \u200d \ud7ff end'
    filename = "..\\..\\etc/passwd \u202egnp.exe"
    post(client, meta_body(sim.notification([sim.message("document", sim.add_media(), caption=caption,
                                                          filename=filename)])))
    [entry] = stored(redis_client)
    assert (entry.caption, entry.filename) == (caption, filename)  # stored as sent; sanitised later


def test_media_message_without_media_id_is_not_queued(client, redis_client, sim):
    message = sim.message("document", sim.add_media())
    del message["document"]["id"]
    assert post(client, meta_body(sim.notification([message]))).status_code == 200
    assert redis_client.exists(STREAM) == 0


def test_queued_entries_keep_the_order_of_the_notification(client, redis_client, sim):
    messages = [sim.message("document", sim.add_media(), filename=f"{i}.pdf") for i in range(5)]
    post(client, meta_body(sim.notification(messages)))
    assert [m.filename for m in stored(redis_client)] == [f"{i}.pdf" for i in range(5)]


# -- refusals ---------------------------------------------------------------------------------

def test_oversized_body_is_refused_with_413_and_nothing_stored(tmp_path, redis_url, redis_client, sim):
    app = create_public_app(web_settings(tmp_path, redis_url, WHATSAPP_MAX_BODY_KB="4"), redis_client)
    message = sim.message("document", sim.add_media(), caption="x" * 5000)
    body = meta_body(sim.notification([message]))
    assert len(body) > 4096
    answer = post(app.test_client(), body)
    assert answer.status_code == 413
    assert redis_client.exists(STREAM) == 0
    small = meta_body(sim.notification([sim.message("document", sim.add_media())]))
    assert post(app.test_client(), small).status_code == 200


def test_body_of_exactly_the_limit_is_accepted(tmp_path, redis_url, redis_client, sim):
    app = create_public_app(web_settings(tmp_path, redis_url, WHATSAPP_MAX_BODY_KB="4"), redis_client)
    message = sim.message("document", sim.add_media(), caption="")
    message["document"]["caption"] = "x" * (4096 - len(meta_body(sim.notification([message]))))
    body = meta_body(sim.notification([message]))
    assert len(body) == 4096
    assert post(app.test_client(), body).status_code == 200
    assert redis_client.xlen(STREAM) == 1


@pytest.mark.parametrize("value", ["64k", "0", "-1"])
def test_unusable_body_limit_is_a_config_error(tmp_path, redis_url, redis_client, value):
    with pytest.raises(ConfigError, match="WHATSAPP_MAX_BODY_KB"):
        create_public_app(web_settings(tmp_path, redis_url, WHATSAPP_MAX_BODY_KB=value), redis_client)


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2]", b'"a string"',
                                  b"[" * 50000 + b"]" * 50000])
def test_malformed_json_is_answered_400_and_nothing_stored(client, redis_client, body):
    assert post(client, body).status_code == 400
    assert redis_client.exists(STREAM) == 0


def test_unexpected_shapes_are_accepted_and_ignored(client, redis_client):
    for payload in ({}, {"object": "page", "entry": "x"}, {"entry": [{"changes": [{"field": "messages",
                                                                                    "value": None}]}]},
                    {"entry": [{"changes": [{"field": "messages", "value": {"messages": [
                        {"type": "document", "document": "not an object", "id": "wamid.1"}]}}]}]}):
        assert post(client, json.dumps(payload).encode()).status_code == 200
    assert redis_client.exists(STREAM) == 0


def test_redis_down_answers_503_quickly_so_meta_delivers_again(tmp_path, redis_url, sim, monkeypatch):
    # "Quickly" is what the client is built to do, not a stopwatch reading: it retries (to ride out a
    # Redis restart, web/app.py), and the backoff of all its retries adds up to well under a second
    # (redis-py's own backoff would wait seconds). The backoff is recorded instead of slept, so a
    # loaded machine cannot change the answer.
    backoff: list[float] = []
    monkeypatch.setattr(redis.retry, "sleep", backoff.append)
    settings = web_settings(tmp_path, redis_url)
    dead_url = f"redis://127.0.0.1:{free_port()}/15"
    dead = redis_for_web(replace(settings, state_redis_url=dead_url))
    app = create_public_app(settings, dead)
    body = meta_body(sim.notification([sim.message("document", sim.add_media())]))
    assert post(app.test_client(), body).status_code == 503
    assert 1 <= len(backoff) <= REDIS_RETRIES and sum(backoff) < 1.0, backoff
    internal = create_internal_app(settings, dead).test_client()
    assert internal.get("/readyz").status_code == 503
    assert internal.get("/healthz").status_code == 200


# -- probes -----------------------------------------------------------------------------------

def test_health_and_readiness_probes(tmp_path, redis_url, redis_client):
    client = create_internal_app(web_settings(tmp_path, redis_url), redis_client).test_client()
    assert client.get("/healthz").get_json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["redis"] == "ok"


def test_the_inbox_honours_the_key_prefix(tmp_path, redis_url, redis_client, sim):
    app = create_public_app(make_settings(tmp_path, redis_url, log_file="", key_prefix="kmrl-test:",
                                   environ={"WHATSAPP_APP_SECRET": APP_SECRET}), redis_client)
    post(app.test_client(), meta_body(sim.notification([sim.message("document", sim.add_media())])))
    assert redis_client.xlen("kmrl-test:whatsapp:inbox") == 1
    assert Inbox.for_prefix(redis_client, "kmrl-test:").stream == "kmrl-test:whatsapp:inbox"


# -- replays and stale messages -----------------------------------------------------------------------

DAY = 24 * 3600


def refused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "whatsapp_message_refused" in r.getMessage()]


def test_a_month_old_signed_notification_is_answered_200_and_not_queued(client, redis_client, sim, caplog):
    message = sim.message("document", sim.add_media(), timestamp=int(time.time()) - 30 * DAY)
    with caplog.at_level("WARNING"):
        answer = post(client, meta_body(sim.notification([message])))
    assert answer.status_code == 200  # anything else and Meta would deliver it again for 7 days
    assert redis_client.exists(STREAM) == 0
    assert redis_client.keys("kmrl:whatsapp:seen:*") == []
    [line] = refused_lines(caplog)
    assert "older than 168 h" in line and message["id"] in line
    counters = redis_client.hgetall("kmrl:metrics:counters")
    assert float(counters["kmrl_whatsapp_webhook_messages_total|outcome=expired"]) == 1


def test_a_redelivery_within_metas_seven_days_is_still_queued(client, redis_client, sim):
    message = sim.message("document", sim.add_media(), timestamp=int(time.time()) - 6 * DAY - 23 * 3600)
    assert post(client, meta_body(sim.notification([message]))).status_code == 200
    assert [m.wamid for m in stored(redis_client)] == [message["id"]]


def test_a_replay_after_the_dedup_key_expired_is_refused(tmp_path, redis_url, redis_client, sim):
    """The notification is queued once; 8 days later its seen-key has expired and the same signed
    bytes are delivered again: the message's own timestamp now refuses it."""
    clock = [time.time()]
    inbox = Inbox.for_prefix(redis_client)
    config = WebhookConfig(app_secret=APP_SECRET, clock=lambda: clock[0])
    app = Flask("replay")
    app.register_blueprint(whatsapp_blueprint(config, inbox, metrics=WebMetrics(StateStore(redis_client))))
    message = sim.message("document", sim.add_media(), timestamp=int(clock[0]))
    body = meta_body(sim.notification([message]))
    assert post(app.test_client(), body).status_code == 200
    assert len(stored(redis_client)) == 1

    clock[0] += inbox.seen_ttl + 1
    redis_client.delete(f"kmrl:whatsapp:seen:{message['id']}")  # what Redis does once the TTL has passed
    assert post(app.test_client(), body).status_code == 200
    assert len(stored(redis_client)) == 1


@pytest.mark.parametrize("timestamp", ["", "yesterday", "-5", "1.7e9", "١٧٤٩٤١٦٣٨٣"])
def test_a_message_without_a_usable_timestamp_is_refused(client, redis_client, sim, timestamp):
    message = sim.message("document", sim.add_media())
    message["timestamp"] = timestamp
    assert post(client, meta_body(sim.notification([message]))).status_code == 200
    assert redis_client.exists(STREAM) == 0
    counters = redis_client.hgetall("kmrl:metrics:counters")
    assert float(counters["kmrl_whatsapp_webhook_messages_total|outcome=bad_timestamp"]) == 1


def test_a_message_dated_a_day_ahead_is_refused(client, redis_client, sim, caplog):
    """A far-future timestamp would stay 'fresh' past the dedup window and could be replayed."""
    message = sim.message("document", sim.add_media(), timestamp=int(time.time()) + DAY)
    with caplog.at_level("WARNING"):
        assert post(client, meta_body(sim.notification([message]))).status_code == 200
    assert redis_client.exists(STREAM) == 0
    [line] = refused_lines(caplog)
    assert "in the future" in line


def test_a_few_minutes_of_clock_difference_are_tolerated(client, redis_client, sim):
    message = sim.message("document", sim.add_media(), timestamp=int(time.time()) + 120)
    assert post(client, meta_body(sim.notification([message]))).status_code == 200
    assert len(stored(redis_client)) == 1


def test_only_the_stale_messages_of_a_notification_are_refused(client, redis_client, sim):
    fresh = sim.message("document", sim.add_media(), caption="fresh")
    stale = sim.message("image", sim.add_media(mime_type="image/jpeg"), timestamp=int(time.time()) - 9 * DAY)
    assert post(client, meta_body(sim.notification([stale, fresh]))).status_code == 200
    assert [m.wamid for m in stored(redis_client)] == [fresh["id"]]


@pytest.mark.parametrize("hours", ["192", "500", "0", "-1", "nan", "a week"])
def test_an_age_limit_reaching_the_dedup_window_or_unusable_is_a_config_error(tmp_path, redis_url, redis_client,
                                                                             hours):
    with pytest.raises(ConfigError, match="WHATSAPP_MAX_MESSAGE_AGE_HOURS"):
        create_public_app(web_settings(tmp_path, redis_url, WHATSAPP_MAX_MESSAGE_AGE_HOURS=hours), redis_client)


def test_a_shorter_age_limit_is_honoured(tmp_path, redis_url, redis_client, sim):
    app = create_public_app(web_settings(tmp_path, redis_url, WHATSAPP_MAX_MESSAGE_AGE_HOURS="24"), redis_client)
    old = sim.message("document", sim.add_media(), timestamp=int(time.time()) - 25 * 3600)
    recent = sim.message("document", sim.add_media(), timestamp=int(time.time()) - 23 * 3600)
    assert post(app.test_client(), meta_body(sim.notification([old, recent]))).status_code == 200
    assert [m.wamid for m in stored(redis_client)] == [recent["id"]]

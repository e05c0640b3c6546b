"""The WhatsApp Cloud API simulator (sandbox/whatsapp.py) behaves as part C of the reference says."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.servers import ServerThread
from sandbox.whatsapp import (
    MEDIA_TYPES,
    WebhookSender,
    WhatsAppCloudSimulator,
    meta_body,
    signature,
    status_notification,
    text_message,
)


@pytest.fixture
def sim() -> Iterator[tuple[WhatsAppCloudSimulator, str]]:
    simulator = WhatsAppCloudSimulator(access_token="tok-123")
    with ServerThread(simulator) as server:
        yield simulator, server.url


TOKEN = "tok-123"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_media_is_fetched_in_two_steps_with_the_same_bearer(sim):
    simulator, url = sim
    media = simulator.add_media(b"%PDF-1.7 circular", mime_type="application/pdf")
    step1 = requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer())
    assert step1.status_code == 200
    info = step1.json()
    assert info["mime_type"] == "application/pdf"
    assert info["sha256"] == hashlib.sha256(b"%PDF-1.7 circular").hexdigest()
    assert int(info["file_size"]) == len(b"%PDF-1.7 circular")
    assert info["id"] == media.media_id and info["messaging_product"] == "whatsapp"
    step2 = requests.get(info["url"], headers=bearer())
    assert step2.status_code == 200 and step2.content == b"%PDF-1.7 circular"
    assert step2.headers["Content-Type"].startswith("application/pdf")
    assert simulator.counts == {"media": 1, "download": 1}


def test_file_size_arrives_as_string_and_as_integer(sim):
    simulator, url = sim
    media = simulator.add_media(size=100)
    sizes = [requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer()).json()["file_size"] for _ in range(2)]
    assert sorted(type(s).__name__ for s in sizes) == ["int", "str"]


def test_both_steps_refuse_a_missing_or_wrong_token(sim):
    simulator, url = sim
    media = simulator.add_media()
    for headers in ({}, bearer("wrong")):
        answer = requests.get(f"{url}/v21.0/{media.media_id}", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == 190 and answer.json()["error"]["type"] == "OAuthException"
    download_url = requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer()).json()["url"]
    assert requests.get(download_url).status_code == 401
    assert requests.get(download_url, headers=bearer("wrong")).status_code == 401


def test_unknown_media_id_answers_code_100_subcode_33(sim):
    simulator, url = sim
    media = simulator.add_media()
    simulator.delete_media(media.media_id)
    answer = requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer())
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["error_subcode"], error["type"]) == (100, 33, "GraphMethodException")
    assert media.media_id in error["message"]


def test_download_url_expires_after_its_lifetime():
    now = [1_000_000.0]
    simulator = WhatsAppCloudSimulator(access_token="tok-123", url_ttl=300, clock=lambda: now[0])
    with ServerThread(simulator) as server:
        media = simulator.add_media()
        download_url = requests.get(f"{server.url}/v21.0/{media.media_id}", headers=bearer()).json()["url"]
        now[0] += 299
        assert requests.get(download_url, headers=bearer()).status_code == 200
        now[0] += 2
        assert requests.get(download_url, headers=bearer()).status_code == 404
        fresh = requests.get(f"{server.url}/v21.0/{media.media_id}", headers=bearer()).json()["url"]
        assert requests.get(fresh, headers=bearer()).status_code == 200


def test_expire_urls_and_expire_next_urls(sim):
    simulator, url = sim
    media = simulator.add_media()
    first = requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer()).json()["url"]
    simulator.expire_urls()
    assert requests.get(first, headers=bearer()).status_code == 404
    simulator.expire_next_urls(1)
    stale = requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer()).json()["url"]
    good = requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer()).json()["url"]
    assert requests.get(stale, headers=bearer()).status_code == 404
    assert requests.get(good, headers=bearer()).status_code == 200


def test_a_tampered_download_url_is_refused(sim):
    simulator, url = sim
    media = simulator.add_media()
    other = simulator.add_media()
    download_url = requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer()).json()["url"]
    assert requests.get(download_url.replace(media.media_id, other.media_id), headers=bearer()).status_code == 403


def test_faults_on_demand_come_first_and_run_out(sim):
    simulator, url = sim
    media = simulator.add_media()
    simulator.fail_next("media", 503, times=2, headers={"Retry-After": "1"})
    statuses = [requests.get(f"{url}/v21.0/{media.media_id}", headers=bearer()).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert simulator.counts["media"] == 3


def test_phone_number_endpoint_proves_the_token(sim):
    simulator, url = sim
    answer = requests.get(f"{url}/v21.0/{simulator.phone_number_id}", headers=bearer())
    assert answer.status_code == 200 and answer.json()["id"] == simulator.phone_number_id
    assert requests.get(f"{url}/v21.0/{simulator.phone_number_id}", headers=bearer("old")).status_code == 401


def test_generated_media_carry_their_type_magic_and_differ():
    simulator = WhatsAppCloudSimulator()
    pdf, jpeg = simulator.add_media(mime_type="application/pdf", size=64), simulator.add_media(mime_type="image/jpeg")
    assert pdf.data.startswith(b"%PDF") and len(pdf.data) == 64
    assert jpeg.data.startswith(b"\xff\xd8\xff")
    assert simulator.add_media(size=64).data != pdf.data


def test_messages_of_every_media_type_have_the_documented_shape():
    simulator = WhatsAppCloudSimulator()
    media = simulator.add_media(mime_type="image/webp")
    for kind in MEDIA_TYPES:
        message = simulator.message(kind, media, caption="c", filename="f.pdf")
        assert message["type"] == kind and message[kind]["id"] == media.media_id
        assert message["id"].startswith("wamid.") and message["timestamp"].isdigit()
        assert ("filename" in message[kind]) == (kind == "document")
        assert ("caption" in message[kind]) == (kind in ("document", "image", "video"))
    assert simulator.message("audio", media)["audio"]["voice"] is False
    assert simulator.message("sticker", media)["sticker"]["animated"] is False
    with pytest.raises(ValueError):
        simulator.message("text", media)


def test_notification_envelope_names_the_business_number_and_each_sender():
    simulator = WhatsAppCloudSimulator()
    media = simulator.add_media()
    payload = simulator.notification([simulator.message("document", media, sender="919800000001"),
                                      text_message("hello", sender="919800000002")],
                                     profile_names={"919800000001": "Anjali"})
    value = payload["entry"][0]["changes"][0]["value"]
    assert payload["object"] == "whatsapp_business_account"
    assert value["metadata"]["phone_number_id"] == simulator.phone_number_id
    assert [c["wa_id"] for c in value["contacts"]] == ["919800000001", "919800000002"]
    assert value["contacts"][0]["profile"]["name"] == "Anjali"
    status = status_notification("wamid.X")["entry"][0]["changes"][0]["value"]
    assert "messages" not in status and status["statuses"][0]["status"] == "delivered"


def test_meta_body_escapes_non_ascii_and_the_signature_covers_those_bytes():
    body = meta_body({"caption": "സുരക്ഷ äöå"})
    assert body.isascii() and b"\\u0d38" in body and b"\\u00e4\\u00f6\\u00e5" in body
    assert json.loads(body) == {"caption": "സുരക്ഷ äöå"}
    assert signature("s3", body) == "sha256=" + __import__("hmac").new(b"s3", body, hashlib.sha256).hexdigest()


class _Recorder:
    """A webhook endpoint that records what it receives and answers from a script of statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
        with self.lock:
            self.received.append((body, headers))
            status = self.statuses.pop(0) if self.statuses else 200
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        return [b"x"]


def test_sender_retries_until_answered_200_with_identical_signed_bytes():
    recorder = _Recorder([500, 503])
    with ServerThread(recorder) as server:
        sender = WebhookSender(server.url + "/hook", "app-secret", retry_delay=0.01)
        delivery = sender.send({"caption": "ആലുവ"})
    assert delivery.statuses == [500, 503, 200] and delivery.delivered
    bodies = {body for body, _ in recorder.received}
    assert len(recorder.received) == 3 and len(bodies) == 1
    body, headers = recorder.received[0]
    assert headers["X-Hub-Signature-256"] == signature("app-secret", body)
    assert headers["Content-Type"] == "application/json"


def test_sender_gives_up_after_its_attempts_and_sends_duplicates_on_demand():
    recorder = _Recorder([500] * 10)
    with ServerThread(recorder) as server:
        sender = WebhookSender(server.url, "s", attempts=3, retry_delay=0.0)
        assert sender.send({"a": 1}).statuses == [500, 500, 500]
        recorder.statuses.clear()
        sender.send({"a": 2}, duplicates=2)
    # Each duplicate is one more delivery answered 200 at once: no retry, no waiting in between.
    assert [delivery.statuses for delivery in sender.log[1:]] == [[200]] * 3
    assert [json.loads(b) for b, _ in recorder.received[3:]] == [{"a": 2}] * 3


def test_sender_can_omit_or_forge_the_signature():
    recorder = _Recorder([])
    with ServerThread(recorder) as server:
        sender = WebhookSender(server.url, "s", attempts=1)
        sender.send_body(b"{}", signed=False)
        sender.send_body(b"{}", signature_value="sha256=00")
    assert "X-Hub-Signature-256" not in recorder.received[0][1]
    assert recorder.received[1][1]["X-Hub-Signature-256"] == "sha256=00"

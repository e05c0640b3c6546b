"""The web app as production runs it: a real gunicorn with two workers binding both listeners from
web/gunicorn_conf.py (public and internal, on loopback ports), posted to by the simulator of Meta's
webhook sender, queuing into the real Redis (test database 15)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from base.hub_client import HttpHub
from base.state import StateStore
from config.settings import redis_db_url
from connectors.whatsapp_connector import WhatsAppConnector
from connectors.whatsapp_inbox import InboundMedia
from sandbox.servers import ServerThread, free_port
from sandbox.whatsapp import WebhookSender, WhatsAppCloudSimulator, meta_body, signature
from tests.conftest import STATE_DB, make_settings, server_url
from web.metric_flush import FLUSH_SECONDS

APP_SECRET = "gunicorn-app-secret-41aa"
VERIFY_TOKEN = "gunicorn-verify-token-93be"
OPERATOR_TOKEN = "gunicorn-operator-token-6e02b9d4c8"
STREAM = "kmrl:whatsapp:inbox"
MAX_BODY_KB = 64
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Gunicorn:
    """Base URLs of the two listeners of one gunicorn."""

    public: str
    internal: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """gunicorn with the production settings (web/gunicorn_conf.py, its binds from WEB_* variables),
    2 workers, serving the state in test database 15."""
    logs = tmp_path_factory.mktemp("gunicorn")
    public_port, internal_port = free_port(), free_port()
    env = {**os.environ, "KMRL_ENV_FILE": "", "STATE_REDIS_URL": redis_db_url(server_url(), STATE_DB),
           "WHATSAPP_APP_SECRET": APP_SECRET, "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
           "WHATSAPP_MAX_BODY_KB": str(MAX_BODY_KB), "LOG_FILE": str(logs / "web.log"), "LOG_LEVEL": "WARNING",
           "WEB_PUBLIC_HOST": "127.0.0.1", "WEB_PUBLIC_PORT": str(public_port),
           "WEB_INTERNAL_HOST": "127.0.0.1", "WEB_INTERNAL_PORT": str(internal_port),
           "OPERATOR_TOKEN": OPERATOR_TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "--workers", "2", "web.app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    urls = Gunicorn(f"http://127.0.0.1:{public_port}", f"http://127.0.0.1:{internal_port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(urls.internal + "/healthz", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or a worker still booting
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"gunicorn did not start: {output[-3000:]}")
            time.sleep(0.1)
        yield urls
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def gunicorn(served: Gunicorn) -> str:
    """The public listener's base URL (where Meta posts)."""
    return served.public


@pytest.fixture
def sim() -> WhatsAppCloudSimulator:
    return WhatsAppCloudSimulator(access_token="gunicorn-graph-token")


@pytest.fixture
def sender(gunicorn: str, redis_url: str) -> WebhookSender:
    """Meta's sender pointed at gunicorn; ``redis_url`` first flushes test database 15."""
    return WebhookSender(gunicorn + "/webhooks/whatsapp", APP_SECRET, retry_delay=0.01)


def queued(client: redis.Redis) -> list[InboundMedia]:
    return [InboundMedia.from_fields(fields) for _, fields in client.xrange(STREAM)]


def test_verification_handshake_through_gunicorn(gunicorn: str) -> None:
    ok = requests.get(gunicorn + "/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "987654321"})
    assert ok.status_code == 200 and ok.text == "987654321"
    refused = requests.get(gunicorn + "/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "987654321"})
    assert refused.status_code == 403


def test_probes_answer_on_the_internal_listener_only(served: Gunicorn) -> None:
    assert requests.get(served.internal + "/healthz").json() == {"status": "alive"}
    assert requests.get(served.internal + "/readyz").json()["redis"] == "ok"
    assert requests.get(served.public + "/healthz").status_code == 404
    assert requests.get(served.public + "/readyz").status_code == 404


def test_metrics_need_the_operator_token_and_are_not_on_the_public_listener(served: Gunicorn, redis_url: str) -> None:
    StateStore.from_url(redis_url).incr_metric("kmrl_documents_total", {"source": "email", "outcome": "new"}, 3)
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    assert requests.get(served.public + "/metrics", headers=bearer).status_code == 404
    assert requests.get(served.internal + "/metrics").status_code == 401
    scraped = requests.get(served.internal + "/metrics", headers=bearer)
    assert scraped.status_code == 200
    assert 'kmrl_documents_total{outcome="new",source="email"} 3.0' in scraped.text


def webhook_requests_counted(internal: str) -> float:
    """kmrl_webhook_request_seconds_count in a scrape (0 when absent)."""
    text = requests.get(internal + "/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=10).text
    found = re.search(r'^kmrl_webhook_request_seconds_count\{webhook="whatsapp"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_webhook_latency_of_every_worker_adds_up_in_one_scrape(served: Gunicorn, sender: WebhookSender,
                                                               sim: WhatsAppCloudSimulator) -> None:
    """Each worker keeps its requests' latencies in memory and writes them every FLUSH_SECONDS; a
    scrape writes its own worker's at once. Within one period every request is counted, whichever
    worker served it (the scrape may reach the other one)."""
    time.sleep(FLUSH_SECONDS + 0.5)  # what earlier tests left in the workers' buffers is written by now
    before = webhook_requests_counted(served.internal)
    bodies = [meta_body(sim.notification([sim.message("document", sim.add_media())])) for _ in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: both workers take requests
        statuses = list(pool.map(lambda body: requests.post(sender.url, data=body, timeout=10, headers={
            "X-Hub-Signature-256": signature(APP_SECRET, body)}).status_code, bodies))
    assert statuses == [200] * len(bodies)
    deadline = time.monotonic() + FLUSH_SECONDS * 2 + 2
    while (counted := webhook_requests_counted(served.internal)) < before + len(bodies):
        assert time.monotonic() < deadline, f"{counted - before} of {len(bodies)} requests counted"
        time.sleep(0.25)
    assert counted == before + len(bodies)


def test_a_login_holds_across_both_workers(served: Gunicorn) -> None:
    """Every worker derives the same cookie key from the token, whichever one took the login."""
    browser = requests.Session()
    [login_csrf] = re.findall(r'name=login_csrf value="([^"]+)"', browser.get(served.internal + "/login").text)
    answer = browser.post(served.internal + "/login", data={"token": OPERATOR_TOKEN, "login_csrf": login_csrf},
                          headers={"Origin": served.internal}, allow_redirects=False)
    assert answer.status_code == 303
    with ThreadPoolExecutor(max_workers=8) as pool:  # new connections, spread over the two workers
        statuses = list(pool.map(lambda _: requests.get(served.internal + "/metrics", cookies=browser.cookies,
                                                        timeout=10).status_code, range(16)))
    assert statuses == [200] * 16


def test_metas_delivery_is_queued_with_malayalam_intact(sender: WebhookSender, sim: WhatsAppCloudSimulator,
                                                         redis_client: redis.Redis) -> None:
    media = sim.add_media()
    payload = sim.notification([sim.message("document", media, filename="പ്രതിമാസ_റിപ്പോർട്ട്.pdf",
                                            caption="ഇടപ്പള്ളി സ്റ്റേഷൻ")])
    delivery = sender.send(payload)
    assert delivery.statuses == [200]
    [entry] = queued(redis_client)
    assert (entry.filename, entry.caption, entry.media_id) == ("പ്രതിമാസ_റിപ്പോർട്ട്.pdf", "ഇടപ്പള്ളി സ്റ്റേഷൻ",
                                                                media.media_id)


def test_unsigned_and_wrongly_signed_deliveries_store_nothing(sender: WebhookSender, sim: WhatsAppCloudSimulator,
                                                               redis_client: redis.Redis) -> None:
    body = meta_body(sim.notification([sim.message("document", sim.add_media())]))
    one_try = WebhookSender(sender.url, APP_SECRET, attempts=1)
    assert one_try.send_body(body, signed=False).statuses == [403]
    assert one_try.send_body(body, signature_value=signature("another-secret", body)).statuses == [403]
    assert redis_client.exists(STREAM) == 0


def test_oversized_bodies_are_refused_with_413(sender: WebhookSender, sim: WhatsAppCloudSimulator,
                                               redis_client: redis.Redis) -> None:
    big = meta_body(sim.notification([sim.message("document", sim.add_media(), caption="x" * (MAX_BODY_KB * 1024))]))
    assert WebhookSender(sender.url, APP_SECRET, attempts=1).send_body(big).statuses == [413]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    chunked = requests.post(sender.url, data=chunks(), headers={"X-Hub-Signature-256": signature(APP_SECRET, big)})
    assert chunked.status_code == 413
    assert redis_client.exists(STREAM) == 0


def test_concurrent_redeliveries_on_both_workers_are_stored_once(sender: WebhookSender,
                                                                  sim: WhatsAppCloudSimulator,
                                                                  redis_client: redis.Redis) -> None:
    bodies = [meta_body(sim.notification([sim.message("image", sim.add_media(mime_type="image/jpeg"))]))
              for _ in range(20)]
    attempts = [body for body in bodies for _ in range(4)]  # every notification four times at once

    def deliver(body: bytes) -> int:
        return requests.post(sender.url, data=body, headers={"X-Hub-Signature-256": signature(APP_SECRET, body)},
                             timeout=10).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(deliver, attempts))
    assert statuses == [200] * len(attempts)
    wamids = [entry.wamid for entry in queued(redis_client)]
    assert len(wamids) == 20 and len(set(wamids)) == 20


def test_full_flow_from_metas_sender_through_gunicorn_to_the_hub(sender: WebhookSender, settings: Any,
                                                                 hub: Any) -> None:
    sim = WhatsAppCloudSimulator(access_token="gunicorn-graph-token")
    with ServerThread(sim) as graph:
        sent = [sim.add_media(mime_type="application/pdf"), sim.add_media(mime_type="image/jpeg")]
        payload = sim.notification([sim.message("document", sent[0], filename="circular.pdf",
                                                caption="ട്രെയിൻ സമയക്രമം"),
                                    sim.message("image", sent[1], caption="Platform 3 CCTV")])
        assert sender.send(payload, duplicates=1).delivered
        connector = WhatsAppConnector(access_token="gunicorn-graph-token", phone_number_id=sim.phone_number_id,
                                      graph_base_url=graph.url, settings=make_settings(
                                          Path(settings.spool_dir).parent, settings.state_redis_url),
                                      hub=HttpHub(hub.url, hub.token))
        summary = connector.sync_documents()
    assert summary.state == "ok" and summary.totals["new"] == 2
    assert {doc.sha256 for doc in hub.sim.documents.values()} == {m.sha256_hex for m in sent}
    assert connector.inbox.client.xlen(STREAM) == 0

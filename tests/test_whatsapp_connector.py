"""The WhatsApp connector end to end over real sockets: Meta's webhook sender -> the web app -> the
Redis stream (test database 15) -> the connector -> the Cloud API simulator -> the Hub simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from base.hub_client import HttpHub
from config.settings import Settings
from connectors.whatsapp_connector import (
    WhatsAppConnector,
    _sha256_bytes,
    extension_for,
    item_filename,
)
from connectors.whatsapp_inbox import InboundMedia, Inbox
from sandbox.servers import ServerThread, free_port
from sandbox.whatsapp import StoredMedia, WebhookSender, WhatsAppCloudSimulator, graph_error, text_message
from tests.conftest import make_settings
from utils.errors import ConfigError, ItemError
from utils.http import HttpClient
from web.app import create_app

APP_SECRET = "wa-app-secret-5d1e"
TOKEN = "wa-access-token-8c2b"
STREAM = "kmrl:whatsapp:inbox"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class WhatsApp:
    """The simulator, the webhook on a real port and a sender, around one test's settings."""

    sim: WhatsAppCloudSimulator
    graph_url: str
    sender: WebhookSender
    settings: Settings
    redis: redis.Redis
    sent: list[dict[str, Any]] = field(default_factory=list)

    def connector(self, hub: Any = None, **options: Any) -> WhatsAppConnector:
        options.setdefault("http_client", HttpClient("whatsapp", sleep=lambda _s: None))
        options.setdefault("graph_base_url", self.graph_url)
        if hub is not None:
            options["hub"] = HttpHub(hub.url, hub.token)
        return WhatsAppConnector(access_token=TOKEN, phone_number_id=self.sim.phone_number_id,
                                 settings=self.settings, **options)

    def send(self, kind: str = "document", *, data: bytes | None = None, mime_type: str = "application/pdf",
             duplicates: int = 0, **message: Any) -> StoredMedia:
        media = self.sim.add_media(data, mime_type=mime_type, size=3000)
        payload = self.sim.notification([self.sim.message(kind, media, **message)],
                                        profile_names={"919847000001": "Anjali Menon"})
        assert self.sender.send(payload, duplicates=duplicates).delivered
        self.sent.append(payload)
        return media

    def pending(self) -> int:
        return Inbox(self.redis).pending_count()


@pytest.fixture
def wa(settings: Settings, redis_client: redis.Redis) -> Iterator[WhatsApp]:
    settings = make_settings(Path(settings.spool_dir).parent, settings.state_redis_url,
                             environ={"WHATSAPP_APP_SECRET": APP_SECRET})
    sim = WhatsAppCloudSimulator(access_token=TOKEN)
    app = create_app(settings, redis_client)
    with ServerThread(sim) as graph, ServerThread(app) as web:
        sender = WebhookSender(web.url + "/webhooks/whatsapp", APP_SECRET, retry_delay=0.01)
        yield WhatsApp(sim, graph.url, sender, settings, redis_client)


def hub_documents(hub: Any) -> list[dict[str, Any]]:
    return [doc.metadata for doc in hub.sim.documents.values()]


# -- the whole way --------------------------------------------------------------------------------

def test_media_of_every_kind_reach_the_hub_and_leave_the_stream(wa: WhatsApp, hub: Any) -> None:
    sent = {kind: wa.send(kind, mime_type=mime) for kind, mime in
            [("document", "application/pdf"), ("image", "image/jpeg"), ("audio", "audio/ogg"),
             ("video", "video/mp4"), ("sticker", "image/webp")]}
    summary = wa.connector(hub).sync_documents()
    assert summary.state == "ok" and summary.totals["new"] == 5
    stored = {doc.sha256: doc for doc in hub.sim.documents.values()}
    assert set(stored) == {m.sha256_hex for m in sent.values()}
    assert all(count == 1 for count in hub.sim.uploads_per_key.values())
    assert wa.redis.xlen(STREAM) == 0 and wa.pending() == 0
    assert wa.sim.counts["media"] == 5 and wa.sim.counts["download"] == 5


def test_hub_metadata_carries_the_message_facts(wa: WhatsApp, hub: Any) -> None:
    sent_at = int(time.time()) - 3600  # the webhook refuses messages older than its dedup window
    media = wa.send("document", filename="WO-1234 bogie.pdf", caption="Bogie inspection report",
                    sender="919847000001", timestamp=sent_at)
    wa.connector(hub).sync_documents()
    [meta] = hub_documents(hub)
    wamid = wa.sent[0]["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    assert (meta["source"], meta["scope"], meta["source_id"], meta["version"]) == ("whatsapp", "inbox", wamid, wamid)
    assert meta["filename"] == "WO-1234 bogie.pdf" and meta["mime_type"] == "application/pdf"
    assert meta["title"] == "Bogie inspection report" and meta["author"] == "Anjali Menon"
    assert meta["created_at"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sent_at)))
    assert meta["extra"] == {
        "phone_number_id": wa.sim.phone_number_id, "display_phone_number": wa.sim.display_phone_number,
        "from": "919847000001", "profile_name": "Anjali Menon", "wamid": wamid, "timestamp": str(sent_at),
        "media_id": media.media_id, "mime_type": "application/pdf", "message_type": "document"}


def test_malayalam_caption_and_filename_reach_the_hub(wa: WhatsApp, hub: Any) -> None:
    wa.send("document", filename="സുരക്ഷാ_സർക്കുലർ.pdf",
            caption="ആലുവ സ്റ്റേഷനിലെ സുരക്ഷാ പരിശോധനയുടെ റിപ്പോർട്ട് ഇതോടൊപ്പം അയയ്ക്കുന്നു")
    wa.connector(hub).sync_documents()
    [meta] = hub_documents(hub)
    assert meta["filename"] == "സുരക്ഷാ_സർക്കുലർ.pdf"
    assert meta["title"].startswith("ആലുവ സ്റ്റേഷനിലെ")
    assert meta["language"] == "ml"


def test_media_without_a_filename_gets_type_sender_and_india_time(wa: WhatsApp, hub: Any) -> None:
    # The latest 20:59:43 UTC (the webhook refuses messages older than a week): 02:29:43 the next day in India.
    now = int(time.time())
    sent_at = now - now % 86400 + 75583
    sent_at -= 86400 if sent_at > now else 0
    wa.send("image", mime_type="image/jpeg", sender="919847000001", timestamp=sent_at)
    wa.send("audio", mime_type="audio/ogg; codecs=opus", sender="919847000001", timestamp=sent_at)
    wa.connector(hub).sync_documents()
    names = sorted(meta["filename"] for meta in hub_documents(hub))
    india = time.strftime("%Y%m%d_%H%M%S", time.gmtime(sent_at + 19800))  # UTC+05:30
    assert india.endswith("_022943")
    assert names == [f"audio_919847000001_{india}.ogg", f"image_919847000001_{india}.jpg"]


def test_duplicate_webhooks_and_a_repeated_entry_upload_once(wa: WhatsApp, hub: Any) -> None:
    wa.send("document", duplicates=2)
    assert wa.redis.xlen(STREAM) == 1
    [(_, fields)] = wa.redis.xrange(STREAM)
    wa.redis.xadd(STREAM, fields)  # as if the dedup key had expired before Meta's last retry
    summary = wa.connector(hub).sync_documents()
    assert summary.totals["new"] == 1 and summary.totals["duplicate"] == 1
    assert sum(hub.sim.uploads_per_key.values()) == 1
    assert wa.sim.counts["media"] == 1  # the repeat was known by its wamid: no Graph request
    assert wa.redis.xlen(STREAM) == 0 and wa.pending() == 0


def test_text_messages_never_reach_the_connector(wa: WhatsApp, hub: Any) -> None:
    assert wa.sender.send(wa.sim.notification([text_message("Good morning, sir")])).delivered
    summary = wa.connector(hub).sync_documents()
    assert summary.totals["fetched"] == 0 and wa.sim.counts["media"] == 0


# -- nothing lost ---------------------------------------------------------------------------------

DEAD_CONSUMER = textwrap.dedent("""
    import os, signal
    from config.settings import Settings
    from connectors.whatsapp_connector import WhatsAppConnector
    connector = WhatsAppConnector.from_settings(Settings.from_env())
    with connector.connect(connector.default_credentials()):
        item = next(connector.list_changes("inbox", None))
        print(item.source_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_entry_read_by_a_killed_worker_is_reclaimed_and_ingested(wa: WhatsApp, hub: Any, tmp_path: Path) -> None:
    wa.send("document", filename="left-behind.pdf")
    env = {**os.environ, "KMRL_ENV_FILE": "", "STATE_REDIS_URL": wa.settings.state_redis_url,
           "WHATSAPP_ACCESS_TOKEN": TOKEN, "WHATSAPP_PHONE_NUMBER_ID": wa.sim.phone_number_id,
           "WHATSAPP_GRAPH_URL": wa.graph_url, "HUB_OUTBOX_DIR": str(tmp_path / "outbox"),
           "LOG_FILE": str(tmp_path / "worker.log"), "AUDIT_LOG": str(tmp_path / "audit.log")}
    worker = subprocess.run([sys.executable, "-c", DEAD_CONSUMER], cwd=ROOT, env=env, capture_output=True,
                            timeout=60, check=False)
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()[-2000:]
    assert worker.stdout.decode().startswith("wamid.")
    assert wa.pending() == 1

    patient = wa.connector(hub, claim_idle_seconds=300).sync_documents()
    assert patient.totals["fetched"] == 0 and wa.pending() == 1  # not idle long enough yet

    time.sleep(0.3)
    summary = wa.connector(hub, claim_idle_seconds=0.2).sync_documents()
    assert summary.totals["new"] == 1
    assert [meta["filename"] for meta in hub_documents(hub)] == ["left-behind.pdf"]
    assert wa.pending() == 0 and wa.redis.xlen(STREAM) == 0


def test_documents_fetched_without_sync_return_to_the_queue(wa: WhatsApp, hub: Any) -> None:
    media = wa.send("document")
    connector = wa.connector(hub, claim_idle_seconds=0.1)
    documents = list(connector.fetch_documents())
    assert [d.sha256 for d in documents] == [media.sha256_hex]
    for document in documents:
        document.close()
    assert wa.pending() == 1 and hub.sim.documents == {}
    time.sleep(0.2)
    assert connector.sync_documents().totals["new"] == 1
    assert wa.pending() == 0


def test_entries_wait_while_the_token_is_rejected(wa: WhatsApp, hub: Any) -> None:
    wa.send("document")
    wa.sim.set_access_token("rotated-token")
    summary = wa.connector(hub).sync_documents()
    assert summary.state == "auth_failed" and "190" in summary.scopes[0].error
    assert TOKEN not in summary.scopes[0].error
    assert wa.redis.xlen(STREAM) == 1 and wa.pending() == 1
    wa.sim.set_access_token(TOKEN)
    time.sleep(0.15)
    assert wa.connector(hub, claim_idle_seconds=0.1).sync_documents().totals["new"] == 1
    assert wa.redis.xlen(STREAM) == 0


def test_rate_limit_code_ends_the_run_as_throttled_for_every_worker(wa: WhatsApp, hub: Any) -> None:
    wa.send("document")
    wa.sim.fail_next("media", 400, body=graph_error("throughput reached", type_="OAuthException", code=130429))
    connector = wa.connector(hub, http_client=None)  # the real client, fed by the shared Redis gate
    summary = connector.sync_documents()
    assert summary.state == "throttled"
    gate = connector.state.throttle_gate("whatsapp", wa.sim.phone_number_id)
    assert gate.blocked_until() > time.time() + 30
    assert wa.pending() == 1


def test_server_errors_are_retried_by_the_shared_policy(wa: WhatsApp, hub: Any) -> None:
    wa.send("document")
    wa.sim.fail_next("media", 500)
    wa.sim.fail_next("download", 503)
    assert wa.connector(hub).sync_documents().totals["new"] == 1
    assert wa.sim.counts["media"] == 2 and wa.sim.counts["download"] == 2


# -- media URLs and ids ---------------------------------------------------------------------------

def test_expired_media_url_is_resolved_again(wa: WhatsApp, hub: Any) -> None:
    media = wa.send("document")
    wa.sim.expire_next_urls(1)
    summary = wa.connector(hub).sync_documents()
    assert summary.totals["new"] == 1
    assert next(iter(hub.sim.documents.values())).sha256 == media.sha256_hex
    assert wa.sim.counts["media"] == 2 and wa.sim.counts["download"] == 2


def test_media_url_refused_after_a_fresh_resolve_is_dead_lettered(wa: WhatsApp, hub: Any) -> None:
    wa.send("document")
    wa.sim.expire_next_urls(2)
    connector = wa.connector(hub)
    summary = connector.sync_documents()
    assert summary.totals["dead_lettered"] == 1 and "HTTP 404" in connector.state.list_dead_letters()[0].reason
    assert wa.sim.counts["media"] == 2  # resolved once more, not in a loop
    assert wa.pending() == 0


def test_unknown_media_id_is_dead_lettered_acked_and_the_run_goes_on(wa: WhatsApp, hub: Any) -> None:
    gone = wa.send("document", filename="gone.pdf")
    wa.send("document", filename="kept.pdf")
    wa.sim.delete_media(gone.media_id)
    connector = wa.connector(hub)
    summary = connector.sync_documents()
    assert summary.state == "ok"
    assert summary.totals["new"] == 1 and summary.totals["dead_lettered"] == 1
    [dead] = connector.state.list_dead_letters("whatsapp")
    assert "unknown to the Cloud API" in dead.reason and "code 100/33" in dead.reason
    assert dead.metadata["media_id"] == gone.media_id
    assert wa.redis.xlen(STREAM) == 0 and wa.pending() == 0
    assert connector.sync_documents().totals["fetched"] == 0  # not dead-lettered again and again


def test_download_with_other_bytes_than_meta_hashed_is_dead_lettered(wa: WhatsApp, hub: Any) -> None:
    media = wa.send("document")
    wa.sim.fail_next("download", 200, body=bytes(len(media.data)))
    connector = wa.connector(hub)
    summary = connector.sync_documents()
    assert summary.totals["dead_lettered"] == 1 and hub.sim.documents == {}
    assert "sha256" in connector.state.list_dead_letters()[0].reason


def test_truncated_download_is_transient_and_the_entry_waits(wa: WhatsApp, hub: Any) -> None:
    media = wa.send("document")
    wa.sim.fail_next("download", 200, body=media.data[:-100])
    summary = wa.connector(hub).sync_documents()
    assert summary.state == "error" and "ended after" in summary.scopes[0].error
    assert wa.pending() == 1
    time.sleep(0.15)
    assert wa.connector(hub, claim_idle_seconds=0.1).sync_documents().totals["new"] == 1


def test_an_entry_that_keeps_failing_is_dead_lettered_instead_of_blocking_the_queue(wa: WhatsApp, hub: Any) -> None:
    wa.send("document", filename="stuck.pdf")
    wa.sim.fail_next("download", 500, times=1000)
    states = []
    for _ in range(3):
        time.sleep(0.06)
        states.append(wa.connector(hub, claim_idle_seconds=0.05, max_deliveries=2).sync_documents().state)
    assert states == ["error", "error", "ok"]
    connector = wa.connector(hub)
    [dead] = connector.state.list_dead_letters("whatsapp")
    assert "gave up after 2 deliveries" in dead.reason
    assert wa.pending() == 0 and wa.redis.xlen(STREAM) == 0


def test_new_entries_behind_a_reclaimed_one_are_read_in_the_same_run(wa: WhatsApp, hub: Any) -> None:
    wa.send("document", filename="first.pdf")
    Inbox(wa.redis).ensure_group()
    Inbox(wa.redis).read_new("crashed-worker")
    wa.send("document", filename="second.pdf")
    time.sleep(0.1)
    summary = wa.connector(hub, claim_idle_seconds=0.05).sync_documents()
    assert summary.totals["new"] == 2
    assert wa.pending() == 0


# -- health and settings --------------------------------------------------------------------------

def test_health_check_proves_the_token_for_the_phone_number(wa: WhatsApp) -> None:
    result = wa.connector().health_check()
    assert result.ok and result.state == "healthy" and wa.sim.display_phone_number in result.detail
    assert wa.sim.counts["phone_number"] == 1


def test_health_check_reports_a_rejected_token_and_an_unknown_number(wa: WhatsApp) -> None:
    expired = "EAAGexpired0token0for0test"
    bad = wa.connector().health_check({"access_token": expired, "phone_number_id": wa.sim.phone_number_id})
    assert (bad.ok, bad.state) == (False, "auth_failed") and expired not in bad.detail
    unknown = wa.connector().health_check({"access_token": TOKEN, "phone_number_id": "999"})
    assert (unknown.ok, unknown.state) == (False, "config_error")


def test_health_check_warns_when_undelivered_entries_near_metas_expiry(wa: WhatsApp) -> None:
    six_days_ago_ms = int((time.time() - 6 * 86400) * 1000)
    wa.redis.xadd(STREAM, InboundMedia(wamid="wamid.old", type="document", media_id="1").to_fields(),
                  id=f"{six_days_ago_ms}-0")
    result = wa.connector().health_check()
    assert (result.ok, result.state) == (False, "degraded") and "6.0 days" in result.detail


def test_health_check_of_an_unreachable_graph(wa: WhatsApp) -> None:
    connector = wa.connector(graph_base_url=f"http://127.0.0.1:{free_port()}")
    result = connector.health_check()
    assert (result.ok, result.state) == (False, "unreachable")


def test_from_settings_reads_the_whatsapp_variables(wa: WhatsApp) -> None:
    settings = make_settings(Path(wa.settings.spool_dir).parent, wa.settings.state_redis_url, environ={
        "WHATSAPP_ACCESS_TOKEN": TOKEN, "WHATSAPP_PHONE_NUMBER_ID": "1065", "WHATSAPP_API_VERSION": "v22.0",
        "WHATSAPP_GRAPH_URL": "http://127.0.0.1:9/", "WHATSAPP_CLAIM_IDLE_SECONDS": "42"})
    connector = WhatsAppConnector.from_settings(settings)
    assert (connector.access_token, connector.phone_number_id, connector.api_version) == (TOKEN, "1065", "v22.0")
    assert connector.graph_base_url == "http://127.0.0.1:9" and connector.claim_idle_ms == 42000
    assert connector.scopes() == ["inbox"] and connector.name == "whatsapp"
    with pytest.raises(ConfigError):
        WhatsAppConnector(api_version="21", settings=settings)
    with pytest.raises(ConfigError, match="WHATSAPP_CLAIM_IDLE_SECONDS"):
        WhatsAppConnector.from_settings(replace(settings, environ={"WHATSAPP_CLAIM_IDLE_SECONDS": "5m"}))


def test_download_url_over_plain_http_is_refused_when_graph_is_https(wa: WhatsApp) -> None:
    connector = wa.connector(graph_base_url="https://graph.example.invalid")
    response = requests.Response()
    response.status_code, response._content = 200, b'{"url": "http://lookaside.example/x", "id": "1"}'
    connector._http = _Answering(response)
    with pytest.raises(ItemError, match="acceptable download URL"):
        connector.resolve("1")


def test_missing_credentials_are_a_config_error(wa: WhatsApp) -> None:
    connector = WhatsAppConnector(settings=wa.settings)
    with pytest.raises(ConfigError, match="WHATSAPP_ACCESS_TOKEN"):
        connector.sync_documents()


class _Answering(HttpClient):
    """An HttpClient that answers every request with one prepared response."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__("whatsapp")
        self._response = response

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        return self._response


# -- small functions ------------------------------------------------------------------------------

def test_filename_rules() -> None:
    media = InboundMedia(wamid="w", type="video", media_id="1", mime_type="video/3gpp", sender="91980",
                         timestamp="0")
    assert item_filename(media) == "video_91980_19700101_053000.3gp"
    assert item_filename(InboundMedia(wamid="w", type="document", media_id="1", filename="own.docx")) == "own.docx"
    assert item_filename(InboundMedia(wamid="w", type="image", media_id="1")) == "image_unknown_undated.bin"
    assert extension_for("application/vnd.openxmlformats-officedocument.wordprocessingml.document") == ".docx"
    assert extension_for("audio/ogg; codecs=opus") == ".ogg"


def test_meta_sha256_is_read_as_hex_or_base64() -> None:
    digest = bytes(range(32))
    assert _sha256_bytes(digest.hex()) == digest
    assert _sha256_bytes(__import__("base64").b64encode(digest).decode()) == digest
    assert _sha256_bytes("grwfwe/ZPx0wAbdfbdeFUNItPZ0RylL8gGUvdt3YFqc18SY=") is None  # Meta's sample: 35 bytes
    assert _sha256_bytes("") is None

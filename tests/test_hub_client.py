"""The Hub client's answer classes (with ``responses``), its redirects (real servers: a 307/308 re-sends
the upload from the spool file; the token and the Idempotency-Key never leave the Hub's origin) and the
local outbox's atomicity."""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import responses
from werkzeug.wrappers import Response

from base.document import Document
from base.hub_client import HttpHub, HubDocumentMissing, HubRefused, OutboxHub
from sandbox.hub import HubSimulator
from sandbox.servers import ServerThread
from tests.helpers import FakeFile, ListConnector
from tests.hostile_servers import Scripted, deeply_nested, redirect
from utils.errors import AuthError, OriginNotAllowed, ThrottledError, TransientError
from utils.http import HttpClient, Origin, RetryPolicy

HUB = "http://hub.test"
UPLOAD = f"{HUB}/api/v1/documents"


def document(content: bytes = b"%PDF-1.7 work order", filename: str = "WO-1.pdf") -> Document:
    return Document(source="maximo", scope="all", source_id="WO-1/75", version="v1", filename=filename,
                    mime_type="application/pdf", size=len(content), sha256=hashlib.sha256(content).hexdigest(),
                    _content=io.BytesIO(content))


def hub(sleeps: list[float] | None = None, attempts: int = 4) -> HttpHub:
    client = HttpHub(HUB, "hub-secret-token")
    client.client.policy = RetryPolicy(attempts=attempts, backoff_base=0.01, retry_after_cap=60)
    client.client._sleep = (sleeps.append if sleeps is not None else (lambda s: None))
    return client


@responses.activate
@pytest.mark.parametrize("status", [200, 201, 409])
def test_stored_or_already_stored_is_success(status):
    responses.post(UPLOAD, json={"id": "doc-7"}, status=status)
    assert hub().upload(document()) == "doc-7"


@responses.activate
def test_upload_is_streamed_multipart_with_idempotency_key_and_bearer():
    responses.post(UPLOAD, json={"id": "doc-1"}, status=201)
    doc = document()
    hub().upload(doc)
    request = responses.calls[0].request
    assert request.headers["Idempotency-Key"] == doc.sha256
    assert request.headers["Authorization"] == "Bearer hub-secret-token"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = request.body.read() if hasattr(request.body, "read") else request.body
    assert b"%PDF-1.7 work order" in body and b'name="metadata"' in body
    assert int(request.headers["Content-Length"]) == len(body)
    meta_json = body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    assert json.loads(meta_json)["sha256"] == doc.sha256


@responses.activate
@pytest.mark.parametrize("status", [401, 403])
def test_auth_answers_stop_the_run(status):
    responses.post(UPLOAD, json={"error": "unauthorized"}, status=status)
    with pytest.raises(AuthError) as caught:
        hub().upload(document())
    assert "hub-secret-token" not in str(caught.value)


@responses.activate
@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_refusals_dead_letter_the_item(status):
    responses.post(UPLOAD, json={"reason": "unsupported file"}, status=status)
    with pytest.raises(HubRefused) as caught:
        hub().upload(document())
    assert caught.value.status == status and "unsupported file" in str(caught.value)
    assert len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_answers_are_retried(status):
    responses.post(UPLOAD, status=status)
    responses.post(UPLOAD, json={"id": "doc-2"}, status=201)
    sleeps: list[float] = []
    assert hub(sleeps).upload(document()) == "doc-2"
    assert len(responses.calls) == 2 and len(sleeps) == 1


@responses.activate
def test_transient_answers_give_up_after_the_policy():
    for _ in range(3):
        responses.post(UPLOAD, status=500)
    with pytest.raises(TransientError):
        hub(attempts=3).upload(document())
    assert len(responses.calls) == 3


@responses.activate
def test_retry_after_in_seconds_is_honoured():
    responses.post(UPLOAD, status=429, headers={"Retry-After": "7"})
    responses.post(UPLOAD, json={"id": "d"}, status=201)
    sleeps: list[float] = []
    hub(sleeps).upload(document())
    assert sleeps == [7.0]


@responses.activate
def test_retry_after_as_http_date_is_honoured():
    before = time.time()
    due = math.floor(before + 20)  # an HTTP date has whole seconds
    responses.post(UPLOAD, status=503, headers={"Retry-After": email.utils.formatdate(due, usegmt=True)})
    responses.post(UPLOAD, json={"id": "d"}, status=201)
    sleeps: list[float] = []
    hub(sleeps).upload(document())
    after = time.time()
    # The wait is the date less the time it was read, which lies between these two readings however
    # long the machine took to get there.
    assert due - after <= sleeps[0] <= due - before


@responses.activate
def test_retry_after_beyond_the_cap_ends_the_run_as_throttled():
    responses.post(UPLOAD, status=429, headers={"Retry-After": "3600"})
    with pytest.raises(ThrottledError) as caught:
        hub().upload(document())
    assert caught.value.retry_at > time.time() + 3000
    assert len(responses.calls) == 1


@responses.activate
def test_link_and_delete_and_health():
    responses.post(f"{UPLOAD}/doc-1/sources", status=201)
    responses.post(f"{UPLOAD}/gone/sources", status=404)
    responses.delete(UPLOAD, status=404)
    responses.get(f"{HUB}/api/v1/health", status=200)
    client = hub()
    client.link("doc-1", {"source": "email", "source_id": "m-1"})
    with pytest.raises(HubDocumentMissing):
        client.link("gone", {"source": "email", "source_id": "m-1"})
    client.delete("sharepoint", "01ABC")  # 404 means already gone: success
    assert "source=sharepoint" in responses.calls[2].request.url
    assert client.health()[0]
    assert responses.calls[3].request.headers["Authorization"] == "Bearer hub-secret-token"


@responses.activate
def test_answer_nested_too_deeply_is_read_as_an_unreadable_reason():
    responses.post(UPLOAD, body=deeply_nested(), status=422)
    responses.post(UPLOAD, body=deeply_nested(), status=201)
    with pytest.raises(HubRefused, match="422"):
        hub().upload(document())
    assert hub().upload(document()) == document().sha256  # no id readable: the sha256 stands for it


# -- redirects (real servers) -------------------------------------------------------------------------
HUB_TOKEN = "hub-token-for-redirect-tests"


def _moved(sim: HubSimulator, status: int, elsewhere: str = "") -> Any:
    """The Hub, except that everything under ``/old`` answers ``status`` to the same path without
    ``/old``: on this server, or on ``elsewhere``. The redirect is sent before the body is read."""
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/old/"):
            return redirect(elsewhere + path[len("/old"):], status)(environ, start_response)
        return sim.app(environ, start_response)
    return app


def _redirect_test_hub(base_url: str) -> HttpHub:
    # One try and a short read timeout: a client re-sending a consumed body would wait for the Hub
    # to read bytes that never come, until this timeout.
    return HttpHub(base_url, HUB_TOKEN, client=HttpClient("hub", timeout=(2.0, 5.0), policy=RetryPolicy(attempts=1)))


@pytest.mark.parametrize("status", [307, 308])
def test_redirect_within_the_hub_sends_the_upload_again_from_the_spool_file(status, tmp_path):
    content = b"%PDF-1.7 drawing " + bytes(range(256)) * 2000
    sim = HubSimulator(token=HUB_TOKEN, data_dir=tmp_path / "hub")
    try:
        with ServerThread(_moved(sim, status)) as server:
            doc = document(content, filename="drawing.pdf")
            hub_id = _redirect_test_hub(f"{server.url}/old").upload(doc)
    finally:
        sim.close()
    stored = sim.document_by_sha256(doc.sha256)
    assert stored is not None and hub_id == stored.id and stored.size == len(content)
    assert Path(stored.path).read_bytes() == content
    assert sim.uploads_per_key[doc.sha256] == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_to_another_origin_gets_neither_the_token_nor_the_idempotency_key(status, tmp_path):
    sim = HubSimulator(token=HUB_TOKEN, data_dir=tmp_path / "hub")
    foreign = Scripted(lambda r: Response('{"id": "stolen"}', status=201, mimetype="application/json"))
    try:
        with ServerThread(foreign) as elsewhere, ServerThread(_moved(sim, status, elsewhere.url)) as server:
            doc = document()
            with pytest.raises(OriginNotAllowed) as caught:
                _redirect_test_hub(f"{server.url}/old").upload(doc)
    finally:
        sim.close()
    message = str(caught.value)
    assert str(Origin.of(elsewhere.url)) in message and "HUB_API_URL" in message
    assert doc.sha256 not in message and HUB_TOKEN not in message
    assert foreign.seen == []


def test_hub_redirect_elsewhere_ends_the_run_with_a_config_error(tmp_path, settings):
    sim = HubSimulator(token=HUB_TOKEN, data_dir=tmp_path / "hub")
    foreign = Scripted()
    try:
        with ServerThread(foreign) as elsewhere, ServerThread(_moved(sim, 307, elsewhere.url)) as server:
            connector = ListConnector({"s": [FakeFile("doc-1", b"%PDF-1.7 one")]}, settings=settings,
                                      hub=_redirect_test_hub(f"{server.url}/old"))
            summary = connector.sync_documents({})
    finally:
        sim.close()
    assert summary.state == "config_error", summary.as_dict()
    assert str(Origin.of(elsewhere.url)) in summary.scopes[0].error
    assert foreign.seen == []


def test_health_reports_a_refused_token(hub):
    ok, detail = HttpHub(hub.url, "not-the-hub-token").health()
    assert not ok and "HUB_API_TOKEN" in detail and "not-the-hub-token" not in detail
    assert HttpHub(hub.url, hub.token).health()[0]


def test_outbox_writes_one_folder_per_sha256(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    doc = document()
    assert outbox.upload(doc) == doc.sha256
    assert outbox.upload(document()) == doc.sha256  # idempotent
    folder = tmp_path / "outbox" / doc.sha256
    assert (folder / "WO-1.pdf").read_bytes() == b"%PDF-1.7 work order"
    assert json.loads((folder / "metadata.json").read_text())["source_id"] == "WO-1/75"
    outbox.link(doc.sha256, {"source": "email", "source_id": "m-9"})
    outbox.link(doc.sha256, {"source": "email", "source_id": "m-9"})
    assert len((folder / "sources.jsonl").read_text().splitlines()) == 1
    outbox.delete("sharepoint", "01ABC")
    (tombstone,) = (tmp_path / "outbox" / "_deleted" / "sharepoint").iterdir()
    assert json.loads(tombstone.read_text())["source_id"] == "01ABC"


def test_outbox_never_shows_a_partial_document(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))

    class Exploding(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            if self.tell() > 0:
                raise OSError("disk went away")
            return super().read(4)

    doc = document(b"0123456789")
    doc._content = Exploding(b"0123456789")
    with pytest.raises(TransientError, match="disk went away"):  # run-level: every document would fail alike
        outbox.upload(doc)
    assert os.listdir(tmp_path / "outbox") == []  # neither the document nor its temporary folder


def test_outbox_reserved_names_do_not_clash(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"), fsync=False)
    doc = document(b"{}", filename="metadata.json")
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    assert (folder / "file-metadata.json").read_bytes() == b"{}"
    assert json.loads((folder / "metadata.json").read_text())["filename"] == "metadata.json"
